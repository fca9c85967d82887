namespace ReVirt.Linux;

/// <summary>
/// Where a machine's host CPU time goes while its guest runs, split so that what recording or replay adds to a run can
/// be measured without the noise of a loaded host swamping it (bench/record_cost.py --work): the guest's execution
/// (the execution loop's own time, syscalls taken out) is the same code doing the same deterministic work in run,
/// record and replay (equal instruction counts, blocks compiled, host methods compiled), so the modes differ only in
/// the parts counted here apart from it — start-up, the guest thread's syscalls, stops and exit, other threads — each
/// small, so its noise is small in milliseconds. Contract: one account per machine, read by the guest thread only
/// (<see cref="Kernel.Run"/> begins and ends it; <see cref="Kernel.Syscall"/> and the run loop add to it); a machine
/// without one (the default) pays one null check per syscall and per execution-loop entry.
/// </summary>
public sealed unsafe class HostWorkAccount
{
    /// <summary>Process CPU time (every thread, ns) when the guest's first instruction was about to run, and when the
    /// machine's run ended (after the boundary's exit work).</summary>
    public long ProcessAtStartNs { get; private set; }
    public long ProcessAtEndNs { get; private set; }
    /// <summary>The guest thread's CPU time (ns) over the whole run, inside the execution loop (cpu.Run), and inside
    /// syscalls (which the execution loop calls out to).</summary>
    public long RunThreadNs { get; private set; }
    public long InExecutionLoopNs;
    public long InSyscallsNs;
    /// <summary>Syscalls taken and execution-loop entries (each stop, yield or fault returns from it).</summary>
    public long Syscalls;
    public long LoopEntries;
    /// <summary>Host methods the .NET JIT compiled, and bytes the host allocated, between the start and the end.</summary>
    public long JitMethods { get; private set; }
    public long AllocatedBytes { get; private set; }

    long _threadAtStart, _jitAtStart, _allocatedAtStart;

    /// <summary>The guest's execution proper: the execution loop's time without the syscalls it called out to.</summary>
    public long ExecutionNs => InExecutionLoopNs - InSyscallsNs;
    /// <summary>The guest thread's time in everything else: syscalls, stops (checkpoints, flushes), scheduling, exit.</summary>
    public long KernelNs => RunThreadNs - ExecutionNs;
    /// <summary>Other threads of the process during the run (log flushing, the runtime's tiering compiler, GC).</summary>
    public long OtherThreadsNs => ProcessAtEndNs - ProcessAtStartNs - RunThreadNs;

    public static long ThreadNow() => Now(Clocks.THREAD_CPUTIME_ID);
    public static long ProcessNow() => Now(Clocks.PROCESS_CPUTIME_ID);

    static long Now(int clock)
    {
        long* ts = stackalloc long[2];
        return HostSys.Call(Nr.clock_gettime, clock, (long)ts) < 0 ? 0 : ts[0] * 1_000_000_000 + ts[1];
    }

    internal void Begin()
    {
        _jitAtStart = System.Runtime.JitInfo.GetCompiledMethodCount();
        _allocatedAtStart = GC.GetTotalAllocatedBytes();
        ProcessAtStartNs = ProcessNow();
        _threadAtStart = ThreadNow();
    }

    internal void End()
    {
        RunThreadNs = ThreadNow() - _threadAtStart;
        ProcessAtEndNs = ProcessNow();
        JitMethods = System.Runtime.JitInfo.GetCompiledMethodCount() - _jitAtStart;
        AllocatedBytes = GC.GetTotalAllocatedBytes() - _allocatedAtStart;
    }

    /// <summary>One line for a command's --stats (bench/record_cost.py reads its fields by these names).</summary>
    /// <param name="k">the machine's kernel, for the deterministic counts of the guest's execution (its first
    /// process's code cache)</param>
    public string Describe(Kernel k)
    {
        static string Ms(long ns) => (ns / 1e6).ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        var code = k.Init.Code;
        return $"host work: process CPU at start_ms={Ms(ProcessAtStartNs)} end_ms={Ms(ProcessAtEndNs)}; guest thread execution_ms={Ms(ExecutionNs)} "
            + $"kernel_ms={Ms(KernelNs)}; other_threads_ms={Ms(OtherThreadsNs)}; instructions={k.MainThread.Cpu.InstructionCount} "
            + $"blocks_compiled={code.BlocksCompiled} regions={code.RegionsCompiled} interpreted={code.InterpretedInstructions} "
            + $"syscalls={Syscalls} loop_entries={LoopEntries} jit_methods={JitMethods} allocated_kb={AllocatedBytes >> 10}";
    }
}
