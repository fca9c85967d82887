using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// Consecutive by-reference reads of one file are one <see cref="FileContentRun"/> record (format v7). A static
/// busybox md5sum of a file, recorded in this process with checkpoints every <see cref="Interval"/> instructions (each
/// ends a run, as every other record does): the oracles are the file itself (each run's hash is the XxHash128 of the
/// file's bytes at its range, the runs and single reads cover the file exactly), a v6 recording of the same run (one
/// FileContent per read: the same reads, checkpoints at the same instructions) and the replay (faithful, every
/// checkpoint's state digest equal). Damaged run records, a run record in a log older than v7, a log cut inside a run record and a
/// file changed or cut between recording and replay are refused with the reason.
/// </summary>
public class ContentRunTests
{
    const string Program = "/bin/busybox";
    /// <summary>Checkpoints this often: a run ends at each, so the recording has many runs and a checkpoint inside
    /// what would have been one.</summary>
    const ulong Interval = 2_000_000;

    static byte[] Record(string file, ushort version, string root = "/")
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-contentrun-{Guid.NewGuid():N}.rvlog");
        try
        {
            var opts = new MachineOptions { Program = Program, Args = ["md5sum", file], Cwd = "/", Root = root, Diagnostics = TextWriter.Null };
            var program = Kernel.ResolveProgram(opts);
            var header = Recording.Header(opts, program.Image, Interval, version);
            using (var writer = LogWriter.Create(log, header))
            {
                using var m = new Machine(opts, new RecordingBoundary(writer, header.CheckpointInterval));
                m.Load(program);
                Assert.Equal(0, m.Run());
            }
            return File.ReadAllBytes(log);
        }
        finally { File.Delete(log); }
    }

    static ReplayVerdict Replay(byte[] log, string? root = null)
    {
        using var reader = new LogReader(new MemoryStream(log));
        return ReplayCheck.Run(reader, root);
    }

    static List<LogRecord> Records(byte[] log)
    {
        var list = new List<LogRecord>();
        using var reader = new LogReader(new MemoryStream(log));
        while (reader.TryRead(out var r)) list.Add(r);
        return list;
    }

    static List<FileContentRun> Runs(byte[] log, string path)
        => Records(log).Where(r => r.Kind == RecordKind.FileContentRun).Select(r => r.Decode<FileContentRun>()).Where(r => r.Path == path).ToList();

    static List<FileContent> SingleReads(byte[] log, string path)
        => Records(log).Where(r => r.Kind == RecordKind.FileContent).Select(r => r.Decode<FileContent>()).Where(c => c.Path == path && c.Nr == Nr.read).ToList();

    static List<(ulong, string)> Checkpoints(byte[] log)
        => Records(log).Where(r => r.Kind == RecordKind.Checkpoint).Select(r => r.Decode<Checkpoint>()).Select(c => (c.InstrCount, Convert.ToHexString(c.StateDigest))).ToList();

    static readonly Lazy<byte[]> V7 = new(() => Record(Program, LogFormat.CurrentVersion));

    [Fact]
    public void ConsecutiveReadsAreRunsOfTheFilesBytesAndReplayWithThePerReadLogsCheckpoints()
    {
        byte[] file = File.ReadAllBytes(Program);
        var log = V7.Value;
        var runs = Runs(log, Program);
        var singles = SingleReads(log, Program);
        Assert.True(runs.Count >= 4, $"{runs.Count} runs");
        Assert.Contains(runs, r => r.Reads >= 8);
        // the file, read once from its start to its end: the runs and single reads cover it exactly, in order
        var pieces = runs.Select(r => (Offset: r.Offset, Bytes: r.Bytes, Reads: r.Reads)).Concat(singles.Select(c => (Offset: c.Offset, Bytes: c.Result, Reads: 1u))).OrderBy(p => p.Offset).ToList();
        long at = 0;
        foreach (var (offset, bytes, _) in pieces) { Assert.Equal(at, offset); at += bytes; }
        Assert.Equal(file.LongLength, at);
        foreach (var r in runs)
        {
            Assert.Equal(Nr.read, r.Nr);
            Assert.True(r.Bytes <= FileContentRun.MaxBytes);
            Assert.Equal(System.IO.Hashing.XxHash128.Hash(file.AsSpan((int)r.Offset, (int)r.Bytes)), r.Hash);
        }

        // the same run as a v6 log: a FileContent per read, the same reads, checkpoints at the same instructions
        var v6 = Record(Program, 6);
        Assert.Empty(Runs(v6, Program));
        Assert.Equal(pieces.Sum(p => (long)p.Reads), SingleReads(v6, Program).Count);
        var checkpoints = Checkpoints(log);
        Assert.True(checkpoints.Count >= 4, $"{checkpoints.Count} checkpoints");
        // (their digests differ between two recordings: each takes its own random bytes, AT_RANDOM's among them)
        Assert.Equal(Checkpoints(v6).Select(c => c.Item1), checkpoints.Select(c => c.Item1));
        Assert.True(log.Length < v6.Length, $"v7 log {log.Length} bytes, v6 {v6.Length}");

        var verdict = Replay(log);
        Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
        Assert.Contains($"{checkpoints.Count} checkpoints", verdict.Message);
        verdict = Replay(v6);
        Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
    }

    /// <summary>The log with the first run record of <see cref="Program"/> with at least 4 reads rewritten by
    /// <paramref name="change"/> (payload in, payload out), resealed.</summary>
    static byte[] WithFirstRun(byte[] log, Func<byte[], byte[]> change)
    {
        var img = LogImage.Parse(log);
        int i = img.Frames.FindIndex(f => LogImage.KindOf(f) == RecordKind.FileContentRun && FileContentRun.Decode(LogImage.Payload(f)).Reads >= 4);
        Assert.True(i >= 0);
        img.Frames[i] = LogImage.Frame(RecordKind.FileContentRun, change(LogImage.Payload(img.Frames[i])));
        return img.Build();
    }

    static byte[] Reencoded(byte[] payload, Func<FileContentRun, FileContentRun> change)
    {
        var r = change(FileContentRun.Decode(payload));
        var b = new byte[r.EncodedLength];
        r.Encode(b);
        return b;
    }

    [Fact]
    public void DamagedRunRecordsAreRefusedWithTheReason()
    {
        var log = V7.Value;
        // resealed unchanged: faithful (the rewriting is not what the cases below are refused for)
        var verdict = Replay(WithFirstRun(log, p => p));
        Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);

        // one byte of the run's hash: refused at the run's last read, naming the file
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { var h = (byte[])r.Hash.Clone(); h[5] ^= 0x01; r.Hash = h; return r; })));
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains($"{Program} under this replica's root / is not the file the recording read", verdict.Message);

        // one read more than the recording made: the read that ended the run asks for all that is left
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { r.Reads++; return r; })));
        Assert.Equal(ReplayVerdictKind.Diverged, verdict.Kind);
        Assert.Contains($"of the recording's run of {Program}", verdict.Message);

        // one read fewer: the run's last read is not at the recorded instruction
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { r.Reads--; return r; })));
        Assert.Equal(ReplayVerdictKind.Diverged, verdict.Kind);
        Assert.Contains($"of the recording's run of {Program}", verdict.Message);

        // a byte fewer: the last read would be short, the bytes' hash differs
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { r.Bytes--; return r; })));
        Assert.NotEqual(ReplayVerdictKind.Faithful, verdict.Kind);
        Assert.Contains(Program, verdict.Message);

        // a payload cut short (its frame resealed): refused as a corrupt record
        verdict = Replay(WithFirstRun(log, p => p[..^1]));
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains("corrupt log: malformed FileContentRun payload", verdict.Message);

        // a run of one read, a run of more bytes than a run may hold: refused when decoded
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { r.Reads = 1; return r; })));
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains("FileContentRun payload: 1 reads", verdict.Message);
        verdict = Replay(WithFirstRun(log, p => Reencoded(p, r => { r.Bytes = FileContentRun.MaxBytes + 1; return r; })));
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains("at most 1048576 bytes", verdict.Message);

        // a run record in a log of version 6, which has none: refused naming the version
        var img = LogImage.Parse(log);
        var header = new LogReader(new MemoryStream(log)).Header;
        header.Version = 6;
        img.Header = header.Encode();
        verdict = Replay(img.Build());
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains("a FileContentRun record in a log of format version 6", verdict.Message);

        // the log cut inside the first run record: the replay ends early there, it does not go on without it
        int cut = RunFrameStart(log) + 20;
        verdict = Replay(log[..cut]);
        Assert.Equal(ReplayVerdictKind.EndedEarly, verdict.Kind);
        // a byte of the run record's path damaged without resealing: its checksum refuses it
        var damaged = (byte[])log.Clone();
        damaged[RunFrameStart(log) + RecordFrame.PayloadOffset + 8 + 8 + 4 + 4 + 4 + 1] ^= 0x20;
        verdict = Replay(damaged);
        Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
        Assert.Contains("checksum", verdict.Message);
    }

    /// <summary>Offset in the log of the first FileContentRun frame.</summary>
    static int RunFrameStart(byte[] log)
    {
        var img = LogImage.Parse(log);
        int at = img.Header.Length;
        foreach (var f in img.Frames)
        {
            if (LogImage.KindOf(f) == RecordKind.FileContentRun) return at;
            at += f.Length;
        }
        throw new InvalidOperationException("no run record");
    }

    [Fact]
    public void AFileChangedOrCutBetweenRecordingAndReplayIsRefusedNamingIt()
    {
        const string read = "/usr/bin/md5sum"; // stable, not the program: the replay's root holds both
        var log = Record(read, LogFormat.CurrentVersion);
        Assert.NotEmpty(Runs(log, read));
        string root = Directory.CreateTempSubdirectory("revirt-contentrun-root").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(root, "bin"));
            Directory.CreateDirectory(Path.Combine(root, "usr/bin"));
            File.Copy(Program, Path.Combine(root, "bin/busybox"));
            string copy = Path.Combine(root, "usr/bin/md5sum");
            File.Copy(read, copy);
            var verdict = Replay(log, root);
            Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);

            var bytes = File.ReadAllBytes(read);
            var changed = (byte[])bytes.Clone();
            changed[bytes.Length / 2] ^= 0x55;
            File.WriteAllBytes(copy, changed);
            verdict = Replay(log, root);
            Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
            Assert.Contains($"{read} under this replica's root {root} is not the file the recording read", verdict.Message);

            File.WriteAllBytes(copy, bytes[..(bytes.Length / 2)]);
            verdict = Replay(log, root);
            Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
            Assert.Contains($"{read} (offset", verdict.Message);
            Assert.Contains("is missing or shorter", verdict.Message);
        }
        finally { Directory.Delete(root, true); }
    }
    /// <summary>Counts how often the writer asks it and answers as told.</summary>
    /// <summary>A log of <paramref name="reads"/> (appended through the writer) followed by an Exit at <paramref name="exitAt"/>.</summary>
    static byte[] Written(Action<LogWriter> reads, ulong exitAt)
    {
        var header = new LogHeader
        {
            ProgramHash = LogHeader.ComputeProgramHash("p"u8), CpuModel = "test", RootDirectory = "/", Argv = ["/p"], Envp = [],
            StartTime = DateTimeOffset.UnixEpoch, StartState = [], CheckpointInterval = 0,
        };
        var ms = new MemoryStream();
        using (var w = new LogWriter(header, new StreamLogSink(ms, leaveOpen: true)))
        {
            reads(w);
            w.Append(new Exit { InstrCount = exitAt, Status = 0 });
        }
        return ms.ToArray();
    }

    sealed class FixedCheck(bool unchanged) : IContentSourceCheck
    {
        public int Asked;
        public bool Unchanged() { Asked++; return unchanged; }
    }

    /// <summary>
    /// The writer proves a run of reads once, at its end, with the check its unchecked reads carry
    /// (<see cref="IContentSourceCheck"/>): four reads of one file (the first proven on its own, three carrying the
    /// check) then another record. When the check holds, one run record with the XxHash128 of the bytes given; when it
    /// finds the file changed, each read is written by value, in order, at its own instruction count, with exactly the
    /// bytes given and nothing naming the file. Fails when the writer ignores a failed check (the run goes by
    /// reference) or asks it per read instead of once.
    /// </summary>
    [Fact]
    public void ARunIsProvenOnceAtItsEndAndWrittenReadByReadByValueWhenItsFileChanged()
    {
        var bytes = new byte[3 * 4096 + 100];
        new Random(3).NextBytes(bytes);
        int[] lengths = [4096, 4096, 4096, 100];
        byte[] Write(IContentSourceCheck check)
            => Written(w =>
            {
                for (int i = 0, at = 0; i < lengths.Length; at += lengths[i], i++)
                    bytes.AsSpan(at, lengths[i]).CopyTo(w.AppendContentRead(100 + 10 * (ulong)i, 1, Nr.read, "/f", at, 4096, lengths[i], 0x10000 + 0x2000 * (ulong)i, i == 0 ? null : check));
            }, exitAt: 200);

        var holds = new FixedCheck(true);
        var records = Records(Write(holds));
        Assert.Equal(1, holds.Asked);
        Assert.Equal([RecordKind.FileContentRun, RecordKind.Exit], records.Select(r => r.Kind));
        var run = records[0].Decode<FileContentRun>();
        Assert.Equal((4u, bytes.LongLength, 100ul, 130ul, 0L), (run.Reads, run.Bytes, run.FirstInstrCount, run.LastInstrCount, run.Offset));
        Assert.Equal(System.IO.Hashing.XxHash128.Hash(bytes), run.Hash);

        var fails = new FixedCheck(false);
        records = Records(Write(fails));
        Assert.Equal(1, fails.Asked);
        Assert.Equal([RecordKind.SyscallResult, RecordKind.SyscallResult, RecordKind.SyscallResult, RecordKind.SyscallResult, RecordKind.Exit], records.Select(r => r.Kind));
        for (int i = 0, at = 0; i < lengths.Length; at += lengths[i], i++)
        {
            var read = records[i].Decode<SyscallResult>();
            Assert.Equal((100 + 10 * (ulong)i, 1, Nr.read, (long)lengths[i]), (read.InstrCount, read.Tid, read.Nr, read.Result));
            var write = Assert.Single(read.MemWrites!);
            Assert.Equal(0x10000 + 0x2000 * (ulong)i, write.Addr);
            Assert.Equal(bytes.AsSpan(at, lengths[i]).ToArray(), write.Bytes);
        }
    }

    /// <summary>A check that holds for its first <paramref name="holds"/> asks and finds the file changed after.</summary>
    sealed class ChangesAfter(int holds) : IContentSourceCheck
    {
        public int Asked;
        public bool Unchanged() => ++Asked <= holds;
    }

    /// <summary>
    /// A run longer than the copy the writer keeps (<see cref="PendingContentRun.TailBytes"/>) is proven where the copy
    /// would overflow, and its hash still covers every byte: 80 reads of 4 KiB (2.5 copies' worth) of one file, then
    /// another record. When every check holds: one run record whose hash is the XxHash128 of all the bytes (the oracle:
    /// System.IO.Hashing), the check asked at each overflow and at the end. When the file changes after the first
    /// proof: the reads that proof proved are one run record of exactly those bytes, every later read is written by value
    /// at its own instruction count with the bytes given (the reads after the failed proof start a run of their own
    /// that goes by value too), nothing names the file for a byte not proven. Fails when the hash restarts at a proof,
    /// when the proven reads are dropped or written by value, or when no proof is made before the run's end.
    /// </summary>
    [Fact]
    public void ARunLongerThanTheKeptCopyIsProvenAsItGoesAndSplitsWhereTheFileChanged()
    {
        const int Read = 4096, Reads = 80;
        int perCopy = PendingContentRun.TailBytes / Read;
        Assert.True(Reads > 2 * perCopy && Reads < 3 * perCopy);
        var bytes = new byte[Reads * Read];
        new Random(5).NextBytes(bytes);
        ulong InstrOf(int i) => 1000 + 10 * (ulong)i;
        ulong AddrOf(int i) => 0x10000 + 0x1000 * (ulong)(i % 3);
        byte[] Write(IContentSourceCheck check)
            => Written(w =>
            {
                for (int i = 0; i < Reads; i++)
                    bytes.AsSpan(i * Read, Read).CopyTo(w.AppendContentRead(InstrOf(i), 1, Nr.read, "/f", i * Read, Read, Read, AddrOf(i), i == 0 ? null : check));
            }, exitAt: 5000);

        var holds = new ChangesAfter(int.MaxValue);
        var records = Records(Write(holds));
        Assert.Equal(3, holds.Asked); // at the two overflows and at the end
        Assert.Equal([RecordKind.FileContentRun, RecordKind.Exit], records.Select(r => r.Kind));
        var run = records[0].Decode<FileContentRun>();
        Assert.Equal(((uint)Reads, bytes.LongLength, InstrOf(0), InstrOf(Reads - 1), 0L), (run.Reads, run.Bytes, run.FirstInstrCount, run.LastInstrCount, run.Offset));
        Assert.Equal(System.IO.Hashing.XxHash128.Hash(bytes), run.Hash);

        var changes = new ChangesAfter(1);
        records = Records(Write(changes));
        Assert.Equal(3, changes.Asked); // the first proof holds, the second finds the change, the next run's end too
        Assert.Equal(RecordKind.FileContentRun, records[0].Kind);
        var proven = records[0].Decode<FileContentRun>();
        Assert.Equal(((uint)perCopy, (long)perCopy * Read, InstrOf(0), InstrOf(perCopy - 1), 0L), (proven.Reads, proven.Bytes, proven.FirstInstrCount, proven.LastInstrCount, proven.Offset));
        Assert.Equal(System.IO.Hashing.XxHash128.Hash(bytes.AsSpan(0, perCopy * Read)), proven.Hash);
        Assert.Equal(Reads - perCopy + 2, records.Count);
        Assert.Equal(RecordKind.Exit, records[^1].Kind);
        for (int i = perCopy; i < Reads; i++)
        {
            var rec = records[1 + i - perCopy];
            Assert.Equal(RecordKind.SyscallResult, rec.Kind);
            var read = rec.Decode<SyscallResult>();
            Assert.Equal((InstrOf(i), 1, Nr.read, (long)Read), (read.InstrCount, read.Tid, read.Nr, read.Result));
            var write = Assert.Single(read.MemWrites!);
            Assert.Equal(AddrOf(i), write.Addr);
            Assert.Equal(bytes.AsSpan(i * Read, Read).ToArray(), write.Bytes);
        }
    }
}
