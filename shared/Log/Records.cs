namespace ReVirt.Log;

/// <summary>Bytes a host operation puts into guest memory at an address (a host result's writes, a
/// <see cref="SyscallResult"/>'s <see cref="SyscallResult.MemWrites"/>). A class, not an (address, bytes) tuple: the
/// framework's generic list code over such a tuple has no ReadyToRun code and was JIT-compiled (9 methods) by every
/// recording and replay at its first syscall with writes; over a class it is the shared, precompiled code.</summary>
public sealed record GuestWrite(ulong Addr, byte[] Bytes);

/// <summary>Record kinds (the <c>kind</c> byte of a frame). Values are part of the on-disk format.</summary>
public enum RecordKind : byte
{
    SyscallResult = 1,
    Rdtsc = 2,
    Rdrand = 3,
    Signal = 4,
    Preempt = 5,
    Checkpoint = 6,
    Output = 7,
    Exit = 8,
    /// <summary>The last record of a complete log (format v2): proves that nothing was cut off or appended.</summary>
    End = 9,
    /// <summary>A file's content entered the guest by reference (<see cref="FileContent"/>).</summary>
    FileContent = 12,
    /// <summary>Consecutive by-reference reads of one file by one thread, as one record (format v7; see <see cref="FileContentRun"/>).</summary>
    FileContentRun = 13,
    /// <summary>Ethernet frames the virtual network interface received (see <see cref="NetInput"/>).</summary>
    NetInput = 16,
    /// <summary>A guest thread's wait on the host ended (see <see cref="Wake"/>).</summary>
    Wake = 17,
    /// <summary>A replica took the virtual network interface over (see <see cref="NetTakeover"/>).</summary>
    NetTakeover = 18,
    /// <summary>Free-form extension record; its payload is opaque to the log layer.</summary>
    Opaque = 0x7F,
}

/// <summary>
/// A typed record payload. <see cref="Encode"/> writes exactly <see cref="EncodedLength"/> bytes;
/// <see cref="Decode"/> accepts exactly what <see cref="Encode"/> produced (trailing bytes are an error).
/// Implemented by value types so that <see cref="LogWriter.Append{T}(in T)"/> needs no boxing.
/// </summary>
public interface IRecordPayload<TSelf> where TSelf : struct, IRecordPayload<TSelf>
{
    static abstract RecordKind Kind { get; }

    int EncodedLength { get; }

    void Encode(Span<byte> destination);

    static abstract TSelf Decode(ReadOnlySpan<byte> payload);
}

/// <summary>
/// Outcome of a system call executed by the primary on the host.
/// Layout: <c>u64 InstrCount | i32 Tid | i32 Nr | i64 Result | bytes Data | u32 n | n × (u64 Addr | bytes)</c>
/// (<c>bytes</c> = u32 length + content).
/// </summary>
public struct SyscallResult : IRecordPayload<SyscallResult>
{
    private byte[]? _data;

    /// <summary>Guest instruction count at the syscall instruction.</summary>
    public ulong InstrCount { get; set; }
    public int Tid { get; set; }
    /// <summary>x86-64 Linux syscall number.</summary>
    public int Nr { get; set; }
    /// <summary>Value returned in RAX (negative errno on failure).</summary>
    public long Result { get; set; }
    /// <summary>Opaque bytes the host produced (read buffer, stat struct...). Never null (empty when unset).</summary>
    public byte[] Data { readonly get => _data ?? []; set => _data = value; }
    /// <summary>Guest-memory writes the syscall performed, in order; null when none (a decoded record with no writes has null).</summary>
    public List<GuestWrite>? MemWrites { get; set; }

    public static RecordKind Kind => RecordKind.SyscallResult;

    /// <summary>Data bytes plus the bytes of every memory write.</summary>
    public readonly long TotalBytes
    {
        get
        {
            long n = Data.Length;
            if (MemWrites is { } w) foreach (var (_, b) in w) n += b?.Length ?? 0;
            return n;
        }
    }

    public readonly int EncodedLength
    {
        get
        {
            int n = checked(FixedLength + PayloadWriter.BytesSize(Data.Length) + 4);
            if (MemWrites is { } w)
                foreach (var (_, b) in w) n = checked(n + 8 + PayloadWriter.BytesSize(b?.Length ?? 0));
            return n;
        }
    }

