using System.Globalization;
using ReVirt.Primary;
using Xunit;

namespace ReVirt.Tests.Cli;

/// <summary>`primary record`'s command line: the --checkpoint-interval help groups digits by hand (no culture's
/// formatting data on the recording's start path); the oracle is the invariant culture's "N0".</summary>
public class RecordCommandTests
{
    [Theory]
    [InlineData(0UL)]
    [InlineData(7UL)]
    [InlineData(999UL)]
    [InlineData(1_000UL)]
    [InlineData(12_345UL)]
    [InlineData(200_000_000UL)]
    [InlineData(1_000_000_000UL)]
    [InlineData(ulong.MaxValue)]
    public void DigitsAreGroupedAsTheInvariantCultureGroupsThem(ulong v)
        => Assert.Equal(v.ToString("N0", CultureInfo.InvariantCulture), GuestCommand.Grouped(v));
}
