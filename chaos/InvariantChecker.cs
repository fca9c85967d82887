namespace ReVirt.Chaos;

/// <summary>The verdict of one invariant in one round.</summary>
public sealed record InvariantResult(string Name, bool Ok, string Detail)
{
    public static InvariantResult Pass(string name, string detail) => new(name, true, detail);
    public static InvariantResult Fail(string name, string detail) => new(name, false, detail);
}

/// <summary>
/// The drill's invariants, as pure functions over a <see cref="RoundObservation"/>. Each names the evidence it
/// used, so a failure says what was seen, not just that something is off.
/// </summary>
public static class InvariantChecker
{
    public const string AckedKept = "acked-writes-kept";
    public const string OutputCommit = "output-commit";
    public const string Continuity = "output-continuity";
    public const string OnePrimary = "one-live-primary";
    public const string Digest = "takeover-digest";
    public const string Workload = "workload-correct";
    public const string ConnectionsSurvive = "connections-survive";
    public static readonly string[] Names = [AckedKept, OutputCommit, Continuity, OnePrimary, Digest, Workload, ConnectionsSurvive];

    /// <summary>Slack for the drill's own pipe reading when comparing release times with log-line times.</summary>
    public const double ReadSlackMs = 150;

    public static List<InvariantResult> CheckAll(RoundObservation o, IWorkload w) =>
    [
        AckedWritesKept(o),
        OutputCommitHeld(o, w),
        OutputContinuous(o),
        ExactlyOneLivePrimary(o),
        DigestAtTakeover(o),
        WorkloadCorrect(o, w),
        ConnectionsSurvived(o),
    ];

    /// <summary>
    /// With the guest's network inside the machine (`--net virtual`), a client connection is replicated state: each
    /// client's one connection lasts the whole round, across any takeover — none breaks (a reset, an end of stream, an
    /// error) and none is opened again. Host sockets die with the replica that holds them, so the invariant does not
    /// apply to them (the drill's clients reconnect there, which workload-correct covers).
    /// </summary>
    public static InvariantResult ConnectionsSurvived(RoundObservation o)
    {
        var c = o.Connections;
        if (c == null) return InvariantResult.Pass(ConnectionsSurvive, "not applicable: the workload has no client connections");
        if (!c.VirtualNet) return InvariantResult.Pass(ConnectionsSurvive, $"not applicable: host sockets (--net host), {c.Connects} connects by {c.Clients} clients");
        string across = o.Takeover != null ? " across the takeover" : "";
        if (Broken(c, across) is { } broken) return InvariantResult.Fail(ConnectionsSurvive, broken);
        return InvariantResult.Pass(ConnectionsSurvive, $"all {c.Clients} client connections lasted the round{across}, none reset");
    }

    /// <summary>What broke the rule that each client keeps its one connection (null: nothing): a connection broken or
    /// replaced, or a reply of another kind than its request's (a reply lost or sent twice shifts the stream).</summary>
    public static string? Broken(ConnectionStats c, string across)
    {
        if (c.Breaks > 0) return $"{c.Breaks} of the {c.Clients} clients' connections broke (reset, end of stream, error or no reply within the time-out){across}";
        if (c.Connects != c.Clients) return $"{c.Clients} clients opened {c.Connects} connections{across}: a connection was replaced";
        if (c.Mismatched > 0) return $"{c.Mismatched} replies were of another kind than their request's{across}: a reply was lost or sent twice";
        return null;
    }

