using ReVirt.Log;

namespace ReVirt.Replay;

/// <summary>
/// Where a replay stands in a <see cref="FileContentRun"/> record it took at the run's first read: which read comes
/// next, at what offset, how many bytes are left, and the hash of what was served so far. It answers, for each read
/// the guest makes, whether it is the read the recording made (thread, syscall, path, offset; the first and the last
/// at their recorded instruction counts, the others between them) and what it returned: all it asks for, except the
/// last read, which returns what is left. Each non-last read must ask for less than what is left (the last one needs a
/// byte at least). One per run; the replay holds none between runs.
/// </summary>
sealed class ContentRunCursor
{
    readonly FileContentRun _run;
    uint _readsDone;
    long _served;

    public ContentRunCursor(FileContentRun run) => _run = run;

    /// <summary>The record being replayed.</summary>
    public FileContentRun Record => _run;

    /// <summary>The hash of the bytes served so far; the replay appends each read's bytes.</summary>
    public Xxh128 Hash { get; } = new();

    /// <summary>Where the next read starts.</summary>
    public long NextOffset => _run.Offset + _served;

    /// <summary>Reads of the run not yet served.</summary>
    public uint ReadsLeft => _run.Reads - _readsDone;

    /// <summary>True once every read was served.</summary>
    public bool Done => _readsDone == _run.Reads;

    /// <summary>Why this read is not the run's next (a divergence, in words), or null with <paramref name="result"/>
    /// what it returns. No allocation unless it is not.</summary>
    public string? Next(int tid, int nr, string path, long offset, int requested, bool intoGuest, ulong icount, out long result)
    {
        result = 0;
        if (!intoGuest || tid != _run.Tid || nr != _run.Nr || offset != NextOffset || !(ReferenceEquals(path, _run.Path) || path == _run.Path))
            return $"the guest's thread {tid} read {path} at offset {offset} (syscall {nr}) where the recording made {Where()} at offset {NextOffset}";
        bool first = _readsDone == 0, last = ReadsLeft == 1;
        if (first && icount != _run.FirstInstrCount) return $"the first {Where()} came at instruction {icount}, recorded at {_run.FirstInstrCount}";
        if (last && icount != _run.LastInstrCount) return $"the last {Where()} came at instruction {icount}, recorded at {_run.LastInstrCount}";
        if (icount < _run.FirstInstrCount || icount > _run.LastInstrCount)
            return $"{Where()} came at instruction {icount}, outside the recorded run's {_run.FirstInstrCount}..{_run.LastInstrCount}";
        long left = _run.Bytes - _served;
        if (last ? requested < left : requested <= 0 || requested >= left)
            return $"the guest asked for {requested} bytes where {Where()} had {left} bytes left";
        result = last ? left : requested;
        return null;
    }

    string Where() => $"read {_readsDone + 1} of {_run.Reads} of the recording's run of {_run.Path} (thread {_run.Tid}, syscall {_run.Nr})";

    /// <summary>The read of <paramref name="bytes"/> (as <see cref="Next"/> said) was served and its bytes appended to <see cref="Hash"/>.</summary>
    public void Served(long bytes)
    {
        _readsDone++;
        _served += bytes;
    }

    /// <summary>Whether the bytes served hash to the record's hash (after the last read).</summary>
    public bool Matches()
    {
        Span<byte> h = stackalloc byte[Xxh128.HashLength];
        Hash.GetCurrentHash(h);
        return h.SequenceEqual(_run.Hash);
    }
}
