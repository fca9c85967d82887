using System.Security.Cryptography;

namespace ReVirt.Log;

/// <summary>
/// The hash a <see cref="FileContent"/> record carries of the bytes it stands for; the log's format version decides
/// which (<see cref="ForLogVersion"/>) and the hash's length names it in the record (16 or 32 bytes).
/// </summary>
/// <remarks>
/// v3 and v4 logs hash by-reference bytes with SHA-256, v5 logs with XxHash128, as checkpoints already hash each
/// page: SHA-256 ran at about 1.3 GB/s on this project's hosts, so a recording of md5sum 16 MB (4,096 reads of 4 KiB)
/// spent about 13 ms of its 0.45 CPU s hashing what it read, and its replay as much again; XxHash128 hashes the same
/// bytes in under 1 ms. What the hash is for: a replay reads the range from its own root later and refuses it, naming
/// the file, when the bytes differ (another version of a library, a file edited or damaged since). XxHash128 finds
/// every such difference that SHA-256 finds short of a collision of 128 bits (2^-128 for bytes that were not made to
/// collide); it does not resist a file crafted to collide with a known range, which SHA-256 does. That is the one
/// guarantee given up, and docs/SECURITY.md says so: a faithful replay proves that the replayer's files hash to the
/// recorded values, not that they are the recorded run's bytes, and a forged log decides its inputs anyway.
/// </remarks>
public enum ContentHashKind : byte
{
    /// <summary>SHA-256, 32 bytes (log format v3 and v4).</summary>
    Sha256,
    /// <summary>XxHash128 (seed 0), 16 bytes, its canonical big-endian encoding as System.IO.Hashing's XxHash128.Hash writes it (computed by <see cref="Xxh128"/>) (log format v5).</summary>
    XxHash128,
}

/// <summary>Computing and naming the <see cref="ContentHashKind"/>s.</summary>
public static class ContentHash
{
    /// <summary>The first format version whose by-reference bytes are hashed with XxHash128.</summary>
    public const ushort XxHash128Since = 5;

    /// <summary>The content hash a log of this format version carries.</summary>
    public static ContentHashKind ForLogVersion(ushort version) => version >= XxHash128Since ? ContentHashKind.XxHash128 : ContentHashKind.Sha256;

    /// <summary>The hash's length in bytes.</summary>
    public static int Length(ContentHashKind kind) => kind == ContentHashKind.XxHash128 ? 16 : SHA256.HashSizeInBytes;

    /// <summary>The kind a hash of <paramref name="length"/> bytes is, or null when no kind has that length.</summary>
    public static ContentHashKind? OfLength(int length) => length switch
    {
        16 => ContentHashKind.XxHash128,
        SHA256.HashSizeInBytes => ContentHashKind.Sha256,
        _ => null,
    };

    /// <summary>Its name in messages and dumps ("sha256", "xxh128").</summary>
    public static string Name(ContentHashKind kind) => kind == ContentHashKind.XxHash128 ? "xxh128" : "sha256";

    /// <summary>The hash of <paramref name="bytes"/> into <paramref name="hash"/> (<see cref="Length"/> bytes).</summary>
    public static void Compute(ContentHashKind kind, ReadOnlySpan<byte> bytes, Span<byte> hash)
    {
        if (kind == ContentHashKind.XxHash128) Xxh128.Hash(bytes, hash);
        else SHA256.HashData(bytes, hash);
    }

    /// <summary>Whether <paramref name="bytes"/> hash to <paramref name="expected"/> (whose length names the kind).</summary>
    public static bool Matches(ReadOnlySpan<byte> bytes, ReadOnlySpan<byte> expected)
    {
        if (OfLength(expected.Length) is not { } kind) return false;
        Span<byte> h = stackalloc byte[SHA256.HashSizeInBytes];
        Compute(kind, bytes, h[..expected.Length]);
        return h[..expected.Length].SequenceEqual(expected);
    }
}
