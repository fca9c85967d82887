using System.Text;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Process and thread identity, limits, the machine description (uname), arch_prctl/prctl.</summary>
public sealed partial class Kernel
{
    void RegisterProcessSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Emulated);
        r.Add(Nr.exit, (t, a) => ExitThread(t, (int)a.A1));
        r.Add(Nr.clone, (t, a) => CloneTask(t, a.A1, a.A2, a.A3, a.A4, a.A5));
        r.Add(Nr.clone3, (t, a) => -Errno.ENOSYS); // libc falls back to clone
        r.Add(new[] { Nr.fork, Nr.vfork }, (t, a) => CloneTask(t, (ulong)Sig.CHLD, 0, 0, 0, 0));
        r.Add(Nr.exit_group, (t, a) => { ExitProcess(t, (int)a.A1); return 0; });
        r.Add(Nr.getpid, (t, a) => t.Process.Pid);
        r.Add(Nr.gettid, (t, a) => t.Cpu.Tid);
        // the first process's parent is outside the VM (the host's answer); the others' parents are guest processes
        r.Add(Nr.getppid, (t, a) => t.Process.Parent == null ? HostValue(t.Cpu, a.Nr, () => HostSys.Call(Nr.getppid)) : t.Process.Parent.Pid, SyscallFlags.Host);
        r.Add(new[] { Nr.getuid, Nr.geteuid, Nr.getgid, Nr.getegid }, (t, a) => HostValue(t.Cpu, a.Nr, () => HostSys.Call(a.Nr)), SyscallFlags.Host);
        r.Add(Nr.getpgrp, (t, a) => t.Process.Pgid);
        r.Add(Nr.getpgid, (t, a) => FindProcess(t, (int)a.A1) is { } p ? p.Pgid : -Errno.ESRCH);
        r.Add(Nr.getsid, (t, a) => FindProcess(t, (int)a.A1) is { } p ? p.Sid : -Errno.ESRCH);
        r.Add(Nr.setpgid, (t, a) => SetPgid(t, (int)a.A1, (int)a.A2));
        r.Add(Nr.setsid, (t, a) => SetSid(t));
        r.Add(Nr.wait4, (t, a) => Wait4(t, (int)a.A1, a.A2, (int)a.A3, a.A4));
        r.Add(Nr.waitid, (t, a) => Waitid(t, (int)a.A1, (int)a.A2, a.A3, (int)a.A4, a.A5));
        r.Add(Nr.execve, (t, a) => Execve(t, At.FDCWD, a.A1, a.A2, a.A3, 0), SyscallFlags.Host);
        r.Add(Nr.execveat, (t, a) => Execve(t, (int)a.A1, a.A2, a.A3, a.A4, (int)a.A5), SyscallFlags.Host);
        r.Add(Nr.set_tid_address, (t, a) => { t.ClearChildTid = a.A1; return t.Tid; });
        r.Add(Nr.set_robust_list, (t, a) => 0);
        r.Add(Nr.rseq, (t, a) => -Errno.ENOSYS);
        r.Add(Nr.arch_prctl, (t, a) => ArchPrctl(t.Cpu, (int)a.A1, a.A2));
        r.Add(Nr.prctl, (t, a) => PrctlOp(t, (int)a.A1, a.A2));
        r.Add(Nr.uname, (t, a) => Uname(t.Cpu, a.A1), SyscallFlags.Host);
        r.Add(Nr.prlimit64, (t, a) => Prlimit(t.Cpu, (int)a.A1, (int)a.A2, a.A3, a.A4));
        r.Add(Nr.getrlimit, (t, a) => Prlimit(t.Cpu, 0, (int)a.A1, 0, a.A2));
        r.Add(Nr.setrlimit, (t, a) => 0);
        r.Add(Nr.sched_getaffinity, (t, a) =>
        {
            if (a.A2 < 8) return -Errno.EINVAL;
            CheckWritable(a.A3, 8);
            Mem.WriteBytes(a.A3, BitConverter.GetBytes(1UL));
            return 8;
        });
        r.Add(Nr.sched_setaffinity, (t, a) => 0);
        r.Add(Nr.sched_yield, (t, a) => SchedYield(t));
        r.Add(Nr.getcpu, (t, a) =>
        {
            if (a.A1 != 0) Mem.Write32(a.A1, 0);
            if (a.A2 != 0) Mem.Write32(a.A2, 0);
            return 0;
        });
        r.Add(Nr.umask, (t, a) => { int old = t.Process.Umask; t.Process.Umask = (int)(a.A1 & 0x1FF); return old; });
        r.Add(Nr.sysinfo, (t, a) => HostBuffer(t.Cpu, a.Nr, a.A1, 112, buf => HostSys.Call(Nr.sysinfo, buf)), SyscallFlags.Host);
        // the VM's own processes' use (children's) is the VM's: instructions at a nominal rate; the caller's is the host's
        r.Add(Nr.getrusage, (t, a) =>
        {
            if ((int)a.A1 != RusageChildren) return HostBuffer(t.Cpu, a.Nr, a.A2, RusageSize, buf => HostSys.Call(Nr.getrusage, (long)a.A1, buf));
            CheckWritable(a.A2, RusageSize);
            Mem.WriteBytes(a.A2, Rusage(t.Process.ChildInstructions, t.Process.ChildMaxRssPages));
            return 0;
        }, SyscallFlags.Host);
        r.Add(Nr.times, (t, a) =>
        {
            long r = HostBuffer(t.Cpu, a.Nr, a.A1, a.A1 == 0 ? 0 : 32, buf => HostSys.Call(Nr.times, buf));
            if (r >= 0 && a.A1 != 0) Mem.Write64(a.A1 + 16, t.Process.ChildInstructions / (NominalInstructionsPerSecond / ClockTicksPerSecond)); // tms_cutime
            if (r >= 0 && a.A1 != 0) Mem.Write64(a.A1 + 24, 0); // tms_cstime
            return r;
        }, SyscallFlags.Host);
        r.Add(Nr.getgroups, (t, a) => 0);
        r.Add(Nr.getpriority, (t, a) => 20);
    }

    long ArchPrctl(CpuT cpu, int code, ulong addr)
    {
        switch (code)
        {
            case Prctl.ARCH_SET_FS: cpu.FsBase = addr; return 0;
            case Prctl.ARCH_SET_GS: cpu.GsBase = addr; return 0;
            case Prctl.ARCH_GET_FS: Mem.Write64(addr, cpu.FsBase); return 0;
            case Prctl.ARCH_GET_GS: Mem.Write64(addr, cpu.GsBase); return 0;
            default: return -Errno.EINVAL; // ARCH_CET_STATUS among others
        }
    }

    const int RusageChildren = -1;
    /// <summary>Clock ticks per second of times() (sysconf(_SC_CLK_TCK), AT_CLKTCK).</summary>
    const ulong ClockTicksPerSecond = 100;

    long PrctlOp(GuestThread t, int option, ulong arg2)
    {
        switch (option)
        {
            case Prctl.PR_SET_PDEATHSIG:
                if (arg2 > Sig.Max) return -Errno.EINVAL;
                t.Process.DeathSignal = (int)arg2;
                return 0;
            case Prctl.PR_GET_PDEATHSIG: CheckWritable(arg2, 4); Mem.Write32(arg2, (uint)t.Process.DeathSignal); return 0;
            case Prctl.PR_SET_NAME: P.Name = Mem.ReadCString(arg2, 16); return 0;
            case Prctl.PR_GET_NAME: Mem.WriteBytes(arg2, CommBytes(P.Name)); return 0;
            default: return -Errno.EINVAL;
        }
    }

    /// <summary>The 16 bytes PR_GET_NAME writes: the name's UTF-8 bytes (at most 16), then zeros. Built in a zeroed
    /// array rather than by padding the string: string padding runs the framework's vectorised fill, whose
    /// ReadyToRun code is rejected on an AVX2 host, so it was JIT-compiled in nearly every run (libc asks at start).</summary>
    static byte[] CommBytes(string name)
    {
        var b = new byte[16];
        var utf8 = Encoding.UTF8.GetBytes(name);
        Array.Copy(utf8, b, Math.Min(utf8.Length, b.Length));
        return b;
    }

    long Uname(CpuT cpu, ulong buf)
    {
        CheckWritable(buf, 390);
        // the VM presents its own machine: fixed fields, the host's node name through the boundary
        var res = Boundary.Syscall(cpu.Tid, Nr.uname, () =>
        {
            var b = new byte[390];
            unsafe { fixed (byte* p = b) HostSys.Call(Nr.uname, (long)p); }
            return HostResult.Of(0).Write(0, b.AsSpan(65, 65).ToArray());
        });
        var node = res.Writes.Length > 0 ? res.Writes[0].Bytes : new byte[65];
        var outb = new byte[390];
        void Field(int idx, string s) => Encoding.ASCII.GetBytes(s).CopyTo(outb, idx * 65);
        Field(0, "Linux");
        node.CopyTo(outb, 65);
        Field(2, "6.1.0-revirt");
        Field(3, "#1 SMP ReVirt");
        Field(4, "x86_64");
        Field(5, "(none)");
        Mem.WriteBytes(buf, outb);
        return 0;
    }

    long Prlimit(CpuT cpu, int pid, int resource, ulong newLimit, ulong oldLimit)
    {
        if (oldLimit == 0) return 0;
        ulong cur = ulong.MaxValue, max = ulong.MaxValue;
        switch (resource)
        {
            case Rlimit.STACK: cur = StackSize; break;
            case Rlimit.NOFILE: cur = 1024; max = 1048576; break;
        }
        CheckWritable(oldLimit, 16);
        Mem.Write64(oldLimit, cur);
        Mem.Write64(oldLimit + 8, max);
        return 0;
    }

}
