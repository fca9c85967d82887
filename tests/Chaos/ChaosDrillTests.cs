using System.Text;
using System.Text.Json;
using ReVirt.Chaos;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// The chaos drill against real separate primary/backup processes: every fault kind passes with the kvserver
/// workload under client load (and with the counter), and planted violations (a backup that acks before it holds,
/// a gate that opens early, a primary that ignores the arbiter) are each reported.
/// </summary>
/// <remarks>
/// Like every <see cref="DrillTests"/>, in the <see cref="RealProcesses"/> collection: these tests time failure detection and failover of real process
/// pairs on loopback, which a 2-core machine running other replica pairs at the same time turns into spurious
/// timeouts. The kvserver guest only ends on the client's SHUTDOWN, so a fault always lands while it is serving
/// (a counter can finish before its fault point).
/// </remarks>
public class ChaosDrillTests(ITestOutputHelper output) : DrillTests(output)
{
    static DrillSettings Settings(FaultKind[] faults, int seed, int rounds, string? plant = null, int baseDelay = 0, IWorkload? workload = null, int roundLimitS = 50, int? timeoutMs = null) => new()
    {
        Rounds = rounds,
        Seed = seed,
        Faults = faults,
        Workload = workload ?? KvLoad(),
        TimeoutMs = timeoutMs ?? (baseDelay > 0 ? 2500 : 1500), // a loaded test machine (or a slow link) must not split the pair before the fault
        HeartbeatMs = 100,
        PrimaryDll = GuestEnv.PrimaryDll,
        BackupDll = GuestEnv.BackupDll,
        Plant = plant,
        BaseLinkDelayMs = baseDelay,
        RoundLimit = TimeSpan.FromSeconds(roundLimitS),
    };

    static KvWorkload KvLoad(int sets = 150, int connections = 4) => new(GuestEnv.Guest("kvserver", "musl"), sets, connections) { GiveUpMs = 30_000 };
    /// <summary>The counter guest with 1,000,000 rounds of work per line (~2.5 ms on a fast host): a fault placed at
    /// 15-55 % of the released output lands while the guest still runs, so a fault that breaks the pair fails it over
    /// (with 3,000 rounds the guest had ended before most fault points and only its held tail was left).</summary>
    static CounterWorkload Counter(int lines = 600) => new(GuestEnv.Guest("counter", "musl"), lines, 1_000_000);

    List<RoundResult> Run(DrillSettings s)
    {
        var rs = new Drill(s).Run();
        Output.WriteLine(Report.Table(rs));
        foreach (var r in rs)
            Show($"round {r.Observation.Round + 1} ", r.Invariants);
        // a failed round shows what each replica printed (a crash's stack trace, a refusal's reason)
        foreach (var r in rs.Where(r => !r.Ok))
        {
            Output.WriteLine($"round {r.Observation.Round + 1} primary (exit {r.Observation.PrimaryExit?.ToString() ?? "killed"}) stderr:");
            foreach (var l in r.Observation.PrimaryLog.TakeLast(60)) Output.WriteLine($"  {l.Text}");
            Output.WriteLine($"round {r.Observation.Round + 1} backup (exit {r.Observation.BackupExit?.ToString() ?? "killed"}) stderr:");
            foreach (var l in r.Observation.BackupLog.TakeLast(60)) Output.WriteLine($"  {l.Text}");
            foreach (var h in r.Observation.KilledAsHung) Output.WriteLine($"round {r.Observation.Round + 1} killed as hung: {h}");
        }
        return rs;
    }

    RoundResult RunOne(FaultKind fault, int seed, string? plant = null, int baseDelay = 0, IWorkload? workload = null, int roundLimitS = 50)
        => Run(Settings([fault], seed, 1, plant, baseDelay, workload, roundLimitS)).Single();

