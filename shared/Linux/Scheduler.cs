using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// Every guest thread on one host thread. Switches happen at points that are deterministic (a futex wait blocks, a
/// sched_yield, a thread exits) or at a preemption that the boundary places and, when recording, logs with its
/// exact position. The choice of the next thread is deterministic: the next runnable thread after the current
/// one in creation order.
/// The time-slice timer runs on a host thread: it reads only <see cref="_runnable"/>, a count the guest thread
/// keeps, never the thread list (which the guest changes while the timer runs).
/// </summary>
public sealed partial class Kernel
{
    /// <summary>The host event that asks for a preemption (posted by the time-slice timer).</summary>
    public const int PreemptEvent = 0;

    /// <summary>Most threads (of all processes) the machine holds at once; clone beyond it fails with EAGAIN,
    /// as RLIMIT_NPROC makes it on Linux.</summary>
    public int MaxThreads = 4096;

    int _nextTid;
    Timer? _sliceTimer;
    bool _switch;
    bool _yieldAsked;
    /// <summary>Threads in creation order (all processes): the scheduler's round-robin order.</summary>
    readonly List<GuestThread> _threads = new();
    /// <summary>Threads that are neither dead nor blocked; written by the guest thread, read by the slice timer.</summary>
    volatile int _runnable;
    /// <summary>Threads that are not dead.</summary>
    int _live;

    /// <summary>Length of a time slice while recording or running live with several threads.</summary>
    public TimeSpan TimeSlice = TimeSpan.FromMilliseconds(2);

    /// <summary>Threads of the machine that have not exited.</summary>
    public int LiveThreads => _live;

    void AddThread(GuestThread t)
    {
        t.Process.Threads.Add(t);
        _threads.Add(t);
        t.State = ThreadState.Runnable;
        _live++;
        _runnable++;
    }

    /// <summary>The only way a thread's state changes: keeps the counts the scheduler and the timer read.</summary>
    void SetState(GuestThread t, ThreadState s)
    {
        if (t.State == s) return;
        if (t.CanRun) _runnable--;
        if (s == ThreadState.Runnable && !t.Process.Stopped) _runnable++;
        if (s == ThreadState.Dead)
        {
            _live--;
            t.Parked = false;
            if (t.HostWait != 0) { t.HostWait = 0; Waiter.Cancel(t.Tid); }
            t.PendingOpen?.Abandon();
            t.PendingOpen = null;
        }
        t.State = s;
    }

    long CloneTask(GuestThread parent, ulong flags, ulong stack, ulong parentTid, ulong childTid, ulong tls)
    {
        var cpu = parent.Cpu;
        // without CLONE_THREAD: a new process; with CLONE_VM (vfork, posix_spawn) it gets a copy all the same
        if ((flags & Clone.THREAD) == 0) return Fork(parent, flags, stack, parentTid, childTid, tls);
        if ((flags & Clone.VM) == 0) return -Errno.EINVAL;
        if (_live >= MaxThreads) return -Errno.EAGAIN;
        int tid = ++_nextTid;
        var t = new GuestThread(cpu.CloneInto(cpu.Mem, cpu.Code, tid), parent.Process) { SigMask = parent.SigMask };
        t.Cpu.R[CpuT.RAX] = 0;
        if (stack != 0) t.Cpu.R[CpuT.RSP] = stack;
        if ((flags & Clone.SETTLS) != 0) t.Cpu.FsBase = tls;
        if ((flags & Clone.PARENT_SETTID) != 0) Mem.Write32(parentTid, (uint)tid);
        if ((flags & Clone.CHILD_SETTID) != 0) Mem.Write32(childTid, (uint)tid);
        if ((flags & Clone.CHILD_CLEARTID) != 0) t.ClearChildTid = childTid;
        AddThread(t);
        if (!Boundary.Replaying) StartSliceTimer();
        return tid;
    }

    void StartSliceTimer()
    {
        if (_sliceTimer != null) return;
        _sliceTimer = new Timer(_ => { if (!Exited && _runnable > 1) PostHostSignal(PreemptEvent); }, null, TimeSlice, TimeSlice);
    }

    /// <summary>exit (not exit_group): ends the calling thread; the last thread's exit ends the process.</summary>
    long ExitThread(GuestThread t, int status)
    {
        if (t.Process.Threads.Count(x => !x.Dead) <= 1)
        {
            ExitProcess(t, status);
            return 0;
        }
        SetState(t, ThreadState.Dead);
        if (t.ClearChildTid != 0)
        {
            try { Mem.Write32(t.ClearChildTid, 0); } catch (GuestFaultException) { }
            FutexWake(t.ClearChildTid, 1, Futex.BITSET_MATCH_ANY);
        }
        RequestSwitch(t);
        return 0;
    }