    /// <summary>
    /// No acknowledged write is lost. Every stdout byte the primary released was acknowledged to the world, so it
    /// must be in the final output at the same offset; every request a client saw acknowledged must be readable
    /// afterwards with its value.
    /// </summary>
    public static InvariantResult AckedWritesKept(RoundObservation o)
    {
        var p = o.PrimaryStdout;
        var f = o.FinalStdout;
        if (p.Length > f.Length)
            return InvariantResult.Fail(AckedKept, $"the primary released {p.Length} stdout bytes but the final output has only {f.Length}: {p.Length - f.Length} acknowledged bytes lost");
        int diff = FirstDifference(p, f.AsSpan(0, p.Length));
        if (diff >= 0)
            return InvariantResult.Fail(AckedKept, $"stdout byte {diff} released by the primary differs from the final output there: released output was rewritten");
        // a GET during the load that did not return a value the client had seen acknowledged before it asked
        var lastAcked = new Dictionary<string, ClientOp>();
        foreach (var op in o.ClientOps.OrderBy(c => c.StartMs))
        {
            if (op.Op == "GET" && op.Reply != null && lastAcked.TryGetValue(op.Key, out var set) && set.EndMs <= op.StartMs && op.Reply != "VALUE " + set.Value)
                return InvariantResult.Fail(AckedKept, $"acknowledged SET {op.Key}={set.Value} (OK at {set.EndMs:F0} ms) is lost: a GET at {op.StartMs:F0} ms returned '{op.Reply}'");
            if (op.Op == "SET" && op.Acked && (!lastAcked.TryGetValue(op.Key, out var prev) || prev.EndMs <= op.EndMs)) lastAcked[op.Key] = op;
        }
        int acked = 0;
        if (o.ReadBack != null)
        {
            var last = new Dictionary<string, string?>();
            foreach (var op in o.ClientOps.Where(c => c.Acked && c.Op == "SET").OrderBy(c => c.EndMs)) last[op.Key] = op.Value;
            foreach (var (k, v) in last)
            {
                acked++;
                if (!o.ReadBack.TryGetValue(k, out var got))
                    return InvariantResult.Fail(AckedKept, $"acknowledged SET {k}={v} could not be read back (no replica answered)");
                if (got != v)
                    return InvariantResult.Fail(AckedKept, $"acknowledged SET {k}={v} is lost: reading it back gave {(got == null ? "NOTFOUND" : got)}");
            }
        }
        return InvariantResult.Pass(AckedKept, $"{p.Length} released stdout bytes all in the final output" + (o.ReadBack != null ? $"; {acked} acknowledged writes read back" : ""));
    }

    /// <summary>
    /// No output is released before its acknowledgement: at takeover, the primary cannot have released more stdout
    /// than the backup held in its log (a backup that acks before it holds, or a gate that opens early, breaks this).
    /// </summary>
    public static InvariantResult OutputCommitHeld(RoundObservation o, IWorkload? w = null)
    {
        var t = o.Takeover;
        if (t == null)
        {
            if (o.PrimaryUnprotected != null) return InvariantResult.Pass(OutputCommit, "no takeover; the primary released freely only after winning the arbiter");
            return InvariantResult.Pass(OutputCommit, "no takeover: every release was acknowledged by the backup");
        }
        var early = o.PrimaryChunks.Where(c => c.Offset + c.Length > t.LogHolds).ToArray();
        if (o.PrimaryStdout.Length > t.LogHolds)
            return InvariantResult.Fail(OutputCommit,
                $"the primary released {o.PrimaryStdout.Length} stdout bytes but the backup's log held only {t.LogHolds} when it took over: {o.PrimaryStdout.Length - t.LogHolds} bytes left before the backup held them" +
                (early.Length > 0 ? $" (first at {early[0].AtMs:F0} ms)" : ""));
        // a reply is output too: every SET the old primary acknowledged before the fault was in the backup's log
        if (w != null && o.ClientOps.Count > 0 && o.FaultAtMs is double fault)
        {
            var f = o.FinalStdout;
            var held = w.LoggedKeys(f.AsSpan(0, (int)Math.Clamp(t.LogHolds, 0, f.Length)));
            if (held != null)
            {
                var before = o.ClientOps.Where(c => c.Op == "SET" && c.Acked && c.EndMs <= fault).ToArray();
                if (before.FirstOrDefault(c => !held.Contains(c.Key)) is { } unheld)
                    return InvariantResult.Fail(OutputCommit, $"the client got OK for SET {unheld.Key} at {unheld.EndMs:F0} ms, before the fault, but the backup's log did not hold it when it took over: a reply left before the backup held its request");
                return InvariantResult.Pass(OutputCommit, $"released {o.PrimaryStdout.Length} <= held {t.LogHolds} stdout bytes at takeover; all {before.Length} SETs acknowledged before the fault were in the backup's log");
            }
        }
        return InvariantResult.Pass(OutputCommit, $"released {o.PrimaryStdout.Length} <= held {t.LogHolds} stdout bytes at takeover");
    }

