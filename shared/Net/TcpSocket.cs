namespace ReVirt.Net;

/// <summary>TCP connection states (RFC 793 §3.2); <see cref="Closed"/> also covers a socket never connected.</summary>
public enum TcpState : byte
{
    Closed, Listen, SynSent, SynReceived, Established, FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait,
}

/// <summary>
/// A TCP socket: the user's calls (bind, listen, connect, accept, send, receive, shutdown, close, poll, options) and
/// the connection's control block. Calls never block; they return a byte count, 0, or a negated Linux errno.
/// The segment-arrival and timer halves of the state machine are in TcpInput.cs.
/// </summary>
public sealed partial class TcpSocket
{
    // Timing (ns). RFC 6298 initial RTO 1 s; minimum 200 ms as Linux uses (RFC 6298 §2.4 allows less than 1 s).
    internal const long InitialRto = 1_000_000_000, MinRto = 200_000_000, MaxRto = 120_000_000_000, ClockGranularity = 1_000_000;
    internal const long TimeWaitNs = 60_000_000_000, FinWait2Ns = 60_000_000_000;
    internal const int MaxRetries = 15, MaxSynRetries = 6, MaxSynAckRetries = 5;
    internal const int DefaultMss = 536, OurMss = Wire.Mtu - Wire.Ip4Header - Wire.TcpHeader;
    internal const int WindowShift = 7;    // we can advertise up to 8 MiB; buffers are smaller
    internal const int MaxOooSegments = 256;

    readonly NetStack _stack;
    internal TcpSocket(NetStack stack, long id)
    {
        _stack = stack; Id = id;
        SendBuf = new ByteRing(stack.Config.SendBuffer);
        RecvBuf = new ByteRing(stack.Config.ReceiveBuffer);
    }

    public long Id { get; }
    public TcpState State { get; internal set; }
    public uint LocalIp { get; internal set; }
    public ushort LocalPort { get; internal set; }
    public uint RemoteIp { get; internal set; }
    public ushort RemotePort { get; internal set; }

    // Options (setsockopt).
    public bool ReuseAddr { get; set; }
    public bool NoDelay { get; set; }
    public bool KeepAlive { get => _keepAlive; set { _keepAlive = value; ArmKeepAlive(); } }
    bool _keepAlive;
    public long KeepIdleNs { get; set; } = 7200L * 1_000_000_000;
    public long KeepIntervalNs { get; set; } = 75L * 1_000_000_000;
    public int KeepCount { get; set; } = 9;

    // Listener.
    internal int Backlog;
    internal readonly List<TcpSocket> SynQueue = [], AcceptQueue = [];
    internal TcpSocket? Parent;

    // User side.
    internal bool UserClosed;        // close() was called: the stack owns the connection until it ends
    internal bool Bound;
    internal bool ShutRead, ShutWrite; // shutdown(2) directions requested by the user
    internal int PendingError;         // SO_ERROR
    internal bool ConnectReported;     // a non-blocking connect's completion was reported by connect() again
    internal bool WasConnected;        // reached ESTABLISHED at some point
    internal bool ActiveOpen;          // connect() started this connection

    // Send sequence space (RFC 793 §3.2). SendBuf holds the bytes from SndUna on.
    internal uint Iss, SndUna, SndNxt, SndMax, SndWnd, SndWl1, SndWl2, MaxSndWnd;
    internal int SndMss = DefaultMss;
    internal int SndShift, RcvShift;
    internal bool FinSent;             // our FIN has a sequence number (FinSeq)
    internal uint FinSeq;
    internal readonly ByteRing SendBuf;

    // Receive sequence space.
    internal uint Irs, RcvNxt, RcvAdvEdge;
    internal bool FinReceived;
    internal readonly ByteRing RecvBuf;
    internal readonly SortedList<uint, byte[]> Ooo = new(SeqComparer.Instance); // out-of-order segments by offset from RcvNxt at arrival... keyed by seq
    internal uint OooFinSeq; internal bool OooFin;

