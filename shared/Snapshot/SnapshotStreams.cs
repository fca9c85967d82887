using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace ReVirt.Snapshot;

/// <summary>
/// The encoder's output: every byte written is appended to a running SHA-256, so the snapshot's trailer is known when
/// its last byte before the trailer is written, without a second pass or a buffer of the whole snapshot.
/// </summary>
sealed class SnapshotOutput(Stream output) : IDisposable
{
    readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    readonly byte[] _scratch = new byte[16];

    /// <summary>Bytes written so far (the trailer included once written).</summary>
    public long Position { get; private set; }

    public void Bytes(ReadOnlySpan<byte> b)
    {
        _sha.AppendData(b);
        output.Write(b);
        Position += b.Length;
    }

    public void U8(byte v) { _scratch[0] = v; Bytes(_scratch.AsSpan(0, 1)); }
    public void I32(int v) { BinaryPrimitives.WriteInt32LittleEndian(_scratch, v); Bytes(_scratch.AsSpan(0, 4)); }
    public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_scratch, v); Bytes(_scratch.AsSpan(0, 4)); }
    public void U64(ulong v) { BinaryPrimitives.WriteUInt64LittleEndian(_scratch, v); Bytes(_scratch.AsSpan(0, 8)); }

    /// <summary>Writes the SHA-256 of everything written before it (not itself hashed) and flushes the output.</summary>
    public void Trailer()
    {
        var h = _sha.GetHashAndReset();
        output.Write(h);
        Position += h.Length;
        output.Flush();
    }

    public void Dispose() => _sha.Dispose();
}

/// <summary>
/// The decoder's input, read once from the front: every byte taken (up to the trailer) is appended to a running
/// SHA-256, so the snapshot is verified by the same pass that restores it. An input that ends before the snapshot's
/// structure does is refused as cut off, naming where; a length is never trusted for an allocation before its bytes
/// have arrived (<see cref="Block"/> grows as they come).
/// </summary>
sealed class SnapshotInput(Stream input) : IDisposable
{
    readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    readonly byte[] _buf = new byte[1 << 16];
    int _pos, _end;
    bool _hashing = true;

    /// <summary>Bytes taken so far.</summary>
    public long Position { get; private set; }

    /// <summary>The next n bytes (n at most 64 KiB), valid until the next call.</summary>
    public ReadOnlySpan<byte> Take(int n, string what)
    {
        if (_end - _pos < n) Fill(n, what);
        var s = _buf.AsSpan(_pos, n);
        _pos += n;
        Position += n;
        if (_hashing) _sha.AppendData(s);
        return s;
    }

    public byte U8(string what) => Take(1, what)[0];
    public int I32(string what) => BinaryPrimitives.ReadInt32LittleEndian(Take(4, what));
    public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));
    public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

    /// <summary>n bytes as an array of their own; the array grows with what arrives, so a damaged length costs at
    /// most the bytes the peer really sent.</summary>
    public byte[] Block(int n, string what)
    {
        var b = new byte[Math.Min(n, 1 << 20)];
        int got = 0;
        while (got < n)
        {
            if (got == b.Length) Array.Resize(ref b, (int)Math.Min(n, 2L * b.Length));
            int k = Math.Min(b.Length - got, _buf.Length);
            Take(k, what).CopyTo(b.AsSpan(got));
            got += k;
        }
        return b;
    }

    /// <summary>The SHA-256 of everything taken so far; what is taken afterwards (the trailer) is not hashed.</summary>
    public byte[] EndHash()
    {
        _hashing = false;
        return _sha.GetHashAndReset();
    }

    /// <summary>True when the input has no byte left.</summary>
    public bool AtEnd()
    {
        if (_pos < _end) return false;
        _pos = _end = 0;
        _end = input.Read(_buf, 0, _buf.Length);
        return _end == 0;
    }

    void Fill(int n, string what)
    {
        if (_pos > 0)
        {
            _buf.AsSpan(_pos, _end - _pos).CopyTo(_buf);
            _end -= _pos;
            _pos = 0;
        }
        while (_end < n)
        {
            int k = input.Read(_buf, _end, _buf.Length - _end);
            if (k == 0) throw new SnapshotFormatException($"the snapshot ends after {Position + _end} bytes, in {what} (cut off in transfer)");
            _end += k;
        }
    }

    public void Dispose() => _sha.Dispose();
}

/// <summary>
/// A bounded hand-over of a snapshot's bytes from one thread to another in chunks: what the encoder writes reaches
/// the link chunk by chunk on the live replica, and what the link delivers reaches the decoder chunk by chunk on the
/// standby. At most <c>capacity</c> chunks wait, so neither side ever holds the snapshot whole: a producer faster than
/// its consumer waits. Either side can end the hand-over early (<see cref="Fail"/>): the other then fails with that
/// reason instead of waiting.
/// </summary>
public sealed class SnapshotPipe(int capacity) : IDisposable
{
    readonly BlockingCollection<ReadOnlyMemory<byte>> _q = new(capacity);
    volatile string? _failed;

