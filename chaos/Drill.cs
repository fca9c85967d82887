using System.Diagnostics;
using System.Text.RegularExpressions;
using ReVirt.Log;

namespace ReVirt.Chaos;

/// <summary>Settings of a drill.</summary>
public sealed class DrillSettings
{
    public int Rounds { get; init; } = 6;
    public int Seed { get; init; } = 1;
    public FaultKind[] Faults { get; init; } = ReVirt.Chaos.Faults.All;
    public required IWorkload Workload { get; init; }
    public int TimeoutMs { get; init; } = 1000;
    public int HeartbeatMs { get; init; } = 100;
    public ulong CheckpointInterval { get; init; } = 200_000;
    public required string PrimaryDll { get; init; }
    public required string BackupDll { get; init; }
    /// <summary>Extra arguments for `backup listen` / `primary protect` (test hooks that plant violations).</summary>
    public string[] ExtraBackupArgs { get; init; } = [];
    public string[] ExtraPrimaryArgs { get; init; } = [];
    /// <summary>The guest's virtual network (`chaos drill --net virtual`); null: host sockets on loopback.</summary>
    public IGuestNetwork? Network { get; init; }
    /// <summary>`--hosts netns`: every replica, the clients and etcd on hosts of their own (network namespaces on a
    /// bridge); host faults are real and etcd is the arbiter. Null: everything on this host's loopback.</summary>
    public NetnsHosts? Hosts { get; init; }
    /// <summary>Drills only: a violation to plant, passed as --plant to the replica that commits it (gate-early, ignore-arbiter: primary; ack-early:MS: backup).</summary>
    public string? Plant { get; init; }
    /// <summary>A delay the link has in every round, outside any fault (a long-distance pair).</summary>
    public int BaseLinkDelayMs { get; init; }
    public TimeSpan RoundLimit { get; init; } = TimeSpan.FromSeconds(120);
    public string WorkDir { get; init; } = Path.Combine(Path.GetTempPath(), $"revirt-chaos-{Environment.ProcessId}");
    /// <summary>Called with a one-line status as the round progresses.</summary>
    public Action<string>? Progress { get; init; }
}

/// <summary>One point of a round's timeline.</summary>
public sealed record TimelineEvent(double AtMs, string Lane, string Label);

/// <summary>What one round did and whether every invariant held.</summary>
public sealed class RoundResult
{
    public required RoundObservation Observation { get; init; }
    public required List<InvariantResult> Invariants { get; init; }
    public required string Outcome { get; init; }
    public double? DetectionMs { get; init; }
    public double? DrainMs { get; init; }
    public double? FailoverMs { get; init; }
    public double? ServiceBackMs { get; init; }
    public double DurationMs { get; init; }
    public int Units { get; init; }
    public string UnitName { get; init; } = "lines";
    public List<TimelineEvent> Timeline { get; init; } = new();
    public bool Ok => Invariants.All(i => i.Ok);
    public InvariantResult? FirstViolation => Invariants.FirstOrDefault(i => !i.Ok);
}

/// <summary>
/// The drill engine: each round starts a fresh backup and primary (separate processes) with the replication
/// link through a <see cref="TcpFaultProxy"/>, waits for a random point of progress (from the round's seed),
/// injects one fault, lets the pair finish and checks every invariant on what it observed.
/// </summary>
public sealed class Drill(DrillSettings s)
{
    public static int RoundSeed(int seed, int round) => unchecked(seed + round);

    /// <summary>How long a protected primary's first message may take to reach the backup (the backup's <c>following</c>).</summary>
    static readonly TimeSpan FollowingWithin = TimeSpan.FromSeconds(30);
    /// <summary>How long dotnet-stack may take for the thread stacks of a replica killed as hung.</summary>
    static readonly TimeSpan StacksWithin = TimeSpan.FromSeconds(20);

    public List<RoundResult> Run()
    {
        Directory.CreateDirectory(s.WorkDir);
        var results = new List<RoundResult>();
        for (int i = 0; i < s.Rounds; i++)
            results.Add(RunRound(i, s.Faults[i % s.Faults.Length], RoundSeed(s.Seed, i)));
        return results;
    }

