using System.Security.Cryptography;

namespace ReVirt.Net;

/// <summary>The interface's identity and the stack's bounds. Every bound is a limit on memory a peer can make the stack hold.</summary>
public sealed record NetConfig(MacAddress Mac, uint Ip, int PrefixLength, uint Gateway = 0)
{
    public int MaxSockets { get; init; } = 4096;
    public int MaxOutFrames { get; init; } = 8192;
    public int ArpCacheSize { get; init; } = 256;
    public int ArpPendingHosts { get; init; } = 64;
    public int ArpPendingFramesPerHost { get; init; } = 8;
    public int SendBuffer { get; init; } = 256 * 1024;
    public int ReceiveBuffer { get; init; } = 256 * 1024;
    public int UdpReceiveBuffer { get; init; } = 208 * 1024;
    /// <summary>Most SYN_RECEIVED children one listener holds (a SYN flood beyond it is dropped).</summary>
    public int MaxSynQueue { get; init; } = 128;
    public int MaxTimeWait { get; init; } = 1024;
    /// <summary>RFC 5961 §7: challenge ACKs (and ACKs to out-of-window segments, RSTs to stray segments) per second.</summary>
    public int ChallengeAcksPerSecond { get; init; } = 100;
    /// <summary>Offer and use selective acknowledgement (RFC 2018; used only when the peer offers it too).</summary>
    public bool Sack { get; init; } = true;
    /// <summary>RACK-TLP loss detection in the sender of a SACK connection (RFC 8985): time-based, so a lost
    /// retransmission is found without the retransmission time-out, with a tail-loss probe for a lost tail.</summary>
    public bool Rack { get; init; } = true;
    /// <summary>Report duplicate segments in the first SACK block (D-SACK, RFC 2883) on SACK connections.</summary>
    public bool Dsack { get; init; } = true;
    /// <summary>Undo a SACK recovery's window cut when the peer's D-SACKs show every retransmission of it was a copy
    /// of data it had (RFC 3708): a reordering path keeps its window.</summary>
    public bool DsackUndo { get; init; } = true;
    /// <summary>RACK's minimum RTT is the least over the last <see cref="MinRttWindowNs"/> (RFC 8985 §6.2 step 2),
    /// not over the connection's life.</summary>
    public bool WindowedMinRtt { get; init; } = true;
    /// <summary>The minimum RTT's window (ns): Linux's default for its RACK (net.ipv4.tcp_min_rtt_wlen, 300 s).</summary>
    public long MinRttWindowNs { get; init; } = 300_000_000_000;
    /// <summary>A SYN for a connection this stack holds in TIME-WAIT, numbered beyond everything the old incarnation
    /// received, opens a new connection (RFC 1122 §4.2.2.13, RFC 6191 §2 without timestamps), as Linux accepts it.
    /// Without it such a SYN gets an ACK of the old connection, and a client that reuses its port after a server closed
    /// first (the client keeps no TIME-WAIT then) cannot connect until the 60 s wait ends.</summary>
    public bool TimeWaitSyn { get; init; } = true;
    /// <summary>A synchronisation's frames (<see cref="NetStack.Receive"/>) are all taken before any timer runs, as a
    /// host stack processes what its device queued before its timers: a retransmission timer that fell due while the
    /// peer's ACK waited in the same batch is not fired before that ACK (a spurious time-out: a resend, a window cut to
    /// one segment and a doubled RTO). Without it the timers ran after each frame of the batch.</summary>
    public bool BatchInput { get; init; } = true;
    /// <summary>A takeover's repair (<see cref="NetStack.TakeOver"/>) is followed by one tail-loss probe on every RACK
    /// connection with data still out, at 2·SRTT + <see cref="TcpSocket.ProbeSlackNs"/> (without RFC 8985's allowance for
    /// a delayed ACK): the repair's segments cross the same lossy path as any, and a lost one otherwise waited for the
    /// retransmission time-out (200 ms at least, the log's back-off included). Without it a lost repair segment waited
    /// for that time-out, as the stack did before.</summary>
    public bool TakeoverProbe { get; init; } = true;
    /// <summary>Loss repair without long stalls (TcpStallTests): every ACK that delivers data sent once is an RTT sample
    /// (so a time-out's back-off ends at the first such ACK), a resend RACK finds lost during a go-back-N goes again
    /// at once instead of at the next time-out, and a segment at our window's right edge has its ACK taken (a peer that
    /// filled the window past a hole sends its ACKs there). Without it, as the stack did before.</summary>
    public bool LossRepair { get; init; } = true;

