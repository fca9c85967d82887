namespace ReVirt.Cpu;

/// <summary>Per-thread state the kernel keeps for scheduling (set_tid_address, futex waits).</summary>
public sealed partial class Cpu
{
    /// <summary>CLONE_CHILD_CLEARTID / set_tid_address: zeroed and futex-woken when the thread exits.</summary>
    public ulong ClearChildTid;
    /// <summary>The futex word this thread waits on (valid while Blocked).</summary>
    public ulong FutexAddr;
    public uint FutexBitset;
    /// <summary>The wait has a timeout: it expires when no other thread can run (deterministically).</summary>
    public bool FutexTimed;
    public bool Blocked;
    public bool Dead;

    /// <summary>A new thread sharing memory and code with this one (clone with CLONE_VM|CLONE_THREAD).</summary>
    public Cpu CloneThread(int tid)
    {
        var t = new Cpu(Mem, Code, Host) { Tid = tid };
        Array.Copy(R, t.R, 16);
        Array.Copy(Xmm, t.Xmm, 32);
        t.Rip = Rip; t.Rflags = Rflags; t.FsBase = FsBase; t.GsBase = GsBase; t.Mxcsr = Mxcsr;
        Array.Copy(Fpr, t.Fpr, 8);
        t.FpTop = FpTop; t.Fcw = Fcw; t.Fsw = Fsw; t.FpEmpty = FpEmpty;
        return t;
    }
}
