using System.Reflection;
using System.Reflection.Emit;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>A compiled region: runs all of its first block's instructions on the thread, and on into further blocks
/// of the region (see <see cref="BlockCompiler"/>).</summary>
public delegate void CompiledBlock(VirtualCpu c);

/// <summary>
/// The compiled tier: lowers a decoded block to IL once (a <see cref="DynamicMethod"/>, compiled by the runtime's
/// JIT), with register numbers, operand sizes, immediates, displacements and next-ips as constants. The frequent
/// integer forms (moves, ALU operations, push/pop, call/ret/jmp/jcc, setcc/cmovcc) run inline: the guest registers
/// they use are IL locals from the region's entry to its exits (stored into the thread at each exit and around
/// handler calls and memory slow paths); the counts stay in the thread (one add per block); the pending flag record
/// is not held in locals but known to the emitter as where its parts are (<see cref="Src"/>: mostly the guest
/// registers and constants the flag-setting instruction used), and stored into the thread only where something can
/// read it (an exit, a handler, a slow path, a block start that does not overwrite it first); a flag record that the
/// next instructions overwrite before anything can read it is not computed (flag liveness); a conditional jump after
/// a compare or test decides from the compared values (fusion); 32-bit operations are 32-bit IL operations (one host
/// instruction each, rotates included). Memory goes through the software TLB's probe emitted inline.
/// Every other instruction calls its interpreter handler after the state the handler sees (registers, flags, counts,
/// rip, block index) is stored.
///
/// The contract is the interpreter's (<see cref="BlockExecutor"/>): each instruction's effects happen in the order
/// its handler has them; a TLB miss takes a slow path that does not throw, and a fault of instruction k leaves the
/// region with everything before k stored, <see cref="VirtualCpu.BlockIndex"/> k, and the fault raised for the
/// execution loop to map as the interpreter's; no exception handler is left in a region, so the JIT keeps its locals
/// in registers. A region (a hot block and the warm blocks it leads to by direct transfers, see
/// <see cref="CodeCache.Compile"/>) is one method: a direct transfer to a block of the region is an internal branch
/// taken when the execution loop would run that block whole too (no yield, the block fits before the stop), so a
/// loop of several blocks runs without leaving compiled code; each block is counted as it completes and
/// <see cref="VirtualCpu.RegionMember"/> names the one executing. The emitted code depends only on the blocks'
/// addresses and bytes, so one method serves every code cache (forks, re-executions of a program, test machines)
/// through a bounded table.
/// </summary>
public static unsafe partial class BlockCompiler
{
    /// <summary>Compiled methods kept for reuse; past this the table is emptied (blocks keep their delegates, and
    /// a method no block references any more is collected).</summary>
    const int MaxShared = 8192;

    /// <summary>The start and bytes of every block of a region, in order: all that the emitted code depends on.</summary>
    /// (A class: a dictionary keyed by a struct of this assembly is JIT-compiled at the first region of every run.)
    sealed class Key(byte[] blob) : IEquatable<Key>
    {
        readonly byte[] _blob = blob;
        public bool Equals(Key? o) => o != null && _blob.AsSpan().SequenceEqual(o._blob);
        public override bool Equals(object? o) => o is Key k && Equals(k);
        public override int GetHashCode()
        {
            var h = new HashCode();
            h.AddBytes(_blob);
            return h.ToHashCode();
        }

