using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// Where compiled code leaves to the execution loop and which instructions it hands to the interpreter's handlers:
/// the figures that say what a change to the compiled tier can gain (`primary run --profile-tier`). Collected only
/// when a code cache has one (<see cref="CodeCache.Profile"/>): the execution loop then counts each return from a
/// compiled region by the address it returned at, and regions compiled from then on count their handler calls per
/// mnemonic. Without it the loop's only cost is a null test per region entry, and the compiled code is unchanged.
/// </summary>
public sealed class TierProfile
{
    /// <summary>Returns from compiled regions to the execution loop.</summary>
    public long Exits;
    /// <summary>Blocks the interpreter ran (whole or a prefix before a stop).</summary>
    public long InterpretedBlocks;
    /// <summary>Handler calls from compiled code, by <see cref="Mnemonic"/> (incremented by the emitted code).</summary>
    public readonly long[] HelperCalls = new long[Enum.GetValues<Mnemonic>().Length];
    readonly Dictionary<ulong, long> _exitsTo = new();

    /// <summary>A compiled region returned with rip at `to` (an exit, a yield, a stop, an indirect transfer).</summary>
    public void Exit(ulong to)
    {
        Exits++;
        _exitsTo[to] = _exitsTo.TryGetValue(to, out long n) ? n + 1 : 1;
    }

    /// <summary>The summary: exits by kind of target (as the code cache holds it now) and the most frequent ones,
    /// and the most frequent handler calls.</summary>
    public void Write(TextWriter w, CodeCache code, string prefix, int top = 12)
    {
        long toCompiled = 0, toInterpreted = 0, toUnknown = 0;
        foreach (var (rip, n) in _exitsTo)
        {
            Block? b = code.Find(rip);
            if (b == null) toUnknown += n;
            else if (b.Compiled != null) toCompiled += n;
            else toInterpreted += n;
        }
        w.WriteLine($"{prefix}: {Exits} returns from compiled regions, {InterpretedBlocks} interpreted blocks; returns to a compiled block "
            + $"{toCompiled}, to an interpreted one {toInterpreted}, to code not in the cache {toUnknown}");
        foreach (var (rip, n) in _exitsTo.OrderByDescending(e => e.Value).Take(top))
        {
            Block? b = code.Find(rip);
            string what = b == null ? "not in the cache" : b.Compiled == null ? $"interpreted ({b.Count} instructions, {b.Hits} runs)"
                : $"compiled, block {b.RegionIndex} of a region of {b.Members!.Length} headed at 0x{b.Members[0].Start:x}";
            string first = b is { Count: > 0 } ? b.Insts[0].ToString() : "";
            w.WriteLine($"{prefix}:   to 0x{rip:x} {n,12} ({100.0 * n / Math.Max(1, Exits):F1} %) {what}; {first}");
        }
        long calls = HelperCalls.Sum();
        w.WriteLine($"{prefix}: {calls} handler calls from compiled code");
        foreach (var (m, n) in HelperCalls.Select((n, m) => ((Mnemonic)m, n)).Where(e => e.n > 0).OrderByDescending(e => e.n).Take(top))
            w.WriteLine($"{prefix}:   {m,-12} {n,12} ({100.0 * n / Math.Max(1, calls):F1} %)");
    }
}
