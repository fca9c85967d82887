namespace ReVirt.Net;

/// <summary>A UDP socket (RFC 768). Datagrams larger than one unfragmented frame are refused with EMSGSIZE.</summary>
public sealed class UdpSocket
{
    public const int MaxPayload = Wire.Mtu - Wire.Ip4Header - Wire.UdpHeader;

    readonly NetStack _stack;
    readonly Queue<(uint Ip, ushort Port, byte[] Data)> _rx = new();
    int _rxBytes;

    internal UdpSocket(NetStack stack, long id) { _stack = stack; Id = id; }

    public long Id { get; }
    public uint LocalIp { get; private set; }
    public ushort LocalPort { get; private set; }
    public uint RemoteIp { get; private set; }
    public ushort RemotePort { get; private set; }
    public bool Closed { get; private set; }
    public bool ReuseAddr { get; set; }
    internal int PendingError;

    public int Bind(uint ip, ushort port)
    {
        if (Closed) return -NetErrno.EBADF;
        if (LocalPort != 0) return -NetErrno.EINVAL;
        if (ip != 0 && ip != _stack.Config.Ip) return -NetErrno.EADDRNOTAVAIL;
        if (port == 0) port = _stack.PickUdpPort();
        if (port == 0) return -NetErrno.EADDRINUSE;
        if (!_stack.BindUdp(this, port)) return -NetErrno.EADDRINUSE;
        LocalIp = ip; LocalPort = port;
        return 0;
    }

    public int Connect(uint ip, ushort port)
    {
        if (Closed) return -NetErrno.EBADF;
        if (!_stack.Routable(ip)) return -NetErrno.ENETUNREACH;
        if (LocalPort == 0) { int e = Bind(0, 0); if (e < 0) return e; }
        RemoteIp = ip; RemotePort = port;
        return 0;
    }

    /// <summary>Sends one datagram to (ip, port), or to the connected peer when <paramref name="ip"/> is 0.</summary>
    public int SendTo(ReadOnlySpan<byte> data, uint ip = 0, ushort port = 0)
    {
        if (Closed) return -NetErrno.EBADF;
        if (ip == 0) { if (RemotePort == 0) return -NetErrno.EDESTADDRREQ; ip = RemoteIp; port = RemotePort; }
        if (data.Length > MaxPayload) return -NetErrno.EMSGSIZE;
        if (port == 0) return -NetErrno.EINVAL;
        if (!_stack.Routable(ip)) return -NetErrno.ENETUNREACH;
        if (LocalPort == 0) { int e = Bind(0, 0); if (e < 0) return e; }
        var d = new byte[Wire.UdpHeader + data.Length];
        Wire.U16(d, 0, LocalPort);
        Wire.U16(d, 2, port);
        Wire.U16(d, 4, (ushort)d.Length);
        data.CopyTo(d.AsSpan(Wire.UdpHeader));
        ushort sum = Wire.TransportChecksum(_stack.Config.Ip, ip, Wire.ProtoUdp, d);
        Wire.U16(d, 6, sum == 0 ? (ushort)0xFFFF : sum);
        _stack.SendIp(ip, Wire.ProtoUdp, d);
        return data.Length;
    }

    /// <summary>Takes (or with <paramref name="peek"/> copies) the oldest datagram; excess bytes are cut off as recv(2) does.</summary>
    public int ReceiveFrom(Span<byte> dest, out uint ip, out ushort port, bool peek = false)
    {
        ip = 0; port = 0;
        if (Closed) return -NetErrno.EBADF;
        if (PendingError != 0) { int e = PendingError; PendingError = 0; return -e; }
        if (_rx.Count == 0) return -NetErrno.EAGAIN;
        var (sip, sport, data) = peek ? _rx.Peek() : _rx.Dequeue();
        if (!peek) _rxBytes -= data.Length;
        ip = sip; port = sport;
        int n = Math.Min(dest.Length, data.Length);
        data.AsSpan(0, n).CopyTo(dest);
        return n;
    }

    public int Poll() =>
        Closed ? PollEvents.Hup : (_rx.Count > 0 ? PollEvents.In | PollEvents.RdNorm : 0) | PollEvents.Out | PollEvents.WrNorm
                                  | (PendingError != 0 ? PollEvents.Err : 0);

    public void Close()
    {
        if (Closed) return;
        Closed = true;
        _rx.Clear(); _rxBytes = 0;
        _stack.ReleaseUdp(this);
    }

