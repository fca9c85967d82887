using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ReVirt.Chaos;

/// <summary>
/// Fixed loopback ports for guests that listen. They are taken below the kernel's ephemeral range, so no outbound
/// connection (a replication link, a proxy, a client) or port-0 bind can be handed the port between the moment it
/// is chosen and the moment the guest binds it; and never twice from this process (parallel tests).
/// </summary>
public static class LoopbackPorts
{
    static readonly HashSet<int> _given = new();
    static readonly Random _rng = new(Environment.ProcessId ^ Environment.TickCount);

    static (int Lo, int Hi) EphemeralRange()
    {
        try
        {
            var parts = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
            return (int.Parse(parts[0]), int.Parse(parts[1]));
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or UnauthorizedAccessException) { return (32768, 60999); }
    }

    /// <summary>A port nobody listens on now, outside the ephemeral range when there is room below it.</summary>
    public static int Pick()
    {
        var (lo, hi) = EphemeralRange();
        int from = 20000, to = lo - 1;
        if (to - from < 1000) { from = hi + 1; to = 65535; }
        lock (_given)
        {
            for (int attempt = 0; attempt < 200; attempt++)
            {
                int port = to - from < 1000 ? 0 : _rng.Next(from, to + 1);
                if (port != 0 && _given.Contains(port)) continue;
                try
                {
                    var l = new TcpListener(IPAddress.Loopback, port);
                    l.Start();
                    port = ((IPEndPoint)l.LocalEndpoint).Port;
                    l.Stop();
                }
                catch (SocketException) { continue; }
                if (_given.Add(port)) return port;
            }
        }
        throw new InvalidOperationException("no free loopback port for the guest");
    }
}

/// <summary>One kvserver connection that reconnects on the next request after it broke; counts its connects and
/// breaks (a reset, an end of stream or an error after it was connected).</summary>
sealed class KvConn(ServiceAddress at, int port, int replyTimeoutMs) : IDisposable
{
    Socket? _c;
    NetworkStream? _s;
    StreamReader? _r;
    public int Connections { get; private set; }
    public int Breaks { get; private set; }

    /// <summary>Connects, retrying refusals every 10 ms until <paramref name="until"/> (the service is failing over).</summary>
    bool Connect(Stopwatch clock, double untilMs)
    {
        while (true)
        {
            var c = at.NewSocket();
            c.NoDelay = true;
            c.ReceiveTimeout = c.SendTimeout = replyTimeoutMs;
            try
            {
                c.Connect(at.Address, port);
                _c = c; _s = new NetworkStream(c, ownsSocket: true); _r = new StreamReader(_s, Encoding.ASCII);
                Connections++;
                return true;
            }
            catch (SocketException)
            {
                c.Dispose();
                if (clock.Elapsed.TotalMilliseconds >= untilMs) return false;
                Thread.Sleep(10);
            }
        }
    }

    public void Drop() { _r?.Dispose(); _s?.Dispose(); _c?.Dispose(); _c = null; _s = null; _r = null; }

    void Broke() { Breaks++; Drop(); }

    /// <summary>One request and its reply line; null when there was no connection or it broke (the caller retries).</summary>
    public string? TryAsk(string line, Stopwatch clock, double connectUntilMs)
    {
        try
        {
            if (_c == null && !Connect(clock, connectUntilMs)) return null;
            _s!.Write(Encoding.ASCII.GetBytes(line + "\n"));
            var reply = _r!.ReadLine();
            if (reply == null) Broke();
            return reply;
        }
        catch (IOException) { Broke(); return null; }
        catch (SocketException) { Broke(); return null; }
        catch (ObjectDisposedException) { Broke(); return null; }
    }

    /// <summary>Sends every line at once (pipelined) and reads one reply line for each, in order; null when there
    /// was no connection or it broke before the last reply.</summary>
    public string[]? TryAskAll(IReadOnlyList<string> lines, Stopwatch clock, double connectUntilMs)
    {
        try
        {
            if (_c == null && !Connect(clock, connectUntilMs)) return null;
            _s!.Write(Encoding.ASCII.GetBytes(string.Concat(lines.Select(l => l + "\n"))));
            var replies = new string[lines.Count];
            for (int i = 0; i < replies.Length; i++)
                if ((replies[i] = _r!.ReadLine()!) == null) { Broke(); return null; }
            return replies;
        }
        catch (IOException) { Broke(); return null; }
        catch (SocketException) { Broke(); return null; }
        catch (ObjectDisposedException) { Broke(); return null; }
    }

    public void Dispose() => Drop();
}

