using System.Buffers.Binary;

namespace ReVirt.Log;

/// <summary>
/// Constants and primitives of the ReVirt event log format (version 7).
/// </summary>
/// <remarks>
/// <para><b>File layout.</b> A log is a <see cref="LogHeader"/> followed by zero or more records.
/// All integers are little-endian.</para>
/// <para><b>Header</b> (see <see cref="LogHeader"/>):
/// <c>magic[8] = "RVLOG\0\0\x01" | u16 version | u32 bodyLength | body[bodyLength] | u32 crc</c>,
/// where <c>crc</c> covers every preceding header byte (magic included).</para>
/// <para><b>Record frame</b> (see <see cref="RecordFrame"/>), self-contained so that it can travel
/// alone (e.g. as a gRPC byte chunk):
/// <code>
///  0  u32 length      total frame length in bytes, this field and both checksums included (>= 21)
///  4  u64 sequence    1 for the first record of a log, +1 for each following record
/// 12  u8  kind        a RecordKind
/// 13  u32 headerCrc   checksum of bytes [0, 13)  (protects length/sequence/kind)
/// 17  payload         length - 21 bytes, layout defined by the kind's payload struct
/// L-4 u32 crc         checksum of bytes [0, L-4) (everything before it)
/// </code>
/// The separate header checksum lets a reader tell a torn tail (the writer crashed mid-record:
/// a prefix of a valid frame) from a corrupted length field: a frame whose 17-byte prefix is
/// complete but fails its header checksum is corruption, not truncation.</para>
/// <para><b>Checksum choice.</b> Both checksums are CRC-32 (IEEE 802.3 polynomial, the one used by
/// zlib/gzip/PNG), the value System.IO.Hashing's <c>Crc32</c> computes, here by <see cref="Crc32Ieee"/>.
/// XxHash3 is somewhat faster but a truncated 64-bit hash gives no guarantee, whereas CRC-32 detects
/// <em>every</em> error burst of up to 32 bits, so any single damaged byte in a frame is always detected.</para>
/// <para><b>End of a recording</b> (v2). A complete log ends with exactly one <see cref="End"/> record, after the
/// Exit record: the record count and the SHA-256 of every byte before it. No byte may follow it. A log without
/// it ended early (the recorder crashed or the file was cut at any point, record boundaries included); a log
/// with bytes after it is refused. v1 logs had no such record and are refused as another version.</para>
/// <para><b>v3.</b> A syscall's or an RDTSC's position is the exact count of instructions retired before it (v2
/// logged the count at the start of its block, which moved when a recording stopped inside a block), and setting an
/// interval or POSIX timer logs the clock reading it is armed from. A v2 log would replay into a divergence, so it is
/// refused as another version.</para>
/// <para><b>v4.</b> A <see cref="Checkpoint"/>'s state digest takes each page as (number, protection, XxHash128 of its
/// bytes) instead of hashing all pages' bytes as one stream, so a checkpoint rehashes only the pages written since the
/// last one (<c>ReVirt.Replay.StateDigest</c>). The records' layout is unchanged, so a v3 log is still read: its
/// checkpoints are recomputed and compared with the v3 definition (<c>StateDigest.ForLogVersion</c>), at the cost of
/// hashing all memory at each checkpoint, as its recording did.</para>
/// <para><b>v5.</b> A <see cref="FileContent"/> record's hash of the bytes it stands for is XxHash128 (16 bytes) instead
/// of SHA-256 (32): a recording and its replay hashed every byte a guest read by reference with SHA-256, about 3 % of
/// md5sum's CPU (see <see cref="ContentHash"/> for what is given up). The layout is unchanged (the hash's length
/// names its kind), so v3 and v4 logs are still read and their SHA-256 checked; a log whose hashes are not its
/// version's kind is refused (<see cref="ContentHash.ForLogVersion"/>).</para>
/// <para><b>v6.</b> The <see cref="End"/> record's digest of the whole log is XXH3-128 (16 bytes) instead of SHA-256 (32),
/// and the header's 32-byte program hash holds the program's XXH3-128 followed by 16 zero bytes instead of its SHA-256
/// (<see cref="LogDigest"/>: SHA-256 made every recording and replay load OpenSSL, about 10 ms of CPU each). Nothing
/// else changed: v3-v5 logs are read and replayed with their SHA-256 (<see cref="LogDigest.ForVersion"/>), and an End
/// digest of the other version's length is refused.</para>
/// <para><b>v7.</b> One thread's consecutive by-reference reads of one file are one <see cref="FileContentRun"/> record
/// (kind 13: first and last instruction count, thread, syscall, path, offset, count of reads, bytes, one XxHash128 of
/// them all) instead of a <see cref="FileContent"/> each: a recording spent 4-11 us per such read on its own record.
/// Nothing else changed: v3-v6 logs (which hold no such record) are read and replayed as before; a FileContentRun in a
/// log older than v7 is refused (<see cref="ContentRunsSince"/>), and a build that reads only up to v6 refuses a v7 log
/// as another version.</para>
/// </remarks>
public static class LogFormat
{
    /// <summary>The format version this build writes and reads.</summary>
    public const ushort CurrentVersion = 7;

