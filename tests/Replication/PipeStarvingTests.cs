using System.Diagnostics;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// A reader's dry point asks to be called again (<see cref="BlockingPipeStream.Starving"/> returns a time): a following
/// backup's replay reports its position from its own thread when no acknowledgement carried it for an interval, so
/// the pipe must call it again once that time has passed while nothing was appended (the replay waits for the next
/// batch at most that long), never before, and not at all when it asked for nothing. The oracle is the clock and
/// the calls counted.
/// </summary>
public class PipeStarvingAgainTests
{
    [Fact]
    public void ADryReaderIsCalledAgainOnceTheTimeItAskedForHasPassedAndNotWhenItAskedForNothing()
    {
        var pipe = new BlockingPipeStream { Gather = TimeSpan.FromMilliseconds(1) };
        var calls = new List<long>();
        var asked = TimeSpan.FromMilliseconds(30);
        pipe.Starving = () =>
        {
            lock (calls)
            {
                calls.Add(Stopwatch.GetTimestamp());
                return calls.Count == 1 ? asked : Timeout.InfiniteTimeSpan; // a second call reports; then nothing is due
            }
        };
        var buf = new byte[16];
        var reader = new Thread(() =>
        {
            pipe.ReadExactly(buf.AsSpan(0, 4));
            pipe.ReadExactly(buf.AsSpan(0, 4)); // dry: call #1 asks to be called again in 30 ms; call #2 (no append)
        });
        pipe.Append(new byte[4]);
        reader.Start();
        var sw = Stopwatch.StartNew();
        while (true)
        {
            lock (calls) if (calls.Count >= 2) break;
            Assert.True(sw.ElapsedMilliseconds < 20_000, "the dry reader was not called again within 20 s of the time it asked for");
            Thread.Sleep(1);
        }
        long first, second;
        lock (calls) (first, second) = (calls[0], calls[1]);
        double apart = Stopwatch.GetElapsedTime(first, second).TotalMilliseconds;
        Assert.True(apart >= asked.TotalMilliseconds - 0.5, $"called again {apart:F2} ms after the dry point, before the {asked.TotalMilliseconds} ms it asked for");
        // asked for nothing the second time: the reader waits for an append, untimed (no third call meanwhile)
        Thread.Sleep(200);
        lock (calls) Assert.Equal(2, calls.Count);
        Assert.True(reader.IsAlive, "the reader returned without an append");
        pipe.Append(new byte[4]);
        Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
        lock (calls) Assert.Equal(2, calls.Count);
    }
}

/// <summary>
/// <see cref="BlockingPipeStream.ReadingFor"/> at the dry point (<see cref="BlockingPipeStream.Starving"/>): how long the
/// reader has read without waiting, which a backup uses to report its position at once after working through a
/// backlog. It counts the reader's work since it last came back from a wait, never the wait itself.
/// </summary>
public class PipeReadingForTests
{
    [Fact]
    public void ReadingForCountsTheReadersWorkSinceItsLastWaitNotTheWait()
    {
        var pipe = new BlockingPipeStream { Gather = TimeSpan.FromMilliseconds(1) };
        var seen = new List<TimeSpan>();
        pipe.Starving = () => { lock (seen) seen.Add(pipe.ReadingFor); return Timeout.InfiniteTimeSpan; };
        var buf = new byte[16];
        var reader = new Thread(() =>
        {
            // first chunk: read it, then "replay" for 60 ms before asking for more
            pipe.ReadExactly(buf.AsSpan(0, 4));
            Thread.Sleep(60);
            pipe.ReadExactly(buf.AsSpan(0, 4)); // dry (Starving #1) after 60 ms of work; then waits ~1 s for the next
            pipe.ReadExactly(buf.AsSpan(0, 4)); // dry again (Starving #2) at once after coming back from that wait
        });
        pipe.Append(new byte[4]);
        reader.Start();
        WaitForDryPoints(seen, 1);
        Thread.Sleep(1000);
        pipe.Append(new byte[4]);
        WaitForDryPoints(seen, 2);
        pipe.Append(new byte[4]);
        Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
        Assert.True(seen[0] >= TimeSpan.FromMilliseconds(60), $"after 60 ms of work: {seen[0].TotalMilliseconds:F1} ms");
        // the second dry point comes right after a ~1 s wait: the wait is not work (a loaded host may delay the
        // reader's wake-up, not stretch it to a second)
        Assert.True(seen[1] < TimeSpan.FromMilliseconds(900), $"right after a 1 s wait: {seen[1].TotalMilliseconds:F1} ms");
    }

    /// <summary>Waits until the reader has reached <paramref name="count"/> dry points (bounded: a reader that never
    /// gets there fails the test instead of hanging the suite).</summary>
    static void WaitForDryPoints(List<TimeSpan> seen, int count)
    {
        var limit = Stopwatch.StartNew();
        while (true)
        {
            lock (seen) if (seen.Count >= count) return;
            Assert.True(limit.Elapsed < TimeSpan.FromSeconds(20), $"the reader did not reach dry point {count} within 20 s");
            Thread.Sleep(1);
        }
    }
}
