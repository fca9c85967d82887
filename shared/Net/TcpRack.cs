namespace ReVirt.Net;

/// <summary>One transmission of a range of our sequence space, as RACK (RFC 8985) needs it: when it last left,
/// whether that was a retransmission, and what is known of it since.</summary>
internal struct SentRange
{
    public uint Start, End;
    /// <summary>Clock value (ns) of the last transmission.</summary>
    public long At;
    /// <summary>The connection's count of transmissions at the last one: orders ranges sent at the same clock value
    /// (the clock is read once per stack call, so a burst shares one value; RFC 8985 breaks such ties by sequence
    /// number, which would put a resend sent after new data before it).</summary>
    public long Order;
    public bool Retransmitted, Lost, Sacked;
}

/// <summary>
/// RACK-TLP (RFC 8985) loss detection for a SACK connection (<see cref="NetConfig.Rack"/>), and D-SACK (RFC 2883).
/// <list type="bullet">
/// <item>Time-based loss detection: every range sent is kept with its send time (<see cref="Flight"/>, in sequence
/// order, one entry per segment). When an ACK delivers a range (cumulatively or by SACK), the most recently sent
/// delivered range is RACK's reference; any range still unacknowledged that was sent before it, by more than the
/// reordering window plus the RTT of the reference, is lost. This detects a lost retransmission (its new send time
/// is before the reference's) without waiting for the retransmission time-out, and replaces the duplicate-ACK count
/// (recovery starts when RACK marks a range lost). Ranges not yet overdue arm the reorder timer.</item>
/// <item>Reordering window: 0 while no reordering was seen and the connection is in recovery or has DupThresh
/// segments SACKed; else a quarter of the minimum RTT (times a multiplier that grows per round with D-SACKs received,
/// back to 1 after 16 recoveries without), never above SRTT.</item>
/// <item>Tail-loss probe: with data outstanding and no recovery, a probe timeout (2·SRTT, plus the peer's worst
/// delayed ACK when one segment is out, else a small slack for the clock's sampling) earlier than the RTO sends one
/// new segment, or the last one again: its ACK (with SACK blocks) lets RACK find a lost tail in about two round trips
/// instead of an RTO. One probe per episode; a probe that resent data and was not reported as a duplicate (D-SACK)
/// repaired a loss, and the congestion window is halved as for a recovery.</item>
/// <item>Recovery with RACK: the pipe is what was sent and is neither SACKed nor lost (a resent range counts once,
/// from its resend); the lowest lost ranges are resent while the pipe leaves a segment of room in the window.</item>
/// <item>D-SACK (receiver, <see cref="NetConfig.Dsack"/>): a segment whose data we already had (below RCV.NXT, or
/// a copy of what the out-of-order queue holds) is reported in the first SACK block of the next ACK. As a sender, a
/// first block below the cumulative ACK or inside the second block is a D-SACK: counted, it widens the reordering
/// window and shows a probe was spurious. Nothing else is trusted from it.</item>
/// <item>Bad input: ranges come only from our own transmissions; SACK blocks are checked before they reach the
/// scoreboard (<see cref="TakeSackBlocks"/>); the range list is bounded (<see cref="MaxSentRanges"/>: beyond it new
/// data extends the last range, a resend no longer splits), so a peer cannot make it grow.</item>
/// </list>
/// Every time is the stack's logged clock; every walk is in sequence order: a replay reproduces every decision.
/// </summary>
public sealed partial class TcpSocket
{
    /// <summary>Most ranges the flight keeps (a 256 KiB window is about 180 segments).</summary>
    internal const int MaxSentRanges = 2048;
    /// <summary>RFC 8985 §7.2 WCDelAckT: the peer's worst-case delayed ACK, added to the PTO when one segment is out.</summary>
    internal const long WorstCaseDelayedAckNs = 200_000_000;
    /// <summary>Slack added to 2·SRTT for a PTO over several segments: the VM reads its clock only at guest syscalls,
    /// and a peer's ACK of an odd last segment may wait a little.</summary>
    internal const long ProbeSlackNs = 10_000_000;
    /// <summary>D-SACK rounds widen the reordering window at most this many quarters of the minimum RTT (it is never
    /// above SRTT anyway).</summary>
    internal const int MaxReorderMultiplier = 64;
    /// <summary>Recoveries without a D-SACK after which the reordering window's multiplier returns to 1 (RFC 8985 §6.2).</summary>
    const int ReorderPersistRecoveries = 16;

