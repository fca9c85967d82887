using System.Buffers.Binary;

namespace ReVirt.Log;

/// <summary>
/// Encoding and validation of single self-contained record frames
/// (<c>u32 length | u64 sequence | u8 kind | u32 headerCrc | payload | u32 crc</c>; see <see cref="LogFormat"/>).
/// Use <see cref="Parse"/> to validate a frame received on its own (e.g. a gRPC chunk).
/// </summary>
public static class RecordFrame
{
    public const int LengthOffset = 0;
    public const int SequenceOffset = 4;
    public const int KindOffset = 12;
    public const int HeaderCrcOffset = 13;
    public const int PayloadOffset = 17;
    /// <summary>Bytes before the payload.</summary>
    public const int HeaderSize = 17;
    /// <summary>Bytes after the payload (the frame checksum).</summary>
    public const int TrailerSize = 4;
    /// <summary>Frame bytes that are not payload.</summary>
    public const int Overhead = HeaderSize + TrailerSize;
    /// <summary>Largest frame accepted by writer and reader (256 MiB). Producers must split larger data.</summary>
    public const int MaxFrameLength = 256 << 20;
    /// <summary>Largest payload that fits in a frame.</summary>
    public const int MaxPayloadLength = MaxFrameLength - Overhead;

    /// <summary>Frame length for a payload of <paramref name="payloadLength"/> bytes.</summary>
    public static int FrameLength(int payloadLength)
    {
        if ((uint)payloadLength > MaxPayloadLength)
            throw new ArgumentOutOfRangeException(nameof(payloadLength), payloadLength,
                $"record payload exceeds {MaxPayloadLength} bytes; split the data over several records");
        return payloadLength + Overhead;
    }

    /// <summary>Encodes a frame into <paramref name="destination"/>; returns its length.</summary>
    public static int Encode<T>(in T payload, ulong sequence, Span<byte> destination) where T : struct, IRecordPayload<T>
    {
        int payloadLength = payload.EncodedLength;
        int frameLength = FrameLength(payloadLength);
        if (destination.Length < frameLength)
            throw new ArgumentException($"destination holds {destination.Length} bytes, frame needs {frameLength}", nameof(destination));
        var frame = destination[..frameLength];
        payload.Encode(frame.Slice(PayloadOffset, payloadLength));
        Seal(frame, sequence, T.Kind);
        return frameLength;
    }

    /// <summary>Encodes a frame into a new array.</summary>
    public static byte[] Encode<T>(in T payload, ulong sequence) where T : struct, IRecordPayload<T>
    {
        var buf = new byte[FrameLength(payload.EncodedLength)];
        Encode(in payload, sequence, buf);
        return buf;
    }

    /// <summary>Encodes a frame with an arbitrary kind byte and a raw payload (tools and tests).</summary>
    public static byte[] EncodeRaw(RecordKind kind, ulong sequence, ReadOnlySpan<byte> payload)
    {
        var buf = new byte[FrameLength(payload.Length)];
        payload.CopyTo(buf.AsSpan(PayloadOffset));
        Seal(buf, sequence, kind);
        return buf;
    }

