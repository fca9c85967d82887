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

/// <summary>
/// `primary run`'s tree made for one command line (<c>new GuestCommand(name, line)</c>, the plain-root parse) leaves
/// out the flags none of its tokens names, so System.CommandLine's Option&lt;bool&gt; (three JIT-compiled methods) is not
/// made on a start that gives none. The oracle is the tree with every option, read through the library's own
/// GetValue: each line parses without errors under both or under neither, and then gives the same program, arguments,
/// options and flag values.
/// </summary>
public class FlagsMadeWhenNamedTests
{
    static readonly string[][] Lines =
    [
        ["run", "--", "/bin/busybox", "true"],
        ["run", "/bin/true"],
        ["run", "--stats", "/bin/true"],
        ["run", "--stats=true", "/bin/true"],
        ["run", "--stats:false", "/bin/true"],
        ["run", "--stats", "false", "/bin/true"],
        ["run", "--no-rack", "--net", "virtual", "--ip", "10.0.0.2/24", "/bin/true"],
        ["run", "--no-rack=false", "/bin/true"],
        ["run", "--background-compile", "--tier", "Default", "/bin/true"],
        ["run", "--background-compile:true", "--profile-tier=true", "/bin/true"],
        ["run", "--profile-tier", "false", "--", "/bin/ls", "-l"],
        ["run", "/bin/echo", "--stats"],
        ["run", "--", "/bin/echo", "--stats=1", "--no-rack"],
        ["run", "--statsx", "/bin/true"],
        ["run", "--stat", "/bin/true"],
        ["run", "--stats", "--stats", "/bin/true"],
        ["run", "--root", "--stats", "/bin/true"],
        ["run", "--cwd", "/", "--no-takeover-probe", "/bin/true"],
        ["record", "--log", "/tmp/x.log", "--stats", "/bin/true"],
        ["record", "--log", "/tmp/x.log", "/bin/true"],
        ["run", "--tier", "Bogus", "/bin/true"],
    ];

    static (ParseResult Parse, GuestCommand Guest) Parse(string[] line, bool forThisLine)
    {
        var guest = forThisLine ? new GuestCommand("primary", line) : new GuestCommand("primary");
        var root = new Command("primary", "d");
        root.Subcommands.Add(guest.RunCommand());
        root.Subcommands.Add(guest.RecordCommand());
        return (root.Parse(line), guest);
    }

    [Fact]
    public void EveryLineReadsAsUnderTheTreeWithEveryFlag()
    {
        int accepted = 0, set = 0, leftOut = 0;
        foreach (var line in Lines)
        {
            string at = string.Join(' ', line);
            var (full, fullGuest) = Parse(line, forThisLine: false);
            var (lean, leanGuest) = Parse(line, forThisLine: true);
            Assert.True((full.Errors.Count == 0) == (lean.Errors.Count == 0),
                $"{at}: full tree {full.Errors.Count} errors ({string.Join("; ", full.Errors.Select(e => e.Message))}), tree for the line {lean.Errors.Count} ({string.Join("; ", lean.Errors.Select(e => e.Message))})");
            if (full.Errors.Count > 0) continue;
            accepted++;
            Assert.Equal(full.CommandResult.Command.Name, lean.CommandResult.Command.Name);
            Assert.Equal(full.GetValue(fullGuest.Program), lean.GetValue(leanGuest.Program));
            Assert.Equal(full.GetValue(fullGuest.Root), lean.GetValue(leanGuest.Root));
            Assert.Equal(full.GetValue(fullGuest.Cwd), lean.GetValue(leanGuest.Cwd));
            Assert.Equal(full.GetValue(fullGuest.Tier), lean.GetValue(leanGuest.Tier));
            Assert.Equal(full.GetValue(fullGuest.Net), lean.GetValue(leanGuest.Net));
            // the library's reading of every flag the full command has (absent ones read false)
            var command = full.CommandResult.Command;
            bool Lib(Option<bool> f) => command.Options.Contains(f) && full.GetValue(f);
            bool[] expected = [Lib(fullGuest.NoRack), Lib(fullGuest.NoTakeoverProbe), Lib(fullGuest.Stats), Lib(fullGuest.ProfileTier), Lib(fullGuest.BackgroundCompile)];
            bool[] read = leanGuest.FlagValues(lean);
            Assert.True(expected.SequenceEqual(read), $"{at}: flags read {string.Join(',', read)}, the library reads {string.Join(',', expected)}");
            set += expected.Count(v => v);
            if (lean.CommandResult.Command.Name == "run") leftOut += 4 - lean.CommandResult.Command.Options.OfType<Option<bool>>().Count();
        }
        // lines of both kinds, set flags, and flags actually left out, or the comparison proves little
        Assert.True(accepted >= 15 && set >= 8 && leftOut >= 20, $"{accepted} lines accepted, {set} flags set, {leftOut} flags left out");
    }
}