    public uint Mask => Ip4.Mask(PrefixLength);
    public uint SubnetBroadcast => (Ip & Mask) | ~Mask;
}

/// <summary>What the stack counted; every dropped frame is counted under the reason it was dropped.</summary>
public sealed class NetCounters
{
    public long FramesIn, FramesOut, OutQueueOverflow;
    public long DropShort, DropBadLength, DropChecksum, DropFragment, DropNotForUs, DropUnknownProtocol, DropBadOption;
    public long DropOutOfWindow, DropBadAck, DropNoConnection, SynDropped, ChallengeAcks, RateLimited;
    public long ResetsSent, ResetsAccepted, Retransmits, FastRetransmits, KeepAliveProbes, ArpDropped, IcmpEchoReplies;
    /// <summary>Data bytes sent again (fast retransmit, SACK holes, go-back-N after a time-out or a takeover).</summary>
    public long RetransmittedBytes;
    /// <summary>Retransmission time-outs of established connections (each resends from SND.UNA).</summary>
    public long RetransmitTimeouts;
    /// <summary>SACK blocks we sent, the peer's we used, and the peer's ignored as invalid (RFC 2018).</summary>
    public long SackBlocksSent, SackBlocksReceived, SackBlocksIgnored;
    /// <summary>RACK (RFC 8985): segments it marked lost, and how many of them were retransmissions lost again.</summary>
    public long RackLostSegments, RackLostRetransmits;
    /// <summary>Tail-loss probes sent, and those whose resent data repaired a loss (the window was halved).</summary>
    public long TailLossProbes, TailLossProbeRepairs;
    /// <summary>D-SACK blocks (RFC 2883) we sent for duplicates received, and the peer's we took.</summary>
    public long DsackBlocksSent, DsackBlocksReceived;
    /// <summary>SACK recoveries whose window cut was undone: every retransmission was reported as a duplicate (RFC 3708).</summary>
    public long DsackUndos;
    /// <summary>Connections in TIME-WAIT that a new SYN ended to open the next incarnation (<see cref="NetConfig.TimeWaitSyn"/>).</summary>
    public long TimeWaitReopens;

    /// <summary><paramref name="timeWaitSyn"/> false: the layout before <see cref="TimeWaitReopens"/> existed (see
    /// <see cref="NetStack.Digest"/>).</summary>
    internal void Serialize(StateCodec c, bool timeWaitSyn)
    {
        c.Do(ref FramesIn); c.Do(ref FramesOut); c.Do(ref OutQueueOverflow); c.Do(ref DropShort); c.Do(ref DropBadLength);
        c.Do(ref DropChecksum); c.Do(ref DropFragment); c.Do(ref DropNotForUs); c.Do(ref DropUnknownProtocol);
        c.Do(ref DropBadOption); c.Do(ref DropOutOfWindow); c.Do(ref DropBadAck); c.Do(ref DropNoConnection);
        c.Do(ref SynDropped); c.Do(ref ChallengeAcks); c.Do(ref RateLimited); c.Do(ref ResetsSent); c.Do(ref ResetsAccepted);
        c.Do(ref Retransmits); c.Do(ref FastRetransmits); c.Do(ref KeepAliveProbes); c.Do(ref ArpDropped); c.Do(ref IcmpEchoReplies);
        c.Do(ref RetransmittedBytes); c.Do(ref RetransmitTimeouts); c.Do(ref SackBlocksSent); c.Do(ref SackBlocksReceived); c.Do(ref SackBlocksIgnored);
        c.Do(ref RackLostSegments); c.Do(ref RackLostRetransmits); c.Do(ref TailLossProbes); c.Do(ref TailLossProbeRepairs);
        c.Do(ref DsackBlocksSent); c.Do(ref DsackBlocksReceived); c.Do(ref DsackUndos);
        if (timeWaitSyn) c.Do(ref TimeWaitReopens);
    }
}

