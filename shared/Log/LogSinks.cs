using System.Buffers;
using ReVirt.Linux;

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
/// A log file written with the host's own calls (open, write, fsync, close): <see cref="Append"/> is a memcpy into a
/// buffer; the file is written when the buffer fills or on <see cref="Flush"/>; records larger than the buffer go
/// straight to the file. What <see cref="LogWriter.Create"/> records to. Why not a <see cref="FileStream"/>: making
/// the first one in a process (its strategy types, the handle's checks, an advisory lock) cost a recording of
/// `busybox true` about 5 ms of CPU, a share a run never pays. An error of the medium throws
/// <see cref="IOException"/> naming the file and the errno; nothing appended before it is dropped from the buffer.
/// Not thread-safe.
/// </summary>
public sealed unsafe class FileLogSink : ILogSink
{
    private readonly string _path;
    private int _fd;
    private readonly byte[] _buffer;
    private int _used;

    /// <summary>Creates (or truncates) <paramref name="path"/>, mode 0666 before the umask, as a FileStream with
    /// FileMode.Create makes it.</summary>
    /// <param name="durable">If true, <see cref="Flush"/> also asks the OS to write the file to disk (fsync).</param>
    public FileLogSink(string path, bool durable = false, int bufferSize = 64 * 1024)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 1);
        _path = path;
        long fd = HostSys.WithPath(0, path, p => HostSys.Call(Nr.openat, At.FDCWD, p, O.WRONLY | O.CREAT | O.TRUNC | O.CLOEXEC, 0x1B6));
        if (fd < 0) throw Failure("create", fd);
        _fd = (int)fd;
        _buffer = new byte[bufferSize];
        Durable = durable;
    }

    /// <summary>Flushing also writes the file to disk (fsync).</summary>
    public bool Durable { get; }

    public void Append(ReadOnlySpan<byte> encodedRecord)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        if (encodedRecord.Length > _buffer.Length - _used)
        {
            WriteBuffer();
            if (encodedRecord.Length >= _buffer.Length)
            {
                WriteAll(encodedRecord);
                return;
            }
        }
        encodedRecord.CopyTo(_buffer.AsSpan(_used));
        _used += encodedRecord.Length;
    }

    public void Flush()
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        WriteBuffer();
        if (!Durable) return;
        long r = HostSys.Call(Nr.fsync, _fd);
        if (r < 0) throw Failure("fsync", r);
    }

    private void WriteBuffer()
    {
        if (_used == 0) return;
        WriteAll(_buffer.AsSpan(0, _used));
        _used = 0;
    }

    private void WriteAll(ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            int off = 0;
            while (off < data.Length)
            {
                long r = HostSys.Call(Nr.write, _fd, (long)(p + off), data.Length - off);
                if (r == -Errno.EINTR) continue;
                if (r <= 0) throw Failure("write", r == 0 ? -Errno.EIO : r); // (0: a medium that takes nothing)
                off += (int)r;
            }
        }
    }

    private IOException Failure(string what, long errno)
        => new($"{_path}: {what}: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage((int)-errno)}", (int)-errno);

    public void Dispose()
    {
        if (_fd < 0) return;
        try { Flush(); }
        finally
        {
            HostSys.Call(Nr.close, _fd);
            _fd = -1;
        }
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
