namespace ReVirt.Net;

/// <summary>A parsed, checksum-verified TCP segment (RFC 793 §3.1). Options we do not use are skipped.</summary>
readonly ref struct TcpSegment
{
    public readonly uint Src, Dst;
    public readonly ushort SrcPort, DstPort;
    public readonly uint Seq, Ack;
    public readonly TcpFlags Flags;
    public readonly ushort Window;
    public readonly int Mss, WScale;       // -1 when absent
    /// <summary>The SACK-permitted option (RFC 2018 §2; meaningful on a SYN).</summary>
    public readonly bool SackPermitted;
    /// <summary>The SACK option's blocks (RFC 2018 §3): 8 bytes each (left edge, right edge); empty when absent.</summary>
    public readonly ReadOnlySpan<byte> Sack;
    public readonly ReadOnlySpan<byte> Data;

    public TcpSegment(uint src, uint dst, ushort sp, ushort dp, uint seq, uint ack, TcpFlags flags, ushort wnd, int mss, int ws,
        bool sackPermitted, ReadOnlySpan<byte> sack, ReadOnlySpan<byte> data)
    {
        Src = src; Dst = dst; SrcPort = sp; DstPort = dp; Seq = seq; Ack = ack; Flags = flags; Window = wnd; Mss = mss; WScale = ws;
        SackPermitted = sackPermitted; Sack = sack; Data = data;
    }

    public bool Syn => (Flags & TcpFlags.Syn) != 0;
    public bool HasAck => (Flags & TcpFlags.Ack) != 0;
    public bool Rst => (Flags & TcpFlags.Rst) != 0;
    public bool Fin => (Flags & TcpFlags.Fin) != 0;
    /// <summary>Sequence space the segment occupies (data plus SYN and FIN).</summary>
    public int Length => Data.Length + (Syn ? 1 : 0) + (Fin ? 1 : 0);
}

/// <summary>What a frame heard on the old primary's wire is to a stack taking over (<see cref="NetStack.JudgeHeard"/>):
/// the first three are not given to the stack, the rest are.</summary>
public enum HeardKind : byte
{
    /// <summary>A copy of a frame this interface sent itself.</summary>
    Own,
    /// <summary>Not for this interface (or not an Ethernet frame).</summary>
    Foreign,
    /// <summary>TCP the stack already holds (the log had it).</summary>
    Old,
    /// <summary>TCP carrying data or a FIN the stack does not hold.</summary>
    Data,
    /// <summary>TCP carrying only an acknowledgment (or window, or SACK) the stack does not hold.</summary>
    Ack,
    /// <summary>TCP SYN or RST.</summary>
    Control,
    /// <summary>Anything else (ARP, ICMP, UDP): the stack judges it itself.</summary>
    Other,
}

public sealed partial class NetStack
{
    internal const int EphemeralLow = 32768, EphemeralHigh = 60999;   // Linux's ip_local_port_range
    ushort _nextEphemeral;

    readonly SortedDictionary<long, TcpSocket> _tcp = new();
    readonly Dictionary<(uint, ushort, uint, ushort), TcpSocket> _conns = new();
    readonly Dictionary<ushort, TcpSocket> _listeners = new();
    readonly Dictionary<ushort, int> _tcpPorts = new();

    /// <summary>A new TCP socket, or null when <see cref="NetConfig.MaxSockets"/> are open.</summary>
    public TcpSocket? CreateTcp() => Create(_tcp, id => new TcpSocket(this, id));

    /// <summary>Sockets the stack holds (user-held and orphaned connections still finishing), in id order.</summary>
    public IEnumerable<TcpSocket> TcpSockets => _tcp.Values;

    internal ushort NextEphemeral()
    {
        ushort p = _nextEphemeral;
        _nextEphemeral = p >= EphemeralHigh ? (ushort)EphemeralLow : (ushort)(p + 1);
        return p;
    }

    internal ushort PickTcpPort(uint ip, uint rip = 0, ushort rport = 0)
    {
        for (int i = 0; i <= EphemeralHigh - EphemeralLow; i++)
        {
            ushort p = NextEphemeral();
            if (!_tcpPorts.ContainsKey(p)) { RefPort(p); return p; }
        }
        return 0;
    }

    void RefPort(ushort p) => _tcpPorts[p] = _tcpPorts.GetValueOrDefault(p) + 1;

    /// <summary>
    /// bind(2) rules as Linux applies them to one address: a listener's port is never shared; a TIME_WAIT
    /// connection's port is reusable with SO_REUSEADDR; other sockets' ports only when both set SO_REUSEADDR.
    /// </summary>
    internal bool CanBind(TcpSocket s, uint ip, ushort port)
    {
        if (_tcpPorts.ContainsKey(port))
            foreach (var o in _tcp.Values)
            {
                if (o == s || !o.Bound || o.LocalPort != port) continue;
                if (o.State == TcpState.Listen) return false;
                if (o.State == TcpState.TimeWait ? !s.ReuseAddr : !(s.ReuseAddr && o.ReuseAddr)) return false;
            }
        RefPort(port);
        return true;
    }

    internal bool CanListen(TcpSocket s) => !_listeners.ContainsKey(s.LocalPort);
    internal void AddListener(TcpSocket s) => _listeners[s.LocalPort] = s;
    internal void RemoveListener(TcpSocket s) { if (_listeners.TryGetValue(s.LocalPort, out var l) && l == s) _listeners.Remove(s.LocalPort); }

