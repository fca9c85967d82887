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
/// A windowed minimum (Kathleen Nichols' filter, as BBR and Linux's min RTT use it): the least of the samples taken
/// within the last <c>window</c> ns, kept as the best, second-best and third-best samples of three sub-windows so an
/// old minimum expires without storing every sample. With an endless window it is the lifetime minimum. The minimum
/// changes only when a sample arrives (a connection that sends nothing keeps its last estimate).
/// </summary>
internal struct WindowedMin
{
    public long T0, V0, T1, V1, T2, V2;

    public static WindowedMin Empty => new() { V0 = long.MaxValue, V1 = long.MaxValue, V2 = long.MaxValue };

    public readonly long Value => V0;

    public void Update(long window, long now, long sample)
    {
        if (sample <= V0 || now - T2 > window) { Reset(now, sample); return; }
        if (sample <= V1) { T1 = T2 = now; V1 = V2 = sample; }
        else if (sample <= V2) { T2 = now; V2 = sample; }
        long dt = now - T0;
        if (dt > window)
        {
            // the best expired: the second becomes the best, the third the second, this sample the third (twice when
            // the second expired too)
            T0 = T1; V0 = V1; T1 = T2; V1 = V2; T2 = now; V2 = sample;
            if (now - T0 > window) { T0 = T1; V0 = V1; T1 = T2; V1 = V2; T2 = now; V2 = sample; }
        }
        else if (T1 == T0 && dt > window / 4) { T1 = T2 = now; V1 = V2 = sample; }   // a quarter passed: a new second
        else if (T2 == T1 && dt > window / 2) { T2 = now; V2 = sample; }             // half: a new third
    }

    void Reset(long now, long sample) { T0 = T1 = T2 = now; V0 = V1 = V2 = sample; }
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
/// back to 1 after 16 recoveries without), never above SRTT. The minimum RTT is taken over a window
/// (<see cref="NetConfig.MinRttWindowNs"/>, RFC 8985 §6.2 step 2; <see cref="WindowedMin"/>): on a path whose delay
/// rose for good it follows the new delay once the window has passed, instead of keeping a quarter of a delay the path no
/// longer has (a reordering window too small for the reordering, so reordered segments are resent as lost).</item>
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
/// <item>D-SACK undo (RFC 3708's spurious-retransmission detection, <see cref="NetConfig.DsackUndo"/>): a SACK
/// recovery remembers the window it cut and each range it resent; a D-SACK that covers a resent range shows the peer
/// had that range twice. When every range the recovery resent was so reported, and the recovery is over, nothing was
/// lost: the congestion window and threshold go back to what they were before the cut (RFC 3708 §3). The episode
/// closes at the next cut, a time-out, or a window's worth of data after its last resend was acknowledged (a D-SACK
/// comes at most one round trip after the resend it reports); the ranges are bounded (<see cref="MaxUndoRanges"/>:
/// an episode that resends more is not undone). A peer that lies with D-SACKs can get back at most the window the
/// connection had before the cut.</item>
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
    /// <summary>Most resent ranges an undo episode tracks; one that resends more is not undone.</summary>
    internal const int MaxUndoRanges = 64;

    /// <summary>What we sent and not yet had cumulatively acknowledged, in sequence order (RACK connections only).</summary>
    internal readonly List<SentRange> Flight = [];

    // RACK state (RFC 8985 §6.1): the most recently sent delivered range, its RTT, the highest delivered sequence.
    internal long RackAt = long.MinValue, RackOrder, RackRtt, RackDeadline = long.MaxValue;
    /// <summary>RTT samples' windowed minimum (<see cref="MinRtt"/>).</summary>
    internal WindowedMin MinRttFilter = WindowedMin.Empty;
    /// <summary>The minimum RTT (ns; long.MaxValue before the first sample): over the last
    /// <see cref="NetConfig.MinRttWindowNs"/>, or the lifetime minimum without <see cref="NetConfig.WindowedMinRtt"/>.</summary>
    internal long MinRtt => MinRttFilter.Value;
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

