using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Replication;

namespace ReVirt.Primary;

/// <summary>`primary protect`: runs the guest recording, streaming its log to the backup.</summary>
/// <remarks>No generic host (Microsoft.Extensions.Hosting): it ran this one service and nothing else, and its
/// framework (Microsoft.AspNetCore.App) was then part of every start of this program, `run` included: the host
/// resolved and listed that framework's assemblies at each start (about 4 % of the CPU of a `run` of busybox
/// true). The service runs on the thread pool as a hosted BackgroundService's body does, this thread waiting.</remarks>
public static class ProtectHost
{
    /// <param name="metrics">`--metrics-listen`: its final values are reported as the replica ends.</param>
    public static int Run(ProtectSettings settings, MachineOptions opts, ulong checkpointInterval, bool stats, MetricsEndpoint? metrics = null)
    {
        Replication.ThreadPools.ForLowLatency();
        if (!Directory.Exists(opts.Root)) { Console.Error.WriteLine($"primary: --root {opts.Root}: no such directory"); return 2; }
        var svc = new ProtectService(settings, opts, checkpointInterval, stats, metrics);
        return svc.Run();
    }
}

sealed class ProtectService(ProtectSettings settings, MachineOptions opts, ulong checkpointInterval, bool stats, MetricsEndpoint? metrics)
{
    static TextWriter Log => Console.Error;

    /// <summary>Runs the protected guest to its end; the exit status (1 when the run failed with an exception,
    /// after saying why). The final metrics and the exit event are reported in every case.</summary>
    public int Run() => Task.Run(RunToEnd).GetAwaiter().GetResult();

    async Task<int> RunToEnd()
    {
        int exitCode = 1;
        try { exitCode = await RunAsync(); }
        catch (Exception e) { Log.WriteLine($"primary: {e.Message}"); exitCode = 1; }
        finally
        {
            metrics?.EmitFinal(settings.Events);
            settings.Events.Emit(ReplicaEvent.Exit, ("status", exitCode));
        }
        return exitCode;
    }

    async Task<int> RunAsync()
    {
        HashedProgram read;
        try { read = Recording.ReadProgram(opts); }
        catch (ElfLoadException e) { Log.WriteLine($"primary: {e.Message}"); return e.ExitStatus; }
        var program = read.Program;
        var header = Recording.Header(opts, read, checkpointInterval);
        var encoded = header.Encode();
        string storePath = settings.LogPath ?? Path.Combine(Path.GetTempPath(), $"revirt-primary-{Environment.ProcessId}.rvlog");
        using var store = LogStore.Create(storePath);
        try { return await RunProtected(header, encoded, program, store); }
        finally { if (settings.LogPath == null) try { File.Delete(storePath); } catch (IOException) { } }
    }

