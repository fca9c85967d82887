using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// The host-work account (`--stats`, bench/record_cost.py --work) splits a process's CPU time into the guest's
/// execution and the rest, and the bench's modelled ratios rest on two of its properties, checked here: the time
/// of syscalls goes to the kernel's share, not to the execution's (the oracle is the host kernel's own copying: a
/// guest that reads 8x more bytes through read(2) costs the kernel share the difference, the execution share next
/// to nothing), and run, record and replay of one guest count the same execution (the oracle is the replay of the
/// recording: same instructions, syscalls and blocks compiled).
/// </summary>
public class HostWorkAccountTests
{
    static MachineOptions Dd(string input) => new()
    {
        Root = "/", Program = "/bin/busybox", Args = ["dd", $"if={input}", "of=/dev/null", "bs=1M", "status=none"],
        Cwd = "/", Diagnostics = TextWriter.Null,
    };

    static string Input(int mb)
    {
        string path = Path.Combine(Path.GetTempPath(), $"revirt-account-{Guid.NewGuid():N}.bin");
        var block = new byte[1 << 20];
        new Random(mb).NextBytes(block);
        using (var f = File.Create(path))
            for (int i = 0; i < mb; i++) f.Write(block);
        return path;
    }

    static HostWorkAccount Run(MachineOptions opts, IBoundary? boundary = null, StartProgram? program = null)
    {
        using var m = new Machine(opts, boundary);
        m.Load(program);
        var account = new HostWorkAccount();
        m.Kernel.WorkAccount = account;
        Assert.Equal(0, m.Run());
        return account;
    }

    [Fact]
    public void SyscallTimeIsTheKernelsShareNotTheExecutions()
    {
        string small = Input(16), large = Input(128);
        try
        {
            Run(Dd(small)); // the first run pays the host's JIT warm-up; the two measured ones differ in bytes read only
            var a = Run(Dd(small));
            var b = Run(Dd(large));
            double kernel = (b.KernelNs - a.KernelNs) / 1e6, execution = (b.ExecutionNs - a.ExecutionNs) / 1e6;
            string what = $"16 MB: execution {a.ExecutionNs / 1e6:F1} ms, kernel {a.KernelNs / 1e6:F1} ms; 128 MB: execution {b.ExecutionNs / 1e6:F1} ms, kernel {b.KernelNs / 1e6:F1} ms";
            // 112 MB more copied by the host's read(2) (several ms of CPU at any speed) against a few thousand more guest instructions
            Assert.True(kernel > 4 * Math.Max(execution, 0.5), what);
            Assert.True(b.Syscalls > a.Syscalls && a.Syscalls > 16, what + $"; syscalls {a.Syscalls}, {b.Syscalls}");
            Assert.Equal(b.ExecutionNs + b.KernelNs, b.RunThreadNs);
            Assert.True(b.ProcessAtEndNs - b.ProcessAtStartNs >= b.RunThreadNs, what);
        }
        finally { File.Delete(small); File.Delete(large); }
    }

    [Fact]
    public void RunRecordAndReplayCountTheSameExecution()
    {
        string input = Input(4);
        string log = Path.Combine(Path.GetTempPath(), $"revirt-account-{Guid.NewGuid():N}.rvlog");
        try
        {
            var run = Run(Dd(input));
            var opts = Dd(input);
            var program = Kernel.ResolveProgram(opts);
            var header = Recording.Header(opts, program.Image, 10_000);
            HostWorkAccount record;
            using (var writer = LogWriter.Create(log, header))
            {
                record = Run(opts, new RecordingBoundary(writer, header.CheckpointInterval), program);
                writer.Flush();
            }
            var replay = new HostWorkAccount();
            ulong instructions;
            using (var reader = LogReader.Open(log))
            {
                var verdict = ReplayCheck.Run(reader, started: (m, _) => m.Kernel.WorkAccount = replay);
                Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
                instructions = verdict.Instructions;
            }
            Assert.True(run.Syscalls > 4, $"{run.Syscalls} syscalls");
            Assert.Equal(run.Syscalls, record.Syscalls);
            Assert.Equal(record.Syscalls, replay.Syscalls);
            // a checkpoint every 10,000 instructions: the recording and its replay stop there, the run does not
            Assert.True(record.LoopEntries > run.LoopEntries, $"loop entries: run {run.LoopEntries}, record {record.LoopEntries}");
            Assert.True(instructions > 0);
            foreach (var a in new[] { run, record, replay })
                Assert.True(a.ExecutionNs > 0 && a.KernelNs > 0 && a.ProcessAtEndNs > a.ProcessAtStartNs, $"{a.ExecutionNs} {a.KernelNs}");
        }
        finally { File.Delete(input); File.Delete(log); }
    }
}
