using System.Buffers.Binary;
using System.Text;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Abi;

/// <summary>
/// Guest networking: real host sockets behind guest descriptors (live and recording runs), every answer through
/// the boundary so that a replay gets the same results and received bytes from the log without a socket.
/// Also select/pselect6/ppoll, epoll and eventfd. Address structures are passed through verbatim (host and guest
/// are both x86-64 Linux), except AF_UNIX path names, which are guest paths under the root.
/// </summary>
public sealed partial class LinuxKernel
{
    const int AF_UNIX = 1, AF_INET = 2, AF_INET6 = 10;
    const int SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000, SOCK_TYPE_MASK = 0xF;
    const int MSG_NOSIGNAL = 0x4000, MSG_DONTWAIT = 0x40;
    const int SOCK_STREAM = 1;
    const int SIGPIPE = 13;
    const int MaxSockAddr = 128;      // sizeof(struct sockaddr_storage)
    const int MaxSockOpt = 4096;      // bound on option buffers
    const int MaxNetIo = 1 << 24;
    const int MaxIov = 1024;
    const int EpollEventSize = 12;    // struct epoll_event is packed on x86-64
    const short POLLIN = 1, POLLPRI = 2, POLLOUT = 4, POLLERR = 8, POLLHUP = 0x10, POLLNVAL = 0x20;

