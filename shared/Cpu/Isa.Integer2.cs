using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iced.Intel;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>
/// Shifts and rotates, multiply and divide, bit tests and scans, string instructions, enter and xlat.
/// Flags the manual leaves undefined follow what current x86-64 hardware does where that is consistent
/// (see tests/VirtualCpu/IntegerDifferentialTests.cs, which compares against the host CPU).
/// </summary>
public static unsafe partial class Isa
{
    static partial void RegisterIntegerMore()
    {
        Reg(Mnemonic.Shl, &Shl);
        Reg(Mnemonic.Sal, &Shl);
        Reg(Mnemonic.Shr, &Shr);
        Reg(Mnemonic.Sar, &Sar);
        Reg(Mnemonic.Rol, &Rol);
        Reg(Mnemonic.Ror, &Ror);
        Reg(Mnemonic.Rcl, &Rcl);
        Reg(Mnemonic.Rcr, &Rcr);
        Reg(Mnemonic.Shld, &Shld);
        Reg(Mnemonic.Shrd, &Shrd);

        Reg(Mnemonic.Mul, &Mul);
        Reg(Mnemonic.Imul, &Imul);
        Reg(Mnemonic.Div, &Div);
        Reg(Mnemonic.Idiv, &Idiv);

        Reg(Mnemonic.Bt, &Bt);
        Reg(Mnemonic.Bts, &Bts);
        Reg(Mnemonic.Btr, &Btr);
        Reg(Mnemonic.Btc, &Btc);
        Reg(Mnemonic.Bsf, &Bsf);
        Reg(Mnemonic.Bsr, &Bsr);
        // BMI1/LZCNT are not advertised: F3 0F BC / F3 0F BD execute as (rep) bsf / bsr, as on older processors
        Reg(Mnemonic.Tzcnt, &Bsf);
        Reg(Mnemonic.Lzcnt, &Bsr);
        Reg(Mnemonic.Popcnt, &Popcnt);

        // string instructions by Code: Mnemonic.Movsd / Cmpsd are shared with the SSE instructions
        Reg(Code.Movsb_m8_m8, &Movs);
        Reg(Code.Movsw_m16_m16, &Movs);
        Reg(Code.Movsd_m32_m32, &Movs);
        Reg(Code.Movsq_m64_m64, &Movs);
        Reg(Code.Stosb_m8_AL, &Stos);
        Reg(Code.Stosw_m16_AX, &Stos);
        Reg(Code.Stosd_m32_EAX, &Stos);
        Reg(Code.Stosq_m64_RAX, &Stos);
        Reg(Code.Lodsb_AL_m8, &Lods);
        Reg(Code.Lodsw_AX_m16, &Lods);
        Reg(Code.Lodsd_EAX_m32, &Lods);
        Reg(Code.Lodsq_RAX_m64, &Lods);
        Reg(Code.Cmpsb_m8_m8, &Cmps);
        Reg(Code.Cmpsw_m16_m16, &Cmps);
        Reg(Code.Cmpsd_m32_m32, &Cmps);
        Reg(Code.Cmpsq_m64_m64, &Cmps);
        Reg(Code.Scasb_AL_m8, &Scas);
        Reg(Code.Scasw_AX_m16, &Scas);
        Reg(Code.Scasd_EAX_m32, &Scas);
        Reg(Code.Scasq_RAX_m64, &Scas);

        Reg(Code.Enterq_imm16_imm8, &Enter);
        Reg(Mnemonic.Xlatb, &Xlat);
    }

    // ================================================================ shifts and rotates

