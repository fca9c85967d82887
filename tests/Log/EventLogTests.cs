using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using ReVirt.Log;
using Xunit;

namespace ReVirt.Tests.Log;

public class EventLogTests
{
    private static LogHeader SampleHeader() => new()
    {
        Flags = (LogFlags)0x5,
        ProgramHash = LogHeader.ComputeProgramHash("guest program image"u8),
        CpuModel = "ReVirt x86-64 v1 (Haswell subset)",
        RootDirectory = "/srv/guest-root",
        Argv = ["/bin/prog", "--flag", "ünïcödé arg", ""],
        Envp = ["PATH=/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8"],
        StartTime = new DateTimeOffset(2025, 3, 14, 15, 9, 26, TimeSpan.FromHours(2)).AddTicks(5358979),
        StartState = Enumerable.Range(0, 300).Select(i => (byte)(i * 7)).ToArray(),
        CheckpointInterval = 1_000_000,
    };

    private static SyscallResult SampleSyscall(ulong icount = 12345) => new()
    {
        InstrCount = icount,
        Tid = 1,
        Nr = 0,
        Result = 17,
        Data = Encoding.ASCII.GetBytes("hello, replayed!\n"),
    };

    /// <summary>Writes one record of every kind (plus variants) and returns the log bytes.</summary>
    private static byte[] WriteSampleLog(LogHeader? header = null)
    {
        var ms = new MemoryStream();
        using (var w = new LogWriter(header ?? SampleHeader(), new StreamLogSink(ms, leaveOpen: true)))
        {
            w.Append(SampleSyscall());
            w.Append(new SyscallResult
            {
                InstrCount = 20000, Tid = 2, Nr = 4, Result = 0,
                MemWrites = [new GuestWrite(0x7fff_0000_1000UL, new byte[144]), new GuestWrite(0x4000UL, [1, 2, 3])],
            });
            w.Append(new SyscallResult { InstrCount = 20001, Tid = 2, Nr = 257, Result = -2 });
            w.Append(new Rdtsc { InstrCount = 30000, Value = 0x1234_5678_9abc_def0 });
            w.Append(new Rdrand { InstrCount = 30001, Value = ulong.MaxValue });
            w.Append(new Signal
            {
                InstrCount = 40000, BranchCount = 777, Rip = 0x401000, Rcx = 0xdead_beef, Tid = 3, Signo = 11,
                SigInfo = Enumerable.Range(0, 128).Select(i => (byte)i).ToArray(),
            });
            w.Append(new Preempt { InstrCount = 50000, BranchCount = 888, Rip = 0x402000, FromTid = 1, ToTid = 3 });
            w.Append(new Checkpoint { InstrCount = 1_000_000, Rip = 0x403000, StateDigest = Enumerable.Repeat((byte)0xAB, 32).ToArray() });
            w.Append(new Output
            {
                InstrCount = 60000, Fd = 1, TotalBytes = 12, Digest = new byte[16], Bytes = Encoding.ASCII.GetBytes("hi \"there\"\n\x01"),
            });
            w.Append(new Opaque { Data = [9, 8, 7] });
            w.Append(new Opaque());
            w.Append(new Exit { InstrCount = 70000, Status = 3 });
        }
        return ms.ToArray();
    }

    private static List<LogRecord> ReadAllRecords(byte[] log, out LogReader reader)
    {
        reader = new LogReader(new MemoryStream(log));
        return reader.ReadAll().ToList();
    }

    // ------------------------------------------------------------------ round trip

    [Fact]
    public void Header_RoundTrips()
    {
        var h = SampleHeader();
        var bytes = h.Encode();
        var d = LogHeader.Decode(bytes, out int consumed);
        Assert.Equal(bytes.Length, consumed);
        Assert.Equal(bytes.Length, d.EncodedLength);
        Assert.Equal(LogFormat.CurrentVersion, d.Version);
        Assert.Equal(h.Flags, d.Flags);
        Assert.Equal(h.ProgramHash, d.ProgramHash);
        Assert.Equal(h.CpuModel, d.CpuModel);
        Assert.Equal(h.RootDirectory, d.RootDirectory);
        Assert.Equal(h.Argv, d.Argv);
        Assert.Equal(h.Envp, d.Envp);
        Assert.Equal(h.StartTime, d.StartTime);
        Assert.Equal(h.StartTime.Offset, d.StartTime.Offset);
        Assert.Equal(h.StartState, d.StartState);
        Assert.Equal(h.CheckpointInterval, d.CheckpointInterval);
        Assert.True(bytes.AsSpan(0, 8).SequenceEqual("RVLOG\0\0\u0001"u8));

        var empty = LogHeader.Decode(new LogHeader().Encode(), out _);
        Assert.Empty(empty.Argv);
        Assert.Empty(empty.Envp);
        Assert.Empty(empty.StartState);
        Assert.Equal("", empty.CpuModel);
    }

