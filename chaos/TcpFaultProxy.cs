using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

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
/// under the same mode. Each connection is relayed by two async pumps; a pump reads a chunk, then applies the
/// current mode to it.
/// </summary>
public sealed class TcpFaultProxy : IDisposable
{
    readonly TcpListener _l;
    readonly TcpListener? _data;
    readonly CancellationTokenSource _cts = new();
    readonly List<Socket> _socks = new();
    volatile LinkMode _mode = LinkMode.Pass;
    long _relayed, _swallowed;

    public TcpFaultProxy(IPEndPoint target, IPEndPoint? dataTarget = null)
    {
        _l = new TcpListener(IPAddress.Loopback, 0);
        _l.Start();
        _ = Task.Run(() => AcceptLoop(_l, target));
        if (dataTarget != null)
        {
            _data = new TcpListener(IPAddress.Loopback, 0);
            _data.Start();
            _ = Task.Run(() => AcceptLoop(_data, dataTarget));
        }
    }

    public TcpFaultProxy(string targetUrl, int? dataPort = null) : this(
        new IPEndPoint(IPAddress.Parse(new Uri(targetUrl).Host), new Uri(targetUrl).Port),
        dataPort is { } d ? new IPEndPoint(IPAddress.Parse(new Uri(targetUrl).Host), d) : null) { }

    /// <summary>A relay to the backup whose <c>listening</c> event is given: its endpoint and its data link.</summary>
    public static TcpFaultProxy To(ReplicaEventRecord listening) => new(listening.Str("url")!, (int?)listening.Long("dataPort"));

    public int Port => ((IPEndPoint)_l.LocalEndpoint).Port;
    public string Url => $"http://127.0.0.1:{Port}";
    /// <summary>Where the primary reaches the backup's data link through this relay (<c>--backup-data</c>).</summary>
    public string? DataAddress => _data is { } d ? $"127.0.0.1:{((IPEndPoint)d.LocalEndpoint).Port}" : null;
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

    async Task AcceptLoop(TcpListener listener, IPEndPoint target)
    {
        while (!_cts.IsCancellationRequested)
        {
            Socket a;
            try { a = await listener.AcceptSocketAsync(_cts.Token); } catch { return; }
            var b = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            a.NoDelay = true;
            try { await b.ConnectAsync(target, _cts.Token); }
            catch { a.Dispose(); b.Dispose(); continue; }
            lock (_socks) { _socks.Add(a); _socks.Add(b); }
            _ = Relay(a, b);
            _ = Relay(b, a);
        }
    }

    /// <summary>One direction: a reader pump feeds a queue of (due time, bytes) that a writer pump drains in order.</summary>
    async Task Relay(Socket from, Socket to)
    {
        var ct = _cts.Token;
        var q = Channel.CreateUnbounded<(long Due, byte[] Bytes)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var writer = Task.Run(async () =>
        {
            double budget = 0; // throttle: bytes we may still send in this window
            long last = Stopwatch.GetTimestamp();
            try
            {
                await foreach (var (due, bytes) in q.Reader.ReadAllAsync(ct))
                {
                    var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                    if (wait > TimeSpan.Zero) await Task.Delay(wait, ct);
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
                            if (budget < 1) { await Task.Delay(10, ct); continue; }
                            n = (int)Math.Min(n, budget);
                            budget -= n;
                        }
                        else { last = Stopwatch.GetTimestamp(); budget = 0; }
                        int sent = await to.SendAsync(bytes.AsMemory(off, n), SocketFlags.None, ct);
                        off += sent;
                        Interlocked.Add(ref _relayed, sent);
                    }
                }
                if (_mode != LinkMode.Cut) to.Shutdown(SocketShutdown.Send);
            }
            catch { }
        });
        var buf = new byte[65536];
        try
        {
            while (true)
            {
                int n = await from.ReceiveAsync(buf, SocketFlags.None, ct);
                if (n == 0) break;
                if (_mode == LinkMode.Cut) { Interlocked.Add(ref _swallowed, n); continue; } // the partition swallows everything
                long due = _mode == LinkMode.Delay ? Stopwatch.GetTimestamp() + (long)(DelayMs * (Stopwatch.Frequency / 1000.0)) : 0;
                q.Writer.TryWrite((due, buf.AsSpan(0, n).ToArray()));
            }
        }
        catch { }
        q.Writer.TryComplete();
        await writer;
    }

    public void Dispose()
    {
        _cts.Cancel();
        _l.Stop();
        _data?.Stop();
        lock (_socks) foreach (var s in _socks) s.Dispose();
    }
}
