using ReVirt.Tests.Net;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Failover of a protected kvserver whose clients' connections are part of the machine (`--net virtual`): the primary
/// and the backup each have a TAP device on one bridge in a network namespace the test makes, where 64 Linux clients
/// hold one connection each to the guest's virtual IP. SIGKILL of the primary mid-load: the backup replays to the end
/// of the log, wins the arbiter, brings the interface up on its own TAP device (same MAC and IP, gratuitous ARP) and
/// carries on with the replayed TCP state. Every connection survives with no reset, every acknowledged SET reads
/// back over the same connection, and the stall (the longest silence between two acknowledgements of all clients)
/// is measured.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class VirtualNetFailoverTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(4);
    const string GuestIp = "10.213.0.2";
    const int Port = 7000, Connections = 64, Requests = 60;

    [Fact]
    public void KillingThePrimaryKeepsEveryClientConnection()
    {
        using var ns = TapNamespace.Bridged("rvp0", "rvb0");
        string arbiter = Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}.lock");
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000", "--tap", "rvb0", "--netns", ns.Name);
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter,
                "--net", "virtual", "--ip", GuestIp + "/24", "--tap", "rvp0", "--netns", ns.Name,
                "--", GuestEnv.Guest("kvserver", "musl"), Port.ToString(), GuestIp);
            // the guest's own start-up line (released through the output gate) says it listens
            Assert.True(p.WaitFor(() => p.StderrLines.Any(l => l.Text.Contains($"listening on {GuestIp}:{Port}")), Long), p.Stderr);

            using var clients = KvClients.Start(ns, GuestIp, Port, Connections, Requests);
            var lines = new List<string>();
            // the fault lands mid-load: after a third of the SETs were acknowledged (progress, not time)
            Assert.True(KvClients.WaitForProgress(clients, Connections * Requests / 3, lines), "the clients ended before the fault: " + string.Join("\n", lines));
            p.KillHard();
            var report = KvClients.Finish(clients, lines, Long);
            int? code = b.WaitForExit(Long);
            var took = b.Event(ReplicaEvent.TookOver);
            output.WriteLine($"acknowledged {report.Acked}, resets {report.Resets}, stall {report.MaxGapMs:F0} ms; took over after a drain of {took?.Long("drainMs")} ms");
            output.WriteLine(string.Join("\n", b.Events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail"))));

            Assert.True(report.Errors.Length == 0, string.Join("\n", report.Errors) + "\nbackup:\n" + b.Stderr);
            Assert.Equal(0, report.Resets);
            Assert.Equal(Connections * Requests, report.Acked);
            Assert.True(report.Bye);
            Assert.NotNull(took);
            Assert.Null(b.Event(ReplicaEvent.Diverged));
            Assert.Equal(0, code);
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && e.Str("detail")!.StartsWith("virtual interface"));
            // a failover is seconds at worst on a loaded machine; its figure goes to docs/PERFORMANCE-replication.md
            Assert.True(report.MaxGapMs < 30_000, $"stall {report.MaxGapMs:F0} ms");
        }
        finally { File.Delete(arbiter); }
    }
}