/// <summary>
/// A deterministic TCP/IP stack for one Ethernet interface: Ethernet II, ARP (RFC 826, gratuitous announce RFC 5227),
/// IPv4 (RFC 791; fragments are dropped, never reassembled), ICMP echo (RFC 792), UDP (RFC 768) and TCP
/// (RFC 793/9293, 6298, 5681, 7323 window scale, 5961, 6528, 1122 keep-alive).
///
/// Contract: the stack's state is a pure function of its <see cref="NetConfig"/>, the seed, and the ordered sequence
/// of calls made on it — <see cref="Input"/> with a frame, <see cref="Advance"/> with a clock value, and socket calls.
/// It reads no host clock, starts no thread, draws no randomness but from the seed. Outgoing frames are queued and
/// taken with <see cref="TryTakeFrame"/>; <see cref="NextDeadline"/> is the clock value at which <see cref="Advance"/>
/// must next be called. Socket calls never block: they return -EAGAIN / -EINPROGRESS and <c>Poll</c> says when to
/// retry; blocking is the caller's business. Not thread-safe: one caller at a time.
/// </summary>
public sealed partial class NetStack
{
    public NetConfig Config { get; }
    public NetCounters Counters { get; } = new();

    /// <summary>The last clock value handed in (ns); never decreases.</summary>
    public long Now { get; private set; }

    ulong _rng;
    ulong _isnKey;
    long _nextSocketId = 1;
    readonly Queue<byte[]> _out = new();
    long _rateWindowStart; int _rateCount;

    public NetStack(NetConfig config, ulong seed, long nowNs = 0)
    {
        if (config.Ip == 0 || config.Mac.Value == 0) throw new ArgumentException("interface needs a MAC and an IPv4 address");
        Config = config;
        _rng = seed;
        _isnKey = NextRandom();
        _nextEphemeral = (ushort)(EphemeralLow + (int)(NextRandom() % (EphemeralHigh - EphemeralLow + 1)));
        Now = nowNs;
    }

    /// <summary>SplitMix64: the only source of the stack's choices (ISNs, ephemeral ports), seeded by the caller.</summary>
    internal ulong NextRandom()
    {
        ulong z = _rng += 0x9E3779B97F4A7C15;
        return Mix(z);
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }

    /// <summary>RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.</summary>
    internal uint InitialSequence(uint lip, ushort lport, uint rip, ushort rport) =>
        (uint)(Now / 4000) + (uint)Mix(_isnKey ^ ((ulong)lip << 32 | rip) ^ Mix((ulong)lport << 16 | rport));

    /// <summary>Moves the clock forward (a smaller value is ignored) and runs every timer that is due.</summary>
    public void Advance(long nowNs)
    {
        if (nowNs > Now) Now = nowNs;
        RunTimers();
    }

    /// <summary>The clock value of the earliest pending timer, or <see cref="long.MaxValue"/> when none is armed.</summary>
    public long NextDeadline
    {
        get
        {
            long d = ArpDeadline();
            foreach (var s in _tcp.Values) d = Math.Min(d, s.Deadline);
            return d;
        }
    }

    /// <summary>True while a connection still has something to deliver: bytes not yet acknowledged, or a FIN (ours) in
    /// flight. A machine whose guest has ended runs the stack until this is false (Linux keeps orphaned connections).</summary>
    public bool Draining => _tcp.Values.Any(s => s.State is TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck
        || (s.State is TcpState.Established or TcpState.CloseWait && s.SendBuf.Count > 0));

