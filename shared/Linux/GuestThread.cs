using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Where a guest thread stands with the scheduler.</summary>
public enum ThreadState { Runnable, Blocked, Dead }

/// <summary>
/// One guest thread: its CPU (registers and the interpreter), its id, signal mask and alternate signal stack,
/// what it waits for, and the word the kernel clears when it exits. Its process owns the memory it runs in.
/// The state is changed only through the <see cref="Kernel"/>'s scheduler, which keeps its counts.
/// </summary>
public sealed class GuestThread
{
    /// <summary>Its CPU (a new one after execve).</summary>
    public CpuT Cpu { get; internal set; }
    public readonly Process Process;

    public GuestThread(CpuT cpu, Process process)
    {
        Cpu = cpu;
        Process = process;
    }

    public int Tid => Cpu.Tid;

    public ThreadState State { get; internal set; }
    public bool Blocked => State == ThreadState.Blocked;
    public bool Dead => State == ThreadState.Dead;
    /// <summary>The scheduler may run it: runnable, and its process is not stopped (job control).</summary>
    public bool CanRun => State == ThreadState.Runnable && !Process.Stopped;

    /// <summary>Blocked signals (bit n-1 for signal n); a new thread inherits its creator's.</summary>
    public ulong SigMask;

    /// <summary>rt_sigsuspend: the mask to restore once the signal that ended the suspension was taken (the
    /// handler's frame saves it, so rt_sigreturn restores it).</summary>
    public ulong? MaskAfterSuspend;

    /// <summary>CLONE_CHILD_CLEARTID / set_tid_address: zeroed and futex-woken when the thread exits.</summary>
    public ulong ClearChildTid;

    /// <summary>The futex word this thread waits on (valid while Blocked).</summary>
    public ulong FutexAddr;
    public uint FutexBitset;
    /// <summary>The wait has a timeout: the thread is parked in it with a host wait until its deadline
    /// (<see cref="Kernel"/>'s futex), and a FUTEX_WAKE unparks it.</summary>
    public bool FutexTimed;
    /// <summary>A FUTEX_WAKE chose this thread while it was parked in a timed wait: the call returns 0 when it
    /// runs again (whatever the futex word holds by then).</summary>
    public bool FutexWoken;

    /// <summary>Parked in a syscall (rip at the syscall instruction): when woken it runs the syscall again.</summary>
    public bool Parked;
    /// <summary>The syscall it is parked in (a signal ends it with EINTR or restarts it, by call kind).</summary>
    public int ParkedNr;
    /// <summary>Any change of the VM's state (a pipe, a process ended) wakes it.</summary>
    public bool WakesOnVmChange;
    /// <summary>Nonzero: the number of the host wait (<see cref="WaitSeq"/>) whose end wakes it.</summary>
    public uint HostWait;
    /// <summary>Counts the thread's host waits, the same way in a recording and its replays.</summary>
    public uint WaitSeq;
    /// <summary>The blocked call's deadline on the host's monotonic clock: set and read only inside host operations
    /// (a replay never has one), kept across the retries of one call and dropped when the call ends.</summary>
    public long? HostDeadline;
    /// <summary>A blocking open of a FIFO running on a host thread of its own (host-side, like <see cref="HostDeadline"/>).</summary>
    internal BlockingOpen? PendingOpen;
    /// <summary>The deadline of the timed wait the thread is parked in, as a point of CLOCK_REALTIME in ns, from the log
    /// (the same in a recording and its replays; dropped when the call ends): a replica that goes live during the
    /// wait continues it to this point instead of starting it over.</summary>
    public long? LoggedDeadline;
    /// <summary>Bytes a blocking pipe write moved before it parked for the rest (what it returns when a signal
    /// interrupts it).</summary>
    public long PartialDone;
    /// <summary>Set by a handler that returns <see cref="Kernel.WouldBlock"/> for a wait that an in-VM change ends
    /// too (a poll over pipes and host descriptors).</summary>
    internal bool AlsoWaitsInVm;

    /// <summary>sigaltstack: base, size and flags (SS_DISABLE until set).</summary>
    public ulong AltSp, AltSize;
    public int AltFlags = Sa.SS_DISABLE;
}
