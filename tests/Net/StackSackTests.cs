using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// Selective acknowledgement (RFC 2018, recovery per RFC 6675) between two stacks on the simulated link: negotiated
/// only when both SYNs offer it; with it, a sender resends the segments the link lost and nothing else. The link is a
/// discrete-event simulation, so every figure here is exact and the same on every run. The oracle for what was lost
/// is the link itself (which frames it dropped), for the streams the payload sent.
/// </summary>
public class StackSackTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static NetConfig Config(uint ip, MacAddress mac, bool sack) => new(mac, ip, 24) { Sack = sack };

    static StackLink Link(int seed, bool sackA, bool sackB, double loss = 0) =>
        new(seed, Config(StackLink.IpA, StackLink.MacA, sackA), Config(StackLink.IpB, StackLink.MacB, sackB)) { Loss = loss };

    [Theory]
    [InlineData(true, true, true)]
    [InlineData(true, false, false)]
    [InlineData(false, true, false)]
    [InlineData(false, false, false)]
    public void Sack_is_used_only_when_both_SYNs_offer_it(bool a, bool b, bool used)
    {
        var link = Link(60, a, b, loss: 0.05);
        var (c, s, _) = link.Connect();
        Assert.Equal(used, c.SackOk);
        Assert.Equal(used, s.SackOk);
        var data = StackLink.Payload(300_000, 60);
        Assert.Equal(data, link.Transfer(c, s, data));
        // a connection without SACK never sends a block; one with it, under loss, does (the receiver B) and uses them (A)
        Assert.Equal(used, link.B.Counters.SackBlocksSent > 0);
        Assert.Equal(used, link.A.Counters.SackBlocksReceived > 0);
        Assert.Equal(0, link.A.Counters.SackBlocksIgnored + link.B.Counters.SackBlocksIgnored);
    }

    /// <summary>
    /// Three data segments of one flight are lost (the 3rd, 4th and 5th the sender sends after the handshake): with
    /// SACK exactly those three segments' bytes are sent again, in one recovery, as fast as the pipe allows; without
    /// SACK (NewReno) each partial ACK reveals one more, a round trip per lost segment, and the hole fills later.
    /// </summary>
    [Fact]
    public void With_sack_only_the_lost_segments_are_resent_in_one_recovery()
    {
        (long Resent, long Lost, long Filled, long Fast) Run(bool sack)
        {
            int dataFrames = 0;
            long lostBytes = 0, filled = -1;
            var drop = new HashSet<int> { 3, 4, 5 };
            TcpSocket? receiver = null;
            uint start = 0;
            StackLink? link = null;
            link = new StackLink(61, Config(StackLink.IpA, StackLink.MacA, sack), Config(StackLink.IpB, StackLink.MacB, sack))
            {
                Feed = (to, frame, now) =>
                {
                    if (frame != null && to.Config.Ip == StackLink.IpB && DataLength(frame) is int n and > 0 && receiver != null
                        && drop.Contains(++dataFrames)) { lostBytes += n; return; }
                    if (frame != null) to.Input(frame, now); else to.Advance(now);
                    // when the receiver's stream got past the three lost segments
                    if (receiver != null && filled < 0 && receiver.RcvNxt - start >= 5 * 1460) filled = now;
                },
            };
            var (c, s, _) = link.Connect();
            receiver = s; start = s.RcvNxt;
            long t0 = link.Now;
            var data = StackLink.Payload(20 * 1460, 61);
            Assert.Equal(data, link.Transfer(c, s, data));
            return (link.A.Counters.RetransmittedBytes, lostBytes, filled - t0, link.A.Counters.FastRetransmits);
        }
        var with = Run(sack: true);
        var without = Run(sack: false);
        output.WriteLine($"SACK: resent {with.Resent} of {with.Lost} lost bytes, the hole filled after {with.Filled / 1e6:F1} ms, {with.Fast} recoveries; " +
            $"without: resent {without.Resent}, filled after {without.Filled / 1e6:F1} ms, {without.Fast} recoveries");
        Assert.Equal(3 * 1460, with.Lost);
        Assert.Equal(with.Lost, with.Resent);
        Assert.Equal(1, with.Fast);
        // with SACK the three go within the recovery's first two round trips (as the pipe allows; each way of the
        // link takes 1 ms); NewReno needs a round trip per segment
        Assert.True(without.Filled - with.Filled >= 2_000_000, $"filled after {with.Filled / 1e6:F1} ms with SACK, {without.Filled / 1e6:F1} ms without");
    }

    /// <summary>Random loss both ways on a 2 MB stream: with SACK fewer bytes are sent twice, and no more than the link
    /// lost plus what a retransmission time-out resends.</summary>
    [Theory]
    [InlineData(62, 0.02)]
    [InlineData(63, 0.05)]
    public void Under_random_loss_sack_resends_fewer_bytes(int seed, double loss)
    {
        (long Resent, long Took, long Timeouts, long Fast) Run(bool sack)
        {
            var link = Link(seed, sack, sack, loss);
            var (c, s, _) = link.Connect();
            long start = link.Now;
            var data = StackLink.Payload(2 << 20, seed);
            Assert.Equal(data, link.Transfer(c, s, data));
            return (link.A.Counters.RetransmittedBytes, link.Now - start, link.A.Counters.RetransmitTimeouts, link.A.Counters.FastRetransmits);
        }
        var with = Run(true);
        var without = Run(false);
        output.WriteLine($"loss {loss:P0}: with SACK resent {with.Resent} bytes in {with.Took / 1e6:F0} ms ({with.Timeouts} time-outs, {with.Fast} recoveries), " +
            $"without {without.Resent} in {without.Took / 1e6:F0} ms ({without.Timeouts} time-outs, {without.Fast} recoveries)");
        Assert.True(with.Resent < without.Resent, $"with SACK {with.Resent}, without {without.Resent}");
        Assert.True(with.Took < without.Took, $"with SACK {with.Took / 1e6:F0} ms, without {without.Took / 1e6:F0} ms");
    }

    /// <summary>
    /// The takeover's go-back-N resend skips what the peer SACKed: the old replica's flight of ten segments reached the
    /// peer except the 2nd and 5th, whose SACK blocks reached the log; the survivor resends only those two.
    /// </summary>
    [Fact]
    public void A_takeover_resends_only_the_unsacked_part_of_the_flight()
    {
        // the flight's 2nd and 5th data segments are lost; everything the old replica sends after its first ten data
        // segments (its own recovery) never leaves it, until the takeover
        int dataFrames = 0;
        bool held = true;
        StackLink? link = null;
        link = new StackLink(64)
        {
            Feed = (to, frame, now) =>
            {
                if (frame != null && to.Config.Ip == StackLink.IpA && DataLength(frame) > 0 && link!.A.ConnectionCount > 0)
                {
                    int k = ++dataFrames;
                    if (k is 2 or 5 || (held && k > 10)) return;
                }
                if (frame != null) to.Input(frame, now); else to.Advance(now);
            },
        };
        var (c, s, _) = link.Connect();
        dataFrames = 0;
        var resent = new List<string>();
        link.Sent = (from, f) => { if (from == link.B && !held && DataLength(f) > 0) resent.Add($"{Wire.U32(f, Wire.EthHeader + Wire.Ip4Header + 4) - s.Iss - 1}@{link.Now / 1e6:F0}ms"); };
        var reply = StackLink.Payload(10 * 1460, 64);
        Assert.Equal(reply.Length, s.Send(reply));
        _ = link.Run(() => false, () => { }, link.Now + 20_000_000);
        Assert.Equal(new[] { (s.SndUna + 1460, s.SndUna + 3 * 1460), (s.SndUna + 4 * 1460, s.SndUna + 9 * 1460) }, s.Sacked);
        long before = link.B.Counters.RetransmittedBytes;
        held = false;
        link.B.TakeOver(link.Now);
        var got = new MemoryStream();
        var buf = new byte[65536];
        Assert.True(link.Run(() => got.Length >= reply.Length, () => { int n; while ((n = c.Receive(buf)) > 0) got.Write(buf, 0, n); }));
        Assert.Equal(reply, got.ToArray());
        Assert.True(2 * 1460 == link.B.Counters.RetransmittedBytes - before,
            $"resent {link.B.Counters.RetransmittedBytes - before} bytes; data segments after the takeover (offset@time): {string.Join(", ", resent)}");
    }

    /// <summary>TCP data bytes of an Ethernet frame (0 when it is no TCP segment).</summary>
    internal static int DataLength(byte[] f)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != Wire.EtherTypeIp4 || f[Wire.EthHeader + 9] != Wire.ProtoTcp) return 0;
        int ihl = (f[Wire.EthHeader] & 0xF) * 4, total = Wire.U16(f, Wire.EthHeader + 2);
        int doff = (f[Wire.EthHeader + ihl + 12] >> 4) * 4;
        return total - ihl - doff;
    }
}
