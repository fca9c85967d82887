using ReVirt.Log;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// A dynamically linked glibc program (tests/Loader/mapfile.c, built here with gcc) in a guest root that holds only
/// it, its interpreter and libc: PT_INTERP loading and file mappings against the native run, and recordings whose
/// library content is logged by reference, replayed from the replica's root and refused when that root differs.
/// </summary>
public class DynamicProgramTests(DynamicProgramTests.Root root, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<DynamicProgramTests.Root>
{
    public sealed class Root : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("revirt-dynroot").FullName;
        public string Program => Path.Combine(Dir, "bin", "mapfile");
        public static readonly string[] Libraries = { "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6" };

        public Root()
        {
            Directory.CreateDirectory(Path.Combine(Dir, "bin"));
            var src = Path.Combine(GuestEnv.RepoRoot, "tests", "Loader", "mapfile.c");
            var cc = GuestEnv.Exec("gcc", new[] { "-O1", "-o", Program, src }, null, TimeSpan.FromMinutes(2));
            if (cc.ExitCode != 0) throw new InvalidOperationException("gcc failed: " + cc.Stderr);
            foreach (var lib in Libraries)
            {
                var dst = Dir + lib;
                Directory.CreateDirectory(Path.GetDirectoryName(dst)!);
                File.Copy(lib, dst);
            }
            var rng = new Random(7);
            var data = new byte[5 * 4096 + 123];
            rng.NextBytes(data);
            File.WriteAllBytes(Path.Combine(Dir, "data"), data);
            // files count as unchanged (recordable by reference) once they are older than the recorder's start by a margin
            Thread.Sleep(TimeSpan.FromSeconds(2.5));
        }

        /// <summary>A fresh 4 KiB file for the shared mapping, under the root; its guest path.</summary>
        public string NewSharedFile()
        {
            string name = $"shared-{Guid.NewGuid():N}";
            File.WriteAllText(Path.Combine(Dir, name), new string(' ', 4096));
            return "/" + name;
        }

        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Root _root = root;

    string[] RootArgs => new[] { "--root", _root.Dir };

    [Fact]
    public void MappingsBehaveAsNative()
    {
        string s1 = _root.NewSharedFile(), s2 = _root.NewSharedFile();
        var native = GuestEnv.Native(_root.Program, new[] { Path.Combine(_root.Dir, "data"), _root.Dir + s1 });
        var vm = GuestEnv.Vm("/bin/mapfile", new[] { "/data", s2 }, extra: RootArgs);
        Assert.True(native.ExitCode == 0, native.Stderr);
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal(native.StdoutText, vm.StdoutText);
        // the shared mapping's writes reached the file, as natively
        Assert.Equal(File.ReadAllBytes(_root.Dir + s1), File.ReadAllBytes(_root.Dir + s2));
    }

    static string TempLog() => Path.Combine(Path.GetTempPath(), $"revirt-{Guid.NewGuid():N}.rvlog");

    (string Log, RunOutcome Rec) Record()
    {
        string log = TempLog();
        var a = new List<string> { "record", "--log", log };
        a.AddRange(RootArgs);
        a.AddRange(new[] { "--", "/bin/mapfile", "/data", _root.NewSharedFile() });
        var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, a.ToArray());
        Assert.True(rec.ExitCode == 0, rec.Stderr);
        return (log, rec);
    }

    static RunOutcome Replay(string log, string root)
        => GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output", "--root", root });

    [Fact]
    public void LibrariesAreRecordedByReferenceAndReplayed()
    {
        var (log, rec) = Record();
        try
        {
            int byReference = 0;
            using (var reader = LogReader.Open(log))
                while (reader.TryRead(out var r))
                    if (r.Kind == RecordKind.FileContent) byReference++;
            // the interpreter (read by the loader) and libc's mappings at least
            Assert.True(byReference >= 3, $"{byReference} records by reference");
            // far smaller than libc itself, which would be in the log several times if logged by value
            Assert.True(new FileInfo(log).Length < new FileInfo(Root.Libraries[1]).Length / 4, $"log of {new FileInfo(log).Length} bytes");
            var rp = Replay(log, _root.Dir);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
        }
        finally { File.Delete(log); }
    }

    [Theory]
    [InlineData("changed")]
    [InlineData("missing")]
    public void AReplicaRootWithOtherLibrariesIsRefusedNamingTheFile(string how)
    {
        var (log, _) = Record();
        string other = Directory.CreateTempSubdirectory("revirt-dynroot-other").FullName;
        try
        {
            Assert.Equal(0, GuestEnv.Exec("cp", new[] { "-a", _root.Dir + "/.", other }, null, TimeSpan.FromMinutes(1)).ExitCode);
            string libc = other + Root.Libraries[1];
            if (how == "missing") File.Delete(libc);
            else
            {
                var b = File.ReadAllBytes(libc);
                b[0x2000] ^= 0x55;
                File.WriteAllBytes(libc, b);
            }
            var rp = Replay(log, other);
            Assert.Equal(2, rp.ExitCode);
            Assert.Contains("libc.so.6", rp.Stderr);
        }
        finally { File.Delete(log); Directory.Delete(other, true); }
    }

    /// <summary>
    /// A broken library in the root: the guest gets what Linux gives it. The oracle is the same root run natively
    /// under chroot(8) (the tests run as root): ld.so's own message on stderr, unchanged, and the same exit status
    /// (127 for a missing or unloadable library; a signal's status if ld.so touches a mapping past a truncated end).
    /// </summary>
    [Theory]
    [InlineData("missing")]
    [InlineData("truncated")]
    [InlineData("header-zeroed")]
    public void ABrokenLibraryGivesTheGuestWhatLinuxGivesIt(string how)
    {
        string other = Directory.CreateTempSubdirectory("revirt-dynroot-broken").FullName;
        try
        {
            Assert.Equal(0, GuestEnv.Exec("cp", new[] { "-a", _root.Dir + "/.", other }, null, TimeSpan.FromMinutes(1)).ExitCode);
            string libc = other + Root.Libraries[1];
            var b = File.ReadAllBytes(libc);
            switch (how)
            {
                case "missing": File.Delete(libc); break;
                case "truncated": File.WriteAllBytes(libc, b.AsSpan(0, b.Length / 3).ToArray()); break;
                default: Array.Clear(b, 0, 64); File.WriteAllBytes(libc, b); break;
            }
            string s = "/" + Path.GetFileName(_root.NewSharedFile());
            File.Copy(_root.Dir + s, other + s);
            var native = GuestEnv.Exec("chroot", new[] { other, "/bin/mapfile", "/data", s }, null, TimeSpan.FromMinutes(1));
            var vm = GuestEnv.Vm("/bin/mapfile", new[] { "/data", s }, extra: new[] { "--root", other });
            Assert.Equal(native.ExitCode, vm.ExitCode);
            // the VM's own diagnostic of a fatal signal ("revirt: guest killed by ...") is the VM's, not the guest's
            string guestStderr = string.Join("\n", vm.Stderr.Split('\n').Where(l => !l.StartsWith("revirt: ")));
            Assert.Equal(native.Stderr.Trim(), guestStderr.Trim());
            output.WriteLine($"{how}: exit {vm.ExitCode}; {vm.Stderr.Trim()}");
        }
        finally { Directory.Delete(other, true); }
    }
}
