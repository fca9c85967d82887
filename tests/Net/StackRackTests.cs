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

/// <summary>The stack's loss-recovery behaviour is part of the machine's start state: the log header's interface identity
/// carries `--no-rack` and whether D-SACK undo and the windowed minimum RTT are on, so a replay and a backup build the
/// same stack; a log written before a behaviour existed reads as the stack of its day, and an unknown word refuses
/// the log.</summary>
public class RackStartStateTests
{
    [Fact]
    public void The_interface_identity_carries_rack_off_and_an_older_identity_reads_as_on()
    {
        var on = ReVirt.Linux.VirtualNetOptions.Parse("10.0.0.2/24", null, "tap0", out _)!;
        var off = on with { Rack = false };
        Assert.Equal("10.0.0.2/24 02:52:56:00:00:02 undo twsyn batch tkprobe lossrepair", on.Identity);
        Assert.Equal("10.0.0.2/24 02:52:56:00:00:02 norack undo twsyn batch tkprobe lossrepair", off.Identity);
        Assert.False(ReVirt.Linux.VirtualNetOptions.FromIdentity(off.Identity, "tap1", null)!.Rack);
        Assert.True(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity, "tap1", null)!.Rack);
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity + " fast", "tap1", null));
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(off.Identity + " norack", "tap1", null));
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity + " undo", "tap1", null));
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity + " twsyn", "tap1", null));
        Assert.Null(ReVirt.Linux.VirtualNetOptions.FromIdentity(on.Identity + " batch", "tap1", null));
    }

    [Fact]
    public void A_log_recorded_before_dsack_undo_replays_without_it_and_a_new_one_with_it()
    {
        var now = ReVirt.Linux.VirtualNetOptions.Parse("10.0.0.2/24", null, "tap0", out _)!;
        Assert.True(now.StackConfig() is { DsackUndo: true, WindowedMinRtt: true, Rack: true });
        var back = ReVirt.Linux.VirtualNetOptions.FromIdentity(now.Identity, "tap1", null)!;
        Assert.True(back.StackConfig() is { DsackUndo: true, WindowedMinRtt: true, Rack: true });
        // the identities written before this behaviour: two words (RACK on) and " norack"
        var older = ReVirt.Linux.VirtualNetOptions.FromIdentity("10.0.0.2/24 02:52:56:00:00:02", "tap1", null)!;
        Assert.True(older.StackConfig() is { DsackUndo: false, WindowedMinRtt: false, Rack: true });
        var olderOff = ReVirt.Linux.VirtualNetOptions.FromIdentity("10.0.0.2/24 02:52:56:00:00:02 norack", "tap1", null)!;
        Assert.True(olderOff.StackConfig() is { DsackUndo: false, WindowedMinRtt: false, Rack: false });
    }

    /// <summary>Reopening a connection in TIME-WAIT on a SYN (<see cref="NetConfig.TimeWaitSyn"/>) is in the start
    /// state too: a new run's identity says "twsyn" and reads back with it; a log written before it (up to "undo")
    /// replays with a stack that answers such a SYN with an ACK, as its recording did.</summary>
    [Fact]
    public void A_log_recorded_before_time_wait_reopening_replays_without_it_and_a_new_one_with_it()
    {
        var now = ReVirt.Linux.VirtualNetOptions.Parse("10.0.0.2/24", null, "tap0", out _)!;
        Assert.True(now.StackConfig().TimeWaitSyn);
        Assert.True(ReVirt.Linux.VirtualNetOptions.FromIdentity(now.Identity, "tap1", null)!.StackConfig().TimeWaitSyn);
        var older = ReVirt.Linux.VirtualNetOptions.FromIdentity("10.0.0.2/24 02:52:56:00:00:02 undo", "tap1", null)!;
        Assert.True(older.StackConfig() is { TimeWaitSyn: false, DsackUndo: true });
    }
}

