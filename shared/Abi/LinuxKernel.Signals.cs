using ReVirt.Memory;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Abi;

/// <summary>Signal dispositions, masks, frames (the kernel's rt_sigframe layout) and delivery.</summary>
public sealed partial class LinuxKernel
{
    public sealed class SigAction { public ulong Handler, Flags, Restorer, Mask; }

    const ulong SA_SIGINFO = 4, SA_ONSTACK = 0x08000000, SA_NODEFER = 0x40000000, SA_RESETHAND = 0x80000000;
    const ulong SIG_DFL = 0, SIG_IGN = 1;

    public readonly SigAction[] Actions = Enumerable.Range(0, 65).Select(_ => new SigAction()).ToArray();
    public ulong SigMask;
    /// <summary>Pending asynchronous signals (bit n-1 for signal n), delivered at the next instruction boundary the kernel controls.</summary>
    public ulong Pending;
    ulong _altSp, _altSize;
    int _altFlags = 2; // SS_DISABLE

    static bool DefaultIgnores(int sig) => sig is 17 or 23 or 28; // SIGCHLD, SIGURG, SIGWINCH

    long RtSigaction(CpuT cpu, int sig, ulong act, ulong old, ulong sigsetsize)
    {
        if (sig < 1 || sig > 64 || sig == 9 || sig == 19) return -Errno.EINVAL;
        if (sigsetsize != 8) return -Errno.EINVAL;
        var a = Actions[sig];
        if (old != 0)
        {
            Mem.Write64(old, a.Handler); Mem.Write64(old + 8, a.Flags); Mem.Write64(old + 16, a.Restorer); Mem.Write64(old + 24, a.Mask);
        }
        if (act != 0)
        {
            a.Handler = Mem.Read64(act); a.Flags = Mem.Read64(act + 8); a.Restorer = Mem.Read64(act + 16);
            a.Mask = Mem.Read64(act + 24) & ~((1UL << 8) | (1UL << 18)); // SIGKILL, SIGSTOP cannot be blocked
        }
        return 0;
    }

    long RtSigprocmask(CpuT cpu, int how, ulong set, ulong old, ulong sigsetsize)
    {
        if (sigsetsize != 8) return -Errno.EINVAL;
        ulong prev = SigMask;
        if (set != 0)
        {
            ulong s = Mem.Read64(set) & ~((1UL << 8) | (1UL << 18));
            switch (how)
            {
                case 0: SigMask |= s; break;
                case 1: SigMask &= ~s; break;
                case 2: SigMask = s; break;
                default: return -Errno.EINVAL;
            }
        }
        if (old != 0) Mem.Write64(old, prev);
        if ((Pending & ~SigMask) != 0) cpu.Yield = true;
        return 0;
    }

    long Sigaltstack(CpuT cpu, ulong ss, ulong old)
    {
        if (old != 0)
        {
            Mem.Write64(old, _altSp); Mem.Write32(old + 8, (uint)_altFlags); Mem.Write32(old + 12, 0); Mem.Write64(old + 16, _altSize);
        }
        if (ss != 0)
        {
            ulong sp = Mem.Read64(ss); int flags = (int)Mem.Read32(ss + 8); ulong size = Mem.Read64(ss + 16);
            if ((flags & 2) != 0) { _altFlags = 2; _altSp = 0; _altSize = 0; }
            else { if (size < 2048) return -Errno.ENOMEM; _altSp = sp; _altSize = size; _altFlags = 0; }
        }
        return 0;
    }

    long Kill(CpuT cpu, int nr, ulong a1, ulong a2, ulong a3)
    {
        int target = (int)a1;
        int sig = nr == Nr.kill ? (int)a2 : (int)a3;
        if (nr == Nr.tgkill) target = (int)a1;
        if (target != Pid && target != 0 && target != -1) return -Errno.ESRCH;
        if (sig < 0 || sig > 64) return -Errno.EINVAL;
        if (sig == 0) return 0;
        RaiseAsync(cpu, sig);
        return 0;
    }

    /// <summary>Marks an asynchronous signal pending; the run loop delivers it at the next boundary.</summary>
    public void RaiseAsync(CpuT cpu, int sig)
    {
        Pending |= 1UL << (sig - 1);
        cpu.Yield = true;
    }

    /// <summary>Delivers pending unblocked signals (called between instructions by the run loop).</summary>
    void DeliverPending(CpuT cpu)
    {
        while (!Exited)
        {
            ulong ready = Pending & ~SigMask;
            if (ready == 0) return;
            int sig = System.Numerics.BitOperations.TrailingZeroCount(ready) + 1;
            Pending &= ~(1UL << (sig - 1));
            var a = Actions[sig];
            if (a.Handler == SIG_IGN || (a.Handler == SIG_DFL && DefaultIgnores(sig))) continue;
            if (a.Handler == SIG_DFL)
            {
                Options.Diagnostics.WriteLine($"revirt: guest killed by {SignalName(sig)}");
                Terminate(sig);
                return;
            }
            BuildFrame(cpu, sig, a, 0 /* SI_USER */, 0);
        }
    }

