using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static ReVirt.Tests.Oracle.CpuSnapshot;

namespace ReVirt.Tests.Oracle;

public class NativeRunnerTests
{
    private static CpuSnapshot Run(Action<Assembler> build, CpuSnapshot input) => NativeRunner.Run(NativeRunner.Asm(build), input);

    [Fact]
    public void AddRaxRbx_GivesSumAndCarry()
    {
        var s = CpuSnapshot.Create();
        s[RAX] = 0xFFFF_FFFF_FFFF_FFFF;
        s[RBX] = 2;
        var o = Run(a => a.add(rax, rbx), s);
        Assert.Equal(1UL, o[RAX]);
        Assert.Equal(2UL, o[RBX]);
        Assert.Equal(CF | AF, o.Rflags & ArithFlags); // 1: odd parity so PF clear; low nibble F+2 carries
    }

    [Fact]
    public void AddWithoutCarry_ClearsIncomingFlags()
    {
        var s = CpuSnapshot.Create();
        s[RAX] = 40;
        s[RBX] = 2;
        s.Rflags = ArithFlags;
        var o = Run(a => a.add(rax, rbx), s);
        Assert.Equal(42UL, o[RAX]);
        Assert.Equal(0UL, o.Rflags & ArithFlags); // 42 = 0b101010: three bits set -> PF clear; 8+2 no nibble carry
    }

    [Fact]
    public void Stc_SetsCarry_Clc_ClearsIt()
    {
        var s = CpuSnapshot.Create();
        Assert.Equal(CF, Run(a => a.stc(), s).Rflags & CF);
        s.Rflags = CF;
        Assert.Equal(0UL, Run(a => a.clc(), s).Rflags & CF);
    }

    [Fact]
    public void InputFlagsAreLoaded()
    {
        var s = CpuSnapshot.Create();
        s.Rflags = CF | ZF | OF | DF;
        var o = Run(a => a.nop(), s);
        Assert.Equal(CF | ZF | OF | DF, o.Rflags & InputFlags);
        // A flag-reading instruction sees them.
        o = Run(a => a.setz(al), s);
        Assert.Equal(1UL, o[RAX] & 0xFF);
    }

    [Fact]
    public void AllGprsRoundTrip()
    {
        var s = CpuSnapshot.Create();
        for (int i = 0; i < 16; i++)
        {
            if (i != RSP)
                s[i] = 0x0101_0101_0101_0101UL * (ulong)(i + 1) ^ 0x8000_0000_0000_0000UL;
        }
        var o = Run(a => a.nop(), s);
        Assert.Equal("", CpuSnapshot.Diff(s, o, ArithFlags));
    }

