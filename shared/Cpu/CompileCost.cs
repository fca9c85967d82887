using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// When compiling a block pays: the default tier compiles a block once it has run as many times as its compiled
/// code needs to save back the runtime's JIT of it (taking a block that ran N times to run about N times more).
/// The JIT costs about the same per guest instruction whatever the instruction (140-190 us loaded, 2026-12-02), but
/// the saving per run differs: an integer form compiled inline runs as a few host instructions in place of a
/// handler call that decodes its operands, while an SSE form compiled is a call of the same operation the
/// interpreter's handler reaches (the XMM registers stay in the thread), so it saves only the dispatch — and its
/// IL (a call with constant register numbers, an inlined move) costs more to JIT per instruction. bench.musl's
/// 95-instruction SSE block of the matrix set-up cost 14-22 ms to JIT and ran ~1,660 times compiled at the flat
/// threshold, saving about 1 us a run (interpreted ~13 ns, compiled ~2 ns per SSE register form, loaded): it pays
/// back after some 15,000-20,000 runs, four times the flat threshold. So each SSE form counts
/// <see cref="SseWeight"/> times an other instruction, and a block's compile point is the threshold times its
/// average weight. Only when a block compiles depends on this, never what it computes (every tier gives the same
/// results), so a wrong weight costs speed alone.
/// </summary>
public static class CompileCost
{
    /// <summary>How many times an SSE form the compiled tier runs as a call (<see cref="Isa.XmmKindOf"/>) weighs
    /// against any other instruction: its JIT per run saved, relative to theirs.</summary>
    public const int SseWeight = 4;

    /// <summary>The whole runs after which a block of these instructions is compiled, for a cache whose flat
    /// threshold is `threshold` (0: never; 1: at the first run, nothing to weigh).</summary>
    public static int CompileAt(int threshold, Instruction[] insts)
    {
        if (threshold <= 1 || insts.Length == 0) return threshold;
        long weight = 0;
        // indexed, not through a Span<Instruction>: a span of another assembly's struct is a generic instantiation
        // the ReadyToRun image lacks, and its three methods would be JIT-compiled at every start
        for (int k = 0; k < insts.Length; k++)
            weight += Isa.XmmKindOf(insts[k].Code) != XmmKind.None ? SseWeight : 1;
        long at = (threshold * weight + insts.Length - 1) / insts.Length; // the threshold times the average weight, rounded up
        return (int)Math.Min(at, int.MaxValue);
    }
}
