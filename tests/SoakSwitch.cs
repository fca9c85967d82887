namespace ReVirt.Tests;

/// <summary>
/// The soak switch: REVIRT_SOAK=1 runs the long variants (more rounds, every fault kind for every workload, heavier
/// load) that the default suite leaves out to stay within its time budget. The default run keeps a representative
/// case of each behaviour; the soak adds repetitions of it. Read by the tests only, never by product code.
/// </summary>
public static class SoakSwitch
{
    public static bool On => Environment.GetEnvironmentVariable("REVIRT_SOAK") == "1";

    /// <summary>What a test that only runs under the switch prints when it is skipped.</summary>
    public const string Skipped = "skipped: set REVIRT_SOAK=1";
}
