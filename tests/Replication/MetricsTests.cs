using ReVirt.Tests.Chaos;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;
using static ReVirt.Tests.Replication.MetricsScrape;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The replicas' metrics (meter ReVirt.Replication, read in each replica by <see cref="MetricsEndpoint"/>'s
/// MeterListener) against what a real protect run did: scraped from `--metrics-listen` while the pair runs and
/// reported in the final `metrics` event as each replica ends.
/// </summary>
[Collection(RealProcesses.Name)]
public class MetricsTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromSeconds(90);
    const string Timeout = "1500";

    /// <summary>
    /// A protected counter guest: while the pair runs, the primary's endpoint serves the Prometheus text format
    /// (log bytes shipped above zero, acks counted in the latency
    /// histogram, the lag and held-bytes gauges); another path is a 404. Then the backup is SIGKILLed: the primary
    /// goes on unprotected, and its final values count exactly one failover, no re-protection, no held output
    /// (everything drained once unprotected), and log bytes at least the records the backup's copy held when it died
    /// (the copy's bytes after its header, which came with the handshake).
    /// Fails with the counter calls removed (log bytes 0, no failover counted) and on the old code (no
    /// --metrics-listen). About 5-8 s.
    /// </summary>
    [Fact]
    public void ThePrimarysMetricsAgreeWithItsRunAndCountTheFailoverAfterTheBackupIsKilled()
    {
        string arbiter = Replicas.TempFile(".lock"), copy = Replicas.TempFile(".rvlog");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", Timeout, "--log", copy);
        try
        {
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", Timeout, "--metrics-listen", "http://127.0.0.1:0",
                "--", GuestEnv.Guest("counter", "musl"), "1000", "100000");
            string metricsUrl = p.WaitForEvent(ReplicaEvent.MetricsListening, Long).Str("url")!;
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitForStdoutBytes(2000, Long), "the guest released too little:\n" + p.Stderr);

            var (status, type, body) = Get(metricsUrl);
            output.WriteLine(body);
            Assert.Equal(200, status);
            Assert.StartsWith("text/plain; version=0.0.4", type);
            var scraped = Samples(body);
            Assert.Contains("# TYPE revirt_replication_log_bytes_total counter", body);
            Assert.Contains("# TYPE revirt_replication_ack_latency_milliseconds histogram", body);
            Assert.Contains("# TYPE revirt_replication_held_bytes gauge", body);
            Assert.True(scraped["revirt_replication_log_bytes_total"] > 0);
            Assert.True(scraped["revirt_replication_ack_latency_milliseconds_count"] > 0);
            Assert.Equal(scraped["revirt_replication_ack_latency_milliseconds_count"], scraped["revirt_replication_ack_latency_milliseconds_bucket{le=\"+Inf\"}"]);
            Assert.True(scraped.ContainsKey("revirt_replication_lag"));
            Assert.True(scraped["revirt_replication_acknowledged"] > 0, "no acknowledged record, though the guest's output was released");
            Assert.Equal(0, scraped["revirt_replication_failovers_total"]);
            Assert.Equal(404, Get(metricsUrl.Replace("/metrics", "/other", StringComparison.Ordinal)).Status);

            b.KillHard();
            // what the backup's copy holds of the log (the header came with the handshake, not as shipped log bytes)
            long copied = new FileInfo(copy).Length;
            using (var reader = ReVirt.Log.LogReader.Open(copy)) copied -= reader.HeaderLength;
            output.WriteLine($"the backup's copy holds {copied} bytes of log records after its header");
            Assert.Equal(0, p.WaitForExit(Long));
            var final = p.WaitForEvent(ReplicaEvent.Metrics, TimeSpan.FromSeconds(10));
            output.WriteLine(final.ToString());
            Assert.NotNull(p.Event(ReplicaEvent.Unprotected));
            Assert.Equal(1, final.Long("failovers"));
            Assert.Equal(0, final.Long("reprotections"));
            Assert.Equal(0, final.Long("heldBytes"));
            Assert.True(final.Long("logBytes") >= copied, $"{final.Long("logBytes")} log bytes shipped, but the backup's copy holds {copied}");
            Assert.True(final.Long("logBytes") >= scraped["revirt_replication_log_bytes_total"]);
            Assert.True(final.Long("ackLatencyCount") >= scraped["revirt_replication_ack_latency_milliseconds_count"]);
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
            File.Delete(copy);
        }
    }

    /// <summary>
    /// The backup's metrics: it counts its takeover when the primary is SIGKILLed (scraped from its endpoint while it
    /// runs the guest live, and in its final values). Fails with the counter call removed. About 4-6 s.
    /// </summary>
    [Fact]
    public void TheBackupCountsItsTakeover()
    {
        string arbiter = Replicas.TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", Timeout, "--metrics-listen", "http://127.0.0.1:0");
        try
        {
            using var _ = b;
            string metricsUrl = b.WaitForEvent(ReplicaEvent.MetricsListening, Long).Str("url")!;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", Timeout, "--", GuestEnv.Guest("counter", "musl"), "2500", "200000");
            p.WaitForEvent(ReplicaEvent.Protected, Long);
            Assert.True(p.WaitForStdoutBytes(2000, Long), "the guest released too little:\n" + p.Stderr);
            Assert.Equal(0, Samples(Get(metricsUrl).Body)["revirt_replication_failovers_total"]);
            p.KillHard();
            b.WaitForEvent(ReplicaEvent.TookOver, Long);
            var live = Get(metricsUrl); // the guest still runs on the backup
            Assert.Equal(1, Samples(live.Body)["revirt_replication_failovers_total"]);
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.Equal(1, b.WaitForEvent(ReplicaEvent.Metrics, TimeSpan.FromSeconds(10)).Long("failovers"));
        }
        finally { Replicas.DeleteArbiter(arbiter); }
    }

    /// <summary>A bad address is refused with the reason before anything starts (exit 2).</summary>
    [Fact]
    public void ABadMetricsAddressIsRefused()
    {
        Assert.Throws<ArgumentException>(() => MetricsEndpoint.ParseUrl("http://example.org:9464/"));
        Assert.Throws<ArgumentException>(() => MetricsEndpoint.ParseUrl("ftp://127.0.0.1:9464/"));
        Assert.Equal(("0.0.0.0", 9464, "/metrics"), Parsed("http://*:9464"));
        Assert.Equal(("127.0.0.1", 9100, "/m"), Parsed("http://localhost:9100/m"));
        static (string, int, string) Parsed(string u) { var (a, port, path) = MetricsEndpoint.ParseUrl(u); return (a.ToString(), port, path); }
    }
}