    /// <summary>
    /// Whether <paramref name="frame"/> tells this stack nothing it does not already hold: a TCP segment of a synchronized
    /// connection with no SYN, FIN, RST or URG, all of whose data lies before RCV.NXT and whose acknowledgment number is
    /// at or before SND.UNA. Given such a segment the stack would only answer with a duplicate ACK. Used on the host side
    /// to pick, from frames a backup heard before it took over, those worth giving the stack (what is given is logged,
    /// so a replay sees exactly it); anything else (malformed, another protocol, another connection) is not judged old.
    /// Reads the state only.
    /// </summary>
    public bool HoldsAlready(ReadOnlySpan<byte> frame)
    {
        if (!TryTcpHeader(frame, out var b, out int hlen)) return false;
        var p = frame[Wire.EthHeader..];
        var flags = (TcpFlags)(b[13] & 0x3F);
        if ((flags & ~(TcpFlags.Ack | TcpFlags.Psh)) != 0 || (flags & TcpFlags.Ack) == 0) return false;
        if (FindConnection(Wire.U32(p, 16), Wire.U16(b, 2), Wire.U32(p, 12), Wire.U16(b, 0)) is not { } c
            || c.State is TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.SynReceived) return false;
        uint seq = Wire.U32(b, 4), ack = Wire.U32(b, 8);
        return Seq.Le(seq + (uint)(b.Length - hlen), c.RcvNxt) && Seq.Le(ack, c.SndUna);
    }

    /// <summary>
    /// What a frame a backup heard on the old primary's wire (<c>--hears-primary</c>) is to this stack at the takeover,
    /// judged on the host side before anything is given to the stack (what is given is logged, so a replay sees exactly
    /// it; what is not given never reaches the stack or the log). Reads the state only. First match:
    /// <list type="bullet">
    /// <item><see cref="HeardKind.Own"/>: its source MAC is this interface's own — a copy of a frame this interface sent
    /// (the survivor's early gratuitous ARP, flooded by the bridge to the old primary's port and mirrored back): never a
    /// peer's input (the stack would answer its own gratuitous ARP).</item>
    /// <item><see cref="HeardKind.Foreign"/>: too short for an Ethernet header or addressed to neither this interface's
    /// MAC nor broadcast (a flood the mirror copied): the stack would drop it unread.</item>
    /// <item><see cref="HeardKind.Old"/>: TCP that tells the stack nothing it does not hold (<see cref="HoldsAlready"/>),
    /// or a SYN of a synchronized connection's own handshake (its sequence number is the one the log's SYN had): given,
    /// it would only draw a duplicate or challenge ACK.</item>
    /// <item>Else what it is, given: <see cref="HeardKind.Data"/> (TCP with data or FIN), <see cref="HeardKind.Ack"/>
    /// (TCP with only an acknowledgment, window or SACK news), <see cref="HeardKind.Control"/> (TCP SYN or RST),
    /// <see cref="HeardKind.Other"/> (ARP, ICMP, UDP, anything the stack judges itself).</item>
    /// </list>
    /// </summary>
    public HeardKind JudgeHeard(ReadOnlySpan<byte> frame)
    {
        if (IsOwnFrame(frame)) return HeardKind.Own;
        if (frame.Length < Wire.EthHeader) return HeardKind.Foreign;
        var dst = MacAddress.Read(frame);
        if (dst != Config.Mac && dst != MacAddress.Broadcast) return HeardKind.Foreign;
        if (HoldsAlready(frame) || IsOwnHandshakeSyn(frame)) return HeardKind.Old;
        if (!TryTcpHeader(frame, out var b, out int hlen)) return HeardKind.Other;
        var flags = (TcpFlags)(b[13] & 0x3F);
        if ((flags & (TcpFlags.Syn | TcpFlags.Rst)) != 0) return HeardKind.Control;
        return b.Length > hlen || (flags & TcpFlags.Fin) != 0 ? HeardKind.Data : HeardKind.Ack;
    }

    /// <summary>Whether the frame's source MAC is this interface's own: a copy of a frame it sent (no peer's input).</summary>
    public bool IsOwnFrame(ReadOnlySpan<byte> frame) =>
        frame.Length >= 2 * Wire.MacLength && MacAddress.Read(frame[Wire.MacLength..]) == Config.Mac;

    /// <summary>A SYN (with or without ACK) of a synchronized connection whose sequence number is the connection's initial
    /// receive sequence: the handshake the log already holds, heard again.</summary>
    bool IsOwnHandshakeSyn(ReadOnlySpan<byte> frame)
    {
        if (!TryTcpHeader(frame, out var b, out _) || ((TcpFlags)b[13] & (TcpFlags.Syn | TcpFlags.Rst | TcpFlags.Fin)) != TcpFlags.Syn) return false;
        var p = frame[Wire.EthHeader..];
        return FindConnection(Wire.U32(p, 16), Wire.U16(b, 2), Wire.U32(p, 12), Wire.U16(b, 0)) is { } c
            && c.State is not (TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.SynReceived)
            && Wire.U32(b, 4) == c.Irs;
    }

    /// <summary>The TCP header and body of an IPv4 frame (no checksum check; the stack checks when it is given), with
    /// the header's length; false when the frame is not a well-formed IPv4 TCP segment.</summary>
    static bool TryTcpHeader(ReadOnlySpan<byte> frame, out ReadOnlySpan<byte> tcp, out int hlen)
    {
        tcp = default;
        hlen = 0;
        if (frame.Length < Wire.EthHeader + Wire.Ip4Header || Wire.U16(frame, 12) != Wire.EtherTypeIp4) return false;
        var p = frame[Wire.EthHeader..];
        int ihl = (p[0] & 0xF) * 4, total = Wire.U16(p, 2);
        if (p[0] >> 4 != 4 || ihl < Wire.Ip4Header || total < ihl + Wire.TcpHeader || total > p.Length || p[9] != Wire.ProtoTcp) return false;
        tcp = p[ihl..total];
        hlen = (tcp[12] >> 4) * 4;
        return hlen >= Wire.TcpHeader && hlen <= tcp.Length;
    }

    internal TcpSocket? FindConnection(uint lip, ushort lport, uint rip, ushort rport) =>
        _conns.GetValueOrDefault((lip, lport, rip, rport));

    internal void AddConnection(TcpSocket s) => _conns[(s.LocalIp, s.LocalPort, s.RemoteIp, s.RemotePort)] = s;

    internal void RemoveConnection(TcpSocket s)
    {
        var key = (s.LocalIp, s.LocalPort, s.RemoteIp, s.RemotePort);
        if (_conns.TryGetValue(key, out var c) && c == s) _conns.Remove(key);
    }

