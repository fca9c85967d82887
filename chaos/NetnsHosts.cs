using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace ReVirt.Chaos;

/// <summary>What a read of an etcd key found: its value; or it is absent (<see cref="Error"/> null); or etcd could
/// not be asked (<see cref="Error"/> says why), after <see cref="Attempts"/> attempts.</summary>
public sealed record EtcdRead(string? Value, string? Error, int Attempts)
{
    public bool Absent => Value == null && Error == null;

    public override string ToString() => Value != null ? $"held by {Value}"
        : Error == null ? "absent (no replica's lease holds it)"
        : $"unknown: etcd could not be asked in {Attempts} attempts ({Error})";
}

/// <summary>
/// A machine of `chaos drill --hosts netns`: the primary's, the backup's, the clients', etcd's, and (a cycles drill)
/// one host per further standby slot. Each has a name (its namespace's suffix, its bridge port "v" + name), the last
/// octet of its address, and for a replica host the TAP device its guest interface uses on the bridge.
/// </summary>
public sealed record Host(string Name, int Octet, string? Tap)
{
    public static readonly Host Primary = new("p", 2, "rvp0"), Backup = new("b", 3, "rvb0"), Clients = new("c", 4, null), Etcd = new("e", 5, null);

    /// <summary>The host of replica slot <paramref name="slot"/> of a cycles drill: slot 0 is the backup's host,
    /// slot k &gt; 0 a standby host of its own (addresses .6, .7, ... below the guest's .100).</summary>
    public static Host Slot(int slot) => slot switch
    {
        0 => Backup,
        > 0 and < 90 => new($"s{slot}", 5 + slot, $"rvs{slot}"),
        _ => throw new ArgumentOutOfRangeException(nameof(slot), "slots are 0..89"),
    };

    public string Ip => $"{NetnsHosts.Subnet}.{Octet}";
    /// <summary>The host's port on the bridge (the switch's end of its veth).</summary>
    public string Port => "v" + Name;
    public override string ToString() => Name;
}

/// <summary>Why `--hosts netns` cannot run here (neither root nor a user namespace, no iproute2, no etcd, no TAP
/// devices for a guest network).</summary>
public sealed class NetnsUnavailableException(string message) : Exception(message);

/// <summary>
/// The hosts of `chaos drill --hosts netns`: the primary, the backup, the clients and etcd (and for a cycles drill a
/// host per further replica slot, <see cref="Host.Slot"/>) each in a network namespace of its own (the "host"), each
/// with one interface (<c>eth0</c>, a veth) plugged into a bridge that lives in a namespace of its own (the switch), all made by the drill and removed on every way out (<see cref="Dispose"/>,
/// also from SIGINT/SIGTERM and process exit; namespaces left by a drill that was SIGKILLed are removed by the next
/// one). The guest's virtual interface (kvserver) has its own address on the same wire: one persistent TAP device per
/// replica on the bridge, which the replica opens from its host (<c>--netns</c> of the switch), so a takeover moves
/// the guest's address from one port to the other. Faults are real: <see cref="KillHost"/> (every process of the
/// host SIGKILLed, its ports down), <see cref="LinkDown"/> (its ports down: silence, nothing is reset),
/// <see cref="Partition"/> (the bridge stops forwarding between two replica hosts' ports while both still reach
/// etcd, the clients and every other host). The arbiter is etcd on its own host. Needs iproute2 and root: the
/// machine's, or root of a user namespace of its own (<see cref="UserNamespace"/>: `chaos drill` run by another user
/// re-runs itself in one), where the namespaces' names live on a private tmpfs over /run/netns.
/// </summary>
public sealed class NetnsHosts : IGuestNetwork, IDisposable
{
    public const string Subnet = "10.215.0";
    public const string GuestIp = Subnet + ".100";
    static readonly string EtcdIp = Host.Etcd.Ip;
    public const int PrefixLength = 24, EtcdPort = 2379;
    const string Bridge = "br0", NamePrefix = "rvh";
    static int _made;
    /// <summary>Every host of this drill: primary, backup, clients, etcd, then the standby hosts.</summary>
    readonly Host[] _all;
    /// <summary>The replicas' hosts: primary, backup, then the standby hosts.</summary>
    public IReadOnlyList<Host> Replicas { get; }

    readonly string _prefix;
    readonly List<string> _namespaces = new();
    NamespaceSockets? _clients;
    Process? _etcd;
    readonly StringBuilder _etcdLog = new();
    readonly string _etcdDir;
    int _disposed;
    PosixSignalRegistration? _sigint, _sigterm;

