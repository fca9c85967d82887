using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.Replay;

/// <summary>The checkpoint digest covers the x87 unit: a replay whose machine differs from the recording only in
/// x87 state is reported as diverged, and the same replay with the state intact matches.</summary>
public class X87StateReplayTests
{
    /// <summary>Each way a thread's state can differ only in its x87 unit.</summary>
    public static IEnumerable<object[]> X87Perturbations() => new[]
    {
        new object[] { "control word", (Action<CpuT>)(c => c.Fcw = 0x027F) },
        new object[] { "status word", (Action<CpuT>)(c => c.Fsw = 0x0020) },
        new object[] { "top of stack", (Action<CpuT>)(c => c.FpTop = 5) },
        new object[] { "tag word", (Action<CpuT>)(c => c.FpEmpty = 0x7F) },
        new object[] { "an empty register's contents", (Action<CpuT>)(c => c.Fpr[3] = Float80.FromDouble(1.5)) },
    };

    static string Record(string prog)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-x87-{Guid.NewGuid():N}.rvlog");
        var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--", prog, "0" });
        Assert.True(r.ExitCode == 0, r.Stderr);
        return log;
    }

    /// <summary>Replays the log in this process; `perturb` edits the main thread after loading, before the first instruction.</summary>
    static int Replay(string log, Action<CpuT>? perturb)
    {
        using var reader = LogReader.Open(log);
        var opts = Recording.OptionsFrom(reader.Header, null);
        opts.Diagnostics = TextWriter.Null;
        using var m = new Machine(opts, new ReplayBoundary(reader, false));
        m.Load();
        perturb?.Invoke(m.Kernel.MainThread.Cpu);
        return m.Run();
    }

    [Theory]
    [MemberData(nameof(X87Perturbations))]
    public void ReplayDivergingOnlyInX87StateIsReported(string what, Action<CpuT> perturb)
    {
        // exitcode never touches the x87 unit, so the perturbation survives to the final checkpoint unchanged
        string log = Record(GuestEnv.Guest("exitcode", "musl"));
        try
        {
            Assert.Equal(0, Replay(log, null));
            var e = Assert.Throws<ReplayDivergenceException>(() => Replay(log, perturb));
            Assert.True(e.Message.Contains("digest"), $"{what}: {e.Message}");
        }
        finally { File.Delete(log); }
    }

    [Fact]
    public void DigestSeesEveryX87FieldAndStateRoundTrips()
    {
        var baseState = new CpuState { Fcw = 0x037F, FpEmpty = 0xFF, Mxcsr = 0x1F80, Rflags = 0x202 };
        var seen = new HashSet<string> { Hash(baseState) };
        foreach (var p in X87Perturbations())
        {
            using var mem = new Memory.GuestMemory();
            var cpu = new CpuT(mem, new CodeCache(mem), null!) { State = baseState };
            Assert.Equal(Hash(baseState), Hash(cpu.State)); // State round-trips
            ((Action<CpuT>)p[1])(cpu);
            Assert.True(seen.Add(Hash(cpu.State)), $"the digest does not see the x87 {p[0]}");
        }
    }

    static string Hash(CpuState s)
    {
        var h = new System.IO.Hashing.XxHash128();
        var b = new byte[CpuState.CanonicalSize];
        s.WriteCanonical(b);
        h.Append(b);
        return Convert.ToHexString(h.GetCurrentHash());
    }
}
