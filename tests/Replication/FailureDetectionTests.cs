using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The backup's silence bound (<c>--primary-silence-ms</c>) on a busy data link. A primary heartbeats only a link that
/// has been idle for its heartbeat interval; a guest that writes without pause keeps the link busy with batches from
/// its first record on, so no heartbeat is ever sent. Such a primary, frozen, must still be declared lost after the
/// silence bound (its batches were its liveness), not after the long time-out (<c>--timeout-ms</c>) that applies
/// before the session's first message. Armed by the first heartbeat only (before 2026-12-01), the bound never was
/// here and the backup waited out the time-out, on both transports.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class FailureDetectionTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    // a heartbeat interval of 375 ms (the bound / 8): the guest's records come far more often than that. The bound
    // is long enough for a loaded 2-core machine (a false loss before the freeze would still give the same reason)
    const int SilenceMs = 3000;
    const string TimeoutMs = "60000";

    [Theory]
    [InlineData("unix")]
    [InlineData("tcp")]
    public void AFrozenPrimaryWhoseGuestNeverIdlesIsLostAfterTheSilenceBound(string transport)
    {
        string arbiter = Replicas.TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", TimeoutMs, "--primary-silence-ms", SilenceMs.ToString());
        using var _ = b;
        // counter: a line per 2,000 iterations, each line a clock read and a write, without end
        using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", TimeoutMs, "--heartbeat-ms", "1000",
            "--data-link", transport, "--", GuestEnv.Guest("counter", "musl"), "100000000", "2000");
        try
        {
            Assert.Equal(transport, p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));
            // lines released through the output gate: batches and acks have been crossing for a while
            Assert.True(p.WaitForStdoutBytes(100_000, Long), "the primary's guest printed too little:\n" + p.Stderr);
            p.Signal(ReplicaProc.SIGSTOP);
            var frozenAt = System.Diagnostics.Stopwatch.StartNew();
            // the bound plus a loaded machine's margin, far below the time-out
            var lost = b.WaitForEvent(ReplicaEvent.PrimaryLost, TimeSpan.FromMilliseconds(SilenceMs * 5));
            output.WriteLine($"{transport}: lost {frozenAt.ElapsedMilliseconds} ms after the freeze: {lost.Str("reason")}; longest silence before {lost.Num("longestSilenceMs")} ms ({lost.Str("silences")})");
            Assert.Equal($"no batch or heartbeat for {SilenceMs} ms", lost.Str("reason"));
        }
        finally
        {
            p.Signal(ReplicaProc.SIGCONT);
            Replicas.DeleteArbiter(arbiter);
        }
    }
    /// <summary>
    /// A backup frozen while its primary goes on shipping, then the primary killed, then the backup thawed: the kernel
    /// answers the backup's first acknowledgement to the dead primary with EPIPE (same-host socket) or a reset (TCP),
    /// while every record the primary shipped is still readable from the backup's socket. The backup must read and
    /// replay all of them before it goes live. The primary may run --max-lag-records unacknowledged records ahead of
    /// the backup's last ack, and every ack the backup sent before the freeze reached the live primary, so once its
    /// guest stops at that bound it has shipped at least (the backup's log copy at the freeze) + bound + 1 records;
    /// the backup's takeover must come after all of them. Oracle cross-check: the primary's own --log file, read after
    /// the kill (a prefix of what it shipped). Before the fix the failed write ended the reading: the backup took over
    /// after the first 64 KiB it read after the thaw (~1,000 records short), on both transports.
    /// </summary>
    [Theory]
    [InlineData("unix")]
    [InlineData("tcp")]
    public void ABackupThawedAfterItsPrimaryDiedReplaysEveryRecordInItsSocket(string transport) => FrozenBackupThawedAfterThePrimaryDied(transport, atFirstMessage: false);

    /// <summary>
    /// The same with the backup frozen at its first message: as soon as it reports <c>following</c> (the primary's
    /// first message after the welcome came), before it acknowledged any record, so all the records the primary
    /// ships meanwhile wait in its socket and its log copy is empty or nearly so. Seen once in a drill: such a backup,
    /// thawed after its primary was killed, read nothing from its socket and ran the guest from record 0. It must
    /// read every record the primary shipped and go live only after the last.
    /// </summary>
    [Theory]
    [InlineData("unix")]
    [InlineData("tcp")]
    public void ABackupFrozenAtItsFirstMessageAndThawedAfterItsPrimaryDiedReplaysEveryRecordInItsSocket(string transport) => FrozenBackupThawedAfterThePrimaryDied(transport, atFirstMessage: true);

    void FrozenBackupThawedAfterThePrimaryDied(string transport, bool atFirstMessage)
    {
        const int Bound = 4000; // records: ~200 KB of counter records, beyond one 64 KiB read of the link
        const int LinesInAll = 6000;
        string arbiter = Replicas.TempFile(".lock"), primaryLog = Replicas.TempFile(".rvlog");
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", TimeoutMs);
        using var _ = b;
        // counter: each line a clock read and a write; --max-replay-lag-ms 0: only the bound on unacknowledged
        // records stops the guest while the backup is frozen
        using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--timeout-ms", TimeoutMs, "--data-link", transport,
            "--max-replay-lag-ms", "0", "--max-lag-records", Bound.ToString(), "--log", primaryLog,
            "--", GuestEnv.Guest("counter", "musl"), LinesInAll.ToString(), "2000");
        try
        {
            Assert.Equal(transport, p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));
            string copy = b.WaitForEvent(ReplicaEvent.Following, Long).Str("log")!;
            if (!atFirstMessage) Assert.True(p.WaitFor(() => Replicas.Lines(p.Stdout) >= 100, Long), "the primary's guest printed too little:\n" + p.Stderr);
            Assert.True(b.Freeze(TimeSpan.FromSeconds(30)), "the backup did not stop within 30 s of its SIGSTOP");
            ulong copyHeld = LastSequence(copy);
            // the guest stops at the bound: its log stops growing (the primary's log file is written in 64 KiB steps).
            // Unchanged for 2 s is not enough on its own: on a loaded machine the primary can go 2 s without writing
            // its first step (an empty file was taken for a guest at its bound), so the file must also hold more than
            // the 1,000 records beyond the copy that the assertion below needs
            long size = -1;
            Assert.True(p.WaitFor(() =>
                {
                    long now = new FileInfo(primaryLog).Length;
                    if (now == size && WrittenBeyond(primaryLog, copyHeld + 1000)) return true;
                    size = now; Thread.Sleep(2000); return false;
                }, Long),
                "the primary's guest did not stop at its bound on unacknowledged records");
            Assert.False(p.HasExited, "the guest ended before its bound:\n" + p.Stderr);
            p.KillHard();
            p.WaitForExit(Long);
            b.Signal(ReplicaProc.SIGCONT);
            ulong shippedAtLeast = copyHeld + Bound + 1, primaryWrote = LastSequence(primaryLog);
            var lost = b.WaitForEvent(ReplicaEvent.PrimaryLost, Long);
            var took = b.WaitForEvent(ReplicaEvent.TookOver, Long);
            ulong record = (ulong)took.Long("record")!.Value;
            output.WriteLine($"{transport}: log copy at the freeze #{copyHeld}, primary's log file #{primaryWrote}, shipped at least #{shippedAtLeast}; lost: {lost.Str("reason")} (ack failed: {lost.Str("ackFailed") ?? "no"}); took over after record #{record}");
            Assert.True(primaryWrote > copyHeld + 1000, $"the primary's log file holds #{primaryWrote}, the log copy held #{copyHeld} at the freeze: too few records shipped meanwhile");
            Assert.True(record >= shippedAtLeast && record >= primaryWrote,
                $"the backup took over after record #{record}; the primary had shipped at least #{Math.Max(shippedAtLeast, primaryWrote)}:\n{b.Stderr}");
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.Equal(LinesInAll, Replicas.Lines(p.Stdout) + Replicas.Lines(b.Stdout));
            Assert.StartsWith($"line {LinesInAll - 1} ", b.StdoutText.Split('\n')[^2]);
        }
        finally
        {
            b.Signal(ReplicaProc.SIGCONT);
            Replicas.DeleteArbiter(arbiter);
            File.Delete(primaryLog);
        }
    }

    /// <summary>Whether a log file being written holds a record after <paramref name="sequence"/> (false while it is
    /// too short to hold even its header).</summary>
    static bool WrittenBeyond(string path, ulong sequence)
    {
        try { return LastSequence(path) > sequence; }
        catch (ReVirt.Log.LogFormatException) { return false; }
    }

    /// <summary>The last record of a log file, up to a frame it was cut off in.</summary>
    static ulong LastSequence(string path)
    {
        using var r = ReVirt.Log.LogReader.Open(path);
        foreach (var _ in r.ReadAll()) { }
        return r.LastSequence;
    }
}
