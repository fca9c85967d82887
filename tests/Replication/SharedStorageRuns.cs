using ReVirt.Chaos;
using ReVirt.Log;
using Xunit;
using Xunit.Abstractions;
using static ReVirt.Tests.Replication.Replicas;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The two real-process runs the storage tests make of a guest under `primary protect` with a backup: a kill at a
/// seeded moment (<see cref="KillAndTakeOver"/>) and a frozen backup (<see cref="GrowthWhileTheBackupIsFrozen"/>).
/// The guest is /prog in the root, given <c>args</c>; it ends its stdout with <c>stdoutEnd</c> when it succeeds.
/// </summary>
static class SharedStorageRuns
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);

    /// <summary>
    /// One kill: the primary runs the guest on <paramref name="primaryRoot"/>, is SIGKILLed once it printed
    /// <paramref name="killAfter"/> bytes (plus 0-30 ms), and the backup on <paramref name="backupRoot"/> (the same
    /// directory with <paramref name="shared"/>) carries the guest to its end. False when the kill landed after the
    /// guest had finished (nothing taken over).
    /// </summary>
    public static bool KillAndTakeOver(ITestOutputHelper output, string primaryRoot, string backupRoot, bool shared, string[] args, string stdoutEnd, int killAfter, Random rng)
    {
        string arbiter = TempFile(".lock");
        try
        {
            string[] storage = shared ? ["--root", backupRoot, "--shared-storage"] : ["--root", backupRoot];
            var (b, url) = StartBackup([.. storage, "--arbiter", arbiter, "--timeout-ms", "1000"]);
            using var _ = b;
            using var p = Replicas.Primary(["--backup", url, "--root", primaryRoot, "--arbiter", arbiter, "--", "/prog", .. args]);
            var killer = KillWhen(p, () => (int)p.StdoutLength, killAfter, rng);
            int? code = b.WaitForExit(Long);
            killer.Join();
            output.WriteLine($"kill after {killAfter} bytes: primary printed {p.StdoutLength}; backup {code}:\n{b.Stderr}");
            Assert.Equal(0, code);
            if (b.Event(ReplicaEvent.PrimaryFinished) != null) return false;
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            Assert.EndsWith(stdoutEnd, b.StdoutText);
            return true;
        }
        finally { DeleteArbiter(arbiter); }
    }

    /// <summary>What a run with a frozen backup saw (<see cref="GrowthWhileTheBackupIsFrozen"/>): the storage's
    /// progress once every thread of the backup had stopped and when the freeze ended, and the most the output rule
    /// lets the storage show given the records the frozen backup holds.</summary>
    public readonly record struct FrozenRun(long Before, long After, long Allowed)
    {
        public long Growth => After - Before;
    }

    /// <summary>
    /// The output rule watched from outside: once <paramref name="ready"/> holds, the backup (sharing
    /// <paramref name="root"/>) is frozen with SIGSTOP, and from the moment every thread of it has stopped (<see
    /// cref="ReplicaProc.Freeze"/>: a backup still running after kill(2) returned went on acknowledging) it holds
    /// and acknowledges nothing more; <paramref name="onceFrozen"/> runs then. Then <paramref name="allowed"/> gives the most <paramref name="progress"/>
    /// (something the storage shows) may reach, from its value at that moment and the syscall results of the records
    /// the backup acknowledged; the storage is watched over <paramref name="freeze"/>, or, with <paramref name="plant"/>
    /// given, until it went beyond what the log copy held at the freeze (waiting up to 10 s). What the backup
    /// acknowledged is read from the primary (its `revirt_replication_acknowledged` gauge) AFTER the storage was
    /// looked at: a change on the storage was released on an ack the primary had read before, so the gauge covers
    /// its record; and no ack leaves a frozen backup, so the gauge never passes what the backup held at the freeze.
    /// The frozen backup's log copy is not that oracle: the backup acknowledges a burst as soon as it holds it in
    /// memory and writes it to the log copy right after, so a freeze between the two leaves the copy one burst short
    /// of what was acknowledged. Those records are read from the log copy once the run has ended, when it holds
    /// everything the backup received. Then the backup thaws and the guest runs to its end —
    /// on the primary, or with <paramref name="survivor"/> set, on the backup: the primary is SIGKILLed while the
    /// backup is frozen, with changes held whose records the backup holds but never acknowledged, and the backup
    /// takes over (its events are added to <paramref name="survivor"/>). The primary does not slow its guest for
    /// the backup's replay (--max-replay-lag-ms 0): only held changes stop it.
    /// </summary>
    public static FrozenRun GrowthWhileTheBackupIsFrozen(ITestOutputHelper output, string root, string[] args, string stdoutEnd,
        Func<bool> ready, Func<long> progress, Func<long, IReadOnlyList<SyscallResult>, long> allowed, TimeSpan freeze, string? plant, List<ReplicaEventRecord>? survivor,
        Action? onceFrozen = null)
    {
        string arbiter = TempFile(".lock"), logCopy = TempFile(".rvlog");
        try
        {
            var (b, url) = StartBackup("--root", root, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", "30000", "--log", logCopy);
            using var _ = b;
            string[] planted = plant != null ? ["--plant", plant] : [];
            using var p = Replicas.Primary(["--backup", url, "--root", root, "--arbiter", arbiter, "--timeout-ms", "30000", "--max-replay-lag-ms", "0",
                "--metrics-listen", "http://127.0.0.1:0", .. planted, "--", "/prog", .. args]);
            string metrics = p.WaitForEvent(ReplicaEvent.MetricsListening, Long).Str("url")!;
            Assert.True(p.WaitFor(() => ready() || p.HasExited, Long) && ready(), "the guest did not get going");
            b.WaitForEvent(ReplicaEvent.Following, Long);
            long before, after, acknowledged;
            ulong heldAtFreeze;
            try
            {
                Assert.True(b.Freeze(TimeSpan.FromSeconds(30)), "the backup did not stop within 30 s of its SIGSTOP");
                onceFrozen?.Invoke();
                before = progress();
                heldAtFreeze = LastSequence(logCopy);
                if (plant == null) Thread.Sleep(freeze);
                else
                {
                    long bound = allowed(before, HeldSyscalls(logCopy, heldAtFreeze));
                    p.WaitFor(() => progress() > bound || p.HasExited, TimeSpan.FromSeconds(10));
                }
                after = progress();
                // after the storage was looked at (above): the gauge then covers every change the storage showed
                acknowledged = Acknowledged(p, metrics);
            }
            finally
            {
                if (survivor != null) p.KillHard();
                b.Signal(ReplicaProc.SIGCONT);
            }
            var winner = survivor != null ? b : p;
            int? code = winner.WaitForExit(Long);
            output.WriteLine($"{winner.Name}: {code}\n{winner.Stderr}");
            Assert.Equal(0, code);
            Assert.EndsWith(stdoutEnd, winner.StdoutText);
            if (survivor != null) survivor.AddRange(b.Events);
            else b.WaitForExit(Long);
            // a planted primary does not wait for the backup and may have ended: the log copy as frozen (at most one
            // burst short of what was acknowledged, so never a bound the plant could hide behind) stands in
            if (acknowledged < 0 && plant != null) acknowledged = (long)heldAtFreeze;
            Assert.True(acknowledged >= 0, "the primary had ended when the storage was looked at");
            var run = new FrozenRun(before, after, allowed(before, HeldSyscalls(logCopy, (ulong)acknowledged)));
            output.WriteLine($"progress {run.Before} -> {run.After} while the backup was frozen (the {acknowledged} records it acknowledged allow {run.Allowed})");
            return run;
        }
        finally
        {
            DeleteArbiter(arbiter);
            File.Delete(logCopy);
        }
    }

    /// <summary>The newest record the primary's backup acknowledged (its metrics gauge); -1 once the primary ended.</summary>
    static long Acknowledged(ReplicaProc primary, string metricsUrl)
    {
        if (primary.HasExited) return -1;
        try { return (long)MetricsScrape.Sample(metricsUrl, "revirt_replication_acknowledged"); }
        catch (System.Net.Sockets.SocketException) when (primary.HasExited) { return -1; }
    }

    /// <summary>The sequence of the last whole record in a log copy.</summary>
    static ulong LastSequence(string logCopy)
    {
        using var r = LogReader.Open(logCopy);
        foreach (var _ in r.ReadAll()) { }
        return r.LastSequence;
    }

    /// <summary>The syscall results among the records up to <paramref name="upTo"/> in a backup's log copy (up to a
    /// frame a stopped backup was cut off in).</summary>
    static List<SyscallResult> HeldSyscalls(string logCopy, ulong upTo)
    {
        using var r = LogReader.Open(logCopy);
        return r.ReadAll().TakeWhile(x => x.Sequence <= upTo).Where(x => x.Kind == RecordKind.SyscallResult).Select(x => SyscallResult.Decode(x.Payload.Span)).ToList();
    }

    /// <summary>How many file changes a survivor's takeover report says it made again (null: no such line).</summary>
    public static int? ChangesMadeAgain(IEnumerable<ReplicaEventRecord> events)
        => events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail")!)
            .Select(d => System.Text.RegularExpressions.Regex.Match(d, @"^shared storage: (\d+) file changes"))
            .Where(m => m.Success).Select(m => (int?)int.Parse(m.Groups[1].Value)).FirstOrDefault();
}
