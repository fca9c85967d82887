using System.Text;
using System.Text.Json;
using ReVirt.Chaos;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// `chaos drill --cycles`: kill → takeover → a standby joins → kill again in one run of the guest, with real
/// processes; and the cycle invariants, each shown to report a planted violation.
/// </summary>
public class CycleDrillTests(ITestOutputHelper output) : DrillTests(output)
{
    static byte[] Lines(int from, int to) => Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(from, to - from).Select(i => $"tick {i} acc {i:x16}\n")));

    static ReplicaOutput Replica(string name, ulong? at, byte[] stdout, params ReplicaEventRecord[] events)
        => new() { Name = name, ResumeAt = at, Stdout = stdout, Events = events };

    static ReplicaEventRecord TookOver(double atMs, long term) => ReplicaEventRecord.Of(atMs, ReplicaEvent.TookOver, ("term", term));

    [Fact]
    public void CycleInvariantsHoldForAGoodRunAndReportEachPlantedViolation()
    {
        var all = Lines(0, 30);
        int cut1 = Lines(0, 10).Length, cut2 = Lines(0, 20).Length;
        // good: the primary released lines 0-11, the first survivor resumed at line 10 (a byte-identical repeat), the
        // second at line 20
        var good = new List<ReplicaOutput>
        {
            Replica("primary", 0, all[..Lines(0, 12).Length]),
            Replica("replica1", (ulong)cut1, all[cut1..cut2], TookOver(100, 1)),
            Replica("replica2", (ulong)cut2, all[cut2..], TookOver(200, 2)),
        };
        var kills = new List<(string, double)> { ("primary", 50), ("replica1", 150) };
        var final = CycleInvariants.Stitch(good);
        Assert.Equal(all, final);
        Assert.True(CycleInvariants.AckedWritesKept(good, final).Ok);
        Assert.True(CycleInvariants.OutputContinuous(good, final).Ok);
        Assert.True(CycleInvariants.OneLivePerTerm(good, kills).Ok);
        Assert.True(CycleInvariants.WholeLogReplays(0, all, final, "log").Ok);

        // a survivor that resumes past what was released: a gap
        var gap = new List<ReplicaOutput> { good[0], Replica("replica1", (ulong)cut2, all[cut2..], TookOver(100, 1)) };
        Assert.False(CycleInvariants.OutputContinuous(gap, CycleInvariants.Stitch(gap)).Ok);
        // released output rewritten by a later replica
        var changed = (byte[])all[cut1..cut2].Clone();
        changed[3] ^= 1;
        var rewrite = new List<ReplicaOutput> { good[0], Replica("replica1", (ulong)cut1, changed, TookOver(100, 1)) };
        Assert.False(CycleInvariants.AckedWritesKept(rewrite, CycleInvariants.Stitch(rewrite)).Ok);
        // a stale replica going live in a term already won, and a takeover while the live replica still ran
        var stale = new List<ReplicaOutput> { good[0], good[1], Replica("replica2", (ulong)cut2, all[cut2..], TookOver(200, 1)) };
        Assert.False(CycleInvariants.OneLivePerTerm(stale, kills).Ok);
        var early = new List<ReplicaOutput> { good[0], Replica("replica1", (ulong)cut1, all[cut1..], TookOver(40, 1)) };
        Assert.False(CycleInvariants.OneLivePerTerm(early, kills).Ok);
        // the last log replays to something else than what the world saw
        Assert.False(CycleInvariants.WholeLogReplays(0, all[..cut2], final, "log").Ok);
        Assert.False(CycleInvariants.WholeLogReplays(1, all, final, "log").Ok);
        // a log that starts from a snapshot replays to what the world saw from the snapshot's offset on, not less
        Assert.True(CycleInvariants.WholeLogReplays(0, all[cut1..], final, "log", (ulong)cut1).Ok);
        Assert.False(CycleInvariants.WholeLogReplays(0, all[cut2..], final, "log", (ulong)cut1).Ok);
    }

    [Fact]
    public void ThreeCyclesOfKillTakeoverAndJoinKeepEveryInvariant()
    {
        string work = Directory.CreateTempSubdirectory("revirt-cycles-").FullName;
        try
        {
            var s = new CycleSettings
            {
                Cycles = 3,
                Seed = 7,
                Guest = GuestEnv.Guest("ticker", "musl"),
                TimeoutMs = 3000, // a loaded 2-core machine must not split a pair outside the drill's own kills
                PrimaryDll = GuestEnv.PrimaryDll,
                BackupDll = GuestEnv.BackupDll,
                StepLimit = TimeSpan.FromSeconds(120),
                WorkDir = work,
                Progress = m => Output.WriteLine(m),
            };
            var (cycles, final, report) = new CycleDrill(s).Run();
            Output.WriteLine(CycleDrill.Table(cycles));
            Show("", final);
            Assert.Equal(3, cycles.Count);
            Assert.All(cycles, c => Assert.True(c.Ok, string.Join("; ", c.Invariants.Where(i => !i.Ok).Select(i => $"{i.Name}: {i.Detail}"))));
            Assert.All(final, i => Assert.True(i.Ok, $"{i.Name}: {i.Detail}"));
            Assert.Equal([1L, 2L, 3L], cycles.Select(c => c.Term!.Value));
            using var doc = JsonDocument.Parse(File.ReadAllText(report));
            foreach (var c in doc.RootElement.GetProperty("cycles").EnumerateArray())
            {
                foreach (var f in new[] { "takeoverMs", "joinMs", "transferMs", "catchUpMs", "pauseMs" })
                    Assert.True(c.GetProperty(f).GetDouble() > 0, $"report.json gives {f} of every cycle");
                // the standbys share the guest's files: each joins from a snapshot
                Assert.Equal("snapshot", c.GetProperty("joinMode").GetString());
                Assert.True(c.GetProperty("snapshotBytes").GetInt64() > 4096);
            }
        }
        finally { Directory.Delete(work, true); }
    }
}
