using System.Reflection;
using System.Reflection.PortableExecutable;
using Iced.Intel;
using ReVirt.Cpu;
using ReVirt.Memory;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>The operations compiled code calls for the generic SSE forms (Isa.XmmCallOf): one for every form the
/// compiled tier runs inline, and precompiled, so that a region's first pass does not wait for the runtime's JIT.
/// (Instantiated by reflection when a region was compiled, each was JIT-compiled at its first call: some 20 in a run
/// of bench.musl, about 7 % of its CPU samples.)</summary>
public partial class TierTests
{
    sealed class NoSyscalls : ICpuHost
    {
        public void Syscall(VirtualCpu cpu) => throw new InvalidOperationException();
        public ulong ReadTimestampCounter(VirtualCpu cpu) => 0;
        public ulong ReadRandom(VirtualCpu cpu) => 0;
    }

    [Fact]
    public unsafe void EveryGenericSseFormCallsAPrecompiledOperation()
    {
        var forms = new List<(Code Code, XmmKind Kind)>();
        for (int n = 0; n < IcedCounts.Code; n++)
        {
            var kind = Isa.XmmKindOf((Code)n);
            if (kind is XmmKind.Vop or XmmKind.VopImm or XmmKind.ArithPd or XmmKind.ArithPs or XmmKind.ArithSd or XmmKind.ArithSs)
                forms.Add(((Code)n, kind));
        }
        Assert.True(forms.Count > 40, $"only {forms.Count} generic SSE forms registered");
        foreach (var (code, kind) in forms)
        {
            Assert.True(Isa.XmmCallOf(code, false) != 0, $"{code}: no operation for a register source");
            bool memoryForm = kind is XmmKind.Vop or XmmKind.ArithPd or XmmKind.ArithPs;
            Assert.Equal(memoryForm, Isa.XmmCallOf(code, true) != 0);
        }

        // an IL-only build of ReVirt.Shared (-p:ReVirtReadyToRun=false) has no precompiled code to find
        using (var pe = new PEReader(File.OpenRead(typeof(Isa).Assembly.Location)))
            if (pe.PEHeaders.CorHeader?.ManagedNativeHeaderDirectory.Size is null or 0) return;

        var mem = new GuestMemory();
        var cpu = new VirtualCpu(mem, new CodeCache(mem), new NoSyscalls());
        byte* operand = stackalloc byte[32];
        byte* aligned = (byte*)(((nint)operand + 15) & ~(nint)15);
        var jitted = new List<Code>();
        foreach (var (code, kind) in forms)
        {
            // the JIT's count on this thread: a call that compiles its callee raises it
            long before = System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: true);
            nint reg = Isa.XmmCallOf(code, false), memory = Isa.XmmCallOf(code, true);
            switch (kind)
            {
                case XmmKind.Vop:
                    ((delegate*<ulong[], int, int, void>)reg)(cpu.Xmm, 1, 2);
                    ((delegate*<ulong[], int, byte*, void>)memory)(cpu.Xmm, 1, aligned);
                    break;
                case XmmKind.VopImm:
                    ((delegate*<ulong[], int, int, void>)reg)(cpu.Xmm, 1, 3);
                    break;
                case XmmKind.ArithPd or XmmKind.ArithPs:
                    ((delegate*<VirtualCpu, int, int, bool>)reg)(cpu, 1, 2);
                    ((delegate*<VirtualCpu, int, byte*, bool>)memory)(cpu, 1, aligned);
                    break;
                default:
                    ((delegate*<VirtualCpu, int, ulong, bool>)reg)(cpu, 1, 0x3FF0_0000_0000_0000UL);
                    break;
            }
            if (System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: true) != before) jitted.Add(code);
        }
        Assert.True(jitted.Count == 0, $"JIT-compiled at their first call: {string.Join(", ", jitted)}");
    }

    /// <summary>Isa has no static constructor of its own (its tables are built by the first reader, Isa.Built): a
    /// class with one gives every static method of it in the precompiled image a class-initialisation check at its
    /// entry, a call through an import cell at every handler call. The tables are still built before a handler is
    /// handed out.</summary>
    [Fact]
    public void IsaHandlersCarryNoClassInitialisationCheck()
    {
        Assert.True(typeof(Isa).Attributes.HasFlag(TypeAttributes.BeforeFieldInit),
            "Isa has a static constructor: its precompiled handlers check the class's initialisation at every call");
        var i = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(new byte[] { 0x66, 0x0F, 0xFE, 0xCA })).Decode(); // paddd xmm1, xmm2
        Assert.True(Isa.Implements(ref i));
        Assert.Equal(XmmKind.Vop, Isa.XmmKindOf(i.Code));
    }
}
