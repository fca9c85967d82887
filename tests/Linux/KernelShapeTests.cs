using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>The kernel's syscall table, its diagnostics, and the machine's thread limit.</summary>
public class KernelShapeTests
{
    static Kernel NewKernel(TextWriter diagnostics)
        => new(new MachineOptions { Diagnostics = diagnostics }, new LiveBoundary());

    /// <summary>A disposed machine holds no host descriptor: one that leaked its root descriptor per machine ran a
    /// long-lived process (the test host, the fuzzer) out of descriptors, after which host waits never woke.</summary>
    [Fact]
    public void ADisposedMachineLeavesNoHostDescriptorBehind()
    {
        string root = Directory.CreateTempSubdirectory("revirt-fdleak-").FullName;
        try
        {
            for (int i = 0; i < 20; i++)
            {
                using var m = new Machine(new MachineOptions { Root = root, Diagnostics = TextWriter.Null });
                Assert.NotEmpty(DescriptorsOn(root)); // the root descriptor is open while the machine lives
            }
            Assert.Empty(DescriptorsOn(root));
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>This process's descriptors that name <paramref name="dir"/> or something below it.</summary>
    static List<string> DescriptorsOn(string dir)
    {
        var found = new List<string>();
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target = null;
            try { target = new FileInfo(fd).LinkTarget; } catch (IOException) { } // closed meanwhile
            if (target != null && (target == dir || target.StartsWith(dir + "/", StringComparison.Ordinal))) found.Add($"{fd} -> {target}");
        }
        return found;
    }

    [Fact]
    public void UnknownSyscallWarningNamesTheSyscallOnce()
    {
        var sw = new StringWriter();
        using var k = NewKernel(sw);
        Assert.Equal(-Errno.ENOSYS, k.Unknown(k.MainThread, Nr.io_uring_setup));
        Assert.Equal(-Errno.ENOSYS, k.Unknown(k.MainThread, Nr.io_uring_setup));
        var lines = sw.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains("unsupported syscall 'io_uring_setup' (425)", lines[0]);
        Assert.Contains("-ENOSYS", lines[0]);
    }

    [Fact]
    public void SyscallTableNamesEntriesAsLinuxDoes()
    {
        using var k = NewKernel(TextWriter.Null);
        // names come from the kernel's asm/unistd_64.h; spot-check numbers against the ABI
        Assert.Equal("read", k.Syscalls[0]!.Name);
        Assert.Equal("clone", k.Syscalls[56]!.Name);
        Assert.Equal("exit_group", k.Syscalls[231]!.Name);
        Assert.Equal("io_uring_setup", Nr.Name(425));
        Assert.Null(k.Syscalls[Nr.io_uring_setup]);
        Assert.All(k.Syscalls.Entries, e => Assert.Equal(Nr.Name(e.Nr), e.Name));
        Assert.All(k.Syscalls.Entries, e => Assert.NotEqual(SyscallFlags.None, e.Flags));
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void ThousandsOfThreadsEndWithEagainAtTheLimitAndTheVmKeepsRunning(string libc)
    {
        // natively the program creates all 6000; in the VM clone fails with EAGAIN at 4096 threads (main included),
        // while the preemption timer runs and the thread list grows under it
        string prog = GuestEnv.Guest("manythreads", libc);
        var vm = GuestEnv.Vm(prog, Array.Empty<string>());
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal("created 4095 threads; stopped by EAGAIN\nall 4095 ran and were joined: yes\n", vm.StdoutText);
    }
}
