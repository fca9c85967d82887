using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Polly;
using Polly.Retry;
using Polly.Timeout;
using ReVirt.Arbiter;
using ReVirt.Log;
using ReVirt.Protocol;
using ReVirt.Snapshot;

namespace ReVirt.Replication;

/// <summary>Settings of `primary protect`.</summary>
public sealed class ProtectSettings
{
    public required string BackupUrl { get; init; }
    public byte[] Secret { get; init; } = [];
    public string? ArbiterPath { get; init; }
    public int HeartbeatMs { get; init; } = 100;
    /// <summary>
    /// A native pulse thread writes a <c>Pulse</c> on a plain data link every heartbeat interval, besides the managed
    /// heartbeats (<see cref="LinkPulse"/>): garbage collections and a loaded machine's scheduling do not stop it, so
    /// the backup's silence bound measures the process and its link, not the runtime's pauses. Off
    /// (<c>--no-pulse</c>): only the managed heartbeats (for comparisons).
    /// </summary>
    public bool Pulse { get; init; } = true;
    public int TimeoutMs { get; init; } = 2000;
    /// <summary>The guest is slowed down (blocked at its next log record) while this many records are unacknowledged.</summary>
    public long MaxLagRecords { get; init; } = 50_000;
    public long MaxLagBytes { get; init; } = 16 << 20;
    /// <summary>
    /// The guest is slowed down (blocked at its next log record) while the backup's replay trails the log by more
    /// than this (the age of the oldest record the backup acknowledged holding but not yet replaying), until it is
    /// within half of it: what a takeover must replay before going live stays this short. 0: no bound.
    /// </summary>
    public int MaxReplayLagMs { get; init; } = 20;
    /// <summary>Longest time (µs) a record holding output waits on the guest thread before it is shipped
    /// (<see cref="Replay.RecordingBoundary.ShipAfterMicroseconds"/>).</summary>
    public int ShipAfterMicroseconds { get; init; } = Replay.RecordingBoundary.DefaultShipAfterMicroseconds;
    /// <summary>Where the backup's data link is reached (HOST:PORT) when not at the host of <see cref="BackupUrl"/>
    /// and the port its Welcome names (a relay between the replicas). Only for <see cref="BackupUrl"/>.</summary>
    public string? BackupDataAddress { get; init; }
    /// <summary>The data link's transport (<c>--data-link</c>): the backup's same-host Unix socket when it offers one
    /// and it is reachable from here (<see cref="DataLinkKind.Auto"/>, not through a <see cref="BackupDataAddress"/>
    /// relay), or only that, or TCP only.</summary>
    public DataLinkKind DataLink { get; init; } = DataLinkKind.Auto;
    public int ConnectAttempts { get; init; } = 20;
    public string Id { get; init; } = $"primary:{Environment.MachineName}:{Environment.ProcessId}";
    public byte[] RootDigest { get; init; } = [];
    /// <summary>Which directory of this machine the guest root is (the backup refuses a root it would share by accident).</summary>
    public RootIdentity? Root { get; init; }
    public uint ProtocolVersion { get; init; } = ReplicationProtocol.Version;
    /// <summary>Where this replica reports what happens (<c>--events</c>).</summary>
    public ReplicaEvents Events { get; init; } = ReplicaEvents.None;
    /// <summary>Mutual TLS (<c>--cert --key --ca</c>); null: cleartext with the token proof.</summary>
    public ReplicationTls? Tls { get; init; }
    /// <summary>
    /// Drills only (<c>--plant</c>, hidden): a violation the drill's checkers must report. "gate-early" releases
    /// output without waiting for the backup's acknowledgement; "files-early" (shared storage) releases the guest's
    /// file writes without it (the rest of the output is held); "ignore-arbiter" goes on unprotected even after
    /// losing the arbiter; "stale-term" asks the arbiter once more from its old term after it was not granted it;
    /// "join-withholds-log" (tests) sends a joining standby its snapshot and join point but never
    /// the log after the snapshot.
    /// </summary>
    public PrimaryPlant Plant { get; init; }
    /// <summary>Drills and tests only (<c>--plant snapshot-omits-page|snapshot-corrupt-chunk|snapshot-truncated</c>,
    /// hidden): every snapshot sent leaves a page out, has a byte of a chunk flipped in transfer, or is cut off.</summary>
    public SnapshotPlant PlantSnapshot { get; init; }
    /// <summary>
    /// Standby endpoints (<c>--standby URL</c>, repeatable): whenever this replica runs without a backup (it lost
    /// one and won the arbiter, or it took over), it asks them in turn until one accepts, sends it the whole log
    /// from record 1 and is protected again. Empty: it stays unprotected.
    /// </summary>
    public IReadOnlyList<string> Standbys { get; init; } = [];
    /// <summary>How long to wait between two rounds over the standbys while none accepts.</summary>
    public int StandbyRetryMs { get; init; } = 500;
    /// <summary>
    /// A fixed bound on a whole join (<c>--join-timeout-ms</c>): a standby that does not hold the log up to its join
    /// point this long after its join began is dropped, however well its transfer progresses: the live replica reports
    /// <see cref="ReplicaEvent.JoinTimedOut"/>, goes on unprotected (its output released under the arbiter, as for any
    /// lost standby) and asks the next standby. 0 (the default since the progress bound): no fixed bound, a join is
    /// bounded by its progress only (<see cref="JoinProgressMs"/>), so a large snapshot or a long log on a slow link
    /// is never cut off while it moves.
    /// </summary>
    public int JoinTimeoutMs { get; init; } = DefaultJoinTimeoutMs;
    public const int DefaultJoinTimeoutMs = 0;
    /// <summary>The help of <c>--join-timeout-ms</c> (primary protect, backup listen).</summary>
    public const string JoinTimeoutHelp = "A fixed bound on a whole join: a standby that joins must hold the log up to its join point (its snapshot or backlog acknowledged, then the records up to the join point) within this many milliseconds of its join's start, however well its transfer progresses; one that does not is dropped: `join-timed-out` is reported, the guest runs on unprotected with its output flowing, and the next standby is asked. 0 (default): no fixed bound; --join-progress-ms bounds a join that stops progressing.";
    /// <summary>
    /// The progress bound of a join (<c>--join-progress-ms</c>): a joining standby is dropped when its join has made no
    /// progress for this long: no chunk of its snapshot accepted by the link, no growth in the snapshot bytes it reports
    /// restored (<c>Ack.snapshot_bytes</c>), and no advance in the records it acknowledges (its snapshot's, the log
    /// backlog's, the records up to the join point). The live replica reports <see cref="ReplicaEvent.JoinStalled"/>,
    /// goes on unprotected and asks the next standby, as for <see cref="JoinTimeoutMs"/>. A standby that keeps
    /// receiving and acknowledging is never dropped, however long its join takes. 0: no progress bound.
    /// </summary>
    public int JoinProgressMs { get; init; } = DefaultJoinProgressMs;
    public const int DefaultJoinProgressMs = 10_000;
    /// <summary>The help of <c>--join-progress-ms</c> (primary protect, backup listen).</summary>
    public const string JoinProgressHelp = "A joining standby whose join makes no progress for this many milliseconds is dropped: no chunk of its snapshot taken by the link, no more snapshot bytes reported restored, no further record acknowledged (its snapshot's or backlog's, then those up to its join point). `join-stalled` is reported, the guest runs on unprotected with its output flowing, and the next standby is asked. A standby that keeps receiving and acknowledging is never dropped, however long its join takes. 0: no progress bound.";
    /// <summary>Where this replica keeps its whole log for standbys that join later (null: a temporary file).</summary>
    public string? LogPath { get; init; }
    /// <summary>
    /// Start an exit watch beside this process for each backup's data link (<see cref="ExitWatch"/>): the backup then
    /// learns of this process's death as it begins, not after the kernel's teardown. Needs the replica's own program
    /// (the verb <see cref="ExitWatch.Verb"/>), so off for replicas hosted in other programs (tests).
    /// </summary>
    public bool ExitWatch { get; init; }
    /// <summary>How this replica names itself on stderr.</summary>
    public string Role { get; init; } = "primary";
    /// <summary>Stops the process with the exit status (a replica that lost the arbiter must not go on).</summary>
    public required Action<int> Stop { get; init; }
}

/// <summary>Violations a drill can plant in a primary (<c>primary protect --plant</c>).</summary>
/// <remarks>JoinWithholdsLog (tests only): a standby joining by snapshot receives the snapshot and its join point but
/// never the log after the snapshot, so it cannot hold the join point; a kill of the live replica then must find it
/// standing down.
/// StaleTerm (drills): a replica the arbiter did not grant its term (refused, or could not be asked) asks once more from
/// that old term before it stops, as a stale replica restarted from its old state would try to go live; the arbiter
/// refuses again, and the drill must report the attempt.</remarks>
public enum PrimaryPlant { None, GateEarly, IgnoreArbiter, JoinWithholdsLog, StaleTerm, FilesEarly }

/// <summary>The names of the violations a live replica can carry (<c>primary protect --plant</c>, and
/// <c>backup listen --plant</c> for once it has taken over), one list for both commands.</summary>
public static class LivePlants
{
    public static readonly string[] Names = ["gate-early", "files-early", "ignore-arbiter", "stale-term", "snapshot-omits-page", "snapshot-corrupt-chunk", "snapshot-truncated", "join-withholds-log"];

    /// <summary>The plant named <paramref name="name"/> (a name not in <see cref="Names"/>, or null: none).</summary>
    public static (PrimaryPlant Primary, SnapshotPlant Snapshot) Parse(string? name) => name switch
    {
        "gate-early" => (PrimaryPlant.GateEarly, SnapshotPlant.None),
        "files-early" => (PrimaryPlant.FilesEarly, SnapshotPlant.None),
        "ignore-arbiter" => (PrimaryPlant.IgnoreArbiter, SnapshotPlant.None),
        "join-withholds-log" => (PrimaryPlant.JoinWithholdsLog, SnapshotPlant.None),
        "stale-term" => (PrimaryPlant.StaleTerm, SnapshotPlant.None),
        "snapshot-omits-page" => (PrimaryPlant.None, SnapshotPlant.OmitPage),
        "snapshot-corrupt-chunk" => (PrimaryPlant.None, SnapshotPlant.CorruptChunk),
        "snapshot-truncated" => (PrimaryPlant.None, SnapshotPlant.TruncateChunk),
        _ => (PrimaryPlant.None, SnapshotPlant.None),
    };
}

enum LinkState { Connecting, Protected, Unprotected, Fenced }

/// <summary>
/// The live replica's end of replication: an <see cref="ILogSink"/> that the recording <see cref="LogWriter"/>
/// appends to. Every record goes to this replica's <see cref="LogStore"/> (its whole log, kept for standbys that
/// join later) and, while a backup follows, to that backup: a sender task streams record frames in batches
/// (coalescing whatever accumulated while the previous batch was in flight) with heartbeats when idle, a receiver
/// task applies the backup's acks to the <see cref="OutputGate"/>, and a watchdog declares the backup lost when it
/// has been silent for the timeout. Losing the backup means asking the arbiter from this replica's term: won → a
/// new term, the gate opens and the guest goes on unprotected while the standbys (if any) are asked to join;
/// lost → another replica is live, so this one stops without releasing anything more.
/// A standby that joins receives a snapshot of the running machine, or the stored log from record 1 (catch-up), and
/// then the live records. Output keeps flowing unheld while it joins (a standby that holds nothing protects nothing);
/// once it acknowledges the snapshot (or the backlog) the gate holds output again from the next record on, and the
/// standby is told the last record whose output went unheld (the join point): it may go live only once it holds the
/// log up to there (docs/ARCHITECTURE.md, "Re-protection without a silence").
/// </summary>
public sealed class ReplicationClient : ILogSink
{
    readonly ProtectSettings _s;
    readonly TextWriter _log;
    readonly LogStore _store;
    readonly ConcurrentQueue<(ulong Seq, long Cum, long Ticks)> _inflight = new();
    // records the backup has not reported replayed, and where it reported its replay last
    readonly ReplayTrail _trail = new();
    readonly LatencyHistogram _lags = new(), _replayTrails = new(), _roundTrips = new();
    // live batches sent and not acknowledged yet: the last record of each and when it went to the link
    readonly ConcurrentQueue<(ulong Last, long Ticks)> _sentAt = new();
    readonly object _flow = new();
    readonly object _decide = new();
    readonly CancellationTokenSource _stop = new();
    volatile string? _tlsRefusal;
    byte[] _header = [];
    Session? _cur;
    IArbiter _arbiter = null!;
    long _term;
    volatile LinkState _state = LinkState.Connecting;
    // _acked: what the current backup acknowledged; _base: records the log held when it joined (released already)
    long _produced, _producedBytes, _acked, _ackedBytes, _base, _baseBytes, _lastHeard, _throttleTicks, _replayThrottleTicks;
    // _replayNear: the current backup's replay has been within the bound since it caught up
    long _bytesSent, _batches, _replayStalls, _handedOff;
    volatile bool _replayNear;
    volatile bool _deciding, _finishing;
    Task? _reprotect;
    // frames for a link that went direct, in log order (added under the append lock), sent by whichever thread offers
    // them while no other thread is sending: the guest thread ships its records itself but never waits for another
    // thread's send, nor sends while holding the append lock
    readonly OrderedSender<(Session Session, byte[] Buffer, int Length, bool Pooled)> _direct;
    // the batch path, batch by batch (--stats): this replica's encode and write of each batch; on a same-host link the
    // batch's way to the backup's link thread, the backup's time from holding a batch to writing its ack, and the ack's
    // way back to this replica's ack thread (each message carries its writer's clock: LinkWire.MonotonicNs)
    readonly LatencyHistogram _sends = new(), _batchTransits = new(), _backupHolds = new(), _ackTransits = new();
    Thread? _flusher;
    volatile bool _flusherStop, _hasPending;