    // D-SACK undo (RFC 3708): the open episode, the window before its cut, what it resent and has not seen reported.
    internal bool UndoOpen, UndoClosing; internal int UndoMatched;
    internal uint UndoCwnd, UndoSsthresh, UndoHigh, UndoClose;
    internal readonly List<(uint Start, uint End)> UndoRanges = [];

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
        if (!r.Retransmitted) NoteMinRtt(rtt);
        // an ACK sooner than the minimum RTT after a resend is the original transmission's: no sample (no timestamps;
        // with no RTT known yet there is nothing to judge by, and the sample is taken)
        if (r.Retransmitted && MinRtt != long.MaxValue && rtt < MinRtt) return;
        if (r.At > RackAt || (r.At == RackAt && r.Order > RackOrder)) { RackAt = r.At; RackOrder = r.Order; RackRtt = rtt; }
    }

    // The RFC 6298 sample one ACK gives (ns, -1: none), gathered while it delivers ranges (ProcessAck resets and
    // takes it within the one call, so it is never part of the saved state).
    long _ackRttCumulative = -1, _ackRttSacked = -1;
    bool _ackDeliveredResend;

    void ResetAckRtt() { _ackRttCumulative = _ackRttSacked = -1; _ackDeliveredResend = false; }

    /// <summary>
    /// The RTT sample for the RTO estimator (RFC 6298 §2) this ACK gives on a RACK connection, or -1: the oldest range
    /// it delivered that was sent once only (Karn's rule), cumulatively, unless the cumulative part delivered a resent
    /// range too (then its time says nothing certain); else the oldest such range it SACKed. As Linux takes its
    /// samples (without timestamps): every ACK that delivers a segment sent once gives one, so a retransmission
    /// timeout's back-off lasts only until the first such ACK after it (RFC 6298 §5.7 keeps the backed-off RTO until a
    /// new sample). With the single timed segment of RFC 6298 alone, any resend in its flight voided the measurement,
    /// and under steady loss the backed-off RTO stayed, doubling again at each later time-out.
    /// </summary>
    long TakeAckRtt()
    {
        long rtt = _ackRttCumulative >= 0 && !_ackDeliveredResend ? _ackRttCumulative : _ackRttSacked;
        ResetAckRtt();
        return rtt;
    }

    /// <summary>Before SND.UNA moves to <paramref name="ack"/>: the ranges it delivers update RACK, then leave the flight.</summary>
    void RackCumulative(uint ack)
    {
        int k = 0;
        for (; k < Flight.Count && Seq.Le(Flight[k].End, ack); k++)
            if (!Flight[k].Sacked)
            {
                RackDelivered(Flight[k]);
                if (Flight[k].Retransmitted) _ackDeliveredResend = true;
                else _ackRttCumulative = Math.Max(_ackRttCumulative, Stack.Now - Flight[k].At);
            }
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
            if (!r.Retransmitted) _ackRttSacked = Math.Max(_ackRttSacked, Stack.Now - r.At);
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

    /// <summary>
    /// During a go-back-N resend (after a retransmission time-out, RFC 8985 §6.3, or a takeover's repair): the ranges
    /// below SND.NXT that RACK found lost again (a resend the path lost too) go again at once, lowest first, while
    /// the pipe leaves a segment of room in the congestion window — as Linux's loss state resends what its scoreboard
    /// marks lost. Before, the go-back-N only moved forward and weighed the window against everything outstanding,
    /// SACKed bytes included: one lost resend left the flight full until the next time-out, which doubled the RTO
    /// again and, every range of the flight being a resend, could give no RTT sample (Karn) to bring it back. On a
    /// lossy path a large flight then took time-out after time-out, each twice as long as the one before.
    /// </summary>
    void ResendLostBehind()
    {
        for (uint pipe = RackPipe(); Cwnd > pipe && Cwnd - pipe >= (uint)SegmentRoom && RackNextLost(out uint seq, out int len) && Seq.Lt(seq, SndNxt); pipe += (uint)len)
        {
            if (Seq.Gt(seq + (uint)len, SndNxt)) len = (int)(SndNxt - seq);
            if (!ResendHole(seq, len)) break;
        }
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

    /// <summary>
    /// After a takeover's go-back-N repair (<see cref="Resynchronize"/>, <see cref="NetConfig.TakeoverProbe"/>): one
    /// tail-loss probe at 2·SRTT + <see cref="ProbeSlackNs"/> unless the repair is acknowledged first. The repair crosses
    /// the same path as any segment and may be lost; without the probe a lost repair segment waited for the
    /// retransmission time-out, 200 ms at least and with the back-off the log carries (docs/PERFORMANCE-replication.md:
    /// on a link losing 2 % of the frames a repair segment of some connection was lost in most kills). Unlike
    /// <see cref="ArmProbe"/> it adds no allowance for the peer's delayed ACK (RFC 8985's WCDelAckT, 200 ms with one
    /// segment out, which would put it at the time-out) and it is armed with a back-off under way: it comes once per
    /// connection per takeover, and a spurious one costs one duplicate segment that the peer reports as a D-SACK. A
    /// function of the connection's state and the logged clock, as the repair is, so a replay of the survivor's log
    /// probes identically. Only on RACK connections (the probe is RACK-TLP's) with everything sent (a repair the windows
    /// cut short goes on as its ACKs arrive), and only before the retransmission time-out.
    /// </summary>
    void ArmTakeoverProbe()
    {
        ProbeDeadline = long.MaxValue;
        if (!RackOn || !HasRtt || ProbeOut || InRecovery || SndUna == SndMax || SndNxt != SndMax) return;
        long at = Stack.Now + 2 * Srtt + ProbeSlackNs;
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

    /// <summary>An RTT sample for the minimum (RACK's deliveries and the RFC 6298 sampler alike).</summary>
    void NoteMinRtt(long rtt) =>
        MinRttFilter.Update(Stack.Config.WindowedMinRtt ? Stack.Config.MinRttWindowNs : long.MaxValue, Stack.Now, rtt);

    // ------------------------------------------------------------------ D-SACK undo (RFC 3708)

    /// <summary>A SACK recovery cuts the window from <paramref name="cwnd"/>/<paramref name="ssthresh"/>: a new episode.</summary>
    void UndoBegin(uint cwnd, uint ssthresh)
    {
        UndoOpen = SackOk && Stack.Config.DsackUndo;
        UndoClosing = false; UndoMatched = 0; UndoRanges.Clear();
        UndoCwnd = cwnd; UndoSsthresh = ssthresh; UndoHigh = SndMax;
    }

    /// <summary>[seq, end) was resent in the open episode.</summary>
    void UndoResent(uint seq, uint end)
    {
        if (!UndoOpen) return;
        if (UndoRanges.Count >= MaxUndoRanges) { UndoOpen = false; return; }
        UndoRanges.Add((seq, end));
        UndoHigh = SndMax; UndoClosing = false;
    }

    /// <summary>The ACK's D-SACK block (if any) ticks off the resent ranges it covers; then the episode is undone
    /// when every resend was reported and the recovery is over, or closes when no report can come any more.</summary>
    void UndoOnAck((uint Start, uint End)? dsack)
    {
        if (!UndoOpen) return;
        if (dsack is { } d)
            for (int i = UndoRanges.Count - 1; i >= 0; i--)
                if (Seq.Le(d.Start, UndoRanges[i].Start) && Seq.Ge(d.End, UndoRanges[i].End)) { UndoRanges.RemoveAt(i); UndoMatched++; }
        if (InRecovery) return;
        if (UndoRanges.Count == 0 && UndoMatched > 0)
        {
            // every retransmission of the episode reached the peer as a copy: the cut answered no loss
            Cwnd = Math.Max(Cwnd, UndoCwnd);
            Ssthresh = Math.Max(Ssthresh, UndoSsthresh);
            UndoOpen = false;
            ReorderingSeen = true;
            Stack.Counters.DsackUndos++;
            return;
        }
        // a D-SACK comes at most a round trip after its resend: once data sent after the last resend is acknowledged,
        // give it the window then outstanding, then close
        if (!UndoClosing && Seq.Gt(SndUna, UndoHigh)) { UndoClosing = true; UndoClose = SndMax; }
        else if (UndoClosing && Seq.Gt(SndUna, UndoClose)) UndoOpen = false;
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
        c.Do(ref RackAt); c.Do(ref RackOrder); c.Do(ref RackRtt); c.Do(ref RackDeadline); c.Do(ref RackFack); c.Do(ref Transmissions);
        c.Do(ref MinRttFilter.T0); c.Do(ref MinRttFilter.V0); c.Do(ref MinRttFilter.T1); c.Do(ref MinRttFilter.V1);
        c.Do(ref MinRttFilter.T2); c.Do(ref MinRttFilter.V2);
        c.Do(ref ReorderingSeen); c.Do(ref ReorderMultiplier); c.Do(ref ReorderPersist); c.Do(ref DsackRoundOpen); c.Do(ref DsackRound);
        c.Do(ref ProbeDeadline); c.Do(ref ProbeOut); c.Do(ref ProbeResent); c.Do(ref ProbeEnd);
        c.Do(ref DsackPending); c.Do(ref DsackStart); c.Do(ref DsackEnd);
        c.Do(ref UndoOpen); c.Do(ref UndoClosing); c.Do(ref UndoMatched); c.Do(ref UndoCwnd); c.Do(ref UndoSsthresh);
        c.Do(ref UndoHigh); c.Do(ref UndoClose);
        int u = c.Count(UndoRanges.Count);
        if (c.Reading)
        {
            if (u > MaxUndoRanges) throw new InvalidDataException("network stack state: undo ranges beyond their bound");
            UndoRanges.Clear();
        }
        for (int i = 0; i < u; i++)
        {
            var (us, ue) = c.Reading ? default : UndoRanges[i];
            c.Do(ref us); c.Do(ref ue);
            if (c.Reading) UndoRanges.Add((us, ue));
        }
    }
}