    // RFC 6298 RTT estimation (ns) and retransmission.
    internal long Srtt, RttVar, Rto = InitialRto;
    internal bool RttTiming; internal uint RttSeq; internal long RttStart;
    internal int Retries;
    internal long RtxDeadline = long.MaxValue;

    // RFC 5681 congestion control with NewReno-style fast recovery (RFC 6582, simplified).
    internal uint Cwnd, Ssthresh = uint.MaxValue;
    internal int DupAcks;
    internal bool InRecovery; internal uint Recover;

    internal long KeepDeadline = long.MaxValue; internal int KeepProbesSent;
    internal long EndDeadline = long.MaxValue;  // TIME_WAIT expiry, or FIN_WAIT_2 timeout of an orphan
    internal bool AckPending;

    internal long Deadline => Math.Min(Math.Min(RtxDeadline, Math.Min(KeepDeadline, EndDeadline)), Math.Min(RackDeadline, ProbeDeadline));

    NetStack Stack => _stack;

    // ------------------------------------------------------------------ user calls

    public int Bind(uint ip, ushort port)
    {
        if (UserClosed) return -NetErrno.EBADF;
        if (Bound || State != TcpState.Closed) return -NetErrno.EINVAL;
        if (ip != 0 && ip != Stack.Config.Ip) return -NetErrno.EADDRNOTAVAIL;
        if (port == 0) port = Stack.PickTcpPort(ip);
        if (port == 0 || !Stack.CanBind(this, ip, port)) return -NetErrno.EADDRINUSE;
        LocalIp = ip; LocalPort = port; Bound = true;
        return 0;
    }

    public int Listen(int backlog)
    {
        if (UserClosed) return -NetErrno.EBADF;
        if (State == TcpState.Listen) { Backlog = Math.Clamp(backlog, 1, 4096); return 0; }
        if (State != TcpState.Closed || WasConnected) return -NetErrno.EINVAL;
        if (!Bound) { int e = Bind(0, 0); if (e < 0) return e; }
        if (!Stack.CanListen(this)) return -NetErrno.EADDRINUSE;
        Backlog = Math.Clamp(backlog, 1, 4096);
        State = TcpState.Listen;
        Stack.AddListener(this);
        return 0;
    }

    /// <summary>Starts an active open: -EINPROGRESS (the caller polls for POLLOUT, then reads SO_ERROR).</summary>
    public int Connect(uint ip, ushort port)
    {
        if (UserClosed) return -NetErrno.EBADF;
        switch (State)
        {
            case TcpState.SynSent: case TcpState.SynReceived: return -NetErrno.EALREADY;
            case TcpState.Listen: return -NetErrno.EISCONN;
            case TcpState.Closed when WasConnected || PendingError != 0:
                if (PendingError != 0) { int e = PendingError; PendingError = 0; return -e; }
                return -NetErrno.EISCONN;
            case TcpState.Closed: break;
            default:
                if (!ConnectReported && ActiveOpen) { ConnectReported = true; return 0; }
                return -NetErrno.EISCONN;
        }
        if (port == 0 || ip == 0 || ip == 0xFFFFFFFF) return -NetErrno.ECONNREFUSED;
        if (!Stack.Routable(ip)) return -NetErrno.ENETUNREACH;
        uint lip = Stack.Config.Ip;
        if (!Bound)
        {
            ushort p = Stack.PickTcpPort(lip, ip, port);
            if (p == 0) return -NetErrno.EADDRNOTAVAIL;
            LocalPort = p; Bound = true;
        }
        else if (Stack.FindConnection(lip, LocalPort, ip, port) != null) return -NetErrno.EADDRNOTAVAIL;
        LocalIp = lip; RemoteIp = ip; RemotePort = port;
        Iss = Stack.InitialSequence(LocalIp, LocalPort, RemoteIp, RemotePort);
        SndUna = Iss; SndNxt = Iss + 1; SndMax = SndNxt;
        RcvShift = WindowShift;
        State = TcpState.SynSent;
        ActiveOpen = true;
        Stack.AddConnection(this);
        SendSyn();
        return -NetErrno.EINPROGRESS;
    }

