using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>
/// Host calls that would block, made without blocking the machine's one host thread: a blocking write to a host pipe,
/// FIFO or terminal, a blocking send on a host socket, a blocking connect, and the open of a FIFO. Each is one logged
/// host operation per attempt that either answers or registers the calling thread's wait and answers
/// <see cref="WouldBlock"/> (the thread parks; its logged wake-up runs the call again), as reads do. Everything here
/// runs inside host operations only (a replay never performs them: it takes the answers from the log).
/// </summary>
public sealed partial class Kernel
{
    /// <summary>pwritev2's flag: do not wait for room (a pipe or socket without room answers EAGAIN; a write that
    /// finds some room moves what fits).</summary>
    const int RWF_NOWAIT = 8;

    /// <summary>
    /// The buffer a host read fills before its bytes become the answer's guest write (only the bytes the host returned
    /// are copied out, <see cref="HostResult.Write"/>): one per host thread, reused, so a read of a few bytes into a
    /// guest buffer of KBs allocates those few bytes, not the buffer (a server's every read did). Its content is left
    /// from earlier reads: a caller copies out only what the host wrote, or clears what it copies. Host operations of
    /// one thread never use it nested. A request above <see cref="ScratchKept"/> bytes gets a buffer of its own.
    /// </summary>
    [ThreadStatic] static byte[]? t_readScratch;
    const int ScratchKept = 1 << 16;