    /// <summary>
    /// One backup following this replica: the handshake's gRPC call (kept open, idle), the data link that carries
    /// the log and the acks, and the threads that serve it. Frames go to the link from the thread that produced
    /// them (<see cref="Direct"/>) once the sender thread has sent the catch-up backlog and what queued behind it.
    /// </summary>
    sealed class Session
    {
        public required string Url;
        public required GrpcChannel Channel;
        public required AsyncDuplexStreamingCall<PrimaryMessage, BackupMessage> Call;
        public required CancellationTokenSource Cts;
        public required DataLink Link;
        public string BackupId = "";
        /// <summary>Frames produced before the link is <see cref="Direct"/>: the sender thread sends them in order.</summary>
        public readonly BlockingCollection<byte[]> Queue = new();
        /// <summary>Set under the append lock: frames go to <see cref="_direct"/> and their producers send them.</summary>
        public volatile bool Direct;
        /// <summary>A joining standby's catch-up reads the log from the store (set at the join, cleared under the append
        /// lock for its last stretch): frames produced meanwhile are not queued in memory, however long the transfer
        /// and however busy the guest (which is not slowed while the standby joins).</summary>
        public volatile bool FromStore;
        /// <summary>The sender thread stops (the goodbye follows).</summary>
        public volatile bool StopSending;
        public readonly ManualResetEventSlim Wake = new();
        /// <summary>Why a producer's send failed (the receiver reports it when the broken link ends its read).</summary>
        public volatile string? SendError;
        public long CatchUpFrom, CatchUpTo;
        /// <summary>A standby joining a live replica: the log's end it was told in the hello (0: not a join).</summary>
        public ulong JoinSequence;
        /// <summary>A joining standby: output is released unheld (as when unprotected) until its acknowledgement of this
        /// record (its snapshot's, or the last of the log backlog it joined with) arrives.</summary>
        public ulong SwitchAt;
        /// <summary>Output is released unheld for this joining standby (until <see cref="SwitchAt"/> is acknowledged).</summary>
        public volatile bool Unheld;
        /// <summary>The last record whose output was released unheld (0: not yet known): the standby was told it and
        /// stands down unless it holds the log up to there.</summary>
        public ulong JoinPoint;
        /// <summary>The standby may go live if this replica is lost: an ordinary backup from the start, a joining standby
        /// from the moment (just before) it is told its <see cref="JoinPoint"/>. Until then, or when it refused
        /// (<see cref="Refused"/>: it never started following), losing it cannot make it live.</summary>
        public volatile bool MayGoLive;
        /// <summary>The standby sent a Refused on the link: it stopped before following and keeps nothing.</summary>
        public volatile bool Refused;
        /// <summary>The standby takes a snapshot (Welcome.snapshot) instead of the log from record 1.</summary>
        public bool WantsSnapshot;
        /// <summary>The standby has a root of its own: the snapshot carries the files the guest changed (Welcome.snapshot_files).</summary>
        public bool WantsSnapshotFiles;
        /// <summary>A snapshot join: the machine's capture (encoded and sent chunk by chunk by the sender, off the guest
        /// thread), its last record, and the store offset of the snapshot (the log sent after it starts there). Disposed
        /// once sent or when the session is dropped (the guest stops preserving pages for it).</summary>
        public SnapshotCapture? Snapshot;
        public ulong SnapshotSequence;
        public long SnapshotOffset;
        public Task? Sender, Receiver;
        public Timer? Watchdog;
        public int Lost;
        public long JoinedAt;
        /// <summary>A joining standby acknowledged the log up to its join point (<see cref="ReplicaEvent.StandbyHolds"/>):
        /// its join is complete and no longer bounded by <see cref="ProtectSettings.JoinTimeoutMs"/> or
        /// <see cref="ProtectSettings.JoinProgressMs"/>.</summary>
        public volatile bool HoldsJoinPoint;
        /// <summary>A joining standby: when its join last progressed (<see cref="JoinProgressed"/>; Stopwatch ticks),
        /// and the snapshot bytes it last reported restored.</summary>
        public long ProgressAt;
        public ulong SnapshotBytesRestored;
        /// <summary>What progressed last (for the <see cref="ReplicaEvent.JoinStalled"/> report).</summary>
        public volatile string ProgressWhat = "the join's start";
        /// <summary>The join moved: a snapshot chunk went to the link, the standby reported more snapshot bytes
        /// restored, or it acknowledged further records. Resets <see cref="ProtectSettings.JoinProgressMs"/>.</summary>
        public void JoinProgressed(string what)
        {
            Interlocked.Exchange(ref ProgressAt, Stopwatch.GetTimestamp());
            ProgressWhat = what;
        }
        /// <summary>How often the sender heartbeats an idle link: --heartbeat-ms, or shorter when the backup's silence
        /// bound (Welcome.primary_silence_ms) asks for it.</summary>
        public int HeartbeatMs = 100;
        /// <summary>How long the link may go unheard before an ack no longer proves the backup still follows: half
        /// the backup's silence bound (it may declare this replica lost once it heard nothing for that bound), at
        /// most the timeout. See <see cref="StaleLink"/>.</summary>
        public int StaleMs = int.MaxValue;
    }

    /// <summary>
    /// After this replica heard nothing from its backup for longer than the session's <see cref="Session.StaleMs"/>
    /// (it was stopped, or not scheduled), acks already queued on the link prove nothing: the backup may have
    /// declared it lost meanwhile, won the arbiter and gone live, and output they would release would leave after
    /// the takeover. From such a gap, no output is released (<see cref="OutputGate.Fresh"/>) until the backup
    /// answers something sent after the gap was seen: a heartbeat sent since (its echo) or a record produced since
    /// (its ack). A backup that went live answers neither, and the watchdog ends the session at the timeout.
    /// </summary>
    internal sealed class StaleLink
    {
        long _sinceUnixMs, _produced;
        /// <summary>False while a proof of the backup's life is owed.</summary>
        public bool Proven => Volatile.Read(ref _sinceUnixMs) == 0;
        /// <summary>A gap was seen on the ack thread: records up to <paramref name="produced"/> and heartbeats sent
        /// before now no longer count (a second gap before the proof keeps the first one's marks).</summary>
        public void GapSeen(long produced)
        {
            if (!Proven) return;
            Volatile.Write(ref _produced, produced);
            Volatile.Write(ref _sinceUnixMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        }
        /// <summary>Messages the ack thread read together (newest echo, highest held sequence): true if they prove the
        /// backup still follows.</summary>
        public bool ProvenBy(long echoUnixMs, ulong held)
        {
            long since = Volatile.Read(ref _sinceUnixMs);
            if (since == 0) return true;
            if (echoUnixMs < since && (long)held <= Volatile.Read(ref _produced)) return false;
            Volatile.Write(ref _sinceUnixMs, 0);
            return true;
        }
    }
    readonly StaleLink _stale = new();

    public OutputGate Gate { get; } = OutputGate.ToHostStdio();

    /// <summary>The running machine, for snapshots a standby that shares the guest's files can join from (null: every
    /// standby receives the log from record 1).</summary>
    public ISnapshotSource? Snapshots { get; set; }