    /// <summary>
    /// Guest output is continuous across a failover: the backup resumes at or before the end of what the primary
    /// released (no gap); any repeat is byte-identical and lies within the last round trip before the fault.
    /// </summary>
    public static InvariantResult OutputContinuous(RoundObservation o)
    {
        var t = o.Takeover;
        if (t == null) return InvariantResult.Pass(Continuity, "no takeover: one continuous stream from the primary");
        var p = o.PrimaryStdout;
        var b = o.BackupStdout;
        if (t.ResumeAt > p.Length)
            return InvariantResult.Fail(Continuity, $"gap: the backup resumed at stdout byte {t.ResumeAt} but the primary released only {p.Length}; bytes {p.Length}..{t.ResumeAt - 1} never reached the world");
        if (t.ResumeAt < 0) return InvariantResult.Fail(Continuity, $"bad resume offset {t.ResumeAt}");
        int overlap = p.Length - (int)t.ResumeAt;
        if (overlap == 0) return InvariantResult.Pass(Continuity, $"resumed exactly at byte {t.ResumeAt}: no gap, no repeat");
        if (b.Length < overlap)
            return InvariantResult.Fail(Continuity, $"the primary released {overlap} bytes past the resume offset {t.ResumeAt} but the backup printed only {b.Length}: its repeat is short");
        int d = FirstDifference(p.AsSpan((int)t.ResumeAt), b.AsSpan(0, overlap));
        if (d >= 0)
            return InvariantResult.Fail(Continuity, $"the repeat differs at stdout byte {t.ResumeAt + d}: the backup re-emitted other bytes than the primary released");
        // a repeat is allowed only for what the primary released in its last round trip before the fault
        if (o.FaultAtMs is double fault)
        {
            double window = o.HeartbeatMs + 2.0 * o.LinkDelayMs + 2 * ReadSlackMs;
            var at = RoundObservation.ReleasedAt(o.PrimaryChunks, t.ResumeAt);
            if (at is double a && a < fault - window)
                return InvariantResult.Fail(Continuity, $"the backup repeated {overlap} bytes from offset {t.ResumeAt}, released at {a:F0} ms, more than one round trip ({window:F0} ms) before the fault at {fault:F0} ms");
        }
        return InvariantResult.Pass(Continuity, $"repeat of {overlap} byte-identical bytes from offset {t.ResumeAt}, within the last round trip");
    }

    /// <summary>
    /// Exactly one live primary at any time: the backup and the old primary never both go on (both winning,
    /// both finishing the guest, or the old primary releasing output after the backup went live), and the arbiter
    /// holds the one that did.
    /// </summary>
    public static InvariantResult ExactlyOneLivePrimary(RoundObservation o)
    {
        var t = o.Takeover;
        var unprot = o.PrimaryUnprotected;
        if (t != null && unprot != null)
            return InvariantResult.Fail(OnePrimary, $"two live primaries: the backup took over at {t.AtMs:F0} ms and the primary went on unprotected at {unprot.AtMs:F0} ms");
        if (t != null)
        {
            var late = o.PrimaryChunks.Where(c => c.AtMs > t.AtMs + ReadSlackMs).ToArray();
            if (late.Length > 0)
                return InvariantResult.Fail(OnePrimary, $"two live primaries: the old primary released {late.Sum(c => c.Length)} stdout bytes (first at {late[0].AtMs:F0} ms) after the backup went live at {t.AtMs:F0} ms");
            if (o.PrimaryExit == 0 && !o.PrimaryKilled)
                return InvariantResult.Fail(OnePrimary, "two live primaries: the backup took over and the old primary also ran the guest to its end (exit 0)");
            if (o.ArbiterHolder != null && o.BackupId != "" && o.ArbiterHolder != o.BackupId)
                return InvariantResult.Fail(OnePrimary, $"the backup took over but the arbiter is held by {o.ArbiterHolder}");
            string fate = o.PrimaryKilled ? "was killed" : o.PrimaryFenced != null ? $"stood down (exit {o.PrimaryExit?.ToString() ?? "?"})" : $"exited {o.PrimaryExit?.ToString() ?? "?"}";
            return InvariantResult.Pass(OnePrimary, $"the backup alone went live (arbiter: {o.ArbiterHolder ?? "none"}{(o.ArbiterRead != null ? $"; {o.ArbiterRead}" : "")}); the old primary {fate}");
        }
        if (unprot != null)
        {
            if (o.BackupEvent(ReplicaEvent.TookOver) != null)
                return InvariantResult.Fail(OnePrimary, "two live primaries: the backup reports a takeover while the primary went on unprotected");
            if (o.BackupChunks.Length > 0)
                return InvariantResult.Fail(OnePrimary, $"two live primaries: the backup printed {o.BackupStdout.Length} stdout bytes while the primary went on unprotected");
            if (o.ArbiterHolder != null && o.PrimaryId != "" && o.ArbiterHolder != o.PrimaryId)
                return InvariantResult.Fail(OnePrimary, $"the primary went on unprotected but the arbiter is held by {o.ArbiterHolder}");
            return InvariantResult.Pass(OnePrimary, $"the primary alone went on, after winning the arbiter (arbiter: {o.ArbiterHolder ?? "none"}{(o.ArbiterRead != null ? $"; {o.ArbiterRead}" : "")}); the backup {(o.BackupKilled ? "was killed" : $"exited {o.BackupExit?.ToString() ?? "?"}")}");
        }
        if (o.BackupChunks.Length > 0)
            return InvariantResult.Fail(OnePrimary, $"the backup printed {o.BackupStdout.Length} stdout bytes without taking over");
        return InvariantResult.Pass(OnePrimary, "no failover: the primary stayed the only live replica");
    }

