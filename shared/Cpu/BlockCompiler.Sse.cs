using System.Reflection;
using System.Reflection.Emit;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;

namespace ReVirt.Cpu;

/// <summary>
/// SSE forms inline (<see cref="XmmKind"/>): the XMM registers stay in the thread's <see cref="VirtualCpu.Xmm"/>
/// (no local holds one), so such an instruction stores and loads no guest register, where its handler call stores
/// every register the region may have written and loads every one it uses. Each form calls a small operation of
/// Isa.SseCompiled.cs with the register numbers as constants (the generic ones are called through
/// their addresses, never inlined: precompiled in the image, see <see cref="Isa.XmmCallOf"/>; inlined into every
/// region they made the runtime's JIT of an SSE-heavy region several times slower, and a region's compile time is
/// what a short program pays). Memory: an 8- or 4-byte operand goes through the region's
/// inline load or store and its shared slow path like an integer one; a 16-byte operand is checked for alignment
/// (when the form demands it) and probed in the TLB inline, and anything else — a misaligned address, a TLB miss, a
/// page end — calls the form's handler out of line, as does an arithmetic form whose managed fast path declines
/// (MXCSR not the default, an operand or result not normal). The handler starts the instruction afresh: nothing of it
/// has happened on the inline path before it branches there, and the handler changes no general register nor the
/// flags, so the code after the join finds the region's state as the inline path leaves it.
/// </summary>
public static unsafe partial class BlockCompiler
{
    static readonly FieldInfo FXmm = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Xmm))!;
    static readonly FieldInfo FMxcsr = typeof(VirtualCpu).GetField(nameof(VirtualCpu.Mxcsr))!;
    static readonly MethodInfo MBitsDouble = typeof(BitConverter).GetMethod(nameof(BitConverter.UInt64BitsToDouble), new[] { typeof(ulong) })!;
    static readonly MethodInfo MTruncate = typeof(Math).GetMethod(nameof(Math.Truncate), new[] { typeof(double) })!;
    static readonly MethodInfo MDoubleBits = typeof(BitConverter).GetMethod(nameof(BitConverter.DoubleToUInt64Bits), new[] { typeof(double) })!;

    /// <summary>The generic forms (<see cref="XmmKind.Vop"/>) that work on whole 64-bit lanes, emitted as IL on the
    /// lanes with no call: a region whose hot loop calls an SSE operation has every guest register the JIT
    /// holds in a caller-saved host register spilled around the call.</summary>
    internal enum LaneOp { None, Xor, And, Or, AndNot, Add, Sub, UnpackLow, UnpackHigh }

    internal static LaneOp LaneOpOf(Code code) => code switch
    {
        Code.Pxor_xmm_xmmm128 or Code.Xorps_xmm_xmmm128 or Code.Xorpd_xmm_xmmm128 => LaneOp.Xor,
        Code.Pand_xmm_xmmm128 or Code.Andps_xmm_xmmm128 or Code.Andpd_xmm_xmmm128 => LaneOp.And,
        Code.Por_xmm_xmmm128 or Code.Orps_xmm_xmmm128 or Code.Orpd_xmm_xmmm128 => LaneOp.Or,
        Code.Pandn_xmm_xmmm128 or Code.Andnps_xmm_xmmm128 or Code.Andnpd_xmm_xmmm128 => LaneOp.AndNot,
        Code.Paddq_xmm_xmmm128 => LaneOp.Add,
        Code.Psubq_xmm_xmmm128 => LaneOp.Sub,
        Code.Unpcklpd_xmm_xmmm128 or Code.Punpcklqdq_xmm_xmmm128 => LaneOp.UnpackLow,
        Code.Unpckhpd_xmm_xmmm128 or Code.Punpckhqdq_xmm_xmmm128 => LaneOp.UnpackHigh,
        _ => LaneOp.None,
    };

    /// <summary>The double-precision arithmetic forms (sd and pd) emitted as IL on the lanes (see
    /// <see cref="Emitter.EmitArithD"/>); the single-precision ones call their operation.</summary>
    internal enum FloatOp { None, Add, Sub, Mul, Div, Min, Max }

    internal static FloatOp FloatOpOf(Code code) => code switch
    {
        Code.Addsd_xmm_xmmm64 or Code.Addpd_xmm_xmmm128 => FloatOp.Add,
        Code.Subsd_xmm_xmmm64 or Code.Subpd_xmm_xmmm128 => FloatOp.Sub,
        Code.Mulsd_xmm_xmmm64 or Code.Mulpd_xmm_xmmm128 => FloatOp.Mul,
        Code.Divsd_xmm_xmmm64 or Code.Divpd_xmm_xmmm128 => FloatOp.Div,
        Code.Minsd_xmm_xmmm64 or Code.Minpd_xmm_xmmm128 => FloatOp.Min,
        Code.Maxsd_xmm_xmmm64 or Code.Maxpd_xmm_xmmm128 => FloatOp.Max,
        _ => FloatOp.None,
    };

    /// <summary>Isa's operations for compiled code, by name and operation type (generic ones instantiated once).</summary>
    static readonly Dictionary<string, MethodInfo> XmmMethods = new();

    static MethodInfo XmmMethod(string name)
    {
        lock (XmmMethods)
        {
            if (XmmMethods.TryGetValue(name, out var m)) return m;
            m = typeof(Isa).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)!;
            XmmMethods[name] = m;
            return m;
        }
    }

    // the signatures of the generic forms' operations (Isa.SseCompiled.cs): XMM registers and two numbers (XVop,
    // XVopImm), registers and a host address (XVopMem); the arithmetic's with a register, a host address or a value
    static readonly Type[] SigXRegs = { typeof(ulong[]), typeof(int), typeof(int) };
    static readonly Type[] SigXMem = { typeof(ulong[]), typeof(int), typeof(byte*) };
    static readonly Type[] SigArithRegs = { typeof(VirtualCpu), typeof(int), typeof(int) };
    static readonly Type[] SigArithMem = { typeof(VirtualCpu), typeof(int), typeof(byte*) };
    static readonly Type[] SigArithValue = { typeof(VirtualCpu), typeof(int), typeof(ulong) };

    /// <summary>The plan of an SSE form the compiled tier runs inline (<see cref="Isa.XmmKindOf"/>), or of a handler
    /// call when an operand is not of the forms the inline code handles.</summary>
    static Plan AnalyzeXmm(ref Instruction i)
    {
        var p = new Plan { Form = Form.Helper, Flags = FlagUse.Reads };
        XmmKind kind = Isa.XmmKindOf(i.Code);
        bool mem = false;
        for (int n = 0; n < i.OpCount; n++) mem |= i.GetOpKind(n) == OpKind.Memory;
        if (mem && !SimpleMemory(ref i)) return p;
        if (mem && kind == XmmKind.Pshufd) return p;
        p.Size = kind switch
        {
            XmmKind.MovssLoad or XmmKind.MovssStore or XmmKind.ArithSs => 4,
            XmmKind.MovsdLoad or XmmKind.MovsdStore or XmmKind.MovqLoad or XmmKind.MovqStore or XmmKind.MovlLoad or XmmKind.MovhLoad
                or XmmKind.MovlStore or XmmKind.MovhStore or XmmKind.ArithSd or XmmKind.Cvtdq2pd => 8,
            XmmKind.MovdToX => VirtualCpu.OpSize(ref i, 1),
            XmmKind.MovdFromX => VirtualCpu.OpSize(ref i, 0),
            _ => 16,
        };
        if (kind == XmmKind.MovdToX) p.O1 = Classify(ref i, 1);
        if (kind == XmmKind.MovdFromX) p.O0 = Classify(ref i, 0);
        p.Form = Form.Xmm; p.XKind = kind;
        p.Memory = mem;
        p.Stores = mem && kind is XmmKind.StoreA or XmmKind.StoreU or XmmKind.MovsdStore or XmmKind.MovssStore or XmmKind.MovqStore
            or XmmKind.MovdFromX or XmmKind.MovlStore or XmmKind.MovhStore;
        // a form that may call its handler out of line (a 16-byte memory operand; arithmetic, whose handler may raise
        // an unmasked exception) may hand the flags to a signal handler: for liveness it reads them
        p.Flags = (mem && p.Size == 16) || kind is XmmKind.ArithPd or XmmKind.ArithPs or XmmKind.ArithSd or XmmKind.ArithSs
            ? FlagUse.Reads : FlagUse.None;
        return p;
    }

    /// <summary>cvtsi2sd xmm, r/m32/64 inline (<see cref="XmmKind.Cvtsi2sd"/>), or the handler for a 32-bit address form.</summary>
    static Plan AnalyzeCvtsi2sd(ref Instruction i)
    {
        var p = new Plan { Form = Form.Helper, Flags = FlagUse.Reads };
        Operand o1 = Classify(ref i, 1);
        if (o1.Class is not (OpClass.Reg or OpClass.Mem)) return p;
        p.O1 = o1;
        p.Size = i.Code == Code.Cvtsi2sd_xmm_rm64 ? 8 : 4;
        p.Form = Form.Xmm; p.XKind = XmmKind.Cvtsi2sd;
        p.Memory = o1.Class == OpClass.Mem;
        // a 64-bit source beyond 2^53 calls the handler, which may raise an unmasked precision exception
        p.Flags = p.Size == 8 ? FlagUse.Reads : FlagUse.None;
        return p;
    }

    /// <summary>cvttsd2si r32/64, xmm/m64 inline (<see cref="XmmKind.Cvttsd2si"/>), or the handler for a 32-bit
    /// address form.</summary>
    static Plan AnalyzeCvttsd2si(ref Instruction i)
    {
        var p = new Plan { Form = Form.Helper, Flags = FlagUse.Reads };
        Operand o0 = Classify(ref i, 0);
        if (o0.Class != OpClass.Reg || o0.RegKind > 1) return p;
        if (i.Op1Kind == OpKind.Memory && !SimpleMemory(ref i)) return p;
        p.O0 = o0;
        p.Size = i.Code == Code.Cvttsd2si_r64_xmmm64 ? 8 : 4;
        p.Form = Form.Xmm; p.XKind = XmmKind.Cvttsd2si;
        p.Memory = i.Op1Kind == OpKind.Memory;
        p.Flags = FlagUse.Reads; // its handler may raise an unmasked invalid or precision exception
        return p;
    }

    sealed partial class Emitter
    {
        /// <summary>Whether the region has an SSE form inline (its code reads the lanes through <see cref="_xmm"/>).</summary>
        bool _usesXmm;

        /// <summary>Emits SSE instruction k inline (plan p of <see cref="AnalyzeXmm"/>).</summary>
        void EmitXmm(int k, ref Instruction ins, ref Plan p)
        {
            var il = _il;
            int d = ins.Op0Kind == OpKind.Register ? Isa.XmmIndex(ins.Op0Register) : -1;
            int s = ins.OpCount > 1 && ins.Op1Kind == OpKind.Register ? Isa.XmmIndex(ins.Op1Register) : -1;
            Label handler = il.DefineLabel(), done = il.DefineLabel();
            bool usesHandler = false;
            uint reload = 0; // general registers the handler writes (loaded again after it)
            if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
            switch (p.XKind)
            {
                case XmmKind.Vop:
                {
                    LaneOp lop = LaneOpOf(ins.Code);
                    if (lop != LaneOp.None)
                    {
                        if (p.Memory) usesHandler = Probe16(false, true, handler);
                        SourceLanes(s, p.Memory, 2);
                        EmitLaneOp(lop, d);
                        break;
                    }
                }
                    if (!p.Memory) { Xmm(); Const(d); Const(s); CallOp(ref ins, false, typeof(void), SigXRegs); break; }
                    usesHandler = Probe16(false, true, handler);
                    Xmm(); Const(d); Ldloc(_host); CallOp(ref ins, true, typeof(void), SigXMem);
                    break;
                case XmmKind.VopImm:
                    Xmm(); Const(d); Const(ins.Immediate8); CallOp(ref ins, false, typeof(void), SigXRegs);
                    break;
                case XmmKind.LoadA or XmmKind.LoadU:
                    if (!p.Memory) { Xmm(); Const(d); Const(s); Call("XMove"); break; }
                    usesHandler = Probe16(false, p.XKind == XmmKind.LoadA, handler);
                    Xmm(); Const(d); Ldloc(_host); Call("XLoad");
                    break;
                case XmmKind.StoreA or XmmKind.StoreU:
                    if (!p.Memory) { Xmm(); Const(d); Const(s); Call("XMove"); break; }
                    usesHandler = Probe16(true, p.XKind == XmmKind.StoreA, handler);
                    Xmm(); Const(s); Ldloc(_host); Call("XStore");
                    break;
                case XmmKind.MovsdLoad or XmmKind.MovssLoad or XmmKind.MovqLoad:
                    if (p.Memory) { LoadMem(_ea, p.Size); Stloc(_v); Xmm(); Const(d); Ldloc(_v); Call("XScalar"); break; }
                    if (p.XKind == XmmKind.MovsdLoad) { Xmm(); Const(2 * d); XLane(s, 0); il.Emit(OpCodes.Stelem_I8); }
                    else { Xmm(); Const(d); XLane(s, 0); Call(p.XKind == XmmKind.MovssLoad ? "XSetLow32" : "XScalar"); }
                    break;
                case XmmKind.MovsdStore or XmmKind.MovssStore or XmmKind.MovqStore or XmmKind.MovlStore or XmmKind.MovhStore:
                    if (p.Memory)
                    {
                        XLane(s, p.XKind == XmmKind.MovhStore ? 1 : 0); Stloc(_v);
                        StoreMem(_ea, _v, p.Size);
                        break;
                    }
                    if (p.XKind == XmmKind.MovsdStore) { Xmm(); Const(2 * d); XLane(s, 0); il.Emit(OpCodes.Stelem_I8); }
                    else { Xmm(); Const(d); XLane(s, 0); Call(p.XKind == XmmKind.MovssStore ? "XSetLow32" : "XScalar"); }
                    break;
                case XmmKind.MovlLoad or XmmKind.MovhLoad:
                    LoadMem(_ea, 8); Stloc(_v);
                    Xmm(); Const(2 * d + (p.XKind == XmmKind.MovhLoad ? 1 : 0)); Ldloc(_v); il.Emit(OpCodes.Stelem_I8);
                    break;
                case XmmKind.MovdToX:
                    Read(ref p.O1, p.Size); Stloc(_v);
                    Xmm(); Const(d); Ldloc(_v); Call("XScalar");
                    break;
                case XmmKind.MovdFromX:
                    XLane(s, 0); Truncate(p.Size); Stloc(_v);
                    Write(ref p.O0, p.Size, _v);
                    break;
                case XmmKind.ArithPd or XmmKind.ArithPs:
                {
                    if (p.Memory) Probe16(false, true, handler);
                    FloatOp fop = FloatOpOf(ins.Code);
                    if (p.XKind == XmmKind.ArithPd && fop != FloatOp.None)
                    {
                        SourceLanes(s, p.Memory, 2);
                        EmitArithD(fop, d, 2, handler);
                        usesHandler = true;
                        break;
                    }
                    il.Emit(OpCodes.Ldarg_1); Const(d);
                    if (p.Memory) { Ldloc(_host); CallOp(ref ins, true, typeof(bool), SigArithMem); }
                    else { Const(s); CallOp(ref ins, false, typeof(bool), SigArithRegs); }
                    il.Emit(OpCodes.Brfalse, handler);
                    usesHandler = true;
                    break;
                }
                case XmmKind.ArithSd or XmmKind.ArithSs:
                    if (p.Memory) LoadMem(_ea, p.Size); else XLane(s, 0);
                    if (p.XKind == XmmKind.ArithSd && FloatOpOf(ins.Code) is var sop and not FloatOp.None)
                    {
                        Stloc(XT(XB, 0));
                        EmitArithD(sop, d, 1, handler);
                        usesHandler = true;
                        break;
                    }
                    Stloc(_v);
                    il.Emit(OpCodes.Ldarg_1); Const(d); Ldloc(_v); CallOp(ref ins, false, typeof(bool), SigArithValue);
                    il.Emit(OpCodes.Brfalse, handler);
                    usesHandler = true;
                    break;
                case XmmKind.Cvtsi2sd:
                {
                    // the integer, sign-extended: every 32-bit one and every 64-bit one in [-2^53, 2^53] is a double
                    // exactly (no flag, any rounding mode); a larger one is rounded by the handler's exact path
                    Read(ref p.O1, p.Size);
                    if (p.Size == 4) { il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_I8); }
                    LocalBuilder v = XT(XB, 0), r = XT(XR, 0);
                    Stloc(v);
                    if (p.Size == 8)
                    {
                        Ldloc(v); il.Emit(OpCodes.Ldc_I8, 1L << 53); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldc_I8, 1L << 54);
                        il.Emit(OpCodes.Bgt_Un, handler);
                        usesHandler = true;
                    }
                    Ldloc(v); il.Emit(OpCodes.Conv_R8); il.Emit(OpCodes.Call, MDoubleBits); Stloc(r);
                    XSetLane(d, 0, r);
                    break;
                }
                case XmmKind.Cvttsd2si:
                {
                    // Isa.Cvttsd2si's fast path: a normal or zero source below 2^63 (2^31) in magnitude, truncated
                    // exactly or with a masked precision exception already recorded; anything else (a NaN, an
                    // infinity, a denormal, out of range: the integer indefinite and the flags) is the handler's,
                    // which writes the general register itself (its local is loaded again after it, see
                    // HandlerOutOfLine)
                    if (p.Memory) LoadMem(_ea, 8); else XLaneRef(s, 0);
                    LocalBuilder a = XT(XB, 0);
                    Stloc(a);
                    Pin(p.O0.Reg); // (before the branch: the handler's path stores the record as it is after it)
                    NormalOrZero(a, handler);
                    Ldloc(a); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Shl);
                    il.Emit(OpCodes.Ldc_I8, unchecked((long)(BitConverter.DoubleToUInt64Bits(p.Size == 8 ? 9223372036854775808.0 : 2147483648.0) << 1)));
                    il.Emit(OpCodes.Bge_Un, handler);
                    Label exactOrRecorded = il.DefineLabel();
                    il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FMxcsr); Const((int)(Isa.PrecisionMask | Isa.PeFlag)); il.Emit(OpCodes.And);
                    Const((int)(Isa.PrecisionMask | Isa.PeFlag)); il.Emit(OpCodes.Beq, exactOrRecorded);
                    AsDouble(a); il.Emit(OpCodes.Call, MTruncate); AsDouble(a); il.Emit(OpCodes.Bne_Un, handler);
                    il.MarkLabel(exactOrRecorded);
                    AsDouble(a);
                    if (p.Size == 8) il.Emit(OpCodes.Conv_I8);
                    else { il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_U4); il.Emit(OpCodes.Conv_U8); }
                    Stloc(_v);
                    Write(ref p.O0, p.Size, _v, pin: false);
                    usesHandler = true;
                    reload = 1u << p.O0.Reg;
                    break;
                }
                case XmmKind.Pshufd:
                    Xmm(); Const(d); Const(s); Const(ins.Immediate8); Call("XPshufd");
                    break;
                case XmmKind.Cvtdq2pd:
                    if (p.Memory) LoadMem(_ea, 8); else XLane(s, 0);
                    Stloc(_v);
                    Xmm(); Const(d); Ldloc(_v); Call("XCvtdq2pd");
                    break;
                default:
                    throw new InvalidOperationException($"xmm form {p.XKind}");
            }
            il.MarkLabel(done);
            if (usesHandler) HandlerOutOfLine(k, handler, done, reload);
        }

        /// <summary>Leaves in _host the host address of the 16 bytes at _ea when they are (aligned, when `aligned`)
        /// in a page the TLB holds, else branches to the handler.</summary>
        bool Probe16(bool write, bool aligned, Label handler)
        {
            var il = _il;
            if (aligned) { Ldloc(_ea); il.Emit(OpCodes.Ldc_I8, 15L); il.Emit(OpCodes.And); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Bne_Un, handler); }
            Probe(_ea, 16, write, handler);
            return true;
        }

        /// <summary>Calls instruction k's handler at `handler`, out of line, with the region's state stored as at any
        /// handler call (the flag record of this point), and goes on at done; the general registers in `reload` (those
        /// the handler writes: the inline path wrote them before done) are loaded from the thread again.</summary>
        void HandlerOutOfLine(int k, Label handler, Label done, uint reload = 0)
        {
            int j = _j;
            Block b = _b;
            var rec = _rec;
            // the registers that differ from the thread's here, and those the locals hold: the handler call stores
            // the first (the handler reads the guest's state from the thread), emitted after every block
            uint valid = _valid, dirty = _dirty;
            _cold.Add(() =>
            {
                int savedJ = _j; Block savedB = _b; var savedRec = _rec; uint savedZx = _zx, savedValid = _valid, savedDirty = _dirty;
                _j = j; _b = b; _rec = rec; _valid = valid; _dirty = dirty;
                _il.MarkLabel(handler);
                EmitHelper(k, ref b.Insts[k]);
                LoadRegs(reload);
                _il.Emit(OpCodes.Br, done); // (the locals hold every register: the handler changes none of the others)
                _j = savedJ; _b = savedB; _rec = savedRec; _zx = savedZx; _valid = savedValid; _dirty = savedDirty;
            });
        }

        // ------------------------------------------------------------ lane code: no call (see LaneOp, FloatOp)

        /// <summary>Temporaries of the inline lane code: a destination lane (XA), a source lane (XB) and a result
        /// (XR), each for lanes 0 and 1; declared at the first use.</summary>
        const int XA = 0, XB = 2, XR = 4;
        readonly LocalBuilder?[] _xt = new LocalBuilder?[6];

        LocalBuilder XT(int kind, int lane) => _xt[kind + lane] ??= _il.DeclareLocal(typeof(ulong));

        /// <summary>Pushes lane `lane` of XMM register x through the region's reference to the lanes (no bounds check).</summary>
        void XLaneRef(int x, int lane)
        {
            Ldloc(_xmm);
            if (2 * x + lane != 0) { Const((2 * x + lane) * 8); _il.Emit(OpCodes.Add); }
            _il.Emit(OpCodes.Ldind_I8);
        }

        /// <summary>Stores the value in local v into lane `lane` of XMM register x.</summary>
        void XSetLane(int x, int lane, LocalBuilder v)
        {
            Ldloc(_xmm);
            if (2 * x + lane != 0) { Const((2 * x + lane) * 8); _il.Emit(OpCodes.Add); }
            Ldloc(v); _il.Emit(OpCodes.Stind_I8);
        }

        /// <summary>Reads the source's lanes into the XB temporaries: XMM register s, or the 16 bytes at _host (the
        /// probe found them) when `memory`.</summary>
        void SourceLanes(int s, bool memory, int lanes)
        {
            for (int n = 0; n < lanes; n++)
            {
                if (memory)
                {
                    Ldloc(_host); if (n != 0) { _il.Emit(OpCodes.Ldc_I4_8); _il.Emit(OpCodes.Add); }
                    _il.Emit(OpCodes.Unaligned, (byte)1); _il.Emit(OpCodes.Ldind_I8);
                }
                else XLaneRef(s, n);
                Stloc(XT(XB, n));
            }
        }

        /// <summary>A whole-lane operation on register d and the source lanes (XB): both destination lanes are read
        /// before either is written, so a source that is d itself reads its old value.</summary>
        void EmitLaneOp(LaneOp op, int d)
        {
            var il = _il;
            for (int n = 0; n < 2; n++) { XLaneRef(d, n); Stloc(XT(XA, n)); }
            for (int n = 0; n < 2; n++)
            {
                switch (op)
                {
                    case LaneOp.Xor: Ldloc(XT(XA, n)); Ldloc(XT(XB, n)); il.Emit(OpCodes.Xor); break;
                    case LaneOp.And: Ldloc(XT(XA, n)); Ldloc(XT(XB, n)); il.Emit(OpCodes.And); break;
                    case LaneOp.Or: Ldloc(XT(XA, n)); Ldloc(XT(XB, n)); il.Emit(OpCodes.Or); break;
                    case LaneOp.AndNot: Ldloc(XT(XA, n)); il.Emit(OpCodes.Not); Ldloc(XT(XB, n)); il.Emit(OpCodes.And); break;
                    case LaneOp.Add: Ldloc(XT(XA, n)); Ldloc(XT(XB, n)); il.Emit(OpCodes.Add); break;
                    case LaneOp.Sub: Ldloc(XT(XA, n)); Ldloc(XT(XB, n)); il.Emit(OpCodes.Sub); break;
                    // low: d's low lane, then the source's low lane; high: d's high lane, then the source's high lane
                    case LaneOp.UnpackLow: Ldloc(n == 0 ? XT(XA, 0) : XT(XB, 0)); break;
                    case LaneOp.UnpackHigh: Ldloc(n == 0 ? XT(XA, 1) : XT(XB, 1)); break;
                    default: throw new InvalidOperationException($"lane operation {op}");
                }
                Stloc(XT(XR, n));
            }
            for (int n = 0; n < 2; n++) XSetLane(d, n, XT(XR, n));
        }

        /// <summary>
        /// addsd/subsd/mulsd/divsd/minsd/maxsd (lanes 1) and their pd forms (lanes 2) on register d and the source
        /// lanes (XB), as <see cref="Isa.ArithSdFast{T}"/> and <see cref="Isa.ArithPdFast{T}"/> compute them: taken
        /// only when MXCSR's control bits are the default (and for an operation that can be inexact, PE is already
        /// set), every operand lane is normal or zero, and (but for min and max, which are exact) every result lane is
        /// normal or an exact zero; anything else — a NaN (whose payload the host's hardware path propagates), an
        /// infinity, a denormal, an underflow or overflow, another rounding mode, DAZ or FTZ — branches to the form's
        /// handler before any lane is written, which computes it on the exact path. The same IEEE operations as the
        /// fast path's in the same rounding (the runtime's doubles are SSE2 doubles), so the two tiers agree bit for bit.
        /// min and max are x86's: the destination when it compares below (above) the source, else the source (so a
        /// zero of either sign against a zero gives the source's).
        /// </summary>
        void EmitArithD(FloatOp op, int d, int lanes, Label handler)
        {
            var il = _il;
            bool exact = op is FloatOp.Min or FloatOp.Max;
            uint mask = exact ? Isa.MxcsrControlBits : Isa.MxcsrControlBits | Isa.PeFlag;
            uint want = exact ? Isa.MxcsrCtlDefault : Isa.MxcsrCtlDefault | Isa.PeFlag;
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldfld, FMxcsr); Const((int)mask); il.Emit(OpCodes.And); Const((int)want);
            il.Emit(OpCodes.Bne_Un, handler);
            for (int n = 0; n < lanes; n++) { XLaneRef(d, n); Stloc(XT(XA, n)); }
            for (int n = 0; n < lanes; n++) { NormalOrZero(XT(XA, n), handler); NormalOrZero(XT(XB, n), handler); }
            for (int n = 0; n < lanes; n++)
            {
                LocalBuilder a = XT(XA, n), b = XT(XB, n), r = XT(XR, n);
                if (exact)
                {
                    // (no NaN here: an ordered compare decides)
                    Label source = il.DefineLabel(), chosen = il.DefineLabel();
                    AsDouble(a); AsDouble(b);
                    il.Emit(op == FloatOp.Max ? OpCodes.Ble_Un : OpCodes.Bge_Un, source);
                    Ldloc(a); Stloc(r); il.Emit(OpCodes.Br, chosen);
                    il.MarkLabel(source);
                    Ldloc(b); Stloc(r);
                    il.MarkLabel(chosen);
                    continue;
                }
                AsDouble(a); AsDouble(b);
                il.Emit(op switch { FloatOp.Add => OpCodes.Add, FloatOp.Sub => OpCodes.Sub, FloatOp.Mul => OpCodes.Mul, _ => OpCodes.Div });
                il.Emit(OpCodes.Call, MDoubleBits); Stloc(r);
                Kept(r, a, b, handler);
            }
            for (int n = 0; n < lanes; n++) XSetLane(d, n, XT(XR, n));
        }

        void AsDouble(LocalBuilder bits) { Ldloc(bits); _il.Emit(OpCodes.Call, MBitsDouble); }

        /// <summary>Pushes (x &lt;&lt; 1) - 2^53: below <see cref="NormalBelow"/> exactly for a normal double x, and
        /// <see cref="ZeroAt"/> for +-0 (the sign shifted out, the exponent field moved to the top).</summary>
        void Biased(LocalBuilder x)
        {
            Ldloc(x); _il.Emit(OpCodes.Ldc_I4_1); _il.Emit(OpCodes.Shl); _il.Emit(OpCodes.Ldc_I8, -(1L << 53)); _il.Emit(OpCodes.Add);
        }

        const ulong NormalBelow = 0x7FEUL << 53, ZeroAt = unchecked(0UL - (1UL << 53));

        /// <summary>Goes to the handler unless x is a normal double or +-0 (<see cref="Isa"/>'s NormOrZeroD).</summary>
        void NormalOrZero(LocalBuilder x, Label handler)
        {
            var il = _il;
            Label ok = il.DefineLabel();
            Biased(x); il.Emit(OpCodes.Ldc_I8, unchecked((long)NormalBelow)); il.Emit(OpCodes.Blt_Un, ok);
            Biased(x); il.Emit(OpCodes.Ldc_I8, unchecked((long)ZeroAt)); il.Emit(OpCodes.Bne_Un, handler);
            il.MarkLabel(ok);
        }

        /// <summary>Goes to the handler unless result r of a and b may be kept (<see cref="Isa"/>'s KeepD): normal, or
        /// a zero with a zero operand (exact; a zero from two non-zero operands may be an underflow).</summary>
        void Kept(LocalBuilder r, LocalBuilder a, LocalBuilder b, Label handler)
        {
            var il = _il;
            Label ok = il.DefineLabel();
            Biased(r); il.Emit(OpCodes.Ldc_I8, unchecked((long)NormalBelow)); il.Emit(OpCodes.Blt_Un, ok);
            Ldloc(r); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Bne_Un, handler);
            Ldloc(a); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Beq, ok);
            Ldloc(b); il.Emit(OpCodes.Ldc_I4_1); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Bne_Un, handler);
            il.MarkLabel(ok);
        }

        /// <summary>Pushes the thread's XMM registers (pairs of 64-bit lanes).</summary>
        void Xmm() { _il.Emit(OpCodes.Ldarg_1); _il.Emit(OpCodes.Ldfld, FXmm); }

        /// <summary>Pushes 64-bit lane `lane` (0 low, 1 high) of XMM register x.</summary>
        void XLane(int x, int lane) { Xmm(); Const(2 * x + lane); _il.Emit(OpCodes.Ldelem_I8); }

        void Const(int v) => _il.Emit(OpCodes.Ldc_I4, v);

        void Call(string name) => _il.Emit(OpCodes.Call, XmmMethod(name));

        /// <summary>Calls the generic form's operation (<see cref="Isa.XmmCallOf"/>: precompiled, no JIT at its first
        /// call) through its address, a constant of the region's code.</summary>
        void CallOp(ref Instruction ins, bool memory, Type result, Type[] args)
        {
            nint fn = Isa.XmmCallOf(ins.Code, memory);
            if (fn == 0) throw new InvalidOperationException($"no compiled-tier operation for {ins.Code}");
            _il.Emit(OpCodes.Ldc_I8, (long)fn); _il.Emit(OpCodes.Conv_I);
            _il.EmitCalli(OpCodes.Calli, CallingConventions.Standard, result, args, null);
        }
    }
}