    [Fact]
    public void DrillWithEveryFaultKindPasses()
    {
        var s = Settings(Faults.All, seed: 1, rounds: Faults.All.Length);
        var rs = Run(s);
        Assert.Equal(Faults.All.Length, rs.Count);
        Assert.All(rs, r => Assert.True(r.Ok, Report.FirstViolation([r], "kvserver")));
        // the guest serves until the client's SHUTDOWN, so every fault lands mid-load: the faults that break the
        // pair fail it over, the ones that only slow the link do not
        Assert.Equal("backup took over", rs.Single(r => r.Observation.Fault == FaultKind.Kill).Outcome);
        Assert.Equal("backup took over", rs.Single(r => r.Observation.Fault == FaultKind.Freeze).Outcome);
        Assert.Contains(rs.Single(r => r.Observation.Fault == FaultKind.Partition).Outcome, (string[])["backup took over", "primary went on unprotected"]);
        Assert.Equal("primary went on unprotected", rs.Single(r => r.Observation.Fault == FaultKind.KillBackup).Outcome);
        Assert.Equal("backup took over", rs.Single(r => r.Observation.Fault == FaultKind.CutKill).Outcome);
        Assert.All(rs.Where(r => r.Outcome == "backup took over"), r => Assert.NotNull(r.FailoverMs));
        // every round served the whole load: 150 SETs and a GET after every third SET of each connection
        Assert.All(rs, r => Assert.True(r.Units >= 150, $"{r.Units} requests done"));
        Assert.All(rs, r => Assert.Contains("acknowledged writes read back", r.Invariants.Single(i => i.Name == InvariantChecker.AckedKept).Detail));

        string dir = Path.Combine(Path.GetTempPath(), $"revirt-chaos-test-{Guid.NewGuid():N}");
        try
        {
            var files = Report.Write(dir, rs, s);
            using var doc = JsonDocument.Parse(File.ReadAllText(files[0]));
            Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
            Assert.Equal("kvserver", doc.RootElement.GetProperty("workload").GetString());
            Assert.Equal(Faults.All.Length, doc.RootElement.GetProperty("roundResults").GetArrayLength());
            Assert.True(doc.RootElement.GetProperty("roundResults")[0].GetProperty("requestsDone").GetInt32() >= 150);
            Assert.StartsWith("<svg", File.ReadAllText(files[1]));
            Assert.Contains("<svg", File.ReadAllText(files[2]));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// The counter (output on stdout, not client replies) through a fault of each way a pair fails over: a kill noticed
    /// by the broken link, a freeze noticed by silence, a killed backup that leaves the primary unprotected. Every
    /// fault kind (600 lines each) is the soak's (REVIRT_SOAK=1): the kvserver drill above runs every kind by default.
    /// The fault is placed by released output, so it lands mid-run however slow the machine.
    /// </summary>
    [Fact]
    public void CounterDrillWithEveryFaultKindPasses()
    {
        FaultKind[] faults = SoakSwitch.On ? Faults.All : [FaultKind.Kill, FaultKind.Freeze, FaultKind.KillBackup];
        var rs = Run(Settings(faults, seed: 1, rounds: faults.Length, workload: Counter(SoakSwitch.On ? 600 : 300)));
        Assert.All(rs, r => Assert.True(r.Ok, Report.FirstViolation([r], "counter")));
        // a counter can finish before its fault point on a loaded machine: only most faults fail the pair over
        Assert.True(rs.Count(r => r.Outcome is "backup took over" or "primary went on unprotected") >= 2, "failover faults failed the pair over");
    }

    /// <summary>
    /// `chaos drill --net virtual --hears-primary`: the guest's connections are part of the machine, so the clients keep
    /// one connection each through a kill and a freeze of the primary (connections-survive), and report.json says so.
    /// The primary's port is mirrored onto the backup's, whose heard frames (kept, given to its stack) each round
    /// reports (fails when the drill sets no mirror up or does not pass the backup --hears-primary: none heard).
    /// </summary>
    [Fact]
    public void DrillOnTheVirtualNetworkKeepsEveryConnection()
    {
        using var net = VirtualNetwork.Create(mirrorPrimary: true);
        var s = Settings([FaultKind.Kill, FaultKind.Freeze], seed: 5, rounds: 2, workload: new KvWorkload(GuestEnv.Guest("kvserver", "musl"), 200, 6) { GiveUpMs = 30_000, Network = net });
        s = new DrillSettings
        {
            Rounds = s.Rounds, Seed = s.Seed, Faults = s.Faults, Workload = s.Workload, TimeoutMs = s.TimeoutMs, HeartbeatMs = s.HeartbeatMs,
            PrimaryDll = s.PrimaryDll, BackupDll = s.BackupDll, RoundLimit = s.RoundLimit, Network = net,
        };
        var rs = Run(s);
        Assert.All(rs, r => Assert.True(r.Ok, Report.FirstViolation([r], "kvserver")));
        Assert.All(rs, r => Assert.Equal("backup took over", r.Outcome));
        Assert.All(rs, r => Assert.Equal(new ConnectionStats(true, 6, 6, 0), r.Observation.Connections));
        Assert.All(rs, r => Assert.Contains("across the takeover", r.Invariants.Single(i => i.Name == InvariantChecker.ConnectionsSurvive).Detail));
        string dir = Path.Combine(Path.GetTempPath(), $"revirt-chaos-test-{Guid.NewGuid():N}");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Report.Write(dir, rs, s)[0]));
            Assert.Equal("virtual", doc.RootElement.GetProperty("net").GetString());
            Assert.True(doc.RootElement.GetProperty("hearsPrimary").GetBoolean());
            foreach (var round in doc.RootElement.GetProperty("roundResults").EnumerateArray())
            {
                var heard = round.GetProperty("heardFrames");
                Assert.True(heard.ValueKind == JsonValueKind.Object, $"round {round.GetProperty("round")}: no heard frames reported");
                Assert.True(heard.GetProperty("kept").GetInt32() >= 1 && heard.GetProperty("read").GetInt64() >= heard.GetProperty("kept").GetInt32(),
                    $"round {round.GetProperty("round")}: {heard}");
                // every kept frame judged: not given (old, own, for others) or given
                int Get(string k) => heard.GetProperty(k).GetInt32();
                Assert.True(Get("kept") == Get("old") + Get("own") + Get("foreign") + Get("given")
                    && Get("given") == Get("givenData") + Get("givenAck") + Get("givenControl") + Get("givenOther"), $"round {round.GetProperty("round")}: {heard}");
            }
            Assert.Contains("--hears-primary", doc.RootElement.GetProperty("roundResults")[0].GetProperty("rerun").GetString());
            var inv = doc.RootElement.GetProperty("roundResults")[0].GetProperty("invariants").EnumerateArray().Single(i => i.GetProperty("name").GetString() == InvariantChecker.ConnectionsSurvive);
            Assert.True(inv.GetProperty("ok").GetBoolean());
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// `chaos drill --hosts netns`: primary, backup, clients and etcd on hosts of their own (network namespaces on a
    /// bridge the drill makes), host faults that are real — the primary's host killed, its links down, a partition at
    /// the bridge while both replicas still reach etcd — and every invariant holds, with the clients' connections
    /// kept (the guest's address moves to the backup's port) and etcd naming the survivor. Needs root, iproute2 and
    /// etcd (`.ci/run` installs them); without them it fails at once saying so.
    /// </summary>
    [Fact]
    public void DrillOnSeparateHostsHoldsEveryInvariantUnderRealHostFaults()
    {
        NetnsHosts hosts;
        try { hosts = NetnsHosts.Create(); }
        catch (NetnsUnavailableException e) { Assert.Fail($"this test needs network namespaces: {e.Message}"); return; }
        using var _ = hosts;
        var w = new KvWorkload(GuestEnv.Guest("kvserver", "musl"), 150, 4) { GiveUpMs = 30_000, Network = hosts };
        var b = Settings([FaultKind.Kill, FaultKind.LinkDown, FaultKind.Partition], seed: 11, rounds: 3, workload: w);
        var s = new DrillSettings
        {
            Rounds = b.Rounds, Seed = b.Seed, Faults = b.Faults, Workload = w, TimeoutMs = b.TimeoutMs, HeartbeatMs = b.HeartbeatMs,
            PrimaryDll = b.PrimaryDll, BackupDll = b.BackupDll, RoundLimit = b.RoundLimit, Network = hosts, Hosts = hosts,
        };
        var rs = Run(s);
        Assert.All(rs, r => Assert.True(r.Ok, Report.FirstViolation([r], "kvserver")));
        // replicas on separate hosts (network namespaces) cannot reach each other's abstract socket: the data link is
        // TCP across the bridge, which the host faults cut (a same-host socket would ignore them)
        Assert.All(rs, r => Assert.Equal("tcp", r.Observation.PrimaryEvent(ReplicaEvent.Protected)?.Str("dataLink")));
        // a killed host and a host whose links went down cannot reach etcd: the backup goes live
        Assert.Equal("backup took over", rs[0].Outcome);
        Assert.Equal("backup took over", rs[1].Outcome);
        Assert.All(rs, r => Assert.Equal(new ConnectionStats(true, 4, 4, 0), r.Observation.Connections));
        // the arbiter's holder as etcd names it is the replica that went on
        Assert.All(rs, r =>
        {
            string survivor = r.Outcome == "backup took over" ? r.Observation.BackupId : r.Observation.PrimaryId;
            Assert.True(survivor == r.Observation.ArbiterHolder, $"round {r.Observation.Round + 1} ({r.Outcome}): the arbiter's holder is {r.Observation.ArbiterHolder ?? "null"}, not {survivor}; {r.Observation.ArbiterRead}");
        });
    }

    /// <summary>A long soak: REVIRT_SOAK=1 (REVIRT_SOAK_ROUNDS rounds, default 60, seed from REVIRT_SOAK_SEED or the clock).</summary>
    [Fact]
    public void Soak()
    {
        if (!SoakSwitch.On) { Output.WriteLine(SoakSwitch.Skipped); return; }
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("REVIRT_SOAK_ROUNDS"), out var n) ? n : 60;
        int seed = int.TryParse(Environment.GetEnvironmentVariable("REVIRT_SOAK_SEED"), out var sd) ? sd : Environment.TickCount & 0xffff;
        Output.WriteLine($"soak: {rounds} rounds from seed {seed}");
        var rs = Run(Settings(Faults.All, seed, rounds, workload: KvLoad(sets: 400), roundLimitS: 120));
        Assert.True(rs.All(r => r.Ok), Report.FirstViolation(rs, "kvserver"));
    }

