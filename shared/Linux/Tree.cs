using System.Buffers.Binary;
using ReVirt.Cpu;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// The process tree: fork (a child sharing the address space's pages copy-on-write), exit and zombies, wait4, reparenting
/// to the first process, and the end of the machine when the first process ends. Everything here is in-VM state,
/// so none of it is logged: a replay rebuilds the same tree from the same syscalls.
/// </summary>
public sealed partial class Kernel
{
    long Fork(GuestThread parent, ulong flags, ulong stack, ulong parentTid, ulong childTid, ulong tls)
    {
        if (_live >= MaxThreads) return -Errno.EAGAIN;
        var pp = parent.Process;
        int pid = ++_nextTid;
        var mem = pp.Mem.Fork();
        var code = NewCodeCache(mem, pp.Code.Profile);
        var child = new Process(mem, code, pp.Fds.Fork(), pp.Cwd)
        {
            Umask = pp.Umask, BrkStart = pp.BrkStart, BrkCur = pp.BrkCur,
            Pid = pid, Ppid = pp.Pid, Pgid = pp.Pgid, Sid = pp.Sid, Parent = pp,
            Program = pp.Program, ProgramImage = pp.ProgramImage, ProgramGuestPath = pp.ProgramGuestPath, Name = pp.Name,
            Start = pp.Start, Auxv = pp.Auxv, Environment = pp.Environment,
            ExitSignal = (int)(flags & Clone.CSIGNAL),
        };
        for (int s = 1; s <= Sig.Max; s++)
        {
            var a = pp.Actions[s];
            child.Actions[s].Handler = a.Handler; child.Actions[s].Flags = a.Flags;
            child.Actions[s].Restorer = a.Restorer; child.Actions[s].Mask = a.Mask;
        }
        pp.Children.Add(child);
        Processes.Add(child);
        var t = new GuestThread(parent.Cpu.CloneInto(mem, code, pid), child)
        {
            SigMask = parent.SigMask, AltSp = parent.AltSp, AltSize = parent.AltSize, AltFlags = parent.AltFlags,
        };
        t.Cpu.Host = this;
        t.Cpu.R[CpuT.RAX] = 0;
        if (stack != 0) t.Cpu.R[CpuT.RSP] = stack;
        if ((flags & Clone.SETTLS) != 0) t.Cpu.FsBase = tls;
        if ((flags & Clone.PARENT_SETTID) != 0) pp.Mem.Write32(parentTid, (uint)pid);
        if ((flags & Clone.CHILD_SETTID) != 0) mem.Write32(childTid, (uint)pid);
        if ((flags & Clone.CHILD_CLEARTID) != 0) t.ClearChildTid = childTid;
        AddThread(t);
        if (!Boundary.Replaying) StartSliceTimer();
        return pid;
    }

    /// <summary>A process ends (exit_group, the exit of its last thread, or a signal): its threads die, its
    /// descriptors close, its children go to the first process, and its parent gets its exit signal. The first
    /// process's end is the machine's.</summary>
    void EndProcess(Process p, int waitStatus)
    {
        if (p.Exited) return;
        if (Current.Process == p) Account();
        p.MaxRssPages = Math.Max(p.MaxRssPages, p.Mem.PageCount);
        p.Exited = true;
        p.WaitStatus = waitStatus;
        var closer = p.Threads.FirstOrDefault(x => !x.Dead) ?? p.Threads[0];
        foreach (var x in p.Threads) SetState(x, ThreadState.Dead);
        foreach (int fd in p.Fds.Numbers())
            if (p.Fds.Remove(fd, out var f)) Release(closer, f);
        if (p == Init)
        {
            Exited = true;
            if ((waitStatus & 0x7F) != 0) { TerminatingSignal = waitStatus & 0x7F; ExitStatus = 128 + (waitStatus & 0x7F); }
            else ExitStatus = (waitStatus >> 8) & 0xFF;
        }
        else
        {
            foreach (var c in p.Children)
            {
                if (c.DeathSignal != 0 && !c.Exited) SignalProcess(c, c.DeathSignal); // PR_SET_PDEATHSIG
                c.Parent = Init; c.Ppid = Init.Pid;
                Init.Children.Add(c);
            }
            p.Children.Clear();
            Processes.Remove(p);
            p.Mem.Dispose();
            var parent = p.Parent ?? Init;
            if (p.ExitSignal != 0)
            {
                int sig = waitStatus & 0x7F;
                if (p.ExitSignal == Sig.CHLD) NoteChildEvent(parent, new ChildEvent(sig != 0 ? Wait.CLD_KILLED : Wait.CLD_EXITED, p.Pid, sig != 0 ? sig : (waitStatus >> 8) & 0xFF));
                SignalProcess(parent, p.ExitSignal);
            }
            InVmChanged();
        }
        Current.Cpu.Yield = true;
        _switch = true;
    }