    /// <summary>InstrCount, Tid, Nr, Result.</summary>
    const int FixedLength = 8 + 4 + 4 + 8;

    /// <summary>The payload's length for a result with no <see cref="Data"/> and one memory write of
    /// <paramref name="count"/> bytes (<see cref="EncodeOneWrite"/>).</summary>
    public static int OneWriteLength(int count) => checked(FixedLength + PayloadWriter.BytesSize(0) + 4 + 8 + PayloadWriter.BytesSize(count));

    /// <summary>Encodes, into exactly <see cref="OneWriteLength"/>(<paramref name="count"/>) bytes, the payload of a result
    /// with no <see cref="Data"/> and one memory write of <paramref name="count"/> bytes at <paramref name="addr"/>, all but
    /// the write's bytes: returns where they go (the same payload <see cref="Encode"/> writes for such a record once the
    /// caller has filled them).</summary>
    internal static Span<byte> EncodeOneWrite(Span<byte> destination, ulong instrCount, int tid, int nr, long result, ulong addr, int count)
    {
        var w = new PayloadWriter(destination);
        w.U64(instrCount);
        w.I32(tid);
        w.I32(nr);
        w.I64(result);
        w.Bytes([]);
        w.U32(1);
        w.U64(addr);
        w.U32((uint)count);
        var bytes = w.Skip(count);
        w.AssertEnd();
        return bytes;
    }

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.I32(Tid);
        w.I32(Nr);
        w.I64(Result);
        w.Bytes(Data);
        var writes = MemWrites;
        w.U32((uint)(writes?.Count ?? 0));
        if (writes is not null)
            foreach (var (addr, bytes) in writes) { w.U64(addr); w.Bytes(bytes); }
        w.AssertEnd();
    }

    public static SyscallResult Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "SyscallResult payload");
        var v = new SyscallResult { InstrCount = r.U64(), Tid = r.I32(), Nr = r.I32(), Result = r.I64(), Data = r.Bytes() };
        int n = r.Count(12);
        if (n > 0)
        {
            var list = new List<GuestWrite>(n);
            for (int i = 0; i < n; i++) list.Add(new GuestWrite(r.U64(), r.Bytes()));
            v.MemWrites = list;
        }
        r.End();
        return v;
    }
}

/// <summary>Value returned by an RDTSC/RDTSCP. Layout: <c>u64 InstrCount | u64 Value</c>.</summary>
public struct Rdtsc : IRecordPayload<Rdtsc>
{
    public ulong InstrCount { get; set; }
    public ulong Value { get; set; }

    public static RecordKind Kind => RecordKind.Rdtsc;
    public readonly int EncodedLength => 16;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(Value);
        w.AssertEnd();
    }

    public static Rdtsc Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Rdtsc payload");
        var v = new Rdtsc { InstrCount = r.U64(), Value = r.U64() };
        r.End();
        return v;
    }
}

/// <summary>Value returned by an RDRAND/RDSEED. Layout: <c>u64 InstrCount | u64 Value</c>.</summary>
public struct Rdrand : IRecordPayload<Rdrand>
{
    public ulong InstrCount { get; set; }
    public ulong Value { get; set; }

    public static RecordKind Kind => RecordKind.Rdrand;
    public readonly int EncodedLength => 16;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(Value);
        w.AssertEnd();
    }

    public static Rdrand Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Rdrand payload");
        var v = new Rdrand { InstrCount = r.U64(), Value = r.U64() };
        r.End();
        return v;
    }
}

/// <summary>
/// Asynchronous signal delivered at a precise point (instruction count, branch count, RIP, RCX).
/// Layout: <c>u64 InstrCount | u64 BranchCount | u64 Rip | u64 Rcx | i32 Tid | i32 Signo | bytes SigInfo</c>.
/// </summary>
public struct Signal : IRecordPayload<Signal>
{
    private byte[]? _sigInfo;