    [Fact]
    public void MovToMemory_WritesMemoryImage()
    {
        var s = CpuSnapshot.Create();
        s[RAX] = 0x1122_3344_5566_7788;
        s[RDI] = NativeRunner.ScratchBase + 0x10;
        s.Memory[0] = 0xAB;
        var o = Run(a => a.mov(__qword_ptr[rdi], rax), s);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(o.Memory, 0x10));
        Assert.Equal(0xAB, o.Memory[0]);
        Assert.Equal(NativeRunner.DataSize, o.Memory.Length);
        // The input is not modified and the diff reports the write.
        Assert.Equal(0UL, BitConverter.ToUInt64(s.Memory, 0x10));
        string diff = CpuSnapshot.Diff(s, o, ArithFlags);
        Assert.Contains("Memory [0x10000010", diff);
    }

    [Fact]
    public void LoadFromMemory_SeesInputImage()
    {
        var s = CpuSnapshot.Create();
        s[RSI] = NativeRunner.ScratchBase;
        BitConverter.TryWriteBytes(s.Memory.AsSpan(0x100), 0xDEAD_BEEF_CAFE_F00DUL);
        var o = Run(a => a.mov(rdx, __qword_ptr[rsi + 0x100]), s);
        Assert.Equal(0xDEAD_BEEF_CAFE_F00DUL, o[RDX]);
    }

    [Fact]
    public void MemoryIsResetBetweenRuns()
    {
        var s = CpuSnapshot.Create();
        s[RDI] = NativeRunner.ScratchBase;
        s[RAX] = 0x55;
        Run(a => a.mov(__qword_ptr[rdi + 8], rax), s);
        var o = Run(a => a.mov(rbx, __qword_ptr[rdi + 8]), s);
        Assert.Equal(0UL, o[RBX]);
    }

    [Fact]
    public void Paddq_AddsLanes()
    {
        var s = CpuSnapshot.Create();
        s.Xmm[0] = new UInt128(10, 0xFFFF_FFFF_FFFF_FFFF);
        s.Xmm[1] = new UInt128(5, 2);
        var o = Run(a => a.paddq(xmm0, xmm1), s);
        Assert.Equal(new UInt128(15, 1), o.Xmm[0]); // lanes wrap independently
        Assert.Equal(s.Xmm[1], o.Xmm[1]);
    }

    [Fact]
    public void AllXmmsRoundTrip()
    {
        var s = CpuSnapshot.Create();
        for (int i = 0; i < 16; i++)
            s.Xmm[i] = new UInt128(0x1111_1111_1111_1111UL * (ulong)i, ~(ulong)i);
        var o = Run(a => a.nop(), s);
        Assert.Equal("", CpuSnapshot.Diff(s, o, ArithFlags));
    }

    [Fact]
    public void PushPop_UseScratchStack()
    {
        var s = CpuSnapshot.Create();
        s.Memory = new byte[NativeRunner.ScratchSize]; // observe the stack too
        s[RAX] = 0x0123_4567_89AB_CDEF;
        var o = Run(a => a.push(rax), s);
        Assert.Equal(NativeRunner.DefaultRsp - 8, o[RSP]);
        int off = (int)(NativeRunner.DefaultRsp - 8 - NativeRunner.ScratchBase);
        Assert.Equal(0x0123_4567_89AB_CDEFUL, BitConverter.ToUInt64(o.Memory, off));

        o = Run(a => { a.push(rax); a.pop(rcx); }, s);
        Assert.Equal(s[RAX], o[RCX]);
        Assert.Equal(NativeRunner.DefaultRsp, o[RSP]);
    }

    [Fact]
    public void RipRelative_SeesSnippetAddress()
    {
        var o = Run(a =>
        {
            var next = a.CreateLabel();
            a.lea(rax, __[next]);
            a.Label(ref next);
            a.nop();
        }, CpuSnapshot.Create());
        Assert.Equal(NativeRunner.SnippetAddress + 7, o[RAX]);
    }

    [Fact]
    public void Branches_WithinSnippet()
    {
        var s = CpuSnapshot.Create();
        s[RCX] = 5;
        var o = Run(a =>
        {
            var loop = a.CreateLabel();
            a.xor(eax, eax);
            a.Label(ref loop);
            a.add(rax, rcx);
            a.dec(rcx);
            a.jnz(loop);
        }, s);
        Assert.Equal(15UL, o[RAX]);
        Assert.Equal(0UL, o[RCX]);
        Assert.Equal(ZF | PF, o.Rflags & (ZF | PF));
    }

    [Fact]
    public void Std_IsReportedAndHostSurvives()
    {
        var o = Run(a => a.std(), CpuSnapshot.Create());
        Assert.Equal(DF, o.Rflags & DF);
        // Managed code after the run relies on DF = 0 (e.g. memmove).
        var src = Enumerable.Range(0, 1000).Select(i => (byte)i).ToArray();
        var dst = new byte[1000];
        Buffer.BlockCopy(src, 0, dst, 0, 1000);
        Assert.Equal(src, dst);
    }

    [Fact]
    public void RepMovsb_WithDirectionFlag()
    {
        var s = CpuSnapshot.Create();
        for (int i = 0; i < 16; i++) s.Memory[i] = (byte)(i + 1);
        s[RSI] = NativeRunner.ScratchBase + 15;
        s[RDI] = NativeRunner.ScratchBase + 0x100 + 15;
        s[RCX] = 16;
        s.Rflags = DF;
        var o = Run(a => { a.rep.movsb(); }, s);
        Assert.Equal(s.Memory[..16], o.Memory[0x100..0x110]);
        Assert.Equal(NativeRunner.ScratchBase - 1, o[RSI]);
    }

    [Fact]
    public void Mxcsr_IsLoadedAndStored()
    {
        var s = CpuSnapshot.Create();
        s.Xmm[0] = BitConverter.SingleToUInt32Bits(1.0f);
        s.Xmm[1] = BitConverter.SingleToUInt32Bits(3.0f);
        var o = Run(a => a.divss(xmm0, xmm1), s);
        Assert.Equal(DefaultMxcsr | 0x20, o.Mxcsr); // PE (inexact) flag
        s.Mxcsr = DefaultMxcsr | 0x6000;           // round toward zero
        var z = Run(a => a.divss(xmm0, xmm1), s);
        Assert.Equal((uint)o.Xmm[0] - 1, (uint)z.Xmm[0]);
        // The host's MXCSR is restored: managed float math still rounds to nearest.
        float third = 1.0f / float.Parse("3", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal((uint)o.Xmm[0], BitConverter.SingleToUInt32Bits(third));
    }

    [Fact]
    public void CalleeSavedRegistersAreClobberedSafely()
    {
        // The snippet trashes every register; the host must still work afterwards.
        var s = CpuSnapshot.Create();
        var o = Run(a =>
        {
            foreach (var r in new[] { rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15 })
                a.mov(r, -1L);
            a.pcmpeqb(xmm15, xmm15);
            a.emms();
        }, s);
        Assert.Equal(ulong.MaxValue, o[R15]);
        Assert.Equal(UInt128.MaxValue, o.Xmm[15]);
        GC.Collect();
        Assert.Equal(6.0, Math.Sqrt(36.0));
    }

    [Fact]
    public void InvalidRsp_Throws()
    {
        var s = new CpuSnapshot(); // RSP = 0
        Assert.Throws<ArgumentOutOfRangeException>(() => NativeRunner.Run([0x90], s));
        s[RSP] = NativeRunner.ScratchBase + 8; // inside the data area
        Assert.Throws<ArgumentOutOfRangeException>(() => NativeRunner.Run([0x90], s));
    }

    [Fact]
    public void ParallelRunsAreSerialized()
    {
        Parallel.For(0, 64, i =>
        {
            var s = CpuSnapshot.Create();
            s[RAX] = (ulong)i;
            s[RDI] = NativeRunner.ScratchBase;
            var o = Run(a => { a.imul(rax, rax, 3); a.mov(__qword_ptr[rdi], rax); }, s);
            Assert.Equal((ulong)i * 3, o[RAX]);
            Assert.Equal((ulong)i * 3, BitConverter.ToUInt64(o.Memory, 0));
        });
    }

    [Fact]
    public void Diff_DescribesDifferences()
    {
        var e = CpuSnapshot.Create();
        var a = e.Clone();
        Assert.Equal("", CpuSnapshot.Diff(e, a, ArithFlags));
        a[RBX] = 7;
        a.Rflags = CF | ZF | IF;
        a.Xmm[3] = UInt128.One;
        a.Memory[5] = 9;
        a.Mxcsr = 0;
        string d = CpuSnapshot.Diff(e, a, ArithFlags);
        Assert.Contains("RBX: expected 0x0000000000000000, actual 0x0000000000000007", d);
        Assert.Contains("differing [CF ZF]", d);
        Assert.DoesNotContain("IF", d);
        Assert.Contains("XMM3", d);
        Assert.Contains("Memory [0x10000005", d);
        Assert.DoesNotContain("MXCSR", d);
        Assert.Contains("MXCSR", CpuSnapshot.Diff(e, a, ArithFlags, compareMxcsr: true));
        Assert.Equal("", CpuSnapshot.Diff(e, a, 0, compareXmm: false, compareMemory: false).Replace("RBX: expected 0x0000000000000000, actual 0x0000000000000007 (xor 0x0000000000000007)\n", ""));
        // Clone is deep.
        Assert.Equal(0UL, e[RBX]);
        Assert.Equal(0, e.Memory[5]);
    }
}