    public ulong Acked => (ulong)Interlocked.Read(ref _acked);
    public long BytesSent => Interlocked.Read(ref _bytesSent);
    public long Batches => Interlocked.Read(ref _batches);
    /// <summary>Batches of live records (not a joining standby's backlog) that the sender thread sent for the threads
    /// that produced them, before the link went direct: each cost a hand-off between threads. A backup that follows
    /// from the start sees none or the few produced while its sender thread started.</summary>
    public long HandedOffBatches => Interlocked.Read(ref _handedOff);
    /// <summary>Batches the ack thread shipped as an acknowledgement left the link idle while output waited unshipped
    /// (<see cref="ShipWindow.Acknowledged"/>).</summary>
    public long BatchesShippedAtAck => Gate.Shipping.ShippedAtAcknowledgements;
    public TimeSpan Throttled => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _throttleTicks));
    /// <summary>How long the guest waited for the backup's replay (<see cref="ProtectSettings.MaxReplayLagMs"/>).</summary>
    public TimeSpan ThrottledForReplay => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _replayThrottleTicks));
    /// <summary>The replay position the backup last reported.</summary>
    public ulong Replayed => _trail.Replayed;
    /// <summary>How often the bound on replay lag was suspended because the backup's replay reported no progress
    /// for the timeout (<see cref="ReplicaEvent.ReplayStalled"/>).</summary>
    public long ReplayStalls => Interlocked.Read(ref _replayStalls);
    public string BackupId => _cur?.BackupId ?? "";
    /// <summary>The transport of the current backup's data link ("unix" or "tcp"; "" without a backup).</summary>
    public string DataLinkName => _cur?.Link is { } l ? l.Kind.Name() : "";
    /// <summary>The arbiter term this replica works in.</summary>
    public long Term => Interlocked.Read(ref _term);
    public LogStore Store => _store;

    /// <summary>The backup's lag: for each ack, how long ago the oldest record it covered was produced.</summary>
    public LatencyHistogram Lags => _lags;

    /// <summary>The link's round trip: for each ack that covered a batch sent from here, how long ago the newest such
    /// batch went to the link (ms). Unlike <see cref="LagMs"/> it leaves out how long its records waited on this replica
    /// to be shipped (gathering behind a batch on its way, until the guest's round ended or it was about to wait).</summary>
    public LatencyHistogram RoundTrips => _roundTrips;

    /// <summary>Acks the ack thread read, and its passes (each applies the acks one read of the link brought as one).</summary>
    public (long Acks, long Passes) AckReads => (Interlocked.Read(ref _acksRead), Interlocked.Read(ref _ackPasses));
    long _ackPasses, _acksRead;

    /// <summary>
    /// Where a batch's time went, batch by batch (<c>--stats</c>): this replica's encode and write of it (Send); on a
    /// same-host link also its way to the backup's link thread (ToBackup: the write, the socket and the backup thread's
    /// wake-up), the backup's time from holding a batch to writing the ack that covers it (BackupHold), and the ack's way
    /// back to this replica's ack thread (ToAckThread). The rest of a reply's wait: <see cref="ShipWindow.WaitsMs"/>
    /// before the send, <see cref="OutputGate.AckReleaseTimes"/> after the ack.
    /// </summary>
    public (LatencyHistogram Send, LatencyHistogram ToBackup, LatencyHistogram BackupHold, LatencyHistogram ToAckThread) BatchPath()
        => (_sends, _batchTransits, _backupHolds, _ackTransits);

    /// <summary>How far the backup's replay trailed at each ack that reported its position: the age of the oldest
    /// record it had not replayed yet (0: it had replayed everything produced). Only with a replay-lag bound.</summary>
    public LatencyHistogram ReplayTrails => _replayTrails;
    /// <summary>A backup follows and output is held for it (not while a standby joins: its output flows unheld).</summary>
    public bool IsProtected => _state == LinkState.Protected && _cur is not { Unheld: true };

    /// <param name="store">The replica's whole log; empty for a new recording (the writer's header goes there
    /// first), or the log a backup received before it took over.</param>
    public ReplicationClient(ProtectSettings settings, TextWriter log, LogStore store)
    {
        _s = settings;
        _log = log;
        _store = store;
        _direct = new(d =>
        {
            Ship(d.Session, d.Buffer, d.Length);
            if (d.Pooled) ArrayPool<byte>.Shared.Return(d.Buffer);
        });
        // records holding output that wait behind a batch go as its acknowledgement reaches the gate (the ack thread)
        Gate.Shipping.Link = Flush;
        // found by the chaos drill (freeze): a primary stopped in the middle of releasing acknowledged output must
        // not go on releasing it when it wakes after the timeout — the backup may be live; the watchdog decides
        Gate.Fresh = () => _state != LinkState.Protected
            || (_stale.Proven && Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard)).TotalMilliseconds <= Math.Min(_s.TimeoutMs, _cur?.StaleMs ?? int.MaxValue));
    }

    // ------------------------------------------------------------------ handshake

    /// <summary>A new recording: connects to the backup (with retries), says hello, proves the secret and waits for Welcome.</summary>
    /// <exception cref="ReplicationRefusedException">The backup refused, or could not be reached.</exception>
    public async Task ConnectAsync(byte[] encodedHeader)
    {
        _header = encodedHeader;
        _arbiter = Arbiters.Create(_s.ArbiterPath, encodedHeader);
        // the first handshake of a process includes loading and compiling the gRPC stack (and the backup's check of
        // the root, which hashes it): 10 s per attempt was too short on a loaded 2-core machine
        var session = await HandshakeAsync(_s.BackupUrl, Math.Max(1, _s.ConnectAttempts), TimeSpan.FromMilliseconds(Math.Max(30_000, _s.TimeoutMs * 3)), _stop.Token);
        ReplicationMetrics.Observe(() => Interlocked.Read(ref _produced) - Interlocked.Read(ref _acked), () => Gate.AllHeldBytes, () => Interlocked.Read(ref _acked));
        Activate(session, catchUp: false);
        if (_s.Plant == PrimaryPlant.GateEarly) PlantGateEarly();
        StartFlusher();
    }

    /// <summary>The backup shares the guest's storage: the gate holds the guest's file writes (planted
    /// <see cref="PrimaryPlant.FilesEarly"/>: releases each at once).</summary>
    void HoldFileWrites()
    {
        bool early = _s.Plant == PrimaryPlant.FilesEarly;
        if (early && Gate.Files == null)
        {
            _log.WriteLine($"{_s.Role}: TESTING: held file writes are released without acknowledgements");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", "files-early"));
        }
        Gate.HoldFileWrites(_log, early, (change, e) => _s.Events.Emit(ReplicaEvent.FileReleaseFailed, ("change", change.What), ("record", change.Seq), ("errno", -e)));
    }

    /// <summary>Planted (<see cref="PrimaryPlant.GateEarly"/>): the gate releases without acknowledgements.</summary>
    void PlantGateEarly()
    {
        _log.WriteLine($"{_s.Role}: TESTING: the output gate releases without acknowledgements");
        _s.Events.Emit(ReplicaEvent.Planted, ("violation", "gate-early"));
        Gate.GoUnprotected();
    }

    /// <summary>
    /// A replica that took over and goes on recording into <see cref="Store"/> (which holds the log it received):
    /// it won <paramref name="arbiter"/> in term <paramref name="term"/>, runs unprotected and asks the standbys.
    /// </summary>
    public void StartLive(byte[] encodedHeader, IArbiter arbiter, long term)
    {
        _header = encodedHeader;
        _arbiter = arbiter;
        _term = term;
        _produced = (long)_store.LastSequence;
        _producedBytes = _store.Length;
        _state = LinkState.Unprotected;
        ReplicationMetrics.Observe(() => Interlocked.Read(ref _produced) - Interlocked.Read(ref _acked), () => Gate.AllHeldBytes, () => Interlocked.Read(ref _acked));
        Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected);
        // the flusher is started from the pool, not here: this runs on a survivor's go-live path, and Thread.Start waits
        // until the new thread runs, which on a loaded machine is a wait for a time slice (the go-live with a standby
        // took 6-56 ms in StartLive at load 40-100); it only flushes records older than FlushAgeMs, so a few ms late is
        // nothing
        ThreadPool.UnsafeQueueUserWorkItem(_ => StartFlusher(), null);
        StartReprotecting();
    }

    GrpcChannel NewChannel(string url) => GrpcChannel.ForAddress(url, new GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromMilliseconds(Math.Max(500, _s.TimeoutMs)),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(5),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
            EnableMultipleHttp2Connections = true,
            SslOptions = _s.Tls is { } tls ? new System.Net.Security.SslClientAuthenticationOptions
            {
                ClientCertificates = [tls.Identity],
                RemoteCertificateValidationCallback = (_, cert, _, errors) => (_tlsRefusal = tls.VerifyServer(cert, errors)) == null,
            } : new System.Net.Security.SslClientAuthenticationOptions(),
        },
        MaxReceiveMessageSize = ReplicationProtocol.MaxBackupMessageBytes,
        MaxSendMessageSize = ReplicationProtocol.MaxMessageBytes,
    });

    /// <summary>Hello, challenge, proof, welcome with the backup or standby at <paramref name="url"/>.</summary>
    async Task<Session> HandshakeAsync(string url, int attempts, TimeSpan perAttempt, CancellationToken token, ulong liveSequence = 0, bool offerSnapshot = false)
    {
        var hello = new Hello
        {
            ProtocolVersion = _s.ProtocolVersion,
            LogHeader = ByteString.CopyFrom(_header),
            RootDigest = ByteString.CopyFrom(_s.RootDigest),
            ClientNonce = ByteString.CopyFrom(ReplicationProtocol.Nonce()),
            PrimaryId = _s.Id,
            Root = _s.Root,
            Term = (ulong)Term,
            LiveSequence = liveSequence,
            SnapshotOffered = offerSnapshot,
        };
        _tlsRefusal = null;
        var channel = NewChannel(url);
        var client = new Protocol.Replication.ReplicationClient(channel);
        // the call outlives the handshake's token (the re-protection loop's): only the session cancels it
        var cts = new CancellationTokenSource();

        // Polly: retry while the backup is not there yet (connection refused → Unavailable), each attempt bounded
        // by a timeout; a refusal is final.
        var pipeline = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                // a cancelled call is the attempt timeout cancelling it (not ours: the token is checked), so it is retried too
                ShouldHandle = new PredicateBuilder().Handle<RpcException>(e => _tlsRefusal == null && e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
                        || (e.StatusCode == StatusCode.Cancelled && !cts.IsCancellationRequested))
                    .Handle<TimeoutRejectedException>()
                    // the data link could not be opened (the gRPC stream ends with the attempt, so the backup is free again)
                    .Handle<IOException>(),
                MaxRetryAttempts = Math.Max(0, attempts - 1),
                Delay = TimeSpan.FromMilliseconds(100),
                BackoffType = DelayBackoffType.Exponential,
                MaxDelay = TimeSpan.FromSeconds(1),
                UseJitter = true,
            })
            // the first handshake of a process includes loading and compiling the gRPC stack: be generous per attempt
            .AddTimeout(perAttempt)
            .Build();

        AsyncDuplexStreamingCall<PrimaryMessage, BackupMessage>? call = null;
        DataLink? link = null;
        string backupId = "";
        bool wantsSnapshot = false, wantsFiles = false;
        uint silenceMs = 0;
        try
        {
            await pipeline.ExecuteAsync(async ct =>
            {
                call?.Dispose();
                link?.Close();
                link = null;
                call = client.Stream(cancellationToken: cts.Token);
                await call.RequestStream.WriteAsync(new PrimaryMessage { Hello = hello }, ct);
                var challenge = await Next(call, ct);
                if (challenge.BodyCase == BackupMessage.BodyOneofCase.Refused) throw new ReplicationRefusedException(challenge.Refused.Reason);
                if (challenge.BodyCase != BackupMessage.BodyOneofCase.Challenge) throw new ReplicationRefusedException($"protocol error: expected a challenge, got {challenge.BodyCase}");
                var proof = ReplicationProtocol.Proof(_s.Secret, hello, challenge.Challenge.ServerNonce.ToByteArray());
                await call.RequestStream.WriteAsync(new PrimaryMessage { Auth = new Auth { Proof = ByteString.CopyFrom(proof) } }, ct);
                var welcome = await Next(call, ct);
                if (welcome.BodyCase == BackupMessage.BodyOneofCase.Refused) throw new ReplicationRefusedException(welcome.Refused.Reason);
                if (welcome.BodyCase != BackupMessage.BodyOneofCase.Welcome) throw new ReplicationRefusedException($"protocol error: expected welcome, got {welcome.BodyCase}");
                backupId = welcome.Welcome.BackupId;
                wantsSnapshot = offerSnapshot && welcome.Welcome.Snapshot;
                wantsFiles = wantsSnapshot && welcome.Welcome.SnapshotFiles;
                // both replicas see one directory: the guest's file writes are outputs from here on
                if (welcome.Welcome.SharedStorage) HoldFileWrites();
                silenceMs = welcome.Welcome.PrimarySilenceMs;
                // the log and the acks travel on the backup's data link: the host dialled (or the relay the
                // operator named) and the port the welcome names, opened with the welcome's one-time ticket
                var uri = new Uri(url);
                string host = uri.Host;
                int port = (int)welcome.Welcome.DataPort;
                bool relayed = url == _s.BackupUrl && _s.BackupDataAddress != null;
                if (relayed)
                {
                    string relay = _s.BackupDataAddress!;
                    int colon = relay.LastIndexOf(':');
                    host = relay[..colon];
                    port = int.Parse(relay[(colon + 1)..]);
                }
                link = OpenLink(welcome.Welcome, relayed, uri.Host, host, port, perAttempt);
            }, token);
        }
        catch (Exception e) when (e is RpcException or TimeoutRejectedException or ReplicationRefusedException or OperationCanceledException or IOException)
        {
            cts.Cancel();
            call?.Dispose();
            link?.Close();
            channel.Dispose();
            if (e is ReplicationRefusedException) throw;
            if (e is IOException io) throw new ReplicationRefusedException($"cannot open the data link to the backup at {url}: {io.Message}");
            if (_tlsRefusal != null) throw new ReplicationRefusedException($"mutual TLS: {_tlsRefusal}");
            if (e is RpcException r) throw new ReplicationRefusedException($"cannot reach the backup at {url}: {r.Status.Detail}");
            if (e is OperationCanceledException) throw new ReplicationRefusedException("stopped while connecting");
            throw new ReplicationRefusedException($"the backup at {url} did not answer the handshake in time");
        }
        var opened = link!;
        opened.SendTimeoutMs = ReplicationProtocol.SendBoundMs(_s.TimeoutMs);
        cts.Token.Register(opened.Close);
        return new Session { Url = url, Channel = channel, Call = call!, Cts = cts, Link = opened, BackupId = backupId, WantsSnapshot = wantsSnapshot, WantsSnapshotFiles = wantsFiles,
            HeartbeatMs = ReplicationProtocol.HeartbeatInterval(_s.HeartbeatMs, silenceMs),
            StaleMs = silenceMs > 0 ? Math.Min(_s.TimeoutMs, (int)(silenceMs / 2)) : _s.TimeoutMs };
    }

    /// <summary>
    /// Opens the welcomed backup's data link on the transport <see cref="ProtectSettings.DataLink"/> asks for: the
    /// same-host socket the Welcome names when there is one, no relay stands between and it answers here; TCP to
    /// <paramref name="host"/>:<paramref name="port"/> otherwise (the ticket is unused when the socket is unreachable).
    /// </summary>
    /// <exception cref="ReplicationRefusedException">The transport asked for is not possible with this backup.</exception>
    DataLink OpenLink(Welcome w, bool relayed, string urlHost, string host, int port, TimeSpan timeout)
    {
        byte[] ticket = w.DataTicket.ToByteArray();
        bool unixOnly = _s.DataLink == DataLinkKind.Unix || w.DataUnixOnly;
        if (_s.DataLink == DataLinkKind.Tcp && w.DataUnixOnly)
            throw new ReplicationRefusedException("the backup takes its data link only on its same-host Unix socket (its --data-link unix) and this primary uses TCP only (--data-link tcp)");
        if (_s.DataLink != DataLinkKind.Tcp && w.DataSocket.Length > 0 && !relayed)
        {
            try { return DataLink.ConnectLocal(w.DataSocket, urlHost, _s.Tls, _s.Secret, ticket, timeout); }
            catch (LocalLinkUnreachableException e) when (!unixOnly) { _log.WriteLine($"{_s.Role}: {e.Message}; the data link goes over TCP"); }
            catch (LocalLinkUnreachableException e) { throw new ReplicationRefusedException($"--data-link unix: {e.Message}"); }
        }
        else if (unixOnly)
            throw new ReplicationRefusedException(relayed ? "--data-link unix: the data link is to go through the relay --backup-data names, which is TCP"
                : w.DataUnixOnly ? "protocol error: the backup takes only a same-host data link and names none"
                : "--data-link unix: the backup offers no same-host data link (an older build, or its --data-link tcp)");
        return DataLink.Connect(host, port, _s.Tls, _s.Secret, ticket, timeout);
    }

    static async Task<BackupMessage> Next(AsyncDuplexStreamingCall<PrimaryMessage, BackupMessage> call, CancellationToken ct)
    {
        if (!await call.ResponseStream.MoveNext(ct)) throw new ReplicationRefusedException("the backup closed the stream during the handshake");
        return call.ResponseStream.Current;
    }

    /// <summary>
    /// The welcomed backup becomes this replica's backup. With <paramref name="catchUp"/> (a standby joining a
    /// running guest) it first receives the stored log up to this moment; the switch happens under the lock the
    /// guest thread appends under, so every record goes either into that backlog or into the live stream, once.
    /// </summary>
    void Activate(Session session, bool catchUp)
    {
        lock (_pending)
        {
            _store.Append(_pending.GetBuffer().AsSpan(0, (int)_pending.Length));
            _pending.SetLength(0);
            _store.Flush();
            session.CatchUpFrom = session.Snapshot != null ? session.SnapshotOffset : catchUp ? _store.HeaderLength : _store.Length;
            session.CatchUpTo = _store.Length;
            session.JoinedAt = Stopwatch.GetTimestamp();
            session.ProgressAt = session.JoinedAt;
            if (catchUp)
            {
                // a joining standby: output stays unheld (the gate stays open, under the arbiter) until it acknowledges
                // its snapshot or the backlog up to here; nor is the guest slowed for it (no lag or replay bound)
                session.SwitchAt = session.Snapshot != null ? session.SnapshotSequence : (ulong)Interlocked.Read(ref _produced);
                session.Unheld = true;
                session.FromStore = true;
                _base = _baseBytes = long.MaxValue;
            }
            else
            {
                session.MayGoLive = true;
                _base = Interlocked.Read(ref _produced);
                _baseBytes = _producedBytes;
            }
            Interlocked.Exchange(ref _acked, 0);
            Interlocked.Exchange(ref _ackedBytes, 0);
            _trail.Reset(Stopwatch.GetTimestamp());
            _replayNear = false;
            while (_inflight.TryDequeue(out _)) { }
            while (_sentAt.TryDequeue(out _)) { }
            _cur = session;
            Touch();
            _state = LinkState.Protected;
        }
        session.Sender = OnThread("replication-send", () => SendLoop(session));
        session.Receiver = OnThread("replication-acks", () => ReceiveLoop(session));
        session.Watchdog = new Timer(_ => Watch(session), null, _s.HeartbeatMs, _s.HeartbeatMs);
        if (_s.ExitWatch) WatchExit(session);
    }

    /// <summary>A process beside this one that ends the session's link as this process starts to exit (ExitWatch);
    /// it ends with the session.</summary>
    void WatchExit(Session session)
    {
        var watcher = ReVirt.Replication.ExitWatch.Start(session.Link,
            watching: pid => _s.Events.Emit(ReplicaEvent.ExitWatched, ("backup", session.BackupId), ("watcherPid", pid)),
            failed: Unwatched, out var why);
        if (watcher == null) Unwatched(why ?? "?");
        else session.Cts.Token.Register(watcher.Dispose);

        void Unwatched(string why)
        {
            _log.WriteLine($"{_s.Role}: no exit watch ({why}): the backup learns of this process's death when the kernel closes its sockets");
            _s.Events.Emit(ReplicaEvent.ExitUnwatched, ("backup", session.BackupId), ("reason", why));
        }
    }

    void Touch() => Interlocked.Exchange(ref _lastHeard, Stopwatch.GetTimestamp());

    // ------------------------------------------------------------------ re-protection

    /// <summary>The standby re-protection asks next (in turn, over every attempt).</summary>
    int _standbyTurn;

    void StartReprotecting()
    {
        if (_s.Standbys.Count == 0 || _finishing || _stop.IsCancellationRequested) return;
        _reprotect = Task.Run(ReprotectLoop);
    }

    /// <summary>Asks the standbys in turn until one joins (or the guest ends, or this replica is fenced).</summary>
    async Task ReprotectLoop()
    {
        var ct = _stop.Token;
        var lastReason = new Dictionary<string, string>();
        long since = Stopwatch.GetTimestamp();
        try
        {
            // each attempt starts after the standby asked last, so one that refuses every join (a snapshot it cannot
            // restore) never keeps the others from being asked
            for (int i = _standbyTurn; !ct.IsCancellationRequested && _state == LinkState.Unprotected; i++)
            {
                _standbyTurn = i + 1;
                string url = _s.Standbys[i % _s.Standbys.Count];
                // output keeps flowing unheld while the standby joins: it holds nothing yet, so holding output for it
                // would protect nothing. It is told the log's end S now, and later the join point (EndUnheld); it must
                // not go live before it holds the log up to the join point (the world may have seen its output).
                ulong joinAt = LogEnd();
                try
                {
                    var session = await HandshakeAsync(url, 2, TimeSpan.FromMilliseconds(Math.Max(5_000, _s.TimeoutMs * 3)), ct, joinAt, offerSnapshot: Snapshots != null);
                    if (_state != LinkState.Unprotected || _finishing) { Drop(session); ResumeUnprotected(); return; }
                    session.JoinSequence = joinAt;
                    if (session.WantsSnapshot)
                    {
                        var (capture, offset, why) = await TakeSnapshotAsync(session.WantsSnapshotFiles, ct);
                        if (capture != null)
                        {
                            session.Snapshot = capture;
                            session.SnapshotSequence = capture.Sequence;
                            session.SnapshotOffset = offset;
                        }
                        else
                        {
                            _log.WriteLine($"{_s.Role}: no snapshot for {url}: {why}; sending the log instead");
                            _s.Events.Emit(ReplicaEvent.SnapshotUnsupported, ("url", url), ("reason", why));
                        }
                    }
                    if (session.Snapshot == null && _store.StartsAfter > 0)
                    {
                        Drop(session);
                        throw new ReplicationRefusedException($"this replica's log starts after record #{_store.StartsAfter} (it joined from a snapshot), so it can only send a snapshot, and {(session.WantsSnapshot ? "none can be taken now" : "the standby asked for the log (--no-snapshot)")}");
                    }
                    if (_state != LinkState.Unprotected || _finishing) { Drop(session); ResumeUnprotected(); return; }
                    Activate(session, catchUp: true);
                    double waitedMs = Stopwatch.GetElapsedTime(since).TotalMilliseconds;
                    string what = session.Snapshot != null ? $"a snapshot at record #{session.SnapshotSequence}, then {session.CatchUpTo - session.CatchUpFrom} bytes of log" : $"the log so far: {session.SwitchAt} records, {session.CatchUpTo - session.CatchUpFrom} bytes";
                    _log.WriteLine($"{_s.Role}: protected again by {session.BackupId} at {url} (term {Term}); sending it {what}");
                    ReplicationMetrics.Reprotections.Add(1);
                    _s.Events.Emit(ReplicaEvent.Reprotected, ("backup", session.BackupId), ("url", url), ("term", Term),
                        ("backlogRecords", session.Snapshot != null ? 0 : (long)session.SwitchAt), ("backlogBytes", session.CatchUpTo - session.CatchUpFrom), ("unprotectedMs", waitedMs),
                        ("mode", session.Snapshot != null ? "snapshot" : "log"), ("snapshotSequence", session.Snapshot != null ? session.SnapshotSequence : null), ("dataLink", session.Link.Kind.Name()));
                    return;
                }
                catch (Exception e) when (!ct.IsCancellationRequested)
                {
                    ResumeUnprotected();
                    string reason = e is ReplicationRefusedException ? e.Message : $"{e.GetType().Name}: {e.Message}";
                    if (!lastReason.TryGetValue(url, out var prev) || prev != reason)
                    {
                        lastReason[url] = reason;
                        _log.WriteLine($"{_s.Role}: standby {url} did not join: {reason}");
                        _s.Events.Emit(ReplicaEvent.StandbyRefused, ("url", url), ("reason", reason));
                    }
                }
                if ((i + 1) % _s.Standbys.Count == 0) await Task.Delay(_s.StandbyRetryMs, ct);
            }
        }
        catch (OperationCanceledException) { }
        finally { if (_state == LinkState.Unprotected) ResumeUnprotected(); }
    }

    /// <summary>Flushes the log to the store; returns the last record (what a joining standby is told in its hello).</summary>
    ulong LogEnd()
    {
        lock (_pending)
        {
            PushPending();
            return (ulong)Interlocked.Read(ref _produced);
        }
    }

    /// <summary>
    /// The joining standby acknowledged its snapshot (or the log backlog): from the next record on, output is held
    /// for it again. The last record whose output went unheld is the join point J (fixed under the append lock, with
    /// the gate's switch, so every record is either at most J and released unheld or after J and held); the standby
    /// is told J and may go live only once it holds the log up to there. <see cref="Session.MayGoLive"/> is set
    /// before it is told, so from then on losing it means asking the arbiter. Ack thread.
    /// </summary>
    void EndUnheld(Session session)
    {
        if (_s.Plant == PrimaryPlant.JoinWithholdsLog) AwaitRecordAfter(session.SwitchAt);
        ulong at;
        lock (_pending)
        {
            if (!session.Unheld || session != _cur || _state != LinkState.Protected) return;
            at = (ulong)Interlocked.Read(ref _produced);
            Gate.Reprotect(at);
            // planted (gate-early) in a replica that took over: output would wait for the new standby from here; it
            // does not, as the planted first primary's gate never waits
            if (_s.Plant == PrimaryPlant.GateEarly) PlantGateEarly();
            Interlocked.Exchange(ref _baseBytes, _producedBytes);
            Interlocked.Exchange(ref _base, (long)at);
            session.JoinPoint = at;
            session.MayGoLive = true;
            session.Unheld = false;
        }
        double unheldMs = Stopwatch.GetElapsedTime(session.JoinedAt).TotalMilliseconds;
        // a send that fails is the link's loss, which the receiver reports
        session.Link.TrySend(new PrimaryMessage { JoinPoint = new JoinPoint { Sequence = at } });
        _log.WriteLine($"{_s.Role}: {session.BackupId} acknowledged record #{session.SwitchAt}; output released unheld for {unheldMs:F0} ms while it joined, held from record #{at + 1} on; it may go live once it holds record #{at}");
        _s.Events.Emit(ReplicaEvent.JoinPoint, ("backup", session.BackupId), ("sequence", at), ("unheldMs", unheldMs));
    }

    /// <summary>Planted (<see cref="PrimaryPlant.JoinWithholdsLog"/>): the guest logged a record after
    /// <paramref name="sequence"/>, so the join point lies beyond what the standby holds (bounded wait).</summary>
    void AwaitRecordAfter(ulong sequence)
    {
        long t0 = Stopwatch.GetTimestamp();
        while ((ulong)Interlocked.Read(ref _produced) <= sequence && Stopwatch.GetElapsedTime(t0).TotalSeconds < 10) Thread.Sleep(1);
    }

    static void Drop(Session session) { session.Cts.Cancel(); session.Call.Dispose(); session.Channel.Dispose(); session.Snapshot?.Dispose(); }

    /// <summary>Longest wait for the guest thread to reach an instruction boundary for a snapshot.</summary>
    static readonly TimeSpan SnapshotWait = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Captures the machine on the guest thread at its next stop (copy-on-write: the guest waits for the fork of its
    /// address spaces, not for the copy) and notes where the store ends (every record up to the snapshot's is in
    /// it). A machine holding state a snapshot cannot carry, or a guest that ended, gives the reason instead.
    /// </summary>
    async Task<(SnapshotCapture? Capture, long StoreOffset, string? Why)> TakeSnapshotAsync(bool withFiles, CancellationToken ct)
    {
        var src = Snapshots!;
        var done = new TaskCompletionSource<(SnapshotCapture?, long, string?)>(TaskCreationOptions.RunContinuationsAsynchronously);
        src.RunAtNextStop(k =>
        {
            try
            {
                if (MachineSnapshot.Uncapturable(k, withFiles) is { } why) { done.TrySetResult((null, 0, why)); return; }
                var cap = MachineSnapshot.Capture(k, src.Point, _header, withFiles);
                long off;
                lock (_pending) { PushPending(); _store.Flush(); off = _store.Length; }
                if (!done.TrySetResult((cap, off, null))) { cap.Dispose(); return; }
                _s.Events.Emit(ReplicaEvent.SnapshotTaken, ("sequence", cap.Sequence), ("pauseMs", cap.Pause.TotalMilliseconds), ("pauseCpuMs", cap.PauseCpu.TotalMilliseconds), ("pages", cap.Pages),
                    ("files", cap.FileEntries), ("fileBytes", cap.FileBytes), ("filesDigest", cap.FilesDigest));
            }
            catch (Exception e) when (e is InvalidOperationException or IOException) { done.TrySetResult((null, 0, e.Message)); }
        });
        var got = await Task.WhenAny(done.Task, Task.Delay(SnapshotWait, ct));
        if (got == done.Task) return done.Task.Result;
        if (!done.TrySetResult((null, 0, "cancelled")) && done.Task.Result.Item1 is { } late) return done.Task.Result;
        return (null, 0, ct.IsCancellationRequested ? "this replica is finishing" : $"the guest reached no instruction boundary within {SnapshotWait.TotalSeconds:F0} s");
    }

    /// <summary>No standby joined: release what was held for it and go on unprotected.</summary>
    void ResumeUnprotected()
    {
        if (_state == LinkState.Unprotected) Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected);
    }

    // ------------------------------------------------------------------ ILogSink (guest thread)

    public void Append(ReadOnlySpan<byte> encoded)
    {
        if (_store.Length == 0) { _store.Append(encoded); return; } // the header: already sent in Hello
        ulong seq = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(encoded[RecordFrame.SequenceOffset..]);
        var kind = (RecordKind)encoded[RecordFrame.KindOffset];
        var st = _state;
        if (st == LinkState.Fenced) return;
        // the backup's replay: a takeover replays whatever it trails by before going live, so keep that short. The
        // guest waits here, at its next record, before logging it: a record that holds output reaches the gate (which
        // holds the output until the backup acknowledges the record) right after it is logged, never after a wait in
        // which its acknowledgement may already have come. The End record closes the log: nothing is left to bound.
        if (kind != RecordKind.End && _replayNear && ReplayTrailNowMs() > _s.MaxReplayLagMs) WaitForReplay();
        long cum;
        // coalesce on the guest thread: frames go to the backup when the recording ships them (records that hold
        // output: before the guest waits, or within its bounds), when 64 KiB have gathered, or from the flush thread
        // (once they have waited FlushAgeMs)
        lock (_pending)
        {
            cum = _producedBytes + encoded.Length;
            _producedBytes = cum;
            Interlocked.Exchange(ref _produced, (long)seq);
            if (_state == LinkState.Protected)
            {
                long now = Stopwatch.GetTimestamp();
                _inflight.Enqueue((seq, cum, now));
                if (_s.MaxReplayLagMs > 0) _trail.Produced(seq, kind, now);
            }
            if (_pending.Length == 0) Volatile.Write(ref _pendingSince, Stopwatch.GetTimestamp());
            _pending.Write(encoded);
            if (_pending.Length >= 64 * 1024) PushPending();
            else _hasPending = true;
        }
        _direct.Offer(); // outside the append lock: nobody waits for this thread's send there
        if (_state != LinkState.Protected) return;
        // flow control: keep the backup close enough that failover time stays bounded (a standby that is catching
        // up is not waited for: the backlog was released already)
        long acked = Math.Max(Interlocked.Read(ref _acked), Interlocked.Read(ref _base));
        long ackedBytes = Math.Max(Interlocked.Read(ref _ackedBytes), Interlocked.Read(ref _baseBytes));
        if ((long)seq - acked > _s.MaxLagRecords || cum - ackedBytes > _s.MaxLagBytes)
        {
            long t0 = Stopwatch.GetTimestamp();
            Flush(); // the acknowledgements waited for need the records
            lock (_flow)
            {
                while (_state == LinkState.Protected &&
                       ((long)seq - Math.Max(Interlocked.Read(ref _acked), Interlocked.Read(ref _base)) > _s.MaxLagRecords / 2
                        || cum - Math.Max(Interlocked.Read(ref _ackedBytes), Interlocked.Read(ref _baseBytes)) > _s.MaxLagBytes / 2))
                    Monitor.Wait(_flow, 50);
            }
            Interlocked.Add(ref _throttleTicks, Stopwatch.GetTimestamp() - t0);
        }
    }

    /// <summary>How far the backup's replay trails: the age (ms) of the oldest record it has not reported replayed.</summary>
    double ReplayTrailNowMs() => _trail.TrailMs(Stopwatch.GetTimestamp());

    /// <summary>
    /// The guest thread waits until the backup's replay is within half the bound. A replay that reports no progress
    /// for the timeout while the guest waits (stalled, or a report that never comes) suspends the bound: the guest
    /// runs on, the stall is reported (<see cref="ReplicaEvent.ReplayStalled"/>), and the bound applies again once
    /// the replay has come within it. Waiting on would stall a healthy primary's service for a backup's fault; the
    /// backup is judged by its acknowledgements, not by its replay.
    /// </summary>
    void WaitForReplay()
    {
        long t0 = Stopwatch.GetTimestamp();
        Flush(); // the replay can only catch up with records it has
        bool stalled = false;
        lock (_flow)
            while (_state == LinkState.Protected && _replayNear && ReplayTrailNowMs() > _s.MaxReplayLagMs / 2.0)
            {
                long since = Math.Max(t0, _trail.ProgressTicks);
                if (Stopwatch.GetElapsedTime(since).TotalMilliseconds > _s.TimeoutMs) { _replayNear = false; stalled = true; break; }
                Monitor.Wait(_flow, 20);
            }
        long waited = Stopwatch.GetTimestamp() - t0;
        Interlocked.Add(ref _throttleTicks, waited);
        Interlocked.Add(ref _replayThrottleTicks, waited);
        if (!stalled) return;
        Interlocked.Increment(ref _replayStalls);
        double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds, trail = ReplayTrailNowMs();
        _log.WriteLine($"{_s.Role}: the backup's replay reported no progress for {_s.TimeoutMs} ms (replayed up to record #{_trail.Replayed}, trailing by {trail:F0} ms); " +
                       $"the guest waited {ms:F0} ms and runs on without the bound on replay lag until the replay is within it again");
        _s.Events.Emit(ReplicaEvent.ReplayStalled, ("replayed", _trail.Replayed), ("trailMs", trail), ("waitedMs", ms), ("backup", BackupId));
    }

    readonly MemoryStream _pending = new();

    /// <summary>Moves the gathered frames into the store and, while a backup follows, towards its link (under the lock):
    /// once the sender thread has sent the backlog, the producing thread sends them itself after leaving the lock
    /// (<see cref="OrderedSender{T}.Offer"/>: no hand-off); before that, they queue behind the backlog.</summary>
    void PushPending()
    {
        _hasPending = false;
        if (_pending.Length == 0) return;
        int n = (int)_pending.Length;
        _store.Append(_pending.GetBuffer().AsSpan(0, n));
        Gate.Shipping.Shipped((ulong)Interlocked.Read(ref _produced)); // (the guest thread appends under this lock too)
        if (_state == LinkState.Protected && _cur is { FromStore: false } s)
        {
            // the frames after room for the message's head (Ship writes it in place: one buffer, one write)
            var buffer = s.Direct ? ArrayPool<byte>.Shared.Rent(LinkWire.MaxBatchHeadBytes + n) : new byte[LinkWire.MaxBatchHeadBytes + n];
            _pending.GetBuffer().AsSpan(0, n).CopyTo(buffer.AsSpan(LinkWire.MaxBatchHeadBytes));
            if (s.Direct) _direct.Add((s, buffer, n, true));
            else s.Queue.Add(buffer);
        }
        _pending.SetLength(0);
    }

    /// <summary>Sends frames as one batch (by the thread that sends the direct frames, or by the sender thread before
    /// the link went direct), never under the append lock. The <paramref name="length"/> bytes of frames start at
    /// <see cref="LinkWire.MaxBatchHeadBytes"/> in <paramref name="buffer"/>: the message's head is written in front of
    /// them and the whole message goes in one write (no message objects, no copy of the frames). A broken link is
    /// closed; its reader reports the loss.</summary>
    void Ship(Session session, byte[] buffer, int length)
    {
        const int at = LinkWire.MaxBatchHeadBytes;
        var frames = buffer.AsSpan(at, length);
        ulong first = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(frames[RecordFrame.SequenceOffset..]);
        uint count = 0;
        for (int off = 0; off < length; off += (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(frames[off..])) count++;
        // noted before the send: its acknowledgement may be read before the send returns here (the sends of one session
        // are ordered, so the queue is in sequence order; a link that breaks is dropped with its queue)
        long t0 = Stopwatch.GetTimestamp();
        if (session == _cur) _sentAt.Enqueue((first + count - 1, t0));
        try
        {
            int start = LinkWire.WriteBatchHead(buffer, at, length, first, count, Gate.ReleasedStdout, Gate.ReleasedStderr,
                session.Link.SharesClock ? LinkWire.MonotonicNs() : 0);
            session.Link.SendPrepared(buffer, start, at + length - start);
        }
        catch (IOException e)
        {
            session.SendError ??= $"sending to the backup failed: {e.Message}";
            session.Link.Close();
            return;
        }
        _sends.AddTicks(t0, Stopwatch.GetTimestamp());
        Interlocked.Add(ref _bytesSent, length);
        Interlocked.Increment(ref _batches);
        ReplicationMetrics.LogBytes.Add(length);
    }

    public void Flush()
    {
        lock (_pending) PushPending();
        _direct.Offer();
    }

    /// <summary>How often the flush thread looks for gathered records the guest thread has not shipped.</summary>
    const int FlushIntervalMs = 2;

    /// <summary>Gathered records the flush thread ships: the oldest has waited at least this long (ms), so records
    /// reach the backup within <see cref="FlushIntervalMs"/> plus this.</summary>
    const double FlushAgeMs = FlushIntervalMs / 2.0;

    // when the oldest record gathered in _pending was appended (Stopwatch ticks; meaningful while _hasPending)
    long _pendingSince;

    /// <summary>
    /// A thread of its own that hands gathered records on every <see cref="FlushIntervalMs"/> when some have waited
    /// <see cref="FlushAgeMs"/> (a pool timer would wake a pool worker 500 times a second, and each then spins for
    /// work: a tenth of a core on a 2-core machine). It only looks at a flag unless records wait. Records younger than
    /// that are left to the guest thread, which ships whenever output waits (at most 100 µs after it was logged, or as
    /// it parks): a busy server's records then travel in the guest thread's batches only. Shipping them from here as
    /// well split a round's records into two batches for one in ten batches (kvserver, 16 connections), each costing
    /// the backup a wake-up, a write of its log copy and an ack, and this replica a wake-up of its ack thread.
    /// </summary>
    void StartFlusher()
    {
        _flusher = new Thread(() =>
        {
            while (!_flusherStop)
            {
                Thread.Sleep(FlushIntervalMs);
                try { if (_hasPending && Stopwatch.GetElapsedTime(Volatile.Read(ref _pendingSince)).TotalMilliseconds >= FlushAgeMs) Flush(); }
                catch (ObjectDisposedException) { return; } // the run ended and its store was closed
            }
        }) { Name = "replication-flush", IsBackground = true };
        _flusher.Start();
    }
    public void Dispose() { }

    // ------------------------------------------------------------------ streaming

    /// <summary>Runs <paramref name="body"/> on a thread of its own; the task completes when it returns.</summary>
    static Task OnThread(string name, Action body)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        new Thread(() => { try { body(); } finally { done.TrySetResult(); } }) { Name = name, IsBackground = true }.Start();
        return done.Task;
    }

    /// <summary>
    /// The sender thread: the catch-up backlog (a standby that joined), then the frames that queued behind it; then,
    /// under the append lock, the last queued frames and the switch to direct sends. From then on it only sends a
    /// heartbeat when nothing was sent for the heartbeat interval.
    /// </summary>
    void SendLoop(Session session)
    {
        var ct = session.Cts.Token;
        LinkPulse? pulse = null;
        long heartbeatLateMs = 0; // the longest a heartbeat went out after it was due (this thread's own delays)
        // the heartbeats are how the backup knows this replica is alive: on a loaded machine they must not wait for
        // time slices behind other work (a silence past the backup's bound is a takeover)
        ThreadPools.RaiseCurrentThread();
        try
        {
            if (session.Snapshot != null) SendSnapshot(session, ct);
            bool withhold = session.Snapshot != null && _s.Plant == PrimaryPlant.JoinWithholdsLog;
            if (withhold)
            {
                // planted (tests only): after the snapshot, only heartbeats: the standby never holds the join point
                _log.WriteLine($"{_s.Role}: TESTING: the log after the snapshot is withheld from {session.BackupId}");
                _s.Events.Emit(ReplicaEvent.Planted, ("violation", "join-withholds-log"));
            }
            // catch-up: the stored log from record 1 (or from the snapshot), read from the store in rounds until what
            // is left is short; that last stretch is fixed under the append lock, and later frames queue behind it
            for (long from = session.CatchUpFrom; session.FromStore && !withhold;)
            {
                long to;
                bool last;
                lock (_pending)
                {
                    PushPending();
                    _store.Flush();
                    to = _store.Length;
                    last = to - from <= CatchUpTailBytes;
                    if (last) session.FromStore = false;
                }
                foreach (var (first, count, frames) in _store.ReadBatches(from, to, 1 << 20))
                {
                    ct.ThrowIfCancellationRequested();
                    session.Link.Send(new PrimaryMessage
                    {
                        Batch = new Batch { FirstSequence = first, Count = count, Frames = ByteString.CopyFrom(frames), Released = Mark() },
                    });
                    Interlocked.Add(ref _bytesSent, frames.Length);
                    ReplicationMetrics.LogBytes.Add(frames.Length);
                    Interlocked.Increment(ref _batches);
                }
                from = to;
            }
            // the frames that queued behind the backlog, then the switch to direct sends as soon as the queue is empty
            // (waiting for a pause in the guest's records first — a heartbeat interval without one — kept a guest that
            // logs without such a pause, a server under load from its start, on this thread's hand-off for good: a
            // wake-up of this thread for every batch, on the path every held reply waits on)
            if (!ct.IsCancellationRequested && !withhold && !session.Direct)
            {
                byte[]? f;
                while (session.Queue.TryTake(out f))
                {
                    Ship(session, f, f.Length - LinkWire.MaxBatchHeadBytes);
                    Interlocked.Increment(ref _handedOff);
                }
                // the last queued frames go ahead of every later one, and this thread sends them outside the lock
                lock (_pending)
                {
                    while (session.Queue.TryTake(out f))
                    {
                        _direct.Add((session, f, f.Length - LinkWire.MaxBatchHeadBytes, false));
                        Interlocked.Increment(ref _handedOff);
                    }
                    session.Direct = true;
                }
                _direct.Offer();
            }
            // from here on this thread only heartbeats an idle link: real-time, so a loaded machine does not delay it
            ThreadPools.MakeCurrentThreadRealtime();
            pulse = StartPulse(session);
            while (!ct.IsCancellationRequested && !session.StopSending)
            {
                // this thread runs: the runtime makes progress, and the pulse may go on for the timeout from now
                pulse?.KeepAliveUntil(_s.TimeoutMs);
                long idle = Environment.TickCount64 - session.Link.LastWriteTick;
                if (idle < session.HeartbeatMs)
                {
                    session.Wake.Wait((int)(session.HeartbeatMs - idle), ct);
                    continue;
                }
                heartbeatLateMs = Math.Max(heartbeatLateMs, idle - session.HeartbeatMs);
                session.Link.Send(new PrimaryMessage
                {
                    Heartbeat = new Heartbeat { LastSequence = (ulong)Interlocked.Read(ref _produced), Released = Mark(), SentUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() },
                });
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            if (!ct.IsCancellationRequested && !session.StopSending)
            {
                session.SendError ??= $"sending to the backup failed: {e.Message}";
                session.Link.Close();
            }
        }
        finally
        {
            session.Snapshot?.Dispose(); // (sent or abandoned: the guest stops preserving pages for it)
            // no pulse after the goodbye (or once the session ended); the counters say how the pulse fared
            if (pulse != null && session.Link.StopPulse() is { } stopped)
                _s.Events.Emit(ReplicaEvent.PulseEnded, [("backup", session.BackupId), .. stopped.Fields(), ("heartbeatMaxLateMs", heartbeatLateMs),
                    ("gcPauseMs", Math.Round(GC.GetTotalPauseDuration().TotalMilliseconds, 1)), ("gcs", $"{GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}")]);
        }
    }

    /// <summary>Starts the session's liveness pulse (<see cref="LinkPulse"/>) at the heartbeat interval, unless
    /// <c>--no-pulse</c>; reports whether it runs and at which priority.</summary>
    LinkPulse? StartPulse(Session session)
    {
        if (!_s.Pulse) return null;
        var pulse = session.Link.StartPulse(session.HeartbeatMs, _s.TimeoutMs, out var why);
        if (pulse == null)
        {
            _log.WriteLine($"{_s.Role}: no liveness pulse on the data link ({why}): the backup hears only the heartbeats, which garbage collections pause");
            _s.Events.Emit(ReplicaEvent.PulseUnavailable, ("backup", session.BackupId), ("reason", why));
            return null;
        }
        if (!pulse.Realtime) _log.WriteLine($"{_s.Role}: the liveness pulse runs at {(pulse.Raised ? "nice -10" : "ordinary priority")}: real-time priority (SCHED_RR) was refused (it needs CAP_SYS_NICE)");
        _s.Events.Emit(ReplicaEvent.PulseStarted, ("backup", session.BackupId), ("intervalMs", session.HeartbeatMs), ("realtime", pulse.Realtime), ("raised", pulse.Raised), ("tid", pulse.Tid));
        return pulse;
    }

    OutputMark Mark() => new() { StdoutBytes = Gate.ReleasedStdout, StderrBytes = Gate.ReleasedStderr };

    /// <summary>A joining standby's catch-up from the store ends once at most this much log is left to read: the
    /// frames produced while it is sent queue in memory (a round of the store takes about as long to send).</summary>
    const int CatchUpTailBytes = 1 << 20;

    /// <summary>Snapshot bytes in one message: below .NET's large-object threshold (85,000 bytes), so the array each
    /// received chunk is parsed into on the standby is ordinary young garbage, collected as the transfer goes (with
    /// 1 MiB chunks the standby's large-object heap held hundreds of MiB of spent chunks at the end of a transfer).</summary>
    const int SnapshotChunkBytes = 64 << 10;
    /// <summary>Encoded chunks that may wait for the link: the encoder runs at most this far ahead of the send (16 MiB),
    /// so the snapshot is never held whole however large the guest, and far enough for a loaded host's scheduling
    /// delays between the two threads not to stall either.</summary>
    const int SnapshotChunksAhead = 256;

    /// <summary>
    /// Streams the snapshot: an encoder thread reads the captured pages run by run and writes the encoding, hashed as
    /// it goes, into a bounded pipe of 1 MiB chunks, and this thread sends each chunk as it comes (heartbeats while
    /// none is ready), so encoding and sending overlap and neither holds the snapshot whole. One chunk is kept back
    /// until the next arrives so the last goes out marked as such, with the snapshot's length and the held output.
    /// </summary>
    void SendSnapshot(Session session, CancellationToken ct)
    {
        long t0 = Stopwatch.GetTimestamp();
        var plant = _s.PlantSnapshot;
        if (plant != SnapshotPlant.None)
        {
            string violation = PlantName(plant);
            _log.WriteLine($"{_s.Role}: TESTING: the snapshot is sent with a planted violation ({violation})");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", violation));
        }
        var capture = session.Snapshot!;
        var pipe = new SnapshotPipe(SnapshotChunksAhead);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        double encodeMs = 0;
        byte[] digest = [];
        var encoder = new Thread(() =>
        {
            try
            {
                using var chunks = pipe.Writer(SnapshotChunkBytes, stop.Token);
                digest = capture.EncodeTo(chunks, plant).Digest;
                encodeMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                pipe.Complete();
            }
            catch (OperationCanceledException) { pipe.Fail("the snapshot's transfer was abandoned"); }
            catch (Exception e) { pipe.Fail($"the snapshot could not be encoded: {e.Message}"); }
        }) { Name = "snapshot-encoder", IsBackground = true };
        encoder.Start();
        long offset = 0, t1 = 0;
        int sent = 0;
        try
        {
            ReadOnlyMemory<byte> held = default;
            bool holding = false;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (pipe.TryTake(out var chunk, session.HeartbeatMs, ct))
                {
                    if (holding)
                    {
                        if (t1 == 0) t1 = Stopwatch.GetTimestamp();
                        if (!SendChunk(session, held, ref offset, ref sent, last: false, plant)) return;
                    }
                    held = chunk;
                    holding = true;
                    continue;
                }
                if (pipe.Ended) break;
                // the standby, which starts only with the snapshot, hears from this replica while none is ready
                session.Link.Send(new PrimaryMessage
                {
                    Heartbeat = new Heartbeat { LastSequence = (ulong)Interlocked.Read(ref _produced), Released = Mark(), SentUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() },
                });
            }
            if (pipe.Failure is { } failed) throw new IOException(failed);
            if (!holding) throw new IOException("the snapshot could not be encoded: no bytes");
            if (t1 == 0) t1 = Stopwatch.GetTimestamp();
            SendChunk(session, held, ref offset, ref sent, last: true, plant);
        }
        finally
        {
            // an abandoned transfer stops the encoder (it waits for room in the pipe) before the pipe goes
            stop.Cancel();
            pipe.Fail("the snapshot's transfer was abandoned");
            if (encoder.Join(TimeSpan.FromSeconds(30))) pipe.Dispose();
        }
        double sendMs = Stopwatch.GetElapsedTime(t1).TotalMilliseconds;
        double mbPerS = offset / 1e6 / Math.Max(1e-3, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        _log.WriteLine($"{_s.Role}: sent {session.BackupId} a snapshot of {offset} bytes in {sent} chunks at record #{session.SnapshotSequence} (encoded in {encodeMs:F0} ms while sending, sent in {sendMs:F0} ms, {mbPerS:F0} MB/s)");
        _s.Events.Emit(ReplicaEvent.SnapshotSent, ("backup", session.BackupId), ("sequence", session.SnapshotSequence), ("bytes", offset), ("chunks", sent), ("encodeMs", encodeMs), ("sendMs", sendMs),
            ("mbPerS", mbPerS), ("digest", Convert.ToHexString(digest)));
    }

    static string PlantName(SnapshotPlant plant) => plant switch
    {
        SnapshotPlant.OmitPage => "snapshot-omits-page",
        SnapshotPlant.CorruptChunk => "snapshot-corrupt-chunk",
        SnapshotPlant.TruncateChunk => "snapshot-truncated",
        _ => plant.ToString(),
    };

    /// <summary>Sends one chunk of the snapshot (and gives its buffer back). False: a planted truncation ended the
    /// snapshot here.</summary>
    bool SendChunk(Session session, ReadOnlyMemory<byte> data, ref long offset, ref int sent, bool last, SnapshotPlant plant)
    {
        try
        {
            // planted (tests and drills only), on the second chunk: one byte flipped after it was hashed, or the chunk
            // cut to half and sent as the last (the standby must refuse either, and acknowledge nothing)
            bool truncate = plant == SnapshotPlant.TruncateChunk && sent == 1 && !last;
            if (plant == SnapshotPlant.CorruptChunk && sent == 1 && System.Runtime.InteropServices.MemoryMarshal.TryGetArray(data, out var seg))
                seg.Array![seg.Offset + seg.Count / 2] ^= 0x5A;
            if (truncate) { data = data[..(data.Length / 2)]; last = true; }
            var chunk = new SnapshotChunk { Sequence = session.SnapshotSequence, Offset = (ulong)offset, Data = UnsafeByteOperations.UnsafeWrap(data), Last = last };
            // (nothing held travels along: output was released unheld from the hello to the snapshot's acknowledgement)
            if (last) chunk.TotalBytes = (ulong)(offset + data.Length);
            session.Link.Send(new PrimaryMessage { SnapshotChunk = chunk });
            offset += data.Length;
            sent++;
            // the link took it: the standby is reading (a standby that stops reading fills the socket and stops this)
            session.JoinProgressed($"snapshot byte {offset} sent");
            Interlocked.Add(ref _bytesSent, data.Length);
            return !truncate;
        }
        finally { SnapshotPipe.Return(data); }
    }

    /// <summary>The ack thread: reads the backup's messages from the data link and applies the acks at once
    /// (releasing output on this thread); acks that arrived together are applied as one (acks are cumulative), so
    /// each socket gets one host send for all they release.</summary>
    void ReceiveLoop(Session session)
    {
        var ct = session.Cts.Token;
        ThreadPools.RaiseCurrentThread(); // this thread releases the output every ack covers
        try
        {
            while (true)
            {
                bool isAck = NextAck(session.Link, out var ack, out var m);
                ulong arrivedNs = session.Link.SharesClock ? LinkWire.MonotonicNs() : 0;
                // found by the chaos drill (freeze): after a SIGSTOP longer than the timeout, acks queued before the
                // freeze must not release output — the backup may already be live. Decide on the silence first.
                var silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard));
                if (_state == LinkState.Protected && silent.TotalMilliseconds > _s.TimeoutMs)
                {
                    BackupLost(session, $"no acknowledgement or heartbeat from the backup for {silent.TotalMilliseconds:F0} ms");
                    return;
                }
                if (_state == LinkState.Protected && silent.TotalMilliseconds > session.StaleMs) _stale.GapSeen(Interlocked.Read(ref _produced));
                Touch();
                if (m?.BodyCase == BackupMessage.BodyOneofCase.Refused) { session.Refused = true; BackupLost(session, $"the backup stopped following: {m.Refused.Reason}"); return; }
                if (!isAck) continue;
                NoteAckTimes(ack, arrivedNs);
                ulong held = ack.HeldSequence, replayed = ack.ReplayedSequence;
                long echo = ack.EchoUnixMs;
                if (ack.SnapshotBytes > session.SnapshotBytesRestored) SnapshotRestoredUpTo(session, ack.SnapshotBytes);
                // the acks already read (one read of the link brought them): only the newest matters (acks are
                // cumulative), one pass releases for all of them
                Interlocked.Increment(ref _ackPasses);
                while (session.Link.HasBuffered)
                {
                    if (!NextAck(session.Link, out ack, out m))
                    {
                        if (m!.BodyCase != BackupMessage.BodyOneofCase.Refused) continue;
                        session.Refused = true;
                        // in the order they came, unless a gap left them unproven (StaleLink)
                        if (AckBeyondTheLog(held, replayed) is null && _stale.ProvenBy(echo, held)) OnAck(session, held, replayed);
                        BackupLost(session, $"the backup stopped following: {m.Refused.Reason}");
                        return;
                    }
                    NoteAckTimes(ack, arrivedNs);
                    if (ack.SnapshotBytes > session.SnapshotBytesRestored) SnapshotRestoredUpTo(session, ack.SnapshotBytes);
                    held = Math.Max(held, ack.HeldSequence);
                    replayed = Math.Max(replayed, ack.ReplayedSequence);
                    echo = Math.Max(echo, ack.EchoUnixMs);
                }
                if (AckBeyondTheLog(held, replayed) is { } bogus) { BackupLost(session, bogus); return; }
                // after a gap, acks that do not prove the backup still follows are applied (cumulatively) only with
                // the first that does (StaleLink); until then the gate releases nothing
                if (!_stale.ProvenBy(echo, held)) continue;
                OnAck(session, held, replayed);
            }
        }
        catch (EndOfStreamException)
        {
            if (!ct.IsCancellationRequested) BackupLost(session, session.SendError ?? "the backup closed the stream");
        }
        catch (IOException e)
        {
            if (!ct.IsCancellationRequested) BackupLost(session, session.SendError ?? $"the stream from the backup broke: {e.Message}");
        }
    }

    /// <summary>A joining standby reported more of its snapshot restored (ack thread): progress of its join, nothing
    /// more (no output is released for it).</summary>
    static void SnapshotRestoredUpTo(Session session, ulong bytes)
    {
        session.SnapshotBytesRestored = bytes;
        if (session.JoinSequence != 0 && !session.HoldsJoinPoint) session.JoinProgressed($"snapshot byte {bytes} restored by the standby");
    }

    /// <summary>The backup's next message: true with an ack (read in place, or by the generated parser when the in-place
    /// reader left it to it), false with any other message.</summary>
    static bool NextAck(DataLink link, out AckView ack, out BackupMessage? other)
    {
        if (link.ReceiveAck(ReplicationProtocol.MaxBackupMessageBytes, out ack, out other)) return true;
        if (other!.BodyCase != BackupMessage.BodyOneofCase.Ack) return false;
        ack = AckView.Of(other.Ack);
        return true;
    }

    /// <summary>The timings an ack carries (<see cref="BatchPath"/>); <paramref name="arrivedNs"/>: when the ack thread read
    /// it, on the clock a same-host link shares (0: another host).</summary>
    void NoteAckTimes(in AckView ack, ulong arrivedNs)
    {
        Interlocked.Increment(ref _acksRead);
        if (ack.TransitUs != 0) _batchTransits.AddNs(ack.TransitUs * 1000L);
        if (ack.HoldUs != 0) _backupHolds.AddNs(ack.HoldUs * 1000L);
        uint back = LinkWire.TransitUs(ack.SentMonotonicNs, arrivedNs);
        if (back != 0) _ackTransits.AddNs(back * 1000L);
    }

    /// <summary>
    /// An acknowledgement of a record this replica never logged is a protocol error (a damaged or forged message on the
    /// link, or a backup that does not follow this log), never a licence to release: applied, it would release every
    /// output held, none of which the backup holds. Every record a backup acknowledges was produced here first
    /// (<c>_produced</c> is set before a record is shipped, and starts at the store's end for a replica that continued
    /// a log), so anything beyond it is refused. Returns the reason, or null for a plausible ack.
    /// </summary>
    string? AckBeyondTheLog(ulong held, ulong replayed)
    {
        ulong end = (ulong)Interlocked.Read(ref _produced);
        if (held <= end && replayed <= end) return null;
        return $"protocol error: the backup acknowledged record #{Math.Max(held, replayed)} ({(held > end ? "held" : "replayed")}), but this replica's log ends at record #{end}; nothing was released for it";
    }

    static string Short(Exception e) => e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;

    /// <summary>An acknowledgement of the log up to <paramref name="seq"/> (ack thread): the output it covers is released
    /// first — the clients wait for it — and the bookkeeping (lag, replay trail, flow control's byte count) follows,
    /// timed as of the ack's arrival.</summary>
    void OnAck(Session session, ulong seq, ulong replayed)
    {
        if (session != _cur) return;
        long now = Stopwatch.GetTimestamp();
        if (session.Unheld && seq >= session.SwitchAt) EndUnheld(session);
        long s = (long)seq;
        long before = Interlocked.Read(ref _acked);
        if (s > before && session.JoinSequence != 0 && !session.HoldsJoinPoint) session.JoinProgressed($"record #{seq} acknowledged");
        long cur;
        while ((cur = Interlocked.Read(ref _acked)) < s && Interlocked.CompareExchange(ref _acked, s, cur) != cur) { }
        if (before < _base && s >= _base && _base > 0)
        {
            // a standby that joined now holds the log up to its join point: it may go live from here
            double ms = Stopwatch.GetElapsedTime(session.JoinedAt).TotalMilliseconds;
            session.HoldsJoinPoint = true;
            _s.Events.Emit(ReplicaEvent.StandbyHolds, ("backup", session.BackupId), ("records", _base), ("transferMs", ms));
        }
        Gate.Ack(seq);
        if (_s.MaxReplayLagMs > 0)
        {
            _trail.Reported(replayed, now);
            double trail = _trail.TrailMs(now);
            _replayTrails.AddMs(trail);
            // a standby replaying the backlog is not waited for; once its replay is within the bound, it is kept there
            if (!_replayNear && (long)_trail.Replayed >= Interlocked.Read(ref _base) && trail <= _s.MaxReplayLagMs) _replayNear = true;
        }
        long newestSent = 0;
        while (_sentAt.TryPeek(out var b) && b.Last <= seq)
        {
            _sentAt.TryDequeue(out _);
            newestSent = b.Ticks;
        }
        if (newestSent != 0) _roundTrips.AddTicks(newestSent, now);
        bool first = true;
        while (_inflight.TryPeek(out var e) && e.Seq <= seq)
        {
            _inflight.TryDequeue(out _);
            Interlocked.Exchange(ref _ackedBytes, e.Cum);
            if (first)
            {
                double ms = Stopwatch.GetElapsedTime(e.Ticks, now).TotalMilliseconds;
                ReplicationMetrics.AckLatency.Record(ms);
                _lags.AddTicks(e.Ticks, now);
            }
            first = false;
        }
        lock (_flow) Monitor.PulseAll(_flow);
    }

    void Watch(Session session)
    {
        if (_state != LinkState.Protected || session != _cur) return;
        var silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard));
        if (silent.TotalMilliseconds > _s.TimeoutMs) BackupLost(session, $"no acknowledgement or heartbeat from the backup for {silent.TotalMilliseconds:F0} ms");
        else if (JoinOverdue(session) is { } joining) JoinTimedOut(session, joining);
        else if (JoinIdle(session) is { } idle) JoinStalled(session, idle);
    }

    /// <summary>How long a joining standby's join has made no progress, when that is beyond
    /// <see cref="ProtectSettings.JoinProgressMs"/>; null otherwise (not a join, complete, moving, or no bound).</summary>
    TimeSpan? JoinIdle(Session session)
    {
        if (session.JoinSequence == 0 || session.HoldsJoinPoint || _s.JoinProgressMs <= 0) return null;
        var idle = Stopwatch.GetElapsedTime(Interlocked.Read(ref session.ProgressAt));
        return idle.TotalMilliseconds > _s.JoinProgressMs ? idle : null;
    }

    /// <summary>
    /// A join that stopped progressing (watchdog): the standby answered — it was not silent, or the silence bound
    /// would have ended it — but nothing of its join moved for the progress bound. Dropped as
    /// <see cref="JoinTimedOut"/> drops one: the guest runs on with its output released and the next standby is asked.
    /// </summary>
    void JoinStalled(Session session, TimeSpan idle)
    {
        if (session.Lost != 0) return;
        double joiningMs = Stopwatch.GetElapsedTime(session.JoinedAt).TotalMilliseconds;
        string reason = $"the standby's join made no progress for {idle.TotalMilliseconds:F0} ms (--join-progress-ms {_s.JoinProgressMs}; joining for {joiningMs:F0} ms, last progress: {session.ProgressWhat}; acknowledged up to record #{Acked}{(session.Unheld ? $", not yet its {(session.SnapshotSequence > 0 ? "snapshot" : "backlog")} at record #{session.SwitchAt}" : $", join point #{session.JoinPoint}")})";
        _log.WriteLine($"{_s.Role}: standby {session.BackupId} at {session.Url}: {reason}; dropping it");
        _s.Events.Emit(ReplicaEvent.JoinStalled, ("backup", session.BackupId), ("url", session.Url), ("idleMs", idle.TotalMilliseconds),
            ("joiningMs", joiningMs), ("joinProgressMs", _s.JoinProgressMs), ("lastProgress", session.ProgressWhat),
            ("snapshotBytesRestored", session.SnapshotBytesRestored), ("acked", Acked), ("joinPoint", session.JoinPoint > 0 ? session.JoinPoint : null));
        BackupLost(session, reason);
    }

    /// <summary>How long a joining standby has been joining, when that is beyond <see cref="ProtectSettings.JoinTimeoutMs"/>
    /// and it does not yet hold the log up to its join point; null otherwise (not a join, complete, or no bound).</summary>
    TimeSpan? JoinOverdue(Session session)
    {
        if (session.JoinSequence == 0 || session.HoldsJoinPoint || _s.JoinTimeoutMs <= 0) return null;
        var joining = Stopwatch.GetElapsedTime(session.JoinedAt);
        return joining.TotalMilliseconds > _s.JoinTimeoutMs ? joining : null;
    }

    /// <summary>
    /// A join that did not complete within its bound (watchdog): the standby answered — it was not silent — but never
    /// came to hold the log up to its join point. It is dropped as a lost standby: one never told its join point
    /// cannot go live (no term spent, as for a refusal), one told it may (the arbiter decides, as for any backup);
    /// either way the guest runs on with its output released, and the next standby is asked.
    /// </summary>
    void JoinTimedOut(Session session, TimeSpan joining)
    {
        if (session.Lost != 0) return;
        string reason = $"the standby did not hold the log up to its join point within --join-timeout-ms {_s.JoinTimeoutMs} (joining for {joining.TotalMilliseconds:F0} ms, acknowledged up to record #{Acked}{(session.Unheld ? $", never its {(session.SnapshotSequence > 0 ? "snapshot" : "backlog")} at record #{session.SwitchAt}" : $", join point #{session.JoinPoint}")})";
        _log.WriteLine($"{_s.Role}: standby {session.BackupId} at {session.Url}: {reason}; dropping it");
        _s.Events.Emit(ReplicaEvent.JoinTimedOut, ("backup", session.BackupId), ("url", session.Url), ("joiningMs", joining.TotalMilliseconds),
            ("joinTimeoutMs", _s.JoinTimeoutMs), ("acked", Acked), ("joinPoint", session.JoinPoint > 0 ? session.JoinPoint : null));
        BackupLost(session, reason);
    }

    /// <summary>
    /// True when this replica lost the arbiter and must stop (exit status 3). If the backup was lost, waits for the
    /// arbiter's answer, so a guest that ends at the same moment cannot make the process report success.
    /// </summary>
    public bool Fenced()
    {
        lock (_decide) while (_deciding) Monitor.Wait(_decide, 100);
        return _state == LinkState.Fenced;
    }

    /// <summary>The backup is gone: win the arbiter (a new term) and continue unprotected, or stop this replica.</summary>
    void BackupLost(Session session, string reason)
    {
        lock (_decide)
        {
            if (_finishing || session != _cur || _state != LinkState.Protected || Interlocked.Exchange(ref session.Lost, 1) != 0) return;
            _deciding = true;
        }
        try { Decide(session, reason); }
        finally { lock (_decide) { _deciding = false; Monitor.PulseAll(_decide); } }
    }

    void Decide(Session session, string reason)
    {
        session.Watchdog?.Dispose();
        session.Cts.Cancel();
        long term = Term;
        if (session.JoinSequence > 0 && (session.Refused || !session.MayGoLive))
        {
            // a failed join: the standby cannot go live (it refused, or it was never told its join point, so it
            // stands down), so nothing is decided and no term is spent; this replica holds its term as before
            _log.WriteLine($"{_s.Role}: standby {session.BackupId} lost while joining ({reason}); it cannot go live{(session.Refused ? " (it refused)" : " (it was not told its join point)")}: running on unprotected in term {term} without asking the arbiter");
            _s.Events.Emit(ReplicaEvent.BackupLost, ("reason", reason), ("acked", Acked), ("backup", session.BackupId), ("joining", true));
            _s.Events.Emit(ReplicaEvent.Unprotected, ("arbiter", _arbiter.Describe), ("term", term), ("arbiterAsked", false));
            GoOnUnprotected();
            return;
        }
        var r = _s.Events.Ask(_arbiter, _s.Id, term);
        _s.Events.Emit(ReplicaEvent.BackupLost, ("reason", reason), ("acked", Acked), ("backup", session.BackupId));
        if (_s.Plant == PrimaryPlant.StaleTerm && !r.Won)
        {
            _log.WriteLine($"{_s.Role}: TESTING: asking the arbiter again from the old term {term}");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", "stale-term"));
            r = _s.Events.Ask(_arbiter, _s.Id, term);
        }
        if (_s.Plant == PrimaryPlant.IgnoreArbiter && !r.Won)
        {
            _log.WriteLine($"{_s.Role}: TESTING: ignoring the arbiter held by {r.Holder}");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", "ignore-arbiter"));
            r = new ArbiterResult(true, _s.Id, Term: term + 1);
        }
        if (r.Won)
        {
            Interlocked.Exchange(ref _term, r.Term);
            _log.WriteLine($"{_s.Role}: backup lost ({reason}); acknowledged up to record #{Acked}; won the arbiter ({_arbiter.Describe}) for term {r.Term}; continuing unprotected");
            _s.Events.Emit(ReplicaEvent.Unprotected, ("arbiter", _arbiter.Describe), ("term", r.Term), ("arbiterAsked", true));
            ReplicationMetrics.Failovers.Add(1);
            GoOnUnprotected();
        }
        else
        {
            _state = LinkState.Fenced;
            Gate.Discard();
            _log.WriteLine(r.Error != null
                ? $"{_s.Role}: backup lost ({reason}) and the arbiter ({_arbiter.Describe}) could not be asked ({r.Error}): the backup may be live; stopping this replica without releasing further output"
                : $"{_s.Role}: backup lost ({reason}) but the arbiter ({_arbiter.Describe}) is {r.Explain} (this replica works in term {term}): another replica is live; stopping this replica without releasing further output");
            _s.Events.Emit(ReplicaEvent.Fenced, ("reason", r.Error != null ? $"the arbiter could not be asked: {r.Error}" : $"the arbiter is {r.Explain}"), ("term", term));
            _s.Events.Emit(ReplicaEvent.Exit, ("status", 3));
            _log.Flush();
            _s.Stop(3);
        }
    }

    /// <summary>Without a backup, holding the arbiter's current term: output is released once the arbiter still names
    /// this replica (a leased one can be lost by a stall longer than its TTL; any by a newer term), the guest is no
    /// longer held back, and the standbys are asked.</summary>
    void GoOnUnprotected()
    {
        lock (_pending) _state = LinkState.Unprotected;
        Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected);
        lock (_flow) Monitor.PulseAll(_flow);
        StartReprotecting();
    }

    /// <summary>
    /// The guest ended and the backup holds the whole log; the gate has held what was not released when the guest
    /// ended (<see cref="OutputGate.GuestEnded"/>). A backup that loses this replica now, without a goodbye, takes
    /// that output over if it wins the arbiter, so this replica releases it only after winning the arbiter from its
    /// term: exactly one of the two emits it, whether this replica then dies (the backup wins) or was only cut off
    /// (whoever asks first wins; the other stops). False when the backup was lost meanwhile (that path decided) or
    /// the arbiter went to the backup (then this replica releases nothing and is fenced).
    /// </summary>
    bool ReleaseFinalOutput(Session session)
    {
        lock (_decide)
        {
            if (session.Lost != 0 || _state != LinkState.Protected) return false;
            if (!Gate.HoldsOutput) return true; // nothing held: everything was released while protected
            session.Lost = 1; // a loss of the backup from here on is not decided again
            _finishing = true;
        }
        long term = Term;
        long heldBytes = Gate.HeldBytes + Gate.SocketHeldBytes;
        // release first, report after: between winning the arbiter and the release nothing else may run, since a
        // survivor that finds the arbiter held by this replica takes it that the output left (see
        // OutputGate.ReleaseHeldThrough)
        var r = _s.Events.Ask(_arbiter, _s.Id, term, won: _ => Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected));
        if (r.Won)
        {
            Interlocked.Exchange(ref _term, r.Term);
            _log.WriteLine($"{_s.Role}: the guest ended; holding the arbiter ({_arbiter.Describe}, term {r.Term}), released its last output");
            _s.Events.Emit(ReplicaEvent.FinalRelease, ("arbiter", _arbiter.Describe), ("heldBytes", heldBytes), ("term", r.Term));
            return true; // the state stays protected for the goodbye
        }
        _state = LinkState.Fenced;
        Gate.Discard();
        string why = r.Error != null ? $"the arbiter could not be asked: {r.Error}" : $"the arbiter is {r.Explain}";
        _log.WriteLine($"{_s.Role}: the guest ended but {why}: the backup releases its last output; stopping this replica without releasing it");
        _s.Events.Emit(ReplicaEvent.Fenced, ("reason", why), ("term", term));
        return false;
    }

    /// <summary>Running unprotected, this replica found it no longer holds the arbiter: another may be live.</summary>
    void ArbiterLostWhileUnprotected()
    {
        _state = LinkState.Fenced;
        _log.WriteLine($"{_s.Role}: lost the arbiter while running unprotected ({_arbiter.LossReason}); stopping this replica without releasing further output");
        _s.Events.Emit(ReplicaEvent.Fenced, ("reason", $"lost the arbiter while running unprotected: {_arbiter.LossReason}"), ("term", Term));
        _s.Events.Emit(ReplicaEvent.Exit, ("status", 3));
        _log.Flush();
        _s.Stop(3);
    }

    // ------------------------------------------------------------------ the end

    /// <summary>
    /// The guest ended: stop asking standbys; wait until the backup (if any) holds the whole log (so all output is
    /// released), then say goodbye.
    /// </summary>
    public async Task FinishAsync(ulong lastSequence, int exitStatus)
    {
        _stop.Cancel();
        try { if (_reprotect != null) await _reprotect.WaitAsync(TimeSpan.FromSeconds(30)); } catch (Exception) { }
        Flush();
        while (_state == LinkState.Protected && Acked < lastSequence) await Task.Delay(1);
        _flusherStop = true;
        if (_state != LinkState.Protected || _cur is not { } session) return;
        if (!ReleaseFinalOutput(session)) return;
        Flush();
        // every frame was sent once the sender thread is direct (Flush sent the rest); then only heartbeats remain
        while (!session.Direct && !session.Cts.IsCancellationRequested) await Task.Delay(1);
        session.StopSending = true;
        session.Wake.Set();
        try { if (session.Sender != null) await session.Sender.WaitAsync(TimeSpan.FromSeconds(30)); } catch { }
        lock (_decide) _finishing = true;
        _direct.SendAll(); // no frame may follow the goodbye
        session.Link.TrySend(new PrimaryMessage { Goodbye = new Goodbye { LastSequence = lastSequence, ExitStatus = exitStatus } });
        session.Link.ShutdownSend();
        _state = LinkState.Unprotected; // no failover from here on
        session.Watchdog?.Dispose();
        try { if (session.Receiver != null) await session.Receiver.WaitAsync(TimeSpan.FromSeconds(2)); } catch { }
        session.Cts.Cancel();
    }
}

