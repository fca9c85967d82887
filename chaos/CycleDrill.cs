using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace ReVirt.Chaos;

/// <summary>Settings of <c>chaos drill --cycles N</c>.</summary>
public sealed class CycleSettings
{
    public int Cycles { get; init; } = 3;
    public int Seed { get; init; } = 1;
    /// <summary>The ticker guest (guests/src/ticker.c); with <see cref="Network"/>, the kvserver guest.</summary>
    public required string Guest { get; init; }
    /// <summary>`--net virtual`: the guest is kvserver serving on its virtual interface in this network (made with a
    /// device per endpoint slot, <c>VirtualNetwork.Create(Slots)</c>; on separate hosts the
    /// <see cref="Hosts"/> themselves, a TAP port per replica host), under an open-ended load of
    /// <see cref="Connections"/> clients that keep one connection each across every cycle; null: the ticker.</summary>
    public IGuestNetwork? Network { get; init; }
    /// <summary>`--net virtual`: the clients (one connection each) and each one's pause between two requests.</summary>
    public int Connections { get; init; } = 4;
    public int PauseMs { get; init; } = 5;
    /// <summary>`--net virtual`: how long a client waits for a reply before it counts its connection broken.</summary>
    public int ReplyTimeoutMs { get; init; } = 30_000;
    public int SleepMs { get; init; } = 20;
    public int Work { get; init; } = 20000;
    public int TimeoutMs { get; init; } = 2000;
    /// <summary>How long a follower waits for a silent live replica before it drains and asks the arbiter (its
    /// <c>--primary-silence-ms</c>); null: 3/2 of <see cref="TimeoutMs"/>, the live replica's wait for a silent
    /// follower. The difference decides a partition between the two when both still reach the arbiter: the live
    /// replica asks first and keeps serving (<see cref="CycleInvariants.PartitionKept"/>); a takeover after a kill or
    /// a freeze waits that much longer.</summary>
    public int? FollowerSilenceMs { get; init; }
    public int HeartbeatMs { get; init; } = 100;
    public ulong CheckpointInterval { get; init; } = 2_000_000;
    public required string PrimaryDll { get; init; }
    public required string BackupDll { get; init; }
    /// <summary>`--hosts netns`: the first primary, each endpoint slot's replicas, the clients and etcd on hosts of
    /// their own (made with <c>NetnsHosts.Create(standbys: Slots - 1)</c>); etcd is the arbiter and the
    /// faults are real host faults. Null: every replica on this host's loopback, a lock file as the arbiter.</summary>
    public NetnsHosts? Hosts { get; init; }
    /// <summary>The fault of cycle i is <c>Faults[i % Faults.Length]</c>; which kinds apply: <see cref="CycleDrill.Applicable"/>.</summary>
    public FaultKind[] Faults { get; init; } = [FaultKind.Kill];
    /// <summary>Endpoint slots the replicas rotate through (<c>--slots</c>, <see cref="CycleDrill.MinSlots"/> to
    /// <see cref="CycleDrill.MaxSlots"/>): each listener is given the others as standbys.</summary>
    public int Slots { get; init; } = CycleDrill.DefaultSlots;
    /// <summary>Drills only: a violation planted in a live replica (its hidden <c>--plant</c>: gate-early,
    /// ignore-arbiter, stale-term, snapshot-omits-page): the first primary's, or with <see cref="PlantCycle"/> the
    /// replica that takes over in that cycle.</summary>
    public string? Plant { get; init; }
    /// <summary>Which replica carries <see cref="Plant"/>: 0 the first primary; N &gt;= 1 the replica that takes over in
    /// cycle N (cycle N's follower: the first backup when N = 1, else the standby that joined in cycle N - 1), which
    /// carries it from its takeover on (it is a follower before, where these plants do nothing). Cycle N's fault must
    /// be one whose follower takes over (<see cref="CycleDrill.WhyNotPlantCycle"/>).</summary>
    public int PlantCycle { get; init; }
    /// <summary>Bound on each wait for a named replica event (takeover, a standby following, catching up).</summary>
    public TimeSpan StepLimit { get; init; } = TimeSpan.FromSeconds(120);
    public string WorkDir { get; init; } = Path.Combine(Path.GetTempPath(), $"revirt-cycles-{Environment.ProcessId}");
    public Action<string>? Progress { get; init; }
    /// <summary>Called with the cycle's number (from 1) right after its fault was injected, before the drill waits for
    /// the decision: a test plants a violation there (e.g. resets the clients' connections during a takeover).</summary>
    public Action<int>? AfterFault { get; init; }
}

/// <summary>One cycle: a fault takes a replica of the pair out (the live one: its follower takes over; the follower:
/// the live one goes on after winning the arbiter), and a new standby joins the survivor.</summary>
public sealed class CycleRecord
{
    public int Cycle { get; init; }
    /// <summary>The cycle's fault (<see cref="Faults.Name"/>) and what the drill did.</summary>
    public string Fault { get; init; } = "kill";
    public string FaultDetail { get; set; } = "";
    /// <summary>The replica the cycle took out (killed, or replaced and stood down) and the one live after it.</summary>
    public required string Killed { get; init; }
    public required string Survivor { get; init; }
    public required string Joiner { get; set; }
    /// <summary>Standbys of this cycle that ended before they held the survivor's log (name: why), each replaced on
    /// its slot (<see cref="CycleDrill.MaxJoinAttempts"/>).</summary>
    public List<string> JoinRetries { get; } = new();
    /// <summary>The endpoint slot (and with --hosts netns the host) the cycle's new standby started on.</summary>
    public int JoinerSlot { get; init; }
    /// <summary>"took over" (the follower went live) or "went on unprotected" (the live replica won the arbiter).</summary>
    public string Outcome { get; init; } = "took over";
    /// <summary>How the replica taken out ended: killed by the fault, stood down (its exit status), or killed by the
    /// drill when it was still running after the decision.</summary>
    public string? ReplacedFate { get; set; }
    /// <summary>The arbiter's holder read just after the decision (etcd's key, or the lock file of the survivor's term).</summary>
    public string? ArbiterHolder { get; set; }
    /// <summary>The fault's moment (the drill's clock).</summary>
    public double KillAtMs { get; init; }
    /// <summary>The fault → the survivor's decision: the follower's took-over event, or the live replica's
    /// unprotected event (it lost its follower and won the arbiter).</summary>
    public double? TakeoverMs { get; set; }
    /// <summary>When the decision came (the drill's clock).</summary>
    public double? TookOverAtMs { get; set; }
    public double? DrainMs { get; set; }
    public long? Term { get; set; }
    /// <summary>The survivor's decision → its reprotected event (the loser ended, the new standby started, answered
    /// and was welcomed).</summary>
    public double? JoinMs { get; set; }
    /// <summary>The survivor's reprotected → standby-holds (the standby acknowledged the log up to its join point: it may go live).</summary>
    public double? TransferMs { get; set; }
    /// <summary>The standby's following → caught-up (it replayed the backlog: from record 1 after a log join, from
    /// the snapshot after a snapshot join).</summary>
    public double? CatchUpMs { get; set; }
    /// <summary>How the standby joined: "snapshot" (a machine snapshot, then the log after it) or "log" (from record 1).</summary>
    public string? JoinMode { get; set; }
    /// <summary>A snapshot join: the guest's pause for the copy-on-write capture, and the snapshot's size.</summary>
    public double? PauseMs { get; set; }
    public long? SnapshotBytes { get; set; }
    public long? BacklogRecords { get; set; }
    public long? BacklogBytes { get; set; }
    /// <summary>The world's stall (<see cref="CycleInvariants.Stall"/>): the clients' replies with `--net virtual`, the
    /// ticker's stdout otherwise; with `--net virtual` also the clients' connections at the cycle's end and the SETs
    /// acknowledged by then.</summary>
    public double? StallMs { get; set; }
    /// <summary><see cref="CycleInvariants.LongestSilence"/> of the same output from the kill to the cycle's end (a
    /// survivor that held output while its standby joined shows it here).</summary>
    public double? LongestSilenceMs { get; set; }
    public ConnectionStats? Connections { get; set; }
    public long? AckedSets { get; set; }
    public List<InvariantResult> Invariants { get; set; } = new();
    public bool Ok => Invariants.All(i => i.Ok);
}

/// <summary>What the replicas of one cycles drill did: each replica's stdout, the offset its output starts at, its events.</summary>
public sealed class ReplicaOutput
{
    public required string Name { get; init; }
    public required byte[] Stdout { get; init; }
    /// <summary>Offset in the guest's output where this replica's stdout starts (0 for the first primary; the
    /// took-over event's resumeStdoutAt for a replica that took over).</summary>
    public ulong? ResumeAt { get; init; }
    public required ReplicaEventRecord[] Events { get; init; }
    /// <summary>When each piece of <see cref="Stdout"/> was read (offsets within this replica's stdout).</summary>
    public OutputChunk[] Chunks { get; init; } = [];
    public bool Killed { get; init; }
}