    public ulong InstrCount { get; set; }
    public ulong BranchCount { get; set; }
    public ulong Rip { get; set; }
    public ulong Rcx { get; set; }
    public int Tid { get; set; }
    public int Signo { get; set; }
    /// <summary>Raw siginfo_t as delivered; never null.</summary>
    public byte[] SigInfo { readonly get => _sigInfo ?? []; set => _sigInfo = value; }

    public static RecordKind Kind => RecordKind.Signal;
    public readonly int EncodedLength => checked(8 * 4 + 4 + 4 + PayloadWriter.BytesSize(SigInfo.Length));

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(BranchCount);
        w.U64(Rip);
        w.U64(Rcx);
        w.I32(Tid);
        w.I32(Signo);
        w.Bytes(SigInfo);
        w.AssertEnd();
    }

    public static Signal Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Signal payload");
        var v = new Signal
        {
            InstrCount = r.U64(), BranchCount = r.U64(), Rip = r.U64(), Rcx = r.U64(),
            Tid = r.I32(), Signo = r.I32(), SigInfo = r.Bytes(),
        };
        r.End();
        return v;
    }
}

/// <summary>
/// Thread switch decided by the primary's scheduler at a precise point.
/// Layout: <c>u64 InstrCount | u64 BranchCount | u64 Rip | i32 FromTid | i32 ToTid</c>.
/// </summary>
public struct Preempt : IRecordPayload<Preempt>
{
    public ulong InstrCount { get; set; }
    public ulong BranchCount { get; set; }
    public ulong Rip { get; set; }
    public int FromTid { get; set; }
    public int ToTid { get; set; }

    public static RecordKind Kind => RecordKind.Preempt;
    public readonly int EncodedLength => 8 * 3 + 4 + 4;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(BranchCount);
        w.U64(Rip);
        w.I32(FromTid);
        w.I32(ToTid);
        w.AssertEnd();
    }

    public static Preempt Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Preempt payload");
        var v = new Preempt { InstrCount = r.U64(), BranchCount = r.U64(), Rip = r.U64(), FromTid = r.I32(), ToTid = r.I32() };
        r.End();
        return v;
    }
}

/// <summary>
/// The host wait of a parked guest thread ended (a descriptor became ready, a deadline passed), placed like an
/// asynchronous signal at a precise point of the running thread: there the woken thread becomes runnable and later
/// runs its syscall again. <see cref="WaitSeq"/> names which wait of the thread ended (a wait that already ended
/// for another reason is not ended twice).
/// Layout: <c>u64 InstrCount | u64 BranchCount | u64 Rip | i32 Tid | i32 WokenTid | u32 WaitSeq</c>.
/// </summary>
public struct Wake : IRecordPayload<Wake>
{
    public ulong InstrCount { get; set; }
    public ulong BranchCount { get; set; }
    public ulong Rip { get; set; }
    /// <summary>The thread that was running (or, when every thread waited, the last one that ran).</summary>
    public int Tid { get; set; }
    public int WokenTid { get; set; }
    public uint WaitSeq { get; set; }

    public static RecordKind Kind => RecordKind.Wake;
    public readonly int EncodedLength => 8 * 3 + 4 + 4 + 4;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(BranchCount);
        w.U64(Rip);
        w.I32(Tid);
        w.I32(WokenTid);
        w.U32(WaitSeq);
        w.AssertEnd();
    }

    public static Wake Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Wake payload");
        var v = new Wake { InstrCount = r.U64(), BranchCount = r.U64(), Rip = r.U64(), Tid = r.I32(), WokenTid = r.I32(), WaitSeq = r.U32() };
        r.End();
        return v;
    }
}

/// <summary>
/// Digest of the machine state at a point, for the backup to compare against.
/// Layout: <c>u64 InstrCount | u64 Rip | bytes StateDigest</c> (digest is typically 16 or 32 bytes).
/// </summary>
public struct Checkpoint : IRecordPayload<Checkpoint>
{
    private byte[]? _digest;

    public ulong InstrCount { get; set; }
    public ulong Rip { get; set; }
    public byte[] StateDigest { readonly get => _digest ?? []; set => _digest = value; }

