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

/// <summary>Copies the bytes of a memory write that a record carries by value straight into the record
/// (<see cref="LogWriter.AppendOneWrite"/>): guest memory, read without an array of its own.</summary>
public interface IWriteSource
{
    /// <summary>Copies the <c>into.Length</c> bytes at <paramref name="addr"/> into <paramref name="into"/>.</summary>
    void CopyTo(ulong addr, Span<byte> into);
}

/// <summary>
/// The by-reference reads a <see cref="LogWriter"/> has taken but not yet written: one thread's consecutive reads of
/// one file (<see cref="FileContentRun"/>'s rule). The writer writes it as one record before anything else it writes
/// (any other record, a flush, its End), so the log's order is the order of events; a run of one read is written as
/// the <see cref="FileContent"/> record it always was.
/// <para>The run's hash is taken as its bytes come (one XxHash128 over them, in order), and the run keeps a copy only
/// of its reads since its last proof: when the next read would not fit beside them in <see cref="TailBytes"/>, the
/// run's check is asked there (<see cref="TryProveHeld"/>) and, when it holds, the copy is dropped. Why not keep the
/// whole run's copy until its end: a copy of up to <see cref="FileContentRun.MaxBytes"/> (1 MiB) was written and then
/// read again for the hash out of cache, and its array grew through fresh pages to 1 MiB (2 MiB allocated in all):
/// about 10 ms of a recording of md5sum 16 MB's CPU, which a replay (it hashes in the guest's pages) never pays. A
/// bounded copy stays in the host's cache; the price is one check (an fstat) per <see cref="TailBytes"/> read.</para>
/// <para>When a check finds the file changed (at a proof or at the run's end), the reads proven before are written as
/// the record they would have been had the run ended at that proof (<see cref="ProvenRecord"/>), and each later read
/// by value from the copy (<see cref="ReadByValue"/>): the log never names a file for bytes that were not proven to
/// be its bytes.</para>
/// </summary>
sealed class PendingContentRun
{
    /// <summary>The most bytes of reads kept since the run's last proof (one longer read is kept alone).</summary>
    public const int TailBytes = 128 << 10;

    /// <summary>The copy of the reads since the last proof, read after read.</summary>
    byte[] _tail = new byte[TailBytes];
    int _tailUsed, _tailHashed;
    /// <summary>Per read of the run: instruction count, guest address, where its bytes start in the copy (reads since
    /// the last proof only), bytes returned (for the by-value form).</summary>
    ulong[] _instr = new ulong[64], _addrs = new ulong[64];
    int[] _starts = new int[64], _results = new int[64];
    readonly Xxh128 _hash = new();
    readonly byte[] _digest = new byte[Xxh128.HashLength], _provenDigest = new byte[Xxh128.HashLength];
    ulong _first, _last;
    int _tid, _nr;
    string _path = "";
    long _offset, _bytes, _provenBytes;
    uint _reads, _proven;
    bool _lastFull, _changed;
    IContentSourceCheck? _check;

    /// <summary>Whether reads are held (<see cref="Take"/> has something to write).</summary>
    public bool Open => _reads > 0;

    /// <summary>Whether a read of (<paramref name="tid"/>, <paramref name="nr"/>, <paramref name="path"/>) at
    /// <paramref name="offset"/> returning <paramref name="result"/> bytes continues the held run: same thread, call and
    /// file, starting where the run ends, after a read that returned all it asked for, within
    /// <see cref="FileContentRun.MaxBytes"/>; and a read that needs a check (<paramref name="check"/>) only joins a run
    /// whose unchecked reads need the same one (one check proves them all: they came from one description).</summary>
    public bool Continues(int tid, int nr, string path, long offset, long result, IContentSourceCheck? check)
        => _reads > 0 && _lastFull && tid == _tid && nr == _nr && offset == _offset + _bytes
           && _bytes + result <= FileContentRun.MaxBytes && _reads < int.MaxValue
           && (check == null || _check == null || ReferenceEquals(check, _check))
           && (ReferenceEquals(path, _path) || path == _path);

    /// <summary>Starts a run (nothing may be held); <see cref="Add"/> adds its first read.</summary>
    public void Start(ulong instrCount, int tid, int nr, string path, long offset)
    {
        if (_reads != 0) throw new InvalidOperationException("a run is held: it is written first");
        if (_tail.Length > TailBytes) _tail = new byte[TailBytes]; // a lone huge read's copy is not kept
        (_first, _tid, _nr, _path, _offset, _bytes, _check) = (instrCount, tid, nr, path, offset, 0, null);
        (_tailUsed, _tailHashed, _proven, _provenBytes, _changed) = (0, 0, 0, 0, false);
        _hash.Reset();
    }

    /// <summary>
    /// Makes room for a read of <paramref name="result"/> bytes that continues the run (<see cref="Continues"/>): when
    /// it does not fit beside the reads kept since the last proof, the run's check (if a read needs one) is asked now
    /// and, when it holds, every read held is proven and its copy dropped. False when the check finds the file changed:
    /// the run must then be written (<see cref="Take"/>, which does not ask again) before the read starts the next.
    /// </summary>
    public bool TryProveHeld(long result)
    {
        if (_tailUsed + result <= _tail.Length) return true;
        HashHeld();
        if (_check != null && !_check.Unchanged())
        {
            _changed = true;
            return false;
        }
        _proven = _reads;
        _provenBytes = _bytes;
        _hash.GetCurrentHash(_provenDigest);
        _tailUsed = _tailHashed = 0;
        return true;
    }

