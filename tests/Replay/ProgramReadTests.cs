using System.Security.Cryptography;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// A recording's (and a replay's) program is read once, chunk by chunk, and its program hash is taken from the chunks
/// as they are read (<see cref="Recording.ReadProgram"/>), never from a second pass over the image. Oracles: the file's
/// bytes as the host reads them (File.ReadAllBytes) and System.IO.Hashing's XxHash128 of them (.NET's SHA-256 for a
/// v5 log), for sizes around the 64 KiB chunk and a 2 MB program, with the chunks moved into the image by the kernel
/// and by a plain copy; a header made from the read names the program a replay accepts, and a one-byte change of the
/// file is refused. Fails on a read that hashes a chunk other than the one it keeps, skips or repeats one, or moves a
/// chunk to the wrong place. The same pass keeps each whole page's hash for the checkpoint digest, which takes it for an
/// image page the guest has not used yet instead of reading the image: the digest of memory holding such pages (placed
/// at page-aligned and unaligned offsets) equals the digest with every page hashed from its bytes (fails on a kept
/// hash of another page). In a temporary directory, well under a second.
/// </summary>
public class ProgramReadTests
{
    static readonly int[] Sizes = [1, 240, 4096, 65_535, 65_536, 65_537, 3 * 65_536 + 17, 2_000_003];

    static (string Root, byte[] Bytes) Program(int size, int seed)
    {
        string root = Path.Combine(Path.GetTempPath(), $"revirt-programread-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        File.WriteAllBytes(Path.Combine(root, "prog"), bytes);
        return (root, bytes);
    }

    static MachineOptions Options(string root) => new() { Root = root, Program = "/prog", Args = [], Cwd = "/", Env = [], Diagnostics = TextWriter.Null };

    static byte[] Xxh128ProgramHash(byte[] bytes) => [.. System.IO.Hashing.XxHash128.Hash(bytes), .. new byte[16]];

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void TheHashIsOfExactlyTheBytesRead(bool kernelCopy, bool native)
    {
        bool was = ProgramFile.KernelCopy;
        ProgramFile.KernelCopy = kernelCopy;
        try
        {
            foreach (int size in Sizes)
            {
                var (root, bytes) = Program(size, size);
                try
                {
                    var read = Recording.ReadProgram(Options(root), native: native);
                    // a large program read for a recording is in a native image (huge pages) the caller disposes
                    using var image = NativeImage.Of(read.Program.Image);
                    Assert.Equal(native && size >= ProgramFile.NativeFrom, image != null);
                    var onDisk = File.ReadAllBytes(Path.Combine(root, "prog"));
                    Assert.True(onDisk.AsSpan().SequenceEqual(read.Program.Image.Span), $"{size} bytes: the image differs from the file");
                    Assert.Equal(Xxh128ProgramHash(onDisk), read.Hash);
                    Assert.Equal(LogFormat.CurrentVersion, read.Version);
                    Assert.Equal("/prog", read.Program.GuestPath);
                }
                finally { Directory.Delete(root, true); }
            }
        }
        finally { ProgramFile.KernelCopy = was; }
    }

    [Fact]
    public void AnOlderLogsProgramHashIsSha256OfTheBytesRead()
    {
        var (root, bytes) = Program(200_000, 7);
        try
        {
            var read = Recording.ReadProgram(Options(root), 5);
            Assert.Equal(SHA256.HashData(bytes), read.Hash);
            Assert.True(bytes.AsSpan().SequenceEqual(read.Program.Image.Span));
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void AReplayAcceptsTheRecordedProgramAndRefusesOneChangedByOneByte()
    {
        var (root, bytes) = Program(300_000, 11);
        try
        {
            var opts = Options(root);
            var header = Recording.Header(opts, Recording.ReadProgram(opts), Recording.DefaultCheckpointInterval);
            Assert.Equal(Xxh128ProgramHash(bytes), header.ProgramHash);
            var same = Recording.RecordedProgram(header, Options(root), out string none);
            Assert.NotNull(same);
            Assert.Equal("", none);
            Assert.True(bytes.AsSpan().SequenceEqual(same!.Image.Span));

            bytes[200_001] ^= 1; // in the fourth chunk
            File.WriteAllBytes(Path.Combine(root, "prog"), bytes);
            Assert.Null(Recording.RecordedProgram(header, Options(root), out string why));
            Assert.Contains("/prog", why);
            Assert.Contains("is not the program that was recorded", why);
        }
        finally { Directory.Delete(root, true); }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheDigestOfUnusedImagePagesTakenFromTheReadIsTheDigestOfTheirBytes(bool native)
    {
        var (root, _) = Program(300_000, 3); // 73 whole pages and a partial one
        try
        {
            var image = Recording.ReadProgram(Options(root), native: native).Program.Image;
            using var owner = NativeImage.Of(image);
            Assert.Equal(native, owner != null);
            using var mem = new GuestMemory();
            mem.Map(0x400000, 0x50000, Prot.Read | Prot.Exec, "/prog");
            mem.PlaceImage(0x400000, image, 0, image.Length); // page-aligned: whole pages take the kept hashes
            mem.Map(0x500000, 0x50000, Prot.Read, "/prog");
            mem.PlaceImage(0x500000, image, 0x10, 200_000); // at an offset inside a page: hashed from the image
            var threads = Array.Empty<ReVirt.Cpu.CpuState>();
            var kept = StateDigest.Compute([(threads, mem)], null);
            var fromBytes = StateDigest.ComputeFromBytes([(threads, mem)], null); // fills every page, hashes its bytes
            Assert.Equal(Convert.ToHexString(fromBytes), Convert.ToHexString(kept));
        }
        finally { Directory.Delete(root, true); }
    }
}