    /// <summary>TCP connections that are synchronized (established or closing).</summary>
    public int ConnectionCount => _tcp.Values.Count(s => s.State is not (TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.SynReceived or TcpState.TimeWait));

    /// <summary>
    /// This stack now answers on a new wire (a backup took over the interface with the replayed state) at clock
    /// <paramref name="nowNs"/>: it announces the address (gratuitous ARP, so neighbours and switches send here) and
    /// repairs every connection at once instead of after a retransmission time-out, because whatever the old
    /// replica's last frames carried may never have left it (its output gate held them) and whatever a peer sent it
    /// last may never have reached the log (<see cref="TcpSocket.Resynchronize"/>). Called at a logged point with a
    /// logged clock, so a replay repairs identically.
    /// </summary>
    public void TakeOver(long nowNs)
    {
        Advance(nowNs);
        Announce();
        foreach (var s in _tcp.Values.OrderBy(s => s.Id).ToArray()) s.Resynchronize();
    }

    void RunTimers()
    {
        ArpTimers();
        // A timer may close (and remove) its socket: iterate over a snapshot in id order.
        foreach (var s in _tcp.Values.ToArray())
            if (s.Deadline <= Now) s.OnTimer();
    }

    /// <summary>Frames waiting to go out, oldest first.</summary>
    public int PendingFrames => _out.Count;

    public bool TryTakeFrame(out byte[] frame) => _out.TryDequeue(out frame!);

    void Emit(byte[] frame)
    {
        if (_out.Count >= Config.MaxOutFrames) { Counters.OutQueueOverflow++; return; }
        Counters.FramesOut++;
        _out.Enqueue(frame);
    }

    /// <summary>Global limiter for unsolicited answers (RFC 5961 §7), so a flood cannot make the stack send without bound.</summary>
    internal bool AllowUnsolicited()
    {
        const long Second = 1_000_000_000;
        if (Now - _rateWindowStart >= Second) { _rateWindowStart = Now; _rateCount = 0; }
        if (_rateCount >= Config.ChallengeAcksPerSecond) { Counters.RateLimited++; return false; }
        _rateCount++;
        return true;
    }

    // ------------------------------------------------------------------ input

    /// <summary>
    /// Hands the stack one received Ethernet frame (destination MAC, source MAC, EtherType, payload; no FCS), then
    /// runs the timers that are due. Any byte sequence is accepted: a malformed frame is counted and dropped or answered
    /// as the RFCs say.
    /// </summary>
    public void Input(ReadOnlySpan<byte> frame, long nowNs)
    {
        if (Take(frame, nowNs)) RunTimers();
    }

    /// <summary>
    /// Hands the stack the frames one synchronisation read from the wire, all stamped <paramref name="nowNs"/> (the
    /// clock when they were read), then moves the clock there and runs the timers that are due. With
    /// <see cref="NetConfig.BatchInput"/> every frame is taken before any timer runs, so an ACK in the batch cancels
    /// the retransmission it answers; without it (a log recorded before it) the timers run after each frame as
    /// <see cref="Input"/> runs them, as that log's stack did.
    /// </summary>
    public void Receive(IReadOnlyList<byte[]> frames, long nowNs)
    {
        foreach (var f in frames)
            if (Take(f, nowNs) && !Config.BatchInput) RunTimers();
        Advance(nowNs);
    }

