namespace ReVirt.Replication;

/// <summary>
/// A one-way in-memory pipe: a producer <see cref="Append"/>s chunks, a consumer reads them as a <see cref="Stream"/>
/// (e.g. a <see cref="Log.LogReader"/>). A read blocks while the pipe is empty and not completed; after
/// <see cref="Complete"/> it returns what is left, then 0 (end of stream).
/// </summary>
/// <remarks>
/// With <see cref="Gather"/>, a reader that has just consumed everything does not wait to be woken by the next
/// append: it sleeps for up to that long and then reads everything that gathered meanwhile (an append wakes it only
/// once <see cref="GatherBytes"/> wait, and <see cref="Complete"/> at once). A reader that found nothing after
/// such a sleep waits to be woken by the next append as without it. Why: a backup's replay that keeps up with the
/// log would otherwise be woken for every batch (a futex wake on the appending thread and a context switch on each
/// side, several thousand times a second under a request-response load); gathering for a millisecond wakes it once
/// for several batches, at the price of trailing the log by up to that long.
/// </remarks>
public sealed class BlockingPipeStream : ReadOnlyStream
{
    readonly object _lock = new();
    // chunks are copies in arrays of the shared pool (a backup appends one per held burst, thousands a second): each
    // goes back to the pool once read
    readonly Queue<(byte[] Array, int Length)> _chunks = new();
    byte[]? _cur;
    int _curPos, _curLength;
    bool _completed;
    long _buffered;
    bool _starving;
    // the reader consumed something since it last waited (it may sleep to gather), and is sleeping to gather now
    bool _consumed, _gathering;

    /// <summary>How long a reader that has consumed everything sleeps to gather more before it reads again
    /// (<see cref="TimeSpan.Zero"/>: every append wakes it).</summary>
    public TimeSpan Gather { get; init; }

    /// <summary>A reader sleeps to gather right now.</summary>
    public bool Gathering { get { lock (_lock) return _gathering; } }

    /// <summary>Bytes that wake a gathering reader before its sleep is over.</summary>
    public long GatherBytes { get; init; } = 64 * 1024;

    /// <summary>Called (on the reader's thread, outside the pipe's lock) when a read finds the pipe empty and is
    /// about to wait: the reader has consumed everything appended so far. Once per time the pipe runs dry.</summary>
    public Action? Starving { get; set; }

    // when the reader last came back from a wait (or first read): it has been working through what it found since
    long _awakeSince = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>How long the reader has read without waiting (since it last came back from a wait in
    /// <see cref="Read(Span{byte})"/>, or since the pipe was made): read by <see cref="Starving"/>, it tells a reader
    /// that has just worked through a backlog from one that found the pipe dry again right after being woken. Reader's
    /// thread only.</summary>
    public TimeSpan ReadingFor => System.Diagnostics.Stopwatch.GetElapsedTime(_awakeSince);

    public void Append(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(data.Length);
        data.CopyTo(copy);
        lock (_lock)
        {
            if (_completed) { System.Buffers.ArrayPool<byte>.Shared.Return(copy); throw new InvalidOperationException("pipe completed"); }
            _chunks.Enqueue((copy, data.Length));
            _buffered += data.Length;
            _starving = false;
            if (!_gathering || _buffered >= GatherBytes) Monitor.PulseAll(_lock);
        }
    }

    /// <summary>No more data will come: readers get the rest, then end of stream.</summary>
    public void Complete()
    {
        lock (_lock) { _completed = true; Monitor.PulseAll(_lock); }
    }

    public bool Completed { get { lock (_lock) return _completed; } }

    /// <summary>Bytes appended but not yet read.</summary>
    public long Buffered { get { lock (_lock) return _buffered; } }

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty) return 0;
        lock (_lock)
        {
            while (true)
            {
                if (_chunks.Count == 0 && (_cur == null || _curPos >= _curLength) && !_completed && !_starving && Starving is { } starving)
                {
                    _starving = true;
                    Monitor.Exit(_lock);
                    try { starving(); }
                    finally { Monitor.Enter(_lock); }
                    continue;
                }
                if (_cur != null && _curPos < _curLength)
                {
                    int n = Math.Min(buffer.Length, _curLength - _curPos);
                    _cur.AsSpan(_curPos, n).CopyTo(buffer);
                    _curPos += n;
                    _buffered -= n;
                    _consumed = true;
                    return n;
                }
                if (_cur != null) { System.Buffers.ArrayPool<byte>.Shared.Return(_cur); _cur = null; }
                if (_chunks.Count > 0) { (_cur, _curLength) = _chunks.Dequeue(); _curPos = 0; continue; }
                if (_completed) return 0;
                if (_consumed && Gather > TimeSpan.Zero)
                {
                    _consumed = false;
                    _gathering = true;
                    try { Monitor.Wait(_lock, Gather); }
                    finally { _gathering = false; _awakeSince = System.Diagnostics.Stopwatch.GetTimestamp(); }
                    continue;
                }
                _consumed = false;
                Monitor.Wait(_lock);
                _awakeSince = System.Diagnostics.Stopwatch.GetTimestamp();
            }
        }
    }

}
