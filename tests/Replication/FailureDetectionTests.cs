using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The backup's silence bound (<c>--primary-silence-ms</c>) on a busy data link. A primary heartbeats only a link that
/// has been idle for its heartbeat interval; a guest that writes without pause keeps the link busy with batches from
/// its first record on, so no heartbeat is ever sent. Such a primary, frozen, must still be declared lost after the
/// silence bound (its batches were its liveness), not after the long time-out (<c>--timeout-ms</c>) that applies
/// before the session's first message. Armed by the first heartbeat only (before 2026-12-01), the bound never was
/// here and the backup waited out the time-out, on both transports.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class FailureDetectionTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    // a heartbeat interval of 375 ms (the bound / 8): the guest's records come far more often than that. The bound
    // is long enough for a loaded 2-core machine (a false loss before the freeze would still give the same reason)
    const int SilenceMs = 3000;
    const string TimeoutMs = "60000";

    [Theory]
    [InlineData("unix")]
    [InlineData("tcp")]
    public void AFrozenPrimaryWhoseGuestNeverIdlesIsLostAfterTheSilenceBound(string transport)
    {
        string arbiter = Replicas.TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", TimeoutMs, "--primary-silence-ms", SilenceMs.ToString());
        using var _ = b;
        // counter: a line per 2,000 iterations, each line a clock read and a write, without end
        using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", TimeoutMs, "--heartbeat-ms", "1000",
            "--data-link", transport, "--", GuestEnv.Guest("counter", "musl"), "100000000", "2000");
        try
        {
            Assert.Equal(transport, p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));
            // lines released through the output gate: batches and acks have been crossing for a while
            Assert.True(p.WaitForStdoutBytes(100_000, Long), "the primary's guest printed too little:\n" + p.Stderr);
            p.Signal(ReplicaProc.SIGSTOP);
            var frozenAt = System.Diagnostics.Stopwatch.StartNew();
            // the bound plus a loaded machine's margin, far below the time-out
            var lost = b.WaitForEvent(ReplicaEvent.PrimaryLost, TimeSpan.FromMilliseconds(SilenceMs * 5));
            output.WriteLine($"{transport}: lost {frozenAt.ElapsedMilliseconds} ms after the freeze: {lost.Str("reason")}; longest silence before {lost.Num("longestSilenceMs")} ms ({lost.Str("silences")})");
            Assert.Equal($"no batch or heartbeat for {SilenceMs} ms", lost.Str("reason"));
        }
        finally
        {
            p.Signal(ReplicaProc.SIGCONT);
            Replicas.DeleteArbiter(arbiter);
        }
    }
}