    /// <summary>One frame's processing without the timers; false when it was dropped before its protocol was looked at
    /// (too short, not for us), after which the stack before <see cref="NetConfig.BatchInput"/> ran no timers.</summary>
    bool Take(ReadOnlySpan<byte> frame, long nowNs)
    {
        if (nowNs > Now) Now = nowNs;
        Counters.FramesIn++;
        if (frame.Length < Wire.EthHeader) { Counters.DropShort++; return false; }
        var dst = MacAddress.Read(frame);
        if (dst != Config.Mac && dst != MacAddress.Broadcast) { Counters.DropNotForUs++; return false; }
        var src = MacAddress.Read(frame[6..]);
        ushort type = Wire.U16(frame, 12);
        var payload = frame[Wire.EthHeader..];
        switch (type)
        {
            case Wire.EtherTypeArp: ArpInput(payload); break;
            case Wire.EtherTypeIp4: Ip4Input(payload, src, dst == MacAddress.Broadcast); break;
            default: Counters.DropUnknownProtocol++; break;
        }
        return true;
    }

    void Ip4Input(ReadOnlySpan<byte> p, MacAddress srcMac, bool linkBroadcast)
    {
        if (p.Length < Wire.Ip4Header) { Counters.DropShort++; return; }
        int version = p[0] >> 4, ihl = (p[0] & 0xF) * 4;
        int total = Wire.U16(p, 2);
        if (version != 4 || ihl < Wire.Ip4Header || total < ihl || total > p.Length) { Counters.DropBadLength++; return; }
        if (Wire.Checksum(p[..ihl]) != 0) { Counters.DropChecksum++; return; }
        ushort frag = Wire.U16(p, 6);
        if ((frag & (Wire.IpFlagMoreFragments | Wire.IpFragmentOffsetMask)) != 0) { Counters.DropFragment++; return; }
        uint src = Wire.U32(p, 12), dst = Wire.U32(p, 16);
        bool toUs = dst == Config.Ip;
        bool broadcast = dst == 0xFFFFFFFF || dst == Config.SubnetBroadcast;
        if (!toUs && !broadcast) { Counters.DropNotForUs++; return; }
        // A source that is broadcast, multicast, zero or ourselves is never a real peer (RFC 1122 §3.2.1.3).
        if (src == 0 || src == Config.Ip || src == 0xFFFFFFFF || src == Config.SubnetBroadcast || (src >> 28) == 0xE)
        { Counters.DropNotForUs++; return; }
        var body = p[ihl..total];
        byte proto = p[9];
        // Learning the sender's MAC from IP traffic addressed to us saves an ARP round trip on the reply path.
        if (toUs && !linkBroadcast && OnLink(src)) ArpLearn(src, srcMac, onlyIfKnown: true);
        switch (proto)
        {
            case Wire.ProtoTcp: if (toUs) TcpInput(src, dst, body); break;
            case Wire.ProtoUdp: UdpInput(src, dst, body, broadcast); break;
            case Wire.ProtoIcmp: if (toUs) IcmpInput(src, body); break;
            default: Counters.DropUnknownProtocol++; break;
        }
    }

    void IcmpInput(uint src, ReadOnlySpan<byte> b)
    {
        if (b.Length < Wire.IcmpHeader) { Counters.DropShort++; return; }
        if (Wire.Checksum(b) != 0) { Counters.DropChecksum++; return; }
        if (b[0] != Wire.IcmpEchoRequest || b[1] != 0) return;   // other ICMP messages are not acted on
        if (!AllowUnsolicited()) return;
        var reply = new byte[b.Length];
        b.CopyTo(reply);
        reply[0] = Wire.IcmpEchoReply;
        Wire.U16(reply, 2, 0);
        Wire.U16(reply, 2, Wire.Checksum(reply));
        Counters.IcmpEchoReplies++;
        SendIp(src, Wire.ProtoIcmp, reply);
    }

    internal void SendIcmpPortUnreachable(uint dst, ReadOnlySpan<byte> ipHeaderAndData)
    {
        if (!AllowUnsolicited()) return;
        int quoted = Math.Min(ipHeaderAndData.Length, Wire.Ip4Header + 8);
        var m = new byte[Wire.IcmpHeader + quoted];
        m[0] = Wire.IcmpDestUnreachable;
        m[1] = Wire.IcmpPortUnreachable;
        ipHeaderAndData[..quoted].CopyTo(m.AsSpan(Wire.IcmpHeader));
        Wire.U16(m, 2, Wire.Checksum(m));
        SendIp(dst, Wire.ProtoIcmp, m);
    }