    /// <summary>Makes a signal pending for a process and wakes its parked threads so that one takes it.</summary>
    void SignalProcess(Process p, int sig)
    {
        if (p.Exited) return;
        JobControlAtGeneration(p, sig);
        var a = p.Actions[sig];
        if (a.Handler == Sa.SIG_IGN || (a.Handler == Sa.SIG_DFL && Sig.DefaultIgnores(sig))) return;
        p.Pending |= Sig.Bit(sig);
        // the running thread's own process (a child's SIGCHLD raised by the parent's kill): taken when the call returns
        if (Current.Process == p) Current.Cpu.Yield = true;
        WakeParked(p);
    }

    /// <summary>
    /// What a signal does the moment it is sent, as on Linux: SIGCONT continues a stopped process (whatever its
    /// disposition, blocked or not) and discards pending stop signals; a stop signal discards a pending SIGCONT;
    /// SIGKILL lets a stopped process run to take it.
    /// </summary>
    void JobControlAtGeneration(Process p, int sig)
    {
        if (sig == Sig.CONT)
        {
            p.Pending &= ~Sig.StopSignals;
            if (!p.Stopped) return;
            SetStopped(p, false);
            p.StopReport = 0;
            p.ContinueReport = true;
            NotifyParent(p);
        }
        else if (Sig.DefaultStops(sig)) p.Pending &= ~Sig.Bit(Sig.CONT);
        else if (sig == Sig.KILL) SetStopped(p, false);
    }

    /// <summary>A stop signal's default action: the process stops until a SIGCONT; its parent hears of it (SIGCHLD
    /// unless it set SA_NOCLDSTOP, and wait with WUNTRACED/WSTOPPED).</summary>
    void StopProcess(Process p, int sig)
    {
        SetStopped(p, true);
        p.StopReport = sig;
        p.ContinueReport = false;
        NotifyParent(p);
    }

    /// <summary>A child stopped or continued: its parent gets SIGCHLD unless it asked not to (SA_NOCLDSTOP), and a
    /// wait parked for it looks again. The first process's parent is outside the VM.</summary>
    void NotifyParent(Process p)
    {
        if (p == Init) return;
        var parent = p.Parent ?? Init;
        if ((parent.Actions[Sig.CHLD].Flags & Sa.NOCLDSTOP) == 0)
        {
            NoteChildEvent(parent, p.Stopped ? new ChildEvent(Wait.CLD_STOPPED, p.Pid, p.StopReport) : new ChildEvent(Wait.CLD_CONTINUED, p.Pid, Sig.CONT));
            SignalProcess(parent, Sig.CHLD);
        }
        InVmChanged();
    }

    /// <summary>The siginfo of a SIGCHLD about to be sent: the first one counts while one is pending.</summary>
    static void NoteChildEvent(Process parent, ChildEvent e)
    {
        if ((parent.Pending & Sig.Bit(Sig.CHLD)) == 0 || parent.ChildSignal == null) parent.ChildSignal = e;
    }

    /// <summary>Ends a process by a signal's default action (the machine, when it is the first process).</summary>
    void KillProcess(Process p, int sig)
    {
        if (p == Init) { Terminate(sig); return; }
        EndProcess(p, sig & 0x7F);
    }

    /// <summary>Which children a wait names: pid &gt; 0 that child, -1 any, 0 the caller's group, &lt; -1 group -pid.</summary>
    static Func<Process, bool> WaitTarget(Process p, int pid) => pid switch
    {
        > 0 => c => c.Pid == pid,
        -1 => c => true,
        0 => c => c.Pgid == p.Pgid,
        _ => c => c.Pgid == -pid,
    };

