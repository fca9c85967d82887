namespace ReVirt.Log;

/// <summary>
/// Reads a log from a stream (seekable or not): validates the header on construction, then yields
/// records in order, verifying each frame's checksums and that sequence numbers run 1, 2, 3...
/// (<see cref="OverVerifiedFrames"/>: a stream of frames whose checksums were verified on their way in).
/// </summary>
/// <remarks>
/// Damage raises <see cref="LogFormatException"/> with the record number and byte offset
/// ("checksum mismatch in record #N at offset X"); the reader then stays faulted.
/// A partial last record (the writer stopped mid-record) is not an error: reading ends with
/// <see cref="Truncated"/> set, <see cref="ValidEndOffset"/> at the end of the last complete record and
/// <see cref="LastSequence"/> its number. The records returned are never affected by a torn tail.
/// <para>Completeness: the reader keeps a digest of every byte it has read, of the kind the header's format version
/// defines (<see cref="LogDigest"/>). An <see cref="End"/> record is checked
/// against it (record count and digest; a mismatch is damage) and returned like any record; it sets
/// <see cref="Complete"/>, and any byte after it raises <see cref="LogFormatException"/> (records appended to a
/// finished recording). A log that ends (cleanly at a record boundary or torn) without an End record ended early:
/// <see cref="Complete"/> stays false.</para>
/// <para>Allocation is bounded by what is present: a frame header announcing more bytes than a seekable stream
/// still holds is a torn tail, found without allocating the announced length.</para>
/// </remarks>
public sealed class LogReader : IDisposable
{
    private readonly Stream _stream;
    private readonly Stream _input;
    private readonly bool _leaveOpen;
    private readonly byte[] _frameHeader = new byte[RecordFrame.HeaderSize];
    private long _offset;
    private LogFormatException? _fault;
    private readonly LogDigest _digest = null!; // (set once the header's version is known)
    private bool _disposed;
    // set only by OverVerifiedFrames: the frames' checksums were verified before they entered the stream
    private readonly bool _checksumsVerified;

    /// <exception cref="LogFormatException">The stream does not start with a valid v1 header.</exception>
    public LogReader(Stream stream, bool leaveOpen = false) : this(stream, leaveOpen, 0) { }

    /// <summary>
    /// A log whose first <paramref name="startsAfter"/> records are not in the stream: a replica that started from a
    /// machine snapshot holds the records after it only. Sequence numbers run from startsAfter+1; the End record's
    /// count is checked, its digest is not (it covers records this stream does not hold).
    /// </summary>
    public LogReader(Stream stream, bool leaveOpen, ulong startsAfter) : this(stream, leaveOpen, startsAfter, checksumsVerified: false) { }

    /// <summary>
    /// A reader over a stream whose record frames were each verified before they entered it, by
    /// <see cref="RecordFrame.CheckRun"/> (a replica's data link thread verifies every batch it receives, and only
    /// verified batches reach its replay's pipe): the frames' checksums are not computed a second time. Everything
    /// else is checked as for any log: the log header (with its checksum), each frame's length bounds and sequence
    /// number, the End record's count and digest, and that nothing follows the End record. Never for bytes read from
    /// a file or any other source that <see cref="RecordFrame.CheckRun"/> has not seen: a log file's damage is found
    /// only by its checksums.
    /// </summary>
    public static LogReader OverVerifiedFrames(Stream stream, ulong startsAfter = 0) =>
        new(stream, leaveOpen: true, startsAfter, checksumsVerified: true);

    private LogReader(Stream stream, bool leaveOpen, ulong startsAfter, bool checksumsVerified)
    {
        _checksumsVerified = checksumsVerified;
        LastSequence = startsAfter;
        StartsAfter = startsAfter;
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
        _leaveOpen = leaveOpen;
        _input = stream is MemoryStream or BufferedStream ? stream : new BufferedStream(stream, 64 * 1024);
        try
        {
            Header = LogHeader.Read(_input, out var encodedHeader);
            _digest = LogDigest.ForVersion(Header.Version);
            _digest.Append(encodedHeader);
        }
        catch
        {
            if (!leaveOpen) stream.Dispose();
            throw;
        }
        _offset = Header.EncodedLength;
        ValidEndOffset = _offset;
    }