    // ------------------------------------------------------------------ output

    ushort _ipId;

    bool OnLink(uint ip) => (ip & Config.Mask) == (Config.Ip & Config.Mask);

    /// <summary>Whether a destination can be reached (on the subnet or through the gateway).</summary>
    internal bool Routable(uint dst) => OnLink(dst) || Config.Gateway != 0 || dst == 0xFFFFFFFF;

    /// <summary>Wraps a transport payload in IPv4 and Ethernet and queues it (or parks it until ARP resolves the next hop).</summary>
    internal void SendIp(uint dst, byte proto, ReadOnlySpan<byte> payload)
    {
        int len = Wire.Ip4Header + payload.Length;
        var f = new byte[Math.Max(Wire.MinFrame, Wire.EthHeader + len)];
        var ip = f.AsSpan(Wire.EthHeader);
        ip[0] = 0x45;
        Wire.U16(ip, 2, (ushort)len);
        Wire.U16(ip, 4, _ipId++);
        Wire.U16(ip, 6, Wire.IpFlagDontFragment);
        ip[8] = Wire.DefaultTtl;
        ip[9] = proto;
        Wire.U32(ip, 12, Config.Ip);
        Wire.U32(ip, 16, dst);
        Wire.U16(ip, 10, Wire.Checksum(ip[..Wire.Ip4Header]));
        payload.CopyTo(ip[Wire.Ip4Header..]);
        Config.Mac.Write(f.AsSpan(6));
        Wire.U16(f, 12, Wire.EtherTypeIp4);

        if (dst == 0xFFFFFFFF || dst == Config.SubnetBroadcast) { MacAddress.Broadcast.Write(f); Emit(f); return; }
        uint hop = OnLink(dst) ? dst : Config.Gateway;
        if (hop == 0) return;
        if (ArpLookup(hop, out var mac)) { mac.Write(f); Emit(f); }
        else ArpPark(hop, f);
    }

    // ------------------------------------------------------------------ state

    /// <summary>
    /// Writes the stack's complete state in a canonical order (sockets by id, ARP entries by address): two stacks
    /// that were handed the same calls write the same bytes, and <see cref="Restore"/> rebuilds an equal stack.
    /// </summary>
    public void WriteState(BinaryWriter w) => WriteState(w, StateLayout.LossRepair);

    /// <summary>
    /// The state's byte layouts, one per start-state word that added bytes to it, oldest first: a stack built for a
    /// log of an older day (its configuration lacks the later words' behaviours) digests its state in that day's
    /// layout, so the log's checkpoint digests still match. Snapshots always carry the newest.
    /// </summary>
    enum StateLayout
    {
        /// <summary>Up to `undo` (before `twsyn`).</summary>
        Undo,
        /// <summary>`twsyn` added its setting and the <see cref="NetCounters.TimeWaitReopens"/> counter.</summary>
        TimeWaitSyn,
        /// <summary>`batch` added its setting (<see cref="NetConfig.BatchInput"/>).</summary>
        BatchInput,
        /// <summary>`tkprobe` added its setting (<see cref="NetConfig.TakeoverProbe"/>).</summary>
        TakeoverProbe,
        /// <summary>`lossrepair` added its setting (<see cref="NetConfig.LossRepair"/>).</summary>
        LossRepair,
    }

    /// <summary>The layout of the day whose behaviours <paramref name="c"/> has (each word implies the earlier ones).</summary>
    static StateLayout LayoutOf(NetConfig c) => !c.TimeWaitSyn ? StateLayout.Undo : !c.BatchInput ? StateLayout.TimeWaitSyn
        : !c.TakeoverProbe ? StateLayout.BatchInput : !c.LossRepair ? StateLayout.TakeoverProbe : StateLayout.LossRepair;

