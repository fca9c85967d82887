
namespace ReVirt.Linux;

/// <summary>Signal dispositions, masks, the alternate stack, kill (delivery is in Signals.cs).</summary>
public sealed partial class Kernel
{
    void RegisterSignalSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Emulated);
        r.Add(Nr.rt_sigaction, (t, a) => RtSigaction(t, (int)a.A1, a.A2, a.A3, a.A4));
        r.Add(Nr.rt_sigprocmask, (t, a) => RtSigprocmask(t, (int)a.A1, a.A2, a.A3, a.A4));
        r.Add(Nr.rt_sigreturn, (t, a) => RtSigreturn(t));
        r.Add(Nr.sigaltstack, (t, a) => Sigaltstack(t, a.A1, a.A2));
        r.Add(Nr.rt_sigsuspend, (t, a) => RtSigsuspend(t, a.A1, a.A2));
        // the pending signals the thread blocks (those it does not are delivered before it runs on)
        r.Add(Nr.rt_sigpending, (t, a) =>
        {
            if (a.A2 != SigsetSize) return -Errno.EINVAL;
            t.Process.Mem.Write64(a.A1, t.Process.Pending & t.SigMask);
            return 0;
        });
        r.Add(new[] { Nr.kill, Nr.tgkill }, (t, a) => Kill(t, a.Nr, a.A1, a.A2, a.A3));
        r.Add(Nr.tkill, (t, a) => Kill(t, Nr.kill, a.A1, a.A2, 0));
    }

    /// <summary>
    /// ppoll, pselect6 and epoll_pwait take a signal mask that replaces the thread's for the duration of the call,
    /// as Linux does it: a signal the call's mask lets through ends a wait with EINTR (or is taken right after a
    /// call that found descriptors ready), its handler runs under the call's mask and rt_sigreturn restores the
    /// thread's own (the frame saves it, as for rt_sigsuspend); a call that returns without a handler running
    /// restores the thread's own mask at once, and what that mask blocks stays pending.
    /// </summary>
    void RegisterCallMasks(SyscallTable r)
    {
        r.Wrap(Nr.ppoll, call => (t, a) => WithCallMask(t, a.A4, a.A5, () => call(t, a)));
        r.Wrap(Nr.epoll_pwait, call => (t, a) => WithCallMask(t, a.A5, a.A6, () => call(t, a)));
        // pselect6's sixth argument points to { const sigset_t *ss; size_t ss_len; }
        r.Wrap(Nr.pselect6, call => (t, a) => a.A6 == 0 ? call(t, a)
            : WithCallMask(t, t.Process.Mem.Read64(a.A6), t.Process.Mem.Read64(a.A6 + 8), () => call(t, a)));
    }

    long WithCallMask(GuestThread t, ulong maskAddr, ulong sigsetsize, Func<long> call)
    {
        if (maskAddr == 0) return call();
        if (sigsetsize != SigsetSize) return -Errno.EINVAL;
        ulong mask = t.Process.Mem.Read64(maskAddr) & ~Sig.Unblockable;
        // a call that runs again after parking keeps the mask the thread had before its first run
        ulong own = t.MaskAfterSuspend ?? t.SigMask;
        t.MaskAfterSuspend = own;
        t.SigMask = mask;
        bool parked = false;
        try
        {
            long r = call();
            parked = r == Restart || r == WouldBlock;
            return r;
        }
        finally
        {
            // parked: the call's mask holds while the thread waits (a signal it lets through interrupts the wait,
            // and the handler's frame saves the thread's own mask); otherwise the call is over
            if (!parked)
            {
                t.SigMask = own;
                t.MaskAfterSuspend = null;
                if ((t.Process.Pending & ~own) != 0) t.Cpu.Yield = true;
            }
        }
    }

    /// <summary>The size of a kernel sigset_t on x86-64.</summary>
    const ulong SigsetSize = 8;

    long RtSigaction(GuestThread t, int sig, ulong act, ulong old, ulong sigsetsize)
    {
        if (sig < 1 || sig > Sig.Max || sig == Sig.KILL || sig == Sig.STOP) return -Errno.EINVAL;
        if (sigsetsize != SigsetSize) return -Errno.EINVAL;
        var mem = t.Process.Mem;
        var a = t.Process.Actions[sig];
        if (old != 0)
        {
            mem.Write64(old, a.Handler); mem.Write64(old + 8, a.Flags); mem.Write64(old + 16, a.Restorer); mem.Write64(old + 24, a.Mask);
        }
        if (act != 0)
        {
            a.Handler = mem.Read64(act); a.Flags = mem.Read64(act + 8); a.Restorer = mem.Read64(act + 16);
            a.Mask = mem.Read64(act + 24) & ~Sig.Unblockable;
        }
        return 0;
    }

    long RtSigprocmask(GuestThread t, int how, ulong set, ulong old, ulong sigsetsize)
    {
        if (sigsetsize != SigsetSize) return -Errno.EINVAL;
        var mem = t.Process.Mem;
        ulong prev = t.SigMask;
        if (set != 0)
        {
            ulong s = mem.Read64(set) & ~Sig.Unblockable;
            switch (how)
            {
                case Sa.SIG_BLOCK: t.SigMask |= s; break;
                case Sa.SIG_UNBLOCK: t.SigMask &= ~s; break;
                case Sa.SIG_SETMASK: t.SigMask = s; break;
                default: return -Errno.EINVAL;
            }
        }
        if (old != 0) mem.Write64(old, prev);
        if ((t.Process.Pending & ~t.SigMask) != 0) t.Cpu.Yield = true;
        return 0;
    }

    /// <summary>Waits with a temporary mask until a signal it lets through is taken; then -EINTR, and the old mask
    /// comes back when the handler returns.</summary>
    long RtSigsuspend(GuestThread t, ulong maskAddr, ulong sigsetsize)
    {
        if (sigsetsize != SigsetSize) return -Errno.EINVAL;
        ulong mask = t.Process.Mem.Read64(maskAddr) & ~Sig.Unblockable;
        if ((t.Process.Pending & ~mask) == 0) return Restart; // parked until something changes
        t.MaskAfterSuspend = t.SigMask;
        t.SigMask = mask;
        t.Cpu.Yield = true;
        return -Errno.EINTR;
    }

    long Sigaltstack(GuestThread t, ulong ss, ulong old)
    {
        var mem = t.Process.Mem;
        if (old != 0)
        {
            mem.Write64(old, t.AltSp); mem.Write32(old + 8, (uint)t.AltFlags); mem.Write32(old + 12, 0); mem.Write64(old + 16, t.AltSize);
        }
        if (ss != 0)
        {
            ulong sp = mem.Read64(ss); int flags = (int)mem.Read32(ss + 8); ulong size = mem.Read64(ss + 16);
            if ((flags & Sa.SS_DISABLE) != 0) { t.AltFlags = Sa.SS_DISABLE; t.AltSp = 0; t.AltSize = 0; }
            else { if (size < Sa.MINSIGSTKSZ) return -Errno.ENOMEM; t.AltSp = sp; t.AltSize = size; t.AltFlags = 0; }
        }
        return 0;
    }

    /// <summary>kill, tkill, tgkill: to a process, a thread's process, a process group (pid 0: the caller's, -N:
    /// group N) or every process (-1). A signal to another guest process wakes its parked threads.</summary>
    long Kill(GuestThread t, int nr, ulong a1, ulong a2, ulong a3)
    {
        int target = (int)a1;
        int sig = nr == Nr.kill ? (int)a2 : (int)a3;
        if (sig < 0 || sig > Sig.Max) return -Errno.EINVAL;
        List<Process> targets;
        if (nr != Nr.kill)
        {
            var th = _threads.FirstOrDefault(x => x.Tid == target && !x.Dead);
            targets = th == null ? new() : new() { th.Process };
        }
        else if (target > 0) targets = Processes.Where(p => p.Pid == target && !p.Exited).ToList();
        else if (target == -1) targets = Processes.Where(p => !p.Exited).ToList();
        else
        {
            int pgid = target == 0 ? t.Process.Pgid : -target;
            targets = Processes.Where(p => p.Pgid == pgid && !p.Exited).ToList();
        }
        if (targets.Count == 0) return -Errno.ESRCH;
        if (sig == 0) return 0;
        foreach (var p in targets)
        {
            if (p == t.Process) RaiseSignal(t, sig);
            else SignalProcess(p, sig);
        }
        return 0;
    }
}
