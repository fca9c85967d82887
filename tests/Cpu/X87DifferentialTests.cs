using System.Globalization;
using System.Text;
using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static ReVirt.Tests.Oracle.CpuSnapshot;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Differential tests of the x87 instructions: every legacy 64-bit-mode form (Iced Code) of each mnemonic under test
/// runs natively (<see cref="NativeRunner"/>) and in the VM (<see cref="VmRunner"/>). Each snippet sets a random
/// control word (rounding, precision), pushes 0..8 random 80-bit values (NaNs, infinities, denormals, unnormals,
/// integers, halfway cases...), runs the instruction, then captures the x87 state in memory: FNSTSW AX (+ SAHF, so
/// RFLAGS holds C0/C2/C3 too, unless the instruction itself sets RFLAGS) and FXSAVE (FCW, FSW with TOP, abridged
/// tags, ST0-7). Stores go to the scratch memory as well. Hardware-specific fields (FIP/FDP/FOP, MXCSR_MASK,
/// reserved padding) are masked before comparing. Transcendentals are compared within a tolerance in a separate test.
/// </summary>
/// <remarks>
/// <para>Before the snippet proper, every physical register is written with +0 and emptied (8x FLDZ, 8x FSTP ST0) so
/// that the stale register contents the host leaves behind FNINIT do not show in the FXSAVE image.</para>
/// <para>Compared exactly: ST0-7 bits, tags, TOP, C0-C3, IE DE ZE OE UE PE SF ES B, FCW, FNSTENV images, stored memory,
/// RFLAGS from FCOMI/SAHF. Where the manuals leave a condition code undefined (C1 after FCOMI/FFREE, C0/C3 after a
/// faulting FPREM, C2 after a faulting FXTRACT, ...) the VM follows the AMD hardware these tests were written on.</para>
/// <para>Not compared, and not matching: FIP/FCS/FOP/FDP/FDS (the VM stores zeros), MXCSR_MASK and FXSAVE padding. Not
/// testable here: unmasked x87 exceptions (the host would fault; the VM records ES/B but raises no #MF/SIGFPE).
/// Transcendentals are computed through double in the VM: see <see cref="TranscendentalUlps"/>; their C1 (round-up)
/// and PE/UE are not compared.</para>
/// <para>X87_SEED and X87_SCALE (environment) run other random streams and more cases by hand.</para>
/// </remarks>
public class X87DifferentialTests(Xunit.Abstractions.ITestOutputHelper output)
{
    const int CwOff = 0x000, StackOff = 0x010, MemOff = 0x100, FxOff = 0x400;
    const ulong Base = NativeRunner.ScratchBase;

    public static readonly Dictionary<string, (Mnemonic[] Mnemonics, int PerCode)> Families = new()
    {
        ["load"] = ([Mnemonic.Fld, Mnemonic.Fild, Mnemonic.Fld1, Mnemonic.Fldz, Mnemonic.Fldpi, Mnemonic.Fldl2e, Mnemonic.Fldl2t,
                     Mnemonic.Fldlg2, Mnemonic.Fldln2, Mnemonic.Fbld], 120),
        ["store"] = ([Mnemonic.Fst, Mnemonic.Fstp, Mnemonic.Fist, Mnemonic.Fistp, Mnemonic.Fisttp, Mnemonic.Fbstp], 200),
        ["arith"] = ([Mnemonic.Fadd, Mnemonic.Faddp, Mnemonic.Fiadd, Mnemonic.Fsub, Mnemonic.Fsubp, Mnemonic.Fisub,
                      Mnemonic.Fsubr, Mnemonic.Fsubrp, Mnemonic.Fisubr, Mnemonic.Fmul, Mnemonic.Fmulp, Mnemonic.Fimul,
                      Mnemonic.Fdiv, Mnemonic.Fdivp, Mnemonic.Fidiv, Mnemonic.Fdivr, Mnemonic.Fdivrp, Mnemonic.Fidivr], 120),
        ["unary"] = ([Mnemonic.Fchs, Mnemonic.Fabs, Mnemonic.Fsqrt, Mnemonic.Frndint], 400),
        ["misc"] = ([Mnemonic.Fscale, Mnemonic.Fprem, Mnemonic.Fprem1, Mnemonic.Fxtract, Mnemonic.Fxch], 300),
        ["compare"] = ([Mnemonic.Fcom, Mnemonic.Fcomp, Mnemonic.Fcompp, Mnemonic.Fucom, Mnemonic.Fucomp, Mnemonic.Fucompp,
                        Mnemonic.Ficom, Mnemonic.Ficomp, Mnemonic.Ftst, Mnemonic.Fxam, Mnemonic.Fcomi, Mnemonic.Fcomip,
                        Mnemonic.Fucomi, Mnemonic.Fucomip, Mnemonic.Fcmovb, Mnemonic.Fcmove, Mnemonic.Fcmovbe, Mnemonic.Fcmovu,
                        Mnemonic.Fcmovnb, Mnemonic.Fcmovne, Mnemonic.Fcmovnbe, Mnemonic.Fcmovnu], 100),
        ["control"] = ([Mnemonic.Fnstsw, Mnemonic.Fstsw, Mnemonic.Fnstcw, Mnemonic.Fstcw, Mnemonic.Fldcw, Mnemonic.Fnstenv,
                        Mnemonic.Fstenv, Mnemonic.Fldenv, Mnemonic.Ffree, Mnemonic.Ffreep, Mnemonic.Fincstp, Mnemonic.Fdecstp,
                        Mnemonic.Fninit, Mnemonic.Finit, Mnemonic.Fnclex, Mnemonic.Fclex, Mnemonic.Fnop], 80),
    };

