using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>How the compiled tier runs an SSE form inline (<see cref="Isa.XmmKindOf"/>): forms that read and write
/// only XMM registers, MXCSR and at most one memory operand, never a general register but for an address (movd/movq
/// excepted, which move one) nor the arithmetic flags.</summary>
internal enum XmmKind : byte
{
    None,
    /// <summary>op xmm, xmm/m128 (aligned) with an <see cref="Isa.IVop"/>.</summary>
    Vop,
    /// <summary>shift xmm, imm8 with an <see cref="Isa.IVop"/> (the count as a scalar).</summary>
    VopImm,
    /// <summary>movaps/movapd/movdqa xmm, xmm/m128 (aligned) and movups/movupd/movdqu (not).</summary>
    LoadA, LoadU,
    /// <summary>movaps/movapd/movdqa xmm/m128, xmm (aligned) and movups/movupd/movdqu (not).</summary>
    StoreA, StoreU,
    /// <summary>movsd xmm, xmm/m64 (a register keeps the upper half, memory clears it); movss alike for 32 bits.</summary>
    MovsdLoad, MovssLoad,
    /// <summary>movsd/movss xmm/m64, xmm.</summary>
    MovsdStore, MovssStore,
    /// <summary>movq xmm, xmm/m64 and movq xmm/m64, xmm: the low 64 bits, the upper half cleared in a register.</summary>
    MovqLoad, MovqStore,
    /// <summary>movd/movq xmm, r/m32/64 (zero-extended) and movd/movq r/m32/64, xmm.</summary>
    MovdToX, MovdFromX,
    /// <summary>movlps/movlpd and movhps/movhpd xmm, m64 and m64, xmm.</summary>
    MovlLoad, MovhLoad, MovlStore, MovhStore,
    /// <summary>add/sub/mul/div/min/max in the four shapes, with an <see cref="Isa.IFArith"/>: the managed fast path
    /// inline, the handler when it declines (see <see cref="Isa.ArithPdFast"/>).</summary>
    ArithPd, ArithPs, ArithSd, ArithSs,
    /// <summary>pshufd xmm, xmm, imm8.</summary>
    Pshufd,
    /// <summary>cvtdq2pd xmm, xmm/m64 (exact: no MXCSR).</summary>
    Cvtdq2pd,
}

/// <summary>
/// The SSE forms the compiled tier runs inline, and the operations its code calls: on the guest's XMM registers by
/// number, with a memory operand as the host address the
/// region's TLB probe found (or as a value its inline load read). The interpreter's handlers of these forms use the
/// same fast paths (<see cref="ArithPdFast"/> and its kin), so the two tiers compute each result the same way; where a
/// fast path declines (a rounding mode, an operand or result that is not normal, a misaligned or missing page), the
/// compiled code calls the form's handler, which starts the instruction afresh.
/// </summary>
public static unsafe partial class Isa
{
    /// <summary>By <see cref="Code"/>: the inline kind of an SSE form and the operation type of a generic one
    /// (an <see cref="IVop"/> or an <see cref="IFArith"/>), read by the compiler only.</summary>
    static readonly XmmKind[] XmmKinds = new XmmKind[IcedCounts.Code];
    /// <summary>A generic form's operations for compiled code: its instantiation over the form's
    /// operation type (<see cref="XVop{T}"/>, <see cref="XArithPd{T}"/> and their kin) with a register source, and
    /// with a memory source (0: none). Taken here, where the instantiation is named in code, so the precompiled image
    /// holds them: instantiated by reflection when a region is compiled, each one the guest's code used was
    /// JIT-compiled at its first call, fully optimised (bench.musl: some 20 of them, about 7 % of its CPU samples).
    /// Kept as a list of the forms that have one (index 0: none) and each Code's index into it: a few hundred bytes
    /// beside a 4,900-entry table, where two pointer tables by Code were 79 KiB of fresh pages at every start-up.</summary>
    static nint[] XmmCalls = new nint[128], XmmCallsMem = new nint[128];
    static int _xmmCallCount = 1;
    /// <summary>By <see cref="Code"/>: the index of the form's operations in <see cref="XmmCalls"/> and
    /// <see cref="XmmCallsMem"/> (0: none).</summary>
    static readonly ushort[] XmmCallSlot = new ushort[IcedCounts.Code];

