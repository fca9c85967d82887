using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// A recording answers a clock read that follows a logged read of its clock, with no other syscall or asynchronous
/// event between, from that read and the instruction count (<see cref="MachineOptions.ClockReadsBetweenEvents"/>), and
/// logs nothing for it. The clockreads guest reads clocks in pairs around short work (as redis times each command)
/// and across a sleep, a wait for another thread and a timer's signal. Oracles: the native run (no clock goes back,
/// each wait shows at least the 20 ms it took, as Linux promises), the log (fewer clock records than reads, the
/// header's flag) and the replay (every value read, printed, is the same, and the replay is faithful).
/// </summary>
public class ClockReadTests
{
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void ClockReadsBetweenEventsKeepWhatLinuxPromises(string libc)
    {
        string prog = GuestEnv.Guest("clockreads", libc);
        var native = GuestEnv.Native(prog, []);
        Assert.Equal(0, native.ExitCode);
        Assert.Contains("pairs: 200 rounds, 0 went back\n", native.StdoutText);
        Assert.Contains("sleep 20 ms: monotonic at least 20 ms, gettimeofday at least 20 ms\n", native.StdoutText);
        WithRecording(prog, "facts", (rec, log) =>
        {
            Assert.Equal(native.StdoutText, rec.StdoutText);
            // 1,600 reads in the pairs alone: most were answered without a record
            int clockRecords = 0;
            using var r = LogReader.Open(log);
            Assert.True((r.Header.Flags & LogFlags.ClockReadsBetweenEvents) != 0);
            while (r.TryRead(out var record))
                if (record.Kind == RecordKind.SyscallResult && record.Decode<SyscallResult>().Nr is Nr.clock_gettime or Nr.gettimeofday)
                    clockRecords++;
            Assert.True(clockRecords > 0 && clockRecords < 400, $"{clockRecords} clock records for 1,608 reads");
        });
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void ClockReadsAnsweredWithoutTheHostReplayToTheSameValues(string libc)
        => WithRecording(GuestEnv.Guest("clockreads", libc), "values", (rec, log) =>
        {
            Assert.Equal(1608, rec.StdoutText.Split('\n').Count(l => l.StartsWith("value ")));
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
        });

    /// <summary>Records the guest with <paramref name="mode"/> and hands its outcome and log to <paramref name="check"/>.</summary>
    static void WithRecording(string prog, string mode, Action<RunOutcome, string> check)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-clock-{Guid.NewGuid():N}.rvlog");
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", prog, mode]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            check(rec, log);
        }
        finally { File.Delete(log); }
    }
}
