using ReVirt.Log;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// read(2) of a regular file fills guest memory in place (no host buffer): guests/src/readpath.c reads across pages,
/// short at the end of a file, past it, into bad buffers (EFAULT), a read-only mapping, fresh pages, a copy-on-write
/// page after fork, and over code it runs, and prints sums of what it read. The oracle is the same binary run
/// natively; the VM must print the same in every tier, and a recording (stable reads by reference, fresh-file
/// reads by value) must replay to the same output in another tier.
/// </summary>
public class ReadPathTests(ReadPathTests.AgedFiles aged) : IClassFixture<ReadPathTests.AgedFiles>
{
    /// <summary>Identical files of random bytes old enough to be recorded by reference (a recording logs a file by
    /// reference only when it was last changed more than 2 s before the recorder started), one per use, since a run
    /// that changes one makes it unstable for good.</summary>
    public sealed class AgedFiles : IDisposable
    {
        public readonly string Dir = Directory.CreateTempSubdirectory("revirt-read-aged").FullName;
        public const int Size = 512 * 1024;
        int _next;

        public AgedFiles()
        {
            var data = new byte[Size];
            new Random(11).NextBytes(data);
            for (int i = 0; i < 7; i++) File.WriteAllBytes(Path.Combine(Dir, $"f{i}"), data);
            Thread.Sleep(TimeSpan.FromSeconds(2.5));
        }

        /// <summary>A file no run has used yet.</summary>
        public string Take() => Path.Combine(Dir, $"f{Interlocked.Increment(ref _next) - 1}");

        public void Dispose() => Directory.Delete(Dir, true);
    }

    /// <summary>Older than any run, larger than one call's page list (busybox-static is a test dependency).</summary>
    const string StableFile = "/bin/busybox";

    public static IEnumerable<object[]> Tiers()
    {
        foreach (var libc in new[] { "glibc", "musl" })
            foreach (var tier in new[] { "Interpreter", "Compiled", "Default" })
                yield return new object[] { libc, tier };
    }

