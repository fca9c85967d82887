using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// The guest's /proc describes the guest (tests/Loader/procview.c, a dynamic glibc program): maps with offsets and
/// paths, exe, fd/ and /dev/fd, cmdline, auxv and status agree with what the same program sees natively; the
/// cpuinfo flags line agrees with CPUID executed in the VM; and the VM process's own /proc (mem of its pid, of
/// self, through a symlink, another process's files) is unreachable with root "/".
/// </summary>
public class ProcViewTests : IClassFixture<ProcViewTests.Build>
{
    public sealed class Build : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("revirt-procview").FullName;
        public string Program => Path.Combine(Dir, "procview");
        public string Data => Path.Combine(Dir, "data");
        public Build()
        {
            var cc = GuestEnv.Exec("gcc", new[] { "-O1", "-o", Program, Path.Combine(GuestEnv.RepoRoot, "tests", "Loader", "procview.c") }, null, TimeSpan.FromMinutes(2));
            if (cc.ExitCode != 0) throw new InvalidOperationException("gcc failed: " + cc.Stderr);
            File.WriteAllBytes(Data, Enumerable.Range(0, 5 * 4096).Select(i => (byte)(i * 7)).ToArray());
        }
        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Build _b;
    public ProcViewTests(Build b) => _b = b;

    static string[] Lines(RunOutcome r, bool hostMem) => r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("host-mem") == hostMem).ToArray();

    [Fact]
    public void TheGuestSeesItselfAsNative()
    {
        var native = GuestEnv.Native(_b.Program, new[] { _b.Data });
        var vm = GuestEnv.Vm(_b.Program, new[] { _b.Data });
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal(Lines(native, false), Lines(vm, false));
        Assert.Contains("maps r--p 00001000 data", vm.StdoutText);
    }

    [Fact]
    public void TheVmProcessesOwnProcIsUnreachable()
    {
        var native = GuestEnv.Native(_b.Program, new[] { _b.Data });
        var vm = GuestEnv.Vm(_b.Program, new[] { _b.Data }, extra: new[] { "--root", "/" });
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        var nat = Lines(native, true);
        // natively a process can open its own memory: the check below is one that can fail
        Assert.Contains(nat, l => l.StartsWith("host-mem pid ") && !l.Contains(" -1 "));
        var mine = Lines(vm, true);
        Assert.Equal(4, mine.Length);
        foreach (var l in mine) Assert.EndsWith(" -1 errno 2", l); // ENOENT
    }

    [Fact]
    public void CpuinfoFlagsMatchCpuidInTheVm()
    {
        var vm = GuestEnv.Vm(_b.Program, new[] { "cpu" });
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal("flags checked 24 mismatches 0 nprocs 1 affinity 1\n", vm.StdoutText);
    }

    [Fact]
    public void ReadingProcIsReplayedFaithfully()
    {
        string log = Path.Combine(_b.Dir, $"{Guid.NewGuid():N}.rvlog");
        var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--", _b.Program, _b.Data });
        Assert.True(rec.ExitCode == 0, rec.Stderr);
        var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" });
        Assert.True(rp.ExitCode == 0, rp.Stderr);
        Assert.Equal(rec.StdoutText, rp.StdoutText);
    }
}
