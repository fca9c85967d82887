using ReVirt.Memory;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Abi;

/// <summary>
/// Guest threads on one host thread. Switches happen at points that are deterministic (a futex wait blocks, a
/// sched_yield, a thread exits) or at a preemption that the boundary places and, when recording, logs with its
/// exact position. The choice of the next thread is deterministic: the next runnable thread after the current
/// one in creation order.
/// </summary>
public sealed partial class LinuxKernel
{
    const ulong CLONE_VM = 0x100, CLONE_THREAD = 0x10000, CLONE_SETTLS = 0x80000, CLONE_PARENT_SETTID = 0x100000,
        CLONE_CHILD_CLEARTID = 0x200000, CLONE_CHILD_SETTID = 0x1000000;

    /// <summary>The host event that asks for a preemption (posted by the time-slice timer).</summary>
    public const int PreemptEvent = 0;
    int _nextTid;
    Timer? _sliceTimer;
    bool _switch;

    /// <summary>Length of a time slice while recording or running live with several threads.</summary>
    public TimeSpan TimeSlice = TimeSpan.FromMilliseconds(2);

    long Clone(CpuT cpu, ulong flags, ulong stack, ulong parentTid, ulong childTid, ulong tls)
    {
        if ((flags & (CLONE_VM | CLONE_THREAD)) != (CLONE_VM | CLONE_THREAD))
        {
            if (_warnedSyscalls.Add(-Nr.clone))
                Options.Diagnostics.WriteLine($"revirt: warning: fork-style clone (flags 0x{flags:x}) is not supported: returning -ENOSYS");
            return -Errno.ENOSYS;
        }
        if (_nextTid == 0) _nextTid = Pid;
        int tid = ++_nextTid;
        var t = cpu.CloneThread(tid);
        t.R[0] = 0;
        if (stack != 0) t.R[CpuT.RSP] = stack;
        if ((flags & CLONE_SETTLS) != 0) t.FsBase = tls;
        if ((flags & CLONE_PARENT_SETTID) != 0) Mem.Write32(parentTid, (uint)tid);
        if ((flags & CLONE_CHILD_SETTID) != 0) Mem.Write32(childTid, (uint)tid);
        if ((flags & CLONE_CHILD_CLEARTID) != 0) t.ClearChildTid = childTid;
        Threads.Add(t);
        if (!Boundary.Replaying) StartSliceTimer();
        return tid;
    }

    void StartSliceTimer()
    {
        if (_sliceTimer != null) return;
        _sliceTimer = new Timer(_ => { if (!Exited && Runnable() > 1) PostHostSignal(PreemptEvent); }, null, TimeSlice, TimeSlice);
    }

    int Runnable()
    {
        int n = 0;
        foreach (var t in Threads) if (!t.Dead && !t.Blocked) n++;
        return n;
    }

    /// <summary>exit (not exit_group): ends the calling thread; the last thread's exit ends the process.</summary>
    long ExitThread(CpuT cpu, int status)
    {
        if (Threads.Count(t => !t.Dead) <= 1)
        {
            ExitStatus = status & 0xFF;
            Exited = true;
            cpu.Yield = true;
            return 0;
        }
        cpu.Dead = true;
        if (cpu.ClearChildTid != 0)
        {
            try { Mem.Write32(cpu.ClearChildTid, 0); } catch (GuestFaultException) { }
            FutexWake(cpu.ClearChildTid, 1, uint.MaxValue);
        }
        RequestSwitch(cpu);
        return 0;
    }

    void RequestSwitch(CpuT cpu)
    {
        _switch = true;
        cpu.Yield = true;
    }

    /// <summary>Makes `to` the running thread (a logged or replayed preemption).</summary>
    public void SwitchTo(CpuT from, int toTid)
    {
        var to = Threads.FirstOrDefault(t => t.Tid == toTid && !t.Dead && !t.Blocked);
        if (to == null) return;
        MakeCurrent(to);
        from.Yield = true;
    }

    /// <summary>
    /// Switches the running thread. Instruction and branch counts are the machine's, not the thread's: they carry
    /// over to the thread that runs next, so every position in the log names one point of the whole execution.
    /// </summary>
    void MakeCurrent(CpuT next)
    {
        var cur = Current;
        if (next == cur) return;
        next.InstructionCount = cur.InstructionCount;
        next.BranchCount = cur.BranchCount;
        Current = next;
    }

    /// <summary>The thread a preemption of `from` would switch to (null when no other thread can run).</summary>
    public CpuT? NextRunnable(CpuT from)
    {
        int i = Threads.IndexOf(from);
        for (int k = 1; k <= Threads.Count; k++)
        {
            var t = Threads[(i + k) % Threads.Count];
            if (t != from && !t.Dead && !t.Blocked) return t;
        }
        return null;
    }

