using System.Text;
using System.Buffers.Binary;

namespace ReVirt.Log;

/// <summary>Header flags (u32 on disk). Unknown bits are preserved by the reader.</summary>
[Flags]
public enum LogFlags : uint
{
    None = 0,
    /// <summary>A clock read that follows a logged read of its clock with no other syscall or asynchronous event
    /// between is not logged: the kernel answers it from that read and the instruction count (recordings of this
    /// build; their replays must do the same, logs without the flag are replayed with every read logged).</summary>
    ClockReadsBetweenEvents = 1,
}

/// <summary>
/// The log header: what was recorded and how.
/// </summary>
/// <remarks>
/// On disk: <c>magic[8] | u16 version | u32 bodyLength | body | u32 crc</c> (crc = CRC-32 of all preceding
/// header bytes). Body (v1): <c>u32 flags | programHash[32] | str cpuModel | str rootDirectory |
/// u32 argc, str × argc | u32 envc, str × envc | i64 startTime UTC ticks | i16 startTime offset minutes |
/// u64 checkpointInterval | bytes startState</c>, where <c>str</c> is u32 length + UTF-8 and <c>bytes</c>
/// u32 length + content. A v1 reader ignores body bytes past the fields it knows, so fields may be
/// appended without a version bump. Magic and version are checked before anything else, so a log of
/// another version is refused with a clear message whatever its layout.
/// </remarks>
public sealed class LogHeader
{
    private const int FixedPrefix = 8 + 2 + 4;
    private byte[] _programHash = new byte[ProgramHashLength];

    /// <summary>The program hash field's length in every format version (<see cref="LogDigest.ProgramHash(ReadOnlySpan{byte}, ushort)"/>).</summary>
    public const int ProgramHashLength = 32;

    /// <summary>Format version: <see cref="LogFormat.CurrentVersion"/> for a new log, the log's own when read (an older
    /// readable one is replayed by its own rules, e.g. its checkpoint digests); settable so tools/tests can forge
    /// other versions.</summary>
    public ushort Version { get; set; } = LogFormat.CurrentVersion;

    public LogFlags Flags { get; set; }

