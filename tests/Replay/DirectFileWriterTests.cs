using ReVirt.Snapshot;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// The standby's snapshot copy is written past the page cache (<see cref="DirectFileWriter"/>): whatever the pieces'
/// sizes, the file holds exactly the bytes written (the oracle: the bytes themselves, read back), on the temporary
/// directory's file system and on tmpfs (both take O_DIRECT on this host's kernel; a file system that refuses it gets
/// the buffered fallback, which this host cannot show).
/// </summary>
public class DirectFileWriterTests
{
    /// <summary>Fails when the padded last block is left in the file (the ftruncate left out: the file is longer than
    /// the bytes written) or a block is written before it is full.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheFileHoldsExactlyTheBytesWrittenInPiecesOfAnySize(bool onTmpfs)
    {
        string dir = onTmpfs ? "/dev/shm" : Path.GetTempPath();
        if (onTmpfs && !Directory.Exists(dir)) return;
        string path = Path.Combine(dir, $"revirt-direct-{Guid.NewGuid():N}");
        try
        {
            var rng = new Random(12);
            var data = new byte[(3 << 20) + 12345]; // three blocks and a partial one
            rng.NextBytes(data);
            using (var w = new DirectFileWriter(path))
            {
                for (int at = 0; at < data.Length;)
                {
                    int n = Math.Min(data.Length - at, rng.Next(0, 3) == 0 ? rng.Next(1, 100) : rng.Next(1, 700_000));
                    w.Write(data.AsSpan(at, n));
                    at += n;
                }
            }
            Assert.Equal(data, File.ReadAllBytes(path));
        }
        finally { File.Delete(path); }
    }
}
