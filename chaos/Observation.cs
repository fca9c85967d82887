
namespace ReVirt.Chaos;

/// <summary>The faults a drill can inject, one per round.</summary>
public enum FaultKind { Kill, Freeze, Partition, SlowLink, Throttle, KillBackup, CutKill, LinkDown, PartitionPrimary }

public static class Faults
{
    public static readonly FaultKind[] All = [FaultKind.Kill, FaultKind.Freeze, FaultKind.Partition, FaultKind.SlowLink, FaultKind.Throttle, FaultKind.KillBackup, FaultKind.CutKill];

    /// <summary>The faults of `--hosts netns` (real host faults; no relay to delay or throttle the link).</summary>
    public static readonly FaultKind[] OnHosts = [FaultKind.Kill, FaultKind.Freeze, FaultKind.Partition, FaultKind.LinkDown, FaultKind.KillBackup, FaultKind.CutKill];

    /// <summary>The faults of `--cycles --hosts netns`: those of <see cref="OnHosts"/> and partition-primary (the live
    /// replica cut from etcd and its follower, which the follower wins: a cycle knows which host is live).</summary>
    public static readonly FaultKind[] CyclesOnHosts = [.. OnHosts, FaultKind.PartitionPrimary];

    public static string Name(FaultKind k) => k switch
    {
        FaultKind.Kill => "kill",
        FaultKind.Freeze => "freeze",
        FaultKind.Partition => "partition",
        FaultKind.SlowLink => "slow-link",
        FaultKind.Throttle => "throttle",
        FaultKind.KillBackup => "kill-backup",
        FaultKind.CutKill => "cut-kill",
        FaultKind.LinkDown => "link-down",
        FaultKind.PartitionPrimary => "partition-primary",
        _ => k.ToString(),
    };

    public static string Describe(FaultKind k) => k switch
    {
        FaultKind.Kill => "SIGKILL the primary (--hosts netns: its whole host, whose ports also go down)",
        FaultKind.LinkDown => "--hosts netns: the primary host's links go down at the bridge (silence; nothing is reset)",
        FaultKind.Freeze => "SIGSTOP the primary (a hang) until the backup has taken over, then SIGCONT it: it must not come back as a second primary",
        FaultKind.Partition => "cut the replication link in both directions (nothing is closed; bytes just stop; --hosts netns: the bridge stops forwarding between the replicas' hosts, both still reach etcd and the clients)",
        FaultKind.SlowLink => "delay every chunk on the replication link by 100-400 ms for a while",
        FaultKind.Throttle => "throttle the replication link to a few KB/s for a while",
        FaultKind.KillBackup => "SIGKILL the backup: the primary may go on unprotected only after winning the arbiter",
        FaultKind.PartitionPrimary => "--cycles --hosts netns: the live replica's host cut from etcd's and its follower's (both directions, silence; it still reaches the clients): it cannot renew or win the arbiter, the follower wins and takes over, and the cut-off replica must stand down (fenced) without releasing output",
        FaultKind.CutKill => "cut the replication link, then SIGKILL the primary as soon as it releases more stdout (or after half the timeout): the backup takes over holding only the log that crossed before the cut, so any output the primary released after the cut without an acknowledgement shows",
        _ => k.ToString(),
    };

    /// <summary>Parses a comma-separated list of fault names; throws <see cref="ArgumentException"/> naming a bad one.
    /// <paramref name="onHosts"/>: for `--hosts netns` (its own list: <see cref="OnHosts"/>, with <paramref name="cycles"/>
    /// <see cref="CyclesOnHosts"/>).</summary>
    public static FaultKind[] Parse(string list, bool onHosts = false, bool cycles = false)
    {
        // the cycles on loopback know every name, so that the cycles drill can say why one needs the hosts
        var known = cycles ? (onHosts ? CyclesOnHosts : [.. All, FaultKind.LinkDown, FaultKind.PartitionPrimary]) : onHosts ? OnHosts : All;
        var r = new List<FaultKind>();
        foreach (var raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (raw is "all") { r.AddRange(known); continue; }
            if (raw is "join" or "new-backup" or "rejoin")
                throw new ArgumentException($"fault '{raw}': a new backup joining a live replica is what `chaos drill --cycles N` drills (kill, takeover, a standby joins, again)");
            var k = known.Where(f => Name(f) == raw).Select(f => (FaultKind?)f).FirstOrDefault()
                ?? throw new ArgumentException(onHosts
                    ? $"fault '{raw}' is not available with --hosts netns (known: {string.Join(", ", known.Select(Name))}, all)"
                    : $"unknown fault '{raw}' (known: {string.Join(", ", known.Select(Name))}, all; link-down needs --hosts netns)");
            r.Add(k);
        }
        if (r.Count == 0) throw new ArgumentException("no faults given");
        return r.ToArray();
    }
}

/// <summary>A client request against a service workload and what came back; <paramref name="Conn"/>: which client
/// connection sent it (-1: not said, e.g. the read-back after the load).</summary>
public sealed record ClientOp(double StartMs, double EndMs, string Op, string Key, string? Value, bool Acked, string? Reply, int Conn = -1);

/// <summary>
/// Everything the drill observed in one round: the replicas' stdout (with read times), their stderr lines, exit
/// codes, the arbiter's holder, the primary's checkpoint digests (from the backup's log copy), client requests.
/// The invariant checkers are pure functions of this.
/// </summary>
public sealed class RoundObservation
{
    public int Round { get; init; }
    public int Seed { get; init; }
    public FaultKind Fault { get; init; }
    public string FaultDetail { get; set; } = "";
    public double? FaultAtMs { get; set; }
    public double? FaultEndMs { get; set; }
    public int HeartbeatMs { get; init; } = 100;
    public int TimeoutMs { get; init; } = 1000;
    /// <summary>The longest delay the link added during the round (bounds the last round trip).</summary>
    public int LinkDelayMs { get; set; }

