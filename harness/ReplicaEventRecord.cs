using System.Globalization;
using System.Text.Json;

namespace ReVirt.Harness;

/// <summary>
/// One event a replica reported on its <c>--events</c> stream (see ReVirt.Replication.ReplicaEvents), stamped
/// with the runner's clock (<see cref="AtMs"/>, converted from the event's wall-clock time).
/// </summary>
public sealed record ReplicaEventRecord(double AtMs, string Name, JsonElement Data)
{
    public string? Str(string key) => Data.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    public double? Num(string key) => Data.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    public long? Long(string key) => Data.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? (long)v.GetDouble() : null;
    public bool? Bool(string key) => Data.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;
    public ulong? ULong(string key) => Data.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetUInt64(out var u) ? u : null;

    /// <summary>Parses one line of an event stream; null when it is not an event object.</summary>
    public static ReplicaEventRecord? Parse(string line, double originUnixMs)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("event", out var name) || name.ValueKind != JsonValueKind.String) return null;
            double t = root.TryGetProperty("unixMs", out var u) && u.ValueKind == JsonValueKind.Number ? u.GetDouble() : originUnixMs;
            return new ReplicaEventRecord(t - originUnixMs, name.GetString()!, root.Clone());
        }
        catch (JsonException) { return null; }
    }

    /// <summary>An event built by hand (synthetic observations in checker tests).</summary>
    public static ReplicaEventRecord Of(double atMs, string name, params (string Key, object? Value)[] fields)
    {
        var d = new Dictionary<string, object?> { ["event"] = name };
        foreach (var (k, v) in fields) d[k] = v;
        return new ReplicaEventRecord(atMs, name, JsonSerializer.SerializeToElement(d));
    }

    public override string ToString() => $"{AtMs.ToString("F0", CultureInfo.InvariantCulture)} ms {Data.GetRawText()}";
}
