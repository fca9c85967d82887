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

    bool KillAndTakeOver(string primaryRoot, string backupRoot, bool shared, int killAfter, Random rng)
        => SharedStorageRuns.KillAndTakeOver(output, primaryRoot, backupRoot, shared, ["/d", Iterations.ToString(), Work], $"verified {Iterations} lines\n", killAfter, rng);

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
    /// Lines that may still reach the shared log once every thread of the backup has stopped: those it had
    /// acknowledged before (acknowledgements the primary had not read yet), which
    /// are at most the lines written since the guest's last read-back (every fourth iteration; "line N\n" is at most
    /// 10 bytes here).
    /// </summary>
    const long AcknowledgedBeforeTheFreeze = 4 * 10;

    /// <summary>
    /// The output rule itself: while the backup is frozen (SIGSTOP) it acknowledges nothing, so the shared log may
    /// only gain what it had acknowledged before (<see cref="AcknowledgedBeforeTheFreeze"/>), though the guest goes on
    /// writing until it reads back (<see cref="SharedStorageRuns.GrowthWhileTheBackupIsFrozen"/>: over a second, or
    /// planted until it grew beyond the bound; with <paramref name="survivor"/> the primary is killed while the
    /// backup is frozen and the backup takes over; the guest waits for its held writes at its read-back).
    /// </summary>
    long GrowthWhileTheBackupIsFrozen(string? plant, out string root, List<ReplicaEventRecord>? survivor = null)
    {
        root = NewRoot();
        string log = Path.Combine(root, "d", "log");
        return SharedStorageRuns.GrowthWhileTheBackupIsFrozen(output, root, ["/d", FreezeIterations.ToString(), FreezeWork], $"verified {FreezeIterations} lines\n",
            () => File.Exists(log) && new FileInfo(log).Length > 0, () => new FileInfo(log).Length, (before, _) => before + AcknowledgedBeforeTheFreeze,
            TimeSpan.FromSeconds(1), plant, survivor).Growth;
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
            Assert.True(SharedStorageRuns.ChangesMadeAgain(events) > 0, "the survivor stored no held write of its primary");
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