    internal void ReleaseTcp(TcpSocket s)
    {
        if (!_tcp.Remove(s.Id)) return;
        _socketCount--;
        if (s.Bound && _tcpPorts.TryGetValue(s.LocalPort, out int n))
        {
            if (n <= 1) _tcpPorts.Remove(s.LocalPort); else _tcpPorts[s.LocalPort] = n - 1;
        }
    }

    /// <summary>A child connection for a listener (counts against <see cref="NetConfig.MaxSockets"/>).</summary>
    internal TcpSocket? CreateChild(TcpSocket listener, in TcpSegment seg)
    {
        var c = CreateTcp();
        if (c == null) return null;
        c.LocalIp = seg.Dst; c.LocalPort = seg.DstPort; c.RemoteIp = seg.Src; c.RemotePort = seg.SrcPort;
        c.Bound = true;
        RefPort(c.LocalPort);
        return c;
    }

    /// <summary>Bounds TIME_WAIT: beyond <see cref="NetConfig.MaxTimeWait"/> the oldest one ends early (as Linux's tw_buckets).</summary>
    internal void LimitTimeWait()
    {
        var tw = _tcp.Values.Where(t => t.State == TcpState.TimeWait).ToList();
        if (tw.Count <= Config.MaxTimeWait) return;
        tw.MinBy(t => (t.EndDeadline, t.Id))!.EnterClosed();
    }

    void TcpInput(uint src, uint dst, ReadOnlySpan<byte> b)
    {
        if (b.Length < Wire.TcpHeader) { Counters.DropShort++; return; }
        int hlen = (b[12] >> 4) * 4;
        if (hlen < Wire.TcpHeader || hlen > b.Length) { Counters.DropBadLength++; return; }
        if (Wire.TransportChecksum(src, dst, Wire.ProtoTcp, b) != 0) { Counters.DropChecksum++; return; }
        int mss = -1, ws = -1;
        bool sackOk = false;
        ReadOnlySpan<byte> sack = [];
        var opts = b[Wire.TcpHeader..hlen];
        for (int i = 0; i < opts.Length;)
        {
            byte kind = opts[i];
            if (kind == 0) break;
            if (kind == 1) { i++; continue; }
            if (i + 1 >= opts.Length || opts[i + 1] < 2 || i + opts[i + 1] > opts.Length) { Counters.DropBadOption++; return; }
            int olen = opts[i + 1];
            if (kind == 2 && olen == 4) mss = Wire.U16(opts, i + 2);
            else if (kind == 3 && olen == 3) ws = opts[i + 2];
            else if (kind == TcpOptions.SackPermitted && olen == 2) sackOk = true;
            else if (kind == TcpOptions.Sack)
            {
                // RFC 2018 §3: 2 + 8n bytes, n >= 1 (at most 4 fit in 40 bytes of options); any other length is
                // ignored, the rest of the segment is not.
                if (olen > 2 && (olen - 2) % 8 == 0) sack = opts.Slice(i + 2, olen - 2);
                else Counters.SackBlocksIgnored++;
            }
            i += olen;
        }
        var flags = (TcpFlags)(b[13] & 0x3F);
        var seg = new TcpSegment(src, dst, Wire.U16(b, 0), Wire.U16(b, 2), Wire.U32(b, 4), Wire.U32(b, 8), flags,
            Wire.U16(b, 14), mss, ws, sackOk, sack, b[hlen..]);
        if (seg.SrcPort == 0 || seg.DstPort == 0) { Counters.DropBadLength++; return; }
        // SYN with RST or FIN is never legitimate (a scan or an attack): drop.
        if (seg.Syn && (seg.Rst || seg.Fin)) { Counters.DropBadOption++; return; }

        if (_conns.TryGetValue((dst, seg.DstPort, src, seg.SrcPort), out var conn)) { conn.OnSegment(seg); return; }
        if (ListenerFor(seg) is { } l) { l.OnListen(seg); return; }
        Counters.DropNoConnection++;
        ResetFor(seg);
    }

    /// <summary>The socket listening on the segment's destination address and port, if any.</summary>
    internal TcpSocket? ListenerFor(in TcpSegment seg) =>
        _listeners.TryGetValue(seg.DstPort, out var l) && (l.LocalIp == 0 || l.LocalIp == seg.Dst) ? l : null;

    /// <summary>RFC 793 §3.4 reset generation for a segment no connection owns (never for a RST).</summary>
    internal void ResetFor(in TcpSegment seg)
    {
        if (seg.Rst || !AllowUnsolicited()) return;
        Counters.ResetsSent++;
        if (seg.HasAck) SendTcpRaw(seg.Dst, seg.DstPort, seg.Src, seg.SrcPort, seg.Ack, 0, TcpFlags.Rst, 0, [], []);
        else SendTcpRaw(seg.Dst, seg.DstPort, seg.Src, seg.SrcPort, 0, seg.Seq + (uint)seg.Length, TcpFlags.Rst | TcpFlags.Ack, 0, [], []);
    }

    internal void SendTcp(TcpSocket s, uint seq, uint ack, TcpFlags flags, ushort wnd, ReadOnlySpan<byte> opts, ReadOnlySpan<byte> data) =>
        SendTcpRaw(s.LocalIp, s.LocalPort, s.RemoteIp, s.RemotePort, seq, ack, flags, wnd, opts, data);

    void SendTcpRaw(uint src, ushort sport, uint dst, ushort dport, uint seq, uint ack, TcpFlags flags, ushort wnd,
        ReadOnlySpan<byte> opts, ReadOnlySpan<byte> data)
    {
        int hlen = Wire.TcpHeader + opts.Length;
        var b = new byte[hlen + data.Length];
        Wire.U16(b, 0, sport);
        Wire.U16(b, 2, dport);
        Wire.U32(b, 4, seq);
        Wire.U32(b, 8, (flags & TcpFlags.Ack) != 0 ? ack : 0);
        b[12] = (byte)(hlen / 4 << 4);
        b[13] = (byte)flags;
        Wire.U16(b, 14, wnd);
        opts.CopyTo(b.AsSpan(Wire.TcpHeader));
        data.CopyTo(b.AsSpan(hlen));
        Wire.U16(b, 16, Wire.TransportChecksum(src, dst, Wire.ProtoTcp, b));
        SendIp(dst, Wire.ProtoTcp, b);
    }
}