    long Net(CpuT cpu, int nr, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5, ulong a6)
    {
        switch (nr)
        {
            case Nr.socket: return Socket(cpu, (int)a1, (int)a2, (int)a3);
            case Nr.socketpair: return SocketPair(cpu, (int)a1, (int)a2, (int)a3, a4);
            case Nr.bind: return Bind(cpu, (int)a1, a2, (uint)a3);
            case Nr.listen: return Listen(cpu, (int)a1, (int)a2);
            case Nr.accept: return Accept(cpu, (int)a1, a2, a3, 0);
            case Nr.accept4: return Accept(cpu, (int)a1, a2, a3, (int)a4);
            case Nr.connect: return Connect(cpu, (int)a1, a2, (uint)a3);
            case Nr.getsockname: return SockName(cpu, nr, (int)a1, a2, a3);
            case Nr.getpeername: return SockName(cpu, nr, (int)a1, a2, a3);
            case Nr.sendto: return SendTo(cpu, (int)a1, a2, a3, (int)a4, a5, (uint)a6);
            case Nr.recvfrom: return RecvFrom(cpu, (int)a1, a2, a3, (int)a4, a5, a6);
            case Nr.sendmsg: return SendMsg(cpu, (int)a1, a2, (int)a3);
            case Nr.recvmsg: return RecvMsg(cpu, (int)a1, a2, (int)a3);
            case Nr.shutdown:
                {
                    if (!Sock((int)a1, out var f, out long e)) return e;
                    if (f.Reset) return -ENOTCONN;
                    return Boundary.SocketEnd(cpu.Tid, nr, f, () => HostResult.Of(HostSys.Call(Nr.shutdown, f.HostFd, (long)a2)), false).Value;
                }
            case Nr.setsockopt: return SetSockOpt(cpu, (int)a1, (int)a2, (int)a3, a4, (uint)a5);
            case Nr.getsockopt: return GetSockOpt(cpu, (int)a1, (int)a2, (int)a3, a4, a5);
            case Nr.select: return Select(cpu, (int)a1, a2, a3, a4, a5, false);
            case Nr.pselect6: return Select(cpu, (int)a1, a2, a3, a4, a5, true);
            case Nr.ppoll: return Ppoll(cpu, a1, (int)a2, a3);
            case Nr.epoll_create: return (int)a1 <= 0 ? -Errno.EINVAL : EpollCreate(cpu, 0);
            case Nr.epoll_create1: return EpollCreate(cpu, (int)a1);
            case Nr.epoll_ctl: return EpollCtl(cpu, (int)a1, (int)a2, (int)a3, a4);
            case Nr.epoll_wait: case Nr.epoll_pwait: return EpollWait(cpu, (int)a1, a2, (int)a3, (int)a4);
            case Nr.eventfd: return EventFd(cpu, (uint)a1, 0);
            case Nr.eventfd2: return EventFd(cpu, (uint)a1, (int)a2);
            default: return Unknown(cpu, nr);
        }
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Marks a reset connection in a poll set (never a real descriptor).</summary>
    const int ResetFd = int.MinValue + 1;
    const int ECONNRESET = 104, ENOTCONN = 107;

    /// <summary>What poll reports for a reset connection: hang-up and error, and readable/writable (neither blocks).</summary>
    static short ResetEvents(short requested) => (short)(POLLHUP | POLLERR | (requested & (POLLIN | POLLOUT)));

    /// <summary>A read on a reset connection: ECONNRESET once, then end of file, like the kernel after a RST.</summary>
    static long ResetRead(GuestFile f)
    {
        if (f.ResetReported) return 0;
        f.ResetReported = true;
        return -ECONNRESET;
    }

    bool Sock(int fd, out GuestFile f, out long err)
    {
        err = 0;
        if (!Fds.TryGetValue(fd, out f!)) { err = -Errno.EBADF; return false; }
        if (!f.IsSocket) { err = -Errno.ENOTSOCK; return false; }
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

    GuestFile NewFd(long hostFd, string path, bool cloexec, out int gfd)
    {
        gfd = LowestFreeFd();
        var f = new GuestFile { HostFd = Boundary.Replaying ? -1 : (int)hostFd, GuestPath = path, CloseOnExec = cloexec };
        Fds[gfd] = f;
        return f;
    }

    GuestFile NewSocket(long hostFd, int family, int type, int protocol, bool cloexec, out int gfd)
    {
        var f = NewFd(hostFd, "socket:", cloexec, out gfd);
        f.IsSocket = true;
        f.SocketFamily = family;
        f.SocketType = type;
        f.SocketProtocol = protocol;
        return f;
    }

    /// <summary>The guest path of an AF_UNIX pathname address (null for other families and abstract names).</summary>
    string? UnixGuestPath(byte[] addr)
    {
        if (addr.Length <= 2 || BinaryPrimitives.ReadUInt16LittleEndian(addr) != AF_UNIX || addr[2] == 0) return null;
        int end = Array.IndexOf(addr, (byte)0, 2);
        string p = Encoding.UTF8.GetString(addr, 2, (end < 0 ? addr.Length : end) - 2);
        return p.StartsWith('/') ? p : GuestFs.Join(Cwd, p);
    }

    /// <summary>The host form of a guest address (inside a host operation): AF_UNIX paths go under the root.</summary>
    long HostAddress(byte[] addr, string? unixPath, out byte[] host)
    {
        host = addr;
        if (unixPath == null) return 0;
        long r = Fs.ToHost(unixPath, false, out var hp);
        if (r < 0) return r;
        var pb = Encoding.UTF8.GetBytes(hp);
        if (pb.Length >= 108) return -Errno.ENAMETOOLONG;
        host = new byte[2 + pb.Length + 1];
        BinaryPrimitives.WriteUInt16LittleEndian(host, AF_UNIX);
        pb.CopyTo(host, 2);
        return 0;
    }

    /// <summary>The guest form of an address the host returned (AF_UNIX paths under the root lose the root).</summary>
    byte[] GuestAddress(byte[] host)
    {
        if (!Fs.Confined || host.Length <= 2 || BinaryPrimitives.ReadUInt16LittleEndian(host) != AF_UNIX || host[2] == 0) return host;
        int end = Array.IndexOf(host, (byte)0, 2);
        string hp = Encoding.UTF8.GetString(host, 2, (end < 0 ? host.Length : end) - 2);
        string? gp = Fs.ToGuest(hp);
        if (gp == null) return host;
        var pb = Encoding.UTF8.GetBytes(gp);
        var g = new byte[2 + pb.Length + 1];
        BinaryPrimitives.WriteUInt16LittleEndian(g, AF_UNIX);
        pb.CopyTo(g, 2);
        return g;
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
    void WriteOutAddr(HostResult res, ulong addr, ulong lenPtr, uint cap, byte[] hostAddr, int hostLen)
    {
        if (addr == 0 || lenPtr == 0) return;
        var g = GuestAddress(hostAddr.AsSpan(0, Math.Min(hostLen, hostAddr.Length)).ToArray());
        int len = hostLen > hostAddr.Length ? hostLen : g.Length;
        int n = (int)Math.Min((uint)g.Length, cap);
        if (n > 0) res.Write(addr, g.AsSpan(0, n).ToArray());
        res.Write(lenPtr, BitConverter.GetBytes(len));
    }

    // ---------------------------------------------------------------- socket, socketpair, bind, listen, accept, connect

    long Socket(CpuT cpu, int domain, int type, int protocol)
    {
        long r = HostValue(cpu, Nr.socket, () => HostSys.Call(Nr.socket, domain, type | SOCK_CLOEXEC, protocol));
        if (r < 0) return r;
        var sf = NewSocket(r, domain, type & SOCK_TYPE_MASK, protocol, (type & SOCK_CLOEXEC) != 0, out int gfd);
        sf.StatusFlags = 2 | (type & SOCK_NONBLOCK); // O_RDWR
        return gfd;
    }

    unsafe long SocketPair(CpuT cpu, int domain, int type, int protocol, ulong sv)
    {
        CheckWritable(sv, 8);
        long r = HostValue(cpu, Nr.socketpair, () =>
        {
            var fds = new int[2];
            long e;
            fixed (int* p = fds) e = HostSys.Call(Nr.socketpair, domain, type | SOCK_CLOEXEC, protocol, (long)p);
            return e < 0 ? e : ((long)fds[1] << 32) | (uint)fds[0];
        });
        if (r < 0) return r;
        bool cloexec = (type & SOCK_CLOEXEC) != 0;
        NewSocket(r & 0xFFFFFFFF, domain, type & SOCK_TYPE_MASK, protocol, cloexec, out int g0);
        NewSocket(r >> 32, domain, type & SOCK_TYPE_MASK, protocol, cloexec, out int g1);
        Mem.Write32(sv, (uint)g0);
        Mem.Write32(sv + 4, (uint)g1);
        return 0;
    }

    /// <summary>The host's getsockname of a host socket, as a side value (inside a host operation).</summary>
    static unsafe void AddLocalAddress(HostResult res, int hostFd)
    {
        var buf = new byte[MaxSockAddr];
        int len = MaxSockAddr;
        fixed (byte* p = buf) if (HostSys.Call(Nr.getsockname, hostFd, (long)p, (long)&len) == 0)
            res.Write(0, buf.AsSpan(0, Math.Min(len, MaxSockAddr)).ToArray());
    }

    unsafe long Bind(CpuT cpu, int fd, ulong addr, uint len)
    {
        if (!Sock(fd, out var f, out long e)) return e;
        e = ReadSockAddr(addr, len, out var a);
        if (e < 0 || a == null) return e < 0 ? e : -Errno.EFAULT;
        string? unix = UnixGuestPath(a);
        var res = HostSide(cpu, Nr.bind, () =>
        {
            long r = HostAddress(a, unix, out var h);
            if (r < 0) return HostResult.Of(r);
            fixed (byte* p = h) r = HostSys.Call(Nr.bind, f.HostFd, (long)p, h.Length);
            var hr = HostResult.Of(r);
            if (r == 0) AddLocalAddress(hr, f.HostFd);
            return hr;
        }, out var local);
        if (res.Value == 0) f.BoundAddress = local != null ? GuestAddress(local) : a;
        return res.Value;
    }

    long Listen(CpuT cpu, int fd, int backlog)
    {
        if (!Sock(fd, out var f, out long e)) return e;
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
            if (local != null) f.BoundAddress = GuestAddress(local);
        }
        return res.Value;
    }

    unsafe long Accept(CpuT cpu, int fd, ulong addr, ulong lenPtr, int flags)
    {
        if (!Sock(fd, out var f, out long e)) return e;
        if ((flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0) return -Errno.EINVAL;
        if (f.Reset) return -Errno.EINVAL; // a listener the takeover could not re-open
        e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        var res = Host(cpu, Nr.accept4, () =>
        {
            var buf = new byte[MaxSockAddr];
            int len = MaxSockAddr;
            long r;
            fixed (byte* p = buf) r = HostSys.Call(Nr.accept4, f.HostFd, (long)p, (long)&len, (flags & SOCK_NONBLOCK) | SOCK_CLOEXEC);
            var hr = HostResult.Of(r);
            if (r >= 0) WriteOutAddr(hr, addr, lenPtr, cap, buf, len);
            return hr;
        });
        if (res.Value < 0) return res.Value;
        var af = NewSocket(res.Value, f.SocketFamily, f.SocketType, f.SocketProtocol, (flags & SOCK_CLOEXEC) != 0, out int gfd);
        af.StatusFlags = 2 | (flags & SOCK_NONBLOCK);
        return gfd;
    }

    unsafe long Connect(CpuT cpu, int fd, ulong addr, uint len)
    {
        if (!Sock(fd, out var f, out long e)) return e;
        e = ReadSockAddr(addr, len, out var a);
        if (e < 0 || a == null) return e < 0 ? e : -Errno.EFAULT;
        string? unix = UnixGuestPath(a);
        return Host(cpu, Nr.connect, () =>
        {
            long r = HostAddress(a, unix, out var h);
            if (r < 0) return HostResult.Of(r);
            fixed (byte* p = h) return HostResult.Of(HostSys.Call(Nr.connect, f.HostFd, (long)p, h.Length));
        }).Value;
    }

    unsafe long SockName(CpuT cpu, int nr, int fd, ulong addr, ulong lenPtr)
    {
        if (!Sock(fd, out var f, out long e)) return e;
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
    /// SIGPIPE (MSG_NOSIGNAL); the guest gets it like from the kernel unless it asked for MSG_NOSIGNAL.
    /// </summary>
    unsafe long SendBytes(CpuT cpu, GuestFile f, byte[] data, int flags, byte[]? addr, int nr)
    {
        string? unix = addr != null ? UnixGuestPath(addr) : null;
        if (f.Reset)
        {
            // a connection only the old primary had: the peer is gone
            if ((flags & MSG_NOSIGNAL) == 0) RaiseAsync(cpu, SIGPIPE);
            return -Errno.EPIPE;
        }
        int hostFd = f.HostFd;
        var res = Boundary.Send(cpu.Tid, nr, new SocketSend
        {
            Socket = f, Data = data, HostFd = hostFd, Stream = f.SocketType == SOCK_STREAM,
            NonBlocking = ((flags & MSG_DONTWAIT) | (f.StatusFlags & SOCK_NONBLOCK)) != 0,
            Perform = (offset, count, extraFlags) =>
            {
                byte[] h = Array.Empty<byte>();
                if (addr != null)
                {
                    long e = HostAddress(addr, unix, out h);
                    if (e < 0) return e;
                }
                fixed (byte* p = data) fixed (byte* q = h)
                    return HostSys.Call(Nr.sendto, hostFd, (long)(p + offset), count, flags | MSG_NOSIGNAL | extraFlags,
                        addr != null ? (long)q : 0, addr != null ? h.Length : 0);
            },
        });
        foreach (var (wa, wb) in res.Writes) Mem.Poke(wa, wb);
        long r = res.Value;
        if (r == -Errno.EPIPE && (flags & MSG_NOSIGNAL) == 0) RaiseAsync(cpu, SIGPIPE);
        return r;
    }

    long SendTo(CpuT cpu, int fd, ulong buf, ulong len, int flags, ulong addr, uint addrLen)
    {
        if (!Sock(fd, out var f, out long e)) return e;
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
        if (!Sock(fd, out var f, out long e)) return e;
        int n = (int)Math.Min(len, MaxNetIo);
        CheckWritable(buf, (ulong)n);
        e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        if (f.Reset) return ResetRead(f);
        return Host(cpu, Nr.recvfrom, () =>
        {
            var tmp = new byte[Math.Max(n, 1)];
            var ab = new byte[MaxSockAddr];
            int alen = MaxSockAddr;
            long r;
            fixed (byte* p = tmp) fixed (byte* q = ab)
                r = HostSys.Call(Nr.recvfrom, f.HostFd, (long)p, n, flags, addr != 0 ? (long)q : 0, addr != 0 ? (long)&alen : 0);
            var hr = HostResult.Of(r);
            if (r > 0) hr.Write(buf, tmp.AsSpan(0, (int)Math.Min(r, n)).ToArray());
            if (r >= 0) WriteOutAddr(hr, addr, lenPtr, cap, ab, alen);
            return hr;
        }).Value;
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
        if (!Sock(fd, out var f, out long e)) return e;
        var m = Mem.ReadBytes(msg, 56);
        ulong name = BinaryPrimitives.ReadUInt64LittleEndian(m), iov = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(16));
        uint nameLen = BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8));
        ulong iovLen = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(24));
        if (iovLen > MaxIov) return -Errno.EMSGSIZE;
        byte[]? a = null;
        if (name != 0 && nameLen != 0)
        {
            e = ReadSockAddr(name, nameLen, out a);
            if (e < 0) return e;
        }
        // control messages (SCM_RIGHTS, credentials) are not passed on
        var ms = new MemoryStream();
        foreach (var (b, l) in ReadIovecs(iov, iovLen, false, out _))
            if (l > 0 && ms.Length < MaxNetIo) ms.Write(Mem.ReadBytes(b, (int)Math.Min(l, (ulong)(MaxNetIo - ms.Length))));
        return SendBytes(cpu, f, ms.ToArray(), flags, a, Nr.sendmsg);
    }

