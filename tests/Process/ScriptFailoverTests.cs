using ReVirt.Tests.Programs;
using ReVirt.Tests.Replication;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// A process tree under `primary protect`: a busybox sh loop whose every line forks a command substitution with a
/// pipeline (fork, exec, pipe, wait) and sleeps (a host wait ended by a logged wake-up). The primary is SIGKILLed
/// in the middle of the script; the backup takes over and the script's output continues with no gap and no line
/// twice (the oracle: the numbered lines 0..N-1, and the replicas' own takeover report).
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class ScriptFailoverTests(ITestOutputHelper output)
{
    const int Lines = 40;

    static readonly string Script =
        $"i=0; while [ $i -lt {Lines} ]; do echo \"line $i acc $(echo $i | /bin/busybox tr 0-9 a-j)\"; sleep 0.02; i=$((i + 1)); done";

    [Fact]
    public void KilledPrimaryMidScriptTheBackupContinuesTheOutput()
    {
        string arbiter = Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}.lock");
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--", "/bin/busybox", "sh", "-c", Script);
            p.WaitForEvent(ReplicaEvent.Protected, TimeSpan.FromMinutes(2));
            // about a third of the lines ("line N acc X\n" is 14-16 bytes): the script is mid-way, in some fork or sleep
            p.WaitForStdoutBytes(Lines / 3 * 14, TimeSpan.FromMinutes(2));
            p.KillHard();
            int? code = b.WaitForExit(TimeSpan.FromMinutes(3));
            output.WriteLine($"primary printed {p.Stdout.Length} bytes; backup:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            Assert.Null(b.Event(ReplicaEvent.Diverged));
            ReplicationTests.AssertContinuous(p.Stdout, b.Stdout, b, Lines);
        }
        finally { File.Delete(arbiter); }
    }

    /// <summary>
    /// A takeover in the middle of a sleep continues it to its deadline: the log carries the deadline of every timed
    /// wait, so the backup that goes live waits what is left (before, it slept the whole duration again). The guest
    /// sleeps 12 s; the primary is killed 4 s into it; the backup must print the line after the sleep well before
    /// 12 s after the kill (the oracle: the sleep's length and the kill's time, measured here).
    /// </summary>
    [Fact]
    public void TakeoverDuringASleepWaitsOnlyWhatIsLeft()
    {
        string arbiter = Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}.lock");
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--", "/bin/busybox", "sh", "-c", "echo before; sleep 12; echo after");
            p.WaitForEvent(ReplicaEvent.Protected, TimeSpan.FromMinutes(2));
            Assert.True(p.WaitForStdoutBytes("before\n".Length, TimeSpan.FromMinutes(2)), "the primary never printed its first line");
            Thread.Sleep(TimeSpan.FromSeconds(4));
            var sinceKill = System.Diagnostics.Stopwatch.StartNew();
            p.KillHard();
            Assert.True(b.WaitFor(() => b.StdoutText.Contains("after"), TimeSpan.FromMinutes(2)), $"the backup never printed the line after the sleep:\n{b.Stderr}");
            var waited = sinceKill.Elapsed;
            int? code = b.WaitForExit(TimeSpan.FromMinutes(1));
            output.WriteLine($"the line after the sleep came {waited.TotalSeconds:F1} s after the kill; backup:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            // about 8 s remain; a restarted sleep would take 12 s more
            Assert.True(waited < TimeSpan.FromSeconds(10.5), $"the backup slept {waited.TotalSeconds:F1} s after the kill: the sleep started over");
            Assert.True(waited > TimeSpan.FromSeconds(6), $"the backup ended the sleep {waited.TotalSeconds:F1} s after the kill, before its deadline");
        }
        finally { File.Delete(arbiter); }
    }
}
