using System.Buffers.Binary;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Clocks, sleeping and randomness: every answer is the host's, through the boundary.</summary>
public sealed partial class Kernel
{
    void RegisterTimeSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Host);
        r.Add(Nr.clock_gettime, (t, a) => ClockRead(t, a.Nr, (int)a.A1, a.A2, ClockUnit.Nanoseconds, buf => HostSys.Call(Nr.clock_gettime, (long)a.A1, buf)));
        r.Add(Nr.clock_getres, (t, a) => HostBuffer(t.Cpu, a.Nr, a.A2, a.A2 == 0 ? 0 : 16, buf => HostSys.Call(Nr.clock_getres, (long)a.A1, buf)));
        r.Add(Nr.gettimeofday, (t, a) => ClockRead(t, a.Nr, Clocks.REALTIME, a.A1, ClockUnit.Microseconds, buf => HostSys.Call(Nr.gettimeofday, buf, 0)));
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

    /// <summary>The second field of the structure a clock read fills: a timespec's nanoseconds or a timeval's
    /// microseconds.</summary>
    enum ClockUnit { Nanoseconds = 1, Microseconds = 1000 }

    /// <summary>
    /// Where a clock read stands against the last logged read of its clock: the value it gave (ns), the machine's
    /// instruction count then, and the count of syscalls and asynchronous events (<see cref="_clockEpoch"/>) then.
    /// <see cref="Floor"/>: the last value answered from it (a later read from the host is never below it).
    /// </summary>
    struct ClockAnchor
    {
        public long Epoch, Ns, Floor;
        public ulong At;
    }

    /// <summary>Counts every syscall but the clock reads, and every asynchronous event (wake-up, preemption, signal from
    /// outside): the same count at the same point of a recording and of its replays.</summary>
    long _clockEpoch = 1;
    /// <summary>By clock id: REALTIME (and gettimeofday), MONOTONIC, MONOTONIC_RAW, BOOTTIME; the others always ask
    /// the host.</summary>
    readonly ClockAnchor[] _clockAnchors = new ClockAnchor[ClockAnchoredIds];
    const int ClockAnchoredIds = 8, MonotonicRaw = 4;

    /// <summary>How far (in the machine's instructions) a clock read may be from its clock's logged read and still be
    /// answered from it: about 0.1-1 ms of guest execution, so a computation between two reads longer than that reads
    /// the host's clock again.</summary>
    internal const ulong ClockSpanInstructions = 100_000;
    /// <summary>How many instructions add one ns to a clock answered from its last logged read. A time answered this
    /// way must never run ahead of the host's: a logged read after it is raised to it (<see cref="ClockAnchor.Floor"/>:
    /// no clock goes back), and a raised read shortens the interval the guest measures from it to the next one, which
    /// can then show less than a sleep or timer that Linux promises took at least its time (seen with 1 instruction
    /// per ns: the compiled tier's tight loops run about 1 instruction per ns, at times more). 4 per ns is above
    /// anything this machine runs (0.1-1.5 instructions per ns), so the answered time stays behind the host's.</summary>
    internal const ulong ClockInstructionsPerNs = 4;

    /// <summary>
    /// clock_gettime and gettimeofday. With <see cref="MachineOptions.ClockReadsBetweenEvents"/>, a read of REALTIME,
    /// MONOTONIC, MONOTONIC_RAW or BOOTTIME that comes after a logged read of the same clock with no other syscall
    /// and no asynchronous event between, within <see cref="ClockSpanInstructions"/>, is answered without the host
    /// and without a record: the logged value plus one ns per <see cref="ClockInstructionsPerNs"/> instructions run since, a
    /// function of the log and the instruction count, so every replay answers it the same. Nothing that could let time
    /// pass lies between the two: a wait is a syscall, and preemption, wake-ups and signals from outside end the
    /// anchor. Any other read is the host's, logged, and becomes its clock's anchor (raised to the last value answered
    /// from the anchor before, so the clock never goes back). A snapshot does not carry anchors: capturing one ends
    /// them (<see cref="ForgetClockAnchors"/>), as a restored machine starts with none.
    /// </summary>
    long ClockRead(GuestThread t, int nr, int clock, ulong addr, ClockUnit unit, Func<long, long> host)
    {
        if (!Options.ClockReadsBetweenEvents || addr == 0 || clock is not (Clocks.REALTIME or Clocks.MONOTONIC or MonotonicRaw or Clocks.BOOTTIME))
            return HostBuffer(t.Cpu, nr, addr, addr == 0 ? 0 : 16, host);
        CheckWritable(addr, 16);
        ref var an = ref _clockAnchors[clock];
        ulong now = t.Cpu.InstructionCount;
        long ns;
        if (an.Epoch == _clockEpoch && now - an.At < ClockSpanInstructions)
        {
            ns = an.Ns + (long)((now - an.At) / ClockInstructionsPerNs);
            an.Floor = ns;
        }
        else
        {
            long r = HostBuffer(t.Cpu, nr, addr, 16, host);
            if (r != 0) return r;
            long logged = (long)Mem.Read64(addr) * 1_000_000_000 + (long)Mem.Read64(addr + 8) * (long)unit;
            ns = Math.Max(logged, an.Floor);
            an = new ClockAnchor { Epoch = _clockEpoch, Ns = ns, At = now, Floor = long.MinValue };
            if (ns == logged) return 0;
        }
        Mem.Write64(addr, (ulong)(ns / 1_000_000_000));
        Mem.Write64(addr + 8, (ulong)(ns % 1_000_000_000 / (long)unit));
        return 0;
    }

    /// <summary>Every clock read from here on asks the host (a snapshot is taken: the machine restored from it has no
    /// anchors).</summary>
    internal void ForgetClockAnchors() => _clockEpoch++;

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
