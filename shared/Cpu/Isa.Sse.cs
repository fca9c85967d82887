using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// SSE and SSE2 (legacy encodings only; no MMX forms, no VEX/EVEX: those stay SIGILL as the CPU model
/// advertises neither). Everything is registered by <see cref="Code"/> so that the MMX and VEX forms sharing a
/// mnemonic are not caught. Integer, logic, shuffle and move instructions are computed with the host's SSE2
/// (x86-64 baseline, so always present and bit-exact); floating point lives in Isa.SseFloat.cs.
/// <para>Legacy SSE 128-bit memory operands must be 16-byte aligned except for the explicit unaligned moves;
/// a misaligned one raises #GP, delivered as SIGSEGV with si_code SI_KERNEL, as Linux does.</para>
/// </summary>
public static unsafe partial class Isa
{
    static partial void RegisterSse()
    {
        RegisterSseMoves();
        RegisterCompiledMoves();
        RegisterSseInteger();
        RegisterSseFloat();
    }

    // ---------------------------------------------------------------- operand helpers

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ref Vector128<ulong> XR(VirtualCpu c, Register r)
        => ref Unsafe.As<ulong, Vector128<ulong>>(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(c.Xmm), ((int)r - (int)Register.XMM0) * 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ref ulong XLo(VirtualCpu c, Register r)
        => ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(c.Xmm), ((int)r - (int)Register.XMM0) * 2);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ref ulong XHi(VirtualCpu c, Register r)
        => ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(c.Xmm), ((int)r - (int)Register.XMM0) * 2 + 1);

    static GuestSignalException AlignFault(ulong ea, ref Instruction i)
        => new(11, $"general protection: misaligned 16-byte SSE operand 0x{ea:x} at 0x{i.IP:x}", 0x80 /* SI_KERNEL */, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<ulong> Load128(VirtualCpu c, ulong ea) => c.Mem.Read128(ea);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store128(VirtualCpu c, ulong ea, Vector128<ulong> v) => c.Mem.Write128(ea, v);

    /// <summary>Operand 1 as xmm/m128 (memory must be 16-byte aligned).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<ulong> Src128(VirtualCpu c, ref Instruction i)
    {
        if (i.Op1Kind == OpKind.Register) return XR(c, i.Op1Register);
        ulong ea = c.Ea(ref i);
        if ((ea & 15) != 0) throw AlignFault(ea, ref i);
        return Load128(c, ea);
    }

    /// <summary>Operand 1 as xmm/m128 without the alignment requirement.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<ulong> Src128U(VirtualCpu c, ref Instruction i)
        => i.Op1Kind == OpKind.Register ? XR(c, i.Op1Register) : Load128(c, c.Ea(ref i));

    /// <summary>Low 64 bits of operand 1 (xmm or m64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Src64(VirtualCpu c, ref Instruction i)
        => i.Op1Kind == OpKind.Register ? XLo(c, i.Op1Register) : c.Mem.Read64(c.Ea(ref i));

    /// <summary>Low 32 bits of operand 1 (xmm or m32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Src32(VirtualCpu c, ref Instruction i)
        => i.Op1Kind == OpKind.Register ? (uint)XLo(c, i.Op1Register) : c.Mem.Read32(c.Ea(ref i));

    // ---------------------------------------------------------------- moves

    static void RegisterSseMoves()
    {
        Reg(Code.Movd_xmm_rm32, &MovdToX);
        Reg(Code.Movq_xmm_rm64, &MovdToX);
        Reg(Code.Movd_rm32_xmm, &MovdFromX);
        Reg(Code.Movq_rm64_xmm, &MovdFromX);
        Reg(Code.Movq_xmm_xmmm64, &MovqLoad);
        Reg(Code.Movq_xmmm64_xmm, &MovqStore);

        Reg(Code.Movaps_xmm_xmmm128, &MovA);
        Reg(Code.Movapd_xmm_xmmm128, &MovA);
        Reg(Code.Movdqa_xmm_xmmm128, &MovA);
        Reg(Code.Movups_xmm_xmmm128, &MovU);
        Reg(Code.Movupd_xmm_xmmm128, &MovU);
        Reg(Code.Movdqu_xmm_xmmm128, &MovU);
        Reg(Code.Movaps_xmmm128_xmm, &MovAStore);
        Reg(Code.Movapd_xmmm128_xmm, &MovAStore);
        Reg(Code.Movdqa_xmmm128_xmm, &MovAStore);
        Reg(Code.Movntps_m128_xmm, &MovAStore);
        Reg(Code.Movntpd_m128_xmm, &MovAStore);
        Reg(Code.Movntdq_m128_xmm, &MovAStore);
        Reg(Code.Movups_xmmm128_xmm, &MovUStore);
        Reg(Code.Movupd_xmmm128_xmm, &MovUStore);
        Reg(Code.Movdqu_xmmm128_xmm, &MovUStore);
        Reg(Code.Movnti_m32_r32, &Movnti);
        Reg(Code.Movnti_m64_r64, &Movnti);

        Reg(Code.Movss_xmm_xmmm32, &MovssLoad);
        Reg(Code.Movss_xmmm32_xmm, &MovssStore);
        Reg(Code.Movsd_xmm_xmmm64, &MovsdLoad);
        Reg(Code.Movsd_xmmm64_xmm, &MovsdStore);

        Reg(Code.Movlps_xmm_m64, &MovlLoad);
        Reg(Code.Movlpd_xmm_m64, &MovlLoad);
        Reg(Code.Movlps_m64_xmm, &MovlStore);
        Reg(Code.Movlpd_m64_xmm, &MovlStore);
        Reg(Code.Movhps_xmm_m64, &MovhLoad);
        Reg(Code.Movhpd_xmm_m64, &MovhLoad);
        Reg(Code.Movhps_m64_xmm, &MovhStore);
        Reg(Code.Movhpd_m64_xmm, &MovhStore);
        Reg(Code.Movhlps_xmm_xmm, &Movhlps);
        Reg(Code.Movlhps_xmm_xmm, &Movlhps);

        Reg(Code.Movmskps_r32_xmm, &Movmskps);
        Reg(Code.Movmskps_r64_xmm, &Movmskps);
        Reg(Code.Movmskpd_r32_xmm, &Movmskpd);
        Reg(Code.Movmskpd_r64_xmm, &Movmskpd);
        Reg(Code.Pmovmskb_r32_xmm, &Pmovmskb);
        Reg(Code.Pmovmskb_r64_xmm, &Pmovmskb);
        Reg(Code.Maskmovdqu_rDI_xmm_xmm, &Maskmovdqu);

        Reg(Code.Pinsrw_xmm_r32m16_imm8, &Pinsrw);
        Reg(Code.Pinsrw_xmm_r64m16_imm8, &Pinsrw);
        Reg(Code.Pextrw_r32_xmm_imm8, &Pextrw);
        Reg(Code.Pextrw_r64_xmm_imm8, &Pextrw);
    }

    static void MovdToX(VirtualCpu c, ref Instruction i)
    {
        ulong v = i.Op1Kind == OpKind.Register ? c.GetReg(i.Op1Register)
            : i.Code == Code.Movq_xmm_rm64 ? c.Mem.Read64(c.Ea(ref i)) : c.Mem.Read32(c.Ea(ref i));
        XR(c, i.Op0Register) = Vector128.CreateScalar(v);
    }

    static void MovdFromX(VirtualCpu c, ref Instruction i)
    {
        ulong v = XLo(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register) c.SetReg(i.Op0Register, v);
        else if (i.Code == Code.Movq_rm64_xmm) c.Mem.Write64(c.Ea(ref i), v);
        else c.Mem.Write32(c.Ea(ref i), (uint)v);
    }

    static void MovqLoad(VirtualCpu c, ref Instruction i) => XR(c, i.Op0Register) = Vector128.CreateScalar(Src64(c, ref i));

    static void MovqStore(VirtualCpu c, ref Instruction i)
    {
        ulong v = XLo(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register) XR(c, i.Op0Register) = Vector128.CreateScalar(v);
        else c.Mem.Write64(c.Ea(ref i), v);
    }

    static void MovA(VirtualCpu c, ref Instruction i) => XR(c, i.Op0Register) = Src128(c, ref i);
    static void MovU(VirtualCpu c, ref Instruction i) => XR(c, i.Op0Register) = Src128U(c, ref i);

    static void MovAStore(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> v = XR(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register) { XR(c, i.Op0Register) = v; return; }
        ulong ea = c.Ea(ref i);
        if ((ea & 15) != 0) throw AlignFault(ea, ref i);
        Store128(c, ea, v);
    }

    static void MovUStore(VirtualCpu c, ref Instruction i)
    {
        Vector128<ulong> v = XR(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register) XR(c, i.Op0Register) = v;
        else Store128(c, c.Ea(ref i), v);
    }

    static void Movnti(VirtualCpu c, ref Instruction i)
    {
        int s = VirtualCpu.OpSize(ref i, 1);
        c.Mem.Write(c.Ea(ref i), c.GetReg(i.Op1Register), s);
    }

    static void MovssLoad(VirtualCpu c, ref Instruction i)
    {
        if (i.Op1Kind == OpKind.Register)
        {
            ref ulong d = ref XLo(c, i.Op0Register);
            d = (d & 0xFFFF_FFFF_0000_0000UL) | (uint)XLo(c, i.Op1Register);
        }
        else XR(c, i.Op0Register) = Vector128.CreateScalar((ulong)c.Mem.Read32(c.Ea(ref i)));
    }

    static void MovssStore(VirtualCpu c, ref Instruction i)
    {
        uint v = (uint)XLo(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register)
        {
            ref ulong d = ref XLo(c, i.Op0Register);
            d = (d & 0xFFFF_FFFF_0000_0000UL) | v;
        }
        else c.Mem.Write32(c.Ea(ref i), v);
    }

    static void MovsdLoad(VirtualCpu c, ref Instruction i)
    {
        if (i.Op1Kind == OpKind.Register) XLo(c, i.Op0Register) = XLo(c, i.Op1Register);
        else XR(c, i.Op0Register) = Vector128.CreateScalar(c.Mem.Read64(c.Ea(ref i)));
    }

    static void MovsdStore(VirtualCpu c, ref Instruction i)
    {
        ulong v = XLo(c, i.Op1Register);
        if (i.Op0Kind == OpKind.Register) XLo(c, i.Op0Register) = v;
        else c.Mem.Write64(c.Ea(ref i), v);
    }

    static void MovlLoad(VirtualCpu c, ref Instruction i) => XLo(c, i.Op0Register) = c.Mem.Read64(c.Ea(ref i));
    static void MovlStore(VirtualCpu c, ref Instruction i) => c.Mem.Write64(c.Ea(ref i), XLo(c, i.Op1Register));
    static void MovhLoad(VirtualCpu c, ref Instruction i) => XHi(c, i.Op0Register) = c.Mem.Read64(c.Ea(ref i));
    static void MovhStore(VirtualCpu c, ref Instruction i) => c.Mem.Write64(c.Ea(ref i), XHi(c, i.Op1Register));
    static void Movhlps(VirtualCpu c, ref Instruction i) => XLo(c, i.Op0Register) = XHi(c, i.Op1Register);
    static void Movlhps(VirtualCpu c, ref Instruction i) => XHi(c, i.Op0Register) = XLo(c, i.Op1Register);

    static void Movmskps(VirtualCpu c, ref Instruction i)
        => c.SetReg(i.Op0Register, (uint)Sse.MoveMask(XR(c, i.Op1Register).AsSingle()));

    static void Movmskpd(VirtualCpu c, ref Instruction i)
        => c.SetReg(i.Op0Register, (uint)Sse2.MoveMask(XR(c, i.Op1Register).AsDouble()));

    static void Pmovmskb(VirtualCpu c, ref Instruction i)
        => c.SetReg(i.Op0Register, (uint)Sse2.MoveMask(XR(c, i.Op1Register).AsByte()));

    static void Maskmovdqu(VirtualCpu c, ref Instruction i)
    {
        // operands: DS:rDI (implicit), data xmm, mask xmm
        Vector128<byte> v = XR(c, i.Op1Register).AsByte(), m = XR(c, i.Op2Register).AsByte();
        ulong a = i.Op0Kind == OpKind.MemorySegEDI ? (uint)c.R[VirtualCpu.RDI] : c.R[VirtualCpu.RDI];
        Register s = i.MemorySegment;
        if (s == Register.FS) a += c.FsBase; else if (s == Register.GS) a += c.GsBase;
        for (int k = 0; k < 16; k++)
            if ((m.GetElement(k) & 0x80) != 0) c.Mem.Write8(a + (ulong)k, v.GetElement(k));
    }

    static void Pinsrw(VirtualCpu c, ref Instruction i)
    {
        ushort v = i.Op1Kind == OpKind.Register ? (ushort)c.GetReg(i.Op1Register) : c.Mem.Read16(c.Ea(ref i));
        int k = i.Immediate8 & 7;
        ref ulong d = ref Unsafe.Add(ref XLo(c, i.Op0Register), k >> 2);
        int sh = (k & 3) * 16;
        d = (d & ~(0xFFFFUL << sh)) | ((ulong)v << sh);
    }

    static void Pextrw(VirtualCpu c, ref Instruction i)
    {
        int k = i.Immediate8 & 7;
        ulong q = Unsafe.Add(ref XLo(c, i.Op1Register), k >> 2);
        c.SetReg(i.Op0Register, (ushort)(q >> ((k & 3) * 16)));
    }
}