    /// <summary>Whether the replica hosts have TAP ports (a guest network) on the bridge.</summary>
    readonly bool _taps;

    /// <summary>True when the drill runs as root of a user namespace of its own, not as the machine's root.</summary>
    public bool Rootless { get; }

    NetnsHosts(string prefix, int standbys, bool taps, bool rootless)
    {
        _prefix = prefix;
        _taps = taps;
        Rootless = rootless;
        Replicas = [Host.Primary, .. Enumerable.Range(0, standbys + 1).Select(Host.Slot)];
        _all = [Host.Primary, Host.Backup, Host.Clients, Host.Etcd, .. Replicas.Skip(2)];
        _etcdDir = Path.Combine(Path.GetTempPath(), $"{prefix}-etcd");
    }

    /// <summary>The switch's namespace (the bridge and the TAP devices).</summary>
    public string Switch => _prefix + "sw";

    /// <summary>The namespace of a host.</summary>
    public string Ns(Host h) => _prefix + h.Name;

    /// <summary>Makes the hosts, the bridge and etcd: primary, backup, clients, etcd and <paramref name="standbys"/>
    /// standby hosts more (a cycles drill's further replica slots), with a TAP port per replica host when
    /// <paramref name="guestNetwork"/> (the guest's virtual interface). Throws <see cref="NetnsUnavailableException"/>
    /// at once when this machine cannot (not root, no `ip`, no etcd, no TAP device), <see cref="InvalidOperationException"/>
    /// naming the failing command otherwise; whatever was made by then is removed.</summary>
    /// <param name="tag">Letters and digits put into every namespace's name after the drill's own prefix (the sweep of
    /// dead drills' namespaces still reads the pid before the 'x').</param>
    public static NetnsHosts Create(int standbys = 0, bool guestNetwork = true, string tag = "")
    {
        if (!OperatingSystem.IsLinux() || !Environment.IsPrivilegedProcess)
            throw new NetnsUnavailableException("--hosts netns needs root, or root of a user namespace of its own (`chaos drill` run by another user re-runs itself in one): it makes network namespaces, a bridge and veth pairs");
        if (!File.Exists(EtcdBinary)) throw new NetnsUnavailableException($"--hosts netns needs etcd ({EtcdBinary}; Debian package etcd-server) for its arbiter host");
        try { Child.Check(TimeSpan.FromSeconds(30), "ip", "-V"); }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        { throw new NetnsUnavailableException($"--hosts netns needs iproute2 (`ip`): {e.Message}"); }
        bool rootless = UserNamespace.Inside;
        if (rootless)
        {
            if (guestNetwork && UserNamespace.WhyNoTap() is { } noTap) throw new NetnsUnavailableException($"--hosts netns in a user namespace: {noTap}");
            UserNamespace.PrivateNetnsDirectory();
        }
        SweepStale();
        var h = new NetnsHosts($"{NamePrefix}{Environment.ProcessId}x{Interlocked.Increment(ref _made)}{tag}", standbys, guestNetwork, rootless);
        try
        {
            h.Build();
            h.StartEtcd();
        }
        catch (Exception e)
        {
            h.Dispose();
            if (e is InvalidOperationException ioe && ioe.Message.Contains("netns add", StringComparison.Ordinal))
                throw new NetnsUnavailableException($"--hosts netns: cannot make network namespaces here: {ioe.Message}");
            throw;
        }
        return h;
    }

    const string EtcdBinary = "/usr/bin/etcd";

    static string Run(params string[] args) => Child.Check(TimeSpan.FromSeconds(30), args[0], args[1..]);
    void In(string ns, params string[] args) => Run(["ip", "-n", ns, .. args]);

    void AddNamespace(string name)
    {
        Run("ip", "netns", "add", name);
        lock (_namespaces) _namespaces.Add(name);
        In(name, "link", "set", "lo", "up");
    }

