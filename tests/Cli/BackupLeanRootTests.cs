using System.CommandLine;
using System.CommandLine.Parsing;
using ReVirt.Backup;
using Xunit;

namespace ReVirt.Tests.Cli;

/// <summary>
/// `backup` parses a command line that cannot name help, --version or a directive under a plain root command, as
/// `primary` does (<see cref="LeanRootTests"/>). The oracle is the tree every earlier build parsed under, the
/// RootCommand: a line the program reads under the plain root must mean there what it means under the RootCommand
/// (the same command, options, tokens and unmatched tokens), and for every other line (errors, help, --version,
/// directives) the program's output and exit status must be byte for byte the RootCommand's.
/// </summary>
public class BackupLeanRootTests
{
    static readonly string[][] Lines =
    [
        ["replay", "--log", "/tmp/x.log"],
        ["replay", "--log", "/tmp/x.log", "--show-output"],
        ["replay", "--show-output", "false", "--log", "/tmp/x.log"],
        ["replay", "--log", "/tmp/x.log", "--tier", "Interpreter", "--root", "/"],
        ["replay", "--log:/tmp/x.log", "--root=/srv/root"],
        ["log", "/tmp/x.log"],
        ["listen", "--listen", "http://127.0.0.1:0", "--insecure-no-auth", "--primary-silence-ms", "100"],
        ["listen", "--token-file", "/tmp/t", "--standby", "http://a:1", "--standby", "http://b:2", "--data-link", "unix"],
        ["fuzz", "--minutes", "0.5", "--seed", "3", "--log", "/tmp/a.log"],
        // errors, under either root
        ["replay"],
        ["replay", "--log"],
        ["replay", "--log", "/tmp/x.log", "--tier", "Bogus"],
        ["replay", "--log", "/tmp/x.log", "--bogus"],
        ["listen", "--primary-silence-ms", "2"],
        ["listen", "--plant", "nope"],
        ["log"],
        ["bogus"],
        [],
        // what only the RootCommand has
        ["--help"],
        ["replay", "-h"],
        ["replay", "--log", "/tmp/x.log", "-?"],
        ["--version"],
        ["[suggest]", "rep"],
        ["replay", "--log", "--help"],
    ];

    [Fact]
    public void WhatThePlainRootAcceptsMeansWhatTheRootCommandReads()
    {
        int lean = 0;
        foreach (var line in Lines)
        {
            var chosen = BackupCommandLine.Parse(line);
            var full = BackupCommandLine.Tree(new RootCommand(BackupCommandLine.Description), line);
            if (chosen.RootCommandResult.Command is RootCommand) continue;
            lean++;
            string text = string.Join(' ', line);
            Assert.True(full.Errors.Count == 0, $"{text}: {string.Join("; ", full.Errors.Select(e => e.Message))}");
            Assert.Equal(Meaning(full.RootCommandResult), Meaning(chosen.RootCommandResult));
            Assert.Equal(full.UnmatchedTokens, chosen.UnmatchedTokens);
        }
        Assert.True(lean >= 8, $"only {lean} lines took the plain root");
    }

    [Fact]
    public void ErrorsHelpAndVersionAreTheRootCommandsByteForByte()
    {
        int compared = 0;
        foreach (var line in Lines)
        {
            var full = BackupCommandLine.Tree(new RootCommand(BackupCommandLine.Description), line);
            // a line without errors that asks for nothing only the RootCommand has would run its action: compared above
            if (full.Errors.Count == 0 && ReVirt.Primary.LeanRoot.Fits(line)) continue;
            compared++;
            var (status, output, error) = Invoke(BackupCommandLine.Parse(line));
            var (fullStatus, fullOutput, fullError) = Invoke(full);
            string text = string.Join(' ', line);
            Assert.True(fullStatus == status, $"{text}: exit status {status}, the RootCommand's {fullStatus}");
            Assert.Equal(fullOutput, output);
            Assert.Equal(fullError, error);
        }
        Assert.True(compared >= 14, $"only {compared} lines compared");
    }

    static (int Status, string Output, string Error) Invoke(ParseResult parse)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int status = parse.Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (status, output.ToString(), error.ToString());
    }

    /// <summary>What a parse says below its root: each command, option and argument with its tokens and whether its
    /// value is implicit (the root's own name differs: the plain root is named `backup`).</summary>
    static string Meaning(SymbolResult r)
    {
        var sb = new System.Text.StringBuilder();
        void Walk(SymbolResult s, int depth)
        {
            string name = s switch
            {
                CommandResult c => depth == 0 ? "(root)" : "command " + c.Command.Name,
                OptionResult o => $"option {o.Option.Name}{(o.Implicit ? " (implicit)" : "")}",
                ArgumentResult a => "argument " + a.Argument.Name,
                _ => s.GetType().Name,
            };
            sb.Append(' ', depth * 2).Append(name).Append(": ").AppendJoin(' ', s.Tokens.Select(t => t.Value)).Append('\n');
            if (s is CommandResult cr)
                foreach (var child in cr.Children) Walk(child, depth + 1);
        }
        Walk(r, 0);
        return sb.ToString();
    }
}