    public static RecordKind Kind => RecordKind.Checkpoint;
    public readonly int EncodedLength => checked(16 + PayloadWriter.BytesSize(StateDigest.Length));

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.U64(Rip);
        w.Bytes(StateDigest);
        w.AssertEnd();
    }

    public static Checkpoint Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Checkpoint payload");
        var v = new Checkpoint { InstrCount = r.U64(), Rip = r.U64(), StateDigest = r.Bytes() };
        r.End();
        return v;
    }
}

/// <summary>
/// Output produced by the guest (e.g. a write to fd 1). <see cref="TotalBytes"/> is the running total
/// on that fd including these bytes, <see cref="Digest"/> a running digest chosen by the producer.
/// Layout: <c>u64 InstrCount | i32 Fd | u64 TotalBytes | bytes Digest | bytes Bytes</c>.
/// </summary>
public struct Output : IRecordPayload<Output>
{
    private byte[]? _digest;
    private byte[]? _bytes;

    public ulong InstrCount { get; set; }
    public int Fd { get; set; }
    public ulong TotalBytes { get; set; }
    public byte[] Digest { readonly get => _digest ?? []; set => _digest = value; }
    /// <summary>The bytes written (may be empty if the producer records digests only).</summary>
    public byte[] Bytes { readonly get => _bytes ?? []; set => _bytes = value; }

    public static RecordKind Kind => RecordKind.Output;
    public readonly int EncodedLength => EncodedLengthOf(Digest.Length, Bytes.Length);

    /// <summary>The payload's length for a digest of <paramref name="digestLength"/> and <paramref name="bytesLength"/> bytes written.</summary>
    public static int EncodedLengthOf(int digestLength, int bytesLength)
        => checked(8 + 4 + 8 + PayloadWriter.BytesSize(digestLength) + PayloadWriter.BytesSize(bytesLength));

    public readonly void Encode(Span<byte> destination) => Encode(destination, InstrCount, Fd, TotalBytes, Digest, Bytes);

    /// <summary>The payload of an Output record from its fields, into exactly <see cref="EncodedLengthOf"/> bytes (what a
    /// recording writes without making the record's arrays: <see cref="LogWriter.AppendOutput"/>).</summary>
    internal static void Encode(Span<byte> destination, ulong instrCount, int fd, ulong totalBytes, ReadOnlySpan<byte> digest, ReadOnlySpan<byte> bytes)
    {
        var w = new PayloadWriter(destination);
        w.U64(instrCount);
        w.I32(fd);
        w.U64(totalBytes);
        w.Bytes(digest);
        w.Bytes(bytes);
        w.AssertEnd();
    }

    public static Output Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Output payload");
        var v = new Output { InstrCount = r.U64(), Fd = r.I32(), TotalBytes = r.U64(), Digest = r.Bytes(), Bytes = r.Bytes() };
        r.End();
        return v;
    }
}

/// <summary>The guest exited. Layout: <c>u64 InstrCount | i32 Status</c>.</summary>
public struct Exit : IRecordPayload<Exit>
{
    public ulong InstrCount { get; set; }
    public int Status { get; set; }

    public static RecordKind Kind => RecordKind.Exit;
    public readonly int EncodedLength => 12;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.I32(Status);
        w.AssertEnd();
    }

    public static Exit Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "Exit payload");
        var v = new Exit { InstrCount = r.U64(), Status = r.I32() };
        r.End();
        return v;
    }
}

/// <summary>
/// Bytes of a file that entered the guest (a file mapping, the ELF interpreter the loader read), recorded by
/// reference instead of by value: the file's guest path, the offset, and the hash of the <see cref="Result"/>
/// bytes that were read (the syscall's answer when non-negative). A replay reads the same range of the same path
/// under its own root and refuses, naming the file, when the bytes' hash differs; the bytes go to guest memory at
/// <see cref="Addr"/> (0: the loader consumed them). Only written for a regular file unchanged since before the
/// recording began; anything else is a <see cref="SyscallResult"/> with the bytes.
/// Layout: <c>u64 InstrCount | i32 Tid | i32 Nr | i64 Result | u64 Addr | string Path | i64 Offset | bytes Hash</c>
/// (<c>string</c> = u32 length + UTF-8, <c>bytes</c> = u32 length + content). The hash's length names its kind
/// (<see cref="ContentHashKind"/>): 32 bytes SHA-256 (format v3, v4), 16 bytes XxHash128 (v5 on); which one a log holds is
/// its version's (<see cref="ContentHash.ForLogVersion"/>, checked by the replay), any other length is refused.
/// </summary>
public struct FileContent : IRecordPayload<FileContent>
{
    private string? _path;
    private byte[]? _hash;

