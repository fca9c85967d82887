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
/// The host side of blocking calls: every host descriptor and deadline that parked guest threads wait for, and who
/// waits (ppoll) on them. While guest code runs, one host thread of the waiter's own polls them; when every guest
/// thread waits (the machine idles), the guest thread polls them itself in <see cref="PollHere"/>, together with
/// an eventfd that every other event of the machine signals (<see cref="Signal"/>: a timer, a signal from outside,
/// an interrupt of the idle wait), so the wait that ends on a descriptor wakes the guest thread with no hand-off
/// between threads. Either way a wait's end posts a wake-up for the thread (its id and the number of its wait): an
/// asynchronous event like a signal from outside, which the boundary places at an exact instruction and logs, so a
/// replay wakes the thread at the same point without a host wait. Registrations are made only inside host
/// operations (a replay makes none, so its idle waits poll no guest descriptor); everything else is the kernel's.
/// </summary>
public sealed class HostWaiter : IDisposable
{
    sealed record Registration(int Tid, uint Seq, HostWaitSpec Spec);

    /// <summary>One pollfd entry (struct pollfd): descriptor, events asked for, events returned.</summary>
    const int PollFdSize = 8;
    /// <summary>How long the waiter's thread waits before it looks again when a ppoll fails for a reason other than
    /// a signal (never expected; a failing poll must not spin).</summary>
    static readonly TimeSpan FailedPollBackoff = TimeSpan.FromMilliseconds(1);

    readonly Action<int, uint> _wake;
    readonly object _lock = new();
    readonly Dictionary<int, Registration> _regs = new();
    /// <summary>Registrations (written under the lock; read without it by the run loop's <see cref="NeedsThread"/>).</summary>
    volatile int _count;
    /// <summary>The waiter's thread polls the registrations (guest code runs); false: the guest thread polls them where
    /// the machine idles, and the waiter's thread waits for its eventfd alone.</summary>
    volatile bool _threadPolls;
    /// <summary>Waits that ended and whose wake-up is being posted: they still count as waiting (<see cref="Any"/>).</summary>
    int _posting;
    /// <summary>The waiter thread's eventfd: the set it polls changed.</summary>
    int _kickFd = -1;
    /// <summary>The idle guest thread's eventfd: an event was posted while it polls (<see cref="Signal"/>).</summary>
    int _idleFd = -1;
    /// <summary>The guest thread is inside (or about to enter) its idle ppoll: a poster must write <see cref="_idleFd"/>.</summary>
    volatile int _guestPolls;
    Thread? _thread;
    volatile bool _stopping;
    // the guest thread's poll set, reused from one idle wait to the next (the idle path allocates nothing per wait)
    byte[] _guestPfd = new byte[PollFdSize * 4];
    Registration[] _guestRegs = new Registration[4];

    /// <param name="wake">Called when a registration's wait is over: on the waiter's thread, or on the guest thread
    /// inside <see cref="PollHere"/>.</param>
    public HostWaiter(Action<int, uint> wake) => _wake = wake;

    /// <summary>
    /// Some thread waits on the host, or a wait just ended and its wake-up is not posted yet. An idle machine that
    /// sees false here ends the guest as deadlocked, so a wait counts until its wake-up is posted: between the two
    /// the machine would otherwise find nothing pending and nobody waiting (a guest whose one host wait ended at
    /// that moment was ended with SIGABRT).
    /// </summary>
    public bool Any { get { lock (_lock) return _regs.Count > 0 || _posting > 0; } }

    /// <summary>Guest code is about to run while some thread waits on the host and nobody polls for it: the run loop
    /// hands the waits to the waiter's thread (<see cref="HandToThread"/>). Two volatile reads.</summary>
    public bool NeedsThread => _count > 0 && !_threadPolls;

    /// <summary>Registers (or replaces) the wait of a thread; its end posts (tid, seq). Made inside the thread's host
    /// operation, before it parks: whoever polls next (the waiter's thread once guest code runs, or the guest thread
    /// where the machine idles) takes it in.</summary>
    public void Add(int tid, uint seq, HostWaitSpec spec)
    {
        lock (_lock)
        {
            _regs[tid] = new Registration(tid, seq, spec);
            _count = _regs.Count;
        }
        if (_threadPolls) Kick();
    }

