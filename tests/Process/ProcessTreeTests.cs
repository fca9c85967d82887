using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// Process trees: busybox sh scripts (kept in tests/Process/scripts) run natively and in the VM with the same
/// applet directory first in PATH must give byte-identical stdout, stderr and exit status; a recording of one
/// replays faithfully; a fork bomb ends with EAGAIN at the machine's process limit and the VM keeps running.
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
                                      "chmod", "kill" })
                File.CreateSymbolicLink(Path.Combine(Bin, a), BusyboxTests.Busybox);
        }
        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Applets _applets;
    public ProcessTreeTests(Applets applets) => _applets = applets;

    Dictionary<string, string> Env => new() { ["PATH"] = _applets.Bin, ["HOME"] = _applets.Dir };

    static string Script(string name) => Path.Combine(GuestEnv.RepoRoot, "tests", "Process", "scripts", name);

    [Theory]
    [InlineData("pipelines.sh")]
    [InlineData("files.sh")]
    [InlineData("errors.sh")]
    public void ShellScriptRunsAsNatively(string script)
    {
        var args = new[] { "sh", Script(script) };
        var native = GuestEnv.Native(BusyboxTests.Busybox, args, cwd: _applets.Dir, env: Env);
        var vm = GuestEnv.Vm(BusyboxTests.Busybox, args, cwd: _applets.Dir, env: Env);
        Assert.Equal(native.StdoutText, vm.StdoutText);
        Assert.Equal(native.Stderr, vm.Stderr);
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Fact]
    public void RecordedScriptReplaysFaithfully()
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-proc-{Guid.NewGuid():N}.rvlog");
        try
        {
            var args = new[] { "record", "--log", log, "--", BusyboxTests.Busybox, "sh", Script("pipelines.sh") };
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, args, cwd: _applets.Dir, env: Env);
            Assert.Equal(7, rec.ExitCode);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" }, cwd: _applets.Dir);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
            Assert.Contains("guest exit status 7", rp.Stderr);
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
