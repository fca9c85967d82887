using ReVirt.Chaos;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;
using static ReVirt.Tests.Replication.Replicas;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Changes of names and sizes on shared storage (`backup listen --shared-storage`) across a failover: the storenames
/// guest makes and removes directories, moves the file it appends to into them (writing through the descriptor
/// after the move), unlinks, truncates; every call's result is checked, so a change a survivor's guest repeats
/// after its primary made it (ENOENT, EEXIST) ends the guest with "BAD". Oracle: the tree a native run leaves,
/// which the survivor's must equal entry for entry and byte for byte.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class StorageNamesFailoverTests(ITestOutputHelper output)
{
    const int Iterations = 40, NamesIterations = 150, MetaIterations = 40, TruncIterations = 40;
    const string Work = "20000", NamesWork = "2000", PlantedNamesWork = "20000";

    static string Storenames => GuestEnv.Guest("storenames", "musl");

    /// <summary>Relative path, kind and content of every entry under <paramref name="dir"/>, in order (a symlink by
    /// its content, never followed).</summary>
    static List<string> Tree(string dir)
    {
        var all = new List<string>();
        void Walk(string d)
        {
            foreach (var e in Directory.EnumerateFileSystemEntries(d))
            {
                string rel = Path.GetRelativePath(dir, e);
                if (new FileInfo(e).LinkTarget is { } target) all.Add(rel + " -> " + target);
                else if (Directory.Exists(e)) { all.Add(rel + "/"); Walk(e); }
                else all.Add(rel + " = " + Convert.ToHexString(File.ReadAllBytes(e)));
            }
        }
        Walk(dir);
        return all.Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>The entries of the meta workload's tree (no subdirectories): name, type, permission bits, the times
    /// the guest set (c.*, r.*: a second count) and a regular file's content. FIFOs are stat'ed, never opened.</summary>
    static List<string> MetaTree(string dir) => Directory.EnumerateFileSystemEntries(dir).Select(e =>
    {
        Assert.Equal(0, HostStat.OfName(At.FDCWD, HostSys.Z(e), out var st));
        string name = Path.GetFileName(e), kind = st.IsRegular ? "-" : st.Type == SMode.IFIFO ? "p" : "?";
        string time = name[0] is 'c' or 'r' ? " t" + new DateTimeOffset(File.GetLastWriteTimeUtc(e)).ToUnixTimeSeconds() : "";
        return $"{name} {kind}{Convert.ToString(st.Mode & 0xFFF, 8)}{time}{(st.IsRegular ? " = " + Convert.ToHexString(File.ReadAllBytes(e)) : "")}";
    }).Order(StringComparer.Ordinal).ToList();

    static List<string> Native(int iterations, string work, Func<string, List<string>> tree, params string[] mode)
    {
        string dir = TempFile("");
        Directory.CreateDirectory(dir);
        try
        {
            var r = GuestEnv.Exec(Storenames, [dir, iterations.ToString(), work, .. mode], null, TimeSpan.FromMinutes(1));
            Assert.Equal(0, r.ExitCode);
            return tree(dir);
        }
        finally { Directory.Delete(dir, true); }
    }

    static readonly Lazy<List<string>> NativeTree = new(() => Native(Iterations, Work, Tree));
    static readonly Lazy<List<string>> NativeNamesTree = new(() => Native(NamesIterations, NamesWork, Tree, "names"));
    static readonly Lazy<List<string>> NativeMetaTree = new(() => Native(MetaIterations, NamesWork, MetaTree, "meta"));
    static readonly Lazy<List<string>> NativeTruncTree = new(() => Native(TruncIterations, NamesWork, Tree, "trunc"));

    static string NewRoot()
    {
        string root = TempFile("");
        Directory.CreateDirectory(Path.Combine(root, "d"));
        File.Copy(Storenames, Path.Combine(root, "prog"));
        return root;
    }

    void AssertNativeTree(string root, string what, List<string> native, Func<string, List<string>>? tree = null)
    {
        var got = (tree ?? Tree)(Path.Combine(root, "d"));
        if (!got.SequenceEqual(native))
            output.WriteLine($"{what}: the tree differs from the native run's:\n{string.Join("\n", got)}\nnative:\n{string.Join("\n", native)}");
        Assert.True(got.SequenceEqual(native), $"{what}: the tree is not the native run's ({got.Count} entries, native {native.Count})");
    }

    /// <summary>The highest I of the directories n.I on the storage (-1: none).</summary>
    static int Newest(string d) => Directory.Exists(d)
        ? Directory.EnumerateDirectories(d, "n.*").Select(p => int.TryParse(Path.GetFileName(p)[2..], out int i) ? i : -1).DefaultIfEmpty(-1).Max()
        : -1;

    /// <summary>
    /// Directories that may still appear on the storage once every thread of the backup has stopped: the one whose
    /// acknowledgement was on its way (sent, not yet read by the primary), and no other: each change of names waits
    /// for the one before it, which waits for the frozen backup's acknowledgement.
    /// </summary>
    const int AcknowledgedBeforeTheFreeze = 1;

    /// <summary>
    /// The names-only workload while the backup is frozen (<see cref="SharedStorageRuns.GrowthWhileTheBackupIsFrozen"/>):
    /// half a second, or planted until the storage went beyond what the rule allows. The rule, exactly: the newest
    /// directory n.I on the storage is one whose mkdir record the frozen backup holds (the guest makes n.0, n.1, …
    /// in order, so I is below the number of successful mkdirs in its log copy). With <paramref name="survivor"/>
    /// the primary is SIGKILLed before the backup thaws: its last change of names was logged and shipped, never
    /// acknowledged, never made, and the backup takes over.
    /// </summary>
    SharedStorageRuns.FrozenRun GrowthWhileTheBackupIsFrozen(string? plant, out string root, List<ReplicaEventRecord>? survivor = null)
    {
        root = NewRoot();
        string d = Path.Combine(root, "d");
        // planted, nothing waits for the backup: ten times the work per iteration keeps the guest going past the freeze
        string work = plant != null ? PlantedNamesWork : NamesWork;
        return SharedStorageRuns.GrowthWhileTheBackupIsFrozen(output, root, ["/d", NamesIterations.ToString(), work, "names"], $"done {NamesIterations}\n",
            () => Newest(d) >= 3, () => Newest(d), (_, held) => held.Count(r => r.Nr is Nr.mkdir or Nr.mkdirat && r.Result == 0) - 1,
            TimeSpan.FromMilliseconds(500), plant, survivor);
    }

    /// <summary>
    /// The output rule for changes of names, and the survivor's side of it: while the backup acknowledges nothing, no
    /// directory whose mkdir record it does not hold reaches the storage, and no more than the change whose
    /// acknowledgement was on its way (before changes of names were held, each was made at once: the storage gained
    /// dozens of directories in that half second); the primary is then killed with one change logged and never
    /// made, and the survivor makes it (its guest does not repeat it: no EEXIST), leaving the native run's tree.
    /// </summary>
    [Fact]
    public void NoChangeOfNamesReachesSharedStorageBeforeTheBackupHoldsItsRecordAndTheSurvivorMakesTheHeldOne()
    {
        var events = new List<ReplicaEventRecord>();
        var run = GrowthWhileTheBackupIsFrozen(null, out string root, events);
        try
        {
            Assert.True(run.After <= run.Allowed, $"n.{run.After} reached the storage, though the frozen backup held the records of n.0 to n.{run.Allowed} only");
            Assert.True(run.Growth <= AcknowledgedBeforeTheFreeze, $"the storage gained {run.Growth} directories while the backup acknowledged nothing");
            Assert.Contains(events, e => e.Name == ReplicaEvent.TookOver);
            Assert.True(SharedStorageRuns.ChangesMadeAgain(events) > 0, "the survivor made no held change of its primary");
            AssertNativeTree(root, "names, primary killed while the backup was frozen", NativeNamesTree.Value);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>Entries of the kinds h.I (links), s.I (symlinks) and n.I (directories) on the storage.</summary>
    static long NewNames(string d) => Directory.Exists(d)
        ? Directory.EnumerateFileSystemEntries(d).Count(p => Path.GetFileName(p) is ['h' or 's' or 'n', '.', ..])
        : 0;

    /// <summary>
    /// Links and symlinks under the output rule, from the guest's first change: the backup is frozen while the guest
    /// waits for its go (a file the test makes once every thread of the backup has stopped), so the backup holds no
    /// record of any change; then the guest links, and its symlink waits for that link. For half a second the storage
    /// may show no more links, symlinks and directories than the records the frozen backup holds make (before links
    /// and symlinks were held, the guest made h.0 and s.0 at once: 2 names, 0 records held). Then the backup thaws,
    /// the primary's guest goes on, and the tree is the native run's. (A survivor's side: the seeded kills of
    /// <see cref="AKilledPrimaryOnSharedStorageLeavesTheNativeRunsTree"/>, whose guest links and symlinks every
    /// iteration, and StorageChangesTests.)
    /// </summary>
    [Fact]
    public void NoLinkOrSymlinkReachesSharedStorageBeforeTheBackupHoldsItsRecord()
    {
        string root = NewRoot(), d = Path.Combine(root, "d"), go = Path.Combine(root, "go");
        try
        {
            var run = SharedStorageRuns.GrowthWhileTheBackupIsFrozen(output, root, ["/d", NamesIterations.ToString(), NamesWork, "names", "/go"], $"done {NamesIterations}\n",
                () => true, () => NewNames(d),
                (_, held) => held.Count(r => r.Nr is Nr.link or Nr.linkat or Nr.symlink or Nr.symlinkat or Nr.mkdir or Nr.mkdirat && r.Result == 0),
                TimeSpan.FromMilliseconds(500), plant: null, survivor: null, onceFrozen: () => File.WriteAllText(go, ""));
            Assert.True(run.After <= run.Allowed, $"{run.After} links, symlinks and directories reached the storage, though the frozen backup held the records of {run.Allowed}");
            AssertNativeTree(root, "links and symlinks after a frozen backup", NativeNamesTree.Value);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>What the meta workload's changes show on the storage: one for each name c.I, o.I, f.I, r.I, one for
    /// each mode the guest set after creating (c.I 0640, r.I 0600) and one for each time it set (c.I, r.I).</summary>
    static long MetaFacts(string d) => !Directory.Exists(d) ? 0 : Directory.EnumerateFileSystemEntries(d).Sum(e =>
    {
        string name = Path.GetFileName(e);
        if (name is not ['c' or 'o' or 'f' or 'r', '.', ..] || !int.TryParse(name[2..], out int i)) return 0;
        if (HostStat.OfName(At.FDCWD, HostSys.Z(e), out var st) < 0) return 0;
        long mtime = new DateTimeOffset(File.GetLastWriteTimeUtc(e)).ToUnixTimeSeconds();
        return 1 + name[0] switch
        {
            'c' => ((st.Mode & 0xFFF) == Convert.ToUInt32("640", 8) ? 1 : 0) + (mtime == i * 1000L ? 1 : 0),
            'r' => ((st.Mode & 0xFFF) == Convert.ToUInt32("600", 8) ? 1 : 0) + (mtime == i * 1000L + 1 ? 1 : 0),
            _ => 0,
        };
    });

    /// <summary>
    /// Creations (O_CREAT|O_EXCL, a read-only O_CREAT), mknod of a FIFO and a regular file, fchmod, chmod, utimensat
    /// and utimes under the output rule, and a takeover before the first is released. The backup is frozen while the
    /// guest waits for its go, so it holds no record of any of them; then the guest creates c.0 unnamed (its
    /// second open of the name and its O_EXCL create wait until the name is given). For half a second the storage
    /// may show no more names, modes and times than the held records the frozen backup has (before they were held,
    /// c.0 appeared at once: 1 fact, 0 records; with `--plant files-early` 4 facts appear). Then the backup thaws
    /// and the primary's guest runs its checks to the end (each fails with "BAD" where the guest would not see its
    /// own pending change) and the tree, with modes and times, is a native run's. (A survivor's side: the seeded
    /// kills of <see cref="AKilledPrimaryLeavesTheNativeRunsCreationsModesAndTimes"/>, and StorageChangesTests.)
    /// </summary>
    [Fact]
    public void NoCreationModeOrTimeReachesSharedStorageBeforeTheBackupHoldsItsRecord()
    {
        string root = NewRoot(), d = Path.Combine(root, "d"), go = Path.Combine(root, "go");
        try
        {
            var run = SharedStorageRuns.GrowthWhileTheBackupIsFrozen(output, root, ["/d", MetaIterations.ToString(), NamesWork, "meta", "/go"], $"done {MetaIterations}\n",
                () => true, () => MetaFacts(d),
                (_, held) => held.Count(r => r.Result >= 0 && r.Data.Length == HeldChangeRecord.Size
                    && r.Nr is Nr.openat or Nr.mknod or Nr.mknodat or Nr.chmod or Nr.fchmod or Nr.fchmodat or Nr.utimensat),
                TimeSpan.FromMilliseconds(500), plant: null, survivor: null, onceFrozen: () => File.WriteAllText(go, ""));
            Assert.True(run.After <= run.Allowed, $"{run.After} names, modes and times reached the storage, though the frozen backup held the records of {run.Allowed}");
            AssertNativeTree(root, "creations, modes and times after a frozen backup", NativeMetaTree.Value, MetaTree);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>
    /// The meta workload, the primary SIGKILLed at a seeded moment: a creation, mknod, chmod or change of times the
    /// primary held when it died is made by the survivor (a creation not released went with the primary unnamed),
    /// none twice — the survivor's guest checks each result, its O_EXCL creations included — and the tree, with modes
    /// and times, is a native run's.
    /// </summary>
    [Fact]
    public void AKilledPrimaryLeavesTheNativeRunsCreationsModesAndTimes()
        // "iter N\n" is 7 bytes: a kill in the first 5 iterations; the 35 left wait for 9 acknowledgements each (the
        // guest's own checks), which keeps it going well past the kill's 0-30 ms of jitter, mostly in held changes
        => KillRounds(new Random(12), SoakSwitch.On ? 8 : 1, MetaIterations, Work, ["meta"], 10, 40, NativeMetaTree, MetaTree);

    /// <summary>Rounds of the workload <paramref name="mode"/> whose primary is SIGKILLed after a seeded number of
    /// bytes of its stdout in [<paramref name="killFrom"/>, <paramref name="killTo"/>): each survivor's guest ends
    /// well and leaves the native run's tree; at least one round takes over.</summary>
    void KillRounds(Random rng, int rounds, int iterations, string work, string[] mode, int killFrom, int killTo, Lazy<List<string>> native, Func<string, List<string>>? tree = null)
    {
        int takeovers = 0;
        for (int round = 0; round < rounds; round++)
        {
            string root = NewRoot();
            try
            {
                if (!SharedStorageRuns.KillAndTakeOver(output, root, root, shared: true, ["/d", iterations.ToString(), work, .. mode], $"done {iterations}\n", rng.Next(killFrom, killTo), rng)) continue;
                takeovers++;
                AssertNativeTree(root, $"round {round}", native.Value, tree);
            }
            finally { Directory.Delete(root, true); }
        }
        Assert.True(takeovers > 0, "no round killed the primary before its guest finished");
    }

    /// <summary>The trunc workload's files t.K (made with "start K" before its first iteration).</summary>
    const int TruncFiles = 4;

    /// <summary>How many of the files t.K the storage shows truncated (no longer holding "start K").</summary>
    static long Truncated(string d) => Enumerable.Range(0, TruncFiles)
        .Count(k => File.Exists(Path.Combine(d, $"t.{k}")) && File.ReadAllText(Path.Combine(d, $"t.{k}")) != $"start {k}\n");

    /// <summary>
    /// Opens with O_TRUNC of existing files under the output rule, and a takeover with one held. The files t.K are on
    /// the storage before the run (the guest's own O_CREAT|O_EXCL of them fails with EEXIST: nothing held); once its
    /// directory "ready" shows on the storage (the backup holds the log up to it) the backup is frozen while the guest
    /// waits for its go, so it holds no record of any truncation; then the guest
    /// opens t.0 with O_TRUNC and checks, through a descriptor opened before, that it reads nothing (it waits for the
    /// truncation it made, never sees the old bytes). For half a second the storage may show no more truncated files
    /// than the held opens the frozen backup has records of (before truncating opens were held, t.0 was truncated at
    /// once: 1 file, 0 records; with `--plant files-early` all four are). Then the primary is SIGKILLed, the thawed
    /// backup takes over with the truncation logged, shipped and never made, makes it, and its guest runs its checks
    /// to the end: the tree is a native run's.
    /// </summary>
    [Fact]
    public void NoTruncatingOpenReachesSharedStorageBeforeTheBackupHoldsItsRecordAndTheSurvivorMakesTheHeldOne()
    {
        string root = NewRoot(), d = Path.Combine(root, "d"), go = Path.Combine(root, "go");
        for (int k = 0; k < TruncFiles; k++) File.WriteAllText(Path.Combine(d, $"t.{k}"), $"start {k}\n");
        var events = new List<ReplicaEventRecord>();
        try
        {
            var run = SharedStorageRuns.GrowthWhileTheBackupIsFrozen(output, root, ["/d", TruncIterations.ToString(), NamesWork, "trunc", "/go"], $"done {TruncIterations}\n",
                () => Directory.Exists(Path.Combine(d, "ready")), () => Truncated(d),
                (_, held) => held.Count(r => r.Nr is Nr.open or Nr.openat && r.Result >= 0 && r.Data.Length == HeldChangeRecord.Size),
                TimeSpan.FromMilliseconds(500), plant: null, survivor: events, onceFrozen: () => File.WriteAllText(go, ""));
            Assert.True(run.After <= run.Allowed, $"{run.After} truncated files reached the storage, though the frozen backup held the records of {run.Allowed} truncating opens");
            Assert.Contains(events, e => e.Name == ReplicaEvent.TookOver);
            Assert.True(SharedStorageRuns.ChangesMadeAgain(events) > 0, "the survivor made no held change of its primary");
            AssertNativeTree(root, "truncating opens, primary killed while the backup was frozen", NativeTruncTree.Value);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>
    /// The trunc workload, the primary SIGKILLed at a seeded moment: a truncation the primary held when it died is
    /// made by the survivor, whose guest's checks (nothing read after each O_TRUNC, its own bytes after each write)
    /// pass, and every file holds exactly what a native run leaves (a truncation lost would leave old bytes behind a
    /// shorter write; one made twice after a write would lose the write).
    /// </summary>
    [Fact]
    public void AKilledPrimaryLeavesTheNativeRunsTruncations()
        // "iter N\n" is 7 bytes: a kill in the first 8 iterations; each iteration waits for 3-4 acknowledgements
        => KillRounds(new Random(31), SoakSwitch.On ? 8 : 1, TruncIterations, Work, ["trunc"], 10, 60, NativeTruncTree);

    /// <summary>The planted violation (`--plant files-early`: held changes released without acknowledgements) is
    /// caught by the check above: directories whose records the frozen backup never held reach the storage.</summary>
    [Fact]
    public void PlantedEarlyReleaseOfChangesOfNamesIsCaught()
    {
        var run = GrowthWhileTheBackupIsFrozen("files-early", out string root);
        Directory.Delete(root, true);
        Assert.True(run.After > run.Allowed, $"n.{run.After} is the newest directory on the storage and the frozen backup held the records up to n.{run.Allowed}, though the primary released changes early");
    }

    /// <summary>
    /// The full workload (appends, moves of the open file, unlink, rmdir, mkdir, ftruncate, truncate), the primary
    /// SIGKILLed at seeded moments: the survivor's guest ends without a repeated or lost change and the tree is the
    /// native run's.
    /// </summary>
    [Fact]
    public void AKilledPrimaryOnSharedStorageLeavesTheNativeRunsTree()
        // "iter N\n" is 7-8 bytes: a kill somewhere in the first ~30 iterations
        => KillRounds(new Random(21), SoakSwitch.On ? 10 : 2, Iterations, Work, [], 20, 220, NativeTree);
}
