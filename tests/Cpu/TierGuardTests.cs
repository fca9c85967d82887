using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// A host that cannot generate code at run time (revirt-run, compiled ahead of time) has no compiled tier: the machine
/// it builds interprets whatever tier was asked for and says so, and the guest's results are those of a host with the
/// compiled tier. The capability is handed to the machine (<see cref="Machine(MachineOptions, IBoundary?, bool)"/>), so
/// this JIT-hosted test builds the machine revirt-run builds. The oracle: the same program in a host that compiles
/// (its blocks do run compiled there), same exit status.
/// </summary>
public class TierGuardTests
{
    static (Machine M, int Status) Run(ExecutionTier tier, bool dynamicCode)
    {
        var opts = new MachineOptions { Program = GuestEnv.Guest("counter", "musl"), Args = ["3", "1"], Cwd = Environment.CurrentDirectory, Diagnostics = TextWriter.Null, Tier = tier };
        var m = new Machine(opts, new LiveBoundary(), dynamicCode);
        m.Load();
        int status = m.Run();
        Assert.Equal(tier, opts.Tier); // the caller's options are not changed
        return (m, status);
    }

    [Theory]
    [InlineData(ExecutionTier.Compiled)]
    [InlineData(ExecutionTier.Default)]
    public void WithoutDynamicCodeEveryBlockIsInterpretedAndTheRunSaysSo(ExecutionTier tier)
    {
        var (aot, aotStatus) = Run(tier, dynamicCode: false);
        using (aot)
        {
            var code = aot.Kernel.Init.Code;
            Assert.Equal(ExecutionTier.Interpreter, aot.Options.Tier);
            Assert.Equal(ExecutionTier.Interpreter, code.Tier);
            Assert.Equal(0, code.CompileThreshold);
            Assert.Equal(0, code.BlocksCompiled);
            Assert.Equal((long)aot.InstructionCount, code.InterpretedInstructions);
            Assert.NotNull(aot.TierNote);
            Assert.Contains($"tier {tier} asked for", aot.TierNote);
            Assert.Contains("every block is interpreted", aot.TierNote);

            var (jit, jitStatus) = Run(ExecutionTier.Compiled, dynamicCode: true);
            using (jit)
            {
                Assert.Null(jit.TierNote);
                Assert.Equal(ExecutionTier.Compiled, jit.Kernel.Init.Code.Tier);
                Assert.True(jit.Kernel.Init.Code.BlocksCompiled > 0, "the oracle run compiled nothing");
                Assert.Equal(0, jitStatus);
                Assert.Equal(jitStatus, aotStatus);
                // (a live run's instruction count depends on the clock the guest reads, so counts are not compared)
                Assert.True(jit.Kernel.Init.Code.InterpretedInstructions < (long)jit.InstructionCount, "the oracle run interpreted everything");
            }
        }
    }

    [Fact]
    public void TheInterpreterAskedForNeedsNoNote()
    {
        Assert.Null(ExecutionTiers.FallbackNote(ExecutionTier.Interpreter, dynamicCode: false));
        Assert.Equal(ExecutionTier.Interpreter, ExecutionTiers.Effective(ExecutionTier.Interpreter, dynamicCode: false));
        foreach (var t in new[] { ExecutionTier.Default, ExecutionTier.Interpreter, ExecutionTier.Compiled })
        {
            Assert.Equal(t, ExecutionTiers.Effective(t, dynamicCode: true));
            Assert.Null(ExecutionTiers.FallbackNote(t, dynamicCode: true));
        }
    }
}
