using Xunit;
using System.Runtime.InteropServices;
using ReVirt.Log;
using ReVirt.Replication;

namespace ReVirt.Tests.Replication;

/// <summary>
/// A backup's replay reads its records in place from the chunks its link thread hands over
/// (<see cref="LogReader.OverVerifiedChunks"/> over a <see cref="BlockingPipeStream"/>): the oracle is an ordinary
/// reader of the same log bytes from a stream, which copies every frame and checks every checksum.
/// </summary>
public class InPlaceReplayReadTests
{
    static LogHeader Header() => new()
    {
        ProgramHash = LogHeader.ComputeProgramHash("in-place reader test program"u8),
        CpuModel = "test",
        RootDirectory = "/",
        Argv = ["/prog"],
        Envp = [],
        StartTime = new DateTimeOffset(2026, 12, 1, 17, 0, 0, TimeSpan.Zero),
        StartState = [1, 2, 3],
        CheckpointInterval = 1_000_000,
    };

    /// <summary>A log of <paramref name="n"/> records of varied kinds and sizes, closed with its End record.</summary>
    static byte[] Log(int n, int seed)
    {
        var rng = new Random(seed);
        var ms = new MemoryStream();
        using (var w = new LogWriter(Header(), new StreamLogSink(ms, leaveOpen: true)))
        {
            for (int i = 0; i < n; i++)
            {
                ulong at = (ulong)(1000 + i * 10);
                switch (rng.Next(3))
                {
                    case 0: w.Append(new SyscallResult { InstrCount = at, Tid = 1, Nr = 0, Result = 5, MemWrites = [new GuestWrite(0x1000, RandomBytes(rng, rng.Next(1, 300)))] }); break;
                    case 1: w.Append(new Rdtsc { InstrCount = at, Value = (ulong)rng.NextInt64() }); break;
                    default: w.Append(new SyscallResult { InstrCount = at, Tid = 1, Nr = 1, Result = 9, Data = RandomBytes(rng, rng.Next(0, 40)) }); break;
                }
            }
            w.Finish();
        }
        return ms.ToArray();
    }

    static byte[] RandomBytes(Random rng, int n) { var b = new byte[n]; rng.NextBytes(b); return b; }

    /// <summary>Where each frame starts (and the log's end), from the frames' length fields alone.</summary>
    static List<int> FrameStarts(byte[] log)
    {
        LogHeader.Decode(log, out int at);
        var starts = new List<int>();
        for (; at < log.Length; at += (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(at))) starts.Add(at);
        starts.Add(log.Length);
        return starts;
    }

    /// <summary>The log cut into chunks at frame boundaries chosen by <paramref name="rng"/> (the header alone, or with
    /// the first frames), appended to a completed pipe.</summary>
    static (BlockingPipeStream Pipe, int Chunks) Chunked(byte[] log, Random rng, bool headerAlone)
    {
        var starts = FrameStarts(log);
        var pipe = new BlockingPipeStream();
        int from = 0, chunks = 0;
        if (headerAlone) { pipe.Append(log.AsSpan(0, starts[0])); from = starts[0]; chunks++; }
        for (int i = headerAlone ? 1 : rng.Next(1, 4); i < starts.Count; i += rng.Next(1, 6))
        {
            pipe.Append(log.AsSpan(from, starts[i] - from));
            from = starts[i];
            chunks++;
        }
        if (from < log.Length) { pipe.Append(log.AsSpan(from)); chunks++; }
        pipe.Complete();
        return (pipe, chunks);
    }

    /// <summary>
    /// Every record equals the ordinary reader's (bytes, sequence, offset), the End record's count and digest are
    /// checked whatever the cut, and a record is a slice of its chunk, not a copy: the records come from as many
    /// arrays as there were chunks after the header (a reader that copies each frame has one array per record).
    /// </summary>
    [Fact]
    public void RecordsAreSlicesOfTheirChunksAndEqualAStreamReadersAtEveryCut()
    {
        var log = Log(300, seed: 1);
        List<LogRecord> expected;
        using (var r = new LogReader(new MemoryStream(log))) { expected = r.ReadAll().ToList(); Assert.True(r.Complete); }
        var rng = new Random(7);
        for (int round = 0; round < 40; round++)
        {
            bool headerAlone = round % 2 == 0;
            var (pipe, chunks) = Chunked(log, rng, headerAlone);
            using var reader = LogReader.OverVerifiedChunks(pipe);
            var got = reader.ReadAll().ToList();
            Assert.True(reader.Complete, $"round {round}: the End record was not accepted");
            Assert.Equal(expected.Count, got.Count);
            for (int i = 0; i < got.Count; i++)
            {
                Assert.Equal(expected[i].Offset, got[i].Offset);
                Assert.True(expected[i].Frame.Span.SequenceEqual(got[i].Frame.Span), $"round {round}: record #{i + 1} differs");
            }
            var arrays = got.Select(x => MemoryMarshal.TryGetArray(x.Frame, out var seg) ? seg.Array! : throw new InvalidOperationException("not an array"))
                            .Distinct(ReferenceEqualityComparer.Instance).Count();
            Assert.Equal(headerAlone ? chunks - 1 : chunks, arrays);
        }
    }