    void WriteState(BinaryWriter w, StateLayout layout)
    {
        var cfg = Config;
        ConfigState(new StateCodec(w), ref cfg, layout);
        Serialize(new StateCodec(w), layout);
    }

    /// <summary>
    /// A stack equal to the one that wrote <paramref name="r"/> (for snapshots): same sockets, buffers, timers,
    /// counters and queued frames; the caller gets its sockets back from <see cref="TcpSockets"/> and
    /// <see cref="UdpSockets"/> by id. A corrupt or truncated state is refused (<see cref="InvalidDataException"/>).
    /// </summary>
    public static NetStack Restore(BinaryReader r)
    {
        try
        {
            var c = new StateCodec(r);
            NetConfig cfg = null!;
            ConfigState(c, ref cfg, StateLayout.LossRepair);
            var st = new NetStack(cfg, 0);
            st.Serialize(c, StateLayout.LossRepair);
            return st;
        }
        catch (EndOfStreamException) { throw new InvalidDataException("network stack state: truncated"); }
    }

    static void ConfigState(StateCodec c, ref NetConfig cfg, StateLayout layout)
    {
        var d = cfg ?? new NetConfig(MacAddress.Broadcast, 1, 24);
        ulong mac = d.Mac.Value; uint ip = d.Ip, gw = d.Gateway; int prefix = d.PrefixLength;
        int maxSockets = d.MaxSockets, maxOut = d.MaxOutFrames, arpSize = d.ArpCacheSize, arpHosts = d.ArpPendingHosts,
            arpFrames = d.ArpPendingFramesPerHost, sndBuf = d.SendBuffer, rcvBuf = d.ReceiveBuffer, udpBuf = d.UdpReceiveBuffer,
            synQ = d.MaxSynQueue, tw = d.MaxTimeWait, rate = d.ChallengeAcksPerSecond;
        bool sack = d.Sack, rack = d.Rack, dsack = d.Dsack, undo = d.DsackUndo, windowed = d.WindowedMinRtt, twSyn = d.TimeWaitSyn,
            batch = d.BatchInput, takeoverProbe = d.TakeoverProbe, lossRepair = d.LossRepair;
        long minRttWindow = d.MinRttWindowNs;
        c.Do(ref mac); c.Do(ref ip); c.Do(ref prefix); c.Do(ref gw);
        c.Do(ref maxSockets); c.Do(ref maxOut); c.Do(ref arpSize); c.Do(ref arpHosts); c.Do(ref arpFrames); c.Do(ref sndBuf);
        c.Do(ref rcvBuf); c.Do(ref udpBuf); c.Do(ref synQ); c.Do(ref tw); c.Do(ref rate); c.Do(ref sack); c.Do(ref rack); c.Do(ref dsack);
        c.Do(ref undo); c.Do(ref windowed); c.Do(ref minRttWindow);
        if (layout >= StateLayout.TimeWaitSyn) c.Do(ref twSyn);
        if (layout >= StateLayout.BatchInput) c.Do(ref batch);
        if (layout >= StateLayout.TakeoverProbe) c.Do(ref takeoverProbe);
        if (layout >= StateLayout.LossRepair) c.Do(ref lossRepair);
        if (!c.Reading) return;
        if (mac == 0 || ip == 0 || prefix is < 1 or > 30 || sndBuf is < 1 or > (64 << 20) || rcvBuf is < 1 or > (64 << 20) || minRttWindow < 1)
            throw new InvalidDataException("network stack state: an impossible interface configuration");
        cfg = new NetConfig(new MacAddress(mac), ip, prefix, gw)
        {
            MaxSockets = maxSockets, MaxOutFrames = maxOut, ArpCacheSize = arpSize, ArpPendingHosts = arpHosts,
            ArpPendingFramesPerHost = arpFrames, SendBuffer = sndBuf, ReceiveBuffer = rcvBuf, UdpReceiveBuffer = udpBuf,
            MaxSynQueue = synQ, MaxTimeWait = tw, ChallengeAcksPerSecond = rate, Sack = sack, Rack = rack, Dsack = dsack,
            DsackUndo = undo, WindowedMinRtt = windowed, MinRttWindowNs = minRttWindow, TimeWaitSyn = twSyn, BatchInput = batch,
            TakeoverProbe = takeoverProbe, LossRepair = lossRepair,
        };
    }

