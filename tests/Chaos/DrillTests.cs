using ReVirt.Chaos;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// What every drill test class shares: its drills start real replica processes and time their failure detection,
/// so they run one at a time (<see cref="RealProcesses"/>), and what a drill found goes to the test's output.
/// </summary>
[Collection(RealProcesses.Name)]
public abstract class DrillTests(ITestOutputHelper output)
{
    protected ITestOutputHelper Output { get; } = output;

    /// <summary>Each invariant's verdict on a line of the test's output, after <paramref name="prefix"/>.</summary>
    protected void Show(string prefix, IEnumerable<InvariantResult> invariants)
    {
        foreach (var i in invariants) Output.WriteLine($"{prefix}{(i.Ok ? "ok  " : "FAIL")} {i.Name}: {i.Detail}");
    }
}

/// <summary>
/// Tests that start real replica processes and time their failure detection: one at a time, since two pairs at once
/// would each be the other's load. The collection still runs beside the other collections (xunit runs the tests of one
/// collection in order, and collections side by side): its tests mostly wait on their replicas, and each gives its
/// replicas silence bounds that hold on a loaded machine (the suite passes at load 50-90), so running them after
/// everything else, alone, only added their waits to the suite's time.
/// </summary>
[CollectionDefinition(Name)]
public sealed class RealProcesses
{
    public const string Name = "real replica processes";
}
