using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ReVirt.Tests.Programs;

/// <summary>
/// Debian's redis-server as a guest: its command line (persistence off, one port) and a minimal RESP client whose
/// replies render as one canonical line each, so the replies of a native server and of the VM compare as strings.
/// </summary>
public static class Redis
{
    public const string Server = "/usr/bin/redis-server";
    public const string Benchmark = "/usr/bin/redis-benchmark";

    /// <summary>redis-server's arguments: no RDB snapshots, no AOF (nothing written to the root), the given port.</summary>
    public static string[] Args(int port) => [Server, "--port", port.ToString(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"];

    /// <summary>A redis connection that renders each reply as one line: +simple, -error, :integer, $bulk, $nil, *[...].</summary>
    public sealed class Client : IDisposable
    {
        readonly int _port;
        TcpClient? _c;
        BufferedStream? _in;
        NetworkStream? _s;
        public int Connections { get; private set; }

        public Client(int port) => _port = port;

        void Connect(TimeSpan within)
        {
            var sw = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    var c = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true, ReceiveTimeout = 30_000, SendTimeout = 30_000 };
                    c.Connect(IPAddress.Loopback, _port);
                    _c = c; _s = c.GetStream(); _in = new BufferedStream(_s, 65536);
                    Connections++;
                    return;
                }
                catch (SocketException) when (sw.Elapsed < within) { Thread.Sleep(50); }
            }
        }

        public void Drop() { _in?.Dispose(); _c?.Dispose(); _c = null; }

        /// <summary>Sends every command in one write (a pipeline) and reads as many replies.</summary>
        public List<string> Pipeline(IReadOnlyList<string[]> commands)
        {
            if (_c == null) Connect(TimeSpan.FromSeconds(60));
            var req = new MemoryStream();
            foreach (var cmd in commands) Encode(req, cmd);
            _s!.Write(req.GetBuffer(), 0, (int)req.Length);
            var replies = new List<string>(commands.Count);
            for (int i = 0; i < commands.Count; i++) replies.Add(ReadReply());
            return replies;
        }

        public string Call(params string[] command) => Pipeline([command])[0];

        /// <summary>One command; null when the connection broke (the server went away: the caller may retry).</summary>
        public string? TryCall(params string[] command)
        {
            try { return Call(command); }
            catch (IOException) { Drop(); return null; }
            catch (SocketException) { Drop(); return null; }
        }