/// <summary>
/// The kvserver guest as a replicated network service: it listens on a fixed loopback port (the backup listens there
/// again when it takes over), and a client of several connections sends SETs of unique keys with GETs of earlier
/// ones in between, reconnecting (with retries) after a failover and sending an unanswered SET again. Every SET
/// that got `OK` is an acknowledged write: it must be readable afterwards from whichever replica is live, and the
/// guest's stdout log (`set key` per SET) must match the acknowledged SETs. A final SHUTDOWN ends the guest (exit 0).
/// </summary>
public sealed class KvWorkload(string program, int sets, int connections) : IWorkload
{
    public string Name => "kvserver";
    public string Program => program;
    public string UnitName => "requests";
    public int Sets => sets;
    public int Connections => connections;
    /// <summary>How long a request waits for its reply before the connection is dropped and the request sent again.</summary>
    public int ReplyTimeoutMs { get; init; } = 10_000;
    /// <summary>How long a request is retried (reconnecting) before the client gives up on the service.</summary>
    public int GiveUpMs { get; init; } = 45_000;
    /// <summary>The guest's virtual network (`--net virtual`); null: the guest's sockets are host sockets on loopback.</summary>
    public IGuestNetwork? Network { get; init; }
    /// <summary>Open-ended load (`chaos drill --cycles N`): each connection SETs (with a GET now and then) until
    /// <see cref="KvRound.EndLoad"/>, whatever <see cref="Sets"/> says, then reads back every key it got OK for over
    /// its own connection.</summary>
    public bool UntilEnded { get; init; }
    /// <summary>A pause of each connection between two requests (keeps an open-ended load's log and output moderate).</summary>
    public int PauseMs { get; init; }

    public IWorkloadRound NewRound(int seed) => NewKvRound(seed);

    public KvRound NewKvRound(int seed) => new(this, seed, LoopbackPorts.Pick(), Network is { } n ? ServiceAddress.On(n) : ServiceAddress.Loopback);

    public HashSet<string>? LoggedKeys(ReadOnlySpan<byte> stdout)
    {
        var keys = new HashSet<string>();
        foreach (var l in Encoding.ASCII.GetString(stdout).Split('\n'))
            if (l.StartsWith("set ", StringComparison.Ordinal)) keys.Add(l[4..]);
        return keys;
    }

    public string? Validate(byte[] finalStdout, RoundObservation o)
    {
        if (o.ClientErrors.Count > 0) return $"the client: {o.ClientErrors[0]}" + (o.ClientErrors.Count > 1 ? $" (and {o.ClientErrors.Count - 1} more)" : "");
        var text = Encoding.ASCII.GetString(finalStdout);
        var ls = text.Split('\n');
        if (ls[^1] != "") return $"the output does not end with a complete line (last: '{CounterWorkload.Trunc(ls[^1])}')";
        var logged = new Dictionary<string, int>();
        foreach (var l in ls[..^1])
        {
            if (!l.StartsWith("set ", StringComparison.Ordinal) || l.Length == 4) return $"malformed stdout line '{CounterWorkload.Trunc(l)}'";
            logged[l[4..]] = logged.GetValueOrDefault(l[4..]) + 1;
        }
        var sets = o.ClientOps.Where(c => c.Op == "SET").ToArray();
        var attempts = sets.GroupBy(c => c.Key).ToDictionary(g => g.Key, g => g.Count());
        var acked = sets.Where(c => c.Acked).Select(c => c.Key).ToHashSet();
        int expected = Sets;
        if (acked.Count != expected) return $"{acked.Count} of the {expected} SETs were acknowledged";
        if (acked.FirstOrDefault(k => !logged.ContainsKey(k)) is { } missing) return $"the acknowledged SET of {missing} has no 'set {missing}' line in the final stdout";
        foreach (var (k, n) in logged)
        {
            if (!attempts.TryGetValue(k, out int a)) return $"stdout logs 'set {k}' but the client never sent it";
            if (n > a) return $"stdout logs 'set {k}' {n} times but the client sent it {a} times";
        }
        if (!o.ClientOps.Any(c => c.Op == "SHUTDOWN" && c.Acked)) return "SHUTDOWN was not answered BYE";
        return null;
    }

    /// <summary>Requests of the load (SETs and GETs) that were answered.</summary>
    public int Units(byte[] finalStdout, RoundObservation o) => o.ClientOps.Count(c => c.Acked && c.Op is "SET" or "GET");

    /// <summary>One round of the load: the guest's arguments, the client connections and what they saw.</summary>
    public sealed class KvRound(KvWorkload w, int seed, int port, ServiceAddress at) : IWorkloadRound
    {
        readonly List<ClientOp> _ops = new();
        readonly List<string> _errors = new();
        readonly List<Thread> _threads = new();
        Stopwatch _clock = Stopwatch.StartNew();
        volatile bool _stop, _ended;
        int _acked, _mismatched, _faults;

