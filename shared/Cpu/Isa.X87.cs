using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>x87 floating point, on the bit-exact <see cref="Float80"/> model (transcendentals via double).</summary>
public static unsafe partial class Isa
{
    static partial void RegisterX87()
    {
        Reg(Mnemonic.Fld, &Fld); Reg(Mnemonic.Fild, &Fild);
        Reg(Mnemonic.Fld1, &FldConst); Reg(Mnemonic.Fldz, &FldConst); Reg(Mnemonic.Fldpi, &FldConst);
        Reg(Mnemonic.Fldl2e, &FldConst); Reg(Mnemonic.Fldl2t, &FldConst); Reg(Mnemonic.Fldlg2, &FldConst); Reg(Mnemonic.Fldln2, &FldConst);
        Reg(Mnemonic.Fst, &Fst); Reg(Mnemonic.Fstp, &Fst);
        Reg(Mnemonic.Fbld, &Fbld); Reg(Mnemonic.Fbstp, &Fbstp);
        Reg(Mnemonic.Fist, &Fist); Reg(Mnemonic.Fistp, &Fist); Reg(Mnemonic.Fisttp, &Fist);
        foreach (var m in new[] { Mnemonic.Fadd, Mnemonic.Faddp, Mnemonic.Fiadd, Mnemonic.Fsub, Mnemonic.Fsubp, Mnemonic.Fisub,
                                  Mnemonic.Fsubr, Mnemonic.Fsubrp, Mnemonic.Fisubr, Mnemonic.Fmul, Mnemonic.Fmulp, Mnemonic.Fimul,
                                  Mnemonic.Fdiv, Mnemonic.Fdivp, Mnemonic.Fidiv, Mnemonic.Fdivr, Mnemonic.Fdivrp, Mnemonic.Fidivr })
            Reg(m, &FArith);
        Reg(Mnemonic.Fchs, &FUnary); Reg(Mnemonic.Fabs, &FUnary); Reg(Mnemonic.Fsqrt, &FUnary); Reg(Mnemonic.Frndint, &FUnary);
        Reg(Mnemonic.Fsin, &FUnary); Reg(Mnemonic.Fcos, &FUnary); Reg(Mnemonic.F2xm1, &FUnary);
        Reg(Mnemonic.Fsincos, &Fsincos); Reg(Mnemonic.Fptan, &Fptan);
        Reg(Mnemonic.Fpatan, &FBinaryPop); Reg(Mnemonic.Fyl2x, &FBinaryPop); Reg(Mnemonic.Fyl2xp1, &FBinaryPop);
        Reg(Mnemonic.Fscale, &Fscale); Reg(Mnemonic.Fprem, &Fprem); Reg(Mnemonic.Fprem1, &Fprem); Reg(Mnemonic.Fxtract, &Fxtract);
        Reg(Mnemonic.Fxch, &Fxch);
        foreach (var m in new[] { Mnemonic.Fcom, Mnemonic.Fcomp, Mnemonic.Fcompp, Mnemonic.Fucom, Mnemonic.Fucomp, Mnemonic.Fucompp,
                                  Mnemonic.Ficom, Mnemonic.Ficomp, Mnemonic.Ftst })
            Reg(m, &Fcom);
        Reg(Mnemonic.Fcomi, &Fcomi); Reg(Mnemonic.Fcomip, &Fcomi); Reg(Mnemonic.Fucomi, &Fcomi); Reg(Mnemonic.Fucomip, &Fcomi);
        Reg(Mnemonic.Fxam, &Fxam);
        foreach (var m in new[] { Mnemonic.Fcmovb, Mnemonic.Fcmove, Mnemonic.Fcmovbe, Mnemonic.Fcmovu, Mnemonic.Fcmovnb, Mnemonic.Fcmovne, Mnemonic.Fcmovnbe, Mnemonic.Fcmovnu })
            Reg(m, &Fcmov);
        Reg(Mnemonic.Fldcw, &Fldcw); Reg(Mnemonic.Fnstcw, &Fnstcw); Reg(Mnemonic.Fstcw, &Fnstcw);
        Reg(Mnemonic.Fnstsw, &Fnstsw); Reg(Mnemonic.Fstsw, &Fnstsw);
        Reg(Mnemonic.Fninit, &Fninit); Reg(Mnemonic.Finit, &Fninit); Reg(Mnemonic.Fnclex, &Fnclex); Reg(Mnemonic.Fclex, &Fnclex);
        Reg(Mnemonic.Wait, &Nop); Reg(Mnemonic.Fnop, &Nop);
        Reg(Mnemonic.Ffree, &Ffree); Reg(Mnemonic.Ffreep, &Ffreep); Reg(Mnemonic.Fincstp, &Fincstp); Reg(Mnemonic.Fdecstp, &Fdecstp);
        Reg(Mnemonic.Fnstenv, &Fnstenv); Reg(Mnemonic.Fstenv, &Fnstenv); Reg(Mnemonic.Fldenv, &Fldenv);
    }

