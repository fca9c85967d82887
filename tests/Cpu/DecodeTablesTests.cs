using System.Text;
using ReVirt.Cpu;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// The decode tables' builder thread starts only when a core is free: fewer runnable tasks (/proc/loadavg's fourth
/// field) than CPUs. The oracle for the field's reading is the kernel's own line split the ordinary way.
/// </summary>
public class DecodeTablesTests
{
    [Theory]
    [InlineData("0.52 0.58 0.59 2/612 12345\n", 2)]
    [InlineData("75.31 78.27 65.11 80/609 21360\n", 80)]
    [InlineData("0.00 0.01 0.05 1/97 3\n", 1)]
    [InlineData("0.52 0.58 0.59 2\n", -1)]   // no '/' after the count
    [InlineData("0.52 0.58\n", -1)]          // cut short
    [InlineData("", -1)]
    public void TheRunnableCountIsTheNumberBeforeTheSlashOfTheFourthField(string line, int expected)
        => Assert.Equal(expected, DecodeTables.RunnableOf(Encoding.ASCII.GetBytes(line)));

    [Fact]
    public void TheHostsOwnLineReadsAsItsFourthFieldSays()
    {
        string line = File.ReadAllText("/proc/loadavg");
        int expected = int.Parse(line.Split(' ')[3].Split('/')[0]);
        Assert.Equal(expected, DecodeTables.RunnableOf(Encoding.ASCII.GetBytes(line)));
    }
}