    internal static XmmKind XmmKindOf(Code code) { Built.Ensure(); return XmmKinds[(int)code]; }
    /// <summary>The operation compiled code calls for a generic SSE form (see <see cref="XmmCalls"/>); 0 for the others.</summary>
    internal static nint XmmCallOf(Code code, bool memory) { Built.Ensure(); return (memory ? XmmCallsMem : XmmCalls)[XmmCallSlot[(int)code]]; }

    // (plain stores, no tuples or lambdas: generic instantiations over value types would each be JIT-compiled at start-up)
    static void XmmForm(Code code, XmmKind kind, nint call = 0, nint callMem = 0)
    {
        XmmKinds[(int)code] = kind;
        if (call == 0 && callMem == 0) { XmmCallSlot[(int)code] = 0; return; }
        if (_xmmCallCount == XmmCalls.Length)
        {
            var calls = new nint[XmmCalls.Length * 2];
            var callsMem = new nint[XmmCalls.Length * 2];
            Array.Copy(XmmCalls, calls, _xmmCallCount);
            Array.Copy(XmmCallsMem, callsMem, _xmmCallCount);
            XmmCalls = calls; XmmCallsMem = callsMem;
        }
        if (_xmmCallCount > ushort.MaxValue) throw new InvalidOperationException("more SSE form operations than a table entry can index");
        XmmCalls[_xmmCallCount] = call; XmmCallsMem[_xmmCallCount] = callMem;
        XmmCallSlot[(int)code] = (ushort)_xmmCallCount++;
    }

    /// <summary>Registers op xmm, xmm/m128 as <see cref="Pv{T}"/> and for the compiled tier.</summary>
    static void RegV<T>(Code code) where T : struct, IVop
    {
        Reg(code, &Pv<T>);
        XmmForm(code, XmmKind.Vop, (nint)(delegate*<ulong[], int, int, void>)&XVop<T>, (nint)(delegate*<ulong[], int, byte*, void>)&XVopMem<T>);
    }

    /// <summary>Registers shift xmm, imm8 as <see cref="Pimm{T}"/> and for the compiled tier.</summary>
    static void RegVi<T>(Code code) where T : struct, IVop
    {
        Reg(code, &Pimm<T>);
        XmmForm(code, XmmKind.VopImm, (nint)(delegate*<ulong[], int, int, void>)&XVopImm<T>);
    }

    /// <summary>Registers an arithmetic operation in its four shapes (ss, sd, ps, pd), for both tiers.</summary>
    static void RegArith<T>(Code ss, Code sd, Code ps, Code pd) where T : struct, IFArith
    {
        RegF(ss, &ArithSs<T>); RegF(sd, &ArithSd<T>); RegF(ps, &ArithPs<T>); RegF(pd, &ArithPd<T>);
        XmmForm(ss, XmmKind.ArithSs, (nint)(delegate*<VirtualCpu, int, ulong, bool>)&XArithSs<T>);
        XmmForm(sd, XmmKind.ArithSd, (nint)(delegate*<VirtualCpu, int, ulong, bool>)&XArithSd<T>);
        XmmForm(ps, XmmKind.ArithPs, (nint)(delegate*<VirtualCpu, int, int, bool>)&XArithPs<T>, (nint)(delegate*<VirtualCpu, int, byte*, bool>)&XArithPsMem<T>);
        XmmForm(pd, XmmKind.ArithPd, (nint)(delegate*<VirtualCpu, int, int, bool>)&XArithPd<T>, (nint)(delegate*<VirtualCpu, int, byte*, bool>)&XArithPdMem<T>);
    }

