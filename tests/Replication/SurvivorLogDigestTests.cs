using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// A survivor with standbys records on after its takeover, continuing the log it received: the continued log's End
/// record must carry the digest of every byte before it. The go-live takes that digest from the running digest the
/// link thread kept of the log copy as it wrote it (the copy is not read again on the go-live path); the oracle is
/// the log reader's own check of the finished file, which digests it from its first byte.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class SurvivorLogDigestTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);

    [Fact]
    public void ASurvivorThatRecordsOnEndsItsLogWithTheDigestOfTheWholeFileWithoutReadingTheCopyAgain()
    {
        string arbiter = Replicas.TempFile(".lock"), stop = Replicas.TempFile(".stop");
        string? log = null;
        try
        {
            // no standby answers at port 9 of loopback: the survivor records on and keeps asking, off the replay thread.
            // The primary is ended by SIGKILL (noticed at once): the silence bound only has to outlast a loaded machine
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "2000", "--primary-silence-ms", "15000",
                "--standby", "http://127.0.0.1:9", "--standby-retry-ms", "200");
            using var _b = b;
            using (var p = Replicas.Primary(["--backup", url, "--arbiter", arbiter, "--timeout-ms", "2000",
                "--", GuestEnv.Guest("ticker", "musl"), stop, "20", "20000"]))
            {
                p.WaitForEvent(ReplicaEvent.Protected, Long);
                Assert.True(p.WaitFor(() => Replicas.Lines(p.Stdout) >= 20, Long), "the guest runs: " + p.State() + "\nbackup: " + b.State());
                p.KillHard();
            }
            var continued = b.WaitForEvent(ReplicaEvent.RecordingContinued, Long);
            output.WriteLine($"recording continued: store {continued.Num("storeMs")} ms, writer {continued.Num("writerMs")} ms, boundary {continued.Num("boundaryMs")} ms, StartLive {continued.Num("startLiveMs")} ms, prefix {continued.Long("prefixBytes")} bytes, carried {continued.Bool("digestCarried")}");
            // the survivor's guest goes on after the takeover, then ends: the continued log gets its End record
            Assert.True(b.WaitFor(() => Replicas.Lines(b.Stdout) >= 5, Long), "the survivor's guest runs: " + b.State());
            File.WriteAllBytes(stop, []);
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.True(continued.Bool("digestCarried"), "the go-live read the log copy again instead of continuing its running digest");
            log = b.WaitForEvent(ReplicaEvent.Following, Long).Str("log")!;
            using var r = ReVirt.Log.LogReader.Open(log);
            r.Verify(); // throws on an End record whose digest is not that of every byte before it
            Assert.True(r.Complete, "the continued log has no End record");
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
            File.Delete(stop);
            if (log != null) File.Delete(log);
        }
    }
}
