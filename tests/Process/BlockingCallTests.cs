using System.Diagnostics;
using System.Text;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// Blocking host calls park only the calling guest thread: guests/src/blockers.c has threads blocked in read(2) on
/// a host socket, in poll(2) on a host socket and an in-VM pipe together, and in an absolute clock_nanosleep, while
/// others feed them and compute. On a VM whose host calls blocked every thread this program never finishes (the
/// reader would wait for a feeder that never runs). The oracle is the same binary run natively; a recording of it
/// replays faithfully (the wake-ups are logged at exact instructions).
/// </summary>
public class BlockingCallTests
{
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void ThreadsBlockedOnTheHostLetTheOthersRun(string libc)
    {
        string prog = GuestEnv.Guest("blockers", libc);
        var native = GuestEnv.Native(prog, Array.Empty<string>());
        var vm = GuestEnv.Vm(prog, Array.Empty<string>());
        Assert.Equal(0, native.ExitCode);
        Assert.True(native.StdoutText == vm.StdoutText, $"--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    /// <summary>The main thread blocks reading stdin, which the test feeds only after the guest's socket reader
    /// thread printed what its feeder thread sent: both must run while the main thread waits on the host, and the
    /// output matches the native run's.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void StdinReadBlocksOnlyItsThread(string libc)
    {
        string prog = GuestEnv.Guest("blockers", libc);
        var native = FeedAfterComputed(prog, new[] { "stdin" }, vm: false);
        var vm = FeedAfterComputed(prog, new[] { "stdin" }, vm: true);
        Assert.Contains("stdin: 12 bytes", native.Stdout);
        Assert.True(native.Stdout == vm.Stdout, $"--- native\n{native.Stdout}\n--- vm\n{vm.Stdout}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void RecordingWithHostWaitsReplaysFaithfully(string libc)
    {
        var dump = RecordAndReplay(GuestEnv.Guest("blockers", libc));
        Assert.Contains(" wake tid ", dump);
    }

    /// <summary>Records the program, replays the log (which must be faithful and show the same output) and returns
    /// the log's dump.</summary>
    static string RecordAndReplay(string prog, params string[] args)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-block-{Guid.NewGuid():N}.rvlog");
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--", prog }.Concat(args).ToArray());
            Assert.True(rec.ExitCode == 0, rec.StdoutText + rec.Stderr);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" });
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
            return GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "log", log }).StdoutText;
        }
        finally { File.Delete(log); }
    }

    /// <summary>guests/src/waits.c: signals interrupting blocked calls (EINTR, or the call goes on with SA_RESTART,
    /// as Linux decides by call kind), waitid, a child's rusage, PR_SET_PDEATHSIG, a pipe write larger than the
    /// pipe, /proc/PID of a child: the same lines as natively, and a recording replays faithfully.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void InterruptedCallsAndWaitsAsNatively(string libc) => SameAsNativeAndReplays(GuestEnv.Guest("waits", libc));

    /// <summary>guests/src/callmask.c: ppoll, pselect6 and epoll_pwait with a signal mask that lets through a
    /// signal the thread blocks, pending before the call or sent by a child while it waits: EINTR, the handler
    /// runs under the call's mask, the thread's own mask holds after; a ready descriptor or a timeout leaves the
    /// signal pending (sigpending shows it). The same lines as natively, and a recording replays faithfully.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void SignalMasksOfPollCallsAsNatively(string libc) => SameAsNativeAndReplays(GuestEnv.Guest("callmask", libc));

    /// <summary>guests/src/futextimed.c: a timed condition wait nobody signals ends at its deadline while another
    /// thread computes (a VM that let timed futex waits expire only when no other thread could run never ended
    /// this program), a signalled one returns at once, raw FUTEX_WAIT and FUTEX_WAIT_BITSET (absolute, realtime)
    /// wait their time: the same lines as natively, and a recording replays faithfully.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void TimedFutexWaitsWaitTheirTimeAsNatively(string libc) => SameAsNativeAndReplays(GuestEnv.Guest("futextimed", libc));

