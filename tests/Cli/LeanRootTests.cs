using System.CommandLine;
using ReVirt.Abi;
using ReVirt.Primary;
using Xunit;

namespace ReVirt.Tests.Cli;

/// <summary>
/// `primary` parses a command line that cannot name help, --version or a directive under a plain root command
/// (RootCommand's help option costs a ResourceManager look-up at every start). The oracle is the full RootCommand
/// tree: whatever the plain root accepts must parse there too, to the same command with the same values.
/// </summary>
public class LeanRootTests
{
    static readonly string[][] Lines =
    [
        ["run", "--", "/bin/busybox", "true"],
        ["run", "/bin/true"],
        ["run", "--stats", "--tier", "Interpreter", "--", "/bin/ls", "-l"],
        ["run", "--stats", "false", "/bin/true"],
        ["run", "--root", "/", "--cwd", "/tmp", "--", "/bin/sh", "-c", "echo hi"],
        ["run", "--root", "--help"],
        ["run", "--root", "-h"],
        ["run", "--root", "/?"],
        ["run", "--cwd", "--version", "/bin/true"],
        ["run", "--root:/", "/bin/true"],
        ["run", "--help:x"],
        ["run", "-?"],
        ["run", "-xh"],
        ["run", "/h"],
        ["run", "/home/x/prog", "-v"],
        ["run", "--", "/bin/ls", "-h"],
        ["[suggest]", "run"],
        ["@args.rsp"],
        ["record", "--log", "/tmp/x.log", "--checkpoint-interval", "1000", "/bin/true"],
        ["record", "--log", "--help"],
        ["run", "--tier", "Bogus"],
        ["run", "--bogus"],
        ["--version"],
        [],
    ];

    static ParseResult Parse(Command root, string[] args)
    {
        var guest = new GuestCommand("primary");
        root.Subcommands.Add(guest.RunCommand());
        root.Subcommands.Add(guest.RecordCommand());
        return root.Parse(args);
    }

    [Fact]
    public void WhatThePlainRootAcceptsTheFullTreeReadsAlike()
    {
        int lean = 0;
        foreach (var line in Lines)
        {
            if (!LeanRoot.Fits(line)) continue;
            var plain = Parse(new Command(RootCommand.ExecutableName, "d"), line);
            if (plain.Errors.Count > 0) continue; // the program parses it again under the full tree
            lean++;
            var full = Parse(new RootCommand("d"), line);
            Assert.True(full.Errors.Count == 0, $"{string.Join(' ', line)}: {string.Join("; ", full.Errors.Select(e => e.Message))}");
            Assert.Equal(full.ToString(), plain.ToString());
        }
        Assert.True(lean >= 6, $"only {lean} lines took the plain root");
    }

    [Theory]
    [InlineData("--help"), InlineData("-h"), InlineData("/h"), InlineData("-?"), InlineData("/?"), InlineData("--version"),
     InlineData("--help=1"), InlineData("/h:1"), InlineData("-xh"), InlineData("[suggest]"), InlineData("@file.rsp")]
    public void TokensThatMayNameWhatOnlyTheRootCommandHasGoToTheFullTree(string token)
        => Assert.False(LeanRoot.Fits(["run", "--root", token]));

    [Theory]
    [InlineData("/home/me/prog"), InlineData("/hx"), InlineData("--helper"), InlineData("--versions"), InlineData("-v"), InlineData("x-h")]
    public void OtherTokensStayOnThePlainRoot(string token)
        => Assert.True(LeanRoot.Fits(["run", "--", token]));

    /// <summary>The start time parsed without the framework's file and string helpers equals the old
    /// split-on-spaces parse after the last ')', also for command names with spaces and parentheses.</summary>
    [Fact]
    public void ProcessStartTicksMatchTheSplitParse()
    {
        string self = File.ReadAllText("/proc/self/stat");
        foreach (var line in new[]
        {
            self,
            "4242 (a b) c) (d) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654321 20 21 22\n",
            "7 ()) R 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0\n",
        })
        {
            long expected = long.Parse(line[(line.LastIndexOf(')') + 2)..].Split(' ')[22 - 3]);
            Assert.Equal(expected, FileRef.StartTicksOf(System.Text.Encoding.ASCII.GetBytes(line)));
        }
        Assert.Equal(long.Parse(self[(self.LastIndexOf(')') + 2)..].Split(' ')[19]), FileRef.ProcessStartTicks());
    }
}