    public ulong InstrCount { get; set; }
    public int Tid { get; set; }
    public int Nr { get; set; }
    /// <summary>Number of bytes read (the value the operation returned to the kernel).</summary>
    public long Result { get; set; }
    public ulong Addr { get; set; }
    public string Path { readonly get => _path ?? ""; set => _path = value; }
    public long Offset { get; set; }
    /// <summary>Hash of the bytes, of the kind its length names (<see cref="HashKind"/>).</summary>
    public byte[] Hash { readonly get => _hash ?? []; set => _hash = value; }

    /// <summary>The kind of <see cref="Hash"/> (a decoded record's hash always has one).</summary>
    public readonly ContentHashKind HashKind => ContentHash.OfLength(Hash.Length) ?? throw new InvalidOperationException($"a {Hash.Length}-byte content hash");

    public static RecordKind Kind => RecordKind.FileContent;
    public readonly int EncodedLength => checked(8 + 4 + 4 + 8 + 8 + PayloadWriter.StringSize(Path) + 8 + PayloadWriter.BytesSize(Hash.Length));

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.I32(Tid);
        w.I32(Nr);
        w.I64(Result);
        w.U64(Addr);
        w.String(Path);
        w.I64(Offset);
        w.Bytes(Hash);
        w.AssertEnd();
    }

    public static FileContent Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "FileContent payload");
        var v = new FileContent
        {
            InstrCount = r.U64(), Tid = r.I32(), Nr = r.I32(), Result = r.I64(), Addr = r.U64(), Path = r.String(),
            Offset = r.I64(), Hash = r.Bytes(),
        };
        r.End();
        if (ContentHash.OfLength(v.Hash.Length) == null)
            throw new LogFormatException($"FileContent payload: a {v.Hash.Length}-byte hash (expected 16, XxHash128, or 32, SHA-256)");
        return v;
    }
}

/// <summary>
/// A run of by-reference reads (format v7 on): read(2) or pread64 calls by one thread of one file, each starting where
/// the one before ended, with no other record between them, logged as one record when the run ends instead of one
/// <see cref="FileContent"/> per read (a recording of md5sum 16 MB made 4,096 such records, each costing an encoding, a
/// frame and the log digest's share). Every read but the last returned all it asked for (a short read ends a run), so
/// a replay knows each read's result from the guest's own request: <see cref="Bytes"/> less what the earlier reads
/// returned for the last one. <see cref="Hash"/> is the XxHash128 of the <see cref="Bytes"/> bytes at
/// [<see cref="Offset"/>, <see cref="Offset"/> + <see cref="Bytes"/>) — the concatenation of what the reads returned.
/// The record sits where the run's first read was (nothing was logged between its reads), so a replay takes it at that
/// read, serves each read of the run from the file under its own root, checks that the reads come as recorded (thread,
/// syscall, path, offset, the first and last at their instruction counts, each non-last read asking for less than what
/// is left) and refuses, naming the file, at the run's last read when the hash differs. A run of one read is logged
/// as a <see cref="FileContent"/>. At most <see cref="MaxBytes"/> per run, so a replay of a changed file goes at most
/// that far before it refuses.
/// Layout: <c>u64 FirstInstrCount | u64 LastInstrCount | i32 Tid | i32 Nr | string Path | i64 Offset | u32 Reads |
/// i64 Bytes | bytes Hash</c> (Hash is 16 bytes; Reads &gt;= 2; Reads &lt;= Bytes &lt;= MaxBytes).
/// </summary>
public struct FileContentRun : IRecordPayload<FileContentRun>
{
    private string? _path;
    private byte[]? _hash;

    /// <summary>The most bytes one run stands for (1 MiB: sha256sum's 8 MB in 8 records).</summary>
    public const long MaxBytes = 1 << 20;