    public static IEnumerable<object[]> FamilyNames() => Families.Keys.Select(k => new object[] { k });

    static readonly Mnemonic[] Transcendentals =
        [Mnemonic.Fsin, Mnemonic.Fcos, Mnemonic.Fsincos, Mnemonic.Fptan, Mnemonic.Fpatan, Mnemonic.F2xm1, Mnemonic.Fyl2x, Mnemonic.Fyl2xp1];

    /// <summary>One generated case: the instruction(s) under test (one 0x40-byte memory slot each), snippet and input.</summary>
    sealed record Case(Instruction[] Seq, byte[] Code, CpuSnapshot Input, int Depth, ushort Cw)
    {
        public Instruction Ins => Seq[0];
    }

    const int SlotSize = 0x40, MaxSeq = 4;

    // ---------------------------------------------------------------- value generators

    const ulong IntBit = 1UL << 63;

    static ulong RandMant(Random r) => IntBit | (ulong)r.NextInt64() | (r.Next(2) == 0 ? 0 : (ulong)r.Next(2) << 62);

    /// <summary>A random 80-bit value biased to special and edge cases.</summary>
    static Float80 Rand80(Random r)
    {
        ushort s = (ushort)(r.Next(2) << 15);
        switch (r.Next(20))
        {
            case 0: return new Float80(0, s);
            case 1: return new Float80(IntBit, (ushort)(s | 0x7FFF));
            case 2:
            {
                // NaNs: quiet / signalling, random or small payloads, the indefinite
                ulong m = IntBit | ((ulong)r.Next(2) << 62);
                m |= r.Next(3) switch { 0 => (ulong)r.NextInt64() & ((1UL << 62) - 1), 1 => (ulong)r.Next(1, 16) << 11, _ => 0 };
                if ((m << 1) == 0) m |= 1UL << r.Next(0, 62);
                return new Float80(m, (ushort)(s | 0x7FFF));
            }
            case 3:
            {
                // denormal (rarely pseudo-denormal)
                ulong m = ((ulong)r.NextInt64() >> r.Next(1, 64)) | 1;
                if (r.Next(6) == 0) m |= IntBit;
                return new Float80(m & (r.Next(6) == 0 ? ulong.MaxValue : ~IntBit), s);
            }
            case 4:
                if (r.Next(3) != 0) goto default;
                // unsupported encodings: unnormal, pseudo-infinity, pseudo-NaN
                return new Float80((ulong)r.NextInt64() >> r.Next(1, 64), (ushort)(s | (r.Next(4) == 0 ? 0x7FFF : r.Next(1, 0x7FFF))));
            case 5: return Float80.FromInt64(r.Next(-300, 300));
            case 6:
            {
                // around integer limits, with fractions
                int e = new[] { 14, 15, 16, 30, 31, 32, 62, 63, 64 }[r.Next(9)];
                ulong m = r.Next(3) switch { 0 => IntBit, 1 => ulong.MaxValue, _ => RandMant(r) };
                if (r.Next(2) == 0) m = (m >> 1 << 1) | 0;
                return new Float80(m, (ushort)(s | (16383 + e)));
            }
            case 7:
            {
                // halfway and quarter cases for rounding to integer
                long n = r.Next(3) == 0 ? r.NextInt64(0, 1L << 62) : r.Next(0, 64);
                double frac = new[] { 0.5, 0.25, 0.75, 0.5, 0.125 }[r.Next(5)];
                var f = Float80.Add(Float80.FromInt64(n), Float80.FromDouble(frac), X87Rounding.Nearest, out _);
                return new Float80(f.Mantissa, (ushort)(f.SignExp | s));
            }
            case 8: return Float80.FromDouble(BitConverter.Int64BitsToDouble((long)RandDouble(r)));
            case 9: return Float80.FromSingle(BitConverter.Int32BitsToSingle((int)RandSingle(r)));
            case 10:
            {
                // near the overflow thresholds of 80/64/32-bit formats
                int e = new[] { 16383, 16382, 1023, 1024, 127, 128 }[r.Next(6)] + r.Next(-2, 2);
                ulong m = r.Next(2) == 0 ? ulong.MaxValue << r.Next(0, 41) : RandMant(r);
                return new Float80(m, (ushort)(s | Math.Clamp(e + 16383, 1, 0x7FFE)));
            }
            case 11:
            {
                // near the underflow thresholds (80-bit: biased 1, double: -1022, single: -126)
                int e = new[] { -16382, -16381, -16380, -1022, -1074, -1023, -1050, -126, -149, -127, -140 }[r.Next(11)] + r.Next(-2, 3);
                ulong m = r.Next(3) == 0 ? IntBit | ((ulong)r.NextInt64() >> 40 << 40) : RandMant(r);
                return new Float80(m, (ushort)(s | Math.Clamp(e + 16383, 1, 0x7FFE)));
            }
            case 12:
                // few significant bits: exact results are common
                return new Float80(IntBit | ((ulong)r.Next() << 32 >> r.Next(0, 40) << 8), (ushort)(s | (16383 + r.Next(-20, 20))));
            case 13:
                // all exponents
                return new Float80(RandMant(r), (ushort)(s | r.Next(1, 0x7FFF)));
            default:
                return new Float80(RandMant(r), (ushort)(s | (16383 + r.Next(-70, 70))));
        }
    }

