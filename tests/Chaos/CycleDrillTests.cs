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

    static ClientOp Set(int conn, int i, double start, double end, bool acked = true) =>
        new(start, end, "SET", $"c{conn}k{i}", $"v{conn}.{i}", acked, acked ? "OK" : null, conn);
    static ClientOp Get(int conn, int i, double start, double end, string reply) => new(start, end, "GET", $"c{conn}k{i}", $"v{conn}.{i}", true, reply, conn);
    static byte[] KvOut(params string[] keys) => Encoding.ASCII.GetBytes(string.Concat(keys.Select(k => $"set {k}\n")));

    /// <summary>
    /// `--net virtual` cycles: connections-survive is checked after each cycle on what the clients saw by then, so a
    /// client reset planted in cycle 2 passes cycle 1 and fails cycle 2 (and the whole run); so do a replaced
    /// connection, a reply lost or sent twice (a reply of the wrong kind), and a client that got no answer from the
    /// survivor. The clients' stall is the longest silence between two replies that ends after the kill. The kvserver
    /// output check catches a request served twice and, at the end, an acknowledged SET never logged and a key no
    /// client sent; the acknowledged-writes check catches a GET that returns an older value and a key not read back.
    /// </summary>
    [Fact]
    public void ConnectionsSurviveIsCheckedPerCycleAndAPlantedResetInCycleTwoIsReported()
    {
        // two clients; kills at 100 ms (takeover at 150) and 300 ms (takeover at 360); replies every 10 ms otherwise
        var ops = new List<ClientOp>();
        for (int i = 0; i < 50; i++)
        {
            double t = i * 10;
            if (t is > 100 and < 190 || t is > 300 and < 400) continue; // the stalls after each kill
            ops.Add(Set(i % 2, i, t, t + 5));
        }
        var cycle1 = ops.Where(o => o.EndMs < 250).ToList();
        var ok1 = new ConnectionStats(true, 2, 2, 0);
        Assert.True(CycleInvariants.ConnectionsSurvived(ok1, cycle1, 150, "by the end of cycle 1").Ok);
        Assert.True(CycleInvariants.ConnectionsSurvived(ok1, ops, 360, "by the end of cycle 2").Ok);
        // planted: client 1's connection reset during cycle 2
        var reset2 = new ConnectionStats(true, 2, 2, 1);
        var c2 = CycleInvariants.ConnectionsSurvived(reset2, ops, 360, "by the end of cycle 2");
        Assert.False(c2.Ok);
        Assert.Equal(CycleInvariants.ConnectionsSurvive, c2.Name);
        Assert.StartsWith("1 of the 2 clients' connections broke", c2.Detail);
        Assert.EndsWith("by the end of cycle 2", c2.Detail);
        // a connection replaced (a reconnect), a doubled or lost reply (one of the wrong kind)
        Assert.False(CycleInvariants.ConnectionsSurvived(new ConnectionStats(true, 2, 3, 0), ops, 360, "in cycle 2").Ok);
        Assert.Contains("lost or sent twice", CycleInvariants.ConnectionsSurvived(new ConnectionStats(true, 2, 2, 0, Mismatched: 1), ops, 360, "in cycle 2").Detail);
        // client 0 got nothing from the survivor of cycle 2 (its connection is alive but not served)
        var silent = ops.Where(o => !(o.Conn == 0 && o.EndMs > 360)).ToList();
        var quiet = CycleInvariants.ConnectionsSurvived(ok1, silent, 360, "by the end of cycle 2");
        Assert.False(quiet.Ok);
        Assert.Contains("client 0 got no answer", quiet.Detail);
        // the ticker has no clients: not applicable
        Assert.True(CycleInvariants.ConnectionsSurvived(null, [], 360, "x").Ok);

        // stall: the reply at 105 was on its way when the replica died at 100; the silence after it, across the
        // takeover at 150, to 195 is the failover's
        Assert.Equal(90, CycleInvariants.Stall(ops, 150));
        Assert.Equal(100, CycleInvariants.Stall(ops, 360));
        Assert.Null(CycleInvariants.Stall(ops, 500));
        // the longest silence after a kill: a later pause (here 205 -> 405, the output held while a standby joins)
        // shows once it has ended, when it is longer than the failover's
        var held = ops.Where(o => o.EndMs is not (> 205 and < 320)).ToList();
        Assert.Equal(90, CycleInvariants.LongestSilence(ops, 100, 250));
        Assert.Equal(90, CycleInvariants.LongestSilence(held, 100, 400));
        Assert.Equal(200, CycleInvariants.LongestSilence(held, 100, 405));
        Assert.Null(CycleInvariants.LongestSilence(ops, 500, 1000));

        // kvserver's output: a key logged twice is a request served twice; at the end, an acknowledged SET must be
        // logged and a logged key must have been sent
        var keys = ops.Select(o => o.Key).ToArray();
        var outs = new List<ReplicaOutput> { Replica("primary", 0, KvOut(keys)) };
        Assert.True(CycleInvariants.OutputContinuous(outs, KvOut(keys), CycleInvariants.KvLines(ops)).Ok);
        var twice = KvOut([.. keys, keys[3]]);
        Assert.Contains("a second time", CycleInvariants.OutputContinuous([Replica("primary", 0, twice)], twice, CycleInvariants.KvLines(), ended: false).Detail);
        var missing = KvOut(keys[..^1]);
        Assert.Contains("never logs it", CycleInvariants.OutputContinuous([Replica("primary", 0, missing)], missing, CycleInvariants.KvLines(ops)).Detail);
        var stray = KvOut([.. keys, "c9k9"]);
        Assert.Contains("which no client sent", CycleInvariants.OutputContinuous([Replica("primary", 0, stray)], stray, CycleInvariants.KvLines(ops)).Detail);
        // mid-run a partial last line is the pipe being read, at the end it is a cut-off output
        var partial = KvOut(keys).Concat(Encoding.ASCII.GetBytes("set c1")).ToArray();
        Assert.True(CycleInvariants.OutputContinuous([Replica("primary", 0, partial)], partial, CycleInvariants.KvLines(), ended: false).Ok);
        Assert.False(CycleInvariants.OutputContinuous([Replica("primary", 0, partial)], partial, CycleInvariants.KvLines()).Ok);

        // acknowledged writes: a GET after the kill that returns an older value, a key that does not read back
        var final = KvOut(keys);
        var readBack = ops.ToDictionary(o => o.Key, o => (string?)o.Value);
        Assert.True(CycleInvariants.AckedWritesKept(outs, final, ops, readBack).Ok);
        var stale = ops.Append(Get(0, 0, 500, 505, "NOTFOUND")).ToList();
        Assert.Contains("is lost", CycleInvariants.AckedWritesKept(outs, final, stale).Detail);
        readBack.Remove(keys[^1]);
        Assert.Contains("could not be read back", CycleInvariants.AckedWritesKept(outs, final, ops, readBack).Detail);
        // the load itself: a client error, no BYE
        Assert.True(CycleInvariants.LoadServed([], [.. ops, new ClientOp(600, 601, "SHUTDOWN", "", null, true, "BYE")]).Ok);
        Assert.False(CycleInvariants.LoadServed([], ops).Ok);
        Assert.False(CycleInvariants.LoadServed(["conn 1: reset"], [.. ops, new ClientOp(600, 601, "SHUTDOWN", "", null, true, "BYE")]).Ok);
    }

    /// <summary>
    /// `chaos drill --cycles 2 --net virtual`: kvserver on its virtual interface, three clients in their own network
    /// namespace keeping one connection each; each cycle kills the live replica, its follower takes over (the guest's
    /// MAC and IP move to its TAP device) and a standby on the next slot's device joins by a snapshot that carries the
    /// interface. connections-survive holds after each cycle and over the run, every acknowledged SET reads back over
    /// its connection, and report.json gives each cycle's stall. Needs root (TAP devices, a network namespace).
    /// </summary>
    [Fact]
    public void TwoCyclesOnTheVirtualNetworkKeepEveryConnection() => CyclesOnTheVirtualNetwork(cycles: 2, connections: 3, seed: 3);

    /// <summary>The soak's (REVIRT_SOAK=1) long variant: 8 cycles, 8 connections.</summary>
    [Fact]
    public void ManyCyclesOnTheVirtualNetworkKeepEveryConnection()
    {
        if (!SoakSwitch.On) { Output.WriteLine(SoakSwitch.Skipped); return; }
        CyclesOnTheVirtualNetwork(cycles: 8, connections: 8, seed: 11);
    }

    void CyclesOnTheVirtualNetwork(int cycles, int connections, int seed)
    {
        using var net = VirtualNetwork.Create(standbys: CycleDrill.Slots);
        var (rs, final, report) = RunCycles(GuestEnv.Guest("kvserver", "musl"), cycles, seed, net, connections);
        Assert.All(rs, c => Assert.Contains(c.Invariants, i => i.Name == CycleInvariants.ConnectionsSurvive && i.Ok));
        Assert.Contains(final, i => i.Name == CycleInvariants.ConnectionsSurvive && i.Ok);
        Assert.All(rs, c => Assert.Equal(new ConnectionStats(true, connections, connections, 0), c.Connections));
        using var doc = JsonDocument.Parse(report);
        Assert.Equal("virtual", doc.RootElement.GetProperty("net").GetString());
        foreach (var c in doc.RootElement.GetProperty("cycles").EnumerateArray())
        {
            Assert.True(c.GetProperty("stallMs").GetDouble() > 0, "report.json gives each cycle's stall");
            Assert.Equal("snapshot", c.GetProperty("joinMode").GetString());
            Assert.Equal(0, c.GetProperty("connections").GetProperty("breaks").GetInt32());
        }
    }

    /// <summary>
    /// The drill itself reports a client connection broken in cycle 2: while the second kill's takeover is under way,
    /// the clients' own sockets are destroyed in their namespace (`ss -K`, which the clients see as an aborted
    /// connection; they reconnect). connections-survive holds after cycle 1 and is violated after cycle 2 and over the
    /// run, naming the broken connections.
    /// </summary>
    [Fact]
    public void APlantedClientResetInCycleTwoIsReportedByTheDrill()
    {
        using var net = VirtualNetwork.Create(standbys: CycleDrill.Slots);
        void Plant(string m)
        {
            if (m.StartsWith("cycle 2/2: killed", StringComparison.Ordinal))
                Child.Check(TimeSpan.FromSeconds(30), "ip", "netns", "exec", net.Name, "ss", "-K", "dst", VirtualNetwork.GuestIp);
        }
        var (rs, final, _) = RunCycles(GuestEnv.Guest("kvserver", "musl"), 2, seed: 5, net, connections: 2, expectOk: false, onProgress: Plant);
        InvariantResult Survive(IEnumerable<InvariantResult> l) => l.Single(i => i.Name == CycleInvariants.ConnectionsSurvive);
        Assert.True(Survive(rs[0].Invariants).Ok, Survive(rs[0].Invariants).Detail);
        Assert.False(Survive(rs[1].Invariants).Ok);
        Assert.Contains("by the end of cycle 2", Survive(rs[1].Invariants).Detail);
        Assert.False(Survive(final).Ok);
        Assert.True(rs[1].Connections!.Breaks > 0);
    }

    /// <summary>Runs a cycles drill in a temporary directory and (unless <paramref name="expectOk"/> is false) asserts
    /// that every invariant held in every cycle and at the end; returns the cycles, the final checks and report.json's text.</summary>
    (List<CycleRecord> Cycles, List<InvariantResult> Final, string Report) RunCycles(string guest, int cycles, int seed, VirtualNetwork? net = null, int connections = 4,
        bool expectOk = true, Action<string>? onProgress = null)
    {
        string work = Directory.CreateTempSubdirectory("revirt-cycles-").FullName;
        try
        {
            var s = new CycleSettings
            {
                Cycles = cycles,
                Seed = seed,
                Guest = guest,
                Network = net,
                Connections = connections,
                TimeoutMs = 3000, // a loaded 2-core machine must not split a pair outside the drill's own kills
                PrimaryDll = GuestEnv.PrimaryDll,
                BackupDll = GuestEnv.BackupDll,
                StepLimit = TimeSpan.FromSeconds(120),
                WorkDir = work,
                Progress = m => { Output.WriteLine(m); onProgress?.Invoke(m); },
            };
            var (rs, final, report) = new CycleDrill(s).Run();
            Output.WriteLine(CycleDrill.Table(rs));
            Show("", final);
            Assert.Equal(cycles, rs.Count);
            if (!expectOk) return (rs, final, File.ReadAllText(report));
            Assert.All(rs, c => Assert.True(c.Ok, string.Join("; ", c.Invariants.Where(i => !i.Ok).Select(i => $"{i.Name}: {i.Detail}"))));
            Assert.All(final, i => Assert.True(i.Ok, $"{i.Name}: {i.Detail}"));
            return (rs, final, File.ReadAllText(report));
        }
        finally { Directory.Delete(work, true); }
    }

    [Fact]
    public void ThreeCyclesOfKillTakeoverAndJoinKeepEveryInvariant()
    {
        var (cycles, _, report) = RunCycles(GuestEnv.Guest("ticker", "musl"), 3, seed: 7);
        Assert.Equal([1L, 2L, 3L], cycles.Select(c => c.Term!.Value));
        using var doc = JsonDocument.Parse(report);
        foreach (var c in doc.RootElement.GetProperty("cycles").EnumerateArray())
        {
            foreach (var f in new[] { "takeoverMs", "joinMs", "transferMs", "catchUpMs", "pauseMs" })
                Assert.True(c.GetProperty(f).GetDouble() > 0, $"report.json gives {f} of every cycle");
            // the standbys share the guest's files: each joins from a snapshot
            Assert.Equal("snapshot", c.GetProperty("joinMode").GetString());
            Assert.True(c.GetProperty("snapshotBytes").GetInt64() > 4096);
        }
    }
}
