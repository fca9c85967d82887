using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;

namespace ReVirt.Cpu;

/// <summary>x87 rounding control (control word bits 11..10).</summary>
public enum X87Rounding : byte
{
    Nearest = 0,
    Down = 1,
    Up = 2,
    TowardZero = 3,
}

/// <summary>x87 precision control (control word bits 9..8). The reserved encoding 1 is treated as 64 bits.</summary>
public enum X87Precision : byte
{
    Single24 = 0,
    Reserved = 1,
    Double53 = 2,
    Extended64 = 3,
}

/// <summary>
/// Exception flags and condition codes, at their x87 status-word bit positions, so that a result can be
/// OR-ed into the status word (after clearing the condition codes the instruction defines).
/// </summary>
[Flags]
public enum X87Status : ushort
{
    None = 0,
    Invalid = 0x0001,
    Denormal = 0x0002,
    ZeroDivide = 0x0004,
    Overflow = 0x0008,
    Underflow = 0x0010,
    Precision = 0x0020,
    C0 = 0x0100,
    /// <summary>For rounding operations: the inexact result was rounded up in magnitude.</summary>
    C1 = 0x0200,
    C2 = 0x0400,
    C3 = 0x4000,
    ExceptionMask = 0x003F,
    ConditionMask = 0x4700,
}

/// <summary>Result of FCOM/FUCOM-style comparisons.</summary>
public enum X87CompareResult : byte
{
    Greater = 0,
    Less = 1,
    Equal = 2,
    Unordered = 3,
}

