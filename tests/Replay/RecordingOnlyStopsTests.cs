using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Tests.Net;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// A recording stops the guest where a replay does not: at a flush of the log, for a snapshot, at a host event that
/// ends up doing nothing. Such a stop must change nothing the guest can observe (not where it next stops, not its
/// state), or the replay, which stops only where the log has a record, diverges. Here the recording stops the guest
/// very often — after a pseudo-random number of instructions (<see cref="RecordingBoundary.ExtraStopsWithin"/>),
/// inside blocks as at their ends, and at block boundaries asked for from another thread as the flush timer asks
/// (<see cref="RecordingBoundary.RunAtNextStop"/>) — while guests race threads under preemption, take timer signals
/// and serve TCP through the in-VM stack. The oracle is the replay of each recording: faithful, every checkpoint equal.
/// </summary>
public class RecordingOnlyStopsTests
{
    const ulong CheckpointInterval = 200_000;
    const ulong ExtraStopsWithin = 700;

    /// <summary>What a recording run did: its exit status, the extra stops that were asked from another thread and run.</summary>
    sealed record Recorded(int Status, int AskedStops, int RanStops);

    /// <summary>
    /// Records <paramref name="opts"/>'s program in this process with extra recording-only stops; <paramref name="running"/>
    /// (if any) runs while the guest does and returns when the guest may be let finish.
    /// </summary>
    static Recorded Record(MachineOptions opts, string log, int seed, Action? running = null)
    {
        opts.Diagnostics = TextWriter.Null;
        var program = Kernel.ResolveProgram(opts);
        var header = Recording.Header(opts, program.Image, CheckpointInterval);
        using var writer = LogWriter.Create(log, header);
        var boundary = new RecordingBoundary(writer, header.CheckpointInterval) { ExtraStopsWithin = ExtraStopsWithin, ExtraStopsSeed = seed };
        using var m = new Machine(opts, boundary);
        m.Load(program);
        // block-boundary stops from another thread, as the flush timer and a snapshot ask for them (every ~1 ms)
        int asked = 0, ran = 0;
        using var done = new ManualResetEventSlim();
        var asker = new Thread(() =>
        {
            while (!done.Wait(1))
            {
                boundary.RunAtNextStop(_ => Interlocked.Increment(ref ran));
                asked++;
            }
        }) { IsBackground = true };
        asker.Start();
        int status;
        try
        {
            if (running == null) status = m.Run();
            else
            {
                var guest = Task.Factory.StartNew(m.Run, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                try { running(); }
                catch
                {
                    m.Kernel.PostHostSignal(Sig.TERM); // the guest is not left running (kvserver ends on SIGTERM)
                    guest.Wait(TimeSpan.FromSeconds(30));
                    throw;
                }
                Assert.True(guest.Wait(TimeSpan.FromMinutes(3)), "the recorded guest did not end within 3 minutes");
                status = guest.Result;
            }
        }
        finally
        {
            done.Set();
            Assert.True(asker.Join(TimeSpan.FromSeconds(30)), "the thread asking for stops did not end");
        }
        writer.Flush();
        return new Recorded(status, asked, Volatile.Read(ref ran));
    }

    static void AssertReplaysFaithfully(string log, Recorded rec, string what)
    {
        Assert.True(rec.RanStops > 0, $"{what}: none of the {rec.AskedStops} stops asked from another thread ran");
        using var reader = LogReader.Open(log);
        var verdict = ReplayCheck.Run(reader);
        Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, $"{what}: {verdict.Message}");
        Assert.Contains(" checkpoints", verdict.Message);
        Assert.True(GuestEnv.CountRecords(log, RecordKind.Checkpoint) > 1, $"{what}: the recording took no periodic checkpoint");
    }

    static string TempLog() => Path.Combine(Path.GetTempPath(), $"revirt-stops-{Guid.NewGuid():N}.rvlog");

    /// <summary>threads: four threads race under the time slice (preemptions, futex wake-ups, sched_yield);
    /// itimer and ptimer: timer signals placed at the instruction where the guest noticed them.</summary>
    [Theory]
    [InlineData("threads", 1)]
    [InlineData("itimer", 2)]
    [InlineData("ptimer", 3)]
    public void StopsOnlyTheRecordingMakesLeaveTheReplayFaithful(string guest, int seed)
    {
        string log = TempLog();
        try
        {
            var opts = new MachineOptions { Program = GuestEnv.Guest(guest, "musl"), Cwd = Environment.CurrentDirectory };
            var rec = Record(opts, log, seed);
            // the time slice that preempts is a host timer: a run on a loaded host can end before one fired. That run
            // proves nothing about preemptions, so it is recorded again (a few times at most)
            for (int again = 0; guest == "threads" && again < 4 && GuestEnv.CountRecords(log, RecordKind.Preempt) == 0; again++)
                rec = Record(opts, log, seed);
            Assert.Equal(0, rec.Status);
            if (guest == "threads") Assert.True(GuestEnv.CountRecords(log, RecordKind.Preempt) > 0, "threads: no preemption was recorded in 5 runs");
            else Assert.True(GuestEnv.CountRecords(log, RecordKind.Signal) > 0, $"{guest}: no signal was recorded");
            AssertReplaysFaithfully(log, rec, guest);
        }
        finally { File.Delete(log); }
    }

    /// <summary>kvserver on the in-VM TCP/IP stack (`--net virtual`), served to Linux clients in a network namespace:
    /// network input (NetInput) and transmitted frames (a logged batch each) among the recording-only stops.</summary>
    [Fact]
    public void StopsOnlyTheRecordingMakesLeaveAVirtualNetworkReplayFaithful()
    {
        const string guestIp = "10.213.0.2";
        const int port = 7000, connections = 4, requests = 40;
        using var ns = new TapNamespace(openTap: false);
        string log = TempLog();
        try
        {
            var net = VirtualNetOptions.Parse(guestIp + "/24", null, TapNamespace.TapName, out var err)! with { Namespace = ns.Name };
            Assert.Null(err);
            var opts = new MachineOptions
            {
                Program = GuestEnv.Guest("kvserver", "musl"), Args = [port.ToString(), guestIp], Cwd = Environment.CurrentDirectory, Net = net,
            };
            KvClientReport? report = null;
            var rec = Record(opts, log, seed: 4, running: () =>
            {
                // the server listens once the stack answers a connection (the probe's own is closed at once)
                ns.Exec("timeout", "120", "python3", "-c",
                    $"import socket,time\nfor i in range(1000):\n  try:\n    socket.create_connection(('{guestIp}',{port}),2).close(); break\n  except OSError: time.sleep(0.1)\nelse: raise SystemExit('kvserver never listened')");
                using var clients = KvClients.Start(ns, guestIp, port, connections, requests);
                report = KvClients.Finish(clients, [], TimeSpan.FromMinutes(3));
            });
            Assert.True(report!.Errors.Length == 0, string.Join("\n", report.Errors));
            Assert.Equal(connections * requests, report.Acked);
            Assert.True(report.Bye);
            Assert.Equal(0, rec.Status);
            Assert.True(GuestEnv.CountRecords(log, RecordKind.NetInput) > connections * requests, "too few network inputs were recorded");
            AssertReplaysFaithfully(log, rec, "kvserver --net virtual");
        }
        finally { File.Delete(log); }
    }
}
