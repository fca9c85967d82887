using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>General-purpose integer instructions: data movement, arithmetic, logic, control transfer.</summary>
public static unsafe partial class Isa
{
    static void RegisterInteger()
    {
        Reg(Mnemonic.Mov, &Mov);
        Reg(Mnemonic.Movzx, &Movzx);
        Reg(Mnemonic.Movsx, &Movsx);
        Reg(Mnemonic.Movsxd, &Movsx);
        Reg(Mnemonic.Lea, &Lea);
        Reg(Mnemonic.Add, &Add);
        Reg(Mnemonic.Adc, &Adc);
        Reg(Mnemonic.Sub, &Sub);
        Reg(Mnemonic.Sbb, &Sbb);
        Reg(Mnemonic.Cmp, &Cmp);
        Reg(Mnemonic.And, &And);
        Reg(Mnemonic.Or, &Or);
        Reg(Mnemonic.Xor, &Xor);
        Reg(Mnemonic.Test, &Test);
        Reg(Mnemonic.Inc, &Inc);
        Reg(Mnemonic.Dec, &Dec);
        Reg(Mnemonic.Neg, &Neg);
        Reg(Mnemonic.Not, &Not);
        Reg(Mnemonic.Push, &Push);
        Reg(Mnemonic.Pop, &Pop);
        Reg(Mnemonic.Pushfq, &Pushfq);
        Reg(Mnemonic.Popfq, &Popfq);
        Reg(Mnemonic.Call, &Call);
        Reg(Mnemonic.Ret, &Ret);
        Reg(Mnemonic.Jmp, &Jmp);
        Reg(Mnemonic.Leave, &Leave);
        foreach (var m in new[] { Mnemonic.Jo, Mnemonic.Jno, Mnemonic.Jb, Mnemonic.Jae, Mnemonic.Je, Mnemonic.Jne, Mnemonic.Jbe, Mnemonic.Ja,
                                  Mnemonic.Js, Mnemonic.Jns, Mnemonic.Jp, Mnemonic.Jnp, Mnemonic.Jl, Mnemonic.Jge, Mnemonic.Jle, Mnemonic.Jg })
            Reg(m, &Jcc);
        foreach (var m in new[] { Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne, Mnemonic.Setbe, Mnemonic.Seta,
                                  Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp, Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg })
            Reg(m, &Setcc);
        foreach (var m in new[] { Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne, Mnemonic.Cmovbe, Mnemonic.Cmova,
                                  Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp, Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg })
            Reg(m, &Cmovcc);
        Reg(Mnemonic.Jrcxz, &Jrcxz);
        Reg(Mnemonic.Jecxz, &Jrcxz);
        Reg(Mnemonic.Loop, &Loop);
        Reg(Mnemonic.Loope, &Loop);
        Reg(Mnemonic.Loopne, &Loop);
        Reg(Mnemonic.Xchg, &Xchg);
        Reg(Mnemonic.Cmpxchg, &Cmpxchg);
        Reg(Mnemonic.Cmpxchg8b, &Cmpxchg8b);
        Reg(Mnemonic.Cmpxchg16b, &Cmpxchg16b);
        Reg(Mnemonic.Xadd, &Xadd);
        Reg(Mnemonic.Cbw, &Cbw);
        Reg(Mnemonic.Cwde, &Cbw);
        Reg(Mnemonic.Cdqe, &Cbw);
        Reg(Mnemonic.Cwd, &Cwd);
        Reg(Mnemonic.Cdq, &Cwd);
        Reg(Mnemonic.Cqo, &Cwd);
        Reg(Mnemonic.Clc, &Clc);
        Reg(Mnemonic.Stc, &Stc);
        Reg(Mnemonic.Cmc, &Cmc);
        Reg(Mnemonic.Cld, &Cld);
        Reg(Mnemonic.Std, &Std);
        Reg(Mnemonic.Lahf, &Lahf);
        Reg(Mnemonic.Sahf, &Sahf);
        Reg(Mnemonic.Bswap, &Bswap);
        RegisterIntegerMore();
    }

