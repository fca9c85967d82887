using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace ReVirt.Chaos;

/// <summary>A timestamped piece of a process's stdout: when the drill read it and where it starts in the stream.</summary>
public sealed record OutputChunk(double AtMs, long Offset, int Length);

/// <summary>A timestamped stderr line.</summary>
public sealed record LogLine(double AtMs, string Text);

/// <summary>
/// A `dotnet primary.dll …` or `dotnet backup.dll …` subprocess. Its stdout bytes and stderr lines are collected
/// as they arrive, each stamped with the drill's round clock, so the checkers can reason about when output was
/// released and when a replica said what.
/// </summary>
public sealed class ReplicaProc : IDisposable
{
    readonly Process _p;
    readonly Stopwatch _clock;
    readonly MemoryStream _out = new();
    readonly List<OutputChunk> _chunks = new();
    readonly List<LogLine> _err = new();
    readonly Task _outPump, _errPump;
    public string Name { get; }
    public double? ExitedAtMs { get; private set; }
    public bool Killed { get; private set; }

    public ReplicaProc(string name, string dll, IEnumerable<string> args, Stopwatch clock, IDictionary<string, string>? env = null)
    {
        Name = name;
        _clock = clock;
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
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        _p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _p.Exited += (_, _) => ExitedAtMs ??= Now;
        _p.Start();
        _p.StandardInput.Close();
        _outPump = Task.Factory.StartNew(() =>
        {
            var buf = new byte[65536];
            int n;
            var s = _p.StandardOutput.BaseStream;
            while ((n = s.Read(buf)) > 0)
                lock (_out) { _chunks.Add(new OutputChunk(Now, _out.Length, n)); _out.Write(buf, 0, n); }
        }, TaskCreationOptions.LongRunning);
        _errPump = Task.Factory.StartNew(() =>
        {
            string? line;
            while ((line = _p.StandardError.ReadLine()) != null) lock (_err) _err.Add(new LogLine(Now, line));
        }, TaskCreationOptions.LongRunning);
    }

    double Now => _clock.Elapsed.TotalMilliseconds;
    public int Pid => _p.Id;
    public byte[] Stdout { get { lock (_out) return _out.ToArray(); } }
    public long StdoutLength { get { lock (_out) return _out.Length; } }
    public OutputChunk[] Chunks { get { lock (_out) return _chunks.ToArray(); } }
    public LogLine[] Stderr { get { lock (_err) return _err.ToArray(); } }
    public string StderrText => string.Join("\n", Stderr.Select(l => l.Text));
    public bool HasExited => _p.HasExited;
    public int? ExitCode => _p.HasExited ? _p.ExitCode : null;

    /// <summary>The first stderr line containing <paramref name="text"/>, or null.</summary>
    public LogLine? Line(string text) { lock (_err) return _err.FirstOrDefault(l => l.Text.Contains(text, StringComparison.Ordinal)); }

    /// <summary>Waits until <paramref name="until"/> holds, the process exits or the timeout passes; returns whether it held.</summary>
    public bool WaitFor(Func<bool> until, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (until()) return true;
            if (_p.HasExited) { Thread.Sleep(50); return until(); }
            Thread.Sleep(5);
        }
        return until();
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    static extern int SysKill(int pid, int sig);
    public const int SIGKILL = 9, SIGCONT = 18, SIGSTOP = 19;

    public void Signal(int sig)
    {
        if (_p.HasExited) return;
        SysKill(_p.Id, sig);
        if (sig == SIGKILL) Killed = true;
    }

    /// <summary>SIGKILL, the way a crash looks to the other side; waits until it is gone.</summary>
    public void KillHard()
    {
        Signal(SIGKILL);
        try { _p.WaitForExit(); } catch (InvalidOperationException) { }
    }

    /// <summary>Waits for exit (killing the process after <paramref name="timeout"/>); returns the exit code, or null when it had to be killed.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        bool ok = _p.WaitForExit(timeout);
        if (!ok) { SysKill(_p.Id, SIGCONT); try { _p.Kill(true); } catch (InvalidOperationException) { } _p.WaitForExit(); }
        _p.WaitForExit();
        _outPump.Wait(TimeSpan.FromSeconds(5));
        _errPump.Wait(TimeSpan.FromSeconds(5));
        ExitedAtMs ??= Now;
        return ok ? _p.ExitCode : null;
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) { SysKill(_p.Id, SIGCONT); _p.Kill(true); _p.WaitForExit(5000); } } catch (InvalidOperationException) { }
        _p.Dispose();
    }
}