/// <summary>
/// Bit-exact software model of the x87 80-bit extended-precision format (64-bit significand with an explicit
/// integer bit, 15-bit exponent, sign), verified against the host FPU by the oracle tests.
/// <para>
/// Every operation returns the masked response of the x87 (the default: all exceptions masked) and reports the
/// raised exception flags plus the condition codes it defines in an <see cref="X87Status"/> whose bits sit at
/// their status-word positions. For rounding operations C1 is set when the inexact result was rounded up in
/// magnitude. A VM honouring unmasked exceptions checks <c>status &amp; ~mask &amp; ExceptionMask</c> before
/// committing the result.
/// </para>
/// <para>
/// Rounding control (<see cref="X87Rounding"/>) applies to every rounding operation; precision control
/// (<see cref="X87Precision"/>) only to FADD/FSUB/FMUL/FDIV/FSQRT (and their integer/memory forms), as on the
/// hardware. With PC = 24 or 53 the exponent range stays the 15-bit one and the low 40/11 significand bits of
/// denormal results are cleared too. Tininess is detected after rounding; #U (masked) needs tiny and inexact.
/// Denormal (#D) is not reported when the operation signals #I or #Z or propagates a NaN.
/// NaN rules: an SNaN operand signals #I; a QNaN beats an SNaN, otherwise the larger significand wins (the
/// positive one on a tie); the result is quieted; invalid operations give the QNaN indefinite.
/// </para>
/// <para>
/// Transcendentals (FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X, FYL2XP1) are computed through
/// <see cref="double"/> and are NOT bit-exact (about double accuracy, C1 not modelled), though FSIN/FCOS/FPTAN
/// reduce their argument exactly modulo the x87's 66-bit pi like the hardware and special operands are exact.
/// Everything else matches the hardware bit for bit. Implementation-specific behaviour follows the host the
/// tests ran on (AMD): FPREM/FPREM1 reduce by 2^(32 + (D mod 32)) when the exponent difference D &gt;= 64,
/// F2XM1 outside [-1, 1] returns its operand with #P.
/// </para>
/// </summary>
public readonly struct Float80 : IEquatable<Float80>
{
    /// <summary>Significand, bit 63 is the explicit integer bit.</summary>
    public readonly ulong Mantissa;
    /// <summary>Bit 15 sign, bits 14..0 biased exponent.</summary>
    public readonly ushort SignExp;

    public const int ExponentBias = 16383;
    private const int EMin = -16382;           // smallest normal (unbiased) exponent
    private const int EMax = 16383;            // largest (unbiased) exponent
    private const ulong IntBit = 1UL << 63;
    private const ulong QuietBit = 1UL << 62;
    private const ushort SignBit = 0x8000;

    public Float80(ulong mantissa, ushort signExp)
    {
        Mantissa = mantissa;
        SignExp = signExp;
    }

    public static Float80 Zero => new(0, 0);
    public static Float80 NegativeZero => new(0, SignBit);
    public static Float80 One => new(IntBit, ExponentBias);
    public static Float80 PositiveInfinity => new(IntBit, 0x7FFF);
    public static Float80 NegativeInfinity => new(IntBit, 0xFFFF);
    /// <summary>The QNaN floating-point indefinite (FFFF C000000000000000).</summary>
    public static Float80 Indefinite => new(0xC000_0000_0000_0000, 0xFFFF);

    /// <summary>RC field of an x87 control word.</summary>
    public static X87Rounding RoundingOf(ushort controlWord) => (X87Rounding)((controlWord >> 10) & 3);

    /// <summary>PC field of an x87 control word.</summary>
    public static X87Precision PrecisionOf(ushort controlWord) => (X87Precision)((controlWord >> 8) & 3);

    public bool Sign => (SignExp & SignBit) != 0;
    public int BiasedExponent => SignExp & 0x7FFF;
    public bool IsZero => BiasedExponent == 0 && Mantissa == 0;
    public bool IsInfinity => BiasedExponent == 0x7FFF && Mantissa == IntBit;
    public bool IsNaN => BiasedExponent == 0x7FFF && (Mantissa & IntBit) != 0 && (Mantissa << 1) != 0;
    public bool IsQuietNaN => IsNaN && (Mantissa & QuietBit) != 0;
    public bool IsSignalingNaN => IsNaN && (Mantissa & QuietBit) == 0;
    /// <summary>Denormal or pseudo-denormal (biased exponent 0, non-zero significand).</summary>
    public bool IsDenormal => BiasedExponent == 0 && Mantissa != 0;
    public bool IsPseudoDenormal => BiasedExponent == 0 && (Mantissa & IntBit) != 0;
    /// <summary>Unnormal, pseudo-zero, pseudo-infinity or pseudo-NaN: invalid operands on the 387 and later.</summary>
    public bool IsUnsupported => BiasedExponent != 0 && (Mantissa & IntBit) == 0;

    public bool Equals(Float80 other) => Mantissa == other.Mantissa && SignExp == other.SignExp;
    public override bool Equals(object? obj) => obj is Float80 f && Equals(f);
    public override int GetHashCode() => HashCode.Combine(Mantissa, SignExp);
    public static bool operator ==(Float80 a, Float80 b) => a.Equals(b);
    public static bool operator !=(Float80 a, Float80 b) => !a.Equals(b);

    public override string ToString()
        => $"{SignExp:X4}:{Mantissa:X16} ({ToDouble(this).ToString("R", CultureInfo.InvariantCulture)})";

    // ------------------------------------------------------------------ memory image

    /// <summary>Reads the 10-byte little-endian memory image (FLD m80).</summary>
    public static Float80 FromBytes(ReadOnlySpan<byte> src)
        => new(BinaryPrimitives.ReadUInt64LittleEndian(src), BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(8)));

    /// <summary>Writes the 10-byte little-endian memory image (FSTP m80).</summary>
    public void WriteTo(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, Mantissa);
        BinaryPrimitives.WriteUInt16LittleEndian(dest.Slice(8), SignExp);
    }

    public byte[] ToBytes()
    {
        var b = new byte[10];
        WriteTo(b);
        return b;
    }

    // ------------------------------------------------------------------ helpers

    private enum Kind : byte { Zero, Finite, Inf, QNaN, SNaN, Unsupported }

    private static Kind Classify(Float80 x)
    {
        int e = x.SignExp & 0x7FFF;
        ulong m = x.Mantissa;
        if (e == 0) return m == 0 ? Kind.Zero : Kind.Finite;
        if ((m & IntBit) == 0) return Kind.Unsupported;
        if (e == 0x7FFF)
        {
            if ((m << 1) == 0) return Kind.Inf;
            return (m & QuietBit) != 0 ? Kind.QNaN : Kind.SNaN;
        }
        return Kind.Finite;
    }

    private static bool IsNaNKind(Kind k) => k == Kind.QNaN || k == Kind.SNaN;

    /// <summary>Normalized significand/exponent of a finite non-zero value: value = sig * 2^(exp-63).</summary>
    private static void Unpack(Float80 x, out int exp, out ulong sig)
    {
        int e = x.SignExp & 0x7FFF;
        ulong m = x.Mantissa;
        if (e == 0)
        {
            int lz = BitOperations.LeadingZeroCount(m);
            sig = m << lz;
            exp = EMin - lz;
        }
        else
        {
            sig = m;
            exp = e - ExponentBias;
        }
    }

    private static Float80 MakeZero(bool neg) => new(0, neg ? SignBit : (ushort)0);
    private static Float80 MakeInf(bool neg) => new(IntBit, neg ? (ushort)0xFFFF : (ushort)0x7FFF);
    private static Float80 Quiet(Float80 x) => new(x.Mantissa | QuietBit, x.SignExp);

    private static int PrecisionBits(X87Precision pc) => pc switch
    {
        X87Precision.Single24 => 24,
        X87Precision.Double53 => 53,
        _ => 64,
    };

    // 128-bit significands are kept as (hi, lo) ulong pairs on the hot paths (UInt128 shifts are slow).

    private static void ShiftRightJam(ref ulong hi, ref ulong lo, int n)
    {
        if (n <= 0) return;
        if (n < 64)
        {
            ulong sticky = (lo << (64 - n)) != 0 ? 1UL : 0UL;
            lo = (lo >> n) | (hi << (64 - n)) | sticky;
            hi >>= n;
        }
        else if (n < 128)
        {
            ulong sticky = lo != 0 || (n > 64 && (hi << (128 - n)) != 0) ? 1UL : 0UL;
            lo = (n == 64 ? hi : hi >> (n - 64)) | sticky;
            hi = 0;
        }
        else
        {
            lo = (hi | lo) != 0 ? 1UL : 0UL;
            hi = 0;
        }
    }

    /// <summary>Shifts left so that bit 127 is set; returns the shift count (the pair must be non-zero).</summary>
    private static int Normalize(ref ulong hi, ref ulong lo)
    {
        if (hi == 0)
        {
            int l = BitOperations.LeadingZeroCount(lo);
            hi = lo << l;
            lo = 0;
            return 64 + l;
        }
        int lz = BitOperations.LeadingZeroCount(hi);
        if (lz != 0)
        {
            hi = (hi << lz) | (lo >> (64 - lz));
            lo <<= lz;
        }
        return lz;
    }

    private static int Lzc(UInt128 x)
    {
        ulong hi = (ulong)(x >> 64);
        return hi != 0 ? BitOperations.LeadingZeroCount(hi) : 64 + BitOperations.LeadingZeroCount((ulong)x);
    }

    /// <summary>(u1:u0) / v for normalized v (bit 63 set) and u1 &lt; v (Hacker's Delight divlu).</summary>
    private static ulong DivLu(ulong u1, ulong u0, ulong v, out ulong rem)
    {
        const ulong B = 1UL << 32;
        ulong vn1 = v >> 32, vn0 = v & 0xFFFF_FFFF;
        ulong un1 = u0 >> 32, un0 = u0 & 0xFFFF_FFFF;
        ulong q1 = u1 / vn1;
        ulong rhat = u1 - q1 * vn1;
        while (q1 >= B || q1 * vn0 > ((rhat << 32) | un1))
        {
            q1--;
            rhat += vn1;
            if (rhat >= B) break;
        }
        ulong un21 = (u1 << 32) + un1 - q1 * v;
        ulong q0 = un21 / vn1;
        rhat = un21 - q0 * vn1;
        while (q0 >= B || q0 * vn0 > ((rhat << 32) | un0))
        {
            q0--;
            rhat += vn1;
            if (rhat >= B) break;
        }
        rem = (un21 << 32) + un0 - q0 * v;
        return (q1 << 32) | q0;
    }

    /// <summary>NaN / unsupported-operand handling for two operands. Returns true when the result is decided.</summary>
    private static bool PropagateNaN(Float80 a, Kind ka, Float80 b, Kind kb, ref X87Status st, out Float80 r)
    {
        if (ka == Kind.Unsupported || kb == Kind.Unsupported)
        {
            st |= X87Status.Invalid;
            r = Indefinite;
            return true;
        }
        bool an = IsNaNKind(ka), bn = IsNaNKind(kb);
        if (!an && !bn)
        {
            r = default;
            return false;
        }
        if (ka == Kind.SNaN || kb == Kind.SNaN) st |= X87Status.Invalid;
        if (an && bn && ka != kb) r = ka == Kind.QNaN ? a : b;
        else if (an && bn)
        {
            ulong fa = a.Mantissa & ~(IntBit | QuietBit), fb = b.Mantissa & ~(IntBit | QuietBit);
            if (fa > fb) r = Quiet(a);
            else if (fb > fa) r = Quiet(b);
            else r = (a.SignExp & SignBit) == 0 ? Quiet(a) : Quiet(b);
        }
        else r = Quiet(an ? a : b);
        return true;
    }

    private static bool PropagateNaN(Float80 a, Kind ka, ref X87Status st, out Float80 r)
    {
        if (ka == Kind.Unsupported)
        {
            st |= X87Status.Invalid;
            r = Indefinite;
            return true;
        }
        if (IsNaNKind(ka))
        {
            if (ka == Kind.SNaN) st |= X87Status.Invalid;
            r = Quiet(a);
            return true;
        }
        r = default;
        return false;
    }

    /// <summary>
    /// Rounds (hi:lo) * 2^(exp-127) (normalized, bit 127 set; sticky bits jammed into bit 0) to
    /// <paramref name="prec"/> significant bits with the exponent floor of a format whose smallest normal
    /// exponent is <paramref name="emin"/> and whose denormal LSB weighs 2^<paramref name="minLsb"/>.
    /// Tininess is detected after rounding (with unbounded exponent), and #U is raised only when the result
    /// is also inexact (masked response). Returns false on overflow (rounded exponent &gt; emax); otherwise
    /// <paramref name="aligned"/> is the rounded significand left-aligned to bit 63 (0 for a zero result)
    /// and <paramref name="rexp"/> its exponent.
    /// </summary>
    private static bool RoundCore(bool neg, int exp, ulong hi, ulong lo, int prec, int emin, int minLsb, int emax,
        X87Rounding rc, ref X87Status st, out ulong aligned, out int rexp)
    {
        int lsb = Math.Max(exp - (prec - 1), minLsb);
        int keep = exp - lsb + 1;
        ulong kept;
        bool rb, sticky;
        if (keep >= 64)
        {
            kept = hi;
            rb = (lo >> 63) != 0;
            sticky = (lo << 1) != 0;
        }
        else if (keep >= 1)
        {
            kept = hi >> (64 - keep);
            ulong rest = hi << keep;
            rb = (rest >> 63) != 0;
            sticky = (rest << 1) != 0 || lo != 0;
        }
        else if (keep == 0)
        {
            kept = 0;
            rb = true;
            sticky = (hi << 1) != 0 || lo != 0;
        }
        else
        {
            kept = 0;
            rb = false;
            sticky = true;
        }
        bool inexact = rb | sticky;
        bool up = inexact && rc switch
        {
            X87Rounding.Nearest => rb && (sticky || (kept & 1) != 0),
            X87Rounding.Down => neg,
            X87Rounding.Up => !neg,
            _ => false,
        };
        if (up)
        {
            kept++;
            if (kept == 0)
            {
                kept = IntBit;
                lsb++;
            }
        }
        if (kept == 0)
        {
            aligned = 0;
            rexp = 0;
            if (inexact) st |= X87Status.Underflow | X87Status.Precision;
            return true;
        }
        int lz = BitOperations.LeadingZeroCount(kept);
        rexp = lsb + 63 - lz;
        aligned = kept << lz;
        if (rexp > emax)
            return false;
        if (inexact)
        {
            st |= X87Status.Precision;
            if (up) st |= X87Status.C1;
            if (exp < emin && IsTinyAfterRounding(neg, exp, hi, lo, prec, emin, rc))
                st |= X87Status.Underflow;
        }
        return true;
    }

    /// <summary>Tininess test with unbounded exponent (the value is already below the normal range before rounding).</summary>
    private static bool IsTinyAfterRounding(bool neg, int exp, ulong hi, ulong lo, int prec, int emin, X87Rounding rc)
    {
        if (exp != emin - 1) return true;
        ulong kept, ones;
        bool rb, sticky;
        if (prec == 64)
        {
            kept = hi;
            ones = ulong.MaxValue;
            rb = (lo >> 63) != 0;
            sticky = (lo << 1) != 0;
        }
        else
        {
            kept = hi >> (64 - prec);
            ones = (1UL << prec) - 1;
            ulong rest = hi << prec;
            rb = (rest >> 63) != 0;
            sticky = (rest << 1) != 0 || lo != 0;
        }
        if (kept != ones) return true;
        bool up = (rb || sticky) && rc switch
        {
            X87Rounding.Nearest => rb,
            X87Rounding.Down => neg,
            X87Rounding.Up => !neg,
            _ => false,
        };
        return !up;
    }

    private static bool OverflowToInfinity(bool neg, X87Rounding rc)
        => rc == X87Rounding.Nearest || (rc == X87Rounding.Up && !neg) || (rc == X87Rounding.Down && neg);

    /// <summary>Rounds to an 80-bit register value with the given precision (masked response).</summary>
    private static Float80 RoundPack(bool neg, int exp, UInt128 sig, X87Rounding rc, int prec, ref X87Status st)
        => RoundPack(neg, exp, (ulong)(sig >> 64), (ulong)sig, rc, prec, ref st);

    /// <summary>Rounds (hi:lo) * 2^(exp-127) (bit 127 set) to an 80-bit register value (masked response).</summary>
    private static Float80 RoundPack(bool neg, int exp, ulong hi, ulong lo, X87Rounding rc, int prec, ref X87Status st)
    {
        ushort s = neg ? SignBit : (ushort)0;
        X87Status local = 0;
        // With PC < 64 the denormal LSB also moves up: the low (64 - prec) significand bits stay clear.
        if (!RoundCore(neg, exp, hi, lo, prec, EMin, EMin - (prec - 1), EMax, rc, ref local, out ulong m, out int rexp))
        {
            st |= X87Status.Overflow | X87Status.Precision;
            if (OverflowToInfinity(neg, rc))
            {
                st |= X87Status.C1;
                return MakeInf(neg);
            }
            ulong max = prec == 64 ? ulong.MaxValue : ulong.MaxValue << (64 - prec);
            return new Float80(max, (ushort)(s | 0x7FFE));
        }
        st |= local;
        if (m == 0) return MakeZero(neg);
        if (rexp >= EMin) return new Float80(m, (ushort)(s | (rexp + ExponentBias)));
        return new Float80(m >> (EMin - rexp), s);
    }

    private static Float80 PackExact(bool neg, int exp, ulong sig)
    {
        X87Status dummy = 0;
        return RoundPack(neg, exp, sig, 0, X87Rounding.Nearest, 64, ref dummy);
    }

    // ------------------------------------------------------------------ basic arithmetic

    /// <summary>FADD: a + b.</summary>
    public static Float80 Add(Float80 a, Float80 b, X87Rounding rc, out X87Status status, X87Precision pc = X87Precision.Extended64, bool denormalOperand = false)
        => AddCore(a, b, false, rc, PrecisionBits(pc), denormalOperand, out status);

    /// <summary>FSUB: a - b (FSUBR st0, x is Sub(x, st0)).</summary>
    public static Float80 Sub(Float80 a, Float80 b, X87Rounding rc, out X87Status status, X87Precision pc = X87Precision.Extended64, bool denormalOperand = false)
        => AddCore(a, b, true, rc, PrecisionBits(pc), denormalOperand, out status);

    private static Float80 AddCore(Float80 a, Float80 b, bool negB, X87Rounding rc, int prec, bool dn, out X87Status st)
    {
        st = 0;
        Kind ka = Classify(a), kb = Classify(b);
        if (PropagateNaN(a, ka, b, kb, ref st, out Float80 r)) return r;
        if (a.IsDenormal || b.IsDenormal || dn) st |= X87Status.Denormal;
        bool sa = a.Sign, sb = b.Sign ^ negB;
        if (ka == Kind.Inf)
        {
            if (kb == Kind.Inf && sa != sb)
            {
                st |= X87Status.Invalid;
                return Indefinite;
            }
            return MakeInf(sa);
        }
        if (kb == Kind.Inf) return MakeInf(sb);
        if (ka == Kind.Zero && kb == Kind.Zero) return MakeZero(sa == sb ? sa : rc == X87Rounding.Down);
        if (kb == Kind.Zero)
        {
            Unpack(a, out int e, out ulong m);
            return RoundPack(sa, e, m, 0, rc, prec, ref st);
        }
        if (ka == Kind.Zero)
        {
            Unpack(b, out int e, out ulong m);
            return RoundPack(sb, e, m, 0, rc, prec, ref st);
        }
        Unpack(a, out int ea, out ulong ma);
        Unpack(b, out int eb, out ulong mb);
        if (ea < eb || (ea == eb && ma < mb))
        {
            (ea, eb) = (eb, ea);
            (ma, mb) = (mb, ma);
            (sa, sb) = (sb, sa);
        }
        // 62-bit headroom shift: A = ma << 62, B = mb << 62 >> (ea - eb) with sticky
        ulong ahi = ma >> 2, alo = ma << 62;
        ulong bhi = mb >> 2, blo = mb << 62;
        ShiftRightJam(ref bhi, ref blo, ea - eb);
        ulong hi, lo;
        if (sa == sb)
        {
            lo = alo + blo;
            hi = ahi + bhi + (lo < alo ? 1UL : 0UL);
        }
        else
        {
            lo = alo - blo;
            hi = ahi - bhi - (alo < blo ? 1UL : 0UL);
            if ((hi | lo) == 0) return MakeZero(rc == X87Rounding.Down);
        }
        int lz = Normalize(ref hi, ref lo);
        return RoundPack(sa, ea + 2 - lz, hi, lo, rc, prec, ref st);
    }

    /// <summary>FMUL: a * b.</summary>
    public static Float80 Mul(Float80 a, Float80 b, X87Rounding rc, out X87Status status, X87Precision pc = X87Precision.Extended64, bool denormalOperand = false)
    {
        status = 0;
        Kind ka = Classify(a), kb = Classify(b);
        if (PropagateNaN(a, ka, b, kb, ref status, out Float80 r)) return r;
        if (a.IsDenormal || b.IsDenormal || denormalOperand) status |= X87Status.Denormal;
        bool neg = a.Sign ^ b.Sign;
        if (ka == Kind.Inf || kb == Kind.Inf)
        {
            if (ka == Kind.Zero || kb == Kind.Zero)
            {
                status |= X87Status.Invalid;
                return Indefinite;
            }
            return MakeInf(neg);
        }
        if (ka == Kind.Zero || kb == Kind.Zero) return MakeZero(neg);
        Unpack(a, out int ea, out ulong ma);
        Unpack(b, out int eb, out ulong mb);
        ulong hi = Math.BigMul(ma, mb, out ulong lo);
        int lz = 0;
        if ((long)hi >= 0)
        {
            hi = (hi << 1) | (lo >> 63);
            lo <<= 1;
            lz = 1;
        }
        return RoundPack(neg, ea + eb + 1 - lz, hi, lo, rc, PrecisionBits(pc), ref status);
    }

    /// <summary>FDIV: a / b (FDIVR st0, x is Div(x, st0)).</summary>
    public static Float80 Div(Float80 a, Float80 b, X87Rounding rc, out X87Status status, X87Precision pc = X87Precision.Extended64, bool denormalOperand = false)
    {
        status = 0;
        Kind ka = Classify(a), kb = Classify(b);
        if (PropagateNaN(a, ka, b, kb, ref status, out Float80 r)) return r;
        bool neg = a.Sign ^ b.Sign;
        if (ka == Kind.Inf)
        {
            if (kb == Kind.Inf)
            {
                status |= X87Status.Invalid;
                return Indefinite;
            }
            if (b.IsDenormal || denormalOperand) status |= X87Status.Denormal;
            return MakeInf(neg);
        }
        if (kb == Kind.Inf)
        {
            if (a.IsDenormal || denormalOperand) status |= X87Status.Denormal;
            return MakeZero(neg);
        }
        if (kb == Kind.Zero)
        {
            if (ka == Kind.Zero)
            {
                status |= X87Status.Invalid;
                return Indefinite;
            }
            status |= X87Status.ZeroDivide;
            return MakeInf(neg);
        }
        if (b.IsDenormal || a.IsDenormal || denormalOperand) status |= X87Status.Denormal;
        if (ka == Kind.Zero) return MakeZero(neg);
        Unpack(a, out int ea, out ulong ma);
        Unpack(b, out int eb, out ulong mb);
        // 128 quotient bits of ma / mb plus a sticky remainder bit
        bool ge = ma >= mb;
        ulong q1 = DivLu(ge ? ma - mb : ma, 0, mb, out ulong r1);
        ulong q2 = DivLu(r1, 0, mb, out ulong r2);
        ulong hi, lo;
        int exp;
        if (ge)
        {
            hi = IntBit | (q1 >> 1);
            lo = (q1 << 63) | (q2 >> 1) | ((q2 & 1) | (r2 != 0 ? 1UL : 0UL));
            exp = ea - eb;
        }
        else
        {
            hi = q1;
            lo = q2 | (r2 != 0 ? 1UL : 0UL);
            exp = ea - eb - 1;
        }
        return RoundPack(neg, exp, hi, lo, rc, PrecisionBits(pc), ref status);
    }

    /// <summary>floor(sqrt(nhi:nlo)) for nhi:nlo in [2^126, 2^128); reports whether the remainder is non-zero and whether it exceeds the root.</summary>
    private static ulong ISqrt(ulong nhi, ulong nlo, out bool inexact, out bool aboveHalf)
    {
        double est = Math.Sqrt(nhi * 18446744073709551616.0 + nlo);
        ulong s = est >= 18446744073709549568.0 ? ulong.MaxValue : (ulong)est;
        if (s < IntBit) s = IntBit;
        if (nhi < s)
        {
            // one Newton step: (s + n / s) / 2 (s is normalized, nhi < s)
            ulong q = DivLu(nhi, nlo, s, out _);
            s = (s >> 1) + (q >> 1) + (s & q & 1);
            if (s < IntBit) s = IntBit;
        }
        else
        {
            UInt128 n = ((UInt128)nhi << 64) | nlo;
            UInt128 t = ((UInt128)s + n / s) >> 1;
            s = t > ulong.MaxValue ? ulong.MaxValue : (ulong)t;
        }
        // fix up so that s^2 <= n < (s+1)^2
        while (true)
        {
            ulong shi = Math.BigMul(s, s, out ulong slo);
            if (shi > nhi || (shi == nhi && slo > nlo)) s--;
            else break;
        }
        while (s != ulong.MaxValue)
        {
            ulong t = s + 1;
            ulong thi = Math.BigMul(t, t, out ulong tlo);
            if (thi < nhi || (thi == nhi && tlo <= nlo)) s = t;
            else break;
        }
        ulong sqhi = Math.BigMul(s, s, out ulong sqlo);
        ulong rlo = nlo - sqlo;
        ulong rhi = nhi - sqhi - (nlo < sqlo ? 1UL : 0UL);
        inexact = (rhi | rlo) != 0;
        aboveHalf = rhi != 0 || rlo > s;      // remainder > s  <=>  sqrt(n) > s + 1/2
        return s;
    }

    /// <summary>FSQRT.</summary>
    public static Float80 Sqrt(Float80 a, X87Rounding rc, out X87Status status, X87Precision pc = X87Precision.Extended64)
    {
        status = 0;
        Kind ka = Classify(a);
        if (PropagateNaN(a, ka, ref status, out Float80 r)) return r;
        if (ka == Kind.Zero) return a;
        if (a.Sign)
        {
            status |= X87Status.Invalid;
            return Indefinite;
        }
        if (ka == Kind.Inf) return a;
        if (a.IsDenormal) status |= X87Status.Denormal;
        Unpack(a, out int e, out ulong m);
        int k = (e & 1) != 0 ? 64 : 63;
        ulong nhi = k == 64 ? m : m >> 1, nlo = k == 64 ? 0 : m << 63;
        ulong s = ISqrt(nhi, nlo, out bool inexact, out bool aboveHalf);
        ulong lo = inexact ? (aboveHalf ? IntBit | 1 : 1) : 0;
        int exp = 63 + (e - 63 - k) / 2;
        return RoundPack(false, exp, s, lo, rc, PrecisionBits(pc), ref status);
    }

    /// <summary>
    /// Rounds a finite non-zero value to an integer magnitude. big: |rounded| &gt;= 2^64 (or exponent &gt;= 64).
    /// </summary>
    private static ulong RoundToIntegerMagnitude(bool neg, int e, ulong m, X87Rounding rc, out bool inexact, out bool up, out bool big)
    {
        big = false;
        ulong kept;
        bool rb, sticky;
        if (e >= 63)
        {
            inexact = up = false;
            big = e >= 64;
            return m;
        }
        if (e < 0)
        {
            kept = 0;
            rb = e == -1;
            sticky = e == -1 ? (m << 1) != 0 : true;
        }
        else
        {
            int sh = 63 - e;
            kept = m >> sh;
            rb = ((m >> (sh - 1)) & 1) != 0;
            sticky = sh > 1 && (m << (65 - sh)) != 0;
        }
        inexact = rb | sticky;
        up = inexact && rc switch
        {
            X87Rounding.Nearest => rb && (sticky || (kept & 1) != 0),
            X87Rounding.Down => neg,
            X87Rounding.Up => !neg,
            _ => false,
        };
        if (up) kept++;
        return kept;
    }

    private static Float80 FromMagnitude(bool neg, ulong mag)
    {
        if (mag == 0) return MakeZero(neg);
        int lz = BitOperations.LeadingZeroCount(mag);
        return new Float80(mag << lz, (ushort)((neg ? SignBit : 0) | (ExponentBias + 63 - lz)));
    }

    /// <summary>FRNDINT: round to an integral value per RC.</summary>
    public static Float80 RoundToInteger(Float80 a, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind ka = Classify(a);
        if (PropagateNaN(a, ka, ref status, out Float80 r)) return r;
        if (ka != Kind.Finite) return a;
        if (a.IsDenormal) status |= X87Status.Denormal;
        Unpack(a, out int e, out ulong m);
        if (e >= 63) return a;
        ulong mag = RoundToIntegerMagnitude(a.Sign, e, m, rc, out bool inexact, out bool up, out _);
        if (inexact)
        {
            status |= X87Status.Precision;
            if (up) status |= X87Status.C1;
        }
        return FromMagnitude(a.Sign, mag);
    }

    /// <summary>FABS (no exceptions, NaNs untouched).</summary>
    public static Float80 Abs(Float80 a) => new(a.Mantissa, (ushort)(a.SignExp & 0x7FFF));

    /// <summary>FCHS (no exceptions, NaNs untouched).</summary>
    public static Float80 Neg(Float80 a) => new(a.Mantissa, (ushort)(a.SignExp ^ SignBit));

    // ------------------------------------------------------------------ compare / examine

    /// <summary>
    /// FCOM (<paramref name="signalOnQNaN"/> = true) or FUCOM (false): compares a (ST0) with b. The status
    /// carries C3/C2/C0 as the instruction sets them (greater 000, less 001, equal 100, unordered 111).
    /// Also valid for FCOMI/FUCOMI (ZF=C3, PF=C2, CF=C0).
    /// </summary>
    public static X87CompareResult Compare(Float80 a, Float80 b, bool signalOnQNaN, out X87Status status, bool denormalOperand = false)
    {
        status = 0;
        Kind ka = Classify(a), kb = Classify(b);
        X87CompareResult res;
        if (ka == Kind.Unsupported || kb == Kind.Unsupported || IsNaNKind(ka) || IsNaNKind(kb))
        {
            if (ka == Kind.Unsupported || kb == Kind.Unsupported || ka == Kind.SNaN || kb == Kind.SNaN || signalOnQNaN)
                status |= X87Status.Invalid;
            res = X87CompareResult.Unordered;
        }
        else
        {
            if (a.IsDenormal || b.IsDenormal || denormalOperand) status |= X87Status.Denormal;
            int c = CompareOrdered(a, ka, b, kb);
            res = c < 0 ? X87CompareResult.Less : c > 0 ? X87CompareResult.Greater : X87CompareResult.Equal;
        }
        status |= res switch
        {
            X87CompareResult.Less => X87Status.C0,
            X87CompareResult.Equal => X87Status.C3,
            X87CompareResult.Unordered => X87Status.C0 | X87Status.C2 | X87Status.C3,
            _ => 0,
        };
        return res;
    }

    private static int CompareOrdered(Float80 a, Kind ka, Float80 b, Kind kb)
    {
        if (ka == Kind.Zero && kb == Kind.Zero) return 0;
        int sa = ka == Kind.Zero ? 0 : a.Sign ? -1 : 1;
        int sb = kb == Kind.Zero ? 0 : b.Sign ? -1 : 1;
        if (sa != sb) return sa < sb ? -1 : 1;
        // same non-zero sign: compare magnitudes
        int mag;
        if (ka == Kind.Inf || kb == Kind.Inf) mag = ka == kb ? 0 : ka == Kind.Inf ? 1 : -1;
        else
        {
            Unpack(a, out int ea, out ulong ma);
            Unpack(b, out int eb, out ulong mb);
            mag = ea != eb ? (ea < eb ? -1 : 1) : ma.CompareTo(mb);
        }
        return sa < 0 ? -mag : mag;
    }

    /// <summary>FTST: compare with +0.0 (signals on any NaN).</summary>
    public static X87CompareResult Test(Float80 a, out X87Status status) => Compare(a, Zero, true, out status);

    /// <summary>FXAM for a non-empty register: returns C3, C2, C1 (sign) and C0 of the class.</summary>
    public static X87Status Examine(Float80 a)
    {
        X87Status s = a.Sign ? X87Status.C1 : 0;
        return s | Classify(a) switch
        {
            Kind.Unsupported => 0,
            Kind.QNaN or Kind.SNaN => X87Status.C0,
            Kind.Inf => X87Status.C2 | X87Status.C0,
            Kind.Zero => X87Status.C3,
            _ => a.IsDenormal ? X87Status.C3 | X87Status.C2 : X87Status.C2,
        };
    }

    /// <summary>Condition codes of FXAM for an empty register (C3 and C0 set, C1 = sign of the stale contents).</summary>
    public const X87Status ExamineEmpty = X87Status.C3 | X87Status.C0;

    // ------------------------------------------------------------------ scale / remainder / extract

    /// <summary>FSCALE: a * 2^trunc(b) (a = ST0, b = ST1). Not affected by PC.</summary>
    public static Float80 Scale(Float80 a, Float80 b, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind ka = Classify(a), kb = Classify(b);
        if (PropagateNaN(a, ka, b, kb, ref status, out Float80 r)) return r;
        if (a.IsDenormal || b.IsDenormal) status |= X87Status.Denormal;
        if (kb == Kind.Inf)
        {
            if (!b.Sign)
            {
                if (ka == Kind.Zero)
                {
                    status |= X87Status.Invalid;
                    return Indefinite;
                }
                return MakeInf(a.Sign);
            }
            if (ka == Kind.Inf)
            {
                status |= X87Status.Invalid;
                return Indefinite;
            }
            return MakeZero(a.Sign);
        }
        if (ka != Kind.Finite) return a;
        long n = 0;
        if (kb == Kind.Finite)
        {
            Unpack(b, out int eb, out ulong mb);
            if (eb >= 30) n = 1L << 30;
            else if (eb >= 0) n = (long)(mb >> (63 - eb));
            if (b.Sign) n = -n;
        }
        Unpack(a, out int ea, out ulong ma);
        return RoundPack(a.Sign, (int)(ea + n), ma, 0, rc, 64, ref status);
    }

    /// <summary>Implementation-dependent partial-remainder reduction count for FPREM/FPREM1 when exponent difference &gt;= 64.</summary>
    private static int PartialN(int d) => 32 + (d & 31);

    /// <summary>FPREM: partial remainder of a (ST0) by b (ST1), quotient truncated. C2 set when incomplete; otherwise C0, C3, C1 = Q2, Q1, Q0.</summary>
    public static Float80 Prem(Float80 a, Float80 b, out X87Status status) => PremCore(a, b, false, out status);

    /// <summary>FPREM1: IEEE partial remainder (quotient rounded to nearest-even).</summary>
    public static Float80 Prem1(Float80 a, Float80 b, out X87Status status) => PremCore(a, b, true, out status);

    private static Float80 PremCore(Float80 a, Float80 b, bool ieee, out X87Status st)
    {
        st = 0;
        Kind ka = Classify(a), kb = Classify(b);
        if (PropagateNaN(a, ka, b, kb, ref st, out Float80 r)) return r;
        if (ka == Kind.Inf || kb == Kind.Zero)
        {
            st |= X87Status.Invalid;
            return Indefinite;
        }
        if (a.IsDenormal || b.IsDenormal) st |= X87Status.Denormal;
        if (ka == Kind.Zero) return a;
        Unpack(a, out int ea, out ulong ma);
        if (kb == Kind.Inf) return PackExact(a.Sign, ea, ma);
        Unpack(b, out int eb, out ulong mb);
        int d = ea - eb;
        bool neg = a.Sign;
        ulong q;
        if (d >= 64)
        {
            int n = PartialN(d);
            UInt128 x = (UInt128)ma << n;
            ulong rr = (ulong)(x % mb);
            st |= X87Status.C2;
            if (rr == 0) return MakeZero(neg);
            int lz = BitOperations.LeadingZeroCount(rr);
            // rr is in units of 2^(ea - n - 63)
            return PackExact(neg, ea - n - lz, rr << lz);
        }
        if (d < 0)
        {
            q = 0;
            if (ieee && d == -1 && ma > mb)
            {
                // |a| > |b|/2: quotient rounds to 1
                q = 1;
                ulong diff = 2 * (mb - (ma >> 1)) - (ma & 1);   // 2mb - ma, in units of 2^(ea-63)
                int lz = BitOperations.LeadingZeroCount(diff);
                return WithQuotient(PackExact(!neg, ea - lz, diff << lz), q, ref st);
            }
            return WithQuotient(PackExact(neg, ea, ma), q, ref st);
        }
        UInt128 xx = (UInt128)ma << d;
        UInt128 qq = xx / mb;
        ulong rem = (ulong)(xx - qq * mb);
        q = (ulong)qq;
        if (ieee)
        {
            UInt128 twice = (UInt128)rem * 2;
            if (twice > mb || (twice == mb && (q & 1) != 0))
            {
                q++;
                rem = mb - rem;
                neg = !neg;
            }
        }
        if (rem == 0) return WithQuotient(MakeZero(a.Sign), q, ref st);
        int l = BitOperations.LeadingZeroCount(rem);
        return WithQuotient(PackExact(neg, eb - l, rem << l), q, ref st);
    }

    private static Float80 WithQuotient(Float80 r, ulong q, ref X87Status st)
    {
        if ((q & 4) != 0) st |= X87Status.C0;
        if ((q & 2) != 0) st |= X87Status.C3;
        if ((q & 1) != 0) st |= X87Status.C1;
        return r;
    }

    /// <summary>FXTRACT: returns the significand (new ST0) and the unbiased exponent (new ST1).</summary>
    public static Float80 Xtract(Float80 a, out Float80 exponent, out X87Status status)
    {
        status = 0;
        Kind ka = Classify(a);
        if (PropagateNaN(a, ka, ref status, out Float80 r))
        {
            exponent = r;
            return r;
        }
        switch (ka)
        {
            case Kind.Zero:
                status |= X87Status.ZeroDivide;
                exponent = NegativeInfinity;
                return a;
            case Kind.Inf:
                exponent = PositiveInfinity;
                return a;
        }
        if (a.IsDenormal) status |= X87Status.Denormal;
        Unpack(a, out int e, out ulong m);
        exponent = FromInt64(e);
        return new Float80(m, (ushort)((a.SignExp & SignBit) | ExponentBias));
    }

    // ------------------------------------------------------------------ integer conversions

    /// <summary>FILD (exact).</summary>
    public static Float80 FromInt64(long v) => v == 0 ? Zero : FromMagnitude(v < 0, v < 0 ? 0UL - (ulong)v : (ulong)v);

    public static Float80 FromInt32(int v) => FromInt64(v);
    public static Float80 FromInt16(short v) => FromInt64(v);

    private static ulong ToIntegerCore(Float80 a, X87Rounding rc, ulong posLimit, out bool neg, out bool ok, out X87Status st)
    {
        st = 0;
        neg = a.Sign;
        ok = false;
        Kind ka = Classify(a);
        if (ka == Kind.Zero)
        {
            ok = true;
            return 0;
        }
        if (ka != Kind.Finite)
        {
            st |= X87Status.Invalid;
            return 0;
        }
        Unpack(a, out int e, out ulong m);
        ulong mag = RoundToIntegerMagnitude(neg, e, m, rc, out bool inexact, out bool up, out bool big);
        ulong limit = neg ? posLimit + 1 : posLimit;
        if (big || mag > limit)
        {
            st |= X87Status.Invalid;
            return 0;
        }
        if (inexact)
        {
            st |= X87Status.Precision;
            if (up) st |= X87Status.C1;
        }
        ok = true;
        return mag;
    }

    /// <summary>FIST/FISTP m64 (FISTTP: pass <see cref="X87Rounding.TowardZero"/>). Out of range or NaN gives 0x8000000000000000 and #IA.</summary>
    public static long ToInt64(Float80 a, X87Rounding rc, out X87Status status)
    {
        ulong mag = ToIntegerCore(a, rc, long.MaxValue, out bool neg, out bool ok, out status);
        if (!ok) return long.MinValue;
        return neg ? (long)(0 - mag) : (long)mag;
    }

    public static int ToInt32(Float80 a, X87Rounding rc, out X87Status status)
    {
        ulong mag = ToIntegerCore(a, rc, int.MaxValue, out bool neg, out bool ok, out status);
        if (!ok) return int.MinValue;
        return neg ? (int)(0 - (long)mag) : (int)mag;
    }

    public static short ToInt16(Float80 a, X87Rounding rc, out X87Status status)
    {
        ulong mag = ToIntegerCore(a, rc, (ulong)short.MaxValue, out bool neg, out bool ok, out status);
        if (!ok) return short.MinValue;
        return neg ? (short)(0 - (long)mag) : (short)mag;
    }

    /// <summary>FISTTP m64/m32/m16 (truncate regardless of RC).</summary>
    public static long TruncateToInt64(Float80 a, out X87Status status) => ToInt64(a, X87Rounding.TowardZero, out status);
    public static int TruncateToInt32(Float80 a, out X87Status status) => ToInt32(a, X87Rounding.TowardZero, out status);
    public static short TruncateToInt16(Float80 a, out X87Status status) => ToInt16(a, X87Rounding.TowardZero, out status);

    // ------------------------------------------------------------------ binary32 / binary64 conversions

    /// <summary>FLD m64: exact; SNaN raises #IA and is quieted, denormals raise #D.</summary>
    public static Float80 FromDouble(double d, out X87Status status)
        => FromIeee(BitConverter.DoubleToUInt64Bits(d), 52, 11, out status);

    /// <summary>FLD m32.</summary>
    public static Float80 FromSingle(float f, out X87Status status)
        => FromIeee(BitConverter.SingleToUInt32Bits(f), 23, 8, out status);

    public static Float80 FromDouble(double d) => FromDouble(d, out _);

    /// <summary>
    /// Widens an m64 arithmetic operand (FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR/FCOM m64) exactly, without exception
    /// processing: SNaNs stay signalling so the NaN rules of the operation apply; pass <paramref name="denormal"/>
    /// as the operation's <c>denormalOperand</c> argument.
    /// </summary>
    public static Float80 FromDoubleOperand(double d, out bool denormal)
    {
        ulong bits = BitConverter.DoubleToUInt64Bits(d);
        denormal = (bits & 0x7FF0_0000_0000_0000) == 0 && (bits << 12) != 0;
        return WidenRaw(bits, 52, 11);
    }

    /// <summary>Widens an m32 arithmetic operand; see <see cref="FromDoubleOperand"/>.</summary>
    public static Float80 FromSingleOperand(float f, out bool denormal)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        denormal = (bits & 0x7F80_0000) == 0 && (bits << 9) != 0;
        return WidenRaw(bits, 23, 8);
    }

    private static Float80 WidenRaw(ulong bits, int fracBits, int expBits)
    {
        bool isSNaN = false;
        int emask = (1 << expBits) - 1;
        if (((int)(bits >> fracBits) & emask) == emask && (bits & ((1UL << fracBits) - 1)) != 0)
            isSNaN = (bits & (1UL << (fracBits - 1))) == 0;
        Float80 r = FromIeee(bits, fracBits, expBits, out _);
        return isSNaN ? new Float80(r.Mantissa & ~QuietBit, r.SignExp) : r;
    }
    public static Float80 FromSingle(float f) => FromSingle(f, out _);

    private static Float80 FromIeee(ulong bits, int fracBits, int expBits, out X87Status st)
    {
        st = 0;
        bool neg = (bits >> (fracBits + expBits)) != 0;
        ushort s = neg ? SignBit : (ushort)0;
        int emask = (1 << expBits) - 1;
        int bias = emask >> 1;
        int e = (int)(bits >> fracBits) & emask;
        ulong frac = bits & ((1UL << fracBits) - 1);
        if (e == emask)
        {
            if (frac == 0) return MakeInf(neg);
            ulong m = IntBit | (frac << (63 - fracBits));
            if ((m & QuietBit) == 0)
            {
                st |= X87Status.Invalid;
                m |= QuietBit;
            }
            return new Float80(m, (ushort)(s | 0x7FFF));
        }
        if (e == 0)
        {
            if (frac == 0) return MakeZero(neg);
            st |= X87Status.Denormal;
            int lz = BitOperations.LeadingZeroCount(frac);
            // value = frac * 2^(1 - bias - fracBits); leading bit at 63 - lz
            int exp = 1 - bias - fracBits + (63 - lz);
            return new Float80(frac << lz, (ushort)(s | (exp + ExponentBias)));
        }
        return new Float80(IntBit | (frac << (63 - fracBits)), (ushort)(s | (e - bias + ExponentBias)));
    }

    /// <summary>FST m64: rounds per RC with the binary64 range (#O, #U, #P, C1 = rounded up).</summary>
    public static double ToDouble(Float80 a, X87Rounding rc, out X87Status status)
        => BitConverter.UInt64BitsToDouble(ToIeee(a, rc, 53, 11, out status));

    /// <summary>FST m32.</summary>
    public static float ToSingle(Float80 a, X87Rounding rc, out X87Status status)
        => BitConverter.UInt32BitsToSingle((uint)ToIeee(a, rc, 24, 8, out status));

    /// <summary>Round-to-nearest conversion ignoring exceptions.</summary>
    public static double ToDouble(Float80 a) => ToDouble(a, X87Rounding.Nearest, out _);

    private static ulong ToIeee(Float80 a, X87Rounding rc, int prec, int expBits, out X87Status st)
    {
        st = 0;
        int fracBits = prec - 1;
        bool neg = a.Sign;
        ulong s = neg ? 1UL << (fracBits + expBits) : 0;
        ulong emask = (1UL << expBits) - 1;
        int bias = (int)(emask >> 1);
        ulong infBits = s | (emask << fracBits);
        switch (Classify(a))
        {
            case Kind.Zero:
                return s;
            case Kind.Inf:
                return infBits;
            case Kind.Unsupported:
                st |= X87Status.Invalid;
                return (1UL << (fracBits + expBits)) | infBits | (1UL << (fracBits - 1));
            case Kind.SNaN:
            case Kind.QNaN:
                if ((a.Mantissa & QuietBit) == 0) st |= X87Status.Invalid;
                return infBits | (((a.Mantissa | QuietBit) << 1) >> (64 - fracBits));
        }
        Unpack(a, out int e, out ulong m);
        int emin = 1 - bias;
        if (!RoundCore(neg, e, m, 0, prec, emin, emin - fracBits, bias, rc, ref st, out ulong al, out int rexp))
        {
            st |= X87Status.Overflow | X87Status.Precision;
            if (OverflowToInfinity(neg, rc))
            {
                st |= X87Status.C1;
                return infBits;
            }
            return s | ((emask - 1) << fracBits) | ((1UL << fracBits) - 1);
        }
        if (al == 0) return s;
        if (rexp >= emin) return s | ((ulong)(rexp + bias) << fracBits) | ((al << 1) >> (64 - fracBits));
        return s | (al >> (64 - fracBits + emin - rexp - 1));
    }

    // ------------------------------------------------------------------ packed BCD

    /// <summary>FBSTP: rounds per RC and stores 18 BCD digits (10 bytes). Out of range / NaN stores the BCD indefinite.</summary>
    public static void ToBcd(Float80 a, X87Rounding rc, Span<byte> dest, out X87Status status)
    {
        ulong mag = ToIntegerCore(a, rc, 999_999_999_999_999_999UL, out bool neg, out bool ok, out status);
        if (ok && neg && mag > 999_999_999_999_999_999UL) ok = false;
        if (!ok)
        {
            status = (status & ~(X87Status.Precision | X87Status.C1)) | X87Status.Invalid;
            dest.Slice(0, 7).Clear();
            dest[7] = 0xC0;
            dest[8] = 0xFF;
            dest[9] = 0xFF;
            return;
        }
        for (int i = 0; i < 9; i++)
        {
            int lo = (int)(mag % 10);
            mag /= 10;
            int hi = (int)(mag % 10);
            mag /= 10;
            dest[i] = (byte)(lo | (hi << 4));
        }
        dest[9] = neg ? (byte)0x80 : (byte)0;
    }

    /// <summary>FBLD: exact load of 18 BCD digits (invalid digits are taken at face value).</summary>
    public static Float80 FromBcd(ReadOnlySpan<byte> src)
    {
        ulong v = 0;
        for (int i = 8; i >= 0; i--)
            v = v * 100 + (ulong)(src[i] >> 4) * 10 + (ulong)(src[i] & 15);
        return FromMagnitude((src[9] & 0x80) != 0, v);
    }

    // ------------------------------------------------------------------ constants

    /// <summary>x87 built-in constants (FLD1, FLDZ, FLDPI, FLDL2E, FLDL2T, FLDLG2, FLDLN2).</summary>
    public enum Constant : byte { One, Zero, Pi, Log2E, Log2Ten, Log10Two, LnTwo }

    /// <summary>Loads a built-in constant rounded per RC (no exception is raised).</summary>
    public static Float80 LoadConstant(Constant c, X87Rounding rc) => c switch
    {
        // exact in every rounding mode; kept apart from the 128-bit significands of the others (a method that handles
        // UInt128 has no ReadyToRun code, and fld1/fldz run at the start of many programs)
        Constant.One => One,
        Constant.Zero => Zero,
        _ => LoadRounded(c, rc),
    };

    static Float80 LoadRounded(Constant c, X87Rounding rc)
    {
        (UInt128 sig, int exp) = c switch
        {
            Constant.Pi => (ConstPi, 1),
            Constant.Log2E => (ConstL2E, 0),
            Constant.Log2Ten => (ConstL2T, 1),
            Constant.Log10Two => (ConstLG2, -2),
            _ => (ConstLN2, -1),
        };
        X87Status dummy = 0;
        return RoundPack(false, exp, sig, rc, 64, ref dummy);
    }

    private static readonly UInt128 ConstPi = new(0xc90fdaa22168c234, 0xc4c6628b80dc1cd1);
    private static readonly UInt128 ConstL2E = new(0xb8aa3b295c17f0bb, 0xbe87fed0691d3e88);
    private static readonly UInt128 ConstL2T = new(0xd49a784bcd1b8afe, 0x492bf6ff4dafdb4c);
    private static readonly UInt128 ConstLG2 = new(0x9a209a84fbcff798, 0x8f8959ac0b7c9178);
    private static readonly UInt128 ConstLN2 = new(0xb17217f7d1cf79ab, 0xc9e3b39803f2f6af);

    // ------------------------------------------------------------------ transcendentals (via double, not bit-exact)

    private const double Ln2 = 0.69314718055994530942;

    /// <summary>Converts a double-computed result to 80 bits and sets the usual flags (#P, #U when tiny).</summary>
    private static Float80 FromApprox(double d, ref X87Status st)
    {
        st |= X87Status.Precision;
        return FromDouble(d);
    }

    /// <summary>Splits a finite value into hi + lo doubles (hi = nearest double; lo = remainder, rounded).</summary>
    private static void Split(Float80 x, out double hi, out double lo)
    {
        hi = ToDouble(x);
        Float80 rest = Sub(x, FromDouble(hi), X87Rounding.Nearest, out _);
        lo = ToDouble(rest);
    }

    private static bool TrigPrologue(Float80 a, ref X87Status st, out Float80 r, out bool outOfRange)
    {
        outOfRange = false;
        Kind ka = Classify(a);
        if (PropagateNaN(a, ka, ref st, out r)) return true;
        if (ka == Kind.Inf)
        {
            st |= X87Status.Invalid;
            r = Indefinite;
            return true;
        }
        if (a.IsDenormal) st |= X87Status.Denormal;
        if (ka == Kind.Finite && a.BiasedExponent >= ExponentBias + 63)
        {
            st |= X87Status.C2;
            outOfRange = true;
            r = a;
            return true;
        }
        r = default;
        return false;
    }

    /// <summary>floor(pi * 2^64): the 66-bit pi the x87 uses for argument reduction.</summary>
    private static readonly UInt128 Pi66 = new(3, 0x243F6A8885A308D3);

    /// <summary>
    /// Reduces |x| exactly modulo the x87's 66-bit pi (as FSIN/FCOS/FPTAN do), giving the quotient k (nearest)
    /// and the remainder in [-pi/2, pi/2] as hi + lo doubles.
    /// </summary>
    private static void ReducePi(Float80 x, out ulong k, out double hi, out double lo)
    {
        Unpack(x, out int e, out ulong m);
        if (e < 0)
        {
            k = 0;
            Split(Abs(x), out hi, out lo);
            return;
        }
        UInt128 v = (UInt128)m << (e + 1);          // |x| in units of 2^-64 (exact, e <= 62)
        UInt128 q = v / Pi66;
        UInt128 rem = v - q * Pi66;
        bool neg = false;
        if (rem > Pi66 >> 1)
        {
            rem = Pi66 - rem;
            q++;
            neg = true;
        }
        hi = (double)(ulong)(rem >> 13) * 4.4408920985006262e-16;   // 2^-51
        lo = (double)((ulong)rem & 0x1FFF) * 5.4210108624275222e-20; // 2^-64
        if (neg)
        {
            hi = -hi;
            lo = -lo;
        }
        k = (ulong)q;
    }

    /// <summary>FSIN (approximate). |a| &gt;= 2^63 sets C2 and returns a unchanged.</summary>
    public static Float80 Sin(Float80 a, X87Rounding rc, out X87Status status)
    {
        status = 0;
        if (TrigPrologue(a, ref status, out Float80 r, out _)) return r;
        if (a.IsZero) return a;
        if (a.BiasedExponent < ExponentBias - 40) return TinyIdentity(a, rc, ref status);
        ReducePi(a, out ulong k, out double hi, out double lo);
        double v = Math.Sin(hi) + Math.Cos(hi) * lo;
        if (((k & 1) != 0) != a.Sign) v = -v;
        return FromApprox(v, ref status);
    }

    /// <summary>FCOS (approximate).</summary>
    public static Float80 Cos(Float80 a, X87Rounding rc, out X87Status status)
    {
        status = 0;
        if (TrigPrologue(a, ref status, out Float80 r, out _)) return r;
        if (a.IsZero || a.BiasedExponent < ExponentBias - 40)
        {
            if (!a.IsZero) status |= X87Status.Precision;
            return rc is X87Rounding.Down or X87Rounding.TowardZero && !a.IsZero ? new Float80(ulong.MaxValue, ExponentBias - 1) : One;
        }
        ReducePi(a, out ulong k, out double hi, out double lo);
        double v = Math.Cos(hi) - Math.Sin(hi) * lo;
        if ((k & 1) != 0) v = -v;
        return FromApprox(v, ref status);
    }

    /// <summary>FSINCOS (approximate): returns sin (new ST1) and cos (new ST0).</summary>
    public static Float80 SinCos(Float80 a, X87Rounding rc, out Float80 cos, out X87Status status)
    {
        Float80 s = Sin(a, rc, out status);
        if ((status & X87Status.C2) != 0 || s.IsNaN)
        {
            cos = s;
            return s;
        }
        cos = Cos(a, rc, out X87Status s2);
        status |= s2 & ~X87Status.Underflow;
        return s;
    }

    /// <summary>
    /// FPTAN (approximate): returns tan(a), which replaces ST0; the instruction then pushes <paramref name="pushed"/>
    /// (1.0, or the NaN result again). With C2 set (|a| &gt;= 2^63) ST0 is unchanged and nothing is pushed.
    /// </summary>
    public static Float80 Tan(Float80 a, X87Rounding rc, out Float80 pushed, out X87Status status)
    {
        pushed = One;
        Float80 t = TanCore(a, rc, out status);
        if (t.IsNaN) pushed = t;
        return t;
    }

    private static Float80 TanCore(Float80 a, X87Rounding rc, out X87Status status)
    {
        status = 0;
        if (TrigPrologue(a, ref status, out Float80 r, out _)) return r;
        if (a.IsZero) return a;
        if (a.BiasedExponent < ExponentBias - 40) return TinyIdentity(a, rc, ref status, up: true);
        ReducePi(a, out _, out double hi, out double lo);
        double t = Math.Tan(hi);
        t += (1 + t * t) * lo;
        return FromApprox(a.Sign ? -t : t, ref status);
    }

    /// <summary>sin(x) ~ x - x^3/6, tan(x) ~ x + x^3/3 for tiny x: x nudged by a sticky bit, then rounded per RC.</summary>
    private static Float80 TinyIdentity(Float80 a, X87Rounding rc, ref X87Status st, bool up = false)
    {
        Unpack(a, out int e, out ulong m);
        UInt128 sig = (UInt128)m << 64;
        if (up) sig += 1;
        else sig -= 1;
        int lz = Lzc(sig);
        return RoundPack(a.Sign, e - lz, sig << lz, rc, 64, ref st);
    }

    private static Float80 Pi(X87Rounding rc, bool neg, int expAdjust, ref X87Status st)
    {
        st |= X87Status.Precision;
        X87Rounding r = neg && rc == X87Rounding.Up ? X87Rounding.Down : neg && rc == X87Rounding.Down ? X87Rounding.Up : rc;
        Float80 p = LoadConstant(Constant.Pi, r);
        p = new Float80(p.Mantissa, (ushort)(p.SignExp + expAdjust));
        return neg ? Neg(p) : p;
    }

    /// <summary>FPATAN (approximate): atan(y / x) with quadrant from the signs (y = ST1, x = ST0).</summary>
    public static Float80 Atan2(Float80 y, Float80 x, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind ky = Classify(y), kx = Classify(x);
        if (PropagateNaN(x, kx, y, ky, ref status, out Float80 r)) return r;
        if (x.IsDenormal || y.IsDenormal) status |= X87Status.Denormal;
        bool yn = y.Sign, xn = x.Sign;
        if (ky == Kind.Zero)
        {
            if (!xn) return y;
            return Pi(rc, yn, 0, ref status);
        }
        if (ky == Kind.Inf)
        {
            if (kx == Kind.Inf)
            {
                if (!xn) return Pi(rc, yn, -2, ref status);
                status |= X87Status.Precision;
                return RoundPack(yn, 1, (ConstPi >> 1) + (ConstPi >> 2), rc, 64, ref status);
            }
            return Pi(rc, yn, -1, ref status);
        }
        if (kx == Kind.Zero) return Pi(rc, yn, -1, ref status);
        if (kx == Kind.Inf)
        {
            if (!xn) return MakeZero(yn);
            return Pi(rc, yn, 0, ref status);
        }
        Unpack(y, out int ey, out _);
        Unpack(x, out int ex, out _);
        if (ey - ex > 200) return Pi(rc, yn, -1, ref status);
        if (ex - ey > 200)
        {
            if (!xn)
            {
                Float80 q = Div(y, x, rc, out X87Status s2);
                status |= s2 | X87Status.Precision;
                return q;
            }
            return Pi(rc, yn, 0, ref status);
        }
        int shift = Math.Max(ex, ey);
        double yd = ToDouble(ScaleBy(y, -shift)), xd = ToDouble(ScaleBy(x, -shift));
        return FromApprox(Math.Atan2(yd, xd), ref status);
    }

    private static Float80 ScaleBy(Float80 a, int n)
    {
        Unpack(a, out int e, out ulong m);
        return PackExact(a.Sign, e + n, m);
    }

    /// <summary>log2 of a positive finite value, as a Float80 (approximate).</summary>
    private static Float80 Log2Approx(Float80 x)
    {
        Unpack(x, out int e, out ulong m);
        if (e == 0 || e == -1)
        {
            double t = ToDouble(Sub(x, One, X87Rounding.Nearest, out _));
            return FromDouble(Log1p(t) / Ln2);
        }
        double f = (double)m / 9223372036854775808.0;
        return FromDouble(e + Math.Log2(f));
    }

    private static double Log1p(double x)
    {
        double u = 1 + x;
        if (u == 1) return x;
        return Math.Log(u) * (x / (u - 1)); // (not Log(u) * x, which overflows for huge x)
    }

    /// <summary>FYL2X (approximate): y * log2(x) (x = ST0, y = ST1).</summary>
    public static Float80 Yl2x(Float80 x, Float80 y, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind kx = Classify(x), ky = Classify(y);
        if (PropagateNaN(x, kx, y, ky, ref status, out Float80 r)) return r;
        if (x.Sign && kx != Kind.Zero)
        {
            status |= X87Status.Invalid;
            return Indefinite;
        }
        if (kx == Kind.Zero)
        {
            if (ky == Kind.Zero)
            {
                status |= X87Status.Invalid;
                return Indefinite;
            }
            if (ky != Kind.Inf) status |= X87Status.ZeroDivide;
            return MakeInf(!y.Sign);
        }
        if (ky == Kind.Inf && x == One)
        {
            status |= X87Status.Invalid;
            return Indefinite;
        }
        if (kx == Kind.Inf && ky == Kind.Zero)
        {
            status |= X87Status.Invalid;
            return Indefinite;
        }
        if (x.IsDenormal || y.IsDenormal) status |= X87Status.Denormal;
        if (kx == Kind.Inf) return MakeInf(y.Sign);
        if (x == One) return MakeZero(y.Sign);
        Float80 l = Log2Approx(x);
        Float80 res = Mul(y, l, rc, out X87Status s2);
        status |= (s2 & ~X87Status.C1) | (ky == Kind.Zero || ky == Kind.Inf ? 0 : X87Status.Precision);
        return res;
    }

    /// <summary>a * b * 2^k with a single rounding (a, b finite non-zero).</summary>
    private static Float80 MulScaled(Float80 a, Float80 b, int k, X87Rounding rc, ref X87Status st)
    {
        Unpack(a, out int ea, out ulong ma);
        Unpack(b, out int eb, out ulong mb);
        UInt128 p = (UInt128)ma * mb;
        int lz = Lzc(p);
        return RoundPack(a.Sign ^ b.Sign, ea + eb + 1 - lz + k, p << lz, rc, 64, ref st);
    }

    /// <summary>
    /// FYL2XP1 (approximate): y * log2(x + 1) (x = ST0, y = ST1), for |x| &lt; 1 - sqrt(2)/2. Outside that
    /// domain the result is undefined; x &lt; -1 returns x unchanged (as the host does).
    /// </summary>
    public static Float80 Yl2xp1(Float80 x, Float80 y, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind kx = Classify(x), ky = Classify(y);
        if (PropagateNaN(x, kx, y, ky, ref status, out Float80 r)) return r;
        if ((kx == Kind.Zero && ky == Kind.Inf) || (kx == Kind.Inf && (x.Sign || ky == Kind.Zero)))
        {
            status |= X87Status.Invalid;
            return Indefinite;
        }
        if (x.IsDenormal || y.IsDenormal) status |= X87Status.Denormal;
        if (kx == Kind.Inf) return MakeInf(y.Sign);
        if (kx == Kind.Zero || ky == Kind.Zero) return MakeZero(x.Sign ^ y.Sign);
        if (ky == Kind.Inf) return MakeInf(x.Sign ^ y.Sign);
        Unpack(x, out int ex, out ulong mx);
        if (x.Sign && ex >= 0)
        {
            status |= X87Status.Precision;
            return x;
        }
        status |= X87Status.Precision;
        if (ex >= 0)
        {
            // x >= 1, outside the documented range (hardware still computes y * log2(1 + x)): no cancellation here
            Float80 lx = Log2Approx(Add(x, One, X87Rounding.Nearest, out _));
            return MulScaled(y, lx, 0, rc, ref status);
        }
        if (ex < -60)
        {
            // log2(1 + x) = x * log2(e) to full precision: scale x up to keep all its bits
            Float80 xs = new(mx, (ushort)((x.SignExp & SignBit) | ExponentBias));
            Float80 t = Mul(xs, LoadConstant(Constant.Log2E, X87Rounding.Nearest), X87Rounding.Nearest, out _);
            return MulScaled(y, t, ex, rc, ref status);
        }
        Split(x, out double hi, out double lo);
        Float80 l = FromDouble((Log1p(hi) + lo / (1 + hi)) / Ln2);
        return MulScaled(y, l, 0, rc, ref status);
    }

    /// <summary>F2XM1 (approximate): 2^x - 1 for -1 &lt;= x &lt;= 1.</summary>
    public static Float80 F2xm1(Float80 a, X87Rounding rc, out X87Status status)
    {
        status = 0;
        Kind ka = Classify(a);
        if (PropagateNaN(a, ka, ref status, out Float80 r)) return r;
        if (ka == Kind.Zero) return a;
        if (ka == Kind.Inf) return a.Sign ? Neg(One) : a;
        if (a.IsDenormal) status |= X87Status.Denormal;
        if (a.BiasedExponent >= ExponentBias && Abs(a) != One)
        {
            // outside [-1, 1]: the host (AMD) leaves the operand unchanged and reports #P
            status |= X87Status.Precision;
            return a;
        }
        if (a.BiasedExponent < ExponentBias - 60)
        {
            Float80 t = Mul(a, LoadConstant(Constant.LnTwo, X87Rounding.Nearest), rc, out X87Status s2);
            status |= (s2 & ~X87Status.C1) | X87Status.Precision;
            return t;
        }
        double d = ToDouble(a);
        double y = d * Ln2;
        double u = Math.Pow(2, d);
        double res = u == 1 ? y : (u - 1) * y / Math.Log(u);
        return FromApprox(res, ref status);
    }
}
