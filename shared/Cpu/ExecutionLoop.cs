using System.Runtime.CompilerServices;
using Iced.Intel;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>
/// Runs blocks of one guest thread and owns everything that must not depend on how a block is executed: the stop
/// point (<see cref="VirtualCpu.StopAt"/>, exact to the instruction), the instruction and branch counts, and the mapping of
/// a fault raised by instruction k of a block to the guest's state (k instructions retired, rip at instruction k, or
/// after it for a trap; the signal in <see cref="VirtualCpu.PendingFault"/>). A <see cref="BlockExecutor"/> only runs the
/// first n instructions of a block and reports, through <see cref="VirtualCpu.BlockIndex"/>, which one was executing.
/// A block the code cache compiled (<see cref="Block.Compiled"/>) runs compiled whenever all of it is to run;
/// the compiled code keeps the same contract, so which tier ran a block never shows in the results. Compiled code
/// may go on into further blocks of its region (<see cref="Block.Members"/>) when each fits before the stop and the
/// guest has not yielded; it counts every block it completes itself and keeps <see cref="VirtualCpu.RegionMember"/>
/// at the index of the one executing, so a fault maps to that block's instruction.
/// </summary>
public sealed class ExecutionLoop
{
    readonly VirtualCpu _cpu;
    public BlockExecutor Executor;

    public ExecutionLoop(VirtualCpu cpu, BlockExecutor executor) { _cpu = cpu; Executor = executor; }

    /// <summary>
    /// Runs until a handler sets <see cref="VirtualCpu.Yield"/> or the instruction count reaches <see cref="VirtualCpu.StopAt"/>.
    /// Guest faults are returned as signals to the caller (the kernel decides delivery).
    /// </summary>
    // Precompiled (ReadyToRun: optimised code, no tier-0 phase), not AggressiveOptimization: that attribute keeps a
    // method out of the precompiled image, and its JIT compilation (FullOpts, with the exception handling) was the
    // largest single JIT cost of every start. The loop calls nothing of Iced's (the executor and the compiled code
    // run the instructions), so precompiled code loses no cross-assembly inlining here; a run that returns to its
    // caller often (syscalls, stops) re-compiles it at tier 1 like any hot method.
    public RunResult Run()
    {
        VirtualCpu c = _cpu;
        CodeCache code = c.Code;
        BlockExecutor exec = Executor;
        TierProfile? profile = code.Profile;
        c.Yield = false;
        while (true)
        {
            // StopAt is read once: another thread may lower it to 0 at any moment (a host event asks for a stop at
            // the next block), and a second read between the check and the subtraction would make `left` wrap
            // around, so the block would run whole past a deterministic stop (a checkpoint due inside it)
            ulong stopAt = Volatile.Read(ref c.StopAt);
            if (c.InstructionCount >= stopAt) return RunResult.ReachedStop;
            Block b = code.Lookup(c.Rip);
            int n = b.Count;
            ulong left = stopAt - c.InstructionCount;
            if ((ulong)n > left) n = (int)left; // stop inside this block: the tail is not executed
            Block[]? region = null;
            try
            {
                if (n == b.Count)
                {
                    CompiledBlock? f = b.Compiled;
                    if (f == null)
                    {
                        // a block waiting for its background compilation runs interpreted until it is published
                        if (b.Pending != null) f = code.TryPublish(b);
                        else if (++b.Hits == b.CompileAt) f = code.Compile(b);
                    }
                    if (f != null)
                    {
                        // runs b and possibly further blocks of its region, counting each one it completes
                        region = b.Members;
                        c.RegionMember = b.RegionIndex;
                        f(c);
                        profile?.Exit(c.Rip);
                    }
                    else
                    {
                        exec.Execute(c, b, n);
                        code.InterpretedInstructions += n;
                        c.InstructionCount += (ulong)n;
                        c.BranchCount += b.EndsInBranch;
                        if (profile != null) profile.InterpretedBlocks++;
                    }
                }
                else
                {
                    exec.Execute(c, b, n); // a stop inside the block: only the interpreter runs a prefix
                    c.InstructionCount += (ulong)n;
                    code.InterpretedInstructions += n;
                }
            }
            catch (InvalidProgramException) when (region != null)
            {
                // the runtime refused the compiled code (before any of it ran): its blocks are interpreted again
                code.DropRegion(region!);
                code.CompileFailures++;
            }
            catch (Exception e) when (e is GuestFaultException or GuestSignalException or CodeInvalidatedException || VirtualCpu.IsDefect(e))
            {
                // in compiled code, the block of the region that was executing raised it (its predecessors are counted)
                Block at = region != null ? region[c.RegionMember] : b;
                if (!Retire(c, at, e)) return RunResult.Fault;
            }
            if (c.Yield) return RunResult.Yielded;
        }
    }