    /// <summary>The first format version with <see cref="FileContentRun"/> records.</summary>
    public const ushort ContentRunsSince = 7;

    /// <summary>The oldest format version this build still reads (and replays faithfully): v3 differs from v4 only in
    /// its checkpoints' digest definition, v4 from v5 only in its content hash, v5 from v6 only in its End digest and
    /// program hash, v6 from v7 only in having no <see cref="FileContentRun"/> records.</summary>
    public const ushort OldestReadableVersion = 3;

    /// <summary>Whether this build reads logs of this format version.</summary>
    public static bool IsReadable(ushort version) => version is >= OldestReadableVersion and <= CurrentVersion;

    /// <summary>Why a log of an older version cannot be replayed by this build (appended to the refusal), or null.</summary>
    public static string? WhyNotReadable(ushort version) => version switch
    {
        2 => "its syscall positions are counted at their block's start, this build's exactly",
        _ => null,
    };

    /// <summary>The 8 magic bytes opening every log: "RVLOG", 0, 0, 1.</summary>
    public static ReadOnlySpan<byte> Magic => "RVLOG\0\0\u0001"u8;

    /// <summary>Sequence number of the first record of a log (0 means "no record").</summary>
    public const ulong FirstSequence = 1;

    /// <summary>Largest header body accepted (64 MiB).</summary>
    public const int MaxHeaderBodyLength = 64 << 20;

    /// <summary>CRC-32 (IEEE) of <paramref name="data"/>; the checksum used throughout the format.</summary>
    public static uint Checksum(ReadOnlySpan<byte> data) => Crc32Ieee.Hash(data);

    internal static uint ReadU32(ReadOnlySpan<byte> s) => BinaryPrimitives.ReadUInt32LittleEndian(s);
}

/// <summary>
/// The log is not a valid ReVirt log, or is damaged. <see cref="Message"/> reads like
/// "checksum mismatch in record #12 at offset 4711".
/// </summary>
public sealed class LogFormatException : IOException
{
    public LogFormatException(string reason, ulong? recordNumber = null, long offset = -1, Exception? inner = null)
        : base(Compose(reason, recordNumber, offset), inner)
    {
        Reason = reason;
        RecordNumber = recordNumber;
        Offset = offset;
    }

    /// <summary>What is wrong, without location.</summary>
    public string Reason { get; }

    /// <summary>Sequence number of the faulty record (the one expected at that place), or null for the header.</summary>
    public ulong? RecordNumber { get; }

    /// <summary>Byte offset in the log of the faulty record (or header field); -1 if unknown.</summary>
    public long Offset { get; }

    private static string Compose(string reason, ulong? recordNumber, long offset)
    {
        var s = reason;
        if (recordNumber is { } n) s += $" in record #{n}";
        if (offset >= 0) s += $" at offset {offset}";
        return s;
    }
}

/// <summary>The program file given does not match the program hash recorded in the log header.</summary>
public sealed class ProgramMismatchException : Exception
{
    /// <param name="hashName">The hash's name for the log's version (<see cref="LogDigest.NameFor"/>).</param>
    public ProgramMismatchException(string path, byte[] expected, byte[] actual, string hashName)
        : base($"program mismatch: the log was recorded for {hashName} {Convert.ToHexStringLower(expected)}, " +
               $"but {path} has {hashName} {Convert.ToHexStringLower(actual)}")
    {
        Path = path;
        Expected = expected;
        Actual = actual;
    }

    public string Path { get; }
    public byte[] Expected { get; }
    public byte[] Actual { get; }
}