    /// <summary>Shifts, multiply/divide, bit operations and string instructions (Isa.Integer2.cs).</summary>
    static partial void RegisterIntegerMore();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Size0(ref Instruction i) => VirtualCpu.OpSize(ref i, 0);

    static void Mov(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        c.WriteOp(ref i, 0, c.ReadOp(ref i, 1, s), s);
    }

    static void Movzx(VirtualCpu c, ref Instruction i)
    {
        int ss = VirtualCpu.OpSize(ref i, 1);
        c.WriteOp(ref i, 0, c.ReadOp(ref i, 1, ss), Size0(ref i));
    }

    static void Movsx(VirtualCpu c, ref Instruction i)
    {
        int ss = VirtualCpu.OpSize(ref i, 1);
        int ds = Size0(ref i);
        c.WriteOp(ref i, 0, (ulong)VirtualCpu.SignExtend(c.ReadOp(ref i, 1, ss), ss) & VirtualCpu.SizeMask(ds), ds);
    }

    static void Lea(VirtualCpu c, ref Instruction i)
    {
        ulong a = i.MemoryDisplacement64;
        Register b = i.MemoryBase;
        if (b != Register.None && b != Register.RIP) a += c.R[VirtualCpu.RegInfo[(int)b] & 15];
        Register x = i.MemoryIndex;
        if (x != Register.None) a += c.R[VirtualCpu.RegInfo[(int)x] & 15] * (ulong)i.MemoryIndexScale;
        if (b != Register.None && (VirtualCpu.RegInfo[(int)b] >> 4) == 1) a = (uint)a;
        c.SetReg(i.Op0Register, a);
    }

