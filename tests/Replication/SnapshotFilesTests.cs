using System.Diagnostics;
using ReVirt.Harness;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Re-protection by snapshot of a standby with a root of its own (separate roots, no --shared-storage): the snapshot
/// carries the files the guest changed since the start. A busybox script appends numbered lines to a file (and to
/// another through a descriptor it holds open across the snapshot), rewrites a file in place, makes, renames and
/// removes directories, makes symlinks and changes modes; its backup dies, a standby whose root
/// is a copy of the root as the guest started joins by snapshot, and its root is compared file by file with the live
/// one at the join (the guest waits there on a file only the test removes); then the live replica is killed and the
/// standby takes over. The oracle is the same script run natively: the files the guest leaves equal the native run's
/// (no line lost or doubled), and the output is every line once.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class SnapshotFilesTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    const int Iterations = 160, HoldAt = 40;

    /// <summary>The guest: relative paths under its working directory (the root), so the native run is the same text.
    /// At iteration <see cref="HoldAt"/> it prints "waiting" and waits while the file `hold` exists.</summary>
    static readonly string Script = string.Join("; ",
        "mkdir data",
        "exec 3>> data/held",
        "i=0",
        $"while [ $i -lt {Iterations} ]",
        "do echo \"line $i\" >> data/log",
        "printf 'count %08d\\n' $i 1<> data/state",
        "echo \"held $i\" >&3",
        "k=$((i / 20))",
        "if [ $((i % 20)) -eq 3 ]; then mkdir data/d$k; echo \"made $i\" > data/d$k/a; echo x > data/d$k/b; fi",
        "if [ $((i % 20)) -eq 7 ]; then mv data/d$k data/moved$k; : > data/moved$k/b; fi",
        "if [ $((i % 20)) -eq 11 ] && [ $k -gt 0 ]; then rm -r data/moved$((k - 1)); fi",
        "if [ $((i % 20)) -eq 13 ]; then chmod 0$((600 + k % 2 * 40)) data/state; ln -sf moved$k data/link; fi",
        $"if [ $i -eq {HoldAt} ]; then echo waiting; while [ -e hold ]; do sleep 0.05; done; fi",
        "echo \"line $i\"",
        "i=$((i + 1))",
        "sleep 0.02",
        "done",
        "echo done");

    /// <summary>A root holding busybox (the guest's program) and the file `hold`: the start state every replica copies.</summary>
    static string MakeRoot(string name)
    {
        string root = Directory.CreateTempSubdirectory($"revirt-{name}-").FullName;
        Directory.CreateDirectory(Path.Combine(root, "bin"));
        File.Copy(BusyboxTests.Busybox, Path.Combine(root, "bin", "busybox"));
        File.WriteAllBytes(Path.Combine(root, "hold"), []);
        return root;
    }

    /// <summary>Every path under a directory with its kind, permission bits and content (symlinks by target).</summary>
    static SortedDictionary<string, string> Tree(string dir)
    {
        var tree = new SortedDictionary<string, string>(StringComparer.Ordinal);
        void Walk(string d)
        {
            foreach (var e in new DirectoryInfo(d).GetFileSystemInfos())
            {
                string rel = Path.GetRelativePath(dir, e.FullName);
                if (e.LinkTarget != null) { tree[rel] = "-> " + e.LinkTarget; continue; }
                string mode = Convert.ToString((int)e.UnixFileMode, 8);
                if (e is DirectoryInfo sub) { tree[rel] = "dir " + mode; Walk(sub.FullName); }
                else tree[rel] = $"file {mode} " + Convert.ToHexString(File.ReadAllBytes(e.FullName));
            }
        }
        Walk(dir);
        return tree;
    }

    static void AssertSameTree(SortedDictionary<string, string> want, SortedDictionary<string, string> got, string what)
    {
        foreach (var (path, v) in want)
            Assert.True(got.TryGetValue(path, out var g) && g == v, $"{what}: {path} is {(g == null ? "missing" : g[..Math.Min(60, g.Length)])}, expected {v[..Math.Min(60, v.Length)]}");
        foreach (var path in got.Keys) Assert.True(want.ContainsKey(path), $"{what}: {path} should not be there");
    }

    [Fact]
    public void AStandbyWithItsOwnRootJoinsBySnapshotWithTheChangedFilesAndTakesOver()
    {
        string arbiter = Replicas.TempFile(".lock");
        string native = MakeRoot("native"), rootP = MakeRoot("primary"), rootB = MakeRoot("backup"), rootS = MakeRoot("standby");
        try
        {
            // the oracle: the same script natively (no hold file there: it does not wait)
            File.Delete(Path.Combine(native, "hold"));
            var psi = new ProcessStartInfo(Path.Combine(native, "bin", "busybox"), ["sh", "-c", Script]) { WorkingDirectory = native, RedirectStandardOutput = true };
            using (var n = Process.Start(psi)!)
            {
                string nativeOut = n.StandardOutput.ReadToEnd();
                Assert.True(n.WaitForExit(120_000), "the native run ends");
                Assert.Equal(0, n.ExitCode);
                Assert.EndsWith("done\n", nativeOut);
            }
            var want = Tree(Path.Combine(native, "data"));
            Assert.Equal(Enumerable.Range(0, Iterations).Select(i => $"line {i}"), File.ReadAllLines(Path.Combine(native, "data", "log")));

            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--root", rootB);
            using var _b = b;
            var (s, standbyUrl) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--root", rootS);
            using var _s = s;
            using var p = Replicas.Primary("--backup", url, "--standby", standbyUrl, "--standby-retry-ms", "200", "--arbiter", arbiter, "--timeout-ms", "2000",
                "--root", rootP, "--cwd", "/", "--", "/bin/busybox", "sh", "-c", Script);
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            // the guest waits at the hold file (its output is released: the backup holds its log)
            Assert.True(p.WaitFor(() => p.StdoutText.Contains("waiting\n"), Long), "the guest reaches the hold point:\n" + p.Stderr);
            b.KillHard();
            var again = p.WaitForEvent(ReplicaEvent.Reprotected, Long);
            Assert.True(again.Str("mode") == "snapshot", "joined by " + again.Str("mode") + ": " + p.Event(ReplicaEvent.SnapshotUnsupported)?.Str("reason"));
            var taken = p.WaitForEvent(ReplicaEvent.SnapshotTaken, Long);
            var restored = s.WaitForEvent(ReplicaEvent.SnapshotRestored, Long);
            output.WriteLine($"snapshot at record {taken.Long("sequence")}: {taken.Long("files")} paths, {taken.Long("fileBytes")} bytes of files, pause {taken.Num("pauseMs")} ms");
            Assert.Equal(taken.Long("sequence"), restored.Long("sequence"));
            Assert.True(taken.Long("files") > 5, "the snapshot carries the changed files");
            Assert.False(string.IsNullOrEmpty(taken.Str("filesDigest")));
            Assert.Equal(taken.Str("filesDigest"), restored.Str("filesDigest"));
            p.WaitForEvent(ReplicaEvent.StandbyHolds, Long);
            // at the join, the standby's root equals the live one, file by file (the guest still waits)
            AssertSameTree(Tree(rootP), Tree(rootS), "the standby's root at the join");
            File.Delete(Path.Combine(rootP, "hold"));
            Assert.True(p.WaitFor(() => Replicas.Lines(p.Stdout) >= HoldAt + 30, Long), "the guest goes on after the hold");
            p.KillHard();
            var took = s.WaitForEvent(ReplicaEvent.TookOver, Long);
            int? sc = s.WaitForExit(Long);
            output.WriteLine($"took over at record {took.ULong("record")}; standby {sc}:\n{s.Stderr}");
            Assert.Equal(0, sc);
            Assert.Null(s.Event(ReplicaEvent.Diverged));
            // the files the guest leaves equal the native run's: no line lost or doubled, every rewrite, rename and removal
            AssertSameTree(want, Tree(Path.Combine(rootS, "data")), "the survivor's files");
            // the output: the primary's up to where the standby resumed, then the standby's: every line once
            int resume = (int)took.Long("resumeStdoutAt")!.Value;
            var all = System.Text.Encoding.ASCII.GetString(p.Stdout.AsSpan(0, Math.Min(resume, p.Stdout.Length))) + s.StdoutText;
            var lines = all.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("line ")).ToList();
            Assert.Equal(Enumerable.Range(0, Iterations).Select(i => $"line {i}"), lines);
            Assert.EndsWith("done\n", all);
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
            foreach (var d in new[] { native, rootP, rootB, rootS }) Directory.Delete(d, recursive: true);
        }
    }
}
