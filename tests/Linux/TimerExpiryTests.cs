using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// A guest timer's signal interrupts a blocking call at the timer's expiry even when the VM's thread pool cannot run
/// anything: the timers fire from the host waiter's own thread, ahead of the ends of host waits that came later. The
/// guest (guests/src/timerwake.c) arms each kind of timer for 50 ms (setitimer ITIMER_REAL, timer_create with
/// SIGEV_SIGNAL, alarm at 1 s; a timerfd in a poll) and blocks in a call (read of a pipe, recv, nanosleep, poll) that a
/// forked child of the guest would complete 350 ms after the expiry. The native run is the oracle (EINTR at the
/// expiry; the timerfd alone readable); the VM runs with its thread pool starved for the whole run
/// (<see cref="StartupHook"/>, whose report proves it), live and recording, and the recording replays the same.
/// A loaded machine can take more than 50 ms from arming a timer to making the call; the guest then runs that case
/// again (its signal came before the call: it did not test the expiry during the call).
/// </summary>
public class TimerExpiryTests
{
    [Fact]
    public void TimerSignalsInterruptBlockingCallsAtTheirExpiryWhileTheThreadPoolIsStarved()
    {
        string prog = GuestEnv.Guest("timerwake", "musl");
        var native = GuestEnv.Native(prog, []);
        Assert.Equal(0, native.ExitCode);
        // the oracle itself went through the cases
        Assert.Contains("read of a pipe written after 400 ms: -1 Interrupted system call, handler ran 1\n", native.StdoutText);
        Assert.Contains("poll: 1, timerfd readable, pipe not readable\n", native.StdoutText);
        Assert.EndsWith("done\n", native.StdoutText);

        string dir = Path.Combine(Path.GetTempPath(), $"revirt-timerwake-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string report = Path.Combine(dir, "pool"), log = Path.Combine(dir, "rec.rvlog");
            var starved = new Dictionary<string, string>
            {
                ["DOTNET_STARTUP_HOOKS"] = typeof(StartupHook).Assembly.Location,
                [StartupHook.ReportVariable] = report,
            };

            var vm = GuestEnv.Vm(prog, [], env: starved);
            Assert.True(vm.ExitCode == 0, vm.Stderr);
            Assert.Equal(StartupHook.Starved, File.ReadAllText(report));
            Assert.Equal(native.StdoutText, vm.StdoutText);

            File.Delete(report);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", prog], env: starved);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(StartupHook.Starved, File.ReadAllText(report));
            Assert.Equal(native.StdoutText, rec.StdoutText);

            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>
    /// A stop takes the host events in the order they were posted across the kernel's two queues: a timer's signal
    /// posted before a wake-up is taken first (the woken thread would otherwise run before the signal interrupts the
    /// wait it should end), and a wake-up posted first is still taken first.
    /// </summary>
    [Fact]
    public void AStopTakesASignalPostedBeforeAWakeUpFirst()
    {
        using var m = new Machine(new MachineOptions { Program = "/bin/true", Diagnostics = TextWriter.Null });
        var k = m.Kernel;
        k.PostHostSignal(Sig.USR1);
        PostWake(k, tid: 99, seq: 1);
        Assert.False(k.TryTakeWake(out _, out _));
        Assert.True(k.TryTakeHostEvent(out int sig));
        Assert.Equal(Sig.USR1, sig);
        Assert.True(k.TryTakeWake(out int tid, out uint seq));
        Assert.Equal((99, 1u), (tid, seq));

        PostWake(k, tid: 98, seq: 2);
        k.PostHostSignal(Sig.USR2);
        Assert.True(k.TryTakeWake(out tid, out _));
        Assert.Equal(98, tid);
        Assert.True(k.TryTakeHostEvent(out sig));
        Assert.Equal(Sig.USR2, sig);
    }

    /// <summary>Posts a wake-up the way a host wait's end does: through the kernel's host waiter, with a deadline
    /// already due, waiting (bounded) until it is posted.</summary>
    static void PostWake(Kernel k, int tid, uint seq)
    {
        k.Waiter.Add(tid, seq, new HostWaitSpec([], HostClock.NowNs()));
        Assert.True(SpinWait.SpinUntil(() => !k.Waiter.Any, TimeSpan.FromSeconds(30)), "the host waiter did not post the wake-up");
    }
}
