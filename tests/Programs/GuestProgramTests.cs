using System.Text;
using Xunit;

namespace ReVirt.Tests.Programs;

/// <summary>Our own C programs (guests/src), built with glibc and musl: the VM's output and exit status must be
/// identical to the same binary run natively.</summary>
public class GuestProgramTests
{
    public static IEnumerable<object[]> Deterministic()
    {
        foreach (var name in new[] { "intarith", "floatarith", "strings", "mallocchurn", "qsort", "setjmp", "exitcode", "echoargs", "bench", "sigsegv_handler", "smc" })
            foreach (var libc in new[] { "glibc", "musl" })
                yield return new object[] { name, libc };
    }

    static string[] ArgsFor(string name) => name switch
    {
        "exitcode" => new[] { "42" },
        "echoargs" => new[] { "one", "two words", "" },
        "bench" => new[] { "1" },
        _ => Array.Empty<string>(),
    };

    [Theory]
    [MemberData(nameof(Deterministic))]
    public void SameOutputAsNative(string name, string libc)
    {
        string prog = GuestEnv.Guest(name, libc);
        var stdin = Encoding.ASCII.GetBytes("some input\nfor the guest\n");
        var native = GuestEnv.Native(prog, ArgsFor(name), stdin);
        var vm = GuestEnv.Vm(prog, ArgsFor(name), stdin);
        Assert.True(native.StdoutText == vm.StdoutText, $"stdout differs\n--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void FilesProgramSeesTheSameDirectory(string libc)
    {
        string prog = GuestEnv.Guest("files", libc);
        string d1 = Directory.CreateTempSubdirectory("revirt-files-native").FullName;
        string d2 = Directory.CreateTempSubdirectory("revirt-files-vm").FullName;
        try
        {
            var native = GuestEnv.Native(prog, new[] { d1 });
            var vm = GuestEnv.Vm(prog, new[] { d2 });
            Assert.Equal(native.StdoutText.Replace(d1, "DIR"), vm.StdoutText.Replace(d2, "DIR"));
            Assert.Equal(native.ExitCode, vm.ExitCode);
        }
        finally { Directory.Delete(d1, true); Directory.Delete(d2, true); }
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void IllegalInstructionIsSigill(string libc)
    {
        var vm = GuestEnv.Vm(GuestEnv.Guest("badinsn", libc), Array.Empty<string>());
        Assert.Equal(132, vm.ExitCode);
        Assert.Equal("before\n", vm.StdoutText);
        Assert.Contains("SIGILL", vm.Stderr);
        Assert.Contains("0f 0b", vm.Stderr); // the bytes of ud2
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void WildPointerIsSigsegv(string libc)
    {
        var vm = GuestEnv.Vm(GuestEnv.Guest("wildptr", libc), Array.Empty<string>());
        Assert.Equal(139, vm.ExitCode);
        Assert.Equal("before\n", vm.StdoutText);
        Assert.Contains("SIGSEGV", vm.Stderr);
        Assert.Contains("0x10", vm.Stderr);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void UnknownSyscallIsEnosysWithAWarning(string libc)
    {
        string prog = GuestEnv.Guest("badsyscall", libc);
        var native = GuestEnv.Native(prog, Array.Empty<string>());
        var vm = GuestEnv.Vm(prog, Array.Empty<string>());
        Assert.Equal(native.StdoutText, vm.StdoutText);
        Assert.Equal(0, vm.ExitCode);
        Assert.Contains("unsupported syscall 1000", vm.Stderr);
    }

    [Fact]
    public void MissingProgramIs127()
    {
        var vm = GuestEnv.Vm("/nonexistent/program", Array.Empty<string>());
        Assert.Equal(127, vm.ExitCode);
        Assert.Contains("no such file", vm.Stderr);
    }

    [Fact]
    public void RootConfinesTheGuest()
    {
        // a root with busybox and a symlink pointing outside: the guest sees only the root
        string root = Directory.CreateTempSubdirectory("revirt-root").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(root, "bin"));
            File.Copy("/bin/busybox", Path.Combine(root, "bin", "busybox"));
            File.WriteAllText(Path.Combine(root, "inside.txt"), "inside\n");
            File.CreateSymbolicLink(Path.Combine(root, "escape"), "/etc/passwd");
            File.CreateSymbolicLink(Path.Combine(root, "up"), "../../../../..");
            var cat = GuestEnv.Vm("/bin/busybox", new[] { "cat", "/inside.txt", "/../../inside.txt", "/up/inside.txt" }, extra: new[] { "--root", root });
            Assert.Equal("inside\ninside\ninside\n", cat.StdoutText);
            var esc = GuestEnv.Vm("/bin/busybox", new[] { "cat", "/escape" }, extra: new[] { "--root", root });
            Assert.NotEqual(0, esc.ExitCode);
            Assert.DoesNotContain("root:", esc.StdoutText);
        }
        finally { Directory.Delete(root, true); }
    }
}
