using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace ReVirt.Harness;

/// <summary>A timestamped piece of a process's stdout: when the runner read it and where it starts in the stream.</summary>
public sealed record OutputChunk(double AtMs, long Offset, int Length);

/// <summary>A timestamped stderr line.</summary>
public sealed record LogLine(double AtMs, string Text);

/// <summary>
/// A replica subprocess (`dotnet primary.dll …`, `dotnet backup.dll …`) as the drill and the tests run it: its
/// stdout bytes and stderr lines are collected as they arrive, and what it reports on its event stream
/// (<c>--events</c>, added to the arguments right after the subcommand) is read as named events. Everything is
/// stamped with one clock, so a checker can reason about when output left and when a replica did what.
/// Programs read the events; the stderr lines are for people.
/// </summary>
public sealed class ReplicaProc : IDisposable
{
    readonly Process _p;
    readonly Stopwatch _clock;
    readonly double _originUnixMs;
    readonly MemoryStream _out = new();
    readonly List<OutputChunk> _chunks = new();
    readonly List<LogLine> _err = new();
    readonly List<ReplicaEventRecord> _events = new();
    readonly Task _outPump, _errPump, _eventPump;
    readonly string _eventsPath;
    readonly CancellationTokenSource _stop = new();
    public string Name { get; }
    public double? ExitedAtMs { get; private set; }
    public bool Killed { get; private set; }

