using ReVirt.Log;
using Xunit;

namespace ReVirt.Tests.Programs;

/// <summary>
/// Debian's own dynamically linked programs, unmodified, with the root directory as the guest's filesystem: the
/// VM's stdout and exit status equal the native run's byte for byte (LC_ALL=C and TZ=UTC for both, see
/// <see cref="GuestEnv"/>); python3 and sqlite3 recordings replay faithfully with small logs. The workloads are in
/// tests/Programs/debian.
/// </summary>
public class DebianProgramTests : IClassFixture<DebianProgramTests.Tree>
{
    /// <summary>A fixed directory tree for ls -la and the text tools: fixed names, sizes, modes and times.</summary>
    public sealed class Tree : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("revirt-debian").FullName;
        public Tree()
        {
            Directory.CreateDirectory(Path.Combine(Dir, "sub"));
            var words = new[] { "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta" };
            var rng = new Random(42);
            var lines = Enumerable.Range(0, 3000).Select(i => $"{words[rng.Next(words.Length)]} {rng.Next(100000)} {words[rng.Next(words.Length)]}{i % 13}");
            File.WriteAllLines(Path.Combine(Dir, "text.txt"), lines);
            File.WriteAllText(Path.Combine(Dir, "sub", "small"), "x\n");
            File.WriteAllBytes(Path.Combine(Dir, "blob.bin"), Enumerable.Range(0, 70000).Select(i => (byte)(i * 31)).ToArray());
            var t = new DateTime(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc);
            foreach (var f in new[] { "text.txt", "sub/small", "blob.bin" }) File.SetLastWriteTimeUtc(Path.Combine(Dir, f), t);
            GuestEnv.Exec("chmod", new[] { "640", Path.Combine(Dir, "blob.bin") }, null, TimeSpan.FromSeconds(30));
            File.CreateSymbolicLink(Path.Combine(Dir, "link"), "text.txt");
            Directory.SetLastWriteTimeUtc(Path.Combine(Dir, "sub"), t);
        }
        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Tree _tree;
    public DebianProgramTests(Tree tree) => _tree = tree;

    static string Workload(string name) => Path.Combine(GuestEnv.RepoRoot, "tests", "Programs", "debian", name);

