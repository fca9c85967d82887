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
    /// (something the storage shows) may reach, from its value at that moment and the syscall results the backup's
    /// log copy holds; the storage is watched over <paramref name="freeze"/>, or, with <paramref name="plant"/>
    /// given, until it went beyond that (waiting up to 10 s). Then the backup thaws and the guest runs to its end —
    /// on the primary, or with <paramref name="survivor"/> set, on the backup: the primary is SIGKILLed while the
    /// backup is frozen, with changes held whose records the backup holds but never acknowledged, and the backup
    /// takes over (its events are added to <paramref name="survivor"/>). The primary does not slow its guest for
    /// the backup's replay (--max-replay-lag-ms 0): only held changes stop it.
    /// </summary>
    public static FrozenRun GrowthWhileTheBackupIsFrozen(ITestOutputHelper output, string root, string[] args, string stdoutEnd,
        Func<bool> ready, Func<long> progress, Func<long, IReadOnlyList<SyscallResult>, long> allowed, TimeSpan freeze, string? plant, List<ReplicaEventRecord>? survivor,
        Action? onceFrozen = null)
    {
        string arbiter = TempFile(".lock");
        try
        {
            var (b, url) = StartBackup("--root", root, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", "30000");
            using var _ = b;
            string[] planted = plant != null ? ["--plant", plant] : [];
            using var p = Replicas.Primary(["--backup", url, "--root", root, "--arbiter", arbiter, "--timeout-ms", "30000", "--max-replay-lag-ms", "0", .. planted, "--", "/prog", .. args]);
            Assert.True(p.WaitFor(() => ready() || p.HasExited, Long) && ready(), "the guest did not get going");
            string logCopy = b.WaitForEvent(ReplicaEvent.Following, Long).Str("log")!;
            FrozenRun run;
            try
            {
                Assert.True(b.Freeze(TimeSpan.FromSeconds(30)), "the backup did not stop within 30 s of its SIGSTOP");
                onceFrozen?.Invoke();
                long before = progress(), bound = allowed(before, HeldSyscalls(logCopy));
                if (plant == null) Thread.Sleep(freeze);
                else p.WaitFor(() => progress() > bound || p.HasExited, TimeSpan.FromSeconds(10));
                run = new FrozenRun(before, progress(), bound);
            }
            finally
            {
                if (survivor != null) p.KillHard();
                b.Signal(ReplicaProc.SIGCONT);
            }
            output.WriteLine($"progress {run.Before} -> {run.After} while the backup was frozen (the records it held allow {run.Allowed})");
            var winner = survivor != null ? b : p;
            int? code = winner.WaitForExit(Long);
            output.WriteLine($"{winner.Name}: {code}\n{winner.Stderr}");
            Assert.Equal(0, code);
            Assert.EndsWith(stdoutEnd, winner.StdoutText);
            if (survivor != null) survivor.AddRange(b.Events);
            else b.WaitForExit(Long);
            return run;
        }
        finally { DeleteArbiter(arbiter); }
    }

    /// <summary>The syscall results in a (stopped) backup's log copy: what it holds, up to a frame it was cut off in.</summary>
    static List<SyscallResult> HeldSyscalls(string logCopy)
    {
        using var r = LogReader.Open(logCopy);
        return r.ReadAll().Where(x => x.Kind == RecordKind.SyscallResult).Select(x => SyscallResult.Decode(x.Payload.Span)).ToList();
    }

    /// <summary>How many file changes a survivor's takeover report says it made again (null: no such line).</summary>
    public static int? ChangesMadeAgain(IEnumerable<ReplicaEventRecord> events)
        => events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail")!)
            .Select(d => System.Text.RegularExpressions.Regex.Match(d, @"^shared storage: (\d+) file changes"))
            .Where(m => m.Success).Select(m => (int?)int.Parse(m.Groups[1].Value)).FirstOrDefault();
}
