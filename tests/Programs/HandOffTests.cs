using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace ReVirt.Tests.Programs;

/// <summary>
/// revirt-run's hand-off (shared/Snapshot/HandOff.cs): a guest that ends before its hand-off, and one that revirt-run
/// hands to `primary`'s JIT host in the same process part-way, behave as the same program run natively (stdout, exit
/// status, a file written through a descriptor opened before the hand-off, stdin read after it, processes and a pipe
/// that live across it), and a deterministic guest retires exactly as many instructions as in a run that never
/// moved. The tests run revirt-run's IL build (the NativeAOT compilation takes minutes): the hand-off is the same
/// code, and `--hand-off-after` asks for it there too.
/// </summary>
public class HandOffTests
{
    static string RunDll => Path.Combine(AppContext.BaseDirectory, "revirt-run.dll");

    static readonly TimeSpan Long = TimeSpan.FromMinutes(4);

    static RunOutcome RevirtRun(ulong handOffAfter, string[] program, byte[]? stdin = null, string? cwd = null)
    {
        var a = new List<string> { RunDll, "--stats", "--hand-off-after", handOffAfter.ToString(), "--jit-host", GuestEnv.PrimaryDll, "--" };
        a.AddRange(program);
        return GuestEnv.Exec("dotnet", a.ToArray(), stdin, Long, cwd);
    }

    /// <summary>The guest instructions at which revirt-run handed off (its --stats line), null when it did not.</summary>
    static ulong? HandedOffAt(RunOutcome r)
        => Regex.Match(r.Stderr, @"handed off to the JIT host after (\d+) guest instructions") is { Success: true } m ? ulong.Parse(m.Groups[1].Value) : null;

    static ulong Instructions(RunOutcome r)
        => ulong.Parse(Regex.Match(r.Stderr, @"revirt-run: (\d+) guest instructions").Groups[1].Value);

    /// <summary>A shell script that opens a file, loops (about 14,000 guest instructions per iteration), writes the
    /// file again, reads a line of stdin, runs a pipeline of two processes with a loop of its own, and exits 7.</summary>
    const string Script = """
        exec 3>"$1"
        echo first >&3
        i=0; while [ $i -lt 1500 ]; do i=$((i+1)); done
        echo "looped $i" >&3
        read line; echo "read: $line"
        (j=0; while [ $j -lt 500 ]; do j=$((j+1)); done; echo "child $j"; echo more) | tr a-z A-Z
        cat "$1"
        echo rest:; cat
        exit 7
        """;

    [Theory]
    [InlineData(0UL)]              // never: interpreted (and compiled in place) to the end
    [InlineData(1_000_000UL)]      // early in the first loop
    [InlineData(25_000_000UL)]     // late: after the loop, around the read and the pipeline
    [InlineData(10_000_000_000UL)] // later than the guest's end: it exits before the hand-off
    public void AShellScriptBehavesAsNativeBeforeAndAfterItsHandOff(ulong after)
    {
        var dir = Directory.CreateTempSubdirectory("revirt-handoff").FullName;
        try
        {
            var stdin = Encoding.UTF8.GetBytes("hello there\nline two\nline three\n");
            var native = GuestEnv.Native(BusyboxTests.Busybox, ["sh", "-c", Script, "sh", Path.Combine(dir, "native.txt")], stdin);
            var vm = RevirtRun(after, [BusyboxTests.Busybox, "sh", "-c", Script, "sh", Path.Combine(dir, "vm.txt")], stdin);
            Assert.True(native.ExitCode == 7, $"native: exit {native.ExitCode}: {native.Stderr}");
            Assert.True(vm.ExitCode == native.ExitCode, $"exit {vm.ExitCode}, natively {native.ExitCode}; stderr:\n{vm.Stderr}");
            Assert.Equal(native.StdoutText, vm.StdoutText);
            Assert.Equal(File.ReadAllText(Path.Combine(dir, "native.txt")), File.ReadAllText(Path.Combine(dir, "vm.txt")));
            ulong? at = HandedOffAt(vm);
            if (after is 0 or 10_000_000_000UL) Assert.Null(at);
            else
            {
                Assert.True(at != null, $"no hand-off after {after} instructions; stderr:\n{vm.Stderr}");
                Assert.InRange(at!.Value, after, after + 2 * Snapshot.HandOffBoundary.Retry + 1_000_000);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ASignalThatEndsTheGuestAfterTheHandOffGivesTheNativeStatus()
    {
        const string kill = "i=0; while [ $i -lt 500 ]; do i=$((i+1)); done; echo before; kill -TERM $$; echo after";
        var native = GuestEnv.Native(BusyboxTests.Busybox, ["sh", "-c", kill]);
        var vm = RevirtRun(1_000_000, [BusyboxTests.Busybox, "sh", "-c", kill]);
        Assert.Equal(128 + 15, native.ExitCode);
        Assert.True(vm.ExitCode == native.ExitCode, $"exit {vm.ExitCode}, natively {native.ExitCode}; stderr:\n{vm.Stderr}");
        Assert.Equal(native.StdoutText, vm.StdoutText);
        Assert.NotNull(HandedOffAt(vm));
    }

    [Fact]
    public void ADeterministicGuestRetiresTheSameInstructionsWithAndWithoutAHandOff()
    {
        string bench = GuestEnv.Guest("bench", "musl");
        var native = GuestEnv.Native(bench, ["2"]);
        var stay = RevirtRun(0, [bench, "2"]);
        var moved = RevirtRun(3_000_000, [bench, "2"]);
        Assert.Equal(0, native.ExitCode);
        Assert.True(stay.ExitCode == 0 && moved.ExitCode == 0, $"exit {stay.ExitCode} / {moved.ExitCode}; stderr:\n{stay.Stderr}\n{moved.Stderr}");
        Assert.Equal(native.StdoutText, stay.StdoutText);
        Assert.Equal(native.StdoutText, moved.StdoutText);
        Assert.Null(HandedOffAt(stay));
        Assert.NotNull(HandedOffAt(moved));
        Assert.Equal(Instructions(stay), Instructions(moved));
    }
}
