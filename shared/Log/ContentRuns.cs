namespace ReVirt.Log;

/// <summary>
/// What proves, once, at the end of a run of by-reference reads (<see cref="LogWriter.AppendContentRead"/>), that the
/// reads of the run not checked on their own got the bytes a replay reading the file's path will get: the file they
/// came from still holds, now, what it held when the recording began. Asked after the run's last read and before
/// anything that follows the run is logged, flushed or shipped (<see cref="LogWriter.EndContentRun"/>).
/// </summary>
public interface IContentSourceCheck
{
    /// <summary>Whether the file is unchanged since the recording began. False: the run is logged by value (its bytes
    /// as the guest got them), and the implementer remembers that the file changed.</summary>
    bool Unchanged();
}

/// <summary>
/// The by-reference reads a <see cref="LogWriter"/> has taken but not yet written: one thread's consecutive reads of
/// one file (<see cref="FileContentRun"/>'s rule). The writer writes it as one record before anything else it writes
/// (any other record, a flush, its End), so the log's order is the order of events; a run of one read is written as
/// the <see cref="FileContent"/> record it always was. The run keeps a copy of every read's bytes (at most
/// <see cref="FileContentRun.MaxBytes"/>, or one longer read): the hash is taken from the copy at the run's end, and when the run's
/// <see cref="IContentSourceCheck"/> then finds the file changed, each read is written by value from it instead.
/// </summary>
sealed class PendingContentRun
{
    /// <summary>The run's bytes, read after read (grown up to <see cref="FileContentRun.MaxBytes"/>, or to one longer read).</summary>
    byte[] _bytesRead = new byte[64 << 10];
    /// <summary>Per read: instruction count, guest address, where its bytes start in the copy, bytes returned (for
    /// the by-value form).</summary>
    ulong[] _instr = new ulong[64], _addrs = new ulong[64];
    int[] _starts = new int[64], _results = new int[64];
    readonly byte[] _digest = new byte[Xxh128.HashLength];
    ulong _first, _last;
    int _tid, _nr;
    string _path = "";
    long _offset, _bytes;
    uint _reads;
    bool _lastFull;
    IContentSourceCheck? _check;

    /// <summary>Whether reads are held (<see cref="Take"/> has something to write).</summary>
    public bool Open => _reads > 0;

    /// <summary>Whether a read of (<paramref name="tid"/>, <paramref name="nr"/>, <paramref name="path"/>) at
    /// <paramref name="offset"/> returning <paramref name="result"/> bytes continues the held run: same thread, call and
    /// file, starting where the run ends, after a read that returned all it asked for, within
    /// <see cref="FileContentRun.MaxBytes"/>; and a read that needs a check (<paramref name="check"/>) only joins a run
    /// whose unchecked reads need the same one (one check at the end proves them all: they came from one description).</summary>
    public bool Continues(int tid, int nr, string path, long offset, long result, IContentSourceCheck? check)
        => _reads > 0 && _lastFull && tid == _tid && nr == _nr && offset == _offset + _bytes
           && _bytes + result <= FileContentRun.MaxBytes && _reads < int.MaxValue
           && (check == null || _check == null || ReferenceEquals(check, _check))
           && (ReferenceEquals(path, _path) || path == _path);

    /// <summary>Starts a run (nothing may be held); <see cref="Add"/> adds its first read.</summary>
    public void Start(ulong instrCount, int tid, int nr, string path, long offset)
    {
        if (_reads != 0) throw new InvalidOperationException("a run is held: it is written first");
        if (_bytesRead.Length > FileContentRun.MaxBytes) _bytesRead = new byte[64 << 10]; // a lone huge read's copy is not kept
        (_first, _tid, _nr, _path, _offset, _bytes, _check) = (instrCount, tid, nr, path, offset, 0, null);
    }

    /// <summary>Adds a read (after <see cref="Start"/> or when <see cref="Continues"/>): where its
    /// <paramref name="result"/> bytes go, which the caller fills before the writer's next call.</summary>
    public Span<byte> Add(ulong instrCount, int requested, long result, ulong addr, IContentSourceCheck? check)
    {
        int i = (int)_reads;
        if (i == _instr.Length)
        {
            Array.Resize(ref _instr, 2 * i);
            Array.Resize(ref _addrs, 2 * i);
            Array.Resize(ref _starts, 2 * i);
            Array.Resize(ref _results, 2 * i);
        }
        (_instr[i], _addrs[i], _starts[i], _results[i]) = (instrCount, addr, (int)_bytes, (int)result);
        if (_bytes + result > _bytesRead.Length) // a run holds at most MaxBytes, a lone read of more starts one alone
            Array.Resize(ref _bytesRead, (int)Math.Max(_bytes + result, Math.Min(FileContentRun.MaxBytes, 2L * _bytesRead.Length)));
        var into = _bytesRead.AsSpan((int)_bytes, (int)result);
        _check ??= check;
        _last = instrCount;
        _reads++;
        _bytes += result;
        _lastFull = result == requested;
        return into;
    }

    /// <summary>How the held reads are written (<see cref="Take"/>).</summary>
    public enum Form { Run, Single, ByValue }

    /// <summary>Ends the run: asks its check (if a read needed one), then gives the record standing for the reads
    /// (<paramref name="run"/> for two or more, <paramref name="single"/> for one), or <see cref="Form.ByValue"/> when
    /// the check found the file changed: then <see cref="ReadByValue"/> gives each read. Nothing is held after; the
    /// copy stays readable until the next <see cref="Start"/>.</summary>
    public Form Take(out FileContentRun run, out FileContent single)
    {
        run = default;
        single = default;
        uint reads = _reads;
        _reads = 0;
        if (_check != null && !_check.Unchanged())
        {
            ByValueReads = (int)reads;
            return Form.ByValue;
        }
        ByValueReads = 0;
        Xxh128.Hash(_bytesRead.AsSpan(0, (int)_bytes), _digest);
        if (reads > 1)
        {
            run = new FileContentRun { FirstInstrCount = _first, LastInstrCount = _last, Tid = _tid, Nr = _nr, Path = _path, Offset = _offset, Reads = reads, Bytes = _bytes, Hash = _digest };
            return Form.Run;
        }
        single = new FileContent { InstrCount = _first, Tid = _tid, Nr = _nr, Result = _bytes, Addr = _addrs[0], Path = _path, Offset = _offset, Hash = _digest };
        return Form.Single;
    }

    /// <summary>How many reads the last <see cref="Take"/> gave by value.</summary>
    public int ByValueReads { get; private set; }

    /// <summary>Read <paramref name="i"/> of a run <see cref="Take"/> gave by value, as a by-value read is logged: its
    /// result and the bytes it put into guest memory.</summary>
    public SyscallResult ReadByValue(int i) => new()
    {
        InstrCount = _instr[i], Tid = _tid, Nr = _nr, Result = _results[i],
        MemWrites = [new GuestWrite(_addrs[i], _bytesRead.AsSpan(_starts[i], _results[i]).ToArray())],
    };
}
