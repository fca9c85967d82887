using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iced.Intel;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>Raised by an instruction handler for a synchronous guest exception (SIGILL, SIGFPE, SIGTRAP ...).</summary>
public sealed class GuestSignalException : Exception
{
    public int Signal { get; }
    public int Code { get; }
    public ulong FaultAddress { get; }
    /// <summary>A trap (int3, int1): the instruction retired, so the signal reports the rip after it.</summary>
    public bool Trap { get; init; }
    public GuestSignalException(int signal, string message, int code = 0, ulong faultAddress = 0) : base(message)
    { Signal = signal; Code = code; FaultAddress = faultAddress; }
}

/// <summary>What a CPU thread context calls out to: syscalls and the nondeterministic instructions.</summary>
public interface ICpuHost
{
    /// <summary>Executes the syscall in rax with the arguments in the registers; writes the result to rax.</summary>
    void Syscall(VirtualCpu cpu);
    /// <summary>RDTSC / RDTSCP: a nondeterministic input.</summary>
    ulong ReadTimestampCounter(VirtualCpu cpu);
    /// <summary>RDRAND / RDSEED: a nondeterministic input (only reached when the CPU model advertises it).</summary>
    ulong ReadRandom(VirtualCpu cpu);
}

/// <summary>
/// One guest thread's architectural state (registers, flags, FS/GS base, SSE and x87 state) and the
/// interpreter loop that runs it over the shared <see cref="CodeCache"/> and <see cref="GuestMemory"/>.
/// Handlers are static functions taking the thread; the loop dispatches one indirect call per instruction.
/// </summary>
public sealed unsafe partial class VirtualCpu
{
    // ---------------------------------------------------------------- architectural state
    public const int RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7;
    public readonly ulong[] R = new ulong[16];
    public ulong Rip;
    /// <summary>RFLAGS. The arithmetic flags of the last add/sub/logic operation are derived from its operands only
    /// when read (see "lazy flags" below); every reader goes through this property, so all see exact values.</summary>
    public ulong Rflags
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get { if (_lazy != LazyNone) MaterializeFlags(); return _flags; }
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        set { _lazy = LazyNone; _flags = value; }
    }
    ulong _flags = 0x202;
    public ulong FsBase, GsBase;
    /// <summary>XMM registers as pairs of 64-bit lanes: Xmm[2*n] is the low half of xmmN.</summary>
    public readonly ulong[] Xmm = new ulong[32];
    public uint Mxcsr = 0x1F80;

    public const ulong CF = 1, PF = 4, AF = 0x10, ZF = 0x40, SF = 0x80, TF = 0x100, IF = 0x200, DF = 0x400, OF = 0x800;
    public const ulong ArithFlags = CF | PF | AF | ZF | SF | OF;

    // ---------------------------------------------------------------- environment
    public readonly GuestMemory Mem;
    public readonly CodeCache Code;
    public ICpuHost Host;
    public int Tid;

    // ---------------------------------------------------------------- counters
    /// <summary>Retired guest instructions (a rep-prefixed string instruction counts once).</summary>
    public ulong InstructionCount;
    /// <summary>Retired control transfers (jcc taken or not, jmp, call, ret, loop, syscall).</summary>
    public ulong BranchCount;
    /// <summary>Stop before retiring instruction number StopAt (exact; checked once per block).</summary>
    public ulong StopAt = ulong.MaxValue;
    /// <summary>Set by a handler (exit, signal delivery, thread switch) to make the loop return after the current instruction.</summary>
    public bool Yield;

    public VirtualCpu(GuestMemory mem, CodeCache code, ICpuHost host)
    {
        Mem = mem; Code = code; Host = host;
    }

    // ---------------------------------------------------------------- registers by Iced name
    // RegInfo[reg] = index | kind << 4; kinds: 0 = 64-bit, 1 = 32-bit, 2 = 16-bit, 3 = low byte, 4 = high byte (AH..BH),
    // 5 = xmm, 6 = segment/other
    internal static readonly byte[] RegInfo = BuildRegInfo();
    internal static readonly byte[] RegBytes = BuildRegBytes();
    internal static readonly byte[] MemBytes = BuildMemBytes();

    static byte[] BuildRegInfo()
    {
        var t = new byte[IcedCounts.Register];
        for (int i = 0; i < t.Length; i++)
        {
            var r = (Register)i;
            if (r.IsGPR64()) t[i] = (byte)(r - Register.RAX);
            else if (r.IsGPR32()) t[i] = (byte)((r - Register.EAX) | 1 << 4);
            else if (r.IsGPR16()) t[i] = (byte)((r - Register.AX) | 2 << 4);
            else if (r.IsGPR8())
            {
                if (r >= Register.AH && r <= Register.BH) t[i] = (byte)((r - Register.AH) | 4 << 4);
                else if (r <= Register.BL) t[i] = (byte)((r - Register.AL) | 3 << 4);
                else t[i] = (byte)((r - Register.SPL + 4) | 3 << 4);
            }
            else if (r.IsXMM()) t[i] = (byte)((r - Register.XMM0) | 5 << 4);
            else t[i] = 6 << 4;
        }
        return t;
    }

    static byte[] BuildRegBytes()
    {
        var t = new byte[IcedCounts.Register];
        for (int i = 0; i < t.Length; i++) t[i] = (byte)((Register)i).GetSize();
        return t;
    }

    static byte[] BuildMemBytes()
    {
        var t = new byte[IcedCounts.MemorySize];
        for (int i = 0; i < t.Length; i++) t[i] = (byte)Math.Min(255, ((MemorySize)i).GetSize());
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong GetReg(Register r)
    {
        int info = RegInfo[(int)r];
        ulong v = R[info & 15];
        switch (info >> 4)
        {
            case 0: return v;
            case 1: return (uint)v;
            case 2: return (ushort)v;
            case 3: return (byte)v;
            case 4: return (byte)(v >> 8);
            default: throw Unsupported(r);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetReg(Register r, ulong v)
    {
        int info = RegInfo[(int)r];
        ref ulong d = ref R[info & 15];
        switch (info >> 4)
        {
            case 0: d = v; break;
            case 1: d = (uint)v; break;
            case 2: d = (d & ~0xFFFFUL) | (ushort)v; break;
            case 3: d = (d & ~0xFFUL) | (byte)v; break;
            case 4: d = (d & ~0xFF00UL) | ((ulong)(byte)v << 8); break;
            default: throw Unsupported(r);
        }
    }

    static Exception Unsupported(Register r) => new GuestSignalException(4, $"unsupported register {r}");

    // ---------------------------------------------------------------- operands

    /// <summary>Effective address of the instruction's memory operand (segment base included).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Ea(ref Instruction i)
    {
        ulong a = i.MemoryDisplacement64;
        Register b = i.MemoryBase;
        if (b != Register.None && b != Register.RIP)
        {
            if (b == Register.EIP) a = (uint)a; else a += R[RegInfo[(int)b] & 15];
        }
        Register x = i.MemoryIndex;
        if (x != Register.None) a += R[RegInfo[(int)x] & 15] * (ulong)i.MemoryIndexScale;
        if (i.MemoryDisplSize == 4 && b != Register.RIP && ((RegInfo[(int)b] >> 4) == 1 || (RegInfo[(int)x] >> 4) == 1)) a = (uint)a;
        Register s = i.MemorySegment;
        if (s == Register.FS) a += FsBase; else if (s == Register.GS) a += GsBase;
        return a;
    }

    /// <summary>Size in bytes of operand n (register or memory).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int OpSize(ref Instruction i, int n)
    {
        OpKind k = Kind(ref i, n);
        if (k == OpKind.Register) return RegBytes[(int)OpReg(ref i, n)];
        if (k == OpKind.Memory) return MemBytes[(int)i.MemorySize];
        return ImmSize(k);
    }

    /// <summary>Operand kind; with a constant n (after inlining) this is a field read, not Iced's switch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static OpKind Kind(ref Instruction i, int n) => n switch { 0 => i.Op0Kind, 1 => i.Op1Kind, _ => i.GetOpKind(n) };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Register OpReg(ref Instruction i, int n) => n switch { 0 => i.Op0Register, 1 => i.Op1Register, _ => i.GetOpRegister(n) };

    /// <summary>An immediate operand, sign- or zero-extended as its kind says.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Imm(ref Instruction i, OpKind k, int n) => k switch
    {
        OpKind.Immediate8 => i.Immediate8,
        OpKind.Immediate32 => i.Immediate32,
        OpKind.Immediate8to32 => (uint)i.Immediate8to32,
        OpKind.Immediate8to64 => (ulong)i.Immediate8to64,
        OpKind.Immediate32to64 => (ulong)i.Immediate32to64,
        _ => i.GetImmediate(n),
    };

    static int ImmSize(OpKind k) => k switch
    {
        OpKind.Immediate8 => 1,
        OpKind.Immediate16 or OpKind.Immediate8to16 => 2,
        OpKind.Immediate32 or OpKind.Immediate8to32 => 4,
        _ => 8,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadOp(ref Instruction i, int n, int size)
    {
        OpKind k = Kind(ref i, n);
        if (k == OpKind.Register) return GetReg(OpReg(ref i, n));
        if (k == OpKind.Memory) return Mem.Read(Ea(ref i), size);
        return Imm(ref i, k, n) & SizeMask(size);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void WriteOp(ref Instruction i, int n, ulong v, int size)
    {
        if (Kind(ref i, n) == OpKind.Register) SetReg(OpReg(ref i, n), v);
        else Mem.Write(Ea(ref i), v, size);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong SizeMask(int size) => size >= 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong SignBit(int size) => 1UL << (size * 8 - 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long SignExtend(ulong v, int size) => size switch
    {
        1 => (sbyte)v,
        2 => (short)v,
        4 => (int)v,
        _ => (long)v,
    };

    // ---------------------------------------------------------------- stack

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push64(ulong v) { ulong sp = R[RSP] - 8; Mem.Write64(sp, v); R[RSP] = sp; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Pop64() { ulong sp = R[RSP]; ulong v = Mem.Read64(sp); R[RSP] = sp + 8; return v; }

    // ---------------------------------------------------------------- flags

    static readonly byte[] ParityTable = BuildParity();
    static byte[] BuildParity()
    {
        var t = new byte[256];
        for (int i = 0; i < 256; i++) t[i] = (byte)((System.Numerics.BitOperations.PopCount((uint)i) & 1) == 0 ? PF : 0);
        return t;
    }

    /// <summary>ZF, SF and PF of a result of the given size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ZSP(ulong r, int size)
    {
        ulong f = ParityTable[(byte)r];
        if ((r & SizeMask(size)) == 0) f |= ZF;
        if ((r & SignBit(size)) != 0) f |= SF;
        return f;
    }

    // ---------------------------------------------------------------- lazy flags
    // An add/sub/logic operation records (kind, size, a, b, result) instead of computing CF PF AF ZF SF OF; a reader
    // of Rflags materialises them with the same formulas, and a condition test derives just the flags it needs.
    // A shift records its result and the CF and OF it computed (ZF, SF and PF follow from the result, AF is set);
    // a rotate changes CF and OF only, so it lays those two over whatever is pending (a record or the stored flags)
    // without deriving the rest. The record is a pure function of the instructions' inputs, so which reader comes
    // when changes nothing.

    internal const int LazyNone = 0, LazyAdd = 1, LazySub = 2, LazyLogic = 3, LazyKeepCf = 4, LazyShift = 8, LazyRotate = 16;
    int _lazy, _lazySize;
    ulong _lazyA, _lazyB, _lazyR;
    /// <summary>CF and OF (as flag bits) of a pending shift record, or laid over the rest by a rotate.</summary>
    ulong _lazyCarryOverflow;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Record(int kind, ulong a, ulong b, ulong r, int size) { _lazy = kind; _lazySize = size; _lazyA = a; _lazyB = b; _lazyR = r; }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void MaterializeFlags()
    {
        int kind = _lazy;
        ulong f;
        if ((kind & LazyShift) != 0) f = ZSP(_lazyR, _lazySize) | AF | _lazyCarryOverflow;
        else if ((kind & 3) != 0)
        {
            f = ZSP(_lazyR, _lazySize) | CarryOverflowAux(kind & 3, _lazyA, _lazyB, _lazyR, _lazySize);
            if ((kind & LazyKeepCf) != 0) f = (f & ~CF) | (_flags & CF);
        }
        else f = _flags & ArithFlags; // a rotate over stored flags
        if ((kind & LazyRotate) != 0) f = (f & ~(CF | OF)) | _lazyCarryOverflow;
        _flags = (_flags & ~ArithFlags) | f;
        _lazy = LazyNone;
    }

    /// <summary>CF, OF and AF of an add (carry into the result included in r), sub (borrow included) or logic op.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong CarryOverflowAux(int kind, ulong a, ulong b, ulong r, int size)
    {
        if (kind == LazyLogic) return 0;
        ulong sb = SignBit(size), f = (a ^ b ^ r) & AF;
        if (kind == LazyAdd)
        {
            if ((((a & b) | ((a | b) & ~r)) & sb) != 0) f |= CF;
            if ((((a ^ r) & (b ^ r)) & sb) != 0) f |= OF;
        }
        else
        {
            if ((((~a & b) | (~(a ^ b) & r)) & sb) != 0) f |= CF;
            if ((((a ^ b) & (a ^ r)) & sb) != 0) f |= OF;
        }
        return f;
    }

    /// <summary>CF ZF SF OF (not PF, not AF) of the pending record, without storing anything: what a condition test needs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    ulong LazyConditionFlags()
    {
        int kind = _lazy;
        if ((kind & (LazyShift | LazyRotate)) != 0) return ShiftRotateConditionFlags();
        return RecordConditionFlags(kind, _lazySize, _lazyA, _lazyB, _lazyR);
    }

    /// <summary>CF ZF SF OF of an add/sub/logic record (kind, size, a, b, r).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    ulong RecordConditionFlags(int kind, int size, ulong a, ulong b, ulong r)
    {
        ulong f = 0;
        if ((r & SizeMask(size)) == 0) f |= ZF;
        if ((r & SignBit(size)) != 0) f |= SF;
        f |= CarryOverflowAux(kind & 3, a, b, r, size) & (CF | OF);
        if ((kind & LazyKeepCf) != 0) f = (f & ~CF) | (_flags & CF);
        return f;
    }

    // The compiled tier holds the pending record in locals of a region (kind, size, a, b, r, carry/overflow) and
    // stores it here only when it leaves the region or calls a handler; these take the record as arguments.

    /// <summary>Makes (kind, size, a, b, r, co) the pending record.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetRecord(int kind, int size, ulong a, ulong b, ulong r, ulong co)
    {
        _lazy = kind; _lazySize = size; _lazyA = a; _lazyB = b; _lazyR = r; _lazyCarryOverflow = co;
    }

    /// <summary><see cref="Cond"/> with the given record pending.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool CondOf(ConditionCode cc, int kind, int size, ulong a, ulong b, ulong r, ulong co)
    {
        if (kind == LazyNone || (kind & (LazyShift | LazyRotate)) != 0 || cc is ConditionCode.p or ConditionCode.np)
            return CondOfStored(cc, kind, size, a, b, r, co);
        return Holds(cc, RecordConditionFlags(kind, size, a, b, r));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    bool CondOfStored(ConditionCode cc, int kind, int size, ulong a, ulong b, ulong r, ulong co)
    {
        // materialising the record here and again from the region's copy gives the same flags
        SetRecord(kind, size, a, b, r, co);
        return Cond(cc);
    }

    /// <summary>What <see cref="SetFlagsIncDec"/> does before it records: the CF to keep is derived from the
    /// given pending record (into the stored flags), which the caller then replaces.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void KeepCarryOf(int kind, int size, ulong a, ulong b, ulong r, ulong co)
    {
        if ((kind & (LazyShift | LazyRotate)) != 0) { SetRecord(kind, size, a, b, r, co); MaterializeFlags(); }
        else if (kind != LazyNone && (kind & LazyKeepCf) == 0)
            _flags = (_flags & ~CF) | (CarryOverflowAux(kind & 3, a, b, r, size) & CF);
    }

    /// <summary>The condition flags while a shift record or a rotate's CF and OF are pending: they are materialised
    /// (the same values, only stored; kept out of line, the add/sub/logic records are the frequent case).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    ulong ShiftRotateConditionFlags()
    {
        MaterializeFlags();
        return _flags;
    }

    /// <summary>Flags after a shift with a non-zero count: ZF, SF and PF from the result r (of the given size), AF
    /// set (undefined on paper; the reference hardware sets it), CF and OF as given (0 or not 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsShift(ulong r, int size, ulong cf, ulong of)
    {
        _lazy = LazyShift; _lazySize = size; _lazyR = r;
        _lazyCarryOverflow = (cf != 0 ? CF : 0) | (of != 0 ? OF : 0);
    }

    /// <summary>Flags after a rotate with a non-zero count: CF and OF as given (0 or not 0), the others kept.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsRotate(ulong cf, ulong of)
    {
        _lazy |= LazyRotate;
        _lazyCarryOverflow = (cf != 0 ? CF : 0) | (of != 0 ? OF : 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsAdd(ulong a, ulong b, ulong r, int size) => Record(LazyAdd, a, b, r, size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsSub(ulong a, ulong b, ulong r, int size) => Record(LazySub, a, b, r, size);

    /// <summary>Flags of AND/OR/XOR/TEST: CF = OF = 0, AF cleared (undefined on paper; cleared by hardware).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsLogic(ulong r, int size) => Record(LazyLogic, 0, 0, r, size);

    /// <summary>Folds the CF of the thread's pending record into the stored flags, as an inc or dec does before
    /// recording itself (<see cref="KeepCarryOf"/> of the thread's own record). Compiled code calls it where an
    /// inc/dec's record is first observed rather than at the inc/dec (the record it keeps CF from is still the
    /// thread's there); a second call before the thread's record changes recomputes the same CF.</summary>
    /// <remarks>Only CF is written: the inc/dec's record replaces the thread's record right after, and materialising
    /// it takes nothing else from the stored arithmetic flags (so a shift's or rotate's CF is taken as it is, without
    /// the materialisation <see cref="KeepCarryOf"/> does) and it is inlined: compiled code calls nothing there, so
    /// no value the hot path made has to live across a call (the JIT would spill it where it is made).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void KeepPendingCarry()
    {
        int kind = _lazy;
        ulong cf;
        if ((kind & (LazyShift | LazyRotate)) != 0) cf = _lazyCarryOverflow;
        else if (kind != LazyNone && (kind & LazyKeepCf) == 0) cf = CarryOverflowAux(kind & 3, _lazyA, _lazyB, _lazyR, _lazySize);
        else return;
        _flags = (_flags & ~CF) | (cf & CF);
    }

    /// <summary>Flags of INC (a + 1) and DEC (a - 1): as add/sub, but CF keeps its value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagsIncDec(bool dec, ulong a, ulong r, int size)
    {
        // the CF to keep: only it is derived from a pending record (the new record replaces every other flag)
        KeepCarryOf(_lazy, _lazySize, _lazyA, _lazyB, _lazyR, _lazyCarryOverflow);
        Record((dec ? LazySub : LazyAdd) | LazyKeepCf, a, 1, r, size);
    }

    /// <summary>Replaces all six arithmetic flags at once: a pending record is dropped without being derived, as
    /// none of its flags would survive.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetArithFlags(ulong f) { _lazy = LazyNone; _flags = (_flags & ~ArithFlags) | (f & ArithFlags); }

    public bool Flag(ulong f) => (Rflags & f) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Cond(ConditionCode cc) => Holds(cc, _lazy == LazyNone || cc is ConditionCode.p or ConditionCode.np ? Rflags : LazyConditionFlags());

    /// <summary>Whether condition cc holds with the flags f.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Holds(ConditionCode cc, ulong f)
    {
        switch (cc)
        {
            case ConditionCode.o: return (f & OF) != 0;
            case ConditionCode.no: return (f & OF) == 0;
            case ConditionCode.b: return (f & CF) != 0;
            case ConditionCode.ae: return (f & CF) == 0;
            case ConditionCode.e: return (f & ZF) != 0;
            case ConditionCode.ne: return (f & ZF) == 0;
            case ConditionCode.be: return (f & (CF | ZF)) != 0;
            case ConditionCode.a: return (f & (CF | ZF)) == 0;
            case ConditionCode.s: return (f & SF) != 0;
            case ConditionCode.ns: return (f & SF) == 0;
            case ConditionCode.p: return (f & PF) != 0;
            case ConditionCode.np: return (f & PF) == 0;
            case ConditionCode.l: return ((f & SF) != 0) != ((f & OF) != 0);
            case ConditionCode.ge: return ((f & SF) != 0) == ((f & OF) != 0);
            case ConditionCode.le: return (f & ZF) != 0 || ((f & SF) != 0) != ((f & OF) != 0);
            case ConditionCode.g: return (f & ZF) == 0 && ((f & SF) != 0) == ((f & OF) != 0);
            default: return true;
        }
    }

    // ---------------------------------------------------------------- the loop

    /// <summary>Index of the instruction being executed within the current block (for fault accounting).</summary>
    public int BlockIndex;

    /// <summary>Which block of the running compiled region (<see cref="Block.Members"/>) is executing; the execution
    /// loop sets it to the block it enters the region at, where the compiled code then starts.</summary>
    public int RegionMember;

    ExecutionLoop? _loop;

    /// <summary>The loop that runs this thread (stop points, counts, faults); its executor can be replaced.</summary>
    public ExecutionLoop Loop => _loop ??= new ExecutionLoop(this, Interpreter.Instance);

    /// <summary>
    /// Runs until a handler sets <see cref="Yield"/> or the instruction count reaches <see cref="StopAt"/>.
    /// Guest faults are returned as signals to the caller (the kernel decides delivery).
    /// </summary>
    public RunResult Run() => Loop.Run();

    /// <summary>Exceptions that can only come from a defect in the VM itself (never control flow).</summary>
    public static bool IsDefect(Exception e)
        => e is IndexOutOfRangeException or ArgumentOutOfRangeException or NullReferenceException or InvalidCastException
            or ArithmeticException or FormatException or KeyNotFoundException;

    /// <summary>The synchronous signal raised by the last instruction when Run returned Fault.</summary>
    public GuestSignalException? PendingFault;
}

public enum RunResult { Continue, Yielded, ReachedStop, Fault }