    /// <summary>
    /// The state at takeover equals the primary's: the backup verified the primary's checkpoints in lockstep, and
    /// the digest it reports at takeover is the one the primary wrote into the log for that instruction.
    /// </summary>
    public static InvariantResult DigestAtTakeover(RoundObservation o)
    {
        var div = o.BackupEvent(ReplicaEvent.Diverged);
        if (div != null) return InvariantResult.Fail(Digest, $"the backup diverged from the primary: {div.Str("message")}");
        var t = o.Takeover;
        if (t == null)
        {
            if (o.BackupEvent(ReplicaEvent.ReplayMatched) != null) return InvariantResult.Pass(Digest, "no takeover; the backup's replay matched the primary to the end");
            return InvariantResult.Pass(Digest, "no takeover");
        }
        if (t.CheckpointAt is not ulong at || t.Digest == null)
            return InvariantResult.Pass(Digest, $"took over at instruction {t.Instruction} before any checkpoint to compare (no divergence reported)");
        if (!o.PrimaryCheckpoints.TryGetValue(at, out var mine))
            return o.PrimaryCheckpoints.Count == 0
                ? InvariantResult.Pass(Digest, $"took over at instruction {t.Instruction}; digest {Short(t.Digest)} at checkpoint {at} (the primary's log was not available to compare)")
                : InvariantResult.Fail(Digest, $"the backup reports a checkpoint at instruction {at} that the primary never wrote");
        if (!string.Equals(mine, t.Digest, StringComparison.OrdinalIgnoreCase))
            return InvariantResult.Fail(Digest, $"state digest at instruction {at}: backup {Short(t.Digest)}, primary {Short(mine)}");
        return InvariantResult.Pass(Digest, $"digest {Short(mine)} at instruction {at} equals the primary's");
    }

    /// <summary>The workload finished correctly: the final output is complete and right, and the replica that finished exited with the guest's status 0.</summary>
    public static InvariantResult WorkloadCorrect(RoundObservation o, IWorkload w)
    {
        var t = o.Takeover;
        int? finisher = t != null ? o.BackupExit : o.PrimaryExit;
        string who = t != null ? "the backup (live)" : "the primary";
        if (t == null && o.PrimaryKilled && o.BackupEvent(ReplicaEvent.ReplayMatched) != null)
        {
            // killed after its guest ended: harmless when it had released everything (the backup's replay of the
            // complete log then ends with the guest's status); otherwise nobody releases the rest
            if (w.Validate(o.FinalStdout, o) is { } lost)
                return InvariantResult.Fail(Workload, $"the primary was killed after its guest ended but before it released all output ({o.PrimaryStdout.Length} stdout bytes out: {lost}); the backup replayed the complete log to the exit without going live, so nobody released the rest");
            finisher = o.BackupExit;
            who = "the backup (replaying the complete log after the primary was killed at its end)";
        }
        bool killedByFault = t != null ? o.BackupKilled : o.PrimaryKilled;
        if (finisher != 0)
            return InvariantResult.Fail(Workload, $"{who} ended with status {finisher?.ToString() ?? Killed(o, killedByFault ? null : t != null ? "backup" : "primary")}, not the guest's 0");
        if (t == null && o.PrimaryUnprotected == null && !o.BackupKilled && !o.PrimaryKilled && o.BackupExit != 0)
            return InvariantResult.Fail(Workload, $"the backup ended with status {o.BackupExit?.ToString() ?? Killed(o, "backup")} although the pair stayed intact");
        var err = w.Validate(o.FinalStdout, o);
        if (err != null) return InvariantResult.Fail(Workload, err);
        return InvariantResult.Pass(Workload, $"{w.Units(o.FinalStdout, o)} {w.UnitName} complete and correct; {who} exited 0");
    }

    /// <summary>How a replica without an exit status ended: killed by the round's fault (<paramref name="replica"/> null), or
    /// killed by the drill as hung, with the last event it emitted.</summary>
    static string Killed(RoundObservation o, string? replica)
    {
        if (replica == null) return "(killed by the fault)";
        string? why = o.KilledAsHung.FirstOrDefault(h => h.StartsWith(replica, StringComparison.Ordinal));
        return why == null ? "(killed by the drill: hung)" : $"(killed by the drill as hung: {why.Split('\n')[0]})";
    }

    static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        int i = a[..n].CommonPrefixLength(b[..n]);
        return i < n ? i : (a.Length == b.Length ? -1 : n);
    }

    static string Short(string hex) => hex.Length > 16 ? hex[..16] : hex;
}
