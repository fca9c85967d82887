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
    private readonly Stream? _stream;
    private readonly bool _leaveOpen;
    // where the frames come from: copied out of a stream, or read in place from a source of verified chunks
    private readonly FrameInput _frames;
    private long _offset;
    private LogFormatException? _fault;
    private readonly LogDigest _digest = null!; // (set once the header's version is known)
    private bool _disposed;

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

    /// <summary>
    /// As <see cref="OverVerifiedFrames"/>, from a source that hands over whole chunks of verified frames (a replica's
    /// replay pipe: each chunk one held burst of batches, every frame whole): each record is a slice of its chunk, so
    /// reading one copies and allocates nothing (a stream reader copies every frame twice into an array of its own).
    /// The log header comes first (it may end inside a chunk); a frame that runs past the end of its chunk is damage
    /// (<see cref="LogFormatException"/>), never joined to the next chunk.
    /// </summary>
    public static LogReader OverVerifiedChunks(IFrameChunks source, ulong startsAfter = 0) => new(source, startsAfter);

    private LogReader(Stream stream, bool leaveOpen, ulong startsAfter, bool checksumsVerified)
    {
        LastSequence = startsAfter;
        StartsAfter = startsAfter;
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
        _leaveOpen = leaveOpen;
        var input = stream is MemoryStream or BufferedStream ? stream : new BufferedStream(stream, 64 * 1024);
        try
        {
            Header = LogHeader.Read(input, out var encodedHeader);
            _digest = LogDigest.ForVersion(Header.Version);
            _digest.Append(encodedHeader);
        }
        catch
        {
            if (!leaveOpen) stream.Dispose();
            throw;
        }
        _frames = new StreamFrames(this, input, checksumsVerified);
        _offset = Header.EncodedLength;
        ValidEndOffset = _offset;
    }

    private LogReader(IFrameChunks source, ulong startsAfter)
    {
        ArgumentNullException.ThrowIfNull(source);
        LastSequence = startsAfter;
        StartsAfter = startsAfter;
        _leaveOpen = true;
        var frames = new InPlaceFrames(this, source);
        Header = LogHeader.Read(frames.HeaderStream(), out var encodedHeader);
        _digest = LogDigest.ForVersion(Header.Version);
        _digest.Append(encodedHeader);
        _frames = frames;
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
    public bool TryRead(out LogRecord record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        record = default;
        if (_fault is not null) throw _fault;
        if (EndReached) return false;

        long offset = _offset;
        ulong expected = LastSequence + 1;
        ReadOnlyMemory<byte> frame;
        try
        {
            if (!_frames.Next(expected, offset, out frame)) return false;
        }
        catch (LogFormatException e) { throw _fault = e; }
        if ((RecordKind)frame.Span[RecordFrame.KindOffset] == RecordKind.End)
        {
            try { CheckEnd(new LogRecord(frame, offset), expected); }
            catch (LogFormatException e) { throw _fault = e; }
            Complete = true;
        }
        else _frames.Digest(frame);

        _offset += frame.Length;
        ValidEndOffset = _offset;
        LastSequence = expected;
        record = new LogRecord(frame, offset);
        return true;
    }

    /// <summary>Where a reader's frames come from: <see cref="Next"/> returns the next frame, checked as far as this
    /// input checks it (the caller checks the End record and keeps the count), or false at the end (a torn tail
    /// reported through <see cref="EndTorn"/>); after the End record any byte is damage.</summary>
    private abstract class FrameInput(LogReader reader)
    {
        protected readonly LogReader R = reader;
        public abstract bool Next(ulong expected, long offset, out ReadOnlyMemory<byte> frame);
        /// <summary>A frame other than the End record joins the log's digest (an input may defer it until
        /// <see cref="DigestSoFar"/>).</summary>
        public abstract void Digest(ReadOnlyMemory<byte> frame);
        /// <summary>The digest of every byte before the frame read last.</summary>
        public virtual byte[] DigestSoFar() => R._digest.Current();

        protected LogFormatException AfterEnd(long bytes, bool orMore, ulong expected, long offset)
        {
            R.EndReached = true;
            return new LogFormatException($"{bytes}{(orMore ? " or more" : "")} bytes after the End record: records appended to a finished recording are refused", expected, offset);
        }
    }

    /// <summary>Frames copied out of a stream into an array each: the header first, checked (with its checksum unless
    /// the frames were verified before they entered the stream), then the rest and the frame's checksum.</summary>
    private sealed class StreamFrames(LogReader reader, Stream input, bool checksumsVerified) : FrameInput(reader)
    {
        private readonly byte[] _frameHeader = new byte[RecordFrame.HeaderSize];
        // the input's length when last asked (a log being written grows; one cut meanwhile ends in the short read below)
        private long _knownLength;

        public override bool Next(ulong expected, long offset, out ReadOnlyMemory<byte> frame)
        {
            frame = default;
            int n = ReadFully(_frameHeader);
            if (R.Complete)
            {
                if (n == 0) { R.EndReached = true; return false; }
                throw AfterEnd(n, n == _frameHeader.Length, expected, offset);
            }
            if (n == 0)
            {
                R.EndReached = true;
                return false;
            }
            if (n < RecordFrame.HeaderSize) return R.EndTorn(n);

            int length = checksumsVerified ? RecordFrame.CheckHeaderFields(_frameHeader, expected, offset)
                                           : RecordFrame.CheckHeader(_frameHeader, expected, offset);
            if (input.CanSeek)
            {
                // never allocate more than the stream still holds: a length pointing past the end is a torn tail. The
                // stream's length is asked again (an fstat for a file) only when the one last seen would not hold the
                // frame: a log being written grows, and a replay reads thousands of small records
                long need = length - RecordFrame.HeaderSize;
                if (need > _knownLength - input.Position) _knownLength = input.Length;
                long left = _knownLength - input.Position;
                if (need > left) return R.EndTorn(RecordFrame.HeaderSize + left);
            }

            var bytes = new byte[length];
            _frameHeader.CopyTo(bytes, 0);
            n = ReadFully(bytes.AsSpan(RecordFrame.HeaderSize));
            if (n < length - RecordFrame.HeaderSize) return R.EndTorn(RecordFrame.HeaderSize + n);
            if (!checksumsVerified) RecordFrame.CheckTrailer(bytes, offset);
            frame = bytes;
            return true;
        }

        public override void Digest(ReadOnlyMemory<byte> frame) => R._digest.Append(frame.Span);

        private int ReadFully(Span<byte> buffer) =>
            buffer.Length == 0 ? 0 : input.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
    }

    /// <summary>
    /// Frames read in place from chunks of verified frames (<see cref="OverVerifiedChunks"/>): each frame is a slice
    /// of its chunk, its header fields checked (length bounds, sequence), its checksums not computed again. The digest
    /// is taken of a chunk's frames together, as the reader leaves the chunk or meets the End record, rather than one
    /// call per frame; a log that starts after a snapshot is not digested at all (its End record's digest covers
    /// records it does not hold and is not checked).
    /// </summary>
    private sealed class InPlaceFrames(LogReader reader, IFrameChunks source) : FrameInput(reader)
    {
        private readonly IFrameChunks _source = source;
        private ReadOnlyMemory<byte> _chunk;
        // the read position, the start of the frame read last, and how far the digest has taken the chunk
        private int _pos, _last, _digestedTo;

        /// <summary>The header, read from the first chunks; what follows it in the last of them is the first frames'.</summary>
        public Stream HeaderStream() => new HeaderReader(this);

        public override bool Next(ulong expected, long offset, out ReadOnlyMemory<byte> frame)
        {
            frame = default;
            while (_pos == _chunk.Length)
            {
                DigestChunk();
                _chunk = _source.NextChunk();
                _pos = _digestedTo = 0;
                if (_chunk.IsEmpty) { R.EndReached = true; return false; }
            }
            int left = _chunk.Length - _pos;
            if (R.Complete) throw AfterEnd(left, true, expected, offset);
            if (left < RecordFrame.HeaderSize) throw new LogFormatException($"a chunk of verified frames ends {left} bytes into a frame header", expected, offset);
            var span = _chunk.Span[_pos..];
            int length = RecordFrame.CheckHeaderFields(span[..RecordFrame.HeaderSize], expected, offset);
            if (length > left) throw new LogFormatException($"a frame of {length} bytes runs past the end of its chunk of verified frames ({left} bytes left)", expected, offset);
            frame = _chunk.Slice(_pos, length);
            _last = _pos;
            _pos += length;
            return true;
        }

        // deferred: DigestChunk takes the chunk's frames read so far in one call
        public override void Digest(ReadOnlyMemory<byte> frame) { }

        public override byte[] DigestSoFar()
        {
            // every byte before the frame read last (the End record): the chunk's frames before it, once
            if (R.StartsAfter == 0 && _last > _digestedTo) R._digest.Append(_chunk.Span[_digestedTo.._last]);
            _digestedTo = _pos;
            return base.DigestSoFar();
        }

        private void DigestChunk()
        {
            if (R.StartsAfter == 0 && _pos > _digestedTo) R._digest.Append(_chunk.Span[_digestedTo.._pos]);
            _digestedTo = _pos;
        }

        /// <summary>Reads the header's bytes from the chunks; the rest of the chunk it ends in stays for the frames.</summary>
        private sealed class HeaderReader(InPlaceFrames f) : Replication.ReadOnlyStream
        {
            public override int Read(Span<byte> buffer)
            {
                if (f._pos == f._chunk.Length) { f._chunk = f._source.NextChunk(); f._pos = f._digestedTo = 0; }
                int n = Math.Min(buffer.Length, f._chunk.Length - f._pos);
                f._chunk.Span.Slice(f._pos, n).CopyTo(buffer);
                f._pos += n;
                f._digestedTo = f._pos; // the header is digested by the reader as it decodes it
                return n;
            }
        }
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
        if (StartsAfter == 0 && !end.Digest.AsSpan().SequenceEqual(_frames.DigestSoFar()))
            throw new LogFormatException("the End record's digest does not match the log before it (records changed, removed or inserted)", sequence, record.Offset);
    }

    private bool EndTorn(long partialBytes)
    {
        EndReached = true;
        Truncated = true;
        TruncatedBytes = partialBytes;
        return false;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _digest?.Dispose();
        if (!_leaveOpen) _stream?.Dispose();
    }
}
