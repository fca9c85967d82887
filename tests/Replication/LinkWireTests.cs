using Google.Protobuf;
using ReVirt.Protocol;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The data link's hand-made codec of its per-request messages (<see cref="LinkWire"/>) against the generated protobuf
/// code as the oracle: a batch read in place has the fields the generated parser reads, an ack written by hand is the
/// generated encoder's bytes, and no damaged or foreign encoding is read in place differently from the parser.
/// </summary>
public class LinkWireTests
{
    static Batch RandomBatch(Random rng)
    {
        var frames = new byte[rng.Next(4) == 0 ? 0 : rng.Next(1, 3000)];
        rng.NextBytes(frames);
        var b = new Batch { FirstSequence = Pick(rng), Count = (uint)Pick(rng), Frames = ByteString.CopyFrom(frames) };
        if (rng.Next(3) != 0) b.Released = new OutputMark { StdoutBytes = Pick(rng), StderrBytes = Pick(rng) };
        if (rng.Next(2) != 0) b.SentMonotonicNs = Pick(rng);
        return b;
    }

    /// <summary>Zero (left out of the encoding), small, and values of every varint length up to the largest.</summary>
    static ulong Pick(Random rng) => rng.Next(4) switch
    {
        0 => 0,
        1 => (ulong)rng.Next(1, 200),
        2 => ulong.MaxValue >> rng.Next(64),
        _ => (ulong)rng.NextInt64(),
    };

    /// <summary>The fields agree (unknown fields the parser keeps are not part of a batch read in place).</summary>
    static void AssertSame(Batch expected, BatchView got)
    {
        Assert.Equal(expected.FirstSequence, got.FirstSequence);
        Assert.Equal(expected.Count, got.Count);
        Assert.True(expected.Frames.Span.SequenceEqual(got.Frames.Span));
        Assert.Equal(expected.Released != null, got.HasReleased);
        Assert.Equal(expected.Released?.StdoutBytes ?? 0, got.ReleasedStdout);
        Assert.Equal(expected.Released?.StderrBytes ?? 0, got.ReleasedStderr);
        Assert.Equal(expected.SentMonotonicNs, got.SentMonotonicNs);
    }

    [Fact]
    public void ABatchReadInPlaceHasTheFieldsTheGeneratedParserReads()
    {
        var rng = new Random(12);
        for (int i = 0; i < 2000; i++)
        {
            var b = RandomBatch(rng);
            var bytes = new PrimaryMessage { Batch = b }.ToByteArray();
            Assert.True(LinkWire.TryReadBatch(bytes, out var view), $"case {i}: a batch of the generated encoder was left to the parser");
            AssertSame(b, view);
            Assert.Equal(b, view.ToMessage());
        }
        // the other messages of the primary are never taken for a batch
        foreach (var m in new PrimaryMessage[]
        {
            new() { Heartbeat = new Heartbeat { LastSequence = 5, SentUnixMs = 7 } },
            new() { Goodbye = new Goodbye { LastSequence = 9 } },
            new() { JoinPoint = new JoinPoint { Sequence = 3 } },
            new(),
        })
            Assert.False(LinkWire.TryReadBatch(m.ToByteArray(), out _));
    }

    [Fact]
    public void AnAckWrittenByHandIsTheGeneratedEncodersBytes()
    {
        var rng = new Random(13);
        var buf = new byte[LinkWire.MaxAckBytes];
        for (int i = 0; i < 2000; i++)
        {
            var a = RandomAck(rng);
            int n = LinkWire.WriteAck(buf, a.HeldSequence, a.EchoUnixMs, a.ReplayedSequence, a.TransitUs, a.HoldUs, a.SentMonotonicNs, a.SnapshotBytes);
            var expected = new BackupMessage { Ack = a }.ToByteArray();
            Assert.Equal(expected, buf[..n]);
        }
    }