    /// <summary>Takes an established connection off the accept queue, or -EAGAIN.</summary>
    public int Accept(out TcpSocket? child)
    {
        child = null;
        if (UserClosed) return -NetErrno.EBADF;
        if (State != TcpState.Listen) return -NetErrno.EINVAL;
        if (AcceptQueue.Count == 0) return -NetErrno.EAGAIN;
        child = AcceptQueue[0];
        AcceptQueue.RemoveAt(0);
        child.Parent = null;
        return 0;
    }

    /// <summary>Queues bytes for sending; returns how many were taken, -EAGAIN when the buffer is full.</summary>
    public int Send(ReadOnlySpan<byte> data)
    {
        if (UserClosed) return -NetErrno.EBADF;
        if (PendingError != 0) { int e = PendingError; PendingError = 0; return -e; }
        switch (State)
        {
            case TcpState.SynSent: case TcpState.SynReceived: return -NetErrno.EAGAIN;
            case TcpState.Established: case TcpState.CloseWait: break;
            case TcpState.Closed when !WasConnected: case TcpState.Listen: return -NetErrno.ENOTCONN;
            default: return -NetErrno.EPIPE;
        }
        if (ShutWrite) return -NetErrno.EPIPE;
        if (data.Length == 0) return 0;
        int n = SendBuf.Write(data);
        if (n == 0) return -NetErrno.EAGAIN;
        Output();
        return n;
    }

    /// <summary>Reads in-order bytes: a count, 0 at end of stream, -EAGAIN when none yet, or the pending error.</summary>
    public int Receive(Span<byte> dest, bool peek = false)
    {
        if (UserClosed) return -NetErrno.EBADF;
        if (State == TcpState.Listen) return -NetErrno.ENOTCONN;
        if (RecvBuf.Count > 0 && !ShutRead)
        {
            if (dest.Length == 0) return 0;
            int n = peek ? RecvBuf.Peek(0, dest) : RecvBuf.Read(dest);
            if (!peek) MaybeWindowUpdate();
            return n;
        }
        if (PendingError != 0) { int e = PendingError; PendingError = 0; return -e; }
        if (FinReceived || ShutRead) return 0;
        if (State == TcpState.Closed) return WasConnected ? 0 : -NetErrno.ENOTCONN;
        return -NetErrno.EAGAIN;
    }

    public int Shutdown(ShutdownHow how)
    {
        if (UserClosed) return -NetErrno.EBADF;
        if (State is TcpState.Closed or TcpState.SynSent or TcpState.Listen) return -NetErrno.ENOTCONN;
        if (how != ShutdownHow.Write) ShutRead = true;
        if (how != ShutdownHow.Read && !ShutWrite)
        {
            ShutWrite = true;
            QueueFin();
        }
        return 0;
    }

    /// <summary>
    /// close(2): a listener resets its queued children; a connection with unread data is reset (RFC 2525 §2.17, as
    /// Linux does); otherwise the FIN is queued behind the data and the stack finishes the connection on its own.
    /// </summary>
    public void Close()
    {
        if (UserClosed) return;
        UserClosed = true;
        switch (State)
        {
            case TcpState.Listen:
                foreach (var c in SynQueue.Concat(AcceptQueue).ToArray()) c.Abort(sendReset: true, 0);
                SynQueue.Clear(); AcceptQueue.Clear();
                Stack.RemoveListener(this);
                Finish();
                return;
            case TcpState.Closed: case TcpState.SynSent:
                Finish();
                return;
            case TcpState.TimeWait:
                return;
        }
        if (RecvBuf.Count > 0 || Ooo.Count > 0) { Abort(sendReset: true, 0); return; }
        if (!ShutWrite) { ShutWrite = true; QueueFin(); }
        if (State == TcpState.FinWait2) EndDeadline = Stack.Now + FinWait2Ns;
    }

