using ReVirt.Chaos;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;
using static ReVirt.Tests.Replication.Replicas;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The guest's files across a failover, in both setups: each replica with its own copy of the root, and both on one
/// directory (`backup listen --shared-storage`, where the primary holds the guest's file writes under the output
/// rule). The storelog guest appends numbered lines, rewrites records in place and reads back what it wrote; the
/// primary is SIGKILLed at seeded moments and the backup takes over. Oracle: a native run of the same guest, whose
/// files the survivor's must equal byte for byte (no line lost or doubled, every in-place record the last one).
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class StorageFailoverTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    // the kill rounds: a short run; the freeze: long enough that the guest still writes when the backup freezes
    const int Iterations = 120, FreezeIterations = 1000;
    const string Work = "20000", FreezeWork = "100000";
    static readonly string[] Files = ["log", "state", "table"];

    static string Storelog => GuestEnv.Guest("storelog", "musl");

    /// <summary>The files of a native run of storelog with these arguments.</summary>
    static Dictionary<string, byte[]> Native(int iterations, string work)
    {
        string dir = TempFile("");
        Directory.CreateDirectory(dir);
        try
        {
            var r = GuestEnv.Exec(Storelog, [dir, iterations.ToString(), work], null, TimeSpan.FromMinutes(1));
            Assert.Equal(0, r.ExitCode);
            return Files.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(dir, f)));
        }
        finally { Directory.Delete(dir, true); }
    }

    static readonly Lazy<Dictionary<string, byte[]>> NativeFiles = new(() => Native(Iterations, Work));
    static readonly Lazy<Dictionary<string, byte[]>> NativeFreezeFiles = new(() => Native(FreezeIterations, FreezeWork));

    static string NewRoot()
    {
        string root = TempFile("");
        Directory.CreateDirectory(Path.Combine(root, "d"));
        File.Copy(Storelog, Path.Combine(root, "prog"));
        return root;
    }

    void AssertNativeFiles(string root, string setup, Dictionary<string, byte[]> native)
    {
        foreach (var f in Files)
        {
            var got = File.ReadAllBytes(Path.Combine(root, "d", f));
            var want = native[f];
            if (!got.AsSpan().SequenceEqual(want))
                output.WriteLine($"{setup}: d/{f} differs from the native run's ({got.Length} vs {want.Length} bytes):\n{System.Text.Encoding.ASCII.GetString(got)}");
            Assert.True(got.AsSpan().SequenceEqual(want), $"{setup}: d/{f} is not the native run's ({got.Length} bytes, native {want.Length})");
        }
    }

    /// <summary>
    /// One kill: the primary runs storelog on <paramref name="primaryRoot"/>, is SIGKILLed once it printed
    /// <paramref name="killAfter"/> bytes (plus 0-30 ms), and the backup on <paramref name="backupRoot"/> carries the
    /// guest to its end. False when the kill landed after the guest had finished (nothing taken over).
    /// </summary>
    bool KillAndTakeOver(string primaryRoot, string backupRoot, bool shared, int killAfter, Random rng)
    {
        string arbiter = TempFile(".lock");
        try
        {
            string[] storage = shared ? ["--root", backupRoot, "--shared-storage"] : ["--root", backupRoot];
            var (b, url) = StartBackup([.. storage, "--arbiter", arbiter, "--timeout-ms", "1000"]);
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--root", primaryRoot, "--arbiter", arbiter, "--", "/prog", "/d", Iterations.ToString(), Work);
            var killer = KillWhen(p, () => (int)p.StdoutLength, killAfter, rng);
            int? code = b.WaitForExit(Long);
            killer.Join();
            output.WriteLine($"kill after {killAfter} bytes: primary printed {p.StdoutLength}; backup {code}:\n{b.Stderr}");
            Assert.Equal(0, code);
            if (b.Event(ReplicaEvent.PrimaryFinished) != null) return false;
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            Assert.EndsWith($"verified {Iterations} lines\n", b.StdoutText);
            return true;
        }
        finally { DeleteArbiter(arbiter); }
    }

    void KilledAtSeededMoments(bool shared, int seed)
    {
        var rng = new Random(seed);
        int rounds = SoakSwitch.On ? 10 : 2, takeovers = 0;
        for (int round = 0; round < rounds; round++)
        {
            string rootA = NewRoot(), rootB = shared ? rootA : NewRoot();
            try
            {
                // "line N\n" is 7-9 bytes: a kill somewhere in the first ~90 iterations
                if (!KillAndTakeOver(rootA, rootB, shared, rng.Next(40, 700), rng)) continue;
                takeovers++;
                AssertNativeFiles(rootB, shared ? "shared storage" : "separate roots", NativeFiles.Value);
            }
            finally
            {
                Directory.Delete(rootA, true);
                if (!shared) Directory.Delete(rootB, true);
            }
        }
        Assert.True(takeovers > 0, "no round killed the primary before its guest finished");
    }

    [Fact]
    public void AKilledPrimaryOnSharedStorageLeavesTheNativeRunsFiles() => KilledAtSeededMoments(shared: true, seed: 12);

    [Fact]
    public void AKilledPrimaryOnSeparateRootsLeavesTheNativeRunsFiles() => KilledAtSeededMoments(shared: false, seed: 13);

    /// <summary>
    /// Lines that may still reach the shared log after the backup froze: those it had acknowledged before, which
    /// are at most the lines written since the guest's last read-back (every fourth iteration; "line N\n" is at most
    /// 10 bytes here).
    /// </summary>
    const long AcknowledgedBeforeTheFreeze = 4 * 10;

    /// <summary>
    /// The output rule itself: while the backup is frozen (SIGSTOP) it acknowledges nothing, so the shared log may
    /// only gain what it had acknowledged before (<see cref="AcknowledgedBeforeTheFreeze"/>), though the guest goes on
    /// writing until it reads back. Returns the log's growth over a second of the freeze, or, when
    /// <paramref name="plant"/> is given, once it grew beyond that bound (waiting up to 10 s); then the backup thaws
    /// and the guest runs to its end — on the primary, or with <paramref name="survivor"/> set, on the backup: the
    /// primary is SIGKILLed while the backup is frozen, with writes held whose records the backup holds but never
    /// acknowledged (the guest waits for them at its read-back), and the backup takes over (its events are returned).
    /// The primary does not slow its guest for the backup's replay (--max-replay-lag-ms 0): only the held writes stop
    /// it, at its next read-back.
    /// </summary>
    long GrowthWhileTheBackupIsFrozen(string? plant, out string root, List<ReplicaEventRecord>? survivor = null)
    {
        root = NewRoot();
        string arbiter = TempFile(".lock"), log = Path.Combine(root, "d", "log");
        try
        {
            var (b, url) = StartBackup("--root", root, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", "30000");
            using var _ = b;
            string[] planted = plant != null ? ["--plant", plant] : [];
            using var p = Replicas.Primary(["--backup", url, "--root", root, "--arbiter", arbiter, "--timeout-ms", "30000", "--max-replay-lag-ms", "0", .. planted, "--", "/prog", "/d", FreezeIterations.ToString(), FreezeWork]);
            Assert.True(p.WaitFor(() => File.Exists(log) && new FileInfo(log).Length > 0, Long), "the guest wrote nothing");
            b.Signal(ReplicaProc.SIGSTOP);
            long before, after;
            try
            {
                before = new FileInfo(log).Length;
                if (plant == null) Thread.Sleep(1000);
                else p.WaitFor(() => new FileInfo(log).Length > before + AcknowledgedBeforeTheFreeze || p.HasExited, TimeSpan.FromSeconds(10));
                after = new FileInfo(log).Length;
            }
            finally
            {
                if (survivor != null) p.KillHard();
                b.Signal(ReplicaProc.SIGCONT);
            }
            output.WriteLine($"log {before} -> {after} bytes while the backup was frozen");
            var winner = survivor != null ? b : p;
            int? code = winner.WaitForExit(Long);
            output.WriteLine($"{winner.Name}: {code}\n{winner.Stderr}");
            Assert.Equal(0, code);
            Assert.EndsWith($"verified {FreezeIterations} lines\n", winner.StdoutText);
            if (survivor != null) survivor.AddRange(b.Events);
            else b.WaitForExit(Long);
            return after - before;
        }
        finally { DeleteArbiter(arbiter); }
    }

    [Fact]
    public void NoFileWriteReachesSharedStorageBeforeTheBackupHoldsItsRecord()
    {
        long grew = GrowthWhileTheBackupIsFrozen(null, out string root);
        try
        {
            Assert.True(grew <= AcknowledgedBeforeTheFreeze, $"the shared log grew by {grew} bytes while the backup acknowledged nothing");
            AssertNativeFiles(root, "shared storage, frozen backup", NativeFreezeFiles.Value);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>
    /// The survivor's side of the rule: writes the dead primary held (logged, shipped, never acknowledged, never
    /// stored) are stored by the backup when it takes over, before its guest goes on; without that, the lines its
    /// replayed guest wrote would be missing from the shared log.
    /// </summary>
    [Fact]
    public void ASurvivorStoresTheWritesItsPrimaryHeldWhenItDied()
    {
        var events = new List<ReplicaEventRecord>();
        long grew = GrowthWhileTheBackupIsFrozen(null, out string root, events);
        try
        {
            Assert.True(grew <= AcknowledgedBeforeTheFreeze, $"the shared log grew by {grew} bytes while the backup acknowledged nothing");
            Assert.Contains(events, e => e.Name == ReplicaEvent.TookOver);
            var stored = events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail")!)
                .Select(d => System.Text.RegularExpressions.Regex.Match(d, @"^shared storage: (\d+) file changes")).FirstOrDefault(m => m.Success);
            Assert.True(stored != null && int.Parse(stored.Groups[1].Value) > 0, "the survivor stored no held write of its primary");
            AssertNativeFiles(root, "shared storage, primary killed while the backup was frozen", NativeFreezeFiles.Value);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>The planted violation (`--plant files-early`: held file writes released without acknowledgements)
    /// is caught by the check above.</summary>
    [Fact]
    public void PlantedEarlyFileReleaseIsCaught()
    {
        long grew = GrowthWhileTheBackupIsFrozen("files-early", out string root);
        Directory.Delete(root, true);
        Assert.True(grew > AcknowledgedBeforeTheFreeze, "the shared log did not grow while the backup was frozen, though the primary released file writes early");
    }
}
