using Google.Protobuf;
using ReVirt.Protocol;

namespace ReVirt.Replication;

/// <summary>
/// A <see cref="Batch"/> read in place from the data link's receive buffer: the fields, and the frames as a view of
/// the buffer (valid until the link's next read), so holding a batch allocates nothing and copies the frames only into
/// the log copy and the replay. <see cref="LinkWire.TryReadBatch"/> makes one.
/// </summary>
public readonly record struct BatchView(ulong FirstSequence, uint Count, ReadOnlyMemory<byte> Frames, bool HasReleased, ulong ReleasedStdout, ulong ReleasedStderr, ulong SentMonotonicNs = 0)
{
    public static BatchView Of(Batch b) => new(b.FirstSequence, b.Count, b.Frames.Memory, b.Released != null, b.Released?.StdoutBytes ?? 0, b.Released?.StderrBytes ?? 0, b.SentMonotonicNs);

    /// <summary>A message of its own (frames copied): for a batch that must outlive the link's next read.</summary>
    public Batch ToMessage() => new()
    {
        FirstSequence = FirstSequence, Count = Count, Frames = ByteString.CopyFrom(Frames.Span),
        Released = HasReleased ? new OutputMark { StdoutBytes = ReleasedStdout, StderrBytes = ReleasedStderr } : null,
        SentMonotonicNs = SentMonotonicNs,
    };
}

/// <summary>An <see cref="Ack"/> read in place (<see cref="LinkWire.TryReadAck"/>): its fields, no message objects.</summary>
public readonly record struct AckView(ulong HeldSequence, long EchoUnixMs, ulong ReplayedSequence, uint TransitUs, uint HoldUs, ulong SentMonotonicNs, ulong SnapshotBytes = 0)
{
    public static AckView Of(Ack a) => new(a.HeldSequence, a.EchoUnixMs, a.ReplayedSequence, a.TransitUs, a.HoldUs, a.SentMonotonicNs, a.SnapshotBytes);
}

/// <summary>
/// The two messages the data link carries per request, encoded and decoded by hand in the protobuf wire format of
/// replication.proto (<see cref="PrimaryMessage"/> field 3 = <see cref="Batch"/>; <see cref="BackupMessage"/> field 4 =
/// <see cref="Ack"/>): the same bytes the generated code reads and writes, without its objects and the copy of the
/// frames. Anything else, or anything this reader does not take as it is, goes through the generated parser.
/// </summary>
public static class LinkWire
{
    const int VarintType = 0, Fixed64Type = 1, LengthType = 2, Fixed32Type = 5;
    static uint Tag(int field, int wireType) => (uint)(field << 3 | wireType);

    /// <summary>
    /// Reads <paramref name="message"/> (one PrimaryMessage's encoding) as a batch when it is one: true with the batch
    /// (its frames a slice of <paramref name="message"/>); false when it is another message, or a batch this reader
    /// leaves to the generated parser (a repeated body field, a field of a wire type a batch never has), which then
    /// decides, and rejects what is malformed.
    /// </summary>
    public static bool TryReadBatch(ReadOnlyMemory<byte> message, out BatchView batch)
    {
        batch = default;
        var s = message.Span;
        int pos = 0;
        // the body: exactly one field, the batch (a oneof written once)
        if (!ReadVarint(s, ref pos, out ulong tag) || tag != Tag(3, LengthType)) return false;
        if (!ReadLength(s, ref pos, out int len) || pos + len != s.Length) return false;
        int end = pos + len;
        ulong first = 0, stdout = 0, stderr = 0, sent = 0;
        uint count = 0;
        ReadOnlyMemory<byte> frames = ReadOnlyMemory<byte>.Empty;
        bool released = false;
        while (pos < end)
        {
            if (!ReadTag(s[..end], ref pos, out tag)) return false;
            int field = (int)(tag >> 3), type = (int)(tag & 7);
            switch (field, type)
            {
                case (1, VarintType): if (!ReadVarint(s[..end], ref pos, out first)) return false; break;
                case (2, VarintType): if (!ReadVarint(s[..end], ref pos, out ulong c)) return false; count = (uint)c; break;
                case (3, LengthType):
                    if (!ReadLength(s[..end], ref pos, out int n)) return false;
                    frames = message.Slice(pos, n);
                    pos += n;
                    break;
                case (4, LengthType):
                    {
                        // a message field given twice merges, as the generated parser does
                        if (!ReadLength(s[..end], ref pos, out int markLength)) return false;
                        int markEnd = pos + markLength;
                        released = true;
                        while (pos < markEnd)
                        {
                            if (!ReadTag(s[..markEnd], ref pos, out ulong t)) return false;
                            if (t == Tag(1, VarintType)) { if (!ReadVarint(s[..markEnd], ref pos, out stdout)) return false; }
                            else if (t == Tag(2, VarintType)) { if (!ReadVarint(s[..markEnd], ref pos, out stderr)) return false; }
                            else if (!Skip(s[..markEnd], ref pos, t)) return false;
                        }
                        break;
                    }
                case (5, VarintType): if (!ReadVarint(s[..end], ref pos, out sent)) return false; break;
                default:
                    if (field is >= 1 and <= 5) return false; // a known field of another wire type: the parser's case
                    if (!Skip(s[..end], ref pos, tag)) return false;
                    break;
            }
        }
        batch = new BatchView(first, count, frames, released, stdout, stderr, sent);
        return true;
    }