    /// <summary>Adds a read (after <see cref="Start"/>, or when <see cref="Continues"/> and <see cref="TryProveHeld"/>
    /// made room): where its <paramref name="result"/> bytes go, which the caller fills before the writer's next call.</summary>
    public Span<byte> Add(ulong instrCount, int requested, long result, ulong addr, IContentSourceCheck? check)
    {
        int i = (int)_reads;
        if (i == _instr.Length)
        {
            _instr = Doubled(_instr);
            _addrs = Doubled(_addrs);
            _starts = Doubled(_starts);
            _results = Doubled(_results);
        }
        if (_tailUsed + result > _tail.Length)
        {
            // only a read longer than the copy, alone in it (TryProveHeld emptied it), gets here
            if (_tailUsed != 0) throw new InvalidOperationException("the reads held were not proven before a read that does not fit beside them");
            _tail = new byte[result];
        }
        (_instr[i], _addrs[i], _starts[i], _results[i]) = (instrCount, addr, _tailUsed, (int)result);
        var into = _tail.AsSpan(_tailUsed, (int)result);
        _check ??= check;
        _last = instrCount;
        _reads++;
        _bytes += result;
        _tailUsed += (int)result;
        _lastFull = result == requested;
        return into;
    }

    /// <summary>A copy of <paramref name="a"/> twice as long. Not Array.Resize: that is generic code, and its
    /// instantiation over ulong (with the copy it calls) has no ReadyToRun code, so a run's 65th read JIT-compiled two
    /// methods in every recording that reads a file of 256 KiB or more; Array.Copy is not generic.</summary>
    static ulong[] Doubled(ulong[] a)
    {
        var b = new ulong[2 * a.Length];
        Array.Copy(a, b, a.Length);
        return b;
    }

    static int[] Doubled(int[] a)
    {
        var b = new int[2 * a.Length];
        Array.Copy(a, b, a.Length);
        return b;
    }

    /// <summary>Appends the copied bytes not yet hashed to the run's hash (the caller filled them after <see cref="Add"/>).</summary>
    void HashHeld()
    {
        _hash.Append(_tail.AsSpan(_tailHashed, _tailUsed - _tailHashed));
        _tailHashed = _tailUsed;
    }

    /// <summary>How the held reads are written (<see cref="Take"/>).</summary>
    public enum Form { Run, Single, ByValue }

    /// <summary>Ends the run: asks its check (if a read needed one and no proof found the file changed already), then
    /// gives the record standing for the reads (<paramref name="run"/> for two or more, <paramref name="single"/> for
    /// one), or <see cref="Form.ByValue"/> when the file changed: then <see cref="ProvenRecord"/> gives the record of
    /// the reads proven before, and <see cref="ReadByValue"/> each read from <see cref="FirstByValueRead"/> on.
    /// Nothing is held after; the copy stays readable until the next <see cref="Start"/>.</summary>
    public Form Take(out FileContentRun run, out FileContent single)
    {
        run = default;
        single = default;
        uint reads = _reads;
        _reads = 0;
        HashHeld();
        if (_changed || (_check != null && !_check.Unchanged()))
        {
            (FirstByValueRead, ByValueEnd) = ((int)_proven, (int)reads);
            return Form.ByValue;
        }
        FirstByValueRead = ByValueEnd = 0;
        _hash.GetCurrentHash(_digest);
        return Record(reads, _last, _bytes, _digest, out run, out single);
    }

    /// <summary>The record of <paramref name="reads"/> reads from the run's start (the last at
    /// <paramref name="last"/>), <paramref name="bytes"/> bytes hashing to <paramref name="hash"/>.</summary>
    Form Record(uint reads, ulong last, long bytes, byte[] hash, out FileContentRun run, out FileContent single)
    {
        run = default;
        single = default;
        if (reads > 1)
        {
            run = new FileContentRun { FirstInstrCount = _first, LastInstrCount = last, Tid = _tid, Nr = _nr, Path = _path, Offset = _offset, Reads = reads, Bytes = bytes, Hash = hash };
            return Form.Run;
        }
        single = new FileContent { InstrCount = _first, Tid = _tid, Nr = _nr, Result = bytes, Addr = _addrs[0], Path = _path, Offset = _offset, Hash = hash };
        return Form.Single;
    }

    /// <summary>After a <see cref="Take"/> that gave <see cref="Form.ByValue"/>: the record of the reads an earlier
    /// proof proved (the run as it would have been written had it ended at that proof), or null when none was.</summary>
    public Form? ProvenRecord(out FileContentRun run, out FileContent single)
    {
        run = default;
        single = default;
        return FirstByValueRead == 0 ? null : Record((uint)FirstByValueRead, _instr[FirstByValueRead - 1], _provenBytes, _provenDigest, out run, out single);
    }

    /// <summary>The first read the last <see cref="Take"/> gave by value, and the end of those reads (exclusive).</summary>
    public int FirstByValueRead { get; private set; }
    public int ByValueEnd { get; private set; }

    /// <summary>Read <paramref name="i"/> (from <see cref="FirstByValueRead"/>, before <see cref="ByValueEnd"/>) of a
    /// run <see cref="Take"/> gave by value, as a by-value read is logged: its result and the bytes it put into guest
    /// memory.</summary>
    public SyscallResult ReadByValue(int i) => new()
    {
        InstrCount = _instr[i], Tid = _tid, Nr = _nr, Result = _results[i],
        MemWrites = [new GuestWrite(_addrs[i], _tail.AsSpan(_starts[i], _results[i]).ToArray())],
    };
}