    /// <summary>After a thread blocked, yielded or exited: pick the next one; expire a timed wait if none can run.</summary>
    void Schedule()
    {
        _switch = false;
        var cur = Current;
        var next = (!cur.Dead && !cur.Blocked && _yieldAsked) ? NextRunnable(cur) ?? cur : null;
        _yieldAsked = false;
        if (next == null) next = !cur.Dead && !cur.Blocked ? cur : NextRunnable(cur);
        if (next == null)
        {
            // nobody can run: the earliest (in thread order) timed wait times out; otherwise it is a deadlock
            var timed = Threads.FirstOrDefault(t => !t.Dead && t.Blocked && t.FutexTimed);
            if (timed == null)
            {
                Options.Diagnostics.WriteLine("revirt: every guest thread is blocked forever (deadlock); ending the guest");
                Terminate(6);
                return;
            }
            timed.Blocked = false;
            timed.R[0] = unchecked((ulong)-Errno.ETIMEDOUT);
            next = timed;
        }
        MakeCurrent(next);
    }

    bool _yieldAsked;

    long SchedYield(CpuT cpu)
    {
        if (Runnable() > 1) { _yieldAsked = true; RequestSwitch(cpu); }
        return 0;
    }

    // ---------------------------------------------------------------- futex

    long Futex(CpuT cpu, ulong uaddr, int op, uint val, ulong timeout, ulong uaddr2, uint val3)
    {
        int cmd = op & 0x7F; // without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
        switch (cmd)
        {
            case 0: // FUTEX_WAIT
            case 9: // FUTEX_WAIT_BITSET
                {
                    uint cur = Mem.Read32(uaddr);
                    if (cur != val) return -Errno.EAGAIN;
                    cpu.Blocked = true;
                    cpu.FutexAddr = uaddr;
                    cpu.FutexBitset = cmd == 9 ? val3 : uint.MaxValue;
                    cpu.FutexTimed = timeout != 0;
                    RequestSwitch(cpu);
                    return 0; // the value the waiter sees when woken (a timeout writes -ETIMEDOUT instead)
                }
            case 1: // FUTEX_WAKE
            case 10: // FUTEX_WAKE_BITSET
                return FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), cmd == 10 ? val3 : uint.MaxValue);
            case 3: // FUTEX_REQUEUE
            case 4: // FUTEX_CMP_REQUEUE
                {
                    if (cmd == 4 && Mem.Read32(uaddr) != val3) return -Errno.EAGAIN;
                    int woken = FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), uint.MaxValue);
                    int moved = 0;
                    foreach (var t in Threads)
                        if (t.Blocked && !t.Dead && t.FutexAddr == uaddr && moved < (int)Math.Min(timeout, int.MaxValue)) { t.FutexAddr = uaddr2; moved++; }
                    return woken + moved;
                }
            case 5: // FUTEX_WAKE_OP
                {
                    uint oparg = (val3 >> 12) & 0xFFF, cmparg = val3 & 0xFFF;
                    int opn = (int)((val3 >> 28) & 0xF), cmpn = (int)((val3 >> 24) & 0xF);
                    if ((opn & 8) != 0) oparg = 1u << (int)(oparg & 31);
                    uint old = Mem.Read32(uaddr2);
                    uint nv = (opn & 7) switch { 0 => oparg, 1 => old + oparg, 2 => old | oparg, 3 => old & ~oparg, _ => old ^ oparg };
                    Mem.Write32(uaddr2, nv);
                    int r = FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), uint.MaxValue);
                    bool cond = cmpn switch { 0 => old == cmparg, 1 => old != cmparg, 2 => old < cmparg, 3 => old <= cmparg, 4 => old > cmparg, _ => old >= cmparg };
                    if (cond) r += FutexWake(uaddr2, (int)Math.Min(timeout, int.MaxValue), uint.MaxValue);
                    return r;
                }
            default:
                return -Errno.ENOSYS;
        }
    }

    int FutexWake(ulong uaddr, int n, uint bitset)
    {
        int woken = 0;
        foreach (var t in Threads)
        {
            if (woken >= n) break;
            if (t.Blocked && !t.Dead && t.FutexAddr == uaddr && (t.FutexBitset & bitset) != 0)
            {
                t.Blocked = false;
                woken++;
            }
        }
        return woken;
    }

    void StopSliceTimer()
    {
        _sliceTimer?.Dispose();
        _sliceTimer = null;
    }
}
