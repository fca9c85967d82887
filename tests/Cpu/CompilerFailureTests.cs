using ReVirt.Cpu;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// A defect of the block compiler costs speed, never the host process: whatever it throws, the region stays
/// interpreted (<see cref="CodeCache.CompileHere"/> answers null). The region here claims one instruction and holds
/// none, so the compiler fails with an IndexOutOfRangeException - a kind no emitter throws on purpose, as a bug would
/// (fails when only the compiler's expected failure kinds are caught).
/// </summary>
public class CompilerFailureTests
{
    [Fact]
    public void ACompilerThatThrowsAnythingLeavesTheRegionInterpreted()
    {
        var broken = new Block { Start = 0x401000, End = 0x401001, Count = 1 };
        Assert.Null(CodeCache.CompileHere([broken], countHelpers: false, out long ticks));
        Assert.True(ticks >= 0);
    }
}
