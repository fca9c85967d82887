using ReVirt.Chaos;
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

    /// <summary>
    /// The output rule watched from outside: once <paramref name="ready"/> holds, the backup (sharing
    /// <paramref name="root"/>) is frozen with SIGSTOP, so it acknowledges nothing; returns how much
    /// <paramref name="progress"/> (something the storage shows) grew over <paramref name="freeze"/>, or, with
    /// <paramref name="plant"/> given, once it grew beyond <paramref name="bound"/> (waiting up to 10 s). Then the
    /// backup thaws and the guest runs to its end — on the primary, or with <paramref name="survivor"/> set, on the
    /// backup: the primary is SIGKILLed while the backup is frozen, with changes held whose records the backup holds
    /// but never acknowledged, and the backup takes over (its events are added to <paramref name="survivor"/>). The
    /// primary does not slow its guest for the backup's replay (--max-replay-lag-ms 0): only held changes stop it.
    /// </summary>
    public static long GrowthWhileTheBackupIsFrozen(ITestOutputHelper output, string root, string[] args, string stdoutEnd,
        Func<bool> ready, Func<long> progress, long bound, TimeSpan freeze, string? plant, List<ReplicaEventRecord>? survivor)
    {
        string arbiter = TempFile(".lock");
        try
        {
            var (b, url) = StartBackup("--root", root, "--shared-storage", "--arbiter", arbiter, "--timeout-ms", "30000");
            using var _ = b;
            string[] planted = plant != null ? ["--plant", plant] : [];
            using var p = Replicas.Primary(["--backup", url, "--root", root, "--arbiter", arbiter, "--timeout-ms", "30000", "--max-replay-lag-ms", "0", .. planted, "--", "/prog", .. args]);
            Assert.True(p.WaitFor(() => ready() || p.HasExited, Long) && ready(), "the guest did not get going");
            b.Signal(ReplicaProc.SIGSTOP);
            long before, after;
            try
            {
                before = progress();
                if (plant == null) Thread.Sleep(freeze);
                else p.WaitFor(() => progress() > before + bound || p.HasExited, TimeSpan.FromSeconds(10));
                after = progress();
            }
            finally
            {
                if (survivor != null) p.KillHard();
                b.Signal(ReplicaProc.SIGCONT);
            }
            output.WriteLine($"progress {before} -> {after} while the backup was frozen");
            var winner = survivor != null ? b : p;
            int? code = winner.WaitForExit(Long);
            output.WriteLine($"{winner.Name}: {code}\n{winner.Stderr}");
            Assert.Equal(0, code);
            Assert.EndsWith(stdoutEnd, winner.StdoutText);
            if (survivor != null) survivor.AddRange(b.Events);
            else b.WaitForExit(Long);
            return after - before;
        }
        finally { DeleteArbiter(arbiter); }
    }

    /// <summary>How many file changes a survivor's takeover report says it made again (null: no such line).</summary>
    public static int? ChangesMadeAgain(IEnumerable<ReplicaEventRecord> events)
        => events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail")!)
            .Select(d => System.Text.RegularExpressions.Regex.Match(d, @"^shared storage: (\d+) file changes"))
            .Where(m => m.Success).Select(m => (int?)int.Parse(m.Groups[1].Value)).FirstOrDefault();
}
