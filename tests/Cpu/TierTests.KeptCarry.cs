using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// inc and dec keep CF from the record before them. When that record is the one in the thread (at the start of a
/// block of a region, where every way in stored it), compiled code takes that CF only where the inc/dec's record is
/// observed: a memory access's slow path (a fault shows the flags), a condition that reads CF, a handler, an exit.
/// The loop below (bzip2's move-to-front loop has the same shape: a compare ends one block, the next increments a
/// pointer and stores through it) gives CF a value independent of the branch taken, keeps it through an inc and a
/// dec in a row, reads it by setc after a dec and by pushfq (a handler) after an inc, and stores after each, so a CF
/// taken from the wrong record, or not taken, shows in the registers at a stop or in the flags at a fault.
/// </summary>
public partial class TierTests
{
    /// <summary>The pointers of <see cref="KeptCarryCode"/>'s stores (rdi after an inc, r9 after a second keep, r12
    /// after an inc whose CF setc reads, r13 after an inc that follows an add in its block) and their 0x200-byte
    /// windows of the data (rsi, the loads, from Data).</summary>
    static readonly (int Reg, ulong Start)[] KeptCarryPointers = { (CpuT.RDI, Data + 0x800), (9, Data + 0x400), (12, Data + 0x600), (13, Data + 0xA00) };

    static readonly byte[] KeptCarryCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var low = a.CreateLabel();
        var join = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.mov(ebx, 0x40000000);
        a.Label(ref top);
        a.mov(rdx, __qword_ptr[rsi]);
        a.cmp(edx, ebx); // CF random; the branch below is a signed compare's
        a.jl(low);
        // a block entered with the compare's record in the thread: inc keeps its CF, dec keeps the inc's
        a.inc(rbx);
        a.mov(__qword_ptr[rdi], rbx);
        a.dec(r8);
        a.mov(__qword_ptr[r9], r8);
        a.pushfq(); // a handler reading every flag
        a.pop(r10);
        a.jmp(join);
        a.Label(ref low);
        a.dec(rbx);
        a.setc(al); // CF read after the dec (not fused with it)
        a.inc(r8);
        a.mov(__qword_ptr[r12], r8);
        a.Label(ref join);
        a.add(ebx, edx);
        a.lea(rsi, __[rsi + 8]);
        a.lea(rdi, __[rdi + 8]);
        a.lea(r9, __[r9 + 8]);
        a.lea(r12, __[r12 + 8]);
        a.inc(r11); // keeps the add's CF (a record in registers, not the thread's): a fault of the store shows it
        a.mov(__qword_ptr[r13], r11);
        a.lea(r13, __[r13 + 8]);
        a.sub(ecx, 1);
        a.jne(top);
        a.int3();
    });

    static Vm KeptCarryVm(ExecutionTier tier, int? threshold = null)
    {
        var vm = new Vm(KeptCarryCode, tier, threshold: threshold);
        foreach (var (reg, start) in KeptCarryPointers) vm.Cpu.R[reg] = start;
        return vm;
    }

    [Fact]
    public void StopAtEveryInstructionWithAKeptCarryPendingLeavesTheSameState()
    {
        using var whole = KeptCarryVm(ExecutionTier.Interpreter);
        Assert.Equal(RunResult.Fault, whole.Run(ulong.MaxValue)); // the int3
        ulong total = whole.Cpu.InstructionCount;
        Assert.True(total > Iterations * 12);
        // not vacuous: both arms ran, and setc saw both values of CF
        Assert.NotEqual(0UL, whole.Cpu.R[10]);
        (string, string) Run(ExecutionTier tier, ulong stop, int? threshold = null)
        {
            using var vm = KeptCarryVm(tier, threshold);
            string atStop = vm.State(vm.Run(stop));
            return (atStop, vm.State(vm.Run(ulong.MaxValue)));
        }
        // the first iterations (the default tier's regions form at the third) and the last ones (the exit to int3)
        for (ulong stop = 0; stop <= total + 1; stop = stop == 12 * 12 ? total - 2 * 12 : stop + 1)
        {
            AssertTiersAgree((tier, threshold) => Run(tier, stop, threshold), $"stop at {stop}");
        }
    }

    [Fact]
    public void FaultOfAStoreAfterAKeptCarryLeavesTheSameFlags()
    {
        var carries = new HashSet<ulong>();
        foreach (int j in new[] { 0, 1, 2, 5, 11, 17, 23, Iterations - 1 })
            for (int n = 0; n < KeptCarryPointers.Length; n++)
            {
                ulong edge = Data + DataSize - 8 * (ulong)j;
                (string, string) Run(ExecutionTier tier, int? threshold = null)
                {
                    using var vm = KeptCarryVm(tier, threshold);
                    vm.Cpu.R[KeptCarryPointers[n].Reg] = edge;
                    string atStop = vm.State(vm.Run(ulong.MaxValue));
                    return (atStop, vm.State(vm.Run(ulong.MaxValue)));
                }
                var reference = AssertTiersAgree(Run, $"pointer {n} faults at iteration {j}");
                if (reference.Item1.Contains("fault=11/")) carries.Add(CarryOf(reference.Item1));
            }
        // not vacuous: faults were taken with CF both set and clear
        Assert.Equal(2, carries.Count);
    }
}