    long _added;
    int _mostWaiting;

    /// <summary>Chunks queued so far, and the most that waited at once (at most the capacity).</summary>
    public long Added => Interlocked.Read(ref _added);
    public int MostWaiting => Volatile.Read(ref _mostWaiting);

    /// <summary>Why the hand-over was ended early (null: it was not).</summary>
    public string? Failure => _failed;

    /// <summary>Producer: queues a chunk, waiting up to <paramref name="timeoutMs"/> for room. False: no room yet.</summary>
    /// <exception cref="IOException">The consumer ended the hand-over (<see cref="Fail"/>), with its reason.</exception>
    public bool TryAdd(ReadOnlyMemory<byte> chunk, int timeoutMs, CancellationToken ct = default)
    {
        try
        {
            if (!_q.TryAdd(chunk, timeoutMs, ct)) return false;
            Interlocked.Increment(ref _added);
            int waiting = _q.Count;
            for (int most; waiting > (most = Volatile.Read(ref _mostWaiting)) && Interlocked.CompareExchange(ref _mostWaiting, waiting, most) != most;) { }
            return true;
        }
        catch (InvalidOperationException) { throw new IOException(_failed ?? "the snapshot's consumer is gone"); }
    }

    /// <summary>Producer: no more chunks (the consumer reads the end after the last).</summary>
    public void Complete()
    {
        try { _q.CompleteAdding(); } catch (ObjectDisposedException) { }
    }

    /// <summary>Either side: ends the hand-over with a reason; the other side's next call fails with it.</summary>
    public void Fail(string reason)
    {
        _failed ??= reason;
        Complete();
    }

    /// <summary>Consumer: the next chunk within <paramref name="timeoutMs"/> (false: none yet, or the end: see
    /// <see cref="Ended"/>).</summary>
    public bool TryTake(out ReadOnlyMemory<byte> chunk, int timeoutMs, CancellationToken ct = default) => _q.TryTake(out chunk, timeoutMs, ct);

    /// <summary>Consumer: the producer completed (or failed) and every chunk was taken.</summary>
    public bool Ended => _q.IsCompleted;

    /// <summary>The consumer's side as a stream: reads block for the next chunk, the end reads as the end of the stream,
    /// and a hand-over ended early (<see cref="Fail"/>) as a snapshot cut off with that reason.</summary>
    public Stream Reader() => new PipeReader(this);

    /// <summary>The producer's side as a stream of <paramref name="chunkBytes"/>-byte chunks (pooled arrays: the
    /// consumer gives each back with <see cref="Return"/>). Flush sends a partial chunk; writes wait for room.</summary>
    public Stream Writer(int chunkBytes, CancellationToken ct) => new PipeWriter(this, chunkBytes, ct);

    /// <summary>Gives a chunk a <see cref="Writer"/> queued back to the pool.</summary>
    public static void Return(ReadOnlyMemory<byte> chunk)
    {
        if (System.Runtime.InteropServices.MemoryMarshal.TryGetArray(chunk, out var seg) && seg.Array != null) ArrayPool<byte>.Shared.Return(seg.Array);
    }

    public void Dispose()
    {
        Fail("the snapshot's hand-over was closed");
        while (_q.TryTake(out _)) { }
        _q.Dispose();
    }

    sealed class PipeReader(SnapshotPipe pipe) : ReVirt.Replication.ReadOnlyStream
    {
        ReadOnlyMemory<byte> _cur;

        public override int Read(Span<byte> buffer)
        {
            while (_cur.IsEmpty)
            {
                if (pipe._q.TryTake(out var next, Timeout.Infinite)) { _cur = next; continue; }
                if (pipe._failed is { } why) throw new SnapshotFormatException($"the snapshot's transfer ended early: {why}");
                return 0;
            }
            int n = Math.Min(buffer.Length, _cur.Length);
            _cur.Span[..n].CopyTo(buffer);
            _cur = _cur[n..];
            return n;
        }

    }

    sealed class PipeWriter(SnapshotPipe pipe, int chunkBytes, CancellationToken ct) : ReVirt.Replication.WriteOnlyStream
    {
        byte[]? _buf;
        int _n;

        public override void Write(ReadOnlySpan<byte> data)
        {
            while (!data.IsEmpty)
            {
                _buf ??= ArrayPool<byte>.Shared.Rent(chunkBytes);
                int k = Math.Min(chunkBytes - _n, data.Length);
                data[..k].CopyTo(_buf.AsSpan(_n));
                _n += k;
                data = data[k..];
                if (_n == chunkBytes) Flush();
            }
        }

        public override void Flush()
        {
            if (_n == 0) return;
            var chunk = new ReadOnlyMemory<byte>(_buf, 0, _n);
            _buf = null;
            _n = 0;
            while (!pipe.TryAdd(chunk, Timeout.Infinite, ct)) { }
        }

        protected override void Dispose(bool disposing)
        {
            if (_buf != null) { ArrayPool<byte>.Shared.Return(_buf); _buf = null; }
            base.Dispose(disposing);
        }
    }
}
