namespace ReVirt.Cpu;

/// <summary>
/// Which executor runs guest blocks. The tier may differ from run to run (and, in the default tier, depends on how
/// often a block ran), but the results may not: every tier leaves the same registers, flags, memory, counts and
/// faults, so a recording made in one tier replays in another.
/// </summary>
public enum ExecutionTier
{
    /// <summary>Interpret every block; compile those that ran <see cref="CodeCache.DefaultCompileThreshold"/> times.</summary>
    Default,
    /// <summary>Never compile (the reference the compiled tier is compared with).</summary>
    Interpreter,
    /// <summary>Compile every block the first time it runs whole (for tests: every block takes the compiled path).</summary>
    Compiled,
}