    internal static byte[] ReadScratch(int n)
    {
        if (n > ScratchKept) return GC.AllocateUninitializedArray<byte>(n);
        var b = t_readScratch;
        if (b == null || b.Length < n) t_readScratch = b = new byte[Math.Max(4096, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)n))];
        return b;
    }

    /// <summary>
    /// After one attempt of a receive on a host socket made with MSG_DONTWAIT (inside a host operation; its answer
    /// <paramref name="received"/>): the receive itself is the readiness test, so a socket with data costs one host
    /// call where a poll before the receive cost two. Only when it found nothing and the guest's call blocks is the
    /// thread's wait registered (the answer is then <see cref="WouldBlock"/>, with the wait's deadline logged); null
    /// when the answer stands: a host description that is non-blocking on its own answers EAGAIN, as with
    /// <see cref="WouldWait"/>, and so does a wait whose receive timeout (SO_RCVTIMEO) has passed, as Linux does.
    /// </summary>
    internal HostResult? ReceiveWait(GuestThread t, OpenFile f, bool nonBlocking, long received)
    {
        if (received != -Errno.EAGAIN || nonBlocking || (f.StatusFlags & O.NONBLOCK) != 0 || f.HostFd < 0 || HostNonBlocking(f.HostFd))
            return null;
        // Linux counts the timeout from the call's first wait, over the whole call (the retries of a MSG_WAITALL)
        long deadline = DeadlineOf(t, () => ReceiveTimeoutNs(f.HostFd) is long ns and > 0 ? HostClock.NowNs() + ns : HostWaitSpec.Never);
        if (deadline != HostWaitSpec.Never && HostClock.NowNs() >= deadline) return null;
        return BlockUntil(t, [(f.HostFd, Poll.IN)], deadline);
    }

    /// <summary>The host socket's receive timeout (SO_RCVTIMEO) in ns, 0 for none (inside a host operation).</summary>
    static unsafe long ReceiveTimeoutNs(int fd)
    {
        long* tv = stackalloc long[2];
        int len = 2 * sizeof(long);
        if (HostSys.Call(Nr.getsockopt, fd, Sock.SOL_SOCKET, SockAbi.SO_RCVTIMEO, (long)tv, (long)&len) < 0) return 0;
        return tv[0] * 1_000_000_000 + tv[1] * 1_000;
    }

    /// <summary>The host descriptor's file type (S_IFMT bits), looked up once per description (inside a host
    /// operation).</summary>
    static unsafe uint HostFileType(OpenFile f)
    {
        if (f.HostFileType >= 0) return (uint)f.HostFileType;
        uint type = HostStat.Of(f.HostFd) is { } st ? st.Type : 0;
        f.HostFileType = (int)type;
        return type;
    }

    /// <summary>A host descriptor on which a blocking write can wait for room: a pipe, FIFO, socket or terminal (a
    /// regular file, a directory or a block device never does).</summary>
    static bool WritesMayWait(OpenFile f) => f.HostFd >= 0 && HostFileType(f) is SMode.IFIFO or SMode.IFSOCK or SMode.IFCHR;

    /// <summary>Is the host description itself non-blocking (a terminal or socket another program shares may be)?
    /// Then the host's EAGAIN is the answer, as it would be natively.</summary>
    static bool HostNonBlocking(int fd) => (HostSys.Call(Nr.fcntl, fd, F.GETFL) & O.NONBLOCK) != 0;

    /// <summary>
    /// One attempt of a blocking write at the file offset on a descriptor that may wait (<see cref="WritesMayWait"/>):
    /// writes what the host takes now (pwritev2 RWF_NOWAIT, which is its own readiness test; where the host refuses the
    /// flag, which it does for a description once and for all (<see cref="OpenFile.HostRefusesNoWait"/>: a terminal,
    /// /dev/null), the write goes ahead once the descriptor polls writable, a pipe getting at most PIPE_BUF bytes, which
    /// a pipe always takes whole), or, when it takes nothing, registers the thread's wait for room and answers
    /// <see cref="WouldBlock"/>. A count short of the whole is the caller's to handle (<see cref="RestWaits"/>).
    /// </summary>
    unsafe HostResult WriteWithoutWaiting(GuestThread t, OpenFile f, byte[] data)
    {
        long r = -Errno.EOPNOTSUPP;
        fixed (byte* p = data)
        {
            if (!f.HostRefusesNoWait)
            {
                long* iov = stackalloc long[2];
                iov[0] = (long)p;
                iov[1] = data.Length;
                r = HostSys.Call(Nr.pwritev2, f.HostFd, (long)iov, 1, -1, -1, RWF_NOWAIT);
                f.HostRefusesNoWait = r == -Errno.EOPNOTSUPP;
            }
            if (r == -Errno.EOPNOTSUPP)
            {
                if (data.Length > 0 && !HostReady(f.HostFd, Poll.OUT)) return WaitForRoom(t, f);
                r = HostSys.Call(Nr.write, f.HostFd, (long)p, HostFileType(f) == SMode.IFIFO ? Math.Min(data.Length, Pipe.AtomicWrite) : data.Length);
            }
        }
        return r == -Errno.EAGAIN ? WaitForRoom(t, f) : HostResult.Of(r);
    }

    /// <summary>Registers the wait for room on the description's host descriptor (EAGAIN when the host description
    /// is non-blocking on its own).</summary>
    HostResult WaitForRoom(GuestThread t, OpenFile f)
        => HostNonBlocking(f.HostFd) ? HostResult.Of(-Errno.EAGAIN)
            : BlockOnHost(t, new HostWaitSpec([(f.HostFd, Poll.OUT)], HostWaitSpec.Never));

    /// <summary>
    /// A blocking write or send that the host took only in part (`moved` of the call's bytes so far, this attempt
    /// included): whether the rest waits for room is the host's to say (a pipe or socket does, a full disk does
    /// not), so it is a logged answer of its own. Waiting, the count moved is kept across the retries
    /// (<see cref="GuestThread.PartialDone"/>: what a signal's handler makes the call return) and the answer is
    /// <see cref="WouldBlock"/>; otherwise null (the call returns the short count).
    /// </summary>
    long? RestWaits(GuestThread t, int nr, OpenFile f, long moved)
    {
        long r = Host(t.Cpu, nr, () => WritesMayWait(f) ? WaitForRoom(t, f) : HostResult.Of(0)).Value;
        if (r != WouldBlock) return null;
        t.PartialDone = moved;
        return WouldBlock;
    }

    /// <summary>
    /// One attempt of a blocking connect: the host socket is made non-blocking for the call (its description is
    /// the VM's own), so a connection that takes time answers EINPROGRESS and the thread waits for the socket to
    /// become writable; the next attempt reads the outcome (SO_ERROR). An AF_UNIX listener whose backlog is full
    /// answers EAGAIN, where Linux would wait for room: the thread retries every <see cref="ConnectRetryNs"/>.
    /// </summary>
    unsafe HostResult ConnectWithoutWaiting(GuestThread t, HostSocket f, Func<long> connect)
    {
        if (f.ConnectPending)
        {
            if (!HostReady(f.HostFd, Poll.OUT)) return BlockOnHost(t, new HostWaitSpec([(f.HostFd, Poll.OUT)], HostWaitSpec.Never));
            f.ConnectPending = false;
            int err = 0, len = 4;
            long g = HostSys.Call(Nr.getsockopt, f.HostFd, Sock.SOL_SOCKET, SockAbi.SO_ERROR, (long)&err, (long)&len);
            return HostResult.Of(g < 0 ? g : -err);
        }
        long flags = HostSys.Call(Nr.fcntl, f.HostFd, F.GETFL);
        if (flags < 0 || (flags & O.NONBLOCK) != 0) return HostResult.Of(connect());
        HostSys.Call(Nr.fcntl, f.HostFd, F.SETFL, flags | O.NONBLOCK);
        long r;
        try { r = connect(); }
        finally { HostSys.Call(Nr.fcntl, f.HostFd, F.SETFL, flags); }
        if (r == -Errno.EINPROGRESS)
        {
            f.ConnectPending = true;
            return BlockOnHost(t, new HostWaitSpec([(f.HostFd, Poll.OUT)], HostWaitSpec.Never));
        }
        if (r == -Errno.EAGAIN && f.Family == Af.UNIX)
            return BlockOnHost(t, new HostWaitSpec([], HostClock.NowNs() + ConnectRetryNs));
        return HostResult.Of(r);
    }

    /// <summary>How often a blocking connect to an AF_UNIX listener with a full backlog tries again.</summary>
    const long ConnectRetryNs = 10_000_000;

    /// <summary>
    /// One attempt of an open: a blocking open of a FIFO (which waits on the host for its other end) runs on a host
    /// thread of its own (<see cref="BlockingOpen"/>) while the calling guest thread waits for it; the attempt after
    /// its end takes the descriptor. Anything else opens at once. A following backup re-executing the open (of its
    /// own copy of the guest's files) does not open FIFOs: it has nothing to wait for there.
    /// </summary>
    HostResult OpenWithoutWaiting(GuestThread t, string abs, int flags, Func<long> open)
    {
        bool mayWait = (flags & O.NONBLOCK) == 0 && (flags & O.PATH) != O.PATH;
        if (Boundary.Replaying) return HostResult.Of(mayWait && IsFifo(abs) ? -Errno.ENXIO : open());
        string key = $"{abs}\0{flags}";
        if (t.PendingOpen is { } pending && pending.Key == key)
        {
            if (!pending.Done) return BlockOnHost(t, new HostWaitSpec([(pending.EventFd, Poll.IN)], HostWaitSpec.Never));
            t.PendingOpen = null;
            return HostResult.Of(pending.Take());
        }
        t.PendingOpen?.Abandon();
        t.PendingOpen = null;
        if (!mayWait || !IsFifo(abs)) return HostResult.Of(open());
        var started = BlockingOpen.Start(key, open);
        if (started == null) return HostResult.Of(-Errno.EAGAIN);
        t.PendingOpen = started;
        return BlockOnHost(t, new HostWaitSpec([(started.EventFd, Poll.IN)], HostWaitSpec.Never));
    }

    bool IsFifo(string abs)
        => StatOf(abs) is { } st && HostStat.From(st).Type == SMode.IFIFO;
}