    /// <summary>Opens a log file for reading (the writer may still have it open).</summary>
    public static LogReader Open(string path)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
        return new LogReader(fs);
    }

    public LogHeader Header { get; }

    /// <summary>Length of the header = offset of the first record.</summary>
    public long HeaderLength => Header.EncodedLength;

    /// <summary>Records before the stream's first (a log that starts after a snapshot); 0 for a whole log.</summary>
    public ulong StartsAfter { get; }

    /// <summary>Sequence number of the last valid record read; 0 if none yet.</summary>
    public ulong LastSequence { get; private set; }

    /// <summary>Number of valid records read so far (equals <see cref="LastSequence"/>).</summary>
    public ulong RecordCount => LastSequence;

    /// <summary>Offset just past the last valid record read (the header length if none).</summary>
    public long ValidEndOffset { get; private set; }

    /// <summary>True once the end of the log has been reached (cleanly or on a torn tail).</summary>
    public bool EndReached { get; private set; }

    /// <summary>True once the End record has been read and matched: the recording is complete (see <see cref="End"/>).</summary>
    public bool Complete { get; private set; }

    /// <summary>True if the log ends with a partial record (only meaningful once <see cref="EndReached"/>).</summary>
    public bool Truncated { get; private set; }

    /// <summary>Bytes of the partial trailing record, if <see cref="Truncated"/>.</summary>
    public long TruncatedBytes { get; private set; }

    /// <summary>"log ends mid-record at offset X after record #N" when <see cref="Truncated"/>, else null.</summary>
    public string? TruncationMessage => Truncated
        ? $"log ends mid-record at offset {ValidEndOffset} after record #{LastSequence} ({TruncatedBytes} bytes of a partial record ignored)"
        : null;

    /// <summary>See <see cref="LogHeader.ProgramMatches(string)"/>.</summary>
    public bool ProgramMatches(string programPath) => Header.ProgramMatches(programPath);

    /// <summary>See <see cref="LogHeader.VerifyProgram(string)"/>.</summary>
    public void VerifyProgram(string programPath) => Header.VerifyProgram(programPath);

    /// <summary>
    /// Reads the next record. Returns false at the end of the log (check <see cref="Truncated"/>).
    /// </summary>
    /// <exception cref="LogFormatException">The next record is damaged or out of sequence.</exception>
    // the input's length when last asked (a log being written grows; one cut meanwhile ends in the short read below)
    long _knownLength;

    public bool TryRead(out LogRecord record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        record = default;
        if (_fault is not null) throw _fault;
        if (EndReached) return false;

        long offset = _offset;
        ulong expected = LastSequence + 1;
        int n = ReadFully(_frameHeader);
        if (Complete)
        {
            EndReached = true;
            if (n == 0) return false;
            throw _fault = new LogFormatException($"{n}{(n == _frameHeader.Length ? " or more" : "")} bytes after the End record: records appended to a finished recording are refused", expected, offset);
        }
        if (n == 0)
        {
            EndReached = true;
            return false;
        }
        if (n < RecordFrame.HeaderSize) return EndTorn(n);

        int length;
        try
        {
            length = _checksumsVerified ? RecordFrame.CheckHeaderFields(_frameHeader, expected, offset)
                                        : RecordFrame.CheckHeader(_frameHeader, expected, offset);
        }
        catch (LogFormatException e) { throw _fault = e; }
        if (_input.CanSeek)
        {
            // never allocate more than the stream still holds: a length pointing past the end is a torn tail. The
            // stream's length is asked again (an fstat for a file) only when the one last seen would not hold the
            // frame: a log being written grows, and a replay reads thousands of small records
            long need = length - RecordFrame.HeaderSize;
            if (need > _knownLength - _input.Position) _knownLength = _input.Length;
            long left = _knownLength - _input.Position;
            if (need > left) return EndTorn(RecordFrame.HeaderSize + left);
        }

        var frame = new byte[length];
        _frameHeader.CopyTo(frame, 0);
        n = ReadFully(frame.AsSpan(RecordFrame.HeaderSize));
        if (n < length - RecordFrame.HeaderSize) return EndTorn(RecordFrame.HeaderSize + n);

        if (!_checksumsVerified)
        {
            try { RecordFrame.CheckTrailer(frame, offset); }
            catch (LogFormatException e) { throw _fault = e; }
        }
        if ((RecordKind)frame[RecordFrame.KindOffset] == RecordKind.End)
        {
            try { CheckEnd(new LogRecord(frame, offset), expected); }
            catch (LogFormatException e) { throw _fault = e; }
            Complete = true;
        }
        _digest.Append(frame);

        _offset += length;
        ValidEndOffset = _offset;
        LastSequence = expected;
        record = new LogRecord(frame, offset);
        return true;
    }

    /// <summary>Yields the remaining records; afterwards inspect <see cref="Truncated"/>.</summary>
    public IEnumerable<LogRecord> ReadAll()
    {
        while (TryRead(out var r)) yield return r;
    }

    /// <summary>Reads to the end, validating everything; returns the number of records read by this call.</summary>
    public ulong Verify()
    {
        ulong n = 0;
        while (TryRead(out _)) n++;
        return n;
    }

    /// <summary>The End record must count the records before it and carry the digest of every byte before it.</summary>
    private void CheckEnd(LogRecord record, ulong sequence)
    {
        var end = record.Decode<End>();
        if (end.RecordCount != sequence - 1)
            throw new LogFormatException($"the End record counts {end.RecordCount} records but {sequence - 1} precede it", sequence, record.Offset);
        if (end.Digest.Length != LogDigest.LengthFor(Header.Version))
            throw new LogFormatException($"the End record's digest is {end.Digest.Length} bytes, a log of version {Header.Version} carries {LogDigest.LengthFor(Header.Version)}", sequence, record.Offset);
        if (StartsAfter == 0 && !end.Digest.AsSpan().SequenceEqual(_digest.Current()))
            throw new LogFormatException("the End record's digest does not match the log before it (records changed, removed or inserted)", sequence, record.Offset);
    }

    private bool EndTorn(long partialBytes)
    {
        EndReached = true;
        Truncated = true;
        TruncatedBytes = partialBytes;
        return false;
    }

    private int ReadFully(Span<byte> buffer) =>
        buffer.Length == 0 ? 0 : _input.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _digest?.Dispose();
        if (!_leaveOpen) _stream.Dispose();
    }
}