    /// <summary>guests/src/hostwrites.c: a blocking write of 1 MiB to a host socket and to a FIFO (made with mkfifo)
    /// whose reader is another thread, blocking opens of the FIFO's two ends by two threads, a blocking connect to an
    /// AF_UNIX listener with a full backlog that the main thread accepts later, a third thread computing meanwhile, and
    /// a blocking write to a full socket interrupted by a signal (EINTR; with SA_RESTART it goes on). Each of these
    /// hung a VM whose host calls blocked its one host thread. The same lines as natively, and a recording replays
    /// faithfully.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void WritesConnectsAndFifoOpensWaitOnlyInTheirThread(string libc)
    {
        string dir = Directory.CreateTempSubdirectory("revirt-hostwrites-").FullName;
        try { SameAsNativeAndReplays(GuestEnv.Guest("hostwrites", libc), dir); }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>guests/src/jobctl.c: a zombie's /proc/PID/stat and status (state Z) until it is reaped; SIGSTOP and
    /// SIGTSTP stop a child (waitpid WUNTRACED, waitid WSTOPPED, /proc state T, SIGCHLD with CLD_STOPPED unless
    /// SA_NOCLDSTOP), SIGCONT continues it (WCONTINUED, CLD_CONTINUED), a read it was blocked in goes on, SIGKILL
    /// ends it stopped, an ignored SIGTSTP does not stop: the same lines as natively, and a recording replays
    /// faithfully.</summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void ZombiesAndJobControlAsNatively(string libc) => SameAsNativeAndReplays(GuestEnv.Guest("jobctl", libc));

    static void SameAsNativeAndReplays(string prog, params string[] args)
    {
        var native = GuestEnv.Native(prog, args);
        Assert.True(native.ExitCode == 0, native.StdoutText);
        var vm = GuestEnv.Vm(prog, args);
        Assert.True(native.StdoutText == vm.StdoutText, $"--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(0, vm.ExitCode);
        RecordAndReplay(prog, args);
    }

    /// <summary>SIGTERM sent to the VM while its guest sleeps (nanosleep of 30 s) ends it at once: the sleep is a
    /// host wait of the guest thread, not of the VM's thread, so the signal is taken (the issue's
    /// `timeout 3 primary run -- busybox sleep 30`).</summary>
    [Fact]
    public void SignalToTheVmEndsASleepingGuest()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in new[] { GuestEnv.PrimaryDll, "run", "--", "/bin/busybox", "sh", "-c", "echo sleeping; exec sleep 30" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        using var killer = new Timer(_ => { try { p.Kill(true); } catch (InvalidOperationException) { } }, null, TimeSpan.FromMinutes(2), Timeout.InfiniteTimeSpan);
        p.StandardError.BaseStream.CopyToAsync(Stream.Null);
        Assert.Equal("sleeping", p.StandardOutput.ReadLine());
        var sw = Stopwatch.StartNew();
        // the guest runs sleep after printing; give it a moment to be inside nanosleep (a signal before is fine too)
        Thread.Sleep(500);
        Assert.Equal(0, Kill(p.Id, 15));
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(20)), "the VM did not end on SIGTERM while its guest slept");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20));
        Assert.Equal(128 + 15, p.ExitCode);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill")]
    static extern int Kill(int pid, int sig);

    sealed record Fed(int ExitCode, string Stdout, string Stderr);

    static Fed FeedAfterComputed(string prog, string[] args, bool vm)
    {
        var psi = new ProcessStartInfo(vm ? "dotnet" : prog) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        if (vm) foreach (var a in new[] { GuestEnv.PrimaryDll, "run", "--", prog }) psi.ArgumentList.Add(a);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        using var killer = new Timer(_ => { try { p.Kill(true); } catch (InvalidOperationException) { } }, null, TimeSpan.FromMinutes(2), Timeout.InfiniteTimeSpan);
        var err = p.StandardError.ReadToEndAsync();
        var sb = new StringBuilder();
        string? first = p.StandardOutput.ReadLine();
        sb.Append(first).Append('\n');
        Assert.StartsWith("computed", first);
        string? second = p.StandardOutput.ReadLine();
        sb.Append(second).Append('\n');
        Assert.StartsWith("reader got", second);
        p.StandardInput.Write("hello stdin\n");
        p.StandardInput.Close();
        sb.Append(p.StandardOutput.ReadToEnd());
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)));
        p.WaitForExit();
        return new Fed(p.ExitCode, sb.ToString(), err.GetAwaiter().GetResult());
    }
}