    static int StIndex(Register r) => r - Register.ST0;

    static void FpStatus(VirtualCpu c, X87Status s, bool setConditions = false)
    {
        if (setConditions) c.Fsw = (ushort)((c.Fsw & ~(ushort)X87Status.ConditionMask) | ((ushort)s & (ushort)X87Status.ConditionMask));
        else c.Fsw &= unchecked((ushort)~0x0200); // C1 cleared unless set below
        c.Fsw |= (ushort)((ushort)s & (ushort)X87Status.ExceptionMask);
        if (!setConditions && (s & X87Status.C1) != 0) c.Fsw |= 0x0200;
        if ((c.Fsw & ~c.Fcw & 0x3F) != 0) c.Fsw |= 0x8080; // ES and B (exceptions are masked by default; recorded only)
    }

    /// <summary>True (after the masked #IS response: IE, SF, C1 = 0) when any of the named stack registers is empty.</summary>
    static bool Underflow(VirtualCpu c, int a, int b = -1)
    {
        if (!c.StEmpty(a) && (b < 0 || !c.StEmpty(b))) return false;
        c.FpStackUnderflow();
        return true;
    }

    /// <summary>
    /// Reads an arithmetic/compare source operand exactly, without exception processing: an m32/m64 SNaN stays
    /// signalling (so the NaN rules of the operation apply) and a denormal m32/m64 is reported through
    /// <paramref name="denormal"/> (the operation raises #D only when no NaN or invalid operand takes precedence).
    /// </summary>
    static Float80 FpOperandMem(VirtualCpu c, ref Instruction i, out bool denormal)
    {
        ulong ea = c.Ea(ref i);
        denormal = false;
        return i.MemorySize switch
        {
            MemorySize.Float32 => Float80.FromSingleOperand(BitConverter.Int32BitsToSingle((int)c.Mem.Read32(ea)), out denormal),
            MemorySize.Float64 => Float80.FromDoubleOperand(BitConverter.Int64BitsToDouble((long)c.Mem.Read64(ea)), out denormal),
            _ => FpLoadMem(c, ref i, out _),
        };
    }

    /// <summary>Reads a floating or integer memory operand as an 80-bit value.</summary>
    static Float80 FpLoadMem(VirtualCpu c, ref Instruction i, out X87Status st)
    {
        ulong ea = c.Ea(ref i);
        st = X87Status.None;
        switch (i.MemorySize)
        {
            case MemorySize.Float32: return Float80.FromSingle(BitConverter.Int32BitsToSingle((int)c.Mem.Read32(ea)), out st);
            case MemorySize.Float64: return Float80.FromDouble(BitConverter.Int64BitsToDouble((long)c.Mem.Read64(ea)), out st);
            case MemorySize.Float80:
                {
                    ulong m = c.Mem.Read64(ea); ushort se = c.Mem.Read16(ea + 8);
                    return new Float80(m, se);
                }
            case MemorySize.Int16: return Float80.FromInt16((short)c.Mem.Read16(ea));
            case MemorySize.Int32: return Float80.FromInt32((int)c.Mem.Read32(ea));
            case MemorySize.Int64: return Float80.FromInt64((long)c.Mem.Read64(ea));
            default: throw new GuestSignalException(4, $"unsupported x87 operand size {i.MemorySize} at 0x{i.IP:x}", 2, i.IP);
        }
    }

