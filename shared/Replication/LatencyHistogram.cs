using System.Numerics;

namespace ReVirt.Replication;

/// <summary>
/// Durations gathered by any thread for <c>--stats</c> (a hop of the output-commit path, a release, a wait), kept as
/// counts in fixed buckets rather than as samples: recording one is an index computation and one interlocked increment
/// — no lock, no allocation, however long the replica runs — so the statistics cost the acknowledgement path nothing
/// a collector or another thread could make it wait for. (Kept as lists, the samples of one kvserver run grew arrays
/// of megabytes on the large-object heap, one per hop, and took a lock per sample on the ack thread.)
/// </summary>
/// <remarks>
/// Buckets are log-linear over nanoseconds: exact below <see cref="SubBuckets"/>·2 ns, then <see cref="SubBuckets"/>
/// buckets per power of two, so a percentile is within 1/<see cref="SubBuckets"/> (3 %) of the sample it stands for.
/// Durations of <see cref="MaxNs"/> or more count in the last bucket.
/// </remarks>
public sealed class LatencyHistogram
{
    const int SubBits = 5;
    /// <summary>Buckets per power of two.</summary>
    public const int SubBuckets = 1 << SubBits;
    const int LinearBuckets = 2 * SubBuckets;
    const int MaxExponent = 40;
    /// <summary>The longest duration told apart (2^40 ns, about 18 minutes).</summary>
    public const long MaxNs = 1L << MaxExponent;
    const int BucketCount = LinearBuckets + (MaxExponent - SubBits - 1) * SubBuckets;

    readonly long[] _counts = new long[BucketCount];
    long _count;

    /// <summary>Samples recorded.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Records a duration of <paramref name="ns"/> nanoseconds (negative counts as 0). Any thread.</summary>
    public void AddNs(long ns)
    {
        Interlocked.Increment(ref _counts[Bucket(ns)]);
        Interlocked.Increment(ref _count);
    }

    /// <summary>Records a duration in milliseconds. Any thread.</summary>
    public void AddMs(double ms) => AddNs(ms >= MaxNs / 1e6 ? MaxNs : (long)(ms * 1e6));

    /// <summary>Records the time from Stopwatch timestamp <paramref name="from"/> to <paramref name="to"/>.</summary>
    public void AddTicks(long from, long to)
    {
        long d = to - from;
        AddNs(System.Diagnostics.Stopwatch.Frequency == 1_000_000_000 ? d : (long)(d * (1e9 / System.Diagnostics.Stopwatch.Frequency)));
    }

    static int Bucket(long ns)
    {
        if (ns <= 0) return 0;
        if (ns >= MaxNs) return BucketCount - 1;
        if (ns < LinearBuckets) return (int)ns;
        int shift = BitOperations.Log2((ulong)ns) - SubBits; // >= 1
        return LinearBuckets + (shift - 1) * SubBuckets + (int)(ns >> shift) - SubBuckets;
    }

    /// <summary>The middle of a bucket's range, in nanoseconds.</summary>
    static double Middle(int bucket)
    {
        if (bucket < LinearBuckets) return bucket;
        int shift = (bucket - LinearBuckets) / SubBuckets + 1;
        long top = (bucket - LinearBuckets) % SubBuckets + SubBuckets;
        return ((top << shift) + ((top + 1) << shift) - 1) / 2.0;
    }

    /// <summary>
    /// The sample at rank ⌊<paramref name="q"/>·count⌋ of the sorted samples (the rank a sorted array's index would
    /// take), in milliseconds, within the bucket's precision; 0 with no samples.
    /// </summary>
    public double PercentileMs(double q)
    {
        // one copy of the counts (others may be adding): the rank and the walk agree on it
        Span<long> counts = stackalloc long[BucketCount];
        long n = 0;
        for (int i = 0; i < BucketCount; i++) n += counts[i] = Interlocked.Read(ref _counts[i]);
        if (n == 0) return 0;
        long rank = Math.Min(n - 1, (long)(q * n));
        long seen = 0;
        int b = 0;
        for (; b < BucketCount - 1; b++)
        {
            seen += counts[b];
            if (seen > rank) break;
        }
        return Middle(b) / 1e6;
    }

    /// <summary>The count, p50 and p99 (ms), as <c>--stats</c> reports them.</summary>
    public (long Count, double P50, double P99) Summary() => (Count, PercentileMs(0.5), PercentileMs(0.99));
}
