using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>How the backup's silence bound and the primary's heartbeat interval fit together.</summary>
public class LinkSilenceTests
{
    [Theory]
    [InlineData(100, 0u, 100)]    // a backup that names no bound: the primary's own interval
    [InlineData(100, 1000u, 100)] // the default bound holds 10 of the default heartbeats
    [InlineData(100, 500u, 62)]   // a bound of 500 ms holds 8
    [InlineData(10, 500u, 10)]    // a shorter interval of the primary's own is kept
    [InlineData(100, 8u, 1)]      // the shortest bound: every millisecond
    [InlineData(0, 0u, 1)]        // never a zero interval (a busy loop)
    public void TheHeartbeatIntervalFitsTheBackupsBound(int configuredMs, uint silenceMs, int expected)
    {
        Assert.Equal(expected, ReplicationProtocol.HeartbeatInterval(configuredMs, silenceMs));
        if (silenceMs > 0) Assert.True(expected * ReplicationProtocol.HeartbeatsPerSilence <= silenceMs);
    }

    [Fact]
    public void TheShortBoundAppliesFromTheSessionsFirstMessageAndOnlyWaitsCount()
    {
        var s = new LinkSilence(2000);
        Assert.Equal(2000, s.BoundMs);
        // before the session's first message (a snapshot may be taken or encoded) nothing is measured
        s.Listening();
        Thread.Sleep(30);
        s.Heard();
        Assert.Equal(0, s.LongestMs);
        Assert.True(s.Arm(150));
        Assert.False(s.Arm(99)); // armed once
        Assert.Equal(150, s.BoundMs);
        // time spent on a message (holding a batch) is not silence; the wait for the next one is
        s.Listening();
        s.Heard();
        Thread.Sleep(60);
        var wait = System.Diagnostics.Stopwatch.StartNew();
        s.Listening();
        Thread.Sleep(30);
        s.Heard();
        double waitedMs = wait.Elapsed.TotalMilliseconds;
        Assert.True(s.LongestMs >= 30 && s.LongestMs <= waitedMs + 0.1, $"longest silence {s.LongestMs} ms, waited {waitedMs:F1} ms");
        Assert.StartsWith("25:1 ", s.Histogram);
    }

    [Fact]
    public void LongSilencesAreKeptWithWhenTheyEnded()
    {
        var s = new LinkSilence(2000);
        var sinceArmed = System.Diagnostics.Stopwatch.StartNew();
        Assert.True(s.Arm(1000));
        Assert.Equal("", s.Long);
        // the test's clock starts before the silence's, so the silence kept can never exceed it (a preemption between
        // the two must not make the bound look broken)
        var wait = System.Diagnostics.Stopwatch.StartNew();
        s.Listening();
        Thread.Sleep(120);
        s.Heard();
        double waitedMs = wait.Elapsed.TotalMilliseconds, endedMs = sinceArmed.Elapsed.TotalMilliseconds;
        var kept = s.Long.Split(' ');
        Assert.Single(kept);
        var (at, ms) = (double.Parse(kept[0].Split(':')[0]), double.Parse(kept[0].Split(':')[1]));
        Assert.True(ms >= 119 && ms <= waitedMs + 1, $"kept {kept[0]}, waited {waitedMs:F1} ms");
        Assert.True(at >= ms && at <= endedMs + 1, $"kept {kept[0]}: it ended {endedMs:F1} ms after the bound was armed");
        Assert.Equal(Math.Round(at), s.LongestAtMs);
        Assert.Contains(" 100:1 ", s.Histogram);
    }
}
