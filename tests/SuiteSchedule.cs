using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

// How xunit schedules the suite's collections (each test class is its own collection, but for the real-process one).
// xunit starts at most MaxParallelThreads collections at once, in the order the orderer gives, and a started
// collection keeps its slot until its last test ends. The real-process collection (tests/Chaos/DrillTests.cs:
// RealProcesses) runs its ~120 tests one at a time, about a third of the suite's test time, mostly waiting on its
// replicas: started late (the default order put it after most classes), it ran alone for the last 19 of 48.5 minutes
// of a loaded run (2026-12-02, load 46-103). So it starts first, in a slot of its own, and the other collections
// share one slot per core of the 2-core CI machine beside it.
[assembly: CollectionBehavior(MaxParallelThreads = ReVirt.Tests.SuiteSchedule.Slots)]
[assembly: TestCollectionOrderer("ReVirt.Tests.SuiteSchedule", "ReVirt.Tests")]

namespace ReVirt.Tests;

/// <summary>
/// Orders the suite's collections: the real-process collection (the suite's longest serial chain) first, the rest in
/// xunit's default order.
/// </summary>
public sealed class SuiteSchedule : ITestCollectionOrderer
{
    /// <summary>Collections run at once: the real-process collection's slot plus one per core of the CI machine (2).</summary>
    public const int Slots = 1 + 2;

    public IEnumerable<ITestCollection> OrderTestCollections(IEnumerable<ITestCollection> testCollections)
    {
        var ordered = new DefaultTestCollectionOrderer().OrderTestCollections(testCollections).ToList();
        return ordered.Where(IsRealProcesses).Concat(ordered.Where(c => !IsRealProcesses(c)));
    }

    static bool IsRealProcesses(ITestCollection c) => c.DisplayName == Chaos.RealProcesses.Name;
}
