using System.Text.Json;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Net;

/// <summary>
/// Linux's own clients of an unmodified server in the VM (`primary run --net virtual`) through a faulty link: every
/// frame between the clients' device and the guest's TAP device crosses bench/lossyrelay.py, which loses 2 % of them
/// each way, sends 2 % twice and holds 3 % back 1-3 ms behind later ones (seeded). Issue 13's interoperability with
/// the host's TCP beyond the python clients of <see cref="StackTapTests"/>: curl against busybox's httpd (HTTP/1.0, so
/// the server closes each connection first), byte streams compared with the file served, and redis-benchmark against
/// Debian's redis-server, its effect counted by the server. ~25 s together (mostly the servers' start-up in the VM).
/// </summary>
public class LossyLinkInteropTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(4);
    const string GuestIp = "10.213.0.2", Busybox = "/usr/bin/busybox";
    const int Port = 8080, ClientPort = 41234, Reconnects = 4;

    /// <summary>A Linux client that connects from one port again and again (SO_REUSEADDR), fetching a page over
    /// HTTP/1.0 each time: the server closes first, so the stack holds every previous connection in TIME-WAIT while
    /// the client, which closed second and keeps nothing, opens the next one with the same four numbers. Prints each
    /// connect's milliseconds and whether every page arrived whole (JSON).</summary>
    const string ReconnectingClient = """
import errno, json, socket, sys, time
host, port, local, n, expect = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), open(sys.argv[5], 'rb').read()
times, ok, error = [], True, None
try:
    for i in range(n):
        t0 = time.monotonic()
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(30)
            try:
                s.bind(('10.213.0.1', local))
                t1 = time.monotonic()
                s.connect((host, port))
                break
            except OSError as e:
                # our previous connection is in LAST-ACK until the server acknowledges our FIN (a moment, or a resend
                # through the lossy link): the port or the four numbers are still ours
                s.close()
                if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL) or time.monotonic() - t0 > 30: raise
                time.sleep(0.05)
        times.append(round((time.monotonic() - t1) * 1000, 1))
        s.sendall(b'GET /page HTTP/1.0\r\n\r\n')
        got = b''
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
        s.close()
        ok = ok and got.startswith(b'HTTP/1.') and got.endswith(b'\r\n\r\n' + expect)
except Exception as e:
    ok, error = False, repr(e)
print(json.dumps({'connectMs': times, 'ok': ok, 'error': error}), flush=True)
""";

    /// <summary>The guest under <see cref="Serve"/>, its namespace and where its TAP device is.</summary>
    sealed record Served(TapNamespace Ns, RunningProgram Vm);

    /// <summary>Runs <paramref name="guest"/> under `primary run --net virtual` on a TAP device whose frames reach the
    /// clients only through the seeded lossy relay, waits until <paramref name="answers"/> (a client command in the
    /// namespace) succeeds, runs <paramref name="clients"/>, then checks that the relay lost, doubled and reordered
    /// frames. Every process, file and the namespace is cleaned up.</summary>
    void Serve(string[] guest, Func<TapNamespace, bool> answers, Action<Served> clients)
    {
        string stats = Path.Combine(Path.GetTempPath(), $"revirt-relay-{Guid.NewGuid():N}.json");
        System.Diagnostics.Process? relay = null;
        try
        {
            using var ns = TapNamespace.BridgedBehindRelay(TapNamespace.TapName);
            relay = ns.StartRelay(0.02, 0.02, 0.03, seed: 29, stats);
            using var vm = RunningProgram.Dotnet(GuestEnv.PrimaryDll, ["run", "--net", "virtual", "--ip", GuestIp + "/24", "--tap", TapNamespace.TapName,
                "--netns", ns.Name, "--", .. guest]);
            // the servers say nothing on stderr when they listen: ask until one answers (start-up in the VM takes seconds)
            var up = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                try { if (answers(ns)) break; }
                catch (InvalidOperationException) when (up.Elapsed < Long && !vm.HasExited) { }
                Assert.False(vm.HasExited, "the server ended before it answered:\n" + vm.Stderr);
                Assert.True(up.Elapsed < Long, $"the server did not answer within {Long}:\n{vm.Stderr}");
                Thread.Sleep(200);
            }
            clients(new Served(ns, vm));
            relay.Kill();
            relay.WaitForExit(60_000);
            var counts = JsonDocument.Parse(File.ReadAllText(stats)).RootElement;
            output.WriteLine($"relay: {counts}");
            foreach (var what in new[] { "dropped", "duplicated", "reordered" })
                Assert.True(counts.GetProperty(what).GetInt64() > 0, $"the relay {what} no frame: {counts}");
        }
        finally
        {
            if (relay != null) { try { relay.Kill(); } catch (InvalidOperationException) { } relay.WaitForExit(60_000); relay.Dispose(); }
            File.Delete(stats); File.Delete(stats + ".tmp");
        }
    }

    /// <summary>
    /// busybox httpd in the VM serves a 2 MB file to curl twice and a page to a client that reuses its port four times,
    /// all through the faulty link: each download is byte for byte the file, each reconnection connects (the old
    /// incarnation's TIME-WAIT in the stack opens the new one: before, its SYN got an ACK of the old connection and the
    /// client could not connect for the 60 s of TIME-WAIT), and the relay's counts show the faults happened.
    /// </summary>
    [Fact]
    public void CurlAndAClientReusingItsPortThroughLossDuplicationAndReordering()
    {
        Assert.True(File.Exists(Busybox), "busybox is not installed");
        string www = Path.Combine(Path.GetTempPath(), $"revirt-www-{Guid.NewGuid():N}");
        string script = Path.Combine(Path.GetTempPath(), $"revirt-reconnect-{Guid.NewGuid():N}.py");
        Directory.CreateDirectory(www);
        try
        {
            var blob = StackLink.Payload(2_000_000, 17);
            File.WriteAllBytes(Path.Combine(www, "blob"), blob);
            File.WriteAllText(Path.Combine(www, "page"), "a page served through the in-VM stack\n");
            File.WriteAllText(script, ReconnectingClient);
            string url = $"http://{GuestIp}:{Port}";
            Serve([Busybox, "httpd", "-f", "-p", $"{GuestIp}:{Port}", "-h", www],
                ns => ns.Exec("curl", "-s", "--max-time", "20", url + "/page").StartsWith("a page"),
                s =>
                {
                    for (int i = 0; i < 2; i++)
                    {
                        string got = Path.Combine(www, $"got{i}");
                        s.Ns.Exec("curl", "-s", "-S", "--max-time", "180", "-o", got, url + "/blob");
                        Assert.True(blob.AsSpan().SequenceEqual(File.ReadAllBytes(got)), $"download {i} differs from the file served");
                    }
                    var report = JsonDocument.Parse(s.Ns.Exec("python3", script, GuestIp, Port.ToString(), ClientPort.ToString(), Reconnects.ToString(),
                        Path.Combine(www, "page")).Trim()).RootElement;
                    output.WriteLine($"reconnections from port {ClientPort}: {report}");
                    Assert.True(report.GetProperty("ok").GetBoolean(), $"the client reusing its port: {report}");
                    Assert.Equal(Reconnects, report.GetProperty("connectMs").GetArrayLength());
                });
        }
        finally
        {
            Directory.Delete(www, recursive: true);
            File.Delete(script);
        }
    }

    /// <summary>
    /// Debian's redis-server in the VM loaded by Debian's redis-benchmark (16 connections, INCR and LPUSH) through the
    /// faulty link. The oracle is the server's own count: without -r every INCR hits one key and every LPUSH one list,
    /// so after N requests of each the counter reads N and the list holds N items — a request lost or applied twice
    /// (a byte stream that lost or doubled a segment) shows; redis-cli asks over a connection of its own.
    /// </summary>
    [Fact]
    public void RedisBenchmarkThroughLossDuplicationAndReordering()
    {
        Assert.True(File.Exists(Redis.Server) && File.Exists(Redis.Benchmark), "redis-server and redis-tools are not installed (.ci/run installs them)");
        const int N = 1500, RedisPort = 7000;
        string Cli(TapNamespace ns, params string[] a) => ns.Exec(["timeout", "120", "redis-cli", "-h", GuestIp, "-p", RedisPort.ToString(), .. a]).Trim();
        Serve([Redis.Server, "--port", RedisPort.ToString(), "--bind", GuestIp, "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            ns => Cli(ns, "PING") == "PONG",
            s =>
            {
                var bench = s.Ns.Exec("timeout", "600", Redis.Benchmark, "-h", GuestIp, "-p", RedisPort.ToString(), "-q", "-n", N.ToString(), "-c", "16", "-t", "incr,lpush")
                    .Replace('\r', '\n');
                output.WriteLine(string.Join("\n", bench.Split('\n').Where(l => l.Contains("requests per second"))));
                Assert.Matches(@"INCR: [\d.]+ requests per second", bench);
                Assert.Matches(@"LPUSH: [\d.]+ requests per second", bench);
                Assert.Equal(N.ToString(), Cli(s.Ns, "GET", "counter:__rand_int__"));
                Assert.Equal(N.ToString(), Cli(s.Ns, "LLEN", "mylist"));
            });
    }
}
