using System.Buffers;
using System.Numerics;

namespace ReVirt.Log;

/// <summary>
/// Appends records to a log. Writes the header to the sink on construction, then assigns consecutive
/// sequence numbers (starting at <see cref="LogFormat.FirstSequence"/>) and encodes each record into a
/// reused scratch buffer, so appending performs no allocation once the buffer has grown. Not thread-safe:
/// the owner serialises calls. Every byte handed to the sink is also fed to a running digest of the header's format
/// version (<see cref="LogDigest"/>), so that <see cref="Finish"/> can close the log with an <see cref="End"/> record
/// proving its completeness.
/// </summary>
public sealed class LogWriter : IDisposable, IAsyncDisposable
{
    private const int LargeFrame = 1 << 20;
    private readonly ILogSink _sink;
    private readonly bool _leaveOpen;
    private byte[] _scratch = new byte[4096];
    private readonly LogDigest _digest;
    private bool _disposed, _finished;

    public LogWriter(LogHeader header, ILogSink sink, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(sink);
        _sink = sink;
        _leaveOpen = leaveOpen;
        Header = header;
        _digest = LogDigest.ForVersion(header.Version);
        var encoded = header.Encode();
        sink.Append(encoded);
        _digest.Append(encoded);
        HeaderLength = encoded.Length;
        BytesWritten = encoded.Length;
    }

    /// <summary>
    /// Continues a log whose first <paramref name="lastSequence"/> records (and header) already exist elsewhere — a
    /// backup that took over goes on recording after the records it received. <paramref name="prefix"/> holds those
    /// bytes (header included); they feed the running digest, so the End record covers the whole log, and are not
    /// written again. Nothing is appended to <paramref name="sink"/> until the first new record.
    /// </summary>
    public LogWriter(LogHeader header, ILogSink sink, ulong lastSequence, Stream prefix, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(sink);
        _sink = sink;
        _leaveOpen = leaveOpen;
        Header = header;
        _digest = LogDigest.ForVersion(header.Version);
        HeaderLength = header.Encode().Length;
        var buf = new byte[1 << 16];
        int n;
        long total = 0;
        while ((n = prefix.Read(buf)) > 0) { _digest.Append(buf.AsSpan(0, n)); total += n; }
        BytesWritten = total;
        LastSequence = lastSequence;
    }

    /// <summary>
    /// Continues a log whose first <paramref name="lastSequence"/> records (and header), <paramref name="bytes"/> bytes
    /// in all, exist elsewhere and were digested as they were written (<paramref name="digestSoFar"/>, of this log's
    /// version, over exactly those bytes; the writer owns it from now on): as the constructor over a prefix stream,
    /// without reading the prefix again.
    /// </summary>
    public LogWriter(LogHeader header, ILogSink sink, ulong lastSequence, LogDigest digestSoFar, long bytes, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(sink);
        ArgumentNullException.ThrowIfNull(digestSoFar);
        _sink = sink;
        _leaveOpen = leaveOpen;
        Header = header;
        _digest = digestSoFar;
        HeaderLength = header.Encode().Length;
        if (bytes < HeaderLength) throw new ArgumentOutOfRangeException(nameof(bytes), $"{bytes} bytes do not hold the {HeaderLength}-byte header");
        BytesWritten = bytes;
        LastSequence = lastSequence;
    }

    /// <summary>Creates a log file at <paramref name="path"/> (overwriting it) and writes the header.</summary>
    public static LogWriter Create(string path, LogHeader header, bool durable = false)
    {
        var sink = new FileLogSink(path, durable);
        try { return new LogWriter(header, sink); }
        catch { sink.Dispose(); throw; }
    }

    public LogHeader Header { get; }

    public ILogSink Sink => _sink;

    /// <summary>Length of the encoded header = offset of the first record.</summary>
    public int HeaderLength { get; }

    /// <summary>Bytes handed to the sink so far (header included) = offset of the next record.</summary>
    public long BytesWritten { get; private set; }

    /// <summary>Sequence number of the last record appended; 0 if none.</summary>
    public ulong LastSequence { get; private set; }

    /// <summary>Sequence number the next record will get.</summary>
    public ulong NextSequence => LastSequence + 1;

    /// <summary>True once <see cref="Finish"/> wrote the End record: nothing more can be appended.</summary>
    public bool Finished => _finished;

