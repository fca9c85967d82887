namespace ReVirt.Net;

/// <summary>TCP option kinds this stack reads or writes beyond MSS and window scale.</summary>
static class TcpOptions
{
    public const byte End = 0, Nop = 1, Mss = 2, WindowScale = 3, SackPermitted = 4, Sack = 5;
    /// <summary>A SACK option holds at most 4 blocks (2 + 4·8 bytes within the 40 bytes of TCP options).</summary>
    public const int MaxSackBlocks = 4;
    /// <summary>The SACK option as we write it: two NOPs for alignment, kind, length, the blocks.</summary>
    public const int SackOptionBytes = 4 + 8 * MaxSackBlocks;
}

/// <summary>
/// Selective acknowledgement (RFC 2018) with the loss recovery of RFC 6675, kept simple.
/// <list type="bullet">
/// <item>Negotiation: our SYN offers SACK-permitted when <see cref="NetConfig.Sack"/> is on; a SYN-ACK carries it only
/// when the peer's SYN did; a connection uses SACK only when both SYNs carried it (<see cref="SackOk"/>).</item>
/// <item>Receiver: every ACK of a SACK connection that holds out-of-order data carries up to 4 blocks, the first the
/// block holding the latest out-of-order arrival (RFC 2018 §4), the others in sequence order (the lowest holes are
/// the ones the sender needs first). Out-of-order data is kept within the window, at most
/// <see cref="MaxOooSegments"/> segments.</item>
/// <item>Sender: a scoreboard of the ranges the peer SACKed, merged and sorted, within [SND.UNA, the end of our
/// data], at most <see cref="MaxSackRanges"/> ranges. Fast recovery starts at DupThresh duplicates or when more than
/// DupThresh - 1 segments' worth are SACKed above SND.UNA; it sends the holes the scoreboard shows lost while the
/// pipe (RFC 6675 §4's estimate of what is in flight) is below the congestion window, then new data, and ends at the
/// recovery point. A go-back-N resend (after a retransmission time-out or a takeover's repair) skips SACKed ranges;
/// the scoreboard is cleared at the second time-out in a row, in case the peer reneged (RFC 2018 §8).</item>
/// <item>Bad input: blocks with the left edge at or past the right, beyond what we sent, or that would grow the
/// scoreboard past its bound, SACK options of a wrong length, and SACK on a connection that did not negotiate it are
/// ignored and counted (<see cref="NetCounters.SackBlocksIgnored"/>); blocks at or below SND.UNA are stale (or
/// D-SACK, RFC 2883) and simply not used.</item>
/// </list>
/// Everything is a function of the segments and the logged clock, iterated in sequence order: deterministic.
/// </summary>
public sealed partial class TcpSocket
{
    /// <summary>Most disjoint SACKed ranges the scoreboard holds (a peer SACKing every other byte cannot grow it further).</summary>
    internal const int MaxSackRanges = 256;

    /// <summary>Both SYNs carried SACK-permitted.</summary>
    internal bool SackOk;
    /// <summary>Ranges [Start, End) the peer SACKed, sorted, disjoint, not adjacent, above SND.UNA.</summary>
    internal readonly List<(uint Start, uint End)> Sacked = [];
    /// <summary>RFC 6675 HighRxt: the end of the last hole resent in this recovery.</summary>
    internal uint HighRxt;
    /// <summary>Sequence number of the latest out-of-order segment kept.</summary>
    internal uint LastOooSeq;

    /// <summary>Bytes of data a segment may carry now: the peer's MSS less the SACK option this connection attaches.</summary>
    int SegmentRoom => SndMss - SackOptionLength();

    int SackOptionLength()
    {
        if (!SackOk || (Ooo.Count == 0 && !DsackPending)) return 0;
        int blocks = DsackPending ? 1 : 0;
        uint end = 0;
        for (int i = 0; i < Ooo.Count; i++)
        {
            uint s = Ooo.Keys[i];
            if (i == 0 || Seq.Gt(s, end)) { if (blocks == TcpOptions.MaxSackBlocks) break; blocks++; }
            uint e = s + (uint)Ooo.Values[i].Length;
            if (i == 0 || Seq.Gt(e, end)) end = e;
        }
        return 4 + 8 * blocks;
    }

