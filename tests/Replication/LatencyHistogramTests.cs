using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The histogram the output-commit path records its hops in (<c>--stats</c>): its percentiles against the samples
/// sorted (the oracle: what the statistics reported when they kept every sample), and recording that costs no
/// allocation however many samples come.
/// </summary>
public class LatencyHistogramTests
{
    static double Exact(long[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];

    [Fact]
    public void PercentilesAreTheSortedSamplesWithinABucketsPrecision()
    {
        var rng = new Random(12);
        // durations from a nanosecond to ten seconds, log-uniform, as the hops' spread (µs to a GC pause)
        var ns = new long[50_000];
        for (int i = 0; i < ns.Length; i++) ns[i] = (long)Math.Pow(10, rng.NextDouble() * 10);
        var h = new LatencyHistogram();
        foreach (long v in ns) h.AddNs(v);
        Array.Sort(ns);
        Assert.Equal(ns.Length, h.Count);
        foreach (double q in new[] { 0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1 })
        {
            double exact = Exact(ns, q), got = h.PercentileMs(q) * 1e6;
            // a bucket spans 1/32 of its lower bound; its middle is within 1/64 of any sample in it
            Assert.True(Math.Abs(got - exact) <= exact / 64 + 1, $"p{q * 100}: {got} ns, the sorted samples' {exact} ns");
        }
    }

    [Fact]
    public void ShortDurationsAreExactAndTheRankIsTheSortedArraysIndex()
    {
        var h = new LatencyHistogram();
        for (long v = 60; v >= 1; v--) h.AddNs(v); // 1..60 ns (below 64 ns a bucket is one nanosecond), out of order
        Assert.Equal(31e-6, h.PercentileMs(0.5), 9);  // sorted[30]
        Assert.Equal(60e-6, h.PercentileMs(0.99), 9); // sorted[59]
        Assert.Equal(1e-6, h.PercentileMs(0), 9);
        Assert.Equal(0, new LatencyHistogram().PercentileMs(0.5));
        h.AddMs(-3); // a clock that went back counts as no time
        Assert.Equal(0, h.PercentileMs(0));
        h.AddMs(1e12); // beyond the range: the last bucket (just below MaxNs), not an error
        double longest = h.PercentileMs(1) * 1e6;
        Assert.True(longest >= LatencyHistogram.MaxNs * 63.0 / 64 && longest < LatencyHistogram.MaxNs, $"{longest} ns");
    }

    [Fact]
    public void ThreadsRecordingAtOnceLoseNoSample()
    {
        var h = new LatencyHistogram();
        const int PerThread = 200_000;
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() => { for (int i = 0; i < PerThread; i++) h.AddNs(1000 + t); })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(60)));
        Assert.Equal(4 * PerThread, h.Count);
        Assert.Equal(1.0e-3, h.PercentileMs(1), 4);
    }

    [Fact]
    public void RecordingAllocatesNothingHoweverManySamplesCome()
    {
        var h = new LatencyHistogram();
        for (int i = 0; i < 1000; i++) h.AddMs(i * 0.01); // warm (JIT)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 300_000; i++) h.AddTicks(0, i * 37L);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated == 0, $"{allocated} bytes allocated for 300,000 samples");
    }
}
