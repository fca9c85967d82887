using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ReVirt.Log;

/// <summary>
/// XXH3-128 with seed 0 and the default secret: the same function, bit for bit, as System.IO.Hashing's
/// <c>XxHash128</c>, whose output every log format v4+ checkpoint digest, page hash and v5 content hash is defined by
/// (tests/Log/Xxh128Tests checks this against that library as the oracle, one-shot and incremental, every length to
/// 2,100 bytes and long random inputs). It is ReVirt's own so that its code is precompiled: the library's vectorised
/// loop was compiled ahead of time for the baseline instruction set and its ReadyToRun code is rejected on a host
/// with AVX2, so every recording and replay JIT-compiled about 12 of its methods (four of them optimised) at its
/// first checkpoint. The long-input loop here uses SSE2 only (part of every x86-64 CPU, so the precompiled code is
/// always taken; a portable scalar loop elsewhere): a 4 KiB page hashes in about a third more time than the library's
/// AVX2 loop takes, which a checkpoint of a few hundred dirty pages does not notice.
/// </summary>
/// <remarks>
/// Outputs are the canonical form: the high 64 bits big-endian, then the low 64 bits big-endian (16 bytes), as
/// <c>XxHash128.Hash</c> writes them. An instance hashes incrementally (<see cref="Append"/>), with the one-shot
/// result for the concatenation of what was appended.
/// </remarks>
public sealed unsafe class Xxh128
{
    const ulong P32_1 = 0x9E3779B1, P32_2 = 0x85EBCA77, P32_3 = 0xC2B2AE3D;
    const ulong P64_1 = 0x9E3779B185EBCA87, P64_2 = 0xC2B2AE3D27D4EB4F, P64_3 = 0x165667B19E3779F9,
        P64_4 = 0x85EBCA77C2B2AE63, P64_5 = 0x27D4EB2F165667C5;
    const ulong PrimeMx2 = 0x9FB21C651E98DF25;
    const int StripeLen = 64, SecretLen = 192, StripesPerBlock = (SecretLen - StripeLen) / 8, BlockLen = StripeLen * StripesPerBlock;
    const int MidSizeMax = 240, BufferLen = 256, BufferStripes = BufferLen / StripeLen;

    /// <summary>The hash's length in bytes.</summary>
    public const int HashLength = 16;

    /// <summary>XXH3's default secret (kSecret of the reference implementation), 192 bytes.</summary>
    static ReadOnlySpan<byte> Secret =>
    [
        0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
        0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
        0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
        0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
        0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
        0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
        0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
        0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
        0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
        0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
        0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
        0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
    ];

    /// <summary>Whether the long-input loop takes the SSE2 path (tests compare it with the scalar one).</summary>
    internal static readonly bool Vectorised = Sse2.IsSupported;

    // ---- one shot ----

    /// <summary>The hash of <paramref name="data"/> in canonical form into <paramref name="destination"/> (16 bytes).</summary>
    public static void Hash(ReadOnlySpan<byte> data, Span<byte> destination) => WriteCanonical(Compute(data, Vectorised), destination);

    /// <summary>The hash of <paramref name="data"/> in canonical form (16 bytes).</summary>
    public static byte[] Hash(ReadOnlySpan<byte> data)
    {
        var h = new byte[HashLength];
        Hash(data, h);
        return h;
    }

    /// <summary>The hash as its two 64-bit halves (the canonical form is <see cref="WriteCanonical"/>).</summary>
    internal static (ulong Low, ulong High) Compute(ReadOnlySpan<byte> data, bool vectorised)
    {
        fixed (byte* p = data)
        fixed (byte* s = Secret)
            return Compute(p, data.Length, s, vectorised);
    }

    static (ulong Low, ulong High) Compute(byte* p, int len, byte* s, bool vectorised)
    {
        if (len <= 16) return Len0To16(p, len, s);
        if (len <= 128) return Len17To128(p, len, s);
        if (len <= MidSizeMax) return Len129To240(p, len, s);
        return Long(p, len, s, vectorised);
    }

