using System.Diagnostics;
using System.Text;

namespace ReVirt.Chaos;

/// <summary>A guest the drill runs under protection, and how to tell that it finished correctly.</summary>
public interface IWorkload
{
    string Name { get; }
    /// <summary>The guest program (host path).</summary>
    string Program { get; }
    /// <summary>What <see cref="Units"/> counts ("lines", "requests").</summary>
    string UnitName { get; }
    /// <summary>A fresh driver for one round: the guest's arguments and, for a service, the client load against it.</summary>
    IWorkloadRound NewRound(int seed);
    /// <summary>Null when the final output (as the world saw it) is a complete, correct run; else what is wrong.</summary>
    string? Validate(byte[] finalStdout, RoundObservation o);
    int Units(byte[] finalStdout, RoundObservation o);
    /// <summary>For a key-value service: the keys whose SET the guest's stdout logs (null for other workloads).</summary>
    HashSet<string>? LoggedKeys(ReadOnlySpan<byte> stdout) => null;
}

/// <summary>One round of a workload: its guest arguments, its progress (where the fault is placed) and its client.</summary>
public interface IWorkloadRound : IDisposable
{
    string[] Args { get; }
    /// <summary>Progress units of a complete run (the fault lands at a random fraction of it).</summary>
    long Total { get; }
    long Progress(ReplicaProc primary);
    /// <summary>Called once the primary is protected: waits until the guest serves and starts the load; an error message when it cannot.</summary>
    string? Begin(ReplicaProc primary, Stopwatch clock, TimeSpan within);
    /// <summary>Called after the fault: lets the load finish (bounded), reads back what it needs and ends the guest.</summary>
    void Finish(TimeSpan within, Action<string> status);
    IReadOnlyList<ClientOp> Ops { get; }
    /// <summary>Key → value read back after the load (null value: NOTFOUND); null when the workload has no client.</summary>
    Dictionary<string, string?>? ReadBack { get; }
    /// <summary>What went wrong on the client side (no reply in time, an unexpected answer, ...).</summary>
    IReadOnlyList<string> Errors { get; }
    /// <summary>The load's client connections (null: the workload has no client).</summary>
    ConnectionStats? Connections => null;
}

/// <summary>
/// A service workload's client connections over a round: how many clients (each meant to keep one connection), how
/// many connects they made and how many connections broke (reset, end of stream or error, a reply that did not come
/// within the reply time-out); whether the guest's network was its own (`--net virtual`, where connections are part
/// of the replicated machine); how many replies were of another kind than their request's (a SET answered other
/// than OK, a GET answered OK): on a line protocol a reply lost or sent twice shifts every later one, so this counts them.
/// </summary>
public sealed record ConnectionStats(bool VirtualNet, int Clients, int Connects, int Breaks, int Mismatched = 0);

/// <summary>
/// The counter guest: LINES numbered lines with a running checksum that depends on all previous work and on the
/// time it reads, so a replica that resumes from the wrong state, skips or repeats a line shows it. Each released
/// line is a result the outside world has been given (an acknowledged write); the final stream must be exactly
/// lines 0..LINES-1.
/// </summary>
public sealed class CounterWorkload(string program, int lines, int work) : IWorkload
{
    public string Name => "counter";
    public string Program => program;
    public string[] Args => [lines.ToString(), work.ToString()];
    public long ExpectedStdoutBytes => lines * (long)(21 + Digits(lines));
    public string UnitName => "lines";
    static int Digits(int n) => n.ToString().Length;

    public IWorkloadRound NewRound(int seed) => new Round(this);

    sealed class Round(CounterWorkload w) : IWorkloadRound
    {
        public string[] Args => w.Args;
        public long Total => w.ExpectedStdoutBytes;
        public long Progress(ReplicaProc primary) => primary.StdoutLength;
        public string? Begin(ReplicaProc primary, Stopwatch clock, TimeSpan within) => null;
        public void Finish(TimeSpan within, Action<string> status) { }
        public IReadOnlyList<ClientOp> Ops => [];
        public Dictionary<string, string?>? ReadBack => null;
        public IReadOnlyList<string> Errors => [];
        public void Dispose() { }
    }

    public string? Validate(byte[] finalStdout, RoundObservation o)
    {
        var text = Encoding.ASCII.GetString(finalStdout);
        var ls = text.Split('\n');
        if (ls[^1] != "") return $"the output does not end with a complete line (last: '{Trunc(ls[^1])}')";
        if (ls.Length - 1 != lines) return $"{ls.Length - 1} lines instead of {lines}" + FirstBad(ls);
        var bad = FirstBad(ls);
        return bad == "" ? null : bad.TrimStart(';', ' ');
    }

    string FirstBad(string[] ls)
    {
        for (int i = 0; i < Math.Min(lines, ls.Length - 1); i++)
        {
            var l = ls[i];
            if (!l.StartsWith($"line {i} acc ", StringComparison.Ordinal) || l.Length != $"line {i} acc ".Length + 16)
                return $"; line {i} is wrong: '{Trunc(l)}'";
        }
        return "";
    }

    public int Units(byte[] finalStdout, RoundObservation o) => finalStdout.Count(b => b == (byte)'\n');
    internal static string Trunc(string s) => s.Length > 60 ? s[..60] + "…" : s;
}
