using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The bound on replay lag (`primary protect --max-replay-lag-ms`) needs both ends to agree on what "replayed"
/// covers: the live replica waits for reports of every record it counts, and the backup reports its replay's
/// position when its replay runs out of records. Found in CI: the End record was counted by the primary and never
/// reported by the backup, so a guest throttled at its End record waited until the backup's process exited (30 s).
/// The oracle is a real recording replayed the way a following backup replays it.
/// </summary>
public class ReplayTrailTests
{
    public static IEnumerable<object[]> Guests()
    {
        yield return [GuestEnv.Guest("nondet_time", "musl"), Array.Empty<string>()];
        // threads on the deterministic scheduler: preemptions and wake-ups between the syscall results
        yield return [GuestEnv.Guest("threads", "glibc"), Array.Empty<string>()];
    }

    /// <summary>
    /// A recording is handed to a following replay one record at a time, each only after the replay ran out of records
    /// (lockstep, as a backup's pipe); the live replica's <see cref="ReplayTrail"/> counts each record as produced and
    /// takes the replay's position at every point where the backup reports it (the replay ran dry; the replay ended).
    /// Every time the replay runs dry it has consumed every record it was given, and once it has finished the log the
    /// trail is empty: a throttled guest never waits for a report that does not come.
    /// </summary>
    [Theory]
    [MemberData(nameof(Guests))]
    public void ABackupsReplayReportsEveryRecordTheLiveReplicaWaitsFor(string program, string[] args)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-trail-{Guid.NewGuid():N}.rvlog");
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", program, .. args]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            byte[] header;
            var frames = new List<LogRecord>();
            LogHeader parsed;
            using (var r = LogReader.Open(log))
            {
                parsed = r.Header;
                header = r.Header.Encode();
                frames.AddRange(r.ReadAll());
                Assert.True(r.Complete);
            }
            Assert.Equal(RecordKind.End, frames[^1].Kind);

            var trail = new ReplayTrail();
            var pipe = new BlockingPipeStream();
            pipe.Append(header);
            using var dry = new SemaphoreSlim(0);
            ReplayBoundary? boundary = null;
            var positions = new List<(ulong Given, ulong Replayed)>();
            ulong given = 0;
            pipe.Starving = () =>
            {
                ulong replayed = boundary!.ReplayedSequence;
                lock (positions) positions.Add((Volatile.Read(ref given), replayed));
                trail.Reported(replayed, System.Diagnostics.Stopwatch.GetTimestamp());
                dry.Release();
                return Timeout.InfiniteTimeSpan;
            };
            using var reader = new LogReader(pipe, leaveOpen: true);
            boundary = new ReplayBoundary(reader, showOutput: false);
            var opts = Recording.OptionsFrom(reader.Header, null);
            int status = -1;
            Exception? failed = null;
            var replay = new Thread(() =>
            {
                try
                {
                    using var m = new Machine(opts, boundary);
                    m.Load(Recording.RecordedProgram(parsed, opts, out var why) ?? throw new InvalidOperationException(why));
                    status = m.Run();
                    // the backup reports its final position when the replay ends (backup/Listen.cs, ReplayMain)
                    trail.Reported(boundary.ReplayedSequence, System.Diagnostics.Stopwatch.GetTimestamp());
                }
                catch (Exception e) { failed = e; }
            }, 64 << 20) { Name = "replay" };
            replay.Start();
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            foreach (var f in frames)
            {
                // the replay asks for the next record before it gets one (the End record is the last it asks for)
                Assert.True(dry.Wait(TimeSpan.FromSeconds(60)), $"the replay did not ask for record #{f.Sequence} within 60 s");
                trail.Produced(f.Sequence, f.Kind, t0);
                Volatile.Write(ref given, f.Sequence);
                pipe.Append(f.Frame.Span);
            }
            Assert.True(replay.Join(TimeSpan.FromSeconds(60)), "the replay did not end within 60 s of its last record");
            Assert.Null(failed);
            Assert.Equal(rec.ExitCode, status);
            lock (positions)
                foreach (var (g, r) in positions) Assert.True(r == g, $"the replay ran dry having been given record #{g} but reports #{r}");
            Assert.Equal(frames[^1].Sequence, boundary.ReplayedSequence);
            // long after every record was produced, nothing is outstanding
            Assert.Equal(0, trail.TrailMs(System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency));
        }
        finally { File.Delete(log); }
    }

    /// <summary>The primary's side alone: reports are cumulative, an old one changes nothing, and the trail is the
    /// age of the oldest record not reported (the End record never counts).</summary>
    [Fact]
    public void TheTrailIsTheAgeOfTheOldestRecordNotReportedReplayed()
    {
        long ms = System.Diagnostics.Stopwatch.Frequency / 1000;
        var t = new ReplayTrail();
        t.Reset(0);
        t.Produced(1, RecordKind.SyscallResult, 0);
        t.Produced(2, RecordKind.Output, 10 * ms);
        t.Produced(3, RecordKind.Exit, 20 * ms);
        t.Produced(4, RecordKind.End, 20 * ms);
        Assert.Equal(50, t.TrailMs(50 * ms), 3);
        Assert.True(t.Reported(1, 51 * ms));
        Assert.Equal(40, t.TrailMs(50 * ms), 3);
        Assert.False(t.Reported(1, 52 * ms));
        Assert.Equal(51 * ms, t.ProgressTicks);
        Assert.True(t.Reported(3, 60 * ms));
        Assert.Equal(0, t.TrailMs(1000 * ms));
        Assert.Equal(3UL, t.Replayed);
    }
}
