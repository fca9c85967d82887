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
    static string Counter => GuestEnv.Guest("counter", "musl");
    static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    static void DeleteArbiter(string path)
    {
        foreach (var f in Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + "*")) File.Delete(f);
    }

    [Fact]
    public void APrimaryThatLostItsBackupIsProtectedAgainByAStandbyAndAForeignStandbyIsRefused()
    {
        const int lines = 400;
        string arbiter = TempFile(".lock");
        string emptyRoot = Directory.CreateTempSubdirectory("revirt-foreign-root-").FullName;
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _b = b;
            // a standby whose root does not hold the primary's program: it must refuse with the reason
            var (foreign, foreignUrl) = Replicas.StartBackup("--arbiter", arbiter, "--root", emptyRoot);
            using var _f = foreign;
            var (s, standbyUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000");
            using var _s = s;
            // ~16M instructions between lines: many seconds of the run remain after the backup is killed
            using var p = Replicas.Primary("--backup", url, "--standby", foreignUrl, "--standby", standbyUrl, "--arbiter", arbiter, "--timeout-ms", "2000",
                "--checkpoint-interval", "5000000", "--", Counter, lines.ToString(), "2000000");
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            p.WaitForStdoutBytes(lines * 26 / 10, TimeSpan.FromSeconds(60));
            b.KillHard();
            var unprotected = p.WaitForEvent(ReplicaEvent.Unprotected, Long);
            Assert.Equal(1, unprotected.Long("term"));
            var again = p.WaitForEvent(ReplicaEvent.Reprotected, Long);
            Assert.Equal(standbyUrl, again.Str("url"));
            var refused = p.WaitForEvent(ReplicaEvent.StandbyRefused, Long);
            output.WriteLine($"foreign standby: {refused.Str("reason")}");
            Assert.Equal(foreignUrl, refused.Str("url"));
            Assert.Contains("mismatch", refused.Str("reason"));
            Assert.NotNull(foreign.WaitForEvent(ReplicaEvent.RefusedPrimary, Long));
            p.WaitForEvent(ReplicaEvent.StandbyHolds, Long);
            s.WaitForEvent(ReplicaEvent.CaughtUp, Long);
            int? pc = p.WaitForExit(Long), sc = s.WaitForExit(Long);
            output.WriteLine($"primary {pc}:\n{p.Stderr}\nstandby {sc}:\n{s.Stderr}");
            Assert.Equal(0, pc);
            Assert.Equal(0, sc);
            // the standby replayed the whole run from record 1 and matched it: every checkpoint and output verified
            var matched = s.WaitForEvent(ReplicaEvent.ReplayMatched, Long);
            Assert.Equal(lines, (int)matched.Long("outputs")!.Value);
            ReplicationTests.AssertLines(p.StdoutText, lines);
            Assert.Empty(s.Stdout);
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
        const int lines = 400;
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
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", "2000", "--checkpoint-interval", "5000000", "--", Counter, lines.ToString(), "2000000");
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            p.WaitForStdoutBytes(lines * 26 / 10, TimeSpan.FromSeconds(60));
            p.KillHard();
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