    /// <summary>The moves the compiled tier runs inline (their handlers are registered in Isa.Sse.cs).</summary>
    static void RegisterCompiledMoves()
    {
        XmmForm(Code.Movaps_xmm_xmmm128, XmmKind.LoadA); XmmForm(Code.Movapd_xmm_xmmm128, XmmKind.LoadA);
        XmmForm(Code.Movdqa_xmm_xmmm128, XmmKind.LoadA); XmmForm(Code.Movups_xmm_xmmm128, XmmKind.LoadU);
        XmmForm(Code.Movupd_xmm_xmmm128, XmmKind.LoadU); XmmForm(Code.Movdqu_xmm_xmmm128, XmmKind.LoadU);
        XmmForm(Code.Movaps_xmmm128_xmm, XmmKind.StoreA); XmmForm(Code.Movapd_xmmm128_xmm, XmmKind.StoreA);
        XmmForm(Code.Movdqa_xmmm128_xmm, XmmKind.StoreA); XmmForm(Code.Movups_xmmm128_xmm, XmmKind.StoreU);
        XmmForm(Code.Movupd_xmmm128_xmm, XmmKind.StoreU); XmmForm(Code.Movdqu_xmmm128_xmm, XmmKind.StoreU);
        XmmForm(Code.Movsd_xmm_xmmm64, XmmKind.MovsdLoad); XmmForm(Code.Movss_xmm_xmmm32, XmmKind.MovssLoad);
        XmmForm(Code.Movsd_xmmm64_xmm, XmmKind.MovsdStore); XmmForm(Code.Movss_xmmm32_xmm, XmmKind.MovssStore);
        XmmForm(Code.Movq_xmm_xmmm64, XmmKind.MovqLoad); XmmForm(Code.Movq_xmmm64_xmm, XmmKind.MovqStore);
        XmmForm(Code.Movd_xmm_rm32, XmmKind.MovdToX); XmmForm(Code.Movq_xmm_rm64, XmmKind.MovdToX);
        XmmForm(Code.Movd_rm32_xmm, XmmKind.MovdFromX); XmmForm(Code.Movq_rm64_xmm, XmmKind.MovdFromX);
        XmmForm(Code.Movlps_xmm_m64, XmmKind.MovlLoad); XmmForm(Code.Movlpd_xmm_m64, XmmKind.MovlLoad);
        XmmForm(Code.Movhps_xmm_m64, XmmKind.MovhLoad); XmmForm(Code.Movhpd_xmm_m64, XmmKind.MovhLoad);
        XmmForm(Code.Movlps_m64_xmm, XmmKind.MovlStore); XmmForm(Code.Movlpd_m64_xmm, XmmKind.MovlStore);
        XmmForm(Code.Movhps_m64_xmm, XmmKind.MovhStore); XmmForm(Code.Movhpd_m64_xmm, XmmKind.MovhStore);
        XmmForm(Code.Pshufd_xmm_xmmm128_imm8, XmmKind.Pshufd); XmmForm(Code.Cvtdq2pd_xmm_xmmm64, XmmKind.Cvtdq2pd);
    }