    [Theory]
    [MemberData(nameof(Tiers))]
    public void ReadsMatchTheNativeRun(string libc, string tier)
    {
        string prog = GuestEnv.Guest("readpath", libc);
        string d1 = Directory.CreateTempSubdirectory("revirt-read-native").FullName;
        string d2 = Directory.CreateTempSubdirectory("revirt-read-vm").FullName;
        try
        {
            var native = GuestEnv.Native(prog, [StableFile, d1]);
            Assert.True(native.ExitCode == 0, native.StdoutText);
            var vm = GuestEnv.Vm(prog, [StableFile, d2], extra: ["--tier", tier]);
            Assert.True(native.StdoutText == vm.StdoutText, $"stdout differs\n--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
            Assert.Equal(0, vm.ExitCode);
        }
        finally { Directory.Delete(d1, true); Directory.Delete(d2, true); }
    }

    /// <summary>Reads of the file's path logged by reference, and reads of 512 bytes or more logged by value, in log order
    /// ('R' and 'V').</summary>
    static string ReadKinds(string log, string path)
    {
        var kinds = new System.Text.StringBuilder();
        using var reader = LogReader.Open(log);
        while (reader.TryRead(out var r))
        {
            if (r.Kind == RecordKind.FileContent && r.Decode<FileContent>() is { Path: var p, Nr: ReVirt.Linux.Nr.read } && p == path) kinds.Append('R');
            if (r.Kind == RecordKind.FileContentRun && r.Decode<FileContentRun>() is { Path: var rp, Nr: ReVirt.Linux.Nr.read, Reads: var n } && rp == path) kinds.Append('R', (int)n);
            if (r.Kind == RecordKind.SyscallResult && r.Decode<SyscallResult>() is { Nr: ReVirt.Linux.Nr.read, Result: >= 512 } s
                && s.MemWrites is [var w] && w.Bytes.Length == s.Result) kinds.Append('V');
        }
        return kinds.ToString();
    }

    /// <summary>The hash a by-reference read logs and a replay checks (SHA-256 in logs before v5, XxHash128 since) is
    /// taken from the guest pages: a range in one run of pages adjacent in host memory in one call, others through an
    /// incremental hash; the oracle is the hash of the bytes copied out. The pages of the first region are touched out
    /// of order, with the second's in between, so both adjacent and scattered host pages occur; every start and length
    /// class is checked: inside a page, across one and several page ends, and each way of hashing: in place, from a
    /// copy (scattered, up to <see cref="ReVirt.Memory.GuestMemory.ContentScratchBytes"/>), incrementally (longer).</summary>
    [Theory]
    [InlineData(ContentHashKind.Sha256)]
    [InlineData(ContentHashKind.XxHash128)]
    public void TheContentHashOfGuestBytesIsTheHashOfTheirCopyWhereverThePagesLie(ContentHashKind kind)
    {
        const ulong A = 0x10000, B = 0x40000, Page = ReVirt.Memory.GuestMemory.PageSize;
        using var mem = new ReVirt.Memory.GuestMemory();
        mem.Map(A, 16 * Page, ReVirt.Memory.Prot.Read | ReVirt.Memory.Prot.Write);
        mem.Map(B, 4 * Page, ReVirt.Memory.Prot.Read | ReVirt.Memory.Prot.Write);
        var rnd = new Random(5);
        foreach (int k in new[] { 0, 1, 2, 3, 9, 4, 5, 12, 6, 7, 8, 10, 11, 13, 14, 15 })
        {
            var bytes = new byte[Page];
            rnd.NextBytes(bytes);
            mem.WriteBytes(A + (ulong)k * Page, bytes);
            if (k % 4 == 3) mem.WriteBytes(B + (ulong)(k / 4) * Page, bytes);
        }
        foreach (var (start, len) in new (ulong, int)[] { (A, 1), (A + 7, 600), (A + Page - 3, 10), (A, (int)Page), (A + 100, 3 * (int)Page),
                     (A + Page, 7 * (int)Page + 5), (A, 16 * (int)Page), (A + 2 * Page + 1, 13 * (int)Page - 2),
                     (A + 4 * Page - 5, 10), (A + 3 * Page + 100, 2 * (int)Page), (A + 8 * Page, 4 * (int)Page) })
        {
            var copy = new byte[ContentHash.Length(kind)];
            ContentHash.Compute(kind, mem.ReadBytes(start, len), copy);
            var inPlace = new byte[copy.Length];
            mem.ContentHash(start, len, kind, inPlace);
            Assert.Equal(copy, inPlace);
        }
    }

    /// <summary>
    /// A file found stable at its first reads and changed while the guest still reads it through the same open
    /// description (here by the guest itself, through another descriptor, past the range read so far): the reads
    /// before the change are logged by reference, every read after it by value (the check that ends each run of reads
    /// finds the change, and the description's later reads are not tried again), and the replay is faithful. The
    /// oracle is the same script run natively on an identical file.
    /// </summary>
    [Fact]
    public void AFileChangedWhileReadIsLoggedByValueFromTheChangeOn()
    {
        const string script = "exec 3<\"$1\"; " +
            "busybox dd bs=4096 count=3 <&3 2>/dev/null | busybox md5sum; " +
            "busybox dd bs=4096 count=1 seek=100 conv=notrunc of=\"$1\" </dev/zero 2>/dev/null; " +
            "busybox dd bs=4096 <&3 2>/dev/null | busybox md5sum";
        RecordAndReplayScript(script, (log, recFile) => Assert.Matches("^R{3}V{10,}$", ReadKinds(log, recFile)));
    }

    /// <summary>
    /// A file found stable at a description's first reads and changed by another host process while the guest still
    /// reads it through that description: none of the later reads is checked on its own (one fstat at the end of their
    /// run proves them all), and that check finds the change, so the run is logged by value. Here the guest reads 2
    /// blocks (dd), makes a file and waits for another; the test then changes every byte past those blocks and makes
    /// the other file; md5sum reads the rest through the same description, one run of 4 KiB reads. Oracles: the
    /// recording prints the host's own MD5 of the original first blocks and of the changed rest; the replay, run on the
    /// file holding its original bytes again, is faithful and prints the same (the first blocks came from those bytes,
    /// the rest is in the log). Fails when the run's check is skipped: md5sum's reads are then logged by reference with
    /// the hash of the changed bytes, and the replay refuses the original file.
    /// </summary>
    [Fact]
    public void AFileChangedByAnotherProcessWhileADescriptionReadsItIsLoggedByValueAndReplaysOnTheOriginal()
    {
        const string script = "exec 3<\"$1\"; busybox dd bs=4096 count=2 <&3 2>/dev/null | busybox md5sum; : > \"$2\"; " +
            "until [ -e \"$3\" ]; do busybox sleep 0.05; done; busybox md5sum <&3";
        string file = aged.Take();
        string dir = Directory.CreateTempSubdirectory("revirt-read-handshake").FullName;
        string ready = Path.Combine(dir, "ready"), go = Path.Combine(dir, "go");
        string log = Path.Combine(Path.GetTempPath(), $"revirt-read-{Guid.NewGuid():N}.rvlog");
        byte[] original = File.ReadAllBytes(file), changed = (byte[])original.Clone();
        for (int i = 8192; i < changed.Length; i++) changed[i] ^= 0x5A;
        static string Md5Line(byte[] b) => Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData(b)) + "  -\n";
        string expected = Md5Line(original[..8192]) + Md5Line(changed[8192..]);
        try
        {
            using (var rec = RunningProgram.Dotnet(GuestEnv.PrimaryDll, "record", "--log", log, "--", "/bin/busybox", "sh", "-c", script, "sh", file, ready, go))
            {
                var limit = DateTime.UtcNow + TimeSpan.FromMinutes(3);
                while (!File.Exists(ready))
                {
                    Assert.False(rec.HasExited, $"the recording ended before the guest made {ready}: {rec.Stderr}");
                    Assert.True(DateTime.UtcNow < limit, $"the guest did not make {ready} in 3 minutes");
                    Thread.Sleep(20);
                }
                using (var f = new FileStream(file, FileMode.Open, FileAccess.Write))
                {
                    f.Position = 8192;
                    f.Write(changed, 8192, changed.Length - 8192);
                }
                File.WriteAllBytes(go, []);
                var outcome = rec.WaitForExit(TimeSpan.FromMinutes(3));
                Assert.True(outcome.ExitCode == 0, outcome.Stderr);
                Assert.Equal(expected, outcome.StdoutText);
            }
            Assert.Matches("^R{2}V{100,}$", ReadKinds(log, file));
            File.WriteAllBytes(file, original);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(expected, rp.StdoutText);
        }
        finally { File.Delete(log); Directory.Delete(dir, true); }
    }