public sealed partial class TcpSocket
{
    internal bool HasRtt;

    static uint InitialWindow(int mss) => (uint)Math.Min(10 * mss, Math.Max(2 * mss, 14600));   // RFC 6928

    void TakeOptions(in TcpSegment seg)
    {
        SndMss = Math.Clamp(seg.Mss < 0 ? DefaultMss : seg.Mss, 64, OurMss);
        // Window scaling only when both SYNs carry the option (RFC 7323 §2.2); a shift above 14 is taken as 14.
        if (seg.WScale >= 0 && RcvShift > 0) SndShift = Math.Min(seg.WScale, 14);
        else { SndShift = 0; RcvShift = 0; }
        // SACK only when both SYNs carry SACK-permitted (RFC 2018 §2) and this stack offers it.
        SackOk = Stack.Config.Sack && seg.SackPermitted;
        Cwnd = InitialWindow(SndMss);
    }

    /// <summary>A segment for a listening socket: a SYN makes a SYN_RECEIVED child (bounded queue), anything else is
    /// refused. <paramref name="iss"/>: the child's initial sequence number when the SYN reopens a connection that was in
    /// TIME-WAIT (else the stack's RFC 6528 choice).</summary>
    internal void OnListen(in TcpSegment seg, uint? iss = null)
    {
        if (seg.Rst) return;
        if (seg.HasAck) { Stack.ResetFor(seg); return; }
        if (!seg.Syn) return;
        if (AcceptQueue.Count >= Backlog) { Stack.Counters.SynDropped++; return; }
        if (SynQueue.Count >= Stack.Config.MaxSynQueue)
        {
            // SYN flood: the oldest half-open connection makes room (drop-oldest keeps memory bounded and lets a
            // real client that retries get through).
            Stack.Counters.SynDropped++;
            SynQueue[0].EnterClosed();
        }
        var c = Stack.CreateChild(this, seg);
        if (c == null) { Stack.Counters.SynDropped++; return; }
        c.Parent = this;
        c.ReuseAddr = ReuseAddr; c.NoDelay = NoDelay; c.KeepIdleNs = KeepIdleNs; c.KeepIntervalNs = KeepIntervalNs;
        c.KeepCount = KeepCount; c._keepAlive = _keepAlive;
        // nothing advertised yet: the right edge starts at RCV.NXT (left at 0, it stood for half of all sequence numbers
        // beyond any window, and the SYN-ACK offered 64 KiB whatever the receive buffer holds)
        c.Irs = seg.Seq; c.RcvNxt = c.RcvAdvEdge = seg.Seq + 1;
        c.RcvShift = WindowShift;
        c.TakeOptions(seg);
        c.Iss = iss ?? Stack.InitialSequence(c.LocalIp, c.LocalPort, c.RemoteIp, c.RemotePort);
        c.SndUna = c.Iss; c.SndNxt = c.SndMax = c.Iss + 1;
        c.SndWnd = seg.Window; c.SndWl1 = seg.Seq; c.SndWl2 = c.Iss;
        c.State = TcpState.SynReceived;
        c.RttTiming = true; c.RttSeq = c.Iss; c.RttStart = Stack.Now;
        SynQueue.Add(c);
        Stack.AddConnection(c);
        c.SendSyn();
    }