    // ---------------------------------------------------------------- binary ALU
    // Fast path for register destinations avoids re-computing the effective address for read-modify-write.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong LoadDst(VirtualCpu c, ref Instruction i, int s, out ulong ea)
    {
        if (i.Op0Kind == OpKind.Register) { ea = 0; return c.GetReg(i.Op0Register); }
        ea = c.Ea(ref i);
        return c.Mem.Read(ea, s);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StoreDst(VirtualCpu c, ref Instruction i, int s, ulong ea, ulong v)
    {
        if (i.Op0Kind == OpKind.Register) c.SetReg(i.Op0Register, v);
        else c.Mem.Write(ea, v, s);
    }

    static void Add(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea), b = c.ReadOp(ref i, 1, s);
        ulong r = (a + b) & VirtualCpu.SizeMask(s);
        c.SetFlagsAdd(a, b, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Adc(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea), b = c.ReadOp(ref i, 1, s);
        ulong r = (a + b + (c.Rflags & VirtualCpu.CF)) & VirtualCpu.SizeMask(s);
        c.SetFlagsAdd(a, b, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Sub(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea), b = c.ReadOp(ref i, 1, s);
        ulong r = (a - b) & VirtualCpu.SizeMask(s);
        c.SetFlagsSub(a, b, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Sbb(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea), b = c.ReadOp(ref i, 1, s);
        ulong r = (a - b - (c.Rflags & VirtualCpu.CF)) & VirtualCpu.SizeMask(s);
        c.SetFlagsSub(a, b, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Cmp(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = c.ReadOp(ref i, 0, s), b = c.ReadOp(ref i, 1, s);
        c.SetFlagsSub(a, b, (a - b) & VirtualCpu.SizeMask(s), s);
    }

    static void And(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong r = LoadDst(c, ref i, s, out ulong ea) & c.ReadOp(ref i, 1, s);
        c.SetFlagsLogic(r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Or(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong r = LoadDst(c, ref i, s, out ulong ea) | c.ReadOp(ref i, 1, s);
        c.SetFlagsLogic(r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Xor(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong r = LoadDst(c, ref i, s, out ulong ea) ^ c.ReadOp(ref i, 1, s);
        c.SetFlagsLogic(r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Test(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        c.SetFlagsLogic(c.ReadOp(ref i, 0, s) & c.ReadOp(ref i, 1, s), s);
    }

    static void Inc(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        ulong r = (a + 1) & VirtualCpu.SizeMask(s);
        c.SetFlagsIncDec(false, a, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Dec(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        ulong r = (a - 1) & VirtualCpu.SizeMask(s);
        c.SetFlagsIncDec(true, a, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Neg(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        ulong r = (0 - a) & VirtualCpu.SizeMask(s);
        c.SetFlagsSub(0, a, r, s);
        StoreDst(c, ref i, s, ea, r);
    }

    static void Not(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea);
        StoreDst(c, ref i, s, ea, ~a & VirtualCpu.SizeMask(s));
    }

    // ---------------------------------------------------------------- stack and control flow

    static void Push(VirtualCpu c, ref Instruction i)
    {
        int s = i.StackPointerIncrement == -2 ? 2 : 8;
        ulong v = c.ReadOp(ref i, 0, s);
        if (s == 2) { ulong sp = c.R[VirtualCpu.RSP] - 2; c.Mem.Write16(sp, (ushort)v); c.R[VirtualCpu.RSP] = sp; }
        else c.Push64(v);
    }

    static void Pop(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        if (s == 2) { ulong sp = c.R[VirtualCpu.RSP]; ulong v = c.Mem.Read16(sp); c.R[VirtualCpu.RSP] = sp + 2; c.WriteOp(ref i, 0, v, 2); return; }
        ulong val = c.Mem.Read64(c.R[VirtualCpu.RSP]);
        c.R[VirtualCpu.RSP] += 8;
        // pop [rsp+x] computes the address after the increment, as the hardware does
        c.WriteOp(ref i, 0, val, 8);
    }

    const ulong UserFlags = VirtualCpu.CF | VirtualCpu.PF | VirtualCpu.AF | VirtualCpu.ZF | VirtualCpu.SF | VirtualCpu.DF | VirtualCpu.OF | VirtualCpu.TF | (1UL << 18) /* AC */ | (1UL << 21) /* ID */;

    static void Pushfq(VirtualCpu c, ref Instruction i) => c.Push64(c.Rflags & ~(VirtualCpu.TF));

    static void Popfq(VirtualCpu c, ref Instruction i)
    {
        ulong v = c.Pop64();
        c.Rflags = (c.Rflags & ~UserFlags) | (v & UserFlags & ~VirtualCpu.TF) | 0x202;
    }

    static void Call(VirtualCpu c, ref Instruction i)
    {
        ulong target = i.Op0Kind == OpKind.NearBranch64 ? i.NearBranch64 : c.ReadOp(ref i, 0, 8);
        c.Push64(c.Rip);
        c.Rip = target;
    }

    static void Ret(VirtualCpu c, ref Instruction i)
    {
        ulong target = c.Pop64();
        if (i.OpCount == 1) c.R[VirtualCpu.RSP] += i.Immediate16;
        c.Rip = target;
    }

    static void Jmp(VirtualCpu c, ref Instruction i)
        => c.Rip = i.Op0Kind == OpKind.NearBranch64 ? i.NearBranch64 : c.ReadOp(ref i, 0, 8);

    static void Jcc(VirtualCpu c, ref Instruction i)
    {
        if (c.Cond(i.ConditionCode)) c.Rip = i.NearBranch64;
    }

    static void Jrcxz(VirtualCpu c, ref Instruction i)
    {
        ulong cx = i.Mnemonic == Mnemonic.Jecxz ? (uint)c.R[VirtualCpu.RCX] : c.R[VirtualCpu.RCX];
        if (cx == 0) c.Rip = i.NearBranch64;
    }

    static void Loop(VirtualCpu c, ref Instruction i)
    {
        ulong cx = --c.R[VirtualCpu.RCX];
        bool go = cx != 0;
        if (i.Mnemonic == Mnemonic.Loope) go &= (c.Rflags & VirtualCpu.ZF) != 0;
        else if (i.Mnemonic == Mnemonic.Loopne) go &= (c.Rflags & VirtualCpu.ZF) == 0;
        if (go) c.Rip = i.NearBranch64;
    }

    static void Leave(VirtualCpu c, ref Instruction i)
    {
        c.R[VirtualCpu.RSP] = c.R[VirtualCpu.RBP];
        c.R[VirtualCpu.RBP] = c.Pop64();
    }

    static void Setcc(VirtualCpu c, ref Instruction i) => c.WriteOp(ref i, 0, c.Cond(i.ConditionCode) ? 1UL : 0UL, 1);

    static void Cmovcc(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong v = c.ReadOp(ref i, 1, s); // the source is read (and may fault) whatever the condition
        if (c.Cond(i.ConditionCode)) c.SetReg(i.Op0Register, v);
        else if (s == 4) c.SetReg(i.Op0Register, c.GetReg(i.Op0Register)); // 32-bit destination is zero-extended anyway
    }

    // ---------------------------------------------------------------- exchange

    static void Xchg(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        if (i.Op0Kind == OpKind.Register && i.Op1Kind == OpKind.Register)
        {
            ulong a = c.GetReg(i.Op0Register), b = c.GetReg(i.Op1Register);
            c.SetReg(i.Op0Register, b); c.SetReg(i.Op1Register, a);
            return;
        }
        int memOp = i.Op0Kind == OpKind.Memory ? 0 : 1;
        Register reg = memOp == 0 ? i.Op1Register : i.Op0Register;
        ulong ea = c.Ea(ref i);
        ulong m = c.Mem.Read(ea, s);
        c.Mem.Write(ea, c.GetReg(reg), s);
        c.SetReg(reg, m);
    }

    static void Cmpxchg(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong dst = LoadDst(c, ref i, s, out ulong ea);
        ulong acc = c.R[VirtualCpu.RAX] & VirtualCpu.SizeMask(s);
        c.SetFlagsSub(acc, dst, (acc - dst) & VirtualCpu.SizeMask(s), s);
        if (acc == dst) StoreDst(c, ref i, s, ea, c.GetReg(i.Op1Register));
        else
        {
            if (i.Op0Kind == OpKind.Memory) c.Mem.Write(ea, dst, s); // the processor always writes back
            switch (s)
            {
                case 1: c.R[VirtualCpu.RAX] = (c.R[VirtualCpu.RAX] & ~0xFFUL) | dst; break;
                case 2: c.R[VirtualCpu.RAX] = (c.R[VirtualCpu.RAX] & ~0xFFFFUL) | dst; break;
                default: c.R[VirtualCpu.RAX] = dst; break; // 4 zero-extends, 8 whole
            }
        }
    }

    static void Cmpxchg8b(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        ulong m = c.Mem.Read64(ea);
        ulong cmp = ((c.R[VirtualCpu.RDX] & 0xFFFFFFFF) << 32) | (c.R[VirtualCpu.RAX] & 0xFFFFFFFF);
        if (m == cmp)
        {
            c.Mem.Write64(ea, ((c.R[VirtualCpu.RCX] & 0xFFFFFFFF) << 32) | (c.R[VirtualCpu.RBX] & 0xFFFFFFFF));
            c.Rflags |= VirtualCpu.ZF;
        }
        else
        {
            c.Mem.Write64(ea, m);
            c.R[VirtualCpu.RAX] = (uint)m; c.R[VirtualCpu.RDX] = m >> 32;
            c.Rflags &= ~VirtualCpu.ZF;
        }
    }

    static void Cmpxchg16b(VirtualCpu c, ref Instruction i)
    {
        ulong ea = c.Ea(ref i);
        if ((ea & 15) != 0) throw new GuestSignalException(11, "cmpxchg16b on unaligned address", 0x80, 0);
        ulong lo = c.Mem.Read64(ea), hi = c.Mem.Read64(ea + 8);
        if (lo == c.R[VirtualCpu.RAX] && hi == c.R[VirtualCpu.RDX])
        {
            c.Mem.Write64(ea, c.R[VirtualCpu.RBX]); c.Mem.Write64(ea + 8, c.R[VirtualCpu.RCX]);
            c.Rflags |= VirtualCpu.ZF;
        }
        else
        {
            c.Mem.Write64(ea, lo); c.Mem.Write64(ea + 8, hi);
            c.R[VirtualCpu.RAX] = lo; c.R[VirtualCpu.RDX] = hi;
            c.Rflags &= ~VirtualCpu.ZF;
        }
    }

    static void Xadd(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong a = LoadDst(c, ref i, s, out ulong ea), b = c.GetReg(i.Op1Register);
        ulong r = (a + b) & VirtualCpu.SizeMask(s);
        c.SetFlagsAdd(a, b, r, s);
        c.SetReg(i.Op1Register, a);
        StoreDst(c, ref i, s, ea, r);
    }

    // ---------------------------------------------------------------- conversions and flags

    static void Cbw(VirtualCpu c, ref Instruction i)
    {
        ulong a = c.R[VirtualCpu.RAX];
        switch (i.Mnemonic)
        {
            case Mnemonic.Cbw: c.R[VirtualCpu.RAX] = (a & ~0xFFFFUL) | (ulong)(ushort)(short)(sbyte)(byte)a; break;
            case Mnemonic.Cwde: c.R[VirtualCpu.RAX] = (ulong)(uint)(int)(short)a; break;
            default: c.R[VirtualCpu.RAX] = (ulong)(int)a; break;
        }
    }

    static void Cwd(VirtualCpu c, ref Instruction i)
    {
        ulong a = c.R[VirtualCpu.RAX];
        switch (i.Mnemonic)
        {
            case Mnemonic.Cwd: c.R[VirtualCpu.RDX] = (c.R[VirtualCpu.RDX] & ~0xFFFFUL) | ((short)a < 0 ? 0xFFFFUL : 0); break;
            case Mnemonic.Cdq: c.R[VirtualCpu.RDX] = (int)a < 0 ? 0xFFFFFFFFUL : 0; break;
            default: c.R[VirtualCpu.RDX] = (long)a < 0 ? ulong.MaxValue : 0; break;
        }
    }

    static void Clc(VirtualCpu c, ref Instruction i) => c.Rflags &= ~VirtualCpu.CF;
    static void Stc(VirtualCpu c, ref Instruction i) => c.Rflags |= VirtualCpu.CF;
    static void Cmc(VirtualCpu c, ref Instruction i) => c.Rflags ^= VirtualCpu.CF;
    static void Cld(VirtualCpu c, ref Instruction i) => c.Rflags &= ~VirtualCpu.DF;
    static void Std(VirtualCpu c, ref Instruction i) => c.Rflags |= VirtualCpu.DF;

    static void Lahf(VirtualCpu c, ref Instruction i)
        => c.R[VirtualCpu.RAX] = (c.R[VirtualCpu.RAX] & ~0xFF00UL) | (((c.Rflags & 0xD5) | 2) << 8);

    static void Sahf(VirtualCpu c, ref Instruction i)
        => c.Rflags = (c.Rflags & ~0xD5UL) | ((c.R[VirtualCpu.RAX] >> 8) & 0xD5UL);

    static void Bswap(VirtualCpu c, ref Instruction i)
    {
        int s = Size0(ref i);
        ulong v = c.GetReg(i.Op0Register);
        c.SetReg(i.Op0Register, s == 8 ? BinaryPrimitives(v) : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v));
    }

    static ulong BinaryPrimitives(ulong v) => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);
}
