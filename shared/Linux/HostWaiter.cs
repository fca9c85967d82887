using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>What a guest thread parked in a host call waits for: host descriptors becoming ready for some events,
/// and/or a point of the host's monotonic clock (<see cref="HostClock"/>), whichever comes first.</summary>
public sealed record HostWaitSpec((int Fd, short Events)[] Fds, long DeadlineNs)
{
    public const long Never = long.MaxValue;
}

/// <summary>The host's CLOCK_MONOTONIC in nanoseconds (only read inside host operations).</summary>
public static class HostClock
{
    const int Monotonic = 1;

    public static unsafe long NowNs() => Now(Monotonic);

    /// <summary>A clock's current value in nanoseconds (clock_gettime).</summary>
    public static unsafe long Now(int clock)
    {
        long* ts = stackalloc long[2];
        HostSys.Call(Nr.clock_gettime, clock, (long)ts);
        return ts[0] * 1_000_000_000 + ts[1];
    }
}

/// <summary>
/// A timer expiry that the host waiter's thread fires (<see cref="HostWaiter.Schedule"/>): <see cref="Fire"/> runs on
/// that thread at or after the due point and answers the next due point (a periodic timer, or one that found its
/// expiry not reached yet on a finer clock) or <see cref="HostWaitSpec.Never"/> when it is done.
/// </summary>
public sealed class HostAlarm(Func<long> fire)
{
    internal readonly Func<long> Fire = fire;
    /// <summary>The next due point on the host's monotonic clock (nanoseconds); read and written under the waiter's lock.</summary>
    internal long DueNs;
    /// <summary>Cancelled: a firing under way does not schedule it again.</summary>
    internal bool Cancelled;
}

/// <summary>
/// The host side of blocking calls and of the guest's timers: one host thread that waits (ppoll) on every host
/// descriptor and deadline that parked guest threads wait for and on the due points of the timers the guest armed,
/// fires every timer that is due, and then posts a wake-up for each thread (its id and the number of its wait) whose
/// wait is over. The wake-up is an asynchronous event like a signal from outside: the boundary places it at an
/// exact instruction and logs it, so a replay wakes the thread at the same point without a host wait.
/// Timers fire here, not from the runtime's thread pool, so that their signals are never later than the ends of
/// waits that came after them: a pool callback ran more than 350 ms late on a loaded machine, while this thread
/// posted the wake-up of a guest's 400 ms sleep whose peer then completed a receive that the 50 ms timer's signal
/// should have interrupted (Linux orders both by its own timers). Fired in the same pass and before the wake-ups, a
/// timer that was due before a wait ended has posted its signal before that wait's wake-up, however late the pass.
/// Registrations and timers are made only inside host operations (a replay makes none); everything else is the kernel's.
/// </summary>
public sealed class HostWaiter : IDisposable
{
    sealed record Registration(int Tid, uint Seq, HostWaitSpec Spec);

    readonly Action<int, uint> _wake;
    readonly object _lock = new();
    readonly Dictionary<int, Registration> _regs = new();
    readonly List<HostAlarm> _alarms = new();
    /// <summary>Waits that ended and whose wake-up is being posted: they still count as waiting (<see cref="Any"/>).</summary>
    int _posting;
    int _eventFd = -1;
    Thread? _thread;
    volatile bool _stopping;

    /// <param name="wake">Called on the waiter's thread when a registration's wait is over.</param>
    public HostWaiter(Action<int, uint> wake) => _wake = wake;

    /// <summary>
    /// Some thread waits on the host, or a wait just ended and its wake-up is not posted yet. An idle machine that
    /// sees false here ends the guest as deadlocked, so a wait counts until its wake-up is posted: between the two
    /// the machine would otherwise find nothing pending and nobody waiting (a guest whose one host wait ended at
    /// that moment was ended with SIGABRT).
    /// </summary>
    public bool Any { get { lock (_lock) return _regs.Count > 0 || _posting > 0; } }

    /// <summary>Registers (or replaces) the wait of a thread; its end posts (tid, seq).</summary>
    public void Add(int tid, uint seq, HostWaitSpec spec)
    {
        lock (_lock)
        {
            _regs[tid] = new Registration(tid, seq, spec);
            EnsureThread();
        }
        Kick();
    }

    /// <summary>The thread no longer waits (woken by something else, or dead).</summary>
    public void Cancel(int tid)
    {
        bool had;
        lock (_lock) had = _regs.Remove(tid);
        if (had) Kick();
    }

    /// <summary>Fires <paramref name="alarm"/> on the waiter's thread at <paramref name="dueNs"/> (host monotonic clock)
    /// or later, and again at each due point its firing answers.</summary>
    public void Schedule(HostAlarm alarm, long dueNs)
    {
        lock (_lock)
        {
            alarm.DueNs = dueNs;
            alarm.Cancelled = false;
            if (!_alarms.Contains(alarm)) _alarms.Add(alarm);
            EnsureThread();
        }
        Kick();
    }