    /// <summary>poll(2) readiness as Linux's tcp_poll computes it.</summary>
    public int Poll()
    {
        int ev = 0;
        if (State == TcpState.Listen) return AcceptQueue.Count > 0 ? PollEvents.In | PollEvents.RdNorm : 0;
        if (PendingError != 0) ev |= PollEvents.Err;
        bool closed = State == TcpState.Closed;
        if (closed || (ShutWrite && (FinReceived || ShutRead))) ev |= PollEvents.Hup;
        if (FinReceived || ShutRead) ev |= PollEvents.In | PollEvents.RdNorm | PollEvents.RdHup;
        if (State is TcpState.SynSent or TcpState.SynReceived) return ev;
        if (RecvBuf.Count > 0) ev |= PollEvents.In | PollEvents.RdNorm;
        if (closed || ((State is TcpState.Established or TcpState.CloseWait) && !ShutWrite && SendBuf.Free > 0)
            || ShutWrite)
            ev |= PollEvents.Out | PollEvents.WrNorm;
        return ev;
    }

    /// <summary>getsockopt(SO_ERROR): the pending error, cleared.</summary>
    public int TakeError() { int e = PendingError; PendingError = 0; return e; }

    /// <summary>Bytes readable now (FIONREAD).</summary>
    public int Available => RecvBuf.Count;

    // ------------------------------------------------------------------ internals shared with input and timers

    void QueueFin()
    {
        switch (State)
        {
            case TcpState.Established: case TcpState.SynReceived: State = TcpState.FinWait1; break;
            case TcpState.CloseWait: State = TcpState.LastAck; break;
            default: return;
        }
        Output();
    }

    /// <summary>Window we can advertise now: free receive buffer, never shrinking the right edge already advertised (RFC 793 §3.7).</summary>
    internal uint ReceiveWindow()
    {
        int oooBytes = 0;
        foreach (var s in Ooo.Values) oooBytes += s.Length;
        uint free = (uint)Math.Max(0, RecvBuf.Free - oooBytes);
        uint edge = RcvNxt + free;
        if (Seq.Lt(edge, RcvAdvEdge)) edge = RcvAdvEdge;
        return edge - RcvNxt;
    }

    void MaybeWindowUpdate()
    {
        if (State is not (TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2)) return;
        // Receiver SWS avoidance (RFC 1122 §4.2.3.3): announce only when the window grew by a segment or half the buffer.
        uint advertised = RcvAdvEdge - RcvNxt;
        uint now = (uint)Math.Max(0, RecvBuf.Free);
        if (now >= advertised + Math.Min((uint)RecvBuf.Capacity / 2, (uint)OurMss)) SendAck();
    }

    internal void SendSyn()
    {
        bool synAck = State == TcpState.SynReceived;
        Span<byte> opts = stackalloc byte[12];
        int olen = 4;
        opts[0] = TcpOptions.Mss; opts[1] = 4; Wire.U16(opts, 2, (ushort)OurMss);
        if (RcvShift > 0) { opts[olen] = TcpOptions.Nop; opts[olen + 1] = TcpOptions.WindowScale; opts[olen + 2] = 3; opts[olen + 3] = (byte)RcvShift; olen += 4; }
        // SACK-permitted (RFC 2018 §2): offered on our SYN when configured, on a SYN-ACK only if the peer's SYN had it.
        if (synAck ? SackOk : Stack.Config.Sack)
        { opts[olen] = TcpOptions.Nop; opts[olen + 1] = TcpOptions.Nop; opts[olen + 2] = TcpOptions.SackPermitted; opts[olen + 3] = 2; olen += 4; }
        // The window in a SYN is never scaled (RFC 7323 §2.2).
        uint wnd = Math.Min(ReceiveWindow(), 0xFFFF);
        RcvAdvEdge = RcvNxt + wnd;
        Stack.SendTcp(this, Iss, synAck ? RcvNxt : 0, TcpFlags.Syn | (synAck ? TcpFlags.Ack : 0), (ushort)wnd, opts[..olen], []);
        if (RtxDeadline == long.MaxValue) RtxDeadline = Stack.Now + Rto;
    }

