using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// SSE/SSE2 floating point: arithmetic, min/max, sqrt, compares, conversions, MXCSR and FXSAVE/FXRSTOR.
/// <para>
/// Exactness model. Every floating-point form has a generic handler, <see cref="FpNative"/>, that runs the same
/// instruction on the host under the guest's MXCSR (see <see cref="SseNative"/>): results, NaN propagation,
/// rounding control, DAZ/FTZ and all six MXCSR exception flags are the hardware's, and an exception unmasked by
/// the guest raises SIGFPE. The hot forms first try a managed fast path computed with the host's SSE under the
/// .NET default MXCSR (round to nearest, masked, no DAZ/FTZ); it is taken only when the guest MXCSR has the same
/// control bits and the operation provably raises no flag that is not already set: the operands and result are
/// normal (finite, non-zero, non-denormal; zero operands allowed where harmless) and, for operations that can
/// be inexact, the sticky precision flag is already set. Otherwise the native path computes it.
/// </para>
/// <para>Consequences: MXCSR rounding control, DAZ and FTZ are honoured by every form; all six exception flags
/// are set exactly as hardware sets them; unmasked exceptions raise SIGFPE (FPE_FLTINV/DIV/OVF/UND/RES) with the
/// destination unchanged. RCPPS/RCPSS/RSQRTPS/RSQRTSS are approximations whose bits differ between CPU vendors:
/// they return the host's, so record and replay must run on hosts of the same vendor if a guest uses them.
/// MXCSR_MASK is 0xFFFF (an SSE2 CPU with DAZ): LDMXCSR/FXRSTOR with bits 16-31 set raise #GP (SIGSEGV).</para>
/// </summary>
public static unsafe partial class Isa
{
    const uint MxcsrCtlDefault = 0x1F80;   // RC nearest, all masked, no DAZ/FTZ
    const uint PeFlag = 0x20;

    static void RegisterSseFloat()
    {
        RegArith<FAdd>(Code.Addss_xmm_xmmm32, Code.Addsd_xmm_xmmm64, Code.Addps_xmm_xmmm128, Code.Addpd_xmm_xmmm128);
        RegArith<FSub>(Code.Subss_xmm_xmmm32, Code.Subsd_xmm_xmmm64, Code.Subps_xmm_xmmm128, Code.Subpd_xmm_xmmm128);
        RegArith<FMul>(Code.Mulss_xmm_xmmm32, Code.Mulsd_xmm_xmmm64, Code.Mulps_xmm_xmmm128, Code.Mulpd_xmm_xmmm128);
        RegArith<FDiv>(Code.Divss_xmm_xmmm32, Code.Divsd_xmm_xmmm64, Code.Divps_xmm_xmmm128, Code.Divpd_xmm_xmmm128);
        RegArith<FMin>(Code.Minss_xmm_xmmm32, Code.Minsd_xmm_xmmm64, Code.Minps_xmm_xmmm128, Code.Minpd_xmm_xmmm128);
        RegArith<FMax>(Code.Maxss_xmm_xmmm32, Code.Maxsd_xmm_xmmm64, Code.Maxps_xmm_xmmm128, Code.Maxpd_xmm_xmmm128);
        RegF(Code.Sqrtsd_xmm_xmmm64, &Sqrtsd);
        RegF(Code.Sqrtss_xmm_xmmm32, &Sqrtss);
        RegF(Code.Sqrtps_xmm_xmmm128, &FpNative);
        RegF(Code.Sqrtpd_xmm_xmmm128, &FpNative);
        RegF(Code.Rcpps_xmm_xmmm128, &FpNative);
        RegF(Code.Rcpss_xmm_xmmm32, &FpNative);
        RegF(Code.Rsqrtps_xmm_xmmm128, &FpNative);
        RegF(Code.Rsqrtss_xmm_xmmm32, &FpNative);

        RegF(Code.Comisd_xmm_xmmm64, &Comisd);
        RegF(Code.Ucomisd_xmm_xmmm64, &Comisd);
        RegF(Code.Comiss_xmm_xmmm32, &Comiss);
        RegF(Code.Ucomiss_xmm_xmmm32, &Comiss);
        RegF(Code.Cmpps_xmm_xmmm128_imm8, &FpNative);
        RegF(Code.Cmppd_xmm_xmmm128_imm8, &FpNative);
        RegF(Code.Cmpss_xmm_xmmm32_imm8, &FpNative);
        RegF(Code.Cmpsd_xmm_xmmm64_imm8, &FpNative);

        RegF(Code.Cvtsi2sd_xmm_rm32, &Cvtsi2sd);
        RegF(Code.Cvtsi2sd_xmm_rm64, &Cvtsi2sd);
        RegF(Code.Cvtsi2ss_xmm_rm32, &Cvtsi2ss);
        RegF(Code.Cvtsi2ss_xmm_rm64, &Cvtsi2ss);
        RegF(Code.Cvtss2sd_xmm_xmmm32, &Cvtss2sd);
        RegF(Code.Cvtsd2ss_xmm_xmmm64, &Cvtsd2ss);
        RegF(Code.Cvttsd2si_r32_xmmm64, &Cvttsd2si);
        RegF(Code.Cvttsd2si_r64_xmmm64, &Cvttsd2si);
        RegF(Code.Cvttss2si_r32_xmmm32, &Cvttss2si);
        RegF(Code.Cvttss2si_r64_xmmm32, &Cvttss2si);
        RegF(Code.Cvtsd2si_r32_xmmm64, &FpNative);
        RegF(Code.Cvtsd2si_r64_xmmm64, &FpNative);
        RegF(Code.Cvtss2si_r32_xmmm32, &FpNative);
        RegF(Code.Cvtss2si_r64_xmmm32, &FpNative);
        RegF(Code.Cvtdq2pd_xmm_xmmm64, &Cvtdq2pd);
        RegF(Code.Cvtdq2ps_xmm_xmmm128, &FpNative);
        RegF(Code.Cvtps2dq_xmm_xmmm128, &FpNative);
        RegF(Code.Cvttps2dq_xmm_xmmm128, &FpNative);
        RegF(Code.Cvtpd2dq_xmm_xmmm128, &FpNative);
        RegF(Code.Cvttpd2dq_xmm_xmmm128, &FpNative);
        RegF(Code.Cvtps2pd_xmm_xmmm64, &FpNative);
        RegF(Code.Cvtpd2ps_xmm_xmmm128, &FpNative);

        Reg(Code.Ldmxcsr_m32, &Ldmxcsr);
        Reg(Code.Stmxcsr_m32, &Stmxcsr);
        Reg(Code.Fxsave_m512byte, &Fxsave);
        Reg(Code.Fxsave64_m512byte, &Fxsave);
        Reg(Code.Fxrstor_m512byte, &Fxrstor);
        Reg(Code.Fxrstor64_m512byte, &Fxrstor);
    }

