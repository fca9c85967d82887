using System.Buffers.Binary;
using ReVirt.Net;

namespace ReVirt.Linux;

/// <summary>
/// An AF_INET socket of a guest that runs with a virtual network interface (`--net virtual`): served by the in-VM
/// <see cref="NetStack"/>, never by a host socket. Its state is part of the machine (a replay rebuilds it from the
/// same frames at the same instructions, a backup that takes over holds it), so nothing about a call is logged: only
/// the frames that cross the interface are (<see cref="VirtualNic"/>). Every operation first lets the interface take
/// what arrived (<see cref="Kernel.NetSync"/>) and afterwards sends what the stack produced.
/// A call that would block (an empty receive buffer, no connection to accept, a full send buffer, a connect in
/// progress) answers <see cref="Kernel.Restart"/> unless the socket or the call is non-blocking: the thread parks
/// and runs the call again when the interface received something (or the VM changed), as a pipe read does.
/// </summary>
public sealed class VirtualSocket : OpenFile
{
    readonly VirtualNic _nic;
    readonly TcpSocket? _tcp;
    readonly UdpSocket? _udp;

    /// <summary>SOCK_STREAM or SOCK_DGRAM.</summary>
    public int Type { get; }

    VirtualSocket(VirtualNic nic, TcpSocket? tcp, UdpSocket? udp, int type, int nonblock)
    {
        _nic = nic; _tcp = tcp; _udp = udp; Type = type;
        GuestPath = "socket:";
        StatusFlags = O.RDWR | (nonblock & Sock.NONBLOCK);
    }

    /// <summary>socket(AF_INET, type, protocol): a stream (TCP) or datagram (UDP) socket of the stack.</summary>
    public static long Create(VirtualNic nic, int type, int protocol, out VirtualSocket? socket)
    {
        socket = null;
        int kind = type & Sock.TYPE_MASK;
        if (kind == Sock.STREAM && protocol is 0 or SockAbi.IPPROTO_TCP)
            socket = nic.Stack.CreateTcp() is { } t ? new VirtualSocket(nic, t, null, kind, type) : null;
        else if (kind == SockAbi.DGRAM && protocol is 0 or SockAbi.IPPROTO_UDP)
            socket = nic.Stack.CreateUdp() is { } u ? new VirtualSocket(nic, null, u, kind, type) : null;
        else return -Errno.EPROTONOSUPPORT;
        return socket == null ? -Errno.ENFILE : 0;
    }

    /// <summary>A guest's socket restored from a machine snapshot, on the restored stack's socket (its status flags
    /// are set by the caller with every description's).</summary>
    public static VirtualSocket Restored(VirtualNic nic, TcpSocket? tcp, UdpSocket? udp, int type) => new(nic, tcp, udp, type, 0);

    public TcpSocket? Tcp => _tcp;
    public UdpSocket? Udp => _udp;
    public VirtualNic Nic => _nic;
    public override uint? StatMode => SockAbi.S_IFSOCK | 0x1FF;

    bool NonBlocking(int msgFlags) => ((StatusFlags & Sock.NONBLOCK) | (msgFlags & Msg.DONTWAIT)) != 0;

    /// <summary>-EAGAIN of a blocking call becomes a wait (the thread parks until the interface receives).</summary>
    long Wait(long r, int msgFlags) => r == -Errno.EAGAIN && !NonBlocking(msgFlags) ? Kernel.Restart : r;

    // ---------------------------------------------------------------- addresses

