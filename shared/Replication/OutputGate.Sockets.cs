using System.Diagnostics;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>
/// Output commit for sockets: the output rule holds the output, never the guest. A guest send is accepted at
/// once — its result logged like any syscall's — as long as the socket's credit (the bytes it holds here, which
/// stand for the kernel's send buffer) allows; the bytes then wait here and reach the host socket, in the order
/// they were sent, once the backup has acknowledged the log up to the send's record. Only a socket whose credit
/// is used up makes the guest wait (or answers EAGAIN when the socket is non-blocking).
/// </summary>
/// <remarks>
/// Contract, as a kernel's send buffer behaves:
/// <list type="bullet">
/// <item>A socket that holds nothing takes any send whole; otherwise a send must fit the remaining credit. A
/// non-blocking stream send takes what fits (a short count), a non-blocking datagram or a send into a full
/// socket gets EAGAIN, a blocking one waits until the send fits.</item>
/// <item>The host is never waited on: releases use MSG_DONTWAIT; a host socket whose buffer is full is polled
/// for room by one drain thread, and its bytes keep their place.</item>
/// <item>An error the host reports while releasing (EPIPE, ECONNRESET, ...) drops the socket's remaining held
/// stream bytes and is the answer to the guest's next send or shutdown on that socket.</item>
/// <item>A shutdown or the last close of a socket that still holds bytes is queued behind them: the guest gets 0
/// at once and the host socket shuts down or closes after the release.</item>
/// <item>Unprotected (won the arbiter) releases everything at once; discarded (lost it) drops everything held and
/// accepts new sends without ever releasing them (the process is stopping).</item>
/// </list>
/// The guest thread adds entries; the ack thread and the drain thread release them, under the gate's lock, except
/// that an acknowledgement's host sends run outside it (<see cref="TakeReleasable"/>: the socket is busy meanwhile
/// and keeps its entries queued, so each socket's bytes still leave in order and its ends after them).
/// </remarks>
public sealed partial class OutputGate
{
    /// <summary>Default credit of a socket: a kernel's typical autotuned send buffer for a busy connection.</summary>
    public const int DefaultSocketCredit = 256 * 1024;
    const int MSG_DONTWAIT = 0x40;
    const short POLLIN = 1, POLLOUT = 4;
    const int PollFdSize = 8;

    /// <summary>Bytes one socket may hold before its sender waits (or gets EAGAIN).</summary>
    public int SocketCredit { get; init; } = DefaultSocketCredit;

    readonly Dictionary<object, HeldSocket> _sockets = new(ReferenceEqualityComparer.Instance);
    readonly HashSet<HeldSocket> _unreleased = new();
    readonly LatencyHistogram _socketHolds = new(), _creditWaits = new();
    long _socketHeldBytes;
    int _waiters;
    Thread? _drainer;
    int _wakeFd = -1;

    sealed class HeldSocket(object key)
    {
        public readonly object Key = key;
        public readonly Queue<SocketEntry> Entries = new();
        /// <summary>Bytes accepted from the guest that the host has not taken yet.</summary>
        public long Held;
        /// <summary>A host error (-errno) not yet reported to the guest.</summary>
        public long Error;
        /// <summary>The host's send buffer was full: released again when the host socket reports room.</summary>
        public bool Stuck;
        public int HostFd = -1;
        /// <summary>An acknowledgement's thread performs <see cref="Sending"/> outside the gate's lock: nobody else
        /// releases this socket's entries (they stay queued, so a close still queues behind them) until it is done.</summary>
        public bool Busy;
        /// <summary>The releasable sends at the queue's head that the busy thread performs (in order), with the outcome of
        /// its pass: how many went whole, and the host's refusal (-errno, EAGAIN included) that stopped it.</summary>
        public readonly List<SocketEntry> Sending = new();
        public int SentWhole;
        public long Refusal;
    }

    /// <summary>One held send or queued end. Entries are reused (<see cref="NewEntry"/>, <see cref="Recycle"/>): a send
    /// held allocates nothing here.</summary>
    sealed class SocketEntry
    {
        public ulong Seq;
        public long Since;
        /// <summary>A send (when <see cref="End"/> is null): bytes [Offset, Count) of its data are still to go.</summary>
        public SocketSend Send;
        public int Offset, Count;
        /// <summary><see cref="Offset"/> when a pass outside the lock took the entry (what that pass freed is counted from here).</summary>
        public int PassStart;
        /// <summary>When a pass outside the lock had the host take the entry's last byte (its hold time ends there).</summary>
        public long SentAt;
        /// <summary>A shutdown or the last close, queued behind the socket's held bytes.</summary>
        public Func<HostResult>? End;
        public bool Last;
    }

