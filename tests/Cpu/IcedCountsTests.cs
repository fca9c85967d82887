using Iced.Intel;
using ReVirt.Cpu;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>The table sizes the CPU uses instead of scanning Iced's enums at start-up are the enums' sizes: every
/// member indexes inside its table, and no slot lies beyond the largest member.</summary>
public class IcedCountsTests
{
    static int Size<T>() where T : struct, Enum
    {
        int max = -1;
        foreach (var v in Enum.GetValues<T>()) max = Math.Max(max, Convert.ToInt32(v));
        return max + 1;
    }

    [Fact]
    public void CountsMatchTheEnums()
    {
        Assert.Equal(IcedCounts.Code, Size<Code>());
        Assert.Equal(IcedCounts.Mnemonic, Size<Mnemonic>());
        Assert.Equal(IcedCounts.Register, Size<Register>());
        Assert.Equal(IcedCounts.MemorySize, Size<MemorySize>());
    }
}
