using System.Runtime.CompilerServices;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// The instruction set: a table from Iced's Code (or, failing that, Mnemonic) to a static handler. Each family
/// of instructions lives in its own file (Isa.Integer.cs, Isa.Sse.cs, Isa.X87.cs ...) and registers itself in
/// <see cref="Build"/>. An instruction with no handler raises SIGILL when (and only if) it is executed.
/// </summary>
public static unsafe partial class Isa
{
    /// <summary>Every registered handler, by Code and by Mnemonic.</summary>
    static readonly HandlerTable Table = new();

    /// <summary>Runs <see cref="Build"/> once, before the first reader of the tables it fills (<see cref="HandlerFor"/>,
    /// <see cref="Implements"/>, the compiled tier's <see cref="XmmKindOf"/> and <see cref="XmmCallOf"/>; a handler is
    /// only reached through them). Not Isa's own static constructor: a class with one gives every static method of it
    /// in the precompiled image a class-initialisation check at its entry (a call through an import cell per handler
    /// call, per guest instruction), where a class without one has none.</summary>
    static class Built
    {
        static Built() => Build();
        internal static void Ensure() { }
    }

    static void Build()
    {
        RegisterSystem();
        RegisterInteger();
        RegisterSse();
        RegisterX87();
    }

    /// <summary>Families not yet present register nothing.</summary>
    static partial void RegisterSse();
    static partial void RegisterX87();

    static void Reg(Mnemonic m, delegate*<VirtualCpu, ref Instruction, void> h) => Table.Add(m, h);
    static void Reg(Code c, delegate*<VirtualCpu, ref Instruction, void> h) => Table.Add(c, h);

    /// <summary>The handler for an instruction; `specialize` false keeps to the generic handlers (see
    /// <see cref="CodeCache.SpecializedHandlers"/>).</summary>
    public static delegate*<VirtualCpu, ref Instruction, void> HandlerFor(ref Instruction i, bool specialize = true)
    {
        Built.Ensure();
        if (i.HasLockPrefix && !Lockable(ref i)) return &Ud;
        if (specialize)
        {
            var f = Specialized(ref i);
            if (f != null) return f;
        }
        var h = i.Code != Code.INVALID ? Table.Find(i.Code, i.Mnemonic) : null;
        if (h == null && InHintSpace(ref i)) h = &Nop;
        if (h == null) h = &Illegal;
        return h;
    }

    /// <summary>0f 18 - 0f 1f with a ModRM byte is the reserved-NOP hint space: an encoding there that no
    /// advertised feature defines executes as a no-op on hardware.</summary>
    static bool InHintSpace(ref Instruction i)
    {
        if (i.Code == Code.INVALID) return false;
        var op = i.OpCode;
        return op.Table == OpCodeTableKind.T0F && op.OpCode is >= 0x18 and <= 0x1F && op.Encoding == EncodingKind.Legacy;
    }

    /// <summary>True when the guest CPU implements this instruction (for tests and diagnostics).</summary>
    public static bool Implements(ref Instruction i)
    {
        Built.Ensure();
        return i.Code != Code.INVALID && (Table.Has(i.Code, i.Mnemonic) || InHintSpace(ref i));
    }

    /// <summary>LOCK is allowed only on these read-modify-write instructions with a memory destination; anywhere
    /// else the CPU raises #UD (SIGILL).</summary>
    static bool Lockable(ref Instruction i) => i.Op0Kind == OpKind.Memory && i.Mnemonic is Mnemonic.Add or Mnemonic.Adc
        or Mnemonic.And or Mnemonic.Btc or Mnemonic.Btr or Mnemonic.Bts or Mnemonic.Cmpxchg or Mnemonic.Cmpxchg8b
        or Mnemonic.Cmpxchg16b or Mnemonic.Dec or Mnemonic.Inc or Mnemonic.Neg or Mnemonic.Not or Mnemonic.Or
        or Mnemonic.Sbb or Mnemonic.Sub or Mnemonic.Xor or Mnemonic.Xadd or Mnemonic.Xchg;

    public static bool EndsBlock(ref Instruction i)
        => i.FlowControl != FlowControl.Next || !Implements(ref i) || i.Mnemonic == Mnemonic.Syscall;

    public static bool IsBranch(ref Instruction i) => i.FlowControl switch
    {
        FlowControl.UnconditionalBranch or FlowControl.IndirectBranch or FlowControl.ConditionalBranch
            or FlowControl.Return or FlowControl.Call or FlowControl.IndirectCall => i.Mnemonic != Mnemonic.Syscall,
        _ => false,
    };

    // ---------------------------------------------------------------- exceptional handlers

