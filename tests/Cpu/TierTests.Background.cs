using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Memory;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// The default tier compiling in the background: a region's compilation may finish at any moment, and a block of it
/// may be rewritten or unmapped while it is compiled. A gate on the compiler thread holds the first compilation in
/// flight until the test lets it go, so the race is forced, not hoped for.
/// </summary>
public partial class TierTests
{
    const int BgIterations = 40, BgThreshold = 8, BgPatchAt = 20;
    /// <summary><see cref="TwoPageLoop"/>'s instructions before the loop and per iteration (A 2, B 2, C 3, E 2).</summary>
    const ulong Setup = 2, PerIteration = 9;

    /// <summary>A loop of four blocks, one of them (B: add eax, 3) on the page after the others: the region formed at
    /// the loop head spans both pages. In iteration <see cref="BgPatchAt"/> a store through r8 writes 7 over B's
    /// immediate when r8 points there (or into the data when it does not).</summary>
    static readonly byte[] TwoPageLoop = NativeRunner.Asm(a =>
    {
        var top = a.CreateLabel();
        var back = a.CreateLabel();
        var check = a.CreateLabel();
        var far = a.CreateLabel();
        a.mov(ecx, BgIterations);
        a.xor(eax, eax);
        a.Label(ref top);
        a.add(eax, 1);
        a.jmp(far);
        a.Label(ref back);
        a.sub(ecx, 1);
        a.cmp(ecx, BgIterations - BgPatchAt);
        a.jne(check);
        a.mov(__byte_ptr[r8], 7);
        a.Label(ref check);
        a.test(ecx, ecx);
        a.jne(top);
        a.int3();
        a.db(new byte[(int)GuestMemory.PageSize]); // B lies on the next page
        a.Label(ref far);
        a.db(0x83, 0xC0, 0x03); // add eax, 3 in the imm8 form the test patches (the assembler may choose another)
        a.jmp(back);
    });

    /// <summary>Address of B's immediate: B (add eax, imm8 = 83 C0 03) is the first code after the padding.</summary>
    static ulong BImmediate()
    {
        int b = TwoPageLoop.AsSpan(0x40).IndexOf(new byte[] { 0x83, 0xC0, 0x03 }) + 0x40;
        Assert.True(b > (int)GuestMemory.PageSize, $"B at snippet offset {b}");
        return NativeRunner.SnippetAddress + (ulong)b + 2;
    }

    /// <summary>Holds the first job on the compiler thread (compilation in flight) until released; tells when it
    /// entered and when its result was stored. Later jobs pass.</summary>
    sealed class HoldFirst : CompileGate
    {
        readonly SemaphoreSlim _entered = new(0), _release = new(0), _finished = new(0);
        CompileJob? _first;

        public override void Entering(CompileJob job)
        {
            if (Interlocked.CompareExchange(ref _first, job, null) != null) return;
            _entered.Release();
            _release.Wait(TimeSpan.FromMinutes(2));
        }

        public override void Finished(CompileJob job)
        {
            if (job == _first) _finished.Release();
        }

        public void WaitEntered() => Assert.True(_entered.Wait(TimeSpan.FromMinutes(1)), "the compiler thread never took the region");
        public void ReleaseAndWaitFinished()
        {
            _release.Release();
            Assert.True(_finished.Wait(TimeSpan.FromMinutes(1)), "the held compilation never finished");
        }
    }

    public enum InFlightChange { None, SelfModify, UnmapRemap }

