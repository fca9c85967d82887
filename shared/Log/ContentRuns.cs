namespace ReVirt.Log;

/// <summary>
/// The by-reference reads a <see cref="LogWriter"/> has taken but not yet written: one thread's consecutive reads of
/// one file (<see cref="FileContentRun"/>'s rule). The writer writes it as one record before anything else it writes
/// (any other record, a flush, its End), so the log's order is the order of events; a run of one read is written as
/// the <see cref="FileContent"/> record it always was. The hash is kept incrementally: each read's bytes are appended
/// when it is taken, while they are still in guest memory.
/// </summary>
sealed class PendingContentRun
{
    readonly Xxh128 _hash = new();
    readonly byte[] _digest = new byte[Xxh128.HashLength];
    ulong _first, _last, _addr;
    int _tid, _nr;
    string _path = "";
    long _offset, _bytes;
    uint _reads;
    bool _lastFull;

    /// <summary>Whether reads are held (<see cref="TakeRecord"/> has something to write).</summary>
    public bool Open => _reads > 0;

    /// <summary>Whether a read of (<paramref name="tid"/>, <paramref name="nr"/>, <paramref name="path"/>) at
    /// <paramref name="offset"/> returning <paramref name="result"/> bytes continues the held run: same thread, call and
    /// file, starting where the run ends, after a read that returned all it asked for, within <see cref="FileContentRun.MaxBytes"/>.</summary>
    public bool Continues(int tid, int nr, string path, long offset, long result)
        => _reads > 0 && _lastFull && tid == _tid && nr == _nr && offset == _offset + _bytes
           && _bytes + result <= FileContentRun.MaxBytes && _reads < uint.MaxValue
           && (ReferenceEquals(path, _path) || path == _path);

    /// <summary>Starts a run with this read (nothing may be held).</summary>
    public void Start(ulong instrCount, int tid, int nr, string path, long offset, ulong addr)
    {
        if (_reads != 0) throw new InvalidOperationException("a run is held: it is written first");
        (_first, _tid, _nr, _path, _offset, _addr, _bytes) = (instrCount, tid, nr, path, offset, addr, 0);
        _hash.Reset();
    }

    /// <summary>Adds a read (after <see cref="Start"/> or when <see cref="Continues"/>); its bytes go to <see cref="Hash"/> next.</summary>
    public void Add(ulong instrCount, int requested, long result)
    {
        _last = instrCount;
        _reads++;
        _bytes += result;
        _lastFull = result == requested;
    }

    /// <summary>The run's incremental hash: the caller appends each read's bytes in order.</summary>
    public Xxh128 Hash => _hash;

    /// <summary>The record standing for the held reads; nothing is held after. <paramref name="run"/> is set for two
    /// or more reads, <paramref name="single"/> for one.</summary>
    public bool TakeRecord(out FileContentRun run, out FileContent single)
    {
        _hash.GetHashAndReset(_digest);
        bool many = _reads > 1;
        run = many
            ? new FileContentRun { FirstInstrCount = _first, LastInstrCount = _last, Tid = _tid, Nr = _nr, Path = _path, Offset = _offset, Reads = _reads, Bytes = _bytes, Hash = _digest }
            : default;
        single = many
            ? default
            : new FileContent { InstrCount = _first, Tid = _tid, Nr = _nr, Result = _bytes, Addr = _addr, Path = _path, Offset = _offset, Hash = _digest };
        _reads = 0;
        return many;
    }
}