    /// <summary>Accounts for instruction k = <see cref="VirtualCpu.BlockIndex"/> of b that raised e; false when the guest
    /// has a fault to take (then rip is that of instruction k, or of the next one for a trap).</summary>
    static bool Retire(VirtualCpu c, Block b, Exception e)
    {
        int k = c.BlockIndex;
        ref Instruction ins = ref b.Insts[k];
        switch (e)
        {
            case CodeInvalidatedException:
                // a store rewrote code of the running block: the store retired; continue at the next instruction
                c.InstructionCount += (ulong)k + 1;
                return true;
            case GuestFaultException f:
                c.InstructionCount += (ulong)k;
                c.Rip = ins.IP;
                c.PendingFault = f.BeyondEndOfFile
                    ? new GuestSignalException(Signals.SIGBUS, f.Message, Signals.BUS_ADRERR, f.Address)
                    : new GuestSignalException(Signals.SIGSEGV, f.Message, f.Mapped ? Signals.SEGV_ACCERR : Signals.SEGV_MAPERR, f.Address);
                return false;
            case GuestSignalException s:
                c.InstructionCount += (ulong)k + (s.Trap ? 1UL : 0);
                if (!s.Trap) c.Rip = ins.IP;
                c.PendingFault = s;
                return false;
            default:
                // a defect in the VM must not take the host process down: the guest gets SIGILL with the details
                c.InstructionCount += (ulong)k;
                c.Rip = ins.IP;
                c.PendingFault = new GuestSignalException(Signals.SIGILL,
                    $"internal error executing '{ins}' at 0x{ins.IP:x}: {e.GetType().Name}: {e.Message}", Signals.SI_KERNEL, ins.IP);
                return false;
        }
    }
}

/// <summary>Executes the first n instructions of a block for the <see cref="ExecutionLoop"/>. Before instruction k
/// runs, <see cref="VirtualCpu.BlockIndex"/> is k and rip is its next-ip; an exception from it leaves every earlier
/// instruction retired and nothing of later ones done.</summary>
public abstract class BlockExecutor
{
    public abstract void Execute(VirtualCpu c, Block b, int n);
}

/// <summary>The interpreter: one indirect call per instruction to the handler the code cache resolved.</summary>
public sealed unsafe class Interpreter : BlockExecutor
{
    public static readonly Interpreter Instance = new();

    public override void Execute(VirtualCpu c, Block b, int n)
    {
        Instruction[] insts = b.Insts;
        delegate*<VirtualCpu, ref Instruction, void>[] hs = b.Handlers;
        for (int k = 0; k < n; k++)
        {
            c.BlockIndex = k;
            ref Instruction ins = ref insts[k];
            c.Rip = ins.NextIP;
            hs[k](c, ref ins);
        }
    }
}

/// <summary>Signal numbers and si_code values the CPU raises (Linux x86-64 values).</summary>
public static class Signals
{
    public const int SIGILL = 4, SIGTRAP = 5, SIGBUS = 7, SIGFPE = 8, SIGSEGV = 11;
    public const int SEGV_MAPERR = 1, SEGV_ACCERR = 2;
    public const int BUS_ADRERR = 2;
    public const int ILL_ILLOPN = 2;
    public const int TRAP_BRKPT = 1;
    /// <summary>si_code of a signal the kernel raises for a CPU exception without a more precise cause.</summary>
    public const int SI_KERNEL = 0x80;
}
