using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;

namespace ReVirt.Tests.Replication;

/// <summary>A `primary` or `backup` subprocess whose stdout bytes and stderr lines are collected as they come.</summary>
public sealed class ReplicaProcess : IDisposable
{
    readonly Process _p;
    readonly MemoryStream _out = new();
    readonly StringBuilder _err = new();
    readonly Task _outPump;

    public ReplicaProcess(string dll, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["TZ"] = "UTC";
        _p = Process.Start(psi)!;
        _p.StandardInput.Close();
        _outPump = Task.Run(() =>
        {
            var buf = new byte[8192];
            int n;
            var s = _p.StandardOutput.BaseStream;
            while ((n = s.Read(buf)) > 0) lock (_out) _out.Write(buf, 0, n);
        });
        _p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_err) _err.AppendLine(e.Data); };
        _p.BeginErrorReadLine();
    }

    /// <summary>
    /// `backup listen ARGS`. A backup refuses to listen without a token and refuses a primary whose guest root is the
    /// same directory as its own; tests that give no --token-file run it with --insecure-no-auth, and tests that give
    /// no --root (both replicas on this machine's "/", guests that write no files) with --shared-storage.
    /// </summary>
    public static ReplicaProcess Backup(params string[] args)
    {
        var a = new List<string> { "listen" };
        a.AddRange(args);
        if (!args.Contains("--token-file")) a.Add("--insecure-no-auth");
        if (!args.Contains("--root")) a.Add("--shared-storage");
        return new(GuestEnv.BackupDll, a);
    }
    public static ReplicaProcess Primary(params string[] args) => new(GuestEnv.PrimaryDll, new[] { "protect" }.Concat(args));

    public int Pid => _p.Id;
    public byte[] Stdout { get { lock (_out) return _out.ToArray(); } }
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string Stderr { get { lock (_err) return _err.ToString(); } }
    public bool Exited => _p.HasExited;

    /// <summary>Waits for a stderr line matching <paramref name="pattern"/>; returns the match.</summary>
    public Match WaitForStderr(string pattern, TimeSpan timeout)
    {
        var re = new Regex(pattern);
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            var m = re.Match(Stderr);
            if (m.Success) return m;
            if (_p.HasExited) { Thread.Sleep(100); m = re.Match(Stderr); if (m.Success) return m; break; }
            Thread.Sleep(20);
        }
        throw new TimeoutException($"no stderr line matching /{pattern}/; stderr so far:\n{Stderr}");
    }

    public void WaitForStdoutBytes(int n, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout && !_p.HasExited) { lock (_out) if (_out.Length >= n) return; Thread.Sleep(5); }
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!_p.WaitForExit(timeout))
        {
            _p.Kill(true);
            throw new TimeoutException($"process did not exit in {timeout}; stderr:\n{Stderr}");
        }
        _p.WaitForExit();
        _outPump.Wait(TimeSpan.FromSeconds(10));
        return _p.ExitCode;
    }

    /// <summary>SIGKILL, the way a crash looks to the other side.</summary>
    public void KillHard()
    {
        try { _p.Kill(); } catch (InvalidOperationException) { }
        _p.WaitForExit();
        _outPump.Wait(TimeSpan.FromSeconds(10));
    }

    /// <summary>Starts a backup on a free loopback port and returns it with its URL.</summary>
    public static (ReplicaProcess Backup, string Url) StartBackup(params string[] args)
    {
        var b = Backup(new[] { "--listen", "http://127.0.0.1:0" }.Concat(args).ToArray());
        var m = b.WaitForStderr(@"listening on (http://127\.0\.0\.1:\d+)", TimeSpan.FromSeconds(30));
        return (b, m.Groups[1].Value);
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) _p.Kill(true); } catch (InvalidOperationException) { }
        _p.Dispose();
    }
}

/// <summary>
/// A TCP relay on loopback between primary and backup whose link can be cut silently (a partition: nothing is
/// closed, bytes just stop flowing in both directions).
/// </summary>
public sealed class PartitionableLink : IDisposable
{
    readonly TcpListener _l;
    readonly string _targetHost;
    readonly int _targetPort;
    volatile bool _cut;
    readonly List<TcpClient> _conns = new();
    readonly CancellationTokenSource _cts = new();

    public PartitionableLink(string targetUrl)
    {
        var u = new Uri(targetUrl);
        _targetHost = u.Host;
        _targetPort = u.Port;
        _l = new TcpListener(IPAddress.Loopback, 0);
        _l.Start();
        _ = Task.Run(AcceptLoop);
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_l.LocalEndpoint).Port}";

    public void Cut() => _cut = true;

    async Task AcceptLoop()
    {
        while (!_cts.IsCancellationRequested)
        {
            TcpClient a;
            try { a = await _l.AcceptTcpClientAsync(_cts.Token); } catch { return; }
            var b = new TcpClient();
            await b.ConnectAsync(_targetHost, _targetPort);
            lock (_conns) { _conns.Add(a); _conns.Add(b); }
            _ = Pump(a.GetStream(), b.GetStream());
            _ = Pump(b.GetStream(), a.GetStream());
        }
    }

    async Task Pump(NetworkStream from, NetworkStream to)
    {
        var buf = new byte[65536];
        try
        {
            while (true)
            {
                int n = await from.ReadAsync(buf, _cts.Token);
                if (n == 0) { if (!_cut) to.Socket.Shutdown(SocketShutdown.Send); return; }
                if (_cut) continue; // the partition swallows everything
                await to.WriteAsync(buf.AsMemory(0, n), _cts.Token);
            }
        }
        catch { }
    }

    public void Dispose()
    {
        _cts.Cancel();
        _l.Stop();
        lock (_conns) foreach (var c in _conns) c.Dispose();
    }
}
