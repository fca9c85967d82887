using System.Buffers.Binary;
using System.Numerics;

namespace ReVirt.Replay;

/// <summary>
/// XXH64 (seed 0) computed incrementally, whose running state can be saved and resumed elsewhere. The output digests of
/// a log chain over everything a stream printed since the run began; a replica that starts from a snapshot instead of
/// record 1 resumes the chain from the saved state, which System.IO.Hashing's XxHash64 does not expose. The results
/// equal XxHash64's (tests/Replay/SnapshotTests checks them against it as the oracle).
/// </summary>
public sealed class ResumableXxHash64
{
    const ulong P1 = 11400714785074694791UL, P2 = 14029467366897019727UL, P3 = 1609587929392839161UL,
        P4 = 9650029242287828579UL, P5 = 2870177450012600261UL;

    /// <summary>Bytes of <see cref="SaveState"/>.</summary>
    public const int StateSize = 4 * 8 + 8 + 32;

    ulong _v1 = unchecked(P1 + P2), _v2 = P2, _v3 = 0, _v4 = unchecked(0 - P1), _total;
    readonly byte[] _buf = new byte[32];

    static ulong Round(ulong acc, ulong lane) => BitOperations.RotateLeft(acc + lane * P2, 31) * P1;
    static ulong Merge(ulong h, ulong v) => (h ^ Round(0, v)) * P1 + P4;

    void Stripe(ReadOnlySpan<byte> s)
    {
        _v1 = Round(_v1, BinaryPrimitives.ReadUInt64LittleEndian(s));
        _v2 = Round(_v2, BinaryPrimitives.ReadUInt64LittleEndian(s[8..]));
        _v3 = Round(_v3, BinaryPrimitives.ReadUInt64LittleEndian(s[16..]));
        _v4 = Round(_v4, BinaryPrimitives.ReadUInt64LittleEndian(s[24..]));
    }

    public void Append(ReadOnlySpan<byte> data)
    {
        int buffered = (int)(_total & 31);
        _total += (ulong)data.Length;
        if (buffered > 0)
        {
            int n = Math.Min(32 - buffered, data.Length);
            data[..n].CopyTo(_buf.AsSpan(buffered));
            data = data[n..];
            if (buffered + n < 32) return;
            Stripe(_buf);
        }
        while (data.Length >= 32) { Stripe(data); data = data[32..]; }
        data.CopyTo(_buf);
    }

    /// <summary>The digest's length in bytes.</summary>
    public const int HashLength = 8;

    /// <summary>The digest of everything appended so far, big-endian (as XxHash64.GetCurrentHash gives it).</summary>
    public byte[] GetCurrentHash()
    {
        var d = new byte[HashLength];
        GetCurrentHash(d);
        return d;
    }

    /// <summary><see cref="GetCurrentHash()"/> into the first <see cref="HashLength"/> bytes of <paramref name="d"/>.</summary>
    public void GetCurrentHash(Span<byte> d)
    {
        ulong h = _total >= 32
            ? Merge(Merge(Merge(Merge(BitOperations.RotateLeft(_v1, 1) + BitOperations.RotateLeft(_v2, 7) + BitOperations.RotateLeft(_v3, 12) + BitOperations.RotateLeft(_v4, 18), _v1), _v2), _v3), _v4)
            : P5;
        h += _total;
        ReadOnlySpan<byte> rest = _buf.AsSpan(0, (int)(_total & 31));
        while (rest.Length >= 8)
        {
            h = BitOperations.RotateLeft(h ^ Round(0, BinaryPrimitives.ReadUInt64LittleEndian(rest)), 27) * P1 + P4;
            rest = rest[8..];
        }
        if (rest.Length >= 4)
        {
            h = BitOperations.RotateLeft(h ^ BinaryPrimitives.ReadUInt32LittleEndian(rest) * P1, 23) * P2 + P3;
            rest = rest[4..];
        }
        foreach (byte b in rest) h = BitOperations.RotateLeft(h ^ b * P5, 11) * P1;
        h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
        BinaryPrimitives.WriteUInt64BigEndian(d, h);
    }

    public void SaveState(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, _v1);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], _v2);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], _v3);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], _v4);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], _total);
        _buf.CopyTo(d[40..]);
    }

    public static ResumableXxHash64 Resume(ReadOnlySpan<byte> s)
    {
        var h = new ResumableXxHash64
        {
            _v1 = BinaryPrimitives.ReadUInt64LittleEndian(s), _v2 = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]),
            _v3 = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]), _v4 = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
            _total = BinaryPrimitives.ReadUInt64LittleEndian(s[32..]),
        };
        s.Slice(40, 32).CopyTo(h._buf);
        return h;
    }

    public ulong Length => _total;
}
