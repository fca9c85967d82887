using System.IO.Hashing;
using System.Text;
using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Memory;
using ReVirt.Tests.Oracle;
using ReVirt.Tests.Programs;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Which tier runs a block may change, the results may not: stops at every instruction of a window, a fault at
/// every memory access position, stores into the running block, programs against their native runs, and
/// recordings replayed in the other tier. The interpreter is the reference of the in-process cases (it is itself
/// checked against the host CPU by the differential tests, which run every tier too).
/// </summary>
public partial class TierTests
{
    const ulong Data = 0x100_0000, DataSize = 0x2000;
    const int Iterations = 40;

    /// <summary>A loop of one block (the compiled tier runs its iterations without returning to the execution loop)
    /// with loads, stores, a rotate, imul, lea and flags, then a call; int3 ends it.</summary>
    static readonly byte[] LoopCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var fn = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.Label(ref top);
        a.add(rax, __qword_ptr[rsi]);
        a.mov(__qword_ptr[rdi], rax);
        a.ror(rax, 7);
        a.lea(rsi, __[rsi + 8]);
        a.add(rdi, 8);
        a.imul(rdx, rax, 3);
        a.xor(rax, rdx);
        a.sub(ecx, 1);
        a.jne(top);
        a.call(fn);
        a.int3();
        a.Label(ref fn);
        a.shl(rax, 3);
        a.cmp(rax, rdx);
        a.setb(bl);
        a.ret();
    });

    sealed class Vm : IDisposable
    {
        public readonly CpuT Cpu;
        public readonly GuestMemory Mem = new();

        public Vm(byte[] code, ExecutionTier tier, ulong rsi = Data, ulong rdi = Data + 0x800, int? threshold = null, BackgroundCompiler? background = null,
            bool? weighByCost = null)
        {
            Cpu = new CpuT(Mem, new CodeCache(Mem, tier, compileThreshold: threshold, background: background, weighByCost: weighByCost), new VmRunner.NoHost());
            Mem.Map(NativeRunner.CodeBase, NativeRunner.CodeSize, Prot.Read | Prot.Write | Prot.Exec, "code");
            Mem.Poke(NativeRunner.SnippetAddress, code);
            Mem.Map(Data, DataSize, Prot.Read | Prot.Write, "data");
            var pattern = new byte[DataSize];
            new Random(3).NextBytes(pattern);
            Mem.WriteBytes(Data, pattern);
            Cpu.Rip = NativeRunner.SnippetAddress;
            Cpu.R[CpuT.RSP] = Data + 0x1000;
            Cpu.R[CpuT.RSI] = rsi;
            Cpu.R[CpuT.RDI] = rdi;
            Cpu.R[CpuT.RCX] = 0x5555;
        }

        public RunResult Run(ulong stopAt)
        {
            Cpu.StopAt = stopAt;
            return Cpu.Run();
        }

        /// <summary>Everything that must not depend on the tier.</summary>
        public string State(RunResult r)
        {
            var mem = new byte[DataSize];
            Mem.ReadBytes(Data, mem);
            var s = new StringBuilder();
            s.Append($"{r} rip={Cpu.Rip:x} flags={Cpu.Rflags & CpuState.DigestedFlags:x} n={Cpu.InstructionCount} branches={Cpu.BranchCount} ");
            for (int k = 0; k < 16; k++) s.Append($"r{k}={Cpu.R[k]:x} ");
            s.Append($"mem={XxHash64.HashToUInt64(mem):x} ");
            // the SSE state: every XMM register and MXCSR (its sticky exception flags included)
            s.Append($"xmm={XxHash64.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Cpu.Xmm.AsSpan())):x} mxcsr={Cpu.Mxcsr:x} ");
            if (r == RunResult.Fault) s.Append($"fault={Cpu.PendingFault!.Signal}/{Cpu.PendingFault.Code}/{Cpu.PendingFault.FaultAddress:x}");
            return s.ToString();
        }

        public void Dispose() => Mem.Dispose();
    }

    static (string AtStop, string AtEnd) StopAndFinish(byte[] code, ExecutionTier tier, ulong stopAt, ulong rsi = Data, ulong rdi = Data + 0x800, int? threshold = null)
    {
        using var vm = new Vm(code, tier, rsi, rdi, threshold);
        string atStop = vm.State(vm.Run(stopAt));
        return (atStop, vm.State(vm.Run(ulong.MaxValue)));
    }

    /// <summary>The default tier compiling after two whole runs of a block: its regions form mid-loop, from blocks
    /// the interpreter ran before.</summary>
    const int EagerThreshold = 2;

    /// <summary>One run's (state at the stop, state at the end) in the interpreter, the compiled tier and the default
    /// tier compiling eagerly: the two compiled ones must equal the interpreter's, which is returned.</summary>
    static (string, string) AssertTiersAgree(Func<ExecutionTier, int?, (string, string)> run, string where)
    {
        var reference = run(ExecutionTier.Interpreter, null);
        var compiled = run(ExecutionTier.Compiled, null);
        var eager = run(ExecutionTier.Default, EagerThreshold);
        Assert.True(reference == compiled, $"{where}:\ninterpreter {reference}\ncompiled    {compiled}");
        Assert.True(reference == eager, $"{where}:\ninterpreter {reference}\ndefault     {eager}");
        return reference;
    }

    /// <summary>CF of the flags a <c>State</c> string shows.</summary>
    static ulong CarryOf(string state)
    {
        int at = state.IndexOf("flags=") + "flags=".Length;
        return Convert.ToUInt64(state[at..state.IndexOf(' ', at)], 16) & CpuT.CF;
    }

    /// <summary>A loop of several blocks (both arms of a branch, a call into a function, a join) whose flags cross
    /// block edges: the compare of one block is read by setb and adc in the next ones, on either path.</summary>
    static readonly byte[] RegionCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var even = a.CreateLabel();
        var join = a.CreateLabel();
        var skip = a.CreateLabel();
        var fn = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.xor(ebx, ebx);
        a.Label(ref top);
        a.mov(rdx, __qword_ptr[rsi]);
        a.add(rax, rdx);
        a.test(dl, 1);
        a.je(even);
        a.ror(rax, 5);
        a.mov(__qword_ptr[rdi], rax);
        a.add(rbx, 3);
        a.jmp(join);
        a.Label(ref even);
        a.imul(rdx, rax, 7);
        a.xor(rax, rdx);
        a.call(fn);
        a.Label(ref join);
        a.lea(rsi, __[rsi + 8]);
        a.add(rdi, 8);
        a.cmp(ebx, 60);
        a.jb(skip);
        a.sub(ebx, 50);
        a.Label(ref skip);
        a.setb(dl);
        a.movzx(edx, dl);
        a.add(rax, rdx);
        a.dec(ecx);
        a.jne(top);
        a.int3();
        a.Label(ref fn);
        a.shl(rax, 3);
        a.cmp(rax, rdx);
        a.adc(rbx, 0);
        a.ret();
    });

    /// <summary>The region tests below are not vacuous: with the eager threshold the loop runs in regions of several
    /// blocks (the compiled tier compiles each block as it first runs, before its successors are decoded, so it
    /// forms regions of one block).</summary>
    [Fact]
    public void TheRegionLoopRunsInCompiledRegionsOfSeveralBlocks()
    {
        using var vm = new Vm(RegionCode, ExecutionTier.Default, threshold: EagerThreshold);
        Assert.Equal(RunResult.Fault, vm.Run(ulong.MaxValue));
        var code = vm.Cpu.Code;
        Assert.True(code.BlocksCompiled > code.RegionsCompiled, $"{code.BlocksCompiled} blocks in {code.RegionsCompiled} regions");
        Assert.True(code.InterpretedInstructions < (long)vm.Cpu.InstructionCount / 4, $"{code.InterpretedInstructions} of {vm.Cpu.InstructionCount} interpreted");
    }

    [Fact]
    public void StopAtEveryInstructionOfARegionLeavesTheSameState() => AssertSameAtEveryStop(RegionCode, Iterations * 12);

    [Fact]
    public void FaultAtEveryMemoryAccessOfARegionLeavesTheSameState()
    {
        // the load (rsi) or the store of the odd arm (rdi) leaves the data mapping at iteration j; or the call's push
        // faults (rsp at the start of the mapping)
        for (int j = 0; j < Iterations; j++)
            foreach (int which in new[] { 0, 1, 2 })
            {
                if (which == 2 && j > 0) continue;
                ulong edge = Data + DataSize - 8 * (ulong)j;
                ulong rsi = which == 0 ? edge : Data, rdi = which == 1 ? edge : Data + 0x800;
                foreach (var (tier, threshold) in new[] { (ExecutionTier.Compiled, (int?)null), (ExecutionTier.Default, EagerThreshold) })
                {
                    (string, string) Run(ExecutionTier t, int? th)
                    {
                        using var vm = new Vm(RegionCode, t, rsi, rdi, th);
                        if (which == 2) vm.Cpu.R[CpuT.RSP] = Data;
                        string atStop = vm.State(vm.Run(ulong.MaxValue));
                        return (atStop, vm.State(vm.Run(ulong.MaxValue)));
                    }
                    var reference = Run(ExecutionTier.Interpreter, null);
                    var other = Run(tier, threshold);
                    Assert.Contains("fault=", reference.Item1);
                    Assert.True(reference == other, $"access {which} faults at iteration {j}, {tier}:\ninterpreter {reference}\nother       {other}");
                }
            }
    }

    /// <summary>A two-block loop whose second block rewrites the immediate of the first; with `apart` the first
    /// block is on another page than the store (so the store invalidates a block of the region that is not running).</summary>
    static byte[] PatchingRegion(bool apart) => NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var second = a.CreateLabel();
        var start = a.CreateLabel();
        a.jmp(start);
        a.Label(ref top);
        a.mov(eax, 1000);
        a.add(rbx, rax);
        a.test(cl, 1);
        a.je(second);
        a.add(rbx, 1);
        a.jmp(second);
        if (apart) a.db(new byte[4200]); // the rest of the loop on the next page
        a.Label(ref second);
        a.mov(__byte_ptr[rdx + 1], cl);
        a.imul(rbx, rbx, 3);
        a.dec(ecx);
        a.jne(top);
        a.int3();
        a.Label(ref start);
        a.mov(ecx, 30);
        a.xor(ebx, ebx);
        a.lea(rdx, __[top]);
        a.jmp(top);
    });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StoreIntoABlockOfTheRunningRegionTakesEffectAtItsNextRun(bool apart)
    {
        var code = PatchingRegion(apart);
        var reference = StopAndFinish(code, ExecutionTier.Interpreter, ulong.MaxValue);
        Assert.Equal(reference, StopAndFinish(code, ExecutionTier.Compiled, ulong.MaxValue));
        Assert.Equal(reference, StopAndFinish(code, ExecutionTier.Default, ulong.MaxValue, threshold: EagerThreshold));
        // the oracle of the patching itself: each store takes effect at the next iteration
        ulong sum = 0, imm = 1000;
        for (ulong cx = 30; cx != 0; cx--) { sum = (sum + imm + ((cx & 1) != 0 ? 1UL : 0)) * 3; imm = (imm & ~0xFFUL) | (cx & 0xFF); }
        Assert.Contains($"r3={sum:x} ", reference.AtStop);
        // and at every stop in the window of the first iterations
        for (ulong stop = 0; stop < 120; stop++)
        {
            var r = StopAndFinish(code, ExecutionTier.Interpreter, stop);
            Assert.Equal(r, StopAndFinish(code, ExecutionTier.Compiled, stop));
            Assert.Equal(r, StopAndFinish(code, ExecutionTier.Default, stop, threshold: EagerThreshold));
        }
    }

    [Fact]
    public void StopAtEveryInstructionOfTheLoopLeavesTheSameState() => AssertSameAtEveryStop(LoopCode, Iterations * 9);

    /// <summary>Stops the program at every instruction count from 0 to one past its end, then runs it to the end:
    /// the interpreter, the compiled tier and the default tier with regions forming mid-run leave the same states.</summary>
    static void AssertSameAtEveryStop(byte[] code, ulong atLeast)
    {
        using var whole = new Vm(code, ExecutionTier.Interpreter);
        Assert.Equal(RunResult.Fault, whole.Run(ulong.MaxValue)); // the int3
        ulong total = whole.Cpu.InstructionCount;
        Assert.True(total > atLeast);
        for (ulong stop = 0; stop <= total + 1; stop++)
        {
            var reference = StopAndFinish(code, ExecutionTier.Interpreter, stop);
            var compiled = StopAndFinish(code, ExecutionTier.Compiled, stop);
            var eager = StopAndFinish(code, ExecutionTier.Default, stop, threshold: EagerThreshold);
            Assert.True(reference == compiled, $"stop at {stop}:\ninterpreter {reference}\ncompiled    {compiled}");
            Assert.True(reference == eager, $"stop at {stop}:\ninterpreter {reference}\ndefault     {eager}");
        }
    }

    [Fact]
    public void FaultAtEveryMemoryAccessOfTheLoopLeavesTheSameState()
    {
        // the load (rsi) or the store (rdi) walks off the end of the data mapping at iteration j
        for (int j = 0; j < Iterations; j++)
            foreach (bool load in new[] { true, false })
            {
                ulong edge = Data + DataSize - 8 * (ulong)j;
                ulong rsi = load ? edge : Data, rdi = load ? Data + 0x800 : edge;
                var reference = StopAndFinish(LoopCode, ExecutionTier.Interpreter, ulong.MaxValue, rsi, rdi);
                var compiled = StopAndFinish(LoopCode, ExecutionTier.Compiled, ulong.MaxValue, rsi, rdi);
                Assert.Contains("fault=11/", reference.AtStop);
                Assert.True(reference == compiled, $"{(load ? "load" : "store")} faults at iteration {j}:\ninterpreter {reference}\ncompiled    {compiled}");
            }
    }

    /// <summary>Misaligned loads and stores that cross a page end, onto the next page of the mapping or off its end:
    /// compiled code's TLB probe sends them to the slow path, which completes them or faults as the interpreter does.</summary>
    [Fact]
    public void AccessesAcrossAPageEndLeaveTheSameState()
    {
        foreach (ulong misalign in new ulong[] { 1, 3, 7 })
            foreach (ulong pageEnd in new[] { Data + 0x1000, Data + DataSize })
                foreach (bool load in new[] { true, false })
                {
                    ulong at = pageEnd - 8 * 5 - misalign; // the sixth access crosses the page end
                    ulong rsi = load ? at : Data, rdi = load ? Data + 0x800 : at;
                    var reference = StopAndFinish(LoopCode, ExecutionTier.Interpreter, ulong.MaxValue, rsi, rdi);
                    var compiled = StopAndFinish(LoopCode, ExecutionTier.Compiled, ulong.MaxValue, rsi, rdi);
                    var eager = StopAndFinish(LoopCode, ExecutionTier.Default, ulong.MaxValue, rsi, rdi, EagerThreshold);
                    Assert.Equal(pageEnd == Data + DataSize, reference.AtStop.Contains("fault=11/"));
                    string what = $"{(load ? "load" : "store")} at {at:x}";
                    Assert.True(reference == compiled, $"{what}:\ninterpreter {reference}\ncompiled    {compiled}");
                    Assert.True(reference == eager, $"{what}:\ninterpreter {reference}\ndefault     {eager}");
                }
    }

    /// <summary>Shifts by CL of every operand size (a high byte among them): whose flags the next instruction
    /// replaces, and whose flags are read (setc, adc, sbb, and dec keeping CF; a count of 0 leaves the record of the
    /// instruction before), and bswap of 32 and 64 bits, with counts that are 0, below the size, and at or above it
    /// before and after the mask (CL = 13 x (iterations left - 1)).</summary>
    static readonly byte[] ShiftByClCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        a.mov(r8d, Iterations);
        a.xor(ebx, ebx);
        a.Label(ref top);
        a.mov(rax, __qword_ptr[rsi]);
        a.imul(ecx, r8d, 13);
        a.sub(ecx, 13);
        a.mov(rdx, rax);
        a.shl(rdx, cl);
        a.add(rbx, rdx);
        a.mov(edx, eax);
        a.sar(edx, cl);
        a.xor(rbx, rdx);
        a.mov(rdx, rax);
        a.shr(dx, cl);
        a.sub(rbx, rdx);
        a.mov(rdx, rax);
        a.sar(dh, cl);
        a.add(rbx, rdx);
        a.mov(rdx, rax);
        a.shl(dl, cl);
        a.add(rbx, rdx);
        a.mov(edx, eax);
        a.shr(edx, cl);
        a.sub(rbx, rdx);
        a.bswap(eax);
        a.add(rbx, rax);
        a.mov(rax, __qword_ptr[rsi + 8]);
        a.bswap(rax);
        a.mov(__qword_ptr[rdi], rax);
        a.sar(rax, cl);
        a.setc(dl);
        a.xor(rbx, rax);
        a.add(bl, dl);
        a.shr(eax, cl);
        a.adc(rbx, rax);
        a.shl(bx, cl);
        a.sbb(rbx, rdx);
        a.mov(__qword_ptr[rdi + 8], rbx);
        a.lea(rsi, __[rsi + 16]);
        a.lea(rdi, __[rdi + 16]);
        a.shl(rbx, cl);
        a.dec(r8d);
        a.jne(top);
        a.int3();
    });

    [Fact]
    public void StopAtEveryInstructionOfShiftsByClAndBswapLeavesTheSameState() => AssertSameAtEveryStop(ShiftByClCode, Iterations * 30);

    /// <summary>What the host does to the data mapping while the loop is stopped (as a guest's munmap, mmap or
    /// mprotect between two runs would).</summary>
    public enum MappingChange { Remap, Unmap, ReadOnly, NoAccess }

    /// <summary>A TLB entry holds a page's addend (host address minus guest page address), filled by the first access
    /// and used by every later one in the interpreter and in compiled code: after the loop has run (its pages in the
    /// TLBs) the data mapping is replaced by one with other bytes, removed, or made read-only or inaccessible, and the
    /// loop goes on. Every tier must read the new bytes or fault at the same instruction (a stale entry would read
    /// the freed page or let the access through). Stopped at each instruction of one iteration.</summary>
    [Theory]
    [InlineData(MappingChange.Remap)]
    [InlineData(MappingChange.Unmap)]
    [InlineData(MappingChange.ReadOnly)]
    [InlineData(MappingChange.NoAccess)]
    public void TheTlbFollowsTheMappingAfterUnmapRemapOrProtect(MappingChange change)
    {
        void Apply(GuestMemory mem)
        {
            switch (change)
            {
                case MappingChange.Remap:
                    mem.Unmap(Data, DataSize);
                    mem.Map(Data, DataSize, Prot.Read | Prot.Write, "data");
                    var other = new byte[DataSize];
                    new Random(11).NextBytes(other);
                    mem.WriteBytes(Data, other);
                    break;
                case MappingChange.Unmap: mem.Unmap(Data, DataSize); break;
                case MappingChange.ReadOnly: Assert.True(mem.Protect(Data, DataSize, Prot.Read)); break;
                case MappingChange.NoAccess: Assert.True(mem.Protect(Data, DataSize, Prot.None)); break;
            }
        }
        string Run(ExecutionTier tier, int? threshold, ulong stopAt, bool changed)
        {
            using var vm = new Vm(LoopCode, tier, threshold: threshold);
            string atStop = vm.State(vm.Run(stopAt));
            if (changed) Apply(vm.Mem);
            var end = vm.Run(ulong.MaxValue);
            // the state without reading the data mapping (it may be gone)
            var s = new StringBuilder($"{atStop}\n{end} rip={vm.Cpu.Rip:x} flags={vm.Cpu.Rflags & CpuState.DigestedFlags:x} n={vm.Cpu.InstructionCount} ");
            for (int k = 0; k < 16; k++) s.Append($"r{k}={vm.Cpu.R[k]:x} ");
            if (end == RunResult.Fault) s.Append($"fault={vm.Cpu.PendingFault!.Signal}/{vm.Cpu.PendingFault.Code}/{vm.Cpu.PendingFault.FaultAddress:x}");
            return s.ToString();
        }
        // the loop's nine instructions from its fifth iteration on (two set-up instructions before it)
        for (ulong stop = 2 + 9 * 5; stop < 2 + 9 * 6; stop++)
        {
            string reference = Run(ExecutionTier.Interpreter, null, stop, true);
            // not vacuous: the change is seen (other bytes read, or a fault of the data mapping instead of int3's)
            Assert.NotEqual(Run(ExecutionTier.Interpreter, null, stop, false), reference);
            if (change != MappingChange.Remap) Assert.Contains($"fault={ReVirt.Linux.Sig.SEGV}/", reference);
            string compiled = Run(ExecutionTier.Compiled, null, stop, true);
            string eager = Run(ExecutionTier.Default, EagerThreshold, stop, true);
            Assert.True(reference == compiled, $"{change} at {stop}:\ninterpreter {reference}\ncompiled    {compiled}");
            Assert.True(reference == eager, $"{change} at {stop}:\ninterpreter {reference}\ndefault     {eager}");
        }
    }

    /// <summary>The pointer registers of <see cref="FlagPartsCode"/>, each walking 8 bytes per iteration from its own
    /// 0x200-byte window of the data: rsi for the loads, then the store after add, neg, rol, inc, shr, and the
    /// read-modify-write add whose flags nothing reads.</summary>
    static readonly int[] FlagPartsPointers = { CpuT.RSI, CpuT.RDI, 9, 10, 11, 12, 13 };

    /// <summary>A loop whose flag records are computed from the registers the flag-setting instruction used (compiled
    /// code keeps no copy of them) while those registers are then overwritten, a high byte among them, and whose
    /// memory accesses can fault with each kind of record pending: a compare, an add, a neg, a rotate laid over a
    /// record, an inc keeping CF, a shift keeping a and b, the flags read by adc, setc and a jump that is not fused
    /// with its compare, a block entered with its flags dead, and an add to memory whose flags nothing reads (its
    /// handler records them before the store, so a fault of the store leaves them).</summary>
    static readonly byte[] FlagPartsCode = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var skip = a.CreateLabel();
        a.mov(ecx, Iterations);
        a.xor(eax, eax);
        a.mov(ebx, 7);
        a.Label(ref top);
        a.mov(rdx, __qword_ptr[rsi]);
        a.cmp(edx, ebx);
        a.mov(edx, __dword_ptr[rsi + 4]);
        a.adc(eax, edx);
        a.add(ebx, edx);
        a.mov(__qword_ptr[rdi], rbx);
        a.lea(rdx, __[rdx + rbx * 2]);
        a.mov(ebx, edx);
        a.add(dh, cl);
        a.setc(dh);
        a.neg(eax);
        a.mov(__dword_ptr[r9], eax);
        a.mov(eax, edx);
        a.rol(eax, 3);
        a.mov(__qword_ptr[r10], rax);
        a.inc(ebx);
        a.mov(__dword_ptr[r11], ebx);
        a.mov(ebx, eax);
        a.xor(ebx, ecx);
        a.sub(ebx, 5);
        a.cmovb(ebx, edx);
        a.shr(edx, 2);
        a.mov(__qword_ptr[r12], rdx);
        a.mov(edx, eax);
        a.jne(skip);
        a.add(eax, 1);
        a.Label(ref skip);
        a.lea(rsi, __[rsi + 8]);
        a.lea(rdi, __[rdi + 8]);
        a.lea(r9, __[r9 + 8]);
        a.lea(r10, __[r10 + 8]);
        a.lea(r11, __[r11 + 8]);
        a.lea(r12, __[r12 + 8]);
        a.add(__dword_ptr[r13], eax);
        a.lea(r13, __[r13 + 8]);
        a.sub(ecx, 1);
        a.jne(top);
        a.int3();
    });

    static void SetFlagPartsPointers(Vm vm)
    {
        for (int n = 0; n < FlagPartsPointers.Length; n++) vm.Cpu.R[FlagPartsPointers[n]] = Data + 0x200 * (ulong)n;
    }

    [Fact]
    public void StopAtEveryInstructionWithFlagsInRegistersLeavesTheSameState()
    {
        using var whole = new Vm(FlagPartsCode, ExecutionTier.Interpreter);
        SetFlagPartsPointers(whole);
        Assert.Equal(RunResult.Fault, whole.Run(ulong.MaxValue)); // the int3
        ulong total = whole.Cpu.InstructionCount;
        Assert.True(total > Iterations * 30);
        (string, string) Run(ExecutionTier tier, ulong stop, int? threshold = null)
        {
            using var vm = new Vm(FlagPartsCode, tier, threshold: threshold);
            SetFlagPartsPointers(vm);
            string atStop = vm.State(vm.Run(stop));
            return (atStop, vm.State(vm.Run(ulong.MaxValue)));
        }
        for (ulong stop = 0; stop <= total + 1; stop++)
        {
            var reference = Run(ExecutionTier.Interpreter, stop);
            Assert.Equal(reference, Run(ExecutionTier.Compiled, stop));
            Assert.Equal(reference, Run(ExecutionTier.Default, stop, EagerThreshold));
        }
    }

    [Fact]
    public void FaultWithEachFlagRecordPendingLeavesTheSameState()
    {
        // pointer n runs off the end of the read-write data at iteration j: into a read-only page (a store faults;
        // the read-modify-write add reads, then faults) or, for the loads, off the end of that page
        foreach (int j in new[] { 0, 1, 6, 17, Iterations - 1 })
            for (int n = 0; n < FlagPartsPointers.Length; n++)
            {
                ulong edge = (n == 0 ? Data + DataSize + 0x1000 : Data + DataSize) - 8 * (ulong)j;
                (string, string) Run(ExecutionTier tier, int? threshold = null)
                {
                    using var vm = new Vm(FlagPartsCode, tier, threshold: threshold);
                    vm.Mem.Map(Data + DataSize, 0x1000, Prot.Read, "read-only");
                    SetFlagPartsPointers(vm);
                    vm.Cpu.R[FlagPartsPointers[n]] = edge;
                    string atStop = vm.State(vm.Run(ulong.MaxValue));
                    return (atStop, vm.State(vm.Run(ulong.MaxValue)));
                }
                var reference = Run(ExecutionTier.Interpreter);
                Assert.Contains($"fault=11/", reference.Item1);
                var compiled = Run(ExecutionTier.Compiled);
                var eager = Run(ExecutionTier.Default, EagerThreshold);
                Assert.True(reference == compiled, $"pointer {n} faults at iteration {j}:\ninterpreter {reference}\ncompiled    {compiled}");
                Assert.True(reference == eager, $"pointer {n} faults at iteration {j}:\ninterpreter {reference}\ndefault     {eager}");
            }
    }

    [Fact]
    public void StoreIntoTheRunningBlockTakesEffectAtTheNextIteration()
    {
        // the loop rewrites the immediate of its own first instruction every iteration
        var code = NativeRunner.Asm(a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 30);
            a.xor(ebx, ebx);
            a.lea(rdx, __[top]);
            a.Label(ref top);
            a.mov(eax, 1000);
            a.add(rbx, rax);
            a.mov(__byte_ptr[rdx + 1], cl);
            a.imul(rbx, rbx, 3);
            a.dec(ecx);
            a.jne(top);
            a.int3();
        });
        var reference = StopAndFinish(code, ExecutionTier.Interpreter, ulong.MaxValue);
        var compiled = StopAndFinish(code, ExecutionTier.Compiled, ulong.MaxValue);
        var byDefault = StopAndFinish(code, ExecutionTier.Default, ulong.MaxValue);
        Assert.Equal(reference, compiled);
        Assert.Equal(reference, byDefault);
        // the oracle of the patching itself: the sum the loop computes when each store takes effect at once
        ulong sum = 0, imm = 1000;
        for (ulong cx = 30; cx != 0; cx--) { sum = (sum + imm) * 3; imm = (imm & ~0xFFUL) | (cx & 0xFF); }
        Assert.Contains($"r3={sum:x} ", reference.AtStop);
    }

    /// <summary>The profile of `primary run --profile-tier`: in the compiled tier every block of
    /// <see cref="RegionCode"/> is a region of its own (compiled as it first runs) and ends in a control transfer,
    /// so compiled code returns to the execution loop once per retired branch (the CPU's own count); the handler
    /// calls are the adc of each call of the function (the iterations whose loaded low byte is even, counted from
    /// the data) and the int3 at the end.</summary>
    [Fact]
    public void TheTierProfileCountsEachReturnFromCompiledCodeAndEachHandlerCall()
    {
        using var vm = new Vm(RegionCode, ExecutionTier.Compiled);
        var profile = vm.Cpu.Code.Profile = new TierProfile();
        Assert.Equal(RunResult.Fault, vm.Run(ulong.MaxValue));
        Assert.Equal((long)vm.Cpu.BranchCount, profile.Exits);
        Assert.Equal(0, profile.InterpretedBlocks);
        var data = new byte[DataSize];
        new Random(3).NextBytes(data);
        int calls = Enumerable.Range(0, Iterations).Count(i => (data[8 * i] & 1) == 0);
        Assert.InRange(calls, 1, Iterations - 1);
        Assert.Equal(calls, profile.HelperCalls[(int)Mnemonic.Adc]);
        Assert.Equal(1, profile.HelperCalls[(int)Mnemonic.Int3]);
        Assert.Equal(calls + 1, profile.HelperCalls.Sum());
        var report = new StringWriter();
        profile.Write(report, vm.Cpu.Code, "test");
        Assert.Contains($"test: {profile.Exits} returns from compiled regions", report.ToString());
    }

    public static IEnumerable<object[]> Programs()
    {
        foreach (var name in new[] { "smc", "intarith", "strings", "qsort", "setjmp", "sigsegv_handler", "bench" })
            foreach (var libc in new[] { "glibc", "musl" })
                yield return new object[] { name, libc };
    }

    [Theory]
    [MemberData(nameof(Programs))]
    public void ProgramsCompiledMatchTheirNativeRuns(string name, string libc)
    {
        string prog = GuestEnv.Guest(name, libc);
        string[] args = name == "bench" ? new[] { "1" } : Array.Empty<string>();
        var native = GuestEnv.Native(prog, args);
        var vm = GuestEnv.Vm(prog, args, extra: new[] { "--tier", "Compiled" });
        Assert.True(native.StdoutText == vm.StdoutText, $"stdout differs\n--- native\n{native.StdoutText}\n--- compiled\n{vm.StdoutText}\n--- stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    /// <summary>A recording tier that is the default tier compiling in the background (`--background-compile`).</summary>
    const string Background = "Background";

    [Theory]
    [InlineData("threads", "glibc", "Compiled", "Interpreter")]
    [InlineData("bench", "musl", "Interpreter", "Compiled")]
    [InlineData("nondet_random", "glibc", "Default", "Compiled")]
    [InlineData("sha256sum", "busybox", "Default", "Interpreter")] // reads logged by reference between checkpoints
    [InlineData("sha256sum", "busybox", Background, "Interpreter")] // regions published whenever the compiler thread is done
    public void RecordingReplaysFaithfullyInAnotherTier(string name, string libc, string recordTier, string replayTier)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-tier-{Guid.NewGuid():N}.rvlog");
        try
        {
            var args = new List<string> { "record", "--log", log, "--checkpoint-interval", "100000" };
            args.AddRange(recordTier == Background ? new[] { "--tier", "Default", "--background-compile" } : new[] { "--tier", recordTier });
            args.Add("--");
            if (libc == "busybox") args.AddRange(new[] { "/bin/busybox", name, "/bin/busybox" });
            else args.Add(GuestEnv.Guest(name, libc));
            if (name == "bench") args.Add("1");
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, args.ToArray());
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output", "--tier", replayTier });
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
            // a faithful replay compared every checkpoint the log holds: make sure it held some
            Assert.True(GuestEnv.CountRecords(log, ReVirt.Log.RecordKind.Checkpoint) > 0, "the recording has no checkpoint to compare");
        }
        finally { File.Delete(log); }
    }
}
