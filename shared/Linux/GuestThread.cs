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
    /// <summary>The wait has a timeout: it expires when no other thread can run (deterministically).</summary>
    public bool FutexTimed;

    /// <summary>Blocked in a syscall that waits for the VM's state (a pipe, a child): woken by any change, it runs
    /// the syscall again.</summary>
    public bool Parked;

    /// <summary>sigaltstack: base, size and flags (SS_DISABLE until set).</summary>
    public ulong AltSp, AltSize;
    public int AltFlags = Sa.SS_DISABLE;
}
