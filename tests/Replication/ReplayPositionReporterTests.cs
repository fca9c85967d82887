using System.Diagnostics;
using ReVirt.Backup;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// A following backup's report of its replay position (<see cref="ReplayPositionReporter"/>): the replay thread arms
/// it each time it runs dry with its position unreported; the report must come once the interval since the last
/// acknowledgement has passed, and arming it again and again (a steady load) must not cost a wake-up per arming.
/// The clock is the real one; the "acknowledgement" is the report itself, as in a backup.
/// </summary>
public class ReplayPositionReporterTests
{
    sealed class Peer
    {
        long _lastAck = Stopwatch.GetTimestamp();
        public int Reports;
        public double MsSinceLastAck() => Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastAck)).TotalMilliseconds;
        public void Report() { Interlocked.Increment(ref Reports); Interlocked.Exchange(ref _lastAck, Stopwatch.GetTimestamp()); }
    }

    /// <summary>Without arming, the reporter stops waking up: no wake-up for 200 ms (40 intervals), within 10 s.</summary>
    static bool Parks(ReplayPositionReporter r)
    {
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 10_000)
        {
            long before = r.Wakeups;
            Thread.Sleep(200);
            if (r.Wakeups == before) return true;
        }
        return false;
    }

    /// <summary>Armed once, the report comes after the interval and the reporter parks; armed again, it comes again.</summary>
    [Fact]
    public void AnArmedReportIsSentAfterTheIntervalAndAgainAfterItParked()
    {
        var peer = new Peer();
        var r = new ReplayPositionReporter(5, peer.MsSinceLastAck, peer.Report);
        for (int round = 1; round <= 2; round++)
        {
            r.Arm();
            var sw = Stopwatch.StartNew();
            while (Volatile.Read(ref peer.Reports) < round && sw.ElapsedMilliseconds < 10_000) Thread.Sleep(1);
            Assert.Equal(round, Volatile.Read(ref peer.Reports));
            Assert.True(Parks(r), "the reporter kept waking up after the arming stopped");
        }
        Assert.Equal(2, Volatile.Read(ref peer.Reports));
    }

    /// <summary>
    /// Armed every millisecond for 300 ms (a replay that keeps running dry under load): about one report per interval,
    /// and no more wake-ups than intervals that passed (+2: the first wake-up and one look that finds nothing). Fails
    /// with a reporter that is woken by every arming and then sleeps out the interval (two per interval).
    /// </summary>
    [Fact]
    public void ASteadilyArmedReporterWakesOncePerInterval()
    {
        var peer = new Peer();
        const int interval = 5;
        var r = new ReplayPositionReporter(interval, peer.MsSinceLastAck, peer.Report);
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 300)
        {
            r.Arm(); // no other acknowledgements: each report is the reporter's, so its looks are an interval apart
            Thread.Sleep(1);
        }
        double elapsed = sw.Elapsed.TotalMilliseconds;
        long wakeups = r.Wakeups;
        Assert.True(Volatile.Read(ref peer.Reports) >= 2, $"{peer.Reports} reports in {elapsed:F0} ms");
        Assert.True(wakeups <= elapsed / interval + 2, $"{wakeups} wake-ups in {elapsed:F0} ms at one report per {interval} ms");
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
        pipe.Starving = () => { lock (seen) seen.Add(pipe.ReadingFor); };
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
        while (true) { lock (seen) if (seen.Count >= 1) break; Thread.Sleep(1); }
        Thread.Sleep(1000);
        pipe.Append(new byte[4]);
        while (true) { lock (seen) if (seen.Count >= 2) break; Thread.Sleep(1); }
        pipe.Append(new byte[4]);
        Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
        Assert.True(seen[0] >= TimeSpan.FromMilliseconds(60), $"after 60 ms of work: {seen[0].TotalMilliseconds:F1} ms");
        // the second dry point comes right after a ~1 s wait: the wait is not work (a loaded host may delay the
        // reader's wake-up, not stretch it to a second)
        Assert.True(seen[1] < TimeSpan.FromMilliseconds(900), $"right after a 1 s wait: {seen[1].TotalMilliseconds:F1} ms");
    }
}
