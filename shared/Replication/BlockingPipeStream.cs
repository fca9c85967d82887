using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>
/// A one-way in-memory pipe: a producer <see cref="Append"/>s chunks, a consumer takes them whole
/// (<see cref="NextChunk"/>: a <see cref="Log.LogReader.OverVerifiedChunks"/> reads its records in place) or reads
/// them as a <see cref="Stream"/>. A read blocks while the pipe is empty and not completed; after
/// <see cref="Complete"/> it returns what is left, then the end (an empty chunk, or 0 from a stream read).
/// </summary>
/// <remarks>
/// With <see cref="Gather"/>, a reader that has just consumed everything does not wait to be woken by the next
/// append: it sleeps for up to that long and then takes everything that gathered meanwhile (an append wakes it only
/// once <see cref="GatherBytes"/> wait, and <see cref="Complete"/> at once). A reader that found nothing after
/// such a sleep waits to be woken by the next append as without it. Why: a backup's replay that keeps up with the
/// log would otherwise be woken for every batch (a futex wake on the appending thread and a context switch on each
/// side, several thousand times a second under a request-response load); gathering for a millisecond wakes it once
/// for several batches, at the price of trailing the log by up to that long.
/// <para>Gathering adapts to the arrival rate: a reader gathers only while gathering pays, i.e. while the last
/// gathering sleep found something, or (after one that did not) once an append comes within a gathering period of
/// the reader running dry. A reader whose appends come further apart than that (a request every few milliseconds)
/// would otherwise sleep twice per append: a gathering sleep that ends empty, then the wait for the append that
/// wakes it; now it waits for the append at once, one sleep per append and the same wake-up on the appending side
/// (the empty gathering sleep's wake-up was the reader's own timer: about a third of a following replay's CPU at a
/// low rate, bench/replaycost --paced-us).</para>
/// <para>The reader sleeps on a futex word of its own (outside the pipe's lock), and an append wakes it only when it
/// sleeps and the rule above says so: one futex wait per sleep on the reader's side, one futex wake per wake-up (none
/// while it works or gathers) on the producer's, and the woken reader never contends for a lock its waker still holds
/// (a <see cref="Monitor.Wait(object)"/> woken by <see cref="Monitor.PulseAll"/> under the lock did: a second
/// sleep and wake-up for about a third of its wake-ups, kvserver under load).</para>
/// </remarks>
public sealed class BlockingPipeStream : ReadOnlyStream, Log.IFrameChunks
{
    readonly object _lock = new();
    // chunks are the pipe's own copies: a chunk taken whole is the reader's (its records are slices of it), so none
    // goes back to a pool; one array per appended burst
    readonly Queue<byte[]> _chunks = new();
    byte[]? _cur;
    int _curPos;
    bool _completed;
    long _buffered;
    bool _starving;
    // the reader consumed something since it last waited (it may sleep to gather)
    bool _consumed;
    // Reader's thread only. Gathering pays (the reader's next dry point after consuming gathers): the last gathering
    // sleep found something, or an append came within a gathering period of the reader running dry. True at first.
    bool _gatherPays = true;
    // the kind of the reader's last sleep (Gathers: a gathering sleep, which pays if something is taken before the
    // reader sleeps again), and when it last ran dry after consuming (Stopwatch timestamp; 0: it has taken something
    // since): the first take after a dry point decides whether gathering pays
    int _lastSleep;
    long _dryAt;

    /// <summary>What the reader sleeps for (the futex word, under <see cref="_lock"/> for every change but the
    /// reader's own reset after it woke): <see cref="Awake"/>, <see cref="WaitsForAppend"/> (any append wakes it),
    /// <see cref="Gathers"/> (only <see cref="GatherBytes"/> or the end wake it). Pinned: the kernel keys a futex by
    /// its address, which must not move while the reader sleeps on it.</summary>
    readonly int[] _sleep = GC.AllocateArray<int>(1, pinned: true);
    const int Awake = 0, WaitsForAppend = 1, Gathers = 2;

    long _wakes, _sleeps;

    /// <summary>How long a reader that has consumed everything sleeps to gather more before it reads again
    /// (<see cref="TimeSpan.Zero"/>: every append wakes it).</summary>
    public TimeSpan Gather { get; init; }

    /// <summary>A reader sleeps to gather right now.</summary>
    public bool Gathering => Volatile.Read(ref _sleep[0]) == Gathers;

    /// <summary>Bytes that wake a gathering reader before its sleep is over.</summary>
    public long GatherBytes { get; init; } = 64 * 1024;