    internal void OnSegment(in TcpSegment seg)
    {
        if (State == TcpState.SynSent) { OnSynSent(seg); return; }
        if (State == TcpState.Closed) return;
        var c = Stack.Counters;

        // A retransmitted SYN for a connection still in SYN_RECEIVED: our SYN-ACK was lost; send it again.
        if (State == TcpState.SynReceived && seg.Syn && !seg.HasAck && seg.Seq == Irs) { SendSyn(); return; }

        // A new incarnation's SYN while we hold the old one in TIME-WAIT (we closed first, so the peer kept no TIME-WAIT
        // and may reuse its port at once): numbered beyond everything the old one received, it cannot be an old
        // duplicate, and it opens a connection (RFC 1122 §4.2.2.13, RFC 6191 §2 without timestamps). Our ISN goes a
        // whole window beyond what the old incarnation sent (as Linux chooses it), so none of its segments still in the
        // network can be taken for the new one's. Anything else (an old SYN) gets the ACK below.
        if (State == TcpState.TimeWait && seg.Syn && !seg.HasAck && Stack.Config.TimeWaitSyn && Seq.Gt(seg.Seq, RcvNxt)
            && Stack.ListenerFor(seg) is { } listener)
        {
            uint iss = SndMax + ushort.MaxValue + 2;
            c.TimeWaitReopens++;
            EnterClosed();
            listener.OnListen(seg, iss);
            return;
        }

        uint wnd = ReceiveWindow();
        int len = seg.Length;
        uint seq = seg.Seq;
        bool acceptable = len == 0
            ? (wnd == 0 ? seq == RcvNxt : Seq.InRange(seq, RcvNxt, RcvNxt + wnd))
            : wnd > 0 && (Seq.InRange(seq, RcvNxt, RcvNxt + wnd) || Seq.InRange(seq + (uint)len - 1, RcvNxt, RcvNxt + wnd));
        // A segment starting exactly at the window's right edge still carries a valid ACK (RFC 9293 §3.10.7.4: "special
        // allowance should be made to accept valid ACKs"): with a zero window that is a segment at RCV.NXT; with an open
        // one it is what a peer sends once it has filled our window past a hole we still wait for (its SND.NXT is our
        // right edge), and Linux's receiver takes such a segment too (it tests SEG.SEQ <= RCV.NXT + RCV.WND). Dropped
        // whole, its acknowledgment of our data would be lost until the hole is filled: our sender would sit on a full
        // send buffer, retransmit on its timer (backing the RTO off) and stop reading the peer's answers.
        bool ackOnly = !acceptable && (Stack.Config.LossRepair ? seq == RcvNxt + wnd : wnd == 0 && seq == RcvNxt);
        if (!acceptable && !ackOnly)
        {
            c.DropOutOfWindow++;
            // data we already had (a spurious or repeated resend): reported as a D-SACK in the ACK (RFC 2883 §4)
            if (seg.Data.Length > 0 && Seq.Gt(seq, Irs) && Seq.Le(seq + (uint)seg.Data.Length, RcvNxt)) NoteDuplicate(seq, seq + (uint)seg.Data.Length);
            if (!seg.Rst && Stack.AllowUnsolicited()) SendAck();
            return;
        }

        if (seg.Rst)
        {
            // RFC 5961 §3.2: only a RST exactly at RCV.NXT resets; one elsewhere in the window gets a challenge ACK.
            if (seq != RcvNxt) { if (Stack.AllowUnsolicited()) { c.ChallengeAcks++; SendAck(); } return; }
            // RFC 1337: a RST does not end TIME_WAIT early (no assassination); the 2MSL wait protects the next incarnation.
            if (State == TcpState.TimeWait) return;
            c.ResetsAccepted++;
            int err = State switch
            {
                TcpState.SynReceived => ActiveOpen ? NetErrno.ECONNREFUSED : 0,
                TcpState.CloseWait => NetErrno.EPIPE,
                TcpState.Closing or TcpState.LastAck or TcpState.TimeWait => 0,
                _ => NetErrno.ECONNRESET,
            };
            Abort(sendReset: false, err);
            return;
        }

        if (seg.Syn)
        {
            // RFC 5961 §4: a SYN on a synchronized connection is answered with a challenge ACK, never a reset.
            if (Stack.AllowUnsolicited()) { c.ChallengeAcks++; SendAck(); }
            return;
        }

        // Trim to the window: bytes already received at the front, bytes beyond the window at the back.
        var data = ackOnly ? ReadOnlySpan<byte>.Empty : seg.Data;
        bool fin = seg.Fin && !ackOnly;
        // data or a FIN beyond the window is not taken; the ACK sent for it tells the peer the window (RFC 9293 §3.10.7.4)
        if (ackOnly && len > 0 && Stack.Config.LossRepair && Stack.AllowUnsolicited()) AckPending = true;
        if (Seq.Lt(seq, RcvNxt))
        {
            int cut = (int)(RcvNxt - seq);
            if (data.Length > 0) NoteDuplicate(seq, seq + (uint)Math.Min(cut, data.Length));
            if (cut > data.Length) { data = []; fin = false; }
            else data = data[cut..];
            seq = RcvNxt;
        }
        uint room = RcvNxt + wnd - seq;
        if ((uint)data.Length > room) { data = data[..(int)room]; fin = false; }

        if (!seg.HasAck) return;

        if (State == TcpState.SynReceived)
        {
            if (Seq.Le(seg.Ack, SndUna) || Seq.Gt(seg.Ack, SndMax)) { c.DropBadAck++; Stack.ResetFor(seg); return; }
            if (Parent != null && Parent.AcceptQueue.Count >= Parent.Backlog) { c.SynDropped++; return; }
            State = TcpState.Established;
            WasConnected = true;
            SndWnd = (uint)seg.Window << SndShift; SndWl1 = seg.Seq; SndWl2 = seg.Ack; MaxSndWnd = SndWnd;
            if (Parent != null) { Parent.SynQueue.Remove(this); Parent.AcceptQueue.Add(this); }
            ArmKeepAlive();
        }

        // RFC 5961 §5.2: an ACK for data never sent is answered and dropped; one older than the largest window
        // the peer ever offered gets a challenge ACK.
        if (Seq.Gt(seg.Ack, SndMax)) { c.DropBadAck++; if (Stack.AllowUnsolicited()) SendAck(); return; }
        if (Seq.Lt(seg.Ack, SndUna - Math.Max(MaxSndWnd, 1))) { c.DropBadAck++; if (Stack.AllowUnsolicited()) { c.ChallengeAcks++; SendAck(); } return; }

        ArmKeepAlive();
        ProcessAck(seg.Ack, (uint)seg.Window << SndShift, seg.Seq, pure: seg.Data.Length == 0 && !seg.Fin, seg.Sack);
        if (State == TcpState.Closed) return;

        if (State == TcpState.TimeWait)
        {
            // A retransmitted FIN: our last ACK was lost. Answer and restart the 2MSL wait.
            if (seg.Fin) { EndDeadline = Stack.Now + TimeWaitNs; SendAck(); }
            return;
        }
        if ((data.Length > 0 || fin) && State is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2)
            ReceiveData(seq, data, fin);
        Output();
    }

    void ReceiveData(uint seq, ReadOnlySpan<byte> data, bool fin)
    {
        if (seq != RcvNxt)
        {
            // Out of order: keep it (bounded by the window and a segment count) and send a duplicate ACK at once,
            // which drives the sender's fast retransmit (RFC 5681 §4.2).
            bool had = Ooo.TryGetValue(seq, out var have);
            if (had && have!.Length >= data.Length) NoteDuplicate(seq, seq + (uint)data.Length);
            else if (data.Length > 0 && Ooo.Count < MaxOooSegments) Ooo[seq] = data.ToArray();
            if (data.Length > 0) LastOooSeq = seq;   // the first SACK block is the one holding it (RFC 2018 §4)
            if (fin) { OooFin = true; OooFinSeq = seq + (uint)data.Length; }
            SendAck();
            return;
        }
        int n = RecvBuf.Write(data);
        RcvNxt += (uint)n;
        if (n < data.Length) fin = false;
        while (Ooo.Count > 0)
        {
            uint s = Ooo.Keys[0];
            if (Seq.Gt(s, RcvNxt)) break;
            var d = Ooo.Values[0];
            Ooo.RemoveAt(0);
            int skip = (int)(RcvNxt - s);
            if (skip < d.Length) RcvNxt += (uint)RecvBuf.Write(d.AsSpan(skip));
        }
        AckPending = true;
        if (fin || (OooFin && OooFinSeq == RcvNxt)) ReceiveFin();
    }