    void Say(string m) => s.Progress?.Invoke(m);

    public RoundResult RunRound(int round, FaultKind fault, int seed)
    {
        var rng = new Random(seed);
        var w = s.Workload;
        // everything random about the round comes from its seed, drawn in a fixed order
        double progress = 0.15 + 0.40 * rng.NextDouble();
        using var run = w.NewRound(seed);
        long threshold = (long)(run.Total * progress);
        int jitterMs = rng.Next(0, 60);
        int delayMs = rng.Next(100, 400);
        int throttleBps = rng.Next(1500, 4000);
        int faultLenMs = rng.Next(1000, 2500);

        string tag = $"r{round}-{seed}";
        string arbiter = Path.Combine(s.WorkDir, $"arbiter-{tag}.lock");
        string logCopy = Path.Combine(s.WorkDir, $"backup-{tag}.rvlog");
        // the pair authenticates with a fresh secret; both use this machine's "/" as the guest root on purpose (the
        // drill's guests write no files), which the backup refuses unless told the storage is shared
        string token = Path.Combine(s.WorkDir, $"token-{tag}");
        ReVirt.Replication.ReplicationProtocol.WriteNewSecret(token);
        File.Delete(arbiter);
        File.Delete(logCopy);
        var clock = Stopwatch.StartNew();
        string label = $"round {round + 1}/{s.Rounds} {Faults.Name(fault)} (seed {seed})";
        Say($"{label}: starting the backup");

        // a planted violation goes to the replica that commits it (a hidden --plant option of that replica)
        string[] plantBackup = s.Plant is { } pb && pb.StartsWith("ack-early:", StringComparison.Ordinal) ? ["--plant", pb] : [];
        string[] plantPrimary = s.Plant is { } pp && plantBackup.Length == 0 ? ["--plant", pp] : [];
        var hosts = s.Hosts;
        // on separate hosts the arbiter is etcd on its own host (a key per round), else a lock file
        string etcdKey = $"revirt/chaos/{Environment.ProcessId}/{tag}";
        string arbiterSpec = hosts != null ? NetnsHosts.ArbiterUrl(etcdKey) : arbiter;
        using var backup = new ReplicaProc("backup", s.BackupDll,
            ["listen", "--listen", hosts != null ? NetnsHosts.ListenUrl(Host.Backup) : "http://127.0.0.1:0", "--token-file", token, "--shared-storage", "--arbiter", arbiterSpec,
             "--timeout-ms", s.TimeoutMs.ToString(), "--primary-silence-ms", s.TimeoutMs.ToString(), "--log", logCopy, .. plantBackup, .. s.Network?.BackupArgs ?? [], .. s.ExtraBackupArgs], clock, hosts?.Ns(Host.Backup));
        try { return RunPair(); }
        finally { hosts?.Heal(); }

        RoundResult RunPair()
        {
        if (!backup.WaitFor(() => backup.Event(ReplicaEvent.Listening) != null, TimeSpan.FromSeconds(60)))
            throw new DrillSetupException($"the backup did not start listening:\n{backup.Stderr}");
        var listening = backup.Event(ReplicaEvent.Listening)!;
        string url = listening.Str("url")!, backupId = listening.Str("id") ?? "";

 // between hosts the link is the bridge (faults at the bridge); on loopback a relay the drill can cut, delay or throttle
        using var proxy = hosts == null ? TcpFaultProxy.To(listening) : null;
        void Normal() { if (proxy == null) return; if (s.BaseLinkDelayMs > 0) proxy.Delay(s.BaseLinkDelayMs); else proxy.Pass(); }
        TcpFaultProxy Proxy() => proxy ?? throw new DrillSetupException("this fault needs the loopback relay (not available with --hosts netns)");
        void CutLink() { if (hosts != null) hosts.Partition(); else Proxy().Cut(); }
        string killed = hosts != null ? "SIGKILL primary host (its processes, its ports down)" : "SIGKILL primary";
        Say($"{label}: starting the primary");
        using var primary = new ReplicaProc("primary", s.PrimaryDll,
            ["protect", .. proxy?.PrimaryArgs ?? ["--backup", url], "--token-file", token, "--arbiter", arbiterSpec, "--timeout-ms", s.TimeoutMs.ToString(), "--heartbeat-ms", s.HeartbeatMs.ToString(),
             "--checkpoint-interval", s.CheckpointInterval.ToString(), "--stats", .. plantPrimary, .. s.Network?.PrimaryArgs ?? [], .. s.ExtraPrimaryArgs, "--", w.Program, .. run.Args], clock, hosts?.Ns(Host.Primary));
        void KillPrimary() { primary.KillHard(); hosts?.KillHost(Host.Primary); }
        if (!primary.WaitFor(() => primary.Event(ReplicaEvent.Protected) != null, TimeSpan.FromSeconds(60)))
            throw new DrillSetupException($"the primary did not get protected:\n{primary.Stderr}\nbackup:\n{backup.Stderr}");
        string primaryId = $"primary:{Environment.MachineName}:{primary.Pid}";
        double protectedAt = primary.Event(ReplicaEvent.Protected)!.AtMs;
        Normal(); // the base link delay starts once the pair is connected (the handshake has its own deadline)
        // a pair is a pair once the backup follows (the primary's first message after the welcome came over the data
        // link): a fault before that tests nothing of replication, and a primary that never gets there is a finding
        if (!backup.WaitFor(() => backup.Event(ReplicaEvent.Following) != null, FollowingWithin))
            throw new DrillSetupException($"the primary was protected but the backup did not start following within {FollowingWithin.TotalSeconds:F0} s " +
                $"(nothing reached it on the data link after the welcome); {primary.HangReport(StacksWithin)}\n{primary.Stderr}\nbackup:\n{backup.Stderr}");

        void Status(string phase) => Say($"{label}: {phase}; t={clock.Elapsed.TotalSeconds:F1}s primary {primary.StdoutLength} B, backup {backup.StdoutLength} B stdout");

        if (run.Begin(primary, clock, TimeSpan.FromSeconds(60)) is { } notServing)
            throw new DrillSetupException($"{notServing}:\n{primary.Stderr}\nbackup:\n{backup.Stderr}");

        // the random moment: a point of progress, then a little jitter
        string waiting = $"waiting for {threshold} {(w is CounterWorkload ? "bytes of output" : "acknowledged SETs")}";
        Status(waiting);
        primary.WaitFor(() => { Status(waiting); return run.Progress(primary) >= threshold; }, s.RoundLimit);
        Thread.Sleep(jitterMs);
        var obsFaultDetail = "";
        double? faultAt = null, faultEnd = null;
        int linkDelay = s.BaseLinkDelayMs;
        bool lateFault = primary.HasExited;
        if (lateFault) obsFaultDetail = "the primary finished before the fault point; ";
        faultAt = clock.Elapsed.TotalMilliseconds;
        if (!lateFault) switch (fault)
        {
            case FaultKind.Kill:
                KillPrimary();
                obsFaultDetail += killed;
                break;
            case FaultKind.LinkDown:
                (hosts ?? throw new DrillSetupException("link-down needs --hosts netns")).LinkDown(Host.Primary);
                obsFaultDetail += "the primary host's links down (its veth and TAP ports at the bridge)";
                break;
            case FaultKind.Freeze:
                primary.Signal(ReplicaProc.SIGSTOP);
                Status("primary frozen (SIGSTOP)");
                backup.WaitFor(() => { Status("primary frozen (SIGSTOP), waiting for the backup"); return backup.Event(ReplicaEvent.TookOver) != null || backup.Event(ReplicaEvent.StoodDown) != null; },
                    TimeSpan.FromMilliseconds(s.TimeoutMs * 4 + 15000));
                Thread.Sleep(300);
                primary.Signal(ReplicaProc.SIGCONT);
                faultEnd = clock.Elapsed.TotalMilliseconds;
                obsFaultDetail += $"SIGSTOP primary, SIGCONT after {faultEnd - faultAt:F0} ms";
                break;
            case FaultKind.Partition:
                CutLink();
                obsFaultDetail += hosts != null ? "partition at the bridge between the primary's and the backup's hosts (both still reach etcd and the clients)" : "link cut (both directions, for good)";
                break;
            case FaultKind.SlowLink:
                Proxy().Delay(s.BaseLinkDelayMs + delayMs);
                linkDelay = s.BaseLinkDelayMs + delayMs;
                primary.WaitFor(() => { Status($"link delayed {delayMs} ms"); return false; }, TimeSpan.FromMilliseconds(faultLenMs));
                Normal();
                faultEnd = clock.Elapsed.TotalMilliseconds;
                obsFaultDetail += $"link delayed {delayMs} ms per chunk for {faultLenMs} ms";
                break;
            case FaultKind.Throttle:
                Proxy().Throttle(throttleBps);
                primary.WaitFor(() => { Status($"link throttled to {throttleBps} B/s"); return false; }, TimeSpan.FromMilliseconds(faultLenMs));
                Normal();
                faultEnd = clock.Elapsed.TotalMilliseconds;
                obsFaultDetail += $"link throttled to {throttleBps} B/s for {faultLenMs} ms";
                break;
            case FaultKind.CutKill:
                {
                    // deterministic evidence for the output rule: nothing acknowledges the log after the cut, so
                    // a correct primary releases nothing beyond what the backup already holds
                    CutLink();
                    long before = primary.StdoutLength;
                    var grew = primary.WaitFor(() => primary.StdoutLength > before, TimeSpan.FromMilliseconds(s.TimeoutMs / 2));
                    KillPrimary();
                    obsFaultDetail += $"link cut, {killed} {clock.Elapsed.TotalMilliseconds - faultAt:F0} ms later{(grew ? " (it released stdout after the cut)" : "")}";
                    break;
                }
            case FaultKind.KillBackup:
                backup.KillHard();
                hosts?.KillHost(Host.Backup);
                obsFaultDetail += hosts != null ? "SIGKILL backup host (its processes, its ports down)" : "SIGKILL backup";
                break;
        }

        // on separate hosts etcd's holder is read as soon as a replica reports its win, while the winner runs and keeps
        // its lease alive: after the round the key may be gone with the lease of a survivor that has exited
        using var roundOver = new CancellationTokenSource();
        var decisionRead = hosts != null ? Task.Run(() => ReadHolderAtDecision(hosts, etcdKey, primary, backup, s.RoundLimit, roundOver.Token)) : null;

        // the client load runs to its end against whichever replica is live, then reads back and shuts the guest down
        var deadline = Stopwatch.StartNew();
        run.Finish(s.RoundLimit, m => Status(m));
        // let the pair finish (bounded)
        while (!(primary.HasExited && backup.HasExited) && deadline.Elapsed < s.RoundLimit)
        {
            Status(primary.HasExited ? "primary gone, backup running" : backup.HasExited ? "backup gone, primary running" : "both running");
            Thread.Sleep(100);
        }
        // a replica still running now is killed as hung: the report says which, the last event it emitted and where
        // its threads were (a round that ends this way has a cause to find, and the process is gone afterwards)
        var hung = new[] { primary, backup }.Where(p => !p.WaitFor(() => p.HasExited, TimeSpan.FromSeconds(1)))
            .Select(p => p.HangReport(StacksWithin)).ToList();
        foreach (var h in hung) Say($"{label}: killing a hung replica: {h.Split('\n')[0]}");
        int? pExit = primary.WaitForExit(TimeSpan.FromSeconds(1));
        int? bExit = backup.WaitForExit(TimeSpan.FromSeconds(1));
        double duration = clock.Elapsed.TotalMilliseconds;
        Status("checking invariants");
        string? holder = null, holderRead = null;
        if (hosts != null)
        {
            roundOver.Cancel();
            var atDecision = decisionRead!.Wait(TimeSpan.FromSeconds(60)) ? decisionRead.Result : ("the read at the decision did not end within 60 s", null);
            hosts.Heal(); // no fault of the round stands between the clients' host and etcd any more
            var after = hosts.ReadKey(etcdKey);
            // the holder now, or at the decision if its lease has gone since (or etcd cannot be asked now); two
            // different holders name no single replica, which one-live-primary reports
            string? first = atDecision.Read?.Value;
            holder = first != null && after.Value != null && first != after.Value ? $"{first}, then {after.Value}" : after.Value ?? first;
            holderRead = $"{atDecision.When}{(atDecision.Read is { } r ? $": {r}" : "")}; after the round: {after}";
        }
        else holder = ReadHolder(arbiter);

        var obs = new RoundObservation
        {
            Round = round,
            Seed = seed,
            Fault = fault,
            FaultDetail = obsFaultDetail,
            FaultAtMs = faultAt,
            FaultEndMs = faultEnd,
            HeartbeatMs = s.HeartbeatMs,
            TimeoutMs = s.TimeoutMs,
            LinkDelayMs = linkDelay,
            PrimaryStdout = primary.Stdout,
            PrimaryChunks = primary.Chunks,
            PrimaryLog = primary.StderrLines,
            PrimaryEvents = primary.Events,
            PrimaryExit = fault is FaultKind.Kill or FaultKind.CutKill && !lateFault ? null : pExit,
            PrimaryKilled = fault is FaultKind.Kill or FaultKind.CutKill && !lateFault,
            PrimaryExitedAtMs = primary.ExitedAtMs,
            PrimaryId = primaryId,
            BackupStdout = backup.Stdout,
            BackupChunks = backup.Chunks,
            BackupLog = backup.StderrLines,
            BackupEvents = backup.Events,
            HearsPrimary = s.Network is VirtualNetwork { HearsPrimary: true },
            BackupExit = fault == FaultKind.KillBackup && !lateFault ? null : bExit,
            BackupKilled = fault == FaultKind.KillBackup && !lateFault,
            BackupExitedAtMs = backup.ExitedAtMs,
            BackupId = backupId,
            ArbiterHolder = holder,
            ArbiterRead = holderRead,
            PrimaryCheckpoints = ReadCheckpoints(logCopy),
            ClientOps = run.Ops.ToList(),
            ReadBack = run.ReadBack,
            ClientErrors = run.Errors,
            Connections = run.Connections,
            KilledAsHung = hung,
        };
        if (lateFault) obs = WithLate(obs);
        var result = Evaluate(obs, w, protectedAt, duration);
        try { File.Delete(arbiter); File.Delete(logCopy); } catch (IOException) { }
        Say($"{label}: {result.Outcome}; {(result.Ok ? "all invariants held" : $"VIOLATION {result.FirstViolation!.Name}: {result.FirstViolation.Detail}")}");
        return result;
        }
    }

