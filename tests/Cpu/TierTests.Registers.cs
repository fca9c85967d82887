using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// The compiled tier's register traffic at its edges: an entry loads only the registers its code reads (or may
/// store) before writing them, an exit, a handler call or a memory access's slow path stores only those written on
/// some path to it. The program writes different registers (whole, 32-bit, low and high byte, conditionally, by
/// pop, sbb) on different branches of a loop, calls a handler between them and accesses memory after them, with every
/// register holding a distinct value at the start, so a register stored without having been loaded, or written and
/// not stored, shows in the state at a stop or a fault.
/// </summary>
public partial class TierTests
{
    static readonly byte[] PartlyWrittenCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var armA = a.CreateLabel();
        var armB = a.CreateLabel();
        var join = a.CreateLabel();
        var fn = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.Label(ref top);
        a.mov(rdx, __qword_ptr[rsi]);
        a.test(dl, 3);
        a.je(armA);
        a.test(dl, 4);
        a.jne(armB);
        // arm C: a whole and a 32-bit write, then a store with both pending
        a.lea(r8, __[rdx + r8 * 2]);
        a.mov(r9d, edx);
        a.mov(__qword_ptr[rdi], r8);
        a.cmp(edx, r9d);
        a.sbb(eax, eax);
        a.jmp(join);
        // arm A: a low byte, a conditional move, a handler (bts) between writes, a store after it
        a.Label(ref armA);
        a.mov(r10b, dl);
        a.cmp(rdx, r11);
        a.cmovb(r11, rdx);
        a.bts(r12, rdx);
        a.mov(__qword_ptr[rdi + 8], r11);
        a.add(r13, r10);
        a.jmp(join);
        // arm B: push, a high byte, pop into another register, a store
        a.Label(ref armB);
        a.push(r14);
        a.xor(r14d, edx);
        a.mov(ah, dl);
        a.pop(r15);
        a.add(r14, r15);
        a.mov(__qword_ptr[rdi + 16], r14);
        a.Label(ref join);
        a.add(rsi, 8);
        a.sbb(r13d, edx);
        a.sbb(__qword_ptr[rdi + 24], rcx);
        a.add(rdi, 8);
        a.rol(rbx, 3);
        a.xor(rbx, rdx);
        a.dec(ecx);
        a.jne(top);
        a.call(fn);
        a.int3();
        a.Label(ref fn);
        a.mov(rbp, rbx);
        a.imul(rbp, rbp, 5);
        a.ret();
    });

    /// <summary>Gives every register but rsp, rsi and rdi a distinct value no instruction of the programs produces
    /// by chance (a local the compiled code never loaded holds 0).</summary>
    static void FillRegisters(Vm vm)
    {
        for (int r = 0; r < 16; r++)
            if (r is not (CpuT.RSP or CpuT.RSI or CpuT.RDI)) vm.Cpu.R[r] = 0x8101_0101_0101_0101UL * (ulong)(r + 1) ^ 0x5A;
    }

    static (string AtStop, string AtEnd, CodeCache Code) StopAndFinishFilled(byte[] code, ExecutionTier tier, ulong stopAt, ulong rsi, ulong rdi, int? threshold, ulong? rsp = null)
    {
        using var vm = new Vm(code, tier, rsi, rdi, threshold);
        FillRegisters(vm);
        if (rsp is ulong sp) vm.Cpu.R[CpuT.RSP] = sp;
        string atStop = vm.State(vm.Run(stopAt));
        return (atStop, vm.State(vm.Run(ulong.MaxValue)), vm.Cpu.Code);
    }

    static void AssertSameStateInEveryTier(string what, ulong stopAt, ulong rsi, ulong rdi, ulong? rsp = null)
    {
        var reference = StopAndFinishFilled(PartlyWrittenCode, ExecutionTier.Interpreter, stopAt, rsi, rdi, null, rsp);
        foreach (var (tier, threshold) in new[] { (ExecutionTier.Compiled, (int?)null), (ExecutionTier.Default, EagerThreshold) })
        {
            var other = StopAndFinishFilled(PartlyWrittenCode, tier, stopAt, rsi, rdi, threshold, rsp);
            // a region the compiler refused would run interpreted and prove nothing
            Assert.True(other.Code.CompileFailures == 0, $"{what}, {tier}: {other.Code.CompileFailures} compilations refused");
            Assert.True((reference.AtStop, reference.AtEnd) == (other.AtStop, other.AtEnd),
                $"{what}, {tier}:\ninterpreter {reference.AtStop}\n            {reference.AtEnd}\nother       {other.AtStop}\n            {other.AtEnd}");
        }
    }

    [Fact]
    public void StopAtEveryInstructionWithRegistersWrittenOnSomePathsLeavesTheSameState()
    {
        using (var vm = new Vm(PartlyWrittenCode, ExecutionTier.Default, threshold: EagerThreshold))
        {
            FillRegisters(vm);
            Assert.Equal(RunResult.Fault, vm.Run(ulong.MaxValue)); // the int3
            var code = vm.Cpu.Code;
            // the arms and the join are compiled into regions of several blocks (entered at several members)
            Assert.True(code.BlocksCompiled > code.RegionsCompiled, $"{code.BlocksCompiled} blocks in {code.RegionsCompiled} regions");
            Assert.Equal(0, code.CompileFailures);
        }
        using var whole = new Vm(PartlyWrittenCode, ExecutionTier.Interpreter);
        FillRegisters(whole);
        Assert.Equal(RunResult.Fault, whole.Run(ulong.MaxValue));
        ulong total = whole.Cpu.InstructionCount;
        Assert.True(total > Iterations * 10);
        for (ulong stop = 0; stop <= total + 1; stop++)
            AssertSameStateInEveryTier($"stop at {stop}", stop, Data, Data + 0x800);
    }

    [Fact]
    public void FaultAtEveryMemoryAccessWithRegistersWrittenOnSomePathsLeavesTheSameState()
    {
        // the load (rsi) or the stores of the arms (rdi, rdi + 8, rdi + 16) or the join's sbb (rdi + 24) leave the
        // data mapping at iteration j;
        // or arm B's push faults (rsp at the start of the mapping)
        for (int j = 0; j < Iterations; j++)
        {
            ulong edge = Data + DataSize - 8 * (ulong)j;
            AssertSameStateInEveryTier($"load faults at iteration {j}", ulong.MaxValue, edge, Data + 0x800);
            foreach (ulong arm in new ulong[] { 0, 8, 16, 24 })
                AssertSameStateInEveryTier($"store +{arm} faults at iteration {j}", ulong.MaxValue, Data, edge - arm);
        }
        AssertSameStateInEveryTier("push faults", ulong.MaxValue, Data, Data + 0x800, rsp: Data);
    }
}
