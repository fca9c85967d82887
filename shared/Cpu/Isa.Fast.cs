using System.Runtime.CompilerServices;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// Handlers specialised per operand form for the most frequent integer instructions (register/register,
/// register/immediate, register/memory moves and ALU operations), chosen once when a block is decoded. They skip the
/// generic operand-kind and size dispatch; results and flags are those of the generic handlers (same flag records).
/// </summary>
public static unsafe partial class Isa
{
    interface IAlu
    {
        /// <summary>Computes a op b of the given size, records the flags and returns the result.</summary>
        static abstract ulong Do(VirtualCpu c, ulong a, ulong b, int size);
        /// <summary>False for CMP and TEST, which only set flags.</summary>
        static abstract bool Stores { get; }
    }

    struct AddOp : IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) { ulong r = (a + b) & VirtualCpu.SizeMask(s); c.SetFlagsAdd(a, b, r, s); return r; }
        public static bool Stores => true;
    }
    struct SubOp : IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) { ulong r = (a - b) & VirtualCpu.SizeMask(s); c.SetFlagsSub(a, b, r, s); return r; }
        public static bool Stores => true;
    }
    /// <summary>CMP is SUB and TEST is AND without the store.</summary>
    struct FlagsOnly<T> : IAlu where T : struct, IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) => T.Do(c, a, b, s);
        public static bool Stores => false;
    }
    struct AndOp : IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) { ulong r = a & b; c.SetFlagsLogic(r, s); return r; }
        public static bool Stores => true;
    }
    struct OrOp : IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) { ulong r = a | b; c.SetFlagsLogic(r, s); return r; }
        public static bool Stores => true;
    }
    struct XorOp : IAlu
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Do(VirtualCpu c, ulong a, ulong b, int s) { ulong r = a ^ b; c.SetFlagsLogic(r, s); return r; }
        public static bool Stores => true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] static int Gpr64(Register r) => r - Register.RAX;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] static int Gpr32(Register r) => r - Register.EAX;

    // op0 register, op1 register / immediate / memory; 64-bit and 32-bit (a 32-bit result zero-extends)
    static void AluRR64<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr64(i.Op0Register)];
        ulong r = T.Do(c, d, c.R[Gpr64(i.Op1Register)], 8);
        if (T.Stores) d = r;
    }
    static void AluRR32<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr32(i.Op0Register)];
        ulong r = T.Do(c, (uint)d, (uint)c.R[Gpr32(i.Op1Register)], 4);
        if (T.Stores) d = r;
    }
    static void AluRI8x64<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr64(i.Op0Register)];
        ulong r = T.Do(c, d, (ulong)i.Immediate8to64, 8);
        if (T.Stores) d = r;
    }
    static void AluRI32x64<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr64(i.Op0Register)];
        ulong r = T.Do(c, d, (ulong)i.Immediate32to64, 8);
        if (T.Stores) d = r;
    }
    static void AluRI8x32<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr32(i.Op0Register)];
        ulong r = T.Do(c, (uint)d, (uint)i.Immediate8to32, 4);
        if (T.Stores) d = r;
    }
    static void AluRI32x32<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ref ulong d = ref c.R[Gpr32(i.Op0Register)];
        ulong r = T.Do(c, (uint)d, i.Immediate32, 4);
        if (T.Stores) d = r;
    }
    static void AluRM64<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ulong b = c.Mem.Read64(c.Ea(ref i));
        ref ulong d = ref c.R[Gpr64(i.Op0Register)];
        ulong r = T.Do(c, d, b, 8);
        if (T.Stores) d = r;
    }
    static void AluRM32<T>(VirtualCpu c, ref Instruction i) where T : struct, IAlu
    {
        ulong b = c.Mem.Read32(c.Ea(ref i));
        ref ulong d = ref c.R[Gpr32(i.Op0Register)];
        ulong r = T.Do(c, (uint)d, b, 4);
        if (T.Stores) d = r;
    }

    static void MovRR64(VirtualCpu c, ref Instruction i) => c.R[Gpr64(i.Op0Register)] = c.R[Gpr64(i.Op1Register)];
    static void MovRR32(VirtualCpu c, ref Instruction i) => c.R[Gpr32(i.Op0Register)] = (uint)c.R[Gpr32(i.Op1Register)];
    static void MovRM64(VirtualCpu c, ref Instruction i) => c.R[Gpr64(i.Op0Register)] = c.Mem.Read64(c.Ea(ref i));
    static void MovRM32(VirtualCpu c, ref Instruction i) => c.R[Gpr32(i.Op0Register)] = c.Mem.Read32(c.Ea(ref i));
    static void MovMR64(VirtualCpu c, ref Instruction i) => c.Mem.Write64(c.Ea(ref i), c.R[Gpr64(i.Op1Register)]);
    static void MovMR32(VirtualCpu c, ref Instruction i) => c.Mem.Write32(c.Ea(ref i), (uint)c.R[Gpr32(i.Op1Register)]);
    static void MovRI64(VirtualCpu c, ref Instruction i) => c.R[Gpr64(i.Op0Register)] = i.Immediate64;
    static void MovRI32x64(VirtualCpu c, ref Instruction i) => c.R[Gpr64(i.Op0Register)] = (ulong)i.Immediate32to64;
    static void MovRI32(VirtualCpu c, ref Instruction i) => c.R[Gpr32(i.Op0Register)] = i.Immediate32;

    static void PushR64(VirtualCpu c, ref Instruction i) => c.Push64(c.R[Gpr64(i.Op0Register)]);
    // pop rsp leaves the popped value in rsp, as the generic handler and the hardware do
    static void PopR64(VirtualCpu c, ref Instruction i) { ulong v = c.Pop64(); c.R[Gpr64(i.Op0Register)] = v; }
    static void CallRel(VirtualCpu c, ref Instruction i) { c.Push64(c.Rip); c.Rip = i.NearBranch64; }
    static void RetNear(VirtualCpu c, ref Instruction i) => c.Rip = c.Pop64();
    static void JmpRel(VirtualCpu c, ref Instruction i) => c.Rip = i.NearBranch64;
    static void MovzxR32M8(VirtualCpu c, ref Instruction i) => c.R[Gpr32(i.Op0Register)] = c.Mem.Read8(c.Ea(ref i));
    static void MovzxR32M16(VirtualCpu c, ref Instruction i) => c.R[Gpr32(i.Op0Register)] = c.Mem.Read16(c.Ea(ref i));

    /// <summary>The specialised handler for this instruction's form, or null when the generic handler applies.</summary>
    static delegate*<VirtualCpu, ref Instruction, void> Specialized(ref Instruction i)
    {
        bool r0 = i.Op0Kind == OpKind.Register;
        bool r1 = i.OpCount > 1 && i.Op1Kind == OpKind.Register;
        bool m0 = i.Op0Kind == OpKind.Memory, m1 = i.OpCount > 1 && i.Op1Kind == OpKind.Memory;
        switch (i.Code)
        {
            case Code.Mov_r64_rm64 or Code.Mov_rm64_r64: return r0 && r1 ? &MovRR64 : r0 && m1 ? &MovRM64 : m0 && r1 ? &MovMR64 : null;
            case Code.Mov_r32_rm32 or Code.Mov_rm32_r32: return r0 && r1 ? &MovRR32 : r0 && m1 ? &MovRM32 : m0 && r1 ? &MovMR32 : null;
            case Code.Mov_r64_imm64: return &MovRI64;
            case Code.Mov_rm64_imm32: return r0 ? &MovRI32x64 : null;
            case Code.Mov_r32_imm32: return &MovRI32;
            case Code.Mov_rm32_imm32: return r0 ? &MovRI32 : null;
            case Code.Push_r64: return &PushR64;
            case Code.Pop_r64: return &PopR64;
            case Code.Call_rel32_64: return &CallRel;
            case Code.Retnq: return &RetNear;
            case Code.Jmp_rel8_64 or Code.Jmp_rel32_64: return &JmpRel;
            case Code.Movzx_r32_rm8: return m1 ? &MovzxR32M8 : null;
            case Code.Movzx_r32_rm16: return m1 ? &MovzxR32M16 : null;
        }
        return i.Mnemonic switch
        {
            Mnemonic.Add => AluForm<AddOp>(ref i, r0, r1, m1),
            Mnemonic.Sub => AluForm<SubOp>(ref i, r0, r1, m1),
            Mnemonic.Cmp => AluForm<FlagsOnly<SubOp>>(ref i, r0, r1, m1),
            Mnemonic.And => AluForm<AndOp>(ref i, r0, r1, m1),
            Mnemonic.Or => AluForm<OrOp>(ref i, r0, r1, m1),
            Mnemonic.Xor => AluForm<XorOp>(ref i, r0, r1, m1),
            Mnemonic.Test => AluForm<FlagsOnly<AndOp>>(ref i, r0, r1, m1),
            _ => null,
        };
    }

    static delegate*<VirtualCpu, ref Instruction, void> AluForm<T>(ref Instruction i, bool r0, bool r1, bool m1) where T : struct, IAlu
    {
        if (!r0 || i.OpCount != 2) return null;
        int size = VirtualCpu.OpSize(ref i, 0);
        if (size != 8 && size != 4) return null;
        bool q = size == 8;
        if (r1) return VirtualCpu.OpSize(ref i, 1) == size ? (q ? &AluRR64<T> : &AluRR32<T>) : null;
        if (m1) return q ? &AluRM64<T> : &AluRM32<T>;
        return i.Op1Kind switch
        {
            OpKind.Immediate8to64 when q => &AluRI8x64<T>,
            OpKind.Immediate32to64 when q => &AluRI32x64<T>,
            OpKind.Immediate8to32 when !q => &AluRI8x32<T>,
            OpKind.Immediate32 when !q => &AluRI32x32<T>,
            _ => null,
        };
    }
}
