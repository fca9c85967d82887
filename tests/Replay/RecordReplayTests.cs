using System.Text;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>Recordings of nondeterministic programs replay to exactly their own recorded output; damaged logs are refused.</summary>
public class RecordReplayTests
{
    static RunOutcome Record(string log, string prog, string[] args, byte[]? stdin = null, string[]? extra = null)
    {
        var a = new List<string> { "record", "--log", log };
        if (extra != null) a.AddRange(extra);
        a.Add("--"); a.Add(prog); a.AddRange(args);
        return GuestEnv.Dotnet(GuestEnv.PrimaryDll, a.ToArray(), stdin);
    }

    static RunOutcome Replay(string log, bool show = true)
        => GuestEnv.Dotnet(GuestEnv.BackupDll, show ? new[] { "replay", "--log", log, "--show-output" } : new[] { "replay", "--log", log });

    static string TempLog() => Path.Combine(Path.GetTempPath(), $"revirt-{Guid.NewGuid():N}.rvlog");

    public static IEnumerable<object[]> NondeterministicGuests()
    {
        foreach (var libc in new[] { "glibc", "musl" })
        {
            yield return new object[] { "nondet_time", libc };
            yield return new object[] { "nondet_random", libc };
            yield return new object[] { "itimer", libc };
            yield return new object[] { "threads", libc };
            yield return new object[] { "ptimer", libc };
        }
    }

    [Theory]
    [MemberData(nameof(NondeterministicGuests))]
    public void TwoRecordingsDifferAndEachReplaysItsOwn(string name, string libc)
    {
        string prog = GuestEnv.Guest(name, libc);
        string l1 = TempLog(), l2 = TempLog();
        try
        {
            var r1 = Record(l1, prog, Array.Empty<string>(), extra: new[] { "--checkpoint-interval", "200000" });
            Thread.Sleep(1100); // a guest that prints the time in seconds differs only in another second
            var r2 = Record(l2, prog, Array.Empty<string>(), extra: new[] { "--checkpoint-interval", "200000" });
            Assert.True(r1.ExitCode == 0, r1.Stderr);
            Assert.True(r2.ExitCode == 0, r2.Stderr);
            Assert.NotEqual(r1.StdoutText, r2.StdoutText);
            foreach (var (log, rec) in new[] { (l1, r1), (l2, r2) })
            {
                var rp = Replay(log);
                Assert.True(rp.ExitCode == 0, rp.Stderr);
                Assert.Equal(rec.StdoutText, rp.StdoutText);
            }
        }
        finally { File.Delete(l1); File.Delete(l2); }
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void StdinIsRecorded(string libc)
    {
        string log = TempLog();
        try
        {
            var rec = Record(log, GuestEnv.Guest("nondet_stdin", libc), Array.Empty<string>(), Encoding.ASCII.GetBytes("hello, replay\nsecond line\n"));
            Assert.Equal(0, rec.ExitCode);
            var rp = Replay(log); // no stdin now: it comes from the log
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
        }
        finally { File.Delete(log); }
    }

    [Theory]
    [InlineData("awk", "BEGIN{srand(); print rand(), rand(), srand()}")]
    [InlineData("sort", "-n")]
    public void BusyboxRecordsAndReplays(string applet, string arg)
    {
        string log = TempLog();
        try
        {
            var input = Encoding.ASCII.GetBytes(string.Join("\n", Enumerable.Range(0, 200).Select(i => $"line {i * 7919 % 1000}")) + "\n");
            var rec = Record(log, "/bin/busybox", new[] { applet, arg }, input);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            var rp = Replay(log);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.StdoutText, rp.StdoutText);
        }
        finally { File.Delete(log); }
    }

