using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>
/// An eventfd: a host eventfd in live and recording runs (its readiness wakes host waits and epoll), and a mirror of
/// its counter that the VM keeps from what the guest wrote and what its reads returned (logged answers), so the
/// counter is part of the machine's state in every run, a replay included: a snapshot carries it and a takeover
/// makes a host eventfd with that value. Only the guest's own threads touch the counter, so the mirror is exact.
/// </summary>
public sealed class EventFdFile : HostFile
{
    /// <summary>EFD_SEMAPHORE: a read takes 1, not the whole counter.</summary>
    public const int SemaphoreFlag = 1;
    public ulong Counter;
    public bool Semaphore;

    protected override bool MayReadByReference => false;

    public EventFdFile() => GuestPath = "anon_inode:[eventfd]";

    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
    {
        long r = base.Read(k, t, buf, n, offset);
        if (r == 8) Counter -= Math.Min(Counter, t.Process.Mem.Read64(buf));
        return r;
    }

    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
    {
        long r = k.WriteHost(t.Cpu, this, data, offset, output: false, reexecuteOnReplay: false);
        if (r == 8 && data.Length >= 8) Counter += BinaryPrimitives.ReadUInt64LittleEndian(data);
        return r;
    }
}

/// <summary>
/// A timerfd: a host timerfd in live and recording runs (its expiry makes it readable), and the timer's state in
/// guest-clock terms — its clock, the absolute expiry on that clock (0: disarmed) and its interval — which the VM
/// keeps from logged clock readings and read results (<see cref="Kernel"/>'s timerfd calls), so it is the same in a
/// replay: a snapshot carries it and a takeover arms a host timerfd at that expiry.
/// </summary>
public sealed class TimerFdFile : HostFile
{
    public int Clock;
    /// <summary>The next expiry on <see cref="Clock"/> in nanoseconds (0: disarmed).</summary>
    public long ExpiryNs;
    public long IntervalNs;

    protected override bool MayReadByReference => false;

    public TimerFdFile() => GuestPath = "anon_inode:[timerfd]";

    /// <summary>A read returns the expirations since the last read (a host answer, logged); the timer moves on by as
    /// many intervals, or is disarmed when it had none (as Linux's timerfd).</summary>
    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
    {
        if (n < 8) return -Errno.EINVAL;
        long r = base.Read(k, t, buf, n, offset);
        if (r == 8) Expired(t.Process.Mem.Read64(buf));
        return r;
    }

    void Expired(ulong count)
    {
        if (count == 0 || ExpiryNs == 0) return;
        if (IntervalNs > 0) ExpiryNs += (long)Math.Min(count, (ulong)(long.MaxValue / IntervalNs)) * IntervalNs;
        else ExpiryNs = 0;
    }

    public override long Write(Kernel k, GuestThread t, byte[] data, long offset) => -Errno.EINVAL;
}
