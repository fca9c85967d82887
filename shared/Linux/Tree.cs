using ReVirt.Cpu;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Linux;

/// <summary>
/// The process tree: fork (a child with an eager copy of the address space), exit and zombies, wait4, reparenting
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
        var code = new CodeCache(mem, pp.Code.Tier);
        var child = new Process(mem, code, pp.Fds.Fork(), pp.Cwd)
        {
            Umask = pp.Umask, BrkStart = pp.BrkStart, BrkCur = pp.BrkCur,
            Pid = pid, Ppid = pp.Pid, Pgid = pp.Pgid, Sid = pp.Sid, Parent = pp,
            Program = pp.Program, ProgramImage = pp.ProgramImage, ProgramGuestPath = pp.ProgramGuestPath, Name = pp.Name,
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
        p.Exited = true;
        p.WaitStatus = waitStatus;
        var closer = p.Threads.FirstOrDefault(x => !x.Dead) ?? p.Threads[0];
        foreach (var x in p.Threads) SetState(x, ThreadState.Dead);
        foreach (var (fd, _) in p.Fds.Entries.ToList())
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
                c.Parent = Init; c.Ppid = Init.Pid;
                Init.Children.Add(c);
            }
            p.Children.Clear();
            Processes.Remove(p);
            p.Mem.Dispose();
            var parent = p.Parent ?? Init;
            if (p.ExitSignal != 0) SignalProcess(parent, p.ExitSignal);
            InVmChanged();
        }
        Current.Cpu.Yield = true;
        _switch = true;
    }

    /// <summary>Makes a signal pending for a process and wakes its parked threads so that one takes it.</summary>
    void SignalProcess(Process p, int sig)
    {
        if (p.Exited) return;
        var a = p.Actions[sig];
        if (a.Handler == Sa.SIG_IGN || (a.Handler == Sa.SIG_DFL && Sig.DefaultIgnores(sig))) return;
        p.Pending |= Sig.Bit(sig);
        foreach (var x in p.Threads) if (x.Blocked && x.Parked) Unpark(x);
    }

    /// <summary>Ends a process by a signal's default action (the machine, when it is the first process).</summary>
    void KillProcess(Process p, int sig)
    {
        if (p == Init) { Terminate(sig); return; }
        EndProcess(p, sig & 0x7F);
    }

    const int WNOHANG = 1, WUNTRACED = 2;

    long Wait4(GuestThread t, int pid, ulong statusAddr, int options, ulong rusage)
    {
        var p = t.Process;
        bool Matches(Process c) => pid switch
        {
            > 0 => c.Pid == pid,
            -1 => true,
            0 => c.Pgid == p.Pgid,
            _ => c.Pgid == -pid,
        };
        var candidates = p.Children.Where(Matches).ToList();
        if (candidates.Count == 0) return -Errno.ECHILD;
        var z = candidates.FirstOrDefault(c => c.Exited);
        if (z == null) return (options & WNOHANG) != 0 ? 0 : Restart;
        if (statusAddr != 0) p.Mem.Write32(statusAddr, (uint)z.WaitStatus);
        if (rusage != 0) p.Mem.WriteBytes(rusage, new byte[144]);
        p.Children.Remove(z);
        return z.Pid;
    }

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