/// <summary>
/// The invariants of a cycles drill, pure functions of the replicas' outputs and events (tested by planting
/// violations, like <see cref="InvariantChecker"/>).
/// </summary>
public static class CycleInvariants
{
    public const string AckedKept = "acked-writes-kept-across-cycles";
    public const string Continuity = "output-continuity-across-cycles";
    public const string OnePerTerm = "one-live-replica-per-term";
    public const string OutputCommit = "output-commit-across-cycles";
    public const string ArbiterHolder = "arbiter-names-survivor";
    public const string Faithful = "whole-log-replays-faithfully";
    public const string ConnectionsSurvive = InvariantChecker.ConnectionsSurvive;
    public const string ClientsServed = "clients-served";
    public const string StandsDown = "replaced-replica-stands-down";
    public const string StaleStaysDown = "stale-replica-stays-down";
    public const string SnapshotFaithful = "snapshots-match-their-digest";
    public const string PartitionKept = "partition-kept-by-live-replica";

    /// <summary>
    /// The clients' stall of a failover: from the last reply (of all clients) before the survivor took over
    /// (<paramref name="tookOverAtMs"/>) to the first one after it. Replies already on their way when the replica died
    /// still arrive after the kill; the silence that follows them is the failover's (takeover, the interface brought
    /// up, the clients' retransmission). Null when no reply came before or after.
    /// </summary>
    public static double? Stall(IReadOnlyList<ClientOp> ops, double tookOverAtMs) => Stall(Replies(ops, double.PositiveInfinity), tookOverAtMs);

    /// <summary><see cref="Stall"/> over the times (ms, ascending) at which the world saw output.</summary>
    public static double? Stall(double[] t, double tookOverAtMs)
    {
        int after = Array.FindIndex(t, x => x > tookOverAtMs);
        return after > 0 ? t[after] - t[after - 1] : null;
    }

    /// <summary>
    /// The longest silence between two consecutive replies (of all clients) that ends after
    /// <paramref name="killAtMs"/> and by <paramref name="untilMs"/>: the failover's <see cref="Stall"/> or, when
    /// longer, a pause that came later in the cycle (the survivor holds output while a standby joins). Null when no
    /// reply came in the window.
    /// </summary>
    public static double? LongestSilence(IReadOnlyList<ClientOp> ops, double killAtMs, double untilMs) => LongestSilence(Replies(ops, untilMs), killAtMs);

    /// <summary><see cref="LongestSilence"/> over the times (ms, ascending) at which the world saw output.</summary>
    public static double? LongestSilence(double[] t, double killAtMs)
    {
        double? worst = null;
        for (int i = 1; i < t.Length; i++)
            if (t[i] > killAtMs) worst = Math.Max(worst ?? 0, t[i] - t[i - 1]);
        return worst;
    }

    /// <summary>The ticker: when stdout bytes reached the world (each chunk a replica's stdout delivered), up to
    /// <paramref name="untilMs"/>, ascending.</summary>
    public static double[] OutputTimes(IEnumerable<OutputChunk> chunks, double untilMs) =>
        chunks.Where(c => c.Length > 0 && c.AtMs <= untilMs).Select(c => c.AtMs).Order().ToArray();

    static double[] Replies(IReadOnlyList<ClientOp> ops, double untilMs) =>
        ops.Where(o => o.Reply != null && o.Op is "SET" or "GET" && o.EndMs <= untilMs).Select(o => o.EndMs).Order().ToArray();

    /// <summary>
    /// `--net virtual`: every client kept its one connection through the cycles so far (none broken, none replaced, no
    /// reply lost or sent twice: <see cref="InvariantChecker.Broken"/>), and each got an answer on it after the last
    /// takeover (<paramref name="tookOverAtMs"/>), so the connection was served by the new live replica, not just left
    /// idle. <paramref name="span"/> says where ("by the end of cycle 2", "across all 5 cycles").
    /// </summary>
    public static InvariantResult ConnectionsSurvived(ConnectionStats? c, IReadOnlyList<ClientOp> ops, double? tookOverAtMs, string span)
    {
        if (c == null) return InvariantResult.Pass(ConnectionsSurvive, "not applicable: no client connections (the ticker guest)");
        if (InvariantChecker.Broken(c, " " + span) is { } broken) return InvariantResult.Fail(ConnectionsSurvive, broken);
        if (tookOverAtMs is double took)
            for (int k = 0; k < c.Clients; k++)
                if (!ops.Any(o => o.Conn == k && o.Acked && o.EndMs > took))
                    return InvariantResult.Fail(ConnectionsSurvive, $"client {k} got no answer on its connection after the takeover at {took:F0} ms ({span})");
        return InvariantResult.Pass(ConnectionsSurvive, $"all {c.Clients} clients kept their one connection {span}: no reset, no reply lost or doubled{(tookOverAtMs != null ? ", each answered after the takeover" : "")}");
    }

    /// <summary>The clients' load ended as it should: no client error (a reply that did not come, an unexpected
    /// answer, a read-back cut off) and the guest answered SHUTDOWN with BYE.</summary>
    public static InvariantResult LoadServed(IReadOnlyList<string> errors, IReadOnlyList<ClientOp> ops)
    {
        if (errors.Count > 0) return InvariantResult.Fail(ClientsServed, $"the clients: {errors[0]}" + (errors.Count > 1 ? $" (and {errors.Count - 1} more)" : ""));
        if (!ops.Any(o => o.Op == "SHUTDOWN" && o.Acked)) return InvariantResult.Fail(ClientsServed, "SHUTDOWN was not answered BYE");
        return InvariantResult.Pass(ClientsServed, $"{ops.Count(o => o.Acked && o.Op is "SET" or "GET")} requests answered, no client error, SHUTDOWN answered BYE");
    }

    /// <summary>The ticker's lines: <c>tick i acc ...</c> numbered from 0 without a hole or a repeat; null when they are.</summary>
    public static string? TickerLines(string[] lines)
    {
        for (int i = 0; i < lines.Length; i++)
            if (!lines[i].StartsWith($"tick {i} acc ", StringComparison.Ordinal))
                return $"line {i} of the final output is '{lines[i]}', not tick {i}";
        return null;
    }