    void ReceiveFin()
    {
        OooFin = false;
        Ooo.Clear();
        RcvNxt++;
        FinReceived = true;
        AckPending = true;
        switch (State)
        {
            case TcpState.Established: State = TcpState.CloseWait; break;
            case TcpState.FinWait1: if (FinAcked) EnterTimeWait(); else State = TcpState.Closing; break;
            case TcpState.FinWait2: EnterTimeWait(); break;
        }
    }

    bool FinAcked => FinSent && Seq.Gt(SndUna, FinSeq);

    void EnterTimeWait()
    {
        State = TcpState.TimeWait;
        RtxDeadline = KeepDeadline = RackDeadline = ProbeDeadline = long.MaxValue;
        EndDeadline = Stack.Now + TimeWaitNs;
        SendBuf.Discard(SendBuf.Count);
        SendAck();
        Stack.LimitTimeWait();
    }

    void ProcessAck(uint ack, uint wnd, uint segSeq, bool pure, ReadOnlySpan<byte> sack)
    {
        bool windowChanged = false;
        if (Seq.Lt(SndWl1, segSeq) || (SndWl1 == segSeq && Seq.Le(SndWl2, ack)))
        {
            windowChanged = SndWnd != wnd;
            SndWnd = wnd; SndWl1 = segSeq; SndWl2 = ack;
            if (wnd > MaxSndWnd) MaxSndWnd = wnd;
        }
        bool advanced = Seq.Gt(ack, SndUna);
        uint acked = advanced ? ack - SndUna : 0;
        ResetAckRtt();
        if (advanced)
        {
            if (RackOn) RackCumulative(ack);   // before SND.UNA moves: what the ACK delivers dates RACK's reference
            int dataAcked = (int)acked;
            if (FinSent && Seq.Gt(ack, FinSeq)) dataAcked--;
            if (Seq.Le(SndUna, Iss)) dataAcked--;                 // our SYN
            SendBuf.Discard(Math.Max(0, dataAcked));
            SndUna = ack;
            if (Seq.Lt(SndNxt, SndUna)) SndNxt = SndUna;
            if (Seq.Lt(HighRxt, SndUna)) HighRxt = SndUna;
            DropSackedBelow(SndUna);
        }
        // The peer's SACK blocks (RFC 2018 §3), taken after the cumulative ACK; blocks that add to the scoreboard
        // make this ACK a duplicate in RFC 6675's sense even when it also updates the window.
        (uint Start, uint End)? dsack = null;
        bool sackNews = !sack.IsEmpty && TakeSackBlocks(sack, out dsack);
        // RACK (RFC 8985 §6.2): ranges sent before the most recently sent delivered one, by more than the reordering
        // window, are lost; this replaces the duplicate-ACK count on a RACK connection
        bool rackLost = RackOn && RackOnAck(sack, dsack != null);
        if (RackOn) ProbeAcked(ack, advanced, sackNews, dsack);
        // on a RACK connection every ACK delivering a range sent once gives a sample (TakeAckRtt), before the timer restarts
        if (TakeAckRtt() is var rtt and >= 0 && Stack.Config.LossRepair) { RttTiming = false; RttSample(rtt); }
        if (advanced)
        {
            if (RttTiming && Seq.Gt(ack, RttSeq)) { RttTiming = false; RttSample(Stack.Now - RttStart); }
            Retries = 0;
            if (InRecovery)
            {
                if (Seq.Ge(ack, Recover)) { InRecovery = false; Cwnd = Ssthresh; if (RackOn) RackRecoveryEnded(); }
                else if (SackOk)
                {
                    // partial ACK under SACK: the segment now at SND.UNA goes at once unless this recovery resent it
                    // already (as NewReno does, RFC 6582: the scoreboard may hold nothing that shows it lost, and the
                    // pipe would hold it back); Output sends the other holes (RFC 6675 §5 step C). With RACK, RACK
                    // alone says what is lost.
                    if (!RackOn && !Seq.Gt(HighRxt, SndUna)) _ = ResendHole(SndUna, SegmentRoom);
                }
                else { RetransmitFirst(); Cwnd = Cwnd > acked ? Cwnd - acked + (uint)SndMss : (uint)SndMss; }   // partial ACK (RFC 6582)
            }
            else if (Cwnd < Ssthresh) Cwnd += Math.Min(acked, (uint)SndMss);
            else Cwnd += Math.Max(1u, (uint)SndMss * (uint)SndMss / Math.Max(Cwnd, 1));
            Cwnd = Math.Min(Cwnd, 1u << 30);
            DupAcks = 0;
            RtxDeadline = SndUna == SndMax ? long.MaxValue : Stack.Now + Rto;
            ArmProbe();
            if (FinAcked)
            {
                switch (State)
                {
                    case TcpState.FinWait1:
                        State = TcpState.FinWait2;
                        if (UserClosed) EndDeadline = Stack.Now + FinWait2Ns;
                        break;
                    case TcpState.Closing: EnterTimeWait(); break;
                    case TcpState.LastAck: EnterClosed(); break;
                }
            }
        }
        else if (ack == SndUna && SndMax != SndUna && ((pure && !windowChanged) || sackNews))
        {
            DupAcks++;
            // Loss is declared by DupThresh duplicates (RFC 5681 §3.2), or under SACK by more than (DupThresh - 1)
            // segments' worth of data SACKed above SND.UNA (RFC 6675 §5 IsLost); under SACK not while a go-back-N
            // resend (after a time-out or a takeover) is under way: its duplicates are the peer's answers to what it
            // already had, and a recovery would stop the resend of what the scoreboard cannot show lost (a takeover's
            // held segments the peer never saw), leaving it to the time-out.
            // With RACK, SACK blocks say what is lost; DupThresh duplicates with none above SND.UNA (a peer whose
            // stack sends no blocks in them, or a takeover's repair by duplicate ACKs) still mark SND.UNA's range
            // lost, as NewReno would read them, rather than leave it to the probe or the time-out.
            bool enter = !InRecovery && (RackOn
                ? SndNxt == SndMax && DupAcks == DuplicateAcksForFastRetransmit && Sacked.Count == 0 && RackMarkFirstLost()
                : SackOk
                ? SndNxt == SndMax && (DupAcks >= DuplicateAcksForFastRetransmit || IsLost(SndUna))
                : DupAcks == DuplicateAcksForFastRetransmit);
            if (enter && SackOk) EnterSackRecovery();
            else if (enter)
            {
                // Fast retransmit and recovery (RFC 5681 §3.2).
                Stack.Counters.FastRetransmits++;
                Ssthresh = Math.Max((SndMax - SndUna) / 2, 2 * (uint)SndMss);
                Recover = SndMax;
                InRecovery = true;
                HighRxt = SndUna;
                RetransmitFirst();
                Cwnd = Ssthresh + 3 * (uint)SndMss;
            }
            else if (InRecovery && !SackOk) Cwnd = Math.Min(Cwnd + (uint)SndMss, 1u << 30);
        }
        // D-SACK undo (RFC 3708), once this ACK has ended a recovery if it does
        UndoOnAck(dsack);
        // a RACK connection enters recovery when RACK finds a range lost, not while a go-back-N resend is under way
        if (rackLost && !InRecovery && SndNxt == SndMax && State != TcpState.Closed) EnterSackRecovery();
    }