    internal void SendAck() => SendSegment(SndNxt, TcpFlags.Ack, []);

    /// <summary>Sends one segment carrying our current ACK and window.</summary>
    internal void SendSegment(uint seq, TcpFlags flags, ReadOnlySpan<byte> data)
    {
        uint wnd = ReceiveWindow();
        uint scaled = Math.Min(wnd >> RcvShift, 0xFFFF);
        RcvAdvEdge = RcvNxt + (scaled << RcvShift);
        AckPending = false;
        Span<byte> opts = stackalloc byte[TcpOptions.SackOptionBytes];
        int olen = (flags & TcpFlags.Rst) == 0 ? WriteSackOption(opts) : 0;
        Stack.SendTcp(this, seq, RcvNxt, flags, (ushort)scaled, opts[..olen], data);
        if ((flags & TcpFlags.Rst) == 0) NoteSent(seq, seq + (uint)data.Length + ((flags & TcpFlags.Fin) != 0 ? 1u : 0));
    }

    /// <summary>
    /// Sends whatever the windows, Nagle (RFC 896, off with TCP_NODELAY) and sender SWS avoidance allow, then the FIN
    /// when all data is out; a pending ACK goes out alone if nothing carried it. A tail-loss probe
    /// (<paramref name="probe"/>) sends at most one segment of new data, whatever the congestion window and Nagle say
    /// (RFC 8985 §7.3).
    /// </summary>
    internal void Output(bool probe = false)
    {
        if (State is TcpState.Established or TcpState.CloseWait or TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck)
        {
            Span<byte> seg = stackalloc byte[OurMss];
            bool finWanted = ShutWrite;
            bool sackRecovery = InRecovery && SackOk;
            if (sackRecovery && !probe) SendHoles();
            // a go-back-N resend (after a time-out or a takeover's repair) on a RACK connection: what RACK finds lost
            // behind it goes again first (TcpRack.cs)
            if (Stack.Config.LossRepair && RackOn && !InRecovery && Seq.Lt(SndNxt, SndMax) && !probe) ResendLostBehind();
            uint sentBefore = SndMax;
            int mss = SegmentRoom;
            while (true)
            {
                if (FinSent && Seq.Gt(SndNxt, FinSeq)) break;
                // a go-back-N resend skips what the peer SACKed and stops short of the next SACKed range
                int beforeSacked = SackOk && Seq.Lt(SndNxt, SndMax) ? SkipSacked() : int.MaxValue;
                int off = (int)(SndNxt - SndUna);
                int avail = SendBuf.Count - off;
                uint outstanding = SndNxt - SndUna;
                // in SACK recovery the congestion window is weighed against the pipe (RFC 6675), else against the flight
                uint flight = sackRecovery ? (RackOn ? RackPipe() : Pipe()) : outstanding;
                // limited transmit (RFC 3042) on a SACK connection: the first two duplicates each let one new segment
                // go, so a small window still gets DupThresh duplicates (or SACKed segments) instead of a time-out
                uint cwnd = probe ? flight + (uint)mss : Cwnd + (SackOk && !InRecovery && DupAcks is 1 or 2 ? (uint)(DupAcks * SndMss) : 0);
                int usable = (int)Math.Min(Math.Min(SndWnd > outstanding ? SndWnd - outstanding : 0, cwnd > flight ? cwnd - flight : 0), int.MaxValue);
                int len = Math.Min(Math.Min(Math.Min(avail, mss), usable), beforeSacked);
                bool fin = finWanted && len == avail;
                if (len == 0 && !(fin && avail == 0)) break;
                if (len < mss && len < avail && len < beforeSacked && outstanding > 0) break;   // window-limited runt: wait (SWS)
                // Nagle holds back new data only: bytes sent before go again as they are (a retransmission from SND.UNA)
                if (!NoDelay && !probe && len > 0 && len < mss && outstanding > 0 && !fin && SndNxt == SndMax) break;
                int n = SendBuf.Peek(off, seg[..len]);
                var flags = TcpFlags.Ack | (n > 0 && n == avail ? TcpFlags.Psh : 0) | (fin ? TcpFlags.Fin : 0);
                if (!RttTiming && n + (fin ? 1 : 0) > 0 && SndNxt == SndMax) { RttTiming = true; RttSeq = SndNxt; RttStart = Stack.Now; }
                bool resend = Seq.Lt(SndNxt, SndMax);
                if (resend) Stack.Counters.RetransmittedBytes += Math.Min(n, (int)(SndMax - SndNxt));
                SendSegment(SndNxt, flags, seg[..n]);
                SndNxt += (uint)n;
                // what a go-back-N resend sent again is not resent once more by a SACK recovery that follows it
                if (resend && Seq.Gt(SndNxt, HighRxt)) HighRxt = Seq.Lt(SndNxt, SndMax) ? SndNxt : SndMax;
                if (fin) { FinSent = true; FinSeq = SndNxt; SndNxt++; }
                if (Seq.Gt(SndNxt, SndMax)) SndMax = SndNxt;
                if (RtxDeadline == long.MaxValue) RtxDeadline = Stack.Now + Rto;
                if (fin || probe) break;
            }
            // new data went out: the probe timeout is measured from the last transmission (RFC 8985 §7.2)
            if (!probe && SndMax != sentBefore) ArmProbe();
            // Zero window with data waiting and nothing in flight: the retransmission timer doubles as the persist timer.
            if (SndNxt == SndUna && SendBuf.Count > 0 && RtxDeadline == long.MaxValue) RtxDeadline = Stack.Now + Rto;
        }
        if (AckPending) SendAck();
    }