    /// <summary>
    /// kvserver's lines (<c>set KEY</c> for each SET it served): well formed and no key twice (each client sends each
    /// key once and, keeping its connection, never again: a key logged twice is a request served twice). With the
    /// clients' requests (<paramref name="ops"/>, complete only once the load is over), also: no key the clients
    /// never sent, and every SET answered OK logged.
    /// </summary>
    public static Func<string[], string?> KvLines(IReadOnlyList<ClientOp>? ops = null) => lines =>
    {
        var seen = new HashSet<string>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith("set ", StringComparison.Ordinal) || lines[i].Length == 4) return $"line {i} of the final output is '{lines[i]}', not 'set KEY'";
            if (!seen.Add(lines[i][4..])) return $"line {i} logs '{lines[i]}' a second time: a request served twice";
        }
        if (ops == null) return null;
        var sent = ops.Where(o => o.Op == "SET").Select(o => o.Key).ToHashSet();
        if (seen.FirstOrDefault(k => !sent.Contains(k)) is { } stray) return $"the output logs 'set {stray}', which no client sent";
        if (ops.FirstOrDefault(o => o.Op == "SET" && o.Acked && !seen.Contains(o.Key)) is { } lost) return $"SET {lost.Key} was answered OK at {lost.EndMs:F0} ms but the output never logs it";
        return null;
    };

    /// <summary>The guest's output as the world saw it: each replica's stdout placed at its resume offset.</summary>
    public static byte[] Stitch(IReadOnlyList<ReplicaOutput> replicas)
    {
        var f = new List<byte>();
        foreach (var r in replicas)
        {
            if (r.ResumeAt is not { } at) continue;
            if ((int)at > f.Count) return [.. f]; // a gap: OutputContinuous reports it
            f.RemoveRange((int)at, f.Count - (int)at);
            f.AddRange(r.Stdout);
        }
        return [.. f];
    }

    /// <summary>Every byte any replica released (acknowledged to the world) is in the final output at its offset.</summary>
    /// <remarks>With a client load (<paramref name="ops"/>), also every reply the clients got: a GET never returns
    /// other than the value of a SET acknowledged before it, and every acknowledged SET reads back
    /// (<paramref name="readBack"/>, after the load) with its value (<see cref="InvariantChecker.AckedWritesKept"/>).</remarks>
    public static InvariantResult AckedWritesKept(IReadOnlyList<ReplicaOutput> replicas, byte[] final, IReadOnlyList<ClientOp>? ops = null, Dictionary<string, string?>? readBack = null)
    {
        foreach (var r in replicas)
        {
            if (r.ResumeAt is not { } at) continue;
            if (at + (ulong)r.Stdout.Length > (ulong)final.Length)
                return InvariantResult.Fail(AckedKept, $"{r.Name} released output up to byte {at + (ulong)r.Stdout.Length} but the final output has {final.Length}: acknowledged bytes lost");
            if (!final.AsSpan((int)at, r.Stdout.Length).SequenceEqual(r.Stdout))
                return InvariantResult.Fail(AckedKept, $"{r.Name}'s released output (from byte {at}) differs from the final output there: released output was rewritten");
        }
        string clients = "";
        if (ops != null)
        {
            var replies = InvariantChecker.AckedWritesKept(new RoundObservation { ClientOps = [.. ops], ReadBack = readBack });
            if (!replies.Ok) return InvariantResult.Fail(AckedKept, replies.Detail);
            clients = $"; {ops.Count(o => o.Op == "SET" && o.Acked)} SETs acknowledged, every GET answered with the acknowledged value" + (readBack != null ? $", {readBack.Count} keys read back" : "");
        }
        return InvariantResult.Pass(AckedKept, $"every byte released by {replicas.Count(r => r.ResumeAt != null)} replicas is in the final {final.Length}-byte output at its offset{clients}");
    }

    /// <summary>
    /// The output has no gap and no reordering: each replica that took over resumes at or before the end of what its
    /// predecessors released, and the lines are right for the guest (<paramref name="lineCheck"/>; default
    /// <see cref="TickerLines"/>: numbered 0, 1, 2, ... without a hole or a repeat). Mid-run (<paramref name="ended"/>
    /// false) the live replica's output may end mid-line (its pipe is read as it comes); once the pair has finished it may not.
    /// </summary>
    public static InvariantResult OutputContinuous(IReadOnlyList<ReplicaOutput> replicas, byte[] final, Func<string[], string?>? lineCheck = null, bool ended = true)
    {
        ulong end = 0;
        foreach (var r in replicas)
        {
            if (r.ResumeAt is not { } at) continue;
            if (at > end) return InvariantResult.Fail(Continuity, $"{r.Name} resumed the output at byte {at}, but only {end} bytes had been released before: a gap");
            end = Math.Max(end, at + (ulong)r.Stdout.Length);
        }
        var lines = Encoding.UTF8.GetString(final).Split('\n');
        int n = lines.Length - 1;
        if ((lineCheck ?? TickerLines)(lines[..^1]) is { } bad) return InvariantResult.Fail(Continuity, bad);
        if (ended && lines[^1].Length != 0) return InvariantResult.Fail(Continuity, $"the output ends mid-line: '{lines[^1]}'");
        return InvariantResult.Pass(Continuity, $"{n} lines in order across {replicas.Count(r => r.ResumeAt != null)} replicas, no gap");
    }

    /// <summary>
    /// Every arbiter decision won a new term, terms only grow, and no replica was live while another was: each
    /// takeover came only after a fault had taken a live replica out (<paramref name="faults"/>: when the drill killed,
    /// froze, cut off or partitioned the live replica; the n-th takeover needs n such faults before it), and a live
    /// replica that went on without its lost follower (<c>unprotected</c>, after asking the arbiter) did so in a term
    /// of its own. A failed join spends no term and is not a decision.
    /// </summary>
    public static InvariantResult OneLivePerTerm(IReadOnlyList<ReplicaOutput> replicas, IReadOnlyList<(string Name, double KilledAtMs)> faults)
    {
        long last = 0;
        var decisions = replicas.SelectMany(r => r.Events
                .Where(e => e.Name == ReplicaEvent.TookOver || e.Name == ReplicaEvent.Unprotected && e.Bool("arbiterAsked") != false)
                .Select(e => (r.Name, e)))
            .OrderBy(x => x.e.AtMs).ToList();
        int takeovers = 0;
        foreach (var (name, e) in decisions)
        {
            long term = e.Long("term") ?? 0;
            string what = e.Name == ReplicaEvent.TookOver ? "took over" : "went on unprotected";
            if (term <= last) return InvariantResult.Fail(OnePerTerm, $"{name} {what} in term {term}, not after term {last}: a term was won twice");
            last = term;
            if (e.Name != ReplicaEvent.TookOver) continue;
            takeovers++;
            if (faults.Count(k => k.KilledAtMs <= e.AtMs) >= takeovers) continue;
            return faults.Count < takeovers
                ? InvariantResult.Fail(OnePerTerm, $"{name} took over at {e.AtMs:F0} ms although no live replica had been killed: two live replicas")
                : InvariantResult.Fail(OnePerTerm, $"{name} took over at {e.AtMs:F0} ms, before {faults[takeovers - 1].Name} was killed at {faults[takeovers - 1].KilledAtMs:F0} ms");
        }
        var fenced = replicas.Where(r => r.Events.Any(e => e.Name == ReplicaEvent.Fenced)).Select(r => r.Name).ToList();
        return InvariantResult.Pass(OnePerTerm, $"{decisions.Count} arbiter decisions ({takeovers} takeovers) in terms 1..{last}, each takeover after its predecessor was taken out{(fenced.Count > 0 ? $"; fenced: {string.Join(", ", fenced)}" : "")}");
    }

    /// <summary>
    /// The output rule held at every takeover (<paramref name="takeovers"/>: which replica replaced which): the
    /// replaced replica released the guest's output only up to what its successor's log held when it took over (the
    /// took-over event's <c>logStdoutBytes</c>: a gate that releases before the acknowledgement breaks this), and it
    /// released nothing once the successor was live (beyond the drill's pipe-reading slack,
    /// <see cref="InvariantChecker.ReadSlackMs"/>: a frozen or cut-off replica that comes back and goes on is a second
    /// live replica).
    /// </summary>
    public static InvariantResult OutputCommitHeld(IReadOnlyList<ReplicaOutput> replicas, IEnumerable<(string Replaced, string Survivor)> takeovers)
    {
        int n = 0;
        foreach (var (replacedName, survivorName) in takeovers)
        {
            var old = replicas.FirstOrDefault(r => r.Name == replacedName);
            var survivor = replicas.FirstOrDefault(r => r.Name == survivorName);
            var took = survivor?.Events.FirstOrDefault(e => e.Name == ReplicaEvent.TookOver);
            if (old?.ResumeAt is not ulong at || took == null) continue;
            long held = took.Long("logStdoutBytes") ?? 0, released = (long)at + old.Stdout.Length;
            if (released > held)
            {
                var first = old.Chunks.FirstOrDefault(c => (long)at + c.Offset + c.Length > held);
                return InvariantResult.Fail(OutputCommit, $"{old.Name} released the guest's output up to byte {released}, but {survivorName}'s log held only {held} bytes when it took over at {took.AtMs:F0} ms: " +
                    $"{released - held} bytes left before the follower held them{(first != null ? $" (first at {first.AtMs:F0} ms)" : "")}");
            }
            var late = old.Chunks.Where(c => c.AtMs > took.AtMs + InvariantChecker.ReadSlackMs).ToArray();
            if (late.Length > 0)
                return InvariantResult.Fail(OutputCommit, $"two live replicas: {old.Name} released {late.Sum(c => c.Length)} stdout bytes (first at {late[0].AtMs:F0} ms) after {survivorName} went live at {took.AtMs:F0} ms");
            n++;
        }
        return InvariantResult.Pass(OutputCommit, $"{n} takeover{(n == 1 ? "" : "s")}: each replaced replica released no more than its successor's log held, and nothing once the successor was live");
    }

    /// <summary>The arbiter names the cycle's survivor: the holder read just after its decision (etcd's key, or the
    /// lock file of its term) is the survivor's id (<paramref name="holder"/> null: nobody, or it could not be read,
    /// which <paramref name="how"/> says).</summary>
    public static InvariantResult ArbiterNamesSurvivor(string survivor, string survivorId, string? holder, string how)
    {
        if (holder == survivorId) return InvariantResult.Pass(ArbiterHolder, $"the arbiter names {survivor} ({survivorId}); {how}");
        return InvariantResult.Fail(ArbiterHolder, holder == null
            ? $"the arbiter names nobody after {survivor} went live ({how})"
            : $"{survivor} ({survivorId}) went live but the arbiter is held by {holder} ({how})");
    }

    /// <summary>
    /// The replica a cycle took out and that was still running (frozen and woken, cut off, partitioned away: not
    /// killed by the fault) ended by itself, saying so (<c>fenced</c> or <c>stood-down</c>), and made no decision of
    /// its own after the fault (no <c>unprotected</c> after asking the arbiter, no <c>took-over</c>): it never went
    /// on alone beside its successor. <paramref name="killedByFault"/>: it was killed by the fault (not applicable);
    /// <paramref name="killedByDrill"/>: it was still running when the drill's bound on standing down ran out.
    /// </summary>
    public static InvariantResult ReplacedStandsDown(ReplicaOutput replaced, double faultAtMs, bool killedByFault, bool killedByDrill)
    {
        if (killedByFault) return InvariantResult.Pass(StandsDown, $"not applicable: {replaced.Name} was killed by the fault");
        var after = replaced.Events.Where(e => e.AtMs >= faultAtMs).ToArray();
        if (after.FirstOrDefault(e => e.Name == ReplicaEvent.TookOver || e.Name == ReplicaEvent.Unprotected && e.Bool("arbiterAsked") != false) is { } went)
            return InvariantResult.Fail(StandsDown, $"{replaced.Name} {(went.Name == ReplicaEvent.TookOver ? "took over" : "went on alone (unprotected)")} in term {went.Long("term")} at {went.AtMs:F0} ms after the fault at {faultAtMs:F0} ms took it out, instead of standing down");
        if (after.FirstOrDefault(e => e.Name is ReplicaEvent.Fenced or ReplicaEvent.StoodDown) is not { } down)
            return InvariantResult.Fail(StandsDown, $"{replaced.Name} did not stand down after the fault at {faultAtMs:F0} ms (no fenced or stood-down event; last event: {replaced.Events.LastOrDefault()?.Name ?? "none"}){(killedByDrill ? "; the drill killed it when its bound ran out" : "")}");
        if (killedByDrill)
            return InvariantResult.Fail(StandsDown, $"{replaced.Name} said {down.Name} at {down.AtMs:F0} ms but was still running when the drill's bound ran out");
        return InvariantResult.Pass(StandsDown, $"{replaced.Name} {down.Name} at {down.AtMs:F0} ms ({down.Str("reason")}) without going on alone");
    }

    /// <summary>
    /// A replica the arbiter did not grant a term (it refused, naming a newer one, or could not be asked) never asks
    /// again (<c>arbiter-asked</c> events): such a replica is stale, and a correct one stops there; one that asks to
    /// go live again from its old term is reported, with whether the arbiter refused it (it must) or granted it.
    /// </summary>
    public static InvariantResult StaleReplicaStaysDown(IReadOnlyList<ReplicaOutput> replicas)
    {
        int asked = 0, refused = 0;
        foreach (var r in replicas)
        {
            ReplicaEventRecord? denied = null;
            foreach (var e in r.Events.Where(e => e.Name == ReplicaEvent.ArbiterAsked))
            {
                asked++;
                if (denied != null)
                    return InvariantResult.Fail(StaleStaysDown, $"{r.Name} asked the arbiter to go live from term {e.Long("fromTerm")} at {e.AtMs:F0} ms after it had not been granted term {denied.Long("fromTerm") + 1} at {denied.AtMs:F0} ms ({Answer(denied)}): " +
                        $"a stale replica tried to go live in an old term; the arbiter {(e.Bool("won") == true ? "GRANTED it" : $"refused it ({Answer(e)})")}");
                if (e.Bool("won") != true) { denied = e; refused++; }
            }
        }
        return InvariantResult.Pass(StaleStaysDown, $"{asked} requests to the arbiter, {refused} not granted, and no replica asked again after that");
    }

    static string Answer(ReplicaEventRecord e) => e.Str("error") is { } err ? $"it could not be asked: {err}" : $"held by {e.Str("holder")} in term {e.Long("term")}";

    /// <summary>
    /// Every snapshot a standby received was the state its digest claims: a standby that refused one
    /// (<c>snapshot-refused</c>: a page left out, a chunk damaged, a transfer cut off) is reported with its reason.
    /// The standby's refusal is what keeps a wrong state from going live; this check makes the drill say that a
    /// live replica sent one.
    /// </summary>
    public static InvariantResult SnapshotsMatch(IReadOnlyList<ReplicaOutput> replicas)
    {
        var refused = replicas.SelectMany(r => r.Events.Where(e => e.Name == ReplicaEvent.SnapshotRefused).Select(e => (r.Name, e))).FirstOrDefault();
        if (refused.e != null)
            return InvariantResult.Fail(SnapshotFaithful, $"{refused.Name} refused a snapshot at {refused.e.AtMs:F0} ms after {refused.e.Long("receivedBytes")} bytes: {refused.e.Str("reason")}");
        int n = replicas.Sum(r => r.Events.Count(e => e.Name == ReplicaEvent.SnapshotRestored));
        return InvariantResult.Pass(SnapshotFaithful, $"{n} snapshot{(n == 1 ? "" : "s")} restored, each matching its digest; none refused");
    }

    /// <summary>
    /// A partition at the bridge between the live replica and its follower, both still reaching etcd and the live one
    /// still reaching the clients (<paramref name="partition"/>; any other cycle: not applicable). The live replica is
    /// right to stay: it holds the current term, serves the clients, and asks the arbiter first (it waits
    /// --timeout-ms for its follower, the follower longer for it: <see cref="CycleSettings.FollowerSilenceMs"/>), so
    /// it goes on in a new term; the cut-off follower, refused by the arbiter, must stand down without going live; and
    /// once the bridge heals (<paramref name="healAtMs"/>) a standby on the cut-off follower's host
    /// (<paramref name="joinerOnFollowersHost"/>) must rejoin the live replica and hold its log (the live replica's
    /// <c>standby-holds</c> naming <paramref name="joinerId"/> after the heal). A follower that takes over instead is
    /// an unneeded failover (the clients lose the replica that served them) and is reported.
    /// </summary>
    public static InvariantResult PartitionKeptByLive(bool partition, ReplicaOutput live, ReplicaOutput follower, string joinerId, bool joinerOnFollowersHost, double faultAtMs, double healAtMs)
    {
        if (!partition) return InvariantResult.Pass(PartitionKept, "not applicable: no partition between the live replica and its follower in this cycle");
        if (follower.Events.FirstOrDefault(e => e.Name == ReplicaEvent.TookOver && e.AtMs >= faultAtMs) is { } took)
            return InvariantResult.Fail(PartitionKept, $"{follower.Name} took over in term {took.Long("term")} at {took.AtMs:F0} ms, although {live.Name}, cut off from it only at {faultAtMs:F0} ms, still reached etcd and the clients: an unneeded failover");
        if (live.Events.FirstOrDefault(e => e.Name == ReplicaEvent.Unprotected && e.Bool("arbiterAsked") != false && e.AtMs >= faultAtMs) is not { } went)
            return InvariantResult.Fail(PartitionKept, $"{live.Name} did not go on after the partition at {faultAtMs:F0} ms (no unprotected decision after asking the arbiter; last event: {live.Events.LastOrDefault()?.Name ?? "none"})");
        if (follower.Events.FirstOrDefault(e => e.Name is ReplicaEvent.StoodDown or ReplicaEvent.Fenced && e.AtMs >= faultAtMs) is not { } down)
            return InvariantResult.Fail(PartitionKept, $"the cut-off follower {follower.Name} did not stand down after the partition (last event: {follower.Events.LastOrDefault()?.Name ?? "none"})");
        if (!joinerOnFollowersHost)
            return InvariantResult.Fail(PartitionKept, $"the standby {joinerId} that joined after the heal is not on the cut-off follower {follower.Name}'s host");
        if (live.Events.FirstOrDefault(e => e.Name == ReplicaEvent.StandbyHolds && e.Str("backup") == joinerId && e.AtMs >= healAtMs) is not { } holds)
            return InvariantResult.Fail(PartitionKept, $"no standby on the cut-off follower {follower.Name}'s host rejoined {live.Name} after the heal at {healAtMs:F0} ms ({joinerId} never held its log)");
        return InvariantResult.Pass(PartitionKept, $"{live.Name} kept the arbiter and went on in term {went.Long("term")} at {went.AtMs:F0} ms; the cut-off {follower.Name} {down.Name} at {down.AtMs:F0} ms ({down.Str("reason")}) without going live; " +
            $"after the heal at {healAtMs:F0} ms a standby on its host rejoined and held the log at {holds.AtMs:F0} ms");
    }

    /// <summary>The last live replica's whole log (what the old primaries recorded, then what it recorded itself)
    /// replays faithfully and produces exactly the output the world saw — from byte <paramref name="from"/> on when the
    /// replica joined from a snapshot (its log starts there, and replays from the snapshot).</summary>
    public static InvariantResult WholeLogReplays(int replayExit, byte[] replayOutput, byte[] final, string logPath, ulong from = 0)
    {
        if (replayExit != 0) return InvariantResult.Fail(Faithful, $"backup replay --log {logPath} exited with {replayExit} (0: a faithful replay of a complete recording)");
        if (from > (ulong)final.Length) return InvariantResult.Fail(Faithful, $"the log of {logPath} starts at output byte {from}, past the {final.Length} bytes the world saw");
        var seen = final.AsSpan((int)from);
        if (!replayOutput.AsSpan().SequenceEqual(seen))
            return InvariantResult.Fail(Faithful, $"the replay of {logPath} printed {replayOutput.Length} bytes that differ from the {seen.Length} bytes the world saw from byte {from} (first difference at byte {FirstDiff(replayOutput, seen.ToArray())})");
        return InvariantResult.Pass(Faithful, from == 0
            ? $"the last replica's whole log replays faithfully to the {final.Length} bytes the world saw"
            : $"the last replica's log replays faithfully from its snapshot to the {seen.Length} bytes the world saw from byte {from} on");
    }

    static int FirstDiff(byte[] a, byte[] b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
        return n;
    }
}

