using System.Diagnostics;
using ReVirt.Backup;
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

    /// <summary>Armed once, the report comes after the interval; armed again after it parked, it comes again.</summary>
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
            Thread.Sleep(50); // several intervals without arming: it parks
        }
        long parked = r.Wakeups;
        Thread.Sleep(100);
        Assert.Equal(parked, r.Wakeups); // a parked reporter does not tick
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
            if (peer.MsSinceLastAck() < interval) r.Arm(); // as the backup: a report due at once is sent by the replay thread
            else peer.Report();
            Thread.Sleep(1);
        }
        double elapsed = sw.Elapsed.TotalMilliseconds;
        long wakeups = r.Wakeups;
        Assert.True(Volatile.Read(ref peer.Reports) >= 2, $"{peer.Reports} reports in {elapsed:F0} ms");
        Assert.True(wakeups <= elapsed / interval + 2, $"{wakeups} wake-ups in {elapsed:F0} ms at one report per {interval} ms");
    }
}
