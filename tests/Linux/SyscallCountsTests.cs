using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// The kernel's syscall counts (`--stats`' "guest syscalls" line, strace -c inside the VM) against programs whose
/// calls are known from their source: each call counts once under its number, however often it parked its thread.
/// </summary>
public class SyscallCountsTests
{
    static SyscallCounts RunInVm(string program, params string[] args)
    {
        var opts = new MachineOptions { Program = program, Args = args, Cwd = Environment.CurrentDirectory, Diagnostics = TextWriter.Null };
        using var m = new Machine(opts, new LiveBoundary());
        m.Load();
        Assert.Equal(0, m.Run());
        return m.Kernel.SyscallStats;
    }

    /// <summary>guests/src/counter.c with LINES lines makes one unbuffered write per line (musl's stdio writes
    /// with writev) and ends with exit_group (which never returns, and still counts).</summary>
    [Fact]
    public void EveryCallOfAKnownProgramCountsOnceUnderItsNumber()
    {
        const int lines = 37;
        var c = RunInVm(GuestEnv.Guest("counter", "musl"), lines.ToString(), "10");
        string all = c.Describe(SyscallCounts.ShownByStats);
        Assert.True(c.Calls(Nr.writev) == lines, all);
        Assert.True(c.Calls(Nr.exit_group) == 1, all);
        Assert.Equal(0, c.Parks(Nr.writev));
        Assert.True(c.Total > lines, $"total {c.Total}");
        Assert.StartsWith($"{c.Total} calls: writev {lines}, ", all);
    }

    /// <summary>A sleep parks its thread on the host and runs again at its deadline: one call, at least one park.</summary>
    [Fact]
    public void ACallThatParksCountsOnce()
    {
        var c = RunInVm("/bin/busybox", "sleep", "0.02");
        long sleeps = c.Calls(Nr.nanosleep) + c.Calls(Nr.clock_nanosleep);
        long parks = c.Parks(Nr.nanosleep) + c.Parks(Nr.clock_nanosleep);
        Assert.Equal(1, sleeps);
        Assert.True(parks >= 1, $"parks {parks}");
        Assert.Contains("(parked ", c.Describe(SyscallCounts.ShownByStats));
    }
}