/// <summary>
/// <c>chaos drill --cycles N</c>: one run of the guest, N times: a fault takes a replica of the pair out (cycle i's
/// fault is <c>Faults[i % n]</c>): the live replica (killed, frozen, cut off) and its follower takes over, or the
/// follower and the live replica goes on after winning the arbiter; the replica taken out ends (killed, or it
/// stands down on seeing the newer term), a new standby process starts and the survivor re-protects itself with it
/// → again. Three endpoint slots rotate: every listener is given the other two as <c>--standby</c> (the first
/// primary, which has no endpoint, slots 1 and 2, then its backup's slot 0, where a standby can start once the
/// backup ended), and a new standby starts on a slot of the survivor's list that no running replica uses (after a
/// partition the live replica kept: the cut-off follower's slot, so its host rejoins). With <see cref="CycleSettings.Hosts"/> each slot and the first primary have a host of
/// their own and the faults are host faults. Every invariant is checked after each cycle; after the last one the
/// guest is told to stop (its stop file), the pair finishes, and the last live replica's whole log is replayed and
/// compared with the output the world saw.
/// </summary>
public sealed class CycleDrill(CycleSettings s)
{
    /// <summary>Endpoint slots the replicas rotate through by default: the live one, its follower and a new standby.
    /// Two are enough (the replaced replica has ended before the new standby starts on its slot); more spread the
    /// standbys over more hosts.</summary>
    public const int DefaultSlots = 3, MinSlots = 2, MaxSlots = 32;

