using System.Text;
using System.Text.Json;

namespace ReVirt.Replication;

/// <summary>
/// What a replica reports to whoever runs it (drills, tests, an operator's tooling): one JSON object per line,
/// <c>{"event": NAME, "unixMs": WALL-CLOCK MS, ...fields}</c>, flushed as it happens. Written to the file or
/// descriptor given by <c>--events FILE|fd:N</c>; the human-readable stderr lines say the same for people, but
/// programs read this. The names are a contract (<see cref="ReplicaEvent"/>); fields are only ever added.
/// </summary>
public sealed class ReplicaEvents : IDisposable
{
    readonly Stream? _out;
    readonly object _lock = new();

    ReplicaEvents(Stream? output) => _out = output;

    /// <summary>Reports nothing.</summary>
    public static readonly ReplicaEvents None = new(null);

    /// <summary>
    /// Opens <paramref name="spec"/>: null → <see cref="None"/>; <c>fd:N</c> → descriptor N (inherited from the
    /// parent); anything else → a file path (created or appended to).
    /// </summary>
    /// <exception cref="ArgumentException">An unusable spec, with the reason.</exception>
    public static ReplicaEvents Open(string? spec)
    {
        if (string.IsNullOrEmpty(spec)) return None;
        try
        {
            if (spec.StartsWith("fd:", StringComparison.Ordinal))
            {
                if (!int.TryParse(spec.AsSpan(3), out int fd) || fd < 0) throw new ArgumentException($"--events {spec}: not a descriptor number");
                return new ReplicaEvents(new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, 1));
            }
            return new ReplicaEvents(new FileStream(spec, FileMode.Append, FileAccess.Write, FileShare.ReadWrite, 1));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"--events {spec}: {e.Message}");
        }
    }

    /// <summary>Reports event <paramref name="name"/> with its fields (strings, numbers, booleans, null).</summary>
    public void Emit(string name, params (string Key, object? Value)[] fields)
    {
        if (_out == null) return;
        var buf = new MemoryStream();
        using (var w = new Utf8JsonWriter(buf))
        {
            w.WriteStartObject();
            w.WriteString("event", name);
            w.WriteNumber("unixMs", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            foreach (var (k, v) in fields)
            {
                switch (v)
                {
                    case null: w.WriteNull(k); break;
                    case string s: w.WriteString(k, s); break;
                    case bool b: w.WriteBoolean(k, b); break;
                    case int i: w.WriteNumber(k, i); break;
                    case long l: w.WriteNumber(k, l); break;
                    case ulong u: w.WriteNumber(k, u); break;
                    case double d: w.WriteNumber(k, d); break;
                    default: w.WriteString(k, v.ToString()); break;
                }
            }
            w.WriteEndObject();
        }
        buf.WriteByte((byte)'\n');
        lock (_lock)
        {
            try { _out.Write(buf.GetBuffer(), 0, (int)buf.Length); _out.Flush(); }
            catch (IOException) { } // a reader that went away costs the replica nothing
        }
    }

    public void Dispose() { lock (_lock) _out?.Dispose(); }

    /// <summary>Asks <paramref name="arbiter"/> to let <paramref name="owner"/> go live from <paramref name="term"/>
    /// and reports the request and its answer (<see cref="ReplicaEvent.ArbiterAsked"/>): a drill checks that a replica
    /// the arbiter did not grant its term never asks again.</summary>
    /// <param name="won">Runs when the arbiter granted the term, before anything is reported: what must follow the
    /// grant with nothing in between (a primary's final release of held output).</param>
    public ReVirt.Arbiter.ArbiterResult Ask(ReVirt.Arbiter.IArbiter arbiter, string owner, long term, Action<ReVirt.Arbiter.ArbiterResult>? won = null)
    {
        var r = arbiter.TryAcquire(owner, term);
        if (r.Won) won?.Invoke(r);
        Emit(ReplicaEvent.ArbiterAsked, ("fromTerm", term), ("won", r.Won), ("term", r.Term), ("holder", r.Holder), ("error", r.Error));
        return r;
    }
}

