using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Programs;

/// <summary>
/// Debian's redis-server, unmodified and dynamically linked, as a service in the VM: it answers a fixed command
/// script exactly as the same server run natively does, survives redis-benchmark's load with real clients, and a
/// recording of it serving clients replays faithfully.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)] // a server timed by real clients: not next to replica pairs
public class RedisTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);

    static void RequireRedis()
    {
        Assert.True(File.Exists(Redis.Server), $"{Redis.Server} is not installed (.ci/run installs redis-server)");
        Assert.True(File.Exists(Redis.Benchmark), $"{Redis.Benchmark} is not installed (.ci/run installs redis-tools)");
    }

    /// <summary>Starts `primary VERB ... -- redis-server` on a free port and waits for PONG.</summary>
    static (RunningProgram Vm, int Port) StartInVm(params string[] verb)
    {
        int port = ReVirt.Chaos.LoopbackPorts.Pick();
        var vm = RunningProgram.Dotnet(GuestEnv.PrimaryDll, [.. verb, "--", .. Redis.Args(port)]);
        if (!Redis.WaitForPong(port, Long, () => vm.HasExited))
            throw new TimeoutException($"redis-server in the VM did not answer PING on port {port}; stderr:\n{vm.Stderr}");
        return (vm, port);
    }

    [Fact]
    public void AnswersTheSameAsNativeAndServesRedisBenchmark()
    {
        RequireRedis();
        int nativePort = ReVirt.Chaos.LoopbackPorts.Pick();
        var args = Redis.Args(nativePort);
        using var native = new RunningProgram(args[0], args[1..]);
        Assert.True(Redis.WaitForPong(nativePort, TimeSpan.FromSeconds(30), () => native.HasExited), "native redis-server did not start:\n" + native.Stderr);
        var expected = Redis.RunScript(nativePort);
        Redis.Shutdown(nativePort);
        Assert.Equal(0, native.WaitForExit(Long).ExitCode);

        var (vm, port) = StartInVm("run");
        using var _ = vm;
        var actual = Redis.RunScript(port);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(expected[i] == actual[i], $"reply #{i} differs: native {Trim(expected[i])}, VM {Trim(actual[i])}");

        // Debian's own client and load generator, 50 connections
        var bench = GuestEnv.Exec(Redis.Benchmark, ["-p", port.ToString(), "-q", "-n", "20000", "-t", "set,get,incr,lpush"], null, Long);
        output.WriteLine(bench.StdoutText.Replace("\r", "\n"));
        Assert.Equal(0, bench.ExitCode);
        foreach (var t in new[] { "SET", "GET", "INCR", "LPUSH" })
            Assert.Matches($@"(?m)^{t}: [0-9.]+ requests per second", bench.StdoutText.Replace("\r", "\n"));
        using (var c = new Redis.Client(port))
        {
            Assert.Equal("$1000", c.Call("GET", "counter")); // the script's state is still there
            Assert.Equal("$hello", c.Call("ECHO", "hello"));
        }
        Redis.Shutdown(port);
        var done = vm.WaitForExit(Long);
        Assert.True(done.ExitCode == 0, done.Stderr);
    }

    [Fact]
    public void ARecordingOfRedisServingClientsReplaysFaithfully()
    {
        RequireRedis();
        string log = Path.Combine(Path.GetTempPath(), $"revirt-redis-{Guid.NewGuid():N}.rvlog");
        try
        {
            var (vm, port) = StartInVm("record", "--log", log);
            using (vm)
            {
                var replies = Redis.RunScript(port);
                Assert.Contains("$1000", replies);
                var bench = GuestEnv.Exec(Redis.Benchmark, ["-p", port.ToString(), "-q", "-n", "2000", "-c", "8", "-t", "set,get"], null, Long);
                Assert.Equal(0, bench.ExitCode);
                Redis.Shutdown(port);
                var rec = vm.WaitForExit(Long);
                Assert.True(rec.ExitCode == 0, rec.Stderr);
            }
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log], timeout: Long);
            output.WriteLine($"log {new FileInfo(log).Length:N0} bytes; {rp.Stderr}");
            Assert.True(rp.ExitCode == 0, $"replay exit {rp.ExitCode}:\n{rp.Stderr}");
        }
        finally { File.Delete(log); }
    }

    static string Trim(string s) => s.Length > 120 ? s[..120] + $"... ({s.Length} chars)" : s;
}
