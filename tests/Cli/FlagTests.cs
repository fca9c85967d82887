using System.CommandLine;
using ReVirt.Primary;
using Xunit;

namespace ReVirt.Tests.Cli;

/// <summary>
/// `primary run` reads its flags (options over bool) from the parse's tokens (<see cref="GuestCommand.Flag"/>) instead
/// of the command-line library's generic GetValue&lt;bool&gt;, whose code is JIT-compiled at every start. The oracle is
/// GetValue itself: on every line that parses without errors, each flag reads as GetValue reads it.
/// </summary>
public class FlagTests
{
    static readonly string[][] Lines =
    [
        ["run", "--", "/bin/busybox", "true"],
        ["run", "--stats", "/bin/true"],
        ["run", "--stats", "--", "/bin/true"],
        ["run", "--stats", "true", "/bin/true"],
        ["run", "--stats", "false", "/bin/true"],
        ["run", "--stats", "False", "/bin/true"],
        ["run", "--stats", "TRUE", "/bin/true"],
        ["run", "--stats:false", "/bin/true"],
        ["run", "--stats=true", "/bin/true"],
        ["run", "--stats=false", "--background-compile", "/bin/true"],
        ["run", "--background-compile", "false", "--profile-tier", "--stats", "/bin/true"],
        ["run", "--no-rack", "--net", "virtual", "--ip", "10.0.0.2/24", "/bin/true"],
        ["run", "--profile-tier", "true", "--no-rack", "false", "/bin/true"],
        ["run", "/bin/true", "--stats"],
        ["run", "--", "/bin/true", "--stats"],
        ["record", "--log", "/tmp/x.log", "--stats", "/bin/true"],
        ["record", "--log", "/tmp/x.log", "--background-compile", "false", "/bin/true"],
    ];

    [Fact]
    public void EveryFlagReadsAsGetValueReadsIt()
    {
        var guest = new GuestCommand("primary");
        var root = new Command("primary", "d");
        root.Subcommands.Add(guest.RunCommand());
        root.Subcommands.Add(guest.RecordCommand());
        int set = 0, compared = 0;
        foreach (var line in Lines)
        {
            var parse = root.Parse(line);
            Assert.True(parse.Errors.Count == 0, $"{string.Join(' ', line)}: {string.Join("; ", parse.Errors.Select(e => e.Message))}");
            foreach (var flag in new[] { guest.Stats, guest.NoRack, guest.BackgroundCompile, guest.ProfileTier })
            {
                if (!parse.CommandResult.Command.Options.Contains(flag)) continue;
                bool expected = parse.GetValue(flag);
                Assert.True(expected == GuestCommand.Flag(parse, flag), $"{string.Join(' ', line)}: {flag.Name} reads {!expected}, GetValue {expected}");
                compared++;
                if (expected) set++;
            }
        }
        // both values occur, or the comparison proves little
        Assert.True(set >= 8 && compared - set >= 30, $"{set} of {compared} flags set");
    }
}