    /// <summary>Synchronous fault: runs the guest's handler if it has one; false means the default action (death).</summary>
    bool TryDeliverSignal(CpuT cpu, int sig, int code, ulong addr)
    {
        var a = Actions[sig];
        bool blocked = (SigMask & (1UL << (sig - 1))) != 0;
        if (a.Handler == SIG_DFL || a.Handler == SIG_IGN || blocked) return false;
        try { BuildFrame(cpu, sig, a, code, addr); }
        catch (GuestFaultException) { return false; } // no room for the frame: the kernel forces SIGSEGV
        return true;
    }

    void BuildFrame(CpuT cpu, int sig, SigAction a, int code, ulong addr)
    {
        ulong sp = cpu.R[CpuT.RSP];
        bool onAlt = _altFlags == 0 && sp > _altSp && sp <= _altSp + _altSize;
        if ((a.Flags & SA_ONSTACK) != 0 && _altFlags == 0 && !onAlt) sp = _altSp + _altSize;
        else sp -= 128; // red zone
        // fxsave-format FP state
        sp = (sp - 512) & ~63UL;
        ulong fp = sp;
        var fx = new byte[512];
        BitConverter.GetBytes(cpu.Mxcsr).CopyTo(fx, 24);
        BitConverter.GetBytes(0xFFFFu).CopyTo(fx, 28);
        for (int k = 0; k < 32; k++) BitConverter.GetBytes(cpu.Xmm[k]).CopyTo(fx, 160 + k * 8);
        cpu.SaveX87(fx);
        Mem.WriteBytes(fp, fx);
        const int frameSize = 8 + 304 + 128;
        sp = ((sp - frameSize) & ~15UL) - 8;
        ulong frame = sp, uc = frame + 8, mc = uc + 40, info = frame + 8 + 304;
        Mem.Write64(frame, a.Restorer);
        Mem.Write64(uc, 0); Mem.Write64(uc + 8, 0);
        Mem.Write64(uc + 16, _altSp); Mem.Write32(uc + 24, (uint)(_altFlags | (onAlt ? 1 : 0))); Mem.Write32(uc + 28, 0); Mem.Write64(uc + 32, _altSize);
        var r = cpu.R;
        ulong[] g = { r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[7], r[6], r[5], r[3], r[2], r[0], r[1], r[4], cpu.Rip, cpu.Rflags,
                      0x33, 0, sig == 11 ? 14UL : 0UL, 0, addr };
        for (int k = 0; k < g.Length; k++) Mem.Write64(mc + (ulong)k * 8, g[k]);
        Mem.Write64(mc + 184, fp);
        for (int k = 0; k < 8; k++) Mem.Write64(mc + 192 + (ulong)k * 8, 0);
        Mem.Write64(uc + 296, SigMask);
        var si = new byte[128];
        BitConverter.GetBytes(sig).CopyTo(si, 0);
        BitConverter.GetBytes(code).CopyTo(si, 8);
        if (sig is 4 or 7 or 8 or 11) BitConverter.GetBytes(addr).CopyTo(si, 16);
        else { BitConverter.GetBytes(Pid).CopyTo(si, 16); }
        Mem.WriteBytes(info, si);
        r[7] = (ulong)sig; r[6] = info; r[2] = uc; r[0] = 0;
        r[CpuT.RSP] = frame;
        cpu.Rip = a.Handler;
        cpu.Rflags &= ~(CpuT.DF | CpuT.TF);
        if ((a.Flags & SA_NODEFER) == 0) SigMask |= 1UL << (sig - 1);
        SigMask |= a.Mask;
        if ((a.Flags & SA_RESETHAND) != 0) { a.Handler = SIG_DFL; a.Flags = 0; }
    }

    long RtSigreturn(CpuT cpu)
    {
        ulong uc = cpu.R[CpuT.RSP];
        ulong mc = uc + 40;
        var r = cpu.R;
        int[] order = { 8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4 };
        for (int k = 0; k < 16; k++) r[order[k]] = Mem.Read64(mc + (ulong)k * 8);
        cpu.Rip = Mem.Read64(mc + 128);
        ulong fl = Mem.Read64(mc + 136);
        cpu.Rflags = (cpu.Rflags & ~0x254DD5UL) | (fl & 0x254DD5UL) | 2;
        ulong fp = Mem.Read64(mc + 184);
        if (fp != 0)
        {
            var fx = Mem.ReadBytes(fp, 512);
            cpu.Mxcsr = BitConverter.ToUInt32(fx, 24);
            for (int k = 0; k < 32; k++) cpu.Xmm[k] = BitConverter.ToUInt64(fx, 160 + k * 8);
            cpu.RestoreX87(fx);
        }
        SigMask = Mem.Read64(uc + 296) & ~((1UL << 8) | (1UL << 18));
        if ((Pending & ~SigMask) != 0) cpu.Yield = true;
        return (long)r[0];
    }
}
