using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// Recording a syscall allocates nothing that running it does not: the recording boundary logs a result's writes from
/// the result's own list, a read it logs by value straight from guest memory, and an output from the guest's bytes
/// (the log writer encodes each record at once into its scratch buffer). Oracle: the same guest run in this process
/// under <see cref="LiveBoundary"/> (`primary run`), the bytes this thread allocated
/// (GC.GetAllocatedBytesForCurrentThread) per extra syscall when the guest makes three times as many: the difference
/// of the two slopes is what recording adds per syscall. Guests (static busybox, interpreter tier, so that no
/// compilation's allocations differ between the runs): dd reading /dev/zero a byte at a time into /dev/null (each
/// read is a by-value read into guest memory, each write a file write), and find stat'ing every entry of a
/// directory (each stat result is a write into guest memory). Fails on a
/// recording that copies a result's writes into a new list (~90 bytes per syscall), or logs a by-value read through a
/// byte array and a write object (~150 bytes per read). A few seconds.
/// </summary>
public class RecordAllocationTests
{
    /// <summary>A sink that keeps nothing (the file sink's buffer is not what is measured).</summary>
    sealed class NullSink : ILogSink
    {
        public void Append(ReadOnlySpan<byte> encodedRecord) { }
        public void Flush() { }
        public void Dispose() { }
    }

    /// <summary>Bytes allocated per syscall above `run`'s that a recording may add (a slope's noise: the runtime's own
    /// rare allocations on this thread, spread over thousands of calls).</summary>
    const double AllowedBytesPerSyscall = 4;

    static MachineOptions Options(params string[] args)
        => new() { Program = "/bin/busybox", Args = args, Cwd = "/", Env = ["PATH=/bin:/usr/bin"], Tier = ExecutionTier.Interpreter, Diagnostics = TextWriter.Null };

    /// <summary>Bytes this thread allocated while the guest ran, and the syscalls it made.</summary>
    static (long Bytes, long Syscalls) Allocated(MachineOptions opts, bool record)
    {
        var program = Kernel.ResolveProgram(opts);
        LogWriter? writer = null;
        IBoundary boundary = new LiveBoundary();
        if (record)
        {
            var header = Recording.Header(opts, program.Image, checkpointInterval: 0);
            writer = new LogWriter(header, new NullSink());
            boundary = new RecordingBoundary(writer, header.CheckpointInterval);
        }
        using (writer)
        {
            using var m = new Machine(opts, boundary);
            m.Load(program);
            long before = GC.GetAllocatedBytesForCurrentThread();
            int status = m.Run();
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(0, status);
            return (bytes, m.Kernel.SyscallStats.Total);
        }
    }

    /// <summary>What recording adds per syscall: the slope (bytes per extra syscall between a small and a three times
    /// larger workload) of the recording less the slope of the run, the least of a few tries (a collection of the
    /// runtime's may land in one).</summary>
    static void RecordingAddsNothingPerSyscall(Func<int, MachineOptions> guest, int n)
    {
        double least = double.MaxValue;
        string report = "";
        for (int attempt = 0; attempt < 3 && least > AllowedBytesPerSyscall; attempt++)
        {
            double Slope(bool record)
            {
                var (small, smallCalls) = Allocated(guest(n), record);
                var (large, largeCalls) = Allocated(guest(3 * n), record);
                Assert.True(largeCalls > smallCalls + n, $"{largeCalls} syscalls for 3n, {smallCalls} for n");
                return (double)(large - small) / (largeCalls - smallCalls);
            }
            double run = Slope(false), rec = Slope(true);
            least = Math.Min(least, rec - run);
            report += $" run {run:F1} B/syscall, record {rec:F1};";
        }
        Assert.True(least <= AllowedBytesPerSyscall, $"recording allocates {least:F1} bytes per syscall more than a run:{report}");
    }

    [Fact]
    public void ReadsLoggedByValueAndFileWritesAllocateNothingPerSyscall()
        => RecordingAddsNothingPerSyscall(n => Options("dd", "if=/dev/zero", "of=/dev/null", "bs=1", $"count={n}", "status=none"), 1500);

    [Fact]
    public void ResultsWithWritesIntoGuestMemoryAllocateNothingPerSyscall()
    {
        // directories of a few files each, so that every directory listing is a record of the same size (a larger one
        // grows the writer's scratch buffer once: not a cost per syscall)
        string root = Path.Combine(Path.GetTempPath(), $"revirt-recalloc-{Guid.NewGuid():N}");
        try
        {
            for (int d = 0; d < 3 * Dirs; d++)
            {
                Directory.CreateDirectory(Path.Combine(root, $"d{d}"));
                for (int i = 0; i < FilesPerDir; i++) File.WriteAllBytes(Path.Combine(root, $"d{d}", $"f{i}"), []);
            }
            // find stats every entry of the directories it is given (each stat's buffer is a write into guest memory)
            // and prints none
            RecordingAddsNothingPerSyscall(n => Options(["find", .. Enumerable.Range(0, n).Select(d => Path.Combine(root, $"d{d}")), "-name", "none-of-them"]), Dirs);
        }
        finally { Directory.Delete(root, true); }
    }

    const int Dirs = 60, FilesPerDir = 5;
}