    /// <summary>
    /// The region {A, B, C, E} is queued at A's 8th run and held in flight on the compiler thread; meanwhile B is
    /// invalidated (the guest stores over its immediate, or its page is unmapped and mapped again with the new
    /// code); then the compilation finishes. The guest must never run that stale compilation: A, which was not
    /// invalidated, still waits for it, and publishing it would run B's old code (add 3, not 7) from inside the
    /// region. Results equal the interpreter's; the compilation is counted as discarded. Without a change the held
    /// compilation is published and runs (the case is not vacuous). Fails when <see cref="CodeCache.TryPublish"/>
    /// publishes without its check (the stale B adds 3 instead of 7).
    /// </summary>
    [Theory]
    [InlineData(InFlightChange.None)]
    [InlineData(InFlightChange.SelfModify)]
    [InlineData(InFlightChange.UnmapRemap)]
    public void AnInvalidationWhileARegionIsCompiledInTheBackgroundDiscardsIt(InFlightChange change)
    {
        ulong bImm = BImmediate();
        // a stop in iteration 13 (the region was queued in iteration 8), one in iteration 23 (after the patch)
        ulong held = Setup + PerIteration * 12 + 3, after = Setup + PerIteration * 22 + 1 + 4;

        string Run(ExecutionTier tier, BackgroundCompiler? background, HoldFirst? gate, out CodeCache code)
        {
            using var vm = new Vm(TwoPageLoop, tier, threshold: BgThreshold, background: background);
            code = vm.Cpu.Code;
            vm.Cpu.R[8] = change == InFlightChange.SelfModify ? bImm : Data;
            string s1 = vm.State(vm.Run(held));
            gate?.WaitEntered();
            if (change == InFlightChange.UnmapRemap)
            {
                ulong page = bImm & ~GuestMemory.PageMask;
                vm.Mem.Unmap(page, GuestMemory.PageSize);
                vm.Mem.Map(page, GuestMemory.PageSize, Prot.Read | Prot.Write | Prot.Exec, "code");
                var bytes = TwoPageLoop[(int)(page - NativeRunner.SnippetAddress)..];
                bytes[(int)(bImm - page)] = 7;
                vm.Mem.Poke(page, bytes);
            }
            string s2 = vm.State(vm.Run(after));
            gate?.ReleaseAndWaitFinished();
            return $"{s1}\n{s2}\n{vm.State(vm.Run(ulong.MaxValue))}";
        }

        string reference = Run(ExecutionTier.Interpreter, null, null, out _);
        var hold = new HoldFirst();
        var compiler = new BackgroundCompiler(hold);
        try
        {
            string background = Run(ExecutionTier.Default, compiler, hold, out var code);
            Assert.True(reference == background, $"{change}:\ninterpreter {reference}\nbackground  {background}");
            Assert.True(code.RegionsQueued >= 1, "no region was queued");
            if (change == InFlightChange.None)
            {
                Assert.Equal(0, code.CompilesDiscarded);
                Assert.True(code.RegionsCompiled >= 1 && code.InterpretedInstructions < (long)InstructionsOf(reference), "the held compilation was not published");
            }
            else Assert.Equal(1, code.CompilesDiscarded);
        }
        finally { compiler.Stop(); }
        // the change is seen by the guest (the reference is not that of an unchanged loop): B adds 7 from the patch
        // in iteration 20 on, or from the remap in iteration 13 (after that iteration's B)
        int eax = change switch
        {
            InFlightChange.None => 4 * BgIterations,
            InFlightChange.SelfModify => 4 * BgPatchAt + 8 * (BgIterations - BgPatchAt),
            _ => 4 * 13 + 8 * (BgIterations - 13),
        };
        Assert.Contains($" r0={eax:x} ", reference.Split('\n')[2]);
    }

    /// <summary>
    /// A region queued behind a compilation that does not end (the gate holds another machine's in flight) is
    /// compiled by the guest thread itself once its head ran another threshold's worth of times: a compiler thread
    /// that gets no core does not leave a hot loop interpreted. Results equal the interpreter's. Fails when the guest
    /// only waits (nothing runs compiled).
    /// </summary>
    [Fact]
    public void ARegionTheCompilerThreadHasNotStartedIsCompiledByTheGuestAfterAnotherThreshold()
    {
        var hold = new HoldFirst();
        var compiler = new BackgroundCompiler(hold);
        try
        {
            using var busy = new Vm(TwoPageLoop, ExecutionTier.Default, threshold: BgThreshold, background: compiler);
            busy.Cpu.R[8] = Data;
            busy.Run(Setup + PerIteration * 12);
            hold.WaitEntered(); // the compiler thread is held in that machine's compilation
            using var vm = new Vm(LoopCode, ExecutionTier.Default, threshold: BgThreshold, background: compiler);
            string background = vm.State(vm.Run(ulong.MaxValue));
            using var reference = new Vm(LoopCode, ExecutionTier.Interpreter);
            Assert.Equal(reference.State(reference.Run(ulong.MaxValue)), background);
            Assert.Equal(1, vm.Cpu.Code.RegionsTakenBack);
            Assert.True(vm.Cpu.Code.RegionsCompiled == 1 && vm.Cpu.Code.InterpretedInstructions < (long)vm.Cpu.InstructionCount,
                $"{vm.Cpu.Code.RegionsCompiled} regions, {vm.Cpu.Code.InterpretedInstructions} of {vm.Cpu.InstructionCount} interpreted");
            hold.ReleaseAndWaitFinished();
        }
        finally { compiler.Stop(); }
    }

    /// <summary>The instruction count of a <see cref="Vm.State"/> line.</summary>
    static ulong InstructionsOf(string states)
    {
        string last = states.Split('\n')[^1];
        int at = last.IndexOf(" n=", StringComparison.Ordinal) + 3;
        return ulong.Parse(last[at..last.IndexOf(' ', at)]);
    }
}