    /// <summary>The out-of-order data held, merged into contiguous blocks in sequence order.</summary>
    List<(uint Start, uint End)> OooBlocks()
    {
        var blocks = new List<(uint Start, uint End)>();
        for (int i = 0; i < Ooo.Count; i++)
        {
            uint s = Ooo.Keys[i], e = s + (uint)Ooo.Values[i].Length;
            if (blocks.Count > 0 && Seq.Le(s, blocks[^1].End))
            {
                if (Seq.Gt(e, blocks[^1].End)) blocks[^1] = (blocks[^1].Start, e);
            }
            else blocks.Add((s, e));
        }
        return blocks;
    }

    /// <summary>Writes the SACK option for an ACK into <paramref name="opts"/> (RFC 2018 §4); returns its length, 0 for none.
    /// A duplicate to report goes first, once (RFC 2883 §4): then the block holding the latest arrival, which is the
    /// block holding the duplicate when it was a copy of out-of-order data.</summary>
    int WriteSackOption(Span<byte> opts)
    {
        if (!SackOk || (Ooo.Count == 0 && !DsackPending)) return 0;
        var blocks = OooBlocks();
        int first = blocks.FindIndex(b => Seq.Le(b.Start, LastOooSeq) && Seq.Lt(LastOooSeq, b.End));
        if (first > 0) { var b = blocks[first]; blocks.RemoveAt(first); blocks.Insert(0, b); }
        if (DsackPending)
        {
            blocks.Insert(0, (DsackStart, DsackEnd));
            DsackPending = false;
            Stack.Counters.DsackBlocksSent++;
        }
        int n = Math.Min(blocks.Count, TcpOptions.MaxSackBlocks);
        opts[0] = TcpOptions.Nop; opts[1] = TcpOptions.Nop; opts[2] = TcpOptions.Sack; opts[3] = (byte)(2 + 8 * n);
        for (int i = 0; i < n; i++) { Wire.U32(opts, 4 + 8 * i, blocks[i].Start); Wire.U32(opts, 8 + 8 * i, blocks[i].End); }
        Stack.Counters.SackBlocksSent += n;
        return 4 + 8 * n;
    }

    /// <summary>
    /// Adds the blocks of a SACK option to the scoreboard; true when they SACKed data not SACKed before. Invalid blocks
    /// are ignored and counted; none is trusted beyond the data we hold (a block never covers our FIN). A valid first
    /// block below the cumulative ACK or inside the second block reports a duplicate (D-SACK, RFC 2883 §4):
    /// <paramref name="dsack"/>.
    /// </summary>
    bool TakeSackBlocks(ReadOnlySpan<byte> sack, out (uint Start, uint End)? dsack)
    {
        var c = Stack.Counters;
        dsack = null;
        if (!SackOk || State is TcpState.SynSent or TcpState.SynReceived) { c.SackBlocksIgnored += sack.Length / 8; return false; }
        uint dataEnd = SndUna + (uint)SendBuf.Count;
        bool news = false;
        for (int i = 0; i + 8 <= sack.Length; i += 8)
        {
            uint s = Wire.U32(sack, i), e = Wire.U32(sack, i + 4);
            if (!Seq.Lt(s, e) || Seq.Gt(e, SndMax) || Seq.Lt(s, SndUna - Math.Max(MaxSndWnd, 1)))
            { c.SackBlocksIgnored++; continue; }
            c.SackBlocksReceived++;
            if (i == 0 && (Seq.Le(e, SndUna) || sack.Length >= 16 && Seq.Ge(s, Wire.U32(sack, 8)) && Seq.Le(e, Wire.U32(sack, 12))))
            {
                dsack = (s, e);
                c.DsackBlocksReceived++;
            }
            if (Seq.Lt(s, SndUna)) s = SndUna;          // partly below SND.UNA: the rest counts
            if (Seq.Gt(e, dataEnd)) e = dataEnd;        // a FIN is acknowledged cumulatively only
            if (!Seq.Lt(s, e)) continue;               // stale (or a D-SACK, RFC 2883): nothing to use
            news |= AddSacked(s, e);
        }
        return news;
    }