    /// <summary>The hash of the guest program file (exactly 32 bytes) of the kind <see cref="Version"/> defines (v6
    /// XXH3-128 and 16 zero bytes, earlier SHA-256); see <see cref="ComputeProgramHash(string, ushort)"/>.</summary>
    public byte[] ProgramHash
    {
        get => _programHash;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            if (value.Length != ProgramHashLength) throw new ArgumentException($"program hash must be {ProgramHashLength} bytes, got {value.Length}", nameof(value));
            _programHash = value;
        }
    }

    public string CpuModel { get; set; } = "";
    public string RootDirectory { get; set; } = "";
    public string[] Argv { get; set; } = [];
    public string[] Envp { get; set; } = [];
    public DateTimeOffset StartTime { get; set; }
    /// <summary>Free blob for the initial machine state (registers, auxv randomness...), interpreted by the VM.</summary>
    public byte[] StartState { get; set; } = [];
    /// <summary>Instructions between <see cref="Checkpoint"/> records (0 = none).</summary>
    public ulong CheckpointInterval { get; set; }

    /// <summary>Length in bytes of the encoded header as read (the offset of the first record); 0 for a header not read from a log.</summary>
    public int EncodedLength { get; private set; }

    // ---------------------------------------------------------------- encode

    public byte[] Encode()
    {
        string[] argv = Argv ?? [], envp = Envp ?? [];
        byte[] startState = StartState ?? [];
        long bodyLength = 4 + ProgramHashLength + PayloadWriter.StringSize(CpuModel) + PayloadWriter.StringSize(RootDirectory)
                          + 4 + 4 + 8 + 2 + 8 + PayloadWriter.BytesSize(startState.Length);
        foreach (var a in argv) bodyLength += PayloadWriter.StringSize(a);
        foreach (var e in envp) bodyLength += PayloadWriter.StringSize(e);
        if (bodyLength > LogFormat.MaxHeaderBodyLength)
            throw new InvalidOperationException($"log header body would be {bodyLength} bytes; limit is {LogFormat.MaxHeaderBodyLength}");

        var buf = new byte[FixedPrefix + bodyLength + 4];
        var w = new PayloadWriter(buf);
        w.Raw(LogFormat.Magic);
        w.U16(Version);
        w.U32((uint)bodyLength);
        w.U32((uint)Flags);
        w.Raw(ProgramHash);
        w.String(CpuModel);
        w.String(RootDirectory);
        w.U32((uint)argv.Length);
        foreach (var a in argv) w.String(a);
        w.U32((uint)envp.Length);
        foreach (var e in envp) w.String(e);
        w.I64(StartTime.UtcTicks);
        w.I16((short)StartTime.Offset.TotalMinutes);
        w.U64(CheckpointInterval);
        w.Bytes(startState);
        w.U32(LogFormat.Checksum(buf.AsSpan(0, w.Position)));
        w.AssertEnd();
        return buf;
    }

    // ---------------------------------------------------------------- decode

    /// <summary>Decodes a header from the start of <paramref name="data"/>; <paramref name="bytesConsumed"/> is its length.</summary>
    public static LogHeader Decode(ReadOnlySpan<byte> data, out int bytesConsumed)
    {
        int bodyLength = CheckPrefix(data);
        int total = FixedPrefix + bodyLength + 4;
        if (data.Length < total)
            throw new LogFormatException($"log header truncated: {data.Length} of {total} bytes present");
        int crcAt = FixedPrefix + bodyLength;
        if (LogFormat.Checksum(data[..crcAt]) != BinaryPrimitives.ReadUInt32LittleEndian(data[crcAt..]))
            throw new LogFormatException("header checksum mismatch", null, 0);

        var r = new PayloadReader(data.Slice(FixedPrefix, bodyLength), "log header");
        var h = new LogHeader { Version = BinaryPrimitives.ReadUInt16LittleEndian(data[8..]) }; // (a readable one: CheckPrefix)
        h.Flags = (LogFlags)r.U32();
        h._programHash = r.Raw(ProgramHashLength).ToArray();
        h.CpuModel = r.String();
        h.RootDirectory = r.String();
        h.Argv = ReadStrings(ref r);
        h.Envp = ReadStrings(ref r);
        long ticks = r.I64();
        short offsetMinutes = r.I16();
        h.CheckpointInterval = r.U64();
        h.StartState = r.Bytes();
        // Trailing body bytes are extension fields from a later v1 writer: ignored.
        try
        {
            var offset = TimeSpan.FromMinutes(offsetMinutes);
            h.StartTime = new DateTimeOffset(ticks, TimeSpan.Zero).ToOffset(offset);
        }
        catch (ArgumentException e)
        {
            throw new LogFormatException($"malformed log header: invalid start time ({e.Message})");
        }
        h.EncodedLength = total;
        bytesConsumed = total;
        return h;
    }

    /// <summary>
    /// Why a machine cannot be started from this header, or null. A recorder never writes such a header, but any
    /// decodable header is a valid log format: a header must name a program and an absolute root directory, and no
    /// string may hold a NUL (the guest could not be given it; host path interfaces refuse it).
    /// </summary>
    public string? NotRunnable()
    {
        if (Argv.Length == 0 || Argv[0].Length == 0) return "it names no program";
        if (!RootDirectory.StartsWith('/')) return $"its root directory \"{RootDirectory}\" is not an absolute path";
        if (RootDirectory.Contains('\0') || Argv.Any(a => a.Contains('\0')) || Envp.Any(e => e.Contains('\0')))
            return "a root, argument or environment string holds a NUL";
        if (Encoding.UTF8.GetString(StartState).Contains('\0')) return "its start state holds a NUL";
        return null;
    }

    private static string[] ReadStrings(ref PayloadReader r)
    {
        int n = r.Count(4);
        if (n == 0) return [];
        var a = new string[n];
        for (int i = 0; i < n; i++) a[i] = r.String();
        return a;
    }

    /// <summary>Checks magic, version and body length bound; returns the body length.</summary>
    private static int CheckPrefix(ReadOnlySpan<byte> data)
    {
        var magic = LogFormat.Magic;
        int m = Math.Min(data.Length, magic.Length);
        if (!data[..m].SequenceEqual(magic[..m]))
            throw new LogFormatException("not a ReVirt log (bad magic)");
        if (data.Length < magic.Length)
            throw new LogFormatException($"not a ReVirt log (only {data.Length} bytes)");
        if (data.Length < 10)
            throw new LogFormatException($"log header truncated: {data.Length} of at least {FixedPrefix + 4} bytes present");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(data[8..]);
        if (!LogFormat.IsReadable(version))
            throw new LogFormatException($"log format version {version}, this build reads {LogFormat.OldestReadableVersion} to {LogFormat.CurrentVersion}"
                                         + (LogFormat.WhyNotReadable(version) is { } why ? $" ({why})" : ""));
        if (data.Length < FixedPrefix)
            throw new LogFormatException($"log header truncated: {data.Length} of at least {FixedPrefix + 4} bytes present");
        uint bodyLength = BinaryPrimitives.ReadUInt32LittleEndian(data[10..]);
        if (bodyLength > LogFormat.MaxHeaderBodyLength)
            throw new LogFormatException($"header body length {bodyLength} exceeds the limit of {LogFormat.MaxHeaderBodyLength}", null, 10);
        return (int)bodyLength;
    }

    /// <summary>Reads exactly the header from the current position of <paramref name="stream"/>.</summary>
    public static LogHeader Read(Stream stream) => Read(stream, out _);

    /// <summary>Reads exactly the header; <paramref name="encoded"/> is its bytes as they are in the log.</summary>
    public static LogHeader Read(Stream stream, out byte[] encoded)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var prefix = new byte[FixedPrefix];
        int n = stream.ReadAtLeast(prefix, prefix.Length, throwOnEndOfStream: false);
        int bodyLength = CheckPrefix(prefix.AsSpan(0, n));
        var all = new byte[FixedPrefix + bodyLength + 4];
        prefix.CopyTo(all, 0);
        n = stream.ReadAtLeast(all.AsSpan(FixedPrefix), all.Length - FixedPrefix, throwOnEndOfStream: false);
        var h = Decode(all.AsSpan(0, FixedPrefix + n), out _);
        encoded = all;
        return h;
    }

    // ---------------------------------------------------------------- program hash

    /// <summary>Largest program file hashed or loaded (1 GiB): a bound on what a header naming a path can cost.</summary>
    public const long MaxProgramBytes = 1L << 30;

    /// <summary>
    /// The program hash (<see cref="LogDigest.ProgramHash(ReadOnlySpan{byte}, ushort)"/>) of a program file's content
    /// for a log of <paramref name="version"/>. Only a regular file of at most <see cref="MaxProgramBytes"/> is read:
    /// it is opened without blocking (a FIFO cannot hang the caller) and checked on the open descriptor, so
    /// /dev/zero, a FIFO or a directory named by a log header or a peer is refused with <see cref="IOException"/>.
    /// </summary>
    public static byte[] ComputeProgramHash(string path, ushort version = LogFormat.CurrentVersion)
    {
        // a regular file only, of bounded size (a FIFO or /dev/zero named by a header must not hang the reader)
        using var h = Abi.ProgramFile.OpenRegular(path, path, Abi.ProgramFile.MaxImageBytes, out _);
        using var f = new FileStream(h, FileAccess.Read, 1 << 16);
        return LogDigest.ProgramHash(f, version);
    }

    /// <summary>The program hash of a program image held in memory, for a log of <paramref name="version"/>.</summary>
    public static byte[] ComputeProgramHash(ReadOnlySpan<byte> content, ushort version = LogFormat.CurrentVersion) => LogDigest.ProgramHash(content, version);

    /// <summary>True if the file at <paramref name="path"/> hashes to <see cref="ProgramHash"/>.</summary>
    public bool ProgramMatches(string path) => ProgramMatches(path, out _);

    public bool ProgramMatches(string path, out byte[] actualHash)
    {
        actualHash = ComputeProgramHash(path, Version);
        return actualHash.AsSpan().SequenceEqual(ProgramHash); // (nothing secret: no constant-time comparison needed)
    }

    /// <summary>Throws <see cref="ProgramMismatchException"/> unless the file at <paramref name="path"/> is the recorded program.</summary>
    public void VerifyProgram(string path)
    {
        if (!ProgramMatches(path, out var actual))
            throw new ProgramMismatchException(path, ProgramHash, actual, LogDigest.NameFor(Version));
    }
}
