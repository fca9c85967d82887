using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Memory;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// What processes share underneath (pages copy-on-write after fork, program images mapped from one template,
/// blocks decoded once per image) must never show: a guest that writes heap, stack and its own code around forks
/// prints what it prints natively, and replays faithfully; the memory and code cache keep each address space's
/// bytes and decoded code its own.
/// </summary>
public class SharedImageTests
{
    [Theory]
    [InlineData("musl")]
    [InlineData("glibc")]
    public void ForkedPagesArePrivateAsNatively(string libc)
    {
        string prog = GuestEnv.Guest("forkcow", libc);
        var native = GuestEnv.Native(prog, Array.Empty<string>());
        var vm = GuestEnv.Vm(prog, Array.Empty<string>());
        Assert.Equal(0, native.ExitCode);
        Assert.Equal(native.StdoutText, vm.StdoutText);
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Fact]
    public void ForkedPagesReplayFaithfully()
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-cow-{Guid.NewGuid():N}.rvlog");
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--", GuestEnv.Guest("forkcow", "musl") });
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" });
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
            Assert.Contains("child 2: heap", rec.StdoutText);
        }
        finally { File.Delete(log); }
    }

    [Fact]
    public void ForkCopiesOnWriteIncludingPagesAlreadyRead()
    {
        using var parent = new GuestMemory();
        const ulong A = 0x10000;
        parent.Map(A, 2 * GuestMemory.PageSize, Prot.Read | Prot.Write);
        parent.Write64(A, 0x1111);
        parent.Write64(A + GuestMemory.PageSize, 0x2222);
        Assert.Equal(0x1111UL, parent.Read64(A)); // both TLBs now hold the page
        using var child = parent.Fork();
        child.Read64(A); // the child's read TLB too
        child.Write64(A, 0xC1);
        Assert.Equal(0xC1UL, child.Read64(A));
        Assert.Equal(0x1111UL, parent.Read64(A));
        parent.Write64(A, 0xB1); // the parent's first store after the fork: its own copy (the child let go)
        Assert.Equal(0xB1UL, parent.Read64(A));
        Assert.Equal(0xC1UL, child.Read64(A));
        using (var grandchild = child.Fork())
        {
            grandchild.WriteBytes(A + GuestMemory.PageSize, BitConverter.GetBytes(0x3333UL)); // a bulk (syscall) write
            Assert.Equal(0x2222UL, child.Read64(A + GuestMemory.PageSize));
            Assert.Equal(0x2222UL, parent.Read64(A + GuestMemory.PageSize));
            Assert.Equal(0x3333UL, grandchild.Read64(A + GuestMemory.PageSize));
        }
        Assert.Equal(0x2222UL, child.Read64(A + GuestMemory.PageSize));
    }

    static byte[] MovEaxRet(int v) => new byte[] { 0xB8, (byte)v, (byte)(v >> 8), (byte)(v >> 16), (byte)(v >> 24), 0xC3 };

    [Fact]
    public void CodeDecodedFromATemplateIsSharedAndAWriterGetsItsOwn()
    {
        const ulong Text = 0x400000;
        ImageTemplate template;
        using (var scratch = new GuestMemory())
        {
            scratch.Map(Text, GuestMemory.PageSize, Prot.Read | Prot.Write | Prot.Exec, "prog");
            scratch.Poke(Text, MovEaxRet(7));
            template = scratch.ToTemplate();
        }
        using (template)
        {
            var shared = new SharedCode();
            using var a = new GuestMemory();
            using var b = new GuestMemory();
            a.MapTemplate(template);
            b.MapTemplate(template);
            var ca = new CodeCache(a, ExecutionTier.Interpreter, shared);
            var cb = new CodeCache(b, ExecutionTier.Interpreter, shared);
            var blockA = ca.Lookup(Text);
            Assert.Equal(7u, blockA.Insts[0].Immediate32);
            Assert.Same(blockA, cb.Lookup(Text)); // decoded once for both
            Assert.Equal(1, shared.Hits);

            // a rewrites its code: its page becomes its own, its cache decodes the new bytes; b keeps the image's
            a.WriteBytes(Text, MovEaxRet(9));
            Assert.Equal(9u, ca.Lookup(Text).Insts[0].Immediate32);
            Assert.True(blockA.Valid);
            Assert.Equal(7u, cb.Lookup(Text).Insts[0].Immediate32);
            Assert.Equal(0xB8, b.Read8(Text));
            Assert.Equal(7u, b.Read32(Text + 1));

            // a third address space mapping the template gets the image's bytes and the shared block
            using var c = new GuestMemory();
            c.MapTemplate(template);
            Assert.Same(blockA, new CodeCache(c, ExecutionTier.Interpreter, shared).Lookup(Text));
            Assert.Equal(7u, c.Read32(Text + 1));
        }
    }

    [Fact]
    public void ASecondExecOfAStableProgramComesFromTheImageCache()
    {
        // /bin/busybox is a file the machine may cache (unchanged since long before the run): the second and third
        // execs take its bytes, image and decoded blocks from the first
        using var m = ShellRunningBusyboxThrice();
        Assert.True(m.Kernel.Images.FileHits >= 2, $"file hits {m.Kernel.Images.FileHits}");
        Assert.True(m.Kernel.Images.TemplateHits >= 2, $"template hits {m.Kernel.Images.TemplateHits}");
        Assert.True(m.Kernel.Images.Code.Hits > 100, $"shared block hits {m.Kernel.Images.Code.Hits}");
    }

    /// <summary>A machine that ran busybox's sh executing /bin/busybox three times (exit status 4 checked).</summary>
    static ReVirt.Machine ShellRunningBusyboxThrice()
    {
        var m = new ReVirt.Machine(new MachineOptions
        {
            Program = BusyboxTests.Busybox,
            Args = new[] { "sh", "-c", "/bin/busybox true; /bin/busybox true; /bin/busybox false || exit 4" },
            Diagnostics = TextWriter.Null,
        });
        m.Load();
        Assert.Equal(4, m.Run());
        return m;
    }

    [Fact]
    public void AProgramExecutedOnceBuildsNoTemplateAndItsSecondLoadBuildsOne()
    {
        // `busybox true`: the start program is loaded straight into its address space (no template to pay for)
        using (var once = new ReVirt.Machine(new MachineOptions { Program = BusyboxTests.Busybox, Args = new[] { "true" }, Diagnostics = TextWriter.Null }))
        {
            once.Load();
            Assert.Equal(0, once.Run());
            Assert.Equal(0, once.Kernel.Images.TemplatesBuilt);
        }
        // a shell (busybox) that executes busybox three times: the first exec builds the template, the others map it
        using var m = ShellRunningBusyboxThrice();
        var images = m.Kernel.Images;
        Assert.Equal(1, images.TemplatesBuilt);
        Assert.True(images.FileHits >= 2, $"file hits {images.FileHits}");
        Assert.Equal(images.FileHits - 1, images.TemplateHits);
    }
}