    // ------------------------------------------------------------------ planted violations, real processes

    [Fact]
    public void PlantedBackupThatAcksBeforeItHoldsIsReported()
    {
        // every batch is acknowledged 400 ms before the backup holds it; under steady client load a kill almost
        // always lands in such a window, after replies to SETs the backup never gets: a couple of seeds at most.
        // Each reply waits for the next (late) ack, so a short load
        RoundResult r = RunOne(FaultKind.Kill, 7, plant: "ack-early:400", workload: KvLoad(sets: 30));
        for (int i = 1; i < 3 && r.Ok; i++) r = RunOne(FaultKind.Kill, 7 + 10 * i, plant: "ack-early:400", workload: KvLoad(sets: 30));
        Assert.False(r.Ok);
        // acking a batch before holding it shows as one of two consequences, depending on whether the late batch
        // reached the backup before it took over: a reply whose request the backup lacks (output commit), or a
        // takeover that resumes behind output released long before the fault (continuity)
        Assert.Contains(r.Invariants, i => !i.Ok && i.Name is InvariantChecker.OutputCommit or InvariantChecker.Continuity);
        Assert.Contains($"seed {r.Observation.Seed}", Report.FirstViolation([r], "kvserver"));
    }

    [Fact]
    public void PlantedGateThatReleasesEarlyIsReported()
    {
        // deterministic: the link is cut under client load, and the primary is killed as soon as it releases stdout
        // after the cut (a correct gate cannot: nothing acknowledges the log any more); the backup takes over holding
        // only what crossed before the cut. A long timeout gives a loaded machine time to serve a SET after the cut, and
        // 600 SETs per connection keep a quiet machine serving when the cut lands (150 were done before it).
        var s = Settings([FaultKind.CutKill], 7, 1, plant: "gate-early", timeoutMs: 8000,
            workload: new KvWorkload(GuestEnv.Guest("kvserver", "musl"), 600, 4) { GiveUpMs = 30_000 });
        var r = Run(s).Single();
        Assert.Equal("backup took over", r.Outcome);
        Assert.Contains("released stdout after the cut", r.Observation.FaultDetail);
        var v = r.Invariants.Single(i => i.Name == InvariantChecker.OutputCommit);
        Assert.False(v.Ok, v.Detail);
        Assert.Contains("before the backup held", v.Detail);
    }

