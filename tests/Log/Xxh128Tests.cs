using ReVirt.Log;
using Xunit;

namespace ReVirt.Tests.Log;

/// <summary>
/// <see cref="Xxh128"/> must be System.IO.Hashing's XxHash128 bit for bit (the oracle): every checkpoint digest, page
/// hash and v5 content hash of every log already written is defined by that library's output. Checked one-shot for
/// every length up to 2,100 bytes (each short-input path, the 129-240 path, one and two 1 KiB blocks and the block
/// boundaries) and for long inputs, and incrementally over random splits (appends of 0 to 700 bytes, inputs that end
/// inside or just after the 256-byte buffer, a hash taken midway and the stream continued), on both the SSE2 and the
/// scalar loop. About 0.3 s.
/// </summary>
public class Xxh128Tests
{
    static byte[] Oracle(ReadOnlySpan<byte> data) => System.IO.Hashing.XxHash128.Hash(data);

    static byte[] Ours(ReadOnlySpan<byte> data, bool vectorised)
    {
        var h = new byte[Xxh128.HashLength];
        Xxh128.WriteCanonical(Xxh128.Compute(data, vectorised), h);
        return h;
    }

    static byte[] Random(int seed, int length)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void EveryLengthUpTo2100BytesHashesAsTheLibrary()
    {
        var data = Random(1, 2100);
        for (int len = 0; len <= data.Length; len++)
        {
            var want = Oracle(data.AsSpan(0, len));
            Assert.True(want.AsSpan().SequenceEqual(Xxh128.Hash(data.AsSpan(0, len))), $"length {len}");
            Assert.True(want.AsSpan().SequenceEqual(Ours(data.AsSpan(0, len), vectorised: false)), $"length {len}, scalar");
        }
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(3 * 1024)]
    [InlineData(65536 + 13)]
    [InlineData((1 << 20) + 7)]
    public void LongInputsHashAsTheLibrary(int length)
    {
        var data = Random(length, length);
        var want = Oracle(data);
        Assert.Equal(want, Xxh128.Hash(data));
        Assert.Equal(want, Ours(data, vectorised: true));
        Assert.Equal(want, Ours(data, vectorised: false));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AppendedPiecesHashAsTheWholeInOneCall(bool vectorised)
    {
        var rng = new Random(7);
        var h = new Xxh128(vectorised);
        for (int round = 0; round < 300; round++)
        {
            // lengths around the 240-byte short limit, the 256-byte buffer, the 1 KiB block, and longer
            int length = round < 100 ? rng.Next(200, 300) : round < 200 ? rng.Next(0, 3000) : rng.Next(1000, 20000);
            var data = Random(round, length);
            int at = 0, midway = rng.Next(0, length + 1);
            byte[]? atMidway = null;
            while (at < length)
            {
                int n = Math.Min(length - at, rng.Next(0, 8) == 0 ? rng.Next(256, 700) : rng.Next(0, 80));
                if (at <= midway && midway < at + n)
                {
                    h.Append(data.AsSpan(at, midway - at));
                    atMidway = h.GetCurrentHash();
                    h.Append(data.AsSpan(midway, at + n - midway));
                }
                else h.Append(data.AsSpan(at, n));
                at += n;
            }
            if (atMidway != null) Assert.True(Oracle(data.AsSpan(0, midway)).AsSpan().SequenceEqual(atMidway), $"round {round}: midway at {midway} of {length}");
            var whole = new byte[Xxh128.HashLength];
            h.GetHashAndReset(whole);
            Assert.True(Oracle(data).AsSpan().SequenceEqual(whole), $"round {round}: {length} bytes");
        }
    }

    [Fact]
    public void OneLargeAppendAfterASmallOneHashesAsTheWhole()
    {
        // the stripe before the buffered rest comes from the input itself, not the buffer
        foreach (int first in new[] { 0, 1, 63, 64, 200 })
            foreach (int second in new[] { 257, 300, 1024, 4096 + 5 })
            {
                var data = Random(first * 10000 + second, first + second);
                var h = new Xxh128();
                h.Append(data.AsSpan(0, first));
                h.Append(data.AsSpan(first));
                Assert.True(Oracle(data).AsSpan().SequenceEqual(h.GetCurrentHash()), $"{first} + {second}");
            }
    }
}
