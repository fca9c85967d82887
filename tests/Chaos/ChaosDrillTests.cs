using System.Text;
using System.Text.Json;
using ReVirt.Chaos;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// The chaos drill against real separate primary/backup processes: every fault kind passes, and planted
/// violations (a backup that acks before it holds, a gate that opens early, a primary that ignores the arbiter)
/// are each reported.
/// </summary>
public class ChaosDrillTests(ITestOutputHelper output)
{
    static DrillSettings Settings(FaultKind[] faults, int seed, int rounds, string? plant = null, int baseDelay = 0, int lines = 300) => new()
    {
        Rounds = rounds,
        Seed = seed,
        Faults = faults,
        Workload = new CounterWorkload(GuestEnv.Guest("counter", "musl"), lines, 3000),
        TimeoutMs = baseDelay > 0 ? 2500 : 1000, // a slow link on a loaded test machine must not split the pair before the fault
        HeartbeatMs = 100,
        PrimaryDll = GuestEnv.PrimaryDll,
        BackupDll = GuestEnv.BackupDll,
        Plant = plant,
        BaseLinkDelayMs = baseDelay,
        RoundLimit = TimeSpan.FromSeconds(90),
    };

    List<RoundResult> Run(DrillSettings s)
    {
        var rs = new Drill(s).Run();
        output.WriteLine(Report.Table(rs));
        foreach (var r in rs)
            foreach (var i in r.Invariants) output.WriteLine($"round {r.Observation.Round + 1} {(i.Ok ? "ok  " : "FAIL")} {i.Name}: {i.Detail}");
        return rs;
    }

    /// <summary>Runs single rounds from <paramref name="seed"/> on until one fails over (a fault can land after the guest's last output on a loaded machine).</summary>
    RoundResult RunUntilFailover(FaultKind fault, int seed, string? plant = null, int baseDelay = 0)
    {
        RoundResult? r = null;
        for (int i = 0; i < 3; i++)
        {
            r = Run(Settings([fault], seed + i, 1, plant, baseDelay)).Single();
            if (r.Outcome is "backup took over" or "primary went on unprotected") return r;
        }
        return r!;
    }

