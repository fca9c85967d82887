using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// Process trees: busybox sh and bash-static scripts (kept in tests/Process/scripts) run natively and in the VM with
/// the same applet directory first in PATH must give byte-identical stdout, stderr and exit status; a recording of
/// one replays faithfully; a fork bomb ends with EAGAIN at the machine's process limit and the VM keeps running.
/// </summary>
public class ProcessTreeTests : IClassFixture<ProcessTreeTests.Applets>
{
    /// <summary>A directory of busybox applet links, so that the scripts run the same programs natively and in
    /// the VM (the host's own /usr/bin programs are dynamically linked).</summary>
    public sealed class Applets : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("revirt-proc").FullName;
        public string Bin => Path.Combine(Dir, "bin");
        public Applets()
        {
            Directory.CreateDirectory(Bin);
            foreach (var a in new[] { "sh", "tr", "sort", "uniq", "cat", "ls", "sleep", "xargs", "printf", "find", "wc", "echo",
                                      "head", "tail", "sed", "awk", "grep", "cut", "true", "false", "expr", "seq", "mkdir", "rm",
                                      "chmod", "kill", "ps", "basename", "diff" })
                File.CreateSymbolicLink(Path.Combine(Bin, a), BusyboxTests.Busybox);
        }
        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Applets _applets;
    public ProcessTreeTests(Applets applets) => _applets = applets;

    Dictionary<string, string> Env => new() { ["PATH"] = _applets.Bin, ["HOME"] = _applets.Dir };

    static string Script(string name) => Path.Combine(GuestEnv.RepoRoot, "tests", "Process", "scripts", name);

    /// <summary>Debian's bash-static (.ci/run installs it).</summary>
    const string Bash = "/bin/bash-static";

    [Theory]
    [InlineData("busybox", "pipelines.sh")]
    [InlineData("busybox", "files.sh")]
    [InlineData("busybox", "errors.sh")]
    [InlineData("bash", "pipelines.sh")]
    [InlineData("bash", "files.sh")]
    [InlineData("bash", "errors.sh")]
    [InlineData("bash", "bash-features.sh")]
    [InlineData("busybox", "jobs.sh")]
    [InlineData("bash", "jobs.sh")]
    public void ShellScriptRunsAsNatively(string shell, string script)
    {
        string program = shell == "bash" ? Bash : BusyboxTests.Busybox;
        var args = shell == "bash" ? new[] { Script(script) } : new[] { "sh", Script(script) };
        var native = GuestEnv.Native(program, args, cwd: _applets.Dir, env: Env);
        var vm = GuestEnv.Vm(program, args, cwd: _applets.Dir, env: Env);
        Assert.Equal(native.StdoutText, vm.StdoutText);
        // bash names a child that crashed by its pid, padded to five columns ("line 8: 12130 Segmentation fault",
        // "line 8:  1351 Segmentation fault"): pids are the host's natively
        static string Pids(string err) => System.Text.RegularExpressions.Regex.Replace(err, @"(line \d+: ) *\d+ ", "$1PID ");
        Assert.Equal(Pids(native.Stderr), Pids(vm.Stderr));
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Theory]
    [InlineData("busybox", "pipelines.sh", 7)]
    [InlineData("bash", "bash-features.sh", 6)]
    public void RecordedScriptReplaysFaithfully(string shell, string script, int status)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-proc-{Guid.NewGuid():N}.rvlog");
        try
        {
            var args = shell == "bash" ? new[] { "record", "--log", log, "--", Bash, Script(script) }
                : new[] { "record", "--log", log, "--", BusyboxTests.Busybox, "sh", Script(script) };
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, args, cwd: _applets.Dir, env: Env);
            Assert.True(rec.ExitCode == status, rec.Stderr);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" }, cwd: _applets.Dir);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
            Assert.Equal(status, GuestEnv.RecordedExitStatus(log));
        }
        finally { File.Delete(log); }
    }

    [Fact]
    public void ForkBombEndsWithEagainAtTheLimitAndTheMachineKeepsRunning()
    {
        // natively this program would exhaust the host; in the VM fork fails at the process limit, the children
        // are let go and reaped, and the program reports success (exit 0) only if fork failed with EAGAIN
        var opts = new MachineOptions { Program = GuestEnv.Guest("forkbomb", "musl"), Diagnostics = TextWriter.Null };
        using var m = new ReVirt.Machine(opts);
        m.Kernel.MaxThreads = 64;
        m.Load();
        Assert.Equal(0, m.Run());
        Assert.Single(m.Kernel.Processes);
    }
}