        readonly List<KvConn> _conns = new();
        public string[] Args => w.Network is { } n ? [port.ToString(), n.Guest.ToString()] : [port.ToString()];
        public ConnectionStats? Connections
        {
            get { lock (_conns) return new ConnectionStats(w.Network != null, _conns.Count, _conns.Sum(c => c.Connections), _conns.Sum(c => c.Breaks), Volatile.Read(ref _mismatched)); }
        }
        /// <summary>How many client connections the load runs (each its own thread and connection).</summary>
        public int Clients => w.Connections;
        public long Total => w.UntilEnded ? long.MaxValue : w.Sets;
        public long Progress(ReplicaProc primary) => Volatile.Read(ref _acked);
        public IReadOnlyList<ClientOp> Ops { get { lock (_ops) return _ops.ToArray(); } }
        public Dictionary<string, string?>? ReadBack { get; private set; }
        public IReadOnlyList<string> Errors { get { lock (_errors) return _errors.ToArray(); } }
        double Now => _clock.Elapsed.TotalMilliseconds;

        void Error(string e) { lock (_errors) _errors.Add(e); }
        void Record(ClientOp op)
        {
            lock (_ops)
            {
                _ops.Add(op);
                if (op.Acked && op.Conn >= 0) _lastAnswer[op.Conn] = Math.Max(_lastAnswer[op.Conn], op.EndMs);
            }
        }

        readonly double[] _lastAnswer = Enumerable.Repeat(double.NegativeInfinity, w.Connections).ToArray();

        /// <summary>Every client got an answer after <paramref name="atMs"/> (the drill's clock), without copying the ops.</summary>
        public bool EveryClientAnsweredAfter(double atMs)
        {
            lock (_ops) return _lastAnswer.All(t => t > atMs);
        }

        bool Accepts()
        {
            try
            {
                using var c = at.NewSocket();
                c.Connect(at.Address, port);
                return true;
            }
            catch (SocketException) { return false; }
        }

        public string? Begin(ReplicaProc primary, Stopwatch clock, TimeSpan within)
        {
            _clock = clock;
            // serving = accepting connections on its port (asked of the socket, not read from its messages)
            if (!primary.WaitFor(Accepts, within))
                return $"the kvserver guest did not start listening on {at.Address}:{port}";
            for (int c = 0; c < w.Connections; c++)
            {
                int id = c;
                var t = new Thread(() => Client(id)) { IsBackground = true, Name = $"kv-client-{c}" };
                _threads.Add(t);
                t.Start();
            }
            return null;
        }

        /// <summary>A fault was injected (a cycles drill's kill): each connection's next request is a GET of the
        /// last key it got OK for, the write most at risk.</summary>
        public void NoteFault() => Interlocked.Increment(ref _faults);

        /// <summary>An open-ended load stops sending SETs; each connection then reads back its keys (<see cref="Finish"/> waits for that).</summary>
        public void EndLoad() => _ended = true;

        /// <summary>Sends <paramref name="line"/> until it is answered (reconnecting); records every attempt. Null when the client gave up.</summary>
        string? Request(KvConn conn, int c, string op, string key, string? value, string line, Func<string, bool> acked)
        {
            double giveUp = Now + w.GiveUpMs;
            while (!_stop)
            {
                double start = Now;
                var reply = conn.TryAsk(line, _clock, giveUp);
                double end = Now;
                bool ok = reply != null && acked(reply);
                if (reply != null && !ok) Interlocked.Increment(ref _mismatched);
                Record(new ClientOp(start, end, op, key, value, ok, reply, c));
                if (reply != null) return reply;
                if (Now >= giveUp) { Error($"{op} {key}: no reply within {w.GiveUpMs} ms (no replica served {at.Address}:{port})"); return null; }
                Thread.Sleep(5);
            }
            return null;
        }

        /// <summary>A reply a GET can have (any other means the stream of replies is shifted: one lost or sent twice).</summary>
        static bool IsGetReply(string x) => x.StartsWith("VALUE ", StringComparison.Ordinal) || x == "NOTFOUND";