    /// <summary>What we sent and not yet had cumulatively acknowledged, in sequence order (RACK connections only).</summary>
    internal readonly List<SentRange> Flight = [];

    // RACK state (RFC 8985 §6.1): the most recently sent delivered range, its RTT, the highest delivered sequence.
    internal long RackAt = long.MinValue, RackOrder, RackRtt, MinRtt = long.MaxValue, RackDeadline = long.MaxValue;
    internal uint RackFack;
    /// <summary>Transmissions so far (<see cref="SentRange.Order"/>).</summary>
    internal long Transmissions;
    internal bool ReorderingSeen;
    internal int ReorderMultiplier = 1, ReorderPersist;
    internal bool DsackRoundOpen; internal uint DsackRound;

    // Tail-loss probe (RFC 8985 §7).
    internal long ProbeDeadline = long.MaxValue;
    internal bool ProbeOut, ProbeResent; internal uint ProbeEnd;

    // D-SACK to report in the next ACK (receiver).
    internal bool DsackPending; internal uint DsackStart, DsackEnd;

    /// <summary>RACK-TLP is used on this connection: configured, and SACK negotiated (it works from the scoreboard).</summary>
    internal bool RackOn => SackOk && Stack.Config.Rack;

    /// <summary>Records a transmission of [seq, end) at the stack's clock: new ranges go at the end of the flight, a
    /// resend refreshes the ranges it covers (split at its edges while the list has room).</summary>
    void NoteSent(uint seq, uint end)
    {
        if (!RackOn || !Seq.Lt(seq, end)) return;
        long now = Stack.Now, order = ++Transmissions;
        uint flightEnd = Flight.Count > 0 ? Flight[^1].End : seq;
        if (Seq.Lt(seq, flightEnd))
        {
            uint to = Seq.Lt(end, flightEnd) ? end : flightEnd;
            int i = SplitAt(seq), j = SplitAt(to);
            for (int k = i; k < j; k++)
            {
                var r = Flight[k];
                if (r.Sacked) continue;
                r.At = now; r.Order = order; r.Retransmitted = true; r.Lost = false;
                Flight[k] = r;
            }
            seq = to;
        }
        if (!Seq.Lt(seq, end)) return;
        if (Flight.Count >= MaxSentRanges)
        {
            // at the bound the last range grows and takes the new send time (its older bytes look sent later:
            // their loss is found later, never too early)
            var last = Flight[^1];
            last.End = end; last.At = now; last.Order = order; last.Lost = false; last.Sacked = false;
            Flight[^1] = last;
            return;
        }
        Flight.Add(new SentRange { Start = seq, End = end, At = now, Order = order });
    }

    /// <summary>Splits the range holding <paramref name="at"/> there (while below the bound); returns the index of the
    /// first range that starts at or after it, or of the range holding it when it could not split.</summary>
    int SplitAt(uint at)
    {
        int i = 0;
        while (i < Flight.Count && Seq.Le(Flight[i].End, at)) i++;
        if (i == Flight.Count || !Seq.Lt(Flight[i].Start, at)) return i;
        if (Flight.Count >= MaxSentRanges) return i;
        var r = Flight[i];
        var tail = r; tail.Start = at;
        r.End = at;
        Flight[i] = r;
        Flight.Insert(i + 1, tail);
        return i + 1;
    }