    static RoundObservation WithLate(RoundObservation o) { o.FaultDetail = o.FaultDetail.TrimEnd(' ', ';'); return o; }

    /// <summary>Metrics, outcome and timeline of an observed round, plus every invariant's verdict.</summary>
    public static RoundResult Evaluate(RoundObservation o, IWorkload w, double protectedAt, double duration)
    {
        var inv = InvariantChecker.CheckAll(o, w);
        var t = o.Takeover;
        var unprot = o.PrimaryUnprotected;
        double? f = o.FaultAtMs;
        double? Since(double? at) => at is double a && f is double ff ? a - ff : null;
        var detect = new[] { o.BackupDetected?.AtMs, o.PrimaryDetected?.AtMs }.Where(x => x != null).Min();
        double? drain = t?.DrainMs;
        if (drain == null && o.BackupStoodDown?.Num("drainMs") is double sdDrain) drain = sdDrain;
        double? recovered = t?.AtMs ?? unprot?.AtMs;
        double? serviceBack = null;
        if (o.ClientOps.Count > 0 && recovered is double rec)
            serviceBack = o.ClientOps.Where(c => c.Acked && c.EndMs >= rec).Select(c => (double?)c.EndMs).Min(); // the client's first answer from the survivor
        else if (t != null) serviceBack = o.BackupChunks.FirstOrDefault()?.AtMs;
        else if (unprot != null) serviceBack = o.PrimaryChunks.FirstOrDefault(c => c.AtMs >= unprot.AtMs)?.AtMs;
        string outcome = t != null ? "backup took over"
            : unprot != null ? "primary went on unprotected"
            : o.FaultDetail.StartsWith("the primary finished", StringComparison.Ordinal) ? "primary finished before the fault"
            : "no failover needed";

        var tl = new List<TimelineEvent> { new(protectedAt, "primary", "protected") };
        if (f != null) tl.Add(new(f.Value, "fault", o.FaultDetail));
        if (o.FaultEndMs != null) tl.Add(new(o.FaultEndMs.Value, "fault", "fault lifted"));
        if (o.BackupDetected != null) tl.Add(new(o.BackupDetected.AtMs, "backup", "primary lost"));
        if (o.PrimaryDetected != null) tl.Add(new(o.PrimaryDetected.AtMs, "primary", "backup lost"));
        if (t != null) tl.Add(new(t.AtMs, "backup", "took over"));
        if (unprot != null) tl.Add(new(unprot.AtMs, "primary", "unprotected"));
        if (o.PrimaryFenced != null) tl.Add(new(o.PrimaryFenced.AtMs, "primary", "stood down"));
        if (o.BackupStoodDown is { } sdl) tl.Add(new(sdl.AtMs, "backup", "stood down"));
        if (serviceBack != null) tl.Add(new(serviceBack.Value, t != null ? "backup" : "primary", "service back"));
        if (o.PrimaryExitedAtMs != null) tl.Add(new(o.PrimaryExitedAtMs.Value, "primary", o.PrimaryKilled ? "killed" : $"exit {o.PrimaryExit?.ToString() ?? "?"}"));
        if (o.BackupExitedAtMs != null) tl.Add(new(o.BackupExitedAtMs.Value, "backup", o.BackupKilled ? "killed" : $"exit {o.BackupExit?.ToString() ?? "?"}"));
        tl.Sort((a, b) => a.AtMs.CompareTo(b.AtMs));

        return new RoundResult
        {
            Observation = o,
            Invariants = inv,
            Outcome = outcome,
            DetectionMs = Since(detect),
            DrainMs = drain,
            FailoverMs = Since(recovered),
            ServiceBackMs = Since(serviceBack),
            DurationMs = duration,
            Units = w.Units(o.FinalStdout, o),
            UnitName = w.UnitName,
            Timeline = tl,
        };
    }