    /// <summary>What a wait found: a child that ended, stopped or was continued since its parent last heard.</summary>
    enum WaitKind { Exited, Stopped, Continued }

    /// <summary>A child that matches and has something to report (it ended: WEXITED; it stopped: WUNTRACED/WSTOPPED;
    /// it was continued: WCONTINUED), or an answer: -ECHILD (no such child), 0 (WNOHANG and nothing to report yet)
    /// or <see cref="Restart"/> (park until a process ends, stops or continues).</summary>
    long FindWaitable(Process p, Func<Process, bool> matches, int options, out Process? child, out WaitKind kind)
    {
        child = null;
        kind = WaitKind.Exited;
        var candidates = p.Children.Where(matches).ToList();
        if (candidates.Count == 0) return -Errno.ECHILD;
        foreach (var c in candidates)
        {
            if ((options & Wait.EXITED) != 0 && c.Exited) { child = c; kind = WaitKind.Exited; break; }
            if ((options & Wait.STOPPED) != 0 && !c.Exited && c.StopReport != 0) { child = c; kind = WaitKind.Stopped; break; }
            if ((options & Wait.CONTINUED) != 0 && !c.Exited && c.ContinueReport) { child = c; kind = WaitKind.Continued; break; }
        }
        if (child != null) return child.Pid;
        return (options & Wait.NOHANG) != 0 ? 0 : Restart;
    }

    /// <summary>The wait status of what a wait found (wait4's *wstatus); the report is taken unless WNOWAIT.</summary>
    static int TakeReport(Process c, WaitKind kind, bool keep)
    {
        switch (kind)
        {
            case WaitKind.Stopped:
                int sig = c.StopReport;
                if (!keep) c.StopReport = 0;
                return (sig << 8) | Wait.StoppedStatus;
            case WaitKind.Continued:
                if (!keep) c.ContinueReport = false;
                return Wait.ContinuedStatus;
            default:
                return c.WaitStatus;
        }
    }

    /// <summary>A zombie is reaped: its resource use becomes its parent's children's.</summary>
    static void Reap(Process parent, Process z)
    {
        parent.Children.Remove(z);
        parent.ChildInstructions += z.Instructions + z.ChildInstructions;
        parent.ChildMaxRssPages = Math.Max(parent.ChildMaxRssPages, Math.Max(z.MaxRssPages, z.ChildMaxRssPages));
    }

    long Wait4(GuestThread t, int pid, ulong statusAddr, int options, ulong rusage)
    {
        if ((options & ~(Wait.NOHANG | Wait.UNTRACED | Wait.CONTINUED | Wait.NOTHREAD | Wait.ALL | Wait.CLONE)) != 0) return -Errno.EINVAL;
        var p = t.Process;
        long r = FindWaitable(p, WaitTarget(p, pid), options | Wait.EXITED, out var z, out var kind);
        if (z == null) return r;
        if (statusAddr != 0) p.Mem.Write32(statusAddr, (uint)TakeReport(z, kind, keep: false));
        if (rusage != 0) p.Mem.WriteBytes(rusage, Rusage(z.Instructions + z.ChildInstructions, Math.Max(z.MaxRssPages, z.ChildMaxRssPages)));
        if (kind == WaitKind.Exited) Reap(p, z);
        return z.Pid;
    }