    [Fact]
    public void PlantedSecondLivePrimaryIsReported()
    {
        // a frozen primary that ignores the arbiter when it wakes up goes on next to the backup that took over (and
        // keeps the port, so the backup's guest never serves again: the round ends at its limit)
        var v = RunOne(FaultKind.Freeze, 7, plant: "ignore-arbiter", roundLimitS: 15).Invariants.Single(i => i.Name == InvariantChecker.OnePrimary);
        Assert.False(v.Ok);
        Assert.Contains("two live primaries", v.Detail);
    }

    [Fact]
    public void ARealSlowLinkDoesNotHideTheOutputCommit()
    {
        // the same slow link and kill as the planted gate, with the real gate: every reply waits a 600 ms round
        // trip (so a short load), and every invariant holds
        var r = RunOne(FaultKind.Kill, 7, baseDelay: 300, workload: KvLoad(sets: 12, connections: 2));
        Assert.Equal("backup took over", r.Outcome);
        Assert.True(r.Ok, Report.FirstViolation([r], "kvserver"));
    }
}

/// <summary>The checkers on synthetic observation streams: each one passes a correct failover and fails its planted violation.</summary>
public class InvariantCheckerTests
{
    static readonly CounterWorkload W = new("/nonexistent", 10, 1);

    static byte[] Lines(int from, int to, string acc = "0123456789abcdef")
        => Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(from, to - from).Select(i => $"line {i} acc {acc}\n")));

    static OutputChunk[] Chunks(byte[] b, double t0, double step)
    {
        var r = new List<OutputChunk>();
        int off = 0, i = 0;
        foreach (var line in Encoding.ASCII.GetString(b).Split('\n').SkipLast(1)) { r.Add(new OutputChunk(t0 + step * i++, off, line.Length + 1)); off += line.Length + 1; }
        return r.ToArray();
    }

    static ReplicaEventRecord TakeoverEvent(long resume, long holds, ulong cp = 1000, string digest = "AABB") =>
        ReplicaEventRecord.Of(1250, ReplicaEvent.TookOver, ("drainMs", 12), ("instruction", 5000), ("record", 40), ("resumeStdoutAt", resume),
            ("logStdoutBytes", holds), ("resumeStderrAt", 0), ("checkpointInstruction", cp), ("checkpointDigest", digest));

    static readonly ReplicaEventRecord PrimaryLost = ReplicaEventRecord.Of(1100, ReplicaEvent.PrimaryLost, ("reason", "the connection broke"), ("held", 40));

    /// <summary>A correct failover: the primary released lines 0..5 (the last in its final round trip), the backup resumes after line 4 and repeats line 5.</summary>
    static RoundObservation Good(Func<RoundObservation, RoundObservation>? tweak = null, byte[]? p = null, byte[]? b = null, ReplicaEventRecord? takeover = null,
        ReplicaEventRecord[]? extraPrimary = null, OutputChunk[]? pChunks = null, string? holder = null, Dictionary<ulong, string>? cps = null, int? backupExit = 0)
    {
        p ??= Lines(0, 6);
        b ??= Lines(5, 10);
        long resume = Lines(0, 5).Length;
        return new RoundObservation
        {
            Fault = FaultKind.Kill,
            FaultAtMs = 1000,
            PrimaryStdout = p,
            PrimaryChunks = pChunks ?? Chunks(p, 500, 90),
            PrimaryEvents = [ReplicaEventRecord.Of(100, ReplicaEvent.Protected, ("backup", "backup:x:1")), .. extraPrimary ?? []],
            PrimaryKilled = true,
            PrimaryId = "primary:x:2",
            BackupStdout = b,
            BackupChunks = Chunks(b, 1300, 5),
            BackupEvents = [PrimaryLost, takeover ?? TakeoverEvent(resume, Lines(0, 7).Length)],
            BackupExit = backupExit,
            BackupId = "backup:x:1",
            ArbiterHolder = holder ?? "backup:x:1",
            PrimaryCheckpoints = cps ?? new() { [1000] = "AABB" },
        };
    }

    static InvariantResult Check(RoundObservation o, string name) => InvariantChecker.CheckAll(o, W).Single(i => i.Name == name);

    [Fact]
    public void ACorrectFailoverPassesEveryChecker()
    {
        var all = InvariantChecker.CheckAll(Good(), W);
        Assert.All(all, i => Assert.True(i.Ok, $"{i.Name}: {i.Detail}"));
        Assert.Equal(InvariantChecker.Names, all.Select(i => i.Name));
    }

    [Fact]
    public void ABackupThatAcksBeforeItHoldsIsCaught()
    {
        // the primary released 6 lines, but the backup's log held only 4 lines' worth when it took over
        long holds = Lines(0, 4).Length;
        var o = Good(takeover: TakeoverEvent(holds, holds), b: Lines(4, 10, "ffffffffffffffff"));
        var v = Check(o, InvariantChecker.OutputCommit);
        Assert.False(v.Ok);
        Assert.Contains("left before the backup held them", v.Detail);
        Assert.False(Check(o, InvariantChecker.AckedKept).Ok); // and acknowledged output was rewritten
    }

    [Fact]
    public void AGateThatReleasesEarlyIsCaught()
    {
        // released output beyond what the backup holds: lines 6..7 were released at once, never acknowledged
        var p = Lines(0, 8);
        var o = Good(p: p, pChunks: Chunks(p, 500, 60), b: Lines(5, 10));
        var v = Check(o, InvariantChecker.OutputCommit);
        Assert.False(v.Ok, v.Detail);
    }

    [Fact]
    public void TwoLivePrimariesAreCaught()
    {
        // the old primary also won (or ignored) the arbiter and went on unprotected
        var o = Good(extraPrimary: [ReplicaEventRecord.Of(1400, ReplicaEvent.BackupLost, ("reason", "silence"), ("acked", 40)), ReplicaEventRecord.Of(1400, ReplicaEvent.Unprotected, ("arbiter", "lock file /x"))]);
        var v = Check(o, InvariantChecker.OnePrimary);
        Assert.False(v.Ok);
        Assert.Contains("two live primaries", v.Detail);

        // the old primary released output after the backup went live
        var p = Lines(0, 6);
        var late = Chunks(p, 500, 90);
        late[^1] = late[^1] with { AtMs = 2000 };
        Assert.False(Check(Good(pChunks: late), InvariantChecker.OnePrimary).Ok);

        // the arbiter names someone else than the replica that went live
        Assert.False(Check(Good(holder: "primary:x:2"), InvariantChecker.OnePrimary).Ok);
    }

    [Fact]
    public void AGapARewrittenRepeatAndAnOldRepeatAreCaught()
    {
        long past = Lines(0, 7).Length; // resumes after line 6, but the primary released only 0..5
        Assert.Contains("gap", Check(Good(takeover: TakeoverEvent(past, past)), InvariantChecker.Continuity).Detail);

        var differs = Good(b: Lines(5, 10, "ffffffffffffffff"));
        Assert.Contains("repeat differs", Check(differs, InvariantChecker.Continuity).Detail);

        // repeating output the primary released long before the fault: the backup resumes at line 1
        long early = Lines(0, 1).Length;
        var old = Good(takeover: TakeoverEvent(early, Lines(0, 7).Length), b: Lines(1, 10));
        var v = Check(old, InvariantChecker.Continuity);
        Assert.False(v.Ok);
        Assert.Contains("more than one round trip", v.Detail);
    }

    [Fact]
    public void ADigestMismatchAndADivergenceAreCaught()
    {
        Assert.False(Check(Good(cps: new() { [1000] = "CCDD" }), InvariantChecker.Digest).Ok);
        var o = Good();
        var div = new RoundObservation
        {
            Fault = o.Fault, FaultAtMs = o.FaultAtMs, PrimaryStdout = o.PrimaryStdout, PrimaryChunks = o.PrimaryChunks, PrimaryKilled = true,
            BackupEvents = [.. o.BackupEvents, ReplicaEventRecord.Of(1260, ReplicaEvent.Diverged, ("message", "replay diverged at instruction 9 (rip 0x1): checkpoint differs"))],
        };
        Assert.False(Check(div, InvariantChecker.Digest).Ok);
    }

    // ------------------------------------------------------------------ the kvserver workload

    static readonly KvWorkload Kv = new("/nonexistent", 3, 1);

    static byte[] SetLines(params string[] keys) => Encoding.ASCII.GetBytes(string.Concat(keys.Select(k => $"set {k}\n")));

    /// <summary>A kvserver failover: k0 and k1 acknowledged by the primary before the fault at 1000 ms, k2 by the backup after it.</summary>
    static RoundObservation KvGood(byte[]? p = null, long? holds = null, List<ClientOp>? ops = null, Dictionary<string, string?>? readBack = null, ConnectionStats? connections = null)
    {
        p ??= SetLines("k0", "k1");
        var b = SetLines("k2");
        return new RoundObservation
        {
            Fault = FaultKind.Kill,
            FaultAtMs = 1000,
            PrimaryStdout = p,
            PrimaryChunks = [new OutputChunk(900, 0, p.Length)],
            PrimaryEvents = [ReplicaEventRecord.Of(100, ReplicaEvent.Protected, ("backup", "backup:x:1"))],
            PrimaryKilled = true,
            PrimaryId = "primary:x:2",
            BackupStdout = b,
            BackupChunks = [new OutputChunk(1400, 0, b.Length)],
            BackupEvents = [PrimaryLost, TakeoverEvent(p.Length, holds ?? p.Length)],
            BackupExit = 0,
            BackupId = "backup:x:1",
            ArbiterHolder = "backup:x:1",
            ClientOps = ops ??
            [
                new(800, 850, "SET", "k0", "a", true, "OK"),
                new(850, 900, "SET", "k1", "b", true, "OK"),
                new(900, 950, "GET", "k0", "a", true, "VALUE a"),
                new(990, 1100, "SET", "k2", "c", false, null),
                new(1300, 1420, "SET", "k2", "c", true, "OK"),
                new(1500, 1510, "SHUTDOWN", "", null, true, "BYE"),
            ],
            ReadBack = readBack ?? new() { ["k0"] = "a", ["k1"] = "b", ["k2"] = "c" },
            Connections = connections,
        };
    }

    static InvariantResult KvCheck(RoundObservation o, string name) => InvariantChecker.CheckAll(o, Kv).Single(i => i.Name == name);

    [Fact]
    public void AKvserverFailoverPassesEveryChecker()
    {
        Assert.All(InvariantChecker.CheckAll(KvGood(), Kv), i => Assert.True(i.Ok, $"{i.Name}: {i.Detail}"));
        Assert.Equal(4, Kv.Units(KvGood().FinalStdout, KvGood())); // answered SETs and GETs
    }

    [Fact]
    public void ABrokenOrReplacedConnectionOnTheVirtualNetworkIsCaught()
    {
        var kept = KvCheck(KvGood(connections: new ConnectionStats(true, 4, 4, 0)), InvariantChecker.ConnectionsSurvive);
        Assert.True(kept.Ok, kept.Detail);
        // planted: one connection reset at the takeover, and a client that reconnected after it
        var reset = KvCheck(KvGood(connections: new ConnectionStats(true, 4, 4, 1)), InvariantChecker.ConnectionsSurvive);
        Assert.False(reset.Ok);
        Assert.Contains("1 of the 4 clients' connections broke", reset.Detail);
        var replaced = KvCheck(KvGood(connections: new ConnectionStats(true, 4, 5, 0)), InvariantChecker.ConnectionsSurvive);
        Assert.False(replaced.Ok);
        Assert.Contains("opened 5 connections", replaced.Detail);
        // host sockets reset at a failover by nature: the invariant does not apply to them
        var host = KvCheck(KvGood(connections: new ConnectionStats(false, 4, 9, 5)), InvariantChecker.ConnectionsSurvive);
        Assert.True(host.Ok);
        Assert.StartsWith("not applicable", host.Detail);
    }

    [Fact]
    public void AKvserverReplyBeforeTheBackupHeldItIsCaught()
    {
        // the client got OK for k1 before the fault, but the backup's log held only k0 when it took over
        var o = KvGood(p: SetLines("k0"), holds: SetLines("k0").Length);
        var v = KvCheck(o, InvariantChecker.OutputCommit);
        Assert.False(v.Ok);
        Assert.Contains("SET k1", v.Detail);
    }

    [Fact]
    public void ALostAcknowledgedKvWriteIsCaught()
    {
        // read back NOTFOUND, not readable at all, or a GET during the load that misses an acknowledged value
        Assert.Contains("is lost", KvCheck(KvGood(readBack: new() { ["k0"] = "a", ["k1"] = null, ["k2"] = "c" }), InvariantChecker.AckedKept).Detail);
        Assert.Contains("could not be read back", KvCheck(KvGood(readBack: new() { ["k0"] = "a", ["k2"] = "c" }), InvariantChecker.AckedKept).Detail);
        var ops = KvGood().ClientOps.ToList();
        ops[2] = ops[2] with { Reply = "NOTFOUND" };
        Assert.Contains("a GET at", KvCheck(KvGood(ops: ops), InvariantChecker.AckedKept).Detail);
    }

    [Fact]
    public void AKvserverLogThatDoesNotMatchTheAcknowledgedSetsIsCaught()
    {
        // k1 logged twice though sent once; a SHUTDOWN without BYE; a client error
        var twice = KvGood(p: SetLines("k0", "k1", "k1"));
        Assert.Contains("2 times", KvCheck(twice, InvariantChecker.Workload).Detail);
        var ops = KvGood().ClientOps.Where(c => c.Op != "SHUTDOWN").ToList();
        Assert.Contains("SHUTDOWN", KvCheck(KvGood(ops: ops), InvariantChecker.Workload).Detail);
        var o = KvGood();
        var err = new RoundObservation
        {
            Fault = o.Fault, FaultAtMs = o.FaultAtMs, PrimaryStdout = o.PrimaryStdout, PrimaryChunks = o.PrimaryChunks, PrimaryKilled = true,
            BackupStdout = o.BackupStdout, BackupEvents = o.BackupEvents, BackupExit = 0, ClientOps = o.ClientOps, ReadBack = o.ReadBack,
            ClientErrors = ["SET k2: no reply within 45000 ms"],
        };
        Assert.Contains("no reply", KvCheck(err, InvariantChecker.Workload).Detail);
    }

    [Fact]
    public void APrimaryKilledAtItsEndIsHarmlessOnlyWhenItHadReleasedEverything()
    {
        // the kill landed after the guest's exit; the backup replayed the complete log to the end without going live
        RoundObservation Late(byte[] p) => new()
        {
            Fault = FaultKind.Kill, FaultAtMs = 1000, PrimaryStdout = p, PrimaryChunks = Chunks(p, 500, 10), PrimaryKilled = true,
            BackupEvents = [PrimaryLost, ReplicaEventRecord.Of(1200, ReplicaEvent.ReplayMatched, ("status", 0))],
            BackupExit = 0,
        };
        var all = Check(Late(Lines(0, 10)), InvariantChecker.Workload);
        Assert.True(all.Ok, all.Detail);
        var part = Check(Late(Lines(0, 8)), InvariantChecker.Workload);
        Assert.False(part.Ok);
        Assert.Contains("nobody released the rest", part.Detail);
    }

    [Fact]
    public void AnIncompleteWorkloadIsCaught()
    {
        Assert.False(Check(Good(b: Lines(5, 9)), InvariantChecker.Workload).Ok); // a line short
        Assert.False(Check(Good(backupExit: 1), InvariantChecker.Workload).Ok);
    }
}
