using ReVirt.Log;
using Xunit;

namespace ReVirt.Tests.Log;

/// <summary>
/// <see cref="Crc32Ieee"/> must be System.IO.Hashing's Crc32 bit for bit (the oracle): every log header and record
/// frame already written carries that library's checksum. Checked on every length up to 2,100 bytes from each of the
/// eight alignments (the 8-byte loop, its 0-7 byte tail), on long inputs, and on the standard check value of
/// "123456789". About 0.2 s.
/// </summary>
public class Crc32IeeeTests
{
    static byte[] Random(int seed, int length)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void EveryLengthAndAlignmentUpTo2100BytesChecksumsAsTheLibrary()
    {
        var data = Random(11, 2100 + 8);
        for (int start = 0; start < 8; start++)
            for (int len = 0; len <= 2100; len++)
            {
                var s = data.AsSpan(start, len);
                Assert.True(System.IO.Hashing.Crc32.HashToUInt32(s) == Crc32Ieee.Hash(s), $"start {start}, length {len}");
            }
    }

    [Theory]
    [InlineData(65536 + 5)]
    [InlineData((1 << 20) + 3)]
    public void LongInputsChecksumAsTheLibrary(int length)
    {
        var data = Random(length, length);
        Assert.Equal(System.IO.Hashing.Crc32.HashToUInt32(data), Crc32Ieee.Hash(data));
    }

    [Fact]
    public void TheCheckValueIsTheStandardOne()
    {
        Assert.Equal(0xCBF43926u, Crc32Ieee.Hash("123456789"u8));
        Assert.Equal(0u, Crc32Ieee.Hash([]));
        Assert.Equal(LogFormat.Checksum("a record"u8), System.IO.Hashing.Crc32.HashToUInt32("a record"u8));
    }
}