    [Fact]
    public void EveryRecordKind_RoundTrips()
    {
        var log = WriteSampleLog();
        var recs = ReadAllRecords(log, out var reader);
        using var disposeReader = reader;

        Assert.False(reader.Truncated);
        Assert.True(reader.EndReached);
        Assert.Equal(12UL, reader.LastSequence);
        Assert.Equal(log.Length, reader.ValidEndOffset);
        Assert.Equal(Enumerable.Range(1, 12).Select(i => (ulong)i), recs.Select(r => r.Sequence));
        Assert.Equal(reader.HeaderLength, recs[0].Offset);
        for (int i = 1; i < recs.Count; i++) Assert.Equal(recs[i - 1].Offset + recs[i - 1].Length, recs[i].Offset);
        Assert.Equal(SampleHeader().Argv, reader.Header.Argv);

        var s0 = recs[0].Decode<SyscallResult>();
        Assert.Equal((12345UL, 1, 0, 17L), (s0.InstrCount, s0.Tid, s0.Nr, s0.Result));
        Assert.Equal("hello, replayed!\n", Encoding.ASCII.GetString(s0.Data));
        Assert.Null(s0.MemWrites);

        var s1 = recs[1].Decode<SyscallResult>();
        Assert.Equal((20000UL, 2, 4, 0L), (s1.InstrCount, s1.Tid, s1.Nr, s1.Result));
        Assert.Empty(s1.Data);
        Assert.NotNull(s1.MemWrites);
        Assert.Equal(2, s1.MemWrites!.Count);
        Assert.Equal(0x7fff_0000_1000UL, s1.MemWrites[0].Addr);
        Assert.Equal(new byte[144], s1.MemWrites[0].Bytes);
        Assert.Equal(0x4000UL, s1.MemWrites[1].Addr);
        Assert.Equal(new byte[] { 1, 2, 3 }, s1.MemWrites[1].Bytes);
        Assert.Equal(147, s1.TotalBytes);

        var s2 = recs[2].Decode<SyscallResult>();
        Assert.Equal(-2L, s2.Result);
        Assert.Equal(257, s2.Nr);

        var tsc = recs[3].Decode<Rdtsc>();
        Assert.Equal((30000UL, 0x1234_5678_9abc_def0UL), (tsc.InstrCount, tsc.Value));
        var rnd = recs[4].Decode<Rdrand>();
        Assert.Equal((30001UL, ulong.MaxValue), (rnd.InstrCount, rnd.Value));

        var sig = recs[5].Decode<Signal>();
        Assert.Equal((40000UL, 777UL, 0x401000UL, 0xdead_beefUL, 3, 11), (sig.InstrCount, sig.BranchCount, sig.Rip, sig.Rcx, sig.Tid, sig.Signo));
        Assert.Equal(Enumerable.Range(0, 128).Select(i => (byte)i), sig.SigInfo);

        var pre = recs[6].Decode<Preempt>();
        Assert.Equal((50000UL, 888UL, 0x402000UL, 1, 3), (pre.InstrCount, pre.BranchCount, pre.Rip, pre.FromTid, pre.ToTid));

        var cp = recs[7].Decode<Checkpoint>();
        Assert.Equal((1_000_000UL, 0x403000UL), (cp.InstrCount, cp.Rip));
        Assert.Equal(Enumerable.Repeat((byte)0xAB, 32), cp.StateDigest);

        var outp = recs[8].Decode<Output>();
        Assert.Equal((60000UL, 1, 12UL), (outp.InstrCount, outp.Fd, outp.TotalBytes));
        Assert.Equal(new byte[16], outp.Digest);
        Assert.Equal("hi \"there\"\n\x01", Encoding.ASCII.GetString(outp.Bytes));

        Assert.Equal(new byte[] { 9, 8, 7 }, recs[9].Decode<Opaque>().Data);
        Assert.Empty(recs[10].Decode<Opaque>().Data);
        Assert.Equal(RecordFrame.Overhead, recs[10].Length);

        var exit = recs[11].Decode<Exit>();
        Assert.Equal((70000UL, 3), (exit.InstrCount, exit.Status));

        Assert.Equal(
            [RecordKind.SyscallResult, RecordKind.SyscallResult, RecordKind.SyscallResult, RecordKind.Rdtsc, RecordKind.Rdrand,
             RecordKind.Signal, RecordKind.Preempt, RecordKind.Checkpoint, RecordKind.Output, RecordKind.Opaque, RecordKind.Opaque, RecordKind.Exit],
            recs.Select(r => r.Kind));
        Assert.IsType<Signal>(recs[5].DecodeAny());
        Assert.True(recs[3].TryDecode<Rdtsc>(out _));
        Assert.False(recs[3].TryDecode<Rdrand>(out _));
        Assert.Throws<InvalidOperationException>(() => recs[3].Decode<Exit>());
    }

