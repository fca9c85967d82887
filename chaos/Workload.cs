using System.Text;

namespace ReVirt.Chaos;

/// <summary>A guest the drill runs under protection, and how to tell that it finished correctly.</summary>
public interface IWorkload
{
    string Name { get; }
    /// <summary>The guest program (host path) and its arguments.</summary>
    string Program { get; }
    string[] Args { get; }
    /// <summary>Roughly how many stdout bytes a complete run prints (to place faults at a random point of progress).</summary>
    long ExpectedStdoutBytes { get; }
    string UnitName { get; }
    /// <summary>Null when the final output (as the world saw it) is a complete, correct run; else what is wrong.</summary>
    string? Validate(byte[] finalStdout, RoundObservation o);
    int Units(byte[] finalStdout, RoundObservation o);
}

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
    static string Trunc(string s) => s.Length > 60 ? s[..60] + "…" : s;
}