    void SameAsNative(string program, string[] args, byte[]? stdin = null)
    {
        Assert.True(File.Exists(program), $"{program} is not installed (.ci/run installs it)");
        var native = GuestEnv.Native(program, args, stdin, _tree.Dir);
        var vm = GuestEnv.Vm(program, args, stdin, _tree.Dir);
        Assert.True(native.Stdout.AsSpan().SequenceEqual(vm.Stdout), $"stdout differs\n--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Fact] public void Python3Version() => SameAsNative("/usr/bin/python3", new[] { "-c", "import sys; print(sys.version)" });
    [Fact] public void Python3Workload() => SameAsNative("/usr/bin/python3", new[] { Workload("workload.py") });
    [Fact] public void Sqlite3Workload() => SameAsNative("/usr/bin/sqlite3", Array.Empty<string>(), File.ReadAllBytes(Workload("workload.sql")));

    [Fact]
    public void PerlRegexesAndHashes() => SameAsNative("/usr/bin/perl", new[] { "-e",
        "my %h; $h{$_}++ for split //, 'the quick brown fox jumps over the lazy dog'; " +
        "print join(',', map {\"$_=$h{$_}\"} sort keys %h), \"\\n\"; open my $f, '<', 'text.txt' or die; my %c; " +
        "while (<$f>) { $c{$1} += $2 if /^(\\w+) (\\d+)/ } print map {\"$_ $c{$_}\\n\"} sort { $c{$b} <=> $c{$a} || $a cmp $b } keys %c;" });

    [Fact] public void Gawk() => SameAsNative("/usr/bin/gawk", new[] { "{ s[$1] += $2; n++ } END { PROCINFO[\"sorted_in\"] = \"@ind_str_asc\"; for (k in s) printf \"%s %d %.3f\\n\", k, s[k], s[k] / n }", "text.txt" });
    [Fact] public void GrepExtended() => SameAsNative("/usr/bin/grep", new[] { "-E", "-c", "^(alpha|beta) [0-9]{3,4} .*[27]$", "text.txt" });
    [Fact] public void Sed() => SameAsNative("/usr/bin/sed", new[] { "-E", "s/([a-z]+) ([0-9]+)/\\2:\\1/;/^9/d", "text.txt" });
    [Fact] public void Sort() => SameAsNative("/usr/bin/sort", new[] { "-k2,2n", "-k1,1", "text.txt" });
    [Fact] public void Sha256sum() => SameAsNative("/usr/bin/sha256sum", new[] { "text.txt", "blob.bin" });
    [Fact] public void LsLa() => SameAsNative("/usr/bin/ls", new[] { "-la", "--time-style=full-iso", "sub", "text.txt", "blob.bin", "link" });
    [Fact] public void DateOfEpoch() => SameAsNative("/usr/bin/date", new[] { "-d", "@0" });

    /// <summary>A dynamically linked program's recording is small (its libraries are logged by reference) and replays
    /// to the same output. sqlite3 shows it in the default run; python3 (the same mechanism with more libraries,
    /// the longest case of the class) is the soak's (REVIRT_SOAK=1); Python3Workload runs python3 natively and in the VM
    /// by default.</summary>
    [Theory]
    [InlineData("python3")]
    [InlineData("sqlite3")]
    public void RecordAndReplayAreFaithfulWithSmallLogs(string which)
    {
        if (which == "python3" && !SoakSwitch.On) return;
        string log = Path.Combine(Path.GetTempPath(), $"revirt-{Guid.NewGuid():N}.rvlog");
        try
        {
            var (prog, args, stdin) = which == "python3"
                ? ("/usr/bin/python3", new[] { Workload("workload.py") }, (byte[]?)null)
                : ("/usr/bin/sqlite3", Array.Empty<string>(), File.ReadAllBytes(Workload("workload.sql")));
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--", prog }.Concat(args).ToArray(), stdin, _tree.Dir);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" });
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.Stdout, rp.Stdout);
            // the libraries are in the log by reference: far below the size of the program's own libraries
            long size = new FileInfo(log).Length;
            Assert.True(size < 1 << 20, $"log of {size} bytes");
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// read(2) of a file nobody changed since before the run is logged as (path, offset, hash), not its bytes:
    /// sha256sum reading a 35 KB licence text leaves a log far smaller than the text, and the replay (which reads the
    /// same file from its root and checks the hash) prints the same digest.
    /// </summary>
    [Fact]
    public void StableFilesReadWithReadAreLoggedByReference()
    {
        const string text = "/usr/share/common-licenses/GPL-3"; // base-files: on every Debian system
        string log = Path.Combine(Path.GetTempPath(), $"revirt-{Guid.NewGuid():N}.rvlog");
        try
        {
            var native = GuestEnv.Native("/usr/bin/sha256sum", [text]);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", "/usr/bin/sha256sum", text]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            int reads = 0;
            using (var reader = LogReader.Open(log))
                while (reader.TryRead(out var r))
                    if (r.Kind == RecordKind.FileContent && r.Decode<FileContent>() is { Path: text } c && c.Nr == ReVirt.Linux.Nr.read) reads++;
                    else if (r.Kind == RecordKind.FileContentRun && r.Decode<FileContentRun>() is { Path: text } run && run.Nr == ReVirt.Linux.Nr.read) reads += (int)run.Reads;
            Assert.True(reads > 0, "no read of the text was logged by reference");
            long size = new FileInfo(log).Length;
            Assert.True(size < new FileInfo(text).Length / 2, $"log of {size} bytes for a {new FileInfo(text).Length}-byte text");
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(native.StdoutText, rp.StdoutText);
        }
        finally { File.Delete(log); }
    }
}
