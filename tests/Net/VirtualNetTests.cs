using System.Text.Json;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// What a run of <see cref="KvClients.Script"/> saw: SETs acknowledged, connections reset, other failures, and the
/// longest time between two consecutive acknowledgements of all connections (the stall of a failover).
/// </summary>
sealed record KvClientReport(int Acked, int Resets, string[] Errors, double MaxGapMs, bool Bye);

/// <summary>
/// Linux clients of kvserver (python3, one thread per connection) in a network namespace: each connection SETs its own
/// keys one request at a time, then GETs every key it got OK for and checks the value, keeping the connection open
/// throughout; a reset or a wrong answer is counted, never retried. Prints "progress N" every 100 acknowledged SETs
/// (for placing a fault by progress, not by time) and a JSON report at the end; SHUTDOWN ends the server.
/// </summary>
static class KvClients
{
    public const string Script = """
import socket, sys, threading, time, json
host, port, nconn, nreq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
st = {'acked': 0, 'resets': 0, 'errors': [], 'last': None, 'maxgap': 0.0}
socks = [None] * nconn
def note():
    now = time.monotonic()
    with lock:
        if st['last'] is not None: st['maxgap'] = max(st['maxgap'], now - st['last'])
        st['last'] = now
        st['acked'] += 1
        a = st['acked']
    if a % 100 == 0: print('progress', a, flush=True)
def worker(c):
    try:
        s = socket.create_connection((host, port), timeout=240)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[c] = s
        f = s.makefile('rwb')
        keys = []
        for i in range(nreq):
            k = b'c%dk%d' % (c, i); v = b'v%d.%d' % (c, i * 7)
            f.write(b'SET ' + k + b' ' + v + b'\n'); f.flush()
            r = f.readline()
            if r != b'OK\n': raise Exception('SET %s answered %r' % (k, r))
            keys.append((k, v)); note()
        for k, v in keys:
            f.write(b'GET ' + k + b'\n'); f.flush()
            r = f.readline()
            if r != b'VALUE ' + v + b'\n': raise Exception('GET %s answered %r' % (k, r))
    except (ConnectionResetError, BrokenPipeError) as e:
        with lock: st['resets'] += 1; st['errors'].append('conn %d: %r' % (c, e))
    except Exception as e:
        with lock: st['errors'].append('conn %d: %r' % (c, e))
ts = [threading.Thread(target=worker, args=(c,)) for c in range(nconn)]
for t in ts: t.start()
for t in ts: t.join()
bye = False
try:
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(b'SHUTDOWN\n')
    bye = s.makefile('rb').readline() == b'BYE\n'
except Exception as e:
    st['errors'].append('shutdown: %r' % e)
for s in socks:
    if s: s.close()
print(json.dumps({'Acked': st['acked'], 'Resets': st['resets'], 'Errors': st['errors'], 'MaxGapMs': st['maxgap'] * 1000, 'Bye': bye}), flush=True)
""";

    static readonly Regex Progress = new(@"^progress (\d+)$");

    /// <summary>Starts the clients inside the namespace; <see cref="Finish"/> collects the report.</summary>
    public static System.Diagnostics.Process Start(TapNamespace ns, string host, int port, int connections, int requests)
    {
        var script = Path.Combine(Path.GetTempPath(), $"rv-kvclients-{Environment.ProcessId}-{Guid.NewGuid():N}.py");
        File.WriteAllText(script, Script);
        return ns.Start("python3", script, host, port.ToString(), connections.ToString(), requests.ToString());
    }

    /// <summary>Reads the clients' stdout until `progress` reaches <paramref name="acked"/> (true) or they end (false).</summary>
    public static bool WaitForProgress(System.Diagnostics.Process p, int acked, List<string> lines)
    {
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null)
        {
            lines.Add(line);
            if (Progress.Match(line) is { Success: true } m && int.Parse(m.Groups[1].Value) >= acked) return true;
        }
        return false;
    }

    public static KvClientReport Finish(System.Diagnostics.Process p, List<string> lines, TimeSpan timeout)
    {
        var rest = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(true); throw new TimeoutException($"the clients did not finish in {timeout}: {p.StandardError.ReadToEnd()}"); }
        lines.AddRange(rest.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var json = lines.LastOrDefault(l => l.StartsWith('{')) ?? throw new InvalidOperationException($"no report from the clients; stderr: {p.StandardError.ReadToEnd()}");
        return JsonSerializer.Deserialize<KvClientReport>(json)!;
    }
}

