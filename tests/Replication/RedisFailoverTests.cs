using System.Diagnostics;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Debian's redis-server under `primary protect`: the primary is SIGKILLed while redis-benchmark loads it and a
/// client of the test writes numbered keys; the backup takes over on the same port and every SET the client saw
/// acknowledged (before or after the kill) reads back from it.
/// </summary>
/// <remarks>
/// The kill lands while redis-benchmark loads the server, so the log the backup drains holds connections, epoll
/// waits and accepts at any point; the new primary re-listens on the port, resets the old primary's connections
/// and renews the parked epoll wait. Every wait is bounded (2 minutes per reply across reconnections).
/// </remarks>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class RedisFailoverTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    /// <summary>
    /// The suite's run: a short load (4 benchmark connections) and a kill after 30-80 acknowledged SETs (a random
    /// point, from a printed seed: REVIRT_SEED=N repeats it), then 30 more SETs through the new primary.
    /// </summary>
    [Fact]
    public void KillingTheProtectedPrimaryMidBenchmarkKeepsEveryAcknowledgedSet() => KillMidBenchmark(benchConnections: 4, killFrom: 30, killTo: 80, after: 30);

    /// <summary>The load run: 8 benchmark connections, a kill after 100-300 SETs, 100 more (REVIRT_SOAK=1).</summary>
    [Fact]
    public void SoakKillingTheProtectedPrimaryUnderHeavierLoad()
    {
        if (!SoakSwitch.On) { output.WriteLine(SoakSwitch.Skipped); return; }
        KillMidBenchmark(benchConnections: 8, killFrom: 100, killTo: 300, after: 100);
    }

    void KillMidBenchmark(int benchConnections, int killFrom, int killTo, int after)
    {
        Assert.True(File.Exists(Redis.Server) && File.Exists(Redis.Benchmark), "redis-server and redis-tools are not installed (.ci/run installs them)");
        int seed = int.TryParse(Environment.GetEnvironmentVariable("REVIRT_SEED"), out var sd) ? sd : Environment.TickCount & 0xffff;
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        string arbiter = TempFile(".lock");
        int port = ReVirt.Chaos.LoopbackPorts.Pick();
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
        using var _ = b;
        using var p = Replicas.Primary(["--backup", url, "--arbiter", arbiter, "--", .. Redis.Args(port)]);
        Assert.True(Redis.WaitForPong(port, Long, () => p.HasExited), "the protected redis-server did not answer PING:\n" + p.Stderr);

        // load from Debian's benchmark (random keys) for the whole round; it may report errors once its connections
        // are reset by the takeover, which is not what this test checks
        using var bench = new RunningProgram(Redis.Benchmark, ["-p", port.ToString(), "-q", "-n", "10000000", "-c", benchConnections.ToString(), "-r", "100000", "-t", "set,get"]);

        var acked = new List<int>();
        int next = 0;
        using var client = new Redis.Client(port);
        int killAfter = rng.Next(killFrom, killTo);
        var killer = Replicas.KillWhen(p, () => Volatile.Read(ref next), killAfter, rng);
        int target = killAfter + after;
        var stall = TimeSpan.Zero;
        while (next < target)
        {
            int k = next;
            var sw = Stopwatch.StartNew();
            string reply = client.Ask(TimeSpan.FromSeconds(120), "SET", $"key:{k}", $"value-{k}");
            if (sw.Elapsed > stall) stall = sw.Elapsed;
            Assert.Equal("+OK", reply);
            acked.Add(k);
            Volatile.Write(ref next, k + 1);
        }
        Assert.True(killer.Join(TimeSpan.FromSeconds(60)), "the kill did not happen");
        bench.Dispose();
        // every acknowledged write is readable from whoever serves the port now
        foreach (var k in acked) Assert.Equal($"$value-{k}", client.Ask(TimeSpan.FromSeconds(60), "GET", $"key:{k}"));
        output.WriteLine($"killed after {killAfter} SETs; {client.Connections} connections; longest SET {stall.TotalMilliseconds:F0} ms");
        Redis.Shutdown(port);
        int? code = b.WaitForExit(Long);
        output.WriteLine("backup:\n" + b.Stderr);
        Assert.Equal(0, code);
        Assert.NotNull(b.Event(ReplicaEvent.TookOver));
        Assert.Null(b.Event(ReplicaEvent.Diverged));
        Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && Regex.IsMatch(e.Str("detail")!, @"listening again on 127\.0\.0\.1:" + port));
        File.Delete(arbiter);
    }
}