    /// <summary>A second operand related to the first (close in magnitude: cancellation, ties, equal values).</summary>
    static Float80 Related(Random r, Float80 a)
    {
        if (a.BiasedExponent == 0 || a.BiasedExponent == 0x7FFF || r.Next(2) == 0) return Rand80(r);
        int e = Math.Clamp(a.BiasedExponent + r.Next(-3, 4) * (r.Next(3) == 0 ? 20 : 1), 1, 0x7FFE);
        ulong m = r.Next(4) switch
        {
            0 => a.Mantissa,
            1 => a.Mantissa ^ (1UL << r.Next(0, 63)),
            2 => a.Mantissa + (ulong)r.Next(-3, 4),
            _ => (a.Mantissa & (ulong.MaxValue << r.Next(1, 60))) | IntBit,
        };
        ushort s = (ushort)(r.Next(2) == 0 ? a.SignExp & 0x8000 : r.Next(2) << 15);
        return new Float80(m | IntBit, (ushort)(s | e));
    }

    static ulong RandDouble(Random r)
    {
        ulong s = (ulong)r.Next(2) << 63;
        return r.Next(10) switch
        {
            0 => s,
            1 => s | 0x7FF0_0000_0000_0000,
            2 => s | 0x7FF0_0000_0000_0000 | ((ulong)r.Next(2) << 51) | ((ulong)r.NextInt64() & 0x0007_FFFF_FFFF_FFFF) | 1,
            3 => s | ((ulong)r.NextInt64() & 0x000F_FFFF_FFFF_FFFF) >> r.Next(0, 52) | 1,
            4 => BitConverter.DoubleToUInt64Bits(r.Next(-1000, 1000) * (r.Next(2) == 0 ? 1 : 0.5)),
            5 => s | ((ulong)r.Next(1, 0x7FF) << 52) | ((ulong)r.NextInt64() & 0x000F_FFFF_FFFF_FFFF),
            _ => s | ((ulong)(1023 + r.Next(-70, 70)) << 52) | ((ulong)r.NextInt64() & 0x000F_FFFF_FFFF_FFFF),
        };
    }

    static uint RandSingle(Random r)
    {
        uint s = (uint)r.Next(2) << 31;
        return r.Next(10) switch
        {
            0 => s,
            1 => s | 0x7F80_0000,
            2 => s | 0x7F80_0000 | ((uint)r.Next(2) << 22) | ((uint)r.Next() & 0x3F_FFFF) | 1,
            3 => s | ((uint)r.Next() & 0x7F_FFFF) >> r.Next(0, 23) | 1,
            4 => BitConverter.SingleToUInt32Bits(r.Next(-1000, 1000) * (r.Next(2) == 0 ? 1f : 0.5f)),
            5 => s | ((uint)r.Next(1, 0xFF) << 23) | ((uint)r.Next() & 0x7F_FFFF),
            _ => s | ((uint)(127 + r.Next(-40, 40)) << 23) | ((uint)r.Next() & 0x7F_FFFF),
        };
    }

