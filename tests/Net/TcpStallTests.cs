using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// The paths by which a lossy transfer over the in-VM stack could stop for tens of seconds (the rare stall of
/// StackTapTests' SACK echo; docs/TESTING.md): a resend lost during the go-back-N after a retransmission time-out, a
/// backed-off RTO that no RTT sample brings back, and a peer's ACKs dropped because they carry our window's right edge.
/// Two stacks on the simulated link (StackLink), whose chosen frames are dropped: every figure is exact and the same
/// on every run. The oracles are the link (what it dropped), the payload sent, and RFC 6298's RTO for the RTTs the
/// link imposes (1 ms each way, so the RTO is the 200 ms minimum whenever a sample was taken).
/// </summary>
public class TcpStallTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static uint SeqOf(byte[] f) => Wire.U32(f, Wire.EthHeader + Wire.Ip4Header + 4);

    /// <summary>
    /// A sends 400 KB to B; from A's 60th data segment on the link drops everything A sends until A's retransmission
    /// timer fires (the whole flight and the tail-loss probe are lost); then it drops the third segment of the
    /// go-back-N resend once. RACK sees that resend lost (segments sent after it arrive) and it goes again at once:
    /// one time-out in all, the stream intact, and the RTO back at its minimum when the transfer ends. Before, the
    /// go-back-N weighed the window against everything outstanding (SACKed bytes too) and could not enter recovery:
    /// the lost resend waited for a second time-out, with the RTO doubled again (to 800 ms).
    /// </summary>
    [Fact]
    public void A_resend_lost_after_a_time_out_goes_again_without_another_time_out()
    {
        StackLink? link = null;
        int dataFrames = 0, afterTimeout = 0;
        bool counting = false, droppedResend = false;
        link = new StackLink(71)
        {
            Feed = (to, frame, now) =>
            {
                if (frame != null && counting && to == link!.B && StackSackTests.DataLength(frame) > 0)
                {
                    long timeouts = link.A.Counters.RetransmitTimeouts;
                    if (++dataFrames >= 60 && timeouts == 0) return;                                   // the blackout
                    if (timeouts == 1 && ++afterTimeout == 3 && !droppedResend) { droppedResend = true; return; }
                }
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        counting = true;
        var data = StackLink.Payload(400_000, 71);
        Assert.Equal(data, link.Transfer(c, s, data));
        output.WriteLine($"time-outs {link.A.Counters.RetransmitTimeouts}, RACK losses {link.A.Counters.RackLostSegments} " +
            $"({link.A.Counters.RackLostRetransmits} resends), RTO at the end {c.Rto / 1_000_000} ms, took {link.Now / 1_000_000} ms");
        Assert.True(droppedResend);
        Assert.Equal(1, link.A.Counters.RetransmitTimeouts);
        Assert.True(link.A.Counters.RackLostRetransmits >= 1);
        Assert.Equal(TcpSocket.MinRto, c.Rto);
    }

    /// <summary>
    /// After a time-out (RTO 200 -> 400 ms) and its go-back-N, the first new segment is lost once; the segments after
    /// it are SACKed. Those ACKs deliver data sent once only, so each is an RTT sample (RFC 6298 §2, Karn's rule kept)
    /// and the RTO is back at 200 ms by the time the first of them arrives. Before, the only sample was the one timed
    /// segment, which was the lost one: the doubled RTO stayed until a later segment was timed and acknowledged,
    /// and under steady loss (a resend in nearly every flight voids the timed segment) it doubled again at the next
    /// time-out, and the next.
    /// </summary>
    [Fact]
    public void A_backed_off_rto_ends_at_the_first_ack_of_data_sent_once()
    {
        StackLink? link = null;
        int dataFrames = 0;
        uint firstNew = 0;
        bool counting = false, timedOut = false, droppedNew = false;
        link = new StackLink(72)
        {
            Feed = (to, frame, now) =>
            {
                if (frame != null && counting && to == link!.B && StackSackTests.DataLength(frame) > 0)
                {
                    if (++dataFrames >= 40 && link.A.Counters.RetransmitTimeouts == 0) return;          // the blackout
                    if (timedOut && !droppedNew && SeqOf(frame) == firstNew) { droppedNew = true; return; }
                }
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        counting = true;
        var data = StackLink.Payload(300_000, 72);
        int sent = 0;
        var got = new MemoryStream();
        var buf = new byte[65536];
        long rtoAtTimeout = 0, rtoAtFirstSack = -1;
        Assert.True(link.Run(() => rtoAtFirstSack >= 0, () =>
        {
            while (sent < data.Length) { int n = c.Send(data.AsSpan(sent)); if (n <= 0) break; sent += n; }
            int r;
            while ((r = s.Receive(buf)) > 0) got.Write(buf, 0, r);
            if (!timedOut && link.A.Counters.RetransmitTimeouts == 1) { timedOut = true; firstNew = c.SndMax; rtoAtTimeout = c.Rto; }
            if (droppedNew && c.Sacked.Count > 0 && Seq.Gt(c.Sacked[0].Start, firstNew - 1)) rtoAtFirstSack = c.Rto;
        }, 30_000_000_000), $"time-outs {link.A.Counters.RetransmitTimeouts}, dropped the first new segment {droppedNew}");
        output.WriteLine($"RTO after the time-out {rtoAtTimeout / 1_000_000} ms, at the first SACK of data sent once {rtoAtFirstSack / 1_000_000} ms");
        Assert.Equal(2 * TcpSocket.MinRto, rtoAtTimeout);
        Assert.Equal(TcpSocket.MinRto, rtoAtFirstSack);
    }

    /// <summary>
    /// B's application reads nothing, so B's receive window closes on a right edge; A fills it, but one of its segments
    /// (and every resend of it) is lost, so A's SND.NXT is B's right edge while B waits for the hole. B then sends A
    /// data; A's ACKs of it carry SEG.SEQ = B's RCV.NXT + RCV.WND, which a strict RFC 793 acceptance test drops
    /// (zero-length segments need RCV.NXT <= SEG.SEQ < RCV.NXT + RCV.WND), ACK field and all. B must take their
    /// acknowledgment (RFC 9293 §3.10.7.4; Linux's receiver tests SEG.SEQ <= RCV.NXT + RCV.WND): its data is acknowledged
    /// within a few round trips, with no time-out. Before, B's send side learnt nothing while the hole stayed open:
    /// it timed out again and again, each time with a doubled RTO.
    /// </summary>
    [Fact]
    public void Acks_at_the_right_edge_of_a_window_waiting_for_a_hole_are_taken()
    {
        // B's buffer: once B holds the 27 segments before the hole, its free space (32 segments) is a multiple of the MSS
        // and of the window scale's 128 bytes, so B advertises a right edge A's segments fill exactly
        const int Window = (27 + 32) * 1460;
        StackLink? link = null;
        uint hole = 0;
        bool filled = false;
        link = new StackLink(73, b: new NetConfig(StackLink.MacB, StackLink.IpB, 24) { ReceiveBuffer = Window })
        {
            Feed = (to, frame, now) =>
            {
                // A's data: the hole's segment never arrives, nor (once A filled the window) any other resend
                if (frame != null && hole != 0 && to == link!.B && StackSackTests.DataLength(frame) > 0 && (SeqOf(frame) == hole || filled)) return;
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        uint edge = s.RcvNxt + Window;
        hole = c.SndNxt + 27 * 1460;
        var toB = StackLink.Payload(2 * Window, 73);
        Assert.Equal(toB.Length, c.Send(toB));
        Assert.True(link.Run(() => c.SndMax == edge, () => { }, link.Now + 5_000_000_000), $"A sent up to {c.SndMax - (edge - Window)} of {Window}; A's window {c.SndWnd}, B's rcvnxt {s.RcvNxt - (edge - Window)} window {s.ReceiveWindow()} recvbuf {s.RecvBuf.Count} ooo {s.Ooo.Count}, hole at {hole - (edge - Window)}");
        filled = true;
        Assert.Equal(hole, s.RcvNxt);
        Assert.Equal(edge, s.RcvNxt + s.ReceiveWindow());
        var toA = StackLink.Payload(8 * 1460, 74);
        Assert.Equal(toA.Length, s.Send(toA));
        long start = link.Now;
        var buf = new byte[65536];
        bool acked = link.Run(() => s.SndUna == s.SndMax, () => { while (c.Receive(buf) > 0) { } }, start + 2_000_000_000);
        output.WriteLine($"B's data acknowledged: {acked} after {(link.Now - start) / 1e6:F1} ms; B's time-outs {link.B.Counters.RetransmitTimeouts}, " +
            $"segments B dropped out of window {link.B.Counters.DropOutOfWindow}");
        Assert.True(acked, $"B's SND.UNA {s.SndUna - s.Iss} of SND.MAX {s.SndMax - s.Iss} after 2 s; RTO {s.Rto / 1_000_000} ms");
        Assert.True(link.Now - start < 50_000_000, $"acknowledged after {(link.Now - start) / 1e6:F1} ms");
        Assert.Equal(0, link.B.Counters.RetransmitTimeouts);
    }

    /// <summary>
    /// A listener whose receive buffer is 16 KiB offers at most 16 KiB in its SYN-ACK, whatever the client's initial
    /// sequence number (eight connections, eight ISNs): the peer's own window (SND.WND from the SYN-ACK) is the oracle.
    /// Before, the advertised right edge started at 0 rather than at RCV.NXT, and for about half of all initial
    /// sequence numbers the SYN-ACK offered 64 KiB: data inside that window found no room in the buffer.
    /// </summary>
    [Fact]
    public void A_syn_ack_offers_no_more_than_the_receive_buffer()
    {
        const int Buffer = 16 * 1024;
        var offered = new List<uint>();
        for (int seed = 1; seed <= 8; seed++)
        {
            var link = new StackLink(seed, b: new NetConfig(StackLink.MacB, StackLink.IpB, 24) { ReceiveBuffer = Buffer });
            var (c, _, _) = link.Connect();
            offered.Add(c.SndWnd);
        }
        output.WriteLine($"SYN-ACK windows: {string.Join(", ", offered)}");
        Assert.All(offered, w => Assert.Equal((uint)Buffer, w));
    }
}