    void Build()
    {
        // every way out removes the namespaces (a SIGKILLed drill's are swept by the next one)
        _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => Dispose());
        _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => Dispose());
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Dispose();
        AddNamespace(Switch);
        In(Switch, "link", "add", Bridge, "type", "bridge");
        In(Switch, "link", "set", Bridge, "up");
        foreach (var h in _all)
        {
            AddNamespace(Ns(h));
            In(Switch, "link", "add", h.Port, "type", "veth", "peer", "name", "eth0", "netns", Ns(h));
            In(Switch, "link", "set", h.Port, "master", Bridge);
            In(Switch, "link", "set", h.Port, "up");
            In(Ns(h), "addr", "add", $"{h.Ip}/{PrefixLength}", "dev", "eth0");
            In(Ns(h), "link", "set", "eth0", "up");
        }
        foreach (var tap in _taps ? Replicas.Select(h => h.Tap!) : [])
        {
            In(Switch, "tuntap", "add", "dev", tap, "mode", "tap");
            In(Switch, "link", "set", tap, "master", Bridge);
            In(Switch, "link", "set", tap, "up");
        }
        _clients = new NamespaceSockets(Ns(Host.Clients));
    }

    void StartEtcd()
    {
        Directory.CreateDirectory(_etcdDir);
        string client = $"http://{EtcdIp}:{EtcdPort}", peer = "http://127.0.0.1:2380";
        var psi = Child.StartInfo("ip", ["netns", "exec", Ns(Host.Etcd), EtcdBinary, "--name", "revirt-chaos", "--data-dir", _etcdDir,
            "--listen-client-urls", client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer, "--initial-cluster", $"revirt-chaos={peer}"]);
        _etcd = Process.Start(psi) ?? throw new InvalidOperationException("cannot start etcd");
        _etcd.StandardInput.Close();
        _etcd.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_etcdLog) if (_etcdLog.Length < 1 << 16) _etcdLog.AppendLine(e.Data); };
        _etcd.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_etcdLog) if (_etcdLog.Length < 1 << 16) _etcdLog.AppendLine(e.Data); };
        _etcd.BeginOutputReadLine();
        _etcd.BeginErrorReadLine();
        // ready when it answers its health check across the bridge, from the clients' host
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try { if (Http("GET", "/health", null).Contains("true", StringComparison.Ordinal)) return; }
            catch (Exception e) when (e is SocketException or IOException) { }
            if (_etcd.HasExited || sw.Elapsed > TimeSpan.FromSeconds(30))
            {
                string log;
                lock (_etcdLog) log = _etcdLog.ToString();
                throw new InvalidOperationException($"etcd on the arbiter host {EtcdIp} did not answer within 30 s:\n{log}");
            }
            Thread.Sleep(100);
        }
    }

    /// <summary>One HTTP/1.1 request to etcd from the clients' host (its JSON gateway); returns the body.</summary>
    string Http(string method, string path, string? body)
    {
        using var s = NewTcpSocket();
        s.ReceiveTimeout = s.SendTimeout = 5000;
        var connect = s.ConnectAsync(IPAddress.Parse(EtcdIp), EtcdPort);
        try { if (!connect.Wait(TimeSpan.FromSeconds(5))) throw new IOException("etcd did not accept a connection within 5 s"); }
        catch (AggregateException e) { throw new IOException($"cannot connect to etcd: {e.InnerException?.Message ?? e.Message}", e); }
        var bytes = body == null ? [] : Encoding.UTF8.GetBytes(body);
        s.Send(Encoding.ASCII.GetBytes($"{method} {path} HTTP/1.1\r\nHost: {EtcdIp}\r\nContent-Type: application/json\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n"));
        s.Send(bytes);
        var ms = new MemoryStream();
        var buf = new byte[8192];
        int n;
        while ((n = s.Receive(buf)) > 0 && ms.Length < 1 << 20) ms.Write(buf, 0, n);
        var text = Encoding.UTF8.GetString(ms.ToArray());
        int at = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (at < 0) throw new IOException($"etcd's answer ended within its headers ({ms.Length} bytes)");
        string head = text[..at], answer = text[(at + 4)..];
        string status = head.Split("\r\n")[0];
        if (status.Split(' ') is not [_, "200", ..]) throw new IOException($"etcd answered '{status}'");
        return head.Contains("transfer-encoding: chunked", StringComparison.OrdinalIgnoreCase) ? Dechunk(answer) : answer;
    }

    /// <summary>The body of an HTTP/1.1 chunked answer.</summary>
    static string Dechunk(string body)
    {
        var sb = new StringBuilder();
        int pos = 0;
        while (true)
        {
            int eol = body.IndexOf("\r\n", pos, StringComparison.Ordinal);
            if (eol < 0) throw new IOException("etcd's chunked answer was cut off");
            int size = int.Parse(body.AsSpan(pos, eol - pos).ToString().Split(';')[0], System.Globalization.NumberStyles.HexNumber);
            if (size == 0) return sb.ToString();
            if (eol + 2 + size > body.Length) throw new IOException("etcd's chunked answer was cut off");
            sb.Append(body, eol + 2, size);
            pos = eol + 2 + size + 2;
        }
    }

    /// <summary>The <c>--arbiter</c> of both replicas for one round.</summary>
    public static string ArbiterUrl(string key) => $"etcd://{EtcdIp}:{EtcdPort}/{key}";

    /// <summary>Attempts of one <see cref="ReadKey"/> before it says etcd cannot be asked.</summary>
    public const int ReadAttempts = 4;

    /// <summary>
    /// The value of an etcd key (the arbiter's holder) as etcd answers it from the clients' host: its value, its
    /// absence, or — after <see cref="ReadAttempts"/> attempts a growing pause apart, each bounded by 5 s socket
    /// time-outs — why etcd could not be asked. Absent and unknown are different findings: only the first says
    /// that nobody holds the key.
    /// </summary>
    public EtcdRead ReadKey(string key)
    {
        string? error = null;
        for (int attempt = 1; attempt <= ReadAttempts; attempt++)
        {
            try
            {
                string json = Http("POST", "/v3/kv/range", JsonSerializer.Serialize(new Dictionary<string, string> { ["key"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(key)) }));
                using var doc = JsonDocument.Parse(json);
                if (doc.RootElement.TryGetProperty("error", out var err) || !doc.RootElement.TryGetProperty("header", out _))
                    throw new IOException($"etcd answered without a range result: {Clip(json)}");
                if (!doc.RootElement.TryGetProperty("kvs", out var kvs) || kvs.GetArrayLength() == 0) return new EtcdRead(null, null, attempt);
                if (!kvs[0].TryGetProperty("value", out var v)) return new EtcdRead("", null, attempt); // an empty value is not sent
                return new EtcdRead(Encoding.UTF8.GetString(Convert.FromBase64String(v.GetString() ?? "")), null, attempt);
            }
            catch (Exception e) when (e is SocketException or IOException or JsonException or FormatException or InvalidOperationException)
            {
                error = $"{e.GetType().Name}: {e.Message}";
            }
            if (attempt < ReadAttempts) Thread.Sleep(250 << (attempt - 1));
        }
        return new EtcdRead(null, error, ReadAttempts);
    }

    static string Clip(string s) => s.Length <= 200 ? s : s[..200] + "...";

    /// <summary>Where a replica listens on its host.</summary>
    public static string ListenUrl(Host h, int port = 0) => $"http://{h.Ip}:{port}";

    // ------------------------------------------------------------------ the guest's network (kvserver)

    public string[] PrimaryArgs => ["--net", "virtual", "--ip", $"{GuestIp}/{PrefixLength}", "--tap", GuestTap(Host.Primary), "--netns", Switch];
    public string[] BackupArgs => StandbyArgs(Host.Backup);
    /// <summary>`backup listen` options of a cycles drill's replica on slot <paramref name="slot"/> (its host's TAP device).</summary>
    public string[] StandbyArgs(int slot) => StandbyArgs(Host.Slot(slot));
    /// <summary>`backup listen` options of a replica on host <paramref name="h"/>: its TAP device on the bridge.</summary>
    public string[] StandbyArgs(Host h) => ["--tap", GuestTap(h), "--netns", Switch];

    string GuestTap(Host h) => !_taps ? throw new InvalidOperationException("these hosts were made without a guest network (no TAP ports)")
        : h.Tap ?? throw new ArgumentException($"host {h} runs no replica");
    public IPAddress Guest => IPAddress.Parse(GuestIp);
    public Socket NewTcpSocket() => (_clients ?? throw new ObjectDisposedException(nameof(NetnsHosts))).NewTcpSocket();

    // ------------------------------------------------------------------ faults

    /// <summary>The host's ports on the switch: its veth and, for a replica with a guest network, its TAP device.</summary>
    string[] Ports(Host h) => _taps && h.Tap is { } tap ? [h.Port, tap] : [h.Port];

    /// <summary>A killed host: every process in its namespace SIGKILLed, its ports down.</summary>
    public void KillHost(Host h)
    {
        KillAll(Ns(h));
        LinkDown(h);
    }

    /// <summary>The host's cables pulled at the switch: nothing is closed or reset; its peers only hear silence.</summary>
    public void LinkDown(Host h)
    {
        foreach (var p in Ports(h)) In(Switch, "link", "set", p, "down");
    }

    /// <summary>A partition at the bridge: the ports of <paramref name="a"/> and <paramref name="b"/> (by default the
    /// primary's and the backup's) stop forwarding to each other (both still reach etcd, the clients and every other
    /// host, so the arbiter decides who goes on).</summary>
    public void Partition(Host? a = null, Host? b = null)
    {
        foreach (var h in new[] { a ?? Host.Primary, b ?? Host.Backup }) Run("bridge", "-n", Switch, "link", "set", "dev", h.Port, "isolated", "on");
    }

    /// <summary>Blackhole routes of <see cref="CutOff"/> in force: (the namespace, the address it cannot reach).</summary>
    readonly List<(string Ns, string Ip)> _cuts = new();

    /// <summary>
    /// <paramref name="h"/> cut from <paramref name="from"/> and they from it, in both directions, while every other
    /// path stays (its TAP port, the clients, other hosts): a blackhole route for each peer's address on
    /// <paramref name="h"/> and one for <paramref name="h"/>'s address on each peer, so the packets are silently
    /// dropped as by a partition (nothing is reset; an established connection only hears silence). The bridge cannot
    /// do this by itself: its port isolation cuts isolated ports from each other only, which would cut the peers
    /// apart too, and this kernel has no traffic-control classifiers.
    /// </summary>
    public void CutOff(Host h, params Host[] from)
    {
        foreach (var peer in from)
        {
            foreach (var (ns, ip) in new[] { (Ns(h), peer.Ip), (Ns(peer), h.Ip) })
            {
                In(ns, "route", "add", "blackhole", $"{ip}/32");
                lock (_cuts) _cuts.Add((ns, ip));
            }
        }
    }

    /// <summary>Undoes every fault (between rounds and cycles): no port isolated, every port up, no cut.</summary>
    public void Heal()
    {
        (string Ns, string Ip)[] cuts;
        lock (_cuts) { cuts = _cuts.ToArray(); _cuts.Clear(); }
        foreach (var (ns, ip) in cuts) In(ns, "route", "del", "blackhole", $"{ip}/32");
        foreach (var h in Replicas) Run("bridge", "-n", Switch, "link", "set", "dev", h.Port, "isolated", "off");
        foreach (var h in _all)
            foreach (var p in Ports(h)) In(Switch, "link", "set", p, "up");
    }

    static void KillAll(string ns)
    {
        string pids;
        try { pids = Child.Check(TimeSpan.FromSeconds(30), "ip", "netns", "pids", ns); }
        catch (InvalidOperationException) { return; }
        foreach (var line in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (int.TryParse(line, out int pid))
                try { using var p = Process.GetProcessById(pid); p.Kill(); } catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { }
    }

    /// <summary>Removes the namespaces of drills that are gone (SIGKILLed before they could clean up).</summary>
    static void SweepStale()
    {
        string list;
        try { list = Child.Check(TimeSpan.FromSeconds(30), "ip", "netns", "list"); }
        catch (InvalidOperationException) { return; }
        foreach (var line in list.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string name = line.Split(' ')[0];
            if (!name.StartsWith(NamePrefix, StringComparison.Ordinal)) continue;
            int x = name.IndexOf('x');
            if (x <= NamePrefix.Length || !int.TryParse(name[NamePrefix.Length..x], out int pid) || Directory.Exists($"/proc/{pid}")) continue;
            KillAll(name);
            try { Child.Check(TimeSpan.FromSeconds(30), "ip", "netns", "del", name); } catch (InvalidOperationException) { }
        }
    }

    /// <summary>Stops etcd and every process left on the hosts, removes the namespaces (the bridge, veths and TAP
    /// devices go with them) and etcd's data. Safe to call more than once and from a signal handler.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _clients?.Dispose();
        if (_etcd != null) Child.KillTree(_etcd);
        string[] names;
        lock (_namespaces) names = _namespaces.ToArray();
        foreach (var ns in names) KillAll(ns);
        foreach (var ns in names.Reverse())
            try { Child.Check(TimeSpan.FromSeconds(30), "ip", "netns", "del", ns); } catch (InvalidOperationException) { }
        try { Directory.Delete(_etcdDir, true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        _sigint?.Dispose();
        _sigterm?.Dispose();
    }
}