    [Fact]
    public void Writer_TracksSequenceAndOffsets_AndFramesAreSelfContained()
    {
        var sink = new MemoryLogSink();
        var w = new LogWriter(SampleHeader(), sink);
        Assert.Equal(1, sink.AppendCount);
        Assert.Equal(1UL, w.NextSequence);
        long offset = w.BytesWritten;
        Assert.Equal(w.HeaderLength, offset);
        Assert.Equal(1UL, w.Append(SampleSyscall()));
        Assert.Equal(2UL, w.Append(new Exit { InstrCount = 9, Status = 0 }));
        Assert.Equal(3, sink.AppendCount);

        // The frame of record #1 as a standalone chunk (what would travel over gRPC).
        var bytes = sink.ToArray();
        int len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan((int)offset));
        var chunk = bytes.AsMemory((int)offset, len);
        var rec = RecordFrame.Parse(chunk, expectedSequence: 1);
        Assert.Equal(SampleSyscall().Data, rec.Decode<SyscallResult>().Data);
        Assert.Equal(RecordFrame.Encode(SampleSyscall(), 1), chunk.ToArray());

        Assert.Throws<LogFormatException>(() => RecordFrame.Parse(chunk, expectedSequence: 2));
        Assert.Throws<LogFormatException>(() => RecordFrame.Parse(chunk[..^1]));
        var damaged = chunk.ToArray();
        damaged[20] ^= 0x40;
        var ex = Assert.Throws<LogFormatException>(() => RecordFrame.Parse(damaged, 1, offset));
        Assert.Equal("checksum mismatch in record #1 at offset " + offset, ex.Message);
        w.Dispose();
    }

    // ------------------------------------------------------------------ corruption

    [Fact]
    public void FlippedByte_AnywhereInAnyRecord_IsDetectedWithRecordNumberAndOffset()
    {
        var log = WriteSampleLog();
        var good = ReadAllRecords(log, out var r0);
        r0.Dispose();

        foreach (var target in good)
        {
            for (int i = 0; i < target.Length; i++)
            {
                foreach (byte mask in new byte[] { 0x01, 0x80, 0xFF })
                {
                    var bad = (byte[])log.Clone();
                    bad[target.Offset + i] ^= mask;
                    using var reader = new LogReader(new MemoryStream(bad));
                    var seen = new List<ulong>();
                    var ex = Assert.Throws<LogFormatException>(() => { foreach (var r in reader.ReadAll()) seen.Add(r.Sequence); });
                    Assert.Equal(target.Sequence, ex.RecordNumber);
                    Assert.Equal(target.Offset, ex.Offset);
                    Assert.Contains($"in record #{target.Sequence} at offset {target.Offset}", ex.Message);
                    Assert.Contains("mismatch", ex.Message);
                    Assert.Equal(Enumerable.Range(1, (int)target.Sequence - 1).Select(x => (ulong)x), seen);
                    Assert.Equal(target.Sequence - 1, reader.LastSequence);
                    Assert.Equal(target.Offset, reader.ValidEndOffset);
                    // The reader stays faulted.
                    Assert.Throws<LogFormatException>(() => reader.TryRead(out _));
                }
            }
        }
    }

    [Fact]
    public void ChecksumMismatch_MessageNamesRecordAndOffset()
    {
        var log = WriteSampleLog();
        var good = ReadAllRecords(log, out var r0);
        r0.Dispose();
        var target = good[4];
        var bad = (byte[])log.Clone();
        bad[target.Offset + RecordFrame.PayloadOffset + 3] ^= 0x10;
        using var reader = new LogReader(new MemoryStream(bad));
        var ex = Assert.Throws<LogFormatException>(() => reader.Verify());
        Assert.Equal($"checksum mismatch in record #5 at offset {target.Offset}", ex.Message);
        Assert.Equal("checksum mismatch", ex.Reason);
    }

    /// <summary>
    /// A replica verifies each received frame once, on its data link thread (<see cref="RecordFrame.CheckRun"/>), and
    /// its replay reads them through <see cref="LogReader.OverVerifiedFrames"/> without their checksums: a frame
    /// damaged in transit must still be refused there with the reason, and the same damage in a log file read by an
    /// ordinary reader (a `replay` of the file) still is. The oracle: the writer's own frames, with one byte flipped.
    /// </summary>
    [Fact]
    public void DamagedFrame_IsRefusedInTransitAndInAFile_TheVerifiedReaderTrustsOnlyWhatTheLinkChecked()
    {
        var log = WriteSampleLog();
        var good = ReadAllRecords(log, out var r0);
        r0.Dispose();
        int headerLength = (int)good[0].Offset;
        var frames = log.AsMemory(headerLength);
        Assert.Equal((ulong)good.Count, RecordFrame.CheckRun(frames, (uint)good.Count, after: 0));

        var target = good[4];
        var bad = (byte[])log.Clone();
        bad[target.Offset + RecordFrame.PayloadOffset + 3] ^= 0x10;
        // in transit: the batch is refused, naming the record
        var ex = Assert.Throws<LogFormatException>(() => RecordFrame.CheckRun(bad.AsMemory(headerLength), (uint)good.Count, after: 0));
        Assert.Equal($"checksum mismatch in record #{target.Sequence}", ex.Message);
        Assert.Equal("checksum mismatch", ex.Reason);
        // a damaged header checksum field, too
        var badHeader = (byte[])log.Clone();
        badHeader[target.Offset + RecordFrame.HeaderCrcOffset] ^= 0x01;
        ex = Assert.Throws<LogFormatException>(() => RecordFrame.CheckRun(badHeader.AsMemory(headerLength), (uint)good.Count, after: 0));
        Assert.Equal("record header checksum mismatch", ex.Reason);
        // in a file: an ordinary reader still verifies every checksum
        using (var file = new LogReader(new MemoryStream(bad)))
        {
            ex = Assert.Throws<LogFormatException>(() => file.Verify());
            Assert.Equal($"checksum mismatch in record #{target.Sequence} at offset {target.Offset}", ex.Message);
        }

        // the verified reader reads what the link checked, record for record
        using (var verified = LogReader.OverVerifiedFrames(new MemoryStream(log)))
            Assert.Equal(good.Select(r => r.Frame.ToArray()), verified.ReadAll().Select(r => r.Frame.ToArray()));
        // and checks what the link's checksums do not cover: a frame missing from the stream is a sequence gap
        var gap = log.AsSpan(0, (int)target.Offset).ToArray().Concat(log.AsSpan((int)(target.Offset + target.Length)).ToArray()).ToArray();
        using (var verified = LogReader.OverVerifiedFrames(new MemoryStream(gap)))
        {
            ex = Assert.Throws<LogFormatException>(() => verified.Verify());
            Assert.Contains("sequence discontinuity", ex.Message);
        }
    }

    [Fact]
    public void FlippedByte_InHeader_IsRefused()
    {
        var log = WriteSampleLog();
        int headerLength = SampleHeader().Encode().Length;
        for (int i = 0; i < headerLength; i++)
        {
            var bad = (byte[])log.Clone();
            bad[i] ^= 0x01;
            var ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(bad)));
            Assert.Null(ex.RecordNumber);
        }
    }

    [Fact]
    public void SequenceGap_IsDetected()
    {
        var ms = new MemoryStream();
        ms.Write(SampleHeader().Encode());
        long off1 = ms.Position;
        ms.Write(RecordFrame.Encode(new Rdtsc { InstrCount = 1, Value = 2 }, 1));
        long off2 = ms.Position;
        ms.Write(RecordFrame.Encode(new Rdtsc { InstrCount = 3, Value = 4 }, 3));
        ms.Position = 0;
        using var reader = new LogReader(ms);
        Assert.True(reader.TryRead(out var r1));
        Assert.Equal(off1, r1.Offset);
        var ex = Assert.Throws<LogFormatException>(() => reader.TryRead(out _));
        Assert.Equal($"sequence discontinuity (found #3) in record #2 at offset {off2}", ex.Message);
    }

    [Fact]
    public void UnknownKind_IsReadButNotDecodable()
    {
        var ms = new MemoryStream();
        ms.Write(SampleHeader().Encode());
        ms.Write(RecordFrame.EncodeRaw((RecordKind)0x42, 1, [1, 2, 3, 4]));
        ms.Position = 0;
        using var reader = new LogReader(ms);
        var r = Assert.Single(reader.ReadAll());
        Assert.Equal((RecordKind)0x42, r.Kind);
        Assert.Throws<LogFormatException>(() => r.DecodeAny());
        Assert.Contains("unknown kind 0x42 [4 bytes]", LogDump.FormatRecord(r));
    }

    [Fact]
    public void MalformedPayload_WithValidChecksum_ReportsRecordAndOffset()
    {
        var ms = new MemoryStream();
        ms.Write(SampleHeader().Encode());
        long off = ms.Position;
        ms.Write(RecordFrame.EncodeRaw(RecordKind.Exit, 1, [1, 2, 3])); // Exit needs 12 bytes
        ms.Position = 0;
        using var reader = new LogReader(ms);
        var r = Assert.Single(reader.ReadAll());
        var ex = Assert.Throws<LogFormatException>(() => r.Decode<Exit>());
        Assert.Equal(1UL, ex.RecordNumber);
        Assert.Equal(off, ex.Offset);
        Assert.StartsWith("malformed Exit payload", ex.Message);
    }

    // ------------------------------------------------------------------ truncation

    [Fact]
    public void TruncationAtEveryOffsetOfLastRecord_IsReportedAsTruncated()
    {
        var log = WriteSampleLog();
        var good = ReadAllRecords(log, out var r0);
        r0.Dispose();
        var last = good[^1];
        var secondLast = good[^2];
        Assert.Equal(log.Length, last.Offset + last.Length);

        for (int cut = 0; cut <= last.Length; cut++)
        {
            var partial = log.AsSpan(0, (int)last.Offset + cut).ToArray();
            using var reader = new LogReader(new MemoryStream(partial));
            var seqs = reader.ReadAll().Select(r => r.Sequence).ToList();
            Assert.True(reader.EndReached);
            if (cut == last.Length)
            {
                Assert.False(reader.Truncated);
                Assert.Equal(last.Sequence, reader.LastSequence);
                Assert.Equal(log.Length, reader.ValidEndOffset);
                Assert.Equal(good.Count, seqs.Count);
            }
            else
            {
                Assert.Equal(cut != 0, reader.Truncated);
                Assert.Equal(secondLast.Sequence, reader.LastSequence);
                Assert.Equal(last.Offset, reader.ValidEndOffset);
                Assert.Equal(good.Count - 1, seqs.Count);
                if (cut != 0)
                {
                    Assert.Equal(cut, reader.TruncatedBytes);
                    Assert.StartsWith($"log ends mid-record at offset {last.Offset} after record #{secondLast.Sequence}", reader.TruncationMessage);
                }
                else Assert.Null(reader.TruncationMessage);
            }
            Assert.False(reader.TryRead(out _)); // stays at end
        }
    }

    [Fact]
    public void TruncationInsideEveryRecord_YieldsAllPrecedingRecords()
    {
        var log = WriteSampleLog();
        var good = ReadAllRecords(log, out var r0);
        r0.Dispose();
        foreach (var target in good)
        {
            foreach (int cut in new[] { 1, RecordFrame.HeaderSize - 1, RecordFrame.HeaderSize, target.Length - 1 })
            {
                var partial = log.AsSpan(0, (int)target.Offset + cut).ToArray();
                using var reader = new LogReader(new MemoryStream(partial));
                Assert.Equal(target.Sequence - 1, (ulong)reader.ReadAll().Count());
                Assert.True(reader.Truncated);
                Assert.Equal(target.Offset, reader.ValidEndOffset);
                Assert.Equal(target.Sequence - 1, reader.LastSequence);
            }
        }
    }

    [Fact]
    public void HeaderOnly_IsAValidEmptyLog_AndTruncatedHeaderIsRefused()
    {
        var header = SampleHeader().Encode();
        using (var reader = new LogReader(new MemoryStream(header)))
        {
            Assert.Empty(reader.ReadAll());
            Assert.False(reader.Truncated);
            Assert.Equal(0UL, reader.LastSequence);
            Assert.Equal(header.Length, reader.ValidEndOffset);
        }
        for (int cut = 10; cut < header.Length; cut++)
        {
            var ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(header[..cut])));
            Assert.Contains("truncated", ex.Message);
        }
    }

    // ------------------------------------------------------------------ version / magic

    [Fact]
    public void WrongVersion_IsRefused()
    {
        var h = SampleHeader();
        h.Version = 2; // the version before exact syscall positions: its logs would diverge
        var ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(h.Encode())));
        Assert.Equal("log format version 2, this build reads 3 to 7 (its syscall positions are counted at their block's start, this build's exactly)", ex.Message);
        h.Version = 3; // the version before per-page hashes in checkpoint digests: still read, with its own digests
        Assert.Equal(3, new LogReader(new MemoryStream(h.Encode())).Header.Version);
        h.Version = 4; // the version before XxHash128 content hashes: still read, with its SHA-256 (ContentHashTests)
        Assert.Equal(4, new LogReader(new MemoryStream(h.Encode())).Header.Version);
        h.Version = 5; // the version before XXH3-128 End digests and program hashes: still read, with its SHA-256 (LogDigestTests)
        Assert.Equal(5, new LogReader(new MemoryStream(h.Encode())).Header.Version);
        h.Version = 6; // the version before FileContentRun records: still read (it holds none)
        Assert.Equal(6, new LogReader(new MemoryStream(h.Encode())).Header.Version);

        var log = WriteSampleLog();
        BinaryPrimitives.WriteUInt16LittleEndian(log.AsSpan(8), 8);
        ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(log)));
        Assert.Equal("log format version 8, this build reads 3 to 7", ex.Message);
    }

    [Fact]
    public void WrongMagic_IsRefused()
    {
        var log = WriteSampleLog();
        log[0] = (byte)'X';
        var ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(log)));
        Assert.StartsWith("not a ReVirt log", ex.Message);

        ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream(Encoding.ASCII.GetBytes("#!/bin/sh\necho hi\n"))));
        Assert.StartsWith("not a ReVirt log", ex.Message);

        ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream()));
        Assert.StartsWith("not a ReVirt log", ex.Message);

        ex = Assert.Throws<LogFormatException>(() => new LogReader(new MemoryStream("RVL"u8.ToArray())));
        Assert.StartsWith("not a ReVirt log", ex.Message);
    }

    // ------------------------------------------------------------------ program hash

    [Fact]
    public void ProgramHash_MatchAndMismatch()
    {
        var dir = Directory.CreateTempSubdirectory("revirt-log-test");
        try
        {
            var prog = Path.Combine(dir.FullName, "prog");
            File.WriteAllBytes(prog, Enumerable.Range(0, 5000).Select(i => (byte)i).ToArray());
            var h = SampleHeader();
            h.ProgramHash = LogHeader.ComputeProgramHash(prog);

            var logPath = Path.Combine(dir.FullName, "run.rvlog");
            using (var w = LogWriter.Create(logPath, h))
                w.Append(new Exit { InstrCount = 1, Status = 0 });

            using (var reader = LogReader.Open(logPath))
            {
                Assert.True(reader.ProgramMatches(prog));
                reader.VerifyProgram(prog);
                Assert.Single(reader.ReadAll());
            }

            var bytes = File.ReadAllBytes(prog);
            bytes[4321] ^= 1;
            File.WriteAllBytes(prog, bytes);
            using (var reader = LogReader.Open(logPath))
            {
                Assert.False(reader.ProgramMatches(prog));
                var ex = Assert.Throws<ProgramMismatchException>(() => reader.VerifyProgram(prog));
                Assert.Equal(h.ProgramHash, ex.Expected);
                Assert.Equal(LogHeader.ComputeProgramHash(prog), ex.Actual);
                Assert.Contains(prog, ex.Message);
            }
            Assert.Throws<ArgumentException>(() => h.ProgramHash = new byte[16]);
        }
        finally { dir.Delete(recursive: true); }
    }

    // ------------------------------------------------------------------ dump

    [Fact]
    public void Dump_RendersHeaderAndOneLinePerRecord()
    {
        var log = WriteSampleLog();
        var text = LogDump.ToText(new MemoryStream(log));
        var lines = text.Split('\n');
        Assert.Contains("ReVirt event log", lines);
        Assert.Contains(lines, l => l.Contains("cpu model:") && l.Contains("ReVirt x86-64 v1"));
        Assert.Contains(lines, l => l.Contains("\"ünïcödé arg\""));
        Assert.Contains(lines, l => l.Contains("checkpoint interval: 1000000 instructions"));
        Assert.Contains("#1 @icount=12345 syscall read(0) = 17 [17 bytes] tid=1", lines);
        Assert.Contains("#2 @icount=20000 syscall stat(4) = 0 [147 bytes in 2 mem writes] tid=2", lines);
        Assert.Contains("#3 @icount=20001 syscall openat(257) = -2 (ENOENT) [0 bytes] tid=2", lines);
        Assert.Contains(lines, l => l.StartsWith("#4 @icount=30000 rdtsc = "));
        Assert.Contains(lines, l => l.StartsWith("#6 @icount=40000 signal SIGSEGV(11) tid=3"));
        Assert.Contains(lines, l => l.StartsWith("#7 @icount=50000 preempt tid 1 -> 3"));
        Assert.Contains(lines, l => l.StartsWith("#8 @icount=1000000 checkpoint rip=0x403000 digest=abab"));
        Assert.Contains(lines, l => l.StartsWith("#9 @icount=60000 output fd=1 [12 bytes, total 12]") && l.EndsWith("\"hi \\\"there\\\"\\n\\x01\""));
        Assert.Contains("#10 opaque [3 bytes] 090807", lines);
        Assert.Contains("#12 @icount=70000 exit status=3", lines);
        Assert.Contains(lines, l => l.StartsWith("12 records, " + log.Length + " bytes"));

        var torn = LogDump.ToText(new MemoryStream(log[..^5]));
        Assert.Contains("log ends mid-record at offset", torn);

        var bad = (byte[])log.Clone();
        bad[^3] ^= 1;
        var sw = new StringWriter();
        Assert.False(LogDump.Write(new MemoryStream(bad), sw));
        Assert.Contains("error: checksum mismatch in record #12", sw.ToString());

        sw = new StringWriter();
        Assert.False(LogDump.Write(new MemoryStream([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), sw));
        Assert.StartsWith("error: not a ReVirt log", sw.ToString());
    }

    [Fact]
    public void NameTables_AreAligned()
    {
        Assert.Equal("read", LogDump.SyscallName(0));
        Assert.Equal("exit_group", LogDump.SyscallName(231));
        Assert.Equal("openat", LogDump.SyscallName(257));
        Assert.Equal("getrandom", LogDump.SyscallName(318));
        Assert.Equal("rseq", LogDump.SyscallName(334));
        Assert.Equal("syscall", LogDump.SyscallName(335));
        Assert.Equal("pidfd_send_signal", LogDump.SyscallName(424));
        Assert.Equal("clone3", LogDump.SyscallName(435));
        Assert.Equal("mseal", LogDump.SyscallName(462));
        Assert.Equal("syscall", LogDump.SyscallName(463));
        Assert.Equal("SIGSYS", LogDump.SignalName(31));
        Assert.Equal("ELOOP", LogDump.ErrnoName(40));
    }

    // ------------------------------------------------------------------ volume

    [Fact]
    public void HundredThousandRecords_WriteAndReadBack()
    {
        const int N = 100_000;
        var data = new byte[64];
        var ms = new MemoryStream();
        var sw = Stopwatch.StartNew();
        using (var w = new LogWriter(SampleHeader(), new StreamLogSink(ms, leaveOpen: true)))
        {
            for (int i = 0; i < N; i++)
            {
                switch (i % 4)
                {
                    case 0:
                        var s = new SyscallResult { InstrCount = (ulong)i, Tid = 1, Nr = 0, Result = data.Length, Data = data };
                        w.Append(in s);
                        break;
                    case 1: w.Append(new Rdtsc { InstrCount = (ulong)i, Value = (ulong)i * 3 }); break;
                    case 2: w.Append(new Preempt { InstrCount = (ulong)i, FromTid = 1, ToTid = 2 }); break;
                    default: w.Append(new Rdrand { InstrCount = (ulong)i, Value = (ulong)i }); break;
                }
            }
            Assert.Equal((ulong)N, w.LastSequence);
        }
        var writeTime = sw.Elapsed;

        ms.Position = 0;
        sw.Restart();
        using var reader = new LogReader(ms);
        ulong count = 0, icountSum = 0;
        foreach (var r in reader.ReadAll())
        {
            count++;
            if (r.Kind == RecordKind.Rdtsc) icountSum += r.Decode<Rdtsc>().InstrCount;
        }
        Assert.Equal((ulong)N, count);
        Assert.False(reader.Truncated);
        Assert.Equal(ms.Length, reader.ValidEndOffset);
        Assert.Equal(Enumerable.Range(0, N).Where(i => i % 4 == 1).Select(i => (ulong)i).Aggregate(0UL, (a, b) => a + b), icountSum);
        Console.WriteLine($"100k records: write {writeTime.TotalMilliseconds:F0} ms, read {sw.Elapsed.TotalMilliseconds:F0} ms, {ms.Length} bytes");
    }

    /// <summary>The span forms a recording appends with (an output from the guest's bytes, a by-value read copied from
    /// guest memory into the record) write byte for byte the frames of the records they stand for, small and larger
    /// than the writer's scratch limit (1 MiB: a rented frame). Oracle: Append of the record structs, whose
    /// decoding the replay reads. Fails on a span form that orders, sizes or fills a field differently.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(37)]
    [InlineData(3 << 20)]
    public void SpanFormsWriteTheFramesOfTheRecordsTheyStandFor(int size)
    {
        var bytes = new byte[size];
        new Random(size).NextBytes(bytes);
        byte[] digest = [1, 2, 3, 4, 5, 6, 7, 8];
        const ulong addr = 0x7fff_1234_5000;
        byte[] Frames(Action<LogWriter> append)
        {
            var sink = new MemoryLogSink();
            using (var w = new LogWriter(SampleHeader(), sink, leaveOpen: true))
            {
                w.Append(new Rdtsc { InstrCount = 1, Value = 2 }); // the span forms follow a record in the scratch buffer
                append(w);
                w.Append(new Rdtsc { InstrCount = 3, Value = 4 });
            }
            return sink.ToArray();
        }
        var outputOracle = Frames(w => w.Append(new Output { InstrCount = 42, Fd = 2, TotalBytes = 1000 + (ulong)size, Digest = digest, Bytes = bytes }));
        var output = Frames(w => w.AppendOutput(42, 2, 1000 + (ulong)size, digest, bytes));
        Assert.True(outputOracle.AsSpan().SequenceEqual(output), "Output frames differ");
        var readOracle = Frames(w => w.Append(new SyscallResult { InstrCount = 43, Tid = 7, Nr = 0, Result = size, MemWrites = [new GuestWrite(addr, bytes)] }));
        var read = Frames(w => w.AppendOneWrite(43, 7, 0, size, addr, size, new FromArray(addr, bytes)));
        Assert.True(readOracle.AsSpan().SequenceEqual(read), "SyscallResult frames differ");
        using var reader = new LogReader(new MemoryStream(read));
        Assert.True(reader.TryRead(out _));
        Assert.True(reader.TryRead(out var r));
        var decoded = r.Decode<SyscallResult>();
        Assert.Equal(addr, decoded.MemWrites![0].Addr);
        Assert.True(bytes.AsSpan().SequenceEqual(decoded.MemWrites[0].Bytes));
    }

    /// <summary>Memory of one array at an address (a stand-in for guest memory).</summary>
    sealed class FromArray(ulong at, byte[] bytes) : IWriteSource
    {
        public void CopyTo(ulong addr, Span<byte> into) => bytes.AsSpan(checked((int)(addr - at)), into.Length).CopyTo(into);
    }

    [Fact]
    public void Append_DoesNotAllocate_OnceWarm()
    {
        var data = new byte[100];
        using var w = new LogWriter(SampleHeader(), new StreamLogSink(Stream.Null));
        var s = new SyscallResult { InstrCount = 1, Tid = 1, Nr = 0, Result = 100, Data = data };
        for (int i = 0; i < 1000; i++) { w.Append(in s); w.Append(new Rdtsc { InstrCount = (ulong)i }); }
        // The least of a few rounds: the runtime itself may allocate once on this thread while the
        // appends run (a tier-up or a first call of a rare path), which says nothing about Append.
        // An Append that allocates does so in every round.
        long least = long.MaxValue;
        for (int round = 0; round < 5 && least >= 1024; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10_000; i++) { w.Append(in s); w.Append(new Rdtsc { InstrCount = (ulong)i }); }
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(least < 1024, $"{least} bytes allocated by 20k appends in the best of 5 rounds");
    }

    [Fact]
    public async Task FileSink_FlushAsync_MakesRecordsVisibleToAConcurrentReader()
    {
        var dir = Directory.CreateTempSubdirectory("revirt-log-test");
        try
        {
            var path = Path.Combine(dir.FullName, "live.rvlog");
            await using var w = LogWriter.Create(path, SampleHeader());
            w.Append(SampleSyscall());
            await w.FlushAsync();
            w.Append(SampleSyscall(99)); // still buffered
            using (var reader = LogReader.Open(path))
            {
                Assert.Single(reader.ReadAll());
                Assert.False(reader.Truncated);
            }
            w.Flush();
            using (var reader = LogReader.Open(path))
                Assert.Equal(2, reader.ReadAll().Count());
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void LargeRecord_BypassesScratchAndSinkBuffer()
    {
        var big = new byte[3 << 20];
        new Random(1).NextBytes(big);
        var ms = new MemoryStream();
        using (var w = new LogWriter(SampleHeader(), new StreamLogSink(ms, leaveOpen: true, bufferSize: 4096)))
        {
            w.Append(new Output { InstrCount = 1, Fd = 1, TotalBytes = (ulong)big.Length, Bytes = big });
            w.Append(new Exit { InstrCount = 2 });
        }
        ms.Position = 0;
        using var reader = new LogReader(ms);
        var recs = reader.ReadAll().ToList();
        Assert.Equal(big, recs[0].Decode<Output>().Bytes);
        Assert.Equal(RecordKind.Exit, recs[1].Kind);
    }

    [Fact]
    public void NonSeekableStream_IsReadable()
    {
        var log = WriteSampleLog();
        using var reader = new LogReader(new TrickleStream(log));
        Assert.Equal(12, reader.ReadAll().Count());
        Assert.False(reader.Truncated);
    }

    /// <summary>The End record's digest is the SHA-256 of every byte before it (the oracle: the hash of the written
    /// bytes), whatever the mix of record sizes: the writer hands the bytes to the hash in chunks, so records end on,
    /// before and after a chunk's end, and records larger than a chunk come between small ones.</summary>
    [Theory]
    [InlineData(LogFormat.CurrentVersion)]
    [InlineData(5)] // SHA-256, fed to the library in 64 KiB chunks
    public void TheEndRecordsDigestCoversEveryByteWhateverTheRecordSizes(ushort version)
    {
        var ms = new MemoryStream();
        var rnd = new Random(3);
        var header = SampleHeader();
        header.Version = version;
        header.ProgramHash = LogHeader.ComputeProgramHash("guest program image"u8, version);
        using (var w = new LogWriter(header, new StreamLogSink(ms, leaveOpen: true)))
        {
            foreach (int size in new[] { 10, 40_000, 24_000, 1_000, 70_000, 5, 65_500, 200_000, 3, 64 * 1024, 30_000, 30_000, 30_000 })
            {
                var data = new byte[size];
                rnd.NextBytes(data);
                w.Append(new SyscallResult { InstrCount = (ulong)size, Tid = 1, Nr = 0, Result = size, Data = data });
            }
            for (int i = 0; i < 3_000; i++) w.Append(SampleSyscall((ulong)i));
            w.Append(new Exit { InstrCount = 1, Status = 0 });
            w.Finish();
        }
        var log = ms.ToArray();
        using var reader = new LogReader(new MemoryStream(log));
        var records = reader.ReadAll().ToList();
        Assert.True(reader.Complete);
        var end = records[^1];
        var before = log.AsSpan(0, (int)end.Offset);
        Assert.Equal(version == 5 ? System.Security.Cryptography.SHA256.HashData(before) : System.IO.Hashing.XxHash128.Hash(before), end.Decode<End>().Digest);
    }

    /// <summary>A non-seekable stream returning at most 3 bytes per read.</summary>
    private sealed class TrickleStream(byte[] data) : ReVirt.Replication.ReadOnlyStream
    {
        private int _pos;
        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(buffer.Length, 3), data.Length - _pos);
            data.AsSpan(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }
    }
}
