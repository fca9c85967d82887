using ReVirt.Cpu;
using ReVirt.Memory;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.CpuTests;

/// <summary>SSE forms the compiled tier runs inline (BlockCompiler.Sse.cs): every inline kind in one loop, with
/// loads and stores of 4, 8 and 16 bytes (aligned and not), arithmetic whose managed fast path declines for the
/// data's NaNs, infinities and denormals and while MXCSR's PE is clear (the handler out of line), movd/movq to and
/// from general registers, and flags live across the SSE instructions (a compare before them read by a setb after).
/// The interpreter is the reference; the SSE differential tests compare every form with the host CPU in each tier.</summary>
public partial class TierTests
{
    /// <summary>Iterations of <see cref="SseCode"/> (about 39 instructions each): few, as every stop position is a
    /// run of its own in three tiers.</summary>
    const int SseIterations = 12;

    static readonly byte[] SseCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        a.mov(ecx, SseIterations);
        a.pxor(xmm7, xmm7);
        a.xor(ebx, ebx);
        a.Label(ref top);
        a.cmp(ebx, 0x4000_0000);
        a.movsd(xmm0, __qword_ptr[rsi]);
        a.movq(xmm1, __qword_ptr[rsi + 8]);
        a.unpcklpd(xmm0, xmm0);
        a.movdqa(xmm2, __xmmword_ptr[rsi + 16]);
        a.mulpd(xmm0, __xmmword_ptr[rsi + 16]);
        a.addpd(xmm7, xmm0);
        a.paddd(xmm2, xmm1);
        a.pshufd(xmm3, xmm2, 0x1b);
        a.psrlq(xmm3, 3);
        a.movss(xmm3, xmm5);
        a.pxor(xmm2, __xmmword_ptr[rsi + 32]);
        a.movdqu(xmm4, __xmmword_ptr[rsi + 3]);
        a.addsd(xmm4, __qword_ptr[rsi + 40]);
        a.mulss(xmm5, xmm4);
        a.subps(xmm6, xmm5);
        a.divsd(xmm5, xmm0);
        a.movd(eax, xmm3);
        a.setb(dl);
        a.add(rbx, rax);
        a.movzx(edx, dl);
        a.add(rbx, rdx);
        a.movq(xmm6, rbx);
        a.cvtdq2pd(xmm6, xmm6);
        a.movss(xmm5, __dword_ptr[rsi + 44]);
        a.movsd(xmm7, xmm4);
        a.movaps(__xmmword_ptr[rdi], xmm2);
        a.movups(__xmmword_ptr[rdi + 20], xmm3);
        a.movsd(__qword_ptr[rdi + 40], xmm7);
        a.movhpd(__qword_ptr[rdi + 48], xmm0);
        a.movlpd(xmm5, __qword_ptr[rsi + 8]);
        a.movhpd(xmm5, __qword_ptr[rsi + 48]);
        a.movss(__dword_ptr[rdi + 56], xmm5);
        a.movq(__qword_ptr[rdi + 64], xmm6);
        a.movd(__dword_ptr[rdi + 72], xmm4);
        a.movd(xmm4, ebx);
        a.lea(rsi, __[rsi + 48]);
        a.add(rdi, 80);
        a.dec(ecx);
        a.jne(top);
        a.int3();
    });

    [Fact]
    public void StopAtEveryInstructionOfInlineSseFormsLeavesTheSameState() => AssertSameAtEveryStop(SseCode, SseIterations * 38);

    /// <summary>The loop's reads (rsi) or writes (rdi) run off the end of the data mapping or cross into its second
    /// page at every offset in steps of 4 (so also misaligned for the forms that demand 16-byte alignment: #GP as
    /// SIGSEGV): each tier faults at the same instruction with the same state, or completes the access across the
    /// page end.</summary>
    [Fact]
    public void FaultsAndPageEndsAtEverySseAccessLeaveTheSameState()
    {
        int faults = 0;
        foreach (ulong pageEnd in new[] { Data + 0x1000, Data + DataSize })
            for (ulong back = 4; back <= 200; back += 4)
                foreach (bool load in new[] { true, false })
                {
                    ulong at = pageEnd - back;
                    ulong rsi = load ? at : Data, rdi = load ? Data + 0x800 : at;
                    var reference = StopAndFinish(SseCode, ExecutionTier.Interpreter, ulong.MaxValue, rsi, rdi);
                    var compiled = StopAndFinish(SseCode, ExecutionTier.Compiled, ulong.MaxValue, rsi, rdi);
                    var eager = StopAndFinish(SseCode, ExecutionTier.Default, ulong.MaxValue, rsi, rdi, EagerThreshold);
                    if (reference.AtStop.Contains("fault=11/")) faults++;
                    string what = $"{(load ? "loads" : "stores")} from {at:x}";
                    Assert.True(reference == compiled, $"{what}:\ninterpreter {reference}\ncompiled    {compiled}");
                    Assert.True(reference == eager, $"{what}:\ninterpreter {reference}\ndefault     {eager}");
                }
        Assert.True(faults > 100, $"only {faults} runs faulted");
    }
}