    /// <summary>
    /// Fast recovery on a SACK connection (RFC 6675 §5; with RACK, RFC 8985 §6.2 says when): the window is halved, the
    /// first hole goes at once, Output sends the others as the pipe allows (no window inflation). Without RACK, what a
    /// go-back-N resend that just ended sent again (up to HighRxt) counts as resent. A tail-loss probe episode ends
    /// here: this recovery is the congestion response.
    /// </summary>
    void EnterSackRecovery()
    {
        Stack.Counters.FastRetransmits++;
        UndoBegin(Cwnd, Ssthresh);
        Ssthresh = Math.Max((SndMax - SndUna) / 2, 2 * (uint)SndMss);
        Recover = SndMax;
        InRecovery = true;
        Cwnd = Ssthresh;
        ProbeOut = false; ProbeDeadline = long.MaxValue;
        if (RackOn)
        {
            if (RackNextLost(out uint seq, out int len)) _ = ResendHole(seq, len);
            return;
        }
        if (!Seq.Gt(HighRxt, SndUna) || Seq.Gt(HighRxt, SndMax)) HighRxt = SndUna;
        if (HighRxt == SndUna) _ = ResendHole(SndUna, SegmentRoom);
    }

    void RttSample(long r)
    {
        // RFC 6298 §2.2-2.3 with alpha = 1/8, beta = 1/4.
        NoteMinRtt(r);   // RACK's reordering window is a quarter of the minimum
        if (!HasRtt) { Srtt = r; RttVar = r / 2; HasRtt = true; }
        else { RttVar = (3 * RttVar + Math.Abs(Srtt - r)) / 4; Srtt = (7 * Srtt + r) / 8; }
        Rto = Math.Clamp(Srtt + Math.Max(ClockGranularity, 4 * RttVar), MinRto, MaxRto);
    }

    /// <summary>
    /// A connection carried over by a takeover (<see cref="NetStack.TakeOver"/>); every segment sent is one the
    /// connection could have sent anyway, so any peer takes it as valid TCP, and a connection with nothing
    /// outstanding gets only ACKs of what it already knows.
    /// <list type="bullet">
    /// <item>An ACK of what we hold, then three duplicates of it (RFC 5681 §3.2): a peer whose last segments reached
    /// only the old replica has them outstanding, and three duplicate ACKs make a sender fast-retransmit at once. The
    /// first may be new to the peer (its sequence number or window): only the three after it are certain duplicates.
    /// Linux counts them on a connection without SACK when at least four of its segments are in flight; on one with
    /// SACK (which we negotiate when the peer offers it) they carry no block for segments only the old replica held,
    /// and its tail-loss probe or timer resends them; with one segment in flight (a request-response client's one
    /// request) it resends on its own timer either way — the stall the clients' route `rto_min` bounds
    /// (docs/ARCHITECTURE.md, Takeover).</item>
    /// <item>Everything unacknowledged again from SND.UNA but what the peer SACKed (go-back-N, as after a retransmission time-out but without
    /// the back-off and the collapse of the congestion window: the path did not lose it, the old replica may never
    /// have sent it), within the windows; the retransmission timer restarts from the takeover's clock. The peer drops
    /// what it already has and acknowledges the rest.</item>
    /// <item>A handshake in progress sends its SYN or SYN-ACK again (the old replica's may have been held).</item>
    /// <item>With <see cref="NetConfig.TakeoverProbe"/>, one tail-loss probe a little over two round trips later if the
    /// repair is not acknowledged by then (<see cref="ArmTakeoverProbe"/>).</item>
    /// </list>
    /// </summary>
    internal void Resynchronize()
    {
        if (State is TcpState.SynSent or TcpState.SynReceived)
        {
            RttTiming = false;
            SendSyn();
            RtxDeadline = Stack.Now + Rto;
            return;
        }
        if (State is not (TcpState.Established or TcpState.CloseWait or TcpState.FinWait1 or TcpState.FinWait2 or TcpState.Closing or TcpState.LastAck)) return;
        for (int i = 0; i < 1 + DuplicateAcksForFastRetransmit; i++) SendAck();
        if (SndUna == SndMax) return;
        Stack.Counters.Retransmits++;
        SndNxt = SndUna;
        if (FinSent && Seq.Ge(FinSeq, SndUna)) FinSent = false;
        RttTiming = false;                  // Karn: no RTT sample from a retransmission
        InRecovery = false; DupAcks = 0; HighRxt = SndUna;
        if (RackOn) RackTimeout(forgetSacked: false);   // what the old replica sent may never have left it
        RtxDeadline = long.MaxValue;
        Output();
        if (RtxDeadline == long.MaxValue) RtxDeadline = Stack.Now + Rto;
        if (Stack.Config.TakeoverProbe) ArmTakeoverProbe();
    }

    /// <summary>Duplicate ACKs that make a sender retransmit (RFC 5681 §3.2, DupThresh).</summary>
    internal const int DuplicateAcksForFastRetransmit = 3;