    internal void Deliver(uint ip, ushort port, ReadOnlySpan<byte> data)
    {
        if (RemotePort != 0 && (ip != RemoteIp || port != RemotePort)) return;
        if (_rxBytes + data.Length > _stack.Config.UdpReceiveBuffer) return;   // a full queue drops, as on Linux
        _rx.Enqueue((ip, port, data.ToArray()));
        _rxBytes += data.Length;
    }

    internal void Serialize(StateCodec c)
    {
        c.Prop(LocalIp, v => LocalIp = v); c.Prop(LocalPort, v => LocalPort = v);
        c.Prop(RemoteIp, v => RemoteIp = v); c.Prop(RemotePort, v => RemotePort = v);
        c.Prop(Closed, v => Closed = v); c.Prop(ReuseAddr, v => ReuseAddr = v); c.Do(ref PendingError);
        int n = c.Count(_rx.Count);
        var items = _rx.ToList();
        if (c.Reading) { _rx.Clear(); _rxBytes = 0; }
        for (int i = 0; i < n; i++)
        {
            var (ip, port, data) = c.Reading ? (0u, (ushort)0, Array.Empty<byte>()) : items[i];
            c.Do(ref ip); c.Do(ref port); c.Do(ref data);
            if (c.Reading) { _rx.Enqueue((ip, port, data)); _rxBytes += data.Length; }
        }
    }
}

public sealed partial class NetStack
{
    readonly SortedDictionary<long, UdpSocket> _udp = new();
    readonly Dictionary<ushort, UdpSocket> _udpPorts = new();
    int _socketCount;

    /// <summary>A new UDP socket, or null when <see cref="NetConfig.MaxSockets"/> are open.</summary>
    public UdpSocket? CreateUdp() => Create(_udp, id => new UdpSocket(this, id));

    /// <summary>A new socket registered under the next id, or null when <see cref="NetConfig.MaxSockets"/> are open.</summary>
    T? Create<T>(SortedDictionary<long, T> table, Func<long, T> make) where T : class
    {
        if (_socketCount >= Config.MaxSockets) return null;
        _socketCount++;
        long id = NewSocketId();
        return table[id] = make(id);
    }

    internal bool BindUdp(UdpSocket u, ushort port) => _udpPorts.TryAdd(port, u);

    internal void ReleaseUdp(UdpSocket u)
    {
        if (u.LocalPort != 0 && _udpPorts.TryGetValue(u.LocalPort, out var b) && b == u) _udpPorts.Remove(u.LocalPort);
        if (_udp.Remove(u.Id)) _socketCount--;
    }

    internal ushort PickUdpPort()
    {
        for (int i = 0; i <= EphemeralHigh - EphemeralLow; i++)
        {
            ushort p = NextEphemeral();
            if (!_udpPorts.ContainsKey(p)) return p;
        }
        return 0;
    }

    void UdpInput(uint src, uint dst, ReadOnlySpan<byte> b, bool broadcast)
    {
        if (b.Length < Wire.UdpHeader) { Counters.DropShort++; return; }
        int len = Wire.U16(b, 4);
        if (len < Wire.UdpHeader || len > b.Length) { Counters.DropBadLength++; return; }
        b = b[..len];
        if (Wire.U16(b, 6) != 0 && Wire.TransportChecksum(src, dst, Wire.ProtoUdp, b) != 0) { Counters.DropChecksum++; return; }
        ushort sport = Wire.U16(b, 0), dport = Wire.U16(b, 2);
        if (_udpPorts.TryGetValue(dport, out var u) && (u.LocalIp == 0 || u.LocalIp == dst || broadcast))
        {
            u.Deliver(src, sport, b[Wire.UdpHeader..]);
            return;
        }
        Counters.DropNoConnection++;
        if (!broadcast) SendIcmpPortUnreachable(src, RebuildIpHeader(src, dst, b));
    }

    /// <summary>The offending datagram's IP header and first 8 bytes, as ICMP quotes them (RFC 792).</summary>
    byte[] RebuildIpHeader(uint src, uint dst, ReadOnlySpan<byte> udp)
    {
        var q = new byte[Wire.Ip4Header + Math.Min(8, udp.Length)];
        q[0] = 0x45;
        Wire.U16(q, 2, (ushort)(Wire.Ip4Header + udp.Length));
        q[8] = Wire.DefaultTtl;
        q[9] = Wire.ProtoUdp;
        Wire.U32(q, 12, src);
        Wire.U32(q, 16, dst);
        Wire.U16(q, 10, Wire.Checksum(q.AsSpan(0, Wire.Ip4Header)));
        udp[..(q.Length - Wire.Ip4Header)].CopyTo(q.AsSpan(Wire.Ip4Header));
        return q;
    }
}