    [Fact]
    public void DrillWithEveryFaultKindPasses()
    {
        var s = Settings(Faults.All, seed: 1, rounds: Faults.All.Length);
        var rs = Run(s);
        Assert.Equal(Faults.All.Length, rs.Count);
        Assert.All(rs, r => Assert.True(r.Ok, Report.FirstViolation([r], "counter")));
        // the faults that break the pair fail it over; the ones that only slow the link do not
        string[] late = ["primary finished before the fault", "no failover needed"]; // a fault after the last output, on a loaded machine
        Assert.Contains(rs.Single(r => r.Observation.Fault == FaultKind.Kill).Outcome, (string[])["backup took over", .. late]);
        Assert.Contains(rs.Single(r => r.Observation.Fault == FaultKind.Freeze).Outcome, (string[])["backup took over", .. late]);
        Assert.Contains(rs.Single(r => r.Observation.Fault == FaultKind.KillBackup).Outcome, (string[])["primary went on unprotected", .. late]);
        Assert.True(rs.Count(r => r.Outcome is "backup took over" or "primary went on unprotected") >= 3, "most failover faults failed the pair over");
        Assert.All(rs.Where(r => r.Outcome == "backup took over"), r => Assert.NotNull(r.FailoverMs));

        string dir = Path.Combine(Path.GetTempPath(), $"revirt-chaos-test-{Guid.NewGuid():N}");
        try
        {
            var files = Report.Write(dir, rs, s);
            using var doc = JsonDocument.Parse(File.ReadAllText(files[0]));
            Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
            Assert.Equal(Faults.All.Length, doc.RootElement.GetProperty("roundResults").GetArrayLength());
            Assert.StartsWith("<svg", File.ReadAllText(files[1]));
            Assert.Contains("<svg", File.ReadAllText(files[2]));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>A long soak: REVIRT_SOAK=1 (REVIRT_SOAK_ROUNDS rounds, default 60, seed from REVIRT_SOAK_SEED or the clock).</summary>
    [Fact]
    public void Soak()
    {
        if (Environment.GetEnvironmentVariable("REVIRT_SOAK") != "1") { output.WriteLine("skipped: set REVIRT_SOAK=1"); return; }
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("REVIRT_SOAK_ROUNDS"), out var n) ? n : 60;
        int seed = int.TryParse(Environment.GetEnvironmentVariable("REVIRT_SOAK_SEED"), out var sd) ? sd : Environment.TickCount & 0xffff;
        output.WriteLine($"soak: {rounds} rounds from seed {seed}");
        var rs = Run(Settings(Faults.All, seed, rounds, lines: 400));
        Assert.True(rs.All(r => r.Ok), Report.FirstViolation(rs, "counter"));
    }

    // ------------------------------------------------------------------ planted violations, real processes

    [Fact]
    public void PlantedBackupThatAcksBeforeItHoldsIsReported()
    {
        // the planted ack shows only when the kill lands inside a 400 ms hold window: try a few seeds
        RoundResult r = RunUntilFailover(FaultKind.Kill, 7, plant: "ack-early:400");
        for (int i = 1; i < 4 && r.Ok; i++) r = RunUntilFailover(FaultKind.Kill, 7 + 10 * i, plant: "ack-early:400");
        Assert.False(r.Ok);
        Assert.False(r.Invariants.Single(i => i.Name == InvariantChecker.OutputCommit).Ok);
        Assert.Contains($"seed {r.Observation.Seed}", Report.FirstViolation([r], "counter"));
    }

    [Fact]
    public void PlantedGateThatReleasesEarlyIsReported()
    {
        // over a slow link the backup is always ~300 ms behind: a gate that does not wait shows it at the kill
        var r = RunUntilFailover(FaultKind.Kill, 7, plant: "gate-early", baseDelay: 300);
        Assert.False(r.Invariants.Single(i => i.Name == InvariantChecker.OutputCommit).Ok);
        Assert.Contains("left before the backup held them", r.Invariants.Single(i => i.Name == InvariantChecker.OutputCommit).Detail);
    }

    [Fact]
    public void PlantedSecondLivePrimaryIsReported()
    {
        // a frozen primary that ignores the arbiter when it wakes up goes on next to the backup that took over
        var v = RunUntilFailover(FaultKind.Freeze, 7, plant: "ignore-arbiter").Invariants.Single(i => i.Name == InvariantChecker.OnePrimary);
        Assert.False(v.Ok);
        Assert.Contains("two live primaries", v.Detail);
    }

    [Fact]
    public void ARealSlowLinkDoesNotHideTheOutputCommit()
    {
        // the same slow link and kill as the planted gate, with the real gate: every invariant holds
        var r = RunUntilFailover(FaultKind.Kill, 7, baseDelay: 300);
        var v = r.Invariants.Single(i => i.Name == InvariantChecker.OutputCommit);
        Assert.True(v.Ok, v.Detail);
        Assert.True(r.Invariants.Single(i => i.Name == InvariantChecker.AckedKept).Ok);
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

    static string TakeoverLine(long resume, long holds, ulong cp = 1000, string digest = "AABB") =>
        $"backup: drained in 12 ms; won the arbiter; took over at instruction 5000 (record #40), stdout resumes at byte offset {resume} (the log holds {holds}), stderr at 0; last verified checkpoint at instruction {cp}, state digest {digest}";

    /// <summary>A correct failover: the primary released lines 0..5 (the last in its final round trip), the backup resumes after line 4 and repeats line 5.</summary>
    static RoundObservation Good(Func<RoundObservation, RoundObservation>? tweak = null, byte[]? p = null, byte[]? b = null, string? takeover = null,
        LogLine[]? extraPrimary = null, OutputChunk[]? pChunks = null, string? holder = null, Dictionary<ulong, string>? cps = null, int? backupExit = 0)
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
            PrimaryLog = [new(100, "primary: protected by backup:x:1"), .. extraPrimary ?? []],
            PrimaryKilled = true,
            PrimaryId = "primary:x:2",
            BackupStdout = b,
            BackupChunks = Chunks(b, 1300, 5),
            BackupLog = [new(1100, "backup: primary lost: the connection broke; holding the log up to record #40; draining 0 bytes"), new(1250, takeover ?? TakeoverLine(resume, Lines(0, 7).Length))],
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
        var o = Good(takeover: TakeoverLine(holds, holds), b: Lines(4, 10, "ffffffffffffffff"));
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
        var o = Good(extraPrimary: [new(1400, "primary: backup lost (silence); acknowledged up to record #40; won the arbiter (lock file /x); continuing unprotected")]);
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
        Assert.Contains("gap", Check(Good(takeover: TakeoverLine(past, past)), InvariantChecker.Continuity).Detail);

        var differs = Good(b: Lines(5, 10, "ffffffffffffffff"));
        Assert.Contains("repeat differs", Check(differs, InvariantChecker.Continuity).Detail);

        // repeating output the primary released long before the fault: the backup resumes at line 1
        long early = Lines(0, 1).Length;
        var old = Good(takeover: TakeoverLine(early, Lines(0, 7).Length), b: Lines(1, 10));
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
            BackupLog = [.. o.BackupLog, new(1260, "backup: replay diverged at instruction 9 (rip 0x1): checkpoint differs")],
        };
        Assert.False(Check(div, InvariantChecker.Digest).Ok);
    }

    [Fact]
    public void AnIncompleteWorkloadIsCaught()
    {
        Assert.False(Check(Good(b: Lines(5, 9)), InvariantChecker.Workload).Ok); // a line short
        Assert.False(Check(Good(backupExit: 1), InvariantChecker.Workload).Ok);
    }
}
