using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Blocks whose head reads the flags of the block before: a branch inside a region carries a record of known kind
/// into a second entry of its target (the record's parts in locals, not stored into the thread), where the head's
/// condition is decided from those parts and an inc/dec takes its kept CF from them. The loop below has each kind
/// of such head (gzip's and bzip2's shapes among them): a jg after a compare's jl, a setb after a mov, a dec keeping
/// a compare's CF with a store and pushfq after it, an sbb and a setc/cmovb after an add's js, a setb reading an sbb's borrow, a jg after a test's
/// jne; the data is random, so every flag takes both values. A part taken from the wrong place, a condition decided
/// with the wrong formula or a kept CF from the wrong record shows in the registers at a stop, in the flags at a
/// fault of a store, or in what pushfq saw.
/// </summary>
public partial class TierTests
{
    /// <summary>The pointers of <see cref="HeadFlagsCode"/>'s stores (r12 after setb, r13 after the dec, rdi after
    /// sbb) and where they start.</summary>
    static readonly (int Reg, ulong Start)[] HeadFlagsPointers = { (12, Data + 0x1400), (13, Data + 0x1800), (CpuT.RDI, Data + 0x800) };

    static readonly byte[] HeadFlagsCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var less = a.CreateLabel();
        var greater = a.CreateLabel();
        var join = a.CreateLabel();
        var negative = a.CreateLabel();
        var tail = a.CreateLabel();
        var nonzero = a.CreateLabel();
        var positive = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.xor(r11d, r11d);
        a.xor(r14d, r14d);
        a.Label(ref top);
        a.mov(rdx, __qword_ptr[rsi]);
        a.mov(rbx, __qword_ptr[rsi + 8]);
        a.cmp(edx, ebx);
        a.jl(less);
        a.jg(greater); // a head reading the compare (signed)
        a.inc(r11);
        a.jmp(join);
        a.Label(ref less);
        a.mov(r10, rdx);
        a.setb(al); // the compare's CF, after a register move
        a.mov(__qword_ptr[r12], r10);
        a.lea(r12, __[r12 + 8]);
        a.jmp(join);
        a.Label(ref greater);
        a.dec(r8); // keeps the compare's CF: the store's fault and pushfq show it
        a.mov(__qword_ptr[r13], r8);
        a.pushfq();
        a.pop(r15);
        a.lea(r13, __[r13 + 8]);
        a.Label(ref join);
        a.add(ebx, edx);
        a.js(negative);
        a.setc(r14b); // the add's CF
        a.cmovb(r10, rbx); // again, not right after its writer
        a.jmp(tail);
        a.Label(ref negative);
        a.mov(r9, rdx);
        a.sbb(r9, rdx); // a subtraction with the add's CF, of equal operands: its own borrow out is the borrow in
        a.mov(__qword_ptr[rdi], r9);
        a.setb(r14b); // the sbb's borrow out (its result includes the borrow in)
        a.Label(ref tail);
        a.test(edx, edx);
        a.jne(nonzero);
        a.Label(ref nonzero);
        a.jg(positive); // a logic operation's flags (bzip2's shape)
        a.or(r11, 2);
        a.Label(ref positive);
        a.lea(rsi, __[rsi + 16]);
        a.lea(rdi, __[rdi + 8]);
        a.dec(ecx);
        a.jne(top);
        a.int3();
    });

    static Vm HeadFlagsVm(ExecutionTier tier, int? threshold = null)
    {
        var vm = new Vm(HeadFlagsCode, tier, threshold: threshold);
        foreach (var (reg, start) in HeadFlagsPointers) vm.Cpu.R[reg] = start;
        return vm;
    }

    [Fact]
    public void StopAtEveryInstructionOfBlocksWhoseHeadReadsTheFlagsLeavesTheSameState()
    {
        using var whole = HeadFlagsVm(ExecutionTier.Interpreter);
        Assert.Equal(RunResult.Fault, whole.Run(ulong.MaxValue)); // the int3
        ulong total = whole.Cpu.InstructionCount;
        // not vacuous: both arms of the compare stored, and the add's sign went both ways
        Assert.NotEqual(HeadFlagsPointers[0].Start, whole.Cpu.R[12]);
        Assert.NotEqual(HeadFlagsPointers[1].Start, whole.Cpu.R[13]);
        Assert.NotEqual(0UL, whole.Cpu.R[15]);
        (string, string) Run(ExecutionTier tier, ulong stop, int? threshold = null)
        {
            using var vm = HeadFlagsVm(tier, threshold);
            string atStop = vm.State(vm.Run(stop));
            return (atStop, vm.State(vm.Run(ulong.MaxValue)));
        }
        // the first iterations (the default tier's regions form at the third) and the last ones (the exit to int3)
        const ulong window = 12 * 16;
        for (ulong stop = 0; stop <= total + 1; stop = stop == window ? total - 40 : stop + 1)
        {
            AssertTiersAgree((tier, threshold) => Run(tier, stop, threshold), $"stop at {stop}");
        }
    }

    [Fact]
    public void FaultOfAStoreAfterAFlagReadingHeadLeavesTheSameFlags()
    {
        var carries = new HashSet<ulong>();
        foreach (int j in new[] { 0, 1, 2, 3, 5, 8, 13, 21 })
            for (int n = 0; n < HeadFlagsPointers.Length; n++)
            {
                ulong edge = Data + DataSize - 8 * (ulong)j;
                (string, string) Run(ExecutionTier tier, int? threshold = null)
                {
                    using var vm = HeadFlagsVm(tier, threshold);
                    vm.Cpu.R[HeadFlagsPointers[n].Reg] = edge;
                    string atStop = vm.State(vm.Run(ulong.MaxValue));
                    return (atStop, vm.State(vm.Run(ulong.MaxValue)));
                }
                var reference = AssertTiersAgree(Run, $"pointer {n} faults at its store {j}");
                if (reference.Item1.Contains("fault=11/")) carries.Add(CarryOf(reference.Item1));
            }
        // not vacuous: faults were taken with CF both set and clear
        Assert.Equal(2, carries.Count);
    }
}