    /// <summary>Merges [s, e) into the scoreboard; false when it added nothing or the scoreboard is full.</summary>
    bool AddSacked(uint s, uint e)
    {
        int i = 0;
        while (i < Sacked.Count && Seq.Lt(Sacked[i].End, s)) i++;          // ranges wholly before s (not adjacent)
        int j = i;
        uint ns = s, ne = e;
        while (j < Sacked.Count && Seq.Le(Sacked[j].Start, e))             // ranges overlapping or adjacent
        {
            if (Seq.Lt(Sacked[j].Start, ns)) ns = Sacked[j].Start;
            if (Seq.Gt(Sacked[j].End, ne)) ne = Sacked[j].End;
            j++;
        }
        if (j - i == 1 && Sacked[i] == (ns, ne)) return false;            // already known
        if (j == i && Sacked.Count >= MaxSackRanges) { Stack.Counters.SackBlocksIgnored++; return false; }
        Sacked.RemoveRange(i, j - i);
        Sacked.Insert(i, (ns, ne));
        return true;
    }

    void DropSackedBelow(uint una)
    {
        int k = 0;
        while (k < Sacked.Count && Seq.Le(Sacked[k].End, una)) k++;
        Sacked.RemoveRange(0, k);
        if (Sacked.Count > 0 && Seq.Lt(Sacked[0].Start, una)) Sacked[0] = (una, Sacked[0].End);
    }

    /// <summary>Bytes SACKed above <paramref name="seq"/>.</summary>
    uint SackedAbove(uint seq)
    {
        uint n = 0;
        for (int i = Sacked.Count - 1; i >= 0 && Seq.Gt(Sacked[i].End, seq); i--)
            n += Sacked[i].End - (Seq.Gt(Sacked[i].Start, seq) ? Sacked[i].Start : seq);
        return n;
    }

    /// <summary>RFC 6675 IsLost, by bytes: more than DupThresh - 1 segments' worth SACKed above it.</summary>
    bool IsLost(uint seq) => SackedAbove(seq) > (uint)(DuplicateAcksForFastRetransmit - 1) * (uint)SndMss;

    /// <summary>
    /// RFC 6675 §4 SetPipe over [SND.UNA, SND.MAX) by holes: a hole's bytes count unless lost, and once more below
    /// HighRxt (resent in this recovery). In recovery the segment at SND.UNA is presumed lost even without SACK blocks
    /// above it (the duplicate or partial ACK that got us here says so, as NewReno reads it, RFC 6582).
    /// </summary>
    uint Pipe()
    {
        // from the top down, so the bytes SACKed above each hole are a running sum: O(ranges), whatever a peer SACKs
        uint pipe = 0, above = 0, threshold = (uint)(DuplicateAcksForFastRetransmit - 1) * (uint)SndMss;
        for (int i = Sacked.Count; i >= 0; i--)
        {
            if (i < Sacked.Count) above += Sacked[i].End - Sacked[i].Start;
            uint at = i == 0 ? SndUna : Sacked[i - 1].End, end = i == Sacked.Count ? SndMax : Sacked[i].Start;
            if (!Seq.Lt(at, end)) continue;
            uint len = end - at;
            uint lost = above > threshold ? len : at == SndUna ? Math.Min(len, (uint)SndMss) : 0;
            pipe += len - lost;
            if (Seq.Lt(at, HighRxt)) pipe += (Seq.Lt(HighRxt, end) ? HighRxt : end) - at;
        }
        return pipe;
    }

