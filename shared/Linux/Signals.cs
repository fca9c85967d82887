using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Signal delivery: default actions, frames (the kernel's rt_sigframe layout) and rt_sigreturn.</summary>
public sealed partial class Kernel
{
    /// <summary>A signal from outside the VM (a host timer, a signal sent to the VM), placed by the boundary at this
    /// point of the running thread: it goes to the machine's first process.</summary>
    public void RaiseAsync(CpuT cpu, int sig)
    {
        _clockEpoch++;
        if (P == Init && Current.CanRun) RaiseSignal(Current, sig);
        else SignalProcess(Init, sig);
    }

    /// <summary>Marks a signal pending for the thread's own process; the run loop delivers it at the next boundary.</summary>
    internal void RaiseSignal(GuestThread t, int sig)
    {
        JobControlAtGeneration(t.Process, sig);
        var a = t.Process.Actions[sig];
        if (sig == Sig.CONT && (a.Handler == Sa.SIG_IGN || a.Handler == Sa.SIG_DFL)) return;
        t.Process.Pending |= Sig.Bit(sig);
        t.Cpu.Yield = true;
        // a signal the raising thread blocks is for another thread of its process: those that wait are woken to
        // take it (as Linux picks a thread that does not block it)
        if ((t.SigMask & Sig.Bit(sig)) != 0) WakeParked(t.Process);
    }

    /// <summary>The process's parked threads run their calls again, so that one that does not block a pending
    /// signal takes it (the others park again).</summary>
    void WakeParked(Process p)
    {
        foreach (var x in p.Threads) if (x.Blocked && x.Parked) Unpark(x);
    }

    /// <summary>Delivers pending signals the thread does not block (called between instructions by the run loop).</summary>
    void DeliverPending(GuestThread t)
    {
        var p = t.Process;
        while (!Exited)
        {
            ulong ready = p.Pending & ~t.SigMask;
            if (ready == 0) break;
            int sig = System.Numerics.BitOperations.TrailingZeroCount(ready) + 1;
            p.Pending &= ~Sig.Bit(sig);
            var a = p.Actions[sig];
            if (a.Handler == Sa.SIG_IGN || (a.Handler == Sa.SIG_DFL && Sig.DefaultIgnores(sig))) continue;
            if (a.Handler == Sa.SIG_DFL && Sig.DefaultStops(sig))
            {
                StopProcess(p, sig);
                return;
            }
            if (a.Handler == Sa.SIG_DFL)
            {
                if (p == Init) Options.Diagnostics.WriteLine($"revirt: guest killed by {Sig.Name(sig)}");
                KillProcess(p, sig);
                return;
            }
            // a thread parked in a syscall takes the handler now: the call ends with EINTR, or runs again after the
            // handler, as Linux decides by the call and SA_RESTART
            if (t.Parked) InterruptCall(t, a);
            // SIGCHLD tells which child and what happened to it (the first of coalesced ones, as Linux keeps)
            var child = sig == Sig.CHLD ? p.ChildSignal : null;
            if (sig == Sig.CHLD) p.ChildSignal = null;
            BuildFrame(t, sig, a, child?.Code ?? Sa.SI_USER, 0, child);
        }
        // no handler ran after rt_sigsuspend (the signal was ignored): its mask ends with the call
        if (t.MaskAfterSuspend is { } m) { t.SigMask = m; t.MaskAfterSuspend = null; }
    }

    /// <summary>
    /// A signal handler runs while the thread is parked in a syscall (rip at the syscall instruction). As Linux: a
    /// call that already moved bytes returns that count; a call of the restartable kind (ERESTARTSYS: reads,
    /// writes, accept, wait4, ...) runs again after the handler when the action has SA_RESTART; every other call
    /// (poll, select, epoll_wait, nanosleep, pause, sigsuspend: ERESTARTNOHAND and restart blocks) returns -EINTR, and
    /// so does a receive waiting with a receive time-out (<see cref="TimedReceive"/>).
    /// </summary>
    void InterruptCall(GuestThread t, SigAction a)
    {
        Unpark(t);
        var cpu = t.Cpu;
        long done = t.PartialDone;
        bool restart = done == 0 && (a.Flags & Sa.RESTART) != 0 && RestartsAfterHandler(t.ParkedNr) && !TimedReceive(t);
        EndCall(t);
        if (restart) return;
        cpu.Rip += SyscallInsnLength;
        cpu.R[CpuT.RAX] = done > 0 ? (ulong)done : unchecked((ulong)-Errno.EINTR);
    }

    /// <summary>Calls Linux restarts after a handler with SA_RESTART (those that return ERESTARTSYS).</summary>
    static bool RestartsAfterHandler(int nr) => nr switch
    {
        Nr.read or Nr.readv or Nr.pread64 or Nr.write or Nr.writev or Nr.pwrite64 or Nr.recvfrom or Nr.recvmsg
            or Nr.sendto or Nr.sendmsg or Nr.accept or Nr.accept4 or Nr.wait4 or Nr.waitid or Nr.ioctl or Nr.flock
            or Nr.fcntl or Nr.open or Nr.openat or Nr.futex or Nr.sendfile or Nr.connect => true,
        _ => false,
    };

    /// <summary>Synchronous fault: runs the guest's handler if it has one; false means the default action (death).</summary>
    bool TryDeliverSignal(GuestThread t, int sig, int code, ulong addr)
    {
        var a = t.Process.Actions[sig];
        bool blocked = (t.SigMask & Sig.Bit(sig)) != 0;
        if (a.Handler == Sa.SIG_DFL || a.Handler == Sa.SIG_IGN || blocked) return false;
        try { BuildFrame(t, sig, a, code, addr); }
        catch (GuestFaultException) { return false; } // no room for the frame: the kernel forces SIGSEGV
        return true;
    }

    // rt_sigframe layout (x86-64): the return address (sa_restorer), then a ucontext, then a siginfo
    const int UcontextSize = 304, SiginfoSize = 128, FxsaveSize = 512, RedZone = 128;
    const ulong UcStack = 16, UcMcontext = 40, UcSigmask = 296;
    const ulong McRip = 128, McFlags = 136, McFpstate = 184, McReserved = 192;
    /// <summary>Order of the general registers in mcontext (r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp).</summary>
    static readonly int[] McontextOrder = { 8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4 };
    /// <summary>Flags rt_sigreturn may restore (CF PF AF ZF SF TF DF OF, AC, ID and the like).</summary>
    const ulong RestorableFlags = 0x254DD5UL;
    const ulong UserCs = 0x33, PageFaultTrap = 14;

    void BuildFrame(GuestThread t, int sig, SigAction a, int code, ulong addr, ChildEvent? child = null)
    {
        var cpu = t.Cpu;
        var mem = t.Process.Mem;
        ulong sp = cpu.R[CpuT.RSP];
        bool onAlt = t.AltFlags == 0 && sp > t.AltSp && sp <= t.AltSp + t.AltSize;
        if ((a.Flags & Sa.ONSTACK) != 0 && t.AltFlags == 0 && !onAlt) sp = t.AltSp + t.AltSize;
        else sp -= RedZone;
        // fxsave-format FP state
        sp = (sp - FxsaveSize) & ~63UL;
        ulong fp = sp;
        var fx = new byte[FxsaveSize];
        BitConverter.GetBytes(cpu.Mxcsr).CopyTo(fx, 24);
        BitConverter.GetBytes(0xFFFFu).CopyTo(fx, 28);
        for (int k = 0; k < 32; k++) BitConverter.GetBytes(cpu.Xmm[k]).CopyTo(fx, 160 + k * 8);
        cpu.SaveX87(fx);
        mem.WriteBytes(fp, fx);
        const int frameSize = 8 + UcontextSize + SiginfoSize;
        sp = ((sp - frameSize) & ~15UL) - 8;
        ulong frame = sp, uc = frame + 8, mc = uc + UcMcontext, info = frame + 8 + UcontextSize;
        mem.Write64(frame, a.Restorer);
        mem.Write64(uc, 0); mem.Write64(uc + 8, 0);
        mem.Write64(uc + UcStack, t.AltSp); mem.Write32(uc + UcStack + 8, (uint)(t.AltFlags | (onAlt ? Sa.SS_ONSTACK : 0)));
        mem.Write32(uc + UcStack + 12, 0); mem.Write64(uc + UcStack + 16, t.AltSize);
        var r = cpu.R;
        var g = new ulong[23];
        for (int k = 0; k < 16; k++) g[k] = r[McontextOrder[k]];
        g[16] = cpu.Rip; g[17] = cpu.Rflags; g[18] = UserCs; g[19] = 0; g[20] = sig == Sig.SEGV ? PageFaultTrap : 0; g[21] = 0; g[22] = addr;
        for (int k = 0; k < g.Length; k++) mem.Write64(mc + (ulong)k * 8, g[k]);
        mem.Write64(mc + McFpstate, fp);
        for (int k = 0; k < 8; k++) mem.Write64(mc + McReserved + (ulong)k * 8, 0);
        mem.Write64(uc + UcSigmask, t.MaskAfterSuspend ?? t.SigMask);
        t.MaskAfterSuspend = null;
        var si = new byte[SiginfoSize];
        BitConverter.GetBytes(sig).CopyTo(si, 0);
        BitConverter.GetBytes(code).CopyTo(si, 8);
        if (Sig.IsFault(sig)) BitConverter.GetBytes(addr).CopyTo(si, 16);
        else if (child != null)
        {
            BitConverter.GetBytes(child.Pid).CopyTo(si, 16);
            BitConverter.GetBytes(Uid).CopyTo(si, 20);
            BitConverter.GetBytes(child.Status).CopyTo(si, 24);
        }
        else BitConverter.GetBytes(t.Process.Pid).CopyTo(si, 16);
        mem.WriteBytes(info, si);
        r[7] = (ulong)sig; r[6] = info; r[2] = uc; r[0] = 0;
        r[CpuT.RSP] = frame;
        cpu.Rip = a.Handler;
        cpu.Rflags &= ~(CpuT.DF | CpuT.TF);
        if ((a.Flags & Sa.NODEFER) == 0) t.SigMask |= Sig.Bit(sig);
        t.SigMask |= a.Mask;
        if ((a.Flags & Sa.RESETHAND) != 0) { a.Handler = Sa.SIG_DFL; a.Flags = 0; }
    }

    long RtSigreturn(GuestThread t)
    {
        var cpu = t.Cpu;
        var mem = t.Process.Mem;
        ulong uc = cpu.R[CpuT.RSP];
        ulong mc = uc + UcMcontext;
        var r = cpu.R;
        for (int k = 0; k < 16; k++) r[McontextOrder[k]] = mem.Read64(mc + (ulong)k * 8);
        cpu.Rip = mem.Read64(mc + McRip);
        ulong fl = mem.Read64(mc + McFlags);
        cpu.Rflags = (cpu.Rflags & ~RestorableFlags) | (fl & RestorableFlags) | 2;
        ulong fp = mem.Read64(mc + McFpstate);
        if (fp != 0)
        {
            var fx = mem.ReadBytes(fp, FxsaveSize);
            cpu.Mxcsr = BitConverter.ToUInt32(fx, 24);
            for (int k = 0; k < 32; k++) cpu.Xmm[k] = BitConverter.ToUInt64(fx, 160 + k * 8);
            cpu.RestoreX87(fx);
        }
        t.SigMask = mem.Read64(uc + UcSigmask) & ~Sig.Unblockable;
        if ((t.Process.Pending & ~t.SigMask) != 0) cpu.Yield = true;
        return (long)r[0];
    }
}