    /// <summary>The count operand (1, imm8 or CL) masked to 5 bits, or 6 for 64-bit operands.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int ShiftCount(VirtualCpu c, ref Instruction i, int opIndex, int s)
    {
        int n = i.GetOpKind(opIndex) == OpKind.Register ? (byte)c.R[VirtualCpu.RCX] : i.Immediate8;
        return n & (s == 8 ? 0x3F : 0x1F);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong ShlX(ulong v, int n) => n >= 64 ? 0 : v << n;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong ShrX(ulong v, int n) => n >= 64 ? 0 : v >> n;

    /// <summary>Flags after a shift with a non-zero count: SZP from the result, CF, OF as given; AF (undefined) is
    /// set, as the reference hardware does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetShiftFlags(VirtualCpu c, ulong r, int s, ulong cf, ulong of) => c.SetFlagsShift(r, s, cf, of);

    /// <summary>Rotates change only CF and OF.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetRotateFlags(VirtualCpu c, ulong cf, ulong of) => c.SetFlagsRotate(cf, of);

    static void Shl(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        ulong r = (a << n) & VirtualCpu.SizeMask(s);
        ulong cf = n <= bits ? (a >> (bits - n)) & 1 : 0;
        SetShiftFlags(c, r, s, cf, cf ^ (r >> (bits - 1)));
        StoreDst(c, ref i, s, ea, r);
    }

    static void Shr(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        ulong r = a >> n;
        ulong cf = (a >> (n - 1)) & 1;
        // OF = MSB of the original for a count of 1; hardware computes result[msb] ^ result[msb-1] for any count
        SetShiftFlags(c, r, s, cf, (r >> (bits - 2)) & 1);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Sar(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        long sa = VirtualCpu.SignExtend(a, s);
        ulong r = (ulong)(sa >> n) & VirtualCpu.SizeMask(s);
        ulong cf = (ulong)(sa >> (n - 1)) & 1;
        SetShiftFlags(c, r, s, cf, 0);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Rol(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        int rc = n & (bits - 1);
        ulong r = rc == 0 ? a : ((a << rc) | (a >> (bits - rc))) & VirtualCpu.SizeMask(s);
        ulong cf = r & 1;
        SetRotateFlags(c, cf, cf ^ (r >> (bits - 1)));
        StoreDst(c, ref i, s, ea, r);
    }

    static void Ror(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        int rc = n & (bits - 1);
        ulong r = rc == 0 ? a : ((a >> rc) | (a << (bits - rc))) & VirtualCpu.SizeMask(s);
        ulong msb = r >> (bits - 1);
        SetRotateFlags(c, msb, msb ^ ((r >> (bits - 2)) & 1));
        StoreDst(c, ref i, s, ea, r);
    }

    static void Rcl(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        int rc = s <= 2 ? n % (bits + 1) : n;
        ulong cf = c.Rflags & VirtualCpu.CF;
        ulong r = a;
        if (rc != 0)
        {
            r = (ShlX(a, rc) | (cf << (rc - 1)) | ShrX(a, bits + 1 - rc)) & VirtualCpu.SizeMask(s);
            cf = (a >> (bits - rc)) & 1;
        }
        SetRotateFlags(c, cf, cf ^ (r >> (bits - 1)));
        StoreDst(c, ref i, s, ea, r);
    }

    static void Rcr(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        int n = ShiftCount(c, ref i, 1, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        int rc = s <= 2 ? n % (bits + 1) : n;
        ulong cf = c.Rflags & VirtualCpu.CF;
        ulong r = a;
        if (rc != 0)
        {
            r = (ShrX(a, rc) | ShlX(cf, bits - rc) | ShlX(a, bits + 1 - rc)) & VirtualCpu.SizeMask(s);
            cf = (a >> (rc - 1)) & 1;
        }
        SetRotateFlags(c, cf, ((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Shld(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        ulong b = c.GetReg(i.Op1Register);
        int n = ShiftCount(c, ref i, 2, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        ulong r, cf;
        if (n > bits)
        {
            // 16-bit operand, count 17..31: undefined; the reference hardware rotates the source left by
            // count - 16 and clears CF and OF
            b &= 0xFFFF;
            r = ((b << (n - 16)) | (b >> (32 - n))) & 0xFFFF;
            SetShiftFlags(c, r, s, 0, 0);
            StoreDst(c, ref i, s, ea, r);
            return;
        }
        else
        {
            r = ((a << n) | (b >> (bits - n))) & VirtualCpu.SizeMask(s);
            cf = (a >> (bits - n)) & 1;
        }
        // OF = CF ^ MSB of the destination's own bits shifted (the reference hardware's rule for any count;
        // for a 16-bit count of 16 that is CF itself)
        SetShiftFlags(c, r, s, cf, cf ^ ((ShlX(a, n) >> (bits - 1)) & 1));
        StoreDst(c, ref i, s, ea, r);
    }

    static void Shrd(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        ulong b = c.GetReg(i.Op1Register);
        int n = ShiftCount(c, ref i, 2, s);
        if (n == 0) { StoreDst(c, ref i, s, ea, a); return; }
        int bits = s * 8;
        ulong r, cf;
        if (n > bits)
        {
            // 16-bit operand, count 17..31: the reference hardware rotates the source right by count - 16,
            // clears CF and computes OF from the result as for other counts
            b &= 0xFFFF;
            r = ((b >> (n - 16)) | (b << (32 - n))) & 0xFFFF;
            cf = 0;
        }
        else
        {
            r = ((a >> n) | (b << (bits - n))) & VirtualCpu.SizeMask(s);
            cf = (a >> (n - 1)) & 1;
        }
        SetShiftFlags(c, r, s, cf, ((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1);
        StoreDst(c, ref i, s, ea, r);
    }

    // ================================================================ multiply and divide

    /// <summary>Flags after a multiply: CF = OF = overflow; SF/ZF/AF/PF (undefined) are left unchanged, as the
    /// reference hardware does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetMulFlags(VirtualCpu c, ulong lo, int s, bool overflow)
        => c.Rflags = (c.Rflags & ~(VirtualCpu.CF | VirtualCpu.OF)) | (overflow ? VirtualCpu.CF | VirtualCpu.OF : 0);

    /// <summary>Flags after a divide (all undefined): the reference hardware clears SF, ZF and PF, sets AF and
    /// leaves CF and OF.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetDivFlags(VirtualCpu c)
        => c.Rflags = (c.Rflags & ~(VirtualCpu.SF | VirtualCpu.ZF | VirtualCpu.PF)) | VirtualCpu.AF;

    static void Mul(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong b = c.ReadOp(ref i, 0, s);
        ref ulong rax = ref c.R[VirtualCpu.RAX];
        ref ulong rdx = ref c.R[VirtualCpu.RDX];
        ulong lo, hi;
        switch (s)
        {
            case 1:
            {
                ulong p = (rax & 0xFF) * b;
                rax = (rax & ~0xFFFFUL) | p;
                lo = p & 0xFF; hi = p >> 8;
                break;
            }
            case 2:
            {
                ulong p = (rax & 0xFFFF) * b;
                lo = p & 0xFFFF; hi = p >> 16;
                rax = (rax & ~0xFFFFUL) | lo;
                rdx = (rdx & ~0xFFFFUL) | hi;
                break;
            }
            case 4:
            {
                ulong p = (rax & 0xFFFFFFFF) * b;
                lo = p & 0xFFFFFFFF; hi = p >> 32;
                rax = lo; rdx = hi;
                break;
            }
            default:
                hi = Math.BigMul(rax, b, out lo);
                rax = lo; rdx = hi;
                break;
        }
        SetMulFlags(c, lo, s, hi != 0);
    }

    static void Imul(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        if (i.OpCount == 1) { Imul1(c, ref i, s); return; }
        long a, b;
        if (i.OpCount == 2) { a = VirtualCpu.SignExtend(c.GetReg(i.Op0Register), s); b = VirtualCpu.SignExtend(c.ReadOp(ref i, 1, s), s); }
        else { a = VirtualCpu.SignExtend(c.ReadOp(ref i, 1, s), s); b = VirtualCpu.SignExtend(c.ReadOp(ref i, 2, s), s); }
        ulong lo;
        bool ovf;
        if (s == 8)
        {
            long hi = Math.BigMul(a, b, out long l);
            lo = (ulong)l;
            ovf = hi != (l >> 63);
        }
        else
        {
            long p = a * b;
            lo = (ulong)p & VirtualCpu.SizeMask(s);
            ovf = VirtualCpu.SignExtend(lo, s) != p;
        }
        c.SetReg(i.Op0Register, lo);
        SetMulFlags(c, lo, s, ovf);
    }

    static void Imul1(VirtualCpu c, ref Instruction i, int s)
    {
        long b = VirtualCpu.SignExtend(c.ReadOp(ref i, 0, s), s);
        ref ulong rax = ref c.R[VirtualCpu.RAX];
        ref ulong rdx = ref c.R[VirtualCpu.RDX];
        ulong lo;
        bool ovf;
        switch (s)
        {
            case 1:
            {
                long p = (sbyte)rax * b;
                rax = (rax & ~0xFFFFUL) | ((ulong)p & 0xFFFF);
                lo = (ulong)p & 0xFF; ovf = (sbyte)p != p;
                break;
            }
            case 2:
            {
                long p = (short)rax * b;
                rax = (rax & ~0xFFFFUL) | ((ulong)p & 0xFFFF);
                rdx = (rdx & ~0xFFFFUL) | (((ulong)p >> 16) & 0xFFFF);
                lo = (ulong)p & 0xFFFF; ovf = (short)p != p;
                break;
            }
            case 4:
            {
                long p = (int)rax * b;
                rax = (ulong)p & 0xFFFFFFFF;
                rdx = ((ulong)p >> 32) & 0xFFFFFFFF;
                lo = rax; ovf = (int)p != p;
                break;
            }
            default:
            {
                long hi = Math.BigMul((long)rax, b, out long l);
                rax = (ulong)l; rdx = (ulong)hi;
                lo = (ulong)l; ovf = hi != (l >> 63);
                break;
            }
        }
        SetMulFlags(c, lo, s, ovf);
    }

    static Exception DivideError(ref Instruction i)
        => new GuestSignalException(8, $"divide error at 0x{i.IP:x}", 1 /* FPE_INTDIV */, i.IP);

    static void Div(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong b = c.ReadOp(ref i, 0, s);
        if (b == 0) throw DivideError(ref i);
        ref ulong rax = ref c.R[VirtualCpu.RAX];
        ref ulong rdx = ref c.R[VirtualCpu.RDX];
        switch (s)
        {
            case 1:
            {
                ulong n = rax & 0xFFFF;
                ulong q = n / b;
                if (q > 0xFF) throw DivideError(ref i);
                rax = (rax & ~0xFFFFUL) | ((n % b) << 8) | q;
                break;
            }
            case 2:
            {
                ulong n = ((rdx & 0xFFFF) << 16) | (rax & 0xFFFF);
                ulong q = n / b;
                if (q > 0xFFFF) throw DivideError(ref i);
                rax = (rax & ~0xFFFFUL) | q;
                rdx = (rdx & ~0xFFFFUL) | (n % b);
                break;
            }
            case 4:
            {
                ulong n = ((rdx & 0xFFFFFFFF) << 32) | (rax & 0xFFFFFFFF);
                ulong q = n / b;
                if (q > 0xFFFFFFFF) throw DivideError(ref i);
                rax = q; rdx = n % b;
                break;
            }
            default:
            {
                if (rdx >= b) throw DivideError(ref i);
                if (rdx == 0) { ulong q = rax / b; rdx = rax - q * b; rax = q; }
                else DivWide(ref rdx, ref rax, b);
                break;
            }
        }
        SetDivFlags(c);
    }

    static void Idiv(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        long b = VirtualCpu.SignExtend(c.ReadOp(ref i, 0, s), s);
        if (b == 0) throw DivideError(ref i);
        ref ulong rax = ref c.R[VirtualCpu.RAX];
        ref ulong rdx = ref c.R[VirtualCpu.RDX];
        switch (s)
        {
            case 1:
            {
                long n = (short)rax;
                long q = n / b;
                if (q != (sbyte)q) throw DivideError(ref i);
                rax = (rax & ~0xFFFFUL) | (((ulong)(n % b) & 0xFF) << 8) | ((ulong)q & 0xFF);
                break;
            }
            case 2:
            {
                long n = (int)(((rdx & 0xFFFF) << 16) | (rax & 0xFFFF));
                long q = n / b;
                if (q != (short)q) throw DivideError(ref i);
                rax = (rax & ~0xFFFFUL) | ((ulong)q & 0xFFFF);
                rdx = (rdx & ~0xFFFFUL) | ((ulong)(n % b) & 0xFFFF);
                break;
            }
            case 4:
            {
                long n = (long)(((rdx & 0xFFFFFFFF) << 32) | (rax & 0xFFFFFFFF));
                if (n == long.MinValue && b == -1) throw DivideError(ref i);
                long q = n / b;
                if (q != (int)q) throw DivideError(ref i);
                rax = (ulong)q & 0xFFFFFFFF;
                rdx = (ulong)(n % b) & 0xFFFFFFFF;
                break;
            }
            default:
            {
                long lo = (long)rax;
                if ((long)rdx == lo >> 63)
                {
                    if (lo == long.MinValue && b == -1) throw DivideError(ref i);
                    long q = lo / b;
                    rdx = (ulong)(lo - q * b); rax = (ulong)q;
                }
                else if (!IdivWide(ref rdx, ref rax, b)) throw DivideError(ref i);
                break;
            }
        }
        SetDivFlags(c);
    }

    // The 128-bit dividends of div/idiv r/m64 with rdx not just rax's extension, kept out of Div and Idiv: code that
    // handles UInt128/Int128 has no ReadyToRun code (the runtime JIT-compiles it at its first call), and Div runs at
    // the start of nearly every guest while these cases are rare.

    /// <summary>rdx:rax / b with rdx &lt; b (the quotient fits): quotient to rax, remainder to rdx.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void DivWide(ref ulong rdx, ref ulong rax, ulong b)
    {
        UInt128 n = new UInt128(rdx, rax);
        UInt128 q = n / b;
        rdx = (ulong)(n - q * b);
        rax = (ulong)q;
    }

    /// <summary>Signed rdx:rax / b: false (registers unchanged) when the quotient does not fit 64 bits.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static bool IdivWide(ref ulong rdx, ref ulong rax, long b)
    {
        Int128 n = (Int128)new UInt128(rdx, rax);
        Int128 q = n / b;
        if (q != (long)q) return false;
        rdx = (ulong)(long)(n - q * b);
        rax = (ulong)(long)q;
        return true;
    }

    // ================================================================ bit test and scan

    /// <summary>bt/bts/btr/btc: op 0 test, 1 set, 2 reset, 3 complement. CF = the selected bit; other flags unchanged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void BitOp(VirtualCpu c, ref Instruction i, int op)
    {
        int s = Size0(ref i);
        int bits = s * 8;
        int bit;
        ulong ea = 0, v;
        bool mem = i.Op0Kind == OpKind.Memory;
        if (i.Op1Kind == OpKind.Register)
        {
            ulong off = c.GetReg(i.Op1Register);
            bit = (int)off & (bits - 1);
            if (mem)
            {
                // a register bit offset is signed and may select another operand-sized word of memory
                long word = VirtualCpu.SignExtend(off, s) >> BitOperations.Log2((uint)bits);
                ea = c.Ea(ref i) + (ulong)(word * s);
            }
        }
        else
        {
            bit = i.Immediate8 & (bits - 1);
            if (mem) ea = c.Ea(ref i);
        }
        v = mem ? c.Mem.Read(ea, s) : c.GetReg(i.Op0Register);
        ulong m = 1UL << bit;
        c.Rflags = (c.Rflags & ~VirtualCpu.CF) | ((v >> bit) & 1);
        switch (op)
        {
            case 0: return;
            case 1: v |= m; break;
            case 2: v &= ~m; break;
            default: v ^= m; break;
        }
        if (mem) c.Mem.Write(ea, v, s); else c.SetReg(i.Op0Register, v);
    }

    static void Bt(VirtualCpu c, ref Instruction i) => BitOp(c, ref i, 0);
    static void Bts(VirtualCpu c, ref Instruction i) => BitOp(c, ref i, 1);
    static void Btr(VirtualCpu c, ref Instruction i) => BitOp(c, ref i, 2);
    static void Btc(VirtualCpu c, ref Instruction i) => BitOp(c, ref i, 3);

    // bsf/bsr: only ZF is defined. The reference hardware clears CF, OF, SF and AF and sets PF from the
    // result (from 0 when the source is zero, when the destination is left unchanged).
    static void Bsf(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong v = c.ReadOp(ref i, 1, s);
        if (v == 0) { c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | VirtualCpu.ZF | VirtualCpu.PF; return; } // destination unchanged
        ulong r = (ulong)BitOperations.TrailingZeroCount(v);
        c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | VirtualCpu.ZSP(r, 8) & VirtualCpu.PF;
        c.SetReg(i.Op0Register, r);
    }

    static void Bsr(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong v = c.ReadOp(ref i, 1, s);
        if (v == 0) { c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | VirtualCpu.ZF | VirtualCpu.PF; return; }
        ulong r = (ulong)(63 - BitOperations.LeadingZeroCount(v));
        c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | VirtualCpu.ZSP(r, 8) & VirtualCpu.PF;
        c.SetReg(i.Op0Register, r);
    }

    static void Popcnt(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong v = c.ReadOp(ref i, 1, s);
        c.SetReg(i.Op0Register, (ulong)BitOperations.PopCount(v));
        c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | (v == 0 ? VirtualCpu.ZF : 0);
    }

    // ================================================================ string instructions
    // Only 64-bit addressing (RSI/RDI/RCX); the 0x67-prefixed forms raise SIGILL.
    // A store that rewrites code of the running block ends the block (CodeInvalidatedException): the element
    // retired, so the registers are advanced first and an unfinished rep restarts at the same instruction.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong SrcSegBase(VirtualCpu c, ref Instruction i)
    {
        Register seg = i.MemorySegment;
        return seg == Register.FS ? c.FsBase : seg == Register.GS ? c.GsBase : 0;
    }

    static void Addr32String(ref Instruction i)
        => throw new GuestSignalException(4, $"32-bit address size string instruction '{i}' at 0x{i.IP:x}", 2, i.IP);

    static void Movs(VirtualCpu c, ref Instruction i)
    {
        if (i.Op0Kind != OpKind.MemoryESRDI) Addr32String(ref i);
        int s = VirtualCpu.MemBytes[(int)i.MemorySize];
        ulong sbase = SrcSegBase(c, ref i);
        ulong[] R = c.R;
        long d = (c.Rflags & VirtualCpu.DF) != 0 ? -s : s;
        bool rep = i.HasRepPrefix || i.HasRepnePrefix;
        if (!rep)
        {
            ulong v = c.Mem.Read(sbase + R[VirtualCpu.RSI], s);
            try { c.Mem.Write(R[VirtualCpu.RDI], v, s); }
            catch (CodeInvalidatedException) { R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d; throw; }
            R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d;
            return;
        }
        if (d > 0 && R[VirtualCpu.RCX] >= 16) MovsBulk(c, s, sbase);
        while (R[VirtualCpu.RCX] != 0)
        {
            ulong v = c.Mem.Read(sbase + R[VirtualCpu.RSI], s);
            try { c.Mem.Write(R[VirtualCpu.RDI], v, s); }
            catch (CodeInvalidatedException)
            {
                R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d;
                if (--R[VirtualCpu.RCX] != 0) c.Rip = i.IP;
                throw;
            }
            R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d; R[VirtualCpu.RCX]--;
        }
    }

    /// <summary>
    /// rep movs with DF = 0 in chunks of up to a page: each chunk is read whole then written whole (WriteBytes
    /// probes before it stores). A chunk that faults is left to the element loop, which faults at the exact
    /// element with the registers reflecting the progress. Forward-overlapping copies (destination just above
    /// the source) keep the element-by-element result by never copying more than the distance at once.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void MovsBulk(VirtualCpu c, int s, ulong sbase)
    {
        ulong[] R = c.R;
        Span<byte> buf = stackalloc byte[4096];
        while (R[VirtualCpu.RCX] != 0)
        {
            ulong n = R[VirtualCpu.RCX];
            ulong src = sbase + R[VirtualCpu.RSI], dst = R[VirtualCpu.RDI];
            ulong chunk = n >= 4096 ? 4096 : Math.Min(4096, n * (ulong)s);
            if (dst > src && dst - src < chunk)
            {
                if (dst - src < 64) return;
                chunk = dst - src;
            }
            chunk -= chunk % (ulong)s;
            if (chunk == 0) return;
            var span = buf.Slice(0, (int)chunk);
            try
            {
                c.Mem.ReadBytes(src, span);
                c.Mem.WriteBytes(dst, span);
            }
            catch (GuestFaultException) { return; }
            R[VirtualCpu.RSI] += chunk; R[VirtualCpu.RDI] += chunk; R[VirtualCpu.RCX] = n - chunk / (ulong)s;
        }
    }

    static void Stos(VirtualCpu c, ref Instruction i)
    {
        if (i.Op0Kind != OpKind.MemoryESRDI) Addr32String(ref i);
        int s = VirtualCpu.MemBytes[(int)i.MemorySize];
        ulong[] R = c.R;
        ulong v = R[VirtualCpu.RAX];
        long d = (c.Rflags & VirtualCpu.DF) != 0 ? -s : s;
        bool rep = i.HasRepPrefix || i.HasRepnePrefix;
        if (!rep)
        {
            try { c.Mem.Write(R[VirtualCpu.RDI], v, s); }
            catch (CodeInvalidatedException) { R[VirtualCpu.RDI] += (ulong)d; throw; }
            R[VirtualCpu.RDI] += (ulong)d;
            return;
        }
        if (d > 0 && R[VirtualCpu.RCX] >= 16) StosBulk(c, s, v);
        while (R[VirtualCpu.RCX] != 0)
        {
            try { c.Mem.Write(R[VirtualCpu.RDI], v, s); }
            catch (CodeInvalidatedException)
            {
                R[VirtualCpu.RDI] += (ulong)d;
                if (--R[VirtualCpu.RCX] != 0) c.Rip = i.IP;
                throw;
            }
            R[VirtualCpu.RDI] += (ulong)d; R[VirtualCpu.RCX]--;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void StosBulk(VirtualCpu c, int s, ulong v)
    {
        ulong[] R = c.R;
        Span<byte> buf = stackalloc byte[4096];
        // the element repeated across 8 bytes, stored a word at a time: Span<T>.Fill and MemoryMarshal.Cast are generic
        // code of the framework whose ReadyToRun code is rejected on an AVX2 host (or missing for these
        // instantiations), so they were JIT-compiled at the first rep stos of every run
        ulong word = s switch
        {
            1 => (byte)v * 0x0101010101010101UL,
            2 => (ushort)v * 0x0001000100010001UL,
            4 => (uint)v * 0x0000000100000001UL,
            _ => v,
        };
        for (int k = 0; k < buf.Length; k += sizeof(ulong)) Unsafe.WriteUnaligned(ref buf[k], word);
        while (R[VirtualCpu.RCX] != 0)
        {
            ulong n = R[VirtualCpu.RCX];
            ulong dst = R[VirtualCpu.RDI];
            // align chunks to pages of the destination so that most chunks are whole pages
            ulong chunk = 4096 - (dst & 4095);
            if (chunk < (ulong)s) chunk = 4096;
            if (n < 4096 && n * (ulong)s < chunk) chunk = n * (ulong)s;
            chunk -= chunk % (ulong)s;
            try { c.Mem.WriteBytes(dst, buf.Slice(0, (int)chunk)); }
            catch (GuestFaultException) { return; }
            R[VirtualCpu.RDI] += chunk; R[VirtualCpu.RCX] = n - chunk / (ulong)s;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void SetAcc(VirtualCpu c, ulong v, int s)
    {
        ref ulong rax = ref c.R[VirtualCpu.RAX];
        switch (s)
        {
            case 1: rax = (rax & ~0xFFUL) | (v & 0xFF); break;
            case 2: rax = (rax & ~0xFFFFUL) | (v & 0xFFFF); break;
            case 4: rax = v & 0xFFFFFFFF; break;
            default: rax = v; break;
        }
    }

    static void Lods(VirtualCpu c, ref Instruction i)
    {
        if (i.Op1Kind != OpKind.MemorySegRSI) Addr32String(ref i);
        int s = VirtualCpu.MemBytes[(int)i.MemorySize];
        ulong sbase = SrcSegBase(c, ref i);
        ulong[] R = c.R;
        long d = (c.Rflags & VirtualCpu.DF) != 0 ? -s : s;
        if (!(i.HasRepPrefix || i.HasRepnePrefix))
        {
            SetAcc(c, c.Mem.Read(sbase + R[VirtualCpu.RSI], s), s);
            R[VirtualCpu.RSI] += (ulong)d;
            return;
        }
        while (R[VirtualCpu.RCX] != 0)
        {
            SetAcc(c, c.Mem.Read(sbase + R[VirtualCpu.RSI], s), s);
            R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RCX]--;
        }
    }

    static void Cmps(VirtualCpu c, ref Instruction i)
    {
        if (i.Op0Kind != OpKind.MemorySegRSI) Addr32String(ref i);
        int s = VirtualCpu.MemBytes[(int)i.MemorySize];
        ulong sbase = SrcSegBase(c, ref i);
        ulong[] R = c.R;
        long d = (c.Rflags & VirtualCpu.DF) != 0 ? -s : s;
        ulong mask = VirtualCpu.SizeMask(s);
        if (!i.HasRepPrefix && !i.HasRepnePrefix)
        {
            ulong a = c.Mem.Read(sbase + R[VirtualCpu.RSI], s), b = c.Mem.Read(R[VirtualCpu.RDI], s);
            c.SetFlagsSub(a, b, (a - b) & mask, s);
            R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d;
            return;
        }
        ulong stopWhenZf = i.HasRepnePrefix ? VirtualCpu.ZF : 0; // repe stops when ZF = 0, repne when ZF = 1
        while (R[VirtualCpu.RCX] != 0)
        {
            ulong a = c.Mem.Read(sbase + R[VirtualCpu.RSI], s), b = c.Mem.Read(R[VirtualCpu.RDI], s);
            c.SetFlagsSub(a, b, (a - b) & mask, s);
            R[VirtualCpu.RSI] += (ulong)d; R[VirtualCpu.RDI] += (ulong)d; R[VirtualCpu.RCX]--;
            if ((c.Rflags & VirtualCpu.ZF) == stopWhenZf) break;
        }
    }

    static void Scas(VirtualCpu c, ref Instruction i)
    {
        if (i.Op1Kind != OpKind.MemoryESRDI) Addr32String(ref i);
        int s = VirtualCpu.MemBytes[(int)i.MemorySize];
        ulong[] R = c.R;
        long d = (c.Rflags & VirtualCpu.DF) != 0 ? -s : s;
        ulong mask = VirtualCpu.SizeMask(s);
        ulong a = R[VirtualCpu.RAX] & mask;
        if (!i.HasRepPrefix && !i.HasRepnePrefix)
        {
            ulong b = c.Mem.Read(R[VirtualCpu.RDI], s);
            c.SetFlagsSub(a, b, (a - b) & mask, s);
            R[VirtualCpu.RDI] += (ulong)d;
            return;
        }
        ulong stopWhenZf = i.HasRepnePrefix ? VirtualCpu.ZF : 0;
        while (R[VirtualCpu.RCX] != 0)
        {
            ulong b = c.Mem.Read(R[VirtualCpu.RDI], s);
            c.SetFlagsSub(a, b, (a - b) & mask, s);
            R[VirtualCpu.RDI] += (ulong)d; R[VirtualCpu.RCX]--;
            if ((c.Rflags & VirtualCpu.ZF) == stopWhenZf) break;
        }
    }

    // ================================================================ enter, xlat

    static void Enter(VirtualCpu c, ref Instruction i)
    {
        ulong size = i.Immediate16;
        int level = i.Immediate8_2nd & 31;
        ulong sp = c.R[VirtualCpu.RSP], bp = c.R[VirtualCpu.RBP];
        sp -= 8; c.Mem.Write64(sp, bp);
        ulong frame = sp;
        if (level > 0)
        {
            for (int k = 1; k < level; k++)
            {
                bp -= 8;
                ulong v = c.Mem.Read64(bp);
                sp -= 8; c.Mem.Write64(sp, v);
            }
            sp -= 8; c.Mem.Write64(sp, frame);
        }
        c.R[VirtualCpu.RBP] = frame;
        c.R[VirtualCpu.RSP] = sp - size;
    }

    static void Xlat(VirtualCpu c, ref Instruction i)
    {
        ulong a = SrcSegBase(c, ref i) + c.R[VirtualCpu.RBX] + (c.R[VirtualCpu.RAX] & 0xFF);
        c.R[VirtualCpu.RAX] = (c.R[VirtualCpu.RAX] & ~0xFFUL) | c.Mem.Read8(a);
    }
}