    static void Fld(VirtualCpu c, ref Instruction i)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            int k = StIndex(i.Op0Register);
            c.Fsw &= unchecked((ushort)~0x0200); // C1 = 0 unless the push overflows
            bool under = Underflow(c, k);
            c.FpPush(under ? Float80.Indefinite : c.St(k));
            if (under) c.Fsw &= unchecked((ushort)~0x0200); // underflow and overflow at once: reported as underflow
            return;
        }
        var x = FpLoadMem(c, ref i, out var st);
        if (c.StEmpty(7)) FpStatus(c, st); // on stack overflow only #IS is reported
        c.FpPush(x);
    }

    static void Fild(VirtualCpu c, ref Instruction i) => Fld(c, ref i);

    static void FldConst(VirtualCpu c, ref Instruction i)
    {
        var k = i.Mnemonic switch
        {
            Mnemonic.Fld1 => Float80.Constant.One,
            Mnemonic.Fldz => Float80.Constant.Zero,
            Mnemonic.Fldpi => Float80.Constant.Pi,
            Mnemonic.Fldl2e => Float80.Constant.Log2E,
            Mnemonic.Fldl2t => Float80.Constant.Log2Ten,
            Mnemonic.Fldlg2 => Float80.Constant.Log10Two,
            _ => Float80.Constant.LnTwo,
        };
        c.Fsw &= unchecked((ushort)~0x0200);
        c.FpPush(Float80.LoadConstant(k, c.FpRounding));
    }

    static void Fst(VirtualCpu c, ref Instruction i)
    {
        if (c.StEmpty(0))
        {
            // memory first: a faulting store leaves the x87 state untouched
            if (i.Op0Kind == OpKind.Register) c.SetSt(StIndex(i.Op0Register), Float80.Indefinite);
            else
            {
                ulong a = c.Ea(ref i);
                switch (i.MemorySize)
                {
                    case MemorySize.Float32: c.Mem.Write32(a, 0xFFC0_0000); break;
                    case MemorySize.Float64: c.Mem.Write64(a, 0xFFF8_0000_0000_0000); break;
                    default: c.Mem.Write64(a, Float80.Indefinite.Mantissa); c.Mem.Write16(a + 8, Float80.Indefinite.SignExp); break;
                }
            }
            c.FpStackUnderflow();
            if (i.Mnemonic == Mnemonic.Fstp) c.FpPop();
            return;
        }
        var v = c.St(0);
        if (i.Op0Kind == OpKind.Register) { c.SetSt(StIndex(i.Op0Register), v); c.Fsw &= unchecked((ushort)~0x0200); }
        else
        {
            ulong ea = c.Ea(ref i);
            X87Status st = X87Status.None;
            switch (i.MemorySize)
            {
                case MemorySize.Float32: c.Mem.Write32(ea, (uint)BitConverter.SingleToInt32Bits(Float80.ToSingle(v, c.FpRounding, out st))); break;
                case MemorySize.Float64: c.Mem.Write64(ea, (ulong)BitConverter.DoubleToInt64Bits(Float80.ToDouble(v, c.FpRounding, out st))); break;
                default: c.Mem.Write64(ea, v.Mantissa); c.Mem.Write16(ea + 8, v.SignExp); break;
            }
            FpStatus(c, st);
        }
        if (i.Mnemonic == Mnemonic.Fstp) c.FpPop();
    }

    static void Fist(VirtualCpu c, ref Instruction i)
    {
        var v = c.St(0);
        var rc = i.Mnemonic == Mnemonic.Fisttp ? X87Rounding.TowardZero : c.FpRounding;
        ulong ea = c.Ea(ref i);
        X87Status st;
        if (c.StEmpty(0))
        {
            switch (i.MemorySize)
            {
                case MemorySize.Int16: c.Mem.Write16(ea, 0x8000); break;
                case MemorySize.Int32: c.Mem.Write32(ea, 0x8000_0000); break;
                default: c.Mem.Write64(ea, 0x8000_0000_0000_0000); break;
            }
            c.FpStackUnderflow();
            if (i.Mnemonic != Mnemonic.Fist) c.FpPop();
            return;
        }
        switch (i.MemorySize)
        {
            case MemorySize.Int16: c.Mem.Write16(ea, (ushort)Float80.ToInt16(v, rc, out st)); break;
            case MemorySize.Int32: c.Mem.Write32(ea, (uint)Float80.ToInt32(v, rc, out st)); break;
            default: c.Mem.Write64(ea, (ulong)Float80.ToInt64(v, rc, out st)); break;
        }
        FpStatus(c, st);
        if (i.Mnemonic != Mnemonic.Fist) c.FpPop();
    }

    static void Fbld(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        Span<byte> b = stackalloc byte[10];
        c.Mem.ReadBytes(ea, b);
        c.Fsw &= unchecked((ushort)~0x0200);
        c.FpPush(Float80.FromBcd(b));
    }

    static void Fbstp(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        Span<byte> b = stackalloc byte[10];
        bool empty = c.StEmpty(0);
        X87Status st = X87Status.None;
        if (empty)
        {
            b.Clear();
            b[7] = 0xC0; b[8] = 0xFF; b[9] = 0xFF; // the packed BCD indefinite
        }
        else Float80.ToBcd(c.St(0), c.FpRounding, b, out st);
        c.Mem.WriteBytes(ea, b); // before any x87 state changes, in case it faults
        if (empty) c.FpStackUnderflow();
        else FpStatus(c, st);
        c.FpPop();
    }

    static void FArith(VirtualCpu c, ref Instruction i)
    {
        // destination and source: memory forms operate on ST0; register forms name both
        Float80 src;
        int dst;
        bool dn = false;
        if (i.OpCount == 1 && i.Op0Kind == OpKind.Memory) { dst = 0; src = FpOperandMem(c, ref i, out dn); }
        else if (i.OpCount == 2) { dst = StIndex(i.Op0Register); src = c.St(StIndex(i.Op1Register)); }
        else { dst = 1; src = c.St(0); } // faddp etc. without operands
        bool pop = i.Mnemonic is Mnemonic.Faddp or Mnemonic.Fsubp or Mnemonic.Fsubrp or Mnemonic.Fmulp or Mnemonic.Fdivp or Mnemonic.Fdivrp;
        if (Underflow(c, dst, i.OpCount == 2 ? StIndex(i.Op1Register) : i.OpCount == 1 ? 0 : 0))
        {
            c.SetSt(dst, Float80.Indefinite);
            if (pop) c.FpPop();
            return;
        }
        ref Float80 d = ref c.St(dst);
        var rc = c.FpRounding; var pc = c.FpPrecision;
        Float80 r; X87Status s2;
        switch (i.Mnemonic)
        {
            case Mnemonic.Fadd: case Mnemonic.Faddp: case Mnemonic.Fiadd: r = Float80.Add(d, src, rc, out s2, pc, dn); break;
            case Mnemonic.Fsub: case Mnemonic.Fsubp: case Mnemonic.Fisub: r = Float80.Sub(d, src, rc, out s2, pc, dn); break;
            case Mnemonic.Fsubr: case Mnemonic.Fsubrp: case Mnemonic.Fisubr: r = Float80.Sub(src, d, rc, out s2, pc, dn); break;
            case Mnemonic.Fmul: case Mnemonic.Fmulp: case Mnemonic.Fimul: r = Float80.Mul(d, src, rc, out s2, pc, dn); break;
            case Mnemonic.Fdiv: case Mnemonic.Fdivp: case Mnemonic.Fidiv: r = Float80.Div(d, src, rc, out s2, pc, dn); break;
            default: r = Float80.Div(src, d, rc, out s2, pc, dn); break;
        }
        d = r;
        FpStatus(c, s2);
        if (pop) c.FpPop();
    }

    static void FUnary(VirtualCpu c, ref Instruction i)
    {
        if (Underflow(c, 0))
        {
            c.SetSt(0, Float80.Indefinite);
            if (i.Mnemonic is Mnemonic.Fsin or Mnemonic.Fcos) c.Fsw &= unchecked((ushort)~0x0400);
            return;
        }
        ref Float80 a = ref c.St(0);
        X87Status st = X87Status.None;
        var rc = c.FpRounding;
        switch (i.Mnemonic)
        {
            case Mnemonic.Fchs: a = Float80.Neg(a); break;
            case Mnemonic.Fabs: a = Float80.Abs(a); break;
            case Mnemonic.Fsqrt: a = Float80.Sqrt(a, rc, out st, c.FpPrecision); break;
            case Mnemonic.Frndint: a = Float80.RoundToInteger(a, rc, out st); break;
            case Mnemonic.Fsin: a = Float80.Sin(a, rc, out st); FpStatus(c, st, true); return;
            case Mnemonic.Fcos: a = Float80.Cos(a, rc, out st); FpStatus(c, st, true); return;
            case Mnemonic.F2xm1: a = Float80.F2xm1(a, rc, out st); break;
        }
        FpStatus(c, st);
    }

    /// <summary>FXTRACT/FPTAN/FSINCOS: an empty ST0 or a full stack gives two indefinites.</summary>
    static bool PushingFault(VirtualCpu c, bool clearC2)
    {
        bool under = c.StEmpty(0), over = !c.StEmpty(7);
        if (!under && !over) return false;
        if (clearC2) c.Fsw &= unchecked((ushort)~0x0400); // FPTAN/FSINCOS: C2 = 0; FXTRACT leaves it (AMD)
        if (under) c.FpStackUnderflow();
        c.SetSt(0, Float80.Indefinite);
        c.FpPush(Float80.Indefinite);
        if (under) c.Fsw &= unchecked((ushort)~0x0200); // underflow and overflow at once: reported as underflow
        return true;
    }

    static void Fsincos(VirtualCpu c, ref Instruction i)
    {
        if (PushingFault(c, true)) return;
        var s = Float80.SinCos(c.St(0), c.FpRounding, out var cos, out var st);
        FpStatus(c, st, true);
        if ((st & X87Status.C2) != 0) return; // out of range: operand unchanged
        c.St(0) = s;
        c.FpPush(cos);
    }

    static void Fptan(VirtualCpu c, ref Instruction i)
    {
        if (PushingFault(c, true)) return;
        var t = Float80.Tan(c.St(0), c.FpRounding, out var pushed, out var st);
        FpStatus(c, st, true);
        if ((st & X87Status.C2) != 0) return;
        c.St(0) = t;
        c.FpPush(pushed);
    }

    static void FBinaryPop(VirtualCpu c, ref Instruction i)
    {
        if (Underflow(c, 0, 1))
        {
            c.SetSt(1, Float80.Indefinite);
            c.FpPop();
            return;
        }
        Float80 st0 = c.St(0), st1 = c.St(1), r;
        X87Status st;
        switch (i.Mnemonic)
        {
            case Mnemonic.Fpatan: r = Float80.Atan2(st1, st0, c.FpRounding, out st); break;
            case Mnemonic.Fyl2x: r = Float80.Yl2x(st0, st1, c.FpRounding, out st); break;
            default: r = Float80.Yl2xp1(st0, st1, c.FpRounding, out st); break;
        }
        c.St(1) = r;
        FpStatus(c, st);
        c.FpPop();
    }

    static void Fscale(VirtualCpu c, ref Instruction i)
    {
        if (Underflow(c, 0, 1)) { c.SetSt(0, Float80.Indefinite); return; }
        c.St(0) = Float80.Scale(c.St(0), c.St(1), c.FpRounding, out var st);
        FpStatus(c, st);
    }

    static void Fprem(VirtualCpu c, ref Instruction i)
    {
        if (Underflow(c, 0, 1))
        {
            c.Fsw &= unchecked((ushort)~(ushort)X87Status.C2); // C0 and C3 are left alone (as AMD hardware does)
            c.SetSt(0, Float80.Indefinite);
            return;
        }
        Float80 x = c.St(0), y = c.St(1);
        var r = i.Mnemonic == Mnemonic.Fprem ? Float80.Prem(x, y, out var st) : Float80.Prem1(x, y, out st);
        c.St(0) = r;
        if (x.IsNaN || y.IsNaN || x.IsUnsupported || y.IsUnsupported || x.IsInfinity || y.IsZero)
        {
            // NaN or invalid-operation result: C2 and C1 cleared, C0 and C3 left as they were
            c.Fsw &= unchecked((ushort)~(ushort)(X87Status.C1 | X87Status.C2));
            FpStatus(c, st & X87Status.ExceptionMask);
        }
        else FpStatus(c, st, true);
    }

    static void Fxtract(VirtualCpu c, ref Instruction i)
    {
        if (PushingFault(c, false)) return;
        var sig = Float80.Xtract(c.St(0), out var exp, out var st);
        c.St(0) = exp;
        c.FpPush(sig);
        FpStatus(c, st);
    }

    static void Fxch(VirtualCpu c, ref Instruction i)
    {
        int k = i.OpCount == 2 ? StIndex(i.Op1Register) : 1;
        c.Fsw &= unchecked((ushort)~0x0200);
        Float80 a = c.St(0), b = c.St(k);
        if (Underflow(c, 0, k))
        {
            if (c.StEmpty(0)) a = Float80.Indefinite;
            if (c.StEmpty(k)) b = Float80.Indefinite;
        }
        c.SetSt(0, b);
        c.SetSt(k, a);
    }

    static void Fcom(VirtualCpu c, ref Instruction i)
    {
        Float80 b;
        bool dn = false;
        if (i.Mnemonic == Mnemonic.Ftst) b = Float80.Zero;
        else if (i.OpCount >= 1 && i.Op0Kind == OpKind.Memory) b = FpOperandMem(c, ref i, out dn);
        else if (i.OpCount == 2) b = c.St(StIndex(i.Op1Register));
        else if (i.OpCount == 1) b = c.St(StIndex(i.Op0Register));
        else b = c.St(1);
        bool unordered = i.Mnemonic is Mnemonic.Fucom or Mnemonic.Fucomp or Mnemonic.Fucompp;
        int other = i.Mnemonic == Mnemonic.Ftst || i.Op0Kind == OpKind.Memory ? 0
            : i.OpCount == 2 ? StIndex(i.Op1Register) : i.OpCount == 1 ? StIndex(i.Op0Register) : 1;
        if (Underflow(c, 0, other))
            c.Fsw |= (ushort)(X87Status.C0 | X87Status.C2 | X87Status.C3);
        else
        {
            Float80.Compare(c.St(0), b, !unordered, out var st, dn);
            FpStatus(c, st & ~X87Status.C1, true);
        }
        if (i.Mnemonic is Mnemonic.Fcomp or Mnemonic.Fucomp or Mnemonic.Ficomp) c.FpPop();
        else if (i.Mnemonic is Mnemonic.Fcompp or Mnemonic.Fucompp) { c.FpPop(); c.FpPop(); }
    }

    static void Fcomi(VirtualCpu c, ref Instruction i)
    {
        var b = c.St(StIndex(i.Op1Register));
        bool unordered = i.Mnemonic is Mnemonic.Fucomi or Mnemonic.Fucomip;
        X87Status st;
        if (Underflow(c, 0, StIndex(i.Op1Register))) st = X87Status.C0 | X87Status.C2 | X87Status.C3;
        else Float80.Compare(c.St(0), b, !unordered, out st);
        ulong f = 0;
        if ((st & X87Status.C3) != 0) f |= VirtualCpu.ZF;
        if ((st & X87Status.C2) != 0) f |= VirtualCpu.PF;
        if ((st & X87Status.C0) != 0) f |= VirtualCpu.CF;
        c.Rflags = (c.Rflags & ~VirtualCpu.ArithFlags) | f;
        // exception flags only: C1 is left unchanged (as AMD hardware does; Intel documents C1 = 0)
        c.Fsw |= (ushort)(st & X87Status.ExceptionMask);
        if ((c.Fsw & ~c.Fcw & 0x3F) != 0) c.Fsw |= 0x8080;
        if (i.Mnemonic is Mnemonic.Fcomip or Mnemonic.Fucomip) c.FpPop();
    }

    static void Fxam(VirtualCpu c, ref Instruction i)
    {
        X87Status st = c.StEmpty(0) ? Float80.ExamineEmpty | (c.St(0).Sign ? X87Status.C1 : 0) : Float80.Examine(c.St(0));
        c.Fsw = (ushort)((c.Fsw & ~(ushort)X87Status.ConditionMask) | (ushort)st);
    }

    static void Fcmov(VirtualCpu c, ref Instruction i)
    {
        bool take = i.Mnemonic switch
        {
            Mnemonic.Fcmovb => c.Flag(VirtualCpu.CF),
            Mnemonic.Fcmove => c.Flag(VirtualCpu.ZF),
            Mnemonic.Fcmovbe => c.Flag(VirtualCpu.CF) || c.Flag(VirtualCpu.ZF),
            Mnemonic.Fcmovu => c.Flag(VirtualCpu.PF),
            Mnemonic.Fcmovnb => !c.Flag(VirtualCpu.CF),
            Mnemonic.Fcmovne => !c.Flag(VirtualCpu.ZF),
            Mnemonic.Fcmovnbe => !c.Flag(VirtualCpu.CF) && !c.Flag(VirtualCpu.ZF),
            _ => !c.Flag(VirtualCpu.PF),
        };
        if (Underflow(c, 0, StIndex(i.Op1Register))) c.SetSt(0, Float80.Indefinite);
        else if (take) c.St(0) = c.St(StIndex(i.Op1Register));
    }

    static void Fldcw(VirtualCpu c, ref Instruction i) => c.Fcw = VirtualCpu.SanitizeFcw(c.Mem.Read16(c.Ea(ref i)));
    static void Fnstcw(VirtualCpu c, ref Instruction i) => c.Mem.Write16(c.Ea(ref i), c.Fcw);

    static void Fnstsw(VirtualCpu c, ref Instruction i)
    {
        if (i.Op0Kind == OpKind.Register) c.SetReg(i.Op0Register, c.FswWithTop);
        else c.Mem.Write16(c.Ea(ref i), c.FswWithTop);
    }

    static void Fninit(VirtualCpu c, ref Instruction i) => c.FpInit();
    static void Fnclex(VirtualCpu c, ref Instruction i) => c.Fsw &= 0x7F00;
    static void Ffree(VirtualCpu c, ref Instruction i)
    {
        c.FpEmpty |= (byte)(1 << ((c.FpTop + StIndex(i.Op0Register)) & 7));
        c.Fsw &= unchecked((ushort)~0x0200); // C1 cleared (as AMD hardware does; undefined in the manuals)
    }
    static void Ffreep(VirtualCpu c, ref Instruction i) { Ffree(c, ref i); c.FpPop(); }
    static void Fincstp(VirtualCpu c, ref Instruction i) { c.FpTop = (c.FpTop + 1) & 7; c.Fsw &= unchecked((ushort)~0x0200); }
    static void Fdecstp(VirtualCpu c, ref Instruction i) { c.FpTop = (c.FpTop - 1) & 7; c.Fsw &= unchecked((ushort)~0x0200); }

    static ushort FullTag(VirtualCpu c)
    {
        ushort tag = 0;
        for (int p = 0; p < 8; p++)
        {
            int t;
            if ((c.FpEmpty & (1 << p)) != 0) t = 3;
            else
            {
                var v = c.Fpr[p];
                if (v.IsZero) t = 1;
                else if (v.BiasedExponent == 0x7FFF || v.BiasedExponent == 0 || v.IsUnsupported) t = 2;
                else t = 0;
            }
            tag |= (ushort)(t << (2 * p));
        }
        return tag;
    }

    static void Fnstenv(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        c.Mem.Write32(ea, c.Fcw | 0xFFFF0000u);
        c.Mem.Write32(ea + 4, c.FswWithTop | 0xFFFF0000u);
        c.Mem.Write32(ea + 8, FullTag(c) | 0xFFFF0000u);
        for (ulong k = 12; k < 28; k += 4) c.Mem.Write32(ea + k, 0);
        c.Fcw |= 0x3F; // fnstenv masks all exceptions
    }

    static void Fldenv(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        c.Fcw = VirtualCpu.SanitizeFcw((int)c.Mem.Read32(ea));
        ushort sw = (ushort)c.Mem.Read32(ea + 4);
        c.FpTop = (sw >> 11) & 7;
        c.Fsw = (ushort)(sw & ~0x3800);
        ushort tag = (ushort)c.Mem.Read32(ea + 8);
        byte empty = 0;
        for (int p = 0; p < 8; p++) if (((tag >> (2 * p)) & 3) == 3) empty |= (byte)(1 << p);
        c.FpEmpty = empty;
    }
}