    /// <summary>Times an append or the end woke the sleeping reader (each a futex wake of the producer's): at most one
    /// per sleep of the reader's.</summary>
    public long Wakes => Interlocked.Read(ref _wakes);

    /// <summary>Times the reader went to sleep (each a futex wait of its own).</summary>
    public long Sleeps => Interlocked.Read(ref _sleeps);

    /// <summary>Called (on the reader's thread, outside the pipe's lock) when a read finds the pipe empty and is
    /// about to wait: the reader has consumed everything appended so far. Once per time the pipe runs dry, and again
    /// while it stays dry when it asked for that: it returns how long the reader may wait for an append before it is
    /// to be called again (<see cref="Timeout.InfiniteTimeSpan"/>: only at the next dry point). So the reader's own
    /// thread does what is due some time after it ran dry (a backup's replay reports its position once no
    /// acknowledgement carried it for an interval) with no thread of its own, and no wake-up at all while appends
    /// keep coming: the wait for an append is bounded by the time asked for instead of being woken from elsewhere.</summary>
    public Func<TimeSpan>? Starving { get; set; }

    // when the reader is to call Starving again while the pipe stays dry (Stopwatch timestamp; 0: not before the next
    // dry point). Reader's thread only.
    long _starvingAgainAt;

    // when the reader last came back from a wait (or first read): it has been working through what it found since
    long _awakeSince = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>How long the reader has read without waiting (since it last came back from a wait in a read, or since
    /// the pipe was made): read by <see cref="Starving"/>, it tells a reader that has just worked through a backlog
    /// from one that found the pipe dry again right after being woken. Reader's thread only.</summary>
    public TimeSpan ReadingFor => System.Diagnostics.Stopwatch.GetElapsedTime(_awakeSince);

    /// <summary>Appends a copy of <paramref name="data"/> as one chunk (a reader of chunks takes it whole).</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        var copy = data.ToArray();
        bool wake;
        lock (_lock)
        {
            if (_completed) throw new InvalidOperationException("pipe completed");
            _chunks.Enqueue(copy);
            _buffered += copy.Length;
            _starving = false;
            int sleep = _sleep[0];
            wake = sleep == WaitsForAppend || (sleep == Gathers && _buffered >= GatherBytes);
            if (wake) Volatile.Write(ref _sleep[0], Awake);
        }
        if (wake) WakeReader();
    }

    /// <summary>No more data will come: readers get the rest, then end of stream.</summary>
    public void Complete()
    {
        bool wake;
        lock (_lock)
        {
            _completed = true;
            wake = _sleep[0] != Awake;
            if (wake) Volatile.Write(ref _sleep[0], Awake);
        }
        if (wake) WakeReader();
    }

    public bool Completed { get { lock (_lock) return _completed; } }

    /// <summary>Bytes appended but not yet read.</summary>
    public long Buffered { get { lock (_lock) return _buffered; } }

    /// <summary>
    /// The next chunk whole, as appended (the caller owns it: nothing else writes to it); blocks while the pipe is empty
    /// (gathering first when <see cref="Gather"/> says so). Empty at the end of the stream. Not to be mixed with
    /// stream reads that stopped inside a chunk (that chunk's rest comes first, as a chunk of its own).
    /// </summary>
    public ReadOnlyMemory<byte> NextChunk()
    {
        while (true)
        {
            int sleep;
            lock (_lock)
            {
                if (_cur != null)
                {
                    var rest = _cur.AsMemory(_curPos);
                    _cur = null;
                    return Took(rest);
                }
                if (_chunks.Count > 0) return Took(_chunks.Dequeue());
                if (_completed) return ReadOnlyMemory<byte>.Empty;
                if (StarvingDue()) sleep = -1;
                else sleep = BeginSleep();
            }
            if (sleep < 0) Starve();
            else Sleep(sleep);
        }
    }

    ReadOnlyMemory<byte> Took(ReadOnlyMemory<byte> chunk)
    {
        _buffered -= chunk.Length;
        Consumed();
        return chunk;
    }