    public static void Illegal(VirtualCpu c, ref Instruction i)
    {
        string what = i.Code == Code.INVALID ? "invalid instruction" : $"unsupported instruction '{i}'";
        throw new GuestSignalException(SIGILL, $"{what} at 0x{i.IP:x}: bytes {BytesAt(c, ref i)}", ILL_ILLOPN, i.IP);
    }

    static string BytesAt(VirtualCpu c, ref Instruction i)
    {
        var bytes = new byte[Math.Clamp(i.Length, 1, 15)];
        try { c.Mem.ReadBytes(i.IP, bytes); } catch (Memory.GuestFaultException) { }
        return string.Join(" ", bytes.Select(b => b.ToString("x2")));
    }

    public static void ExecFault(VirtualCpu c, ref Instruction i)
        => throw new Memory.GuestFaultException(i.IP, false, c.Mem.FindVma(i.IP) != null);

    static void Ud(VirtualCpu c, ref Instruction i)
        => throw new GuestSignalException(SIGILL, $"undefined instruction '{i}' at 0x{i.IP:x}: bytes {BytesAt(c, ref i)}", ILL_ILLOPN, i.IP);

    static void Nop(VirtualCpu c, ref Instruction i) { }

    // ---------------------------------------------------------------- system instructions

    const int SIGILL = Signals.SIGILL, SIGTRAP = Signals.SIGTRAP, SIGSEGV = Signals.SIGSEGV;
    const int SI_KERNEL = Signals.SI_KERNEL, TRAP_BRKPT = Signals.TRAP_BRKPT, ILL_ILLOPN = Signals.ILL_ILLOPN;

    /// <summary>Instructions that need ring 0 (or an I/O permission a Linux process does not have): the CPU raises
    /// #GP, which Linux delivers as SIGSEGV with si_code SI_KERNEL and si_addr 0.</summary>
    static readonly Mnemonic[] PrivilegedMnemonics =
    {
        Mnemonic.Hlt, Mnemonic.Cli, Mnemonic.Sti, Mnemonic.In, Mnemonic.Out, Mnemonic.Insb, Mnemonic.Insw, Mnemonic.Insd,
        Mnemonic.Outsb, Mnemonic.Outsw, Mnemonic.Outsd, Mnemonic.Rdmsr, Mnemonic.Wrmsr, Mnemonic.Lgdt, Mnemonic.Lidt,
        Mnemonic.Lldt, Mnemonic.Ltr, Mnemonic.Lmsw, Mnemonic.Clts, Mnemonic.Invd, Mnemonic.Wbinvd, Mnemonic.Invlpg,
        Mnemonic.Swapgs, Mnemonic.Sysretq, Mnemonic.Sysret, Mnemonic.Rdpmc, Mnemonic.Wbnoinvd,
    };

    /// <summary>Moves to and from control and debug registers (#GP outside ring 0).</summary>
    static readonly Code[] PrivilegedCodes = { Code.Mov_r64_cr, Code.Mov_cr_r64, Code.Mov_r64_dr, Code.Mov_dr_r64, Code.Mov_r32_cr, Code.Mov_cr_r32, Code.Mov_r32_dr, Code.Mov_dr_r32 };

    /// <summary>Hint space a CPU without the feature (CET, MPX, CLDEMOTE) executes as a no-op; the CPU model does
    /// not advertise those features, so guests that probe for them see their absence consistently.</summary>
    static readonly Mnemonic[] HintNops =
    {
        Mnemonic.Nop, Mnemonic.Reservednop, Mnemonic.Endbr64, Mnemonic.Endbr32, Mnemonic.Rdsspd, Mnemonic.Rdsspq,
        Mnemonic.Cldemote, Mnemonic.Bndcl, Mnemonic.Bndcu, Mnemonic.Bndcn, Mnemonic.Bndmk, Mnemonic.Bndmov,
        Mnemonic.Bndldx, Mnemonic.Bndstx, Mnemonic.Pause, Mnemonic.Lfence, Mnemonic.Sfence, Mnemonic.Mfence,
        Mnemonic.Prefetchnta, Mnemonic.Prefetcht0, Mnemonic.Prefetcht1, Mnemonic.Prefetcht2, Mnemonic.Prefetchw,
    };

    static void RegisterSystem()
    {
        foreach (var m in HintNops) Reg(m, &Nop);
        foreach (var m in PrivilegedMnemonics) Reg(m, &Privileged);
        foreach (var c in PrivilegedCodes) Reg(c, &Privileged);
        Reg(Mnemonic.Ud2, &Ud);
        Reg(Mnemonic.Ud0, &Ud);
        Reg(Mnemonic.Ud1, &Ud);
        Reg(Mnemonic.Syscall, &Syscall);
        Reg(Mnemonic.Cpuid, &Cpuid);
        Reg(Mnemonic.Rdtsc, &Rdtsc);
        Reg(Mnemonic.Rdtscp, &Rdtscp);
        Reg(Mnemonic.Int3, &Int3);
        Reg(Mnemonic.Int1, &Int1);
        Reg(Mnemonic.Int, &IntN);
        Reg(Mnemonic.Iretq, &Iretq);
    }