    /// <summary>
    /// The End record's digest covers every byte before it, and the in-place reader takes it a chunk at a time: a
    /// record changed in a way its own checksums do not show (re-sealed) is refused at every cut, as the stream
    /// reader refuses it; a log that starts after a snapshot checks the count only.
    /// </summary>
    [Fact]
    public void AResealedRecordFailsTheEndDigestAtEveryCut()
    {
        var log = Log(120, seed: 2);
        using (var r = new LogReader(new MemoryStream(log)))
        {
            var victim = r.ReadAll().First(x => x.Kind == RecordKind.Rdtsc && x.Sequence > 10);
            var changed = victim.Decode<Rdtsc>();
            changed.Value ^= 1;
            RecordFrame.Encode(changed, victim.Sequence).CopyTo(log.AsSpan((int)victim.Offset));
        }
        using (var stream = LogReader.OverVerifiedFrames(new MemoryStream(log)))
            Assert.Contains("digest does not match", Assert.Throws<LogFormatException>(() => stream.Verify()).Message);
        var rng = new Random(3);
        for (int round = 0; round < 40; round++)
        {
            using var reader = LogReader.OverVerifiedChunks(Chunked(log, rng, headerAlone: round % 2 == 0).Pipe);
            var e = Assert.Throws<LogFormatException>(() => reader.Verify());
            Assert.Contains("digest does not match", e.Message);
        }
    }

    /// <summary>A chunk holds whole frames: a frame that runs past its chunk's end, and bytes after the End record, are
    /// refused with the reason (never read from the next chunk, never a crash).</summary>
    [Fact]
    public void AFrameCutByItsChunkAndBytesAfterTheEndAreRefused()
    {
        var log = Log(20, seed: 4);
        var starts = FrameStarts(log);
        var pipe = new BlockingPipeStream();
        pipe.Append(log.AsSpan(0, starts[3] + 5)); // the header, three frames and 5 bytes of the fourth
        pipe.Append(log.AsSpan(starts[3] + 5));
        pipe.Complete();
        using (var reader = LogReader.OverVerifiedChunks(pipe))
            Assert.Contains("frame header", Assert.Throws<LogFormatException>(() => reader.Verify()).Message);

        pipe = new BlockingPipeStream();
        pipe.Append(log.AsSpan(0, starts[3] + 30));
        pipe.Append(log.AsSpan(starts[3] + 30));
        pipe.Complete();
        using (var reader = LogReader.OverVerifiedChunks(pipe))
            Assert.Contains("runs past the end of its chunk", Assert.Throws<LogFormatException>(() => reader.Verify()).Message);

        pipe = new BlockingPipeStream();
        pipe.Append(log);
        pipe.Append(log.AsSpan(starts[0], starts[1] - starts[0])); // a frame after the End record
        pipe.Complete();
        using (var reader = LogReader.OverVerifiedChunks(pipe))
            Assert.Contains("after the End record", Assert.Throws<LogFormatException>(() => reader.Verify()).Message);
    }

    /// <summary>
    /// The replay's pipe wakes its sleeping reader once per sleep at most, however many chunks arrive while it sleeps
    /// or works: the producer pays a futex wake only when the reader sleeps waiting for an append. The oracles are the
    /// pipe's own count of the reader's sleeps, a phase in which the reader is held outside the pipe (busy: 1,000
    /// appends then must wake nobody, whatever the machine's timing), and every byte arriving in order. A pipe that
    /// wakes the reader for each append (or whenever it may be asleep) wakes it in the busy phase.
    /// </summary>
    [Fact]
    public void AnAppendWakesTheSleepingReaderAtMostOncePerSleep()
    {
        var pipe = new BlockingPipeStream();
        const int Chunks = 3000, BusyFrom = 1000, BusyChunks = 1000;
        long sum = 0, count = 0, busyAt = 0;
        for (int i = 0; i < BusyFrom; i++) busyAt += 1 + i % 7;
        using var atBusy = new ManualResetEventSlim(false);
        using var goOn = new ManualResetEventSlim(false);
        var reader = new Thread(() =>
        {
            while (true)
            {
                var c = pipe.NextChunk();
                if (c.IsEmpty) return;
                foreach (byte b in c.Span) { sum += b; count++; }
                if (count == busyAt) { atBusy.Set(); goOn.Wait(TimeSpan.FromSeconds(60)); } // held outside the pipe
                else if (count % 97 == 0) Thread.Sleep(1); // the reader works a while now and then: chunks pile up
            }
        });
        reader.Start();
        long expected = 0, wakesBeforeBusy = 0, wakesAfterBusy = 0;
        for (int i = 0; i < Chunks; i++)
        {
            if (i == BusyFrom)
            {
                // the reader has taken every byte so far and is held outside the pipe: these appends wake nobody
                Assert.True(atBusy.Wait(TimeSpan.FromSeconds(60)), "the reader did not reach the busy phase");
                wakesBeforeBusy = pipe.Wakes;
            }
            var chunk = new byte[1 + i % 7];
            for (int k = 0; k < chunk.Length; k++) chunk[k] = (byte)(i + k);
            foreach (byte b in chunk) expected += b;
            pipe.Append(chunk);
            if (i == BusyFrom + BusyChunks - 1) { wakesAfterBusy = pipe.Wakes; goOn.Set(); }
            if (i % 500 == 0 && i != BusyFrom) Thread.Sleep(5); // and now and then the reader runs dry and sleeps
        }
        pipe.Complete();
        goOn.Set();
        Assert.True(reader.Join(TimeSpan.FromSeconds(60)));
        Assert.Equal(expected, sum);
        Assert.True(pipe.Sleeps >= 1, "the reader never slept");
        Assert.True(pipe.Wakes <= pipe.Sleeps, $"{pipe.Wakes} wake-ups for {pipe.Sleeps} sleeps of the reader");
        Assert.True(wakesAfterBusy == wakesBeforeBusy, $"{wakesAfterBusy - wakesBeforeBusy} wake-ups for {BusyChunks} appends while the reader was busy outside the pipe");
    }
}
