using System.Buffers;

namespace ReVirt.Log;

/// <summary>
/// Destination of encoded log bytes. <see cref="LogWriter"/> calls <see cref="Append"/> once with the
/// encoded <see cref="LogHeader"/>, then once per record with exactly one complete frame, so a sink
/// that forwards chunks (e.g. over gRPC) sees the header first and then self-contained records.
/// The span is only valid during the call.
/// </summary>
public interface ILogSink : IDisposable
{
    void Append(ReadOnlySpan<byte> encodedRecord);

    /// <summary>Pushes everything appended so far to the underlying medium.</summary>
    void Flush();

    ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Flush();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// Buffered sink over any <see cref="Stream"/>: <see cref="Append"/> is a memcpy into a buffer
/// (records larger than the buffer go straight to the stream); the stream is written when the buffer
/// fills or on <see cref="Flush"/>. Not thread-safe.
/// </summary>
public sealed class StreamLogSink : ILogSink, IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private byte[] _buffer;
    private int _used;
    private bool _disposed;

    public StreamLogSink(Stream stream, bool leaveOpen = false, int bufferSize = 64 * 1024)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanWrite) throw new ArgumentException("stream is not writable", nameof(stream));
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 1);
        _stream = stream;
        _leaveOpen = leaveOpen;
        _buffer = new byte[bufferSize];
    }

    /// <summary>Creates (or overwrites) a log file. Readers may open it concurrently.</summary>
    /// <param name="durable">If true, <see cref="Flush"/> also asks the OS to write the file to disk (fsync).</param>
    public static StreamLogSink CreateFile(string path, bool durable = false, int bufferSize = 64 * 1024)
    {
        var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
        return new StreamLogSink(fs, leaveOpen: false, bufferSize) { Durable = durable };
    }

    /// <summary>If set and the stream is a <see cref="FileStream"/>, flushing also flushes to disk.</summary>
    public bool Durable { get; init; }

    /// <summary>Total bytes appended (buffered or written).</summary>
    public long BytesAppended { get; private set; }

    public Stream BaseStream => _stream;

    public void Append(ReadOnlySpan<byte> encodedRecord)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (encodedRecord.Length > _buffer.Length - _used)
        {
            WriteBuffer();
            if (encodedRecord.Length >= _buffer.Length)
            {
                _stream.Write(encodedRecord);
                BytesAppended += encodedRecord.Length;
                return;
            }
        }
        encodedRecord.CopyTo(_buffer.AsSpan(_used));
        _used += encodedRecord.Length;
        BytesAppended += encodedRecord.Length;
    }

    private void WriteBuffer()
    {
        if (_used == 0) return;
        _stream.Write(_buffer, 0, _used);
        _used = 0;
    }

    public void Flush()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        WriteBuffer();
        if (Durable && _stream is FileStream fs) fs.Flush(flushToDisk: true);
        else _stream.Flush();
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_used > 0)
        {
            await _stream.WriteAsync(_buffer.AsMemory(0, _used), cancellationToken).ConfigureAwait(false);
            _used = 0;
        }
        if (Durable && _stream is FileStream fs) fs.Flush(flushToDisk: true);
        else await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        if (_disposed) return;
        try { Flush(); }
        finally
        {
            _disposed = true;
            if (!_leaveOpen) _stream.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        try { await FlushAsync().ConfigureAwait(false); }
        finally
        {
            _disposed = true;
            if (!_leaveOpen) await _stream.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>Sink collecting everything in memory (tests, in-process transport).</summary>
public sealed class MemoryLogSink : ILogSink
{
    private readonly ArrayBufferWriter<byte> _data = new(4096);

    /// <summary>Number of <see cref="Append"/> calls so far (header included).</summary>
    public int AppendCount { get; private set; }

    public int Length => _data.WrittenCount;

    public ReadOnlySpan<byte> WrittenSpan => _data.WrittenSpan;

    public ReadOnlyMemory<byte> WrittenMemory => _data.WrittenMemory;

    public byte[] ToArray() => _data.WrittenSpan.ToArray();

    public void Append(ReadOnlySpan<byte> encodedRecord)
    {
        _data.Write(encodedRecord);
        AppendCount++;
    }

    public void Flush() { }

    public void Dispose() { }
}

/// <summary>Sink that forwards every append to several sinks in order (e.g. a file and a network stream).</summary>
public sealed class TeeLogSink : ILogSink
{
    private readonly ILogSink[] _sinks;

    public TeeLogSink(params ILogSink[] sinks)
    {
        ArgumentNullException.ThrowIfNull(sinks);
        _sinks = sinks;
    }

    public void Append(ReadOnlySpan<byte> encodedRecord)
    {
        foreach (var s in _sinks) s.Append(encodedRecord);
    }

    public void Flush()
    {
        foreach (var s in _sinks) s.Flush();
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        foreach (var s in _sinks) await s.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        List<Exception>? errors = null;
        foreach (var s in _sinks)
        {
            try { s.Dispose(); }
            catch (Exception e) { (errors ??= []).Add(e); }
        }
        if (errors is not null) throw new AggregateException(errors);
    }
}
