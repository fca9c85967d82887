using Google.Protobuf;
using ReVirt.Protocol;

namespace ReVirt.Replication;

/// <summary>
/// A <see cref="Batch"/> read in place from the data link's receive buffer: the fields, and the frames as a view of
/// the buffer (valid until the link's next read), so holding a batch allocates nothing and copies the frames only into
/// the log copy and the replay. <see cref="LinkWire.TryReadBatch"/> makes one.
/// </summary>
public readonly record struct BatchView(ulong FirstSequence, uint Count, ReadOnlyMemory<byte> Frames, bool HasReleased, ulong ReleasedStdout, ulong ReleasedStderr)
{
    public static BatchView Of(Batch b) => new(b.FirstSequence, b.Count, b.Frames.Memory, b.Released != null, b.Released?.StdoutBytes ?? 0, b.Released?.StderrBytes ?? 0);

    /// <summary>A message of its own (frames copied): for a batch that must outlive the link's next read.</summary>
    public Batch ToMessage() => new()
    {
        FirstSequence = FirstSequence, Count = Count, Frames = ByteString.CopyFrom(Frames.Span),
        Released = HasReleased ? new OutputMark { StdoutBytes = ReleasedStdout, StderrBytes = ReleasedStderr } : null,
    };
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
        ulong first = 0, stdout = 0, stderr = 0;
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
                default:
                    if (field is >= 1 and <= 4) return false; // a known field of another wire type: the parser's case
                    if (!Skip(s[..end], ref pos, tag)) return false;
                    break;
            }
        }
        batch = new BatchView(first, count, frames, released, stdout, stderr);
        return true;
    }

    /// <summary>Most bytes <see cref="WriteAck"/> writes.</summary>
    public const int MaxAckBytes = 2 + 3 * 11;

    /// <summary>
    /// Writes the encoding of BackupMessage { Ack { held, echo, replayed } } (the generated code's bytes: fields in
    /// order, zeros left out) into <paramref name="into"/>; returns its length.
    /// </summary>
    public static int WriteAck(Span<byte> into, ulong held, long echoUnixMs, ulong replayed)
    {
        int pos = 2; // the tag and a one-byte length (the body is at most 33 bytes)
        if (held != 0) { into[pos++] = (byte)Tag(1, VarintType); pos += WriteVarint(into[pos..], held); }
        if (echoUnixMs != 0) { into[pos++] = (byte)Tag(2, VarintType); pos += WriteVarint(into[pos..], (ulong)echoUnixMs); }
        if (replayed != 0) { into[pos++] = (byte)Tag(3, VarintType); pos += WriteVarint(into[pos..], replayed); }
        into[0] = (byte)Tag(4, LengthType);
        into[1] = (byte)(pos - 2);
        return pos;
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