    static readonly bool[] FpWritesFlags = new bool[IcedCounts.Code];

    static void RegF(Code code, delegate*<VirtualCpu, ref Instruction, void> h)
    {
        Reg(code, h);
        FpWritesFlags[(int)code] = code is Code.Comisd_xmm_xmmm64 or Code.Ucomisd_xmm_xmmm64 or Code.Comiss_xmm_xmmm32 or Code.Ucomiss_xmm_xmmm32;
    }

    // ---------------------------------------------------------------- the exact (native) path

    /// <summary>Any registered floating-point form, executed by the host under the guest MXCSR.</summary>
    static void FpNative(VirtualCpu c, ref Instruction i)
    {
        byte* s = stackalloc byte[SseNative.ScratchSize];
        Code code = i.Code;
        if (!SseNative.IsDescribed(code)) SseNative.Describe(ref i);
        bool g0 = SseNative.Op0IsGpr(code), g1 = SseNative.Op1IsGpr(code);
        if (!g0) *(Vector128<ulong>*)(s + SseNative.OffDst) = XR(c, i.Op0Register);
        if (i.Op1Kind == OpKind.Register)
        {
            if (g1) *(ulong*)(s + SseNative.OffGpr) = c.GetReg(i.Op1Register);
            else *(Vector128<ulong>*)(s + SseNative.OffSrc) = XR(c, i.Op1Register);
        }
        else
        {
            ulong ea = c.Ea(ref i);
            int n = VirtualCpu.MemBytes[(int)i.MemorySize];
            Vector128<ulong> v;
            if (n == 16)
            {
                if ((ea & 15) != 0) throw AlignFault(ea, ref i);
                v = Load128(c, ea);
            }
            else v = Vector128.CreateScalar(n == 8 ? c.Mem.Read64(ea) : c.Mem.Read32(ea));
            if (g1) *(ulong*)(s + SseNative.OffGpr) = v.GetElement(0);
            else *(Vector128<ulong>*)(s + SseNative.OffSrc) = v;
        }
        SseNative.Run(c, ref i, s, i.OpCount > 2 ? i.Immediate8 : 0);
        if (g0) c.SetReg(i.Op0Register, *(ulong*)(s + SseNative.OffGpr));
        else if (FpWritesFlags[(int)code])
            c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | (*(ulong*)(s + SseNative.OffFlags) & VirtualCpu.ArithFlags);
        else XR(c, i.Op0Register) = *(Vector128<ulong>*)(s + SseNative.OffDst);
    }