    /// <summary>Most bytes <see cref="WriteBatchHead"/> writes before the frames: the link's 4-byte length prefix, the
    /// body's tag and length, and the batch's fields other than the frames with the frames' tag and length.</summary>
    public const int MaxBatchHeadBytes = 4 + (1 + 5) + (1 + 10) + (1 + 5) + (1 + 1 + 2 * (1 + 10)) + (1 + 10) + (1 + 5);

    /// <summary>
    /// Writes, right before the frames at <paramref name="framesAt"/> in <paramref name="buffer"/> (which must leave at
    /// least <see cref="MaxBatchHeadBytes"/> free in front of them), the data link's length prefix and the encoding of
    /// PrimaryMessage { Batch } up to the frames, so that the link sends the message from the returned offset to the
    /// frames' end in one write: no message objects and no copy of the frames. The fields other than the frames come
    /// first (protobuf readers take fields in any order: the generated parser and <see cref="TryReadBatch"/> read the
    /// same batch); the released mark is always present, as the primary always sends one; zeros are left out.
    /// </summary>
    public static int WriteBatchHead(byte[] buffer, int framesAt, int framesLength, ulong first, uint count, ulong releasedStdout, ulong releasedStderr, ulong sentMonotonicNs)
    {
        Span<byte> head = stackalloc byte[MaxBatchHeadBytes];
        int n = 0;
        if (first != 0) { head[n++] = (byte)Tag(1, VarintType); n += WriteVarint(head[n..], first); }
        if (count != 0) { head[n++] = (byte)Tag(2, VarintType); n += WriteVarint(head[n..], count); }
        head[n++] = (byte)Tag(4, LengthType);
        int markLengthAt = n++; // at most 22 bytes: a one-byte length
        if (releasedStdout != 0) { head[n++] = (byte)Tag(1, VarintType); n += WriteVarint(head[n..], releasedStdout); }
        if (releasedStderr != 0) { head[n++] = (byte)Tag(2, VarintType); n += WriteVarint(head[n..], releasedStderr); }
        head[markLengthAt] = (byte)(n - markLengthAt - 1);
        if (sentMonotonicNs != 0) { head[n++] = (byte)Tag(5, VarintType); n += WriteVarint(head[n..], sentMonotonicNs); }
        if (framesLength != 0) { head[n++] = (byte)Tag(3, LengthType); n += WriteVarint(head[n..], (ulong)framesLength); }
        int body = n + framesLength;
        Span<byte> outer = stackalloc byte[1 + 5];
        outer[0] = (byte)Tag(3, LengthType);
        int o = 1 + WriteVarint(outer[1..], (ulong)body);
        int start = framesAt - n - o - 4;
        if (start < 0) throw new ArgumentException($"the frames start at {framesAt}: less than {n + o + 4} bytes in front of them");
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(start), o + body);
        outer[..o].CopyTo(buffer.AsSpan(start + 4));
        head[..n].CopyTo(buffer.AsSpan(start + 4 + o));
        return start;
    }

    /// <summary>Most bytes <see cref="WriteAck"/> writes.</summary>
    public const int MaxAckBytes = 2 + 7 * 11;

    /// <summary>
    /// Writes the encoding of BackupMessage { Ack { held, echo, replayed, snapshot bytes, transit, hold, sent } } (the generated code's
    /// bytes: fields in order, zeros left out) into <paramref name="into"/>; returns its length.
    /// </summary>
    public static int WriteAck(Span<byte> into, ulong held, long echoUnixMs, ulong replayed, uint transitUs = 0, uint holdUs = 0, ulong sentMonotonicNs = 0, ulong snapshotBytes = 0)
    {
        int pos = 2; // the tag and a one-byte length (the body is at most 77 bytes)
        if (held != 0) { into[pos++] = (byte)Tag(1, VarintType); pos += WriteVarint(into[pos..], held); }
        if (echoUnixMs != 0) { into[pos++] = (byte)Tag(2, VarintType); pos += WriteVarint(into[pos..], (ulong)echoUnixMs); }
        if (replayed != 0) { into[pos++] = (byte)Tag(3, VarintType); pos += WriteVarint(into[pos..], replayed); }
        if (snapshotBytes != 0) { into[pos++] = (byte)Tag(4, VarintType); pos += WriteVarint(into[pos..], snapshotBytes); }
        if (transitUs != 0) { into[pos++] = (byte)Tag(5, VarintType); pos += WriteVarint(into[pos..], transitUs); }
        if (holdUs != 0) { into[pos++] = (byte)Tag(6, VarintType); pos += WriteVarint(into[pos..], holdUs); }
        if (sentMonotonicNs != 0) { into[pos++] = (byte)Tag(7, VarintType); pos += WriteVarint(into[pos..], sentMonotonicNs); }
        into[0] = (byte)Tag(4, LengthType);
        into[1] = (byte)(pos - 2);
        return pos;
    }

    /// <summary>
    /// Reads <paramref name="message"/> (one BackupMessage's encoding) as an ack when it is one: true with its fields;
    /// false when it is another message, or an ack this reader leaves to the generated parser (a repeated body field, a
    /// known field of another wire type, a value the parser would cut), which then decides and rejects what is malformed.
    /// </summary>
    public static bool TryReadAck(ReadOnlySpan<byte> message, out AckView ack)
    {
        ack = default;
        int pos = 0;
        if (!ReadVarint(message, ref pos, out ulong tag) || tag != Tag(4, LengthType)) return false;
        if (!ReadLength(message, ref pos, out int len) || pos + len != message.Length) return false;
        var s = message[..(pos + len)];
        ulong held = 0, echo = 0, replayed = 0, snapshot = 0, transit = 0, hold = 0, sent = 0;
        while (pos < s.Length)
        {
            if (!ReadTag(s, ref pos, out tag)) return false;
            int field = (int)(tag >> 3), type = (int)(tag & 7);
            if (field is >= 1 and <= 7)
            {
                if (type != VarintType || !ReadVarint(s, ref pos, out ulong v)) return false;
                switch (field)
                {
                    case 1: held = v; break;
                    case 2: echo = v; break;
                    case 3: replayed = v; break;
                    case 4: snapshot = v; break;
                    case 5: if (v > uint.MaxValue) return false; transit = v; break; // the parser keeps the low 32 bits
                    case 6: if (v > uint.MaxValue) return false; hold = v; break;
                    default: sent = v; break;
                }
            }
            else if (!Skip(s, ref pos, tag)) return false;
        }
        ack = new AckView(held, (long)echo, replayed, (uint)transit, (uint)hold, sent, snapshot);
        return true;
    }

    /// <summary>This host's CLOCK_MONOTONIC in nanoseconds (what Stopwatch reads on Linux), the clock both replicas of a
    /// same-host link share; 0 where Stopwatch does not count nanoseconds (nothing is then stamped).</summary>
    public static ulong MonotonicNs() => System.Diagnostics.Stopwatch.Frequency == 1_000_000_000 ? (ulong)System.Diagnostics.Stopwatch.GetTimestamp() : 0;

    /// <summary>Microseconds from a peer's stamp <paramref name="sentNs"/> to <paramref name="nowNs"/> on the shared clock;
    /// 0 when either is missing or the difference is not plausible (negative, or a second or more).</summary>
    public static uint TransitUs(ulong sentNs, ulong nowNs)
    {
        if (sentNs == 0 || nowNs == 0 || nowNs < sentNs) return 0;
        ulong us = (nowNs - sentNs) / 1000;
        return us is 0 ? 1 : us >= 1_000_000 ? 0 : (uint)us;
    }

    static int WriteVarint(Span<byte> into, ulong v)
    {
        int n = 0;
        for (; v >= 0x80; v >>= 7) into[n++] = (byte)(v | 0x80);
        into[n++] = (byte)v;
        return n;
    }

    static bool ReadVarint(ReadOnlySpan<byte> s, ref int pos, out ulong v)
    {
        v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= s.Length) return false;
            byte b = s[pos++];
            v |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return true;
        }
        return false; // more than 10 bytes
    }

    /// <summary>A field's tag: false for what the generated parser reads otherwise or rejects (a tag beyond 32 bits,
    /// which it would cut to 32; field 0).</summary>
    static bool ReadTag(ReadOnlySpan<byte> s, ref int pos, out ulong tag) => ReadVarint(s, ref pos, out tag) && tag <= uint.MaxValue && tag >> 3 != 0;

    static bool ReadLength(ReadOnlySpan<byte> s, ref int pos, out int len)
    {
        len = 0;
        if (!ReadVarint(s, ref pos, out ulong v) || v > (ulong)(s.Length - pos)) return false;
        len = (int)v;
        return true;
    }

    /// <summary>Skips an unknown field's value (groups are left to the parser).</summary>
    static bool Skip(ReadOnlySpan<byte> s, ref int pos, ulong tag)
    {
        switch ((int)(tag & 7))
        {
            case VarintType: return ReadVarint(s, ref pos, out _);
            case Fixed64Type: if (s.Length - pos < 8) return false; pos += 8; return true;
            case Fixed32Type: if (s.Length - pos < 4) return false; pos += 4; return true;
            case LengthType: if (!ReadLength(s, ref pos, out int n)) return false; pos += n; return true;
            default: return false;
        }
    }
}
