namespace ReVirt.Replication;

/// <summary>
/// Durations (ms) gathered by any thread for <c>--stats</c>: at most <see cref="Limit"/> are kept (a long run keeps its
/// first million), so a replica that runs for days does not grow without bound for its statistics.
/// </summary>
public sealed class MsSamples
{
    public const int Limit = 1_000_000;
    readonly List<double> _ms = new();

    public void Add(double ms) { lock (_ms) if (_ms.Count < Limit) _ms.Add(ms); }

    public double[] ToArray() { lock (_ms) return _ms.ToArray(); }
}