    static readonly long[] IntEdges =
    [
        0, 1, -1, 2, 3, -2, 7, 0x7F, 0x80, 0xFF, 0x7FFF, -0x8000, 0x8000, 0xFFFF, 0x7FFF_FFFF, -0x8000_0000L, 0xFFFF_FFFF,
        long.MaxValue, long.MinValue, long.MinValue + 1, 1L << 53, (1L << 53) + 1, (1L << 62) + 1, (1L << 24) + 1,
    ];

    static long RandInt(Random r) => r.Next(3) switch
    {
        0 => IntEdges[r.Next(IntEdges.Length)],
        1 => r.Next(-1000, 1000),
        _ => r.NextInt64(long.MinValue, long.MaxValue) >> r.Next(0, 64),
    };

    static ushort RandCw(Random r)
    {
        int pc = new[] { 3, 3, 2, 0, 1 }[r.Next(5)];
        return (ushort)(0x3F | (r.Next(4) == 0 ? 0 : 0x40) | (pc << 8) | (r.Next(4) << 10));
    }

    // ---------------------------------------------------------------- case generation

    static bool Supported(Code code, Mnemonic[] mnemonics)
    {
        if (!mnemonics.Contains(code.Mnemonic())) return false;
        var op = code.ToOpCode();
        if (!op.Mode64 || op.Encoding != EncodingKind.Legacy || !op.IsInstruction) return false;
        // the 14-byte (16-bit operand size) environment forms are not used by 64-bit code
        return code is not (Code.Fldenv_m14byte or Code.Fnstenv_m14byte or Code.Fstenv_m14byte);
    }

    static byte[] Encode(Instruction ins)
    {
        var w = new CodeWriterImpl();
        Iced.Intel.Encoder.Create(64, w).Encode(ins, NativeRunner.SnippetAddress);
        return w.Bytes.ToArray();
    }

