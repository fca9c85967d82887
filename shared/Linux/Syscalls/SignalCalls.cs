
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
        r.Add(new[] { Nr.kill, Nr.tgkill }, (t, a) => Kill(t, a.Nr, a.A1, a.A2, a.A3));
        r.Add(Nr.tkill, (t, a) => Kill(t, Nr.kill, a.A1, a.A2, 0));
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

    long Kill(GuestThread t, int nr, ulong a1, ulong a2, ulong a3)
    {
        int target = (int)a1;
        int sig = nr == Nr.kill ? (int)a2 : (int)a3;
        if (target != t.Process.Pid && target != 0 && target != -1) return -Errno.ESRCH;
        if (sig < 0 || sig > Sig.Max) return -Errno.EINVAL;
        if (sig == 0) return 0;
        RaiseAsync(t.Cpu, sig);
        return 0;
    }
}
