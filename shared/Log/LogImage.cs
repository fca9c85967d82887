using System.Buffers.Binary;

namespace ReVirt.Log;

/// <summary>
/// A log taken apart into its encoded header and its record frames, for tools that edit logs (tests and the fuzzer
/// forge logs with it; nothing in a replica uses it). <see cref="Build"/> puts the pieces back together with
/// consecutive sequence numbers, fresh checksums and, unless told otherwise, a fresh End record: what a forger
/// who knows the format can produce, so a replay must catch such a log by what it says, not by its checksums.
/// </summary>
public sealed class LogImage
{
    public byte[] Header { get; set; } = [];
    /// <summary>Every frame after the header, End record included when the log had one.</summary>
    public List<byte[]> Frames { get; } = new();

    /// <summary>Splits a log; a torn tail is dropped. Throws <see cref="LogFormatException"/> on damage.</summary>
    public static LogImage Parse(byte[] log)
    {
        var img = new LogImage();
        using var reader = new LogReader(new MemoryStream(log, writable: false));
        img.Header = log.AsSpan(0, (int)reader.HeaderLength).ToArray();
        while (reader.TryRead(out var r)) img.Frames.Add(r.Frame.ToArray());
        return img;
    }

    public static RecordKind KindOf(byte[] frame) => (RecordKind)frame[RecordFrame.KindOffset];

    /// <summary>A frame of <paramref name="kind"/> around <paramref name="payload"/> (sequence fixed by <see cref="Build"/>).</summary>
    public static byte[] Frame(RecordKind kind, ReadOnlySpan<byte> payload) => RecordFrame.EncodeRaw(kind, 1, payload);

    public static byte[] Frame<T>(in T payload) where T : struct, IRecordPayload<T> => RecordFrame.Encode(in payload, 1);

    /// <summary>The payload bytes of a frame.</summary>
    public static byte[] Payload(byte[] frame) => frame.AsSpan(RecordFrame.PayloadOffset, frame.Length - RecordFrame.Overhead).ToArray();

    /// <summary>
    /// Encodes header and frames; with <paramref name="reseal"/> every frame gets its position's sequence number and
    /// new checksums; with <paramref name="freshEnd"/> existing End frames are dropped and a correct one appended.
    /// </summary>
    public byte[] Build(bool reseal = true, bool freshEnd = true)
    {
        var ms = new MemoryStream();
        ms.Write(Header);
        using var digest = LogDigest.ForVersion(BinaryPrimitives.ReadUInt16LittleEndian(Header.AsSpan(LogFormat.Magic.Length)));
        digest.Append(Header);
        ulong seq = 0;
        foreach (var f in Frames)
        {
            if (freshEnd && KindOf(f) == RecordKind.End) continue;
            var frame = (byte[])f.Clone();
            seq++;
            if (reseal && frame.Length >= RecordFrame.Overhead)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)frame.Length);
                RecordFrame.Seal(frame, seq, KindOf(frame));
            }
            ms.Write(frame);
            digest.Append(frame);
        }
        if (freshEnd)
        {
            var end = RecordFrame.Encode(new End { RecordCount = seq, Digest = digest.Current() }, seq + 1);
            ms.Write(end);
        }
        return ms.ToArray();
    }
}