    /// <summary>RFC 8985 §6.2 steps 2-3 for one delivered range.</summary>
    void RackDelivered(in SentRange r)
    {
        // (the first delivery sets the highest delivered sequence number: there is none before it)
        if (RackAt == long.MinValue || Seq.Gt(r.End, RackFack)) RackFack = r.End;
        else if (Seq.Lt(r.End, RackFack) && !r.Retransmitted) ReorderingSeen = true;
        long rtt = Stack.Now - r.At;
        if (!r.Retransmitted && rtt < MinRtt) MinRtt = rtt;
        // an ACK sooner than the minimum RTT after a resend is the original transmission's: no sample (no timestamps;
        // with no RTT known yet there is nothing to judge by, and the sample is taken)
        if (r.Retransmitted && MinRtt != long.MaxValue && rtt < MinRtt) return;
        if (r.At > RackAt || (r.At == RackAt && r.Order > RackOrder)) { RackAt = r.At; RackOrder = r.Order; RackRtt = rtt; }
    }

    /// <summary>Before SND.UNA moves to <paramref name="ack"/>: the ranges it delivers update RACK, then leave the flight.</summary>
    void RackCumulative(uint ack)
    {
        int k = 0;
        for (; k < Flight.Count && Seq.Le(Flight[k].End, ack); k++)
            if (!Flight[k].Sacked) RackDelivered(Flight[k]);
        Flight.RemoveRange(0, k);
        if (Flight.Count > 0 && Seq.Lt(Flight[0].Start, ack)) { var r = Flight[0]; r.Start = ack; Flight[0] = r; }
    }

    /// <summary>After the scoreboard took an ACK's blocks: the ranges now covered by the scoreboard ranges those blocks
    /// fell in are delivered (split at their edges). Only those scoreboard ranges are walked (at most four blocks
    /// per ACK), so a peer's ACK costs a bounded walk of the flight whatever the scoreboard holds.</summary>
    void RackSacked(ReadOnlySpan<byte> sack)
    {
        for (int b = 0; b + 8 <= sack.Length; b += 8)
        {
            uint bs = Wire.U32(sack, b), be = Wire.U32(sack, b + 4);
            if (!Seq.Lt(bs, be)) continue;
            foreach (var (s, e) in Sacked)
                if (Seq.Lt(s, be) && Seq.Lt(bs, e)) MarkSacked(s, e);
        }
    }

    void MarkSacked(uint s, uint e)
    {
        int i = SplitAt(s), j = SplitAt(e);
        for (int k = i; k < j; k++)
        {
            var r = Flight[k];
            if (r.Sacked || Seq.Lt(r.Start, s) || Seq.Gt(r.End, e)) continue;
            r.Sacked = true; r.Lost = false;
            Flight[k] = r;
            RackDelivered(r);
        }
    }

    /// <summary>RFC 8985 §6.2 step 4: the reordering window (ns).</summary>
    long ReorderWindow()
    {
        if (!ReorderingSeen && (InRecovery || Retries > 0 || IsLost(SndUna))) return 0;
        if (MinRtt == long.MaxValue) return 0;
        return Math.Min(ReorderMultiplier * (MinRtt / 4), HasRtt ? Srtt : long.MaxValue);
    }

    /// <summary>RFC 8985 §6.2 step 5: marks lost what was sent before the reference by more than RTT + window, arms the
    /// reorder timer for the rest; true when it marked a range lost.</summary>
    bool RackDetectLoss()
    {
        RackDeadline = long.MaxValue;
        if (RackAt == long.MinValue) return false;
        long now = Stack.Now, wait = 0, reo = ReorderWindow();
        bool any = false;
        for (int k = 0; k < Flight.Count; k++)
        {
            var r = Flight[k];
            if (r.Sacked || r.Lost) continue;
            if (!(RackAt > r.At || (RackAt == r.At && RackOrder > r.Order))) continue;
            long remaining = r.At + RackRtt + reo - now;
            if (remaining > 0) { wait = Math.Max(wait, remaining); continue; }
            r.Lost = true;
            Flight[k] = r;
            any = true;
            Stack.Counters.RackLostSegments++;
            if (r.Retransmitted) Stack.Counters.RackLostRetransmits++;
        }
        if (wait > 0) RackDeadline = now + wait;
        return any;
    }

