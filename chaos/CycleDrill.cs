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
    /// <summary>The ticker guest (guests/src/ticker.c).</summary>
    public required string Guest { get; init; }
    public int SleepMs { get; init; } = 20;
    public int Work { get; init; } = 20000;
    public int TimeoutMs { get; init; } = 2000;
    public int HeartbeatMs { get; init; } = 100;
    public ulong CheckpointInterval { get; init; } = 2_000_000;
    public required string PrimaryDll { get; init; }
    public required string BackupDll { get; init; }
    /// <summary>Bound on each wait for a named replica event (takeover, a standby following, catching up).</summary>
    public TimeSpan StepLimit { get; init; } = TimeSpan.FromSeconds(120);
    public string WorkDir { get; init; } = Path.Combine(Path.GetTempPath(), $"revirt-cycles-{Environment.ProcessId}");
    public Action<string>? Progress { get; init; }
}

/// <summary>One cycle: the live replica killed, its follower taking over, a new standby joining the survivor.</summary>
public sealed class CycleRecord
{
    public int Cycle { get; init; }
    public required string Killed { get; init; }
    public required string Survivor { get; init; }
    public required string Joiner { get; init; }
    public double KillAtMs { get; init; }
    /// <summary>SIGKILL of the live replica → the follower's took-over event.</summary>
    public double? TakeoverMs { get; set; }
    public double? DrainMs { get; set; }
    public long? Term { get; set; }
    /// <summary>The survivor's took-over → its reprotected event (the new standby started, answered and was welcomed).</summary>
    public double? JoinMs { get; set; }
    /// <summary>The survivor's reprotected → standby-holds (the whole backlog crossed and was acknowledged).</summary>
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
    public const string Faithful = "whole-log-replays-faithfully";

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
    public static InvariantResult AckedWritesKept(IReadOnlyList<ReplicaOutput> replicas, byte[] final)
    {
        foreach (var r in replicas)
        {
            if (r.ResumeAt is not { } at) continue;
            if (at + (ulong)r.Stdout.Length > (ulong)final.Length)
                return InvariantResult.Fail(AckedKept, $"{r.Name} released output up to byte {at + (ulong)r.Stdout.Length} but the final output has {final.Length}: acknowledged bytes lost");
            if (!final.AsSpan((int)at, r.Stdout.Length).SequenceEqual(r.Stdout))
                return InvariantResult.Fail(AckedKept, $"{r.Name}'s released output (from byte {at}) differs from the final output there: released output was rewritten");
        }
        return InvariantResult.Pass(AckedKept, $"every byte released by {replicas.Count(r => r.ResumeAt != null)} replicas is in the final {final.Length}-byte output at its offset");
    }

    /// <summary>
    /// The output has no gap and no reordering: each replica that took over resumes at or before the end of what its
    /// predecessors released, and the lines are numbered 0, 1, 2, ... without a hole or a repeat.
    /// </summary>
    public static InvariantResult OutputContinuous(IReadOnlyList<ReplicaOutput> replicas, byte[] final)
    {
        ulong end = 0;
        foreach (var r in replicas)
        {
            if (r.ResumeAt is not { } at) continue;
            if (at > end) return InvariantResult.Fail(Continuity, $"{r.Name} resumed the output at byte {at}, but only {end} bytes had been released before: a gap");
            end = Math.Max(end, at + (ulong)r.Stdout.Length);
        }
        var lines = Encoding.UTF8.GetString(final).Split('\n');
        int n = 0;
        for (int i = 0; i < lines.Length - 1; i++, n++)
            if (!lines[i].StartsWith($"tick {i} acc ", StringComparison.Ordinal))
                return InvariantResult.Fail(Continuity, $"line {i} of the final output is '{lines[i]}', not tick {i}");
        if (lines[^1].Length != 0) return InvariantResult.Fail(Continuity, $"the output ends mid-line: '{lines[^1]}'");
        return InvariantResult.Pass(Continuity, $"{n} consecutive lines across {replicas.Count(r => r.ResumeAt != null)} replicas, no gap");
    }