/// <summary>The event names replicas report (see docs/ARCHITECTURE.md, "Replica events").</summary>
public static class ReplicaEvent
{
    // backup
    public const string Listening = "listening";              // url, id, dataPort
    public const string RefusedPrimary = "refused-primary";   // peer, reason
    public const string Following = "following";              // primary, log, arbiter (the primary's first message after the welcome came)
    public const string HandshakeAbandoned = "handshake-abandoned"; // reason (the stream ended before the primary's first message: waiting for a primary again)
    public const string PrimaryLost = "primary-lost";         // reason, held, longestSilenceMs (between the primary's messages since the session's first one), silences (how many reached 25, 50, ... ms), silenceBoundMs, longestSilenceAtMs (when the longest ended, ms after the session's first message), longSilences (the first 16 of at least 100 ms, "AT:MS ..."), ackFailed (why acknowledgements had stopped going out before the loss, null: they went out; the link was read to its end all the same)
    public const string Announced = "announced";             // term, afterLostMs (a backup that won the arbiter as it lost its primary) the interface's address announced on its own TAP device before the drain ended
    public const string HeardFrames = "heard-frames";         // read, atLoss, largestBurst, kept, overwritten, given, raised, own, foreign, old, givenData, givenAck, givenControl, givenOther (`--hears-primary`: the frames heard on the primary's wire while following, once the live stack has judged every one kept; HeardCounts, NetStack.JudgeHeard)
    public const string GoLive = "go-live";                   // continuedMs, interfaceUpMs, servingMs, attachedMs, timersMs, doneMs, nicDropMs, nicRepairMs, nicSendMs, nicFrames, cpuMs (a takeover's go-live steps, ms after the arbiter's grant; the nic* fields: the virtual interface's own steps, durations; cpuMs: the replay thread's CPU time meanwhile: GoLiveSteps)
    public const string RecordingContinued = "recording-continued"; // storeMs, writerMs, boundaryMs, startLiveMs, prefixBytes, digestCarried, tickerReady (a survivor with standbys records on: the steps of its continuation, ms; digestCarried: the log's digest came from the running digest of the copy, not from reading it again)
    public const string TookOver = "took-over";               // drainMs, instruction, record, resumeStdoutAt, logStdoutBytes, resumeStderrAt, checkpointInstruction, checkpointDigest
    public const string TakeoverDescriptor = "takeover-descriptor"; // detail
    public const string StoodDown = "stood-down";             // reason, drainMs
    public const string ReplayMatched = "replay-matched";     // instructions, records, checkpoints, outputs, status
    public const string Diverged = "diverged";                // message
    public const string PrimaryFinished = "primary-finished"; // status, lastSequence, longestSilenceMs, silences, silenceBoundMs, longestSilenceAtMs, longSilences (the primary said goodbye)
    public const string CaughtUp = "caught-up";               // records, ms (a standby that joined a live replica replayed the log it had then)
    // primary
    public const string Protected = "protected";              // backup, url, term, dataLink (unix: the same-host socket; tcp)
    public const string Refused = "refused";                  // reason
    public const string BackupLost = "backup-lost";           // reason, acked, backup, joining (a standby lost while joining that cannot go live)
    public const string Unprotected = "unprotected";          // arbiter, term, arbiterAsked (false: a standby lost while joining, which cannot go live: the term stays)
    public const string FinalRelease = "final-release";       // arbiter, heldBytes (the guest ended: the primary releases its last output holding the arbiter)
    public const string Fenced = "fenced";                    // reason, term
    public const string PulseStarted = "pulse-started";     // backup, intervalMs, realtime (SCHED_RR granted), raised (real-time or nice -10), tid (the native liveness pulse on the data link: LinkPulse)
    public const string PulseUnavailable = "pulse-unavailable"; // backup, reason (no liveness pulse: a TLS link, or it could not start; only the managed heartbeats)
    public const string PulseEnded = "pulse-ended";         // backup, pulses, maxLateMs (the longest the pulse thread woke after a pulse was due), lockWaits (pulses that waited for another message's write), realtime, raised, error (the negative errno of the write that ended it, 0: none), heartbeatMaxLateMs (the managed heartbeat thread's longest delay past a heartbeat's due time), gcPauseMs (the process's garbage collection pauses in all), gcs (collections of generation 0/1/2)
    public const string ExitWatched = "exit-watched";         // backup, watcherPid (a process beside this replica shuts the data link down the moment this process starts to exit: ExitWatch)
    public const string ExitUnwatched = "exit-unwatched";     // backup, reason (no exit watch: the backup learns of this process's death when the kernel closes its sockets)
    public const string ReplayStalled = "replay-stalled";    // replayed, trailMs, waitedMs, backup (the backup's replay reported no progress for the timeout while the guest waited for it: the bound on replay lag is suspended until the replay is within it again)
    // a live replica (a primary, or a backup that took over) and its standbys (--standby)
    public const string Reprotected = "reprotected";          // backup, url, term, backlogRecords, backlogBytes, unprotectedMs, mode, snapshotSequence, dataLink
    public const string StandbyRefused = "standby-refused";   // url, reason (each time a standby's answer changes)
    public const string StandbyHolds = "standby-holds";       // backup, records, transferMs (the standby acknowledged the log up to the join point: it may go live from here)
    public const string JoinPoint = "join-point";             // live replica: backup, sequence, unheldMs (the standby acknowledged its snapshot or backlog: output is held again from record sequence+1; it was released unheld for unheldMs while the standby joined). Standby: sequence, held (it must hold the log up to sequence before it may go live)
    public const string JoinTimedOut = "join-timed-out";     // live replica: backup, url, joiningMs, joinTimeoutMs, acked, joinPoint (null: not told one) (a standby answered but did not hold the log up to its join point within --join-timeout-ms: dropped, reported as backup-lost, the next standby asked)
    public const string JoinStalled = "join-stalled";         // live replica: backup, url, idleMs, joiningMs, joinProgressMs, lastProgress, snapshotBytesRestored, acked, joinPoint (null: not told one) (a standby's join made no progress for --join-progress-ms: no snapshot chunk taken by the link, no more snapshot bytes restored, no further record acknowledged: dropped, reported as backup-lost, the next standby asked)
    public const string JoinIncomplete = "join-incomplete";   // standby: reason, held, joinPoint (null: not named yet), liveSequence (it lost the live replica before holding the log up to the join point, so it cannot go live: the pair is lost, as an unprotected replica's death is)
    // snapshot transfer (a standby that shares the guest's files joins from a machine snapshot, not from record 1)
    public const string SnapshotTaken = "snapshot-taken";     // sequence, pauseMs, pages (the guest's pause for the copy-on-write capture)
    public const string SnapshotSent = "snapshot-sent";       // backup, sequence, bytes, chunks, encodeMs, sendMs (they overlap: streamed), mbPerS, digest (the state digest encoded)
    public const string SnapshotUnsupported = "snapshot-unsupported"; // reason (the guest holds state a snapshot cannot carry: the log is sent instead)
    public const string SnapshotRestored = "snapshot-restored"; // sequence, bytes, receiveMs (first to last chunk, restoring meanwhile), restoreMs (after the last chunk), digest, stdoutAt (a standby verified and restored one)
    public const string SnapshotRefused = "snapshot-refused"; // reason, receivedBytes (a standby refused a snapshot: damaged, cut off, or not the state it claims)
    public const string Planted = "planted";                  // violation (drills only)
    public const string FileReleaseFailed = "file-release-failed"; // change, record, errno (shared storage: a held file write or change of names/size the storage refused when released; the guest was told it succeeded and learns of it at its next fsync or close of the description)
    public const string ArbiterAsked = "arbiter-asked";       // fromTerm, won, term (won: the new term; lost: the newest the arbiter named, 0 when it could not be asked), holder, error (each request to go live: a backup losing its primary, a live replica losing its backup or releasing its last output)
    public const string Stats = "stats";                      // --stats figures: batches, handedOffBatches (batches of live records the sender thread sent for their producers before the link went direct), outputsHeld, outputHoldP50Ms/P99Ms, socketSendsHeld, socketHoldP50Ms/P99Ms, creditWaits, acks, lagP50Ms/P99Ms, roundTripP50Ms/P99Ms (from the send of the newest batch each ack covered), shipWaitP50Ms/P99Ms (how long the oldest record holding output of each batch waited on the guest thread before it was shipped), releaseP50Ms/P99Ms (from an ack's arrival at the gate to the last host send it made), records, logBytes, replayTrailP50Ms/P99Ms, throttledMs, replayThrottledMs, replayStalls
    // both
    public const string MetricsListening = "metrics-listening"; // url (--metrics-listen: where the Prometheus scrape endpoint answers, its real port)
    public const string Metrics = "metrics";                  // --metrics-listen, as the replica ends: logBytes, failovers, reprotections, lag, heldBytes, ackLatencyCount, ackLatencySumMs (MetricsEndpoint.EventFields)
    public const string Exit = "exit";                        // status
}
