using System.Buffers.Binary;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Interval timers (setitimer, alarm) and POSIX timers: host timers that post signals to the guest. The host
/// timers (<see cref="HostAlarm"/>s fired by the host waiter's thread) exist only in a live or recording run (they
/// are created inside host operations); a replay receives the signals from the log. Every replica keeps each timer's setting in the VM (armed, first expiry on CLOCK_REALTIME from
/// a logged clock reading, interval), so a machine snapshot carries it and a replica that goes live arms its host
/// timers again from it (<see cref="RearmTimers"/>).</summary>
public sealed partial class Kernel
{
    sealed class HostTimer : HostTimerBase { }

    readonly HostTimer[] _itimers = { new(), new(), new() };

    void RegisterTimerSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Host);
        r.Add(Nr.setitimer, (t, a) => Setitimer(t.Cpu, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.getitimer, (t, a) => Getitimer(t.Cpu, (int)a.A1, a.A2));
        r.Add(Nr.alarm, (t, a) => Alarm(t.Cpu, (uint)a.A1));
        r.Add(Nr.timer_create, (t, a) => TimerCreate(t.Cpu, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.timer_settime, (t, a) => TimerSettime(t.Cpu, (int)a.A1, (int)a.A2, a.A3, a.A4));
        r.Add(Nr.timer_gettime, (t, a) => TimerGettime(t.Cpu, (int)a.A1, a.A2));
        r.Add(Nr.timer_getoverrun, (t, a) => _posixTimers.ContainsKey((int)a.A1) ? 0 : -Errno.EINVAL);
        r.Add(Nr.timer_delete, (t, a) => TimerDelete(t.Cpu, (int)a.A1));
        r.Add(Nr.timerfd_create, (t, a) => TimerFdCreate(t.Cpu, (int)a.A1, (int)a.A2));
        r.Add(Nr.timerfd_settime, (t, a) => TimerFdSettime(t.Cpu, (int)a.A1, (int)a.A2, a.A3, a.A4));
        r.Add(Nr.timerfd_gettime, (t, a) => TimerFdGettime(t.Cpu, (int)a.A1, a.A2));
    }

    static int TimerSignal(int which) => which switch { 0 => 14, 1 => 26, _ => 27 };

    long Setitimer(CpuT cpu, int which, ulong newAddr, ulong oldAddr)
    {
        if (which < 0 || which > 2) return -Errno.EINVAL;
        byte[]? nv = newAddr != 0 ? Mem.ReadBytes(newAddr, 32) : null;
        if (oldAddr != 0) CheckWritable(oldAddr, 32);
        var t = _itimers[which];
        DateTime now = nv != null ? TimerNow(cpu) : default;
        bool ran = false;
        long r = Host(cpu, Nr.setitimer, () =>
        {
            ran = true;
            var res = HostResult.Of(0);
            if (oldAddr != 0) res.Write(oldAddr, EncodeItimer(t));
            if (nv != null) ArmTimer(t, TimerSignal(which), now, ToSpan(nv, 16), ToSpan(nv, 0));
            return res;
        }).Value;
        if (nv != null && !ran && r == 0) SetTimer(t, now, ToSpan(nv, 16), ToSpan(nv, 0));
        return r;
    }

    long Getitimer(CpuT cpu, int which, ulong addr)
    {
        if (which < 0 || which > 2) return -Errno.EINVAL;
        CheckWritable(addr, 32);
        return Host(cpu, Nr.getitimer, () => HostResult.Of(0).Write(addr, EncodeItimer(_itimers[which]))).Value;
    }

    long Alarm(CpuT cpu, uint seconds)
    {
        var t = _itimers[0];
        DateTime now = TimerNow(cpu);
        bool ran = false;
        long r = Host(cpu, Nr.alarm, () =>
        {
            ran = true;
            long remaining = t.Alarm == null ? 0 : (long)Math.Ceiling(Math.Max(0, (t.Due - DateTime.UtcNow).TotalSeconds));
            ArmTimer(t, TimerSignal(0), now, TimeSpan.FromSeconds(seconds), TimeSpan.Zero);
            return HostResult.Of(remaining);
        }).Value;
        if (!ran) SetTimer(t, now, TimeSpan.FromSeconds(seconds), TimeSpan.Zero);
        return r;
    }

    static TimeSpan ToSpan(byte[] b, int o)
    {
        long sec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o)), usec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o + 8));
        return TimeSpan.FromTicks(sec * TimeSpan.TicksPerSecond + usec * 10);
    }

    static byte[] EncodeItimer(HostTimerBase t) => EncodeTimer(t, ticksToUnit: 0.1);

    /// <summary>An interval or POSIX timer may still post a signal.</summary>
    bool TimersArmed => _itimers.Any(t => t.Alarm != null) || _posixTimers.Values.Any(t => t.Alarm != null);

    void StopTimers()
    {
        foreach (var t in _itimers) DisarmHostTimer(t);
        foreach (var t in _posixTimers.Values) DisarmHostTimer(t);
    }

    /// <summary>The timer's host alarm fires no more.</summary>
    void DisarmHostTimer(HostTimerBase t)
    {
        if (Interlocked.Exchange(ref t.Alarm, null) is { } a) Waiter.Cancel(a);
    }

    // ---------------------------------------------------------------- POSIX timers (timer_create and friends)

    sealed class PosixTimer : HostTimerBase
    {
        public int Clock;
        public int Signal;
    }

    class HostTimerBase
    {
        /// <summary>The host alarm that fires the timer (live or recording, while it may still expire); null otherwise.</summary>
        public HostAlarm? Alarm;
        public DateTime Due;
        public TimeSpan Interval;
        /// <summary>Set to expire (a one-shot timer that fired is not): what a snapshot carries, with
        /// <see cref="Due"/> and <see cref="Interval"/>.</summary>
        public bool Armed;
    }

    readonly Dictionary<int, PosixTimer> _posixTimers = new();

    long TimerCreate(CpuT cpu, int clock, ulong sevp, ulong idOut)
    {
        if (clock is not (0 or 1 or 7 or 2 or 3)) return -Errno.EINVAL; // REALTIME, MONOTONIC, BOOTTIME, CPU clocks (approximated by wall time)
        int sig = 14, notify = 0;
        if (sevp != 0)
        {
            sig = (int)Mem.Read32(sevp + 8);
            notify = (int)Mem.Read32(sevp + 12);
        }
        if (notify == 1) sig = 0; // SIGEV_NONE
        else if (notify != 0 && notify != 4) return -Errno.EINVAL; // SIGEV_SIGNAL, SIGEV_THREAD_ID
        if (sig < 0 || sig > 64) return -Errno.EINVAL;
        int id = 0;
        while (_posixTimers.ContainsKey(id)) id++;
        CheckWritable(idOut, 4);
        _posixTimers[id] = new PosixTimer { Clock = clock, Signal = sig };
        Mem.Write32(idOut, (uint)id);
        return 0;
    }

    long TimerSettime(CpuT cpu, int id, int flags, ulong newAddr, ulong oldAddr)
    {
        if (!_posixTimers.TryGetValue(id, out var t)) return -Errno.EINVAL;
        var nv = Mem.ReadBytes(newAddr, 32);
        if (oldAddr != 0) CheckWritable(oldAddr, 32);
        var interval = SpanNs(nv, 0);
        var value = SpanNs(nv, 16);
        if ((flags & Clocks.TIMER_ABSTIME) != 0 && value > TimeSpan.Zero)
        {
            // TIMER_ABSTIME: the value is a point on the timer's clock (read once, logged)
            value -= TimeSpan.FromTicks(TimerClockNow(cpu, t.Clock) / 100);
            if (value <= TimeSpan.Zero) value = TimeSpan.FromTicks(1);
        }
        DateTime now = TimerNow(cpu);
        bool ran = false;
        long r = Host(cpu, Nr.timer_settime, () =>
        {
            ran = true;
            var res = HostResult.Of(0);
            if (oldAddr != 0) res.Write(oldAddr, EncodeItimerspec(t));
            ArmTimer(t, t.Signal, now, value, interval);
            return res;
        }).Value;
        if (!ran && r == 0) SetTimer(t, now, value, interval);
        return r;
    }

    long TimerGettime(CpuT cpu, int id, ulong addr)
    {
        if (!_posixTimers.TryGetValue(id, out var t)) return -Errno.EINVAL;
        CheckWritable(addr, 32);
        return Host(cpu, Nr.timer_gettime, () => HostResult.Of(0).Write(addr, EncodeItimerspec(t))).Value;
    }

    long TimerDelete(CpuT cpu, int id)
    {
        if (!_posixTimers.Remove(id, out var t)) return -Errno.EINVAL;
        Host(cpu, Nr.timer_delete, () => { DisarmHostTimer(t); return HostResult.Of(0); });
        t.Armed = false;
        return 0;
    }

    /// <summary>The time a timer is set at: CLOCK_REALTIME read once and logged, so every replica keeps the same
    /// setting (<see cref="HostTimerBase.Due"/> is on that clock).</summary>
    DateTime TimerNow(CpuT cpu) => DateTime.UnixEpoch + TimeSpan.FromTicks(TimerClockNow(cpu, Clocks.REALTIME) / 100);

    /// <summary>The VM's record of a timer set at <paramref name="now"/> to expire after <paramref name="value"/> (zero:
    /// disarmed), then every <paramref name="interval"/> (zero: once). Every replica keeps it, a replay too.</summary>
    static void SetTimer(HostTimerBase t, DateTime now, TimeSpan value, TimeSpan interval)
    {
        t.Armed = value > TimeSpan.Zero;
        t.Due = t.Armed ? now + value : default;
        t.Interval = t.Armed ? interval : TimeSpan.Zero;
    }

    /// <summary>Sets the timer (<see cref="SetTimer"/>) and arms its host timer (live or recording only).</summary>
    void ArmTimer(HostTimerBase t, int sig, DateTime now, TimeSpan value, TimeSpan interval)
    {
        SetTimer(t, now, value, interval);
        ArmHostTimer(t, sig);
    }

    /// <summary>
    /// A host timer that posts <paramref name="sig"/> at the timer's <see cref="HostTimerBase.Due"/> and then every
    /// interval, keeping the VM's record current (the next expiry; a one-shot timer that fired is disarmed). It is an
    /// alarm of the host waiter's own thread (<see cref="HostWaiter.Schedule"/>), not a thread-pool callback: the
    /// waiter fires every due timer before it posts the ends of host waits, so a signal is never placed after a
    /// wake-up (and what the woken thread then did) that came later than its expiry, however busy the machine.
    /// Linux never delivers a timer's signal before its expiry: the due time is kept on CLOCK_REALTIME, the alarm is
    /// set on the monotonic clock to the time left, and a firing that finds the due time not yet reached on the
    /// realtime clock waits out the rest. A periodic timer's next expiry is the last one plus the interval (plus whole
    /// intervals missed, as Linux counts them as overruns of one signal), not the firing's time plus the interval, so
    /// it does not drift.
    /// </summary>
    void ArmHostTimer(HostTimerBase t, int sig)
    {
        DisarmHostTimer(t);
        if (!t.Armed) return;
        HostAlarm alarm = null!;
        alarm = new HostAlarm(() => Expire(t, alarm, sig));
        t.Alarm = alarm;
        Waiter.Schedule(alarm, MonotonicAfter(t.Due - DateTime.UtcNow));
    }

    /// <summary>A firing of <paramref name="alarm"/> (on the host waiter's thread): posts the timer's signal if its
    /// expiry has come; answers the alarm's next due point, or <see cref="HostWaitSpec.Never"/> once it is done.</summary>
    long Expire(HostTimerBase t, HostAlarm alarm, int sig)
    {
        if (Exited || t.Alarm != alarm) return HostWaitSpec.Never; // disarmed or re-armed since
        var now = DateTime.UtcNow;
        if (now < t.Due) return MonotonicAfter(t.Due - now);
        long next = HostWaitSpec.Never;
        if (t.Interval > TimeSpan.Zero)
        {
            long missed = (now - t.Due).Ticks / t.Interval.Ticks;
            t.Due += TimeSpan.FromTicks((missed + 1) * t.Interval.Ticks);
            next = MonotonicAfter(t.Due - now);
        }
        else t.Armed = false;
        if (sig != 0) PostHostSignal(sig);
        // a one-shot timer that fired is no longer armed on the host (after its signal is queued: an idle machine
        // that sees neither a queued event nor an armed timer ends the guest as deadlocked)
        if (next == HostWaitSpec.Never) Interlocked.CompareExchange(ref t.Alarm, null, alarm);
        return next;
    }

    /// <summary>The point of the host's monotonic clock <paramref name="left"/> from now (now when it is not positive).</summary>
    static long MonotonicAfter(TimeSpan left) => HostClock.NowNs() + Math.Max(0, left.Ticks) * 100;

    /// <summary>
    /// A replica that has just gone live (its replay, or a snapshot it restored, kept the timers' settings but no host
    /// timers) arms its host timers again from the VM's record: a periodic timer at its next expiry after now (the
    /// expiries the old primary had are in the log), a one-shot timer at its expiry if that is still ahead. A one-shot
    /// timer whose expiry has passed expired on the old primary: its signal reached the guest if the log holds it,
    /// and it is disarmed. Returns one line per timer for the takeover's report.
    /// </summary>
    public List<string> RearmTimers()
    {
        var report = new List<string>();
        var now = DateTime.UtcNow;
        void One(string name, HostTimerBase t, int sig)
        {
            if (!t.Armed || t.Alarm != null) return;
            if (t.Due <= now)
            {
                if (t.Interval <= TimeSpan.Zero)
                {
                    t.Armed = false;
                    report.Add($"{name}: expired {(now - t.Due).TotalMilliseconds:F0} ms before the takeover, disarmed");
                    return;
                }
                long periods = (now - t.Due).Ticks / t.Interval.Ticks + 1;
                t.Due += TimeSpan.FromTicks(periods * t.Interval.Ticks);
            }
            ArmHostTimer(t, sig);
            report.Add($"{name}: armed again, next expiry in {(t.Due - now).TotalMilliseconds:F0} ms{(t.Interval > TimeSpan.Zero ? $", then every {t.Interval.TotalMilliseconds:F0} ms" : "")}");
        }
        string[] names = ["ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"];
        for (int i = 0; i < _itimers.Length; i++) One($"interval timer {names[i]}", _itimers[i], TimerSignal(i));
        foreach (var (id, t) in _posixTimers.OrderBy(kv => kv.Key)) One($"POSIX timer {id}", t, t.Signal);
        return report;
    }

    static TimeSpan SpanNs(byte[] b, int o)
    {
        long sec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o)), ns = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o + 8));
        return TimeSpan.FromTicks(sec * TimeSpan.TicksPerSecond + ns / 100);
    }

    static byte[] EncodeItimerspec(HostTimerBase t) => EncodeTimer(t, ticksToUnit: 100);

    /// <summary>Interval and remaining time as two {seconds, sub-second} pairs; the sub-second unit is
    /// microseconds (itimerval, ticksToUnit 0.1) or nanoseconds (itimerspec, ticksToUnit 100).</summary>
    static byte[] EncodeTimer(HostTimerBase t, double ticksToUnit)
    {
        var b = new byte[32];
        if (t.Alarm != null)
        {
            var rem = t.Due - DateTime.UtcNow;
            if (rem < TimeSpan.Zero) rem = TimeSpan.FromTicks(1);
            BinaryPrimitives.WriteInt64LittleEndian(b, t.Interval.Ticks / TimeSpan.TicksPerSecond);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), (long)(t.Interval.Ticks % TimeSpan.TicksPerSecond * ticksToUnit));
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(16), rem.Ticks / TimeSpan.TicksPerSecond);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(24), (long)(rem.Ticks % TimeSpan.TicksPerSecond * ticksToUnit));
        }
        return b;
    }

    // ---------------------------------------------------------------- timerfd

    /// <summary>TFD_TIMER_ABSTIME and TFD_TIMER_CANCEL_ON_SET (accepted; a clock change does not cancel here).</summary>
    const int TfdAbsTime = 1, TfdCancelOnSet = 2;

    long TimerFdCreate(CpuT cpu, int clock, int flags)
    {
        if (clock is not (Clocks.REALTIME or Clocks.MONOTONIC or Clocks.BOOTTIME)) return -Errno.EINVAL;
        if ((flags & ~(O.CLOEXEC | O.NONBLOCK)) != 0) return -Errno.EINVAL;
        long r = HostValue(cpu, Nr.timerfd_create, () => HostSys.Call(Nr.timerfd_create, clock, flags | O.CLOEXEC));
        if (r < 0) return r;
        NewFd(new TimerFdFile { Clock = clock, StatusFlags = O.RDWR | (flags & O.NONBLOCK) }, r, (flags & O.CLOEXEC) != 0, out int gfd);
        return gfd;
    }

    /// <summary>The timer's clock now, a host answer that is logged (a replay computes the same expiry and remaining
    /// time from it).</summary>
    long TimerClockNow(CpuT cpu, int clock) => HostValue(cpu, Nr.clock_gettime, () => HostClock.Now(clock));

    /// <summary>
    /// timerfd_settime: the new expiry is fixed on the timer's clock (now + value, or the value itself with
    /// TFD_TIMER_ABSTIME) from one logged clock reading, and the host timerfd is armed at exactly that absolute
    /// point, so the VM's state and the host's agree; the old setting is reported from the VM's state.
    /// </summary>
    unsafe long TimerFdSettime(CpuT cpu, int fd, int flags, ulong newAddr, ulong oldAddr)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        if (f is not TimerFdFile tf) return -Errno.EINVAL;
        if ((flags & ~(TfdAbsTime | TfdCancelOnSet)) != 0) return -Errno.EINVAL;
        var nv = Mem.ReadBytes(newAddr, 32);
        if (!TimespecNs(nv, 0, out long interval) || !TimespecNs(nv, 16, out long value)) return -Errno.EINVAL;
        if (oldAddr != 0) CheckWritable(oldAddr, 32);
        long now = TimerClockNow(cpu, tf.Clock);
        var old = EncodeTimerFd(tf, now);
        long expiry = value == 0 ? 0 : (flags & TfdAbsTime) != 0 ? Math.Max(value, 1) : now + value;
        var spec = new byte[32];
        BinaryPrimitives.WriteInt64LittleEndian(spec, interval / 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(spec.AsSpan(8), interval % 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(spec.AsSpan(16), expiry / 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(spec.AsSpan(24), expiry % 1_000_000_000);
        long r = HostValue(cpu, Nr.timerfd_settime, () => { fixed (byte* p = spec) return HostSys.Call(Nr.timerfd_settime, tf.HostFd, expiry == 0 ? 0 : TfdAbsTime, (long)p, 0); });
        if (r < 0) return r;
        tf.ExpiryNs = expiry;
        tf.IntervalNs = expiry == 0 ? 0 : interval;
        if (oldAddr != 0) Mem.WriteBytes(oldAddr, old);
        return 0;
    }

    long TimerFdGettime(CpuT cpu, int fd, ulong addr)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        if (f is not TimerFdFile tf) return -Errno.EINVAL;
        CheckWritable(addr, 32);
        Mem.WriteBytes(addr, EncodeTimerFd(tf, TimerClockNow(cpu, tf.Clock)));
        return 0;
    }

    /// <summary>A timerfd's setting as an itimerspec: its interval and the time to its next expiry (after an expiry
    /// nobody has read yet, the next one of a periodic timer, 1 ns for a one-shot one).</summary>
    static byte[] EncodeTimerFd(TimerFdFile tf, long now)
    {
        var b = new byte[32];
        if (tf.ExpiryNs == 0) return b;
        long next = tf.ExpiryNs;
        if (next <= now && tf.IntervalNs > 0) next += ((now - next) / tf.IntervalNs + 1) * tf.IntervalNs;
        long left = Math.Max(next - now, 1);
        BinaryPrimitives.WriteInt64LittleEndian(b, tf.IntervalNs / 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), tf.IntervalNs % 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(16), left / 1_000_000_000);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(24), left % 1_000_000_000);
        return b;
    }

    /// <summary>A timespec at `o` in nanoseconds (false: out of range, EINVAL).</summary>
    static bool TimespecNs(byte[] b, int o, out long ns)
    {
        long sec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o)), nsec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o + 8));
        ns = 0;
        if (sec < 0 || nsec < 0 || nsec >= 1_000_000_000 || sec > long.MaxValue / 2_000_000_000) return false;
        ns = sec * 1_000_000_000 + nsec;
        return true;
    }
}
