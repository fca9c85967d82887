using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Memory;
using ReVirt.Tests.Oracle;
using Xunit;
using static ReVirt.Tests.Oracle.CpuSnapshot;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// String instructions (movs/stos/lods/cmps/scas, all widths, no prefix / rep / repe / repne, DF = 0 and 1,
/// overlapping and long copies that take the bulk path) against the host CPU, plus the VM-only cases the
/// host cannot run: faults in the middle of a rep, #DE, and tzcnt/lzcnt on a CPU without BMI1/LZCNT.
/// </summary>
public class StringInstructionTests(Xunit.Abstractions.ITestOutputHelper output)
{
    const int MemSize = 0x8000;

    static readonly Func<RepPrefixKind, Instruction>[] Forms =
    [
        p => Instruction.CreateMovsb(64, Register.None, p), p => Instruction.CreateMovsw(64, Register.None, p),
        p => Instruction.CreateMovsd(64, Register.None, p), p => Instruction.CreateMovsq(64, Register.None, p),
        p => Instruction.CreateStosb(64, p), p => Instruction.CreateStosw(64, p), p => Instruction.CreateStosd(64, p), p => Instruction.CreateStosq(64, p),
        p => Instruction.CreateLodsb(64, Register.None, p), p => Instruction.CreateLodsw(64, Register.None, p),
        p => Instruction.CreateLodsd(64, Register.None, p), p => Instruction.CreateLodsq(64, Register.None, p),
        p => Instruction.CreateCmpsb(64, Register.None, p), p => Instruction.CreateCmpsw(64, Register.None, p),
        p => Instruction.CreateCmpsd(64, Register.None, p), p => Instruction.CreateCmpsq(64, Register.None, p),
        p => Instruction.CreateScasb(64, p), p => Instruction.CreateScasw(64, p), p => Instruction.CreateScasd(64, p), p => Instruction.CreateScasq(64, p),
    ];

    static byte[] Encode(Instruction ins)
    {
        var w = new Writer();
        Encoder.Create(64, w).Encode(ins, NativeRunner.SnippetAddress);
        return w.Bytes.ToArray();
    }

    sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }

    [Fact]
    public void MatchesHost()
    {
        if (!NativeRunner.IsSupported) return;
        var r = new Random(4242);
        int run = 0, failed = 0;
        var failures = new List<string>();
        RepPrefixKind[] prefixes = [RepPrefixKind.None, RepPrefixKind.Repe, RepPrefixKind.Repne];
        foreach (var form in Forms)
            foreach (var prefix in prefixes)
                for (int k = 0; k < 60; k++)
                {
                    var ins = form(prefix);
                    int size = ins.MemorySize.GetSize();
                    bool compare = ins.Mnemonic is Mnemonic.Cmpsb or Mnemonic.Cmpsw or Mnemonic.Cmpsd or Mnemonic.Cmpsq
                        or Mnemonic.Scasb or Mnemonic.Scasw or Mnemonic.Scasd or Mnemonic.Scasq;
                    var s = CpuSnapshot.Create();
                    s.Memory = new byte[MemSize];
                    if (compare) for (int b = 0; b < MemSize; b++) s.Memory[b] = (byte)(r.Next(8) == 0 ? r.Next(3) : 1);
                    else r.NextBytes(s.Memory);
                    for (int g = 0; g < 16; g++) if (g != RSP) s[g] = (ulong)r.NextInt64();
                    if (compare) s[RAX] = r.Next(2) == 0 ? 0x0101010101010101UL : (ulong)r.Next(3);
                    bool down = r.Next(3) == 0;
                    s.Rflags = ((ulong)r.Next() & ArithFlags) | (down ? DF : 0);
                    ulong count = (ulong)(r.Next(4) switch { 0 => r.Next(4), 1 => r.Next(10, 40), 2 => r.Next(40, 600), _ => r.Next(600, MemSize / 2 / size) });
                    ulong bytes = count * (ulong)size;
                    ulong lo = NativeRunner.ScratchBase, span = (ulong)MemSize - bytes;
                    ulong src = lo + (ulong)r.NextInt64(0, (long)span - 16) + (down ? bytes - (ulong)size : 0);
                    ulong dst = r.Next(3) == 0
                        ? (ulong)Math.Clamp((long)src + r.Next(-70, 70), (long)lo + (down ? (long)(bytes - (ulong)size) : 0), (long)(lo + span - 16) + (down ? (long)(bytes - (ulong)size) : 0))
                        : lo + (ulong)r.NextInt64(0, (long)span - 16) + (down ? bytes - (ulong)size : 0);
                    s[RSI] = src; s[RDI] = dst; s[RCX] = count;
                    byte[] code = Encode(ins);
                    run++;
                    var native = NativeRunner.Run(code, s);
                    var vm = VmRunner.Run(code, s, out string? fault);
                    string diff = fault ?? Diff(native, vm, ArithFlags | DF, compareXmm: false);
                    if (diff.Length != 0)
                    {
                        failed++;
                        if (failures.Count < 10) failures.Add($"{ins} count={count} rsi={src:x} rdi={dst:x} df={down}\n{diff}");
                    }
                }
        output.WriteLine($"strings: {run} cases, {failed} differ");
        Assert.True(failed == 0, $"{failed} of {run} differ\n{string.Join("\n", failures)}");
    }

    // ---------------------------------------------------------------- VM-only cases

    sealed class NoHost : ICpuHost
    {
        public void Syscall(ReVirt.Cpu.VirtualCpu cpu) => throw new InvalidOperationException();
        public ulong ReadTimestampCounter(ReVirt.Cpu.VirtualCpu cpu) => 0;
        public ulong ReadRandom(ReVirt.Cpu.VirtualCpu cpu) => 0;
    }

    const ulong Code0 = 0x40_0000, Data = 0x100_0000;

    static (ReVirt.Cpu.VirtualCpu cpu, GuestMemory mem) Vm(byte[] code, ulong dataPages)
    {
        var mem = new GuestMemory();
        var cpu = new ReVirt.Cpu.VirtualCpu(mem, new CodeCache(mem), new NoHost());
        mem.Map(Code0, 0x1000, Prot.Read | Prot.Exec);
        mem.Poke(Code0, [.. code, 0xCC]);
        mem.Map(Data, dataPages * 0x1000, Prot.Read | Prot.Write);
        cpu.Rip = Code0;
        cpu.R[ReVirt.Cpu.VirtualCpu.RSP] = Data + dataPages * 0x1000;
        return (cpu, mem);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    public void RepMovsFaultMidwayLeavesProgressInRegisters(int size)
    {
        // source: 3 mapped pages; destination runs off the end of the mapping after 1.5 pages
        var ins = size == 1 ? Instruction.CreateMovsb(64, Register.None, RepPrefixKind.Repe) : Instruction.CreateMovsq(64, Register.None, RepPrefixKind.Repe);
        var (cpu, mem) = Vm(Encode(ins), 6);
        using var _ = mem;
        var pattern = new byte[0x3000];
        new Random(1).NextBytes(pattern);
        mem.WriteBytes(Data, pattern);
        ulong dst = Data + 0x4800;
        ulong n = 0x3000 / (ulong)size;
        cpu.R[ReVirt.Cpu.VirtualCpu.RSI] = Data; cpu.R[ReVirt.Cpu.VirtualCpu.RDI] = dst; cpu.R[ReVirt.Cpu.VirtualCpu.RCX] = n;
        var res = cpu.Run();
        Assert.Equal(RunResult.Fault, res);
        Assert.Equal(11, cpu.PendingFault!.Signal);
        Assert.Equal(Data + 0x6000, cpu.PendingFault.FaultAddress);
        Assert.Equal(Code0, cpu.Rip);
        ulong done = 0x1800 / (ulong)size;
        Assert.Equal(Data + 0x1800, cpu.R[ReVirt.Cpu.VirtualCpu.RSI]);
        Assert.Equal(dst + 0x1800, cpu.R[ReVirt.Cpu.VirtualCpu.RDI]);
        Assert.Equal(n - done, cpu.R[ReVirt.Cpu.VirtualCpu.RCX]);
        Assert.Equal(pattern.AsSpan(0, 0x1800).ToArray(), mem.ReadBytes(dst, 0x1800));
    }

    [Fact]
    public void RepStosFaultMidwayLeavesProgressInRegisters()
    {
        var (cpu, mem) = Vm(Encode(Instruction.CreateStosd(64, RepPrefixKind.Repe)), 2);
        using var _ = mem;
        cpu.R[ReVirt.Cpu.VirtualCpu.RAX] = 0xDEADBEEF;
        cpu.R[ReVirt.Cpu.VirtualCpu.RDI] = Data + 0x10; cpu.R[ReVirt.Cpu.VirtualCpu.RCX] = 0x1000;
        Assert.Equal(RunResult.Fault, cpu.Run());
        Assert.Equal(Data + 0x2000, cpu.R[ReVirt.Cpu.VirtualCpu.RDI]);
        Assert.Equal(0x1000UL - (0x2000 - 0x10) / 4, cpu.R[ReVirt.Cpu.VirtualCpu.RCX]);
        Assert.Equal(0xDEADBEEFU, mem.Read32(Data + 0x1FFC));
    }

    [Theory]
    [InlineData("div", 8, 0UL, 5UL, 0UL)]        // divide by zero
    [InlineData("div", 8, 1UL, 0UL, 1UL)]        // quotient overflow
    [InlineData("idiv", 8, ulong.MaxValue, 0x8000_0000_0000_0000UL, ulong.MaxValue)] // INT64_MIN / -1
    [InlineData("idiv", 4, 0xFFFF_FFFFUL, 0x8000_0000UL, 0xFFFF_FFFFUL)]
    [InlineData("idiv", 1, 0UL, 0x8000UL, 0xFFUL)] // -32768 / -1
    [InlineData("div", 2, 0x10UL, 0UL, 0x10UL)]
    public void DivideErrorRaisesSigfpe(string m, int size, ulong rdx, ulong rax, ulong divisor)
    {
        Register reg = size switch { 1 => Register.BL, 2 => Register.BX, 4 => Register.EBX, _ => Register.RBX };
        Code code = (m, size) switch
        {
            ("div", 1) => Code.Div_rm8, ("div", 2) => Code.Div_rm16, ("div", 4) => Code.Div_rm32, ("div", _) => Code.Div_rm64,
            (_, 1) => Code.Idiv_rm8, (_, 2) => Code.Idiv_rm16, (_, 4) => Code.Idiv_rm32, _ => Code.Idiv_rm64,
        };
        var (cpu, mem) = Vm(Encode(Instruction.Create(code, reg)), 1);
        using var _ = mem;
        cpu.R[ReVirt.Cpu.VirtualCpu.RAX] = rax; cpu.R[ReVirt.Cpu.VirtualCpu.RDX] = rdx; cpu.R[ReVirt.Cpu.VirtualCpu.RBX] = divisor;
        Assert.Equal(RunResult.Fault, cpu.Run());
        Assert.Equal(8, cpu.PendingFault!.Signal);
        Assert.Equal(1, cpu.PendingFault.Code);
        Assert.Equal(Code0, cpu.Rip);
        Assert.Equal(rax, cpu.R[ReVirt.Cpu.VirtualCpu.RAX]);
        Assert.Equal(rdx, cpu.R[ReVirt.Cpu.VirtualCpu.RDX]);
    }

    [Fact]
    public void EnterAndXlatMatchHost()
    {
        if (!NativeRunner.IsSupported) return;
        var r = new Random(7);
        for (int k = 0; k < 200; k++)
        {
            var s = CpuSnapshot.Create();
            s.Memory = new byte[NativeRunner.ScratchSize - 0x80];
            r.NextBytes(s.Memory.AsSpan(0, NativeRunner.DataSize));
            s[RBP] = NativeRunner.DefaultRsp - (ulong)r.Next(0, 64) * 8;
            s[RBX] = NativeRunner.ScratchBase + (ulong)r.Next(0, 0xF00);
            s[RAX] = (ulong)r.NextInt64();
            byte[] code = (k % 2) == 0
                ? Encode(Instruction.Create(Code.Enterq_imm16_imm8, (uint)r.Next(0, 0x200), (uint)(k % 8 == 0 ? r.Next(0, 6) : 0)))
                : [0xD7]; // xlatb
            var native = NativeRunner.Run(code, s);
            var vm = VmRunner.Run(code, s, out string? fault);
            Assert.Null(fault);
            Assert.Equal("", Diff(native, vm, ArithFlags | DF, compareXmm: false));
        }
    }
}
