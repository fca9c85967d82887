using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Log;

/// <summary>
/// <see cref="FileLogSink"/>, the file a recording (<see cref="LogWriter.Create"/>) writes with write(2): the file
/// holds exactly the bytes appended, in order, whatever their sizes against its buffer (the oracle: the same appends
/// to a <see cref="MemoryStream"/>), everything appended before a flush is in the file after it, an existing file is
/// replaced, and a recording written through it replays faithfully while a changed byte is caught.
/// </summary>
public class FileLogSinkTests
{
    static string TempPath() => Path.Combine(Path.GetTempPath(), $"revirt-filesink-{Guid.NewGuid():N}.rvlog");

    [Fact]
    public void TheFileHoldsExactlyTheAppendedBytesAndEachFlushPutsEverythingBeforeItThere()
    {
        string path = TempPath();
        try
        {
            File.WriteAllBytes(path, new byte[10_000]); // longer than what is written: the sink must replace it
            var rng = new Random(11);
            var expected = new MemoryStream();
            using (var sink = new FileLogSink(path, bufferSize: 64))
            {
                // sizes below, at, across and above the buffer's 64 bytes
                foreach (int size in new[] { 1, 63, 1, 64, 65, 200, 0, 7, 64, 3, 1000, 5 })
                {
                    var chunk = new byte[size];
                    rng.NextBytes(chunk);
                    sink.Append(chunk);
                    expected.Write(chunk);
                    if (rng.Next(3) == 0)
                    {
                        sink.Flush();
                        Assert.Equal(expected.ToArray(), ReadShared(path));
                    }
                }
            }
            Assert.Equal(expected.ToArray(), File.ReadAllBytes(path));
        }
        finally { File.Delete(path); }
    }

    /// <summary>The recorder's log file is read while it is written (a reader may follow it): open it for reading
    /// without asking for exclusive access.</summary>
    static byte[] ReadShared(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var ms = new MemoryStream();
        f.CopyTo(ms);
        return ms.ToArray();
    }

    [Fact]
    public void ALogThatCannotBeCreatedIsAnIOExceptionNamingThePath()
    {
        string path = Path.Combine(Path.GetTempPath(), $"revirt-no-such-dir-{Guid.NewGuid():N}", "x.rvlog");
        var e = Assert.Throws<IOException>(() => new FileLogSink(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void ARecordingWrittenThroughTheFileReplaysFaithfullyAndAChangedByteIsCaught()
    {
        string log = TempPath();
        try
        {
            var opts = new MachineOptions { Program = GuestEnv.Guest("nondet_time", "musl"), Cwd = Environment.CurrentDirectory, Diagnostics = TextWriter.Null };
            var program = Kernel.ResolveProgram(opts);
            var header = Recording.Header(opts, program.Image, checkpointInterval: 10_000);
            int status;
            using (var writer = LogWriter.Create(log, header))
            {
                var boundary = new RecordingBoundary(writer, header.CheckpointInterval);
                using var m = new Machine(opts, boundary);
                m.Load(program);
                status = m.Run();
            }
            Assert.Equal(0, status);
            using (var reader = LogReader.Open(log))
            {
                var verdict = ReplayCheck.Run(reader);
                Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
            }
            var bytes = File.ReadAllBytes(log);
            bytes[^40] ^= 1; // inside the last records (the final checkpoint, the exit, the End record)
            File.WriteAllBytes(log, bytes);
            using (var reader = LogReader.Open(log))
                Assert.NotEqual(ReplayVerdictKind.Faithful, ReplayCheck.Run(reader).Kind);
        }
        finally { File.Delete(log); }
    }
}
