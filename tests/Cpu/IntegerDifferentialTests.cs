using System.Runtime.Intrinsics.X86;

using Iced.Intel;
using ReVirt.Tests.Oracle;
using Xunit;
using static ReVirt.Tests.Oracle.CpuSnapshot;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Differential tests of the integer instruction set: every legacy-encoded 64-bit-mode form (Iced Code) of each
/// mnemonic under test runs natively (<see cref="NativeRunner"/>) and in the VM (<see cref="VmRunner"/>) from the same
/// random state (operands biased to edge values; register and memory forms; all widths incl. AH..BH), and all GPRs,
/// the scratch memory and the flags are compared. Flags the manual leaves undefined are compared only when the host
/// is an AMD processor (the reference the VM follows); elsewhere they are masked out. The bit scans are the exception
/// among AMD generations: Zen 1/2 write their undefined flags (the VM follows them), Zen 3 leaves them unchanged; the
/// host is probed once (<see cref="HostBitScanWritesUndefinedFlags"/>) and they are compared only where it writes them.
/// </summary>
public class IntegerDifferentialTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static readonly bool HostIsAmd = IsAmd();

    /// <summary>Whether the host's BSF writes the flags the manual leaves undefined (SF and OF set before a BSF with a
    /// non-zero source come out cleared), as the AMD processors the VM follows do.</summary>
    static readonly bool HostBitScanWritesUndefinedFlags = ProbeBitScan();

    static bool ProbeBitScan()
    {
        if (!NativeRunner.IsSupported) return false;
        var input = new CpuSnapshot { Rflags = SF | OF | AF | CF };
        input.Gpr[RCX] = 1;
        input.Gpr[RSP] = NativeRunner.DefaultRsp;
        var native = NativeRunner.Run(a => a.bsf(Iced.Intel.AssemblerRegisters.rax, Iced.Intel.AssemblerRegisters.rcx), input);
        return (native.Rflags & (SF | OF)) == 0;
    }

    static bool UndefinedFlagsCompared(Case c) =>
        HostIsAmd && (HostBitScanWritesUndefinedFlags || c.Ins.Mnemonic is not (Mnemonic.Bsf or Mnemonic.Bsr or Mnemonic.Tzcnt or Mnemonic.Lzcnt));

    static bool IsAmd()
    {
        if (!X86Base.IsSupported) return false;
        var (_, b, c, d) = X86Base.CpuId(0, 0);
        Span<byte> v = stackalloc byte[12];
        BitConverter.TryWriteBytes(v, b); BitConverter.TryWriteBytes(v[4..], d); BitConverter.TryWriteBytes(v[8..], c);
        return System.Text.Encoding.ASCII.GetString(v) == "AuthenticAMD";
    }

    public static readonly Dictionary<string, Mnemonic[]> Families = new()
    {
        ["alu"] = [Mnemonic.Add, Mnemonic.Adc, Mnemonic.Sub, Mnemonic.Sbb, Mnemonic.Cmp, Mnemonic.And, Mnemonic.Or, Mnemonic.Xor, Mnemonic.Test],
        ["unary"] = [Mnemonic.Inc, Mnemonic.Dec, Mnemonic.Neg, Mnemonic.Not],
        ["move"] = [Mnemonic.Mov, Mnemonic.Movzx, Mnemonic.Movsx, Mnemonic.Movsxd, Mnemonic.Lea, Mnemonic.Xchg, Mnemonic.Bswap,
                    Mnemonic.Cbw, Mnemonic.Cwde, Mnemonic.Cdqe, Mnemonic.Cwd, Mnemonic.Cdq, Mnemonic.Cqo],
        ["atomic"] = [Mnemonic.Cmpxchg, Mnemonic.Xadd],
        ["flags"] = [Mnemonic.Clc, Mnemonic.Stc, Mnemonic.Cmc, Mnemonic.Lahf, Mnemonic.Sahf,
                     Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne, Mnemonic.Setbe, Mnemonic.Seta,
                     Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp, Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg,
                     Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne, Mnemonic.Cmovbe, Mnemonic.Cmova,
                     Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp, Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg],
        ["stack"] = [Mnemonic.Push, Mnemonic.Pop],
        ["shift"] = [Mnemonic.Shl, Mnemonic.Sal, Mnemonic.Shr, Mnemonic.Sar],
        ["rotate"] = [Mnemonic.Rol, Mnemonic.Ror, Mnemonic.Rcl, Mnemonic.Rcr],
        ["shiftd"] = [Mnemonic.Shld, Mnemonic.Shrd],
        ["mul"] = [Mnemonic.Mul, Mnemonic.Imul],
        ["div"] = [Mnemonic.Div, Mnemonic.Idiv],
        ["bittest"] = [Mnemonic.Bt, Mnemonic.Bts, Mnemonic.Btr, Mnemonic.Btc],
        ["bitscan"] = [Mnemonic.Bsf, Mnemonic.Bsr, Mnemonic.Popcnt, Mnemonic.Tzcnt, Mnemonic.Lzcnt],
    };

    public static IEnumerable<object[]> FamilyNames() => Families.Keys.Select(k => new object[] { k });

    const int CasesPerCode = 60;
    const ulong MemBase = NativeRunner.ScratchBase + 0x800;

    static readonly ulong[] Edges =
    [
        0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
        0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFE, 0xFFFF_FFFF_FFFF_FF80,
        0xFFFF_FFFF_FFFF_8000, 0xFFFF_FFFF_8000_0000, 0x5555_5555_5555_5555, 0xAAAA_AAAA_AAAA_AAAA,
    ];

    static readonly int[] Counts = [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0xFF, 0x80, 0x41, 0x21];

    static ulong EdgeValue(Random r)
    {
        switch (r.Next(5))
        {
            case 0: return Edges[r.Next(Edges.Length)];
            case 1: return (ulong)r.Next(256);
            case 2: return Edges[r.Next(Edges.Length)] ^ ((ulong)r.NextInt64() & 0xFFFF_FFFF_FFFF_FF00UL);
            case 3: return Edges[r.Next(Edges.Length)] + (ulong)r.Next(-2, 3);
            default: return (ulong)r.NextInt64() ^ ((ulong)r.Next(2) << 63);
        }
    }

    static readonly Register[] Gpr64 =
    [
        Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP, Register.RSI, Register.RDI,
        Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15,
    ];

    static Register RegOfSize(int index, int size, bool high)
    {
        if (size == 1 && high) return Register.AH + index; // index 0..3: AH CH DH BH
        return size switch
        {
            1 => index < 4 ? Register.AL + index : index < 8 ? Register.SPL + (index - 4) : Register.R8L + (index - 8),
            2 => Register.AX + index,
            4 => Register.EAX + index,
            _ => Register.RAX + index,
        };
    }

    static int OperandSize(OpCodeOperandKind k) => k switch
    {
        OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode or OpCodeOperandKind.al or OpCodeOperandKind.cl => 1,
        OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_opcode or OpCodeOperandKind.ax or OpCodeOperandKind.r16_rm => 2,
        OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_opcode or OpCodeOperandKind.eax or OpCodeOperandKind.r32_rm => 4,
        OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_opcode or OpCodeOperandKind.rax or OpCodeOperandKind.r64_rm => 8,
        _ => 0,
    };

    /// <summary>One generated case: the instruction bytes for the VM and for the host, and the input state.</summary>
    sealed record Case(Instruction Ins, byte[] VmCode, byte[] NativeCode, CpuSnapshot Input, int Count);

    static byte[] Encode(Instruction ins)
    {
        var w = new CodeWriterImpl();
        var enc = Encoder.Create(64, w);
        enc.Encode(ins, NativeRunner.SnippetAddress);
        return w.Bytes.ToArray();
    }

    sealed class CodeWriterImpl : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }

    static bool Supported(Code code, out OpCodeInfo op)
    {
        op = code.ToOpCode();
        if (!op.Mode64 || op.Encoding != EncodingKind.Legacy || !op.IsInstruction) return false;
        if (code is Code.Bswap_r16) return false; // undefined
        if (op.Mnemonic is Mnemonic.Push or Mnemonic.Pop)
        {
            // only the 64-bit and 16-bit GPR/memory/immediate forms
            for (int n = 0; n < op.OpCount; n++)
                if (OperandSize(op.GetOpKind(n)) == 0 && !IsImm(op.GetOpKind(n))) return false;
        }
        for (int n = 0; n < op.OpCount; n++)
        {
            var k = op.GetOpKind(n);
            if (OperandSize(k) == 0 && !IsImm(k) && k != OpCodeOperandKind.mem) return false;
        }
        if (code.ToString().Contains("moffs")) return false;
        return true;
    }

    static bool IsImm(OpCodeOperandKind k) => k is OpCodeOperandKind.imm8 or OpCodeOperandKind.imm16 or OpCodeOperandKind.imm32
        or OpCodeOperandKind.imm64 or OpCodeOperandKind.imm8sex16 or OpCodeOperandKind.imm8sex32 or OpCodeOperandKind.imm8sex64
        or OpCodeOperandKind.imm32sex64 or OpCodeOperandKind.imm8_const_1;

    /// <summary>Builds a random instance of the form, or null when the random choice is not encodable.</summary>
    static Case? Generate(Code code, OpCodeInfo op, Random r)
    {
        var s = CpuSnapshot.Create();
        for (int k = 0; k < 16; k++) if (k != RSP) s[k] = EdgeValue(r);
        r.NextBytes(s.Memory);
        // sprinkle edge values into memory
        for (int k = 0; k < 64; k++) BitConverter.TryWriteBytes(s.Memory.AsSpan(r.Next(0, s.Memory.Length - 8)), EdgeValue(r));
        s.Rflags = (ulong)r.Next() & InputFlags & ~DF;

        int baseReg = r.Next(2) == 0 ? RBX : 8 + r.Next(8);
        if (baseReg == RSP) baseReg = RBX;
        s[baseReg] = MemBase;
        var used = new HashSet<int> { RSP, baseReg };
        var ops = new object[op.OpCount];
        bool anyHigh = false, anyRex = false;
        int count = -1;
        bool isShift = op.Mnemonic is Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror
            or Mnemonic.Rcl or Mnemonic.Rcr or Mnemonic.Shld or Mnemonic.Shrd;
        for (int n = 0; n < op.OpCount; n++)
        {
            var k = op.GetOpKind(n);
            int size = OperandSize(k);
            switch (k)
            {
                case OpCodeOperandKind.al or OpCodeOperandKind.ax or OpCodeOperandKind.eax or OpCodeOperandKind.rax:
                    ops[n] = RegOfSize(0, size, false); break;
                case OpCodeOperandKind.cl:
                    ops[n] = Register.CL;
                    count = r.Next(3) > 0 ? Counts[r.Next(Counts.Length)] : r.Next(256);
                    if (baseReg == RCX) return null;
                    s[RCX] = (s[RCX] & ~0xFFUL) | (uint)count; break;
                case OpCodeOperandKind.mem:
                case OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
                    when r.Next(3) == 0:
                    ops[n] = new MemoryOperand(Gpr64[baseReg], r.Next(-0x400, 0x400), 4);
                    break;
                case OpCodeOperandKind.imm8_const_1: ops[n] = 1L; count = 1; break;
                case OpCodeOperandKind.imm8:
                    if (isShift) { count = r.Next(3) > 0 ? Counts[r.Next(Counts.Length)] : r.Next(256); ops[n] = (long)count; }
                    else ops[n] = (long)(byte)EdgeValue(r);
                    break;
                case OpCodeOperandKind.imm8sex16 or OpCodeOperandKind.imm8sex32 or OpCodeOperandKind.imm8sex64:
                    ops[n] = (long)(sbyte)EdgeValue(r); break;
                case OpCodeOperandKind.imm16: ops[n] = (long)(ushort)EdgeValue(r); break;
                case OpCodeOperandKind.imm32: ops[n] = (long)(uint)EdgeValue(r); break;
                case OpCodeOperandKind.imm32sex64: ops[n] = (long)(int)EdgeValue(r); break;
                case OpCodeOperandKind.imm64: ops[n] = (long)EdgeValue(r); break;
                default:
                {
                    // a register operand; the same register may appear twice (e.g. xchg rax, rax) now and then
                    int idx;
                    bool high = size == 1 && r.Next(3) == 0;
                    int tries = 0;
                    do idx = high ? r.Next(4) : r.Next(16);
                    while ((used.Contains(idx) && !(r.Next(8) == 0 && idx != RSP && idx != baseReg)) && ++tries < 50);
                    if (idx == RSP || idx == baseReg) return null;
                    used.Add(idx);
                    if (high) anyHigh = true; else if (idx >= 8 || (size == 1 && idx >= 4)) anyRex = true;
                    ops[n] = RegOfSize(idx, size, high);
                    break;
                }
            }
        }
        if (anyHigh && anyRex) return null;
        if (anyHigh && op.OperandSize == 64) return null;

        // bt/bts/btr/btc with a register offset and a memory operand: keep the addressed word inside the data
        if (op.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc && ops[0] is MemoryOperand && ops[1] is Register off)
        {
            long bits = r.Next(-0x1800, 0x1800);
            int idx = ReVirt.Cpu.VirtualCpu.RegInfo[(int)off] & 15;
            int size = off.GetSize();
            ulong mask = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
            s[idx] = (s[idx] & ~mask) | ((ulong)bits & mask);
            if (size == 2 && (bits < short.MinValue || bits > short.MaxValue)) return null;
        }

        Instruction ins;
        try { ins = Create(code, ops); }
        catch (ArgumentException) { return null; }
        byte[] vmCode, nativeCode;
        try { vmCode = Encode(ins); }
        catch (EncoderException) { return null; }
        nativeCode = vmCode;
        if (op.Mnemonic is Mnemonic.Tzcnt or Mnemonic.Lzcnt)
        {
            // the host implements BMI1/LZCNT, the guest CPU does not: the VM must behave as bsf/bsr
            var bsCode = Enum.Parse<Code>(code.ToString().Replace("Tzcnt_", "Bsf_").Replace("Lzcnt_", "Bsr_"));
            nativeCode = Encode(Create(bsCode, ops));
        }
        var c = new Case(ins, vmCode, nativeCode, s, count);
        if (op.Mnemonic is Mnemonic.Div or Mnemonic.Idiv)
        {
            MakeDivisionSafe(c, r);
            if (WouldFault(c)) return null;
        }
        return c;
    }

    static Instruction Create(Code code, object[] ops)
    {
        switch (ops.Length)
        {
            case 0: return Instruction.Create(code);
            case 1:
                return ops[0] switch
                {
                    Register a => Instruction.Create(code, a),
                    MemoryOperand m => Instruction.Create(code, m),
                    long v => code.ToOpCode().GetOpKind(0) == OpCodeOperandKind.imm32sex64 || code.ToOpCode().GetOpKind(0) == OpCodeOperandKind.imm8sex64
                        ? Instruction.Create(code, (int)v) : Instruction.Create(code, (uint)v),
                    _ => throw new ArgumentException("operand"),
                };
            case 2:
                return (ops[0], ops[1]) switch
                {
                    (Register a, Register b) => Instruction.Create(code, a, b),
                    (Register a, MemoryOperand m) => Instruction.Create(code, a, m),
                    (MemoryOperand m, Register b) => Instruction.Create(code, m, b),
                    (Register a, long v) => Instruction.Create(code, a, (ulong)v),
                    (MemoryOperand m, long v) => Instruction.Create(code, m, (int)v),
                    _ => throw new ArgumentException("operands"),
                };
            default:
                return (ops[0], ops[1], ops[2]) switch
                {
                    (Register a, Register b, Register cReg) => Instruction.Create(code, a, b, cReg),
                    (MemoryOperand m, Register b, Register cReg) => Instruction.Create(code, m, b, cReg),
                    (Register a, Register b, long v) => Instruction.Create(code, a, b, (int)v),
                    (Register a, MemoryOperand m, long v) => Instruction.Create(code, a, m, (int)v),
                    (MemoryOperand m, Register b, long v) => Instruction.Create(code, m, b, (int)v),
                    _ => throw new ArgumentException("operands"),
                };
        }
    }

    // ---------------------------------------------------------------- division safety

    static ulong OperandValue(Case c, int n, int size)
    {
        var ins = c.Ins;
        ulong mask = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        if (ins.GetOpKind(n) == OpKind.Register)
        {
            Register reg = ins.GetOpRegister(n);
            int info = ReVirt.Cpu.VirtualCpu.RegInfo[(int)reg];
            ulong v = c.Input[info & 15];
            return (info >> 4) == 4 ? (v >> 8) & 0xFF : v & mask;
        }
        ulong ea = MemBase + ins.MemoryDisplacement64;
        int off = (int)(ea - NativeRunner.ScratchBase);
        return BitConverter.ToUInt64(c.Input.Memory, off) & mask;
    }

    /// <summary>Steers most division cases away from #DE (which would kill the host process): small high halves.</summary>
    static void MakeDivisionSafe(Case c, Random r)
    {
        int size = c.Ins.MemorySize != MemorySize.Unknown && c.Ins.Op0Kind == OpKind.Memory ? c.Ins.MemorySize.GetSize() : c.Ins.Op0Register.GetSize();
        bool signed = c.Ins.Mnemonic == Mnemonic.Idiv;
        var s = c.Input;
        if (r.Next(4) == 0) return; // keep the random state; WouldFault filters it
        if (size == 1)
        {
            ulong ax = s[RAX] & 0xFFFF;
            ax = signed ? (ulong)(ushort)(short)(sbyte)(byte)ax : ax & 0xFF;
            s[RAX] = (s[RAX] & ~0xFFFFUL) | ax;
        }
        else
        {
            ulong mask = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
            ulong hi = signed ? (((s[RAX] & mask) >> (size * 8 - 1)) & 1) != 0 ? mask : 0 : (ulong)r.Next(3) & mask;
            s[RDX] = (s[RDX] & ~mask) | hi;
        }
    }

    static bool WouldFault(Case c)
    {
        var ins = c.Ins;
        int size = ins.Op0Kind == OpKind.Memory ? ins.MemorySize.GetSize() : ins.Op0Register.GetSize();
        ulong d = OperandValue(c, 0, size);
        if (d == 0) return true;
        var s = c.Input;
        int bits = size * 8;
        Int128 lo, hi;
        if (size == 1) { lo = s[RAX] & 0xFF; hi = (s[RAX] >> 8) & 0xFF; }
        else
        {
            ulong mask = size == 8 ? ulong.MaxValue : (1UL << bits) - 1;
            lo = s[RAX] & mask; hi = s[RDX] & mask;
        }
        UInt128 n = ((UInt128)(ulong)hi << bits) | (UInt128)(ulong)lo;
        if (ins.Mnemonic == Mnemonic.Div) return n / d >= (UInt128.One << bits);
        // signed: sign-extend the 2*bits dividend
        Int128 sn = (Int128)n;
        if (bits * 2 < 128) { int sh = 128 - bits * 2; sn = (sn << sh) >> sh; }
        Int128 sd = (Int128)(long)(d << (64 - bits)) >> (64 - bits);
        Int128 q = sn / sd;
        Int128 lim = Int128.One << (bits - 1);
        return q >= lim || q < -lim;
    }

    // ---------------------------------------------------------------- flag masks

    /// <summary>The flags the manual defines for this case (CF PF AF ZF SF OF DF subset).</summary>
    static ulong DefinedFlags(Case c)
    {
        ulong all = ArithFlags | DF;
        var ins = c.Ins;
        int size = ins.Op0Kind == OpKind.Memory ? ins.MemorySize.GetSize() : ins.Op0Kind == OpKind.Register ? ins.Op0Register.GetSize() : 8;
        int masked = c.Count < 0 ? -1 : c.Count & (size == 8 ? 0x3F : 0x1F);
        switch (ins.Mnemonic)
        {
            case Mnemonic.And or Mnemonic.Or or Mnemonic.Xor or Mnemonic.Test: return all & ~AF;
            case Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar:
                if (masked == 0) return all;
                return all & ~AF & ~(masked == 1 ? 0 : OF) & ~(masked > size * 8 ? CF : 0);
            case Mnemonic.Rol or Mnemonic.Ror or Mnemonic.Rcl or Mnemonic.Rcr:
                return masked == 1 || masked == 0 ? all : all & ~OF;
            case Mnemonic.Shld or Mnemonic.Shrd:
                if (masked == 0) return all;
                if (masked > size * 8) return DF;
                return all & ~AF & ~(masked == 1 ? 0 : OF);
            case Mnemonic.Mul or Mnemonic.Imul: return CF | OF | DF;
            case Mnemonic.Div or Mnemonic.Idiv: return DF;
            case Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc: return CF | ZF | DF;
            case Mnemonic.Bsf or Mnemonic.Bsr or Mnemonic.Tzcnt or Mnemonic.Lzcnt: return ZF | DF;
            default: return all;
        }
    }

    /// <summary>Result registers whose value the manual leaves undefined for this case (compared only on AMD).</summary>
    static bool ResultUndefined(Case c)
    {
        var ins = c.Ins;
        if (ins.Mnemonic is Mnemonic.Shld or Mnemonic.Shrd)
        {
            int size = ins.Op0Kind == OpKind.Memory ? ins.MemorySize.GetSize() : ins.Op0Register.GetSize();
            return (c.Count & 0x1F) > size * 8;
        }
        return false;
    }

    // ---------------------------------------------------------------- the test

    [Theory]
    [MemberData(nameof(FamilyNames))]
    public void MatchesHost(string family)
    {
        if (!NativeRunner.IsSupported) return;
        var mnemonics = new HashSet<Mnemonic>(Families[family]);
        var codes = Enum.GetValues<Code>().Where(k => mnemonics.Contains(k.Mnemonic()) && Supported(k, out _)).ToList();
        Assert.NotEmpty(codes);
        int seed = 12345;
        foreach (char ch in family) seed = seed * 31 + ch; // stable across runs (string hashes are randomized per process)
        var r = new Random(seed);
        var failures = new List<string>();
        int failed = 0, run = 0;
        var perCode = new Dictionary<Code, int>();
        foreach (var code in codes)
        {
            var op = code.ToOpCode();
            int made = 0;
            for (int attempt = 0; made < CasesPerCode && attempt < CasesPerCode * 20; attempt++)
            {
                var c = Generate(code, op, r);
                if (c == null) continue;
                made++;
                run++;
                var native = NativeRunner.Run(c.NativeCode, c.Input);
                var vm = VmRunner.Run(c.VmCode, c.Input, out string? fault);
                ulong mask = UndefinedFlagsCompared(c) ? ArithFlags | DF : DefinedFlags(c);
                string diff = fault ?? "";
                if (fault == null && (HostIsAmd || !ResultUndefined(c)))
                    diff = Diff(native, vm, mask, compareXmm: false);
                if (diff.Length != 0)
                {
                    failed++;
                    perCode[code] = perCode.GetValueOrDefault(code) + 1;
                    if (failures.Count < 25)
                        failures.Add($"{c.Ins} [{Convert.ToHexString(c.VmCode)}] count={c.Count}\ninput:\n{c.Input}{diff}");
                }
            }
        }
        output.WriteLine($"{family}: {run} cases over {codes.Count} forms, {failed} differ (host {(HostIsAmd ? "AMD: undefined flags compared" : "not AMD: defined flags only")}{(HostIsAmd && !HostBitScanWritesUndefinedFlags ? ", except the bit scans' (the host leaves them unchanged)" : "")})");
        Assert.True(failed == 0,
            $"{failed} of {run} cases differ; by form: {string.Join(", ", perCode.Select(kv => $"{kv.Key}={kv.Value}"))}\n\n{string.Join("\n", failures)}");
        Assert.True(run >= codes.Count * CasesPerCode / 2, $"only {run} cases generated for {codes.Count} forms");
    }
}
