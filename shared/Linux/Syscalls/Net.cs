using System.Buffers.Binary;
using System.Text;
using ReVirt.Abi;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// Guest networking: real host sockets behind guest descriptors (live and recording runs), every answer through
/// the boundary so that a replay gets the same results and received bytes from the log without a socket.
/// Also select/pselect6/ppoll, epoll and eventfd. Address structures are passed through verbatim (host and guest
/// are both x86-64 Linux), except Af.UNIX path names, which are guest paths under the root.
/// </summary>
public sealed partial class Kernel : ISendTarget
{
    const int MaxSockAddr = 128;      // sizeof(struct sockaddr_storage)
    const int MaxSockOpt = 4096;      // bound on option buffers
    const int MaxNetIo = 1 << 24;
    const int MaxIov = 1024;

    void RegisterNetSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Host);
        r.Add(Nr.socket, (t, a) => Socket(t.Cpu, (int)a.A1, (int)a.A2, (int)a.A3));
        r.Add(Nr.socketpair, (t, a) => SocketPair(t.Cpu, (int)a.A1, (int)a.A2, (int)a.A3, a.A4));
        r.Add(Nr.bind, (t, a) => Bind(t.Cpu, (int)a.A1, a.A2, (uint)a.A3));
        r.Add(Nr.listen, (t, a) => Listen(t.Cpu, (int)a.A1, (int)a.A2));
        r.Add(Nr.accept, (t, a) => Accept(t.Cpu, (int)a.A1, a.A2, a.A3, 0));
        r.Add(Nr.accept4, (t, a) => Accept(t.Cpu, (int)a.A1, a.A2, a.A3, (int)a.A4));
        r.Add(Nr.connect, (t, a) => Connect(t.Cpu, (int)a.A1, a.A2, (uint)a.A3));
        r.Add(Nr.getsockname, (t, a) => SockName(t.Cpu, a.Nr, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.getpeername, (t, a) => SockName(t.Cpu, a.Nr, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.sendto, (t, a) => SendTo(t.Cpu, (int)a.A1, a.A2, a.A3, (int)a.A4, a.A5, (uint)a.A6));
        r.Add(Nr.recvfrom, (t, a) => RecvFrom(t.Cpu, (int)a.A1, a.A2, a.A3, (int)a.A4, a.A5, a.A6));
        r.Add(Nr.sendmsg, (t, a) => SendMsg(t.Cpu, (int)a.A1, a.A2, (int)a.A3));
        r.Add(Nr.recvmsg, (t, a) => RecvMsg(t.Cpu, (int)a.A1, a.A2, (int)a.A3));
        r.Add(Nr.shutdown, (t, a) =>
        {
            if (!TryGetSocket((int)a.A1, out var f, out long e)) return e;
            // with bytes held for the socket in the output gate, the shutdown takes effect after them
            return f.Shutdown(() => Boundary.SocketEnd(t.Cpu.Tid, a.Nr, f, () => HostResult.Of(HostSys.Call(Nr.shutdown, f.HostFd, (long)a.A2)), false).Value);
        });
        r.Add(Nr.setsockopt, (t, a) => SetSockOpt(t.Cpu, (int)a.A1, (int)a.A2, (int)a.A3, a.A4, (uint)a.A5));
        r.Add(Nr.getsockopt, (t, a) => GetSockOpt(t.Cpu, (int)a.A1, (int)a.A2, (int)a.A3, a.A4, a.A5));
        r.Add(Nr.select, (t, a) => Select(t, (int)a.A1, a.A2, a.A3, a.A4, a.A5, false));
        r.Add(Nr.pselect6, (t, a) => Select(t, (int)a.A1, a.A2, a.A3, a.A4, a.A5, true));
        r.Add(Nr.ppoll, (t, a) => Ppoll(t, a.A1, (int)a.A2, a.A3));
        r.Add(Nr.epoll_create, (t, a) => (int)a.A1 <= 0 ? -Errno.EINVAL : EpollCreate(t.Cpu, 0));
        r.Add(Nr.epoll_create1, (t, a) => EpollCreate(t.Cpu, (int)a.A1));
        r.Add(Nr.epoll_ctl, (t, a) => EpollCtl(t.Cpu, (int)a.A1, (int)a.A2, (int)a.A3, a.A4));
        r.Add(new[] { Nr.epoll_wait, Nr.epoll_pwait }, (t, a) => EpollWait(t, (int)a.A1, a.A2, (int)a.A3, (int)a.A4));
        r.Add(Nr.eventfd, (t, a) => EventFd(t.Cpu, (uint)a.A1, 0));
        r.Add(Nr.eventfd2, (t, a) => EventFd(t.Cpu, (uint)a.A1, (int)a.A2));
    }

    // ---------------------------------------------------------------- helpers

    bool TryGetSocket(int fd, out HostSocket f, out long err)
    {
        err = 0;
        f = null!;
        if (!Fds.TryGetValue(fd, out var of)) { err = -Errno.EBADF; return false; }
        if (of is not HostSocket s) { err = -Errno.ENOTSOCK; return false; }
        f = s;
        return true;
    }

    /// <summary>
    /// A host operation whose answer carries a side value for the kernel itself (a write at guest address 0,
    /// which is never mapped): it is logged with the answer, so a replay sees the same bytes.
    /// </summary>
    HostResult HostSide(CpuT cpu, int nr, Func<HostResult> perform, out byte[]? side)
    {
        var res = Boundary.Syscall(cpu.Tid, nr, perform);
        side = null;
        foreach (var (addr, bytes) in res.Writes)
        {
            if (addr == 0) side = bytes;
            else Mem.Poke(addr, bytes);
        }
        return res;
    }

    /// <summary>Gives a new description its host descriptor (the boundary decides whether this run holds one)
    /// and the lowest free guest descriptor.</summary>
    T NewFd<T>(T f, long hostFd, bool cloexec, out int gfd) where T : OpenFile
    {
        f.HostFd = Boundary.HostDescriptor(hostFd);
        gfd = Fds.Install(f, cloexec);
        return f;
    }

    HostSocket NewSocket(long hostFd, int family, int type, int protocol, bool cloexec, out int gfd)
        => NewFd(new HostSocket { Family = family, Type = type, Protocol = protocol }, hostFd, cloexec, out gfd);

    /// <summary>The guest path of an Af.UNIX pathname address, made absolute against the current directory (null for
    /// other families and abstract names).</summary>
    public string? UnixGuestPath(byte[] addr)
        => UnixName(addr) is string p ? (p.StartsWith('/') ? p : GuestFs.Join(P.Cwd, p)) : null;

    /// <summary>The sun_path of an Af.UNIX pathname address as written (null for other families and abstract names).</summary>
    static string? UnixName(byte[] addr)
    {
        if (addr.Length <= 2 || BinaryPrimitives.ReadUInt16LittleEndian(addr) != Af.UNIX || addr[2] == 0) return null;
        int end = Array.IndexOf(addr, (byte)0, 2);
        return Encoding.UTF8.GetString(addr, 2, (end < 0 ? addr.Length : end) - 2);
    }

    /// <summary>An Af.UNIX pathname address as Linux reports it: family, the path, a NUL.</summary>
    static byte[] UnixAddress(string name)
    {
        var pb = Encoding.UTF8.GetBytes(name);
        var a = new byte[2 + pb.Length + 1];
        BinaryPrimitives.WriteUInt16LittleEndian(a, Af.UNIX);
        pb.CopyTo(a, 2);
        return a;
    }

    /// <summary>
    /// The guest's own address of every socket it bound by path, by the host name it was bound under
    /// (<see cref="GuestFs.ViaDescriptor"/>): the host reports that name (getsockname, getpeername, accept,
    /// recvfrom), the guest must see the path it gave. Only host operations read it, and their answers are logged.
    /// </summary>
    readonly Dictionary<string, byte[]> _unixBound = new();

    /// <summary>
    /// Runs a host operation with the host form of a guest address (inside a host operation): an Af.UNIX path is
    /// resolved under the root in one step and named through a descriptor (<see cref="GuestFs.ViaDescriptor"/>;
    /// `bind` for a name to create); any other address is passed as it is.
    /// </summary>
    public long WithHostAddress(byte[] addr, string? unixPath, bool bind, Func<byte[], long> op)
    {
        if (unixPath == null) return op(addr);
        return Fs.ViaDescriptor(unixPath, bind, hp =>
        {
            var host = UnixAddress(hp);
            if (host.Length - 2 > UnixPathMax) return -Errno.ENAMETOOLONG;
            long r = op(host);
            if (bind && r == 0) lock (_unixBound) _unixBound[hp] = UnixAddress(UnixName(addr)!);
            return r;
        });
    }

    /// <summary>Room in sockaddr_un's sun_path, with its NUL.</summary>
    const int UnixPathMax = 108;

    /// <summary>The guest form of an address the host returned (inside a host operation): a socket the guest bound by
    /// path shows the path the guest gave; anything else is passed through, as a chroot shows it.</summary>
    byte[] GuestAddress(byte[] host)
    {
        if (UnixName(host) is not string hp || !GuestFs.IsDescriptorName(hp)) return host;
        lock (_unixBound) return _unixBound.TryGetValue(hp, out var g) ? g : host;
    }

    /// <summary>Reads an input address (NULL allowed when optional).</summary>
    long ReadSockAddr(ulong addr, uint len, out byte[]? bytes)
    {
        bytes = null;
        if (addr == 0) return len == 0 ? 0 : -Errno.EFAULT;
        if (len > MaxSockAddr) return -Errno.EINVAL;
        bytes = Mem.ReadBytes(addr, (int)len);
        return 0;
    }

    /// <summary>Checks an output address (addr, *addrlen) pair before the host op; returns the guest's capacity.</summary>
    long OutAddrCapacity(ulong addr, ulong lenPtr, out uint cap)
    {
        cap = 0;
        if (addr == 0 || lenPtr == 0) return 0;
        int c = (int)Mem.Read32(lenPtr);
        if (c < 0) return -Errno.EINVAL;
        cap = (uint)c;
        CheckWritable(lenPtr, 4);
        CheckWritable(addr, Math.Min(cap, MaxSockAddr));
        return 0;
    }

    /// <summary>Adds the writes of an output address: min(capacity, length) bytes and the full length.</summary>
    void WriteOutAddr(HostResult res, ulong addr, ulong lenPtr, uint cap, ReadOnlySpan<byte> hostAddr, int hostLen)
    {
        if (addr == 0 || lenPtr == 0) return;
        var g = GuestAddress(hostAddr[..Math.Min(hostLen, hostAddr.Length)].ToArray());
        int len = hostLen > hostAddr.Length ? hostLen : g.Length;
        int n = (int)Math.Min((uint)g.Length, cap);
        if (n > 0) res.Write(addr, g.AsSpan(0, n).ToArray());
        res.Write(lenPtr, BitConverter.GetBytes(len));
    }

    // ---------------------------------------------------------------- socket, socketpair, bind, listen, accept, connect

    long Socket(CpuT cpu, int domain, int type, int protocol)
    {
        long r = HostValue(cpu, Nr.socket, () => HostSys.Call(Nr.socket, domain, type | Sock.CLOEXEC, protocol));
        if (r < 0) return r;
        var sf = NewSocket(r, domain, type & Sock.TYPE_MASK, protocol, (type & Sock.CLOEXEC) != 0, out int gfd);
        sf.StatusFlags = 2 | (type & Sock.NONBLOCK); // O_RDWR
        return gfd;
    }

    unsafe long SocketPair(CpuT cpu, int domain, int type, int protocol, ulong sv)
    {
        CheckWritable(sv, 8);
        long r = HostValue(cpu, Nr.socketpair, () =>
        {
            var fds = new int[2];
            long e;
            fixed (int* p = fds) e = HostSys.Call(Nr.socketpair, domain, type | Sock.CLOEXEC, protocol, (long)p);
            return e < 0 ? e : ((long)fds[1] << 32) | (uint)fds[0];
        });
        if (r < 0) return r;
        bool cloexec = (type & Sock.CLOEXEC) != 0;
        NewSocket(r & 0xFFFFFFFF, domain, type & Sock.TYPE_MASK, protocol, cloexec, out int g0);
        NewSocket(r >> 32, domain, type & Sock.TYPE_MASK, protocol, cloexec, out int g1);
        Mem.Write32(sv, (uint)g0);
        Mem.Write32(sv + 4, (uint)g1);
        return 0;
    }

    /// <summary>The host's getsockname of a host socket, as a side value (inside a host operation).</summary>
    unsafe void AddLocalAddress(HostResult res, int hostFd)
    {
        var buf = new byte[MaxSockAddr];
        int len = MaxSockAddr;
        fixed (byte* p = buf) if (HostSys.Call(Nr.getsockname, hostFd, (long)p, (long)&len) == 0)
            res.Write(0, GuestAddress(buf.AsSpan(0, Math.Min(len, MaxSockAddr)).ToArray()));
    }

    unsafe long Bind(CpuT cpu, int fd, ulong addr, uint len)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        e = ReadSockAddr(addr, len, out var a);
        if (e < 0 || a == null) return e < 0 ? e : -Errno.EFAULT;
        string? unix = UnixGuestPath(a);
        var res = HostSide(cpu, Nr.bind, () =>
        {
            long r = WithHostAddress(a, unix, bind: true, h => { fixed (byte* p = h) return HostSys.Call(Nr.bind, f.HostFd, (long)p, h.Length); });
            var hr = HostResult.Of(r);
            if (r == 0 && unix == null) AddLocalAddress(hr, f.HostFd);
            return hr;
        }, out var local);
        // a path is kept absolute, so that a backup going live binds the same name again whatever the cwd is then
        if (res.Value == 0) f.BoundAddress = unix != null ? UnixAddress(unix) : local ?? a;
        return res.Value;
    }

    long Listen(CpuT cpu, int fd, int backlog)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        var res = HostSide(cpu, Nr.listen, () =>
        {
            var hr = HostResult.Of(HostSys.Call(Nr.listen, f.HostFd, backlog));
            if (hr.Value == 0) AddLocalAddress(hr, f.HostFd); // listen binds an unbound socket
            return hr;
        }, out var local);
        if (res.Value == 0)
        {
            f.Listening = true;
            f.Backlog = backlog;
            if (local != null && f.BoundAddress == null) f.BoundAddress = local;
        }
        return res.Value;
    }

    unsafe long Accept(CpuT cpu, int fd, ulong addr, ulong lenPtr, int flags)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        if ((flags & ~(Sock.NONBLOCK | Sock.CLOEXEC)) != 0) return -Errno.EINVAL;
        return f.Accept(() => AcceptHost(cpu, f, addr, lenPtr, flags));
    }

    unsafe long AcceptHost(CpuT cpu, HostSocket f, ulong addr, ulong lenPtr, int flags)
    {
        long e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        var res = Host(cpu, Nr.accept4, () =>
        {
            if (WouldWait(Current, f, Poll.IN) is long w) return HostResult.Of(w);
            var buf = new byte[MaxSockAddr];
            int len = MaxSockAddr;
            long r;
            fixed (byte* p = buf) r = HostSys.Call(Nr.accept4, f.HostFd, (long)p, (long)&len, (flags & Sock.NONBLOCK) | Sock.CLOEXEC);
            var hr = HostResult.Of(r);
            if (r >= 0) WriteOutAddr(hr, addr, lenPtr, cap, buf, len);
            return hr;
        });
        if (res.Value < 0) return res.Value;
        var af = NewSocket(res.Value, f.Family, f.Type, f.Protocol, (flags & Sock.CLOEXEC) != 0, out int gfd);
        af.StatusFlags = 2 | (flags & Sock.NONBLOCK);
        return gfd;
    }

    unsafe long Connect(CpuT cpu, int fd, ulong addr, uint len)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        e = ReadSockAddr(addr, len, out var a);
        if (e < 0 || a == null) return e < 0 ? e : -Errno.EFAULT;
        string? unix = UnixGuestPath(a);
        var t = Current;
        long HostConnect() => WithHostAddress(a, unix, bind: false, h =>
        {
            fixed (byte* p = h) return HostSys.Call(Nr.connect, f.HostFd, (long)p, h.Length);
        });
        // a blocking connect waits with its thread only (the host socket is made non-blocking for the call)
        bool blocking = (f.StatusFlags & Sock.NONBLOCK) == 0;
        return Host(cpu, Nr.connect, () => blocking && f.HostFd >= 0 ? ConnectWithoutWaiting(t, f, HostConnect) : HostResult.Of(HostConnect())).Value;
    }

    unsafe long SockName(CpuT cpu, int nr, int fd, ulong addr, ulong lenPtr)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        if (addr == 0 || lenPtr == 0) return -Errno.EFAULT;
        e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        return Host(cpu, nr, () =>
        {
            var buf = new byte[MaxSockAddr];
            int len = MaxSockAddr;
            long r;
            fixed (byte* p = buf) r = HostSys.Call(nr, f.HostFd, (long)p, (long)&len);
            var hr = HostResult.Of(r);
            if (r == 0) WriteOutAddr(hr, addr, lenPtr, cap, buf, len);
            return hr;
        }).Value;
    }

    // ---------------------------------------------------------------- data

    /// <summary>
    /// Sends bytes on a socket (send, sendto, sendmsg, and write/writev on a socket). The host never raises
    /// Sig.PIPE (Msg.NOSIGNAL); the guest gets it like from the kernel unless it asked for Msg.NOSIGNAL.
    /// </summary>
    internal long SendBytes(CpuT cpu, HostSocket f, byte[] data, int flags, byte[]? addr, int nr)
        => f.RefusesSend(this, Current, flags) ?? SendHost(cpu, f, data, flags, addr, nr);

    /// <summary>The send as a value the boundary (and a protected primary's output gate) keeps: no closure or object
    /// is made per send; this kernel performs it (<see cref="ISendTarget"/>), now or when the gate releases it.</summary>
    long SendHost(CpuT cpu, HostSocket f, byte[] data, int flags, byte[]? addr, int nr)
    {
        var t = Current;
        string? unix = addr != null ? UnixGuestPath(addr) : null;
        bool blocking = ((flags & Msg.DONTWAIT) | (f.StatusFlags & Sock.NONBLOCK)) == 0;
        // a blocking send waits with its thread only (not inside sendfile: see GuestThread.WriteMustNotPark)
        bool parks = blocking && !t.WriteMustNotPark;
        bool stream = (f.Type & Sock.TYPE_MASK) == Sock.STREAM;
        // a blocking stream send the host took in part goes on with the rest after its thread waited for room
        int done = parks && stream ? (int)Math.Min(t.PartialDone, data.Length) : 0;
        var rest = done == 0 ? data : data[done..];
        var res = Boundary.Send(cpu.Tid, nr, new SocketSend
        {
            Socket = f, Data = rest, HostFd = f.HostFd, Stream = stream, NonBlocking = !blocking, Target = this,
            Flags = flags, Address = addr, UnixPath = unix, Parks = parks,
        });
        foreach (var (wa, wb) in res.Writes) Mem.Poke(wa, wb);
        long r = res.Value;
        if (r == WouldBlock) return r;
        if (r == -Errno.EPIPE && (flags & Msg.NOSIGNAL) == 0) RaiseSignal(t, Sig.PIPE);
        if (r < 0) return done > 0 ? done : r;
        if (parks && stream && r < rest.Length && RestWaits(t, nr, f, done + r) is long wait) return wait;
        return done + r;
    }

    /// <summary>A guest socket's send on the host socket (any thread: an output gate releases later). A send to the
    /// connected peer is one host call; an address goes through <see cref="WithHostAddress"/>.</summary>
    unsafe long ISendTarget.Perform(in SocketSend s, int offset, int count, int extraFlags)
    {
        int flags = s.Flags | Msg.NOSIGNAL | extraFlags;
        if (s.Address != null) return SendToAddress(s.Data, s.HostFd, offset, count, flags, s.Address, s.UnixPath);
        fixed (byte* p = s.Data) return HostSys.Call(Nr.sendto, s.HostFd, (long)(p + offset), count, flags, 0, 0);
    }

    /// <summary>A send to an address (its own method: the closure it needs is made only for such a send).</summary>
    unsafe long SendToAddress(byte[] data, int fd, int offset, int count, int flags, byte[] addr, string? unix)
        => WithHostAddress(addr, unix, bind: false, h =>
        {
            fixed (byte* p = data) fixed (byte* q = h)
                return HostSys.Call(Nr.sendto, fd, (long)(p + offset), count, flags, (long)q, h.Length);
        });

    /// <summary>Unheld (no output gate), on the sending guest thread: a blocking send never waits on the host; it
    /// sends what the host takes now and parks its thread when the host takes nothing.</summary>
    HostResult ISendTarget.Unheld(in SocketSend s)
    {
        ISendTarget target = this;
        if (!s.Parks) return HostResult.Of(target.Perform(s, 0, s.Data.Length, 0));
        long r = target.Perform(s, 0, s.Data.Length, Msg.DONTWAIT);
        return r == -Errno.EAGAIN ? WaitForRoom(Current, (HostSocket)s.Socket) : HostResult.Of(r);
    }

    long SendTo(CpuT cpu, int fd, ulong buf, ulong len, int flags, ulong addr, uint addrLen)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        byte[]? a = null;
        if (addr != 0)
        {
            e = ReadSockAddr(addr, addrLen, out a);
            if (e < 0) return e;
        }
        var data = Mem.ReadBytes(buf, (int)Math.Min(len, MaxNetIo));
        return SendBytes(cpu, f, data, flags, a, Nr.sendto);
    }

    unsafe long RecvFrom(CpuT cpu, int fd, ulong buf, ulong len, int flags, ulong addr, ulong lenPtr)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        int n = (int)Math.Min(len, MaxNetIo);
        CheckWritable(buf, (ulong)n);
        e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        return ReceiveHost(f, Nr.recvfrom, n, flags, (done, hostFlags) =>
        {
            var tmp = ReadScratch(Math.Max(n - done, 1));
            Span<byte> ab = stackalloc byte[MaxSockAddr];
            int alen = MaxSockAddr;
            long r;
            fixed (byte* p = tmp) fixed (byte* q = ab)
                r = HostSys.Call(Nr.recvfrom, f.HostFd, (long)p, n - done, hostFlags, addr != 0 ? (long)q : 0, addr != 0 ? (long)&alen : 0);
            var hr = HostResult.Of(r);
            if (r > 0) hr.Write(buf + (ulong)done, tmp.AsSpan(0, (int)Math.Min(r, n - done)).ToArray());
            if (r >= 0) WriteOutAddr(hr, addr, lenPtr, cap, ab, alen);
            return hr;
        });
    }

    /// <summary>read(2) on a socket: a receive without flags, logged as the read it is.</summary>
    internal unsafe long ReceiveRead(HostSocket f, ulong buf, int n)
    {
        CheckWritable(buf, (ulong)n);
        return ReceiveHost(f, Nr.read, n, 0, (_, hostFlags) =>
        {
            var tmp = ReadScratch(n);
            long r;
            fixed (byte* p = tmp) r = HostSys.Call(Nr.recvfrom, f.HostFd, (long)p, n, hostFlags, 0, 0);
            var hr = HostResult.Of(r);
            if (r > 0) hr.Write(buf, tmp.AsSpan(0, (int)Math.Min(r, n)).ToArray());
            return hr;
        });
    }

    /// <summary>
    /// A receive on a host socket (recvfrom, recvmsg, read) through the boundary, never waiting on the host: each
    /// attempt is one logged host operation, `attempt(done, hostFlags)`, that receives what is there now into the
    /// guest's buffer from byte `done` on (MSG_DONTWAIT; its answer carries the bytes as guest writes); finding
    /// nothing, a blocking call parks its thread until the socket is readable or its SO_RCVTIMEO ends
    /// (<see cref="ReceiveWait"/>), and the rest of the machine runs on (the peer may be a process of this guest).
    /// A blocking MSG_WAITALL receive on a stream socket goes on until it has all `n` bytes, keeping those received
    /// in <see cref="GuestThread.PartialDone"/> across its waits; as Linux, it returns fewer at end of file, on an
    /// error, when its receive timeout ends, and when a signal's handler interrupts it (<see cref="InterruptCall"/>).
    /// Whether the rest waits is a logged answer of its own (<see cref="ReceiveRestWaits"/>): the deadline is the
    /// host's to judge. MSG_PEEK|MSG_WAITALL keeps waiting on the host (a gap: a peek cannot go on from a part).
    /// </summary>
    long ReceiveHost(HostSocket f, int nr, int n, int flags, Func<int, int, HostResult> attempt)
    {
        var t = Current;
        bool nonBlocking = (flags & Msg.DONTWAIT) != 0;
        bool waitAll = (flags & SockAbi.MSG_WAITALL) != 0;
        if (waitAll && (flags & SockAbi.MSG_PEEK) != 0)
            return f.Receive(() => Host(t.Cpu, nr, () =>
                WouldWait(t, f, Poll.IN, nonBlocking) is long w ? HostResult.Of(w) : attempt(0, flags)).Value);
        bool all = waitAll && !nonBlocking && (f.StatusFlags & Sock.NONBLOCK) == 0 && (f.Type & Sock.TYPE_MASK) == Sock.STREAM;
        int done = all ? (int)Math.Min(t.PartialDone, n) : 0;
        int hostFlags = (flags & ~SockAbi.MSG_WAITALL) | Msg.DONTWAIT;
        long r = f.Receive(() => Host(t.Cpu, nr, () =>
        {
            var hr = attempt(done, hostFlags);
            return ReceiveWait(t, f, nonBlocking, hr.Value) ?? hr;
        }).Value);
        if (!all || r == WouldBlock) return r;
        if (r < 0) return done > 0 ? done : r;
        long total = done + r;
        if (r == 0 || total >= n) return total;
        return ReceiveRestWaits(t, nr, f, total) ?? total;
    }

    /// <summary>The thread is parked in a socket receive that waits with a receive time-out (SO_RCVTIMEO; its deadline
    /// is logged, so replays know it too): Linux ends it with EINTR when a handler interrupts it, even with
    /// SA_RESTART (sock_intr_errno), where a receive without one is restarted.</summary>
    internal static bool TimedReceive(GuestThread t)
        => t.ParkedNr is Nr.recvfrom or Nr.recvmsg or Nr.read && t.LoggedDeadline != null;

    /// <summary>A blocking MSG_WAITALL receive that has `received` bytes of the call's, not all: a logged answer says
    /// whether the rest waits (the thread parks, the count kept in <see cref="GuestThread.PartialDone"/>, the answer
    /// <see cref="WouldBlock"/>) or not (its receive timeout has ended: null, the call returns the count).</summary>
    long? ReceiveRestWaits(GuestThread t, int nr, HostSocket f, long received)
    {
        long r = Host(t.Cpu, nr, () => ReceiveWait(t, f, false, -Errno.EAGAIN) ?? HostResult.Of(0)).Value;
        if (r != WouldBlock) return null;
        t.PartialDone = received;
        return WouldBlock;
    }

    /// <summary>The iovecs of a guest msghdr (checked writable when receiving).</summary>
    List<(ulong Base, ulong Len)> ReadIovecs(ulong iov, ulong cnt, bool forWrite, out long total)
    {
        var vecs = new List<(ulong, ulong)>();
        total = 0;
        for (ulong k = 0; k < cnt; k++)
        {
            ulong b = Mem.Read64(iov + k * 16), l = Mem.Read64(iov + k * 16 + 8);
            if ((long)l < 0) throw new ArgumentException("iovec length");
            if (forWrite && l > 0) CheckWritable(b, l);
            vecs.Add((b, l));
            total += (long)l;
        }
        return vecs;
    }

    long SendMsg(CpuT cpu, int fd, ulong msg, int flags)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        if ((e = ReadMsgHdr(msg, false, out var h)) < 0 || (e = MsgDestination(h, out var a)) < 0) return e;
        return SendBytes(cpu, f, Gather(h), flags, a, Nr.sendmsg);
    }

    unsafe long RecvMsg(CpuT cpu, int fd, ulong msg, int flags)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        if ((e = ReadMsgHdr(msg, true, out var hdr)) < 0) return e;
        var (m, name, nameCap, vecs, total) = (hdr.Raw, hdr.Name, hdr.NameLen, hdr.Vecs, hdr.Total);
        int n = (int)Math.Min(total, MaxNetIo);
        return ReceiveHost(f, Nr.recvmsg, n, flags, (done, hostFlags) =>
        {
            var tmp = ReadScratch(Math.Max(n - done, 1));
            var ab = new byte[MaxSockAddr];
            var hv = new byte[16];
            var hm = new byte[56];
            long r;
            fixed (byte* p = tmp) fixed (byte* q = ab) fixed (byte* v = hv) fixed (byte* h = hm)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(hv, (ulong)p);
                BinaryPrimitives.WriteUInt64LittleEndian(hv.AsSpan(8), (ulong)(n - done));
                if (name != 0)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(hm, (ulong)q);
                    BinaryPrimitives.WriteUInt32LittleEndian(hm.AsSpan(8), MaxSockAddr);
                }
                BinaryPrimitives.WriteUInt64LittleEndian(hm.AsSpan(16), (ulong)v);
                BinaryPrimitives.WriteUInt64LittleEndian(hm.AsSpan(24), 1);
                r = HostSys.Call(Nr.recvmsg, f.HostFd, (long)h, hostFlags);
            }
            var hr = HostResult.Of(r);
            if (r < 0) return hr;
            // the bytes go to the guest's iovecs from byte `done` of the call on
            long at = 0, off = 0, got = Math.Min(r, n - done);
            foreach (var (b, l) in vecs)
            {
                if (off >= got) break;
                long skip = Math.Clamp(done - at, 0, (long)l);
                at += (long)l;
                long take = Math.Min((long)l - skip, got - off);
                if (take <= 0) continue;
                hr.Write(b + (ulong)skip, tmp.AsSpan((int)off, (int)take).ToArray());
                off += take;
            }
            var outm = (byte[])m.Clone();
            int hostNameLen = (int)BinaryPrimitives.ReadUInt32LittleEndian(hm.AsSpan(8));
            if (name != 0)
            {
                var g = GuestAddress(ab.AsSpan(0, Math.Min(hostNameLen, MaxSockAddr)).ToArray());
                int k = Math.Min(g.Length, nameCap);
                if (k > 0) hr.Write(name, g.AsSpan(0, k).ToArray());
                BinaryPrimitives.WriteUInt32LittleEndian(outm.AsSpan(8), (uint)(hostNameLen > MaxSockAddr ? hostNameLen : g.Length));
            }
            else BinaryPrimitives.WriteUInt32LittleEndian(outm.AsSpan(8), 0);
            BinaryPrimitives.WriteUInt64LittleEndian(outm.AsSpan(40), 0); // msg_controllen: no control messages
            BinaryPrimitives.WriteInt32LittleEndian(outm.AsSpan(48), BinaryPrimitives.ReadInt32LittleEndian(hm.AsSpan(48)));
            hr.Write(msg, outm);
            return hr;
        });
    }

    // ---------------------------------------------------------------- options

    unsafe long SetSockOpt(CpuT cpu, int fd, int level, int name, ulong val, uint len)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        if (len > MaxSockOpt) return -Errno.EINVAL;
        var v = val != 0 ? Mem.ReadBytes(val, (int)len) : null;
        return HostValue(cpu, Nr.setsockopt, () =>
        {
            fixed (byte* p = v) return HostSys.Call(Nr.setsockopt, f.HostFd, level, name, v != null ? (long)p : 0, v != null ? len : 0);
        });
    }

    unsafe long GetSockOpt(CpuT cpu, int fd, int level, int name, ulong val, ulong lenPtr)
    {
        if (!TryGetSocket(fd, out var f, out long e)) return e;
        int cap = (int)Mem.Read32(lenPtr);
        if (cap < 0) return -Errno.EINVAL;
        cap = Math.Min(cap, MaxSockOpt);
        CheckWritable(lenPtr, 4);
        if (cap > 0) CheckWritable(val, (ulong)cap);
        return Host(cpu, Nr.getsockopt, () =>
        {
            var buf = new byte[Math.Max(cap, 1)];
            int len = cap;
            long r;
            fixed (byte* p = buf) r = HostSys.Call(Nr.getsockopt, f.HostFd, level, name, (long)p, (long)&len);
            var hr = HostResult.Of(r);
            if (r == 0)
            {
                int k = Math.Clamp(len, 0, cap);
                if (k > 0) hr.Write(val, buf.AsSpan(0, k).ToArray());
                hr.Write(lenPtr, BitConverter.GetBytes(len));
            }
            return hr;
        }).Value;
    }

    // ---------------------------------------------------------------- epoll, eventfd

    long EpollCreate(CpuT cpu, int flags)
    {
        if ((flags & ~O.CLOEXEC) != 0) return -Errno.EINVAL;
        long r = HostValue(cpu, Nr.epoll_create1, () => HostSys.Call(Nr.epoll_create1, O.CLOEXEC));
        if (r < 0) return r;
        NewFd(new EpollFile(), r, (flags & O.CLOEXEC) != 0, out int gfd);
        return gfd;
    }

    unsafe long EpollCtl(CpuT cpu, int epfd, int op, int fd, ulong evPtr)
    {
        if (!Fds.TryGetValue(epfd, out var epf) || !Fds.TryGetValue(fd, out var t)) return -Errno.EBADF;
        if (epf is not EpollFile ep || epfd == fd || ReferenceEquals(ep, t)) return -Errno.EINVAL;
        if (op is not (1 or 2 or 3)) return -Errno.EINVAL; // ADD, DEL, MOD
        uint events = 0;
        ulong data = 0;
        if (op != 2)
        {
            var ev = Mem.ReadBytes(evPtr, Epoll.EventSize);
            events = BinaryPrimitives.ReadUInt32LittleEndian(ev);
            data = BinaryPrimitives.ReadUInt64LittleEndian(ev.AsSpan(4));
        }
        long r = t.ReadyEvents(0) != null || (ep.HostFd < 0 && !Boundary.Replaying) ? 0 : HostValue(cpu, Nr.epoll_ctl, () =>
        {
            // the host reports the guest descriptor as its user data; epoll_wait translates it back
            var hev = new byte[Epoll.EventSize];
            BinaryPrimitives.WriteUInt32LittleEndian(hev, events);
            BinaryPrimitives.WriteUInt64LittleEndian(hev.AsSpan(4), (ulong)fd);
            fixed (byte* p = hev) return HostSys.Call(Nr.epoll_ctl, ep.HostFd, op, t.HostFd, (long)p);
        });
        if (r < 0) return r;
        if (op == Epoll.CTL_DEL) ep.Entries.Remove(fd);
        else ep.Entries[fd] = new EpollEntry { File = t, Events = events, Data = data };
        return 0;
    }

    /// <summary>The last descriptor of a file was closed: the host dropped it from every epoll set; so do we.</summary>
    internal void ForgetEpollTarget(OpenFile f)
    {
        foreach (var ep in Fds.Files.OfType<EpollFile>())
        {
            if (ep.Entries.Count == 0) continue;
            foreach (var k in ep.Entries.Where(kv => ReferenceEquals(kv.Value.File, f)).Select(kv => kv.Key).ToList())
                ep.Entries.Remove(k);
        }
    }

    long EventFd(CpuT cpu, uint initval, int flags)
    {
        if ((flags & ~(O.CLOEXEC | Sock.NONBLOCK | 1)) != 0) return -Errno.EINVAL; // EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE
        long r = HostValue(cpu, Nr.eventfd2, () => HostSys.Call(Nr.eventfd2, initval, flags | O.CLOEXEC));
        if (r < 0) return r;
        NewFd(new EventFdFile { Counter = initval, Semaphore = (flags & EventFdFile.SemaphoreFlag) != 0, StatusFlags = O.RDWR | (flags & O.NONBLOCK) },
            r, (flags & O.CLOEXEC) != 0, out int gfd);
        return gfd;
    }
}