/// <summary>
/// kvserver with a virtual network interface (`--net virtual`): its sockets are served by the in-VM TCP/IP stack and
/// its wire is a TAP device in a network namespace the test makes, where Linux clients (python3) connect to the
/// virtual IP. Under `run`, and under `record` followed by a replay that must be faithful (every frame the interface
/// received at the same instruction, the stack's state in every checkpoint digest).
/// </summary>
public class VirtualNetTests
{
    static readonly TimeSpan Timeout = TimeSpan.FromMinutes(4);
    const string GuestIp = "10.213.0.2";
    const int Port = 7000;
    static readonly Regex Listening = new(@"listening on 10\.213\.0\.2:(\d+)");

    static string[] NetArgs(TapNamespace ns) =>
        ["--net", "virtual", "--ip", GuestIp + "/24", "--tap", TapNamespace.TapName, "--netns", ns.Name];

    /// <summary>Serves 8 connections of 150 SETs and their GETs; returns the guest's outcome and the clients' report.</summary>
    static (RunOutcome Vm, KvClientReport Clients) Serve(string libc, string? log)
    {
        using var ns = new TapNamespace(openTap: false);
        var args = new List<string>();
        if (log == null) args.Add("run");
        else args.AddRange(["record", "--log", log, "--checkpoint-interval", "300000"]);
        args.AddRange(NetArgs(ns));
        args.AddRange(["--", GuestEnv.Guest("kvserver", libc), Port.ToString(), GuestIp]);
        using var vm = RunningProgram.Dotnet(GuestEnv.PrimaryDll, args.ToArray());
        vm.WaitForStderr(Listening, Timeout);
        using var clients = KvClients.Start(ns, GuestIp, Port, 8, 150);
        var report = KvClients.Finish(clients, [], Timeout);
        return (vm.WaitForExit(Timeout), report);
    }

    static void AssertServed(RunOutcome vm, KvClientReport c, int connections = 8, int requests = 150)
    {
        Assert.True(c.Errors.Length == 0, string.Join("\n", c.Errors) + "\nguest stderr:\n" + vm.Stderr);
        Assert.Equal(0, c.Resets);
        Assert.Equal(connections * requests, c.Acked);
        Assert.True(c.Bye);
        Assert.Equal(0, vm.ExitCode);
        // every acknowledged SET is logged once by the server, in some interleaving of the connections
        var lines = vm.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(connections * requests, lines.Length);
        Assert.Equal(connections * requests, lines.Distinct().Count());
    }

    [Theory]
    [InlineData("musl")]
    [InlineData("glibc")]
    public void KvServerThroughTheStackUnderRun(string libc)
    {
        var (vm, clients) = Serve(libc, null);
        AssertServed(vm, clients);
    }

    [Fact]
    public void KvServerThroughTheStackRecordsAndReplaysFaithfully()
    {
        var log = Path.Combine(Path.GetTempPath(), $"revirt-vnet-{Guid.NewGuid():N}.rvlog");
        try
        {
            var (vm, clients) = Serve("musl", log);
            AssertServed(vm, clients);
            var replay = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(replay.ExitCode == 0, replay.Stderr);
            Assert.Equal(vm.StdoutText, replay.StdoutText);
            // the interface's input is in the log (NetInput records) and nothing else about the sockets is
            int netInputs = 0;
            using (var reader = ReVirt.Log.LogReader.Open(log))
                while (reader.TryRead(out var rec))
                    if (rec.Kind == ReVirt.Log.RecordKind.NetInput) netInputs++;
            Assert.True(netInputs > 8 * 150, $"{netInputs} NetInput records for 8 x 150 requests");
        }
        finally { File.Delete(log); }
    }
}