    /// <summary>Fills in length, sequence, kind and both checksums of a frame whose payload is in place.</summary>
    internal static void Seal(Span<byte> frame, ulong sequence, RecordKind kind)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)frame.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(frame[SequenceOffset..], sequence);
        frame[KindOffset] = (byte)kind;
        BinaryPrimitives.WriteUInt32LittleEndian(frame[HeaderCrcOffset..], LogFormat.Checksum(frame[..HeaderCrcOffset]));
        int crcAt = frame.Length - TrailerSize;
        BinaryPrimitives.WriteUInt32LittleEndian(frame[crcAt..], LogFormat.Checksum(frame[..crcAt]));
    }

    /// <summary>
    /// Validates the 17-byte frame header: its checksum, the length bounds, and (if
    /// <paramref name="expectedSequence"/> is non-zero) the sequence number. Returns the frame length.
    /// </summary>
    internal static int CheckHeader(ReadOnlySpan<byte> header, ulong expectedSequence, long offset)
    {
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(header[HeaderCrcOffset..]);
        if (LogFormat.Checksum(header[..HeaderCrcOffset]) != stored)
            throw new LogFormatException("record header checksum mismatch", expectedSequence != 0 ? expectedSequence : null, offset);
        return CheckHeaderFields(header, expectedSequence, offset);
    }

    /// <summary>
    /// The header's length bounds and (if <paramref name="expectedSequence"/> is non-zero) sequence number, without
    /// its checksum: for a frame whose checksums were verified before it reached this reader. Returns the frame length.
    /// </summary>
    internal static int CheckHeaderFields(ReadOnlySpan<byte> header, ulong expectedSequence, long offset)
    {
        ulong? recNo = expectedSequence != 0 ? expectedSequence : null;
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong seq = SequenceOf(header);
        if (length < Overhead || length > MaxFrameLength)
            throw new LogFormatException($"invalid record length {length}", recNo ?? seq, offset);
        if (expectedSequence != 0 && seq != expectedSequence)
            throw new LogFormatException($"sequence discontinuity (found #{seq})", expectedSequence, offset);
        return (int)length;
    }

    /// <summary>Validates the checksum over a whole frame whose header is already validated.</summary>
    internal static void CheckTrailer(ReadOnlySpan<byte> frame, long offset)
    {
        int crcAt = frame.Length - TrailerSize;
        if (LogFormat.Checksum(frame[..crcAt]) != BinaryPrimitives.ReadUInt32LittleEndian(frame[crcAt..]))
            throw new LogFormatException("checksum mismatch", SequenceOf(frame), offset);
    }

    private static ulong SequenceOf(ReadOnlySpan<byte> frame) => BinaryPrimitives.ReadUInt64LittleEndian(frame[SequenceOffset..]);

    /// <summary>
    /// Validates a run of <paramref name="count"/> frames laid end to end in <paramref name="frames"/> (what one
    /// replication batch carries): each frame as <see cref="Parse"/> does, sequence numbers running from
    /// <paramref name="after"/>+1, and nothing after the last frame. Returns the last frame's sequence number.
    /// This is where a replica's data link verifies every frame it receives, once: the replay reads these frames
    /// through <see cref="LogReader.OverVerifiedFrames"/>, which does not compute their checksums again.
    /// </summary>
    /// <exception cref="LogFormatException">A frame is damaged, cut off or out of sequence (the reason names it).</exception>
    public static ulong CheckRun(ReadOnlyMemory<byte> frames, uint count, ulong after)
    {
        int off = 0;
        ulong seq = after;
        for (uint i = 0; i < count; i++)
        {
            if (frames.Length - off < HeaderSize) throw new LogFormatException("batch ends mid-frame", seq + 1);
            int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(frames.Span[off..]);
            if (len < Overhead || len > frames.Length - off) throw new LogFormatException($"invalid record length {len}", seq + 1);
            Parse(frames.Slice(off, len), seq + 1);
            seq++;
            off += len;
        }
        if (off != frames.Length) throw new LogFormatException("batch has bytes after its last frame", seq);
        return seq;
    }

    /// <summary>
    /// Validates one complete frame (exact length, both checksums, and the sequence number if
    /// <paramref name="expectedSequence"/> is non-zero) and wraps it without copying.
    /// <paramref name="offset"/> is only used in error messages and <see cref="LogRecord.Offset"/>.
    /// </summary>
    public static LogRecord Parse(ReadOnlyMemory<byte> frame, ulong expectedSequence = 0, long offset = -1)
    {
        var span = frame.Span;
        ulong? recNo = expectedSequence != 0 ? expectedSequence : null;
        if (span.Length < HeaderSize)
            throw new LogFormatException($"record frame too short ({span.Length} bytes)", recNo, offset);
        int length = CheckHeader(span[..HeaderSize], expectedSequence, offset);
        if (length != span.Length)
            throw new LogFormatException($"record frame is {span.Length} bytes but declares {length}", recNo, offset);
        CheckTrailer(span, offset);
        return new LogRecord(frame, offset);
    }
}