    /// <summary>Runs a busybox sh <paramref name="script"/> (its $1: an aged file) natively and recorded, each on a file
    /// of its own: the recording's output must be the native run's; <paramref name="check"/> then reads the log (and
    /// the recording's file), and the replay must be faithful with the native output.</summary>
    void RecordAndReplayScript(string script, Action<string, string> check)
    {
        string nativeFile = aged.Take(), recFile = aged.Take();
        string log = Path.Combine(Path.GetTempPath(), $"revirt-read-{Guid.NewGuid():N}.rvlog");
        try
        {
            var native = GuestEnv.Native("/bin/busybox", ["sh", "-c", script, "sh", nativeFile]);
            Assert.True(native.ExitCode == 0, native.Stderr);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", "/bin/busybox", "sh", "-c", script, "sh", recFile]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            check(log, recFile);
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(native.StdoutText, rp.StdoutText);
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// The recording asks the host where a read(2) read from (lseek) only at a description's first read by reference
    /// and after something else moved the description; reads that follow one another need no host call. Here one
    /// description, shared by the shell and every child, is read in 4 KiB pieces, moved by a short read, by dd's
    /// forward seek (lseek SEEK_CUR) and by tail's seeks and sendfile, and read again. Every piece of 512
    /// bytes or more must be logged by reference, each record's offset and XxHash128 (log format v5) must be those of the file's own
    /// bytes there (the oracle: the file), the output must be the native run's, and the replay must be faithful (every
    /// checkpoint equal). Fails when the description's offset stops following a seek (mutation: the lseek handler not
    /// setting the description's offset): the records then name offsets the bytes did not come from.
    /// </summary>
    [Fact]
    public void ReadsAfterSeeksOfASharedDescriptionAreLoggedAtTheirOffsetsAndReplayFaithfully()
    {
        const string script = "exec 3<\"$1\"; " +
            "busybox dd bs=4096 count=2 <&3 2>/dev/null | busybox md5sum; " +
            "busybox dd bs=100 count=1 <&3 2>/dev/null | busybox md5sum; " +
            "busybox dd bs=4096 count=2 <&3 2>/dev/null | busybox md5sum; " +
            "busybox dd bs=4096 skip=3 count=2 <&3 2>/dev/null | busybox md5sum; " +
            "busybox tail -c 6000 <&3 | busybox md5sum; " +
            "busybox dd bs=4096 count=1 <&3 2>/dev/null | busybox md5sum";
        RecordAndReplayScript(script, (log, recFile) =>
        {
            byte[] file = File.ReadAllBytes(recFile);
            var offsets = new List<long>();
            using (var reader = LogReader.Open(log))
                while (reader.TryRead(out var r))
                {
                    if (r.Kind == RecordKind.SyscallResult && r.Decode<SyscallResult>() is { Nr: ReVirt.Linux.Nr.read, Result: >= 512 })
                        Assert.Fail("a read of 512 bytes or more from the stable file was logged by value");
                    if (r.Kind == RecordKind.FileContentRun && r.Decode<FileContentRun>() is { Nr: ReVirt.Linux.Nr.read } run && run.Path == recFile)
                    {
                        // a run of equal reads here (dd's blocks): its reads start every Bytes/Reads bytes
                        Assert.Equal(0, run.Bytes % run.Reads);
                        for (int i = 0; i < run.Reads; i++) offsets.Add(run.Offset + i * (run.Bytes / run.Reads));
                        Assert.Equal(System.IO.Hashing.XxHash128.Hash(file.AsSpan((int)run.Offset, (int)run.Bytes)), run.Hash);
                        continue;
                    }
                    if (r.Kind != RecordKind.FileContent || r.Decode<FileContent>() is not { Nr: ReVirt.Linux.Nr.read } c || c.Path != recFile) continue;
                    offsets.Add(c.Offset);
                    Assert.Equal(System.IO.Hashing.XxHash128.Hash(file.AsSpan((int)c.Offset, (int)c.Result)), c.Hash);
                }
            // 0 and 4096; 8292 and 12388 after the 100-byte read; 28772 and 32868 after dd skipped 3 blocks (as the
            // native run's strace shows). tail seeks to 6000 before the end and copies with sendfile (logged by value);
            // the last dd then finds the description at the end and reads nothing
            Assert.Equal([0L, 4096, 8292, 12388, 28772, 32868], offsets);
        });
    }

    /// <summary>
    /// The replay reads by-reference reads straight into guest memory and checks their hash there: it matches a
    /// recording while the file is the recorded one, and refuses (exit 2, naming the file) once a byte of a range the
    /// recording read has changed, or the file is gone.
    /// </summary>
    [Fact]
    public void AReplayOfReadsByReferenceRefusesAChangedOrMissingFile()
    {
        string file = aged.Take();
        string log = Path.Combine(Path.GetTempPath(), $"revirt-read-{Guid.NewGuid():N}.rvlog");
        try
        {
            var native = GuestEnv.Native("/bin/busybox", ["md5sum", file]);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", "/bin/busybox", "md5sum", file]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            Assert.Matches("^R{100,}$", ReadKinds(log, file));
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output"]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(native.StdoutText, rp.StdoutText);

            using (var f = File.OpenWrite(file)) { f.Position = AgedFiles.Size / 2; f.WriteByte(0x55); }
            rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log]);
            Assert.Equal(2, rp.ExitCode);
            Assert.Contains(file, rp.Stderr);

            File.Delete(file);
            rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log]);
            Assert.Equal(2, rp.ExitCode);
            Assert.Contains(file, rp.Stderr);
        }
        finally { File.Delete(log); }
    }

    [Theory]
    [InlineData("musl", "Default", "Interpreter")]
    [InlineData("glibc", "Interpreter", "Compiled")]
    public void RecordedReadsReplayInAnotherTier(string libc, string recordTier, string replayTier)
    {
        string prog = GuestEnv.Guest("readpath", libc);
        string d1 = Directory.CreateTempSubdirectory("revirt-read-native").FullName;
        string d2 = Directory.CreateTempSubdirectory("revirt-read-rec").FullName;
        string log = Path.Combine(Path.GetTempPath(), $"revirt-read-{Guid.NewGuid():N}.rvlog");
        try
        {
            var native = GuestEnv.Native(prog, [StableFile, d1]);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--tier", recordTier, "--", prog, StableFile, d2]);
            Assert.True(rec.ExitCode == 0, rec.StdoutText + rec.Stderr);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            // the stable file's reads by reference, the fresh file's by value (its bytes in the log)
            int byReference = 0, byValue = 0;
            using (var reader = LogReader.Open(log))
                while (reader.TryRead(out var r))
                {
                    if (r.Kind == RecordKind.FileContent && r.Decode<FileContent>().Path == StableFile) byReference++;
                    if (r.Kind == RecordKind.FileContentRun && r.Decode<FileContentRun>() is var run && run.Path == StableFile) byReference += (int)run.Reads;
                    if (r.Kind == RecordKind.SyscallResult && r.Decode<SyscallResult>() is { Nr: ReVirt.Linux.Nr.read, Result: >= 5000 } s
                        && s.MemWrites is [var w] && w.Bytes.Length == s.Result) byValue++;
                }
            Assert.True(byReference >= 7, $"{byReference} reads of {StableFile} logged by reference");
            Assert.True(byValue >= 3, $"{byValue} reads of the fresh file logged by value");
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output", "--tier", replayTier]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(native.StdoutText, rp.StdoutText);
        }
        finally
        {
            Directory.Delete(d1, true);
            Directory.Delete(d2, true);
            File.Delete(log);
        }
    }
}