        void Client(int c)
        {
            var rng = new Random(HashCode.Combine(seed, c));
            int share = w.Sets / w.Connections + (c < w.Sets % w.Connections ? 1 : 0);
            using var conn = new KvConn(at, port, w.ReplyTimeoutMs);
            lock (_conns) _conns.Add(conn);
            var mine = new List<(string K, string V)>();
            int faultsSeen = Volatile.Read(ref _faults);
            for (int i = 0; (w.UntilEnded ? !_ended : i < share) && !_stop; i++)
            {
                if (w.PauseMs > 0) Thread.Sleep(w.PauseMs);
                if (Volatile.Read(ref _faults) is int faults && faults != faultsSeen && mine.Count > 0)
                {
                    faultsSeen = faults;
                    var (lk, lv) = mine[^1];
                    if (Request(conn, c, "GET", lk, lv, $"GET {lk}", IsGetReply) == null) return;
                }
                string k = $"c{c}k{i}", v = $"v{seed}-{c}-{i}-{rng.Next():x}";
                var r = Request(conn, c, "SET", k, v, $"SET {k} {v}", x => x == "OK");
                if (r == null) return;
                if (r != "OK") { Error($"SET {k}: unexpected reply '{r}'"); return; }
                mine.Add((k, v));
                Interlocked.Increment(ref _acked);
                if (i % 3 == 2)
                {
                    var (gk, gv) = mine[rng.Next(mine.Count)];
                    // answered at all = served; whether it is the acknowledged value is the acked-writes checker's call
                    if (Request(conn, c, "GET", gk, gv, $"GET {gk}", IsGetReply) == null) return;
                }
            }
            if (w.UntilEnded && !_stop) ReadBackOwn(conn, c, mine);
        }

        /// <summary>An open-ended load's read-back: every key this connection got OK for, over the same connection,
        /// pipelined in batches (a protected round trip per key would make a long load's read-back last minutes).</summary>
        void ReadBackOwn(KvConn conn, int c, List<(string K, string V)> mine)
        {
            const int Batch = 64;
            for (int i = 0; i < mine.Count; i += Batch)
            {
                var part = mine.Skip(i).Take(Batch).ToList();
                double start = Now;
                var replies = conn.TryAskAll(part.Select(x => $"GET {x.K}").ToList(), _clock, Now + w.GiveUpMs);
                if (replies == null) { Error($"reading back the keys of connection {c}: the connection broke"); return; }
                lock (_readBack)
                    for (int j = 0; j < part.Count; j++)
                    {
                        if (!IsGetReply(replies[j])) Interlocked.Increment(ref _mismatched);
                        _readBack[part[j].K] = replies[j].StartsWith("VALUE ", StringComparison.Ordinal) ? replies[j]["VALUE ".Length..] : null;
                    }
                Record(new ClientOp(start, Now, "READBACK", $"{part.Count} keys", null, true, null, c));
            }
        }

        readonly Dictionary<string, string?> _readBack = new();

        public void Finish(TimeSpan within, Action<string> status)
        {
            var sw = Stopwatch.StartNew();
            foreach (var t in _threads)
                while (t.IsAlive && sw.Elapsed < within)
                {
                    status(w.UntilEnded ? $"client load: {Volatile.Read(ref _acked)} SETs acknowledged; reading back" : $"client load: {Volatile.Read(ref _acked)}/{w.Sets} SETs acknowledged");
                    t.Join(100);
                }
            if (_threads.Any(t => t.IsAlive))
            {
                Error($"the client load did not finish in {within.TotalSeconds:F0} s ({Volatile.Read(ref _acked)}/{w.Sets} SETs acknowledged)");
                _stop = true;
                foreach (var t in _threads) t.Join(TimeSpan.FromSeconds(2 + w.ReplyTimeoutMs / 1000.0));
                return;
            }
            if (Errors.Count > 0) return;
            using var conn = new KvConn(at, port, w.ReplyTimeoutMs);
            if (w.UntilEnded)
                lock (_readBack) ReadBack = new Dictionary<string, string?>(_readBack); // each connection read back its own keys
            else if (!ReadBackAll(conn, status)) return;
            status("SHUTDOWN");
            double s0 = Now;
            var bye = conn.TryAsk("SHUTDOWN", _clock, Now + w.GiveUpMs);
            Record(new ClientOp(s0, Now, "SHUTDOWN", "", null, bye == "BYE", bye));
        }

        /// <summary>Every acknowledged write, read back over one new connection from whichever replica serves the port
        /// now; false (with an error) when one got no reply.</summary>
        bool ReadBackAll(KvConn conn, Action<string> status)
        {
            status("reading back every acknowledged SET");
            var rb = new Dictionary<string, string?>();
            ReadBack = rb;
            foreach (var k in Ops.Where(o => o.Op == "SET" && o.Acked).Select(o => o.Key).Distinct())
            {
                double giveUp = Now + w.GiveUpMs;
                string? reply;
                while ((reply = conn.TryAsk($"GET {k}", _clock, giveUp)) == null && Now < giveUp) Thread.Sleep(5);
                if (reply == null) { Error($"reading back {k}: no reply"); return false; }
                rb[k] = reply.StartsWith("VALUE ", StringComparison.Ordinal) ? reply["VALUE ".Length..] : null;
            }
            return true;
        }

        public void Dispose()
        {
            _stop = true;
            foreach (var t in _threads) t.Join(TimeSpan.FromSeconds(1));
        }
    }
}