    /// <param name="args">The subcommand first (e.g. "listen", "protect"), then its options.</param>
    /// <param name="clock">The runner's clock (a drill round's); a fresh one when null.</param>
    /// <param name="netns">Run the replica in this network namespace (`ip netns exec`, which execs it: the process
    /// is the replica itself); null: this process's.</param>
    public ReplicaProc(string name, string dll, IReadOnlyList<string> args, Stopwatch? clock = null, string? netns = null)
    {
        Name = name;
        _clock = clock ?? Stopwatch.StartNew();
        _originUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - _clock.Elapsed.TotalMilliseconds;
        _eventsPath = Path.Combine(Path.GetTempPath(), $"revirt-events-{Guid.NewGuid():N}.jsonl");
        File.WriteAllBytes(_eventsPath, []);
        var psi = new ProcessStartInfo(netns == null ? "dotnet" : "ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (netns != null) foreach (var a in new[] { "netns", "exec", netns, "dotnet" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(dll);
        for (int i = 0; i < args.Count; i++)
        {
            psi.ArgumentList.Add(args[i]);
            if (i == 0) { psi.ArgumentList.Add("--events"); psi.ArgumentList.Add(_eventsPath); }
        }
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["TZ"] = "UTC";
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
        _eventPump = Task.Factory.StartNew(TailEvents, TaskCreationOptions.LongRunning);
    }

    public static ReplicaProc Backup(string dll, params string[] args) => new("backup", dll, ["listen", .. args]);
    public static ReplicaProc Primary(string dll, params string[] args) => new("primary", dll, ["protect", .. args]);

    /// <summary>Reads the event file as the replica appends to it, until the process has exited and all is read.</summary>
    void TailEvents()
    {
        using var f = new FileStream(_eventsPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        var pending = new StringBuilder();
        var buf = new byte[16384];
        var dec = Encoding.UTF8.GetDecoder();
        var chars = new char[16384];
        while (true)
        {
            bool exited = _p.HasExited || _stop.IsCancellationRequested;
            int n = f.Read(buf);
            if (n == 0)
            {
                if (exited) return;
                Thread.Sleep(2);
                continue;
            }
            int c = dec.GetChars(buf, 0, n, chars, 0);
            pending.Append(chars, 0, c);
            int nl;
            while ((nl = pending.ToString().IndexOf('\n')) >= 0)
            {
                string line = pending.ToString(0, nl);
                pending.Remove(0, nl + 1);
                if (ReplicaEventRecord.Parse(line, _originUnixMs) is { } e) lock (_events) _events.Add(e);
            }
        }
    }

    double Now => _clock.Elapsed.TotalMilliseconds;
    public int Pid => _p.Id;
    public byte[] Stdout { get { lock (_out) return _out.ToArray(); } }
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public long StdoutLength { get { lock (_out) return _out.Length; } }
    public OutputChunk[] Chunks { get { lock (_out) return _chunks.ToArray(); } }
    public LogLine[] StderrLines { get { lock (_err) return _err.ToArray(); } }
    /// <summary>The stderr lines so far, for people (test output, reports).</summary>
    public string Stderr => string.Join("\n", StderrLines.Select(l => l.Text));
    public ReplicaEventRecord[] Events { get { lock (_events) return _events.ToArray(); } }
    public bool HasExited => _p.HasExited;
    public int? ExitCode => _p.HasExited ? _p.ExitCode : null;

    /// <summary>The first event named <paramref name="name"/>, or null.</summary>
    public ReplicaEventRecord? Event(string name) { lock (_events) return _events.FirstOrDefault(e => e.Name == name); }

    /// <summary>Waits for event <paramref name="name"/>; throws (with the stderr so far) when the process exits or the time is up first.</summary>
    public ReplicaEventRecord WaitForEvent(string name, TimeSpan timeout)
    {
        if (WaitFor(() => Event(name) != null, timeout)) return Event(name)!;
        throw new TimeoutException($"{Name}: no '{name}' event (events: {string.Join(", ", Events.Select(e => e.Name))}); stderr:\n{Stderr}");
    }

    /// <summary>Waits until <paramref name="until"/> holds, the process exits or the timeout passes; returns whether it held.</summary>
    public bool WaitFor(Func<bool> until, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (until()) return true;
            if (_p.HasExited) { _eventPump.Wait(TimeSpan.FromSeconds(5)); _errPump.Wait(TimeSpan.FromSeconds(5)); return until(); }
            Thread.Sleep(5);
        }
        return until();
    }

    /// <summary>Waits until the process has written <paramref name="n"/> stdout bytes (or exited, or the time is up).</summary>
    public bool WaitForStdoutBytes(int n, TimeSpan timeout) => WaitFor(() => StdoutLength >= n, timeout);

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    static extern int SysKill(int pid, int sig);
    public const int SIGKILL = 9, SIGCONT = 18, SIGSTOP = 19;

    public void Signal(int sig)
    {
        if (_p.HasExited) return;
        SysKill(_p.Id, sig);
        if (sig == SIGKILL) Killed = true;
    }

    /// <summary>
    /// SIGSTOP, returning once every thread of the process is stopped (state T in /proc/PID/task/*/stat), or false
    /// when that did not happen within <paramref name="timeout"/> (or the process is gone). kill(2) returns as soon as
    /// the signal is queued; the other threads learn of the group stop only once the thread that took the signal runs,
    /// and on a loaded machine they went on for tens of milliseconds (a backup sent acknowledgements 8 ms after kill
    /// returned, and was wholly stopped after 57 ms). Whoever measures what a frozen replica can no longer do must
    /// start measuring here.
    /// </summary>
    public bool Freeze(TimeSpan timeout)
    {
        Signal(SIGSTOP);
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (_p.HasExited) return false;
            if (AllThreadsStopped()) return true;
            if (sw.Elapsed > timeout) return false;
            Thread.Sleep(1);
        }
    }

    /// <summary>Every thread of the process is in a group stop (state T). A thread that exits while it is looked at
    /// counts as stopped: it does nothing more.</summary>
    bool AllThreadsStopped()
    {
        string[] tasks;
        try { tasks = Directory.GetDirectories($"/proc/{_p.Id}/task"); }
        catch (IOException) { return false; }
        foreach (var t in tasks)
        {
            string stat;
            try { stat = File.ReadAllText(Path.Combine(t, "stat")); }
            catch (IOException) { continue; }
            // "tid (comm) S ...": the state follows the last ')' (comm may hold anything, parentheses too)
            int close = stat.LastIndexOf(')');
            if (close < 0 || close + 2 >= stat.Length || stat[close + 2] != 'T') return false;
        }
        return tasks.Length > 0;
    }

    /// <summary>SIGKILL, the way a crash looks to the other side; waits until it is gone and its pipes are read.</summary>
    public void KillHard()
    {
        Signal(SIGKILL);
        try { _p.WaitForExit(); } catch (InvalidOperationException) { }
        _outPump.Wait(TimeSpan.FromSeconds(5));
        _eventPump.Wait(TimeSpan.FromSeconds(5));
    }

