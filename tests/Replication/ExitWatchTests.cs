using ReVirt.Linux;
using ReVirt.Replication;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The exit watch (<see cref="ExitWatch"/>): a process beside the primary ends the data link the moment the primary's
/// process starts to exit, so the backup does not wait for the kernel to tear the dead process down and close its
/// sockets. The tests make that teardown "never finish" for the link: the test itself holds duplicates of every socket
/// of the primary (pidfd_getfd), so the kernel cannot close them when the primary dies — as on a loaded machine where
/// the close comes hundreds of milliseconds late. Then only the exit watch can end the link; without it the backup
/// notices by the primary's silence alone. The backup's `primary-lost` reason tells which of the two it was.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class ExitWatchTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    const string SilenceBoundMs = "4000";
    // a guest that runs ~60 s, sleeping between lines (the test kills it within seconds)
    static readonly string[] Guest = ["/bin/busybox", "sh", "-c", "i=0; while [ $i -lt 600 ]; do echo line $i; i=$((i+1)); sleep 0.1; done"];

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AKilledPrimaryWhoseSocketsOutliveItIsNoticedAtOnceOnlyWithItsExitWatch(bool watch)
    {
        Assert.True(File.Exists(Guest[0]), $"{Guest[0]} is needed (Debian's busybox-static; .ci/run installs it)");
        string arbiter = Replicas.TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--primary-silence-ms", SilenceBoundMs);
        using var _ = b;
        string[] args = ["--backup", url, "--arbiter", arbiter, .. watch ? Array.Empty<string>() : ["--no-exit-watch"], "--", .. Guest];
        using var p = Replicas.Primary(args);
        List<long> held = [];
        try
        {
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            if (watch) p.WaitForEvent(ReplicaEvent.ExitWatched, Long);
            Assert.Null(p.Event(ReplicaEvent.ExitUnwatched));
            // the short silence bound is armed by the session's first message: wait for some output to cross
            Assert.True(p.WaitForStdoutBytes(40, Long), "the primary's guest printed nothing:\n" + p.Stderr);
            held = HoldSockets(p.Pid);
            Assert.NotEmpty(held);
            p.KillHard();
            var lost = b.WaitForEvent(ReplicaEvent.PrimaryLost, Long);
            string reason = lost.Str("reason")!;
            output.WriteLine($"exit watch {watch}: held {held.Count} sockets of the primary; primary-lost: {reason}\n{b.Stderr}");
            if (watch)
                Assert.False(reason.StartsWith("no batch or heartbeat", StringComparison.Ordinal),
                    $"the exit watch did not end the link; the backup waited for the silence bound: {reason}");
            else
                Assert.StartsWith($"no batch or heartbeat for {SilenceBoundMs} ms", reason);
            // the takeover goes on as after any loss: the backup wins the arbiter and continues the guest
            b.WaitForEvent(ReplicaEvent.TookOver, Long);
        }
        finally
        {
            foreach (long fd in held) HostSys.Call(Nr.close, fd);
            Replicas.DeleteArbiter(arbiter);
        }
    }

    /// <summary>Duplicates of every socket descriptor of process <paramref name="pid"/>, held by this process.</summary>
    static List<long> HoldSockets(int pid)
    {
        long pidfd = HostSys.Call(Nr.pidfd_open, pid, 0);
        Assert.True(pidfd >= 0, $"pidfd_open({pid}): errno {-pidfd}");
        var held = new List<long>();
        try
        {
            foreach (var entry in Directory.GetFiles($"/proc/{pid}/fd"))
            {
                string? target;
                try { target = new FileInfo(entry).LinkTarget; } catch (IOException) { continue; }
                if (target == null || !target.StartsWith("socket:", StringComparison.Ordinal)) continue;
                long fd = HostSys.Call(Nr.pidfd_getfd, pidfd, int.Parse(Path.GetFileName(entry)), 0);
                Assert.True(fd >= 0, $"pidfd_getfd of the primary's descriptor {Path.GetFileName(entry)}: errno {-fd} (needs Linux 5.6 and ptrace permission over it)");
                held.Add(fd);
            }
        }
        finally { HostSys.Call(Nr.close, pidfd); }
        return held;
    }
}