    /// <summary>Parks a thread in its syscall until the VM's state changes (<see cref="Restart"/>), its host wait
    /// ends (<see cref="WouldBlock"/>), or a signal arrives.</summary>
    void Park(GuestThread t, int nr, bool inVm, bool onHost)
    {
        t.Parked = true;
        t.ParkedNr = nr;
        t.WakesOnVmChange = inVm;
        if (onHost) t.HostWait = ++t.WaitSeq;
        SetState(t, ThreadState.Blocked);
        RequestSwitch(t);
    }

    /// <summary>Something in the VM changed (a pipe, a process ended): every thread parked on the VM's state runs
    /// its syscall again.</summary>
    internal void InVmChanged()
    {
        foreach (var t in _threads)
            if (t.Parked && t.WakesOnVmChange && t.State == ThreadState.Blocked) Unpark(t);
    }

    /// <summary>The parked thread becomes runnable (it runs its syscall again); its host wait, if any, is dropped.</summary>
    void Unpark(GuestThread t)
    {
        t.Parked = false;
        t.WakesOnVmChange = false;
        if (t.HostWait != 0)
        {
            t.HostWait = 0;
            Waiter.Cancel(t.Tid);
        }
        SetState(t, ThreadState.Runnable);
    }

    /// <summary>After a takeover: threads parked on the old primary's host waits have no registration on this host;
    /// they run their calls again, which wait here.</summary>
    public void RenewHostWaits()
    {
        foreach (var t in _threads)
            if (t.Parked && t.HostWait != 0 && !t.Dead) Unpark(t);
    }

    /// <summary>Stops or continues a process (job control): its runnable threads leave or rejoin the count the
    /// scheduler and the slice timer read.</summary>
    void SetStopped(Process p, bool stopped)
    {
        if (p.Stopped == stopped) return;
        foreach (var x in p.Threads) if (x.State == ThreadState.Runnable) _runnable += stopped ? -1 : 1;
        p.Stopped = stopped;
        if (stopped && Current.Process == p) RequestSwitch(Current);
    }

    void RequestSwitch(GuestThread t)
    {
        _switch = true;
        t.Cpu.Yield = true;
    }

    /// <summary>Makes `to` the running thread (a logged or replayed preemption).</summary>
    public void SwitchTo(CpuT from, int toTid)
    {
        _clockEpoch++;
        var to = _threads.FirstOrDefault(t => t.Tid == toTid && t.CanRun);
        if (to == null) return;
        MakeCurrent(to);
        from.Yield = true;
    }

    /// <summary>
    /// Switches the running thread. Instruction and branch counts are the machine's, not the thread's: they carry
    /// over to the thread that runs next, so every position in the log names one point of the whole execution.
    /// </summary>
    void MakeCurrent(GuestThread next)
    {
        var cur = Current;
        if (next == cur) return;
        Account();
        next.Cpu.InstructionCount = cur.Cpu.InstructionCount;
        next.Cpu.BranchCount = cur.Cpu.BranchCount;
        Current = next;
    }

    /// <summary>The thread a preemption of `from` would switch to (null when no other thread can run).</summary>
    public GuestThread? NextRunnable(CpuT from)
    {
        int i = _threads.FindIndex(t => t.Cpu == from);
        for (int k = 1; k <= _threads.Count; k++)
        {
            var t = _threads[(i + k) % _threads.Count];
            if (t.Cpu != from && t.CanRun) return t;
        }
        return null;
    }

    /// <summary>After a thread blocked, yielded or exited: pick the next one; the machine idles when none can run.</summary>
    void Schedule()
    {
        _switch = false;
        var cur = Current;
        var next = (cur.CanRun && _yieldAsked) ? NextRunnable(cur.Cpu) ?? cur : null;
        _yieldAsked = false;
        if (next == null) next = cur.CanRun ? cur : NextRunnable(cur.Cpu);
        // nobody can run but a thread waits for the network: wait for the interface, then parked threads look again
        if (next == null && WaitForNetwork()) next = cur.CanRun ? cur : NextRunnable(cur.Cpu);
        if (next == null)
        {
            // every thread waits: the machine sleeps until the host posts an event (a host wait ended, a timer
            // or a signal from outside), which the boundary places and logs here; or nothing can ever wake it
            if (Boundary.Idle(this, cur.Cpu)) return;
            Options.Diagnostics.WriteLine("revirt: every guest thread is blocked forever (deadlock); ending the guest");
            Terminate(Sig.ABRT);
            return;
        }
        MakeCurrent(next);
    }

    long SchedYield(GuestThread t)
    {
        if (_runnable > 1) { _yieldAsked = true; RequestSwitch(t); }
        return 0;
    }

    void StopSliceTimer()
    {
        _sliceTimer?.Dispose();
        _sliceTimer = null;
    }
}