    public byte[] PrimaryStdout { get; init; } = [];
    public OutputChunk[] PrimaryChunks { get; init; } = [];
    /// <summary>The primary's stderr lines (for people: reports).</summary>
    public LogLine[] PrimaryLog { get; init; } = [];
    /// <summary>What the primary reported on its event stream: the checkers' evidence.</summary>
    public ReplicaEventRecord[] PrimaryEvents { get; init; } = [];
    public int? PrimaryExit { get; init; }
    public bool PrimaryKilled { get; init; }
    public double? PrimaryExitedAtMs { get; init; }
    public string PrimaryId { get; init; } = "";

    public byte[] BackupStdout { get; init; } = [];
    public OutputChunk[] BackupChunks { get; init; } = [];
    public LogLine[] BackupLog { get; init; } = [];
    public ReplicaEventRecord[] BackupEvents { get; init; } = [];
    public int? BackupExit { get; init; }
    public bool BackupKilled { get; init; }
    public double? BackupExitedAtMs { get; init; }
    public string BackupId { get; init; } = "";
    /// <summary>Replicas the drill killed because they were still running after the round (not the fault's kills): for
    /// each, which one, the last event it emitted and, when dotnet-stack is installed, its thread stacks.</summary>
    public List<string> KilledAsHung { get; init; } = new();

    /// <summary>Who holds the arbiter, as read (null: nobody, or it could not be read: <see cref="ArbiterRead"/>).</summary>
    public string? ArbiterHolder { get; init; }
    /// <summary>How <see cref="ArbiterHolder"/> was read and what each read found (etcd: at the survivor's decision and
    /// after the round; why it is null); null for a lock file.</summary>
    public string? ArbiterRead { get; init; }
    /// <summary>Checkpoints the primary wrote (instruction count → state digest, hex), read from the backup's log copy.</summary>
    public Dictionary<ulong, string> PrimaryCheckpoints { get; init; } = new();
    public List<ClientOp> ClientOps { get; init; } = new();
    /// <summary>After the run: key → value read back from whichever replica finished (service workloads).</summary>
    public Dictionary<string, string?>? ReadBack { get; init; }
    /// <summary>What went wrong on the client side of a service workload.</summary>
    public IReadOnlyList<string> ClientErrors { get; init; } = [];
    /// <summary>The load's client connections (service workloads), counted by the clients.</summary>
    public ConnectionStats? Connections { get; init; }
    /// <summary>The backup heard the primary's wire (`--hears-primary` with a port mirror).</summary>
    public bool HearsPrimary { get; init; }

    // ---------------------------------------------------------------- derived facts

    public sealed record TakeoverFacts(double AtMs, double DrainMs, ulong Instruction, ulong Record, long ResumeAt, long LogHolds, ulong? CheckpointAt, string? Digest);

    /// <summary>The backup's took-over event; null when it did not take over.</summary>
    public TakeoverFacts? Takeover => BackupEvent(ReplicaEvent.TookOver) is { } e
        ? new TakeoverFacts(e.AtMs, e.Num("drainMs") ?? 0, e.ULong("instruction") ?? 0, e.ULong("record") ?? 0,
            e.Long("resumeStdoutAt") ?? 0, e.Long("logStdoutBytes") ?? 0, e.ULong("checkpointInstruction"), e.Str("checkpointDigest"))
        : null;

    public ReplicaEventRecord? BackupEvent(string name) => BackupEvents.FirstOrDefault(e => e.Name == name);
    public ReplicaEventRecord? PrimaryEvent(string name) => PrimaryEvents.FirstOrDefault(e => e.Name == name);

    /// <summary>The primary lost its backup, won the arbiter and went on unprotected.</summary>
    public ReplicaEventRecord? PrimaryUnprotected => PrimaryEvent(ReplicaEvent.Unprotected);
    public ReplicaEventRecord? PrimaryFenced => PrimaryEvent(ReplicaEvent.Fenced);
    /// <summary>What the frames the backup heard came to at its takeover (`--hears-primary`); null without one.</summary>
    public ReplicaEventRecord? BackupHeard => BackupEvent(ReplicaEvent.HeardFrames);
    public ReplicaEventRecord? BackupDetected => BackupEvent(ReplicaEvent.PrimaryLost);
    public ReplicaEventRecord? PrimaryDetected => PrimaryEvent(ReplicaEvent.BackupLost);
    public ReplicaEventRecord? BackupStoodDown => BackupEvent(ReplicaEvent.StoodDown);

    /// <summary>The guest's output as the outside world saw it: the primary's up to where the backup resumed, then the backup's.</summary>
    public byte[] FinalStdout
    {
        get
        {
            var t = Takeover;
            if (t == null) return PrimaryStdout;
            int r = (int)Math.Clamp(t.ResumeAt, 0, PrimaryStdout.Length);
            return [.. PrimaryStdout.AsSpan(0, r), .. BackupStdout];
        }
    }

    /// <summary>When byte <paramref name="offset"/> of a stream was read (released), or null.</summary>
    public static double? ReleasedAt(OutputChunk[] chunks, long offset)
    {
        foreach (var c in chunks) if (offset >= c.Offset && offset < c.Offset + c.Length) return c.AtMs;
        return null;
    }
}