    async Task<int> RunProtected(LogHeader header, byte[] encoded, StartProgram program, LogStore store)
    {
        var client = new ReplicationClient(settings, Log, store);
        try { await client.ConnectAsync(encoded); }
        catch (ReplicationRefusedException e)
        {
            Log.WriteLine($"primary: refused: {e.Message}");
            settings.Events.Emit(ReplicaEvent.Refused, ("reason", e.Message));
            return 2;
        }
        Log.WriteLine($"primary: protected by {client.BackupId} at {settings.BackupUrl} (data link: {client.DataLinkName})");
        settings.Events.Emit(ReplicaEvent.Protected, ("backup", client.BackupId), ("url", settings.BackupUrl), ("term", client.Term), ("dataLink", client.DataLinkName));

        var writer = new LogWriter(header, client);
        var boundary = new RecordingBoundary(writer, header.CheckpointInterval) { Gate = client.Gate, ShipAfterMicroseconds = settings.ShipAfterMicroseconds };
        client.Snapshots = boundary; // a standby joins from a snapshot of the running machine (with the changed files when its root is its own)
        int status = 0;
        ulong icount = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Exception? failure = null;
        SyscallCounts? calls = null;
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var guest = new Thread(() =>
        {
            try { RunGuest(); } finally { ended.SetResult(); }
        }, 64 << 20) { Name = "guest" };
        void RunGuest()
        {
            try
            {
                using var m = new Machine(opts, boundary);
                calls = m.Kernel.SyscallStats;
                m.Load(program); // the very bytes the header's hash is of
                status = m.Run();
                icount = m.InstructionCount;
            }
            catch (ElfLoadException e) { Log.WriteLine($"primary: {e.Message}"); status = e.ExitStatus; }
            catch (Exception e) { failure = e; }
        }
        guest.Start();
        await ended.Task; // no pool thread is parked on the guest: the replication tasks need them all
        if (failure != null) throw failure;
        if (client.Fenced()) return 3;
        await client.FinishAsync(writer.LastSequence, status);
        if (client.Fenced()) return 3;
        // what the guest sent last (and the closes queued behind it) reaches its peers before this process ends
        if (!client.Gate.WaitSocketsReleased(TimeSpan.FromSeconds(2)))
            Log.WriteLine($"primary: {client.Gate.SocketHeldBytes} bytes held for sockets whose peers stopped reading were not delivered");
        if (stats)
        {
            var (held, heldP50, heldP99) = client.Gate.HoldTimes.Summary();
            var (socks, sockP50, sockP99) = client.Gate.SocketHoldTimes.Summary();
            var (acks, lagP50, lagP99) = client.Lags.Summary();
            var (trails, trailP50, trailP99) = client.ReplayTrails.Summary();
            var (trips, tripP50, tripP99) = client.RoundTrips.Summary();
            var (ships, shipP50, shipP99) = boundary.ShipWaits?.Summary() ?? default;
            var (releases, releaseP50, releaseP99) = client.Gate.AckReleaseTimes.Summary();
            long creditWaits = client.Gate.CreditWaitTimes.Count;
            double s = sw.Elapsed.TotalSeconds;
            Log.WriteLine($"primary: {icount} guest instructions in {s:F3} s, exit status {status}");
            if (calls != null) Log.WriteLine($"primary: guest syscalls: {calls.Describe(SyscallCounts.ShownByStats)}");
            Log.WriteLine($"primary: log {writer.LastSequence} records, {writer.BytesWritten} bytes ({writer.BytesWritten / s / 1e6:F2} MB/s), {client.Batches} batches ({client.HandedOffBatches} handed to the sender thread, {client.BatchesShippedAtAck} shipped by the ack thread); throttled {client.Throttled.TotalMilliseconds:F0} ms ({client.ThrottledForReplay.TotalMilliseconds:F0} ms for the backup's replay; the replay stalled {client.ReplayStalls} times)");
            Log.WriteLine($"primary: output commit: {held} outputs held, p50 {heldP50:F3} ms, p99 {heldP99:F3} ms");
            Log.WriteLine($"primary: output commit: {socks} socket sends held, p50 {sockP50:F3} ms, p99 {sockP99:F3} ms; {creditWaits} waited for credit");
            Log.WriteLine($"primary: backup lag: {acks} acks, p50 {lagP50:F3} ms, p99 {lagP99:F3} ms (age of the oldest record each ack covered)");
            Log.WriteLine($"primary: link round trip: {trips} acks, p50 {tripP50:F3} ms, p99 {tripP99:F3} ms (from the send of the newest batch each ack covered)");
            Log.WriteLine($"primary: before shipping: {ships} batches, p50 {shipP50:F3} ms, p99 {shipP99:F3} ms (how long the oldest record holding output waited on the guest thread)");
            Log.WriteLine($"primary: release: {releases} acks, p50 {releaseP50:F3} ms, p99 {releaseP99:F3} ms (from an ack's arrival at the gate to the last host send it made)");
            var path = client.BatchPath();
            var (sends, sendP50, sendP99) = path.Send.Summary();
            var (tos, toP50, toP99) = path.ToBackup.Summary();
            var (holds, holdP50, holdP99) = path.BackupHold.Summary();
            var (backs, backP50, backP99) = path.ToAckThread.Summary();
            Log.WriteLine($"primary: batch path: send {sends} batches, p50 {sendP50:F3} ms, p99 {sendP99:F3} ms (encode and write); to the backup's link thread {tos}, p50 {toP50:F3} ms, p99 {toP99:F3} ms; " +
                $"backup holds to ack {holds}, p50 {holdP50:F3} ms, p99 {holdP99:F3} ms; ack to this ack thread {backs}, p50 {backP50:F3} ms, p99 {backP99:F3} ms (the ways there and back: same-host links only)");
            var reads = client.AckReads;
            Log.WriteLine($"primary: ack thread: {reads.Acks} acks read, applied in {reads.Passes} passes");
            Log.WriteLine($"primary: host GC: {GC.GetTotalAllocatedBytes() >> 20} MB allocated, {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)} collections (gen 0/1/2), {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms paused");
            // contended lock acquisitions of the whole process (the output gate's lock is shared by the guest thread and
            // the threads that release output): a diagnostic of the primary's per-request cost, not a per-lock figure
            Log.WriteLine($"primary: {Monitor.LockContentionCount} contended lock acquisitions in this process");
            Log.WriteLine($"primary: backup replay trail: {trails} acks, p50 {trailP50:F3} ms, p99 {trailP99:F3} ms (age of the oldest record not replayed yet, at each ack)");
            settings.Events.Emit(ReplicaEvent.Stats, ("instructions", icount), ("seconds", s), ("records", writer.LastSequence), ("logBytes", writer.BytesWritten),
                ("batches", client.Batches), ("handedOffBatches", client.HandedOffBatches), ("outputsHeld", held), ("outputHoldP50Ms", heldP50), ("outputHoldP99Ms", heldP99),
                ("socketSendsHeld", socks), ("socketHoldP50Ms", sockP50), ("socketHoldP99Ms", sockP99), ("creditWaits", creditWaits),
                ("acks", acks), ("lagP50Ms", lagP50), ("lagP99Ms", lagP99), ("roundTripP50Ms", tripP50), ("roundTripP99Ms", tripP99), ("shipWaitP50Ms", shipP50), ("shipWaitP99Ms", shipP99), ("releaseP50Ms", releaseP50), ("releaseP99Ms", releaseP99), ("sendP50Ms", sendP50), ("sendP99Ms", sendP99), ("toBackupP50Ms", toP50), ("toBackupP99Ms", toP99), ("backupHoldP50Ms", holdP50), ("backupHoldP99Ms", holdP99), ("toAckThreadP50Ms", backP50), ("toAckThreadP99Ms", backP99), ("replayTrailP50Ms", trailP50), ("replayTrailP99Ms", trailP99), ("throttledMs", client.Throttled.TotalMilliseconds),
                ("replayThrottledMs", client.ThrottledForReplay.TotalMilliseconds), ("replayStalls", client.ReplayStalls));
        }
        return status;
    }
}