    [Fact]
    public void SigintToTheRecorderIsPlacedExactlyAndReplayed()
    {
        string log = TempLog();
        try
        {
            // SIGINT at its default disposition in the recorder whatever the test host inherited: a process started
            // with SIGINT ignored (from a shell's background job, nohup-like) keeps it ignored, as the runtime and a
            // native program both do, and the signal would rightly never reach the guest (env execs, same pid)
            using var p = System.Diagnostics.Process.Start(Child.StartInfo("env",
                ["--default-signal=INT", "dotnet", GuestEnv.PrimaryDll, "record", "--log", log, "--checkpoint-interval", "20000000", "--", GuestEnv.Guest("bench", "musl"), "1000"]))!;
            p.StandardInput.Close();
            var err = p.StandardError.ReadToEndAsync();
            var outp = p.StandardOutput.ReadToEndAsync();
            // the guest runs (and the recorder handles SIGINT) once a checkpoint is in the log: the header alone is
            // written before the program is even loaded, when a SIGINT would still end the recorder itself (an
            // interval well inside the guest's run, whatever the default: the first checkpoint must come before its end)
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(120) && !p.HasExited && !HasCheckpoint(log)) Thread.Sleep(100);
            Assert.False(p.HasExited, "the guest should still be computing");
            // how the recorder's host threads stand towards SIGINT (a blocked or ignored SIGINT, inherited from the
            // test host, would keep the recorder from ever seeing it): reported when the exit status is wrong
            string signalState = SignalLines(p.Id);
            Assert.Equal(0, Kill(p.Id, 2));
            Assert.True(p.WaitForExit(60_000));
            Assert.True(p.ExitCode == 130, // the guest has no handler: SIGINT's default action ends it
                $"exit status {p.ExitCode}, not 130; recorder's signal state before the kill:\n{signalState}\nits stderr:\n{TextOf(err)}");
            var rp = Replay(log);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(130, GuestEnv.RecordedExitStatus(log));
            var dump = GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "log", log });
            Assert.Contains("SIGINT", dump.StdoutText);
        }
        finally { File.Delete(log); }
    }

    /// <summary>What a reader of an exited process's stream got (bounded).</summary>
    static string TextOf(Task<string> read) => read.Wait(10_000) ? read.Result : "(not read within 10 s)";

    /// <summary>The Sig* lines of /proc/PID/status and of each of its threads (blocked, ignored, caught, pending).</summary>
    static string SignalLines(int pid)
    {
        var sb = new StringBuilder();
        try
        {
            foreach (var l in File.ReadLines($"/proc/{pid}/status")) if (l.StartsWith("Sig") || l.StartsWith("ShdPnd")) sb.AppendLine(l);
            foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            {
                string name = File.ReadAllText(Path.Combine(task, "comm")).Trim();
                string blk = File.ReadLines(Path.Combine(task, "status")).FirstOrDefault(l => l.StartsWith("SigBlk")) ?? "";
                sb.AppendLine($"  thread {Path.GetFileName(task)} {name}: {blk}");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { sb.AppendLine($"(unreadable: {e.Message})"); }
        return sb.ToString();
    }

    /// <summary>True when the (growing) log already holds a checkpoint record; a torn tail is fine.</summary>
    static bool HasCheckpoint(string log)
    {
        try
        {
            using var f = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var r = new ReVirt.Log.LogReader(f);
            while (r.TryRead(out var rec)) if (rec.Kind == ReVirt.Log.RecordKind.Checkpoint) return true;
        }
        catch (Exception) { } // a header still being written, a file not yet there: not yet
        return false;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill")]
    static extern int Kill(int pid, int sig);

    [Fact]
    public void TamperedLogsAreRefused()
    {
        string prog = GuestEnv.Guest("nondet_random", "musl");
        string log = TempLog();
        try
        {
            Assert.Equal(0, Record(log, prog, Array.Empty<string>()).ExitCode);
            var good = File.ReadAllBytes(log);

            // a flipped byte in the middle of the records
            var flipped = (byte[])good.Clone();
            flipped[good.Length * 2 / 3] ^= 0x40;
            File.WriteAllBytes(log, flipped);
            var r = Replay(log);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("checksum mismatch", r.Stderr);

            // a truncated tail: replays what it has and reports that the recording ended early (exit status 3)
            File.WriteAllBytes(log, good.AsSpan(0, good.Length - 5).ToArray());
            r = Replay(log);
            Assert.Equal(3, r.ExitCode);

            // another format version
            var v = (byte[])good.Clone();
            v[8] = 9;
            File.WriteAllBytes(log, v);
            r = Replay(log);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("format version", r.Stderr);

            // another program at the recorded path
            string copy = Path.Combine(Path.GetTempPath(), $"revirt-prog-{Guid.NewGuid():N}");
            File.Copy(prog, copy);
            try
            {
                string log2 = TempLog();
                Assert.Equal(0, Record(log2, copy, Array.Empty<string>()).ExitCode);
                File.Copy(GuestEnv.Guest("nondet_time", "musl"), copy, overwrite: true);
                r = Replay(log2);
                Assert.Equal(2, r.ExitCode);
                Assert.Contains("not the program that was recorded", r.Stderr);
                File.Delete(log2);
            }
            finally { File.Delete(copy); }
        }
        finally { File.Delete(log); }
    }
}
