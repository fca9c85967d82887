using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ReVirt.Replication;

/// <summary>
/// The replica's metrics (<see cref="ReplicationMetrics"/>) read by a <see cref="MeterListener"/> and served as a
/// Prometheus scrape endpoint (`--metrics-listen URL`: text exposition format 0.0.4, which Prometheus, the
/// OpenTelemetry collector and VictoriaMetrics read) and, when the replica ends, as its final values in a
/// <see cref="ReplicaEvent.Metrics"/> event. Counters are totals since the start, the ack latency a histogram, lag and
/// held bytes gauges read at each scrape. The listener adds one call per measurement (a batch shipped, an ack), none
/// per guest instruction. A peer that stalls or sends garbage is answered by the endpoint's own thread after at most
/// <see cref="PeerTimeoutMs"/> and costs the replica nothing else.
/// </summary>
public sealed class MetricsEndpoint : IDisposable
{
    /// <summary>Bounds (ms) of the ack-latency histogram's buckets; +Inf follows.</summary>
    static readonly double[] LatencyBoundsMs = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500];
    /// <summary>How long a scraper may take to send its request before the endpoint gives up on it.</summary>
    public const int PeerTimeoutMs = 2000;
    const int MaxRequestBytes = 8192;

    /// <summary>One instrument's values (its state in the listener: no lookup per measurement).</summary>
    sealed class Series(Instrument instrument, int buckets)
    {
        public readonly Instrument Instrument = instrument;
        public long Total;                              // counter: the sum; gauge: the last observation
        public double Sum;                              // histogram
        public readonly long[] Buckets = new long[buckets]; // histogram: per bucket (not cumulative), the last is +Inf
        public long Count;                              // histogram
    }

    readonly MeterListener _listener = new();
    readonly List<Series> _series = new();
    readonly Socket? _socket;
    readonly string _path = "/metrics";
    readonly Thread? _server;
    int _disposed;

    /// <summary>The `--metrics-listen` option's help (primary protect, backup listen).</summary>
    public const string OptionHelp = "Serve this replica's metrics (meter ReVirt.Replication: lag, ack latency, held bytes, log bytes, failovers, re-protections) for Prometheus at http://ADDRESS:PORT[/PATH] (PATH default /metrics; port 0: any free port, named in the metrics-listening event; * for every address), in the text exposition format; the final values also go to --events as a `metrics` event when the replica ends. Without it the metrics are still readable with `dotnet-counters monitor --counters ReVirt.Replication`.";

    /// <summary>Starts the endpoint of `--metrics-listen <paramref name="url"/>` (null: none) and reports where it
    /// answers on <paramref name="events"/>. Throws <see cref="ArgumentException"/> with the reason when it cannot.</summary>
    public static MetricsEndpoint? Open(string? url, ReplicaEvents events)
    {
        if (url == null) return null;
        var m = new MetricsEndpoint(url);
        events.Emit(ReplicaEvent.MetricsListening, ("url", m.Url));
        return m;
    }

    /// <summary>The final values, as the replica ends (<see cref="ReplicaEvent.Metrics"/>).</summary>
    public void EmitFinal(ReplicaEvents events) => events.Emit(ReplicaEvent.Metrics, EventFields());

    /// <summary>Where the endpoint answers (its real port when 0 was asked); null without an endpoint.</summary>
    public string? Url { get; }

    /// <summary>Starts reading the replica's metrics and, when <paramref name="listenUrl"/> is given
    /// (http://ADDRESS:PORT[/PATH], PATH default /metrics, port 0 any free one), serving them there.</summary>
    public MetricsEndpoint(string? listenUrl)
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name != ReplicationMetrics.MeterName) return;
            var s = new Series(instrument, instrument is Histogram<double> ? LatencyBoundsMs.Length + 1 : 0);
            lock (_series) _series.Add(s);
            l.EnableMeasurementEvents(instrument, s);
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, _, state) => Add((Series)state!, value));
        _listener.SetMeasurementEventCallback<double>((instrument, value, _, state) => Add((Series)state!, value));
        // the replicas' instruments are published with their class: from the first scrape on, each is there (at 0)
        _ = ReplicationMetrics.Meter;
        _listener.Start();
        if (listenUrl == null) return;
        var (address, port, path) = ParseUrl(listenUrl);
        _path = path;
        _socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _socket.Bind(new IPEndPoint(address, port));
            _socket.Listen(16);
        }
        catch (SocketException e)
        {
            _socket.Dispose();
            _listener.Dispose();
            throw new ArgumentException($"--metrics-listen {listenUrl}: {e.Message}", e);
        }
        var bound = (IPEndPoint)_socket.LocalEndPoint!;
        Url = $"http://{(address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{bound.Address}]" : bound.Address.ToString())}:{bound.Port}{_path}";
        _server = new Thread(Serve) { IsBackground = true, Name = "metrics endpoint" };
        _server.Start();
    }

    /// <summary>http://ADDRESS:PORT[/PATH] with an IP address (or localhost, or * for every address).</summary>
    public static (IPAddress Address, int Port, string Path) ParseUrl(string url)
    {
        if (!Uri.TryCreate(url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal), UriKind.Absolute, out var u) || u.Scheme != "http")
            throw new ArgumentException($"--metrics-listen {url}: not http://ADDRESS:PORT[/PATH]");
        IPAddress address = u.IsLoopback && u.HostNameType == UriHostNameType.Dns ? IPAddress.Loopback
            : IPAddress.TryParse(u.Host.Trim('[', ']'), out var a) ? a
            : throw new ArgumentException($"--metrics-listen {url}: the host must be an IP address, localhost or *");
        string path = u.AbsolutePath is "" or "/" ? "/metrics" : u.AbsolutePath;
        return (address, u.Port, path);
    }

    static void Add(Series s, long value)
    {
        if (s.Instrument is ObservableGauge<long>) Volatile.Write(ref s.Total, value);
        else Interlocked.Add(ref s.Total, value);
    }

    static void Add(Series s, double value)
    {
        int bucket = 0;
        while (bucket < LatencyBoundsMs.Length && value > LatencyBoundsMs[bucket]) bucket++;
        lock (s)
        {
            s.Sum += value;
            s.Count++;
            s.Buckets[bucket]++;
        }
    }

    /// <summary>One instrument's values at a moment.</summary>
    public sealed record Value(string Name, string Kind, string? Unit, string? Description, long Total, long Count, double Sum, long[] Buckets);

    /// <summary>Every instrument's values now (the gauges are observed for this call).</summary>
    public IReadOnlyList<Value> Read()
    {
        Series[] all;
        lock (_series) all = _series.ToArray();
        lock (_listener) _listener.RecordObservableInstruments();
        return all.Select(s =>
        {
            string kind = s.Instrument switch { Counter<long> => "counter", Histogram<double> => "histogram", _ => "gauge" };
            lock (s) return new Value(s.Instrument.Name, kind, s.Instrument.Unit, s.Instrument.Description, Volatile.Read(ref s.Total), s.Count, s.Sum, (long[])s.Buckets.Clone());
        }).ToList();
    }

    /// <summary>The fields of the final <see cref="ReplicaEvent.Metrics"/> event: each counter and gauge by its short
    /// name (the instrument's name after "revirt.replication."), the histogram as its count and sum.</summary>
    public (string Key, object? Value)[] EventFields() => Read().SelectMany(v =>
    {
        string key = ShortName(v.Name);
        return v.Kind == "histogram"
            ? new (string, object?)[] { (key + "Count", v.Count), (key + "SumMs", Math.Round(v.Sum, 3)) }
            : [(key, v.Total)];
    }).ToArray();

    static string ShortName(string name)
    {
        var parts = name[(name.LastIndexOf('.') + 1)..].Split('_');
        return parts[0] + string.Concat(parts.Skip(1).Select(p => p.Length == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..]));
    }

    /// <summary>The metrics in the Prometheus text exposition format (version 0.0.4): dots become underscores, the
    /// unit is appended when the name does not end with it (By: bytes, ms: milliseconds), counters end in _total.</summary>
    public string Exposition()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        foreach (var v in Read().OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            string name = PrometheusName(v.Name, v.Unit);
            string exposed = v.Kind == "counter" ? name + "_total" : name;
            sb.Append("# HELP ").Append(exposed).Append(' ').Append(Escape(v.Description ?? v.Name)).Append('\n');
            sb.Append("# TYPE ").Append(exposed).Append(' ').Append(v.Kind).Append('\n');
            if (v.Kind != "histogram") { sb.Append(exposed).Append(' ').Append(v.Total.ToString(inv)).Append('\n'); continue; }
            long cumulative = 0;
            for (int i = 0; i < v.Buckets.Length; i++)
            {
                cumulative += v.Buckets[i];
                string le = i < LatencyBoundsMs.Length ? LatencyBoundsMs[i].ToString(inv) : "+Inf";
                sb.Append(name).Append("_bucket{le=\"").Append(le).Append("\"} ").Append(cumulative.ToString(inv)).Append('\n');
            }
            sb.Append(name).Append("_sum ").Append(v.Sum.ToString("R", inv)).Append('\n');
            sb.Append(name).Append("_count ").Append(v.Count.ToString(inv)).Append('\n');
        }
        return sb.ToString();
    }

    static string PrometheusName(string name, string? unit)
    {
        string n = name.Replace('.', '_');
        string? suffix = unit switch { "By" => "bytes", "ms" => "milliseconds", "s" => "seconds", _ => null }; // {record}: an annotation, no suffix
        return suffix == null || n.EndsWith("_" + suffix, StringComparison.Ordinal) ? n : n + "_" + suffix;
    }

    static string Escape(string help) => help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    void Serve()
    {
        while (Volatile.Read(ref _disposed) == 0)
        {
            Socket peer;
            try { peer = _socket!.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { if (Volatile.Read(ref _disposed) != 0) return; continue; }
            using (peer)
            {
                try { Answer(peer); }
                catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException) { } // the scraper went away or stalled
            }
        }
    }

    /// <summary>One HTTP/1.x exchange: GET of the metrics path answers the exposition, anything else a 4xx; the
    /// connection is closed after the answer.</summary>
    void Answer(Socket peer)
    {
        peer.ReceiveTimeout = peer.SendTimeout = PeerTimeoutMs;
        var request = new byte[MaxRequestBytes];
        int have = 0;
        while (have < request.Length && request.AsSpan(0, have).IndexOf("\r\n\r\n"u8) < 0)
        {
            int n = peer.Receive(request, have, request.Length - have, SocketFlags.None);
            if (n == 0) return;
            have += n;
        }
        string line = Encoding.ASCII.GetString(request, 0, Math.Max(0, request.AsSpan(0, have).IndexOf("\r\n"u8)));
        string[] words = line.Split(' ');
        (int status, string reason, string body) = words switch
        {
            ["GET", var target, var v] when v.StartsWith("HTTP/1.", StringComparison.Ordinal) && target.Split('?')[0] == _path => (200, "OK", Exposition()),
            ["GET", _, _] => (404, "Not Found", $"the metrics are at {_path}\n"),
            [_, _, _] => (405, "Method Not Allowed", "GET only\n"),
            _ => (400, "Bad Request", "not an HTTP/1 request\n"),
        };
        var bytes = Encoding.UTF8.GetBytes(body);
        string head = $"HTTP/1.1 {status} {reason}\r\nContent-Type: {(status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")}\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n";
        peer.Send(Encoding.ASCII.GetBytes(head));
        peer.Send(bytes);
        peer.Shutdown(SocketShutdown.Both);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _socket?.Dispose();
        _server?.Join(TimeSpan.FromSeconds(PeerTimeoutMs / 1000 + 1));
        _listener.Dispose();
    }
}