    /// <summary>Ends the connection with an error (reset received, timeout), optionally sending a RST first.</summary>
    internal void Abort(bool sendReset, int error)
    {
        if (sendReset && State is not (TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.TimeWait))
        {
            Stack.SendTcp(this, SndNxt, 0, TcpFlags.Rst, 0, [], []);
            Stack.Counters.ResetsSent++;
        }
        PendingError = error;
        EnterClosed();
    }

    internal void EnterClosed()
    {
        bool wasListen = State == TcpState.Listen;
        State = TcpState.Closed;
        RtxDeadline = KeepDeadline = EndDeadline = RackDeadline = ProbeDeadline = long.MaxValue;
        Ooo.Clear();
        Sacked.Clear();
        Flight.Clear();
        if (!wasListen) Stack.RemoveConnection(this);
        if (Parent != null)
        {
            Parent.SynQueue.Remove(this);
            Parent.AcceptQueue.Remove(this);
            Parent = null;
            Finish();
        }
        else if (UserClosed) Finish();
    }

    /// <summary>Frees the socket once neither the user nor the protocol needs it.</summary>
    void Finish()
    {
        SendBuf.Discard(SendBuf.Count);
        RecvBuf.Discard(RecvBuf.Count);
        Stack.ReleaseTcp(this);
    }

    internal void ArmKeepAlive()
    {
        KeepProbesSent = 0;
        KeepDeadline = _keepAlive && State is TcpState.Established or TcpState.CloseWait ? Stack.Now + KeepIdleNs : long.MaxValue;
    }

