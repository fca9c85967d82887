using System.Buffers.Binary;
using System.Text;

namespace ReVirt.Log;

/// <summary>Sequential little-endian writer over a span sized exactly by the payload's EncodedLength.</summary>
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

    public void U8(byte v) => _dest[_pos++] = v;

    public void U16(ushort v) { BinaryPrimitives.WriteUInt16LittleEndian(_dest[_pos..], v); _pos += 2; }

    public void I16(short v) { BinaryPrimitives.WriteInt16LittleEndian(_dest[_pos..], v); _pos += 2; }

    public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_dest[_pos..], v); _pos += 4; }

    public void I32(int v) { BinaryPrimitives.WriteInt32LittleEndian(_dest[_pos..], v); _pos += 4; }

    public void U64(ulong v) { BinaryPrimitives.WriteUInt64LittleEndian(_dest[_pos..], v); _pos += 8; }

    public void I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(_dest[_pos..], v); _pos += 8; }

    /// <summary>Raw bytes, no length prefix.</summary>
    public void Raw(ReadOnlySpan<byte> v) { v.CopyTo(_dest[_pos..]); _pos += v.Length; }

    /// <summary>u32 length + bytes.</summary>
    public void Bytes(ReadOnlySpan<byte> v) { U32((uint)v.Length); Raw(v); }

    /// <summary>u32 byte length + UTF-8.</summary>
    public void String(string? v)
    {
        v ??= "";
        int n = Encoding.UTF8.GetBytes(v, _dest[(_pos + 4)..]);
        U32((uint)n);
        _pos += n;
    }

    public static int BytesSize(int length) => checked(4 + length);

    public static int StringSize(string? v) => checked(4 + Encoding.UTF8.GetByteCount(v ?? ""));

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