    /// <summary>
    /// Closes a complete recording: appends the <see cref="End"/> record (record count and digest of every byte
    /// written so far) and flushes. Call once, after the Exit record; later appends throw.
    /// </summary>
    public ulong Finish()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_finished) throw new InvalidOperationException("the log already ends with its End record");
        EndContentRun();
        ulong seq = Append(new End { RecordCount = LastSequence, Digest = _digest.Current() });
        _finished = true;
        _sink.Flush();
        return seq;
    }

    /// <summary>Encodes and appends a record; returns its sequence number.</summary>
    public ulong Append<T>(in T record) where T : struct, IRecordPayload<T>
    {
        var payload = Begin(record.EncodedLength);
        record.Encode(payload);
        return Commit(T.Kind);
    }

    /// <summary>
    /// Appends the <see cref="Output"/> record of <paramref name="bytes"/> written to <paramref name="fd"/>, from spans:
    /// the record <c>Append(new Output { ... })</c> writes, without the arrays that record holds (a recording logs every
    /// write to stdout and stderr: no allocation per write).
    /// </summary>
    public ulong AppendOutput(ulong instrCount, int fd, ulong totalBytes, ReadOnlySpan<byte> digest, ReadOnlySpan<byte> bytes)
    {
        var payload = Begin(Output.EncodedLengthOf(digest.Length, bytes.Length));
        Output.Encode(payload, instrCount, fd, totalBytes, digest, bytes);
        return Commit(RecordKind.Output);
    }

    /// <summary>
    /// Appends the <see cref="SyscallResult"/> of a call whose one memory write is the <paramref name="count"/> bytes at
    /// <paramref name="addr"/> that <paramref name="source"/> copies straight into the record (no <see
    /// cref="SyscallResult.Data"/>): the record <c>Append(new SyscallResult { ..., MemWrites = [new(addr, bytes)] })</c>
    /// writes, without the copy, the list and the write object (a read logged by value, once per read).
    /// </summary>
    public ulong AppendOneWrite(ulong instrCount, int tid, int nr, long result, ulong addr, int count, IWriteSource source)
    {
        var payload = Begin(SyscallResult.OneWriteLength(count));
        source.CopyTo(addr, SyscallResult.EncodeOneWrite(payload, instrCount, tid, nr, result, addr, count));
        return Commit(RecordKind.SyscallResult);
    }

    /// <summary>The frame being encoded (<see cref="Begin"/> to <see cref="Commit"/>): the scratch buffer, or a rented
    /// array for a large record; its length.</summary>
    byte[]? _frame;
    bool _frameRented;
    int _frameLength;

    /// <summary>Starts a record whose payload is <paramref name="payloadLength"/> bytes (a held run of reads is written
    /// first): the span its payload is encoded into, before <see cref="Commit"/> and no other call of this writer.</summary>
    Span<byte> Begin(int payloadLength)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_finished) throw new InvalidOperationException("the log already ends with its End record: nothing may follow it");
        if (_run?.Open == true) EndContentRun();
        int frameLength = RecordFrame.FrameLength(payloadLength);
        if (frameLength <= LargeFrame)
        {
            if (_scratch.Length < frameLength)
                _scratch = new byte[Math.Max((int)BitOperations.RoundUpToPowerOf2((uint)frameLength), _scratch.Length * 2)];
            (_frame, _frameRented) = (_scratch, false);
        }
        // Do not keep a huge scratch buffer alive for a rare large record.
        else (_frame, _frameRented) = (ArrayPool<byte>.Shared.Rent(frameLength), true);
        _frameLength = frameLength;
        return _frame.AsSpan(RecordFrame.PayloadOffset, payloadLength);
    }

    /// <summary>Seals the record <see cref="Begin"/> started as a record of <paramref name="kind"/> and appends it;
    /// returns its sequence number.</summary>
    ulong Commit(RecordKind kind)
    {
        var buf = _frame!;
        ulong seq = LastSequence + 1;
        try
        {
            var frame = buf.AsSpan(0, _frameLength);
            RecordFrame.Seal(frame, seq, kind);
            _sink.Append(frame);
            _digest.Append(frame);
        }
        finally
        {
            if (_frameRented) ArrayPool<byte>.Shared.Return(buf);
            (_frame, _frameRented) = (null, false);
        }
        LastSequence = seq;
        BytesWritten += _frameLength;
        return seq;
    }

    public ulong Append(in SyscallResult record) => Append<SyscallResult>(in record);
    public ulong Append(in Rdtsc record) => Append<Rdtsc>(in record);
    public ulong Append(in Rdrand record) => Append<Rdrand>(in record);
    public ulong Append(in Signal record) => Append<Signal>(in record);
    public ulong Append(in Preempt record) => Append<Preempt>(in record);
    public ulong Append(in Checkpoint record) => Append<Checkpoint>(in record);
    public ulong Append(in Output record) => Append<Output>(in record);
    public ulong Append(in Exit record) => Append<Exit>(in record);
    public ulong Append(in FileContent record) => Append<FileContent>(in record);
    public ulong Append(in FileContentRun record) => Append<FileContentRun>(in record);
    public ulong Append(in Opaque record) => Append<Opaque>(in record);

    /// <summary>Whether this log's format version has <see cref="FileContentRun"/> records (v7 on): only then does
    /// <see cref="AppendContentRead"/> take reads.</summary>
    public bool HoldsContentRuns => Header.Version >= LogFormat.ContentRunsSince;

    PendingContentRun? _run;

    /// <summary>
    /// Takes a read(2)/pread64 by reference whose <paramref name="result"/> bytes (of <paramref name="requested"/>) went
    /// to guest memory at <paramref name="addr"/> from <paramref name="path"/> at <paramref name="offset"/>: it joins
    /// the held run when it continues it (<see cref="FileContentRun"/>), otherwise the held run is written and this read
    /// starts the next. Returns where the caller copies the read's bytes, at once, before any other call of this writer.
    /// <paramref name="check"/>: null when the read itself was proven to come from the unchanged file; otherwise what
    /// proves it at the run's end, and wherever the copy the run keeps of its unproven reads would outgrow
    /// <see cref="PendingContentRun.TailBytes"/> (<see cref="IContentSourceCheck"/>). The run's record is written before the next
    /// record, flush or End, or by <see cref="EndContentRun"/> (<see cref="LastSequence"/> does not count it until
    /// then). Only for a log that <see cref="HoldsContentRuns"/>.
    /// </summary>
    public Span<byte> AppendContentRead(ulong instrCount, int tid, int nr, string path, long offset, int requested, long result, ulong addr,
        IContentSourceCheck? check = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!HoldsContentRuns) throw new InvalidOperationException($"a log of format version {Header.Version} has no FileContentRun records");
        if (_finished) throw new InvalidOperationException("the log already ends with its End record: nothing may follow it");
        if (result <= 0 || result > requested) throw new ArgumentOutOfRangeException(nameof(result), $"a read by reference of {result} bytes of {requested}");
        var run = _run ??= new PendingContentRun();
        // a read that continues the run may first have the reads held proven (PendingContentRun.TryProveHeld); when
        // that finds the file changed, the run is written and the read starts the next
        if (!run.Continues(tid, nr, path, offset, result, check) || !run.TryProveHeld(result))
        {
            if (run.Open) EndContentRun();
            run.Start(instrCount, tid, nr, path, offset);
        }
        return run.Add(instrCount, requested, result, addr, check);
    }

    /// <summary>
    /// Writes the held run of reads (<see cref="AppendContentRead"/>), if any; the sequence number of its last record, or
    /// 0. When a read of the run needs its check and the check finds the file changed, the reads an earlier proof of the
    /// run proved are written as their own record (<see cref="PendingContentRun.TryProveHeld"/>) and each later read by
    /// value (a <see cref="SyscallResult"/> with the bytes the guest got, at its instruction count, as a read of a file
    /// that is not stable is always logged): the log never names a file whose bytes the guest did not get.
    /// </summary>
    public ulong EndContentRun()
    {
        if (_run is not { Open: true } run) return 0;
        switch (run.Take(out var many, out var one))
        {
            case PendingContentRun.Form.Run: return Append(in many);
            case PendingContentRun.Form.Single: return Append(in one);
        }
        ulong seq = run.ProvenRecord(out many, out one) switch
        {
            PendingContentRun.Form.Run => Append(in many),
            PendingContentRun.Form.Single => Append(in one),
            _ => 0,
        };
        for (int i = run.FirstByValueRead; i < run.ByValueEnd; i++) seq = Append(run.ReadByValue(i));
        return seq;
    }

    public void Flush()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        EndContentRun();
        _sink.Flush();
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        EndContentRun();
        return _sink.FlushAsync(cancellationToken);
    }

    /// <summary>Flushes, then disposes the sink unless it was passed with leaveOpen.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        if (!_finished) EndContentRun();
        _disposed = true;
        _digest.Dispose();
        try { _sink.Flush(); }
        finally { if (!_leaveOpen) _sink.Dispose(); }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        if (!_finished) EndContentRun();
        _disposed = true;
        _digest.Dispose();
        try { await _sink.FlushAsync().ConfigureAwait(false); }
        finally
        {
            if (_leaveOpen) { }
            else if (_sink is IAsyncDisposable ad) await ad.DisposeAsync().ConfigureAwait(false);
            else _sink.Dispose();
        }
    }
}