    /// <summary>RFC 8985 §6.2 step 4's D-SACK adaptation, once per ACK.</summary>
    void RackAdaptWindow(bool dsack)
    {
        if (DsackRoundOpen && Seq.Ge(SndUna, DsackRound)) DsackRoundOpen = false;
        if (!dsack || DsackRoundOpen) return;
        DsackRoundOpen = true; DsackRound = SndMax;
        ReorderMultiplier = Math.Min(ReorderMultiplier + 1, MaxReorderMultiplier);
        ReorderPersist = ReorderPersistRecoveries;
    }

    /// <summary>A recovery ended: after 16 in a row without a D-SACK the reordering window is a quarter RTT again.</summary>
    void RackRecoveryEnded()
    {
        if (ReorderPersist > 0 && --ReorderPersist == 0) ReorderMultiplier = 1;
    }

    /// <summary>The RACK part of an ACK, after the scoreboard took its blocks; true when a range was found lost.</summary>
    bool RackOnAck(ReadOnlySpan<byte> sack, bool dsack)
    {
        RackSacked(sack);
        RackAdaptWindow(dsack);
        return RackDetectLoss();
    }

    /// <summary>Pipe with RACK: bytes sent and neither SACKed nor lost (a resent range counts once, from its resend).</summary>
    uint RackPipe()
    {
        uint pipe = 0;
        foreach (var r in Flight) if (!r.Sacked && !r.Lost) pipe += r.End - r.Start;
        return pipe;
    }

    /// <summary>The lowest range marked lost and not resent since, as much as fits in a segment.</summary>
    bool RackNextLost(out uint seq, out int len)
    {
        foreach (var r in Flight)
            if (r.Lost && !r.Sacked) { seq = r.Start; len = (int)Math.Min(r.End - r.Start, (uint)SegmentRoom); return true; }
        seq = 0; len = 0;
        return false;
    }

    /// <summary>Marks the range at SND.UNA lost (duplicate ACKs without SACK blocks); false when there is none to mark.</summary>
    bool RackMarkFirstLost()
    {
        if (Flight.Count == 0 || Flight[0].Sacked || Flight[0].Lost) return false;
        var r = Flight[0];
        r.Lost = true;
        Flight[0] = r;
        return true;
    }

    /// <summary>After a retransmission time-out: everything not SACKed is lost (RFC 8985 §6.3), and the scoreboard's
    /// marks go too when it was forgotten (the peer may have reneged).</summary>
    void RackTimeout(bool forgetSacked)
    {
        for (int k = 0; k < Flight.Count; k++)
        {
            var r = Flight[k];
            if (forgetSacked) r.Sacked = false;
            if (!r.Sacked) r.Lost = true;
            Flight[k] = r;
        }
        RackDeadline = long.MaxValue;
        ProbeDeadline = long.MaxValue;
        ProbeOut = false;
    }

    /// <summary>The reorder timer: ranges that were not yet overdue may be now.</summary>
    void ReorderTimeout()
    {
        if (!RackDetectLoss()) return;
        if (!InRecovery && SndNxt == SndMax) EnterSackRecovery();
        Output();
    }

    // ------------------------------------------------------------------ tail-loss probe

    /// <summary>RFC 8985 §7.2: arms the probe timeout when data is out, no recovery or time-out is under way, no probe
    /// is out, and it comes before the RTO.</summary>
    void ArmProbe()
    {
        ProbeDeadline = long.MaxValue;
        if (!RackOn || ProbeOut || InRecovery || Retries > 0 || SndUna == SndMax || SndNxt != SndMax) return;
        if (State is not (TcpState.Established or TcpState.CloseWait or TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck)) return;
        long pto = HasRtt ? 2 * Srtt + (SndMax - SndUna <= (uint)SndMss ? WorstCaseDelayedAckNs : ProbeSlackNs) : InitialRto;
        long at = Stack.Now + pto;
        if (at < RtxDeadline) ProbeDeadline = at;
    }