    /// <summary>waitid: P_ALL, P_PID, P_PGID (0: the caller's group); WEXITED, WSTOPPED, WCONTINUED, WNOHANG, WNOWAIT (the child stays a zombie); the siginfo as Linux fills it (all zero when
    /// WNOHANG finds nothing).</summary>
    long Waitid(GuestThread t, int idType, int id, ulong infop, int options, ulong rusage)
    {
        if ((options & ~(Wait.NOHANG | Wait.STOPPED | Wait.EXITED | Wait.CONTINUED | Wait.NOWAIT | Wait.NOTHREAD | Wait.ALL | Wait.CLONE)) != 0
            || (options & (Wait.EXITED | Wait.STOPPED | Wait.CONTINUED)) == 0) return -Errno.EINVAL;
        var p = t.Process;
        Func<Process, bool> matches;
        switch (idType)
        {
            case Wait.P_ALL: matches = c => true; break;
            case Wait.P_PID: if (id <= 0) return -Errno.EINVAL; matches = c => c.Pid == id; break;
            case Wait.P_PGID: if (id < 0) return -Errno.EINVAL; int g = id == 0 ? p.Pgid : id; matches = c => c.Pgid == g; break;
            default: return -Errno.EINVAL;
        }
        if (infop != 0) CheckWritable(infop, SiginfoSize);
        if (rusage != 0) CheckWritable(rusage, RusageSize);
        long r = FindWaitable(p, matches, options, out var z, out var kind);
        if (r == Restart || r < 0) return r;
        var si = new byte[SiginfoSize];
        if (z != null)
        {
            bool keep = (options & Wait.NOWAIT) != 0;
            int status = TakeReport(z, kind, keep);
            int sig = status & 0x7F;
            var (code, value) = kind switch
            {
                WaitKind.Stopped => (Wait.CLD_STOPPED, status >> 8),
                WaitKind.Continued => (Wait.CLD_CONTINUED, Sig.CONT),
                _ => sig != 0 ? (Wait.CLD_KILLED, sig) : (Wait.CLD_EXITED, (status >> 8) & 0xFF),
            };
            BinaryPrimitives.WriteInt32LittleEndian(si, Sig.CHLD);
            BinaryPrimitives.WriteInt32LittleEndian(si.AsSpan(8), code);
            BinaryPrimitives.WriteInt32LittleEndian(si.AsSpan(16), z.Pid);
            BinaryPrimitives.WriteUInt32LittleEndian(si.AsSpan(20), Uid);
            BinaryPrimitives.WriteInt32LittleEndian(si.AsSpan(24), value);
            if (rusage != 0) p.Mem.WriteBytes(rusage, Rusage(z.Instructions + z.ChildInstructions, Math.Max(z.MaxRssPages, z.ChildMaxRssPages)));
            if (kind == WaitKind.Exited && !keep) Reap(p, z);
        }
        if (infop != 0) p.Mem.WriteBytes(infop, si);
        return 0;
    }

    const int RusageSize = 144;

    /// <summary>Guest CPU time: retired instructions at a nominal rate, so that rusage of guest processes is a
    /// function of the execution (deterministic, never logged).</summary>
    public const long NominalInstructionsPerSecond = 1_000_000_000;

    /// <summary>A struct rusage with user time from instructions and the largest resident set in KiB.</summary>
    static byte[] Rusage(ulong instructions, long maxRssPages)
    {
        var b = new byte[RusageSize];
        ulong us = instructions / (NominalInstructionsPerSecond / 1_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(b, (long)(us / 1_000_000));
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), (long)(us % 1_000_000));
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(32), maxRssPages * 4);
        return b;
    }

    /// <summary>Charges the instructions retired since the last switch to the running thread's process.</summary>
    void Account()
    {
        var cur = Current;
        ulong now = cur.Cpu.InstructionCount;
        if (now > _accountedAt) cur.Process.Instructions += now - _accountedAt;
        _accountedAt = now;
        cur.Process.MaxRssPages = Math.Max(cur.Process.MaxRssPages, cur.Process.Mem.PageCount);
    }

    ulong _accountedAt;

    /// <summary>The process a pid names (0: the caller's own), or null.</summary>
    Process? FindProcess(GuestThread t, int pid)
        => pid == 0 ? t.Process : Processes.FirstOrDefault(p => p.Pid == pid && !p.Exited);

    long SetPgid(GuestThread t, int pid, int pgid)
    {
        if (pgid < 0) return -Errno.EINVAL;
        var p = FindProcess(t, pid);
        if (p == null || (p != t.Process && p.Parent != t.Process)) return -Errno.ESRCH;
        if (p.Pid == p.Sid) return -Errno.EPERM; // a session leader cannot move
        if (pgid == 0) pgid = p.Pid;
        if (pgid != p.Pid && !Processes.Any(q => q.Pgid == pgid && q.Sid == p.Sid && !q.Exited)) return -Errno.EPERM;
        p.Pgid = pgid;
        return 0;
    }

    long SetSid(GuestThread t)
    {
        var p = t.Process;
        if (Processes.Any(q => q.Pgid == p.Pid && !q.Exited)) return -Errno.EPERM; // already a group leader
        p.Sid = p.Pgid = p.Pid;
        return p.Sid;
    }
}
