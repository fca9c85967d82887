using System.Security.Cryptography;
using ReVirt.Log;
using Xunit;

namespace ReVirt.Tests.Log;

/// <summary>
/// The hashes a log names itself and its program by, per format version (<see cref="LogDigest"/>), against independent
/// oracles: a v6 log's End record carries the XXH3-128 of every byte before it (System.IO.Hashing's XxHash128) and its
/// header the program's XXH3-128 and 16 zero bytes; a v5 log written by this build carries SHA-256 in both places
/// (.NET's SHA256) and reads back complete; a v6 log whose End carries the SHA-256 of the right bytes (the other
/// version's kind), or whose digest is off by one bit, is refused; the program check names the version's hash. Fails
/// on a build that writes one kind for every version. In memory, under 0.1 s.
/// </summary>
public class LogDigestTests
{
    static readonly byte[] Program = Enumerable.Range(0, 70_000).Select(i => (byte)(i * 31 + (i >> 8))).ToArray();

    static LogHeader Header(ushort version) => new()
    {
        Version = version,
        ProgramHash = LogHeader.ComputeProgramHash(Program, version),
        CpuModel = "test", RootDirectory = "/", Argv = ["/prog"], Envp = [],
        StartTime = new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero),
    };

    /// <summary>A complete log of <paramref name="version"/>: a few records of several sizes, Exit and End.</summary>
    static byte[] Write(ushort version)
    {
        var ms = new MemoryStream();
        using (var w = new LogWriter(Header(version), new StreamLogSink(ms, leaveOpen: true)))
        {
            for (int i = 0; i < 300; i++)
                w.Append(new SyscallResult { InstrCount = (ulong)i * 1000, Tid = 1, Nr = 0, Result = i, Data = new byte[i * 37 % 1500] });
            w.Append(new Exit { InstrCount = 400_000, Status = 0 });
            w.Finish();
        }
        return ms.ToArray();
    }

    static (byte[] Before, End End) SplitEnd(byte[] log)
    {
        var img = LogImage.Parse(log);
        var endFrame = img.Frames[^1];
        return (log.AsSpan(0, log.Length - endFrame.Length).ToArray(), End.Decode(LogImage.Payload(endFrame)));
    }

    static bool ReadsComplete(byte[] log)
    {
        using var r = new LogReader(new MemoryStream(log));
        r.Verify();
        return r.Complete;
    }

    [Fact]
    public void AVersion6LogIsNamedByXxh128()
    {
        var log = Write(LogFormat.CurrentVersion);
        var (before, end) = SplitEnd(log);
        Assert.Equal(System.IO.Hashing.XxHash128.Hash(before), end.Digest);
        var program = LogHeader.Decode(log, out _).ProgramHash;
        Assert.Equal(System.IO.Hashing.XxHash128.Hash(Program), program[..16]);
        Assert.Equal(new byte[16], program[16..]);
        Assert.True(ReadsComplete(log));
    }

    [Fact]
    public void AVersion5LogWrittenByThisBuildIsNamedBySha256AndReadsComplete()
    {
        var log = Write(5);
        var (before, end) = SplitEnd(log);
        Assert.Equal(SHA256.HashData(before), end.Digest);
        Assert.Equal(SHA256.HashData(Program), LogHeader.Decode(log, out _).ProgramHash);
        Assert.True(ReadsComplete(log));
    }

    [Fact]
    public void AnEndDigestOfTheOtherKindOrOneBitOffIsRefused()
    {
        var log = Write(LogFormat.CurrentVersion);
        var (before, end) = SplitEnd(log);
        var img = LogImage.Parse(log);
        foreach (var digest in new[] { SHA256.HashData(before), Flip(end.Digest, 7) })
        {
            var forged = new LogImage { Header = img.Header };
            forged.Frames.AddRange(img.Frames.Take(img.Frames.Count - 1));
            forged.Frames.Add(LogImage.Frame(new End { RecordCount = end.RecordCount, Digest = digest }));
            var e = Assert.Throws<LogFormatException>(() => ReadsComplete(forged.Build(reseal: true, freshEnd: false)));
            Assert.Contains("End record", e.Message);
        }
    }

    [Fact]
    public void TheProgramCheckUsesAndNamesTheVersionsHash()
    {
        var dir = Directory.CreateTempSubdirectory("revirt-logdigest-test");
        try
        {
            var prog = Path.Combine(dir.FullName, "prog");
            File.WriteAllBytes(prog, Program);
            foreach (ushort version in new ushort[] { 5, LogFormat.CurrentVersion })
            {
                var h = Header(version);
                Assert.True(h.ProgramMatches(prog), $"v{version}");
                var other = Header(version);
                other.ProgramHash = LogHeader.ComputeProgramHash(Program, version == 5 ? LogFormat.CurrentVersion : (ushort)5);
                var ex = Assert.Throws<ProgramMismatchException>(() => other.VerifyProgram(prog));
                Assert.Contains(version == 5 ? "sha256" : "xxh128", ex.Message);
            }
        }
        finally { dir.Delete(recursive: true); }
    }

    static byte[] Flip(byte[] b, int bit)
    {
        var c = (byte[])b.Clone();
        c[bit / 8] ^= (byte)(1 << (bit % 8));
        return c;
    }
}