    /// <summary>Parses a struct sockaddr_in; AF_INET only.</summary>
    public static long ParseAddress(byte[]? a, out uint ip, out ushort port)
    {
        ip = 0; port = 0;
        if (a == null || a.Length < SockAbi.SockAddrInSize) return -Errno.EINVAL;
        if (BinaryPrimitives.ReadUInt16LittleEndian(a) != Af.INET) return -Errno.EAFNOSUPPORT;
        port = BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2));
        ip = BinaryPrimitives.ReadUInt32BigEndian(a.AsSpan(4));
        return 0;
    }

    public static byte[] Address(uint ip, ushort port)
    {
        var a = new byte[SockAbi.SockAddrInSize];
        BinaryPrimitives.WriteUInt16LittleEndian(a, Af.INET);
        BinaryPrimitives.WriteUInt16BigEndian(a.AsSpan(2), port);
        BinaryPrimitives.WriteUInt32BigEndian(a.AsSpan(4), ip);
        return a;
    }

    /// <summary>getsockname / getpeername.</summary>
    public long Name(bool peer, out byte[] addr)
    {
        addr = [];
        if (_tcp != null)
        {
            if (peer && _tcp.State is TcpState.Closed or TcpState.Listen or TcpState.SynSent) return -Errno.ENOTCONN;
            addr = peer ? Address(_tcp.RemoteIp, _tcp.RemotePort) : Address(_tcp.LocalIp, _tcp.LocalPort);
            return 0;
        }
        if (peer && _udp!.RemotePort == 0) return -Errno.ENOTCONN;
        addr = peer ? Address(_udp!.RemoteIp, _udp.RemotePort) : Address(_udp!.LocalIp, _udp.LocalPort);
        return 0;
    }

    // ---------------------------------------------------------------- calls

    public long Bind(byte[]? a)
    {
        long e = ParseAddress(a, out uint ip, out ushort port);
        if (e < 0) return e;
        return _tcp != null ? _tcp.Bind(ip, port) : _udp!.Bind(ip, port);
    }

    public long Listen(int backlog) => _tcp == null ? -Errno.EOPNOTSUPP : _tcp.Listen(backlog);

    public long Connect(byte[]? a)
    {
        long e = ParseAddress(a, out uint ip, out ushort port);
        if (e < 0) return e;
        if (_udp != null) return _udp.Connect(ip, port);
        long r = _tcp!.Connect(ip, port);
        // a blocking connect waits for the handshake: the call runs again and answers 0 once established
        if ((r == -Errno.EINPROGRESS || r == -Errno.EALREADY) && !NonBlocking(0))
            return Kernel.Restart;
        return r;
    }

    /// <summary>accept4: the next established connection, or a wait.</summary>
    public long Accept(int flags, out VirtualSocket? child)
    {
        child = null;
        if (_tcp == null) return -Errno.EOPNOTSUPP;
        long r = _tcp.Accept(out var c);
        if (r < 0) return Wait(r, 0);
        child = new VirtualSocket(_nic, c, null, Type, flags);
        return 0;
    }

    /// <summary>send/sendto/sendmsg/write: how many bytes the stack took (a stream takes what fits).</summary>
    public long Send(byte[] data, int flags, byte[]? to)
    {
        if (_udp != null)
        {
            uint ip = 0; ushort port = 0;
            if (to != null) { long e = ParseAddress(to, out ip, out port); if (e < 0) return e; }
            return _udp.SendTo(data, ip, port);
        }
        // a stream socket ignores a destination address, as Linux's TCP does
        return Wait(_tcp!.Send(data), flags);
    }

    /// <summary>recv/recvfrom/recvmsg/read: up to <paramref name="buf"/>.Length bytes, 0 at end of stream.</summary>
    public long Receive(Span<byte> buf, int flags, out byte[]? from)
    {
        from = null;
        bool peek = (flags & SockAbi.MSG_PEEK) != 0;
        if (_udp != null)
        {
            int n = _udp.ReceiveFrom(buf, out uint ip, out ushort port, peek);
            if (n >= 0) from = Address(ip, port);
            return Wait(n, flags);
        }
        from = []; // a stream socket reports no source address (length 0), as Linux's TCP does
        return Wait(_tcp!.Receive(buf, peek), flags);
    }

    public long Shutdown(int how)
    {
        if (how is < 0 or > 2) return -Errno.EINVAL;
        if (_udp != null) return _udp.RemotePort == 0 ? -Errno.ENOTCONN : 0;
        return _tcp!.Shutdown((ShutdownHow)how);
    }

    /// <summary>Bytes readable now (FIONREAD).</summary>
    public int Available => _tcp?.Available ?? 0;

    // ---------------------------------------------------------------- options

    public long SetOption(int level, int name, int value)
    {
        switch (level, name)
        {
            case (Sock.SOL_SOCKET, Sock.SO_REUSEADDR):
                if (_tcp != null) _tcp.ReuseAddr = value != 0; else _udp!.ReuseAddr = value != 0;
                return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_KEEPALIVE):
                if (_tcp != null) _tcp.KeepAlive = value != 0;
                return 0;
            // buffer sizes, linger, time-outs and port sharing are accepted and have no effect: the stack's buffers
            // are fixed and blocking calls wait for the interface, not for a time
            case (Sock.SOL_SOCKET, SockAbi.SO_SNDBUF or SockAbi.SO_RCVBUF or SockAbi.SO_LINGER or SockAbi.SO_RCVTIMEO or SockAbi.SO_SNDTIMEO or SockAbi.SO_REUSEPORT):
                return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_NODELAY) when _tcp != null:
                _tcp.NoDelay = value != 0;
                return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_KEEPIDLE or SockAbi.TCP_KEEPINTVL) when _tcp != null:
                if (value < 1 || value > 32767) return -Errno.EINVAL;
                if (name == SockAbi.TCP_KEEPIDLE) _tcp.KeepIdleNs = value * 1_000_000_000L; else _tcp.KeepIntervalNs = value * 1_000_000_000L;
                return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_KEEPCNT) when _tcp != null:
                if (value < 1 || value > 127) return -Errno.EINVAL;
                _tcp.KeepCount = value;
                return 0;
            case (SockAbi.IPPROTO_TCP, _) when _tcp != null:
                return 0; // other TCP tuning (TCP_QUICKACK, TCP_CORK, ...) is accepted without effect
            default:
                return -Errno.ENOPROTOOPT;
        }
    }

    public long GetOption(int level, int name, out int value)
    {
        value = 0;
        switch (level, name)
        {
            case (Sock.SOL_SOCKET, SockAbi.SO_ERROR): value = _tcp?.TakeError() ?? 0; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_TYPE): value = Type; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_DOMAIN): value = Af.INET; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_PROTOCOL): value = _tcp != null ? SockAbi.IPPROTO_TCP : SockAbi.IPPROTO_UDP; return 0;
            case (Sock.SOL_SOCKET, Sock.SO_REUSEADDR): value = (_tcp?.ReuseAddr ?? _udp!.ReuseAddr) ? 1 : 0; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_KEEPALIVE): value = _tcp?.KeepAlive == true ? 1 : 0; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_ACCEPTCONN): value = _tcp?.State == TcpState.Listen ? 1 : 0; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_SNDBUF): value = _nic.Stack.Config.SendBuffer; return 0;
            case (Sock.SOL_SOCKET, SockAbi.SO_RCVBUF): value = _tcp != null ? _nic.Stack.Config.ReceiveBuffer : _nic.Stack.Config.UdpReceiveBuffer; return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_NODELAY) when _tcp != null: value = _tcp.NoDelay ? 1 : 0; return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_MAXSEG) when _tcp != null: value = 1460; return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_KEEPIDLE) when _tcp != null: value = (int)(_tcp.KeepIdleNs / 1_000_000_000); return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_KEEPINTVL) when _tcp != null: value = (int)(_tcp.KeepIntervalNs / 1_000_000_000); return 0;
            case (SockAbi.IPPROTO_TCP, SockAbi.TCP_KEEPCNT) when _tcp != null: value = _tcp.KeepCount; return 0;
            default: return -Errno.ENOPROTOOPT;
        }
    }

    // ---------------------------------------------------------------- the generic file operations

    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
        => offset >= 0 ? -Errno.ESPIPE : k.VirtualReceive(t, this, buf, n, 0, 0, 0);

    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
        => offset >= 0 ? -Errno.ESPIPE : k.VirtualSend(t, this, data, 0, null);

    /// <summary>poll readiness as Linux's tcp_poll/udp_poll computes it (error and hang-up are always reported).</summary>
    public override short? ReadyEvents(short requested)
    {
        int ev = _tcp?.Poll() ?? _udp!.Poll();
        return (short)(ev & (requested | Poll.ERR | Poll.HUP));
    }

    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        if (_tcp != null) _tcp.Close(); else _udp!.Close();
        k.NetTransmit(t);
        k.InVmChanged();
        return 0;
    }
}