    /// <summary>Standbys a cycle starts at most for its survivor: a standby that ends before it held the log (dropped
    /// mid-join) is replaced this many times less one.</summary>
    public const int MaxJoinAttempts = 3;

    /// <summary>
    /// The fault kinds a cycle can take. On separate hosts every host fault: kill (the live replica's host: its ports
    /// go down, then its processes are SIGKILLed, so the follower learns it from silence as from a dead machine),
    /// freeze, partition (the bridge stops forwarding between the live and the follower's hosts; the arbiter decides
    /// who goes on), link-down (the live host's ports down), kill-backup (the follower's host killed: the live replica
    /// goes on after winning the arbiter and re-protects), cut-kill (a partition, then the live host killed),
    /// partition-primary (the live host cut from etcd's and the follower's: the follower wins, the live replica must
    /// stand down). On
    /// loopback only those that need no network of their own: kill, freeze, kill-backup (a cycle's replicas connect
    /// directly, so there is nothing to partition). slow-link and throttle act on the single-round drill's relay,
    /// which no cycle has.
    /// </summary>
    public static FaultKind[] Applicable(bool onHosts) => onHosts ? Faults.CyclesOnHosts : [FaultKind.Kill, FaultKind.Freeze, FaultKind.KillBackup];

    /// <summary>Why <paramref name="k"/> cannot be a cycle's fault (null: it can).</summary>
    public static string? WhyNot(FaultKind k, bool onHosts) => Applicable(onHosts).Contains(k) ? null : k switch
    {
        FaultKind.SlowLink or FaultKind.Throttle => $"{Faults.Name(k)} acts on the single-round drill's loopback relay between one pair; a cycle's replicas connect to each other directly (and on --hosts netns through the bridge)",
        _ => $"{Faults.Name(k)} needs --hosts netns with --cycles (on loopback a cycle's replicas connect directly: there is no link of their own to cut)",
    };

    /// <summary>Why the replica that takes over in cycle <paramref name="plantCycle"/> cannot carry a plant (null: it
    /// can): 0 is the first primary; cycle N must exist and its fault must make its follower take over (after
    /// kill-backup or a partition the live replica goes on, and nobody takes over).</summary>
    public static string? WhyNotPlantCycle(int plantCycle, int cycles, IReadOnlyList<FaultKind> faults)
    {
        if (plantCycle == 0) return null;
        if (plantCycle < 0 || plantCycle > cycles) return $"--plant-cycle {plantCycle}: 0 (the first primary) or a cycle from 1 to {cycles}";
        var k = faults[(plantCycle - 1) % faults.Count];
        return LiveGoesOn(k) ? $"--plant-cycle {plantCycle}: cycle {plantCycle}'s fault is {Faults.Name(k)}, after which the live replica goes on and nobody takes over" : null;
    }

    /// <summary>The faults after which the live replica goes on (it keeps the arbiter) rather than its follower taking over.</summary>
    public static bool LiveGoesOn(FaultKind k) => k is FaultKind.KillBackup or FaultKind.Partition;

    void Say(string m) => s.Progress?.Invoke(m);

    sealed class Member
    {
        public required string Name;
        public required ReplicaProc Proc;
        public int Slot = -1;          // -1: the first primary (no endpoint)
        public Host? Host;             // --hosts netns: the host it runs on
        public string Id = "";         // its id at the arbiter
        public string LogPath = "";
        public bool Killed;            // SIGKILLed (by a fault, or by the drill as still running)
        public bool Gone => Killed || Proc.HasExited;
    }

    /// <summary>The slots a replica on <paramref name="slot"/> asks for a standby (its --standby list), in order: every
    /// slot but its own; the first primary (slot -1, no endpoint) every other slot first, then its backup's slot 0
    /// (a standby restarted where its backup was, as after a partition it kept).</summary>
    IEnumerable<int> StandbySlots(int slot) => slot < 0 ? [.. Enumerable.Range(1, s.Slots - 1), 0] : Enumerable.Range(0, s.Slots).Where(i => i != slot);

    /// <summary>How long a replica taken out by a fault but still running (frozen and resumed, cut off, partitioned
    /// away) may take to stand down once the survivor has decided; it is killed after that and the cycle's record says so.</summary>
    TimeSpan StandDownWithin => TimeSpan.FromMilliseconds(3 * s.TimeoutMs) + TimeSpan.FromSeconds(15);