    /// <summary>Resends the first unacknowledged segment (fast retransmit); never timed (Karn's algorithm).</summary>
    void RetransmitFirst()
    {
        Span<byte> seg = stackalloc byte[OurMss];
        int n = SendBuf.Peek(0, seg[..Math.Min(SegmentRoom, SendBuf.Count)]);
        bool fin = FinSent && SndUna + (uint)n == FinSeq;
        if (n == 0 && !fin) return;
        RttTiming = false;
        Stack.Counters.Retransmits++;
        Stack.Counters.RetransmittedBytes += n;
        SendSegment(SndUna, TcpFlags.Ack | (fin ? TcpFlags.Fin : 0) | (n > 0 ? TcpFlags.Psh : 0), seg[..n]);
    }

    void OnSynSent(in TcpSegment seg)
    {
        var c = Stack.Counters;
        if (seg.HasAck && (Seq.Le(seg.Ack, Iss) || Seq.Gt(seg.Ack, SndMax))) { c.DropBadAck++; Stack.ResetFor(seg); return; }
        if (seg.Rst)
        {
            if (seg.HasAck) { c.ResetsAccepted++; Abort(sendReset: false, NetErrno.ECONNREFUSED); }
            return;
        }
        if (!seg.Syn) return;
        Irs = seg.Seq; RcvNxt = RcvAdvEdge = seg.Seq + 1;   // nothing advertised beyond RCV.NXT yet (see OnListen)
        TakeOptions(seg);
        if (!seg.HasAck)
        {
            // Simultaneous open (RFC 793 figure 8).
            State = TcpState.SynReceived;
            SendSyn();
            return;
        }
        SndUna = seg.Ack;
        if (RttTiming && Retries == 0) RttSample(Stack.Now - RttStart);
        RttTiming = false;
        SndWnd = seg.Window; SndWl1 = seg.Seq; SndWl2 = seg.Ack; MaxSndWnd = SndWnd;
        State = TcpState.Established;
        WasConnected = true;
        RtxDeadline = long.MaxValue; Retries = 0;
        ArmKeepAlive();
        SendAck();
        Output();
    }

    // ------------------------------------------------------------------ timers

    internal void OnTimer()
    {
        long now = Stack.Now;
        if (EndDeadline <= now) { EndDeadline = long.MaxValue; EnterClosed(); return; }
        if (RtxDeadline <= now) { RtxDeadline = long.MaxValue; RetransmitTimeout(); }
        if (State != TcpState.Closed && RackDeadline <= now) { RackDeadline = long.MaxValue; ReorderTimeout(); }
        if (State != TcpState.Closed && ProbeDeadline <= now) { ProbeDeadline = long.MaxValue; TailLossProbe(); }
        if (State != TcpState.Closed && KeepDeadline <= now) KeepAliveTimeout();
    }

    void Backoff() => Rto = Math.Min(Rto * 2, MaxRto);

    void RetransmitTimeout()
    {
        var c = Stack.Counters;
        switch (State)
        {
            case TcpState.SynSent:
                if (++Retries > MaxSynRetries) { Abort(sendReset: false, NetErrno.ETIMEDOUT); return; }
                Backoff(); c.Retransmits++; RttTiming = false; SendSyn();
                return;
            case TcpState.SynReceived:
                if (++Retries > MaxSynAckRetries) { EnterClosed(); return; }
                Backoff(); c.Retransmits++; RttTiming = false; SendSyn();
                return;
            case TcpState.Established: case TcpState.CloseWait: case TcpState.FinWait1: case TcpState.Closing: case TcpState.LastAck:
                break;
            default: return;
        }
        if (SndMax == SndUna)
        {
            if (SendBuf.Count == 0) return;
            // Persist timer (RFC 9293 §3.8.6.1): probe a zero window with one byte.
            if (++Retries > MaxRetries) { Abort(sendReset: true, NetErrno.ETIMEDOUT); return; }
            Backoff();
            Span<byte> one = stackalloc byte[1];
            SendBuf.Peek(0, one);
            SendSegment(SndNxt, TcpFlags.Ack, one);
            SndNxt++; SndMax = SndNxt;
            RtxDeadline = Stack.Now + Rto;
            return;
        }
        if (++Retries > MaxRetries) { Abort(sendReset: true, NetErrno.ETIMEDOUT); return; }
        // RFC 5681 §3.1 eq. 4 and RFC 6298 §5.5-5.6: halve, restart from one segment, back off, resend from SND.UNA.
        c.Retransmits++;
        c.RetransmitTimeouts++;
        UndoOpen = false;   // a time-out's cut is not undone here
        uint flight = SndMax - SndUna;
        Ssthresh = Math.Max(flight / 2, 2 * (uint)SndMss);
        Cwnd = (uint)SndMss;
        InRecovery = false; DupAcks = 0; HighRxt = SndUna;
        // the go-back-N resend skips SACKed ranges; from the second time-out in a row the peer may have reneged on
        // them (RFC 2018 §8), so they are forgotten and everything goes again
        if (Retries > 1) Sacked.Clear();
        if (RackOn) RackTimeout(forgetSacked: Retries > 1);
        SndNxt = SndUna;
        if (FinSent && Seq.Ge(FinSeq, SndUna)) FinSent = false;
        RttTiming = false;
        Backoff();
        RtxDeadline = Stack.Now + Rto;
        Output();
    }

    void KeepAliveTimeout()
    {
        if (State is not (TcpState.Established or TcpState.CloseWait)) { KeepDeadline = long.MaxValue; return; }
        if (KeepProbesSent >= KeepCount) { Abort(sendReset: true, NetErrno.ETIMEDOUT); return; }
        // RFC 1122 §4.2.3.6: a segment with SEG.SEQ = SND.NXT - 1 makes the peer answer with an ACK.
        KeepProbesSent++;
        Stack.Counters.KeepAliveProbes++;
        SendSegment(SndUna - 1, TcpFlags.Ack, []);
        KeepDeadline = Stack.Now + KeepIntervalNs;
    }
}