    /// <summary>
    /// Every takeover won a new term, terms only grow, and no replica was live while another was: each replica took
    /// over only after the one before it was killed, and nobody whose term was superseded released output later.
    /// </summary>
    public static InvariantResult OneLivePerTerm(IReadOnlyList<ReplicaOutput> replicas, IReadOnlyList<(string Name, double KilledAtMs)> kills)
    {
        long last = 0;
        var took = replicas.SelectMany(r => r.Events.Where(e => e.Name == ReplicaEvent.TookOver).Select(e => (r.Name, e))).OrderBy(x => x.e.AtMs).ToList();
        for (int i = 0; i < took.Count; i++)
        {
            var (name, e) = took[i];
            long term = e.Long("term") ?? 0;
            if (term <= last) return InvariantResult.Fail(OnePerTerm, $"{name} took over in term {term}, not after term {last}: a term was won twice");
            last = term;
            if (i >= kills.Count) return InvariantResult.Fail(OnePerTerm, $"{name} took over at {e.AtMs:F0} ms although no live replica had been killed: two live replicas");
            if (e.AtMs < kills[i].KilledAtMs) return InvariantResult.Fail(OnePerTerm, $"{name} took over at {e.AtMs:F0} ms, before {kills[i].Name} was killed at {kills[i].KilledAtMs:F0} ms");
        }
        var fenced = replicas.Where(r => r.Events.Any(e => e.Name == ReplicaEvent.Fenced)).Select(r => r.Name).ToList();
        return InvariantResult.Pass(OnePerTerm, $"{took.Count} takeovers in terms 1..{last}, each after its predecessor was killed{(fenced.Count > 0 ? $"; fenced: {string.Join(", ", fenced)}" : "")}");
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
/// <c>chaos drill --cycles N</c>: one run of the guest, N times: SIGKILL the live replica → its follower takes over
/// → a new standby process starts and the survivor re-protects itself with it (the standby receives the whole log
/// and catches up) → again. Three endpoint slots on loopback rotate: every listener is given the other two as
/// <c>--standby</c>, and a new standby always starts on the slot nobody uses. Every invariant is checked after
/// each cycle; after the last one the guest is told to stop (its stop file), the pair finishes, and the last live
/// replica's whole log is replayed and compared with the output the world saw.
/// </summary>
public sealed class CycleDrill(CycleSettings s)
{
    void Say(string m) => s.Progress?.Invoke(m);

    sealed class Member
    {
        public required string Name;
        public required ReplicaProc Proc;
        public int Slot = -1;          // -1: the first primary (no endpoint)
        public string LogPath = "";
        public bool Killed;
    }

    public (List<CycleRecord> Cycles, List<InvariantResult> Final, string Report) Run()
    {
        Directory.CreateDirectory(s.WorkDir);
        var clock = Stopwatch.StartNew();
        string token = Path.Combine(s.WorkDir, "token");
        ReVirt.Replication.ReplicationProtocol.WriteNewSecret(token);
        string arbiter = Path.Combine(s.WorkDir, "arbiter.lock");
        foreach (var f in Directory.GetFiles(s.WorkDir, "arbiter.lock*")) File.Delete(f);
        string stop = Path.Combine(s.WorkDir, "stop");
        File.Delete(stop);
        var ports = FreePorts(3);
        string Url(int slot) => $"http://127.0.0.1:{ports[slot]}";
        var members = new List<Member>();
        var kills = new List<(string, double)>();
        var cycles = new List<CycleRecord>();
        int serial = 0;
        string[] Common(string logPath) => ["--token-file", token, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", s.TimeoutMs.ToString(), "--log", logPath];

        Member StartStandby(int slot)
        {
            string name = $"replica{++serial}";
            string log = Path.Combine(s.WorkDir, $"{name}.rvlog");
            var others = Enumerable.Range(0, 3).Where(i => i != slot).SelectMany(i => new[] { "--standby", Url(i) }).ToArray();
            var p = new ReplicaProc(name, s.BackupDll, ["listen", "--listen", Url(slot), .. Common(log), "--primary-silence-ms", s.TimeoutMs.ToString(), .. others], clock);
            var m = new Member { Name = name, Proc = p, Slot = slot, LogPath = log };
            members.Add(m);
            Need(m, ReplicaEvent.Listening, "start listening");
            return m;
        }

        ReplicaEventRecord Need(Member m, string ev, string what, int nth = 1)
        {
            if (!m.Proc.WaitFor(() => m.Proc.Events.Count(e => e.Name == ev) >= nth, s.StepLimit))
                throw new DrillSetupException($"{m.Name} did not {what} (no '{ev}' event within {s.StepLimit.TotalSeconds:F0} s; events: {string.Join(", ", m.Proc.Events.Select(e => e.Name))}):\n{m.Proc.Stderr}");
            return m.Proc.Events.Where(e => e.Name == ev).ElementAt(nth - 1);
        }

        try
        {
            Say("starting the backup and the primary");
            var follower = StartStandby(0);
            string primaryLog = Path.Combine(s.WorkDir, "primary.rvlog");
            var primary = new Member
            {
                Name = "primary",
                LogPath = primaryLog,
                Proc = new ReplicaProc("primary", s.PrimaryDll,
                    ["protect", "--backup", Url(0), "--standby", Url(1), "--standby", Url(2), "--token-file", token, "--arbiter", arbiter,
                     "--timeout-ms", s.TimeoutMs.ToString(), "--heartbeat-ms", s.HeartbeatMs.ToString(), "--log", primaryLog,
                     "--checkpoint-interval", s.CheckpointInterval.ToString(), "--", s.Guest, stop, s.SleepMs.ToString(), s.Work.ToString()], clock),
            };
            members.Insert(0, primary);
            Need(primary, ReplicaEvent.Protected, "get protected");
            var live = primary;
            var rng = new Random(s.Seed);

            for (int c = 0; c < s.Cycles; c++)
            {
                // the fault lands mid-run: some fresh output from the live replica first (a random amount from the seed)
                int lines = 10 + rng.Next(0, 30);
                long before = CountLines(live.Proc.Stdout);
                Say($"cycle {c + 1}/{s.Cycles}: waiting for {lines} more lines from {live.Name}");
                if (!live.Proc.WaitFor(() => CountLines(live.Proc.Stdout) >= before + lines, s.StepLimit))
                    throw new DrillSetupException($"{live.Name} printed nothing more for {s.StepLimit.TotalSeconds:F0} s:\n{live.Proc.Stderr}");
                double killAt = clock.Elapsed.TotalMilliseconds;
                live.Proc.KillHard();
                live.Killed = true;
                kills.Add((live.Name, killAt));
                Say($"cycle {c + 1}/{s.Cycles}: killed {live.Name}; waiting for {follower.Name} to take over");
                var took = Need(follower, ReplicaEvent.TookOver, "take over");
                int freeSlot = Enumerable.Range(0, 3).First(i => i != follower.Slot && !members.Any(m => m.Slot == i && !m.Killed));
                Say($"cycle {c + 1}/{s.Cycles}: {follower.Name} is live (term {took.Long("term")}); starting a standby on slot {freeSlot}");
                var joiner = StartStandby(freeSlot);
                var rec = new CycleRecord { Cycle = c + 1, Killed = live.Name, Survivor = follower.Name, Joiner = joiner.Name, KillAtMs = killAt };
                cycles.Add(rec);
                rec.TakeoverMs = took.AtMs - killAt;
                rec.DrainMs = took.Num("drainMs");
                rec.Term = took.Long("term");
                var reprotected = Need(follower, ReplicaEvent.Reprotected, "re-protect itself with the new standby");
                rec.JoinMs = reprotected.AtMs - took.AtMs;
                rec.BacklogRecords = reprotected.Long("backlogRecords");
                rec.BacklogBytes = reprotected.Long("backlogBytes");
                var holds = Need(follower, ReplicaEvent.StandbyHolds, "hear the standby acknowledge the backlog");
                rec.TransferMs = holds.Num("transferMs");
                rec.JoinMode = reprotected.Str("mode") ?? "log";
                if (rec.JoinMode == "snapshot")
                {
                    rec.PauseMs = follower.Proc.Events.LastOrDefault(e => e.Name == ReplicaEvent.SnapshotTaken)?.Num("pauseMs");
                    rec.SnapshotBytes = Need(joiner, ReplicaEvent.SnapshotRestored, "restore the snapshot").Long("bytes");
                }
                var caught = Need(joiner, ReplicaEvent.CaughtUp, "catch up");
                rec.CatchUpMs = caught.Num("ms");
                live = follower;
                follower = joiner;
                var outs = Outputs(members);
                var final = CycleInvariants.Stitch(outs);
                rec.Invariants = [CycleInvariants.AckedWritesKept(outs, final), CycleInvariants.OutputContinuous(outs, final), CycleInvariants.OneLivePerTerm(outs, kills)];
                Say($"cycle {c + 1}/{s.Cycles}: takeover {rec.TakeoverMs:F0} ms, join {rec.JoinMs:F0} ms, catch-up {rec.CatchUpMs:F0} ms ({rec.BacklogRecords} records); {(rec.Ok ? "all invariants held" : "VIOLATION " + rec.Invariants.First(i => !i.Ok).Detail)}");
            }

            Say("telling the guest to stop");
            File.WriteAllBytes(stop, []);
            int? liveExit = live.Proc.WaitForExit(s.StepLimit);
            int? followerExit = follower.Proc.WaitForExit(s.StepLimit);
            var all = Outputs(members);
            var stitched = CycleInvariants.Stitch(all);
            var finalChecks = new List<InvariantResult>
            {
                CycleInvariants.AckedWritesKept(all, stitched),
                CycleInvariants.OutputContinuous(all, stitched),
                CycleInvariants.OneLivePerTerm(all, kills),
                liveExit == 0 && followerExit == 0
                    ? InvariantResult.Pass("pair-finished", $"{live.Name} and its standby {follower.Name} ended with status 0 (the standby's replay matched)")
                    : InvariantResult.Fail("pair-finished", $"{live.Name} exited with {liveExit?.ToString() ?? "(killed after the limit)"}, {follower.Name} with {followerExit?.ToString() ?? "(killed after the limit)"}"),
            };
            Say($"replaying {live.Name}'s whole log");
            var (code, replayed) = ReplayLog(live.LogPath);
            ulong from = live.Proc.Event(ReplicaEvent.SnapshotRestored)?.ULong("stdoutAt") ?? 0;
            finalChecks.Add(CycleInvariants.WholeLogReplays(code, replayed, stitched, live.LogPath, from));
            string report = WriteReport(cycles, finalChecks, clock.Elapsed.TotalMilliseconds, stitched.Length);
            return (cycles, finalChecks, report);
        }
        finally
        {
            foreach (var m in members) m.Proc.Dispose();
        }
    }

    static List<ReplicaOutput> Outputs(List<Member> members) => members.Select(m => new ReplicaOutput
    {
        Name = m.Name,
        Stdout = m.Proc.Stdout,
        ResumeAt = m.Slot < 0 ? 0 : m.Proc.Event(ReplicaEvent.TookOver)?.ULong("resumeStdoutAt"),
        Events = m.Proc.Events,
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
                cycle = c.Cycle, killed = c.Killed, survivor = c.Survivor, joiner = c.Joiner, term = c.Term,
                takeoverMs = c.TakeoverMs, drainMs = c.DrainMs, joinMs = c.JoinMs, transferMs = c.TransferMs, catchUpMs = c.CatchUpMs,
                joinMode = c.JoinMode, pauseMs = c.PauseMs, snapshotBytes = c.SnapshotBytes,
                backlogRecords = c.BacklogRecords, backlogBytes = c.BacklogBytes,
                invariants = c.Invariants.Select(i => new { name = i.Name, ok = i.Ok, detail = i.Detail }),
            }),
            final = final.Select(i => new { name = i.Name, ok = i.Ok, detail = i.Detail }),
            totalMs,
            outputBytes,
            settings = new { s.Cycles, s.Seed, s.SleepMs, s.Work, s.TimeoutMs, s.HeartbeatMs, s.CheckpointInterval },
        };
        File.WriteAllText(path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    static int[] FreePorts(int n)
    {
        var ls = Enumerable.Range(0, n).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        foreach (var l in ls) l.Start();
        var ports = ls.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in ls) l.Stop();
        return ports;
    }

    /// <summary>A table of the cycles for people.</summary>
    public static string Table(List<CycleRecord> cycles)
    {
        var sb = new StringBuilder();
        sb.AppendLine("cycle  killed     survivor   term  takeover ms  join ms  mode      pause ms  transfer ms  catch-up ms  backlog records  invariants");
        foreach (var c in cycles)
            sb.AppendLine($"{c.Cycle,5}  {c.Killed,-9}  {c.Survivor,-9}  {c.Term,4}  {c.TakeoverMs,11:F0}  {c.JoinMs,7:F0}  {c.JoinMode,-8}  {c.PauseMs,8:F1}  {c.TransferMs,11:F0}  {c.CatchUpMs,11:F0}  {c.BacklogRecords,15}  {(c.Ok ? "ok" : "VIOLATED " + c.Invariants.First(i => !i.Ok).Name)}");
        return sb.ToString();
    }
}