    // ---------------------------------------------------------------- classification

    /// <summary>Finite, non-zero, not denormal.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormD(ulong x) => ((x >> 52) & 0x7FF) - 1 < 0x7FE;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormF(uint x) => ((x >> 23) & 0xFF) - 1 < 0xFE;
    /// <summary>Finite and not denormal (zero allowed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormOrZeroD(ulong x) => NormD(x) || (x << 1) == 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormOrZeroF(uint x) => NormF(x) || (x << 1) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormOrZeroPd(Vector128<ulong> v) => NormOrZeroD(v.GetElement(0)) && NormOrZeroD(v.GetElement(1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool NormOrZeroPs(Vector128<ulong> v)
    {
        // exponent field e: allowed when 0 < e < 255, or when the lane is +-0
        Vector128<uint> u = v.AsUInt32();
        Vector128<uint> e = (u >> 23) & Vector128.Create(0xFFu);
        Vector128<uint> ok = Vector128.LessThan(e - Vector128<uint>.One, Vector128.Create(0xFEu)) | Vector128.Equals(u << 1, Vector128<uint>.Zero);
        return ok.AsUInt64() == Vector128<ulong>.AllBitsSet;
    }

    /// <summary>May an operation that can be inexact take the managed path? (default control, PE already set)</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool ArithFast(VirtualCpu c) => (c.Mxcsr & 0xFFE0) == (MxcsrCtlDefault | PeFlag);
    /// <summary>May an exact operation (min/max) take the managed path?</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool CtlDefault(VirtualCpu c) => (c.Mxcsr & 0xFFC0) == MxcsrCtlDefault;

    // ---------------------------------------------------------------- arithmetic

    internal interface IFArith
    {
        /// <summary>True when the operation can never be inexact/overflow/underflow (min, max).</summary>
        static abstract bool Exact { get; }
        static abstract float S(float a, float b);
        static abstract double D(double a, double b);
        static abstract Vector128<float> PS(Vector128<float> a, Vector128<float> b);
        static abstract Vector128<double> PD(Vector128<double> a, Vector128<double> b);
    }

    struct FAdd : IFArith
    {
        public static bool Exact => false;
        public static float S(float a, float b) => a + b;
        public static double D(double a, double b) => a + b;
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Add(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Add(a, b);
    }
    struct FSub : IFArith
    {
        public static bool Exact => false;
        public static float S(float a, float b) => a - b;
        public static double D(double a, double b) => a - b;
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Subtract(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Subtract(a, b);
    }
    struct FMul : IFArith
    {
        public static bool Exact => false;
        public static float S(float a, float b) => a * b;
        public static double D(double a, double b) => a * b;
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Multiply(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Multiply(a, b);
    }
    struct FDiv : IFArith
    {
        public static bool Exact => false;
        public static float S(float a, float b) => a / b;
        public static double D(double a, double b) => a / b;
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Divide(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Divide(a, b);
    }
    struct FMin : IFArith
    {
        public static bool Exact => true;
        public static float S(float a, float b) => Sse.MinScalar(Vector128.CreateScalarUnsafe(a), Vector128.CreateScalarUnsafe(b)).ToScalar();
        public static double D(double a, double b) => Sse2.MinScalar(Vector128.CreateScalarUnsafe(a), Vector128.CreateScalarUnsafe(b)).ToScalar();
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Min(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Min(a, b);
    }
    struct FMax : IFArith
    {
        public static bool Exact => true;
        public static float S(float a, float b) => Sse.MaxScalar(Vector128.CreateScalarUnsafe(a), Vector128.CreateScalarUnsafe(b)).ToScalar();
        public static double D(double a, double b) => Sse2.MaxScalar(Vector128.CreateScalarUnsafe(a), Vector128.CreateScalarUnsafe(b)).ToScalar();
        public static Vector128<float> PS(Vector128<float> a, Vector128<float> b) => Sse.Max(a, b);
        public static Vector128<double> PD(Vector128<double> a, Vector128<double> b) => Sse2.Max(a, b);
    }

    // the fast paths (ArithSdFast and its kin, Isa.SseCompiled.cs) are the compiled tier's too
    static void ArithSd<T>(VirtualCpu c, ref Instruction i) where T : struct, IFArith
    {
        if (!ArithSdFast<T>(c, XmmIndex(i.Op0Register), Src64(c, ref i))) FpNative(c, ref i);
    }