    // entries whose send or end is done, kept for the next (under the lock); bounded, so that a burst's entries do
    // not stay forever
    readonly Stack<SocketEntry> _spareEntries = new();
    const int MaxSpareEntries = 4096;

    /// <summary>An entry for a new send or end (under the lock): a spare one when there is one.</summary>
    SocketEntry NewEntry(ulong seq)
    {
        var e = _spareEntries.Count > 0 ? _spareEntries.Pop() : new SocketEntry();
        e.Seq = seq;
        e.Since = Stopwatch.GetTimestamp();
        return e;
    }

    /// <summary>An entry dequeued for good (under the lock; nobody refers to it any more): cleared (its bytes are not
    /// kept alive) and kept for the next send.</summary>
    void Recycle(SocketEntry e)
    {
        e.Send = default;
        e.End = null;
        e.Last = false;
        e.Offset = e.Count = e.PassStart = 0;
        e.SentAt = 0;
        if (_spareEntries.Count < MaxSpareEntries) _spareEntries.Push(e);
    }

    /// <summary>Entries kept for reuse right now (tests: a held send's entry comes back once it is released).</summary>
    internal int SpareSocketEntries { get { lock (_lock) return _spareEntries.Count; } }

    /// <summary>Bytes held for sockets right now.</summary>
    public long SocketHeldBytes => Interlocked.Read(ref _socketHeldBytes);

    /// <summary>How long each socket send's bytes spent in the gate (until the host took their last byte).</summary>
    public LatencyHistogram SocketHoldTimes => _socketHolds;

    /// <summary>How long each blocking send waited for credit (sends that did not wait are not counted).</summary>
    public LatencyHistogram CreditWaitTimes => _creditWaits;

    /// <summary>Blocking sends waiting for credit right now (each until an acknowledgement frees room).</summary>
    public int SendsWaitingForCredit { get { lock (_lock) return _waiters; } }

    /// <summary>
    /// Guest thread, before the send is logged: how many bytes of <paramref name="s"/> the socket takes now, or
    /// the -errno the send answers (a host error from an earlier release, or EAGAIN). A blocking send that does
    /// not fit waits here for credit; <paramref name="beforeWait"/> runs first (outside the gate's lock): what the wait
    /// needs acknowledged must have been shipped.
    /// </summary>
    public long AcceptSend(in SocketSend s, Action? beforeWait = null)
    {
        // one pass under the lock decides a send that fits (every send of a server that keeps up): the lock is shared
        // with the threads that release, so the guest thread takes it as few times per send as it can
        while (true)
        {
            long r = Accept(s, mayWait: beforeWait == null);
            if (r != MustShipFirst) return r;
            // the wait needs acknowledgements of what is logged: it is shipped first, outside the lock (the link's
            // send must not hold up the threads that release), and the send is decided again
            beforeWait!();
            beforeWait = null;
        }
    }

    /// <summary><see cref="Accept"/>'s answer when the send must wait for credit but may not wait yet.</summary>
    const long MustShipFirst = long.MinValue;

    /// <summary>The send's answer under the lock; a blocking send that does not fit waits for credit when
    /// <paramref name="mayWait"/>, or else answers <see cref="MustShipFirst"/>.</summary>
    long Accept(in SocketSend s, bool mayWait)
    {
        long t0 = 0;
        lock (_lock)
        {
            var h = Socket(s.Socket, s.HostFd);
            try
            {
                while (true)
                {
                    if (h.Error != 0) { long e = h.Error; h.Error = 0; return e; }
                    if (_discarded) return s.Data.Length;
                    long room = SocketCredit - h.Held;
                    if (h.Held == 0 || s.Data.Length <= room) return s.Data.Length;
                    if (s.NonBlocking) return s.Stream && room > 0 ? room : -Errno.EAGAIN;
                    if (!mayWait) return MustShipFirst;
                    if (t0 == 0) { t0 = Stopwatch.GetTimestamp(); _waiters++; }
                    Monitor.Wait(_lock, 50);
                }
            }
            finally
            {
                if (t0 != 0)
                {
                    _waiters--;
                    _creditWaits.AddTicks(t0, Stopwatch.GetTimestamp());
                }
            }
        }
    }