    /// <summary>RFC 8985 §7.3: one new segment if the windows allow, else the last segment again; the RTO restarts.</summary>
    void TailLossProbe()
    {
        if (!RackOn || SndUna == SndMax || InRecovery || SndNxt != SndMax) return;
        Stack.Counters.TailLossProbes++;
        uint before = SndMax;
        Output(probe: true);
        bool resent = SndMax == before;
        if (resent)
        {
            uint end = FinSent ? FinSeq : SndMax;              // the data's end: the FIN rides along when it is next
            uint from = Flight.Count > 0 ? Flight[^1].Start : SndUna;
            if (Seq.Lt(from, SndUna)) from = SndUna;
            if (end - from > (uint)SegmentRoom) from = end - (uint)SegmentRoom;
            if (!ResendHole(from, (int)(end - from))) return;
        }
        ProbeOut = true; ProbeResent = resent; ProbeEnd = SndMax;
        RtxDeadline = Stack.Now + Rto;
    }

    /// <summary>RFC 8985 §7.4 (as Linux reads it): the ACKs after a probe. A probe of new data, or a resend the peer
    /// reports as a duplicate (D-SACK), or answered by a pure duplicate ACK at its end, found no loss; an ACK beyond
    /// a resent probe's end means it repaired one: the window is halved as for a recovery. A recovery entered meanwhile
    /// ends the episode (<see cref="EnterSackRecovery"/>).</summary>
    void ProbeAcked(uint ack, bool advanced, bool sackNews, (uint Start, uint End)? dsack)
    {
        if (!ProbeOut || Seq.Lt(ack, ProbeEnd) && dsack == null) return;
        if (!ProbeResent) { if (Seq.Ge(ack, ProbeEnd)) ProbeOut = false; return; }
        if (dsack is { } d && Seq.Le(d.End, ProbeEnd) && Seq.Gt(d.End, ProbeEnd - (uint)SndMss - 1)) { ProbeOut = false; return; }
        if (Seq.Gt(ack, ProbeEnd))
        {
            ProbeOut = false;
            Stack.Counters.TailLossProbeRepairs++;
            Ssthresh = Math.Max(Cwnd / 2, 2 * (uint)SndMss);
            Cwnd = Ssthresh;
        }
        else if (ack == ProbeEnd && !advanced && !sackNews) ProbeOut = false;
    }

    // ------------------------------------------------------------------ D-SACK (receiver)

    /// <summary>Data [seq, end) arrived that we already had: it is reported in the next ACK's first block (RFC 2883).</summary>
    void NoteDuplicate(uint seq, uint end)
    {
        if (!SackOk || !Stack.Config.Dsack || !Seq.Lt(seq, end)) return;
        DsackPending = true; DsackStart = seq; DsackEnd = end;
    }

    void RackState(StateCodec c)
    {
        int n = c.Count(Flight.Count);
        if (c.Reading)
        {
            if (n > MaxSentRanges) throw new InvalidDataException("network stack state: a flight beyond its bound");
            Flight.Clear();
        }
        for (int i = 0; i < n; i++)
        {
            var r = c.Reading ? default : Flight[i];
            c.Do(ref r.Start); c.Do(ref r.End); c.Do(ref r.At); c.Do(ref r.Order); c.Do(ref r.Retransmitted); c.Do(ref r.Lost); c.Do(ref r.Sacked);
            if (c.Reading) Flight.Add(r);
        }
        c.Do(ref RackAt); c.Do(ref RackOrder); c.Do(ref RackRtt); c.Do(ref MinRtt); c.Do(ref RackDeadline); c.Do(ref RackFack); c.Do(ref Transmissions);
        c.Do(ref ReorderingSeen); c.Do(ref ReorderMultiplier); c.Do(ref ReorderPersist); c.Do(ref DsackRoundOpen); c.Do(ref DsackRound);
        c.Do(ref ProbeDeadline); c.Do(ref ProbeOut); c.Do(ref ProbeResent); c.Do(ref ProbeEnd);
        c.Do(ref DsackPending); c.Do(ref DsackStart); c.Do(ref DsackEnd);
    }
}
