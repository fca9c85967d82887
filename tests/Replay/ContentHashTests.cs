using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// The hash a FileContent record carries of the bytes it stands for is the log format version's
/// (<see cref="ContentHash.ForLogVersion"/>: SHA-256 before v5, XxHash128 since). A recording of a dynamically linked
/// md5sum of its own file (libraries mapped by reference, the interpreter read by the loader, 52 KB read by
/// reference with read(2)) is made in this process as a v5 log and as a v4 log: every record's hash must be the
/// version's kind of hash of the file's own bytes at its range (the oracle: the files), and each log must replay
/// faithfully (a v4 log, as the previous build wrote it, still replays). Planted variants must be refused with
/// the reason: the right bytes hashed with the other version's kind (fails when the replay accepts any kind the
/// record's length names), one hash byte changed (refused naming the file), a hash of no kind's length.
/// </summary>
public class ContentHashTests
{
    const string Program = "/usr/bin/md5sum", Read = "/usr/bin/md5sum";

    /// <summary>Records md5sum of <see cref="Read"/> in this process as a log of format <paramref name="version"/>.</summary>
    static void Record(string log, ushort version)
    {
        var opts = new MachineOptions { Program = Program, Args = [Read], Cwd = "/", Diagnostics = TextWriter.Null };
        var program = Kernel.ResolveProgram(opts);
        var header = Recording.Header(opts, program.Image, 0, version);
        int status;
        using (var writer = LogWriter.Create(log, header))
        {
            using var m = new Machine(opts, new RecordingBoundary(writer, header.CheckpointInterval));
            m.Load(program);
            status = m.Run();
        }
        Assert.Equal(0, status);
    }

    static List<FileContent> ContentRecords(byte[] log)
    {
        var list = new List<FileContent>();
        using var reader = new LogReader(new MemoryStream(log));
        while (reader.TryRead(out var r))
            if (r.Kind == RecordKind.FileContent) list.Add(r.Decode<FileContent>());
        return list;
    }

    static ReplayVerdict Replay(byte[] log)
    {
        using var reader = new LogReader(new MemoryStream(log));
        return ReplayCheck.Run(reader);
    }

    /// <summary>The log with every FileContent record's hash replaced by <paramref name="hash"/>(record, its bytes).</summary>
    static byte[] WithHashes(byte[] log, Func<FileContent, byte[], byte[]> hash)
    {
        var img = LogImage.Parse(log);
        for (int i = 0; i < img.Frames.Count; i++)
        {
            if (LogImage.KindOf(img.Frames[i]) != RecordKind.FileContent) continue;
            var c = FileContent.Decode(LogImage.Payload(img.Frames[i]));
            c.Hash = hash(c, FileBytes(c));
            img.Frames[i] = LogImage.Frame(c);
        }
        return img.Build();
    }

    static byte[] FileBytes(FileContent c)
    {
        using var f = File.OpenRead(c.Path);
        var bytes = new byte[c.Result];
        f.Position = c.Offset;
        f.ReadExactly(bytes);
        return bytes;
    }

    static byte[] HashOf(ContentHashKind kind, byte[] bytes)
    {
        var h = new byte[ContentHash.Length(kind)];
        ContentHash.Compute(kind, bytes, h);
        return h;
    }

    [Theory]
    [InlineData(6, ContentHashKind.XxHash128)] // (v7 on: consecutive reads are FileContentRun records, ContentRunTests)
    [InlineData(5, ContentHashKind.XxHash128)] // (v5: the End digest and program hash still SHA-256)
    [InlineData(4, ContentHashKind.Sha256)]
    public void ALogCarriesItsVersionsContentHashOfTheFilesBytesAndReplaysFaithfully(ushort version, ContentHashKind kind)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-contenthash-{Guid.NewGuid():N}.rvlog");
        try
        {
            Record(log, version);
            var bytes = File.ReadAllBytes(log);
            var records = ContentRecords(bytes);
            Assert.Contains(records, c => c.Path == Read && c.Nr == Nr.read);
            Assert.Contains(records, c => c.Path != Read); // the interpreter and the libraries
            foreach (var c in records)
            {
                Assert.Equal(kind, c.HashKind);
                Assert.Equal(HashOf(kind, FileBytes(c)), c.Hash);
            }
            var verdict = Replay(bytes);
            Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
        }
        finally { File.Delete(log); }
    }

    [Theory]
    [InlineData(6)]
    [InlineData(4)]
    public void PlantedContentHashesAreRefusedWithTheReason(ushort version)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-contenthash-{Guid.NewGuid():N}.rvlog");
        try
        {
            Record(log, version);
            var bytes = File.ReadAllBytes(log);
            var own = ContentHash.ForLogVersion(version);
            var other = own == ContentHashKind.Sha256 ? ContentHashKind.XxHash128 : ContentHashKind.Sha256;

            // the right bytes, hashed as the other version would: refused as a log that is not its version's
            var verdict = Replay(WithHashes(bytes, (_, b) => HashOf(other, b)));
            Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
            Assert.Contains($"{ContentHash.Name(other)} hash in a log of format version {version}", verdict.Message);

            // one byte of the hash of bytes read from the file with read(2) changed: refused naming the file
            bool planted = false;
            verdict = Replay(WithHashes(bytes, (c, b) =>
            {
                var h = HashOf(own, b);
                if (!planted && c.Path == Read && c.Nr == Nr.read) { h[3] ^= 0x10; planted = true; }
                return h;
            }));
            Assert.True(planted);
            Assert.Equal(ReplayVerdictKind.Refused, verdict.Kind);
            Assert.Contains($"{Read} under this replica's root", verdict.Message);
            Assert.Contains("is not the file the recording read", verdict.Message);

            // the hashes as recorded, resealed the same way: faithful (the plants, not the rewriting, were refused)
            verdict = Replay(WithHashes(bytes, (_, b) => HashOf(own, b)));
            Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
        }
        finally { File.Delete(log); }
    }

    /// <summary>A FileContent hash of a length no kind has (here 20 bytes) is refused when the record is decoded.</summary>
    [Fact]
    public void AContentHashOfNoKindsLengthIsRefused()
    {
        var c = new FileContent { InstrCount = 1, Tid = 1, Nr = Nr.read, Result = 4096, Addr = 0x10000, Path = Read, Offset = 0, Hash = new byte[20] };
        var payload = new byte[c.EncodedLength];
        c.Encode(payload);
        var e = Assert.Throws<LogFormatException>(() => FileContent.Decode(payload));
        Assert.Contains("20-byte hash", e.Message);
    }
}
