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
                "--checkpoint-interval", "2000000", "--", .. run]);
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
            var again = p.WaitForEvent(ReplicaEvent.Reprotected, Long);
            Assert.Equal(standbyUrl, again.Str("url"));
            p.WaitForEvent(ReplicaEvent.StandbyHolds, Long);
            s.WaitForEvent(ReplicaEvent.CaughtUp, Long);
            File.WriteAllBytes(stop, []);
            int? pc = p.WaitForExit(Long), sc = s.WaitForExit(Long);
            output.WriteLine($"primary {pc}:\n{p.Stderr}\nstandby {sc}:\n{s.Stderr}");
            Assert.Equal(0, pc);
            Assert.Equal(0, sc);
            // the standby replayed the whole run from record 1 and matched it: every checkpoint and output verified
            int lines = Lines(p.Stdout);
            var matched = s.WaitForEvent(ReplicaEvent.ReplayMatched, Long);
            Assert.Equal(lines, (int)matched.Long("outputs")!.Value);
            AssertTicks(p.StdoutText, lines);
            Assert.Empty(s.Stdout);
            File.Delete(stop);
        }
        finally
        {
            DeleteArbiter(arbiter);
            Directory.Delete(emptyRoot, true);
        }
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
}