    /// <summary>Instruction count at the run's first read.</summary>
    public ulong FirstInstrCount { get; set; }
    /// <summary>Instruction count at the run's last read.</summary>
    public ulong LastInstrCount { get; set; }
    public int Tid { get; set; }
    public int Nr { get; set; }
    public string Path { readonly get => _path ?? ""; set => _path = value; }
    /// <summary>Where the first read started.</summary>
    public long Offset { get; set; }
    /// <summary>How many reads the run holds (at least 2).</summary>
    public uint Reads { get; set; }
    /// <summary>What the reads returned, together.</summary>
    public long Bytes { get; set; }
    /// <summary>XxHash128 of the run's bytes, canonical form.</summary>
    public byte[] Hash { readonly get => _hash ?? []; set => _hash = value; }

    public static RecordKind Kind => RecordKind.FileContentRun;
    public readonly int EncodedLength => checked(8 + 8 + 4 + 4 + PayloadWriter.StringSize(Path) + 8 + 4 + 8 + PayloadWriter.BytesSize(Hash.Length));

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(FirstInstrCount);
        w.U64(LastInstrCount);
        w.I32(Tid);
        w.I32(Nr);
        w.String(Path);
        w.I64(Offset);
        w.U32(Reads);
        w.I64(Bytes);
        w.Bytes(Hash);
        w.AssertEnd();
    }

    public static FileContentRun Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "FileContentRun payload");
        var v = new FileContentRun
        {
            FirstInstrCount = r.U64(), LastInstrCount = r.U64(), Tid = r.I32(), Nr = r.I32(), Path = r.String(),
            Offset = r.I64(), Reads = r.U32(), Bytes = r.I64(), Hash = r.Bytes(),
        };
        r.End();
        if (v.Hash.Length != Xxh128.HashLength)
            throw new LogFormatException($"FileContentRun payload: a {v.Hash.Length}-byte hash (expected {Xxh128.HashLength}, XxHash128)");
        if (v.Reads < 2 || v.Bytes < v.Reads || v.Bytes > MaxBytes)
            throw new LogFormatException($"FileContentRun payload: {v.Reads} reads of {v.Bytes} bytes (a run holds at least 2 reads of at least a byte each, at most {MaxBytes} bytes)");
        if (v.LastInstrCount < v.FirstInstrCount)
            throw new LogFormatException($"FileContentRun payload: its last read at instruction {v.LastInstrCount} comes before its first at {v.FirstInstrCount}");
        if (v.Offset < 0 || v.Path.Length == 0)
            throw new LogFormatException($"FileContentRun payload: offset {v.Offset} of path \"{v.Path}\"");
        return v;
    }
}

/// <summary>Extension record: the payload is <see cref="Data"/> verbatim (no length prefix).</summary>
public struct Opaque : IRecordPayload<Opaque>
{
    private byte[]? _data;

    public byte[] Data { readonly get => _data ?? []; set => _data = value; }

    public static RecordKind Kind => RecordKind.Opaque;
    public readonly int EncodedLength => Data.Length;

    public readonly void Encode(Span<byte> destination) => Data.CopyTo(destination);

    public static Opaque Decode(ReadOnlySpan<byte> payload) => new() { Data = payload.ToArray() };
}

/// <summary>
/// What the virtual network interface received, taken at a syscall of the guest (the only place where the guest
/// can observe its network stack): the host clock at that moment, which drives the in-VM stack's timers, and the
/// Ethernet frames read from the TAP device, in arrival order. A replay hands the stack the same frames and clock
/// value at the same instruction, so the stack — and every segment it sends — is reproduced exactly.
/// Layout: <c>u64 InstrCount | i32 Tid | i64 ClockNs | u32 n | n × bytes Frame</c>.
/// </summary>
public struct NetInput : IRecordPayload<NetInput>
{
    private List<byte[]>? _frames;

    public ulong InstrCount { get; set; }
    public int Tid { get; set; }
    /// <summary>The VM's network clock (host CLOCK_MONOTONIC, ns) when the frames were taken.</summary>
    public long ClockNs { get; set; }
    public List<byte[]> Frames { readonly get => _frames ?? []; set => _frames = value; }

    public static RecordKind Kind => RecordKind.NetInput;