    /// <summary>The thread no longer waits (woken by something else, or dead).</summary>
    public void Cancel(int tid)
    {
        bool had;
        lock (_lock)
        {
            had = _regs.Remove(tid);
            _count = _regs.Count;
        }
        if (had && _threadPolls) Kick();
    }

    /// <summary>The waiter's thread polls the registrations from now on (guest code runs, so no guest thread polls
    /// them). Guest thread only.</summary>
    public void HandToThread()
    {
        lock (_lock)
        {
            _threadPolls = true;
            EnsureThread();
        }
        Kick();
    }

    /// <summary>Any thread: an event for the machine was posted (queued and flagged before this call); a guest thread
    /// polling in <see cref="PollHere"/> returns. Costs nothing but a fence when the guest thread does not poll.</summary>
    public unsafe void Signal()
    {
        // Dekker-style with PollHere: the poster's event is visible before it reads the flag; the guest thread sets
        // the flag before it looks for events a last time. One of the two sees the other.
        Interlocked.MemoryBarrier();
        if (_guestPolls == 0) return;
        long one = 1;
        // under the lock: Dispose closes the eventfd under it, so a late poster never writes to a reused number
        lock (_lock)
            if (_idleFd >= 0) HostSys.Call(Nr.write, _idleFd, (long)&one, 8);
    }