    /// <summary>Guest thread, after the send's result (<paramref name="count"/> bytes) was logged as record <paramref name="seq"/>.</summary>
    public void HoldSend(ulong seq, in SocketSend s, int count)
    {
        lock (_lock)
        {
            if (_discarded) return;
            var h = Socket(s.Socket, s.HostFd);
            var e = NewEntry(seq);
            e.Send = s;
            e.Count = count;
            h.Entries.Enqueue(e);
            h.Held += count;
            _socketHeldBytes += count;
            _unreleased.Add(h);
            Release(h);
        }
    }

    /// <summary>True when the socket still holds bytes (or a queued end): its shutdown or close must queue behind them.</summary>
    public bool Holds(object socket)
    {
        lock (_lock) return _sockets.TryGetValue(socket, out var h) && h.Entries.Count > 0;
    }

    /// <summary>
    /// Guest thread: a shutdown (<paramref name="last"/> false) or the last close, logged as record
    /// <paramref name="seq"/> with result 0, runs on the host after the socket's held bytes are released.
    /// </summary>
    public void HoldEnd(ulong seq, object socket, Func<HostResult> end, bool last)
    {
        lock (_lock)
        {
            if (_discarded) return;
            var h = Socket(socket, -1);
            var e = NewEntry(seq);
            e.End = end;
            e.Last = last;
            h.Entries.Enqueue(e);
            _unreleased.Add(h);
            Release(h);
        }
    }

    /// <summary>The guest closed the socket for good and nothing was held: forget its state (and any unreported error).</summary>
    public void Forget(object socket)
    {
        lock (_lock) _sockets.Remove(socket);
    }

    /// <summary>
    /// The guest has ended: waits until every socket's held bytes reached the host and queued ends ran, as long
    /// as the host keeps taking them; gives up after <paramref name="idle"/> without progress (a peer that stopped
    /// reading). True when everything was released.
    /// </summary>
    public bool WaitSocketsReleased(TimeSpan idle)
    {
        lock (_lock)
        {
            _waiters++;
            try
            {
                long last = -1, since = Stopwatch.GetTimestamp();
                while (_unreleased.Count > 0 && !_discarded)
                {
                    long now = _socketHeldBytes + _unreleased.Sum(h => h.Entries.Count);
                    if (now != last) { last = now; since = Stopwatch.GetTimestamp(); }
                    else if (Stopwatch.GetElapsedTime(since) > idle) return false;
                    Monitor.Wait(_lock, 20);
                }
                return _unreleased.Count == 0;
            }
            finally { _waiters--; }
        }
    }

    HeldSocket Socket(object key, int hostFd)
    {
        if (!_sockets.TryGetValue(key, out var h)) _sockets[key] = h = new HeldSocket(key);
        if (hostFd >= 0) h.HostFd = hostFd;
        return h;
    }

    /// <summary>May output of record <paramref name="seq"/> leave now?</summary>
    bool Releasable(ulong seq)
    {
        if (_discarded) return false;
        if (_unprotected) return Owner();
        return seq <= _acked && !_final && (Fresh == null || Fresh());
    }

    readonly List<HeldSocket> _releasing = new();

    void ReleaseSockets()
    {
        if (_unreleased.Count == 0) return;
        _releasing.Clear();
        _releasing.AddRange(_unreleased); // Release removes a socket it emptied from _unreleased
        foreach (var h in _releasing) Release(h);
        _releasing.Clear();
    }

    /// <summary>
    /// An acknowledgement's release, under the lock: sockets whose head holds releasable sends are marked busy and
    /// their sends listed, to be performed by <see cref="SendOutsideLock"/> once the lock is let go (the guest thread
    /// goes on accepting and holding sends meanwhile instead of waiting for a run of host sends: at 64 connections
    /// one ack releases 20-30 replies); a socket whose head is a queued shutdown or close is released here. The busy
    /// sockets are listed in the order their first releasable send was logged: one ack's host sends take a while (tens
    /// of microseconds each), and the reply that has waited longest leaves first, whatever order the set of sockets
    /// holding output keeps.
    /// </summary>
    List<HeldSocket>? TakeReleasable()
    {
        if (_unreleased.Count == 0) return null;
        List<HeldSocket>? busy = null;
        _releasing.Clear();
        _releasing.AddRange(_unreleased); // Release removes a socket it emptied from _unreleased
        foreach (var h in _releasing)
        {
            if (h.Busy || h.Stuck || h.Entries.Count == 0) continue;
            if (h.Entries.Peek().End != null) { Release(h); continue; }
            h.Sending.Clear();
            foreach (var e in h.Entries)
            {
                if (e.End != null || !Releasable(e.Seq)) break;
                e.PassStart = e.Offset;
                h.Sending.Add(e);
            }
            if (h.Sending.Count == 0) continue;
            h.Busy = true;
            if (busy == null) { busy = _spareBusy ?? new(); _spareBusy = null; }
            busy.Add(h);
        }
        _releasing.Clear();
        if (busy is { Count: > 1 }) busy.Sort(ByFirstSendLogged);
        return busy;
    }

