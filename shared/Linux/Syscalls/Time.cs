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
        // pause: a host wait that only a signal ends (it counts as a way the idle machine may be woken)
        r.Add(Nr.pause, (t, a) => Host(t.Cpu, a.Nr, () => BlockOnHost(t, new HostWaitSpec([], HostWaitSpec.Never))).Value);
        r.Add(Nr.nanosleep, (t, a) => Sleep(t, a.Nr, Clocks.MONOTONIC, 0, a.A1, a.A2));
        r.Add(Nr.clock_nanosleep, (t, a) => Sleep(t, a.Nr, (int)a.A1, (int)a.A2, a.A3, a.A4));
        r.Add(Nr.getrandom, (t, a) =>
        {
            ulong len = Math.Min(a.A2, 1 << 25);
            CheckWritable(a.A1, len);
            return Host(t.Cpu, a.Nr, () =>
            {
            var b = HostSys.RandomBytes((int)len);
            return HostResult.Of((long)len).Write(a.A1, b);
            }).Value;
        });
    }

    /// <summary>
    /// nanosleep and clock_nanosleep (relative, or TIMER_ABSTIME: a point on the given clock). Only the calling
    /// thread waits: the first attempt fixes the deadline on the host's monotonic clock and parks the thread; the
    /// logged wake-up at the deadline runs the call again, which returns 0. A signal whose handler runs ends it
    /// with EINTR and, for a relative sleep, the time left in `rem` (written at each attempt that parks).
    /// </summary>
    long Sleep(GuestThread t, int nr, int clock, int flags, ulong req, ulong rem)
    {
        if (clock is not (Clocks.REALTIME or Clocks.MONOTONIC or Clocks.BOOTTIME or Clocks.TAI)) return -Errno.EINVAL;
        var ts = Mem.ReadBytes(req, 16);
        long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), nsec = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
        if (sec < 0 || nsec < 0 || nsec >= 1_000_000_000) return -Errno.EINVAL;
        long ns = sec > long.MaxValue / 2_000_000_000 ? long.MaxValue / 2 : sec * 1_000_000_000 + nsec;
        bool absolute = (flags & Clocks.TIMER_ABSTIME) != 0;
        if (rem != 0 && !absolute) CheckWritable(rem, 16);
        return Host(t.Cpu, nr, () =>
        {
            long now = HostClock.NowNs();
            long deadline = DeadlineOf(t, () => absolute ? now + (ns - HostClock.Now(clock)) : now + ns);
            long left = deadline - now;
            if (left <= 0) return HostResult.Of(0);
            var res = BlockUntil(t, [], deadline);
            if (rem != 0 && !absolute)
            {
                var r = new byte[16];
                BinaryPrimitives.WriteInt64LittleEndian(r, left / 1_000_000_000);
                BinaryPrimitives.WriteInt64LittleEndian(r.AsSpan(8), left % 1_000_000_000);
                res.Write(rem, r);
            }
            return res;
        }).Value;
    }

}