    /// <summary>The reader took something (under the lock): the first take after a dry point decides whether the
    /// next dry point gathers: yes after a gathering sleep (it found this), or when this came within a gathering
    /// period of the dry point.</summary>
    void Consumed()
    {
        _consumed = true;
        if (_dryAt == 0) return;
        _gatherPays = _lastSleep == Gathers || System.Diagnostics.Stopwatch.GetElapsedTime(_dryAt) < Gather;
        _dryAt = 0;
    }

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty) return 0;
        while (true)
        {
            int sleep;
            lock (_lock)
            {
                if (_cur == null && _chunks.Count > 0) (_cur, _curPos) = (_chunks.Dequeue(), 0);
                if (_cur != null)
                {
                    int n = Math.Min(buffer.Length, _cur.Length - _curPos);
                    _cur.AsSpan(_curPos, n).CopyTo(buffer);
                    _curPos += n;
                    if (_curPos == _cur.Length) _cur = null;
                    _buffered -= n;
                    Consumed();
                    return n;
                }
                if (_completed) return 0;
                if (StarvingDue()) sleep = -1;
                else sleep = BeginSleep();
            }
            if (sleep < 0) Starve();
            else Sleep(sleep);
        }
    }

    /// <summary>The pipe is dry (under the lock): whether <see cref="Starving"/> is to be called before the reader
    /// sleeps (once per dry period).</summary>
    bool StarvingDue()
    {
        if (_starving || Starving == null) return false;
        _starving = true;
        return true;
    }

    void Starve()
    {
        var again = Starving?.Invoke() ?? Timeout.InfiniteTimeSpan;
        _starvingAgainAt = again < TimeSpan.Zero ? 0 : System.Diagnostics.Stopwatch.GetTimestamp() + Math.Max(1, (long)(again.TotalSeconds * System.Diagnostics.Stopwatch.Frequency));
    }

    /// <summary>After a sleep (reader's thread): when Starving asked to be called again and its time has come, the
    /// next look at a dry pipe calls it again.</summary>
    void StarvingAgainIfDue()
    {
        if (_starvingAgainAt == 0 || System.Diagnostics.Stopwatch.GetTimestamp() < _starvingAgainAt) return;
        _starvingAgainAt = 0;
        lock (_lock) _starving = false;
    }

    /// <summary>The pipe is dry (under the lock): the reader is about to sleep; returns what it sleeps for (the futex
    /// word's value): it gathers if it consumed something since it last slept and gathering pays (a gathering sleep
    /// that found nothing says it does not).</summary>
    int BeginSleep()
    {
        if (_consumed) _dryAt = System.Diagnostics.Stopwatch.GetTimestamp();
        else if (_lastSleep == Gathers) _gatherPays = false;
        int sleep = _consumed && _gatherPays && Gather > TimeSpan.Zero ? Gathers : WaitsForAppend;
        _consumed = false;
        _lastSleep = sleep;
        Volatile.Write(ref _sleep[0], sleep);
        return sleep;
    }

    /// <summary>Sleeps on the futex word while it holds <paramref name="sleep"/> (outside the lock: an append that
    /// wakes the reader changes the word first, so a wake-up between the lock and the wait is never lost), for at
    /// most <see cref="Gather"/> when gathering, and never past the time <see cref="Starving"/> asked to be called
    /// again.</summary>
    unsafe void Sleep(int sleep)
    {
        Interlocked.Increment(ref _sleeps);
        long ns = sleep == Gathers ? Gather.Ticks * (1_000_000_000 / TimeSpan.TicksPerSecond) : -1;
        if (_starvingAgainAt != 0)
        {
            long left = _starvingAgainAt - System.Diagnostics.Stopwatch.GetTimestamp();
            long leftNs = left <= 0 ? 0 : (long)(left * (1_000_000_000.0 / System.Diagnostics.Stopwatch.Frequency));
            ns = ns < 0 ? leftNs : Math.Min(ns, leftNs);
        }
        long timeout = 0;
        var ts = stackalloc long[2];
        if (ns >= 0)
        {
            ts[0] = ns / 1_000_000_000;
            ts[1] = ns % 1_000_000_000;
            timeout = (long)ts;
        }
        fixed (int* word = _sleep)
            // EINTR, EAGAIN (woken before the wait) and ETIMEDOUT all end the sleep; the loop looks again
            HostSys.Call(Nr.futex, (long)word, Futex.WAIT | Futex.PRIVATE_FLAG, sleep, timeout);
        lock (_lock) Volatile.Write(ref _sleep[0], Awake);
        _awakeSince = System.Diagnostics.Stopwatch.GetTimestamp();
        StarvingAgainIfDue();
    }

    unsafe void WakeReader()
    {
        Interlocked.Increment(ref _wakes);
        fixed (int* word = _sleep) HostSys.Call(Nr.futex, (long)word, Futex.WAKE | Futex.PRIVATE_FLAG, 1);
    }
}
