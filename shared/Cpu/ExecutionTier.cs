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

/// <summary>The tiers' names on the command line (`--tier`), matched without regard to case. The programs take the
/// option as a string and parse it here: an option over the enum would instantiate the command-line library's
/// generic code over a value type, which is JIT-compiled on every start.</summary>
public static class ExecutionTiers
{
    public const string HelpName = "Default|Interpreter|Compiled";

    public static bool TryParse(string? name, out ExecutionTier tier)
    {
        tier = ExecutionTier.Default;
        if (string.Equals(name, nameof(ExecutionTier.Default), StringComparison.OrdinalIgnoreCase)) return true;
        tier = ExecutionTier.Interpreter;
        if (string.Equals(name, nameof(ExecutionTier.Interpreter), StringComparison.OrdinalIgnoreCase)) return true;
        tier = ExecutionTier.Compiled;
        return string.Equals(name, nameof(ExecutionTier.Compiled), StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The tier a machine runs when <paramref name="requested"/> is asked for: the requested one where the
    /// host can generate code at run time (<paramref name="dynamicCode"/>, <see cref="CompiledTier.Supported"/>), else
    /// the interpreter. A program compiled ahead of time (revirt-run) has no JIT for the compiled tier's IL; every tier
    /// gives the same results, so only the speed differs.</summary>
    public static ExecutionTier Effective(ExecutionTier requested, bool dynamicCode) => dynamicCode ? requested : ExecutionTier.Interpreter;

    /// <summary>The one line `--stats` prints when the machine runs another tier than the one asked for (see
    /// <see cref="Effective"/>); null when it runs the requested one.</summary>
    public static string? FallbackNote(ExecutionTier requested, bool dynamicCode)
        => Effective(requested, dynamicCode) == requested ? null
            : $"tier {requested} asked for, but this host cannot generate code at run time (compiled ahead of time): every block is interpreted (tier {ExecutionTier.Interpreter})";

    /// <summary>The tier a validated option value names.</summary>
    public static ExecutionTier Parse(string? name) => TryParse(name, out var t) ? t : throw new ArgumentException($"unknown tier '{name}' (expected {HelpName})", nameof(name));
}
