namespace ReVirt.Cpu;

public sealed partial class VirtualCpu
{
    /// <summary>A new CPU with this one's registers, sharing memory and code with it (a thread of the same
    /// process: clone with CLONE_VM|CLONE_THREAD). Scheduling state belongs to the kernel's GuestThread.</summary>
    public VirtualCpu CloneThread(int tid) => CloneInto(Mem, Code, tid);

    /// <summary>A new CPU with this one's registers over the given memory and code (a forked process's copy).</summary>
    public VirtualCpu CloneInto(Memory.GuestMemory mem, CodeCache code, int tid)
    {
        var t = new VirtualCpu(mem, code, Host) { Tid = tid };
        Array.Copy(R, t.R, 16);
        Array.Copy(Xmm, t.Xmm, 32);
        t.Rip = Rip; t.Rflags = Rflags; t.FsBase = FsBase; t.GsBase = GsBase; t.Mxcsr = Mxcsr;
        Array.Copy(Fpr, t.Fpr, 8);
        t.FpTop = FpTop; t.Fcw = Fcw; t.Fsw = Fsw; t.FpEmpty = FpEmpty;
        return t;
    }
}