/// <summary>
/// D-SACK undo (RFC 3708) and RACK's windowed minimum RTT (RFC 8985 §6.2) on the simulated link (<see cref="StackLink"/>,
/// exact discrete-event times). The oracle is the link: which transmissions it delayed, dropped or copied. Each case
/// runs with the feature on and off and requires the difference.
/// </summary>
public class StackUndoTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static NetConfig Config(uint ip, MacAddress mac, bool undo = true, bool windowed = true) =>
        new(mac, ip, 24) { DsackUndo = undo, WindowedMinRtt = windowed };

    static uint Offset(byte[] f, TcpSocket from) => Wire.U32(f, Wire.EthHeader + Wire.Ip4Header + 4) - from.Iss - 1;

    static bool IsData(byte[] f) => StackSackTests.DataLength(f) > 0;

    /// <summary>A 600 KB stream A -> B on a link that loses nothing: the first transmission of the 100th segment is held
    /// 3 ms (three round trips) behind the rest. RACK, seeing three later segments SACKed and no reordering yet, marks
    /// it lost and resends it: a recovery that halves the window. Both copies reach B, whose D-SACK shows the resend
    /// was a duplicate. With undo the window and threshold go back to what they were (the threshold never leaves its
    /// initial value); without, the stream goes on at half the window in congestion avoidance.</summary>
    [Fact]
    public void A_reordered_segment_resent_as_lost_keeps_the_window_with_undo_and_halves_it_without()
    {
        (NetCounters A, uint CwndBefore, uint Cwnd, uint Ssthresh, long Took) Run(bool undo)
        {
            const uint Held = 100 * 1460;
            TcpSocket? sender = null;
            bool held = false;
            uint cwndBefore = 0;
            var link = new StackLink(80, Config(StackLink.IpA, StackLink.MacA, undo), Config(StackLink.IpB, StackLink.MacB, undo));
            link.ExtraDelay = (to, f) =>
            {
                if (held || sender == null || to != link.B || !IsData(f) || Offset(f, sender) != Held) return 0;
                held = true; cwndBefore = sender.Cwnd;
                return 3_000_000;
            };
            var (c, s, _) = link.Connect();
            sender = c;
            long t0 = link.Now;
            var data = StackLink.Payload(600_000, 80);
            Assert.Equal(data, link.Transfer(c, s, data));
            Assert.True(held);
            return (link.A.Counters, cwndBefore, c.Cwnd, c.Ssthresh, link.Now - t0);
        }
        var with = Run(true);
        var without = Run(false);
        output.WriteLine($"undo: cwnd {with.CwndBefore} before, {with.Cwnd} after, ssthresh {with.Ssthresh}, {with.A.FastRetransmits} recoveries, " +
            $"{with.A.DsackBlocksReceived} D-SACKs, {with.A.DsackUndos} undone, {with.Took / 1e6:F1} ms; " +
            $"without: cwnd {without.CwndBefore} before, {without.Cwnd} after, ssthresh {without.Ssthresh}, {without.Took / 1e6:F1} ms");
        foreach (var r in new[] { with, without })
        {
            Assert.Equal(1, r.A.FastRetransmits);         // the spurious recovery happened in both
            Assert.Equal(1460, r.A.RetransmittedBytes);
            Assert.True(r.A.DsackBlocksReceived >= 1);
        }
        Assert.Equal(1, with.A.DsackUndos);
        Assert.Equal(uint.MaxValue, with.Ssthresh);      // the cut was taken back: still in slow start
        Assert.True(with.Cwnd >= with.CwndBefore, $"with undo the window went from {with.CwndBefore} to {with.Cwnd}");
        Assert.Equal(0, without.A.DsackUndos);
        Assert.True(without.Ssthresh <= without.CwndBefore, $"without undo the threshold is {without.Ssthresh}");
        Assert.True(without.Cwnd < with.Cwnd, $"window at the end: {with.Cwnd} with undo, {without.Cwnd} without");
    }

    /// <summary>A real loss in the same place (the 100th segment's first transmission dropped), while the link copies
    /// another segment of that flight (the 120th): B's D-SACK for the copy arrives during the recovery, but it does
    /// not cover the resend, which repaired a loss: the cut stands with undo on as with it off.</summary>
    [Fact]
    public void A_real_loss_keeps_its_window_cut_even_when_a_copied_segment_is_reported()
    {
        NetCounters Run(bool undo, out uint ssthresh)
        {
            TcpSocket? sender = null;
            bool dropped = false, copied = false;
            StackLink? link = null;
            link = new StackLink(81, Config(StackLink.IpA, StackLink.MacA, undo), Config(StackLink.IpB, StackLink.MacB, undo))
            {
                Feed = (to, frame, now) =>
                {
                    if (frame == null) { to.Advance(now); return; }
                    if (sender != null && to == link!.B && IsData(frame))
                    {
                        uint off = Offset(frame, sender);
                        if (off == 100 * 1460 && !dropped) { dropped = true; return; }
                        if (off == 120 * 1460 && !copied) { copied = true; to.Input(frame, now); }
                    }
                    to.Input(frame, now);
                },
            };
            var (c, s, _) = link.Connect();
            sender = c;
            var data = StackLink.Payload(600_000, 81);
            Assert.Equal(data, link.Transfer(c, s, data));
            Assert.True(dropped && copied);
            ssthresh = c.Ssthresh;
            return link.A.Counters;
        }
        var with = Run(true, out uint withSs);
        var without = Run(false, out uint withoutSs);
        output.WriteLine($"undo on: {with.FastRetransmits} recoveries, {with.DsackBlocksReceived} D-SACKs, {with.DsackUndos} undone, ssthresh {withSs}; off: ssthresh {withoutSs}");
        Assert.True(with.DsackBlocksReceived >= 1, "the copy was not reported");
        Assert.Equal(0, with.DsackUndos);
        Assert.NotEqual(uint.MaxValue, withSs);
        Assert.Equal(withoutSs, withSs);
    }

    /// <summary>
    /// A path whose delay rises for good: 1 ms each way for a first transfer (which also sees one reordered segment, so
    /// the connection knows the path reorders), then the connection idles past the minimum RTT's window (300 s) and the
    /// delay becomes 10 ms each way; in the second transfer, after 2 MB have settled the smoothed RTT, every 50th
    /// segment is held 3 ms behind the rest (well inside a quarter of the new 20 ms RTT); what is resent from the first
    /// held segment on is counted (nothing is lost: all of it is spurious). With the windowed minimum
    /// the minimum follows the new delay and the reordering window (a quarter of it, times D-SACK rounds) covers the
    /// 3 ms: nothing is resent. With the lifetime minimum (2 ms) the window stays a fraction of a millisecond and RACK
    /// marks held segments lost and resends them until enough D-SACK rounds have widened it.
    /// </summary>
    [Fact]
    public void A_path_whose_delay_rises_keeps_racks_reordering_window_right_with_the_windowed_minimum_rtt()
    {
        (long Resent, long MinRtt, long ReorderWindow) Run(bool windowed)
        {
            TcpSocket? sender = null;
            int phase = 1;
            uint phaseStart = 0;
            bool firstHeld = false;
            long resentAtFirstHold = -1;
            var link = new StackLink(82, Config(StackLink.IpA, StackLink.MacA, windowed: windowed), Config(StackLink.IpB, StackLink.MacB, windowed: windowed));
            var heldOnce = new HashSet<uint>();
            link.ExtraDelay = (to, f) =>
            {
                if (sender == null || to != link.B || !IsData(f)) return 0;
                uint off = Offset(f, sender);
                if (phase == 1 && off == 100 * 1460 && !firstHeld) { firstHeld = true; return 3_000_000; }
                uint rel = off - phaseStart;
                if (phase == 2 && rel >= 2_000_000 && (rel / 1460) % 50 == 0 && heldOnce.Add(off))
                {
                    if (resentAtFirstHold < 0) resentAtFirstHold = link.A.Counters.RetransmittedBytes;
                    return 3_000_000;
                }
                return 0;
            };
            var (c, s, _) = link.Connect();
            sender = c;
            var buf = new byte[65536];
            void Stream(int bytes, int seed)
            {
                var data = StackLink.Payload(bytes, seed);
                int sent = 0; long got = 0;
                Assert.True(link.Run(() => got >= bytes && c.SndUna == c.SndMax, () =>
                {
                    while (sent < bytes) { int n = c.Send(data.AsSpan(sent)); if (n <= 0) break; sent += n; }
                    int m; while ((m = s.Receive(buf)) > 0) got += m;
                }));
            }
            Stream(600_000, 82);
            Assert.True(firstHeld);
            link.Idle(301_000_000_000);
            link.LatencyNs = 10_000_000;
            phase = 2; phaseStart = c.SndMax - c.Iss - 1;
            // (the first flight on the slower path is probed and partly resent alike with either minimum: the
            // probe timeout still derives from the old path's smoothed RTT; what counts is after the settling)
            Stream(3_000_000, 83);
            Assert.True(heldOnce.Count >= 10 && resentAtFirstHold >= 0);
            return (link.A.Counters.RetransmittedBytes - resentAtFirstHold, c.MinRtt, c.ReorderMultiplier * (c.MinRtt / 4));
        }
        var with = Run(true);
        var without = Run(false);
        output.WriteLine($"windowed: min RTT {with.MinRtt / 1e6:F2} ms, reordering window {with.ReorderWindow / 1e6:F2} ms, {with.Resent} bytes resent; " +
            $"lifetime: min RTT {without.MinRtt / 1e6:F2} ms, window {without.ReorderWindow / 1e6:F2} ms, {without.Resent} bytes resent");
        Assert.True(with.MinRtt >= 20_000_000, $"windowed minimum RTT {with.MinRtt / 1e6:F2} ms");
        Assert.Equal(0, with.Resent);
        Assert.True(without.MinRtt < 3_000_000, $"lifetime minimum RTT {without.MinRtt / 1e6:F2} ms");
        Assert.True(without.Resent >= 3 * 1460, $"the lifetime minimum resent {without.Resent} bytes");
    }

    /// <summary>The filter itself: with an endless window it is the lifetime minimum; with a window, a minimum older
    /// than the window gives way to what was sampled since (the oracle: the least sample of the last window, which the
    /// filter may overstate only by taking a later sample, never by keeping an expired one).</summary>
    [Fact]
    public void The_windowed_minimum_forgets_a_minimum_older_than_its_window()
    {
        var rng = new Random(83);
        var endless = WindowedMin.Empty;
        var windowed = WindowedMin.Empty;
        const long Window = 1_000_000;
        var samples = new List<(long T, long V)>();
        long lifetime = long.MaxValue;
        for (long t = 0; t < 20_000_000; t += 1 + rng.Next(20_000))
        {
            long v = 1000 + rng.Next(100_000) + (t > 10_000_000 ? 500_000 : 0);
            samples.Add((t, v));
            samples.RemoveAll(x => t - x.T > Window);
            endless.Update(long.MaxValue, t, v);
            windowed.Update(Window, t, v);
            lifetime = Math.Min(lifetime, v);
            Assert.Equal(lifetime, endless.Value);
            long inWindow = samples.Where(x => t - x.T <= Window).Min(x => x.V);
            Assert.True(windowed.Value >= inWindow, $"at {t}: {windowed.Value} below the window's least {inWindow}");
            Assert.Contains(samples, x => x.V == windowed.Value && t - x.T <= Window);
        }
        Assert.True(windowed.Value >= 500_000, "the late, higher samples were not taken up");
    }
}
