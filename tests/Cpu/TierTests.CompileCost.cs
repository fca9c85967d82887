using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.CpuTests;

/// <summary>The default tier's compile point weighed by cost (<see cref="CompileCost"/>): a block of SSE forms, whose
/// compiled code saves little per run, compiles after more runs than an integer block of the same length; an integer
/// block keeps the flat threshold; and where the weighed point falls mid-loop, the results are the interpreter's.</summary>
public partial class TierTests
{
    const int CostThreshold = 16;

    /// <summary>A loop (its registers loaded from the random data first) whose block at `top` is `SseOps` SSE register forms, a dec and a jne (or as many integer
    /// operations in their place), run `iterations` times: the block at `top` runs whole iterations - 1 times (the
    /// first iteration is part of the block that starts at the mov).</summary>
    static byte[] CostLoop(bool sse, int iterations) => NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        a.movdqu(xmm1, __xmmword_ptr[rsi]);
        a.movdqu(xmm2, __xmmword_ptr[rsi + 16]);
        a.movdqu(xmm3, __xmmword_ptr[rsi + 32]);
        a.mov(rax, __qword_ptr[rsi + 48]);
        a.mov(rdx, __qword_ptr[rsi + 56]);
        a.mov(rbx, __qword_ptr[rsi + 64]);
        a.mov(ecx, iterations);
        a.Label(ref top);
        for (int n = 0; n < CostLoopOps / 4; n++)
        {
            if (sse) { a.paddd(xmm1, xmm2); a.pmuludq(xmm3, xmm1); a.pshufd(xmm2, xmm3, 0x1b); a.psrlq(xmm1, 3); }
            else { a.add(rax, rdx); a.xor(rdx, rbx); a.shl(rbx, 3); a.sub(rax, rbx); }
        }
        a.dec(ecx);
        a.jne(top);
        a.int3();
    });

    const int CostLoopOps = 12;

    /// <summary>The compile point of the SSE loop's block at <see cref="CostThreshold"/>: the threshold times the
    /// block's average weight (12 SSE forms at <see cref="CompileCost.SseWeight"/>, dec and jne at 1).</summary>
    static int SseLoopCompileAt => (CostThreshold * (CostLoopOps * CompileCost.SseWeight + 2) + CostLoopOps + 1) / (CostLoopOps + 2);

    static long BlocksCompiledAfter(bool sse, int iterations, bool weighByCost)
    {
        using var vm = new Vm(CostLoop(sse, iterations), ExecutionTier.Default, threshold: CostThreshold, weighByCost: weighByCost);
        Assert.Equal(RunResult.Fault, vm.Run(ulong.MaxValue)); // the int3
        return vm.Cpu.Code.BlocksCompiled;
    }

    [Fact]
    public void AnSseBlockCompilesLaterThanAnIntegerBlock()
    {
        Assert.True(SseLoopCompileAt > 2 * CostThreshold, $"compile point {SseLoopCompileAt}");
        // between the flat threshold and the SSE block's weighed point: the integer loop is compiled, the SSE one not
        int between = CostThreshold + (SseLoopCompileAt - CostThreshold) / 2;
        Assert.Equal(1, BlocksCompiledAfter(sse: false, between, weighByCost: true));
        Assert.Equal(0, BlocksCompiledAfter(sse: true, between, weighByCost: true));
        // (flat, the same SSE loop compiles at the threshold)
        Assert.Equal(1, BlocksCompiledAfter(sse: true, between, weighByCost: false));
        // past its weighed point it is compiled too
        Assert.Equal(1, BlocksCompiledAfter(sse: true, SseLoopCompileAt + 4, weighByCost: true));
        Assert.Equal(0, BlocksCompiledAfter(sse: true, SseLoopCompileAt - 1, weighByCost: true));
    }

    /// <summary>The SSE and integer loops compiled at their weighed points, mid-loop, and stopped at every instruction
    /// of a window around that point: each state is the interpreter's.</summary>
    [Fact]
    public void BlocksCompiledAtTheirWeighedPointGiveTheInterpretersResults()
    {
        foreach (bool sse in new[] { true, false })
        {
            byte[] code = CostLoop(sse, SseLoopCompileAt + 8);
            ulong perIteration = CostLoopOps + 2;
            ulong from = (ulong)(SseLoopCompileAt - 2) * perIteration;
            for (ulong stop = from; stop < from + 3 * perIteration; stop += 5)
            {
                var reference = StopAndFinish(code, ExecutionTier.Interpreter, stop);
                using var vm = new Vm(code, ExecutionTier.Default, threshold: CostThreshold, weighByCost: true);
                var weighed = (vm.State(vm.Run(stop)), vm.State(vm.Run(ulong.MaxValue)));
                Assert.True(reference == weighed, $"sse={sse} stop {stop}:\ninterpreter {reference}\nweighed     {weighed}");
                Assert.Equal(1, vm.Cpu.Code.BlocksCompiled);
            }
        }
    }
}