        /// <summary>Retries across reconnections until a reply comes (a failover in between).</summary>
        public string Ask(TimeSpan within, params string[] command)
        {
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < within)
                if (TryCall(command) is { } r) return r;
            throw new TimeoutException($"no reply to {string.Join(' ', command)}");
        }

        static void Encode(Stream s, string[] cmd)
        {
            var b = new StringBuilder();
            b.Append('*').Append(cmd.Length).Append("\r\n");
            foreach (var a in cmd) b.Append('$').Append(Encoding.UTF8.GetByteCount(a)).Append("\r\n").Append(a).Append("\r\n");
            s.Write(Encoding.UTF8.GetBytes(b.ToString()));
        }

        string ReadLine()
        {
            var b = new List<byte>();
            while (true)
            {
                int c = _in!.ReadByte();
                if (c < 0) throw new IOException("connection closed");
                if (c == '\n' && b.Count > 0 && b[^1] == '\r') { b.RemoveAt(b.Count - 1); return Encoding.UTF8.GetString(b.ToArray()); }
                b.Add((byte)c);
            }
        }

        string ReadReply()
        {
            string line = ReadLine();
            switch (line[0])
            {
                case '+': case '-': case ':': return line;
                case '$':
                    {
                        int n = int.Parse(line.AsSpan(1));
                        if (n < 0) return "$nil";
                        var data = new byte[n + 2];
                        _in!.ReadExactly(data);
                        return "$" + Encoding.UTF8.GetString(data, 0, n);
                    }
                case '*':
                    {
                        int n = int.Parse(line.AsSpan(1));
                        if (n < 0) return "*nil";
                        var items = new string[n];
                        for (int i = 0; i < n; i++) items[i] = ReadReply();
                        return "*[" + string.Join(", ", items) + "]";
                    }
                default: throw new IOException($"not a RESP reply: {line}");
            }
        }

        public void Dispose() => Drop();
    }

    /// <summary>Waits until a server answers PING on <paramref name="port"/>; false after the timeout or once <paramref name="gone"/> says the server ended.</summary>
    public static bool WaitForPong(int port, TimeSpan timeout, Func<bool> gone)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout && !gone())
        {
            try
            {
                using var c = new Client(port);
                if (c.Call("PING") == "+PONG") return true;
            }
            catch (Exception e) when (e is IOException or SocketException) { }
            Thread.Sleep(200);
        }
        return false;
    }

    /// <summary>
    /// Commands whose replies do not depend on time, randomness or hash-table order (no SMEMBERS/KEYS/INFO): strings,
    /// counters, lists, hashes, sorted sets, streams with explicit ids, HyperLogLog, Lua, a 200 KB value, a pipeline of
    /// 1,000 INCRs. Native redis-server and the VM's must answer each identically.
    /// </summary>
    public static IEnumerable<string[][]> Script()
    {
        yield return [["SET", "greeting", "hello"], ["GET", "greeting"], ["APPEND", "greeting", " world"], ["STRLEN", "greeting"],
            ["GETRANGE", "greeting", "2", "7"], ["SETRANGE", "greeting", "0", "J"], ["GET", "greeting"], ["GET", "missing"],
            ["INCRBY", "n", "41"], ["INCR", "n"], ["INCRBYFLOAT", "f", "2.5"], ["INCRBYFLOAT", "f", "0.25"], ["DECR", "n"],
            ["MSET", "a", "1", "b", "2", "c", "3"], ["MGET", "a", "b", "nope", "c"], ["DEL", "a", "nope"], ["EXISTS", "a", "b", "c"],
            ["TYPE", "n"], ["OBJECT", "ENCODING", "n"], ["SETNX", "b", "x"], ["GETDEL", "c"], ["BITCOUNT", "greeting"]];
        yield return [["RPUSH", "L", "a", "b", "c", "d"], ["LPUSH", "L", "z"], ["LRANGE", "L", "0", "-1"], ["LPOP", "L"], ["RPOP", "L", "2"],
            ["LINSERT", "L", "BEFORE", "b", "q"], ["LLEN", "L"], ["LINDEX", "L", "1"], ["SORT", "L", "ALPHA", "DESC"],
            ["HSET", "H", "f1", "v1", "f2", "v2", "f3", "3"], ["HGET", "H", "f2"], ["HINCRBY", "H", "f3", "4"], ["HGETALL", "H"],
            ["HDEL", "H", "f1"], ["HLEN", "H"], ["SADD", "S", "x", "y", "z", "x"], ["SCARD", "S"], ["SISMEMBER", "S", "y"],
            ["SINTERCARD", "1", "S"], ["ZADD", "Z", "3", "c", "1", "a", "2", "b", "2.5", "bb"], ["ZRANGE", "Z", "0", "-1", "WITHSCORES"],
            ["ZINCRBY", "Z", "10", "a"], ["ZRANK", "Z", "a"], ["ZRANGEBYSCORE", "Z", "2", "3"], ["ZCOUNT", "Z", "-inf", "+inf"]];
        yield return [["XADD", "X", "1-1", "k", "v1"], ["XADD", "X", "2-5", "k", "v2"], ["XLEN", "X"], ["XRANGE", "X", "-", "+"],
            ["PFADD", "P", "a", "b", "c", "d", "a"], ["PFCOUNT", "P"],
            ["EVAL", "return redis.call('INCRBY', KEYS[1], ARGV[1]) * 2", "1", "n", "8"],
            ["EVAL", "local t = {} for i = 1, 5 do t[i] = i * i end return t", "0"],
            ["SET", "big", new string('r', 200_000)], ["STRLEN", "big"], ["GETRANGE", "big", "199990", "-1"],
            ["LCS", "greeting", "greeting"], ["NOSUCHCOMMAND", "x"], ["GET"], ["DBSIZE"]];
        yield return Enumerable.Range(0, 1000).Select(_ => new[] { "INCR", "counter" }).Append(["GET", "counter"]).ToArray();
        yield return [["GET", "big"]];
    }

    /// <summary>Runs <see cref="Script"/> on a server: every reply, in order.</summary>
    public static List<string> RunScript(int port)
    {
        using var c = new Client(port);
        var all = new List<string>();
        foreach (var batch in Script()) all.AddRange(c.Pipeline(batch));
        return all;
    }

    /// <summary>SHUTDOWN NOSAVE: the server exits without writing anything; the connection closes without a reply.</summary>
    public static void Shutdown(int port)
    {
        using var c = new Client(port);
        c.TryCall("SHUTDOWN", "NOSAVE");
    }
}
