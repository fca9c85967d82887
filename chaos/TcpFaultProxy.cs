using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace ReVirt.Chaos;

/// <summary>What the fault-injecting proxy does to the bytes it relays.</summary>
public enum LinkMode
{
    /// <summary>Relay everything at once.</summary>
    Pass,
    /// <summary>A partition: bytes in both directions are swallowed; nothing is closed, so neither side learns of it except by silence.</summary>
    Cut,
    /// <summary>Every chunk is held for <see cref="TcpFaultProxy.DelayMs"/> before it is relayed (order is kept).</summary>
    Delay,
    /// <summary>Each direction is limited to <see cref="TcpFaultProxy.BytesPerSecond"/>.</summary>
    Throttle,
}

/// <summary>
/// A loopback TCP relay between the primary and the backup (gRPC over HTTP/2 passes through a plain TCP relay)
/// whose link the drill can cut, delay or throttle at any moment. It relays the backup's replication endpoint and,
/// when given, its data link port (the primary is told <see cref="DataAddress"/> with <c>--backup-data</c>), both
/// under the same mode. Each direction of a connection is relayed by two threads of its own with blocking calls: a
/// reader that reads a chunk and applies the current mode to it, and a writer that sends the chunks in order.
/// </summary>
/// <remarks>
/// Never pool tasks: a relay whose pumps wait for the thread pool of the process hosting it (a test host whose other
/// tests block pool threads in synchronous reads of their children's pipes) holds the replicas' bytes for as long as
/// the pool is starved, and a cut in that time swallows them: a planted-gate round whose backup never received the
/// primary's first message after the welcome, although the primary had sent it (CI, once).
/// </remarks>
public sealed class TcpFaultProxy : IDisposable
{
    readonly Socket _l;
    readonly Socket? _data;
    readonly ManualResetEventSlim _closed = new();
    readonly List<Socket> _socks = new();
    volatile LinkMode _mode = LinkMode.Pass;
    long _relayed, _swallowed;

    public TcpFaultProxy(IPEndPoint target, IPEndPoint? dataTarget = null)
    {
        _l = Listen();
        Start("relay-accept", () => AcceptLoop(_l, target));
        if (dataTarget != null)
        {
            _data = Listen();
            Start("relay-accept", () => AcceptLoop(_data, dataTarget));
        }
    }

    public TcpFaultProxy(string targetUrl, int? dataPort = null) : this(
        new IPEndPoint(IPAddress.Parse(new Uri(targetUrl).Host), new Uri(targetUrl).Port),
        dataPort is { } d ? new IPEndPoint(IPAddress.Parse(new Uri(targetUrl).Host), d) : null) { }

    /// <summary>A relay to the backup whose <c>listening</c> event is given: its endpoint and its data link.</summary>
    public static TcpFaultProxy To(ReplicaEventRecord listening) => new(listening.Str("url")!, (int?)listening.Long("dataPort"));

    static Socket Listen()
    {
        var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        l.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        l.Listen(16);
        return l;
    }

    static void Start(string name, Action body) => new Thread(() => body()) { Name = name, IsBackground = true }.Start();

    public int Port => ((IPEndPoint)_l.LocalEndPoint!).Port;
    public string Url => $"http://127.0.0.1:{Port}";
    /// <summary>Where the primary reaches the backup's data link through this relay (<c>--backup-data</c>).</summary>
    public string? DataAddress => _data is { } d ? $"127.0.0.1:{((IPEndPoint)d.LocalEndPoint!).Port}" : null;
    /// <summary>The primary's options that route both of its connections through this relay.</summary>
    public string[] PrimaryArgs => DataAddress is { } a ? ["--backup", Url, "--backup-data", a] : ["--backup", Url];
    public LinkMode Mode => _mode;
    public int DelayMs { get; private set; }
    public long BytesPerSecond { get; private set; } = long.MaxValue;
    public long BytesRelayed => Interlocked.Read(ref _relayed);
    public long BytesSwallowed => Interlocked.Read(ref _swallowed);

    public void Pass() => _mode = LinkMode.Pass;
    public void Cut() => _mode = LinkMode.Cut;
    public void Delay(int ms) { DelayMs = ms; _mode = LinkMode.Delay; }
    public void Throttle(long bytesPerSecond) { BytesPerSecond = Math.Max(1, bytesPerSecond); _mode = LinkMode.Throttle; }

    void AcceptLoop(Socket listener, IPEndPoint target)
    {
        // the loop polls and checks for Dispose rather than having another thread close a socket it is blocked on
        using var _ = listener;
        while (!_closed.IsSet)
        {
            Socket a;
            try
            {
                if (!listener.Poll(100_000, SelectMode.SelectRead)) continue;
                a = listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            var b = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            a.NoDelay = true;
            try { b.Connect(target); }
            catch (SocketException) { a.Dispose(); b.Dispose(); continue; }
            lock (_socks)
            {
                if (_closed.IsSet) { a.Dispose(); b.Dispose(); return; }
                _socks.Add(a);
                _socks.Add(b);
            }
            Start("relay", () => Relay(a, b));
            Start("relay", () => Relay(b, a));
        }
    }

    /// <summary>One direction: this thread reads chunks into a queue of (due time, bytes) that a writer thread drains in order.</summary>
    void Relay(Socket from, Socket to)
    {
        var q = new BlockingCollection<(long Due, byte[] Bytes)>();
        var writer = new Thread(() => Write(q, to)) { Name = "relay-writer", IsBackground = true };
        writer.Start();
        var buf = new byte[65536];
        try
        {
            while (true)
            {
                int n = from.Receive(buf);
                if (n == 0) break;
                if (_mode == LinkMode.Cut) { Interlocked.Add(ref _swallowed, n); continue; } // the partition swallows everything
                long due = _mode == LinkMode.Delay ? Stopwatch.GetTimestamp() + (long)(DelayMs * (Stopwatch.Frequency / 1000.0)) : 0;
                q.Add((due, buf.AsSpan(0, n).ToArray()));
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        q.CompleteAdding();
    }

    void Write(BlockingCollection<(long Due, byte[] Bytes)> q, Socket to)
    {
        double budget = 0; // throttle: bytes we may still send in this window
        long last = Stopwatch.GetTimestamp();
        try
        {
            foreach (var (due, bytes) in q.GetConsumingEnumerable())
            {
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                if (wait > TimeSpan.Zero && _closed.Wait(wait)) return;
                int off = 0;
                while (off < bytes.Length)
                {
                    if (_mode == LinkMode.Cut) { Interlocked.Add(ref _swallowed, bytes.Length - off); break; }
                    int n = bytes.Length - off;
                    if (_mode == LinkMode.Throttle)
                    {
                        long now = Stopwatch.GetTimestamp();
                        budget = Math.Min(BytesPerSecond / 10.0, budget + Stopwatch.GetElapsedTime(last, now).TotalSeconds * BytesPerSecond);
                        last = now;
                        if (budget < 1) { if (_closed.Wait(10)) return; continue; }
                        n = (int)Math.Min(n, budget);
                        budget -= n;
                    }
                    else { last = Stopwatch.GetTimestamp(); budget = 0; }
                    int sent = to.Send(bytes, off, n, SocketFlags.None);
                    off += sent;
                    Interlocked.Add(ref _relayed, sent);
                }
            }
            if (_mode != LinkMode.Cut) to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    public void Dispose()
    {
        _closed.Set();
        // a shutdown wakes the threads blocked reading or writing these sockets; the accept loops close the listeners
        lock (_socks)
            foreach (var s in _socks)
            {
                try { s.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
                s.Dispose();
            }
    }
}