    /// <summary>RFC 6675 NextSeg rule 1: the first lost, unSACKed byte at or above HighRxt (the segment at SND.UNA
    /// counts as lost, see <see cref="Pipe"/>), and how much of its hole fits in a segment.</summary>
    bool NextHole(out uint seq, out int len)
    {
        seq = 0; len = 0;
        uint at = Seq.Gt(HighRxt, SndUna) ? HighRxt : SndUna;
        for (int i = 0; i <= Sacked.Count; i++)
        {
            uint end = i < Sacked.Count ? Sacked[i].Start : SndMax;
            if (Seq.Lt(at, end))
            {
                if (at != SndUna && !IsLost(at)) return false;
                seq = at;
                len = (int)Math.Min(end - at, (uint)SegmentRoom);
                return len > 0;
            }
            if (i < Sacked.Count && Seq.Lt(at, Sacked[i].End)) at = Sacked[i].End;
        }
        return false;
    }

    /// <summary>Resends up to <paramref name="room"/> bytes from <paramref name="seq"/> (with the FIN when it is next);
    /// never timed (Karn's algorithm).</summary>
    bool ResendHole(uint seq, int room)
    {
        Span<byte> seg = stackalloc byte[OurMss];
        int off = (int)(seq - SndUna);
        int n = SendBuf.Peek(off, seg[..Math.Max(0, Math.Min(room, SendBuf.Count - off))]);
        bool fin = FinSent && seq + (uint)n == FinSeq;
        if (n == 0 && !fin) return false;
        RttTiming = false;
        Stack.Counters.Retransmits++;
        Stack.Counters.RetransmittedBytes += n;
        SendSegment(seq, TcpFlags.Ack | (fin ? TcpFlags.Fin : 0) | (n > 0 ? TcpFlags.Psh : 0), seg[..n]);
        uint end = seq + (uint)n + (fin ? 1u : 0);
        if (Seq.Gt(end, HighRxt)) HighRxt = end;
        UndoResent(seq, end);
        return true;
    }

    /// <summary>RFC 6675 §5 step C: while the pipe leaves a segment of room in the congestion window, the next lost hole.</summary>
    void SendHoles()
    {
        if (RackOn)
        {
            // with RACK the lost ranges are what RACK marked, lowest first, and the pipe counts a resend once
            for (uint pipe = RackPipe(); Cwnd > pipe && Cwnd - pipe >= (uint)SegmentRoom && RackNextLost(out uint seq, out int len); pipe += (uint)len)
                if (!ResendHole(seq, len)) break;
            return;
        }
        // each hole resent is lost data below HighRxt from then on: it adds its length to the pipe
        for (uint pipe = Pipe(); Cwnd > pipe && Cwnd - pipe >= (uint)SegmentRoom && NextHole(out uint seq, out int len); pipe += (uint)len)
            if (!ResendHole(seq, len)) break;
    }

    /// <summary>For a go-back-N resend at SND.NXT: moves SND.NXT past a SACKed range it is in, and returns how many
    /// bytes may go before the next SACKed range (int.MaxValue when none).</summary>
    int SkipSacked()
    {
        foreach (var (s, e) in Sacked)
        {
            if (Seq.Le(e, SndNxt)) continue;
            if (Seq.Le(s, SndNxt)) { SndNxt = e; continue; }
            return (int)(s - SndNxt);
        }
        return int.MaxValue;
    }

    void SackState(StateCodec c)
    {
        c.Do(ref SackOk); c.Do(ref HighRxt); c.Do(ref LastOooSeq);
        int n = c.Count(Sacked.Count);
        if (c.Reading)
        {
            if (n > MaxSackRanges) throw new InvalidDataException("network stack state: a scoreboard beyond its bound");
            Sacked.Clear();
        }
        for (int i = 0; i < n; i++)
        {
            var (s, e) = c.Reading ? (0u, 0u) : Sacked[i];
            c.Do(ref s); c.Do(ref e);
            if (c.Reading) Sacked.Add((s, e));
        }
    }
}
