using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// A host event reaches a guest that loops inside one compiled region: another thread lowers
/// <see cref="CpuT.StopAt"/> to 0 or sets <see cref="CpuT.Yield"/> (as a timer's signal or a wake-up does), and the
/// run returns at a block boundary long before the loop would end, with counts that match the registers. The
/// compiled code must read those fields afresh inside the loop (volatile loads the JIT may not hoist): a copy
/// hoisted out of the loop would never see the event, and the guest would run on to the loop's end.
/// </summary>
public partial class TierTests
{
    /// <summary>Iterations of <see cref="EndlessLoop"/>: minutes of guest time in any tier.</summary>
    const ulong EndlessIterations = 200_000_000_000;

    /// <summary>A loop of two blocks (A: add rax, 1; jmp B. B: sub rcx, 1; jne A) that runs for minutes; rax counts
    /// A's runs, rcx B's remaining ones.</summary>
    static readonly byte[] EndlessLoop = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var second = a.CreateLabel();
        a.mov(rcx, (long)EndlessIterations);
        a.xor(eax, eax);
        a.Label(ref top);
        a.add(rax, 1);
        a.jmp(second);
        a.Label(ref second);
        a.sub(rcx, 1);
        a.jne(top);
        a.int3();
    });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AHostEventStopsALoopRunningInsideACompiledRegion(bool yield)
    {
        using var vm = new Vm(EndlessLoop, ExecutionTier.Default, threshold: EagerThreshold);
        RunResult result = RunResult.Continue;
        var guest = new Thread(() => result = vm.Run(ulong.MaxValue)) { IsBackground = true };
        guest.Start();
        // the loop's blocks form one region (compiled on the guest thread after two interpreted passes)
        var limit = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref vm.Cpu.Code.RegionsCompiled) == 0 && guest.IsAlive && limit.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(1);
        Assert.True(vm.Cpu.Code.RegionsCompiled > 0, "the loop was not compiled");
        if (yield) Volatile.Write(ref vm.Cpu.Yield, true);
        else Volatile.Write(ref vm.Cpu.StopAt, 0UL);
        Assert.True(guest.Join(TimeSpan.FromSeconds(60)), "the guest did not return within 60 s of the host event");
        Assert.Equal(yield ? RunResult.Yielded : RunResult.ReachedStop, result);
        Assert.True(vm.Cpu.Code.BlocksCompiled > vm.Cpu.Code.RegionsCompiled, $"{vm.Cpu.Code.BlocksCompiled} blocks in {vm.Cpu.Code.RegionsCompiled} regions");
        // at a block boundary: A ran rax times, B ran (iterations - rcx) times, each of them two instructions and one
        // branch, after the two set-up instructions
        ulong a = vm.Cpu.R[CpuT.RAX], b = EndlessIterations - vm.Cpu.R[CpuT.RCX];
        Assert.True(a == b || a == b + 1, $"A ran {a} times, B {b}");
        Assert.True(b < EndlessIterations / 2, $"stopped after {b} iterations");
        Assert.Equal(2 + 2 * (a + b), vm.Cpu.InstructionCount);
        Assert.Equal(a + b, vm.Cpu.BranchCount);
    }
}