    unsafe long RecvMsg(CpuT cpu, int fd, ulong msg, int flags)
    {
        if (!Sock(fd, out var f, out long e)) return e;
        var m = Mem.ReadBytes(msg, 56);
        CheckWritable(msg, 56);
        ulong name = BinaryPrimitives.ReadUInt64LittleEndian(m), iov = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(16));
        int nameCap = (int)BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8));
        ulong iovLen = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(24));
        if (iovLen > MaxIov) return -Errno.EMSGSIZE;
        if (nameCap < 0) return -Errno.EINVAL;
        if (name != 0 && nameCap > 0) CheckWritable(name, (ulong)Math.Min(nameCap, MaxSockAddr));
        var vecs = ReadIovecs(iov, iovLen, true, out long total);
        int n = (int)Math.Min(total, MaxNetIo);
        if (f.Reset) return ResetRead(f);
        return Host(cpu, Nr.recvmsg, () =>
        {
            var tmp = new byte[Math.Max(n, 1)];
            var ab = new byte[MaxSockAddr];
            var hv = new byte[16];
            var hm = new byte[56];
            long r;
            fixed (byte* p = tmp) fixed (byte* q = ab) fixed (byte* v = hv) fixed (byte* h = hm)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(hv, (ulong)p);
                BinaryPrimitives.WriteUInt64LittleEndian(hv.AsSpan(8), (ulong)n);
                if (name != 0)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(hm, (ulong)q);
                    BinaryPrimitives.WriteUInt32LittleEndian(hm.AsSpan(8), MaxSockAddr);
                }
                BinaryPrimitives.WriteUInt64LittleEndian(hm.AsSpan(16), (ulong)v);
                BinaryPrimitives.WriteUInt64LittleEndian(hm.AsSpan(24), 1);
                r = HostSys.Call(Nr.recvmsg, f.HostFd, (long)h, flags);
            }
            var hr = HostResult.Of(r);
            if (r < 0) return hr;
            long off = 0, got = Math.Min(r, n);
            foreach (var (b, l) in vecs)
            {
                if (off >= got) break;
                long take = Math.Min((long)l, got - off);
                hr.Write(b, tmp.AsSpan((int)off, (int)take).ToArray());
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
        }).Value;
    }

    // ---------------------------------------------------------------- options

    unsafe long SetSockOpt(CpuT cpu, int fd, int level, int name, ulong val, uint len)
    {
        if (!Sock(fd, out var f, out long e)) return e;
        if (len > MaxSockOpt) return -Errno.EINVAL;
        var v = val != 0 ? Mem.ReadBytes(val, (int)len) : null;
        return HostValue(cpu, Nr.setsockopt, () =>
        {
            fixed (byte* p = v) return HostSys.Call(Nr.setsockopt, f.HostFd, level, name, v != null ? (long)p : 0, v != null ? len : 0);
        });
    }

    unsafe long GetSockOpt(CpuT cpu, int fd, int level, int name, ulong val, ulong lenPtr)
    {
        if (!Sock(fd, out var f, out long e)) return e;
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

    // ---------------------------------------------------------------- select, pselect6, ppoll

    /// <summary>select/pselect6 as a host ppoll over the host descriptors behind the guest's fd_sets.</summary>
    unsafe long Select(CpuT cpu, int nfds, ulong rd, ulong wr, ulong ex, ulong tmo, bool pselect)
    {
        if (nfds < 0) return -Errno.EINVAL;
        nfds = Math.Min(nfds, 65536);
        int bytes = (nfds + 63) / 64 * 8;
        byte[]? R = rd != 0 ? Mem.ReadBytes(rd, bytes) : null, W = wr != 0 ? Mem.ReadBytes(wr, bytes) : null, X = ex != 0 ? Mem.ReadBytes(ex, bytes) : null;
        static bool Bit(byte[]? s, int i) => s != null && (s[i >> 3] & (1 << (i & 7))) != 0;
        var watch = new List<(int Gfd, int HostFd, short Events)>();
        for (int i = 0; i < nfds; i++)
        {
            short ev = (short)((Bit(R, i) ? POLLIN : 0) | (Bit(W, i) ? POLLOUT : 0) | (Bit(X, i) ? POLLPRI : 0));
            if (ev == 0) continue;
            if (!Fds.TryGetValue(i, out var f)) return -Errno.EBADF;
            watch.Add((i, -1, ev));
        }
        byte[]? ts = null;
        if (tmo != 0)
        {
            var t = Mem.ReadBytes(tmo, 16);
            long sec = BinaryPrimitives.ReadInt64LittleEndian(t), sub = BinaryPrimitives.ReadInt64LittleEndian(t.AsSpan(8));
            if (sec < 0 || sub < 0 || sub >= (pselect ? 1_000_000_000 : 1_000_000)) return -Errno.EINVAL;
            ts = new byte[16];
            BinaryPrimitives.WriteInt64LittleEndian(ts, sec);
            BinaryPrimitives.WriteInt64LittleEndian(ts.AsSpan(8), pselect ? sub : sub * 1000);
            CheckWritable(tmo, 16);
        }
        foreach (var (s, a) in new[] { (R, rd), (W, wr), (X, ex) }) if (s != null) CheckWritable(a, (ulong)bytes);
        return Host(cpu, pselect ? Nr.pselect6 : Nr.select, () =>
        {
            // host descriptors are looked up when the call runs: it can be the call at which a backup turns live
            for (int k = 0; k < watch.Count; k++) { var wf = Fds[watch[k].Gfd]; watch[k] = (watch[k].Gfd, wf.Reset ? ResetFd : wf.HostFd, watch[k].Events); }
            bool anyReset = watch.Any(w => w.HostFd == ResetFd);
            var pf = new byte[Math.Max(watch.Count, 1) * 8];
            for (int k = 0; k < watch.Count; k++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(pf.AsSpan(k * 8), watch[k].HostFd == ResetFd ? -1 : watch[k].HostFd);
                BinaryPrimitives.WriteInt16LittleEndian(pf.AsSpan(k * 8 + 4), watch[k].Events);
            }
            long r;
            var zero = new byte[16]; // a reset connection is ready at once
            fixed (byte* p = pf) fixed (byte* t = ts) fixed (byte* z = zero)
                r = HostSys.Call(Nr.ppoll, (long)p, watch.Count, anyReset ? (long)z : ts != null ? (long)t : 0, 0, 8);
            var hr = HostResult.Of(r);
            if (r < 0) return hr;
            byte[]? oR = R != null ? new byte[bytes] : null, oW = W != null ? new byte[bytes] : null, oX = X != null ? new byte[bytes] : null;
            int count = 0;
            void Set(byte[]? s, int i) { if (s != null) { s[i >> 3] |= (byte)(1 << (i & 7)); count++; } }
            for (int k = 0; k < watch.Count; k++)
            {
                short rev = BinaryPrimitives.ReadInt16LittleEndian(pf.AsSpan(k * 8 + 6));
                var (g, hfd, ev) = watch[k];
                if (hfd == ResetFd) rev = ResetEvents(ev);
                if ((ev & POLLIN) != 0 && (rev & (POLLIN | POLLHUP | POLLERR)) != 0) Set(oR, g);
                if ((ev & POLLOUT) != 0 && (rev & (POLLOUT | POLLERR)) != 0) Set(oW, g);
                if ((ev & POLLPRI) != 0 && (rev & POLLPRI) != 0) Set(oX, g);
            }
            if (oR != null) hr.Write(rd, oR);
            if (oW != null) hr.Write(wr, oW);
            if (oX != null) hr.Write(ex, oX);
            if (ts != null)
            {
                // the kernel writes back the time left (microseconds for select)
                if (!pselect) BinaryPrimitives.WriteInt64LittleEndian(ts.AsSpan(8), BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8)) / 1000);
                hr.Write(tmo, ts);
            }
            hr.Value = count;
            return hr;
        }).Value;
    }

    /// <summary>ppoll: poll with a timespec (rounded up to milliseconds); the signal mask argument is ignored.</summary>
    long Ppoll(CpuT cpu, ulong fds, int nfds, ulong tsp)
    {
        int ms = -1;
        if (tsp != 0)
        {
            var t = Mem.ReadBytes(tsp, 16);
            long sec = BinaryPrimitives.ReadInt64LittleEndian(t), ns = BinaryPrimitives.ReadInt64LittleEndian(t.AsSpan(8));
            if (sec < 0 || ns < 0 || ns >= 1_000_000_000) return -Errno.EINVAL;
            ms = (int)Math.Min(int.MaxValue, sec * 1000 + (ns + 999_999) / 1_000_000);
        }
        return Poll(cpu, fds, nfds, ms);
    }

    // ---------------------------------------------------------------- epoll, eventfd

    long EpollCreate(CpuT cpu, int flags)
    {
        if ((flags & ~O_CLOEXEC) != 0) return -Errno.EINVAL;
        long r = HostValue(cpu, Nr.epoll_create1, () => HostSys.Call(Nr.epoll_create1, O_CLOEXEC));
        if (r < 0) return r;
        var f = NewFd(r, "anon_inode:[eventpoll]", (flags & O_CLOEXEC) != 0, out int gfd);
        f.Epoll = new Dictionary<int, EpollEntry>();
        return gfd;
    }

    unsafe long EpollCtl(CpuT cpu, int epfd, int op, int fd, ulong evPtr)
    {
        if (!Fds.TryGetValue(epfd, out var ep) || !Fds.TryGetValue(fd, out var t)) return -Errno.EBADF;
        if (ep.Epoll == null || epfd == fd || ReferenceEquals(ep, t)) return -Errno.EINVAL;
        if (op is not (1 or 2 or 3)) return -Errno.EINVAL; // ADD, DEL, MOD
        uint events = 0;
        ulong data = 0;
        if (op != 2)
        {
            var ev = Mem.ReadBytes(evPtr, EpollEventSize);
            events = BinaryPrimitives.ReadUInt32LittleEndian(ev);
            data = BinaryPrimitives.ReadUInt64LittleEndian(ev.AsSpan(4));
        }
        long r = t.Reset || (ep.HostFd < 0 && !Boundary.Replaying) ? 0 : HostValue(cpu, Nr.epoll_ctl, () =>
        {
            // the host reports the guest descriptor as its user data; epoll_wait translates it back
            var hev = new byte[EpollEventSize];
            BinaryPrimitives.WriteUInt32LittleEndian(hev, events);
            BinaryPrimitives.WriteUInt64LittleEndian(hev.AsSpan(4), (ulong)fd);
            fixed (byte* p = hev) return HostSys.Call(Nr.epoll_ctl, ep.HostFd, op, t.HostFd, (long)p);
        });
        if (r < 0) return r;
        if (op == 2) ep.Epoll.Remove(fd);
        else ep.Epoll[fd] = new EpollEntry { File = t, Events = events, Data = data };
        return 0;
    }

    unsafe long EpollWait(CpuT cpu, int epfd, ulong evPtr, int maxEvents, int timeout)
    {
        if (!Fds.TryGetValue(epfd, out var ep)) return -Errno.EBADF;
        if (ep.Epoll == null || maxEvents <= 0) return -Errno.EINVAL;
        int n = Math.Min(maxEvents, 4096);
        CheckWritable(evPtr, (ulong)(n * EpollEventSize));
        var table = ep.Epoll;
        // reset connections in the set (after a takeover) are reported at once, hung up and in error
        return Host(cpu, Nr.epoll_wait, () =>
        {
            var reset = table.Where(kv => kv.Value.File.Reset).Take(n).ToList();
            var buf = new byte[n * EpollEventSize];
            long r;
            fixed (byte* p = buf) r = HostSys.Call(Nr.epoll_wait, ep.HostFd, (long)p, n - reset.Count, reset.Count > 0 ? 0 : timeout);
            if (reset.Count > 0 && r < 0) r = 0;
            var hr = HostResult.Of(r);
            if (r < 0) return hr;
            var outb = new List<byte>();
            int count = 0;
            foreach (var (_, e) in reset)
            {
                var ev = new byte[EpollEventSize];
                BinaryPrimitives.WriteUInt32LittleEndian(ev, (uint)(POLLHUP | POLLERR) | (e.Events & (uint)(POLLIN | POLLOUT)));
                BinaryPrimitives.WriteUInt64LittleEndian(ev.AsSpan(4), e.Data);
                outb.AddRange(ev);
                count++;
            }
            for (int k = 0; k < r; k++)
            {
                uint events = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(k * EpollEventSize));
                int gfd = (int)BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(k * EpollEventSize + 4));
                if (!table.TryGetValue(gfd, out var entry)) continue;
                var ev = new byte[EpollEventSize];
                BinaryPrimitives.WriteUInt32LittleEndian(ev, events);
                BinaryPrimitives.WriteUInt64LittleEndian(ev.AsSpan(4), entry.Data);
                outb.AddRange(ev);
                count++;
            }
            hr.Value = count;
            if (count > 0) hr.Write(evPtr, outb.ToArray());
            return hr;
        }).Value;
    }

    /// <summary>The last descriptor of a file was closed: the host dropped it from every epoll set; so do we.</summary>
    void ForgetEpollTarget(GuestFile f)
    {
        foreach (var ep in Fds.Values)
        {
            if (ep.Epoll == null || ep.Epoll.Count == 0) continue;
            foreach (var k in ep.Epoll.Where(kv => ReferenceEquals(kv.Value.File, f)).Select(kv => kv.Key).ToList())
                ep.Epoll.Remove(k);
        }
    }

    long EventFd(CpuT cpu, uint initval, int flags)
    {
        if ((flags & ~(O_CLOEXEC | SOCK_NONBLOCK | 1)) != 0) return -Errno.EINVAL; // EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE
        long r = HostValue(cpu, Nr.eventfd2, () => HostSys.Call(Nr.eventfd2, initval, flags | O_CLOEXEC));
        if (r < 0) return r;
        NewFd(r, "anon_inode:[eventfd]", (flags & O_CLOEXEC) != 0, out int gfd);
        return gfd;
    }
}
