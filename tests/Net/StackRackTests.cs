using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// RACK-TLP (RFC 8985) and D-SACK (RFC 2883) between two stacks on the simulated link (<see cref="StackLink"/>, a
/// discrete-event clock: each way takes 1 ms, every time here is exact and the same on every run). The oracle for
/// what was lost or duplicated is the link (which transmissions it dropped or copied); for the streams, the payload.
/// Each case runs with RACK on and off (the old sender: SACK with RFC 6675 recovery) and requires the difference.
/// </summary>
public class StackRackTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static NetConfig Config(uint ip, MacAddress mac, bool rack, bool dsack = true) => new(mac, ip, 24) { Rack = rack, Dsack = dsack };

    /// <summary>Sequence number (relative to the sender's ISS + 1) and data length of a TCP frame from <paramref name="from"/>.</summary>
    static (uint Offset, int Length) Data(byte[] f, TcpSocket from) =>
        (Wire.U32(f, Wire.EthHeader + Wire.Ip4Header + 4) - from.Iss - 1, StackSackTests.DataLength(f));

    /// <summary>
    /// A link that drops the transmissions of one segment the first <paramref name="drops"/> times it is sent (the
    /// original, then the retransmission...), for a 150-segment stream A -> B; returns when each transmission of that
    /// segment left A, the time the stream took, and A's counters.
    /// </summary>
    static (List<long> Sends, long Took, NetCounters A, byte[] Got, byte[] Sent) DropOneSegment(bool rack, uint offset, int drops, int seed)
    {
        var sends = new List<long>();
        int dropped = 0;
        TcpSocket? sender = null;
        StackLink? link = null;
        link = new StackLink(seed, Config(StackLink.IpA, StackLink.MacA, rack), Config(StackLink.IpB, StackLink.MacB, rack))
        {
            Feed = (to, frame, now) =>
            {
                if (frame != null && sender != null && to.Config.Ip == StackLink.IpB && Data(frame, sender) is (uint off, > 0) && off == offset
                    && dropped < drops) { dropped++; return; }
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        sender = c;
        link.Sent = (from, f) => { if (from == link.A && Data(f, c) is (uint off, > 0) && off == offset) sends.Add(link.Now); };
        long t0 = link.Now;
        var data = StackLink.Payload(150 * 1460, seed);
        var got = link.Transfer(c, s, data);
        return (sends, link.Now - t0, link.A.Counters, got, data);
    }

    /// <summary>
    /// The 20th segment is lost, and so is its first retransmission. With RACK the sender sees segments it sent after
    /// that retransmission delivered, marks the retransmission lost and sends it a third time about one round trip
    /// later, before any time-out; the old sender (RACK off) waits for the retransmission time-out (200 ms at least).
    /// </summary>
    [Fact]
    public void A_lost_retransmission_is_resent_by_rack_before_the_retransmission_timeout()
    {
        var with = DropOneSegment(rack: true, offset: 19 * 1460, drops: 2, seed: 70);
        var without = DropOneSegment(rack: false, offset: 19 * 1460, drops: 2, seed: 70);
        string Times(List<long> t) => string.Join(", ", t.Select(x => $"{(x - t[0]) / 1e6:F1} ms"));
        output.WriteLine($"RACK on: sends at {Times(with.Sends)}, stream {with.Took / 1e6:F1} ms, lost retransmissions {with.A.RackLostRetransmits}, time-outs {with.A.RetransmitTimeouts}");
        output.WriteLine($"RACK off: sends at {Times(without.Sends)}, stream {without.Took / 1e6:F1} ms, time-outs {without.A.RetransmitTimeouts}");
        Assert.Equal(with.Sent, with.Got);
        Assert.Equal(without.Sent, without.Got);
        Assert.Equal(3, with.Sends.Count);
        Assert.Equal(3, without.Sends.Count);
        long rackGap = with.Sends[2] - with.Sends[1], oldGap = without.Sends[2] - without.Sends[1];
        // with RACK: the third send follows the second within a few round trips (2 ms each), not a time-out
        Assert.True(rackGap < 20_000_000, $"RACK resent the lost retransmission {rackGap / 1e6:F1} ms after it");
        Assert.Equal(1, with.A.RackLostRetransmits);
        Assert.Equal(0, with.A.RetransmitTimeouts);
        // without: only the retransmission time-out (at least the 200 ms minimum RTO) resends it
        Assert.True(oldGap >= TcpSocket.MinRto, $"without RACK the third send came {oldGap / 1e6:F1} ms after the second");
        Assert.True(without.A.RetransmitTimeouts >= 1);
        Assert.True(without.Took - with.Took >= 150_000_000, $"stream took {with.Took / 1e6:F1} ms with RACK, {without.Took / 1e6:F1} ms without");
    }

    /// <summary>
    /// The last two segments of a reply are lost and nothing follows them: no duplicate ACK can come. With RACK-TLP the
    /// probe timeout (2·SRTT + slack) resends the last segment, its SACK shows the one before it lost, and both are
    /// repaired within about 20 ms; the old sender waits for the retransmission time-out.
    /// </summary>
    [Fact]
    public void A_lost_tail_is_repaired_by_the_tail_loss_probe_instead_of_the_timeout()
    {
        (long Took, NetCounters A) Run(bool rack)
        {
            int segments = 30;
            var data = StackLink.Payload(segments * 1460, 71);
            TcpSocket? sender = null;
            int dropped = 0;
            StackLink? link = null;
            link = new StackLink(71, Config(StackLink.IpA, StackLink.MacA, rack), Config(StackLink.IpB, StackLink.MacB, rack))
            {
                Feed = (to, frame, now) =>
                {
                    if (frame != null && sender != null && to.Config.Ip == StackLink.IpB && Data(frame, sender) is (uint off, > 0)
                        && off >= (uint)(segments - 2) * 1460 && dropped < 2) { dropped++; return; }
                    if (frame != null) to.Input(frame, now); else to.Advance(now);
                },
            };
            var (c, s, _) = link.Connect();
            sender = c;
            long t0 = link.Now;
            Assert.Equal(data.Length, c.Send(data));
            var got = new MemoryStream();
            var buf = new byte[65536];
            Assert.True(link.Run(() => got.Length >= data.Length && c.SndUna == c.SndMax, () => { int n; while ((n = s.Receive(buf)) > 0) got.Write(buf, 0, n); }));
            Assert.Equal(data, got.ToArray());
            Assert.Equal(2, dropped);
            return (link.Now - t0, link.A.Counters);
        }
        var with = Run(true);
        var without = Run(false);
        output.WriteLine($"RACK-TLP: {with.Took / 1e6:F1} ms, {with.A.TailLossProbes} probes, {with.A.RackLostSegments} lost by RACK, {with.A.RetransmitTimeouts} time-outs; " +
            $"without: {without.Took / 1e6:F1} ms, {without.A.RetransmitTimeouts} time-outs");
        Assert.True(with.A.TailLossProbes >= 1);
        Assert.Equal(0, with.A.RetransmitTimeouts);
        Assert.True(with.Took < 60_000_000, $"the tail took {with.Took / 1e6:F1} ms with RACK-TLP");
        Assert.True(without.A.RetransmitTimeouts >= 1);
        Assert.True(without.Took >= TcpSocket.MinRto, $"the tail took {without.Took / 1e6:F1} ms without");
    }

    /// <summary>
    /// The link copies some frames: a segment B receives again is reported in the first SACK block of B's next ACK
    /// (below its cumulative ACK, or inside the second block); every D-SACK block is data B had by then received at
    /// least twice (the oracle: the frames the link delivered to B), and A takes each. With D-SACK off none is sent.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Duplicate_segments_are_reported_in_the_first_sack_block(bool dsack)
    {
        var delivered = new List<(uint Start, uint End)>();
        var link = new StackLink(72, Config(StackLink.IpA, StackLink.MacA, true), Config(StackLink.IpB, StackLink.MacB, true, dsack))
        {
            Duplicate = 0.05,
            Feed = (to, frame, now) =>
            {
                if (frame != null && to.Config.Ip == StackLink.IpB && StackSackTests.DataLength(frame) is int n and > 0)
                {
                    uint seq = Wire.U32(frame, Wire.EthHeader + Wire.Ip4Header + 4);
                    delivered.Add((seq, seq + (uint)n));
                }
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        var reported = new List<(uint, uint)>();
        link.Sent = (from, f) =>
        {
            if (from != link.B || FirstSackBlock(f) is not { } d) return;
            reported.Add(d);
            int covering = delivered.Count(x => (int)(x.Start - d.Item1) <= 0 && (int)(d.Item2 - x.End) <= 0);
            Assert.True(covering >= 2, $"D-SACK block {d} covers data B received {covering} time(s)");
        };
        var data = StackLink.Payload(400_000, 72);
        Assert.Equal(data, link.Transfer(c, s, data));
        _ = link.Run(() => false, () => { }, link.Now + 100_000_000);   // the last ACKs reach A
        output.WriteLine($"D-SACK {(dsack ? "on" : "off")}: {link.B.Counters.DsackBlocksSent} sent, {link.A.Counters.DsackBlocksReceived} taken");
        if (!dsack) { Assert.Equal(0, link.B.Counters.DsackBlocksSent); Assert.Empty(reported); return; }
        Assert.True(link.B.Counters.DsackBlocksSent >= 5, $"{link.B.Counters.DsackBlocksSent} D-SACK blocks");
        Assert.Equal(link.B.Counters.DsackBlocksSent, reported.Count);
        // no ACK is lost on this link (some are copied): A takes every one
        var a = link.A.Counters;
        Assert.True(a.DsackBlocksReceived >= link.B.Counters.DsackBlocksSent,
            $"A took {a.DsackBlocksReceived} D-SACK blocks of {link.B.Counters.DsackBlocksSent}; SACK blocks taken {a.SackBlocksReceived}, ignored {a.SackBlocksIgnored}, bad options {a.DropBadOption}");
    }

    /// <summary>The first SACK block of an ACK when it is a D-SACK (below the ACK or inside the second block), else null.</summary>
    static (uint, uint)? FirstSackBlock(byte[] f)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || f[Wire.EthHeader + 9] != Wire.ProtoTcp) return null;
        int t = Wire.EthHeader + Wire.Ip4Header, hlen = (f[t + 12] >> 4) * 4;
        uint ack = Wire.U32(f, t + 8);
        for (int i = t + Wire.TcpHeader; i < t + hlen;)
        {
            if (f[i] == 0) break;
            if (f[i] == 1) { i++; continue; }
            int len = f[i + 1];
            if (f[i] == 5 && len >= 10)
            {
                uint s = Wire.U32(f, i + 2), e = Wire.U32(f, i + 6);
                bool inSecond = len >= 18 && (int)(s - Wire.U32(f, i + 10)) >= 0 && (int)(e - Wire.U32(f, i + 14)) <= 0;
                return (int)(e - ack) <= 0 || inSecond ? (s, e) : null;
            }
            i += len;
        }
        return null;
    }

    /// <summary>Random loss, duplication and reordering both ways on a 2 MB stream: intact with RACK, and against the
    /// old sender no more time-outs, fewer bytes resent and a shorter transfer.</summary>
    [Theory]
    [InlineData(73, 0.03)]
    [InlineData(74, 0.06)]
    public void Under_random_loss_rack_resends_less_and_finishes_sooner(int seed, double loss)
    {
        (long Resent, long Took, long Timeouts, NetCounters A) Run(bool rack)
        {
            var link = new StackLink(seed, Config(StackLink.IpA, StackLink.MacA, rack), Config(StackLink.IpB, StackLink.MacB, rack))
            { Loss = loss, Duplicate = 0.01, Reorder = 0.02 };
            var (c, s, _) = link.Connect();
            long start = link.Now;
            var data = StackLink.Payload(2 << 20, seed);
            Assert.Equal(data, link.Transfer(c, s, data));
            return (link.A.Counters.RetransmittedBytes, link.Now - start, link.A.Counters.RetransmitTimeouts, link.A.Counters);
        }
        var with = Run(true);
        var without = Run(false);
        output.WriteLine($"loss {loss:P0}: RACK resent {with.Resent} bytes in {with.Took / 1e6:F0} ms ({with.Timeouts} time-outs, {with.A.TailLossProbes} probes, " +
            $"{with.A.RackLostRetransmits} lost retransmissions found), without {without.Resent} in {without.Took / 1e6:F0} ms ({without.Timeouts} time-outs)");
        Assert.True(with.Timeouts <= without.Timeouts, $"time-outs: RACK {with.Timeouts}, without {without.Timeouts}");
        Assert.True(with.Resent < without.Resent, $"bytes resent: RACK {with.Resent}, without {without.Resent}");
        Assert.True(with.Took < without.Took, $"RACK {with.Took / 1e6:F0} ms, without {without.Took / 1e6:F0} ms");
    }
}

/// <summary>`--no-rack` is part of the machine's start state: the log header's interface identity carries it, so a
/// replay and a backup build the same stack; a log written before RACK existed (two words) reads as RACK on.</summary>
public class RackStartStateTests
{
    [Fact]
    public void The_interface_identity_carries_rack_off_and_an_older_identity_reads_as_on()
    {
        var on = ReVirt.Linux.VirtualNetOptions.Parse("10.0.0.2/24", null, "tap0", out _)!;
        var off = on with { Rack = false };
        Assert.Equal(on.Identity + " norack", off.Identity);
        Assert.False(ReVirt.Linux.VirtualNetOptions.FromIdentity(off.Identity, "tap1", null)!.Rack);
        Assert.True(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity, "tap1", null)!.Rack);
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity + " fast", "tap1", null));
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(off.Identity + " norack", "tap1", null));
    }
}