    /// <summary>Inputs over 240 bytes. One call per hash, the loop's helpers inlined: a recording hashes each 4 KiB
    /// read and each dirty page, and a helper called per block crossed the runtime's tier-up threshold within the first
    /// thousand hashes and was compiled again in every run.</summary>
    static (ulong Low, ulong High) Long(byte* p, int len, byte* s, bool vectorised)
    {
        ulong* acc = stackalloc ulong[8];
        InitAccumulators(acc);
        int blocks = (len - 1) / BlockLen;
        for (int n = 0; n < blocks; n++)
        {
            Accumulate(acc, p + n * BlockLen, s, StripesPerBlock, vectorised);
            Scramble(acc, s + SecretLen - StripeLen, vectorised);
        }
        Accumulate(acc, p + blocks * BlockLen, s, (len - 1 - blocks * BlockLen) / StripeLen, vectorised);
        return Finish(acc, p + len - StripeLen, (ulong)len, s, vectorised);
    }

    /// <summary>Writes (low, high) in canonical form: high 64 bits big-endian, then the low 64 bits big-endian.</summary>
    public static void WriteCanonical((ulong Low, ulong High) h, Span<byte> destination)
    {
        // stores of our own (not BinaryPrimitives', a call per word into the framework)
        if (destination.Length < HashLength) throw new ArgumentException($"{HashLength} bytes needed", nameof(destination));
        ref byte d = ref destination[0]; // the indexer: MemoryMarshal.GetReference is a call
        Unsafe.WriteUnaligned(ref d, BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(h.High) : h.High);
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref d, 8), BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(h.Low) : h.Low);
    }

    // ---- incremental ----

    readonly ulong[] _acc = new ulong[8];
    readonly byte[] _buffer = new byte[BufferLen];
    int _buffered, _stripesSoFar;
    ulong _total;
    readonly bool _vectorised;

    public Xxh128() : this(Vectorised) { }

    internal Xxh128(bool vectorised)
    {
        _vectorised = vectorised;
        Reset();
    }

    /// <summary>Starts over: the next hash is of what is appended from now.</summary>
    public void Reset()
    {
        fixed (ulong* acc = _acc) InitAccumulators(acc);
        _buffered = _stripesSoFar = 0;
        _total = 0;
    }

    /// <summary>Appends <paramref name="data"/> to what is hashed.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        _total += (ulong)data.Length;
        if (_buffered + data.Length <= BufferLen)
        {
            data.CopyTo(_buffer.AsSpan(_buffered));
            _buffered += data.Length;
            return;
        }
        // stripes are consumed only when bytes follow them: the last stripe is the digest's (taken apart)
        fixed (ulong* acc = _acc)
        fixed (byte* buf = _buffer)
        fixed (byte* s = Secret)
        fixed (byte* d = data)
        {
            byte* p = d, end = d + data.Length;
            if (_buffered > 0)
            {
                int fill = BufferLen - _buffered;
                new ReadOnlySpan<byte>(p, fill).CopyTo(_buffer.AsSpan(_buffered));
                p += fill;
                ConsumeStripes(acc, ref _stripesSoFar, buf, BufferStripes, s, _vectorised);
                _buffered = 0;
            }
            if (end - p > BufferLen)
            {
                do
                {
                    ConsumeStripes(acc, ref _stripesSoFar, p, BufferStripes, s, _vectorised);
                    p += BufferLen;
                } while (end - p > BufferLen);
                // the stripe before what stays buffered: the digest's last stripe may reach back into it
                new ReadOnlySpan<byte>(p - StripeLen, StripeLen).CopyTo(_buffer.AsSpan(BufferLen - StripeLen));
            }
            int rest = (int)(end - p);
            new ReadOnlySpan<byte>(p, rest).CopyTo(_buffer);
            _buffered = rest;
        }
    }

    /// <summary>The hash of everything appended since the last <see cref="Reset"/>, in canonical form (16 bytes).</summary>
    public void GetCurrentHash(Span<byte> destination) => WriteCanonical(Current(), destination);

    /// <summary><see cref="GetCurrentHash(Span{byte})"/> as a new array.</summary>
    public byte[] GetCurrentHash()
    {
        var h = new byte[HashLength];
        GetCurrentHash(h);
        return h;
    }

    /// <summary><see cref="GetCurrentHash(Span{byte})"/>, then <see cref="Reset"/>.</summary>
    public void GetHashAndReset(Span<byte> destination)
    {
        GetCurrentHash(destination);
        Reset();
    }

    (ulong Low, ulong High) Current()
    {
        fixed (byte* buf = _buffer)
        fixed (byte* s = Secret)
        {
            if (_total <= MidSizeMax) return Compute(buf, (int)_total, s, _vectorised);
            ulong* acc = stackalloc ulong[8];
            for (int i = 0; i < 8; i++) acc[i] = _acc[i];
            byte* last;
            if (_buffered >= StripeLen)
            {
                int stripes = _stripesSoFar;
                ConsumeStripes(acc, ref stripes, buf, (_buffered - 1) / StripeLen, s, _vectorised);
                last = buf + _buffered - StripeLen;
            }
            else
            {
                // the last stripe begins in the previous stripe kept at the buffer's end
                byte* joined = stackalloc byte[StripeLen];
                int back = StripeLen - _buffered;
                new ReadOnlySpan<byte>(buf + BufferLen - back, back).CopyTo(new Span<byte>(joined, back));
                new ReadOnlySpan<byte>(buf, _buffered).CopyTo(new Span<byte>(joined + back, _buffered));
                last = joined;
            }
            return Finish(acc, last, _total, s, _vectorised);
        }
    }

    static void ConsumeStripes(ulong* acc, ref int stripesSoFar, byte* p, int stripes, byte* s, bool vectorised)
    {
        int toBlockEnd = StripesPerBlock - stripesSoFar;
        if (stripes >= toBlockEnd)
        {
            Accumulate(acc, p, s + stripesSoFar * 8, toBlockEnd, vectorised);
            Scramble(acc, s + SecretLen - StripeLen, vectorised);
            Accumulate(acc, p + toBlockEnd * StripeLen, s, stripes - toBlockEnd, vectorised);
            stripesSoFar = stripes - toBlockEnd;
        }
        else
        {
            Accumulate(acc, p, s + stripesSoFar * 8, stripes, vectorised);
            stripesSoFar += stripes;
        }
    }

    // ---- the long-input state ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void InitAccumulators(ulong* acc)
    {
        acc[0] = P32_3; acc[1] = P64_1; acc[2] = P64_2; acc[3] = P64_3;
        acc[4] = P64_4; acc[5] = P32_2; acc[6] = P64_5; acc[7] = P32_1;
    }

    /// <summary>The last stripe (secret offset 7 from the end's stripe) and the two merges of the accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (ulong Low, ulong High) Finish(ulong* acc, byte* lastStripe, ulong len, byte* s, bool vectorised)
    {
        Accumulate(acc, lastStripe, s + SecretLen - StripeLen - 7, 1, vectorised);
        ulong low = MergeAccumulators(acc, s + 11, len * P64_1);
        ulong high = MergeAccumulators(acc, s + SecretLen - 64 - 11, ~(len * P64_2));
        return (low, high);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong MergeAccumulators(ulong* acc, byte* s, ulong start)
    {
        ulong r = start;
        for (int i = 0; i < 4; i++) r += Mul128Fold64(acc[2 * i] ^ Read64(s + 16 * i), acc[2 * i + 1] ^ Read64(s + 16 * i + 8));
        return Avalanche(r);
    }

    /// <summary>Stripes of 64 bytes, stripe k keyed by the secret at s + 8k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Accumulate(ulong* acc, byte* p, byte* s, int stripes, bool vectorised)
    {
        if (stripes <= 0) return;
        if (vectorised) AccumulateSse2(acc, p, s, stripes);
        else
            for (int k = 0; k < stripes; k++, p += StripeLen, s += 8)
                for (int i = 0; i < 8; i++)
                {
                    ulong data = Read64(p + 8 * i), key = data ^ Read64(s + 8 * i);
                    acc[i ^ 1] += data;
                    acc[i] += (key & 0xFFFF_FFFF) * (key >> 32);
                }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void AccumulateSse2(ulong* acc, byte* p, byte* s, int stripes)
    {
        var a0 = Sse2.LoadVector128(acc); var a1 = Sse2.LoadVector128(acc + 2);
        var a2 = Sse2.LoadVector128(acc + 4); var a3 = Sse2.LoadVector128(acc + 6);
        for (int k = 0; k < stripes; k++, p += StripeLen, s += 8)
        {
            a0 = Lane(a0, p, s); a1 = Lane(a1, p + 16, s + 16);
            a2 = Lane(a2, p + 32, s + 32); a3 = Lane(a3, p + 48, s + 48);
        }
        Sse2.Store(acc, a0); Sse2.Store(acc + 2, a1); Sse2.Store(acc + 4, a2); Sse2.Store(acc + 6, a3);
    }

    /// <summary>Two lanes: acc += swap(data) + lo32(data ^ key) * hi32(data ^ key).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<ulong> Lane(Vector128<ulong> acc, byte* p, byte* s)
    {
        var data = Sse2.LoadVector128((uint*)p);
        var key = Sse2.Xor(data, Sse2.LoadVector128((uint*)s));
        var keyHi = Sse2.Shuffle(key, 0b00_11_00_01); // each lane's high 32 bits moved to its low half
        var product = Sse2.Multiply(key, keyHi);
        var swapped = Sse2.Shuffle(data, 0b01_00_11_10).AsUInt64(); // the two 64-bit lanes exchanged
        return Sse2.Add(product, Sse2.Add(acc, swapped));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Scramble(ulong* acc, byte* s, bool vectorised)
    {
        if (vectorised)
        {
            var prime = Vector128.Create((uint)P32_1);
            for (int i = 0; i < 8; i += 2)
            {
                var a = Sse2.LoadVector128(acc + i);
                a = Sse2.Xor(a, Sse2.ShiftRightLogical(a, 47));
                var k = Sse2.Xor(a, Sse2.LoadVector128((ulong*)(s + 8 * i))).AsUInt32();
                var lo = Sse2.Multiply(k, prime);
                var hi = Sse2.Multiply(Sse2.Shuffle(k, 0b00_11_00_01), prime);
                Sse2.Store(acc + i, Sse2.Add(lo, Sse2.ShiftLeftLogical(hi, 32)));
            }
            return;
        }
        for (int i = 0; i < 8; i++)
        {
            ulong a = acc[i];
            a ^= a >> 47;
            a ^= Read64(s + 8 * i);
            acc[i] = a * P32_1;
        }
    }

    // ---- short inputs ----

    static (ulong Low, ulong High) Len0To16(byte* p, int len, byte* s)
    {
        if (len > 8) return Len9To16(p, len, s);
        if (len >= 4) return Len4To8(p, len, s);
        if (len > 0) return Len1To3(p, len, s);
        return (Xxh64Avalanche(Read64(s + 64) ^ Read64(s + 72)), Xxh64Avalanche(Read64(s + 80) ^ Read64(s + 88)));
    }

    static (ulong, ulong) Len1To3(byte* p, int len, byte* s)
    {
        uint c1 = p[0], c2 = p[len >> 1], c3 = p[len - 1];
        uint lo = (c1 << 16) | (c2 << 24) | c3 | ((uint)len << 8);
        uint hi = BitOperations.RotateLeft(BinaryPrimitives.ReverseEndianness(lo), 13);
        ulong flipLo = Read32(s) ^ Read32(s + 4), flipHi = Read32(s + 8) ^ Read32(s + 12);
        return (Xxh64Avalanche(lo ^ flipLo), Xxh64Avalanche(hi ^ flipHi));
    }

    static (ulong, ulong) Len4To8(byte* p, int len, byte* s)
    {
        ulong input = Read32(p) + ((ulong)Read32(p + len - 4) << 32);
        ulong keyed = input ^ (Read64(s + 16) ^ Read64(s + 24));
        ulong mHi = Mul128(keyed, P64_1 + ((ulong)len << 2), out ulong mLo);
        mHi += mLo << 1;
        mLo ^= mHi >> 3;
        mLo ^= mLo >> 35;
        mLo *= PrimeMx2;
        mLo ^= mLo >> 28;
        return (mLo, Avalanche(mHi));
    }

    static (ulong, ulong) Len9To16(byte* p, int len, byte* s)
    {
        ulong flipLo = Read64(s + 32) ^ Read64(s + 40), flipHi = Read64(s + 48) ^ Read64(s + 56);
        ulong inLo = Read64(p), inHi = Read64(p + len - 8);
        ulong mHi = Mul128(inLo ^ inHi ^ flipLo, P64_1, out ulong mLo);
        mLo += (ulong)(len - 1) << 54;
        inHi ^= flipHi;
        mHi += inHi + (inHi & 0xFFFF_FFFF) * (P32_2 - 1);
        mLo ^= BinaryPrimitives.ReverseEndianness(mHi);
        ulong hHi = Mul128(mLo, P64_2, out ulong hLo);
        hHi += mHi * P64_2;
        return (Avalanche(hLo), Avalanche(hHi));
    }

    static (ulong, ulong) Len17To128(byte* p, int len, byte* s)
    {
        ulong lo = (ulong)len * P64_1, hi = 0;
        if (len > 32)
        {
            if (len > 64)
            {
                if (len > 96) Mix32(ref lo, ref hi, p + 48, p + len - 64, s + 96);
                Mix32(ref lo, ref hi, p + 32, p + len - 48, s + 64);
            }
            Mix32(ref lo, ref hi, p + 16, p + len - 32, s + 32);
        }
        Mix32(ref lo, ref hi, p, p + len - 16, s);
        return Final17To240(lo, hi, len);
    }

    static (ulong, ulong) Len129To240(byte* p, int len, byte* s)
    {
        ulong lo = (ulong)len * P64_1, hi = 0;
        for (int i = 32; i < 160; i += 32) Mix32(ref lo, ref hi, p + i - 32, p + i - 16, s + i - 32);
        lo = Avalanche(lo);
        hi = Avalanche(hi);
        for (int i = 160; i <= len; i += 32) Mix32(ref lo, ref hi, p + i - 32, p + i - 16, s + 3 + i - 160);
        // the last 32 bytes, the halves swapped, at the secret's minimum size less 17 (seed 0: its negation is 0)
        Mix32(ref lo, ref hi, p + len - 16, p + len - 32, s + 136 - 17 - 16);
        return Final17To240(lo, hi, len);
    }

    static (ulong, ulong) Final17To240(ulong lo, ulong hi, int len)
    {
        ulong low = lo + hi;
        ulong high = lo * P64_1 + hi * P64_4 + (ulong)len * P64_2;
        return (Avalanche(low), 0 - Avalanche(high));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Mix32(ref ulong lo, ref ulong hi, byte* a, byte* b, byte* s)
    {
        lo += Mix16(a, s);
        lo ^= Read64(b) + Read64(b + 8);
        hi += Mix16(b, s + 16);
        hi ^= Read64(a) + Read64(a + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Mix16(byte* p, byte* s) => Mul128Fold64(Read64(p) ^ Read64(s), Read64(p + 8) ^ Read64(s + 8));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Mul128Fold64(ulong a, ulong b)
    {
        ulong hi = Mul128(a, b, out ulong lo);
        return lo ^ hi;
    }

    /// <summary>The 128-bit product (high half returned), from 32-bit halves: Math.BigMul is a call into the framework
    /// that the ahead-of-time compiler does not inline, made eight times per hash.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Mul128(ulong a, ulong b, out ulong low)
    {
        ulong aLo = (uint)a, aHi = a >> 32, bLo = (uint)b, bHi = b >> 32;
        ulong ll = aLo * bLo, hl = aHi * bLo, lh = aLo * bHi, hh = aHi * bHi;
        ulong cross = (ll >> 32) + (uint)hl + lh;
        low = (cross << 32) | (uint)ll;
        return hh + (hl >> 32) + (cross >> 32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Avalanche(ulong h)
    {
        h ^= h >> 37;
        h *= 0x165667919E3779F9;
        return h ^ (h >> 32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Xxh64Avalanche(ulong h)
    {
        h ^= h >> 33;
        h *= P64_2;
        h ^= h >> 29;
        h *= P64_3;
        return h ^ (h >> 32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Read64(byte* p) => BitConverter.IsLittleEndian ? Unsafe.ReadUnaligned<ulong>(p) : BinaryPrimitives.ReverseEndianness(Unsafe.ReadUnaligned<ulong>(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Read32(byte* p) => BitConverter.IsLittleEndian ? Unsafe.ReadUnaligned<uint>(p) : BinaryPrimitives.ReverseEndianness(Unsafe.ReadUnaligned<uint>(p));
}