    static void ArithSs<T>(VirtualCpu c, ref Instruction i) where T : struct, IFArith
    {
        if (!ArithSsFast<T>(c, XmmIndex(i.Op0Register), Src32(c, ref i))) FpNative(c, ref i);
    }

    static void ArithPd<T>(VirtualCpu c, ref Instruction i) where T : struct, IFArith
    {
        if (!ArithPdFast<T>(c, XmmIndex(i.Op0Register), Src128(c, ref i))) FpNative(c, ref i);
    }

    static void ArithPs<T>(VirtualCpu c, ref Instruction i) where T : struct, IFArith
    {
        if (!ArithPsFast<T>(c, XmmIndex(i.Op0Register), Src128(c, ref i))) FpNative(c, ref i);
    }

    static void Sqrtsd(VirtualCpu c, ref Instruction i)
    {
        ulong a = Src64(c, ref i);
        if (ArithFast(c) && NormD(a) && (long)a > 0)
        { XLo(c, i.Op0Register) = BitConverter.DoubleToUInt64Bits(Math.Sqrt(BitConverter.UInt64BitsToDouble(a))); return; }
        FpNative(c, ref i);
    }

    static void Sqrtss(VirtualCpu c, ref Instruction i)
    {
        uint a = Src32(c, ref i);
        if (ArithFast(c) && NormF(a) && (int)a > 0)
        {
            ref ulong d = ref XLo(c, i.Op0Register);
            d = (d & 0xFFFF_FFFF_0000_0000UL) | BitConverter.SingleToUInt32Bits(MathF.Sqrt(BitConverter.UInt32BitsToSingle(a)));
            return;
        }
        FpNative(c, ref i);
    }

    // ---------------------------------------------------------------- compares

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetCompareFlags(VirtualCpu c, bool less, bool equal)
        => c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | (less ? VirtualCpu.CF : 0) | (equal ? VirtualCpu.ZF : 0);

    /// <summary>COMISD/UCOMISD: the managed path when neither operand is NaN or denormal (no flag possible).</summary>
    static void Comisd(VirtualCpu c, ref Instruction i)
    {
        ulong b = Src64(c, ref i), a = XLo(c, i.Op0Register);
        if ((c.Mxcsr & 0x40) == 0 && NormOrZeroD(a) && NormOrZeroD(b))
        {
            double x = BitConverter.UInt64BitsToDouble(a), y = BitConverter.UInt64BitsToDouble(b);
            SetCompareFlags(c, x < y, x == y);
            return;
        }
        FpNative(c, ref i);
    }

    static void Comiss(VirtualCpu c, ref Instruction i)
    {
        uint b = Src32(c, ref i), a = (uint)XLo(c, i.Op0Register);
        if ((c.Mxcsr & 0x40) == 0 && NormOrZeroF(a) && NormOrZeroF(b))
        {
            float x = BitConverter.UInt32BitsToSingle(a), y = BitConverter.UInt32BitsToSingle(b);
            SetCompareFlags(c, x < y, x == y);
            return;
        }
        FpNative(c, ref i);
    }

    // ---------------------------------------------------------------- conversions

    static long IntSrc(VirtualCpu c, ref Instruction i, bool wide)
    {
        if (i.Op1Kind == OpKind.Register) return wide ? (long)c.GetReg(i.Op1Register) : (int)c.GetReg(i.Op1Register);
        ulong ea = c.Ea(ref i);
        return wide ? (long)c.Mem.Read64(ea) : (int)c.Mem.Read32(ea);
    }

    static void Cvtsi2sd(VirtualCpu c, ref Instruction i)
    {
        long v = IntSrc(c, ref i, i.Code == Code.Cvtsi2sd_xmm_rm64);
        if (v >= -(1L << 53) && v <= 1L << 53) { XLo(c, i.Op0Register) = BitConverter.DoubleToUInt64Bits(v); return; } // exact: no flag, any RC
        FpNative(c, ref i);
    }

    static void Cvtsi2ss(VirtualCpu c, ref Instruction i)
    {
        long v = IntSrc(c, ref i, i.Code == Code.Cvtsi2ss_xmm_rm64);
        if (v >= -(1L << 24) && v <= 1L << 24)
        {
            ref ulong d = ref XLo(c, i.Op0Register);
            d = (d & 0xFFFF_FFFF_0000_0000UL) | BitConverter.SingleToUInt32Bits(v);
            return;
        }
        FpNative(c, ref i);
    }

    static void Cvtss2sd(VirtualCpu c, ref Instruction i)
    {
        uint a = Src32(c, ref i);
        if (NormOrZeroF(a)) { XLo(c, i.Op0Register) = BitConverter.DoubleToUInt64Bits(BitConverter.UInt32BitsToSingle(a)); return; }
        FpNative(c, ref i);
    }

