using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>SSE2 packed integer, logic, shift, unpack/pack and shuffle instructions (generated table + shuffles).</summary>
public static unsafe partial class Isa
{
    internal interface IVop { static abstract Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b); }

    /// <summary>op xmm, xmm/m128 (aligned).</summary>
    static void Pv<T>(VirtualCpu c, ref Instruction i) where T : struct, IVop
    {
        Vector128<ulong> b = Src128(c, ref i);
        ref Vector128<ulong> d = ref XR(c, i.Op0Register);
        d = T.Op(d, b);
    }

    /// <summary>shift xmm, imm8: the count goes through the xmm-count form (same saturation semantics).</summary>
    static void Pimm<T>(VirtualCpu c, ref Instruction i) where T : struct, IVop
    {
        ref Vector128<ulong> d = ref XR(c, i.Op0Register);
        d = T.Op(d, Vector128.CreateScalar((ulong)i.Immediate8));
    }

    static void RegisterSseInteger()
    {
        RegV<VPxor>(Code.Pxor_xmm_xmmm128);
        RegV<VPor>(Code.Por_xmm_xmmm128);
        RegV<VPand>(Code.Pand_xmm_xmmm128);
        RegV<VPandn>(Code.Pandn_xmm_xmmm128);
        RegV<VXorps>(Code.Xorps_xmm_xmmm128);
        RegV<VXorpd>(Code.Xorpd_xmm_xmmm128);
        RegV<VAndps>(Code.Andps_xmm_xmmm128);
        RegV<VAndpd>(Code.Andpd_xmm_xmmm128);
        RegV<VAndnps>(Code.Andnps_xmm_xmmm128);
        RegV<VAndnpd>(Code.Andnpd_xmm_xmmm128);
        RegV<VOrps>(Code.Orps_xmm_xmmm128);
        RegV<VOrpd>(Code.Orpd_xmm_xmmm128);
        RegV<VPaddb>(Code.Paddb_xmm_xmmm128);
        RegV<VPaddw>(Code.Paddw_xmm_xmmm128);
        RegV<VPaddd>(Code.Paddd_xmm_xmmm128);
        RegV<VPaddq>(Code.Paddq_xmm_xmmm128);
        RegV<VPsubb>(Code.Psubb_xmm_xmmm128);
        RegV<VPsubw>(Code.Psubw_xmm_xmmm128);
        RegV<VPsubd>(Code.Psubd_xmm_xmmm128);
        RegV<VPsubq>(Code.Psubq_xmm_xmmm128);
        RegV<VPaddsb>(Code.Paddsb_xmm_xmmm128);
        RegV<VPaddsw>(Code.Paddsw_xmm_xmmm128);
        RegV<VPaddusb>(Code.Paddusb_xmm_xmmm128);
        RegV<VPaddusw>(Code.Paddusw_xmm_xmmm128);
        RegV<VPsubsb>(Code.Psubsb_xmm_xmmm128);
        RegV<VPsubsw>(Code.Psubsw_xmm_xmmm128);
        RegV<VPsubusb>(Code.Psubusb_xmm_xmmm128);
        RegV<VPsubusw>(Code.Psubusw_xmm_xmmm128);
        RegV<VPmullw>(Code.Pmullw_xmm_xmmm128);
        RegV<VPmulhw>(Code.Pmulhw_xmm_xmmm128);
        RegV<VPmulhuw>(Code.Pmulhuw_xmm_xmmm128);
        RegV<VPmuludq>(Code.Pmuludq_xmm_xmmm128);
        RegV<VPmaddwd>(Code.Pmaddwd_xmm_xmmm128);
        RegV<VPcmpeqb>(Code.Pcmpeqb_xmm_xmmm128);
        RegV<VPcmpeqw>(Code.Pcmpeqw_xmm_xmmm128);
        RegV<VPcmpeqd>(Code.Pcmpeqd_xmm_xmmm128);
        RegV<VPcmpgtb>(Code.Pcmpgtb_xmm_xmmm128);
        RegV<VPcmpgtw>(Code.Pcmpgtw_xmm_xmmm128);
        RegV<VPcmpgtd>(Code.Pcmpgtd_xmm_xmmm128);
        RegV<VPminub>(Code.Pminub_xmm_xmmm128);
        RegV<VPmaxub>(Code.Pmaxub_xmm_xmmm128);
        RegV<VPminsw>(Code.Pminsw_xmm_xmmm128);
        RegV<VPmaxsw>(Code.Pmaxsw_xmm_xmmm128);
        RegV<VPavgb>(Code.Pavgb_xmm_xmmm128);
        RegV<VPavgw>(Code.Pavgw_xmm_xmmm128);
        RegV<VPsadbw>(Code.Psadbw_xmm_xmmm128);
        RegV<VPsllw>(Code.Psllw_xmm_xmmm128);
        RegV<VPslld>(Code.Pslld_xmm_xmmm128);
        RegV<VPsllq>(Code.Psllq_xmm_xmmm128);
        RegV<VPsrlw>(Code.Psrlw_xmm_xmmm128);
        RegV<VPsrld>(Code.Psrld_xmm_xmmm128);
        RegV<VPsrlq>(Code.Psrlq_xmm_xmmm128);
        RegV<VPsraw>(Code.Psraw_xmm_xmmm128);
        RegV<VPsrad>(Code.Psrad_xmm_xmmm128);
        RegV<VPunpcklbw>(Code.Punpcklbw_xmm_xmmm128);
        RegV<VPunpcklwd>(Code.Punpcklwd_xmm_xmmm128);
        RegV<VPunpckldq>(Code.Punpckldq_xmm_xmmm128);
        RegV<VPunpcklqdq>(Code.Punpcklqdq_xmm_xmmm128);
        RegV<VPunpckhbw>(Code.Punpckhbw_xmm_xmmm128);
        RegV<VPunpckhwd>(Code.Punpckhwd_xmm_xmmm128);
        RegV<VPunpckhdq>(Code.Punpckhdq_xmm_xmmm128);
        RegV<VPunpckhqdq>(Code.Punpckhqdq_xmm_xmmm128);
        RegV<VUnpcklps>(Code.Unpcklps_xmm_xmmm128);
        RegV<VUnpckhps>(Code.Unpckhps_xmm_xmmm128);
        RegV<VUnpcklpd>(Code.Unpcklpd_xmm_xmmm128);
        RegV<VUnpckhpd>(Code.Unpckhpd_xmm_xmmm128);
        RegV<VPacksswb>(Code.Packsswb_xmm_xmmm128);
        RegV<VPackuswb>(Code.Packuswb_xmm_xmmm128);
        RegV<VPackssdw>(Code.Packssdw_xmm_xmmm128);
        RegVi<IPsllw>(Code.Psllw_xmm_imm8);
        RegVi<IPslld>(Code.Pslld_xmm_imm8);
        RegVi<IPsllq>(Code.Psllq_xmm_imm8);
        RegVi<IPsrlw>(Code.Psrlw_xmm_imm8);
        RegVi<IPsrld>(Code.Psrld_xmm_imm8);
        RegVi<IPsrlq>(Code.Psrlq_xmm_imm8);
        RegVi<IPsraw>(Code.Psraw_xmm_imm8);
        RegVi<IPsrad>(Code.Psrad_xmm_imm8);
        Reg(Code.Pslldq_xmm_imm8, &Pslldq);
        Reg(Code.Psrldq_xmm_imm8, &Psrldq);
        Reg(Code.Pshufd_xmm_xmmm128_imm8, &Pshufd);
        Reg(Code.Pshuflw_xmm_xmmm128_imm8, &Pshuflw);
        Reg(Code.Pshufhw_xmm_xmmm128_imm8, &Pshufhw);
        Reg(Code.Shufps_xmm_xmmm128_imm8, &Shufps);
        Reg(Code.Shufpd_xmm_xmmm128_imm8, &Shufpd);
    }

    struct VPxor : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Xor(a, b); }
    struct VPor : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Or(a, b); }
    struct VPand : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.And(a, b); }
    struct VPandn : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AndNot(a, b); }
    struct VXorps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Xor(a, b); }
    struct VXorpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Xor(a, b); }
    struct VAndps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.And(a, b); }
    struct VAndpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.And(a, b); }
    struct VAndnps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AndNot(a, b); }
    struct VAndnpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AndNot(a, b); }
    struct VOrps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Or(a, b); }
    struct VOrpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Or(a, b); }
    struct VPaddb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Add(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPaddw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Add(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPaddd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Add(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VPaddq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Add(a, b); }
    struct VPsubb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Subtract(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPsubw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Subtract(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPsubd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Subtract(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VPsubq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Subtract(a, b); }
    struct VPaddsb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AddSaturate(a.AsSByte(), b.AsSByte()).AsUInt64(); }
    struct VPaddsw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AddSaturate(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPaddusb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AddSaturate(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPaddusw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.AddSaturate(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPsubsb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.SubtractSaturate(a.AsSByte(), b.AsSByte()).AsUInt64(); }
    struct VPsubsw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.SubtractSaturate(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPsubusb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.SubtractSaturate(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPsubusw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.SubtractSaturate(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPmullw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.MultiplyLow(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPmulhw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.MultiplyHigh(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPmulhuw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.MultiplyHigh(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPmuludq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Multiply(a.AsUInt32(), b.AsUInt32()); }
    struct VPmaddwd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.MultiplyAddAdjacent(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPcmpeqb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareEqual(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPcmpeqw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareEqual(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPcmpeqd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareEqual(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VPcmpgtb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareGreaterThan(a.AsSByte(), b.AsSByte()).AsUInt64(); }
    struct VPcmpgtw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareGreaterThan(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPcmpgtd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.CompareGreaterThan(a.AsInt32(), b.AsInt32()).AsUInt64(); }
    struct VPminub : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Min(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPmaxub : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Max(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPminsw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Min(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPmaxsw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Max(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPavgb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Average(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPavgw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.Average(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPsadbw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.SumAbsoluteDifferences(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPsllw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftLeftLogical(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPslld : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftLeftLogical(a.AsInt32(), b.AsInt32()).AsUInt64(); }
    struct VPsllq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftLeftLogical(a.AsInt64(), b.AsInt64()).AsUInt64(); }
    struct VPsrlw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftRightLogical(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPsrld : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftRightLogical(a.AsInt32(), b.AsInt32()).AsUInt64(); }
    struct VPsrlq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftRightLogical(a.AsInt64(), b.AsInt64()).AsUInt64(); }
    struct VPsraw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftRightArithmetic(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPsrad : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.ShiftRightArithmetic(a.AsInt32(), b.AsInt32()).AsUInt64(); }
    struct VPunpcklbw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPunpcklwd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPunpckldq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VPunpcklqdq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a, b); }
    struct VPunpckhbw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a.AsByte(), b.AsByte()).AsUInt64(); }
    struct VPunpckhwd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a.AsUInt16(), b.AsUInt16()).AsUInt64(); }
    struct VPunpckhdq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VPunpckhqdq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a, b); }
    struct VUnpcklps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VUnpckhps : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a.AsUInt32(), b.AsUInt32()).AsUInt64(); }
    struct VUnpcklpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackLow(a, b); }
    struct VUnpckhpd : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.UnpackHigh(a, b); }
    struct VPacksswb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.PackSignedSaturate(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPackuswb : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.PackUnsignedSaturate(a.AsInt16(), b.AsInt16()).AsUInt64(); }
    struct VPackssdw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> b) => Sse2.PackSignedSaturate(a.AsInt32(), b.AsInt32()).AsUInt64(); }
    struct IPsllw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftLeftLogical(a.AsInt16(), n.AsInt16()).AsUInt64(); }
    struct IPslld : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftLeftLogical(a.AsInt32(), n.AsInt32()).AsUInt64(); }
    struct IPsllq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftLeftLogical(a.AsInt64(), n.AsInt64()).AsUInt64(); }
    struct IPsrlw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftRightLogical(a.AsInt16(), n.AsInt16()).AsUInt64(); }
    struct IPsrld : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftRightLogical(a.AsInt32(), n.AsInt32()).AsUInt64(); }
    struct IPsrlq : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftRightLogical(a.AsInt64(), n.AsInt64()).AsUInt64(); }
    struct IPsraw : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftRightArithmetic(a.AsInt16(), n.AsInt16()).AsUInt64(); }
    struct IPsrad : IVop { public static Vector128<ulong> Op(Vector128<ulong> a, Vector128<ulong> n) => Sse2.ShiftRightArithmetic(a.AsInt32(), n.AsInt32()).AsUInt64(); }

    // byte shifts of the register as two words, not through UInt128: code that handles UInt128 has no ReadyToRun code
    static void Pslldq(VirtualCpu c, ref Instruction i)
    {
        ref ulong lo = ref XLo(c, i.Op0Register);
        ref ulong hi = ref XHi(c, i.Op0Register);
        int n = i.Immediate8;
        if (n > 15) { lo = hi = 0; return; }
        if (n >= 8) { hi = lo << ((n - 8) * 8); lo = 0; return; }
        if (n == 0) return;
        hi = (hi << (n * 8)) | (lo >> (64 - n * 8));
        lo <<= n * 8;
    }

    static void Psrldq(VirtualCpu c, ref Instruction i)
    {
        ref ulong lo = ref XLo(c, i.Op0Register);
        ref ulong hi = ref XHi(c, i.Op0Register);
        int n = i.Immediate8;
        if (n > 15) { lo = hi = 0; return; }
        if (n >= 8) { lo = hi >> ((n - 8) * 8); hi = 0; return; }
        if (n == 0) return;
        lo = (lo >> (n * 8)) | (hi << (64 - n * 8));
        hi >>= n * 8;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Dw(Vector128<ulong> v, int k) => v.AsUInt32().GetElement(k & 3);

    static void Pshufd(VirtualCpu c, ref Instruction i)
    {
        XR(c, i.Op0Register) = PshufdOf(Src128(c, ref i), i.Immediate8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Shuf4w(ulong q, int m)
        => (ushort)(q >> ((m & 3) * 16)) | (ulong)(ushort)(q >> (((m >> 2) & 3) * 16)) << 16
         | (ulong)(ushort)(q >> (((m >> 4) & 3) * 16)) << 32 | (ulong)(ushort)(q >> (((m >> 6) & 3) * 16)) << 48;

    static void Pshuflw(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> s = Src128(c, ref i);
        XR(c, i.Op0Register) = Vector128.Create(Shuf4w(s.GetElement(0), i.Immediate8), s.GetElement(1));
    }

    static void Pshufhw(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> s = Src128(c, ref i);
        XR(c, i.Op0Register) = Vector128.Create(s.GetElement(0), Shuf4w(s.GetElement(1), i.Immediate8));
    }

    static void Shufps(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> s = Src128(c, ref i);
        ref Vector128<ulong> d = ref XR(c, i.Op0Register);
        int m = i.Immediate8;
        d = Vector128.Create(Dw(d, m), Dw(d, m >> 2), Dw(s, m >> 4), Dw(s, m >> 6)).AsUInt64();
    }

    static void Shufpd(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> s = Src128(c, ref i);
        ref Vector128<ulong> d = ref XR(c, i.Op0Register);
        int m = i.Immediate8;
        d = Vector128.Create(d.GetElement(m & 1), s.GetElement((m >> 1) & 1));
    }
}
