using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace ReVirt.Log;

/// <summary>Sequential little-endian writer over a span sized exactly by the payload's EncodedLength.</summary>
/// <remarks>Stores through references of its own rather than BinaryPrimitives and span slices: those are calls into
/// the framework that the ahead-of-time compiler does not inline, made for every field of every record, so a
/// recording of a few thousand records sent them and these methods past the runtime's tier-up threshold and they
/// were compiled again in every recording. Each store checks the room left (a short span is a bug: it throws).</remarks>
internal ref struct PayloadWriter
{
    private readonly Span<byte> _dest;
    private int _pos;

    public PayloadWriter(Span<byte> destination)
    {
        _dest = destination;
        _pos = 0;
    }

    public readonly int Position => _pos;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref byte Room(int n)
    {
        if ((uint)n > (uint)(_dest.Length - _pos)) ThrowFull(n);
        ref byte at = ref _dest[_pos]; // the indexer, not MemoryMarshal.GetReference: that is a call too
        _pos += n;
        return ref at;
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private readonly void ThrowFull(int n)
        => throw new InvalidOperationException($"payload encoder needs {n} more bytes at offset {_pos} of {_dest.Length}");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void U8(byte v) => Room(1) = v;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void U16(ushort v) => Unsafe.WriteUnaligned(ref Room(2), BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void I16(short v) => U16((ushort)v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void U32(uint v) => Unsafe.WriteUnaligned(ref Room(4), BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void I32(int v) => U32((uint)v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void U64(ulong v) => Unsafe.WriteUnaligned(ref Room(8), BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void I64(long v) => U64((ulong)v);

    /// <summary>Raw bytes, no length prefix.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Raw(ReadOnlySpan<byte> v)
    {
        if (v.Length == 0) return;
        Unsafe.CopyBlockUnaligned(ref Room(v.Length), ref Unsafe.AsRef(in v[0]), (uint)v.Length);
    }

    /// <summary>The next <paramref name="n"/> bytes, left for the caller to fill.</summary>
    public Span<byte> Skip(int n)
    {
        if ((uint)n > (uint)(_dest.Length - _pos)) ThrowFull(n);
        var at = _dest.Slice(_pos, n);
        _pos += n;
        return at;
    }

    /// <summary>u32 length + bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Bytes(ReadOnlySpan<byte> v) { U32((uint)v.Length); Raw(v); }

    /// <summary>u32 byte length + UTF-8.</summary>
    public void String(string? v) => Bytes(Utf8(v ?? ""));

    public static int BytesSize(int length) => checked(4 + length);

    public static int StringSize(string? v) => BytesSize(Utf8(v ?? "").Length);

    /// <summary>The UTF-8 form of a string, kept for the last string sized or written: a record is sized and then
    /// written, and a recording's by-reference reads of one file carry the same path string in every record (md5sum
    /// 16 MB: 4,096 of them), so encoding it twice per record sent the framework's UTF-8 code past the tier-up
    /// threshold and the runtime compiled it again in every recording. Strings do not change, so the same reference
    /// has the same bytes; the pair is one immutable object, so writers on several threads see a consistent one.</summary>
    static byte[] Utf8(string v)
    {
        var last = s_lastUtf8;
        if (last is null || !ReferenceEquals(last.Text, v)) s_lastUtf8 = last = new Utf8Text(v, Encoding.UTF8.GetBytes(v));
        return last.Bytes;
    }

    sealed record Utf8Text(string Text, byte[] Bytes);

    static Utf8Text? s_lastUtf8;

    /// <summary>Throws if the encoder wrote a different number of bytes than it announced (a bug).</summary>
    public readonly void AssertEnd()
    {
        if (_pos != _dest.Length)
            throw new InvalidOperationException($"payload encoder wrote {_pos} bytes, announced {_dest.Length}");
    }
}

/// <summary>Sequential little-endian reader; malformed input raises <see cref="LogFormatException"/>.</summary>
internal ref struct PayloadReader
{
    private readonly ReadOnlySpan<byte> _src;
    private int _pos;
    private readonly string _what;

    public PayloadReader(ReadOnlySpan<byte> source, string what)
    {
        _src = source;
        _pos = 0;
        _what = what;
    }

    public readonly int Position => _pos;
    public readonly int Remaining => _src.Length - _pos;

    // small enough to be inlined into every decoder (ReadyToRun code included): a replay decodes every record's
    // fields through it, and as a call it crossed the tier-up threshold and was compiled again early in every replay
    private ReadOnlySpan<byte> Take(int n)
    {
        if ((uint)n > (uint)(_src.Length - _pos)) ThrowShort(n);
        var s = _src.Slice(_pos, n);
        _pos += n;
        return s;
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private readonly void ThrowShort(int n)
        => throw new LogFormatException($"malformed {_what}: needs {n} more bytes at payload offset {_pos}, {_src.Length - _pos} left");

    public byte U8() => Take(1)[0];
    public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
    public short I16() => BinaryPrimitives.ReadInt16LittleEndian(Take(2));
    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
    public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
    public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

    public ReadOnlySpan<byte> Raw(int n) => Take(n);

    private int Length()
    {
        uint n = U32();
        if (n > (uint)Remaining)
            throw new LogFormatException($"malformed {_what}: length {n} at payload offset {_pos - 4} exceeds the {Remaining} bytes left");
        return (int)n;
    }

    public byte[] Bytes()
    {
        int n = Length();
        return n == 0 ? [] : Take(n).ToArray();
    }

    public string String()
    {
        int n = Length();
        return n == 0 ? "" : Encoding.UTF8.GetString(Take(n));
    }

    /// <summary>A count of items each at least <paramref name="minItemSize"/> bytes long (bounds allocation on bad input).</summary>
    public int Count(int minItemSize)
    {
        uint n = U32();
        if ((ulong)n * (ulong)Math.Max(1, minItemSize) > (ulong)Remaining)
            throw new LogFormatException($"malformed {_what}: item count {n} at payload offset {_pos - 4} cannot fit in the {Remaining} bytes left");
        return (int)n;
    }

    public readonly void End()
    {
        if (_pos != _src.Length)
            throw new LogFormatException($"malformed {_what}: {_src.Length - _pos} unexpected trailing bytes");
    }
}