    static Ack RandomAck(Random rng) => new()
    {
        HeldSequence = Pick(rng), ReplayedSequence = Pick(rng),
        EchoUnixMs = rng.Next(3) switch { 0 => 0, 1 => -(long)Pick(rng), _ => (long)Pick(rng) },
        TransitUs = (uint)(Pick(rng) >> 32), HoldUs = (uint)Pick(rng), SentMonotonicNs = Pick(rng), SnapshotBytes = Pick(rng),
    };

    /// <summary>
    /// The primary's batches are written in place, the head in front of the frames (<see cref="LinkWire.WriteBatchHead"/>):
    /// the generated parser reads from the prefix's length exactly the batch the fields give (the released mark always
    /// present, as the primary sends one), and so does the in-place reader; the largest head fits the room left.
    /// </summary>
    [Fact]
    public void ABatchWrittenInPlaceIsTheBatchTheGeneratedParserReads()
    {
        var rng = new Random(15);
        for (int i = 0; i < 2000; i++)
        {
            var b = RandomBatch(rng);
            b.Released ??= new OutputMark();
            if (i == 0) (b.FirstSequence, b.Count, b.Released.StdoutBytes, b.Released.StderrBytes, b.SentMonotonicNs) = (ulong.MaxValue, uint.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue);
            int framesAt = LinkWire.MaxBatchHeadBytes + rng.Next(3); // the head goes right before the frames, wherever they are
            var buffer = new byte[framesAt + b.Frames.Length + rng.Next(3)];
            b.Frames.Span.CopyTo(buffer.AsSpan(framesAt));
            int start = LinkWire.WriteBatchHead(buffer, framesAt, b.Frames.Length, b.FirstSequence, b.Count, b.Released.StdoutBytes, b.Released.StderrBytes, b.SentMonotonicNs);
            int size = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(start));
            Assert.Equal(framesAt + b.Frames.Length, start + 4 + size);
            var parsed = PrimaryMessage.Parser.ParseFrom(buffer, start + 4, size);
            Assert.Equal(PrimaryMessage.BodyOneofCase.Batch, parsed.BodyCase);
            Assert.Equal(b, parsed.Batch);
            Assert.True(LinkWire.TryReadBatch(buffer.AsMemory(start + 4, size), out var view), $"case {i}");
            AssertSame(b, view);
        }
    }

    /// <summary>Acks read in place (the primary's ack thread) have the fields the generated parser reads; damaged ones
    /// are either read the same as the parser reads them or left to it, and the backup's other messages are never taken
    /// for acks.</summary>
    [Fact]
    public void AnAckReadInPlaceIsTheAckTheGeneratedParserReads()
    {
        var rng = new Random(16);
        int taken = 0, left = 0;
        for (int i = 0; i < 20000; i++)
        {
            var a = RandomAck(rng);
            bool damaged = i % 2 == 1;
            var arr = damaged ? Damaged(rng, new BackupMessage { Ack = a }.ToByteArray(), 0x22, a.ToByteArray()) : new BackupMessage { Ack = a }.ToByteArray();
            bool inPlace = LinkWire.TryReadAck(arr, out var view);
            BackupMessage? parsed = null;
            try { parsed = BackupMessage.Parser.ParseFrom(arr); } catch (InvalidProtocolBufferException) { }
            if (!damaged) Assert.True(inPlace, $"case {i}: an ack of the generated encoder was left to the parser");
            if (!inPlace) { left++; continue; }
            taken++;
            Assert.True(parsed is { BodyCase: BackupMessage.BodyOneofCase.Ack }, $"case {i}: read in place, but the parser reads {parsed?.BodyCase.ToString() ?? "nothing"}: {Convert.ToHexString(arr)}");
            Assert.Equal(AckView.Of(parsed!.Ack), view);
        }
        Assert.True(taken > 10000 && left > 1000, $"taken {taken}, left {left}");
        foreach (var m in new BackupMessage[] { new() { Refused = new Refused { Reason = "no" } }, new() { Challenge = new Challenge() }, new() })
            Assert.False(LinkWire.TryReadAck(m.ToByteArray(), out _));
    }

    /// <summary>
    /// Damaged encodings (cut short, bytes changed, bytes added, unknown fields, fields repeated): whenever the in-place
    /// reader takes one, the generated parser reads the same batch from it; a message the parser rejects is never
    /// taken (the link then reports it as malformed).
    /// </summary>
    [Fact]
    public void NoDamagedEncodingIsReadInPlaceDifferentlyFromTheParser()
    {
        var rng = new Random(14);
        int taken = 0, rejected = 0;
        for (int i = 0; i < 20000; i++)
        {
            var b = RandomBatch(rng);
            var arr = Damaged(rng, new PrimaryMessage { Batch = b }.ToByteArray(), 0x1A, b.ToByteArray());
            bool inPlace = LinkWire.TryReadBatch(arr, out var view);
            PrimaryMessage? parsed = null;
            try { parsed = PrimaryMessage.Parser.ParseFrom(arr); } catch (InvalidProtocolBufferException) { }
            if (!inPlace) { rejected++; continue; }
            taken++;
            Assert.True(parsed != null, $"case {i}: read in place, but the parser rejects it: {Convert.ToHexString(arr)}");
            Assert.Equal(PrimaryMessage.BodyOneofCase.Batch, parsed!.BodyCase);
            AssertSame(parsed.Batch, view);
        }
        Assert.True(taken > 1000 && rejected > 1000, $"taken {taken}, rejected {rejected}");
    }

    /// <summary>A message's encoding damaged one way: bytes cut out, changed or added, a field added inside its body
    /// (unknown, known again, or of another wire type; <paramref name="outerTag"/> and the length mended), or cut short.</summary>
    static byte[] Damaged(Random rng, byte[] encoded, byte outerTag, byte[] body)
    {
        var bytes = encoded.ToList();
        switch (rng.Next(5))
        {
            case 0: { int at = rng.Next(bytes.Count); bytes.RemoveRange(at, Math.Min(bytes.Count - at, 1 + rng.Next(8))); break; }
            case 1: for (int k = rng.Next(1, 4); k > 0; k--) bytes[rng.Next(bytes.Count)] = (byte)rng.Next(256); break;
            case 2: bytes.InsertRange(rng.Next(bytes.Count + 1), Enumerable.Range(0, rng.Next(1, 6)).Select(_ => (byte)rng.Next(256))); break;
            case 3:
                {
                    var inner = body.Concat(Field(rng)).ToArray();
                    bytes = [outerTag, .. Varint((ulong)inner.Length), .. inner];
                    break;
                }
            default: { int cut = rng.Next(1, bytes.Count); bytes.RemoveRange(cut, bytes.Count - cut); break; } // cut short
        }
        return bytes.ToArray();
    }

    static IEnumerable<byte> Field(Random rng)
    {
        int field = rng.Next(1, 9);
        return rng.Next(4) switch
        {
            0 => [.. Varint((ulong)(field << 3)), .. Varint(Pick(rng))],
            1 => [.. Varint((ulong)(field << 3 | 1)), .. Enumerable.Range(0, 8).Select(_ => (byte)rng.Next(256))],
            2 => [.. Varint((ulong)(field << 3 | 5)), .. Enumerable.Range(0, 4).Select(_ => (byte)rng.Next(256))],
            _ => [.. Varint((ulong)(field << 3 | 2)), 2, (byte)rng.Next(256), (byte)rng.Next(256)],
        };
    }

    static byte[] Varint(ulong v)
    {
        var r = new List<byte>();
        for (; v >= 0x80; v >>= 7) r.Add((byte)(v | 0x80));
        r.Add((byte)v);
        return [.. r];
    }
}