    // a list of busy sockets kept between acknowledgements (taken and given back under the lock): an ack allocates nothing
    List<HeldSocket>? _spareBusy;

    static readonly Comparison<HeldSocket> ByFirstSendLogged = (a, b) => a.Sending[0].Seq.CompareTo(b.Sending[0].Seq);

    /// <summary>
    /// Performs the sends <see cref="TakeReleasable"/> listed, outside the lock, in each socket's order and without
    /// ever waiting on the host; then, under the lock, counts what the host took, reports a refusal as
    /// <see cref="Release"/> does and releases what became releasable meanwhile. Before each send it asks what a
    /// release under the lock would (the gate not discarded, the link fresh): a process stopped in the middle of a
    /// release must not go on releasing when it wakes after the timeout.
    /// </summary>
    void SendOutsideLock(List<HeldSocket> busy, long ackedAt)
    {
        foreach (var h in busy)
        {
            h.SentWhole = 0;
            h.Refusal = 0;
            foreach (var e in h.Sending)
            {
                if (Volatile.Read(ref _discarded) || (!Volatile.Read(ref _unprotected) && Fresh != null && !Fresh())) goto nextSocket;
                while (e.Offset < e.Count)
                {
                    long r = e.Send.Perform(e.Offset, e.Count - e.Offset, MSG_DONTWAIT);
                    if (r == -Errno.EINTR) continue;
                    if (r < 0) { h.Refusal = r; goto nextSocket; }
                    e.Offset = e.Send.Stream ? e.Offset + (int)r : e.Count; // a datagram goes whole or not at all
                }
                e.SentAt = Stopwatch.GetTimestamp();
                h.SentWhole++;
            }
        nextSocket:;
        }
        lock (_lock)
        {
            long now = Stopwatch.GetTimestamp();
            bool freed = false;
            foreach (var h in busy)
            {
                h.Busy = false;
                if (_discarded) continue; // everything held was dropped meanwhile
                long bytes = 0;
                for (int i = 0; i < h.SentWhole; i++)
                {
                    var e = h.Entries.Dequeue();
                    bytes += e.Count - e.PassStart;
                    _socketHolds.AddTicks(e.Since, e.SentAt);
                    Recycle(e);
                }
                if (h.SentWhole < h.Sending.Count) bytes += h.Sending[h.SentWhole].Offset - h.Sending[h.SentWhole].PassStart;
                h.Held -= bytes;
                _socketHeldBytes -= bytes;
                freed |= bytes > 0;
                h.Sending.Clear();
                if (h.Refusal == -Errno.EAGAIN) { h.Stuck = true; WakeDrainer(); }
                else if (h.Refusal < 0) { Fail(h, h.Entries.Peek(), h.Refusal); freed = true; }
                if (h.Entries.Count == 0) _unreleased.Remove(h);
                else Release(h); // ends queued behind the sends, and sends whose acknowledgement came meanwhile
            }
            if (freed && _waiters > 0) Monitor.PulseAll(_lock);
            _releases.AddTicks(ackedAt, now);
            busy.Clear();
            _spareBusy = busy;
        }
    }