    /// <summary>The alarm fires no more (a firing under way on the waiter's thread may still finish).</summary>
    public void Cancel(HostAlarm alarm)
    {
        lock (_lock)
        {
            alarm.Cancelled = true;
            _alarms.Remove(alarm);
        }
    }

    void EnsureThread()
    {
        if (_thread != null) return;
        long fd = HostSys.Call(Nr.eventfd2, 0, O.CLOEXEC | O.NONBLOCK);
        // without its eventfd no registration could ever wake the wait thread: fail now, not hang later
        if (fd < 0) throw new IOException($"cannot create the host-wait eventfd: errno {-fd}");
        _eventFd = (int)fd;
        _thread = new Thread(Loop) { IsBackground = true, Name = "revirt host waits" };
        _thread.Start();
    }

    unsafe void Kick()
    {
        if (_eventFd < 0) return;
        long one = 1;
        HostSys.Call(Nr.write, _eventFd, (long)&one, 8);
    }

    unsafe void Loop()
    {
        var pfd = new byte[8];
        long* ts = stackalloc long[2];
        while (!_stopping)
        {
            Registration[] regs;
            long deadline = HostWaitSpec.Never;
            lock (_lock)
            {
                regs = _regs.Values.ToArray();
                foreach (var a in _alarms) deadline = Math.Min(deadline, a.DueNs);
            }
            int n = 1 + regs.Sum(r => r.Spec.Fds.Length);
            if (pfd.Length < n * 8) pfd = new byte[n * 8];
            Array.Clear(pfd);
            BinaryPrimitives.WriteInt32LittleEndian(pfd, _eventFd);
            BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(4), Poll.IN);
            int k = 1;
            foreach (var r in regs)
            {
                deadline = Math.Min(deadline, r.Spec.DeadlineNs);
                foreach (var (fd, ev) in r.Spec.Fds)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(pfd.AsSpan(k * 8), fd);
                    BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(k * 8 + 4), ev);
                    k++;
                }
            }
            long tsp = 0;
            if (deadline != HostWaitSpec.Never)
            {
                long left = Math.Max(0, deadline - HostClock.NowNs());
                ts[0] = left / 1_000_000_000; ts[1] = left % 1_000_000_000;
                tsp = (long)ts;
            }
            long got;
            fixed (byte* p = pfd) got = HostSys.Call(Nr.ppoll, (long)p, n, tsp, 0, 8);
            if (_stopping) break;
            if (got < 0 && got != -Errno.EINTR) { Thread.Sleep(1); continue; }
            if ((BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(6)) & Poll.IN) != 0)
            {
                long v;
                HostSys.Call(Nr.read, _eventFd, (long)&v, 8);
            }
            long now = HostClock.NowNs();
            // the timers first: each that was due by now posts its signal before any wake-up of this pass
            FireDue(now);
            k = 1;
            var done = new List<Registration>();
            foreach (var r in regs)
            {
                bool ready = now >= r.Spec.DeadlineNs;
                foreach (var _ in r.Spec.Fds)
                {
                    if (BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(k * 8 + 6)) != 0) ready = true;
                    k++;
                }
                if (ready) done.Add(r);
            }
            foreach (var r in done)
            {
                lock (_lock)
                {
                    if (!(_regs.TryGetValue(r.Tid, out var cur) && cur == r && _regs.Remove(r.Tid))) continue;
                    _posting++;
                }
                try { _wake(r.Tid, r.Seq); }
                finally { lock (_lock) _posting--; }
            }
        }
    }

    /// <summary>Fires the alarms due at <paramref name="now"/>, earliest first, and schedules again those that answer
    /// a next due point (unless cancelled while firing).</summary>
    void FireDue(long now)
    {
        List<HostAlarm>? due = null;
        lock (_lock)
        {
            for (int i = _alarms.Count - 1; i >= 0; i--)
                if (_alarms[i].DueNs <= now)
                {
                    (due ??= new()).Add(_alarms[i]);
                    _alarms.RemoveAt(i);
                }
        }
        if (due == null) return;
        due.Sort((a, b) => a.DueNs.CompareTo(b.DueNs));
        foreach (var a in due)
        {
            long next = a.Fire();
            if (next == HostWaitSpec.Never) continue;
            lock (_lock)
                if (!a.Cancelled && !_alarms.Contains(a))
                {
                    a.DueNs = next;
                    _alarms.Add(a);
                }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        Kick();
        _thread?.Join(TimeSpan.FromSeconds(2));
        if (_eventFd >= 0) HostSys.Call(Nr.close, _eventFd);
        _eventFd = -1;
    }
}
