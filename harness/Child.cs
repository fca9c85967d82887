using System.Diagnostics;
using System.Text;

namespace ReVirt.Harness;

/// <summary>What a finished program did: its exit status, stdout bytes and stderr text.</summary>
public sealed record RunOutcome(int ExitCode, byte[] Stdout, string Stderr)
{
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
}

/// <summary>
/// Runs a helper program to completion (a compiler, `ip`, a native run of a guest, `dotnet primary.dll …`), the one
/// way the drill and the tests do it. The contract is that nothing here waits without a bound:
/// <list type="bullet">
/// <item>standard input is always a pipe this side owns (given bytes, then closed), never the caller's own stdin,
/// which under a CI runner may be a terminal or a pipe that never ends;</item>
/// <item>the program gets <paramref name="timeout"/>; past it the whole process tree is killed and a
/// <see cref="TimeoutException"/> names the command and shows its stderr so far;</item>
/// <item>once it has exited, its pipes get <see cref="PipeGrace"/> to reach end-of-file: a grandchild left running
/// in the background may hold them open forever; what arrived by then is what is returned.</item>
/// </list>
/// </summary>
public static class Child
{
    /// <summary>How long the output pipes may stay open after the program itself exited.</summary>
    public static readonly TimeSpan PipeGrace = TimeSpan.FromSeconds(10);

    /// <summary>Runs <paramref name="file"/> with <paramref name="args"/> (no shell) and returns what it did.</summary>
    public static RunOutcome Run(string file, IEnumerable<string> args, TimeSpan timeout, byte[]? stdin = null,
        string? cwd = null, IEnumerable<KeyValuePair<string, string>>? env = null)
    {
        var psi = StartInfo(file, args, cwd, env);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        // read as it comes, so that what arrived is there even when a background grandchild keeps a pipe open
        var stdout = new MemoryStream();
        var stderr = new StringBuilder();
        var outTask = Task.Run(() =>
        {
            var buf = new byte[65536];
            int n;
            while ((n = p.StandardOutput.BaseStream.Read(buf)) > 0) lock (stdout) stdout.Write(buf, 0, n);
        });
        var errTask = Task.Run(() =>
        {
            var buf = new char[8192];
            int n;
            while ((n = p.StandardError.Read(buf)) > 0) lock (stderr) stderr.Append(buf, 0, n);
        });
        string Err() { lock (stderr) return stderr.ToString(); }
        var inTask = Task.Run(() =>
        {
            try
            {
                if (stdin != null) p.StandardInput.BaseStream.Write(stdin);
                p.StandardInput.Close();
            }
            catch (IOException) { } // the program did not read all of its input
        });
        string what = Describe(file, args);
        if (!p.WaitForExit(timeout))
        {
            KillTree(p);
            errTask.Wait(PipeGrace);
            throw new TimeoutException($"{what} did not finish in {timeout.TotalSeconds:0} s; stderr so far:\n{Err()}");
        }
        Task.WaitAll([outTask, errTask, inTask], PipeGrace);
        byte[] o;
        lock (stdout) o = stdout.ToArray();
        return new RunOutcome(p.ExitCode, o, Err());
    }

    /// <summary>Runs a command that must succeed and returns its stdout; throws with its stderr otherwise.</summary>
    public static string Check(TimeSpan timeout, string file, params string[] args)
    {
        var r = Run(file, args, timeout);
        if (r.ExitCode != 0) throw new InvalidOperationException($"{Describe(file, args)}: exit {r.ExitCode}: {r.Stderr.Trim()}");
        return r.StdoutText;
    }

    /// <summary>
    /// The start info every child gets: no shell, every stream redirected (stdin too), the C locale and UTC so that
    /// a program's output does not depend on the machine's settings.
    /// </summary>
    public static ProcessStartInfo StartInfo(string file, IEnumerable<string> args, string? cwd = null,
        IEnumerable<KeyValuePair<string, string>>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = cwd ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["TZ"] = "UTC";
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return psi;
    }

    /// <summary>Kills the process and its descendants and waits (boundedly) for it to be gone.</summary>
    public static void KillTree(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        try { p.WaitForExit(TimeSpan.FromSeconds(10)); } catch (InvalidOperationException) { }
    }

    static string Describe(string file, IEnumerable<string> args) => string.Join(' ', args.Prepend(file));
}
