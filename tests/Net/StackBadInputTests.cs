using System.Buffers.Binary;
using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// Malformed and hostile frames: each class is dropped (and counted under its reason) or answered as RFC 793/5961
/// say, the connection under attack carries on intact, and the stack's memory stays within its bounds.
/// Frames are built here by hand (not with the stack's own encoder) so that the test is an independent oracle.
/// </summary>
public class StackBadInputTests
{
    /// <summary>Ethernet + IPv4 + TCP, checksums computed per RFC 1071; fields can be corrupted afterwards.</summary>
    static byte[] TcpFrame(uint src, ushort sport, uint dst, ushort dport, uint seq, uint ack, byte flags, ushort wnd = 65535,
        byte[]? data = null, byte[]? opts = null)
    {
        data ??= []; opts ??= [];
        int tcpLen = 20 + opts.Length + data.Length;
        var f = new byte[14 + 20 + tcpLen];
        StackLink.MacB.Write(f); StackLink.MacA.Write(f.AsSpan(6));
        f[12] = 0x08; f[13] = 0x00;
        var ip = f.AsSpan(14);
        ip[0] = 0x45; BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + tcpLen)); ip[8] = 64; ip[9] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], src); BinaryPrimitives.WriteUInt32BigEndian(ip[16..], dst);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Csum(ip[..20], 0));
        var t = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(t, sport); BinaryPrimitives.WriteUInt16BigEndian(t[2..], dport);
        BinaryPrimitives.WriteUInt32BigEndian(t[4..], seq); BinaryPrimitives.WriteUInt32BigEndian(t[8..], ack);
        t[12] = (byte)((20 + opts.Length) / 4 << 4); t[13] = flags; BinaryPrimitives.WriteUInt16BigEndian(t[14..], wnd);
        opts.CopyTo(t[20..]); data.CopyTo(t[(20 + opts.Length)..]);
        uint pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6u + (uint)tcpLen;
        BinaryPrimitives.WriteUInt16BigEndian(t[16..], Csum(t, pseudo));
        return f;
    }

    static ushort Csum(ReadOnlySpan<byte> d, uint sum)
    {
        for (int i = 0; i < d.Length; i += 2) sum += (uint)(d[i] << 8 | (i + 1 < d.Length ? d[i + 1] : 0));
        while (sum > 0xFFFF) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }

    const byte FIN = 1, SYN = 2, RST = 4, ACK = 16;

    /// <summary>A connected pair with some data each way, the server side's frames to be attacked.</summary>
    static (StackLink Link, TcpSocket C, TcpSocket S) Pair(int seed)
    {
        var link = new StackLink(seed);
        var (c, s, _) = link.Connect();
        Assert.Equal(5, c.Send("hello"u8));
        Assert.True(link.Run(() => s.Available == 5 && c.SndUna == c.SndNxt, () => { }));
        return (link, c, s);
    }

    static List<byte[]> Drain(NetStack st) { var l = new List<byte[]>(); while (st.TryTakeFrame(out var f)) l.Add(f); return l; }

    static byte TcpFlagsOf(byte[] frame) => frame[14 + 20 + 13];
    static uint TcpSeqOf(byte[] frame) => BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(14 + 20 + 4));
    static uint TcpAckOf(byte[] frame) => BinaryPrimitives.ReadUInt32BigEndian(frame.AsSpan(14 + 20 + 8));

    /// <summary>After an attack, the stream still works both ways (the oracle: the bytes sent).</summary>
    static void StillWorks(StackLink link, TcpSocket c, TcpSocket s)
    {
        Assert.Equal(TcpState.Established, s.State);
        var buf = new byte[16];
        Assert.Equal(5, s.Receive(buf));
        Assert.Equal("hello"u8.ToArray(), buf[..5]);
        var more = StackLink.Payload(50_000, 77);
        int sent = 0, got = 0;
        var rx = new byte[more.Length];
        Assert.True(link.Run(() => got == more.Length, () =>
        {
            while (sent < more.Length) { int n = c.Send(more.AsSpan(sent)); if (n <= 0) break; sent += n; }
            int m; while ((m = s.Receive(rx.AsSpan(got))) > 0) got += m;
        }));
        Assert.Equal(more, rx);
    }

    [Fact]
    public void Truncated_and_impossible_frames_are_dropped_and_counted()
    {
        var (link, c, s) = Pair(30);
        var b = link.B;
        var good = TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt, c.RcvNxt, ACK, data: "XYZ"u8.ToArray());
        var before = b.Counters;
        long shortBefore = before.DropShort, lenBefore = before.DropBadLength, csBefore = before.DropChecksum, fragBefore = before.DropFragment;

        for (int n = 0; n < 14; n++) b.Input(good.AsSpan(0, n), link.Now);                 // shorter than Ethernet
        b.Input(good.AsSpan(0, 14 + 19), link.Now);                                           // shorter than IPv4
        b.Input(good.AsSpan(0, 14 + 20 + 10), link.Now);                                      // IP total length beyond the frame
        var ihl = (byte[])good.Clone(); ihl[14] = 0x44; b.Input(ihl, link.Now);                // IHL 16 bytes < 20
        var ver = (byte[])good.Clone(); ver[14] = 0x65; b.Input(ver, link.Now);                // IPv6 version nibble
        var ipsum = (byte[])good.Clone(); ipsum[14 + 8] ^= 1; b.Input(ipsum, link.Now);         // TTL changed, checksum not
        var tcpsum = (byte[])good.Clone(); tcpsum[^1] ^= 0x40; b.Input(tcpsum, link.Now);       // payload changed, checksum not
        var frag = (byte[])good.Clone(); frag[14 + 6] = 0x20; frag[14 + 10] = 0; frag[14 + 11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(frag.AsSpan(14 + 10), Csum(frag.AsSpan(14, 20), 0));
        b.Input(frag, link.Now);                                                                // more-fragments set
        var doff = TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt, c.RcvNxt, ACK);
        doff[14 + 20 + 12] = 0xF0; b.Input(doff, link.Now);                                     // data offset 60 > segment
        var badopt = TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt, c.RcvNxt, ACK, opts: [2, 40, 0, 0]);
        b.Input(badopt, link.Now);                                                              // option longer than the header
        var foreign = (byte[])good.Clone(); foreign[0] = 0x04; b.Input(foreign, link.Now);       // another station's MAC

        Assert.Equal(15, b.Counters.DropShort - shortBefore);
        Assert.Equal(4, b.Counters.DropBadLength - lenBefore);
        Assert.Equal(2, b.Counters.DropChecksum - csBefore);
        Assert.Equal(1, b.Counters.DropFragment - fragBefore);
        Assert.Equal(1, b.Counters.DropBadOption);
        Assert.Empty(Drain(b));
        Assert.Equal(5, s.Available);                    // none of the corrupted copies delivered "XYZ"
        StillWorks(link, c, s);
    }

    /// <summary>A SACK option (RFC 2018 §3: NOP, NOP, kind 5, length 2 + 8n, the blocks).</summary>
    static byte[] SackOption(params (uint Left, uint Right)[] blocks)
    {
        var o = new byte[4 + 8 * blocks.Length];
        o[0] = 1; o[1] = 1; o[2] = 5; o[3] = (byte)(2 + 8 * blocks.Length);
        for (int i = 0; i < blocks.Length; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(4 + 8 * i), blocks[i].Left);
            BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(8 + 8 * i), blocks[i].Right);
        }
        return o;
    }

    /// <summary>
    /// SACK blocks a peer may forge on a connection that negotiated SACK, against a flight of at least 10 segments the
    /// peer never got: blocks beyond what was sent, with the left edge at or past the right, far below SND.UNA, options of a wrong
    /// length, and a flood of one-byte blocks at distinct places. Each invalid block is ignored and counted,
    /// overlapping and adjacent blocks merge, the scoreboard stays within its bound, nothing throws, and the stream
    /// arrives intact once the real flight is delivered. A connection that did not negotiate SACK ignores blocks.
    /// </summary>
    /// <summary>A SACK connection whose server side has sent a flight of 20 segments' data that the client has not got
    /// (held in <see cref="ForgedAckFixture.Flight"/>), and a way to hand the server ACKs at SND.UNA with chosen options.</summary>
    sealed class ForgedAckFixture
    {
        public readonly StackLink Link;
        public readonly TcpSocket C, S;
        public readonly byte[] Data;
        public readonly List<byte[]> Flight;
        public readonly uint Una;
        public NetCounters K => Link.B.Counters;

        public ForgedAckFixture(int seed)
        {
            (Link, C, S) = Pair(seed);
            Assert.True(S.SackOk);
            Data = StackLink.Payload(20 * 1460, seed);
            Assert.Equal(Data.Length, S.Send(Data));
            Flight = Drain(Link.B);
            Una = S.SndUna;
        }

        public void Ack(byte[] opts) =>
            Link.B.Input(TcpFrame(StackLink.IpA, C.LocalPort, StackLink.IpB, S.LocalPort, C.SndNxt, Una, ACK, opts: opts), Link.Now);

        /// <summary>The real flight reaches the client at last: the stream arrives intact and everything is acknowledged.</summary>
        public void DeliverFlight()
        {
            foreach (var f in Flight) Link.A.Input(f, Link.Now);
            var got = new MemoryStream();
            var buf = new byte[65536];
            Assert.True(Link.Run(() => got.Length >= Data.Length && S.SndUna == S.SndMax, () => { int n; while ((n = C.Receive(buf)) > 0) got.Write(buf, 0, n); }));
            Assert.Equal(Data, got.ToArray());
        }
    }

    [Fact]
    public void Forged_sack_blocks_are_ignored_or_merged_and_the_scoreboard_stays_bounded()
    {
        var x = new ForgedAckFixture(36);
        var (s, una, max, k) = (x.S, x.Una, x.S.SndMax, x.K);
        Assert.True(max - una >= 10 * 1460, $"a flight of {max - una} bytes");
        var Ack = x.Ack;
        long ignored = k.SackBlocksIgnored;

        Ack(SackOption((max + 1, max + 1461)));                        // beyond SND.MAX
        Ack(SackOption((una + 2920, una + 1460)));                     // left edge past the right
        Ack(SackOption((una + 100, una + 100)));                       // empty
        Ack(SackOption((una - 1_000_000_000, una - 999_000_000)));     // far below SND.UNA (not a recent D-SACK)
        Ack([1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0]);                    // length 10: not 2 + 8n
        Ack([1, 5, 2, 0]);                                             // no block at all
        Assert.Equal(6, k.SackBlocksIgnored - ignored);
        Assert.Empty(s.Sacked);
        Assert.Equal(0, k.DropBadOption);                              // a bad SACK option costs the option, not the segment

        // overlapping and adjacent blocks merge, in any order; a block partly below SND.UNA counts from SND.UNA
        Ack(SackOption((una + 8760, una + 10220), (una + 2920, una + 5840), (una + 1460, una + 4380), (una + 10220, una + 11680)));
        Assert.Equal(new[] { (una + 1460, una + 5840), (una + 8760, una + 11680) }, s.Sacked);
        Ack(SackOption((una - 500, una + 1460)));
        Assert.Equal(new[] { (una, una + 5840), (una + 8760, una + 11680) }, s.Sacked);

        // a flood of one-byte blocks at distinct places: the scoreboard stays bounded, the rest is ignored and counted
        ignored = k.SackBlocksIgnored;
        for (uint i = 0; i < 1400; i++)
            Ack(SackOption((una + 5_900 + 2 * i, una + 5_901 + 2 * i)));
        Assert.Equal(TcpSocket.MaxSackRanges, s.Sacked.Count);
        Assert.True(k.SackBlocksIgnored - ignored >= 1400 - TcpSocket.MaxSackRanges);
        Assert.Equal(TcpState.Established, s.State);

        // the real flight reaches the client at last: the stream is intact and the scoreboard empties
        x.DeliverFlight();
        Assert.Empty(s.Sacked);

        // blocks on a connection that did not negotiate SACK are ignored
        var plain = new StackLink(37, b: new NetConfig(StackLink.MacB, StackLink.IpB, 24) { Sack = false });
        var (pc, ps, _) = plain.Connect();
        Assert.False(ps.SackOk);
        Assert.Equal(1460, ps.Send(x.Data.AsSpan(0, 1460)));
        Drain(plain.B);
        plain.B.Input(TcpFrame(StackLink.IpA, pc.LocalPort, StackLink.IpB, ps.LocalPort, pc.SndNxt, ps.SndUna, ACK,
            opts: SackOption((ps.SndUna + 100, ps.SndUna + 200))), plain.Now);
        Assert.Equal(1, plain.B.Counters.SackBlocksIgnored);
        Assert.Empty(ps.Sacked);
    }

    /// <summary>
    /// D-SACK blocks (RFC 2883) a peer may forge against a RACK sender with a flight out: the D-SACK forms (a first
    /// block below the cumulative ACK, or inside the second block) are counted and used only to widen the reordering
    /// window (bounded, and once per round however many arrive); malformed ones (far below, beyond SND.MAX) are ignored
    /// and counted; nothing throws, the flight list stays bounded, and the stream is intact once the real flight is
    /// delivered.
    /// </summary>
    [Fact]
    public void Forged_dsack_blocks_are_counted_bounded_and_change_no_stream()
    {
        var x = new ForgedAckFixture(38);
        var (s, una, k) = (x.S, x.Una, x.K);
        Assert.True(s.RackOn);
        var Ack = x.Ack;
        long ignored = k.SackBlocksIgnored;

        Ack(SackOption((una - 5, una)));                                           // below SND.UNA: a D-SACK
        Assert.Equal(1, k.DsackBlocksReceived);
        Assert.Equal(2, s.ReorderMultiplier);
        Ack(SackOption((una - 1_000_000_000, una - 999_998_540)));                 // far below: ignored
        Ack(SackOption((una + 100_010, una + 100_020), (una + 1460, una + 100_020))); // beyond all sent: both ignored
        Assert.Equal(3, k.SackBlocksIgnored - ignored);
        Assert.Equal(1, k.DsackBlocksReceived);
        Ack(SackOption((una + 2920, una + 4380), (una + 1460, una + 5840)));        // inside the second block: a D-SACK
        Assert.Equal(2, k.DsackBlocksReceived);
        Assert.Equal(new[] { (una + 1460, una + 5840) }, s.Sacked);

        // a flood: every one is counted, the window's multiplier grows once per round (SND.UNA has not moved)
        for (int i = 0; i < 2000; i++) Ack(SackOption((una - 1 - (uint)i, una)));
        Assert.Equal(2002, k.DsackBlocksReceived);
        Assert.Equal(2, s.ReorderMultiplier);
        Assert.True(s.Flight.Count <= TcpSocket.MaxSentRanges);
        Assert.Equal(TcpState.Established, s.State);

        // the real flight reaches the client: the stream is intact and the flight list empties
        x.DeliverFlight();
        Assert.Empty(s.Flight);
        Assert.True(s.ReorderMultiplier <= TcpSocket.MaxReorderMultiplier);
    }

    [Fact]
    public void Random_garbage_never_throws_and_changes_no_connection()
    {
        var (link, c, s) = Pair(31);
        var rng = new Random(31);
        var template = TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt, c.RcvNxt, ACK, data: "XYZ"u8.ToArray());
        for (int i = 0; i < 20_000; i++)
        {
            var f = (byte[])template.Clone();
            // Change one byte past the MAC addresses, so the frame still reaches the parsers: a one-byte change is
            // always caught by the Internet checksum (RFC 1071), so nothing may be delivered. (Two changes can cancel
            // out in a ones'-complement sum; the second loop only checks that those never break the stack.)
            f[rng.Next(12, f.Length)] ^= (byte)rng.Next(1, 256);
            int len = rng.Next(10) == 0 ? rng.Next(f.Length) : f.Length;
            link.B.Input(f.AsSpan(0, len), link.Now);
        }
        Drain(link.B);
        Assert.True(link.B.TcpSockets.Count() <= 3);
        Assert.Equal(5, s.Available);
        for (int i = 0; i < 20_000; i++)
        {
            var f = (byte[])template.Clone();
            for (int k = rng.Next(2, 6); k > 0; k--) f[rng.Next(12, f.Length)] ^= (byte)rng.Next(1, 256);
            link.B.Input(f, link.Now);
            Drain(link.B);
        }
        Assert.True(link.B.TcpSockets.Count() <= 3);
        Assert.InRange(s.Available, 5, 8);
    }

    [Fact]
    public void Rst_with_wrong_sequence_gets_a_challenge_ack_and_the_connection_survives()
    {
        var (link, c, s) = Pair(32);
        var b = link.B;
        Drain(b);
        // In the window but not at RCV.NXT: challenge ACK (RFC 5961 §3.2).
        b.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt + 100, 0, RST), link.Now);
        var answer = Drain(b);
        Assert.Single(answer);
        Assert.Equal(ACK, TcpFlagsOf(answer[0]));
        Assert.Equal(s.RcvNxt, TcpAckOf(answer[0]));
        Assert.Equal(1, b.Counters.ChallengeAcks);
        // Outside the window: silently dropped.
        b.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt + 0x4000_0000, 0, RST), link.Now);
        Assert.Empty(Drain(b));
        Assert.Equal(TcpState.Established, s.State);
        StillWorks(link, c, s);
        // Exactly at RCV.NXT: the connection is reset.
        b.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, s.RcvNxt, 0, RST), link.Now);
        Assert.Equal(TcpState.Closed, s.State);
        Assert.Equal(-NetErrno.ECONNRESET, s.Receive(new byte[4]));
    }

    [Fact]
    public void Syn_on_an_established_connection_gets_a_challenge_ack()
    {
        var (link, c, s) = Pair(33);
        Drain(link.B);
        link.B.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt + 5, 0, SYN), link.Now);
        var answer = Drain(link.B);
        Assert.Single(answer);
        Assert.Equal(ACK, TcpFlagsOf(answer[0]));
        Assert.Equal(s.SndNxt, TcpSeqOf(answer[0]));
        StillWorks(link, c, s);
    }

    [Fact]
    public void Out_of_window_data_and_acks_for_unsent_data_are_not_accepted()
    {
        var (link, c, s) = Pair(34);
        var b = link.B;
        Drain(b);
        // Data far beyond the receive window: not delivered, answered with an ACK of RCV.NXT.
        b.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt + 0x1000_0000, c.RcvNxt, ACK, data: "EVIL"u8.ToArray()), link.Now);
        var a1 = Drain(b);
        Assert.Single(a1);
        Assert.Equal(s.RcvNxt, TcpAckOf(a1[0]));
        Assert.Equal(1, b.Counters.DropOutOfWindow);
        // Data at RCV.NXT acknowledging bytes the server never sent: dropped (RFC 5961 §5.2), not delivered.
        uint sndUna = s.SndUna;
        b.Input(TcpFrame(StackLink.IpA, c.LocalPort, StackLink.IpB, s.LocalPort, c.SndNxt, s.SndNxt + 5000, ACK, data: "EVIL"u8.ToArray()), link.Now);
        Assert.Equal(1, b.Counters.DropBadAck);
        Assert.Equal(sndUna, s.SndUna);
        Drain(b);
        StillWorks(link, c, s);
    }

    [Fact]
    public void Syn_flood_is_bounded_and_a_real_client_still_connects()
    {
        var cfg = new NetConfig(StackLink.MacB, StackLink.IpB, 24) { MaxSynQueue = 64 };
        var link = new StackLink(35, b: cfg);
        var l = link.B.CreateTcp()!;
        Assert.Equal(0, l.Listen(128));
        var rng = new Random(35);
        for (int i = 0; i < 20_000; i++)
        {
            uint src = 0x0A000000u | (uint)rng.Next(3, 250);
            link.B.Input(TcpFrame(src, (ushort)rng.Next(1024, 65535), StackLink.IpB, l.LocalPort, (uint)rng.Next(), 0, SYN), link.Now);
            Assert.True(link.B.TcpSockets.Count() <= cfg.MaxSynQueue + 1);
            Assert.True(link.B.PendingFrames <= cfg.MaxOutFrames);
            while (link.B.TryTakeFrame(out _)) { }
        }
        Assert.True(l.SynQueue.Count <= cfg.MaxSynQueue);
        Assert.True(link.B.Counters.SynDropped > 0);
        var c = link.A.CreateTcp()!;
        Assert.Equal(-NetErrno.EINPROGRESS, c.Connect(StackLink.IpB, l.LocalPort));
        TcpSocket? s = null;
        Assert.True(link.Run(() => s != null, () => { if (l.Accept(out var x) == 0) s = x; }, limitNs: link.Now + 10_000_000_000));
        // The flood's half-open children expire after their SYN-ACK retries; then only the real one is left.
        link.Run(() => false, () => { }, limitNs: link.Now + 200_000_000_000);
        Assert.Equal(2, link.B.TcpSockets.Count());
    }

    [Fact]
    public void Segments_to_closed_ports_get_resets_at_a_bounded_rate()
    {
        var link = new StackLink(36);
        link.Connect();                                  // both sides now know each other's MAC
        Drain(link.B);
        for (int i = 0; i < 5000; i++)
            link.B.Input(TcpFrame(StackLink.IpA, (ushort)(2000 + i), StackLink.IpB, 9, (uint)i, 0, SYN), link.Now);
        var rsts = Drain(link.B).Where(f => f.Length > 34 && f[23] == 6).ToList();
        Assert.InRange(rsts.Count, 1, link.B.Config.ChallengeAcksPerSecond);
        Assert.All(rsts, f => Assert.Equal(RST | ACK, TcpFlagsOf(f)));
    }

    [Fact]
    public void Arp_requests_are_answered_and_bogus_arp_ignored()
    {
        var link = new StackLink(37);
        var req = new byte[42];
        MacAddress.Broadcast.Write(req); StackLink.MacA.Write(req.AsSpan(6));
        req[12] = 0x08; req[13] = 0x06;
        byte[] arp = [0, 1, 8, 0, 6, 4, 0, 1];
        arp.CopyTo(req, 14);
        StackLink.MacA.Write(req.AsSpan(22));
        BinaryPrimitives.WriteUInt32BigEndian(req.AsSpan(28), StackLink.IpA);
        BinaryPrimitives.WriteUInt32BigEndian(req.AsSpan(38), StackLink.IpB);
        link.B.Input(req, 0);
        var reply = Drain(link.B);
        Assert.Single(reply);
        Assert.Equal(StackLink.MacA, MacAddress.Read(reply[0]));
        Assert.Equal(2, reply[0][21]);                                     // op = reply
        Assert.Equal(StackLink.MacB, MacAddress.Read(reply[0].AsSpan(22)));
        var bad = (byte[])req.Clone(); bad[18] = 16;                        // hardware length 16
        link.B.Input(bad, 0);
        link.B.Input(req.AsSpan(0, 30), 0);                                 // truncated
        Assert.Empty(Drain(link.B));
    }

    [Fact]
    public void Ping_is_answered_with_the_same_payload()
    {
        var link = new StackLink(38);
        var f = new byte[14 + 20 + 8 + 32];
        StackLink.MacB.Write(f); StackLink.MacA.Write(f.AsSpan(6)); f[12] = 8;
        var ip = f.AsSpan(14);
        ip[0] = 0x45; BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 60); ip[8] = 64; ip[9] = 1;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], StackLink.IpA); BinaryPrimitives.WriteUInt32BigEndian(ip[16..], StackLink.IpB);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Csum(ip[..20], 0));
        var icmp = ip[20..];
        icmp[0] = 8; icmp[4] = 0x12; icmp[5] = 0x34; icmp[7] = 1;
        for (int i = 8; i < icmp.Length; i++) icmp[i] = (byte)i;
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Csum(icmp, 0));
        link.B.Input(f, 0);
        // The reply waits for ARP (the stack knows no MAC for 10.0.0.1 yet): answer the request, then the reply leaves.
        link.Run(() => link.A.Counters.FramesIn >= 2, () => { });
        Assert.Equal(1, link.B.Counters.IcmpEchoReplies);
        var tap = new StackLink(38);
        tap.B.Input(f, 0);
        var held = Drain(tap.B);
        Assert.Single(held);                                               // the ARP request
        Assert.Equal(0x0806, held[0][12] << 8 | held[0][13]);
    }
}
