using ReVirt.Tests.Loader;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// `primary record` JIT-compiles nothing that `primary run` of the same guest does not: every method the runtime
/// compiles because no ReadyToRun image holds it (a generic instantiation over a value type, a framework helper a
/// recording alone calls) costs every recording a Tier-0 compilation, which is the record/run ratio's budget. Oracle:
/// the runtime's own lists of what it compiled (DOTNET_JitStdOutFile) for `run` and `record` of busybox md5sum of
/// busybox itself (2 MB read by reference in runs of hundreds of reads, one output line), compared by method; a
/// recompilation at a higher tier (Tier1, OSR: where the runtime chose to optimise hot code, on its own thread) and
/// compiled guest regions (dynamic methods) are left out. Fails on the record command making its three flags when the
/// command line names none (Option&lt;bool&gt;), a content run grown with Array.Resize over ulong, an output digest
/// returned as a tuple over ulong, or a flush ticker waiting on a ManualResetEvent (the runtime's type cache). A few
/// seconds.
/// </summary>
public class RecordJitTests
{
    static HashSet<string> FirstCompilations(List<string> lines)
        => lines.Where(l => !l.Contains("Tier1", StringComparison.Ordinal) && !l.Contains("OSR", StringComparison.Ordinal)
                            && !l.Contains("(dynamicClass)", StringComparison.Ordinal))
            // "   12: JIT compiled M [Tier0, IL size=...]": the method and its tier, without the number and the sizes
            .Select(l => l[l.IndexOf("JIT compiled", StringComparison.Ordinal)..].Split(", IL size")[0])
            .ToHashSet();

    [Fact]
    public void ARecordingJitCompilesNothingARunOfTheSameGuestDoesNot()
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-recjit-{Guid.NewGuid():N}.rvlog");
        try
        {
            string[] guest = ["/bin/busybox", "md5sum", "/bin/busybox"];
            var run = FirstCompilations(NativeImageTests.JitCompiledBy(["run", "--", .. guest]));
            var record = FirstCompilations(NativeImageTests.JitCompiledBy(["record", "--log", log, "--", .. guest]));
            Assert.True(new FileInfo(log).Length > 0);
            var extra = record.Except(run).ToList();
            Assert.True(extra.Count == 0, "JIT-compiled by `record` only:\n" + string.Join("\n", extra));
        }
        finally { File.Delete(log); }
    }
}