    public (List<CycleRecord> Cycles, List<InvariantResult> Final, string Report) Run()
    {
        if (s.Slots is < MinSlots or > MaxSlots) throw new DrillSetupException($"--slots {s.Slots}: a cycles drill has {MinSlots} to {MaxSlots} endpoint slots");
        if (s.Plant != null && WhyNotPlantCycle(s.PlantCycle, s.Cycles, s.Faults) is { } noPlant) throw new DrillSetupException(noPlant);
        if (s.Hosts != null && s.Hosts.Replicas.Count < s.Slots + 1) throw new DrillSetupException($"{s.Slots} slots need {s.Slots + 1} replica hosts; these hosts have {s.Hosts.Replicas.Count} (NetnsHosts.Create(standbys: slots - 1))");
        Directory.CreateDirectory(s.WorkDir);
        var clock = Stopwatch.StartNew();
        var hosts = s.Hosts;
        string token = Path.Combine(s.WorkDir, "token");
        ReVirt.Replication.ReplicationProtocol.WriteNewSecret(token);
        string lockPath = Path.Combine(s.WorkDir, "arbiter.lock");
        foreach (var f in Directory.GetFiles(s.WorkDir, "arbiter.lock*")) File.Delete(f);
        // on separate hosts the arbiter is etcd on its own host (a key of this run), else a lock file
        string etcdKey = $"revirt/chaos/{Environment.ProcessId}/cycles-{Guid.NewGuid():N}";
        string arbiter = hosts != null ? NetnsHosts.ArbiterUrl(etcdKey) : lockPath;
        string stop = Path.Combine(s.WorkDir, "stop");
        File.Delete(stop);
        var ports = FreePorts(s.Slots);
        Host? SlotHost(int slot) => hosts != null ? Host.Slot(slot) : null;
        string Url(int slot) => SlotHost(slot) is { } h ? NetnsHosts.ListenUrl(h, ports[slot]) : $"http://127.0.0.1:{ports[slot]}";
        var members = new List<Member>();
        var liveFaults = new List<(string, double)>();
        var handovers = new List<(string Replaced, string Survivor)>();
        var cycles = new List<CycleRecord>();
        int serial = 0;
        string[] Common(string logPath) => ["--token-file", token, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", s.TimeoutMs.ToString(), "--log", logPath];
        NetnsHosts Hosts(FaultKind k) => hosts ?? throw new DrillSetupException(WhyNot(k, false) ?? $"{Faults.Name(k)} needs --hosts netns");

        // carries: the standby is the follower of cycle PlantCycle, which takes over in it and carries the plant from there
        Member StartStandby(int slot, bool carries)
        {
            string name = $"replica{++serial}";
            string log = Path.Combine(s.WorkDir, $"{name}.rvlog");
            var others = StandbySlots(slot).SelectMany(i => new[] { "--standby", Url(i) }).ToArray();
            var host = SlotHost(slot);
            string[] plant = carries && s.Plant != null ? ["--plant", s.Plant] : [];
            var p = new ReplicaProc(name, s.BackupDll, ["listen", "--listen", Url(slot), .. Common(log), "--primary-silence-ms", (s.FollowerSilenceMs ?? s.TimeoutMs * 3 / 2).ToString(), .. others, .. plant, .. s.Network?.StandbyArgs(slot) ?? []],
                clock, host != null ? hosts!.Ns(host) : null);
            var m = new Member { Name = name, Proc = p, Slot = slot, Host = host, LogPath = log };
            members.Add(m);
            m.Id = Need(m, ReplicaEvent.Listening, "start listening").Str("id") ?? "";
            return m;
        }

        ReplicaEventRecord Need(Member m, string ev, string what, int nth = 1)
        {
            if (!m.Proc.WaitFor(() => m.Proc.Events.Count(e => e.Name == ev) >= nth, s.StepLimit))
                throw new DrillSetupException($"{m.Name} did not {what} (no '{ev}' event #{nth} within {s.StepLimit.TotalSeconds:F0} s; events: {string.Join(", ", m.Proc.Events.Select(e => e.Name))}):\n{m.Proc.Stderr}");
            return m.Proc.Events.Where(e => e.Name == ev).ElementAt(nth - 1);
        }

        static int Count(Member m, string ev) => m.Proc.Events.Count(e => e.Name == ev);

        // a replica taken out as a host would be: on separate hosts its ports go down first (its peers hear silence,
        // as from a dead machine, not a closed connection), then every process of its host is SIGKILLed
        void KillMember(Member m)
        {
            if (hosts != null && m.Host != null) hosts.LinkDown(m.Host);
            m.Proc.KillHard();
            m.Killed = true;
            if (hosts != null && m.Host != null) hosts.KillHost(m.Host);
        }

        string HostOf(Member m) => hosts != null ? $"{m.Name}'s host" : m.Name;

        // injects a cycle's fault; returns what it did
        string Inject(FaultKind fault, Member live, Member follower)
        {
            switch (fault)
            {
                case FaultKind.Kill:
                    KillMember(live);
                    return hosts != null ? $"{HostOf(live)} killed (its ports down, its processes SIGKILLed)" : $"SIGKILL {live.Name}";
                case FaultKind.Freeze:
                    live.Proc.Signal(ReplicaProc.SIGSTOP);
                    return $"SIGSTOP {live.Name} until the survivor decided, then SIGCONT";
                case FaultKind.Partition:
                    Hosts(fault).Partition(live.Host, follower.Host);
                    return $"partition at the bridge between {HostOf(live)} and {HostOf(follower)} (both still reach etcd)";
                case FaultKind.LinkDown:
                    Hosts(fault).LinkDown(live.Host!);
                    return $"{HostOf(live)}'s links down at the bridge";
                case FaultKind.PartitionPrimary:
                    Hosts(fault).CutOff(live.Host!, follower.Host!, Host.Etcd);
                    return $"{HostOf(live)} cut from etcd's and {HostOf(follower)} (both directions; it still reaches the clients)";
                case FaultKind.KillBackup:
                    KillMember(follower);
                    return hosts != null ? $"{HostOf(follower)} (the follower's) killed" : $"SIGKILL {follower.Name} (the follower)";
                case FaultKind.CutKill:
                    {
                        // deterministic evidence for the output rule: nothing acknowledges the log after the cut, so a
                        // correct live replica releases nothing its follower does not already hold
                        var sw = Stopwatch.StartNew();
                        Hosts(fault).Partition(live.Host, follower.Host);
                        long before = live.Proc.StdoutLength;
                        bool grew = live.Proc.WaitFor(() => live.Proc.StdoutLength > before, TimeSpan.FromMilliseconds(s.TimeoutMs / 2));
                        KillMember(live);
                        return $"partition between {HostOf(live)} and {HostOf(follower)}, then {HostOf(live)} killed {sw.Elapsed.TotalMilliseconds:F0} ms later{(grew ? " (it released stdout after the cut)" : "")}";
                    }
                default:
                    throw new DrillSetupException(WhyNot(fault, hosts != null) ?? $"{Faults.Name(fault)} is not a cycle's fault");
            }
        }

        // the replica taken out ends: killed by the fault, or it stands down by itself once it meets the newer term
        // (bounded: one still running then is killed, and the record says so)
        string EndReplaced(Member m, double decidedAtMs)
        {
            if (m.Killed) return "killed by the fault";
            if (m.Proc.WaitFor(() => m.Proc.HasExited, StandDownWithin))
            {
                int? code = m.Proc.WaitForExit(TimeSpan.FromSeconds(5));
                string how = m.Proc.Event(ReplicaEvent.Fenced) != null ? "fenced" : m.Proc.Event(ReplicaEvent.StoodDown) != null ? "stood down" : "exited";
                return $"{how} (exit {code?.ToString() ?? "?"}) {m.Proc.ExitedAtMs - decidedAtMs:F0} ms after the decision";
            }
            KillMember(m);
            return $"still running {StandDownWithin.TotalSeconds:F0} s after the decision (last event: {m.Proc.Events.LastOrDefault()?.Name ?? "none"}): killed by the drill";
        }

        // who holds the arbiter now, and how that was read
        (string? Holder, string How) ReadHolder(long term)
        {
            if (hosts != null)
            {
                var r = hosts.ReadKey(etcdKey);
                return (r.Value, $"etcd key read after the decision: {r}");
            }
            string path = new ReVirt.Arbiter.LockFileArbiter(lockPath).TermPath(term);
            try { string text = File.ReadAllText(path); int nl = text.IndexOf('\n'); return (nl > 0 ? text[..nl] : text, $"lock file of term {term}"); }
            catch (IOException e) { return (null, $"lock file {path}: {e.Message}"); }
        }

        // --net virtual: kvserver on the guest's interface, under clients that each keep one connection across every cycle
        var load = s.Network is { } net
            ? new KvWorkload(s.Guest, 0, s.Connections) { Network = net, UntilEnded = true, PauseMs = s.PauseMs, ReplyTimeoutMs = s.ReplyTimeoutMs, GiveUpMs = (int)s.StepLimit.TotalMilliseconds }.NewKvRound(s.Seed)
            : null;
        string[] guest = load != null ? [.. s.Network!.PrimaryArgs, "--", s.Guest, .. load.Args] : ["--", s.Guest, stop, s.SleepMs.ToString(), s.Work.ToString()];
        try
        {
            Say($"starting the backup and the primary{(hosts != null ? " (each on a host of its own, etcd the arbiter)" : "")}");
            var follower = StartStandby(0, carries: s.PlantCycle == 1);
            string primaryLog = Path.Combine(s.WorkDir, "primary.rvlog");
            var primary = new Member
            {
                Name = "primary",
                LogPath = primaryLog,
                Host = hosts != null ? Host.Primary : null,
                Proc = new ReplicaProc("primary", s.PrimaryDll,
                    ["protect", "--backup", Url(0), .. StandbySlots(-1).SelectMany(i => new[] { "--standby", Url(i) }), "--token-file", token, "--arbiter", arbiter,
                     "--timeout-ms", s.TimeoutMs.ToString(), "--heartbeat-ms", s.HeartbeatMs.ToString(), "--log", primaryLog,
                     "--checkpoint-interval", s.CheckpointInterval.ToString(), .. s.Plant != null && s.PlantCycle == 0 ? ["--plant", s.Plant] : Array.Empty<string>(), .. guest], clock,
                    hosts?.Ns(Host.Primary)),
            };
            primary.Id = $"primary:{Environment.MachineName}:{primary.Proc.Pid}";
            members.Insert(0, primary);
            Need(primary, ReplicaEvent.Protected, "get protected");
            if (load?.Begin(primary.Proc, clock, s.StepLimit) is { } notServing)
                throw new DrillSetupException($"{notServing}:\n{primary.Proc.Stderr}");
            var live = primary;
            var rng = new Random(s.Seed);
            bool joinRefused = false;
            // progress before a fault: lines of the ticker, acknowledged SETs of the clients
            long Progress(Member m) => load?.Progress(m.Proc) ?? CountLines(m.Proc.Stdout);

            for (int c = 0; c < s.Cycles; c++)
            {
                var fault = s.Faults[c % s.Faults.Length];
                string label = $"cycle {c + 1}/{s.Cycles} ({Faults.Name(fault)})";
                // the fault lands mid-run: some fresh output from the live replica first (a random amount from the seed)
                int lines = (10 + rng.Next(0, 30)) * (load != null ? s.Connections : 1);
                long before = Progress(live);
                string unit = load != null ? "acknowledged SETs" : "lines";
                Say($"{label}: waiting for {lines} more {unit} from {live.Name}");
                if (!live.Proc.WaitFor(() => Progress(live) >= before + lines, s.StepLimit))
                    throw new DrillSetupException($"{live.Name} served no {lines} more {unit} in {s.StepLimit.TotalSeconds:F0} s:\n{live.Proc.Stderr}" +
                        (load?.Errors.Count > 0 ? $"\nclients: {string.Join("; ", load.Errors)}" : ""));
                // which of the survivor's events are this cycle's: those after the counts at the fault
                int liveUnprotected = Count(live, ReplicaEvent.Unprotected), liveReprotected = Count(live, ReplicaEvent.Reprotected), liveHolds = Count(live, ReplicaEvent.StandbyHolds);
                double faultAt = clock.Elapsed.TotalMilliseconds;
                Member liveAtFault = live, followerAtFault = follower;
                string detail = Inject(fault, live, follower);
                load?.NoteFault();
                s.AfterFault?.Invoke(c + 1);
                if (fault != FaultKind.KillBackup) liveFaults.Add((live.Name, faultAt));
                Say($"{label}: {detail}; waiting for the arbiter's decision");
                // the decision: the follower takes over, or the live replica goes on after winning the arbiter
                // (only a fault that leaves the live replica running and reaching etcd lets it go on: a partition between
                // the two, or its follower killed; after any other, a live replica going on is a violation that
                // replaced-replica-stands-down reports, not the cycle's decision)
                bool liveMayGoOn = LiveGoesOn(fault);
                bool LiveWentOn() => liveMayGoOn && Count(live, ReplicaEvent.Unprotected) > liveUnprotected;
                var decided = Stopwatch.StartNew();
                while (follower.Proc.Event(ReplicaEvent.TookOver) == null && !LiveWentOn() && !(live.Gone && follower.Gone))
                {
                    if (decided.Elapsed > s.StepLimit)
                        throw new DrillSetupException($"{label}: neither {follower.Name} took over nor {live.Name} went on within {s.StepLimit.TotalSeconds:F0} s after the fault ({detail});\n{live.Name}:\n{live.Proc.Stderr}\n{follower.Name}:\n{follower.Proc.Stderr}");
                    Thread.Sleep(5);
                }
                bool tookOver = follower.Proc.Event(ReplicaEvent.TookOver) != null;
                if (!tookOver && !LiveWentOn())
                    throw new DrillSetupException($"{label}: both replicas ended and none went live after the fault ({detail});\n{live.Name}:\n{live.Proc.Stderr}\n{follower.Name}:\n{follower.Proc.Stderr}");
                var decision = tookOver ? follower.Proc.Event(ReplicaEvent.TookOver)! : live.Proc.Events.Where(e => e.Name == ReplicaEvent.Unprotected).ElementAt(liveUnprotected);
                var survivor = tookOver ? follower : live;
                var replaced = tookOver ? live : follower;
                if (fault == FaultKind.Freeze) live.Proc.Signal(ReplicaProc.SIGCONT);
                // the fault is over: the taken-out host is back on the wire (with no replica if it was killed). A cut
                // from etcd lasts until the cut-off replica ended: it must stand down without reaching etcd again (its
                // request cannot arrive, so it cannot even learn of the newer term), before a standby may use its host
                bool cutUntilEnded = fault == FaultKind.PartitionPrimary;
                double healAt = clock.Elapsed.TotalMilliseconds;
                if (!cutUntilEnded) hosts?.Heal();
                bool replacedByFault = replaced.Killed;
                string fate = EndReplaced(replaced, decision.AtMs);
                if (cutUntilEnded) { healAt = clock.Elapsed.TotalMilliseconds; hosts?.Heal(); }
                long term = decision.Long("term") ?? 0;
                var (holder, holderHow) = ReadHolder(term);
                if (tookOver) handovers.Add((replaced.Name, survivor.Name));
                bool SlotFree(int i) => !members.Any(m => m.Slot == i && !m.Gone);
                // after a partition kept by the live replica, the cut-off follower's host rejoins (the standby starts
                // there, once the bridge healed): partition-kept-by-live-replica checks it
                int freeSlot = fault == FaultKind.Partition && !tookOver && replaced.Slot >= 0 && SlotFree(replaced.Slot)
                    ? replaced.Slot : StandbySlots(survivor.Slot).First(SlotFree);
                Say($"{label}: {survivor.Name} is live (term {term}; {replaced.Name} {fate}); starting a standby on slot {freeSlot}");
                var joiner = StartStandby(freeSlot, carries: s.PlantCycle == c + 2);
                var rec = new CycleRecord
                {
                    Cycle = c + 1, Fault = Faults.Name(fault), FaultDetail = detail, Killed = replaced.Name, Survivor = survivor.Name, Joiner = joiner.Name, JoinerSlot = freeSlot,
                    Outcome = tookOver ? "took over" : "went on unprotected", ReplacedFate = fate, ArbiterHolder = holder, KillAtMs = faultAt,
                };
                cycles.Add(rec);
                rec.TakeoverMs = decision.AtMs - faultAt;
                rec.TookOverAtMs = decision.AtMs;
                rec.DrainMs = tookOver ? decision.Num("drainMs") : null;
                rec.Term = term;
                // the standby holds the backlog, or it refused the survivor's snapshot (not the state its digest
                // claims). A standby that ended first (the survivor dropped it mid-join, e.g. its acks late on a loaded
                // machine, and it stood down: it cannot go live without its join point) is replaced on its slot, as a
                // supervisor restarts a standby, at most MaxJoinAttempts times; the survivor asks its standbys again
                int holdsNth = (tookOver ? 0 : liveHolds) + 1, reprotectedBase = tookOver ? 0 : liveReprotected;
                bool Settled() => Count(survivor, ReplicaEvent.StandbyHolds) >= holdsNth || joiner.Proc.Event(ReplicaEvent.SnapshotRefused) != null;
                for (int attempt = 1; ; attempt++)
                {
                    survivor.Proc.WaitFor(() => Settled() || joiner.Gone, s.StepLimit);
                    if (Settled() || !joiner.Gone || attempt == MaxJoinAttempts) break;
                    string why = joiner.Proc.Events.LastOrDefault(e => e.Name is ReplicaEvent.StoodDown or ReplicaEvent.HandshakeAbandoned)?.Str("reason") ?? $"last event {joiner.Proc.Events.LastOrDefault()?.Name ?? "none"}";
                    Say($"{label}: {joiner.Name} ended before it held {survivor.Name}'s log ({why}); starting another standby on slot {joiner.Slot}");
                    rec.JoinRetries.Add($"{joiner.Name}: {why}");
                    reprotectedBase = Count(survivor, ReplicaEvent.Reprotected);
                    joiner = StartStandby(joiner.Slot, carries: s.PlantCycle == c + 2);
                    rec.Joiner = joiner.Name;
                }
                var reprotected = Need(survivor, ReplicaEvent.Reprotected, "re-protect itself with the new standby", reprotectedBase + 1);
                rec.JoinMs = reprotected.AtMs - decision.AtMs;
                rec.BacklogRecords = reprotected.Long("backlogRecords");
                rec.BacklogBytes = reprotected.Long("backlogBytes");
                var snapRefused = joiner.Proc.Event(ReplicaEvent.SnapshotRefused);
                rec.JoinMode = reprotected.Str("mode") ?? "log";
                if (rec.JoinMode == "snapshot") rec.PauseMs = survivor.Proc.Events.LastOrDefault(e => e.Name == ReplicaEvent.SnapshotTaken)?.Num("pauseMs");
                double settled;
                if (snapRefused != null)
                {
                    // the survivor stays unprotected and would send every standby such a snapshot: the cycle reports it
                    // (snapshots-match-their-digest) and the run ends after it, the refusing standby killed
                    Say($"{label}: {joiner.Name} refused {survivor.Name}'s snapshot: {snapRefused.Str("reason")}; the run ends after this cycle");
                    KillMember(joiner);
                    joinRefused = true;
                    settled = snapRefused.AtMs;
                }
                else
                {
                    var holds = Need(survivor, ReplicaEvent.StandbyHolds, "hear the standby acknowledge the backlog", holdsNth);
                    rec.TransferMs = holds.Num("transferMs");
                    if (rec.JoinMode == "snapshot") rec.SnapshotBytes = Need(joiner, ReplicaEvent.SnapshotRestored, "restore the snapshot").Long("bytes");
                    var caught = Need(joiner, ReplicaEvent.CaughtUp, "catch up");
                    rec.CatchUpMs = caught.Num("ms");
                    settled = Math.Max(holds.AtMs, caught.AtMs);
                }
                live = survivor;
                follower = joiner;
                IReadOnlyList<ClientOp>? ops = null;
                if (load == null)
                {
                    // the ticker: the world's stdout is the killed replica's up to its death, then the survivor's. The
                    // cycle's silences end once the survivor printed after the standby held the backlog and caught up
                    // (output held for the join, if any, has been released by then); bounded
                    live.Proc.WaitFor(() => live.Proc.Chunks.Any(ch => ch.AtMs > settled), TimeSpan.FromSeconds(10));
                    double until = clock.Elapsed.TotalMilliseconds;
                    var times = CycleInvariants.OutputTimes(members.First(m => m.Name == rec.Killed).Proc.Chunks.Concat(live.Proc.Chunks), until);
                    rec.StallMs = CycleInvariants.Stall(times, decision.AtMs);
                    rec.LongestSilenceMs = CycleInvariants.LongestSilence(times, faultAt);
                }
                else
                {
                    // the cycle is over for the clients once each got an answer from the survivor on its connection
                    // (bounded: a client that never does is connections-survive's finding, not a hang)
                    live.Proc.WaitFor(() => load.EveryClientAnsweredAfter(decision.AtMs) || load.Errors.Count > 0, s.StepLimit);
                    ops = load.Ops;
                    rec.StallMs = CycleInvariants.Stall(ops, decision.AtMs);
                    rec.LongestSilenceMs = CycleInvariants.LongestSilence(ops, faultAt, clock.Elapsed.TotalMilliseconds);
                    rec.Connections = load.Connections;
                    rec.AckedSets = load.Progress(live.Proc);
                }
                var outs = Outputs(members);
                var final = CycleInvariants.Stitch(outs);
                rec.Invariants =
                [
                    CycleInvariants.AckedWritesKept(outs, final, ops),
                    CycleInvariants.OutputContinuous(outs, final, load != null ? CycleInvariants.KvLines() : null, ended: false),
                    CycleInvariants.OneLivePerTerm(outs, liveFaults),
                    CycleInvariants.OutputCommitHeld(outs, tookOver ? [(replaced.Name, survivor.Name)] : []),
                    CycleInvariants.ArbiterNamesSurvivor(survivor.Name, survivor.Id, holder, holderHow),
                    CycleInvariants.ReplacedStandsDown(outs.First(o => o.Name == replaced.Name), faultAt, replacedByFault, replaced.Killed && !replacedByFault),
                    CycleInvariants.StaleReplicaStaysDown(outs),
                    CycleInvariants.SnapshotsMatch(outs),
                    CycleInvariants.PartitionKeptByLive(fault == FaultKind.Partition, outs.First(o => o.Name == liveAtFault.Name), outs.First(o => o.Name == followerAtFault.Name),
                        joiner.Id, joiner.Slot == followerAtFault.Slot, faultAt, healAt),
                ];
                if (load != null) rec.Invariants.Add(CycleInvariants.ConnectionsSurvived(rec.Connections, ops!, decision.AtMs, $"by the end of cycle {c + 1}"));
                Say($"{label}: {survivor.Name} {rec.Outcome} in {rec.TakeoverMs:F0} ms, join {rec.JoinMs:F0} ms, catch-up {rec.CatchUpMs:F0} ms ({rec.BacklogRecords} records)" +
                    (rec.StallMs is double st ? $", {(load != null ? "clients' " : "output ")}stall {st:F0} ms (longest silence {rec.LongestSilenceMs:F0} ms)" : "") + $"; {(rec.Ok ? "all invariants held" : "VIOLATION " + rec.Invariants.First(i => !i.Ok).Detail)}");
                if (joinRefused) break;
            }

            if (load != null)
            {
                Say("ending the load: each client reads its keys back over its connection, then SHUTDOWN");
                load.EndLoad();
                load.Finish(s.StepLimit, m => { });
            }
            else
            {
                Say("telling the guest to stop");
                File.WriteAllBytes(stop, []);
            }
            int? liveExit = live.Proc.WaitForExit(s.StepLimit);
            int? followerExit = follower.Proc.WaitForExit(s.StepLimit);
            var all = Outputs(members);
            var stitched = CycleInvariants.Stitch(all);
            var allOps = load?.Ops;
            var finalChecks = new List<InvariantResult>
            {
                CycleInvariants.AckedWritesKept(all, stitched, allOps, load?.ReadBack),
                CycleInvariants.OutputContinuous(all, stitched, load != null ? CycleInvariants.KvLines(allOps) : null),
                CycleInvariants.OneLivePerTerm(all, liveFaults),
                CycleInvariants.OutputCommitHeld(all, handovers),
                CycleInvariants.StaleReplicaStaysDown(all),
                CycleInvariants.SnapshotsMatch(all),
                joinRefused
                    ? InvariantResult.Fail("pair-finished", $"{follower.Name} refused {live.Name}'s snapshot, so {live.Name} ended unprotected (exit {liveExit?.ToString() ?? "(killed after the limit)"})")
                : liveExit == 0 && followerExit == 0
                    ? InvariantResult.Pass("pair-finished", $"{live.Name} and its standby {follower.Name} ended with status 0 (the standby's replay matched)")
                    : InvariantResult.Fail("pair-finished", $"{live.Name} exited with {liveExit?.ToString() ?? "(killed after the limit)"}, {follower.Name} with {followerExit?.ToString() ?? "(killed after the limit)"}"),
            };
            if (load != null)
            {
                finalChecks.Add(CycleInvariants.ConnectionsSurvived(load.Connections, allOps!, cycles.LastOrDefault()?.TookOverAtMs, $"across all {cycles.Count} cycles"));
                finalChecks.Add(CycleInvariants.LoadServed(load.Errors, allOps!));
            }
            Say($"replaying {live.Name}'s whole log");
            var (code, replayed) = ReplayLog(live.LogPath);
            ulong from = live.Proc.Event(ReplicaEvent.SnapshotRestored)?.ULong("stdoutAt") ?? 0;
            finalChecks.Add(CycleInvariants.WholeLogReplays(code, replayed, stitched, live.LogPath, from));
            string report = WriteReport(cycles, finalChecks, clock.Elapsed.TotalMilliseconds, stitched.Length);
            return (cycles, finalChecks, report);
        }
        finally
        {
            load?.Dispose();
            foreach (var m in members) m.Proc.Dispose();
        }
    }

    static List<ReplicaOutput> Outputs(List<Member> members) => members.Select(m => new ReplicaOutput
    {
        Name = m.Name,
        Stdout = m.Proc.Stdout,
        ResumeAt = m.Slot < 0 ? 0 : m.Proc.Event(ReplicaEvent.TookOver)?.ULong("resumeStdoutAt"),
        Events = m.Proc.Events,
        Chunks = m.Proc.Chunks,
        Killed = m.Killed,
    }).ToList();

    static long CountLines(byte[] b) => b.Count(x => x == (byte)'\n');

    (int Code, byte[] Output) ReplayLog(string log)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { s.BackupDll, "replay", "--log", log, "--show-output" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var outTask = Task.Run(() => { var ms = new MemoryStream(); p.StandardOutput.BaseStream.CopyTo(ms); return ms.ToArray(); });
        var errTask = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(s.StepLimit)) { p.Kill(true); p.WaitForExit(5000); return (-1, []); }
        outTask.Wait(TimeSpan.FromSeconds(10));
        errTask.Wait(TimeSpan.FromSeconds(10));
        return (p.ExitCode, outTask.Result);
    }

    string WriteReport(List<CycleRecord> cycles, List<InvariantResult> final, double totalMs, int outputBytes)
    {
        string path = Path.Combine(s.WorkDir, "report.json");
        var doc = new
        {
            cycles = cycles.Select(c => new
            {
                cycle = c.Cycle, fault = c.Fault, faultDetail = c.FaultDetail, killed = c.Killed, survivor = c.Survivor, outcome = c.Outcome, joinerSlot = c.JoinerSlot,
                replacedFate = c.ReplacedFate, arbiterHolder = c.ArbiterHolder, joiner = c.Joiner, joinRetries = c.JoinRetries, term = c.Term,
                takeoverMs = c.TakeoverMs, drainMs = c.DrainMs, joinMs = c.JoinMs, transferMs = c.TransferMs, catchUpMs = c.CatchUpMs,
                joinMode = c.JoinMode, pauseMs = c.PauseMs, snapshotBytes = c.SnapshotBytes,
                backlogRecords = c.BacklogRecords, backlogBytes = c.BacklogBytes,
                stallMs = c.StallMs, longestSilenceMs = c.LongestSilenceMs, ackedSets = c.AckedSets,
                connections = c.Connections is { } cs ? new { clients = cs.Clients, connects = cs.Connects, breaks = cs.Breaks, mismatchedReplies = cs.Mismatched } : null,
                invariants = c.Invariants.Select(i => new { name = i.Name, ok = i.Ok, detail = i.Detail }),
            }),
            final = final.Select(i => new { name = i.Name, ok = i.Ok, detail = i.Detail }),
            totalMs,
            outputBytes,
            net = s.Network != null ? "virtual" : "none",
            hosts = s.Hosts != null ? "netns" : "local",
            hostsMadeBy = Report.HostsMadeBy(s.Hosts),
            arbiter = s.Hosts != null ? "etcd" : "lock file",
            faults = s.Faults.Select(Faults.Name).ToArray(),
            summary = Medians(cycles).ToDictionary(m => m.Key, m => m.Value),
            guest = Path.GetFileName(s.Guest),
            settings = new { s.Cycles, s.Seed, s.SleepMs, s.Work, s.TimeoutMs, s.HeartbeatMs, s.CheckpointInterval, connections = s.Network != null ? s.Connections : 0, s.PauseMs, s.Plant, s.PlantCycle, s.Slots },
        };
        File.WriteAllText(path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    /// <summary>Ports for the slots, below the ephemeral range (<see cref="LoopbackPorts.Pick"/>): a port the kernel
    /// handed out for listening once is in the ephemeral range, where any outgoing connection of the host can take it
    /// before the standby binds it, and a slot's port is bound again by each standby started on it.</summary>
    static int[] FreePorts(int n) => Enumerable.Range(0, n).Select(_ => LoopbackPorts.Pick()).ToArray();

    /// <summary>A table of the cycles for people, then the medians (<see cref="Medians"/>).</summary>
    public static string Table(List<CycleRecord> cycles)
    {
        var sb = new StringBuilder();
        // the world's stall and longest silence (the ticker's stdout, or the clients' replies); --net virtual: the
        // connections (clients, connections opened, broken) as well
        bool net = cycles.Any(c => c.Connections != null);
        sb.AppendLine("cycle  fault        killed     survivor   term  takeover ms  join ms  mode      pause ms  transfer ms  catch-up ms  backlog records  stall ms  silence ms" + (net ? "  clients  opened  broke" : "") + "  invariants");
        foreach (var c in cycles)
            sb.AppendLine($"{c.Cycle,5}  {c.Fault,-11}  {c.Killed,-9}  {c.Survivor,-9}  {c.Term,4}  {c.TakeoverMs,11:F0}  {c.JoinMs,7:F0}  {c.JoinMode,-8}  {c.PauseMs,8:F1}  {c.TransferMs,11:F0}  {c.CatchUpMs,11:F0}  {c.BacklogRecords,15}  {c.StallMs,8:F0}  {c.LongestSilenceMs,10:F0}" +
                (net ? $"  {c.Connections?.Clients,7}  {c.Connections?.Connects,6}  {c.Connections?.Breaks,5}" : "") +
                $"  {(c.Ok ? "ok" : "VIOLATED " + c.Invariants.First(i => !i.Ok).Name)}");
        var m = Medians(cycles);
        if (m.Count > 0) sb.AppendLine("medians: " + string.Join(", ", m.Select(kv => $"{kv.Key} {kv.Value:F1}")));
        return sb.ToString();
    }

    /// <summary>Medians over the cycles: takeover (fault → decision), join, pause, transfer and catch-up times (ms),
    /// and the takeover per fault kind ("takeoverMs.kill", ...); a figure no cycle has is left out.</summary>
    public static List<KeyValuePair<string, double>> Medians(IReadOnlyList<CycleRecord> cycles)
    {
        var r = new List<KeyValuePair<string, double>>();
        void Add(string name, IEnumerable<double?> xs)
        {
            var v = xs.OfType<double>().Order().ToArray();
            if (v.Length > 0) r.Add(new(name, v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2));
        }
        Add("takeoverMs", cycles.Select(c => c.TakeoverMs));
        Add("joinMs", cycles.Select(c => c.JoinMs));
        Add("pauseMs", cycles.Select(c => c.PauseMs));
        Add("transferMs", cycles.Select(c => c.TransferMs));
        Add("catchUpMs", cycles.Select(c => c.CatchUpMs));
        Add("stallMs", cycles.Select(c => c.StallMs));
        foreach (var g in cycles.GroupBy(c => c.Fault)) Add($"takeoverMs.{g.Key}", g.Select(c => c.TakeoverMs));
        return r;
    }
}