    /// <summary>Saves or restores the socket (queue and parent links as ids; <see cref="NetStack"/> resolves them).</summary>
    internal void Serialize(StateCodec c)
    {
        byte st = (byte)State; c.Do(ref st); State = (TcpState)st;
        c.Prop(LocalIp, v => LocalIp = v); c.Prop(LocalPort, v => LocalPort = v);
        c.Prop(RemoteIp, v => RemoteIp = v); c.Prop(RemotePort, v => RemotePort = v);
        c.Prop(ReuseAddr, v => ReuseAddr = v); c.Prop(NoDelay, v => NoDelay = v); c.Do(ref _keepAlive);
        c.Prop(KeepIdleNs, v => KeepIdleNs = v); c.Prop(KeepIntervalNs, v => KeepIntervalNs = v); c.Prop(KeepCount, v => KeepCount = v);
        c.Do(ref Backlog);
        long parent = Parent?.Id ?? 0; c.Do(ref parent); ParentId = parent;
        SynIds = Ids(c, SynQueue); AcceptIds = Ids(c, AcceptQueue);
        c.Do(ref UserClosed); c.Do(ref Bound); c.Do(ref ShutRead); c.Do(ref ShutWrite); c.Do(ref PendingError);
        c.Do(ref ConnectReported); c.Do(ref WasConnected); c.Do(ref ActiveOpen);
        c.Do(ref Iss); c.Do(ref SndUna); c.Do(ref SndNxt); c.Do(ref SndMax); c.Do(ref SndWnd); c.Do(ref SndWl1); c.Do(ref SndWl2);
        c.Do(ref MaxSndWnd); c.Do(ref SndMss); c.Do(ref SndShift); c.Do(ref RcvShift); c.Do(ref FinSent); c.Do(ref FinSeq);
        c.Do(ref Irs); c.Do(ref RcvNxt); c.Do(ref RcvAdvEdge); c.Do(ref FinReceived); c.Do(ref OooFin); c.Do(ref OooFinSeq);
        c.Do(ref Srtt); c.Do(ref RttVar); c.Do(ref Rto); c.Do(ref HasRtt); c.Do(ref RttTiming); c.Do(ref RttSeq); c.Do(ref RttStart);
        c.Do(ref Retries); c.Do(ref RtxDeadline); c.Do(ref Cwnd); c.Do(ref Ssthresh); c.Do(ref DupAcks); c.Do(ref InRecovery);
        c.Do(ref Recover); c.Do(ref KeepDeadline); c.Do(ref KeepProbesSent); c.Do(ref EndDeadline); c.Do(ref AckPending);
        Ring(c, SendBuf); Ring(c, RecvBuf);
        int n = c.Count(Ooo.Count);
        var ooo = Ooo.ToList();
        if (c.Reading) Ooo.Clear();
        for (int i = 0; i < n; i++)
        {
            uint seq = c.Reading ? 0 : ooo[i].Key;
            byte[] data = c.Reading ? [] : ooo[i].Value;
            c.Do(ref seq); c.Do(ref data);
            if (c.Reading) Ooo[seq] = data;
        }
        SackState(c);
        RackState(c);
    }

    // Links read from a snapshot, resolved once every socket exists.
    internal long ParentId;
    internal long[] SynIds = [], AcceptIds = [];

    static long[] Ids(StateCodec c, List<TcpSocket> queue)
    {
        int n = c.Count(queue.Count);
        var ids = new long[n];
        for (int i = 0; i < n; i++) { ids[i] = c.Reading ? 0 : queue[i].Id; c.Do(ref ids[i]); }
        return ids;
    }

    static void Ring(StateCodec c, ByteRing ring)
    {
        var bytes = c.Reading ? [] : ring.ToArray();
        c.Do(ref bytes);
        if (!c.Reading) return;
        if (bytes.Length > ring.Capacity) throw new InvalidDataException("network stack state: a buffer beyond its capacity");
        ring.Discard(ring.Count);
        ring.Write(bytes);
    }
}

/// <summary>Orders sequence numbers modulo 2^32 relative to each other (valid within one window).</summary>
sealed class SeqComparer : IComparer<uint>
{
    public static readonly SeqComparer Instance = new();
    public int Compare(uint a, uint b) => a == b ? 0 : Seq.Lt(a, b) ? -1 : 1;
}

[Flags]
public enum TcpFlags : byte { Fin = 1, Syn = 2, Rst = 4, Psh = 8, Ack = 16, Urg = 32 }