    public readonly int EncodedLength
    {
        get
        {
            int n = 8 + 4 + 8 + 4;
            foreach (var f in Frames) n = checked(n + PayloadWriter.BytesSize(f.Length));
            return n;
        }
    }

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.I32(Tid);
        w.I64(ClockNs);
        w.U32((uint)Frames.Count);
        foreach (var f in Frames) w.Bytes(f);
        w.AssertEnd();
    }

    public static NetInput Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "NetInput payload");
        var v = new NetInput { InstrCount = r.U64(), Tid = r.I32(), ClockNs = r.I64() };
        int n = r.Count(4);
        var frames = new List<byte[]>(n);
        for (int i = 0; i < n; i++) frames.Add(r.Bytes());
        v.Frames = frames;
        r.End();
        return v;
    }
}

/// <summary>
/// A replica that took over the machine brought the virtual network interface up on its own wire here: the first
/// record a survivor logs after the records of the replica it replaced. From this instruction on, the stack runs at
/// <see cref="ClockNs"/> (the clock the log left it at) and repairs its connections (<c>NetStack.TakeOver</c>: the
/// frames that follow are logged as any transmission). A replay of the survivor's log does the same here, so the
/// takeover's segments and the stack's state after it are reproduced exactly.
/// Layout: <c>u64 InstrCount | i32 Tid | i64 ClockNs</c>.
/// </summary>
public struct NetTakeover : IRecordPayload<NetTakeover>
{
    public ulong InstrCount { get; set; }
    public int Tid { get; set; }
    /// <summary>The stack's clock (ns) at the takeover.</summary>
    public long ClockNs { get; set; }

    public static RecordKind Kind => RecordKind.NetTakeover;
    public readonly int EncodedLength => 8 + 4 + 8;

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(InstrCount);
        w.I32(Tid);
        w.I64(ClockNs);
        w.AssertEnd();
    }

    public static NetTakeover Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "NetTakeover payload");
        var v = new NetTakeover { InstrCount = r.U64(), Tid = r.I32(), ClockNs = r.I64() };
        r.End();
        return v;
    }
}

/// <summary>
/// The last record of a complete recording, written once after <see cref="Exit"/>. <see cref="RecordCount"/> is the
/// number of records before it (= its own sequence number - 1) and <see cref="Digest"/> the digest of every log
/// byte before it, of the kind the log's version defines (<see cref="LogDigest"/>: XXH3-128 since v6, SHA-256 before) (the encoded header and all frames, as written). A reader that finds no End record knows the
/// recording ended early (a crashed recorder or a cut file); a reader refuses any byte after it (appended records).
/// The digest is unkeyed: it proves completeness against accident, not authorship; forged content is caught by the
/// replay's own checks.
/// Layout: <c>u64 RecordCount | bytes Digest</c> (Digest is 16 bytes, 32 in v2-v5).
/// </summary>
public struct End : IRecordPayload<End>
{
    private byte[]? _digest;

    public ulong RecordCount { get; set; }
    public byte[] Digest { readonly get => _digest ?? []; set => _digest = value; }

    /// <summary>A v2-v5 log's digest length (SHA-256); v6 logs carry XXH3-128's 16 bytes (<see cref="LogDigest"/>).</summary>
    const int Sha256Length = 32;

    public static RecordKind Kind => RecordKind.End;
    public readonly int EncodedLength => checked(8 + PayloadWriter.BytesSize(Digest.Length));

    public readonly void Encode(Span<byte> destination)
    {
        var w = new PayloadWriter(destination);
        w.U64(RecordCount);
        w.Bytes(Digest);
        w.AssertEnd();
    }

    public static End Decode(ReadOnlySpan<byte> payload)
    {
        var r = new PayloadReader(payload, "End payload");
        var v = new End { RecordCount = r.U64(), Digest = r.Bytes() };
        r.End();
        // (which of the two the log's version carries is the reader's check: LogReader.CheckEnd)
        if (v.Digest.Length is not (Xxh128.HashLength or Sha256Length))
            throw new LogFormatException($"malformed End payload: digest of {v.Digest.Length} bytes, expected {Xxh128.HashLength} or {Sha256Length}");
        return v;
    }
}
