using System.Diagnostics;
using System.Text;

namespace ReVirt.Tests.Programs;

/// <summary>
/// Locates the repository, builds the guest programs under guests/ (once per test run) and runs programs
/// natively or under the `primary` command, as a subprocess with redirected stdio.
/// </summary>
public static class GuestEnv
{
    static readonly Lazy<string> _repo = new(() =>
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "ReVirt.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("ReVirt.sln not found above the test directory");
    });

    public static string RepoRoot => _repo.Value;

    static readonly Lazy<string> _guests = new(() =>
    {
        string outDir = Path.Combine(RepoRoot, "guests", "out");
        var r = Exec("bash", new[] { Path.Combine(RepoRoot, "guests", "build.sh"), outDir }, null, TimeSpan.FromMinutes(5));
        if (r.ExitCode != 0) throw new InvalidOperationException("guests/build.sh failed: " + r.Stderr);
        return outDir;
    });

    /// <summary>Path of a built guest program, e.g. Guest("intarith", "musl").</summary>
    public static string Guest(string name, string libc) => Path.Combine(_guests.Value, $"{name}.{libc}");

    public static string PrimaryDll => Path.Combine(AppContext.BaseDirectory, "primary.dll");
    public static string BackupDll => Path.Combine(AppContext.BaseDirectory, "backup.dll");

    /// <summary>The exit status a recording's Exit record holds (null if the log has none). A faithful replay
    /// (`backup replay` exit 0) ended with this same status: the replay refuses any other.</summary>
    public static int? RecordedExitStatus(string log)
    {
        using var r = ReVirt.Log.LogReader.Open(log);
        while (r.TryRead(out var rec))
            if (rec.Kind == ReVirt.Log.RecordKind.Exit) return rec.Decode<ReVirt.Log.Exit>().Status;
        return null;
    }

    /// <summary>How many records of this kind a log holds.</summary>
    public static int CountRecords(string log, ReVirt.Log.RecordKind kind)
    {
        using var r = ReVirt.Log.LogReader.Open(log);
        int n = 0;
        while (r.TryRead(out var rec)) if (rec.Kind == kind) n++;
        return n;
    }

    public static RunOutcome Native(string program, string[] args, byte[]? stdin = null, string? cwd = null, IDictionary<string, string>? env = null)
        => Exec(program, args, stdin, TimeSpan.FromMinutes(2), cwd, env);

    /// <summary>Runs `primary run [extra] -- program args` and returns what it did.</summary>
    public static RunOutcome Vm(string program, string[] args, byte[]? stdin = null, string? cwd = null, string[]? extra = null, IDictionary<string, string>? env = null)
    {
        var a = new List<string> { PrimaryDll, "run" };
        if (extra != null) a.AddRange(extra);
        // REVIRT_TEST_TIER=Compiled (or Interpreter) runs every suite that uses this in that tier
        if (Environment.GetEnvironmentVariable("REVIRT_TEST_TIER") is { Length: > 0 } tier && extra?.Contains("--tier") != true)
        { a.Add("--tier"); a.Add(tier); }
        a.Add("--");
        a.Add(program);
        a.AddRange(args);
        return Exec("dotnet", a.ToArray(), stdin, TimeSpan.FromMinutes(5), cwd, env);
    }

    public static RunOutcome Dotnet(string dll, string[] args, byte[]? stdin = null, string? cwd = null, TimeSpan? timeout = null, IDictionary<string, string>? env = null)
        => Exec("dotnet", new[] { dll }.Concat(args).ToArray(), stdin, timeout ?? TimeSpan.FromMinutes(5), cwd, env);

    /// <summary>Runs a program; `env` adds to (or replaces) variables of this process's environment.</summary>
    public static RunOutcome Exec(string file, string[] args, byte[]? stdin, TimeSpan timeout, string? cwd = null, IDictionary<string, string>? env = null)
        => Child.Run(file, args, timeout, stdin, cwd, env);
}

/// <summary>
/// A program started in the background (e.g. a guest server under `primary run`): the test talks to it while it
/// runs. Stdout is collected as bytes, stderr line by line so that a test can wait for a line such as
/// "listening on 127.0.0.1:N".
/// </summary>
public sealed class RunningProgram : IDisposable
{
    readonly Process _p;
    readonly Task<byte[]> _out;
    readonly Task _errPump;
    readonly StringBuilder _err = new();
    readonly object _lock = new();

    public RunningProgram(string file, IEnumerable<string> args, string? cwd = null)
    {
        var psi = Child.StartInfo(file, args, cwd);
        _p = Process.Start(psi)!;
        _p.StandardInput.Close();
        _out = Task.Run(() => { var ms = new MemoryStream(); _p.StandardOutput.BaseStream.CopyTo(ms); return ms.ToArray(); });
        _errPump = Task.Run(() =>
        {
            string? line;
            while ((line = _p.StandardError.ReadLine()) != null)
                lock (_lock) { _err.Append(line).Append('\n'); Monitor.PulseAll(_lock); }
            lock (_lock) Monitor.PulseAll(_lock);
        });
    }

    /// <summary>Starts `dotnet DLL args...` (primary.dll run/record ...).</summary>
    public static RunningProgram Dotnet(string dll, params string[] args) => new("dotnet", new[] { dll }.Concat(args));

    public string Stderr { get { lock (_lock) return _err.ToString(); } }

    /// <summary>The process id (e.g. to read its /proc entries while it runs).</summary>
    public int Pid => _p.Id;

    public bool HasExited => _p.HasExited;

    /// <summary>Waits for a stderr line matching the pattern and returns its first group.</summary>
    public string WaitForStderr(System.Text.RegularExpressions.Regex pattern, TimeSpan timeout)
    {
        var end = DateTime.UtcNow + timeout;
        lock (_lock)
        {
            while (true)
            {
                var m = pattern.Match(_err.ToString());
                if (m.Success) return m.Groups.Count > 1 ? m.Groups[1].Value : m.Value;
                var left = end - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || (_p.HasExited && _errPump.IsCompleted))
                    throw new TimeoutException($"no stderr line matching {pattern} (exited: {_p.HasExited}); stderr so far:\n{_err}");
                Monitor.Wait(_lock, left < TimeSpan.FromMilliseconds(200) ? left : TimeSpan.FromMilliseconds(200));
            }
        }
    }

    /// <summary>Waits for the program to end and returns what it did (kills it after the timeout).</summary>
    public RunOutcome WaitForExit(TimeSpan timeout)
    {
        if (!_p.WaitForExit(timeout))
        {
            _p.Kill(true);
            throw new TimeoutException($"the program did not finish in {timeout}; stderr:\n{Stderr}");
        }
        _p.WaitForExit();
        _errPump.Wait(timeout);
        return new RunOutcome(_p.ExitCode, _out.Result, Stderr);
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) _p.Kill(true); } catch (InvalidOperationException) { }
        _p.Dispose();
    }
}