    // ---------------------------------------------------------------- what compiled code calls

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ref Vector128<ulong> XAt(ulong[] x, int n) => ref Unsafe.As<ulong, Vector128<ulong>>(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(x), n * 2));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void XVop<T>(ulong[] x, int d, int s) where T : struct, IVop => XAt(x, d) = T.Op(XAt(x, d), XAt(x, s));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void XVopMem<T>(ulong[] x, int d, byte* p) where T : struct, IVop => XAt(x, d) = T.Op(XAt(x, d), Unsafe.ReadUnaligned<Vector128<ulong>>(p));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void XVopImm<T>(ulong[] x, int d, int n) where T : struct, IVop => XAt(x, d) = T.Op(XAt(x, d), Vector128.CreateScalar((ulong)n));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XMove(ulong[] x, int d, int s) => XAt(x, d) = XAt(x, s);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XLoad(ulong[] x, int d, byte* p) => XAt(x, d) = Unsafe.ReadUnaligned<Vector128<ulong>>(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XStore(ulong[] x, int s, byte* p) => Unsafe.WriteUnaligned(p, XAt(x, s));

    /// <summary>The register's low 64 bits are v, the upper ones 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XScalar(ulong[] x, int d, ulong v) => XAt(x, d) = Vector128.CreateScalar(v);

    /// <summary>The register's low 32 bits are v, the rest stays.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XSetLow32(ulong[] x, int d, ulong v) => x[d * 2] = (x[d * 2] & 0xFFFF_FFFF_0000_0000UL) | (uint)v;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XPshufd(ulong[] x, int d, int s, int m) => XAt(x, d) = PshufdOf(XAt(x, s), m);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<ulong> PshufdOf(Vector128<ulong> v, int m) => Vector128.Create(Dw(v, m), Dw(v, m >> 2), Dw(v, m >> 4), Dw(v, m >> 6)).AsUInt64();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void XCvtdq2pd(ulong[] x, int d, ulong v) => XAt(x, d) = Cvtdq2pdOf(v);

    static Vector128<ulong> Cvtdq2pdOf(ulong v) => Sse2.ConvertToVector128Double(Vector128.CreateScalar(v).AsInt32()).AsUInt64();

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithPd<T>(VirtualCpu c, int d, int s) where T : struct, IFArith => ArithPdFast<T>(c, d, XAt(c.Xmm, s));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithPdMem<T>(VirtualCpu c, int d, byte* p) where T : struct, IFArith => ArithPdFast<T>(c, d, Unsafe.ReadUnaligned<Vector128<ulong>>(p));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithPs<T>(VirtualCpu c, int d, int s) where T : struct, IFArith => ArithPsFast<T>(c, d, XAt(c.Xmm, s));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithPsMem<T>(VirtualCpu c, int d, byte* p) where T : struct, IFArith => ArithPsFast<T>(c, d, Unsafe.ReadUnaligned<Vector128<ulong>>(p));

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithSd<T>(VirtualCpu c, int d, ulong b) where T : struct, IFArith => ArithSdFast<T>(c, d, b);

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static bool XArithSs<T>(VirtualCpu c, int d, ulong b) where T : struct, IFArith => ArithSsFast<T>(c, d, (uint)b);

    // ---------------------------------------------------------------- the fast paths both tiers take

    /// <summary>d = d op b on the managed path when the guest MXCSR and the operands allow it (see
    /// <see cref="ArithFast"/>); false leaves d as it was, for the exact native path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ArithPdFast<T>(VirtualCpu c, int d, Vector128<ulong> b) where T : struct, IFArith
    {
        ref Vector128<ulong> dst = ref XAt(c.Xmm, d);
        Vector128<ulong> a = dst;
        if (T.Exact)
        {
            if (CtlDefault(c) && NormOrZeroPd(a) && NormOrZeroPd(b)) { dst = T.PD(a.AsDouble(), b.AsDouble()).AsUInt64(); return true; }
        }
        else if (ArithFast(c) && NormOrZeroPd(a) && NormOrZeroPd(b))
        {
            Vector128<ulong> r = T.PD(a.AsDouble(), b.AsDouble()).AsUInt64();
            if (KeepPd(r, a, b)) { dst = r; return true; }
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ArithPsFast<T>(VirtualCpu c, int d, Vector128<ulong> b) where T : struct, IFArith
    {
        ref Vector128<ulong> dst = ref XAt(c.Xmm, d);
        Vector128<ulong> a = dst;
        if (T.Exact)
        {
            if (CtlDefault(c) && NormOrZeroPs(a) && NormOrZeroPs(b)) { dst = T.PS(a.AsSingle(), b.AsSingle()).AsUInt64(); return true; }
        }
        else if (ArithFast(c) && NormOrZeroPs(a) && NormOrZeroPs(b))
        {
            Vector128<ulong> r = T.PS(a.AsSingle(), b.AsSingle()).AsUInt64();
            if (KeepPs(r, a, b)) { dst = r; return true; }
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ArithSdFast<T>(VirtualCpu c, int d, ulong b) where T : struct, IFArith
    {
        ref ulong dst = ref c.Xmm[d * 2];
        ulong a = dst;
        if (T.Exact)
        {
            if (CtlDefault(c) && NormOrZeroD(a) && NormOrZeroD(b))
            { dst = BitConverter.DoubleToUInt64Bits(T.D(BitConverter.UInt64BitsToDouble(a), BitConverter.UInt64BitsToDouble(b))); return true; }
        }
        else if (ArithFast(c) && NormOrZeroD(a) && NormOrZeroD(b))
        {
            ulong r = BitConverter.DoubleToUInt64Bits(T.D(BitConverter.UInt64BitsToDouble(a), BitConverter.UInt64BitsToDouble(b)));
            if (KeepD(r, a, b)) { dst = r; return true; }
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ArithSsFast<T>(VirtualCpu c, int d, uint b) where T : struct, IFArith
    {
        ref ulong dst = ref c.Xmm[d * 2];
        uint a = (uint)dst;
        if (T.Exact)
        {
            if (CtlDefault(c) && NormOrZeroF(a) && NormOrZeroF(b))
            { dst = (dst & 0xFFFF_FFFF_0000_0000UL) | BitConverter.SingleToUInt32Bits(T.S(BitConverter.UInt32BitsToSingle(a), BitConverter.UInt32BitsToSingle(b))); return true; }
        }
        else if (ArithFast(c) && NormOrZeroF(a) && NormOrZeroF(b))
        {
            uint r = BitConverter.SingleToUInt32Bits(T.S(BitConverter.UInt32BitsToSingle(a), BitConverter.UInt32BitsToSingle(b)));
            if (KeepF(r, a, b)) { dst = (dst & 0xFFFF_FFFF_0000_0000UL) | r; return true; }
        }
        return false;
    }

    /// <summary>Whether the managed path may keep result lane r of an operation (add, sub, mul, div) on lanes a and b
    /// that are normal or zero: a normal result, or a zero with a zero operand (then it is exact: x * 0, 0 / x, x + 0,
    /// raising no flag; a zero from two normal operands may be an underflow and goes to the exact native path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool KeepD(ulong r, ulong a, ulong b) => NormD(r) || ((r << 1) == 0 && ((a << 1) == 0 || (b << 1) == 0));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool KeepF(uint r, uint a, uint b) => NormF(r) || ((r << 1) == 0 && ((a << 1) == 0 || (b << 1) == 0));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool KeepPd(Vector128<ulong> r, Vector128<ulong> a, Vector128<ulong> b)
        => KeepD(r.GetElement(0), a.GetElement(0), b.GetElement(0)) && KeepD(r.GetElement(1), a.GetElement(1), b.GetElement(1));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool KeepPs(Vector128<ulong> r, Vector128<ulong> a, Vector128<ulong> b)
    {
        Vector128<uint> ru = r.AsUInt32(), zero = Vector128<uint>.Zero;
        Vector128<uint> e = (ru >> 23) & Vector128.Create(0xFFu);
        Vector128<uint> ok = Vector128.LessThan(e - Vector128<uint>.One, Vector128.Create(0xFEu))
            | (Vector128.Equals(ru << 1, zero) & (Vector128.Equals(a.AsUInt32() << 1, zero) | Vector128.Equals(b.AsUInt32() << 1, zero)));
        return ok.AsUInt64() == Vector128<ulong>.AllBitsSet;
    }

    /// <summary>The number (0-15) of an XMM register.</summary>
    internal static int XmmIndex(Register r) => (int)r - (int)Register.XMM0;
}
