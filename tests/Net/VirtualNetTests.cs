using System.Text.Json;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// What a run of <see cref="KvClients.Script"/> saw: SETs acknowledged, connections reset, other failures, and the
/// longest time between two consecutive acknowledgements of all connections (the stall of a failover), and the
/// connections the clients' kernel saw reset while they ran (`EstabResets` of the namespace's /proc/net/snmp, read
/// before the first connection and after the last GET: an oracle independent of the clients' own bookkeeping).
/// </summary>
sealed record KvClientReport(int Acked, int Resets, string[] Errors, double MaxGapMs, bool Bye, double[] AckTimesMs, long KernelResets)
{
    /// <summary>The stall after a moment (CLOCK_MONOTONIC ms, as <see cref="KvClients.MonotonicMs"/>): the longest
    /// silence between two consecutive acknowledgements (of all connections) that ends after it. Replies already on
    /// their way when a primary dies still arrive; the silence that follows them is the failover's.</summary>
    public double StallAfter(double atMs)
    {
        var t = AckTimesMs.Order().ToArray();
        double worst = 0;
        for (int i = 1; i < t.Length; i++)
            if (t[i] > atMs) worst = Math.Max(worst, t[i] - t[i - 1]);
        return worst;
    }
}

/// <summary>
/// Linux clients of a key-value server (python3, one thread per connection) in a network namespace, speaking kvserver's
/// line protocol or redis' RESP (<see cref="Protocol"/>): each connection SETs its own keys one request at a time, then
/// GETs every key it got OK for and checks the value, keeping the connection open throughout; a reset or a wrong answer
/// is counted, never retried. With a stop file, each connection SETs (at most `requests`, pausing between two) until
/// the file exists, then GETs. Prints "progress N" every 100 acknowledged SETs (for placing a fault by progress, not by
/// time) and a JSON report at the end; SHUTDOWN ends the server (kvserver answers BYE; redis, told SHUTDOWN NOSAVE,
/// closes the connection).
/// </summary>
static class KvClients
{
    public const string Script = """
import socket, sys, threading, time, json, os
host, port, nconn, nreq, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
hold = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
stop = sys.argv[7] if len(sys.argv) > 7 else ''
pause = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
def resp(*a): return b'*%d\r\n' % len(a) + b''.join(b'$%d\r\n%s\r\n' % (len(x), x) for x in a)
if proto == 'resp':
    def set_cmd(k, v): return resp(b'SET', k, v)
    def set_ok(f): return f.readline() == b'+OK\r\n'
    def get_cmd(k): return resp(b'GET', k)
    def get_ok(f, v): return f.readline() == b'$%d\r\n' % len(v) and f.readline() == v + b'\r\n'
    shutdown_cmd, bye_reply = resp(b'SHUTDOWN', b'NOSAVE'), b''
else:
    def set_cmd(k, v): return b'SET ' + k + b' ' + v + b'\n'
    def set_ok(f): return f.readline() == b'OK\n'
    def get_cmd(k): return b'GET ' + k + b'\n'
    def get_ok(f, v): return f.readline() == b'VALUE ' + v + b'\n'
    shutdown_cmd, bye_reply = b'SHUTDOWN\n', b'BYE\n'
lock = threading.Lock()
st = {'acked': 0, 'resets': 0, 'errors': [], 'last': None, 'maxgap': 0.0, 'times': []}
socks = [None] * nconn
def estab_resets():
    rows = [l.split() for l in open('/proc/net/snmp') if l.startswith('Tcp:')]
    return int(rows[1][rows[0].index('EstabResets')])
resets_before = estab_resets()
def note():
    now = time.monotonic()
    with lock:
        if st['last'] is not None: st['maxgap'] = max(st['maxgap'], now - st['last'])
        st['last'] = now
        st['acked'] += 1
        st['times'].append(round(now * 1000, 1))
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
            if stop and os.path.exists(stop): break
            if pause: time.sleep(pause)
            k = b'c%dk%d' % (c, i); v = b'v%d.%d' % (c, i * 7)
            f.write(set_cmd(k, v)); f.flush()
            if not set_ok(f): raise Exception('SET %s not acknowledged' % k)
            keys.append((k, v)); note()
        for k, v in keys:
            f.write(get_cmd(k)); f.flush()
            if not get_ok(f, v): raise Exception('GET %s did not answer %r' % (k, v))
    except (ConnectionResetError, BrokenPipeError) as e:
        with lock: st['resets'] += 1; st['errors'].append('conn %d: %r' % (c, e))
    except Exception as e:
        with lock: st['errors'].append('conn %d: %r' % (c, e))
ts = [threading.Thread(target=worker, args=(c,)) for c in range(nconn)]
for t in ts: t.start()
for t in ts: t.join()
kernel_resets = estab_resets() - resets_before
t0 = time.monotonic()
if hold: print('holding', flush=True)
while hold and os.path.exists(hold) and time.monotonic() - t0 < 240: time.sleep(0.05)
bye = False
try:
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(shutdown_cmd)
    bye = s.makefile('rb').readline() == bye_reply
except Exception as e:
    st['errors'].append('shutdown: %r' % e)
for s in socks:
    if s: s.close()
print(json.dumps({'Acked': st['acked'], 'Resets': st['resets'], 'Errors': st['errors'], 'MaxGapMs': st['maxgap'] * 1000, 'Bye': bye, 'AckTimesMs': st['times'], 'KernelResets': kernel_resets}), flush=True)
""";

