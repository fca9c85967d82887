namespace ReVirt.Log;

/// <summary>
/// CRC-32 with the IEEE 802.3 polynomial (reflected 0xEDB88320, initial value and final XOR 0xFFFFFFFF): the
/// checksum of every log header and record frame (<see cref="LogFormat.Checksum"/>), bit for bit the value
/// System.IO.Hashing's <c>Crc32.HashToUInt32</c> returns, which the format was defined with (tests/Log/Crc32IeeeTests
/// holds the two equal on every length to 2,100 bytes, unaligned starts and long inputs).
/// </summary>
/// <remarks>
/// It is ReVirt's own so that a recording or a replay does not load that library for two checksums per record: loading
/// it and taking its path for short frames cost every run a few milliseconds, as much as the recording of a short
/// guest adds in all, and its per-byte loop was JIT-compiled again at tier 1 in every replay. The loop here reads
/// eight bytes at a time through eight 256-entry tables ("slicing by 8": each table advances the CRC by one more
/// byte), about 1-2 GB/s without any instruction set beyond x86-64's baseline, so its precompiled code is always
/// taken; a record frame is usually under 100 bytes. Byte order: the eight bytes are read as two little-endian words,
/// which is the host's order on every machine ReVirt runs on (x86-64).
/// </remarks>
public static unsafe class Crc32Ieee
{
    const uint Polynomial = 0xEDB88320;

    /// <summary>Table k (entries [256k, 256k+256)) is the CRC contribution of a byte followed by k zero bytes.</summary>
    static readonly uint[] Tables = MakeTables();

    static uint[] MakeTables()
    {
        var t = new uint[8 * 256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int bit = 0; bit < 8; bit++) c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            t[i] = c;
        }
        for (int k = 1; k < 8; k++)
            for (int i = 0; i < 256; i++)
            {
                uint prev = t[(k - 1) * 256 + i];
                t[k * 256 + i] = (prev >> 8) ^ t[prev & 0xFF];
            }
        return t;
    }

    /// <summary>The CRC-32 of <paramref name="data"/>.</summary>
    public static uint Hash(ReadOnlySpan<byte> data) => ~Update(0xFFFFFFFF, data);

    /// <summary>Advances a CRC register (before its final XOR) over <paramref name="data"/>.</summary>
    static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        fixed (uint* t = Tables)
        fixed (byte* start = data)
        {
            byte* p = start;
            int n = data.Length;
            for (; n >= 8; n -= 8, p += 8)
            {
                uint lo = *(uint*)p ^ crc, hi = *(uint*)(p + 4);
                crc = t[7 * 256 + (lo & 0xFF)] ^ t[6 * 256 + ((lo >> 8) & 0xFF)] ^ t[5 * 256 + ((lo >> 16) & 0xFF)] ^ t[4 * 256 + (lo >> 24)]
                    ^ t[3 * 256 + (hi & 0xFF)] ^ t[2 * 256 + ((hi >> 8) & 0xFF)] ^ t[256 + ((hi >> 16) & 0xFF)] ^ t[hi >> 24];
            }
            for (; n > 0; n--, p++) crc = t[(crc ^ *p) & 0xFF] ^ (crc >> 8);
            return crc;
        }
    }
}
