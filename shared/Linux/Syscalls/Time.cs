using System.Buffers.Binary;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Clocks, sleeping and randomness: every answer is the host's, through the boundary.</summary>
public sealed partial class Kernel
{
    void RegisterTimeSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Host);
        r.Add(Nr.clock_gettime, (t, a) => HostBuffer(t.Cpu, a.Nr, a.A2, 16, buf => HostSys.Call(Nr.clock_gettime, (long)a.A1, buf)));
        r.Add(Nr.clock_getres, (t, a) => HostBuffer(t.Cpu, a.Nr, a.A2, a.A2 == 0 ? 0 : 16, buf => HostSys.Call(Nr.clock_getres, (long)a.A1, buf)));
        r.Add(Nr.gettimeofday, (t, a) => HostBuffer(t.Cpu, a.Nr, a.A1, a.A1 == 0 ? 0 : 16, buf => HostSys.Call(Nr.gettimeofday, buf, 0)));
        r.Add(Nr.time, (t, a) =>
        {
            long now = HostValue(t.Cpu, a.Nr, () => HostSys.Call(Nr.time, 0));
            if (a.A1 != 0) Mem.Write64(a.A1, (ulong)now);
            return now;
        });
        r.Add(Nr.pause, (t, a) =>
        {
            if (t.Process.Pending == 0) Host(t.Cpu, a.Nr, () => { while (!HostEventsPending && !Exited) Thread.Sleep(1); return HostResult.Of(-Errno.EINTR); });
            return -Errno.EINTR;
        });
        r.Add(Nr.nanosleep, (t, a) => Sleep(t.Cpu, a.Nr, a.A1, a.A2, () => 0));
        r.Add(Nr.clock_nanosleep, (t, a) => Sleep(t.Cpu, a.Nr, a.A3, a.A4, () => a.A1));
        r.Add(Nr.getrandom, (t, a) =>
        {
            ulong len = Math.Min(a.A2, 1 << 25);
            CheckWritable(a.A1, len);
            return Host(t.Cpu, a.Nr, () =>
            {
            var b = System.Security.Cryptography.RandomNumberGenerator.GetBytes((int)len);
            return HostResult.Of((long)len).Write(a.A1, b);
            }).Value;
        });
    }

    long Sleep(CpuT cpu, int nr, ulong req, ulong rem, Func<ulong> clock)
    {
        var ts = Mem.ReadBytes(req, 16);
        long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), nsec = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
        if (sec < 0 || nsec < 0 || nsec >= 1_000_000_000) return -Errno.EINVAL;
        return Host(cpu, nr, () =>
        {
            unsafe
            {
                fixed (byte* p = ts)
                    return HostResult.Of(nr == Nr.nanosleep ? HostSys.Call(Nr.nanosleep, (long)p, 0) : HostSys.Call(Nr.clock_nanosleep, (long)clock(), 0, (long)p, 0));
            }
        }).Value;
    }

}