    /// <summary>kvserver's line protocol (`SET k v` / `OK`) or redis' RESP.</summary>
    public enum Protocol { Kv, Resp }

    static readonly Regex Progress = new(@"^progress (\d+)$");

    /// <summary>Now on CLOCK_MONOTONIC in ms: the clock of the clients' <see cref="KvClientReport.AckTimesMs"/>
    /// (Python's time.monotonic and .NET's Stopwatch both read it on Linux).</summary>
    public static double MonotonicMs() => System.Diagnostics.Stopwatch.GetTimestamp() * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    /// <summary>Starts the clients inside the namespace; <see cref="Finish"/> collects the report. With
    /// <paramref name="hold"/>, the server is told to shut down only once that file is gone (at most 240 s later); with
    /// <paramref name="stopFile"/>, the clients SET until that file exists, pausing <paramref name="pauseSeconds"/> between two.</summary>
    public static System.Diagnostics.Process Start(TapNamespace ns, string host, int port, int connections, int requests, Protocol protocol = Protocol.Kv,
        string? hold = null, string stopFile = "", double pauseSeconds = 0)
    {
        // the script on the command line: no file left behind in the temporary directory (sys.argv[1:] are the same)
        return ns.Start("python3", "-c", Script, host, port.ToString(), connections.ToString(), requests.ToString(), protocol == Protocol.Resp ? "resp" : "kv",
            hold ?? "", stopFile, pauseSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary><see cref="WaitForProgress(System.Diagnostics.Process, int, List{string})"/> within <paramref name="timeout"/>:
    /// throws naming the progress waited for and the last seen when it does not come (the clients are then killed).</summary>
    public static void WaitForProgress(System.Diagnostics.Process p, int acked, List<string> lines, TimeSpan timeout)
    {
        var seen = new List<string>();
        var wait = Task.Run(() => WaitForProgress(p, acked, seen));
        if (!wait.Wait(timeout))
        {
            try { p.Kill(true); } catch (InvalidOperationException) { }
            throw new TimeoutException($"the clients did not reach {acked} acknowledged SETs within {timeout} (last: {seen.LastOrDefault() ?? lines.LastOrDefault()})");
        }
        lines.AddRange(seen);
        if (!wait.Result) throw new InvalidOperationException($"the clients ended before {acked} acknowledged SETs: " + string.Join("\n", lines));
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

    /// <summary>Reads the clients' stdout until the line <paramref name="text"/> (true), their end or the time-out (false).</summary>
    public static bool WaitForLine(System.Diagnostics.Process p, string text, List<string> lines, TimeSpan timeout)
    {
        var read = Task.Run(() =>
        {
            string? line;
            while ((line = p.StandardOutput.ReadLine()) != null)
            {
                lock (lines) lines.Add(line);
                if (line == text) return true;
            }
            return false;
        });
        return read.Wait(timeout) && read.Result;
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

    /// <summary>Serves 8 connections of 150 SETs and their GETs; returns the guest's outcome and the clients' report.
    /// With <paramref name="hostile"/>, <see cref="HostileFrames"/> runs beside the clients on the same wire (its report
    /// comes back in <paramref name="hostileReport"/>).</summary>
    internal static (RunOutcome Vm, KvClientReport Clients) Serve(string libc, string? log, bool hostile = false) => Serve(libc, log, hostile, out _);

    static (RunOutcome Vm, KvClientReport Clients) Serve(string libc, string? log, bool hostile, out JsonElement hostileReport)
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
        using var attacker = hostile ? HostileFrames.Start(ns, GuestIp, Port) : null;
        var report = KvClients.Finish(clients, [], Timeout);
        hostileReport = attacker != null ? HostileFrames.Finish(attacker) : default;
        return (vm.WaitForExit(Timeout), report);
    }

    static void AssertServed(RunOutcome vm, KvClientReport c, int connections = 8, int requests = 150)
    {
        Assert.True(c.Errors.Length == 0, string.Join("\n", c.Errors) + "\nguest stderr:\n" + vm.Stderr);
        Assert.Equal(0, c.Resets);
        Assert.Equal(0, c.KernelResets);
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

    /// <summary>
    /// Bad input on the wire of a running guest (issue 13's "Bad input"): while 8 Linux clients use kvserver through
    /// the stack under `record`, a raw packet socket on the same TAP device sends, every 50 ms, garbage, truncated and
    /// impossible IPv4/TCP/UDP/ARP frames, bad checksums, SYN+RST, a SYN flood from spoofed ports, and on every
    /// established client connection a RST and a SYN with wrong sequence numbers and out-of-window data acking data
    /// never sent (RFC 5961). The clients see no reset and every reply right; the guest ends normally; and the
    /// recording — which holds every one of those frames as input — replays faithfully.
    /// </summary>
    [Fact]
    public void HostileFramesBesideRealClientsChangeNothingAndReplayFaithfully()
    {
        var log = Path.Combine(Path.GetTempPath(), $"revirt-vnet-{Guid.NewGuid():N}.rvlog");
        try
        {
            var (vm, clients) = Serve("musl", log, hostile: true, out var attack);
            AssertServed(vm, clients);
            Assert.True(attack.GetProperty("targeted").GetInt32() > 0, $"no frame reached an established connection: {attack}");
            var replay = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(replay.ExitCode == 0, replay.Stderr);
            Assert.Equal(vm.StdoutText, replay.StdoutText);
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// Debian's redis-server (dynamically linked, unmodified) served through the stack under `run`, loaded by Debian's
    /// redis-benchmark from the clients' namespace with 64 connections: interoperability with Linux's TCP and a real
    /// client. The oracle is the server's own count: without -r the benchmark's INCRs all hit one key and its LPUSHes
    /// one list, so after N requests of each the counter reads N and the list holds N items; redis-cli asks over a
    /// connection of its own, and every benchmark test reports its N requests done.
    /// </summary>
    [Fact]
    public void RedisServesRedisBenchmarkThroughTheStack()
    {
        Assert.True(File.Exists(Redis.Server) && File.Exists(Redis.Benchmark), "redis-server and redis-tools are not installed (.ci/run installs them)");
        const int N = 3000;
        using var ns = new TapNamespace(openTap: false);
        using var vm = RunningProgram.Dotnet(GuestEnv.PrimaryDll, ["run", .. NetArgs(ns), "--", Redis.Server, "--port", Port.ToString(),
            "--bind", GuestIp, "--protected-mode", "no", "--save", "", "--appendonly", "no"]);
        string Cli(params string[] a) => ns.Exec(["timeout", "120", "redis-cli", "-h", GuestIp, "-p", Port.ToString(), .. a]).Trim();
        // redis-cli exits non-zero while nothing listens; the server's start-up in the VM takes seconds
        var up = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            try { if (Cli("PING") == "PONG") break; }
            catch (InvalidOperationException) when (up.Elapsed < Timeout && !vm.HasExited) { }
            Assert.False(vm.HasExited, "redis-server ended before it answered PING:\n" + vm.Stderr);
            Assert.True(up.Elapsed < Timeout, $"redis-server did not answer PING within {Timeout}:\n{vm.Stderr}");
            Thread.Sleep(200);
        }
        var bench = ns.Exec("timeout", "600", Redis.Benchmark, "-h", GuestIp, "-p", Port.ToString(), "-q", "-n", N.ToString(), "-c", "64", "-t", "incr,lpush");
        Assert.Matches(@"INCR: [\d.]+ requests per second", bench.Replace('\r', '\n'));
        Assert.Matches(@"LPUSH: [\d.]+ requests per second", bench.Replace('\r', '\n'));
        Assert.Equal(N.ToString(), Cli("GET", "counter:__rand_int__"));
        Assert.Equal(N.ToString(), Cli("LLEN", "mylist"));
        Cli("SHUTDOWN", "NOSAVE");
        Assert.Equal(0, vm.WaitForExit(Timeout).ExitCode);
    }

    /// <summary>
    /// poll, epoll_wait, select and ppoll with time-outs on a virtual socket nobody connects to end after their time-out
    /// with nothing ready (the wait runs on the stack's logged clock), printing what the same program prints natively
    /// on loopback; and the recording of it replays faithfully.
    /// </summary>
    [Fact]
    public void TimeOutsOfWaitsOnVirtualSocketsAreKeptAndReplayed()
    {
        string guest = GuestEnv.Guest("netecho", "musl");
        var native = GuestEnv.Native(guest, ["timeouts", "127.0.0.1", ReVirt.Chaos.LoopbackPorts.Pick().ToString()]);
        Assert.Equal(0, native.ExitCode);
        Assert.Contains("waited at least the time-outs: yes", native.StdoutText);
        using var ns = new TapNamespace(openTap: false);
        var log = Path.Combine(Path.GetTempPath(), $"revirt-vnet-{Guid.NewGuid():N}.rvlog");
        try
        {
            var vm = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, .. NetArgs(ns), "--", guest, "timeouts", GuestIp, Port.ToString()]);
            Assert.True(vm.ExitCode == 0, vm.Stderr);
            Assert.Equal(native.StdoutText, vm.StdoutText);
            var replay = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(replay.ExitCode == 0, replay.Stderr);
            Assert.Equal(vm.StdoutText, replay.StdoutText);
        }
        finally { File.Delete(log); }
    }
}

/// <summary>
/// Hostile frames for a guest's virtual interface, sent from the Linux side of its TAP device with a raw packet socket
/// (python3, in the test's namespace) while real clients use it: see
/// <see cref="VirtualNetTests.HostileFramesBesideRealClientsChangeNothingAndReplayFaithfully"/>. Finds the guest's MAC
/// in the namespace's ARP table (the clients' connects put it there) and the clients' connections in /proc/net/tcp.
/// Prints a JSON report: frames sent, and how many were aimed at established connections.
/// </summary>
static class HostileFrames
{
    const int Rounds = 60;

    const string Script = """
import json, random, socket, struct, sys, time
iface, gip_s, gport, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
gip = socket.inet_aton(gip_s)
deadline = time.time() + 120
gmac = None
while gmac is None and time.time() < deadline:
    for l in open('/proc/net/arp').readlines()[1:]:
        f = l.split()
        if f[0] == gip_s and f[3] != '00:00:00:00:00:00': gmac = bytes.fromhex(f[3].replace(':', ''))
    time.sleep(0.01)
if gmac is None: sys.exit('no ARP entry for the guest within 120 s')
hip = socket.inet_aton('10.213.0.1')
hmac = bytes.fromhex(open('/sys/class/net/%s/address' % iface).read().strip().replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
rng = random.Random(13)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    t = (t & 0xffff) + (t >> 16); t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def eth(p, t=0x0800): return gmac + hmac + struct.pack('!H', t) + p
def ipv4(proto, payload, tot=None, bad=False):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, tot if tot is not None else 20 + len(payload), rng.randrange(65536), 0x4000, 64, proto, 0, hip, gip)
    return h[:10] + struct.pack('!H', csum(h) ^ (0x1234 if bad else 0)) + h[12:] + payload
def tcp(sport, seq, ack, flags, data=b'', bad=False, off=5):
    h = struct.pack('!HHIIBBHHH', sport, gport, seq, ack, off << 4, flags, 65535, 0, 0)
    c = csum(hip + gip + struct.pack('!BBH', 0, 6, len(h) + len(data)) + h + data) ^ (0x4321 if bad else 0)
    return h[:16] + struct.pack('!H', c) + h[18:] + data
def established():
    ports = []
    for l in open('/proc/net/tcp').readlines()[1:]:
        f = l.split()
        if f[3] == '01' and f[2].endswith(':%04X' % gport): ports.append(int(f[1].split(':')[1], 16))
    return ports
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
sent = targeted = 0
for r in range(rounds):
    frames = [
        eth(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))),  # garbage behind an IPv4 type
        eth(ipv4(6, b'')[:12]),                                               # a truncated IPv4 header
        eth(ipv4(6, tcp(40000, 1, 0, SYN), tot=1500)),                        # total length beyond the frame
        eth(ipv4(6, tcp(40001, 1, 0, SYN), bad=True)),                        # bad IPv4 checksum
        eth(ipv4(6, tcp(40002, 1, 0, SYN, bad=True))),                        # bad TCP checksum
        eth(ipv4(6, tcp(40003, 1, 0, SYN, off=15))),                          # data offset beyond the segment
        eth(ipv4(6, tcp(40004, 1, 0, SYN | RST))),                            # SYN+RST
        eth(ipv4(6, tcp(0, 1, 0, SYN))),                                      # source port 0
        eth(ipv4(17, b'\x00\x01')),                                           # a UDP header cut short
        eth(b'\x00' * 10, 0x0806),                                            # a short ARP packet
    ]
    frames += [eth(ipv4(6, tcp(rng.randrange(1024, 65536), rng.randrange(1 << 32), 0, SYN))) for _ in range(20)]  # SYN flood
    for sport in established():
        targeted += 3
        frames.append(eth(ipv4(6, tcp(sport, rng.randrange(1 << 32), 0, RST))))                 # RST, wrong sequence
        frames.append(eth(ipv4(6, tcp(sport, rng.randrange(1 << 32), 0, SYN))))                 # SYN on a synchronized connection
        frames.append(eth(ipv4(6, tcp(sport, rng.randrange(1 << 32), rng.randrange(1 << 32), ACK | PSH, b'junk\n'))))  # out of window, acking the unsent
    try:
        for f in frames:
            s.send(f)
            sent += 1
    except OSError:
        break  # the guest ended and its device went down
    time.sleep(0.05)
print(json.dumps({'sent': sent, 'targeted': targeted}))
""";

    public static System.Diagnostics.Process Start(TapNamespace ns, string guestIp, int port)
    {
        var script = Path.Combine(Path.GetTempPath(), $"rv-hostile-{Environment.ProcessId}-{Guid.NewGuid():N}.py");
        File.WriteAllText(script, Script);
        return ns.Start("python3", script, TapNamespace.TapName, guestIp, port.ToString(), Rounds.ToString());
    }

    /// <summary>The attacker's report (it ends by itself after its rounds; bounded wait).</summary>
    public static JsonElement Finish(System.Diagnostics.Process p)
    {
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "the hostile-frame sender did not finish within 120 s");
        Assert.True(p.ExitCode == 0, $"the hostile-frame sender failed ({p.ExitCode}): {stderr.Result}");
        return JsonDocument.Parse(stdout.Result.Trim().Split('\n')[^1]).RootElement.Clone();
    }
}