/// <summary>
/// One validated record: its raw frame (forwardable as is) plus typed access to the payload.
/// </summary>
public readonly struct LogRecord
{
    internal LogRecord(ReadOnlyMemory<byte> frame, long offset)
    {
        Frame = frame;
        Offset = offset;
    }

    /// <summary>The complete encoded frame (length, sequence, kind, checksums, payload).</summary>
    public ReadOnlyMemory<byte> Frame { get; }

    /// <summary>Byte offset of the frame in the log; -1 if unknown.</summary>
    public long Offset { get; }

    public int Length => Frame.Length;

    public ulong Sequence => BinaryPrimitives.ReadUInt64LittleEndian(Frame.Span[RecordFrame.SequenceOffset..]);

    public RecordKind Kind => (RecordKind)Frame.Span[RecordFrame.KindOffset];

    public ReadOnlyMemory<byte> Payload => Frame.Slice(RecordFrame.PayloadOffset, Frame.Length - RecordFrame.Overhead);

    /// <summary>True if this record is of <typeparamref name="T"/>'s kind.</summary>
    public bool Is<T>() where T : struct, IRecordPayload<T> => Kind == T.Kind;

    /// <summary>
    /// Decodes the payload as <typeparamref name="T"/>. Throws <see cref="InvalidOperationException"/> if the
    /// record is of another kind and <see cref="LogFormatException"/> if the payload is malformed.
    /// </summary>
    public T Decode<T>() where T : struct, IRecordPayload<T>
    {
        if (Kind != T.Kind)
            throw new InvalidOperationException($"record #{Sequence} is a {KindName(Kind)} record, not {T.Kind}");
        try
        {
            return T.Decode(Payload.Span);
        }
        catch (LogFormatException e)
        {
            throw new LogFormatException(e.Reason, Sequence, Offset, e);
        }
    }

    /// <summary>Decodes the payload if the record is of <typeparamref name="T"/>'s kind.</summary>
    public bool TryDecode<T>(out T value) where T : struct, IRecordPayload<T>
    {
        if (Kind != T.Kind) { value = default; return false; }
        value = Decode<T>();
        return true;
    }

    /// <summary>Decodes the payload into its boxed payload struct (convenient for pattern matching, not for hot paths).</summary>
    public object DecodeAny() => Kind switch
    {
        RecordKind.SyscallResult => Decode<SyscallResult>(),
        RecordKind.Rdtsc => Decode<Rdtsc>(),
        RecordKind.Rdrand => Decode<Rdrand>(),
        RecordKind.Signal => Decode<Signal>(),
        RecordKind.Preempt => Decode<Preempt>(),
        RecordKind.Checkpoint => Decode<Checkpoint>(),
        RecordKind.Output => Decode<Output>(),
        RecordKind.Exit => Decode<Exit>(),
        RecordKind.FileContent => Decode<FileContent>(),
        RecordKind.FileContentRun => Decode<FileContentRun>(),
        RecordKind.NetInput => Decode<NetInput>(),
        RecordKind.Wake => Decode<Wake>(),
        RecordKind.NetTakeover => Decode<NetTakeover>(),
        RecordKind.End => Decode<End>(),
        RecordKind.Opaque => Decode<Opaque>(),
        _ => throw new LogFormatException($"unknown record kind 0x{(byte)Kind:x2}", Sequence, Offset),
    };

    internal static string KindName(RecordKind k) => Enum.IsDefined(k) ? k.ToString() : $"0x{(byte)k:x2}";

    public override string ToString() => $"#{Sequence} {KindName(Kind)} ({Length} bytes @ {Offset})";
}