/// <summary>
/// An open(2) that may wait on the host (a FIFO without its other end), run on a host thread of its own; an eventfd
/// becomes readable when it ended. A call the guest gave up (a signal ended it, its thread died) is abandoned: the
/// descriptor it opens, whenever that is, is closed.
/// </summary>
public sealed class BlockingOpen
{
    public readonly string Key;
    public readonly int EventFd;
    readonly object _lock = new();
    long _result;
    bool _done, _abandoned, _released;

    BlockingOpen(string key, int eventFd) { Key = key; EventFd = eventFd; }

    public bool Done { get { lock (_lock) return _done; } }

    /// <summary>Starts the open on a host thread (null when no eventfd can be made).</summary>
    public static BlockingOpen? Start(string key, Func<long> open)
    {
        long efd = HostSys.Call(Nr.eventfd2, 0, O.CLOEXEC | O.NONBLOCK);
        if (efd < 0) return null;
        var call = new BlockingOpen(key, (int)efd);
        new Thread(() => call.Finish(open())) { IsBackground = true, Name = "revirt blocking open" }.Start();
        return call;
    }

    unsafe void Finish(long result)
    {
        lock (_lock)
        {
            _result = result;
            _done = true;
            if (_abandoned) { Release(); return; }
        }
        long one = 1;
        HostSys.Call(Nr.write, EventFd, (long)&one, 8);
    }

    /// <summary>The open's answer (once <see cref="Done"/>); the call's own host resources are given back.</summary>
    public long Take()
    {
        lock (_lock)
        {
            _released = true;
            HostSys.Call(Nr.close, EventFd);
            return _result;
        }
    }

    /// <summary>Nobody takes the answer: the descriptor is closed now, or when the open ends.</summary>
    public void Abandon()
    {
        lock (_lock)
        {
            _abandoned = true;
            if (_done) Release();
        }
    }

    void Release()
    {
        if (_released) return;
        _released = true;
        if (_result >= 0) HostSys.Call(Nr.close, _result);
        HostSys.Call(Nr.close, EventFd);
    }
}
