using System.Diagnostics.Metrics;

namespace ReVirt.Replication;

/// <summary>
/// The replicas' metrics (System.Diagnostics.Metrics, meter "ReVirt.Replication"; read them with
/// <c>dotnet-counters monitor -n primary --counters ReVirt.Replication</c>): the backup's lag, the ack latency,
/// bytes held by the output gate, log bytes shipped (a rate), failovers, re-protections; `--metrics-listen` serves
/// them to Prometheus (<see cref="MetricsEndpoint"/>).
/// </summary>
public static class ReplicationMetrics
{
    public const string MeterName = "ReVirt.Replication";
    public static readonly Meter Meter = new(MeterName, "1.0");

    /// <summary>For each acknowledgement, the age of the oldest record it covered (primary).</summary>
    public static readonly Histogram<double> AckLatency = Meter.CreateHistogram<double>("revirt.replication.ack_latency", "ms", "age of the oldest log record an acknowledgement covered");
    /// <summary>Log bytes sent to the backup (primary); its rate is the log bandwidth.</summary>
    public static readonly Counter<long> LogBytes = Meter.CreateCounter<long>("revirt.replication.log_bytes", "By", "log bytes sent to the backup");
    /// <summary>Failovers: a backup that took over, or a primary that went on unprotected.</summary>
    public static readonly Counter<long> Failovers = Meter.CreateCounter<long>("revirt.replication.failovers", null, "takeovers and unprotected continuations");
    /// <summary>Re-protections: a live replica protected again by a standby that joined it.</summary>
    public static readonly Counter<long> Reprotections = Meter.CreateCounter<long>("revirt.replication.reprotections", null, "standbys that joined this live replica and protect it again");

    static Func<long>? _lag, _held, _acknowledged;
    static int _registered;

    /// <summary>Publishes this process's lag (records produced and not yet acknowledged), held output bytes and the
    /// sequence of the newest record its backup acknowledged (what output may leave up to: an operator or a drill
    /// compares it with a replica's log).</summary>
    public static void Observe(Func<long> lagRecords, Func<long> heldBytes, Func<long> acknowledgedRecord)
    {
        _lag = lagRecords;
        _held = heldBytes;
        _acknowledged = acknowledgedRecord;
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        Meter.CreateObservableGauge("revirt.replication.lag", () => _lag?.Invoke() ?? 0, "{record}", "log records produced and not yet acknowledged by the backup");
        Meter.CreateObservableGauge("revirt.replication.acknowledged", () => _acknowledged?.Invoke() ?? 0, "{record}", "sequence of the newest log record the current backup acknowledged");
        Meter.CreateObservableGauge("revirt.replication.held_bytes", () => _held?.Invoke() ?? 0, "By", "output bytes (stdout, stderr, sockets, shared-storage file writes) held until the backup acknowledges their log");
    }
}
