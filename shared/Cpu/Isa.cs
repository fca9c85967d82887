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
    static readonly delegate*<Cpu, ref Instruction, void>[] ByCode = new delegate*<Cpu, ref Instruction, void>[Cpu.EnumCount<Code>()];
    static readonly delegate*<Cpu, ref Instruction, void>[] ByMnemonic = new delegate*<Cpu, ref Instruction, void>[Cpu.EnumCount<Mnemonic>()];

    static Isa() => Build();

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

    static void Reg(Mnemonic m, delegate*<Cpu, ref Instruction, void> h) => ByMnemonic[(int)m] = h;
    static void Reg(Code c, delegate*<Cpu, ref Instruction, void> h) => ByCode[(int)c] = h;

    public static delegate*<Cpu, ref Instruction, void> HandlerFor(ref Instruction i)
    {
        var h = Implements(ref i) ? ByCode[(int)i.Code] : null;
        if (h == null) h = Implements(ref i) ? ByMnemonic[(int)i.Mnemonic] : null;
        if (h == null) h = &Illegal;
        return h;
    }

    /// <summary>True when the guest CPU implements this instruction (for tests and diagnostics).</summary>
    public static bool Implements(ref Instruction i)
        => i.Code != Code.INVALID && (ByCode[(int)i.Code] != null || ByMnemonic[(int)i.Mnemonic] != null);

    public static bool EndsBlock(ref Instruction i)
        => i.FlowControl != FlowControl.Next || !Implements(ref i) || i.Mnemonic == Mnemonic.Syscall;

    public static bool IsBranch(ref Instruction i) => i.FlowControl switch
    {
        FlowControl.UnconditionalBranch or FlowControl.IndirectBranch or FlowControl.ConditionalBranch
            or FlowControl.Return or FlowControl.Call or FlowControl.IndirectCall => i.Mnemonic != Mnemonic.Syscall,
        _ => false,
    };

    // ---------------------------------------------------------------- exceptional handlers

    public static void Illegal(Cpu c, ref Instruction i)
    {
        string what = i.Code == Code.INVALID ? "invalid instruction" : $"unsupported instruction '{i}'";
        throw new GuestSignalException(4, $"{what} at 0x{i.IP:x}: bytes {BytesAt(c, ref i)}", 2 /* ILL_ILLOPN */, i.IP);
    }

    static string BytesAt(Cpu c, ref Instruction i)
    {
        var bytes = new byte[Math.Clamp(i.Length, 1, 15)];
        try { c.Mem.ReadBytes(i.IP, bytes); } catch (Memory.GuestFaultException) { }
        return string.Join(" ", bytes.Select(b => b.ToString("x2")));
    }

    public static void ExecFault(Cpu c, ref Instruction i)
        => throw new Memory.GuestFaultException(i.IP, false, c.Mem.FindVma(i.IP) != null);

    static void Ud(Cpu c, ref Instruction i)
        => throw new GuestSignalException(4, $"undefined instruction '{i}' at 0x{i.IP:x}: bytes {BytesAt(c, ref i)}", 2, i.IP);

    static void Nop(Cpu c, ref Instruction i) { }

    // ---------------------------------------------------------------- system instructions

    static void RegisterSystem()
    {
        Reg(Mnemonic.Nop, &Nop);
        Reg(Mnemonic.Endbr64, &Nop);
        Reg(Mnemonic.Endbr32, &Nop);
        Reg(Mnemonic.Pause, &Nop);
        Reg(Mnemonic.Lfence, &Nop);
        Reg(Mnemonic.Sfence, &Nop);
        Reg(Mnemonic.Mfence, &Nop);
        Reg(Mnemonic.Prefetchnta, &Nop);
        Reg(Mnemonic.Prefetcht0, &Nop);
        Reg(Mnemonic.Prefetcht1, &Nop);
        Reg(Mnemonic.Prefetcht2, &Nop);
        Reg(Mnemonic.Prefetchw, &Nop);
        Reg(Mnemonic.Ud2, &Ud);
        Reg(Mnemonic.Ud0, &Ud);
        Reg(Mnemonic.Ud1, &Ud);
        Reg(Mnemonic.Syscall, &Syscall);
        Reg(Mnemonic.Cpuid, &Cpuid);
        Reg(Mnemonic.Rdtsc, &Rdtsc);
        Reg(Mnemonic.Rdtscp, &Rdtscp);
        Reg(Mnemonic.Hlt, &Privileged);
        Reg(Mnemonic.Int3, &Int3);
        Reg(Mnemonic.Int, &IntN);
    }

    static void Syscall(Cpu c, ref Instruction i)
    {
        c.R[Cpu.RCX] = c.Rip;
        c.R[11] = c.Rflags;
        c.Host.Syscall(c);
    }

    static void Cpuid(Cpu c, ref Instruction i)
    {
        CpuModel.Query((uint)c.R[Cpu.RAX], (uint)c.R[Cpu.RCX], out uint a, out uint b, out uint cc, out uint d);
        c.R[Cpu.RAX] = a; c.R[Cpu.RBX] = b; c.R[Cpu.RCX] = cc; c.R[Cpu.RDX] = d;
    }

    static void Rdtsc(Cpu c, ref Instruction i)
    {
        ulong t = c.Host.ReadTimestampCounter(c);
        c.R[Cpu.RAX] = (uint)t; c.R[Cpu.RDX] = t >> 32;
    }

    static void Rdtscp(Cpu c, ref Instruction i)
    {
        Rdtsc(c, ref i);
        c.R[Cpu.RCX] = 0;
    }

    static void Privileged(Cpu c, ref Instruction i)
        => throw new GuestSignalException(11, $"privileged instruction '{i}' at 0x{i.IP:x}", 0x80 /* SI_KERNEL */, 0);

    static void Int3(Cpu c, ref Instruction i)
        => throw new GuestSignalException(5, $"int3 at 0x{i.IP:x}", 0x80, 0);

    static void IntN(Cpu c, ref Instruction i)
        => throw new GuestSignalException(11, $"int 0x{i.Immediate8:x} at 0x{i.IP:x}", 0x80, 0);
}