    /// <summary>
    /// The managed thread stacks of the running replica (`dotnet-stack report`, from the .NET global tools directory
    /// or PATH), for a report on a replica about to be killed as hung; null with the reason in <paramref name="why"/>
    /// when the tool is not installed, the process is gone, or it did not answer within <paramref name="timeout"/>.
    /// </summary>
    public string? ThreadStacks(TimeSpan timeout, out string why)
    {
        why = "";
        if (_p.HasExited) { why = "the process had exited"; return null; }
        string tool = StackTool();
        if (tool == "") { why = "dotnet-stack is not installed (dotnet tool install -g dotnet-stack)"; return null; }
        try
        {
            var r = Child.Run(tool, ["report", "-p", _p.Id.ToString()], timeout);
            if (r.ExitCode == 0 && r.StdoutText.Trim() is { Length: > 0 } stacks) return stacks;
            why = $"dotnet-stack exited {r.ExitCode}: {r.Stderr.Trim()}";
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or System.ComponentModel.Win32Exception) { why = $"dotnet-stack: {e.Message}"; }
        return null;
    }

    /// <summary>
    /// Why a runner is about to kill this replica as hung, for its report: which replica, the last named event it
    /// emitted (and when), and its thread stacks when dotnet-stack can take them within <paramref name="stacksWithin"/>
    /// (TimeSpan.Zero: none).
    /// </summary>
    public string HangReport(TimeSpan stacksWithin)
    {
        var last = Events.LastOrDefault();
        string lastEvent = last == null ? "it emitted no event" : $"its last event was '{last.Name}' at {last.AtMs.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)} ms";
        string head = $"{Name} (pid {Pid}) still running at {Now.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)} ms: {lastEvent}";
        if (stacksWithin <= TimeSpan.Zero) return head;
        return ThreadStacks(stacksWithin, out var why) is { } stacks ? $"{head}; its threads:\n{stacks}" : $"{head}; no thread stacks ({why})";
    }

    /// <summary>
    /// What a failed expectation needs to know about this replica: whether (and with which code, when) it exited, the
    /// names of the events it emitted, and the last lines of its stderr. For assertion messages, so a failure on a
    /// loaded machine says why the replica stopped instead of only that it did.
    /// </summary>
    public string State(int stderrLines = 15)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        string life = _p.HasExited ? $"exited with code {_p.ExitCode} at {ExitedAtMs?.ToString("F0", inv) ?? "?"} ms" : $"running at {Now.ToString("F0", inv)} ms";
        var tail = StderrLines.TakeLast(stderrLines).Select(l => l.Text);
        return $"{Name} (pid {Pid}) {life}; events: {string.Join(", ", Events.Select(e => e.Name))}; stderr tail:\n{string.Join("\n", tail)}";
    }

    static string StackTool()
    {
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string global = Path.Combine(home, ".dotnet", "tools", "dotnet-stack");
        if (File.Exists(global)) return global;
        return (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "dotnet-stack")).FirstOrDefault(File.Exists) ?? "";
    }

    /// <summary>Waits for exit (killing the process after <paramref name="timeout"/>); the exit code, or null when it had to be killed.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        bool ok = _p.WaitForExit(timeout);
        if (!ok) { SysKill(_p.Id, SIGCONT); try { _p.Kill(true); } catch (InvalidOperationException) { } _p.WaitForExit(); }
        _p.WaitForExit();
        _outPump.Wait(TimeSpan.FromSeconds(5));
        _errPump.Wait(TimeSpan.FromSeconds(5));
        _eventPump.Wait(TimeSpan.FromSeconds(5));
        ExitedAtMs ??= Now;
        return ok ? _p.ExitCode : null;
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) { SysKill(_p.Id, SIGCONT); _p.Kill(true); _p.WaitForExit(5000); } } catch (InvalidOperationException) { }
        _stop.Cancel();
        _eventPump.Wait(TimeSpan.FromSeconds(5));
        _p.Dispose();
        try { File.Delete(_eventsPath); } catch (IOException) { }
    }
}