        public static Key Of(Block[] members, bool countHelpers)
        {
            int size = 1;
            foreach (var m in members) size += 12 + m.Bytes.Length;
            var blob = new byte[size];
            blob[0] = countHelpers ? (byte)1 : (byte)0;
            int o = 1;
            foreach (var m in members)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(blob.AsSpan(o), m.Start);
                System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(blob.AsSpan(o + 8), m.Bytes.Length);
                m.Bytes.CopyTo(blob, o + 12);
                o += 12 + m.Bytes.Length;
            }
            return new Key(blob);
        }
    }

    static readonly Dictionary<Key, DynamicMethod> Shared = new();

    /// <summary>Compiles a region (see <see cref="CodeCache.Compile"/>): entered at the block
    /// <see cref="VirtualCpu.RegionMember"/> names, it may continue into any of them. With countHelpers each handler
    /// call also counts itself in the code cache's <see cref="TierProfile.HelperCalls"/> (a profile run).</summary>
    public static CompiledBlock Compile(Block[] members, bool countHelpers = false)
    {
        long cpu0 = ReVirt.Linux.HostClock.Now(ReVirt.Linux.Clocks.THREAD_CPUTIME_ID);
        var key = Key.Of(members, countHelpers);
        DynamicMethod? dm;
        lock (Shared) Shared.TryGetValue(key, out dm);
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        if (dm == null)
        {
            dm = new Emitter(members, countHelpers).Emit();
            lock (Shared)
            {
                if (Shared.Count >= MaxShared) Shared.Clear();
                Shared[key] = dm;
            }
        }
        long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        var f = (CompiledBlock)dm.CreateDelegate(typeof(CompiledBlock), members); // JIT-compiles it (see Emitter)
        Interlocked.Add(ref CompileTime.EmitTicks, t1 - t0);
        Interlocked.Add(ref CompileTime.JitTicks, System.Diagnostics.Stopwatch.GetTimestamp() - t1);
        Interlocked.Add(ref CompileTime.CpuNs, ReVirt.Linux.HostClock.Now(ReVirt.Linux.Clocks.THREAD_CPUTIME_ID) - cpu0);
        return f;
    }

    // ---------------------------------------------------------------- reflection handles

    const BindingFlags Inst = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
    static readonly FieldInfo FR = typeof(VirtualCpu).GetField(nameof(VirtualCpu.R))!;
    static readonly FieldInfo FRip = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Rip))!;
    static readonly FieldInfo FCount = typeof(VirtualCpu).GetField(nameof(VirtualCpu.InstructionCount))!;
    static readonly FieldInfo FBranches = typeof(VirtualCpu).GetField(nameof(VirtualCpu.BranchCount))!;
    static readonly FieldInfo FStopAt = typeof(VirtualCpu).GetField(nameof(VirtualCpu.StopAt))!;
    static readonly FieldInfo FYield = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Yield))!;
    static readonly FieldInfo FBlockIndex = typeof(VirtualCpu).GetField(nameof(VirtualCpu.BlockIndex))!;
    static readonly FieldInfo FRegionMember = typeof(VirtualCpu).GetField(nameof(VirtualCpu.RegionMember))!;
    static readonly FieldInfo FMem = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Mem))!;
    static readonly FieldInfo FCode = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Code))!;
    static readonly FieldInfo FProfile = typeof(CodeCache).GetField(nameof(CodeCache.Profile))!;
    static readonly FieldInfo FHelperCalls = typeof(TierProfile).GetField(nameof(TierProfile.HelperCalls))!;
    static readonly FieldInfo FFsBase = typeof(VirtualCpu).GetField(nameof(VirtualCpu.FsBase))!;
    static readonly FieldInfo FGsBase = typeof(VirtualCpu).GetField(nameof(VirtualCpu.GsBase))!;
    static readonly FieldInfo FFlags = typeof(VirtualCpu).GetField("_flags", Inst)!;
    static readonly FieldInfo FLazy = typeof(VirtualCpu).GetField("_lazy", Inst)!;
    static readonly FieldInfo FLazySize = typeof(VirtualCpu).GetField("_lazySize", Inst)!;
    static readonly FieldInfo FLazyA = typeof(VirtualCpu).GetField("_lazyA", Inst)!;
    static readonly FieldInfo FLazyB = typeof(VirtualCpu).GetField("_lazyB", Inst)!;
    static readonly FieldInfo FLazyR = typeof(VirtualCpu).GetField("_lazyR", Inst)!;
    static readonly FieldInfo FLazyCarryOverflow = typeof(VirtualCpu).GetField("_lazyCarryOverflow", Inst)!;
    static readonly FieldInfo FInsts = typeof(Block).GetField(nameof(Block.Insts))!;
    static readonly FieldInfo FHandlers = typeof(Block).GetField(nameof(Block.Handlers))!;
    // the memory's calls and the byte swaps through one small type (see RegionCalls: a lookup where they live costs more
    // reflection than the rest of these together)
    static readonly MethodInfo MReadTlb = RegionCalls.Of(nameof(RegionCalls.ReadTlb));
    static readonly MethodInfo MLoadSlow = RegionCalls.Of(nameof(RegionCalls.LoadSlow));
    static readonly MethodInfo MStoreSlow = RegionCalls.Of(nameof(RegionCalls.StoreSlow));
    static readonly MethodInfo MFaulted = RegionCalls.Of(nameof(RegionCalls.Faulted));
    static readonly MethodInfo MTakeFault = RegionCalls.Of(nameof(RegionCalls.TakeFault));
    static readonly MethodInfo MCodeInvalidated = RegionCalls.Of(nameof(RegionCalls.CodeInvalidated));
    static readonly MethodInfo MCondOf = typeof(VirtualCpu).GetMethod(nameof(VirtualCpu.CondOf), Inst)!;
    static readonly MethodInfo MReverse32 = RegionCalls.Of(nameof(RegionCalls.Reverse32));
    static readonly MethodInfo MReverse64 = RegionCalls.Of(nameof(RegionCalls.Reverse64));
    /// <summary>OF's bit number in RFLAGS (and in the flag record's carry/overflow word).</summary>
    static readonly int OfBit = System.Numerics.BitOperations.Log2(VirtualCpu.OF);
    static readonly MethodInfo MKeepCarryOf = typeof(VirtualCpu).GetMethod(nameof(VirtualCpu.KeepCarryOf), Inst)!;
    static readonly MethodInfo MKeepPendingCarry = typeof(VirtualCpu).GetMethod(nameof(VirtualCpu.KeepPendingCarry), Inst)!;

    // ---------------------------------------------------------------- the pending flag record, as the emitter knows it

    /// <summary>The parts of the pending flag record (<see cref="VirtualCpu.SetRecord"/>'s arguments, in order) and
    /// the thread's fields that hold them.</summary>
    const int RecKind = 0, RecSize = 1, RecA = 2, RecB = 3, RecR = 4, RecCo = 5, RecParts = 6;
    static readonly FieldInfo[] RecFields = { FLazy, FLazySize, FLazyA, FLazyB, FLazyR, FLazyCarryOverflow };

    /// <summary>KeepCf: the kind part of an inc/dec's record (the constant C) whose CF is still to be taken from the
    /// record in the thread's fields (<see cref="VirtualCpu.KeepPendingCarry"/>, emitted where the part is pushed,
    /// before any part is stored: see <see cref="Emitter.PushPart"/>).</summary>
    enum SrcKind { Thread, Const, Reg, Local, Add, Sub, And, KeepCf }

    /// <summary>Where the emitted code finds one part of the pending flag record at a point of a region: in the
    /// thread's field (as at a block's start and after a handler), a constant, the low Size bytes of a guest
    /// register's local, the part's own local, or an operation on registers and constants masked to Size bytes (a
    /// compare's result from its operands, an add's first operand from its result and second operand). So an
    /// instruction that sets flags usually moves nothing: the parts are computed only where something reads them
    /// (a handler, a slow path, an exit, a condition that is not fused). A part that reads a register is copied
    /// into its local before that register is written (<see cref="Emitter.Pin"/>). Values are immutable: a slow
    /// path keeps the record of its site.</summary>
    /// `CarryIn` (a kind part only): the result includes a carry or borrow in (sbb), so CF and OF follow only from
    /// the record's formulas, not from a comparison of the operands.
    sealed record Src(SrcKind Kind, ulong C = 0, int Reg = 0, int Size = 8, Src? X = null, Src? Y = null, bool CarryIn = false)
    {
        public static readonly Src Thread = new(SrcKind.Thread);
        public static readonly Src Local = new(SrcKind.Local);
        public static Src Const(ulong c) => new(SrcKind.Const, C: c);
        public static Src OfReg(int r, int size) => new(SrcKind.Reg, Reg: r, Size: size);
        public static Src Op(SrcKind k, Src x, Src y, int size) => new(k, Size: size, X: x, Y: y);
        public bool Uses(int r) => Kind == SrcKind.Reg ? Reg == r : X != null && (X.Uses(r) || Y!.Uses(r));
    }

    static Src[] ThreadRecord()
    {
        // a loop, not Array.Fill: Fill's generic span helper is not in the precompiled image and the runtime compiled it
        // at full optimisation at the first region's compile
        var rec = new Src[RecParts];
        for (int i = 0; i < rec.Length; i++) rec[i] = Src.Thread;
        return rec;
    }

    // ---------------------------------------------------------------- what an instruction does, decided before emitting

    enum Form { Helper, Nop, Mov, Movzx, Movsx, Lea, Alu, Sbb, IncDec, Neg, Not, Push, Pop, Call, Ret, Jmp, Jcc, Setcc, Cmovcc, Shift, ShiftCl, Imul, Bswap, Xmm }

    /// <summary>How an instruction touches the arithmetic flags, for liveness.</summary>
    enum FlagUse { None, Writes, Reads }

    enum OpClass { Bad, Reg, Mem, Imm }

    struct Operand
    {
        public OpClass Class;
        public int Reg, RegKind; // RegKind as VirtualCpu.RegInfo: 0 = 64, 1 = 32, 2 = 16, 3 = low byte, 4 = high byte
        public ulong Imm;
    }

    struct Plan
    {
        public Form Form;
        public Operand O0, O1;
        public int Size;       // operand size (destination size for movzx/movsx)
        public int SrcSize;    // source size for movzx/movsx
        public bool Memory;    // accesses guest memory (can fault)
        public bool Stores;    // writes guest memory
        public FlagUse Flags;
        public int AluKind;    // VirtualCpu.LazyAdd / LazySub / LazyLogic for Form.Alu
        public OpCode AluOp;   // the IL operation of Form.Alu
        public bool AluStores; // false for cmp and test
        public int Count;      // shift count (immediate, masked, not 0)
        /// <summary>Inline only while nothing can observe its flags (imul computes no flags inline: when they are
        /// live the handler runs).</summary>
        public bool NeedsDeadFlags;
        /// <summary>Form.Xmm: how it runs inline (see <see cref="Isa.XmmKindOf"/>).</summary>
        public XmmKind XKind;
    }

    static Operand Classify(ref Instruction i, int n)
    {
        var o = new Operand();
        switch (i.GetOpKind(n))
        {
            case OpKind.Register:
            {
                int info = VirtualCpu.RegInfo[(int)i.GetOpRegister(n)];
                if ((info >> 4) > 4) return o;
                o.Class = OpClass.Reg; o.Reg = info & 15; o.RegKind = info >> 4;
                return o;
            }
            case OpKind.Memory:
                if (!SimpleMemory(ref i)) return o;
                o.Class = OpClass.Mem;
                return o;
            case OpKind.Immediate8: case OpKind.Immediate16: case OpKind.Immediate32: case OpKind.Immediate64:
            case OpKind.Immediate8to16: case OpKind.Immediate8to32: case OpKind.Immediate8to64: case OpKind.Immediate32to64:
                o.Class = OpClass.Imm; o.Imm = i.GetImmediate(n);
                return o;
            case OpKind.NearBranch64:
                o.Class = OpClass.Imm; o.Imm = i.NearBranch64;
                return o;
            default:
                return o;
        }
    }

    /// <summary>A memory operand with 64-bit (or no) base and index registers: the address forms the inline code
    /// computes; 32-bit address forms go to the handler.</summary>
    static bool SimpleMemory(ref Instruction i)
    {
        Register b = i.MemoryBase, x = i.MemoryIndex;
        if (b != Register.None && b != Register.RIP && (VirtualCpu.RegInfo[(int)b] >> 4) != 0) return false;
        if (x != Register.None && (VirtualCpu.RegInfo[(int)x] >> 4) != 0) return false;
        if (b == Register.RIP && x != Register.None) return false;
        return i.MemorySegment is Register.None or Register.ES or Register.CS or Register.SS or Register.DS or Register.FS or Register.GS;
    }

    static bool IsRegOrMem(in Operand o) => o.Class is OpClass.Reg or OpClass.Mem;

    static Plan Analyze(ref Instruction i)
    {
        var p = new Plan { Form = Form.Helper, Flags = FlagUse.Reads };
        if (i.HasLockPrefix || i.Code == Code.INVALID) return p;
        if (Isa.XmmKindOf(i.Code) != XmmKind.None) return AnalyzeXmm(ref i);
        int count = i.OpCount;
        Operand o0 = count > 0 ? Classify(ref i, 0) : default, o1 = count > 1 ? Classify(ref i, 1) : default;
        p.O0 = o0; p.O1 = o1;
        bool mem0 = o0.Class == OpClass.Mem, mem1 = o1.Class == OpClass.Mem;
        switch (i.Mnemonic)
        {
            case Mnemonic.Nop:
                p.Form = Form.Nop; p.Flags = FlagUse.None;
                return p;
            case Mnemonic.Mov:
                if (count != 2 || !IsRegOrMem(o0) || o1.Class == OpClass.Bad) return p;
                p.Size = VirtualCpu.OpSize(ref i, 0);
                if (p.Size is not (1 or 2 or 4 or 8)) return p;
                p.Form = Form.Mov; p.Flags = FlagUse.None; p.Memory = mem0 || mem1; p.Stores = mem0;
                return p;
            case Mnemonic.Movzx or Mnemonic.Movsx or Mnemonic.Movsxd:
                if (count != 2 || o0.Class != OpClass.Reg || !IsRegOrMem(o1)) return p;
                p.Size = VirtualCpu.OpSize(ref i, 0); p.SrcSize = VirtualCpu.OpSize(ref i, 1);
                if (p.SrcSize is not (1 or 2 or 4)) return p;
                p.Form = i.Mnemonic == Mnemonic.Movzx ? Form.Movzx : Form.Movsx; p.Flags = FlagUse.None; p.Memory = mem1;
                return p;
            case Mnemonic.Lea:
                if (o0.Class != OpClass.Reg || o0.RegKind > 1 || !mem1) return p;
                p.Form = Form.Lea; p.Flags = FlagUse.None;
                return p;
            case Mnemonic.Add or Mnemonic.Sub or Mnemonic.Cmp or Mnemonic.And or Mnemonic.Or or Mnemonic.Xor or Mnemonic.Test or Mnemonic.Sbb:
                if (count != 2 || !IsRegOrMem(o0) || o1.Class == OpClass.Bad) return p;
                p.Size = VirtualCpu.OpSize(ref i, 0);
                if (p.Size is not (1 or 2 or 4 or 8)) return p;
                if (i.Mnemonic == Mnemonic.Sbb)
                {
                    // a subtraction with the borrow of the pending record (gzip's and bzip2's branch-free masks):
                    // reads the flags and records its own
                    p.Form = Form.Sbb; p.Flags = FlagUse.Reads; p.Memory = mem0 || mem1; p.Stores = mem0;
                    return p;
                }
                // (assignments, not a tuple: a ValueTuple of an OpCode is JIT-compiled at the first region of every run)
                p.AluKind = i.Mnemonic switch { Mnemonic.Add => VirtualCpu.LazyAdd, Mnemonic.Sub or Mnemonic.Cmp => VirtualCpu.LazySub, _ => VirtualCpu.LazyLogic };
                p.AluOp = i.Mnemonic switch
                {
                    Mnemonic.Add => OpCodes.Add, Mnemonic.Sub or Mnemonic.Cmp => OpCodes.Sub, Mnemonic.Or => OpCodes.Or, Mnemonic.Xor => OpCodes.Xor,
                    _ => OpCodes.And,
                };
                p.AluStores = i.Mnemonic is not (Mnemonic.Cmp or Mnemonic.Test);
                p.Form = Form.Alu; p.Flags = FlagUse.Writes; p.Memory = mem0 || mem1; p.Stores = mem0 && p.AluStores;
                return p;
            case Mnemonic.Inc or Mnemonic.Dec or Mnemonic.Neg or Mnemonic.Not:
                if (count != 1 || !IsRegOrMem(o0)) return p;
                p.Size = VirtualCpu.OpSize(ref i, 0);
                if (p.Size is not (1 or 2 or 4 or 8)) return p;
                p.Form = i.Mnemonic switch { Mnemonic.Neg => Form.Neg, Mnemonic.Not => Form.Not, _ => Form.IncDec };
                // inc/dec keep CF: they read the pending record
                p.Flags = i.Mnemonic switch { Mnemonic.Neg => FlagUse.Writes, Mnemonic.Not => FlagUse.None, _ => FlagUse.Reads };
                p.Memory = p.Stores = mem0;
                return p;
            case Mnemonic.Push:
                if (count != 1 || i.StackPointerIncrement != -8 || o0.Class == OpClass.Bad) return p;
                if (o0.Class == OpClass.Reg && o0.RegKind != 0) return p;
                p.Form = Form.Push; p.Flags = FlagUse.None; p.Memory = p.Stores = true;
                return p;
            case Mnemonic.Pop:
                if (count != 1 || i.StackPointerIncrement != 8 || o0.Class != OpClass.Reg || o0.RegKind != 0) return p;
                p.Form = Form.Pop; p.Flags = FlagUse.None; p.Memory = true;
                return p;
            case Mnemonic.Call:
                if (count != 1 || (o0.Class == OpClass.Reg && o0.RegKind != 0) || o0.Class == OpClass.Bad) return p;
                if (i.Code is not (Code.Call_rel32_64 or Code.Call_rm64)) return p;
                p.Form = Form.Call; p.Flags = FlagUse.None; p.Memory = p.Stores = true;
                return p;
            case Mnemonic.Ret:
                if (i.Code is not (Code.Retnq or Code.Retnq_imm16)) return p;
                p.Form = Form.Ret; p.Flags = FlagUse.None; p.Memory = true;
                p.O0 = new Operand { Class = OpClass.Imm, Imm = count == 1 ? i.Immediate16 : 0UL };
                return p;
            case Mnemonic.Jmp:
                if (i.Code is not (Code.Jmp_rel8_64 or Code.Jmp_rel32_64 or Code.Jmp_rm64)) return p;
                if (o0.Class == OpClass.Bad || (o0.Class == OpClass.Reg && o0.RegKind != 0)) return p;
                p.Form = Form.Jmp; p.Flags = FlagUse.None; p.Memory = mem0;
                return p;
        }
        if (i.Mnemonic is Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar && count == 2 && o0.Class == OpClass.Reg
            && i.Op1Kind == OpKind.Register && i.Op1Register == Register.CL)
        {
            // a shift of a register by CL (bit-stream code: gzip's and bzip2's output): the value is one formula for
            // every count, 0 included; the flags are written only for a count other than 0 (else the pending record
            // stays), so for liveness it neither reads nor surely replaces them
            p.Size = VirtualCpu.OpSize(ref i, 0);
            if (p.Size is not (1 or 2 or 4 or 8)) return p;
            p.Form = Form.ShiftCl; p.Flags = FlagUse.None;
            return p;
        }
        if (i.Mnemonic == Mnemonic.Bswap && count == 1 && o0.Class == OpClass.Reg && o0.RegKind <= 1)
        {
            // byte order of a 32- or 64-bit register (sha256's big-endian loads); no flags
            p.Size = o0.RegKind == 0 ? 8 : 4;
            p.Form = Form.Bswap; p.Flags = FlagUse.None;
            return p;
        }
        if (i.Mnemonic is Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror)
        {
            if (count != 2 || !IsRegOrMem(o0) || i.Op1Kind != OpKind.Immediate8) return p;
            p.Size = VirtualCpu.OpSize(ref i, 0);
            if (p.Size is not (1 or 2 or 4 or 8)) return p;
            p.Count = i.Immediate8 & (p.Size == 8 ? 0x3F : 0x1F);
            if (p.Count == 0) return p; // a count of 0 changes nothing but still stores: the handler's business
            // a shift replaces all six flags; a rotate lays CF and OF over the pending ones, which stay as they are
            // for the liveness of the writers before it
            p.Form = Form.Shift; p.Memory = p.Stores = mem0;
            p.Flags = i.Mnemonic is Mnemonic.Rol or Mnemonic.Ror ? FlagUse.None : FlagUse.Writes;
            return p;
        }
        if (i.Mnemonic == Mnemonic.Imul && count is 2 or 3 && o0.Class == OpClass.Reg && o0.RegKind <= 1 && IsRegOrMem(o1)
            && (count == 2 || Classify(ref i, 2).Class == OpClass.Imm))
        {
            p.Size = VirtualCpu.OpSize(ref i, 0);
            if (count == 3) p.O0.Imm = Classify(ref i, 2).Imm; // the third operand, kept with the destination
            p.Count = count;
            p.Form = Form.Imul; p.Flags = FlagUse.None; p.NeedsDeadFlags = true; p.Memory = mem1;
            return p;
        }
        if (i.Mnemonic is Mnemonic.Jo or Mnemonic.Jno or Mnemonic.Jb or Mnemonic.Jae or Mnemonic.Je or Mnemonic.Jne or Mnemonic.Jbe
                or Mnemonic.Ja or Mnemonic.Js or Mnemonic.Jns or Mnemonic.Jp or Mnemonic.Jnp or Mnemonic.Jl or Mnemonic.Jge or Mnemonic.Jle
                or Mnemonic.Jg)
        {
            if (count != 1 || i.Op0Kind != OpKind.NearBranch64) return p;
            p.Form = Form.Jcc;
            return p;
        }
        if (i.Mnemonic is Mnemonic.Seto or Mnemonic.Setno or Mnemonic.Setb or Mnemonic.Setae or Mnemonic.Sete or Mnemonic.Setne
                or Mnemonic.Setbe or Mnemonic.Seta or Mnemonic.Sets or Mnemonic.Setns or Mnemonic.Setp or Mnemonic.Setnp or Mnemonic.Setl
                or Mnemonic.Setge or Mnemonic.Setle or Mnemonic.Setg)
        {
            if (count != 1 || !IsRegOrMem(o0) || VirtualCpu.OpSize(ref i, 0) != 1) return p;
            p.Form = Form.Setcc; p.Size = 1; p.Memory = p.Stores = mem0;
            return p;
        }
        if (i.Mnemonic is Mnemonic.Cmovo or Mnemonic.Cmovno or Mnemonic.Cmovb or Mnemonic.Cmovae or Mnemonic.Cmove or Mnemonic.Cmovne
                or Mnemonic.Cmovbe or Mnemonic.Cmova or Mnemonic.Cmovs or Mnemonic.Cmovns or Mnemonic.Cmovp or Mnemonic.Cmovnp
                or Mnemonic.Cmovl or Mnemonic.Cmovge or Mnemonic.Cmovle or Mnemonic.Cmovg)
        {
            if (count != 2 || o0.Class != OpClass.Reg || o0.RegKind > 1 || !IsRegOrMem(o1)) return p;
            p.Form = Form.Cmovcc; p.Size = VirtualCpu.OpSize(ref i, 0); p.Memory = mem1;
            return p;
        }
        return p;
    }

    // ---------------------------------------------------------------- emission

    /// <summary>What the code of an instruction leaves to the code after it.</summary>
    enum Flow { Next, RipSet, Exited }

    sealed partial class Emitter
    {
        readonly Block[] _members;
        readonly DynamicMethod _dm;
        readonly ILGenerator _il;
        readonly LocalBuilder _regs, _mem, _ea, _a, _bv, _r, _v;
        // the software TLBs' bases, the probe's entry and host address, a load's value, a store's status
        readonly LocalBuilder _tlb, _e, _host, _ld, _st;
        /// <summary>A shift's count (int32).</summary>
        readonly LocalBuilder _n;
        /// <summary>The pending flag record as the emitter knows it at the point being emitted: per part (kind,
        /// size, a, b, result, a shift's or rotate's CF and OF) where its value is (see <see cref="Src"/>).</summary>
        Src[] _rec = ThreadRecord();
        /// <summary>The locals that hold a part of the record when no guest register or constant gives it (one per
        /// part, written only when that part is given a new value).</summary>
        readonly LocalBuilder[] _pl = new LocalBuilder[RecParts];
        /// <summary>The guest registers the inline code uses, held in locals from the region's entry to each of its
        /// exits. Which of them hold the guest's value and which differ from the thread's <see cref="VirtualCpu.R"/>
        /// is known per point at compile time (<see cref="FlowRegisters"/>): an entry loads only the registers read
        /// (or stored) before they are written, an exit, a handler call or a slow path stores only those written
        /// since the region's entry or the last handler call on some path to it.</summary>
        readonly LocalBuilder?[] _gr = new LocalBuilder?[16];
        readonly uint _used, _written;
        /// <summary>Per region member: the registers whose locals must hold the guest's value at its start (its entry
        /// loads them), and those that may have been written since the region's entry (or a handler call) on a path
        /// to its start.</summary>
        readonly uint[] _liveIn, _dirtyIn;
        /// <summary>Per member and instruction: after a handler call there, the registers loaded again (those read or
        /// stored later before being written).</summary>
        readonly uint[][] _reloadAfter;
        /// <summary>At the point being emitted: the registers whose locals hold the guest's value (checked at every
        /// read: a read of another one is a compiler defect, refused at compile time), and those that may differ from
        /// the thread's (stored at an exit, a handler call, a slow path).</summary>
        uint _valid, _dirty;
        /// <summary>The code that stores one set of registers before a shared slow path, shared by the sites whose
        /// state differs from the thread's in that set (a list of a class: a dictionary keyed by a value type would
        /// be one more generic instantiation for the runtime to JIT at start-up).</summary>
        readonly List<SlowStores> _slowStores = new();

        sealed class SlowStores(uint dirty, bool store, Label label)
        {
            public readonly uint Dirty = dirty;
            public readonly bool Store = store;
            public readonly Label Label = label;
        }
        /// <summary>The guest registers whose locals are known, at the point being emitted, to hold a value below
        /// 2^32 (written by a 32-bit operation since the block's start): a 32-bit read of them needs no masking.</summary>
        uint _zx;
        readonly Plan[][] _allPlans;
        readonly Label[] _starts;
        /// <summary>Second entries of region members (<see cref="Variant"/>), made as branches need them and emitted
        /// after the members; at most one per member on average.</summary>
        readonly List<Variant> _variants = new();

        /// <summary>An entry of member j for internal branches that carry a pending flag record of a known kind and
        /// size into it, when its head reads the flags (a jcc, setcc, cmov, inc/dec or sbb before any other flag
        /// writer, memory access or handler): the record stays where the branch left it (Shape: each part a
        /// constant, its local in <see cref="_pl"/>, the thread's field, or an inc/dec's kind keeping the thread's
        /// CF) instead of being stored into the thread on every pass, and the head's condition is decided from its
        /// parts. The code is member j's own (same instructions, registers and exits); only the record's place at
        /// its start differs, so a fault or a handler there sees the same state.</summary>
        sealed class Variant(int member, Src[] shape, Label start)
        {
            public readonly int Member = member;
            public readonly Src[] Shape = shape;
            public readonly Label Start = start;
        }
        /// <summary>Code placed after every block: each memory access's jump to the shared slow path.</summary>
        readonly List<Action> _cold = new();
        /// <summary>The shared slow paths' arguments: the access's site (an index into <see cref="_resume"/>), address,
        /// value and size.</summary>
        readonly LocalBuilder _site, _slowAddr, _slowVal, _slowSize;
        /// (An array, not a List of Label: that generic instantiation is JIT-compiled at the first region of every run.)
        Label[] _resume = new Label[16];
        int _resumes;
        readonly Label _sharedLoad, _sharedStore;
        bool _loadUsed, _storeUsed;
        Block _b = null!;     // the block being emitted
        int _j;               // its index in the region
        int _k;               // the instruction being emitted
        Plan[] _plans = null!; // its plans
        /// <summary>Each handler call counts itself in the profile (<see cref="TierProfile.HelperCalls"/>).</summary>
        readonly bool _countHelpers;

        public Emitter(Block[] members, bool countHelpers)
        {
            _members = members;
            _countHelpers = countHelpers;
            Block head = members[0];
            int total = 0;
            foreach (var m in members) total += m.Count;
            // anonymously hosted with restricted skip-visibility (it reads the thread's private flag record): such a
            // method is JIT-compiled by CreateDelegate, on the thread that compiles the region (with a background
            // compiler, not the guest's), where a method of a module would be compiled at its first call
            _dm = new DynamicMethod($"block_{head.Start:x}", typeof(void), new[] { typeof(Block[]), typeof(VirtualCpu) }, restrictedSkipVisibility: true);
            _il = _dm.GetILGenerator(256 + total * 64);
            _regs = _il.DeclareLocal(typeof(ulong).MakeByRefType());
            _mem = _il.DeclareLocal(typeof(GuestMemory));
            _ea = _il.DeclareLocal(typeof(ulong));
            _a = _il.DeclareLocal(typeof(ulong));
            _bv = _il.DeclareLocal(typeof(ulong));
            _r = _il.DeclareLocal(typeof(ulong));
            _v = _il.DeclareLocal(typeof(ulong));
            _tlb = _il.DeclareLocal(typeof(byte*));
            _e = _il.DeclareLocal(typeof(byte*));
            _host = _il.DeclareLocal(typeof(byte*));
            _ld = _il.DeclareLocal(typeof(ulong));
            _st = _il.DeclareLocal(typeof(int));
            _n = _il.DeclareLocal(typeof(int));
            for (int n = 0; n < RecParts; n++) _pl[n] = _il.DeclareLocal(n <= RecSize ? typeof(int) : typeof(ulong));
            _site = _il.DeclareLocal(typeof(int));
            _slowAddr = _il.DeclareLocal(typeof(ulong));
            _slowVal = _il.DeclareLocal(typeof(ulong));
            _slowSize = _il.DeclareLocal(typeof(int));
            _sharedLoad = _il.DefineLabel();
            _sharedStore = _il.DefineLabel();
            _allPlans = new Plan[members.Length][];
            _starts = new Label[members.Length];
            for (int j = 0; j < members.Length; j++)
            {
                Block b = members[j];
                var plans = _plans = _allPlans[j] = new Plan[b.Count];
                for (int k = 0; k < b.Count; k++) plans[k] = Analyze(ref b.Insts[k]);
                // from the end, so that the liveness of k sees the final plans of the instructions after it
                for (int k = b.Count - 1; k >= 0; k--)
                {
                    if (plans[k].NeedsDeadFlags && FlagsLive(k)) plans[k] = new Plan { Form = Form.Helper, Flags = FlagUse.Reads };
                    // inc and dec read CF only to keep it in flags of their own: with those dead they read nothing
                    else if (plans[k].Form == Form.IncDec && !OwnFlagsLive(k, ref plans[k])) plans[k].Flags = FlagUse.None;
                }
                _starts[j] = _il.DefineLabel();
                for (int k = 0; k < b.Count; k++) RegistersOf(ref b.Insts[k], ref plans[k], ref _used, ref _written);
            }
            for (int r = 0; r < 16; r++)
                if ((_used & (1u << r)) != 0) _gr[r] = _il.DeclareLocal(typeof(ulong));
            _liveIn = new uint[members.Length];
            _dirtyIn = new uint[members.Length];
            _reloadAfter = new uint[members.Length][];
            FlowRegisters();
        }

        /// <summary>What the inline code of instruction i (plan p) does to the guest registers' locals: use, the
        /// registers it reads (a write of part of a register reads the rest); def, those it overwrites whole without
        /// reading them first; may, those it may write. A superset of use or may and a subset of def are safe.</summary>
        static void Access(ref Instruction i, in Plan p, out uint use, out uint def, out uint may)
        {
            use = def = may = 0;
            if (p.Form is Form.Helper or Form.Nop) return;
            // a whole 64- or 32-bit destination (zero-extended) written from other operands only
            bool whole = p.O0.Class == OpClass.Reg && p.O0.RegKind <= 1
                && (p.Form is Form.Mov or Form.Movzx or Form.Movsx or Form.Lea or Form.Pop || (p.Form == Form.Imul && p.Count == 3));
            bool memory = false;
            for (int n = 0; n < i.OpCount; n++)
            {
                OpKind kind = i.GetOpKind(n);
                memory |= kind == OpKind.Memory;
                if (kind != OpKind.Register || (n == 0 && whole)) continue;
                int info = VirtualCpu.RegInfo[(int)i.GetOpRegister(n)];
                if ((info >> 4) <= 4) use |= 1u << (info & 15);
            }
            if (memory)
            {
                if (i.MemoryBase is not (Register.None or Register.RIP)) use |= 1u << (VirtualCpu.RegInfo[(int)i.MemoryBase] & 15);
                if (i.MemoryIndex != Register.None) use |= 1u << (VirtualCpu.RegInfo[(int)i.MemoryIndex] & 15);
            }
            if (p.O0.Class == OpClass.Reg && WritesO0(p)) may |= 1u << p.O0.Reg;
            if (whole) def = 1u << p.O0.Reg;
            if (p.Form is Form.Push or Form.Pop or Form.Call or Form.Ret) { use |= 1u << VirtualCpu.RSP; may |= 1u << VirtualCpu.RSP; }
        }

        /// <summary>The region members a direct transfer at the end of member j may branch to inside the region
        /// (what <see cref="ExitTo"/> emits for its last instruction).</summary>
        int[] Successors(int j)
        {
            Block b = _members[j];
            Plan[] plans = _allPlans[j];
            for (int k = 0; k < b.Count - 1; k++)
                if (plans[k].Form is Form.Jcc or Form.Jmp or Form.Call or Form.Ret)
                    throw new InvalidOperationException("a branch inside a block"); // (blocks end at branches)
            ref Plan last = ref plans[b.Count - 1];
            ulong next = b.Insts[b.Count - 1].NextIP;
            ulong[] targets = last.Form switch
            {
                Form.Jcc => new[] { last.O0.Imm, next },
                Form.Call or Form.Jmp => last.O0.Class == OpClass.Imm ? new[] { last.O0.Imm } : Array.Empty<ulong>(),
                Form.Ret or Form.Helper => Array.Empty<ulong>(),
                _ => new[] { next },
            };
            var members = new List<int>();
            foreach (ulong t in targets)
            {
                int m = Array.FindIndex(_members, x => x.Start == t);
                if (m >= 0) members.Add(m);
            }
            return members.ToArray();
        }

        /// <summary>
        /// The registers each point of the region must hold and may have changed, at compile time. Forward: a
        /// register may differ from the thread's (is dirty) at a point when an instruction on some path to it from
        /// the region's entry or the last handler call may write it (a handler call stores the dirty ones, and the
        /// handler's own writes are loaded again after it). Backward: a register must be loaded (is live) where a
        /// later instruction reads it before writing it whole, or where an exit, a handler call or a memory access's
        /// slow path stores it (it is dirty there) before it is written whole on that path: a dirty register not
        /// written on every path to a store must hold the loaded value on the others. An entry at member j loads
        /// its live-in set; a handler call loads what is live after it. The emitter checks both against what it
        /// emits (<see cref="_valid"/>, <see cref="_dirty"/>), so a mistake here fails the compilation rather than
        /// the guest.
        /// </summary>
        void FlowRegisters()
        {
            int count = _members.Length;
            var succ = new int[count][];
            var use = new uint[count][];
            var def = new uint[count][];
            var may = new uint[count][];
            for (int j = 0; j < count; j++)
            {
                succ[j] = Successors(j);
                Block b = _members[j];
                use[j] = new uint[b.Count]; def[j] = new uint[b.Count]; may[j] = new uint[b.Count];
                _reloadAfter[j] = new uint[b.Count];
                for (int k = 0; k < b.Count; k++) Access(ref b.Insts[k], _allPlans[j][k], out use[j][k], out def[j][k], out may[j][k]);
            }
            uint DirtyAfter(int j, int k, uint d) => _allPlans[j][k].Form == Form.Helper ? 0 : d | may[j][k];
            for (bool changed = true; changed;)
            {
                changed = false;
                for (int j = 0; j < count; j++)
                {
                    uint d = _dirtyIn[j];
                    for (int k = 0; k < _members[j].Count; k++) d = DirtyAfter(j, k, d);
                    foreach (int m in succ[j])
                        if ((d & ~_dirtyIn[m]) != 0) { _dirtyIn[m] |= d; changed = true; }
                }
            }
            for (bool changed = true; changed;)
            {
                changed = false;
                for (int j = count - 1; j >= 0; j--)
                {
                    int n = _members[j].Count;
                    var before = new uint[n];
                    uint d = _dirtyIn[j];
                    for (int k = 0; k < n; k++) { before[k] = d; d = DirtyAfter(j, k, d); }
                    uint live = d; // the exits at the end store what is dirty there
                    foreach (int m in succ[j]) live |= _liveIn[m];
                    for (int k = n - 1; k >= 0; k--)
                    {
                        ref Plan p = ref _allPlans[j][k];
                        if (p.Form == Form.Helper) { _reloadAfter[j][k] = live; live = before[k]; }
                        // a memory access's slow path, and an SSE form's handler out of line, store what is dirty
                        else live = (live & ~def[j][k]) | use[j][k] | (p.Memory || p.Form == Form.Xmm ? before[k] : 0);
                    }
                    if ((live & ~_liveIn[j]) != 0) { _liveIn[j] |= live; changed = true; }
                }
            }
        }

        static bool WritesO0(in Plan p) => p.Form switch
        {
            Form.Mov or Form.Movzx or Form.Movsx or Form.Lea or Form.IncDec or Form.Neg or Form.Not or Form.Pop or Form.Setcc
                or Form.Cmovcc or Form.Shift or Form.ShiftCl or Form.Imul or Form.Bswap or Form.Sbb => true,
            Form.Alu => p.AluStores,
            Form.Xmm => p.XKind == XmmKind.MovdFromX,
            _ => false,
        };

        /// <summary>Adds the guest registers instruction i's inline code reads or writes to used, and those it may
        /// write to written (a superset is harmless; the emitter refuses a register outside them).</summary>
        static void RegistersOf(ref Instruction i, ref Plan p, ref uint used, ref uint written)
        {
            Access(ref i, p, out uint use, out _, out uint may); // (a whole write is in may)
            used |= use | may;
            written |= may;
        }

        public DynamicMethod Emit()
        {
            var il = _il;
            // ref ulong regs = ref c.R[0]; GuestMemory mem = c.Mem; the TLBs
            SyncIn(0);
            // the region is entered at the block the execution loop looked up; each entry loads the registers that
            // block's code reads or stores before writing them
            if (_members.Length > 1)
            {
                var entries = new Label[_members.Length];
                for (int j = 0; j < entries.Length; j++) entries[j] = il.DefineLabel();
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FRegionMember); il.Emit(OpCodes.Switch, entries);
                for (int j = 0; j < entries.Length; j++)
                {
                    il.MarkLabel(entries[j]);
                    LoadRegs(_liveIn[j]);
                    il.Emit(OpCodes.Br, _starts[j]);
                }
            }
            else LoadRegs(_liveIn[0]);
            // every way into a block (entry, an internal branch) stores the record first, except into a variant
            for (int j = 0; j < _members.Length; j++) EmitMember(j, _starts[j], ThreadRecord());
            // (a variant's branches may ask for further variants: the list grows while it is walked)
            for (int n = 0; n < _variants.Count; n++) EmitMember(_variants[n].Member, _variants[n].Start, _variants[n].Shape);
            foreach (var cold in _cold) cold();
            EmitSlowPaths();
            return _dm;
        }

        /// <summary>Emits member j's code at start, entered with the pending flag record where entry says.</summary>
        void EmitMember(int j, Label start, Src[] entry)
        {
            _j = j; _b = _members[j]; _plans = _allPlans[j];
            _il.MarkLabel(start);
            _rec = entry;
            _zx = 0;
            _valid = _liveIn[j]; _dirty = _dirtyIn[j];
            Flow flow = Flow.Next;
            for (int k = 0; k < _b.Count; k++)
            {
                _k = k;
                ref Instruction ins = ref _b.Insts[k];
                ref Plan p = ref _plans[k];
                bool fusable = k > 0 && _plans[k - 1].Form is Form.Alu or Form.IncDec;
                if (p.Form == Form.Helper)
                {
                    EmitHelper(k, ref ins);
                    flow = Flow.RipSet;
                    continue;
                }
                flow = EmitInline(k, ref ins, ref p, fusable);
            }
            if (flow == Flow.Next) ExitTo(_b.Insts[_b.Count - 1].NextIP);
            else if (flow == Flow.RipSet) { CountBlock(); Leave(); }
        }

        /// <summary>Stores what the region holds in locals and the thread does not have yet: the registers that may
        /// have been written on a path to this point (<see cref="_dirty"/>), and when `record`, the pending flag
        /// record (a slow path's site stores the record of its own point).</summary>
        void SyncOut(bool record)
        {
            StoreRegs(_dirty);
            if (record) Materialize();
        }

        /// <summary>Stores the guest registers in `set` from their locals into the thread (each must hold the
        /// guest's value here).</summary>
        void StoreRegs(uint set)
        {
            var il = _il;
            if ((set & ~_valid) != 0) throw new InvalidOperationException($"registers {set & ~_valid:x} stored before they are loaded");
            for (int r = 0; r < 16; r++)
                if ((set & (1u << r)) != 0) { RegAddr(r); Ldloc(_gr[r]!); il.Emit(OpCodes.Stind_I8); }
        }

        /// <summary>Loads the memory and its TLBs and the guest registers in `regs` from the thread (at entry, after
        /// a handler call or a slow path): so no local but the instruction's own temporaries lives across a call.
        /// The counts live in the thread (one add per block), the flag record in the thread or in registers
        /// (<see cref="Src"/>): neither holds a host register across the region.</summary>
        void SyncIn(uint regs)
        {
            var il = _il;
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FR); il.Emit(OpCodes.Ldc_I4_0); il.Emit(OpCodes.Ldelema, typeof(ulong)); il.Emit(OpCodes.Stloc, _regs);
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FMem); il.Emit(OpCodes.Stloc, _mem);
            Ldloc(_mem); il.Emit(OpCodes.Call, MReadTlb); Stloc(_tlb); // (the write TLB follows it)
            LoadRegs(regs);
        }

        /// <summary>Loads the guest registers in `set` (of those the region uses) from the thread into their locals.</summary>
        void LoadRegs(uint set)
        {
            set &= _used;
            for (int r = 0; r < 16; r++)
                if ((set & (1u << r)) != 0) { RegAddr(r); _il.Emit(OpCodes.Ldind_I8); Stloc(_gr[r]!); }
            _valid |= set;
        }

        /// <summary>Returns to the execution loop (rip is set).</summary>
        void Leave() { SyncOut(true); _il.Emit(OpCodes.Ret); }

        /// <summary>Names instruction k of the block being emitted as the one executing (for a fault or a handler).</summary>
        void At(int k)
        {
            var il = _il;
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldc_I4, k); il.Emit(OpCodes.Stfld, FBlockIndex);
            if (_members.Length > 1) { il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldc_I4, _j); il.Emit(OpCodes.Stfld, FRegionMember); }
        }

        /// <summary>The shared slow paths of the region's loads and stores (see <see cref="LoadMem"/>), emitted after
        /// every block: the state stored, the memory's slow path called (it does not throw), and on success the
        /// state loaded again and execution resumed at the access's site (<see cref="_site"/> indexes
        /// <see cref="_resume"/>); a fault leaves the region as the interpreter leaves it (the memory's pending fault
        /// raised with instruction k named, which the execution loop maps as it maps the interpreter's), and so does
        /// a store that dropped code of the running region (the store done, rip at the next instruction).</summary>
        void EmitSlowPaths()
        {
            var il = _il;
            Label fault = il.DefineLabel();
            // each site's registers that differ from the thread's, by set (see SlowSite)
            foreach (var stores in _slowStores)
            {
                il.MarkLabel(stores.Label);
                _valid = stores.Dirty; // (checked at the sites)
                StoreRegs(stores.Dirty);
                il.Emit(OpCodes.Br, stores.Store ? _sharedStore : _sharedLoad);
            }
            if (_loadUsed)
            {
                il.MarkLabel(_sharedLoad);
                Ldloc(_mem); Ldloc(_slowAddr); Ldloc(_slowSize); il.Emit(OpCodes.Call, MLoadSlow); Stloc(_ld);
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FMem); il.Emit(OpCodes.Call, MFaulted); il.Emit(OpCodes.Brtrue, fault);
                SyncIn(_used); // (more than each site needs: the thread holds every register's value now)
                Ldloc(_site); il.Emit(OpCodes.Switch, ResumeSites());
                il.Emit(OpCodes.Br, fault); // (every site is in the table)
            }
            if (_storeUsed)
            {
                Label invalidated = il.DefineLabel();
                il.MarkLabel(_sharedStore);
                Ldloc(_mem); Ldloc(_slowAddr); Ldloc(_slowVal); Ldloc(_slowSize); il.Emit(OpCodes.Call, MStoreSlow); Stloc(_st);
                Ldloc(_st); il.Emit(OpCodes.Ldc_I4, GuestMemory.StoreFaulted); il.Emit(OpCodes.Beq, fault);
                Ldloc(_st); il.Emit(OpCodes.Ldc_I4, GuestMemory.StoreEndsBlock); il.Emit(OpCodes.Beq, invalidated);
                SyncIn(_used);
                Ldloc(_site); il.Emit(OpCodes.Switch, ResumeSites());
                il.Emit(OpCodes.Br, fault);
                il.MarkLabel(invalidated);
                il.Emit(OpCodes.Call, MCodeInvalidated); il.Emit(OpCodes.Throw);
            }
            il.MarkLabel(fault);
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FMem); il.Emit(OpCodes.Call, MTakeFault); il.Emit(OpCodes.Throw);
        }

        Label[] ResumeSites()
        {
            var sites = new Label[_resumes];
            Array.Copy(_resume, sites, _resumes);
            return sites;
        }

        /// <summary>Runs the interpreter's handler for instruction k.</summary>
        void EmitHelper(int k, ref Instruction ins)
        {
            var il = _il;
            At(k);
            SetRip(ins.NextIP);
            SyncOut(true); // the handler starts from (and may change) the thread's record
            if (_countHelpers)
            {
                // c.Code.Profile.HelperCalls[mnemonic]++ (a code cache's profile, once set, is never taken away)
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FCode); il.Emit(OpCodes.Ldfld, FProfile); il.Emit(OpCodes.Ldfld, FHelperCalls);
                il.Emit(OpCodes.Ldc_I4, (int)ins.Mnemonic); il.Emit(OpCodes.Ldelema, typeof(long));
                il.Emit(OpCodes.Dup); il.Emit(OpCodes.Ldind_I8); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stind_I8);
            }
            il.Emit(OpCodes.Ldarg_1);
            Member(); il.Emit(OpCodes.Ldfld, FInsts); il.Emit(OpCodes.Ldc_I4, k); il.Emit(OpCodes.Ldelema, typeof(Instruction));
            Member(); il.Emit(OpCodes.Ldfld, FHandlers); il.Emit(OpCodes.Ldc_I4, k); il.Emit(OpCodes.Ldelem_I);
            il.EmitCalli(OpCodes.Calli, CallingConventions.Standard, typeof(void), new[] { typeof(VirtualCpu), typeof(Instruction).MakeByRefType() }, null);
            // the thread holds every register now (the handler's writes included): only those read or stored later
            // before being written are loaded
            _valid = 0; _dirty = 0;
            SyncIn(_reloadAfter[_j][k]);
            _zx = 0;
        }

        /// <summary>Pushes the block being emitted (from the region's array, the method's first argument).</summary>
        void Member() { _il.Emit(OpCodes.Ldarg_0); _il.Emit(OpCodes.Ldc_I4, _j); _il.Emit(OpCodes.Ldelem_Ref); }

        /// <summary>Counts the block being emitted as completed (the execution loop leaves that to compiled code).</summary>
        void CountBlock()
        {
            var il = _il;
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Dup); il.Emit(OpCodes.Ldfld, FCount); il.Emit(OpCodes.Ldc_I8, (long)_b.Count); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stfld, FCount);
            if (_b.EndsInBranch != 0) { il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Dup); il.Emit(OpCodes.Ldfld, FBranches); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stfld, FBranches); }
        }

        /// <summary>Ends the block being emitted with a direct transfer to target: it is counted, and when target
        /// starts a block of the region, that block runs next here if the execution loop would run it whole too
        /// (the guest has not yielded and all of it fits before <see cref="VirtualCpu.StopAt"/>); otherwise rip
        /// is target and the method returns.</summary>
        void ExitTo(ulong target)
        {
            var il = _il;
            CountBlock();
            int m = Array.FindIndex(_members, x => x.Start == target);
            if (m >= 0)
            {
                // the target's code assumes its live-in registers loaded and at most its dirty-in ones changed
                if ((_liveIn[m] & ~_valid) != 0 || (_dirty & ~_dirtyIn[m]) != 0)
                    throw new InvalidOperationException($"branch to member {m}: registers {_liveIn[m] & ~_valid:x} not loaded, {_dirty & ~_dirtyIn[m]:x} changed");
                // a block starts with the record in the thread, unless nothing there can see it before it is replaced
                // or its head reads it, which a variant of the block does from where the record is (see Variant)
                Label start = _starts[m];
                if (!FlagsDeadAtEntry(m))
                {
                    if (HeadReadsFlags(m) && KnownRecord()) start = VariantFor(m);
                    else Materialize();
                }
                var exit = il.DefineLabel();
                // volatile loads: another thread posts a host event by setting Yield or StopAt (a timer's signal, a
                // wake-up); a loop that stays inside the region must see it, so the JIT may not hoist these reads
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, FYield); il.Emit(OpCodes.Brtrue, exit);
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FCount); il.Emit(OpCodes.Ldc_I8, (long)_members[m].Count); il.Emit(OpCodes.Add);
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, FStopAt); il.Emit(OpCodes.Bgt_Un, exit);
                il.Emit(OpCodes.Br, start);
                il.MarkLabel(exit);
            }
            SetRip(target);
            Leave();
        }

        /// <summary>Whether member m's head reads the pending record with inline code before anything else can
        /// observe or replace it: a condition (jcc, setcc, cmovcc, sbb) or an inc/dec keeping CF, after only
        /// register instructions that leave the flags alone.</summary>
        bool HeadReadsFlags(int m)
        {
            // (an index, not a span: Span<Plan> is not in the precompiled image and was JIT-compiled at the first region)
            Plan[] plans = _allPlans[m];
            for (int k = 0; k < plans.Length; k++)
            {
                ref Plan q = ref plans[k];
                if (q.Memory || q.Form is Form.Helper or Form.Xmm or Form.Shift or Form.ShiftCl || q.Flags == FlagUse.Writes) return false;
                if (q.Flags == FlagUse.Reads) return q.Form is Form.Jcc or Form.Setcc or Form.Cmovcc or Form.IncDec or Form.Sbb;
            }
            return false;
        }

        /// <summary>Whether the pending record's kind and size are known here (not in the thread's fields), so a
        /// reader can decide from its parts without a call.</summary>
        bool KnownRecord() => _rec[RecKind].Kind is SrcKind.Const or SrcKind.KeepCf && _rec[RecSize].Kind == SrcKind.Const;

        /// <summary>Moves the record's parts that read guest registers into their locals (all computed before any is
        /// written) and returns the variant of member m entered with the record in that shape, made if new (at most
        /// as many as the region has members; past that the record is stored and the member's own start taken).</summary>
        Label VariantFor(int m)
        {
            int moved = 0;
            for (int n = 0; n < RecParts; n++)
                if (_rec[n].Kind is not (SrcKind.Thread or SrcKind.Const or SrcKind.Local or SrcKind.KeepCf)) { PushPart(n, _rec[n]); moved |= 1 << n; }
            var shape = (Src[])_rec.Clone();
            for (int n = RecParts - 1; n >= 0; n--)
                if ((moved & (1 << n)) != 0) { Stloc(_pl[n]); shape[n] = Src.Local; }
            _rec = shape;
            foreach (var v in _variants)
                if (v.Member == m && SameShape(v.Shape, shape)) return v.Start;
            if (_variants.Count >= _members.Length) { Materialize(); return _starts[m]; }
            var made = new Variant(m, shape, _il.DefineLabel());
            _variants.Add(made);
            return made.Start;
        }

        static bool SameShape(Src[] x, Src[] y)
        {
            for (int n = 0; n < RecParts; n++)
                if (x[n] != y[n]) return false;
            return true;
        }

        void SetRip(ulong v) { _il.Emit(OpCodes.Ldarg_1); _il.Emit(OpCodes.Ldc_I8, (long)v); _il.Emit(OpCodes.Stfld, FRip); }

        /// <summary>Emits instruction k.</summary>
        Flow EmitInline(int k, ref Instruction ins, ref Plan p, bool fusable)
        {
            var il = _il;
            switch (p.Form)
            {
                case Form.Nop:
                    return Flow.Next;
                case Form.Xmm:
                    EmitXmm(k, ref ins, ref p);
                    return Flow.Next;
                case Form.Mov:
                    if (p.O1.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O1, p.Size); Stloc(_v);
                    if (p.O0.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Write(ref p.O0, p.Size, _v);
                    return Flow.Next;
                case Form.Movzx:
                case Form.Movsx:
                    if (p.O1.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O1, p.SrcSize);
                    if (p.Form == Form.Movsx) { SignExtend(p.SrcSize); Truncate(p.Size); }
                    Stloc(_v);
                    Write(ref p.O0, p.Size, _v);
                    return Flow.Next;
                case Form.Lea:
                    Ea(ref ins, false);
                    if (p.O0.RegKind != 0) Truncate(4);
                    Stloc(_v);
                    Write(ref p.O0, p.O0.RegKind == 0 ? 8 : 4, _v);
                    return Flow.Next;
                case Form.Alu:
                {
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); Stloc(_a);
                    Read(ref p.O1, p.Size); Stloc(_bv);
                    bool narrow = p.Size == 4;
                    Ldloc(_a); Narrow(narrow); Ldloc(_bv); Narrow(narrow); il.Emit(p.AluOp);
                    if (narrow) il.Emit(OpCodes.Conv_U8);
                    else if (p.AluKind != VirtualCpu.LazyLogic) Truncate(p.Size);
                    Stloc(_r);
                    if (!OwnFlagsLive(k, ref p)) { DropRegisterParts(); if (p.AluStores) Write(ref p.O0, p.Size, _r); return Flow.Next; }
                    // the record's parts where they already are: a register this instruction leaves as it is, a
                    // constant, or an operation on those; the rest copied (a memory operand, a high-byte register)
                    int s = p.Size;
                    bool logic = p.AluKind == VirtualCpu.LazyLogic, regDst = PartReg(p.O0);
                    Src? opB = p.O1.Class == OpClass.Imm ? Src.Const(p.O1.Imm & VirtualCpu.SizeMask(s))
                        : PartReg(p.O1) && !(p.AluStores && p.O1.Reg == p.O0.Reg) ? Src.OfReg(p.O1.Reg, s) : null;
                    Src zero = Src.Const(0);
                    if (!p.AluStores)
                    {
                        // cmp and test: the result from the operands
                        if (regDst && opB != null)
                        {
                            Src a = Src.OfReg(p.O0.Reg, s);
                            Record(p.AluKind, s, logic ? zero : a, logic ? zero : opB, Src.Op(logic ? SrcKind.And : SrcKind.Sub, a, opB, s));
                        }
                        else if (logic) Record(p.AluKind, s, zero, zero, Keep(RecR, _r));
                        else Record(p.AluKind, s, regDst ? Src.OfReg(p.O0.Reg, s) : Keep(RecA, _a), opB ?? Keep(RecB, _bv), Keep(RecR, _r));
                    }
                    else if (regDst)
                    {
                        // the result is the destination; an add's or sub's first operand follows from it and the second
                        Src r = Src.OfReg(p.O0.Reg, s);
                        Src b = logic ? zero : opB ?? Keep(RecB, _bv);
                        Src a = logic ? zero : opB != null ? Src.Op(p.AluKind == VirtualCpu.LazyAdd ? SrcKind.Sub : SrcKind.Add, r, opB, s) : Keep(RecA, _a);
                        Record(p.AluKind, s, a, b, r);
                        Write(ref p.O0, s, _r, pin: false);
                        return Flow.Next;
                    }
                    else Record(p.AluKind, s, logic ? zero : Keep(RecA, _a), logic ? zero : opB ?? Keep(RecB, _bv), Keep(RecR, _r));
                    // (recorded before a memory destination is written: a fault of the store leaves the new flags, as
                    // in the handler)
                    if (p.AluStores) Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
                case Form.Sbb:
                {
                    // the borrow first, while _a, _bv and _r still hold the instruction before (a compare or
                    // subtraction there decides it from its operands); it has no effect, so its order against the
                    // operands' loads does not show
                    Condition(ConditionCode.b, fusable ? _plans[k - 1] : default, fusable);
                    il.Emit(OpCodes.Conv_U8); Stloc(_v);
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); Stloc(_a);
                    Read(ref p.O1, p.Size); Stloc(_bv);
                    // as the handler: a - b - CF of the operand size, recorded as a subtraction of a and b
                    Ldloc(_a); Ldloc(_bv); il.Emit(OpCodes.Sub); Ldloc(_v); il.Emit(OpCodes.Sub); Truncate(p.Size); Stloc(_r);
                    if (!OwnFlagsLive(k, ref p)) { DropRegisterParts(); Write(ref p.O0, p.Size, _r); return Flow.Next; }
                    Record(VirtualCpu.LazySub, p.Size, Keep(RecA, _a), Keep(RecB, _bv), Keep(RecR, _r), carryIn: true);
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
                case Form.Neg:
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); Stloc(_a);
                    il.Emit(OpCodes.Ldc_I8, 0L); Ldloc(_a); il.Emit(OpCodes.Sub); Truncate(p.Size); Stloc(_r);
                    if (!OwnFlagsLive(k, ref p)) DropRegisterParts();
                    else if (PartReg(p.O0))
                    {
                        // 0 - a = r: a is 0 - r
                        Src r = Src.OfReg(p.O0.Reg, p.Size);
                        Record(VirtualCpu.LazySub, p.Size, Src.Const(0), Src.Op(SrcKind.Sub, Src.Const(0), r, p.Size), r);
                        Write(ref p.O0, p.Size, _r, pin: false);
                        return Flow.Next;
                    }
                    else Record(VirtualCpu.LazySub, p.Size, Src.Const(0), Keep(RecB, _a), Keep(RecR, _r));
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                case Form.Not:
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); il.Emit(OpCodes.Not); Truncate(p.Size); Stloc(_r);
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                case Form.IncDec:
                {
                    bool dec = ins.Mnemonic == Mnemonic.Dec;
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); Stloc(_a);
                    Ldloc(_a); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(dec ? OpCodes.Sub : OpCodes.Add); Truncate(p.Size); Stloc(_r);
                    if (p.Flags == FlagUse.None) DropRegisterParts();
                    else
                    {
                        // as SetFlagsIncDec: the CF to keep from the pending record, then the new record. When the
                        // pending record is the thread's (or keeps the thread's CF itself), taking that CF waits until
                        // the new record is observed (a slow path, an exit, a handler, a condition that reads CF):
                        // nothing changes the thread's record before then, and in a loop whose flags are live only
                        // for a fault of a later access the CF is never derived on the hot path
                        int kind = (dec ? VirtualCpu.LazySub : VirtualCpu.LazyAdd) | VirtualCpu.LazyKeepCf;
                        bool deferred = KeepsThreadCarry();
                        if (!deferred) KeepCarry();
                        Src one = Src.Const(1);
                        if (PartReg(p.O0))
                        {
                            Src r = Src.OfReg(p.O0.Reg, p.Size);
                            Record(kind, p.Size, Src.Op(dec ? SrcKind.Add : SrcKind.Sub, r, one, p.Size), one, r, deferred);
                            Write(ref p.O0, p.Size, _r, pin: false);
                            return Flow.Next;
                        }
                        Record(kind, p.Size, Keep(RecA, _a), one, Keep(RecR, _r), deferred);
                    }
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
                case Form.Push:
                    if (p.O0.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, 8); Stloc(_v);
                    LdReg(VirtualCpu.RSP); il.Emit(OpCodes.Ldc_I8, 8L); il.Emit(OpCodes.Sub); Stloc(_a);
                    StoreMem(_a, _v, 8);
                    StReg(VirtualCpu.RSP, _a);
                    return Flow.Next;
                case Form.Pop:
                    LdReg(VirtualCpu.RSP); Stloc(_a);
                    LoadMem(_a, 8); Stloc(_v);
                    Ldloc(_a); il.Emit(OpCodes.Ldc_I8, 8L); il.Emit(OpCodes.Add); Stloc(_a);
                    StReg(VirtualCpu.RSP, _a);
                    StReg(p.O0.Reg, _v); // pop rsp: the popped value wins, as in the handler
                    return Flow.Next;
                case Form.Call:
                    if (p.O0.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, 8); Stloc(_r);
                    LdReg(VirtualCpu.RSP); il.Emit(OpCodes.Ldc_I8, 8L); il.Emit(OpCodes.Sub); Stloc(_a);
                    il.Emit(OpCodes.Ldc_I8, (long)ins.NextIP); Stloc(_v);
                    StoreMem(_a, _v, 8);
                    StReg(VirtualCpu.RSP, _a);
                    if (p.O0.Class == OpClass.Imm) { ExitTo(p.O0.Imm); return Flow.Exited; }
                    il.Emit(OpCodes.Ldarg_1); Ldloc(_r); il.Emit(OpCodes.Stfld, FRip);
                    return Flow.RipSet;
                case Form.Ret:
                    LdReg(VirtualCpu.RSP); Stloc(_a);
                    LoadMem(_a, 8); Stloc(_r);
                    Ldloc(_a); il.Emit(OpCodes.Ldc_I8, 8L); il.Emit(OpCodes.Add); Stloc(_a);
                    StReg(VirtualCpu.RSP, _a);
                    if (p.O0.Imm != 0) { LdReg(VirtualCpu.RSP); il.Emit(OpCodes.Ldc_I8, (long)p.O0.Imm); il.Emit(OpCodes.Add); Stloc(_a); StReg(VirtualCpu.RSP, _a); }
                    il.Emit(OpCodes.Ldarg_1); Ldloc(_r); il.Emit(OpCodes.Stfld, FRip);
                    return Flow.RipSet;
                case Form.Jmp:
                    if (p.O0.Class == OpClass.Imm) { ExitTo(p.O0.Imm); return Flow.Exited; }
                    if (p.O0.Class == OpClass.Mem) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, 8); Stloc(_r);
                    il.Emit(OpCodes.Ldarg_1); Ldloc(_r); il.Emit(OpCodes.Stfld, FRip);
                    return Flow.RipSet;
                case Form.Jcc:
                {
                    Condition(ins.ConditionCode, fusable ? _plans[k - 1] : default, fusable);
                    var notTaken = il.DefineLabel();
                    il.Emit(OpCodes.Brfalse, notTaken);
                    var rec = _rec;
                    ExitTo(p.O0.Imm);
                    il.MarkLabel(notTaken);
                    _rec = rec; // (what the first way stored is not stored on this one)
                    ExitTo(ins.NextIP);
                    return Flow.Exited;
                }
                case Form.Setcc:
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Condition(ins.ConditionCode, fusable ? _plans[k - 1] : default, fusable);
                    il.Emit(OpCodes.Conv_U8); Stloc(_v);
                    Write(ref p.O0, 1, _v);
                    return Flow.Next;
                case Form.Cmovcc:
                {
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O1, p.Size); Stloc(_v); // the source is read (and may fault) whatever the condition
                    Pin(p.O0.Reg); // before the branch: both ways must leave the record in the same places
                    Condition(ins.ConditionCode, fusable ? _plans[k - 1] : default, fusable);
                    var keep = il.DefineLabel();
                    var end = il.DefineLabel();
                    il.Emit(OpCodes.Brfalse, keep);
                    Write(ref p.O0, p.Size, _v);
                    il.Emit(OpCodes.Br, end);
                    il.MarkLabel(keep);
                    if (p.Size == 4) { LdReg(p.O0.Reg); il.Emit(OpCodes.Conv_U4); il.Emit(OpCodes.Conv_U8); Stloc(_v); StReg(p.O0.Reg, _v, zx: true); }
                    il.MarkLabel(end);
                    return Flow.Next;
                }
                case Form.Shift:
                {
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    Read(ref p.O0, p.Size); Stloc(_a);
                    int bits = p.Size * 8, n = p.Count;
                    // 32-bit forms in 32-bit IL arithmetic (the JIT emits the one host instruction, a rotate too);
                    // a conv.u8 of the 32-bit result is the zero-extended value
                    bool narrow = p.Size == 4;
                    switch (ins.Mnemonic)
                    {
                        case Mnemonic.Shl or Mnemonic.Sal: Ldloc(_a); Narrow(narrow); il.Emit(OpCodes.Ldc_I4, n); il.Emit(OpCodes.Shl); break;
                        case Mnemonic.Shr: Ldloc(_a); Narrow(narrow); il.Emit(OpCodes.Ldc_I4, n); il.Emit(OpCodes.Shr_Un); break;
                        case Mnemonic.Sar:
                            Ldloc(_a); if (narrow) il.Emit(OpCodes.Conv_I4); else SignExtend(p.Size);
                            il.Emit(OpCodes.Ldc_I4, n); il.Emit(OpCodes.Shr);
                            break;
                        default:
                        {
                            int rc = n & (bits - 1), left = ins.Mnemonic == Mnemonic.Rol ? rc : bits - rc;
                            Ldloc(_a); Narrow(narrow);
                            if (rc != 0)
                            {
                                il.Emit(OpCodes.Ldc_I4, left); il.Emit(OpCodes.Shl);
                                Ldloc(_a); Narrow(narrow); il.Emit(OpCodes.Ldc_I4, bits - left); il.Emit(OpCodes.Shr_Un);
                                il.Emit(OpCodes.Or);
                            }
                            break;
                        }
                    }
                    if (narrow) il.Emit(OpCodes.Conv_U8); else Truncate(p.Size);
                    Stloc(_r);
                    if (!OwnFlagsLive(k, ref p)) { DropRegisterParts(); Write(ref p.O0, p.Size, _r); return Flow.Next; }
                    ShiftFlags(ins.Mnemonic, p.Size, n);
                    if (ins.Mnemonic is Mnemonic.Rol or Mnemonic.Ror) { Write(ref p.O0, p.Size, _r); return Flow.Next; }
                    if (PartReg(p.O0))
                    {
                        // the write copies a and b if they read the destination; the result is the destination
                        Write(ref p.O0, p.Size, _r);
                        SetPart(RecR, Src.OfReg(p.O0.Reg, p.Size));
                        return Flow.Next;
                    }
                    SetPart(RecR, Keep(RecR, _r));
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
                case Form.ShiftCl:
                {
                    // as the handlers (Isa.Integer2.cs): the count is CL masked to 5 bits (6 for 64-bit operands); a
                    // count of 0 leaves the value (a 32-bit destination still zero-extended) and the flags
                    Read(ref p.O0, p.Size); Stloc(_a);
                    int bits = p.Size * 8;
                    bool narrow = p.Size == 4, sar = ins.Mnemonic == Mnemonic.Sar, shr = ins.Mnemonic == Mnemonic.Shr;
                    LdReg(VirtualCpu.RCX); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Ldc_I4, p.Size == 8 ? 0x3F : 0x1F); il.Emit(OpCodes.And); Stloc(_n);
                    Ldloc(_a);
                    if (sar) { if (narrow) il.Emit(OpCodes.Conv_I4); else SignExtend(p.Size); }
                    else Narrow(narrow);
                    Ldloc(_n);
                    il.Emit(shr ? OpCodes.Shr_Un : sar ? OpCodes.Shr : OpCodes.Shl);
                    if (narrow) il.Emit(OpCodes.Conv_U8); else Truncate(p.Size);
                    Stloc(_r);
                    if (!FlagsLive(k)) { DropRegisterParts(); Write(ref p.O0, p.Size, _r); return Flow.Next; }
                    // live: the pending record goes to the thread, where a count of 0 leaves it; any other count
                    // replaces it there with the shift's (SetFlagsShift: kind, size, result, CF and OF; a and b stay)
                    Materialize();
                    var same = il.DefineLabel();
                    Ldloc(_n); il.Emit(OpCodes.Brfalse, same);
                    il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldc_I4, VirtualCpu.LazyShift); il.Emit(OpCodes.Stfld, FLazy);
                    il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldc_I4, p.Size); il.Emit(OpCodes.Stfld, FLazySize);
                    il.Emit(OpCodes.Ldarg_1); Ldloc(_r); il.Emit(OpCodes.Stfld, FLazyR);
                    il.Emit(OpCodes.Ldarg_1);
                    // CF (0 or 1): the last bit shifted out; for shl of 8-32 bits taken above the operand's size, so a
                    // count past the size gives 0 as in the handler
                    if (sar) { Ldloc(_a); SignExtend(p.Size); Ldloc(_n); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Shr); }
                    else if (shr) { Ldloc(_a); Ldloc(_n); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Shr_Un); }
                    else if (p.Size == 8) { Ldloc(_a); il.Emit(OpCodes.Ldc_I4, bits); Ldloc(_n); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Shr_Un); }
                    else { Ldloc(_a); Ldloc(_n); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Ldc_I4, bits); il.Emit(OpCodes.Shr_Un); }
                    il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And);
                    // OF: shl CF ^ the result's sign; shr the result's two top bits' xor (the handler's formula); sar 0
                    if (sar) { }
                    else
                    {
                        if (!shr) { il.Emit(OpCodes.Dup); Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Xor); }
                        else { Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 2); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And); }
                        // CF is bit 0 of the record's carry/overflow word, OF its own bit (RFLAGS' positions)
                        System.Diagnostics.Debug.Assert(VirtualCpu.CF == 1);
                        il.Emit(OpCodes.Ldc_I4, OfBit); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or);
                    }
                    il.Emit(OpCodes.Stfld, FLazyCarryOverflow);
                    il.MarkLabel(same);
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
                case Form.Bswap:
                    LdReg(p.O0.Reg);
                    if (p.Size == 4) { il.Emit(OpCodes.Conv_U4); il.Emit(OpCodes.Call, MReverse32); il.Emit(OpCodes.Conv_U8); }
                    else il.Emit(OpCodes.Call, MReverse64);
                    Stloc(_r);
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                case Form.Imul:
                {
                    if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
                    // the low half of a product does not depend on the signedness of the factors
                    // (a memory factor is read first: a load leaves nothing on the stack across its slow path)
                    Read(ref p.O1, p.Size); Stloc(_bv);
                    if (p.Count == 2) Read(ref p.O0, p.Size);
                    else il.Emit(OpCodes.Ldc_I8, (long)(p.O0.Imm & VirtualCpu.SizeMask(p.Size)));
                    Ldloc(_bv); il.Emit(OpCodes.Mul); Truncate(p.Size); Stloc(_r);
                    DropRegisterParts(); // (inline only with its flags dead)
                    Write(ref p.O0, p.Size, _r);
                    return Flow.Next;
                }
            }
            throw new InvalidOperationException($"no emitter for {p.Form}");
        }

        /// <summary>Whether the flag record of instruction k can be read before it is replaced: it is dead only
        /// when a later instruction of the block replaces it and nothing in between can fault, call a handler or
        /// read flags (a fault hands the flags to the guest's signal handler).</summary>
        bool FlagsLive(int k)
        {
            for (int j = k + 1; j < _plans.Length; j++)
            {
                ref Plan q = ref _plans[j];
                if (q.Form == Form.Helper || q.Memory || q.Flags == FlagUse.Reads) return true;
                if (q.Flags == FlagUse.Writes) return false;
            }
            return true;
        }

        /// <summary>Whether instruction k (plan p) must make its flag record: when something after it can read it
        /// (<see cref="FlagsLive"/>), or when it stores to memory itself: its handler records before the store, so
        /// a fault of the store leaves the new flags.</summary>
        bool OwnFlagsLive(int k, ref Plan p) => p.Stores || FlagsLive(k);

        /// <summary>Whether region member m replaces the flag record before anything in it can read it (or fault):
        /// then a branch from inside the region need not store the record first (an exit still does).</summary>
        bool FlagsDeadAtEntry(int m)
        {
            Plan[] plans = _allPlans[m];
            for (int n = 0; n < plans.Length; n++)
            {
                ref Plan q = ref plans[n];
                if (q.Form == Form.Helper || q.Memory || q.Flags == FlagUse.Reads) return false;
                if (q.Flags == FlagUse.Writes) return true;
            }
            return false;
        }

        /// <summary>Records the flags of a shift or rotate by the constant count n (not 0) of _a (the operand) into _r
        /// (the result), with the CF and OF formulas of its handler (Isa.Integer2.cs).</summary>
        void ShiftFlags(Mnemonic m, int size, int n)
        {
            var il = _il;
            int bits = size * 8;
            // push CF then OF, each 0 or 1
            switch (m)
            {
                case Mnemonic.Shl or Mnemonic.Sal:
                    // CF: the last bit shifted out (none left when the count exceeds the size); OF: CF ^ the result's sign
                    if (n <= bits) { Ldloc(_a); il.Emit(OpCodes.Ldc_I4, bits - n); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And); }
                    else il.Emit(OpCodes.Ldc_I8, 0L);
                    il.Emit(OpCodes.Dup); Stloc(_bv);
                    Ldloc(_bv); Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Xor);
                    break;
                case Mnemonic.Shr:
                    Ldloc(_a); il.Emit(OpCodes.Ldc_I4, n - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And);
                    Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 2); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And);
                    break;
                case Mnemonic.Sar:
                    Ldloc(_a); SignExtend(size); il.Emit(OpCodes.Ldc_I4, n - 1); il.Emit(OpCodes.Shr); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And);
                    il.Emit(OpCodes.Ldc_I8, 0L);
                    break;
                case Mnemonic.Rol:
                    // CF: the result's low bit; OF: CF ^ the result's sign
                    Ldloc(_r); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And); il.Emit(OpCodes.Dup); Stloc(_bv);
                    Ldloc(_bv); Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Xor);
                    break;
                case Mnemonic.Ror:
                    // CF: the result's sign; OF: the sign ^ the bit below it
                    Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Dup); Stloc(_bv);
                    Ldloc(_bv); Ldloc(_r); il.Emit(OpCodes.Ldc_I4, bits - 2); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Ldc_I8, 1L); il.Emit(OpCodes.And); il.Emit(OpCodes.Xor);
                    break;
                default:
                    throw new InvalidOperationException($"no flags for {m}");
            }
            // CF and OF as flag bits (SetFlagsShift / SetFlagsRotate)
            System.Diagnostics.Debug.Assert(VirtualCpu.CF == 1 && VirtualCpu.OF == 1UL << 11);
            il.Emit(OpCodes.Ldc_I4, 11); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or); Stloc(_pl[RecCo]);
            SetPart(RecCo, Src.Local);
            if (m is Mnemonic.Rol or Mnemonic.Ror)
            {
                Src kind = _rec[RecKind];
                if (kind.Kind == SrcKind.Const) SetPart(RecKind, Src.Const(kind.C | VirtualCpu.LazyRotate));
                else { PushPart(RecKind, kind); il.Emit(OpCodes.Ldc_I4, VirtualCpu.LazyRotate); il.Emit(OpCodes.Or); Stloc(_pl[RecKind]); SetPart(RecKind, Src.Local); }
            }
            else
            {
                // a and b stay as they are (SetFlagsShift); the result is the destination, written after this
                SetPart(RecKind, Src.Const(VirtualCpu.LazyShift)); SetPart(RecSize, Src.Const((ulong)size));
                SetPart(RecR, Src.Const(0));
            }
        }

        /// <summary>Makes (kind, size, a, b, r) the pending flag record; its CF/OF part stays (as in the handlers).
        /// Parts given as <see cref="Src.Local"/> must be in their locals already (<see cref="Keep"/>).</summary>
        /// `keepCf`: the kind part is <see cref="SrcKind.KeepCf"/> (an inc/dec whose CF is taken from the thread's
        /// record where the record is observed).
        void Record(int kind, int size, Src a, Src b, Src r, bool keepCf = false, bool carryIn = false)
        {
            var rec = (Src[])_rec.Clone();
            rec[RecKind] = keepCf ? new Src(SrcKind.KeepCf, C: (ulong)kind) : new Src(SrcKind.Const, C: (ulong)kind, CarryIn: carryIn);
            rec[RecSize] = Src.Const((ulong)size);
            rec[RecA] = a; rec[RecB] = b; rec[RecR] = r;
            _rec = rec;
        }

        /// <summary>Copies the temporary t into the local of record part n; returns that part's place.</summary>
        Src Keep(int n, LocalBuilder t) { Ldloc(t); Stloc(_pl[n]); return Src.Local; }

        void SetPart(int n, Src v)
        {
            var rec = (Src[])_rec.Clone();
            rec[n] = v;
            _rec = rec;
        }

        /// <summary>Pushes part n of a record, whose place is v.</summary>
        void PushPart(int n, Src v)
        {
            var il = _il;
            switch (v.Kind)
            {
                case SrcKind.Thread: il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, RecFields[n]); break;
                case SrcKind.Local: Ldloc(_pl[n]); break;
                case SrcKind.Const:
                    if (n <= RecSize) il.Emit(OpCodes.Ldc_I4, (int)v.C); else il.Emit(OpCodes.Ldc_I8, (long)v.C);
                    break;
                case SrcKind.Reg: LdReg(v.Reg); Truncate(v.Size); break;
                case SrcKind.KeepCf:
                    // the kind is pushed (and stored) first, so the thread's record is still the one the inc/dec
                    // keeps CF from when its CF is folded into the flags here
                    System.Diagnostics.Debug.Assert(n == RecKind);
                    il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Call, MKeepPendingCarry);
                    il.Emit(OpCodes.Ldc_I4, (int)v.C);
                    break;
                default:
                    PushPart(n, v.X!); PushPart(n, v.Y!);
                    il.Emit(v.Kind switch { SrcKind.Add => OpCodes.Add, SrcKind.Sub => OpCodes.Sub, _ => OpCodes.And });
                    Truncate(v.Size);
                    break;
            }
        }

        /// <summary>Whether the CF an inc/dec keeps is the CF of the record in the thread's fields: the pending record
        /// is the thread's, or an inc/dec's that keeps that CF itself (its kind part is <see cref="SrcKind.KeepCf"/>;
        /// it has not been stored, or the thread's record would be in the thread's fields).</summary>
        bool KeepsThreadCarry()
        {
            if (_rec[RecKind].Kind == SrcKind.KeepCf) return true;
            foreach (var part in _rec)
                if (part.Kind != SrcKind.Thread) return false;
            return true;
        }

        /// <summary>Pushes the pending flag record, as <see cref="VirtualCpu.SetRecord"/> takes it.</summary>
        void RecordArgs() { for (int n = 0; n < RecParts; n++) PushPart(n, _rec[n]); }

        /// <summary>Stores the parts of rec that are not in the thread's fields into them.</summary>
        void StoreRecord(Src[] rec)
        {
            for (int n = 0; n < RecParts; n++)
                if (rec[n].Kind != SrcKind.Thread) { _il.Emit(OpCodes.Ldarg_1); PushPart(n, rec[n]); _il.Emit(OpCodes.Stfld, RecFields[n]); }
        }

        /// <summary>Stores the pending record into the thread, where it is from here on.</summary>
        void Materialize()
        {
            StoreRecord(_rec);
            _rec = ThreadRecord();
        }

        /// <summary>Before guest register r is written: the parts of the record that read it are copied into their
        /// locals (all computed before any is stored).</summary>
        void Pin(int r)
        {
            int hit = 0;
            for (int n = 0; n < RecParts; n++)
                if (_rec[n].Uses(r)) { PushPart(n, _rec[n]); hit |= 1 << n; }
            if (hit == 0) return;
            var rec = (Src[])_rec.Clone();
            for (int n = RecParts - 1; n >= 0; n--)
                if ((hit & (1 << n)) != 0) { Stloc(_pl[n]); rec[n] = Src.Local; }
            _rec = rec;
        }

        /// <summary>The record of an instruction nothing reads before the next one replaces it (see
        /// <see cref="FlagsLive"/>): whatever it holds is never observed, so the parts that read registers are
        /// dropped rather than copied when those registers are written.</summary>
        void DropRegisterParts()
        {
            for (int n = RecA; n <= RecR; n++)
                if (_rec[n].Kind is not (SrcKind.Thread or SrcKind.Const or SrcKind.Local)) SetPart(n, Src.Const(0));
        }

        /// <summary>A guest register the inline code reads as a record part of the given size: its low bytes (not
        /// a high-byte register).</summary>
        static bool PartReg(in Operand o) => o.Class == OpClass.Reg && o.RegKind <= 3;

        /// <summary>Pushes the condition as 0 or 1. After a compare, subtraction or logic operation that is the
        /// previous instruction, the condition is decided from its operands and result (still in _a, _bv, _r);
        /// otherwise from the thread's flags.</summary>
        void Condition(ConditionCode cc, Plan prev, bool fusable)
        {
            var il = _il;
            // not right after its writer, but the pending record's kind and size are known (a variant's head, or
            // instructions that leave the flags alone in between): its operands and result come from its parts
            if (!fusable && RecordAsPlan(out Plan known) && Fuses(cc, known))
            {
                PushPart(RecA, _rec[RecA]); Stloc(_a);
                PushPart(RecB, _rec[RecB]); Stloc(_bv);
                PushPart(RecR, _rec[RecR]); Stloc(_r);
                prev = known; fusable = true;
            }
            // an add leaves CF and the sign and zero of its result at hand; inc and dec only the latter (they keep CF)
            bool fromResult = prev.Form == Form.IncDec || prev.AluKind == VirtualCpu.LazyAdd;
            if (!fusable || !Fuses(cc, prev))
            {
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldc_I4, (int)cc); RecordArgs(); il.Emit(OpCodes.Call, MCondOf);
                return;
            }
            int s = prev.Size;
            bool negate = false;
            if (fromResult)
            {
                switch (cc)
                {
                    case ConditionCode.e: case ConditionCode.ne: Ldloc(_r); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Ceq); negate = cc == ConditionCode.ne; break;
                    case ConditionCode.s: case ConditionCode.ns: Sign(s); negate = cc == ConditionCode.ns; break;
                    // the carry out of a + b (both of the operand size): the truncated sum is below a
                    case ConditionCode.b: case ConditionCode.ae: Ldloc(_r); Ldloc(_a); il.Emit(OpCodes.Clt_Un); negate = cc == ConditionCode.ae; break;
                    default: throw new InvalidOperationException($"condition {cc}");
                }
            }
            else if (prev.AluKind == VirtualCpu.LazySub)
            {
                switch (cc)
                {
                    case ConditionCode.e: case ConditionCode.ne: Ldloc(_r); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Ceq); negate = cc == ConditionCode.ne; break;
                    case ConditionCode.b: case ConditionCode.ae: Ldloc(_a); Ldloc(_bv); il.Emit(OpCodes.Clt_Un); negate = cc == ConditionCode.ae; break;
                    case ConditionCode.a: case ConditionCode.be: Ldloc(_a); Ldloc(_bv); il.Emit(OpCodes.Cgt_Un); negate = cc == ConditionCode.be; break;
                    case ConditionCode.l: case ConditionCode.ge: Ldloc(_a); SignExtend(s); Ldloc(_bv); SignExtend(s); il.Emit(OpCodes.Clt); negate = cc == ConditionCode.ge; break;
                    case ConditionCode.g: case ConditionCode.le: Ldloc(_a); SignExtend(s); Ldloc(_bv); SignExtend(s); il.Emit(OpCodes.Cgt); negate = cc == ConditionCode.le; break;
                    case ConditionCode.s: case ConditionCode.ns: Sign(s); negate = cc == ConditionCode.ns; break;
                    default: throw new InvalidOperationException($"condition {cc}");
                }
            }
            else
            {
                // logic: CF = OF = 0
                switch (cc)
                {
                    case ConditionCode.e: case ConditionCode.be: case ConditionCode.ne: case ConditionCode.a:
                        Ldloc(_r); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Ceq); negate = cc is ConditionCode.ne or ConditionCode.a; break;
                    case ConditionCode.s: case ConditionCode.l: case ConditionCode.ns: case ConditionCode.ge:
                        Sign(s); negate = cc is ConditionCode.ns or ConditionCode.ge; break;
                    case ConditionCode.le: case ConditionCode.g:
                        Ldloc(_r); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Ceq); Sign(s); il.Emit(OpCodes.Or); negate = cc == ConditionCode.g; break;
                    case ConditionCode.b: il.Emit(OpCodes.Ldc_I4_0); break;
                    case ConditionCode.ae: il.Emit(OpCodes.Ldc_I4_1); break;
                    default: throw new InvalidOperationException($"condition {cc}");
                }
            }
            if (negate) { il.Emit(OpCodes.Ldc_I4_0); il.Emit(OpCodes.Ceq); }
        }

        /// <summary>Folds the CF an inc/dec keeps from the pending record into the stored flags (as
        /// <see cref="VirtualCpu.KeepCarryOf"/>): with the record's kind and size known, only the carry is computed,
        /// from its parts (an add's result below its first operand, a subtraction's first operand below its second;
        /// a logic operation's is 0; an inc/dec's record keeps the CF already stored).</summary>
        void KeepCarry()
        {
            var il = _il;
            if (!RecordAsPlan(out Plan known)) { il.Emit(OpCodes.Ldarg_1); RecordArgs(); il.Emit(OpCodes.Call, MKeepCarryOf); return; }
            if (known.Form == Form.IncDec) return;
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FFlags); il.Emit(OpCodes.Ldc_I8, unchecked((long)~VirtualCpu.CF)); il.Emit(OpCodes.And);
            if (known.AluKind != VirtualCpu.LazyLogic)
            {
                if (known.AluKind == VirtualCpu.LazyAdd) { PushPart(RecR, _rec[RecR]); PushPart(RecA, _rec[RecA]); }
                else { PushPart(RecA, _rec[RecA]); PushPart(RecB, _rec[RecB]); }
                il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8);
                System.Diagnostics.Debug.Assert(VirtualCpu.CF == 1);
                il.Emit(OpCodes.Or);
            }
            il.Emit(OpCodes.Stfld, FFlags);
        }

        /// <summary>Whether condition cc after the flag writer prev is decided from its operands and result (an add
        /// leaves CF and the sign and zero of its result at hand; inc and dec only the latter: they keep CF).</summary>
        static bool Fuses(ConditionCode cc, in Plan prev)
        {
            bool fromResult = prev.Form == Form.IncDec || prev.AluKind == VirtualCpu.LazyAdd;
            return !(cc is ConditionCode.o or ConditionCode.no or ConditionCode.p or ConditionCode.np
                || (fromResult && cc is not (ConditionCode.e or ConditionCode.ne or ConditionCode.s or ConditionCode.ns or ConditionCode.b or ConditionCode.ae))
                || (prev.Form == Form.IncDec && cc is ConditionCode.b or ConditionCode.ae));
        }

        /// <summary>The pending record as the plan of its writer, when its kind and size are constants here: an
        /// add, subtraction or logic operation whose result is its operands' (not an sbb's, which includes the
        /// borrow), or an inc/dec (whose kept CF is not among its parts).</summary>
        bool RecordAsPlan(out Plan known)
        {
            known = default;
            if (_rec[RecKind].Kind is not (SrcKind.Const or SrcKind.KeepCf) || _rec[RecKind].CarryIn || _rec[RecSize].Kind != SrcKind.Const) return false;
            int kind = (int)_rec[RecKind].C, op = kind & 3;
            if ((kind & (VirtualCpu.LazyShift | VirtualCpu.LazyRotate)) != 0 || op == VirtualCpu.LazyNone) return false;
            known.Size = (int)_rec[RecSize].C;
            if ((kind & VirtualCpu.LazyKeepCf) != 0) known.Form = Form.IncDec;
            else { known.Form = Form.Alu; known.AluKind = op; }
            return true;
        }

        /// <summary>Pushes the sign bit (0 or 1, int32) of the result in _r of the given size.</summary>
        void Sign(int s)
        {
            Ldloc(_r); _il.Emit(OpCodes.Ldc_I4, s * 8 - 1); _il.Emit(OpCodes.Shr_Un); _il.Emit(OpCodes.Conv_I4); _il.Emit(OpCodes.Ldc_I4_1); _il.Emit(OpCodes.And);
        }

        // ------------------------------------------------------------ operands

        /// <summary>Pushes the effective address of the memory operand (with the FS/GS base when `segment`).</summary>
        void Ea(ref Instruction i, bool segment)
        {
            var il = _il;
            il.Emit(OpCodes.Ldc_I8, (long)i.MemoryDisplacement64);
            Register b = i.MemoryBase, x = i.MemoryIndex;
            if (b != Register.None && b != Register.RIP) { LdReg(VirtualCpu.RegInfo[(int)b] & 15); il.Emit(OpCodes.Add); }
            if (x != Register.None)
            {
                LdReg(VirtualCpu.RegInfo[(int)x] & 15);
                int scale = i.MemoryIndexScale;
                if (scale != 1) { il.Emit(OpCodes.Ldc_I4, System.Numerics.BitOperations.Log2((uint)scale)); il.Emit(OpCodes.Shl); }
                il.Emit(OpCodes.Add);
            }
            if (segment && i.MemorySegment is Register.FS or Register.GS)
            {
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, i.MemorySegment == Register.FS ? FFsBase : FGsBase); il.Emit(OpCodes.Add);
            }
        }

        /// <summary>Pushes the operand's value, zero-extended, of the given size (a memory operand's address is in _ea).</summary>
        void Read(ref Operand o, int size)
        {
            switch (o.Class)
            {
                case OpClass.Reg:
                    LdReg(o.Reg);
                    if (o.RegKind == 4) { _il.Emit(OpCodes.Ldc_I4_8); _il.Emit(OpCodes.Shr_Un); Truncate(1); }
                    else if (!(size == 4 && (_zx & (1u << o.Reg)) != 0)) Truncate(size);
                    break;
                case OpClass.Mem:
                    LoadMem(_ea, size);
                    break;
                case OpClass.Imm:
                    _il.Emit(OpCodes.Ldc_I8, (long)(o.Imm & VirtualCpu.SizeMask(size)));
                    break;
                default:
                    throw new InvalidOperationException("operand");
            }
        }

        /// <summary>Writes v (already of the given size) to the operand as the handlers' SetReg / Mem.Write do. With
        /// `pin` false the caller has just replaced every record part that could read the register.</summary>
        void Write(ref Operand o, int size, LocalBuilder v, bool pin = true)
        {
            var il = _il;
            if (o.Class == OpClass.Mem) { StoreMem(_ea, v, size); return; }
            if (o.Class != OpClass.Reg) throw new InvalidOperationException("destination");
            int kind = o.RegKind;
            if (kind == 0 || kind == 1)
            {
                // (a 32-bit value is already zero-extended: every caller's v is of its size)
                if (pin) Pin(o.Reg);
                Ldloc(v);
                StRegTop(o.Reg, kind == 1);
                return;
            }
            ulong keep = kind switch { 2 => ~0xFFFFUL, 3 => ~0xFFUL, _ => ~0xFF00UL };
            if (pin) Pin(o.Reg);
            LdReg(o.Reg); il.Emit(OpCodes.Ldc_I8, (long)keep); il.Emit(OpCodes.And);
            Ldloc(v);
            if (kind == 2) { il.Emit(OpCodes.Conv_U2); il.Emit(OpCodes.Conv_U8); }
            else { il.Emit(OpCodes.Conv_U1); il.Emit(OpCodes.Conv_U8); if (kind == 4) { il.Emit(OpCodes.Ldc_I4_8); il.Emit(OpCodes.Shl); } }
            il.Emit(OpCodes.Or);
            StRegTop(o.Reg, (_zx & (1u << o.Reg)) != 0); // the upper bytes stay
        }

        /// <summary>The software TLB's fast path, inline: leaves the host address of the size bytes at the guest
        /// address in _host when tlb holds their page (and they do not cross into the next), else goes to slow.
        /// The entry is that of the first byte's page and its tag is compared with the last byte's page number: one
        /// compare decides both (bytes that cross a page end have a last page the entry cannot hold, as the next page
        /// has an entry of its own; an address range that wraps around ends on page 0, whose entry is not this one).</summary>
        void Probe(LocalBuilder addr, int size, bool write, Label slow)
        {
            var il = _il;
            // the entry's offset is the page number's low bits times the entry size: one shift and one mask
            Ldloc(_tlb); Ldloc(addr); il.Emit(OpCodes.Ldc_I4, GuestMemory.PageShift - GuestMemory.TlbEntryShift); il.Emit(OpCodes.Shr_Un);
            il.Emit(OpCodes.Ldc_I8, (long)GuestMemory.TlbIndexMask << GuestMemory.TlbEntryShift); il.Emit(OpCodes.And);
            il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add);
            if (write) { il.Emit(OpCodes.Ldc_I4, GuestMemory.WriteTlbOffset); il.Emit(OpCodes.Add); }
            Stloc(_e);
            Ldloc(_e); il.Emit(OpCodes.Ldind_I8);
            Ldloc(addr); if (size > 1) { il.Emit(OpCodes.Ldc_I8, (long)(size - 1)); il.Emit(OpCodes.Add); }
            il.Emit(OpCodes.Ldc_I4, GuestMemory.PageShift); il.Emit(OpCodes.Shr_Un);
            il.Emit(OpCodes.Bne_Un, slow);
            // the entry's addend plus the guest address (see GuestMemory.TlbEntry): one add
            Ldloc(_e); il.Emit(OpCodes.Ldc_I4, GuestMemory.TlbAddendOffset); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_I);
            Ldloc(addr); il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add);
            Stloc(_host);
        }

        /// <summary>Pushes the value (zero-extended) of the size bytes at the guest address in addr. A TLB miss calls
        /// the shared slow path (<see cref="EmitSlowPaths"/>), which does not throw.</summary>
        void LoadMem(LocalBuilder addr, int size)
        {
            var il = _il;
            Label slow = il.DefineLabel(), done = il.DefineLabel();
            Probe(addr, size, false, slow);
            Ldloc(_host);
            if (size > 1) il.Emit(OpCodes.Unaligned, (byte)1);
            il.Emit(size switch { 1 => OpCodes.Ldind_U1, 2 => OpCodes.Ldind_U2, 4 => OpCodes.Ldind_U4, _ => OpCodes.Ldind_I8 });
            if (size < 8) il.Emit(OpCodes.Conv_U8);
            Stloc(_ld);
            il.MarkLabel(done);
            Ldloc(_ld);
            _loadUsed = true;
            SlowSite(slow, done, addr, null, size, _sharedLoad);
        }

        /// <summary>Stores v (its low size bytes) at the guest address in addr; the slow path as in <see cref="LoadMem"/>,
        /// and a store that dropped code of the running region ends it there.</summary>
        void StoreMem(LocalBuilder addr, LocalBuilder v, int size)
        {
            var il = _il;
            Label slow = il.DefineLabel(), done = il.DefineLabel();
            Probe(addr, size, true, slow);
            Ldloc(_host); Ldloc(v);
            if (size > 1) il.Emit(OpCodes.Unaligned, (byte)1);
            il.Emit(size switch { 1 => OpCodes.Stind_I1, 2 => OpCodes.Stind_I2, 4 => OpCodes.Stind_I4, _ => OpCodes.Stind_I8 });
            il.MarkLabel(done);
            _storeUsed = true;
            SlowSite(slow, done, addr, v, size, _sharedStore);
        }

        /// <summary>The out-of-line code of one access that missed the TLB: names the instruction (and for a store
        /// its next rip, where a store into running code resumes), passes the access to the shared slow path and
        /// names done as where it resumes.</summary>
        void SlowSite(Label slow, Label done, LocalBuilder addr, LocalBuilder? v, int size, Label shared)
        {
            int k = _k, j = _j, site = _resumes;
            ulong next = _b.Insts[k].NextIP;
            var rec = _rec;
            // the registers that differ from the thread's here, stored by code shared with the sites of the same set
            if ((_dirty & ~_valid) != 0) throw new InvalidOperationException($"registers {_dirty & ~_valid:x} stored before they are loaded");
            bool isStore = shared.Equals(_sharedStore);
            uint valid = _valid;
            uint dirty = _dirty;
            var group = _slowStores.Find(x => x.Dirty == dirty && x.Store == isStore);
            if (group == null) _slowStores.Add(group = new SlowStores(dirty, isStore, _il.DefineLabel()));
            Label stores = group.Label;
            if (_resumes == _resume.Length)
            {
                var grown = new Label[_resume.Length * 2];
                Array.Copy(_resume, grown, _resumes);
                _resume = grown;
            }
            _resume[_resumes++] = done;
            _cold.Add(() =>
            {
                var il = _il;
                il.MarkLabel(slow);
                _valid = valid; // (the record's parts may read registers)
                // the access's operands first: the record's store may call out (an inc's kept CF), and a value
                // the hot path computed must not live across that call (the JIT would spill it where it is made)
                Ldloc(addr); Stloc(_slowAddr);
                if (v != null) { Ldloc(v); Stloc(_slowVal); }
                int saved = _j; _j = j; At(k); _j = saved;
                StoreRecord(rec);
                if (v != null) SetRip(next);
                il.Emit(OpCodes.Ldc_I4, size); Stloc(_slowSize);
                il.Emit(OpCodes.Ldc_I4, site); Stloc(_site);
                il.Emit(OpCodes.Br, stores);
            });
        }

        void RegAddr(int r)
        {
            Ldloc(_regs);
            if (r != 0) { _il.Emit(OpCodes.Ldc_I4, r * 8); _il.Emit(OpCodes.Add); }
        }

        /// <summary>The local holding guest register r (one the inline code may write, when `write`).</summary>
        LocalBuilder Reg(int r, bool write)
        {
            var l = _gr[r];
            if (l == null || (write && (_written & (1u << r)) == 0)) throw new InvalidOperationException($"register {r} is not held by the region");
            return l;
        }

        void LdReg(int r)
        {
            if ((_valid & (1u << r)) == 0) throw new InvalidOperationException($"register {r} read before it is loaded");
            Ldloc(Reg(r, false));
        }

        /// <summary>Pops the value on the stack into guest register r (record parts that read it are pinned first
        /// by the caller, see <see cref="Pin"/>).</summary>
        /// <summary>zx: the value is below 2^32 (<see cref="_zx"/>).</summary>
        void StRegTop(int r, bool zx)
        {
            Stloc(Reg(r, true));
            _valid |= 1u << r; _dirty |= 1u << r;
            if (zx) _zx |= 1u << r; else _zx &= ~(1u << r);
        }

        void StReg(int r, LocalBuilder v, bool zx = false) { Pin(r); Ldloc(v); StRegTop(r, zx); }

        /// <summary>Narrows the ulong on the stack to the int32 of its low half when `narrow`.</summary>
        void Narrow(bool narrow) { if (narrow) _il.Emit(OpCodes.Conv_U4); }

        void Truncate(int size)
        {
            switch (size)
            {
                case 1: _il.Emit(OpCodes.Conv_U1); _il.Emit(OpCodes.Conv_U8); break;
                case 2: _il.Emit(OpCodes.Conv_U2); _il.Emit(OpCodes.Conv_U8); break;
                case 4: _il.Emit(OpCodes.Conv_U4); _il.Emit(OpCodes.Conv_U8); break;
            }
        }

        void SignExtend(int size)
        {
            switch (size)
            {
                case 1: _il.Emit(OpCodes.Conv_I1); _il.Emit(OpCodes.Conv_I8); break;
                case 2: _il.Emit(OpCodes.Conv_I2); _il.Emit(OpCodes.Conv_I8); break;
                case 4: _il.Emit(OpCodes.Conv_I4); _il.Emit(OpCodes.Conv_I8); break;
            }
        }

        void Ldloc(LocalBuilder l) => _il.Emit(OpCodes.Ldloc, l);
        void Stloc(LocalBuilder l) => _il.Emit(OpCodes.Stloc, l);
    }
}
