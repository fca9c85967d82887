using System.Text;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Primary-backup replication with real separate processes on loopback: lockstep replay, output commit,
/// failover with stdout continuity, split brain, refusals.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)] // replica pairs timing their failure detection: not next to other pairs
public class ReplicationTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string Counter => GuestEnv.Guest("counter", "musl");

    static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    /// <summary>
    /// Checks the guest's stdout across a failover: the primary's stdout, then the backup's from the offset it
    /// says it resumes at, is exactly lines 0..lines-1; the part the two both printed is byte-identical; and the
    /// primary never released more than the backup held (output commit).
    /// </summary>
    internal static void AssertContinuous(byte[] p, byte[] b, ReplicaProc backup, int lines)
    {
        var t = backup.Event(ReplicaEvent.TookOver);
        Assert.True(t != null, "the backup reports where stdout resumes:\n" + backup.Stderr);
        int resume = (int)t.Long("resumeStdoutAt")!.Value;
        long held = t.Long("logStdoutBytes")!.Value;
        Assert.True(resume <= p.Length, $"resume offset {resume} is past what the primary printed ({p.Length}): a gap");
        Assert.True(p.Length <= held, $"the primary released {p.Length} stdout bytes but the backup held only {held}: output commit violated");
        int overlap = p.Length - resume;
        Assert.True(b.Length >= overlap, "the backup repeats what the primary may have released");
        Assert.True(p.AsSpan(resume).SequenceEqual(b.AsSpan(0, overlap)), "a repeat is byte-identical");
        var all = Encoding.ASCII.GetString(p.AsSpan(0, resume)) + Encoding.ASCII.GetString(b);
        AssertLines(all, lines);
    }

    /// <summary>The primary won the arbiter after a partition: it went on unprotected, or released its last output.</summary>
    static bool PrimaryWentOn(ReplicaProc p) => p.Event(ReplicaEvent.Unprotected) != null || p.Event(ReplicaEvent.FinalRelease) != null;

    /// <summary>
    /// After a partition exactly one replica went on: the primary, which printed every line while the backup stood
    /// down and printed nothing; or the backup, which continued the primary's stdout while the primary was fenced.
    /// </summary>
    static void AssertExactlyOneWentOn(ReplicaProc p, ReplicaProc b, int lines)
    {
        if (PrimaryWentOn(p))
        {
            AssertLines(p.StdoutText, lines);
            Assert.Empty(b.Stdout);
            Assert.Null(b.Event(ReplicaEvent.TookOver));
            Assert.NotNull(b.Event(ReplicaEvent.StoodDown));
        }
        else
        {
            Assert.NotNull(p.Event(ReplicaEvent.Fenced));
            AssertContinuous(p.Stdout, b.Stdout, b, lines);
        }
    }

    internal static void AssertLines(string all, int lines)
    {
        var ls = all.Split('\n');
        Assert.Equal("", ls[^1]);
        Assert.Equal(lines, ls.Length - 1);
        for (int i = 0; i < lines; i++) Assert.StartsWith($"line {i} acc ", ls[i]);
    }

    [Fact]
    public void ProtectedRunIsReplayedInLockstepAndMatches()
    {
        var (b, url) = Replicas.StartBackup();
        using var _ = b;
        using var p = Replicas.Primary("--backup", url, "--stats", "--checkpoint-interval", "500000", "--", Counter, "40", "20000");
        int? pe = p.WaitForExit(Long);
        Assert.True(pe == 0, $"primary exit {pe}:\n{p.Stderr}\nbackup:\n{b.Stderr}");
        Assert.Equal(0, b.WaitForExit(Long));
        output.WriteLine(p.Stderr);
        output.WriteLine(b.Stderr);
        AssertLines(p.StdoutText, 40);
        Assert.Empty(b.Stdout); // a backup that never went live printed nothing
        var matched = b.WaitForEvent(ReplicaEvent.ReplayMatched, Long);
        Assert.Equal(40, matched.Long("outputs"));
        Assert.True(matched.Long("checkpoints") > 0);
        Assert.Null(p.Event(ReplicaEvent.BackupLost));
    }

    [Fact]
    public void OutputWaitsForTheBackupsAcknowledgement()
    {
        var (b, url) = Replicas.StartBackup("--ack-delay-ms", "150");
        using var _ = b;
        using var p = Replicas.Primary("--backup", url, "--stats", "--", Counter, "10", "20000");
        Assert.Equal(0, p.WaitForExit(Long));
        Assert.Equal(0, b.WaitForExit(Long));
        output.WriteLine(p.Stderr);
        AssertLines(p.StdoutText, 10);
        var stats = p.WaitForEvent(ReplicaEvent.Stats, Long);
        Assert.Equal(10, stats.Long("outputsHeld"));
        // no output left before its log was acknowledged, and every ack took at least the injected delay
        Assert.True(stats.Num("outputHoldP50Ms") >= 140, p.Stderr);
        // the batch path's timings (both replicas on one host: a same-host link, one clock): the injected delay is the
        // backup's, between holding a batch and acknowledging it, not the ways there and back nor this replica's send
        Assert.Equal("unix", p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));
        Assert.True(stats.Num("backupHoldP50Ms") >= 140, p.Stderr);
        Assert.True(stats.Num("roundTripP50Ms") >= 140, p.Stderr);
        // (a batch that arrives while the backup sleeps out the delay waits in its socket: its way there is not bounded)
        Assert.True(stats.Num("sendP50Ms") is > 0 and < 100, p.Stderr);
        Assert.True(stats.Num("toBackupP50Ms") > 0 && stats.Num("toAckThreadP50Ms") > 0, p.Stderr);
    }

    /// <summary>
    /// A backup that replayed the log from record 1 and takes over arms the guest's interval and POSIX timers on its
    /// host from the settings its replay kept (alarmtick waits for nothing but them): the ticks go on, each once.
    /// </summary>
    [Fact]
    public void TimersSetBeforeAFailoverKeepFiringOnTheBackup()
    {
        string arbiter = TempFile(".lock"), stop = TempFile(".stop");
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--", GuestEnv.Guest("alarmtick", "musl"), stop, "20");
            Assert.True(p.WaitFor(() => Replicas.Lines(p.Stdout) >= 20, Long), "the guest ticks:\n" + p.Stderr);
            p.KillHard();
            var took = b.WaitForEvent(ReplicaEvent.TookOver, Long);
            Assert.True(b.WaitFor(() => Replicas.Lines(b.Stdout) >= 30, Long), "the backup's timers fire after the takeover:\n" + b.Stderr);
            File.WriteAllBytes(stop, []);
            int? code = b.WaitForExit(Long);
            output.WriteLine($"backup {code}:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && e.Str("detail")!.StartsWith("interval timer ITIMER_REAL: armed again"));
            SnapshotJoinTests.AssertTicksContinue(p.Stdout, b.Stdout, (int)took.Long("resumeStdoutAt")!.Value);
        }
        finally { Replicas.DeleteArbiter(arbiter); File.Delete(stop); }
    }

    /// <summary>Kills at random points of the output (0 .. 3/4 of it): 4 rounds, 8 under the soak switch (REVIRT_SOAK=1).</summary>
    [Fact]
    public void FailoverAtRandomMomentsKeepsStdoutContinuous()
    {
        var rng = new Random(12345);
        const int lines = 300;
        int rounds = 0, tookOver = 0, maxRounds = SoakSwitch.On ? 8 : 4;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (rounds < maxRounds && sw.Elapsed < TimeSpan.FromMinutes(4))
        {
            rounds++;
            string arbiter = TempFile(".lock");
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
            using var _ = b;
            // 1,000,000 rounds of work per line keep the guest busy for most of a second even on a fast host: the kill
            // lands while it runs, not after it finished (a guest that ends first leaves the backup nothing to take over)
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--checkpoint-interval", "200000", "--", Counter, lines.ToString(), "1000000");
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            // kill at a random moment: after a random amount of output (0 .. most of it)
            p.WaitForStdoutBytes(rng.Next(0, lines * 26 * 3 / 4), TimeSpan.FromSeconds(30));
            Thread.Sleep(rng.Next(0, 50));
            p.KillHard();
            int? code = b.WaitForExit(Long);
            output.WriteLine($"round {rounds}: primary printed {p.Stdout.Length} bytes; backup:\n{b.Stderr}");
            Assert.Equal(0, code);
            if (b.Event(ReplicaEvent.TookOver) != null)
            {
                tookOver++;
                Assert.Null(b.Event(ReplicaEvent.Diverged));
                AssertContinuous(p.Stdout, b.Stdout, b, lines);
            }
            else
            {
                // the primary finished before it was killed: its output is complete, the backup printed nothing
                AssertLines(p.StdoutText, lines);
                Assert.Empty(b.Stdout);
            }
            File.Delete(arbiter);
        }
        Assert.True(tookOver >= rounds / 2, $"only {tookOver} of {rounds} rounds failed over");
    }

    /// <summary>
    /// The primary's guest ended and the backup replayed all of it, but the primary dies while its gate still holds
    /// the last output (the backup's acks come 4 s late, so the kill lands in that window whatever the machine's
    /// load): the backup wins the arbiter and releases that output, so nothing is lost at the end of a run.
    /// </summary>
    [Fact]
    public void APrimaryKilledAfterItsGuestEndedLeavesItsHeldOutputToTheBackup()
    {
        const int lines = 3;
        string arbiter = TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "20000", "--ack-delay-ms", "4000"); // a kill resets the connection: noticed at once
        using var _ = b;
        using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", "60000", "--", Counter, lines.ToString(), "3000");
        b.WaitForEvent(ReplicaEvent.ReplayMatched, Long); // the whole run is replayed; its last output still waits for an ack
        p.KillHard();
        int? code = b.WaitForExit(Long);
        output.WriteLine($"primary released {p.Stdout.Length} bytes; backup {code}:\n{b.Stderr}");
        Assert.Equal(0, code);
        Assert.Null(p.Event(ReplicaEvent.FinalRelease));
        Assert.Null(p.Event(ReplicaEvent.Exit));
        AssertContinuous(p.Stdout, b.Stdout, b, lines);
        File.Delete(arbiter);
    }

    /// <summary>
    /// The same window, but the primary is only cut off (a partition): both replicas ask the arbiter for the last
    /// output and exactly one of them emits it — never both, never neither.
    /// </summary>
    [Fact]
    public void APartitionAfterTheGuestEndedEmitsTheLastOutputExactlyOnce()
    {
        const int lines = 3;
        string arbiter = TempFile(".lock");
        // acks 1 s late (under the 4 s time-outs, so only the cut splits the pair): the cut lands while the gate holds
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "4000", "--ack-delay-ms", "1000");
        using var _ = b;
        using var link = Replicas.LinkTo(b);
        using var p = Replicas.Primary([.. link.PrimaryArgs, "--arbiter", arbiter, "--timeout-ms", "4000", "--", Counter, lines.ToString(), "3000"]);
        b.WaitForEvent(ReplicaEvent.ReplayMatched, Long);
        link.Cut();
        int? pc = p.WaitForExit(Long), bc = b.WaitForExit(Long);
        output.WriteLine($"primary {pc}:\n{p.Stderr}\nbackup {bc}:\n{b.Stderr}");
        Assert.Equal(0, bc); // the backup verified the whole run either way
        Assert.Equal(PrimaryWentOn(p) ? 0 : 3, pc);
        AssertExactlyOneWentOn(p, b, lines);
        File.Delete(arbiter);
    }

    [Fact]
    public void SplitBrainLeavesExactlyOneLiveReplica()
    {
        const int lines = 400;
        string arbiter = TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "800");
        using var _ = b;
        using var link = Replicas.LinkTo(b);
        // the guest computes between lines (~1.6M instructions each), so seconds of its run remain after the cut even
        // on a loaded machine: output is held, not the guest, so a guest that only printed would finish (and the
        // backup would hold its whole log) before the cut could split anything
        using var p = Replicas.Primary([.. link.PrimaryArgs, "--arbiter", arbiter, "--timeout-ms", "800", "--", Counter, lines.ToString(), "200000"]);
        p.WaitForEvent(ReplicaEvent.Protected, Long);
        p.WaitForStdoutBytes(lines * 26 / 10, TimeSpan.FromSeconds(60));
        link.Cut();
        int? pc = p.WaitForExit(Long);
        // a backup that received nothing of the guest (on a loaded machine its handshake can outlast --timeout-ms)
        // goes back to waiting for a primary instead of exiting: it has nothing to decide with
        bool neverFollowed = b.Event(ReplicaEvent.HandshakeAbandoned) != null && b.Event(ReplicaEvent.Following) == null;
        int? bc = b.WaitForExit(neverFollowed ? TimeSpan.FromSeconds(5) : Long);
        output.WriteLine($"primary {pc}:\n{p.Stderr}\nbackup {bc}:\n{b.Stderr}");
        if (neverFollowed && bc == null)
        {
            var abandoned = b.Event(ReplicaEvent.HandshakeAbandoned)!;
            output.WriteLine($"the backup abandoned its handshake ({abandoned.Str("reason")}) and waits for a primary again");
            b.KillHard();
            Assert.Equal(0, pc);
            Assert.True(PrimaryWentOn(p), "the primary lost its backup before any record and won the arbiter");
            AssertLines(p.StdoutText, lines);
            Assert.Empty(b.Stdout);
            Assert.Null(b.Event(ReplicaEvent.TookOver));
        }
        else if (b.Event(ReplicaEvent.ReplayMatched) != null)
        {
            // output is held, not the guest: on a fast machine the guest ended before the cut, and the end-of-run rule
            // decided through the arbiter (the backup verified the whole run and exits with the guest's status)
            Assert.Equal(0, bc);
            Assert.Equal(PrimaryWentOn(p) ? 0 : 3, pc);
        }
        else
        {
            Assert.True((pc == 0 && bc == 3) || (pc == 3 && bc == 0), $"exactly one side continues (primary {pc}, backup {bc})");
            Assert.Equal(pc == 0, PrimaryWentOn(p));
        }
        if (bc != null) AssertExactlyOneWentOn(p, b, lines);
        File.Delete(arbiter);
    }

    [Fact]
    public void MismatchedPrimariesAreRefusedAndNothingIsReplayed()
    {
        string tok1 = TempFile(".tok"), tok2 = TempFile(".tok"), stop = TempFile(".stop");
        File.WriteAllText(tok1, "correct horse battery staple\n");
        File.WriteAllText(tok2, "a wrong token, long enough\n");
        string rootA = TempFile(""), rootB = TempFile("");
        Directory.CreateDirectory(rootA); Directory.CreateDirectory(rootB);
        File.Copy(Counter, Path.Combine(rootA, "prog"));
        File.Copy(GuestEnv.Guest("counter", "glibc"), Path.Combine(rootB, "prog")); // same path, another program
        try
        {
            // neither replica may declare the other lost below on a loaded machine (at the 1 s default the backup
            // took over at load 100: the primary had merely not been scheduled, and stopped); nothing here is a loss
            var (b, url) = Replicas.StartBackup("--token-file", tok1, "--primary-silence-ms", "15000");
            using var _ = b;
            // a refused primary exits 2 with a `refused` event whose reason names the cause, and runs no guest
            string Refused(params string[] a)
            {
                using var r = Replicas.Primary(new[] { "--backup", url }.Concat(a).ToArray());
                Assert.Equal(2, r.WaitForExit(Long));
                Assert.Empty(r.Stdout);
                return r.Event(ReplicaEvent.Refused)?.Str("reason") ?? throw new Xunit.Sdk.XunitException($"no refused event:\n{r.Stderr}");
            }

            Assert.Contains("authentication failed", Refused("--token-file", tok2, "--", Counter, "3", "1000"));
            Assert.Contains("authentication failed", Refused("--", Counter, "3", "1000")); // no token at all
            Assert.Contains("protocol version 99 is not supported", Refused("--token-file", tok1, "--protocol-version", "99", "--", Counter, "3", "1000"));
            Assert.Null(b.Event(ReplicaEvent.Following));

            // a backup whose root holds another program at the same path
            var (b2, url2) = Replicas.StartBackup("--root", rootB);
            using var __ = b2;
            var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "protect", "--backup", url2, "--root", rootA, "--", "/prog", "3", "1000" });
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("is not the program that was recorded", b2.WaitForEvent(ReplicaEvent.RefusedPrimary, Long).Str("reason"));
            Assert.Null(b2.Event(ReplicaEvent.Following));

            // the backup accepts the right primary after all those refusals; a second primary is refused
            // the first primary's guest waits for the stop file before it counts, so it still runs when the second
            // primary knocks however long that one takes to start
            Assert.True(File.Exists(BusyboxTests.Busybox), $"{BusyboxTests.Busybox} is needed (Debian's busybox-static; .ci/run installs it)");
            using var first = Replicas.Primary("--backup", url, "--token-file", tok1, "--timeout-ms", "15000", "--", BusyboxTests.Busybox, "sh", "-c",
                "while [ ! -e \"$0\" ]; do sleep 0.05; done; exec \"$1\" 200 20000", stop, Counter);
            first.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.Contains("already follows a primary", Refused("--token-file", tok1, "--", Counter, "3", "1000"));
            Assert.False(first.HasExited, "the first primary still ran when the second was refused:\n" + first.Stderr);
            File.WriteAllBytes(stop, []);
            Assert.Equal(0, first.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
            AssertLines(first.StdoutText, 200);
            Assert.NotNull(b.Event(ReplicaEvent.ReplayMatched));
            Assert.Single(b.Events, e => e.Name == ReplicaEvent.Following);
        }
        finally
        {
            File.Delete(tok1); File.Delete(tok2); File.Delete(stop);
            Directory.Delete(rootA, true); Directory.Delete(rootB, true);
        }
    }
}