    static void Cvtsd2ss(VirtualCpu c, ref Instruction i)
    {
        ulong a = Src64(c, ref i);
        if (ArithFast(c) && NormOrZeroD(a))
        {
            uint r = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt64BitsToDouble(a));
            if (NormF(r) || (a << 1) == 0)
            {
                ref ulong d = ref XLo(c, i.Op0Register);
                d = (d & 0xFFFF_FFFF_0000_0000UL) | r;
                return;
            }
        }
        FpNative(c, ref i);
    }

    /// <summary>Truncation ignores RC; the managed path covers in-range, non-denormal inputs that are exact or
    /// whose inexactness is already recorded (and masked).</summary>
    static void Cvttsd2si(VirtualCpu c, ref Instruction i)
    {
        ulong a = Src64(c, ref i);
        double x = BitConverter.UInt64BitsToDouble(a);
        bool wide = i.Code == Code.Cvttsd2si_r64_xmmm64;
        if (NormOrZeroD(a) && Math.Abs(x) < (wide ? 9223372036854775808.0 : 2147483648.0)
            && ((c.Mxcsr & 0x1020) == 0x1020 || x == Math.Truncate(x)))
        {
            c.SetReg(i.Op0Register, wide ? (ulong)(long)x : (uint)(int)x);
            return;
        }
        FpNative(c, ref i);
    }

    static void Cvttss2si(VirtualCpu c, ref Instruction i)
    {
        uint a = Src32(c, ref i);
        float x = BitConverter.UInt32BitsToSingle(a);
        bool wide = i.Code == Code.Cvttss2si_r64_xmmm32;
        if (NormOrZeroF(a) && Math.Abs(x) < (wide ? 9223372036854775808.0f : 2147483648.0f)
            && ((c.Mxcsr & 0x1020) == 0x1020 || x == MathF.Truncate(x)))
        {
            c.SetReg(i.Op0Register, wide ? (ulong)(long)x : (uint)(int)x);
            return;
        }
        FpNative(c, ref i);
    }

    /// <summary>CVTDQ2PD is always exact and raises nothing.</summary>
    static void Cvtdq2pd(VirtualCpu c, ref Instruction i) => XR(c, i.Op0Register) = Cvtdq2pdOf(Src64(c, ref i));

    // ---------------------------------------------------------------- MXCSR, FXSAVE

    static void Ldmxcsr(VirtualCpu c, ref Instruction i)
    {
        uint v = c.Mem.Read32(c.Ea(ref i));
        if ((v & 0xFFFF_0000u) != 0)
            throw new GuestSignalException(11, $"general protection: ldmxcsr reserved bits 0x{v:x} at 0x{i.IP:x}", 0x80, 0);
        c.Mxcsr = v;
    }

    static void Stmxcsr(VirtualCpu c, ref Instruction i) => c.Mem.Write32(c.Ea(ref i), c.Mxcsr);

    /// <summary>FXSAVE: 512-byte image, 16-byte aligned. x87 part from <see cref="VirtualCpu.SaveX87"/>; MXCSR at 24,
    /// MXCSR_MASK (0xFFFF: DAZ supported) at 28, XMM0-15 at 160. Bytes 416-511 are left untouched, as hardware does.</summary>
    static void Fxsave(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        if ((ea & 15) != 0) throw AlignFault(ea, ref i);
        var img = new byte[416];
        var full = new byte[512];
        c.SaveX87(full);
        Array.Copy(full, img, 160);
        BitConverter.TryWriteBytes(img.AsSpan(24), c.Mxcsr);
        BitConverter.TryWriteBytes(img.AsSpan(28), 0xFFFFu);
        for (int k = 0; k < 32; k++) BitConverter.TryWriteBytes(img.AsSpan(160 + k * 8), c.Xmm[k]);
        c.Mem.WriteBytes(ea, img);
    }

    static void Fxrstor(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        if ((ea & 15) != 0) throw AlignFault(ea, ref i);
        var img = new byte[512];
        c.Mem.ReadBytes(ea, img);
        uint mx = BitConverter.ToUInt32(img, 24);
        if ((mx & 0xFFFF_0000u) != 0)
            throw new GuestSignalException(11, $"general protection: fxrstor MXCSR reserved bits 0x{mx:x} at 0x{i.IP:x}", 0x80, 0);
        c.RestoreX87(img);
        c.Mxcsr = mx;
        for (int k = 0; k < 32; k++) c.Xmm[k] = BitConverter.ToUInt64(img, 160 + k * 8);
    }
}