    void Serialize(StateCodec c, StateLayout layout)
    {
        long now = Now; c.Do(ref now); Now = now;
        c.Do(ref _rng); c.Do(ref _isnKey); c.Do(ref _nextSocketId); c.Do(ref _nextEphemeral); c.Do(ref _ipId);
        c.Do(ref _rateWindowStart); c.Do(ref _rateCount);
        Counters.Serialize(c, layout >= StateLayout.TimeWaitSyn);
        ArpState(c);
        Table(c, _tcp, id => new TcpSocket(this, id), (x, k) => x.Serialize(k), x => x.Id);
        Table(c, _udp, id => new UdpSocket(this, id), (x, k) => x.Serialize(k), x => x.Id);
        int n = c.Count(_out.Count);
        n = c.Count(_out.Count);
        var frames = _out.ToList();
        for (int i = 0; i < n; i++)
        {
            var f = c.Reading ? [] : frames[i];
            c.Do(ref f);
            if (c.Reading) _out.Enqueue(f);
        }
        if (c.Reading) Reindex();
    }

    /// <summary>A socket table: each socket's id, then its state (a restore creates the sockets).</summary>
    static void Table<T>(StateCodec c, SortedDictionary<long, T> table, Func<long, T> make, Action<T, StateCodec> serialize, Func<T, long> idOf)
    {
        int n = c.Count(table.Count);
        var items = table.Values.ToList();
        for (int i = 0; i < n; i++)
        {
            long id = c.Reading ? 0 : idOf(items[i]);
            c.Do(ref id);
            var x = c.Reading ? (table[id] = make(id)) : items[i];
            serialize(x, c);
        }
    }

    /// <summary>After a restore: the lookup tables and links that are functions of the sockets' own state.</summary>
    void Reindex()
    {
        _socketCount = _tcp.Count + _udp.Count;
        TcpSocket Find(long id) => _tcp.TryGetValue(id, out var s) ? s : throw new InvalidDataException($"network stack state: no socket {id}");
        foreach (var s in _tcp.Values)
        {
            if (s.Bound) RefPort(s.LocalPort);
            if (s.State == TcpState.Listen) _listeners[s.LocalPort] = s;
            else if (s.State != TcpState.Closed) AddConnection(s);
            s.Parent = s.ParentId == 0 ? null : Find(s.ParentId);
            s.SynQueue.AddRange(s.SynIds.Select(Find));
            s.AcceptQueue.AddRange(s.AcceptIds.Select(Find));
        }
        foreach (var u in _udp.Values)
            if (u.LocalPort != 0 && !u.Closed) _udpPorts[u.LocalPort] = u;
    }

    /// <summary>UDP sockets the stack holds, in id order.</summary>
    public IEnumerable<UdpSocket> UdpSockets => _udp.Values;

    /// <summary>SHA-256 of <see cref="WriteState"/>: equal digests mean equal stacks (checkpoints compare these). A stack without
    /// a later behaviour (<see cref="NetConfig.TimeWaitSyn"/>, <see cref="NetConfig.BatchInput"/>: replaying a log
    /// recorded before it) digests the state as the build of that log's day wrote it (<see cref="StateLayout"/>), so the
    /// log's checkpoint digests still match.</summary>
    public byte[] Digest()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) WriteState(w, LayoutOf(Config));
        return SHA256.HashData(ms.ToArray());
    }

    internal long NewSocketId() => _nextSocketId++;
}