    /// <summary>
    /// Guest thread, where the machine idles: waits (ppoll) on every registered wait, the eventfd of
    /// <see cref="Signal"/> and at most <paramref name="maxWaitNs"/>, and posts the wake-up of each wait that ended
    /// here (on this thread, before returning). <paramref name="eventPosted"/> is read once the eventfd is armed: an
    /// event posted before it needs no poll. The waiter's thread stops polling the registrations (a wait that ends
    /// on both threads at once is posted once: the first to remove it under the lock posts it).
    /// </summary>
    public unsafe void PollHere(long maxWaitNs, Func<bool> eventPosted)
    {
        int n;
        long deadline = HostClock.NowNs() + maxWaitNs;
        lock (_lock)
        {
            _threadPolls = false;
            if (_idleFd < 0) _idleFd = NewEventFd("idle guest");
            if (_guestRegs.Length < _regs.Count) _guestRegs = new Registration[_regs.Count * 2];
            n = 0;
            int fds = 1;
            foreach (var r in _regs.Values)
            {
                _guestRegs[n++] = r;
                fds += r.Spec.Fds.Length;
                deadline = Math.Min(deadline, r.Spec.DeadlineNs);
            }
            if (_guestPfd.Length < fds * PollFdSize) _guestPfd = new byte[fds * 2 * PollFdSize];
        }
        var pfd = _guestPfd;
        int k = Fill(pfd, _idleFd, new ReadOnlySpan<Registration>(_guestRegs, 0, n));
        _guestPolls = 1;
        Interlocked.MemoryBarrier();
        if (!eventPosted())
        {
            long* ts = stackalloc long[2];
            long left = Math.Max(0, deadline - HostClock.NowNs());
            ts[0] = left / 1_000_000_000; ts[1] = left % 1_000_000_000;
            fixed (byte* p = pfd) HostSys.Call(Nr.ppoll, (long)p, k, (long)ts, 0, 8);
        }
        _guestPolls = 0;
        if ((BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(6)) & Poll.IN) != 0) Drain(_idleFd);
        PostEnded(pfd, new ReadOnlySpan<Registration>(_guestRegs, 0, n));
        Array.Clear(_guestRegs, 0, n);
    }

    /// <summary>Writes the poll set: the eventfd first, then every registration's descriptors in order. Returns the
    /// number of entries.</summary>
    static int Fill(byte[] pfd, int eventFd, ReadOnlySpan<Registration> regs)
    {
        BinaryPrimitives.WriteInt32LittleEndian(pfd, eventFd);
        BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(4), Poll.IN);
        BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(6), 0);
        int k = 1;
        foreach (var r in regs)
            foreach (var (fd, ev) in r.Spec.Fds)
            {
                BinaryPrimitives.WriteInt32LittleEndian(pfd.AsSpan(k * PollFdSize), fd);
                BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(k * PollFdSize + 4), ev);
                BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(k * PollFdSize + 6), 0);
                k++;
            }
        return k;
    }

    /// <summary>After a poll of <see cref="Fill"/>'s set: posts the wake-up of every registration whose descriptor is
    /// ready or whose deadline passed, unless it was replaced, cancelled or posted by the other poller meanwhile.</summary>
    void PostEnded(byte[] pfd, ReadOnlySpan<Registration> regs)
    {
        long now = HostClock.NowNs();
        int k = 1;
        foreach (var r in regs)
        {
            bool ready = now >= r.Spec.DeadlineNs;
            for (int i = 0; i < r.Spec.Fds.Length; i++, k++)
                if (BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(k * PollFdSize + 6)) != 0) ready = true;
            if (!ready) continue;
            lock (_lock)
            {
                if (!(_regs.TryGetValue(r.Tid, out var cur) && cur == r && _regs.Remove(r.Tid))) continue;
                _count = _regs.Count;
                _posting++;
            }
            try { _wake(r.Tid, r.Seq); }
            finally { lock (_lock) _posting--; }
        }
    }

    static int NewEventFd(string whose)
    {
        long fd = HostSys.Call(Nr.eventfd2, 0, O.CLOEXEC | O.NONBLOCK);
        // without its eventfd nothing could ever end that wait: fail now, not hang later
        if (fd < 0) throw new IOException($"cannot create the {whose} eventfd: errno {-fd}");
        return (int)fd;
    }

    static unsafe void Drain(int fd)
    {
        long v;
        HostSys.Call(Nr.read, fd, (long)&v, 8);
    }

    void EnsureThread()
    {
        if (_thread != null) return;
        _kickFd = NewEventFd("host-wait");
        _thread = new Thread(Loop) { IsBackground = true, Name = "revirt host waits" };
        _thread.Start();
    }

    unsafe void Kick()
    {
        if (_kickFd < 0) return;
        long one = 1;
        HostSys.Call(Nr.write, _kickFd, (long)&one, 8);
    }

    unsafe void Loop()
    {
        var pfd = new byte[PollFdSize * 4];
        long* ts = stackalloc long[2];
        while (!_stopping)
        {
            // the guest thread polls the registrations itself while the machine idles: wait for the next hand-over
            Registration[] regs;
            lock (_lock) regs = _threadPolls ? _regs.Values.ToArray() : [];
            int n = 1 + regs.Sum(r => r.Spec.Fds.Length);
            if (pfd.Length < n * PollFdSize) pfd = new byte[n * PollFdSize];
            int k = Fill(pfd, _kickFd, regs);
            long deadline = HostWaitSpec.Never;
            foreach (var r in regs) deadline = Math.Min(deadline, r.Spec.DeadlineNs);
            long tsp = 0;
            if (deadline != HostWaitSpec.Never)
            {
                long left = Math.Max(0, deadline - HostClock.NowNs());
                ts[0] = left / 1_000_000_000; ts[1] = left % 1_000_000_000;
                tsp = (long)ts;
            }
            long got;
            fixed (byte* p = pfd) got = HostSys.Call(Nr.ppoll, (long)p, k, tsp, 0, 8);
            if (_stopping) break;
            if (got < 0 && got != -Errno.EINTR) { Thread.Sleep(FailedPollBackoff); continue; }
            if ((BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(6)) & Poll.IN) != 0) Drain(_kickFd);
            PostEnded(pfd, regs);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        Kick();
        _thread?.Join(TimeSpan.FromSeconds(2));
        if (_kickFd >= 0) HostSys.Call(Nr.close, _kickFd);
        _kickFd = -1;
        lock (_lock)
        {
            if (_idleFd >= 0) HostSys.Call(Nr.close, _idleFd);
            _idleFd = -1;
        }
    }
}
