using ReVirt.Cpu;
using ReVirt.Memory;

namespace ReVirt.Tests.Oracle;

/// <summary>
/// Runs the same snippet as <see cref="NativeRunner"/> inside the virtual CPU, from the same register state and
/// with the same scratch memory mapped at the same guest address, and returns the state afterwards.
/// The snippet is followed by an int3, which stops the virtual CPU with every register intact (and rip after the int3).
/// </summary>
public static class VmRunner
{
    sealed class NoHost : ICpuHost
    {
        public void Syscall(Cpu.Cpu cpu) => throw new InvalidOperationException("snippets make no syscalls");
        public ulong ReadTimestampCounter(Cpu.Cpu cpu) => 0;
        public ulong ReadRandom(Cpu.Cpu cpu) => 0;
    }

    public static CpuSnapshot Run(byte[] code, CpuSnapshot input) => Run(code, input, out _);

    /// <summary>Runs the snippet through the specialised handlers, again through the generic ones only, and again
    /// compiled (<see cref="ExecutionTier.Compiled"/>); all must agree on every register, all of RFLAGS, MXCSR,
    /// memory and the fault (else this throws), so every differential test checks each tier against the host.</summary>
    public static CpuSnapshot Run(byte[] code, CpuSnapshot input, out string? fault)
    {
        var fast = RunWith(code, input, specialized: true, ExecutionTier.Interpreter, out fault);
        Agree("generic handlers", fast, fault, RunWith(code, input, specialized: false, ExecutionTier.Interpreter, out string? genericFault), genericFault);
        Agree("compiled tier", fast, fault, RunWith(code, input, specialized: true, ExecutionTier.Compiled, out string? compiledFault), compiledFault);
        return fast;
    }

    static void Agree(string what, CpuSnapshot reference, string? fault, CpuSnapshot other, string? otherFault)
    {
        string diff = CpuSnapshot.Diff(reference, other, ulong.MaxValue, compareXmm: true, compareMemory: true, compareMxcsr: true);
        if (diff.Length != 0 || fault != otherFault)
            throw new InvalidOperationException($"the interpreter and the {what} disagree (fault {fault ?? "none"} vs {otherFault ?? "none"}):\n{diff}");
    }

    static CpuSnapshot RunWith(byte[] code, CpuSnapshot input, bool specialized, ExecutionTier tier, out string? fault)
    {
        using var mem = new GuestMemory();
        var cache = new CodeCache(mem, tier) { SpecializedHandlers = specialized };
        var cpu = new Cpu.Cpu(mem, cache, new NoHost());
        mem.Map(NativeRunner.ScratchBase, NativeRunner.ScratchSize, Prot.Read | Prot.Write, "scratch");
        mem.WriteBytes(NativeRunner.ScratchBase, input.Memory);
        mem.Map(NativeRunner.CodeBase, NativeRunner.CodeSize, Prot.Read | Prot.Exec, "code");
        var image = new byte[code.Length + 1];
        code.CopyTo(image, 0);
        image[^1] = 0xCC; // int3
        mem.Poke(NativeRunner.SnippetAddress, image);
        for (int k = 0; k < 16; k++) cpu.R[k] = input.Gpr[k];
        for (int k = 0; k < 16; k++) { cpu.Xmm[2 * k] = (ulong)input.Xmm[k]; cpu.Xmm[2 * k + 1] = (ulong)(input.Xmm[k] >> 64); }
        cpu.Rflags = (input.Rflags & CpuSnapshot.InputFlags) | 0x202;
        cpu.Mxcsr = input.Mxcsr;
        cpu.Rip = NativeRunner.SnippetAddress;
        ulong end = NativeRunner.SnippetAddress + (ulong)code.Length;
        fault = null;
        cpu.StopAt = 1_000_000;
        var r = cpu.Run();
        if (r != RunResult.Fault || cpu.Rip != end + 1 || cpu.PendingFault?.Signal != 5) // int3 traps: rip after it
            fault = r == RunResult.Fault ? $"fault at 0x{cpu.Rip:x}: {cpu.PendingFault?.Message}" : $"stopped with {r} at 0x{cpu.Rip:x}";
        var output = input.Clone();
        for (int k = 0; k < 16; k++) output.Gpr[k] = cpu.R[k];
        for (int k = 0; k < 16; k++) output.Xmm[k] = new UInt128(cpu.Xmm[2 * k + 1], cpu.Xmm[2 * k]);
        output.Rflags = cpu.Rflags;
        output.Mxcsr = cpu.Mxcsr;
        var m = new byte[input.Memory.Length];
        mem.ReadBytes(NativeRunner.ScratchBase, m);
        output.Memory = m;
        return output;
    }
}
