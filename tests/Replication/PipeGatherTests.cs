using System.Diagnostics;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The backup's replay pipe gathers only while gathering pays (<see cref="BlockingPipeStream"/>, remarks): a reader
/// whose appends come further apart than a gathering period sleeps once per append (no gathering sleep that ends
/// empty before the wait that the append ends), and one whose appends come within a gathering period gathers them,
/// again after a slow spell. Whatever it does, it sees every byte in order. The oracles: the bytes the reader saw
/// against those appended, and the reader's futex sleeps counted by the pipe against the appends.
/// </summary>
public class PipeGatherTests
{
    static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>Reads chunks until the end on a thread of its own; returns what it read, in order.</summary>
    static (Thread Thread, List<byte> Seen) Reader(BlockingPipeStream pipe)
    {
        var seen = new List<byte>();
        var t = new Thread(() =>
        {
            while (true)
            {
                var c = pipe.NextChunk();
                if (c.IsEmpty) return;
                lock (seen) seen.AddRange(c.ToArray());
            }
        }) { IsBackground = true, Name = "pipe reader" };
        t.Start();
        return (t, seen);
    }

    static int Count(List<byte> seen) { lock (seen) return seen.Count; }

    static void WaitFor(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(sw.Elapsed < Bound, $"waited {Bound.TotalSeconds:F0} s for {what}");
            Thread.Sleep(1);
        }
    }

    static void Spin(TimeSpan t)
    {
        long until = Stopwatch.GetTimestamp() + (long)(t.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < until) Thread.SpinWait(20);
    }

    static void Finish(BlockingPipeStream pipe, Thread reader, List<byte> seen, int appended)
    {
        pipe.Complete();
        Assert.True(reader.Join(Bound), "the reader did not see the end");
        Assert.Equal(Enumerable.Range(0, appended).Select(i => (byte)i), seen);
    }

    [Fact]
    public void AReaderWhoseAppendsComeFurtherApartThanAGatheringPeriodSleepsOncePerAppend()
    {
        const int appends = 40;
        var pipe = new BlockingPipeStream { Gather = TimeSpan.FromMilliseconds(2) };
        var (reader, seen) = Reader(pipe);
        for (int i = 0; i < appends; i++)
        {
            // each append after the reader took the one before and a gap of six gathering periods
            if (i > 0) WaitFor(() => Count(seen) == i, $"the reader to take append #{i - 1}");
            if (i > 0) Thread.Sleep(12);
            pipe.Append(new[] { (byte)i });
        }
        WaitFor(() => Count(seen) == appends, "the reader to take the last append");
        long sleeps = pipe.Sleeps;
        Finish(pipe, reader, seen, appends);
        // one sleep per append (the wait the append ends), and one gathering sleep that ended empty at first (the
        // pipe starts out gathering), with a little slack; gathering after every append sleeps about twice per append
        Assert.True(sleeps <= appends + 4, $"{sleeps} sleeps for {appends} appends {12} ms apart (gathering 2 ms)");
    }

    [Fact]
    public void AReaderWhoseAppendsComeWithinAGatheringPeriodGathersThemAgainAfterASlowSpell()
    {
        var pipe = new BlockingPipeStream { Gather = TimeSpan.FromMilliseconds(5) };
        var (reader, seen) = Reader(pipe);
        int n = 0;
        // a slow spell: gathering does not pay
        for (; n < 10; n++)
        {
            if (n > 0) WaitFor(() => Count(seen) == n, $"the reader to take append #{n - 1}");
            if (n > 0) Thread.Sleep(15);
            pipe.Append(new[] { (byte)n });
        }
        WaitFor(() => Count(seen) == n, "the reader to take the slow spell");
        // then a fast one: an append every ~50 us for 200 ms (about 40 gathering periods)
        long sleepsBefore = pipe.Sleeps;
        int fastFrom = n;
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 200 && n < 250)
        {
            pipe.Append(new[] { (byte)n++ });
            Spin(TimeSpan.FromMicroseconds(50));
        }
        WaitFor(() => Count(seen) == n, "the reader to take the fast spell");
        long sleeps = pipe.Sleeps - sleepsBefore;
        int fast = n - fastFrom;
        Finish(pipe, reader, seen, n);
        // woken for each append it would sleep about once per append; gathering, about once per 5 ms
        Assert.True(sleeps * 4 < fast, $"{sleeps} sleeps for {fast} appends ~50 us apart after a slow spell (gathering 5 ms)");
    }
}
