using ReVirt.Log;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// read(2) of a regular file fills guest memory in place (no host buffer): guests/src/readpath.c reads across pages,
/// short at the end of a file, past it, into bad buffers (EFAULT), a read-only mapping, fresh pages, a copy-on-write
/// page after fork, and over code it runs, and prints sums of what it read. The oracle is the same binary run
/// natively; the VM must print the same in every tier, and a recording (stable reads by reference, fresh-file
/// reads by value) must replay to the same output in another tier.
/// </summary>
public class ReadPathTests
{
    /// <summary>Older than any run, larger than one call's page list (busybox-static is a test dependency).</summary>
    const string StableFile = "/bin/busybox";

    public static IEnumerable<object[]> Tiers()
    {
        foreach (var libc in new[] { "glibc", "musl" })
            foreach (var tier in new[] { "Interpreter", "Compiled", "Default" })
                yield return new object[] { libc, tier };
    }

    [Theory]
    [MemberData(nameof(Tiers))]
    public void ReadsMatchTheNativeRun(string libc, string tier)
    {
        string prog = GuestEnv.Guest("readpath", libc);
        string d1 = Directory.CreateTempSubdirectory("revirt-read-native").FullName;
        string d2 = Directory.CreateTempSubdirectory("revirt-read-vm").FullName;
        try
        {
            var native = GuestEnv.Native(prog, [StableFile, d1]);
            Assert.True(native.ExitCode == 0, native.StdoutText);
            var vm = GuestEnv.Vm(prog, [StableFile, d2], extra: ["--tier", tier]);
            Assert.True(native.StdoutText == vm.StdoutText, $"stdout differs\n--- native\n{native.StdoutText}\n--- vm\n{vm.StdoutText}\n--- vm stderr\n{vm.Stderr}");
            Assert.Equal(0, vm.ExitCode);
        }
        finally { Directory.Delete(d1, true); Directory.Delete(d2, true); }
    }

    [Theory]
    [InlineData("musl", "Default", "Interpreter")]
    [InlineData("glibc", "Interpreter", "Compiled")]
    public void RecordedReadsReplayInAnotherTier(string libc, string recordTier, string replayTier)
    {
        string prog = GuestEnv.Guest("readpath", libc);
        string d1 = Directory.CreateTempSubdirectory("revirt-read-native").FullName;
        string d2 = Directory.CreateTempSubdirectory("revirt-read-rec").FullName;
        string log = Path.Combine(Path.GetTempPath(), $"revirt-read-{Guid.NewGuid():N}.rvlog");
        try
        {
            var native = GuestEnv.Native(prog, [StableFile, d1]);
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--tier", recordTier, "--", prog, StableFile, d2]);
            Assert.True(rec.ExitCode == 0, rec.StdoutText + rec.Stderr);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            // the stable file's reads by reference, the fresh file's by value (its bytes in the log)
            int byReference = 0, byValue = 0;
            using (var reader = LogReader.Open(log))
                while (reader.TryRead(out var r))
                {
                    if (r.Kind == RecordKind.FileContent && r.Decode<FileContent>().Path == StableFile) byReference++;
                    if (r.Kind == RecordKind.SyscallResult && r.Decode<SyscallResult>() is { Nr: ReVirt.Linux.Nr.read, Result: >= 5000 } s
                        && s.MemWrites is [var w] && w.Bytes.Length == s.Result) byValue++;
                }
            Assert.True(byReference >= 7, $"{byReference} reads of {StableFile} logged by reference");
            Assert.True(byValue >= 3, $"{byValue} reads of the fresh file logged by value");
            var rp = GuestEnv.Dotnet(GuestEnv.BackupDll, ["replay", "--log", log, "--show-output", "--tier", replayTier]);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(native.StdoutText, rp.StdoutText);
        }
        finally
        {
            Directory.Delete(d1, true);
            Directory.Delete(d2, true);
            File.Delete(log);
        }
    }
}