/// <summary>
/// The whole log of a live replica — header and every record, in order — kept in a file so that a standby can
/// join at any time and receive it from record 1. Appended to by one writer (under the client's lock); read back
/// through a separate handle up to an offset that was flushed.
/// </summary>
public sealed class LogStore : IDisposable
{
    readonly FileStream _w;
    public string Path { get; }
    /// <summary>Bytes appended so far (header included).</summary>
    public long Length { get; private set; }
    public int HeaderLength { get; private set; }
    /// <summary>Sequence number of the last record appended.</summary>
    public ulong LastSequence { get; private set; }
    /// <summary>Records before the first one stored: a replica that joined from a snapshot holds the log after it only.</summary>
    public ulong StartsAfter { get; private init; }

    LogStore(string path, FileStream w, long length, int headerLength, ulong last)
    {
        Path = path;
        _w = w;
        Length = length;
        HeaderLength = headerLength;
        LastSequence = last;
    }

    /// <summary>A new, empty store (the first append is the header).</summary>
    public static LogStore Create(string path)
        => new(path, new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, 1 << 16), 0, 0, 0);

    /// <summary>A store over a log file that already holds a header of <paramref name="headerLength"/> bytes and
    /// records up to <paramref name="lastSequence"/> (a backup's copy of the log it received).</summary>
    public static LogStore Open(string path, int headerLength, ulong lastSequence, ulong startsAfter = 0)
    {
        var w = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite, 1 << 16);
        return new(path, w, w.Length, headerLength, lastSequence) { StartsAfter = startsAfter };
    }

    public void Append(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty) return;
        if (Length == 0) HeaderLength = bytes.Length;
        else
        {
            // the last frame's sequence number (frames are appended whole)
            int off = 0;
            while (off + RecordFrame.HeaderSize <= bytes.Length)
            {
                int len = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes[off..]);
                if (len <= 0 || off + len > bytes.Length) break;
                LastSequence = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes[(off + RecordFrame.SequenceOffset)..]);
                off += len;
            }
        }
        _w.Write(bytes);
        Length += bytes.Length;
    }

    /// <summary>Hands what was appended to the OS, where the reading handle sees it.</summary>
    public void Flush() => _w.Flush();

    /// <summary>The frames between two offsets (both at frame boundaries, flushed) in batches of at most
    /// <paramref name="maxBytes"/> (or one frame when a frame is larger).</summary>
    public IEnumerable<(ulong First, uint Count, byte[] Frames)> ReadBatches(long from, long to, int maxBytes)
    {
        using var r = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16);
        r.Position = from;
        var lenBuf = new byte[RecordFrame.HeaderSize];
        long pos = from;
        var batch = new MemoryStream();
        ulong first = 0;
        uint count = 0;
        while (pos < to)
        {
            r.ReadExactly(lenBuf);
            int len = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(lenBuf);
            if (len < RecordFrame.Overhead || pos + len > to) throw new IOException($"the stored log {Path} is damaged at offset {pos}");
            if (count > 0 && batch.Length + len > maxBytes)
            {
                yield return (first, count, batch.ToArray());
                batch.SetLength(0);
                count = 0;
            }
            if (count == 0) first = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lenBuf.AsSpan(RecordFrame.SequenceOffset));
            batch.Write(lenBuf);
            var rest = new byte[len - lenBuf.Length];
            r.ReadExactly(rest);
            batch.Write(rest);
            count++;
            pos += len;
        }
        if (count > 0) yield return (first, count, batch.ToArray());
    }

    public void Dispose() => _w.Dispose();
}