    /// <summary>Hands the socket's releasable entries to the host, in order, without ever waiting on it (under the lock;
    /// a socket whose sends another thread performs outside the lock is left to that thread).</summary>
    void Release(HeldSocket h)
    {
        if (h.Busy) return;
        bool freed = false;
        while (h.Entries.Count > 0 && !h.Stuck)
        {
            var e = h.Entries.Peek();
            if (!Releasable(e.Seq)) break;
            if (e.End != null)
            {
                h.Entries.Dequeue();
                e.End();
                if (e.Last) _sockets.Remove(h.Key);
                Recycle(e);
                continue;
            }
            long r = e.Send.Perform(e.Offset, e.Count - e.Offset, MSG_DONTWAIT);
            if (r == -Errno.EINTR) continue;
            if (r == -Errno.EAGAIN) { h.Stuck = true; WakeDrainer(); break; }
            freed = true;
            if (r < 0) { Fail(h, e, r); continue; }
            e.Offset += (int)r;
            h.Held -= r;
            _socketHeldBytes -= r;
            if (e.Offset < e.Count && e.Send.Stream) continue;
            if (e.Offset < e.Count) { h.Held -= e.Count - e.Offset; _socketHeldBytes -= e.Count - e.Offset; } // a datagram goes whole or not at all
            h.Entries.Dequeue();
            _socketHolds.AddTicks(e.Since, Stopwatch.GetTimestamp());
            Recycle(e);
        }
        if (h.Entries.Count == 0) _unreleased.Remove(h);
        if (freed && _waiters > 0) Monitor.PulseAll(_lock);
    }

    /// <summary>
    /// The host refused a release: the error is the guest's next answer on this socket. A stream loses the rest of
    /// its held bytes (they can never arrive after the gap); a datagram socket loses only the failed datagram.
    /// </summary>
    void Fail(HeldSocket h, SocketEntry failed, long err)
    {
        h.Error = err;
        int n = h.Entries.Count;
        for (int i = 0; i < n; i++)
        {
            var e = h.Entries.Dequeue();
            bool drop = e == failed || (e.End == null && e.Send.Stream);
            if (!drop) { h.Entries.Enqueue(e); continue; }
            long rest = e.Count - e.Offset;
            h.Held -= rest;
            _socketHeldBytes -= rest;
            Recycle(e);
        }
    }

    /// <summary>Lost the arbiter: nothing held for any socket is ever released.</summary>
    void DropSockets()
    {
        _sockets.Clear();
        _unreleased.Clear();
        _socketHeldBytes = 0;
    }

    // ------------------------------------------------------------------ the drain thread

    void WakeDrainer()
    {
        if (_drainer == null)
        {
            long fd = HostSys.Call(Nr.eventfd2, 0, O.CLOEXEC);
            // without it released bytes for a full socket would wait for a wake-up that never comes
            if (fd < 0) throw new IOException($"cannot create the output gate's eventfd: errno {-fd}");
            _wakeFd = (int)fd;
            _drainer = new Thread(DrainLoop) { IsBackground = true, Name = "output-gate" };
            _drainer.Start();
        }
        else Signal(_wakeFd);
    }

    static unsafe void Signal(int fd)
    {
        if (fd < 0) return;
        ulong one = 1;
        HostSys.Call(Nr.write, fd, (long)&one, 8);
    }

    /// <summary>Polls the host sockets whose send buffer was full and releases more as soon as one has room.</summary>
    unsafe void DrainLoop()
    {
        var stuck = new List<HeldSocket>();
        var fds = new byte[PollFdSize];
        while (true)
        {
            lock (_lock)
            {
                stuck.Clear();
                foreach (var h in _unreleased) if (h.Stuck) stuck.Add(h);
            }
            int n = stuck.Count + 1;
            if (fds.Length < n * PollFdSize) fds = new byte[n * PollFdSize * 2];
            fixed (byte* p = fds)
            {
                var pfd = (int*)p;
                pfd[0] = _wakeFd; ((short*)(pfd + 1))[0] = POLLIN; ((short*)(pfd + 1))[1] = 0;
                for (int i = 0; i < stuck.Count; i++)
                {
                    pfd[2 * (i + 1)] = stuck[i].HostFd;
                    ((short*)(pfd + 2 * (i + 1) + 1))[0] = POLLOUT;
                    ((short*)(pfd + 2 * (i + 1) + 1))[1] = 0;
                }
                long r = HostSys.Call(Nr.poll, (long)p, n, stuck.Count == 0 ? -1 : 100);
                if (r < 0 && r != -Errno.EINTR) Thread.Sleep(10);
                if ((((short*)(pfd + 1))[1] & POLLIN) != 0) { ulong v; HostSys.Call(Nr.read, _wakeFd, (long)&v, 8); }
                lock (_lock)
                {
                    for (int i = 0; i < stuck.Count; i++)
                    {
                        if (((short*)(pfd + 2 * (i + 1) + 1))[1] == 0 && r != 0) continue;
                        stuck[i].Stuck = false;
                        if (_unreleased.Contains(stuck[i])) Release(stuck[i]);
                    }
                }
            }
        }
    }
}