    sealed class CodeWriterImpl : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }

    static bool SetsRflags(Mnemonic m) => m is Mnemonic.Fcomi or Mnemonic.Fcomip or Mnemonic.Fucomi or Mnemonic.Fucomip;

    static Case Generate(Code code, Random r) => Generate([code], r);

    /// <summary>Builds the instruction for <paramref name="code"/> with random ST operands and memory slot <paramref name="slot"/>.</summary>
    static Instruction Build(Code code, int slot, Random r, out int needed)
    {
        var op = code.ToOpCode();
        var ops = new List<object>();
        int maxSt = -1;
        for (int n = 0; n < op.OpCount; n++)
        {
            switch (op.GetOpKind(n))
            {
                case OpCodeOperandKind.st0: ops.Add(Register.ST0); maxSt = Math.Max(maxSt, 0); break;
                case OpCodeOperandKind.sti_opcode:
                {
                    int k = r.Next(3) == 0 ? r.Next(8) : r.Next(1, 3);
                    ops.Add(Register.ST0 + k); maxSt = Math.Max(maxSt, k); break;
                }
                case OpCodeOperandKind.mem: ops.Add(new MemoryOperand(Register.RBX, MemOff + SlotSize * slot)); break;
                case OpCodeOperandKind.ax: ops.Add(Register.AX); break;
                default: throw new InvalidOperationException($"operand kind {op.GetOpKind(n)} of {code}");
            }
        }
        var ins = ops.Count switch
        {
            0 => Instruction.Create(code),
            1 => ops[0] is Register reg ? Instruction.Create(code, reg) : Instruction.Create(code, (MemoryOperand)ops[0]),
            _ => Instruction.Create(code, (Register)ops[0], (Register)ops[1]),
        };
        var mn = code.Mnemonic();
        needed = mn switch
        {
            Mnemonic.Fcompp or Mnemonic.Fucompp or Mnemonic.Fscale or Mnemonic.Fprem or Mnemonic.Fprem1 or Mnemonic.Fpatan
                or Mnemonic.Fyl2x or Mnemonic.Fyl2xp1 => 2,
            Mnemonic.Faddp or Mnemonic.Fsubp or Mnemonic.Fsubrp or Mnemonic.Fmulp or Mnemonic.Fdivp or Mnemonic.Fdivrp
                or Mnemonic.Fxch or Mnemonic.Fcom or Mnemonic.Fcomp or Mnemonic.Fucom or Mnemonic.Fucomp when ops.Count == 0 => 2,
            _ => 1,
        };
        needed = Math.Max(needed, maxSt + 1);
        return ins;
    }

    static Case Generate(Code[] codes, Random r)
    {
        var s = CpuSnapshot.Create();
        s[RBX] = Base;
        s.Rflags = (ulong)r.Next() & ArithFlags;
        ushort cw = RandCw(r);
        BitConverter.TryWriteBytes(s.Memory.AsSpan(CwOff), cw);
        var seq = new Instruction[codes.Length];
        int needed = 1;
        for (int j = 0; j < codes.Length; j++)
        {
            seq[j] = Build(codes[j], j, r, out int nd);
            if (j == 0) needed = nd;
        }
        var mn = codes[0].Mnemonic();
        bool pushes = mn is Mnemonic.Fld or Mnemonic.Fild or Mnemonic.Fld1 or Mnemonic.Fldz or Mnemonic.Fldpi or Mnemonic.Fldl2e
            or Mnemonic.Fldl2t or Mnemonic.Fldlg2 or Mnemonic.Fldln2 or Mnemonic.Fxtract or Mnemonic.Fptan or Mnemonic.Fsincos;
        int depth = r.Next(12) switch
        {
            0 => r.Next(0, 9),                  // anything: stack underflow / overflow
            _ => r.Next(needed, pushes && r.Next(3) != 0 ? 8 : 9),
        };

        // stack values: ST(k) at StackOff + 16k, pushed from the deepest
        var vals = new Float80[8];
        for (int k = 0; k < 8; k++) vals[k] = k > 0 && r.Next(2) == 0 ? Related(r, vals[0]) : Rand80(r);
        if (r.Next(8) == 0 && depth > 1) vals[1] = vals[0];
        if (mn is Mnemonic.Fscale && r.Next(2) == 0)
            vals[1] = Float80.FromInt64(r.Next(5) == 0 ? RandInt(r) : r.Next(-70, 70)); // a sensible scale
        for (int k = 0; k < 8; k++) vals[k].WriteTo(s.Memory.AsSpan(StackOff + 16 * k, 10));

        for (int j = 0; j < seq.Length; j++) FillSlot(s, seq[j], j, vals[0], r);

        bool sahf = !SetsRflags(seq[^1].Mnemonic) && r.Next(4) != 0;
        byte[] code2 = NativeRunner.Asm(a =>
        {
            for (int k = 0; k < 8; k++) a.fldz();
            for (int k = 0; k < 8; k++) a.fstp(st0);
            a.fninit();
            a.fldcw(__word_ptr[rbx + CwOff]);
            for (int k = depth - 1; k >= 0; k--) a.fld(__tword_ptr[rbx + StackOff + 16 * k]);
            foreach (var ins in seq) a.db(Encode(ins));
            a.fnstsw(ax);
            if (sahf) a.sahf();
            a.fxsave64(__[rbx + FxOff]);
        });
        return new Case(seq, code2, s, depth, cw);
    }

    /// <summary>Fills the memory slot of an instruction with an operand of its size (control images kept safe).</summary>
    static void FillSlot(CpuSnapshot s, Instruction ins, int slot, Float80 st0, Random r)
    {
        var mn = ins.Mnemonic;
        var vals = new[] { st0 };
        var mem = s.Memory.AsSpan(MemOff + SlotSize * slot, SlotSize);
        r.NextBytes(mem);
        switch (ins.MemorySize)
        {
            case MemorySize.Float32:
                BitConverter.TryWriteBytes(mem, r.Next(4) == 0 ? BitConverter.SingleToUInt32Bits((float)Float80.ToDouble(vals[0])) : RandSingle(r)); break;
            case MemorySize.Float64:
                BitConverter.TryWriteBytes(mem, r.Next(4) == 0 ? BitConverter.DoubleToUInt64Bits(Float80.ToDouble(vals[0])) : RandDouble(r)); break;
            case MemorySize.Float80: Rand80(r).WriteTo(mem); break;
            case MemorySize.Int16: BitConverter.TryWriteBytes(mem, (short)RandInt(r)); break;
            case MemorySize.Int32: BitConverter.TryWriteBytes(mem, (int)RandInt(r)); break;
            case MemorySize.Int64: BitConverter.TryWriteBytes(mem, RandInt(r)); break;
            case MemorySize.Bcd:
            {
                // 18 BCD digits (now and then invalid digits) and a sign byte
                ulong v = (ulong)r.NextInt64(0, 1_000_000_000_000_000_000) >> r.Next(0, 60);
                for (int k = 0; k < 9; k++) { mem[k] = (byte)(v % 10 | (v / 10 % 10) << 4); v /= 100; }
                if (r.Next(10) == 0) mem[r.Next(9)] |= 0xA0;
                mem[9] = (byte)(r.Next(2) << 7 | (r.Next(8) == 0 ? r.Next(0x80) : 0));
                break;
            }
        }
        if (mn == Mnemonic.Fldcw) BitConverter.TryWriteBytes(mem, (ushort)(RandCw(r) | (r.Next(4) == 0 ? r.Next(0x10000) & 0xF0C0 : 0)));
        if (mn == Mnemonic.Fldenv)
        {
            // a consistent environment: exceptions masked (so no fault is pending), random status/tags
            BitConverter.TryWriteBytes(mem, (uint)RandCw(r) | (uint)(r.Next(2) == 0 ? 0xFFFF0000 : 0));
            ushort sw = (ushort)(r.Next(0x10000) & 0x7F7F & ~0x80);
            BitConverter.TryWriteBytes(mem[4..], sw | (uint)(r.Next(2) == 0 ? 0xFFFF0000 : 0));
            BitConverter.TryWriteBytes(mem[8..], (uint)r.Next(0x10000) | (uint)(r.Next(2) == 0 ? 0xFFFF0000 : 0));
        }
    }

    /// <summary>Clears the bytes whose content is implementation-specific (instruction/data pointers, padding).</summary>
    static void Normalize(CpuSnapshot s, Case c)
    {
        var m = s.Memory;
        Array.Clear(m, FxOff + 6, 18);            // FOP, FIP, FCS, FDP, FDS
        Array.Clear(m, FxOff + 28, 4);            // MXCSR_MASK
        for (int k = 0; k < 8; k++) Array.Clear(m, FxOff + 32 + 16 * k + 10, 6);
        Array.Clear(m, FxOff + 160, 512 - 160);   // XMM and reserved
        for (int j = 0; j < c.Seq.Length; j++)
            if (c.Seq[j].Mnemonic is Mnemonic.Fnstenv or Mnemonic.Fstenv) Array.Clear(m, MemOff + SlotSize * j + 12, 16);
    }

    static string Describe(CpuSnapshot s)
    {
        var m = s.Memory;
        ushort fcw = BitConverter.ToUInt16(m, FxOff), fsw = BitConverter.ToUInt16(m, FxOff + 2);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"FCW={fcw:X4} FSW={fsw:X4} (TOP={(fsw >> 11) & 7} C3210={(fsw >> 14) & 1}{(fsw >> 10) & 1}{(fsw >> 9) & 1}{(fsw >> 8) & 1} exc={fsw & 0x7F:X2}) tags={m[FxOff + 4]:X2} rax={s[RAX] & 0xFFFF:X4} flags={FlagNames(s.Rflags & ArithFlags)}\n");
        for (int k = 0; k < 8; k++) sb.Append(CultureInfo.InvariantCulture, $"  ST{k}={Float80.FromBytes(m.AsSpan(FxOff + 32 + 16 * k, 10))}\n");
        return sb.ToString();
    }

    static string DescribeInput(Case c)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{string.Join("; ", c.Seq)} [{string.Join(" ", c.Seq.Select(k => Convert.ToHexString(Encode(k))))}] cw={c.Cw:X4} depth={c.Depth} rflags={FlagNames(c.Input.Rflags)}\n");
        for (int k = 0; k < c.Depth; k++) sb.Append(CultureInfo.InvariantCulture, $"  in ST{k}={Float80.FromBytes(c.Input.Memory.AsSpan(StackOff + 16 * k, 10))}\n");
        for (int j = 0; j < c.Seq.Length; j++)
            if (c.Seq[j].Op0Kind == OpKind.Memory)
                sb.Append(CultureInfo.InvariantCulture, $"  mem{j}={Convert.ToHexString(c.Input.Memory, MemOff + SlotSize * j, 16)} ({c.Seq[j].MemorySize})\n");
        return sb.ToString();
    }

    static int Scale => int.TryParse(Environment.GetEnvironmentVariable("X87_SCALE"), out int k) && k > 0 ? k : 1;

    /// <summary>X87_SEED (environment) explores other random streams by hand; X87_SCALE multiplies the case counts.</summary>
    static Random NewRandom(string name)
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("X87_SEED"), out int sd) ? sd : 0x87;
        int h = 17;
        foreach (char ch in name) h = h * 31 + ch; // stable across runs (string.GetHashCode is randomized per process)
        return new Random(h ^ seed);
    }

    /// <summary>Runs the cases natively and in the VM and fails the test with details on a mismatch.</summary>
    void RunCases(string name, IEnumerable<Case> cases)
    {
        var failures = new List<string>();
        var perForm = new Dictionary<Code, int>();
        int run = 0, failed = 0;
        foreach (var c in cases)
        {
            run++;
            var native = NativeRunner.Run(c.Code, c.Input);
            var vm = VmRunner.Run(c.Code, c.Input, out string? fault);
            Normalize(native, c);
            Normalize(vm, c);
            string diff = fault ?? Diff(native, vm, ArithFlags, compareXmm: false);
            if (diff.Length == 0) continue;
            failed++;
            perForm[c.Ins.Code] = perForm.GetValueOrDefault(c.Ins.Code) + 1;
            if (failures.Count < 20)
                failures.Add($"{DescribeInput(c)}{diff}native: {Describe(native)}vm:     {Describe(vm)}");
        }
        output.WriteLine($"{name}: {run} cases, {failed} differ");
        Assert.True(failed == 0,
            $"{failed} of {run} cases differ; by (first) form: {string.Join(", ", perForm.Select(kv => $"{kv.Key}={kv.Value}"))}\n\n{string.Join("\n", failures)}");
    }

    [Theory]
    [MemberData(nameof(FamilyNames))]
    public void MatchesHost(string family)
    {
        if (!NativeRunner.IsSupported) return;
        var (mnemonics, perCode) = Families[family];
        var codes = Enum.GetValues<Code>().Where(k => Supported(k, mnemonics)).ToList();
        Assert.NotEmpty(codes);
        var r = NewRandom(family);
        output.WriteLine($"{family}: {codes.Count} forms");
        RunCases(family, codes.SelectMany(code => Enumerable.Range(0, perCode * Scale).Select(_ => Generate(code, r))));
    }

    /// <summary>Random sequences of 2-4 instructions from all families: state carried between instructions (tags, TOP, C1,
    /// sticky flags). 1,500 sequences by default (every family also runs on its own above), 3,000 in the soak
    /// (REVIRT_SOAK=1).</summary>
    [Fact]
    public void SequencesMatchHost()
    {
        if (!NativeRunner.IsSupported) return;
        var all = Families.Values.SelectMany(f => f.Mnemonics).ToArray();
        var codes = Enum.GetValues<Code>().Where(k => Supported(k, all)).ToArray();
        var r = NewRandom("sequences");
        RunCases("sequences", Enumerable.Range(0, (SoakSwitch.On ? 3000 : 1500) * Scale).Select(_ =>
            Generate(Enumerable.Range(0, r.Next(2, MaxSeq + 1)).Select(_ => codes[r.Next(codes.Length)]).ToArray(), r)));
    }

    // ---------------------------------------------------------------- transcendentals (not bit-exact)

    /// <summary>
    /// Allowed distance in 80-bit ulps for FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X, FYL2XP1: the VM computes
    /// them through double (53 bits): measured errors reach ~3 double ulps (6000 80-bit ulps) for F2XM1 and FYL2X, so the
    /// bound is 2^13 ulps of the 64-bit significand (four double ulps).
    /// </summary>
    const int TranscendentalUlps = 1 << 13;

    static Float80 TransOperand(Mnemonic m, int slot, Random r)
    {
        if (r.Next(12) == 0) return Rand80(r); // specials: NaN, infinities, zeros, denormals, huge arguments...
        double d = m switch
        {
            Mnemonic.Fsin or Mnemonic.Fcos or Mnemonic.Fsincos or Mnemonic.Fptan =>
                r.Next(4) switch { 0 => r.NextDouble() * 1.6 - 0.8, 1 => (r.NextDouble() - 0.5) * 20, 2 => (r.NextDouble() - 0.5) * 2e6, _ => Math.ScaleB(r.NextDouble(), -r.Next(1, 60)) },
            Mnemonic.F2xm1 => r.Next(3) == 0 ? Math.ScaleB(r.NextDouble() - 0.5, -r.Next(0, 60)) : r.NextDouble() * 2 - 1,
            Mnemonic.Fyl2x when slot == 0 => r.Next(3) == 0 ? 1 + (r.NextDouble() - 0.5) * 0.01 : Math.ScaleB(r.NextDouble() + 0.5, r.Next(-100, 100)),
            Mnemonic.Fyl2xp1 when slot == 0 => r.Next(3) == 0 ? Math.ScaleB(r.NextDouble() - 0.5, -r.Next(1, 60)) : (r.NextDouble() - 0.5) * 0.58,
            _ => Math.ScaleB(r.NextDouble() - 0.5, r.Next(-20, 20)), // FPATAN operands, the y of FYL2X/FYL2XP1
        };
        var f = Float80.FromDouble(d);
        // fill the 11 significand bits a double does not have
        return f.BiasedExponent is > 0 and < 0x7FFF && r.Next(2) == 0 ? new Float80(f.Mantissa | (uint)r.Next(1 << 11), f.SignExp) : f;
    }

    /// <summary>Distance in ulps when both are finite, non-zero and of one sign; 0 for identical encodings; else max.</summary>
    static UInt128 UlpDistance(Float80 a, Float80 b)
    {
        if (a == b) return 0;
        bool fa = a.BiasedExponent != 0x7FFF && !a.IsZero, fb = b.BiasedExponent != 0x7FFF && !b.IsZero;
        if (!fa || !fb || a.Sign != b.Sign) return UInt128.MaxValue;
        // key: exponent and significand as one integer, monotonic in the magnitude (denormals have exponent 0)
        UInt128 ka = ((UInt128)(uint)a.BiasedExponent << 63) + (a.Mantissa & ~IntBit);
        UInt128 kb = ((UInt128)(uint)b.BiasedExponent << 63) + (b.Mantissa & ~IntBit);
        if (a.BiasedExponent == 0) ka = a.Mantissa;
        if (b.BiasedExponent == 0) kb = b.Mantissa;
        return ka > kb ? ka - kb : kb - ka;
    }

    public static IEnumerable<object[]> TranscendentalNames() => Transcendentals.Select(m => new object[] { m.ToString() });

    [Theory]
    [MemberData(nameof(TranscendentalNames))]
    public void TranscendentalsCloseToHost(string name)
    {
        if (!NativeRunner.IsSupported) return;
        var mn = Enum.Parse<Mnemonic>(name);
        var code = Enum.GetValues<Code>().Single(k => Supported(k, [mn]));
        var r = NewRandom(name);
        int run = 0, failed = 0;
        UInt128 worst = 0;
        var failures = new List<string>();
        for (int n = 0; n < 300 * Scale; n++)
        {
            var c = Generate(code, r);
            for (int k = 0; k < 2; k++) TransOperand(mn, k, r).WriteTo(c.Input.Memory.AsSpan(StackOff + 16 * k, 10));
            run++;
            var native = NativeRunner.Run(c.Code, c.Input);
            var vm = VmRunner.Run(c.Code, c.Input, out string? fault);
            var sb = new StringBuilder(fault ?? "");
            byte[] nm = native.Memory, vmm = vm.Memory;
            // TOP, C2 (argument out of range), SF, IE, ZE, DE; not PE/UE (rounding-dependent) nor C0/C1/C3
            ushort swMask = 0x3847 | 0x0400;
            ushort nsw = BitConverter.ToUInt16(nm, FxOff + 2), vsw = BitConverter.ToUInt16(vmm, FxOff + 2);
            if (((nsw ^ vsw) & swMask) != 0) sb.Append(CultureInfo.InvariantCulture, $"FSW: expected {nsw:X4}, actual {vsw:X4} (mask {swMask:X4})\n");
            if (nm[FxOff + 4] != vmm[FxOff + 4]) sb.Append(CultureInfo.InvariantCulture, $"tags: expected {nm[FxOff + 4]:X2}, actual {vmm[FxOff + 4]:X2}\n");
            for (int k = 0; k < 8; k++)
            {
                var a = Float80.FromBytes(nm.AsSpan(FxOff + 32 + 16 * k, 10));
                var b = Float80.FromBytes(vmm.AsSpan(FxOff + 32 + 16 * k, 10));
                var d = UlpDistance(a, b);
                if (d != UInt128.MaxValue && d > worst) worst = d;
                if (d > TranscendentalUlps) sb.Append(CultureInfo.InvariantCulture, $"ST{k}: expected {a}, actual {b} ({(d == UInt128.MaxValue ? "different class" : d + " ulps")})\n");
            }
            if (sb.Length == 0) continue;
            failed++;
            if (failures.Count < 15) failures.Add($"{DescribeInput(c)}{sb}");
        }
        output.WriteLine($"{name}: {run} cases, {failed} beyond {TranscendentalUlps} ulps or differing in status; worst finite distance {worst} ulps");
        Assert.True(failed == 0, $"{failed} of {run} cases differ\n\n{string.Join("\n", failures)}");
    }
}
