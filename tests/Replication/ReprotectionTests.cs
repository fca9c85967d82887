using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Re-protection and arbiter terms with real processes: a primary that lost its backup is protected again by a
/// standby (which receives the whole log, replays it and matches the primary's run); a standby with another root is
/// refused with the reason; a replica of an old term never goes live.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class ReprotectionTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string Ticker => GuestEnv.Guest("ticker", "musl");

    /// <summary>The ticker guest runs until its stop file exists: every fault lands mid-run however fast or slow the machine.</summary>
    static (string Stop, string[] Args) TickerRun()
    {
        string stop = TempFile(".stop");
        return (stop, [Ticker, stop, "20", "20000"]);
    }

    static int Lines(byte[] stdout) => stdout.Count(b => b == (byte)'\n');

    static void AssertTicks(string all, int lines)
    {
        var ls = all.Split('\n');
        Assert.Equal("", ls[^1]);
        Assert.Equal(lines, ls.Length - 1);
        for (int i = 0; i < lines; i++) Assert.StartsWith($"tick {i} acc ", ls[i]);
    }
    static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    static void DeleteArbiter(string path)
    {
        foreach (var f in Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + "*")) File.Delete(f);
    }

    /// <summary>The primary re-protects itself with the standby at <paramref name="standbyUrl"/>, which holds the log
    /// and catches up; the guest is told to stop and both end with status 0.</summary>
    void ProtectedAgainByAndEnded(ReplicaProc p, ReplicaProc s, string standbyUrl, string stop)
    {
        Assert.True(p.WaitFor(() => p.Events.Any(e => e.Name == ReplicaEvent.Reprotected && e.Str("url") == standbyUrl), Long), $"not re-protected by {standbyUrl}");
        p.WaitForEvent(ReplicaEvent.StandbyHolds, Long);
        s.WaitForEvent(ReplicaEvent.CaughtUp, Long);
        File.WriteAllBytes(stop, []);
        int? pc = p.WaitForExit(Long), sc = s.WaitForExit(Long);
        output.WriteLine($"primary {pc}:\n{p.Stderr}\nstandby {sc}:\n{s.Stderr}");
        Assert.Equal(0, pc);
        Assert.Equal(0, sc);
    }

    [Fact]
    public void APrimaryThatLostItsBackupIsProtectedAgainByAStandbyAndAForeignStandbyIsRefused()
    {
        string arbiter = TempFile(".lock");
        string emptyRoot = Directory.CreateTempSubdirectory("revirt-foreign-root-").FullName;
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _b = b;
            // a standby whose root does not hold the primary's program: it must refuse with the reason
            var (foreign, foreignUrl) = Replicas.StartBackup("--arbiter", arbiter, "--root", emptyRoot);
            using var _f = foreign;
            // log catch-up (a standby that shares the files takes a snapshot by default: SnapshotJoinTests)
            var (s, standbyUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--no-snapshot");
            using var _s = s;
            var (stop, run) = TickerRun();
            using var p = Replicas.Primary(["--backup", url, "--standby", foreignUrl, "--standby", standbyUrl, "--arbiter", arbiter, "--timeout-ms", "2000",
                "--checkpoint-interval", "2000000", "--metrics-listen", "http://127.0.0.1:0", "--stats", "--", .. run]);
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= 40, Long), "the guest prints");
            b.KillHard();
            var unprotected = p.WaitForEvent(ReplicaEvent.Unprotected, Long);
            Assert.Equal(1, unprotected.Long("term"));
            var refused = p.WaitForEvent(ReplicaEvent.StandbyRefused, Long);
            output.WriteLine($"foreign standby: {refused.Str("reason")}");
            Assert.Equal(foreignUrl, refused.Str("url"));
            Assert.Contains("mismatch", refused.Str("reason"));
            Assert.NotNull(foreign.WaitForEvent(ReplicaEvent.RefusedPrimary, Long));
            Assert.Equal(standbyUrl, p.WaitForEvent(ReplicaEvent.Reprotected, Long).Str("url"));
            p.WaitForEvent(ReplicaEvent.StandbyHolds, Long);
            // the guest goes on logging a line every 20 ms, never pausing for a heartbeat interval (100 ms)
            int joined = Lines(p.Stdout);
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= joined + 30, Long), "the guest prints after the join");
            ProtectedAgainByAndEnded(p, s, standbyUrl, stop);
            // once the backlog and what queued behind it were sent, the live records went to each backup from the thread
            // that logged them, not handed to the sender thread batch by batch (it did so until a pause in the records)
            var stats = p.WaitForEvent(ReplicaEvent.Stats, Long);
            Assert.True(stats.Long("handedOffBatches") <= 5, $"{stats.Long("handedOffBatches")} of {stats.Long("batches")} batches handed to the sender thread");
            // the standby replayed the whole run from record 1 and matched it: every checkpoint and output verified
            int lines = Lines(p.Stdout);
            var matched = s.WaitForEvent(ReplicaEvent.ReplayMatched, Long);
            Assert.Equal(lines, (int)matched.Long("outputs")!.Value);
            AssertTicks(p.StdoutText, lines);
            Assert.Empty(s.Stdout);
            // the primary's metrics (MetricsEndpoint): one failover (it went on unprotected), one re-protection (the
            // foreign standby's refusal is none), nothing held once the pair ended
            var metrics = p.WaitForEvent(ReplicaEvent.Metrics, Long);
            Assert.Equal(1, metrics.Long("failovers"));
            Assert.Equal(1, metrics.Long("reprotections"));
            Assert.Equal(0, metrics.Long("heldBytes"));
            File.Delete(stop);
        }
        finally
        {
            DeleteArbiter(arbiter);
            Directory.Delete(emptyRoot, true);
        }
    }

    /// <summary>
    /// A join that never completes is bounded (<c>--join-timeout-ms</c>). The backup is killed; the first standby the
    /// primary asks answers every message of its join but acknowledges nothing it holds (<c>--plant join-never-acks</c>,
    /// a fake that never acks: deterministic), so it never holds its join point. Within the bound the guest's output
    /// flows unheld; at the bound the primary reports <c>join-timed-out</c> for that standby (never told a join point),
    /// drops it without asking the arbiter (it cannot go live: the term stays 1), its output goes on, and it asks the
    /// next standby, which joins and holds its join point; the dropped standby never goes live. Without the bound the
    /// primary waits for the mute standby for ever and never asks the second.
    /// </summary>
    [Fact]
    public void AStandbyThatNeverAcknowledgesItsJoinIsDroppedAtTheJoinBoundAndTheNextStandbyJoins() =>
        AMuteStandbyIsDroppedAndTheNextJoins(["--join-timeout-ms", "3000"], p =>
        {
            int joining = Lines(p.Stdout);
            var timedOut = p.WaitForEvent(ReplicaEvent.JoinTimedOut, Long);
            int dropped = Lines(p.Stdout);
            output.WriteLine($"join-timed-out: {timedOut.Str("url")} after {timedOut.Long("joiningMs")} ms; lines {joining} -> {dropped} meanwhile");
            Assert.True(timedOut.Long("joiningMs") >= 3000, "dropped before the bound");
            Assert.True(dropped > joining, "the guest's output did not flow while the standby joined");
            return timedOut;
        });

    /// <summary>
    /// A join that stops progressing is dropped after the progress bound (<c>--join-progress-ms</c>), with no fixed
    /// bound on the join's length. The backup is killed; the first standby asked takes its snapshot (the link takes
    /// every chunk) but then reports nothing received and acknowledges nothing (<c>--plant join-never-acks</c>,
    /// deterministic) while still answering every message, so its watchdog silence never trips. The primary reports
    /// <c>join-stalled</c> for it (idle at least the bound, never told a join point), drops it without a term spent,
    /// its output going on, and the next standby joins and holds its join point. Counting any answer as progress (the
    /// standby's liveness acks) would keep the mute standby for ever.
    /// </summary>
    [Fact]
    public void AStandbyWhoseJoinStopsProgressingIsDroppedAfterTheProgressBoundAndTheNextStandbyJoins() =>
        AMuteStandbyIsDroppedAndTheNextJoins(["--join-progress-ms", "2000"], p =>
        {
            // bounded: the bound plus a loaded machine's margin
            var stalled = p.WaitForEvent(ReplicaEvent.JoinStalled, TimeSpan.FromSeconds(60));
            output.WriteLine($"join-stalled: {stalled.Str("url")} idle {stalled.Num("idleMs")} ms of {stalled.Num("joiningMs")} ms joining; last progress: {stalled.Str("lastProgress")}");
            Assert.True(stalled.Num("idleMs") >= 2000, "dropped before the bound");
            Assert.Equal(0, stalled.Long("snapshotBytesRestored"));
            Assert.Null(p.Event(ReplicaEvent.JoinTimedOut)); // no fixed bound by default
            return stalled;
        });

    /// <summary>
    /// The shared course of the two bounds' tests: the backup is killed; the first standby the primary asks answers
    /// every message of its join but acknowledges nothing it holds (<c>--plant join-never-acks</c>, a fake that never
    /// acks: deterministic), so it never holds its join point; <paramref name="dropped"/> waits for the bound's event
    /// (given <paramref name="bound"/>, the primary's options) and checks it. Then: that standby was never told a join
    /// point, was dropped without asking the arbiter (it cannot go live: the term stays 1), the guest's output goes
    /// on, and the next standby joins and holds its join point; the dropped standby never goes live. Without a bound
    /// the primary waits for the mute standby for ever and never asks the second.
    /// </summary>
    void AMuteStandbyIsDroppedAndTheNextJoins(string[] bound, Func<ReplicaProc, ReVirt.Harness.ReplicaEventRecord> dropped)
    {
        string arbiter = TempFile(".lock");
        try
        {
            // only the join's own bound may drop the mute standby: on a machine at load 100 a 2 s silence bound on
            // either side dropped it (or took over from the primary) first, which is not what this test is about
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--primary-silence-ms", "15000");
            using var _b = b;
            var (mute, muteUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--primary-silence-ms", "15000", "--plant", "join-never-acks");
            using var _m = mute;
            var (s, standbyUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--primary-silence-ms", "15000");
            using var _s = s;
            var (stop, run) = TickerRun();
            using var p = Replicas.Primary(["--backup", url, "--standby", muteUrl, "--standby", standbyUrl, "--standby-retry-ms", "200",
                .. bound, "--arbiter", arbiter, "--timeout-ms", "10000", "--", .. run]);
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= 20, Long), "the guest prints");
            b.KillHard();
            Assert.Equal(muteUrl, p.WaitForEvent(ReplicaEvent.Reprotected, Long).Str("url"));
            var drop = dropped(p);
            int linesAtDrop = Lines(p.Stdout);
            Assert.Equal(muteUrl, drop.Str("url"));
            Assert.Null(drop.Long("joinPoint")); // it never acknowledged its snapshot: never told a join point
            // dropped without a term spent, the guest's output going on
            Assert.True(p.WaitFor(() => p.Events.Count(e => e.Name == ReplicaEvent.Unprotected) >= 2, Long), "no unprotected event after the drop");
            var after = p.Events.Where(e => e.Name == ReplicaEvent.Unprotected).Last();
            Assert.Equal(1, after.Long("term"));
            Assert.False(after.Bool("arbiterAsked"));
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= linesAtDrop + 20, Long), "the guest's output stopped after the drop");
            // the next standby joins and holds its join point
            ProtectedAgainByAndEnded(p, s, standbyUrl, stop);
            output.WriteLine($"mute standby:\n{mute.Stderr}");
            AssertTicks(p.StdoutText, Lines(p.Stdout));
            Assert.Null(mute.Event(ReplicaEvent.TookOver));
            File.Delete(stop);
        }
        finally { DeleteArbiter(arbiter); }
    }

    [Fact]
    public void AReplicaOfAnOldTermNeverGoesLive()
    {
        string arbiter = TempFile(".lock");
        try
        {
            // planted: this guest's arbiter has moved on to term 2 (two takeovers this pair never heard of), so the pair
            // below works in a stale term: losing its primary, the backup must not go live
            var planted = new ReVirt.Arbiter.LockFileArbiter(arbiter);
            Assert.True(planted.TryAcquire("an-earlier-backup", 0).Won);
            Assert.True(planted.TryAcquire("an-earlier-standby", 1).Won);
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _b = b;
            var (stop, run) = TickerRun();
            using var p = Replicas.Primary(["--backup", url, "--arbiter", arbiter, "--timeout-ms", "2000", "--", .. run]);
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= 40, Long), "the guest prints");
            p.KillHard(); // mid-run: the guest runs until its stop file exists, which nobody creates
            var down = b.WaitForEvent(ReplicaEvent.StoodDown, Long);
            output.WriteLine($"backup: {down.Str("reason")}");
            Assert.Contains("an-earlier-standby in term 2", down.Str("reason"));
            Assert.Equal(3, b.WaitForExit(Long));
            Assert.Null(b.Event(ReplicaEvent.TookOver));
            Assert.Empty(b.Stdout);
        }
        finally { DeleteArbiter(arbiter); }
    }
    /// <summary>
    /// Bad input from a standby costs the live replica nothing: a primary that lost its backup asks, in turn, a
    /// "standby" that answers the connection with garbage, one that accepts and then stalls mid-handshake (says
    /// nothing), and a real standby. The garbage one is reported (standby-refused with the reason) at once; while the
    /// stalled one holds the handshake the guest prints on (the test holds it until 10 more lines came, then cuts
    /// it); it is reported in turn, and the primary goes on to the real standby, which joins, holds the log and
    /// replays the whole run to a match. Placed by events and the guest's output, not by time. Fails if a failed
    /// standby ended the primary's search or the handshake held the guest back.
    /// </summary>
    [Fact]
    public async Task AStandbyThatSendsGarbageOrStallsMidHandshakeCostsTheLiveReplicaNothing()
    {
        string arbiter = TempFile(".lock");
        using var garbage = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        using var stall = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        garbage.Start();
        stall.Start();
        using var stop = new CancellationTokenSource();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        // garbage: every connection gets 4 KiB of random bytes, then is read until the peer closes
        var garbageTask = Task.Run(async () =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    using var c = await garbage.AcceptTcpClientAsync(stop.Token);
                    var st = c.GetStream();
                    await st.WriteAsync(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4096), stop.Token);
                    var buf = new byte[4096];
                    using var bound = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                    bound.CancelAfter(TimeSpan.FromSeconds(30));
                    try { while (await st.ReadAsync(buf, bound.Token) > 0) { } } catch (Exception e) when (e is IOException or OperationCanceledException) { }
                }
            }
            catch (OperationCanceledException) { }
        });
        // stall: the first connection is accepted and read from but never answered until the test releases it; later
        // ones (the primary's retry) are closed at once
        var stallTask = Task.Run(async () =>
        {
            try
            {
                using (var first = await stall.AcceptTcpClientAsync(stop.Token))
                {
                    held.Set();
                    var st = first.GetStream();
                    var buf = new byte[4096];
                    var read = Task.Run(async () => { try { while (await st.ReadAsync(buf, stop.Token) > 0) { } } catch (Exception e) when (e is IOException or OperationCanceledException) { } });
                    release.Wait(stop.Token);
                }
                while (!stop.IsCancellationRequested) (await stall.AcceptTcpClientAsync(stop.Token)).Dispose();
            }
            catch (OperationCanceledException) { }
        });
        string garbageUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)garbage.LocalEndpoint).Port}";
        string stallUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)stall.LocalEndpoint).Port}";
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _b = b;
            var (s, standbyUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _s = s;
            var (stopFile, run) = TickerRun();
            // a long handshake bound (3 x --timeout-ms): the stalled standby is cut by the test, not by the primary
            using var p = Replicas.Primary(["--backup", url, "--standby", garbageUrl, "--standby", stallUrl, "--standby", standbyUrl, "--arbiter", arbiter, "--timeout-ms", "5000",
                "--checkpoint-interval", "2000000", "--", .. run]);
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitFor(() => Lines(p.Stdout) >= 20, Long), "the guest prints");
            b.KillHard();
            Assert.Equal(1, p.WaitForEvent(ReplicaEvent.Unprotected, Long).Long("term"));
            Assert.True(p.WaitFor(() => p.Events.Any(e => e.Name == ReplicaEvent.StandbyRefused && e.Str("url") == garbageUrl), Long), "the garbage standby is reported");
            output.WriteLine($"garbage: {p.Events.First(e => e.Name == ReplicaEvent.StandbyRefused && e.Str("url") == garbageUrl).Str("reason")}");
            Assert.True(held.Wait(Long), "the primary reached the stalling standby");
            int at = Lines(p.Stdout);
            bool printedOn = p.WaitFor(() => Lines(p.Stdout) >= at + 10, Long);
            bool stillHeld = !p.Events.Any(e => e.Name == ReplicaEvent.StandbyRefused && e.Str("url") == stallUrl);
            release.Set();
            Assert.True(printedOn, $"the guest printed {Lines(p.Stdout) - at} lines while a standby stalled the handshake");
            Assert.True(stillHeld, "the 10 lines came while the stalled handshake was still open");
            Assert.True(p.WaitFor(() => p.Events.Any(e => e.Name == ReplicaEvent.StandbyRefused && e.Str("url") == stallUrl), Long), "the stalled standby is reported");
            ProtectedAgainByAndEnded(p, s, standbyUrl, stopFile);
            Assert.NotNull(s.WaitForEvent(ReplicaEvent.ReplayMatched, Long));
            AssertTicks(p.StdoutText, Lines(p.Stdout));
            File.Delete(stopFile);
        }
        finally
        {
            release.Set();
            stop.Cancel();
            garbage.Stop();
            stall.Stop();
            try { await Task.WhenAll(garbageTask, stallTask).WaitAsync(TimeSpan.FromSeconds(10)); } catch (TimeoutException) { }
            DeleteArbiter(arbiter);
        }
    }
}