    static void Syscall(VirtualCpu c, ref Instruction i)
    {
        c.R[VirtualCpu.RCX] = c.Rip;
        c.R[11] = c.Rflags;
        ulong before = AtExactCount(c);
        try { c.Host.Syscall(c); }
        finally { c.InstructionCount -= before; }
    }

    /// <summary>
    /// The host is called from inside a block (a syscall, rdtsc): the instruction count it sees — the position the
    /// log gives the event — must be the exact number of instructions retired before this one, not the count at the
    /// start of the running block, which depends on where blocks start (a stop inside a block starts a new one there,
    /// and the recording stops where a replay does not). Adds the instructions of the block before this one
    /// (<see cref="VirtualCpu.BlockIndex"/>, in both tiers) to the count; the caller takes them off again after the
    /// call, since the execution loop (or the compiled code) counts the block when it ends.
    /// </summary>
    static ulong AtExactCount(VirtualCpu c)
    {
        ulong before = (ulong)c.BlockIndex;
        c.InstructionCount += before;
        return before;
    }

    static void Cpuid(VirtualCpu c, ref Instruction i)
    {
        CpuModel.Query((uint)c.R[VirtualCpu.RAX], (uint)c.R[VirtualCpu.RCX], out uint a, out uint b, out uint cc, out uint d);
        c.R[VirtualCpu.RAX] = a; c.R[VirtualCpu.RBX] = b; c.R[VirtualCpu.RCX] = cc; c.R[VirtualCpu.RDX] = d;
    }

    static void Rdtsc(VirtualCpu c, ref Instruction i)
    {
        ulong before = AtExactCount(c), t;
        try { t = c.Host.ReadTimestampCounter(c); }
        finally { c.InstructionCount -= before; }
        c.R[VirtualCpu.RAX] = (uint)t; c.R[VirtualCpu.RDX] = t >> 32;
    }

    static void Rdtscp(VirtualCpu c, ref Instruction i)
    {
        Rdtsc(c, ref i);
        c.R[VirtualCpu.RCX] = 0;
    }

    static void Privileged(VirtualCpu c, ref Instruction i)
        => throw new GuestSignalException(SIGSEGV, $"privileged instruction '{i}' at 0x{i.IP:x}", SI_KERNEL, 0);

    // int3, int 3 and int1 are traps: the instruction retires and the signal reports the next instruction's rip.
    static void Int3(VirtualCpu c, ref Instruction i)
        => throw new GuestSignalException(SIGTRAP, $"int3 at 0x{i.IP:x}", SI_KERNEL, 0) { Trap = true };

    static void Int1(VirtualCpu c, ref Instruction i)
        => throw new GuestSignalException(SIGTRAP, $"int1 at 0x{i.IP:x}", TRAP_BRKPT, i.NextIP) { Trap = true };

    /// <summary>`int n`: only vector 3 is open to user mode (a breakpoint); any other vector is #GP. Linux on this
    /// model has no IA-32 emulation gate, so `int 0x80` is #GP too, as on a kernel built or booted without it.</summary>
    static void IntN(VirtualCpu c, ref Instruction i)
    {
        if (i.Immediate8 == 3) Int3(c, ref i);
        throw new GuestSignalException(SIGSEGV, $"int 0x{i.Immediate8:x} at 0x{i.IP:x}", SI_KERNEL, 0);
    }

    const ulong UserCs = 0x33, UserSs = 0x2b;

    /// <summary>IRETQ within ring 3: pops rip, cs, rflags, rsp, ss. Only a return to the 64-bit user code and stack
    /// selectors is modelled; anything else (another privilege level, a compatibility-mode segment) is #GP.</summary>
    static void Iretq(VirtualCpu c, ref Instruction i)
    {
        ulong sp = c.R[VirtualCpu.RSP];
        ulong rip = c.Mem.Read64(sp), cs = c.Mem.Read64(sp + 8), fl = c.Mem.Read64(sp + 16), rsp = c.Mem.Read64(sp + 24), ss = c.Mem.Read64(sp + 32);
        if ((ushort)cs != UserCs || (ushort)ss != UserSs) Privileged(c, ref i);
        c.Rflags = (c.Rflags & ~UserFlags) | (fl & UserFlags & ~VirtualCpu.TF) | 0x202;
        c.R[VirtualCpu.RSP] = rsp;
        c.Rip = rip;
    }
}
