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

    sealed partial class Emitter
    {
        /// <summary>Emits SSE instruction k inline (plan p of <see cref="AnalyzeXmm"/>).</summary>
        void EmitXmm(int k, ref Instruction ins, ref Plan p)
        {
            var il = _il;
            int d = ins.Op0Kind == OpKind.Register ? Isa.XmmIndex(ins.Op0Register) : -1;
            int s = ins.OpCount > 1 && ins.Op1Kind == OpKind.Register ? Isa.XmmIndex(ins.Op1Register) : -1;
            Label handler = il.DefineLabel(), done = il.DefineLabel();
            bool usesHandler = false;
            if (p.Memory) { Ea(ref ins, true); Stloc(_ea); }
            switch (p.XKind)
            {
                case XmmKind.Vop:
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
                    il.Emit(OpCodes.Ldarg_1); Const(d);
                    if (p.Memory) { Ldloc(_host); CallOp(ref ins, true, typeof(bool), SigArithMem); }
                    else { Const(s); CallOp(ref ins, false, typeof(bool), SigArithRegs); }
                    il.Emit(OpCodes.Brfalse, handler);
                    usesHandler = true;
                    break;
                }
                case XmmKind.ArithSd or XmmKind.ArithSs:
                    if (p.Memory) LoadMem(_ea, p.Size); else XLane(s, 0);
                    Stloc(_v);
                    il.Emit(OpCodes.Ldarg_1); Const(d); Ldloc(_v); CallOp(ref ins, false, typeof(bool), SigArithValue);
                    il.Emit(OpCodes.Brfalse, handler);
                    usesHandler = true;
                    break;
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
            if (usesHandler) HandlerOutOfLine(k, handler, done);
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
        /// handler call (the flag record of this point), and goes on at done.</summary>
        void HandlerOutOfLine(int k, Label handler, Label done)
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
                _il.Emit(OpCodes.Br, done); // (the locals still hold every register: the handler changes none of them)
                _j = savedJ; _b = savedB; _rec = savedRec; _zx = savedZx; _valid = savedValid; _dirty = savedDirty;
            });
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
