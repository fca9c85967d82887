using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Regions across calls: a region holds a call's callee and its return site, and a return branches inside it only
/// when the address the guest's stack holds is that return site's (return prediction, <c>BlockCompiler.EmitRet</c>);
/// a block compiled in one region is compiled again as a copy into a region formed later, and a store into it drops
/// that copy too (<see cref="Block.CopiedInto"/>). The interpreter is the reference.
/// </summary>
public partial class TierTests
{
    /// <summary>A loop that calls one function from two call sites; on odd counts the function adds 6 to its return
    /// address, so it returns past the 6-byte add after the call site (to a block that is not a return site, or to
    /// the other call site's block), not to where it was called from. The function stores through rdi, so a fault
    /// can be placed in it.</summary>
    static readonly byte[] CallsCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var fn = a.CreateLabel();
        var plain = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.xor(ebx, ebx);
        a.Label(ref top);
        a.call(fn);
        a.db(AddRaxImm32(1));   // skipped when fn moves its return address
        a.add(rbx, rax);
        a.call(fn);
        a.db(AddRaxImm32(0x10));
        a.add(rbx, 3);
        a.dec(ecx);
        a.jne(top);
        a.int3();
        a.Label(ref fn);
        a.mov(__qword_ptr[rdi], rbx);
        a.add(rdi, 8);
        a.test(cl, 1);
        a.je(plain);
        a.add(__qword_ptr[rsp], AddRaxImm32(0).Length);
        a.Label(ref plain);
        a.rol(rax, 3);
        a.ret();
    });

    /// <summary>`add rax, imm32` in its 6-byte form (48 05 id), spelled out so its length does not depend on the
    /// assembler's choice of encoding.</summary>
    static byte[] AddRaxImm32(int v) => new byte[] { 0x48, 0x05, (byte)v, (byte)(v >> 8), (byte)(v >> 16), (byte)(v >> 24) };

    /// <summary>Not vacuous: in the default tier the loop runs in a region that holds the function (or a copy of
    /// some of its blocks) and the return sites, so returns to their call sites stay in compiled code: without the
    /// prediction every one of the 80 returns reaches the execution loop; with it the 40 moved ones and some of the
    /// first iterations' and of the blocks left out by the copy limit do (61 measured).</summary>
    [Fact]
    public void ARegionHoldsTheCalleeAndTheReturnSitesOfItsCalls()
    {
        using var vm = new Vm(CallsCode, ExecutionTier.Default, threshold: EagerThreshold);
        var profile = vm.Cpu.Code.Profile = new TierProfile();
        Assert.Equal(RunResult.Fault, vm.Run(ulong.MaxValue));
        Assert.True(profile.Exits < 2 * Iterations, $"{profile.Exits} returns to the execution loop for {2 * Iterations} calls");
    }

    [Fact]
    public void StopAtEveryInstructionAcrossPredictedReturnsLeavesTheSameState() => AssertSameAtEveryStop(CallsCode, Iterations * 14);

    [Fact]
    public void AReturnToAnotherAddressThanItsCallSiteGoesThereInEveryTier()
    {
        var reference = AssertTiersAgree((tier, threshold) => StopAndFinish(CallsCode, tier, ulong.MaxValue, threshold: threshold), "to the end");
        // the oracle: what the loop computes when each moved return skips the add after its call
        ulong rax = 0, rbx = 0;
        for (ulong cx = Iterations; cx != 0; cx--)
        {
            bool moved = (cx & 1) != 0;
            rax = ulong.RotateLeft(rax, 3); if (!moved) rax += 1;
            rbx += rax;
            rax = ulong.RotateLeft(rax, 3); if (!moved) rax += 0x10;
            rbx += 3;
        }
        Assert.True(reference.Item1.Contains($"r0={rax:x} ") && reference.Item1.Contains($"r3={rbx:x} "), $"expected rax={rax:x} rbx={rbx:x}: {reference.Item1}");
    }

    [Fact]
    public void FaultInACalleeAtEveryIterationLeavesTheSameState()
    {
        // the function's store walks off the end of the data mapping at call j
        for (int j = 0; j < 2 * Iterations; j++)
        {
            ulong rdi = Data + DataSize - 8 * (ulong)j;
            AssertTiersAgree((tier, threshold) => StopAndFinish(CallsCode, tier, ulong.MaxValue, rdi: rdi, threshold: threshold), $"fault at call {j}");
        }
    }

    /// <summary>A first loop calls the function (so it is compiled in that loop's region); a second loop, on another
    /// page, calls it too (its region, formed in its first iterations, holds a copy of it) and from its count
    /// <see cref="PatchFrom"/> down rewrites the function's immediate every iteration (a store from the first
    /// iteration on would drop the function before the second loop's region formed, which would then own a fresh
    /// decoding of it instead of a copy).</summary>
    const int PatchFrom = 24;

    static readonly byte[] PatchedCalleeCode = NativeRunner.Asm(a =>
    {
        var first = a.CreateLabel();
        var second = a.CreateLabel();
        var fn = a.CreateLabel();
        var unpatched = a.CreateLabel();
        a.mov(ecx, 20);
        a.xor(ebx, ebx);
        a.lea(rdx, __[fn]);
        a.Label(ref first);
        a.call(fn);
        a.dec(ecx);
        a.jne(first);
        a.mov(ecx, 30);
        a.jmp(second);
        a.Label(ref fn);
        a.mov(eax, 1000);
        a.add(rbx, rax);
        a.ret();
        a.db(new byte[4200]); // the second loop on another page than the function
        a.Label(ref second);
        a.call(fn);
        a.cmp(ecx, PatchFrom);
        a.ja(unpatched);     // the first iterations leave the function as it is: the region copies it meanwhile
        a.mov(__byte_ptr[rdx + 1], cl);
        a.Label(ref unpatched);
        a.imul(rbx, rbx, 3);
        a.dec(ecx);
        a.jne(second);
        a.int3();
    });

    [Fact]
    public void StoreIntoACopiedCalleeTakesEffectAtItsNextCall()
    {
        var reference = AssertTiersAgree((tier, threshold) => StopAndFinish(PatchedCalleeCode, tier, ulong.MaxValue, threshold: threshold), "to the end");
        // the oracle: each store takes effect at the next call
        ulong sum = 0, imm = 1000;
        for (int i = 0; i < 20; i++) sum += imm;
        for (ulong cx = 30; cx != 0; cx--) { sum = (sum + imm) * 3; if (cx <= PatchFrom) imm = (imm & ~0xFFUL) | (cx & 0xFF); }
        Assert.Contains($"r3={sum:x} ", reference.Item1);
        // not vacuous: the second loop's region copied the function
        using var vm = new Vm(PatchedCalleeCode, ExecutionTier.Default, threshold: EagerThreshold);
        vm.Run(ulong.MaxValue);
        Assert.True(vm.Cpu.Code.BlocksCopied > 0, "no block was copied into a later region");
    }
}