    /// <summary>Waits (until the round is over, or its limit) for the first replica that reports winning the arbiter
    /// in a failover (the backup's takeover, the primary going on unprotected) and reads etcd's holder then.</summary>
    static (string When, EtcdRead? Read) ReadHolderAtDecision(NetnsHosts hosts, string key, ReplicaProc primary, ReplicaProc backup, TimeSpan limit, CancellationToken over)
    {
        var sw = Stopwatch.StartNew();
        while (!over.IsCancellationRequested && sw.Elapsed < limit)
        {
            if (backup.Event(ReplicaEvent.TookOver) is { } t) return ($"at the backup's takeover (t={t.AtMs / 1000:F1} s)", hosts.ReadKey(key));
            if (primary.Event(ReplicaEvent.Unprotected) is { } u) return ($"as the primary went on unprotected (t={u.AtMs / 1000:F1} s)", hosts.ReadKey(key));
            over.WaitHandle.WaitOne(20);
        }
        return ("no replica reported a win during the round", null);
    }

    static string? ReadHolder(string path)
    {
        try { var text = File.ReadAllText(path); int nl = text.IndexOf('\n'); return nl > 0 ? text[..nl] : text; }
        catch (IOException) { return null; }
    }

    /// <summary>The primary's checkpoints as the backup's log copy holds them (instruction → digest).</summary>
    public static Dictionary<ulong, string> ReadCheckpoints(string logCopy)
    {
        var d = new Dictionary<ulong, string>();
        if (!File.Exists(logCopy)) return d;
        try
        {
            using var r = LogReader.Open(logCopy);
            while (r.TryRead(out var rec))
                if (rec.Kind == RecordKind.Checkpoint)
                {
                    var c = rec.Decode<Checkpoint>();
                    d[c.InstrCount] = Convert.ToHexString(c.StateDigest);
                }
        }
        catch (LogFormatException) { }
        return d;
    }
}

public sealed class DrillSetupException(string message) : Exception(message);
