using System.Diagnostics;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>
/// Output commit. Every byte that leaves a protected primary (guest stdout/stderr, socket sends, a socket's
/// shutdown or close, on shared storage the guest's file writes: OutputGate.Files.cs) is held here, tagged with the sequence number of the log record that produced it, and
/// released — in the order it was produced — only once the backup has acknowledged holding the log up to that
/// record. The guest keeps running meanwhile (sockets: see OutputGate.Sockets.cs).
/// </summary>
/// <remarks>
/// States: <b>protected</b> (hold until acked), <b>final</b> (the guest has ended: acks no longer release; what is
/// held leaves only once this primary holds the arbiter, see <see cref="GuestEnded"/>), <b>unprotected</b> (the
/// backup is gone, or the guest ended, and this primary won the arbiter: everything held is released and new output
/// passes straight through) and <b>discarded</b> (this primary lost the arbiter: nothing held is ever released).
/// Release runs on the thread that delivers the ack.
/// </remarks>
public sealed partial class OutputGate
{
    readonly object _lock = new();
    readonly Queue<Entry> _held = new();
    readonly Action<int, ReadOnlyMemory<byte>> _emit;
    ulong _acked;
    bool _unprotected, _discarded, _final; // written under the lock

    /// <summary>Asked before each release while protected: false when the link to the backup has gone stale
    /// (this process was stopped longer than the timeout), so nothing more is released until the watchdog decided.</summary>
    public Func<bool>? Fresh;
    Func<bool>? _stillOwner;
    Action? _ownershipLost;
    long _releasedOut, _releasedErr, _heldBytes;
    readonly LatencyHistogram _holds = new();

    readonly record struct Entry(ulong Seq, int Fd, byte[] Bytes, long Since);

    /// <param name="emit">Writes released bytes to the host descriptor (1 or 2); the bytes are valid only during the call
    /// (outputs released together to one descriptor come as one span).</param>
    public OutputGate(Action<int, ReadOnlyMemory<byte>> emit)
    {
        _emit = emit;
        Shipping = new ShipWindow(this);
    }

    /// <summary>When records that hold output travel to the backup (the recording, the link and the acknowledgements
    /// share it here: each side has the gate).</summary>
    public ShipWindow Shipping { get; }

    /// <summary>A gate that writes to this process's stdout/stderr with raw write(2).</summary>
    public static OutputGate ToHostStdio() => new((fd, data) => HostIo.WriteAll(fd, data.Span));

    /// <summary>Stdout bytes released to the world so far.</summary>
    public ulong ReleasedStdout => (ulong)Interlocked.Read(ref _releasedOut);
    public ulong ReleasedStderr => (ulong)Interlocked.Read(ref _releasedErr);
    public long HeldBytes => Interlocked.Read(ref _heldBytes);
    /// <summary>Every byte this gate holds right now: stdout/stderr (<see cref="HeldBytes"/>), socket sends
    /// (<see cref="SocketHeldBytes"/>) and, on shared storage, file writes (<see cref="FileOutput.HeldBytes"/>). The
    /// held_bytes metric reports this.</summary>
    public long AllHeldBytes => HeldBytes + SocketHeldBytes + (Files?.HeldBytes ?? 0);
    public int HeldCount { get { lock (_lock) return _held.Count; } }
    public ulong Acked { get { lock (_lock) return _acked; } }
    /// <summary><see cref="Acked"/> without the gate's lock (any thread; it only grows while protected).</summary>
    public ulong AckedThrough => Volatile.Read(ref _acked);

    /// <summary>How long each output held while protected spent in the gate (released by an acknowledgement, or when
    /// this replica went on without its backup or released the end of a run under the arbiter).</summary>
    public LatencyHistogram HoldTimes => _holds;

    /// <summary>Output produced by log record <paramref name="seq"/>.</summary>
    public void Hold(ulong seq, int fd, byte[] bytes)
    {
        lock (_lock)
        {
            if (_discarded) return;
            if (_unprotected) { if (Owner()) Emit(fd, bytes); return; }
            if (seq <= _acked && _held.Count == 0 && !_final)
            {
                // acknowledged before it reached the gate (the guest thread was slow to get here): held for no time
                _holds.AddNs(0);
                Emit(fd, bytes);
                return;
            }
            _held.Enqueue(new Entry(seq, fd, bytes, Stopwatch.GetTimestamp()));
            _heldBytes += bytes.Length;
        }
    }

    /// <summary>The backup holds the log up to <paramref name="seq"/>: release everything produced up to there. Output
    /// logged behind the batch this acknowledges is shipped first (<see cref="ShipWindow.Acknowledged"/>): the host
    /// sends of a round's replies take longer than a batch's send, and the link would be idle meanwhile.</summary>
    public void Ack(ulong seq)
    {
        Shipping.Acknowledged(seq);
        List<HeldSocket>? busy;
        long t0;
        lock (_lock)
        {
            // an ack that repeats the last one still releases: output a stale link kept held (Fresh) leaves with the
            // first ack after the backup proved it still follows, which need not acknowledge anything new
            if (seq < _acked) return;
            if (seq > _acked)
            {
                _acked = seq;
                Monitor.PulseAll(_lock);
            }
            if (_discarded || _final) return;
            t0 = Stopwatch.GetTimestamp();
            ReleaseFiles(seq);
            busy = TakeReleasable();
            ReleaseHeldThrough(seq, Fresh);
        }
        if (busy != null) SendOutsideLock(busy, t0);
    }

    readonly LatencyHistogram _releases = new();

    /// <summary>For each acknowledgement that found socket output held, how long its release took: from the ack's
    /// arrival at the gate to the last host send it made (a reply released late in a long release waits that much).</summary>
    public LatencyHistogram AckReleaseTimes => _releases;

    /// <summary>
    /// Emits the held stdout/stderr output produced up to record <paramref name="seq"/>, in order, under the lock.
    /// Outputs to one descriptor that follow each other leave in one write: fewer system calls, and a release the
    /// process does not survive (SIGKILL) cannot stop between them — a pipe write of up to PIPE_BUF bytes is atomic,
    /// which is what keeps a killed primary's final release all-or-nothing for a survivor that must decide whether it
    /// was made. <paramref name="fresh"/>, when given, is asked before each write: false keeps the rest held.
    /// </summary>
    void ReleaseHeldThrough(ulong seq, Func<bool>? fresh)
    {
        long now = Stopwatch.GetTimestamp();
        while (_held.Count > 0 && _held.Peek().Seq <= seq)
        {
            if (fresh != null && !fresh()) return; // the link went stale mid-release: keep the rest held
            var e = _held.Dequeue();
            _heldBytes -= e.Bytes.Length;
            _holds.AddTicks(e.Since, now);
            if (_held.Count == 0 || _held.Peek().Seq > seq || _held.Peek().Fd != e.Fd) { Emit(e.Fd, e.Bytes); continue; }
            _run.SetLength(0);
            _run.Write(e.Bytes);
            while (_held.Count > 0 && _held.Peek().Seq <= seq && _held.Peek().Fd == e.Fd)
            {
                var next = _held.Dequeue();
                _heldBytes -= next.Bytes.Length;
                _holds.AddTicks(next.Since, now);
                _run.Write(next.Bytes);
            }
            Emit(e.Fd, _run.GetBuffer().AsMemory(0, (int)_run.Length));
        }
    }

    readonly MemoryStream _run = new();

    /// <summary>
    /// The guest has ended (called before its exit is logged). From here acknowledgements release nothing: the
    /// output still held is released only by <see cref="GoUnprotected"/>, once this primary holds the arbiter, or
    /// never (<see cref="Discard"/>). A backup that replayed the whole run and finds its primary gone without a
    /// goodbye can then take that output over through the arbiter, and exactly one replica emits it, whether the
    /// primary died or was only cut off. What was released before this point is final, and every batch sent after it
    /// reports the released totals exactly.
    /// </summary>
    public void GuestEnded()
    {
        lock (_lock) _final = true;
    }

    /// <summary>Output (stdout, stderr or socket bytes) that waits in the gate.</summary>
    public bool HoldsOutput { get { lock (_lock) return _held.Count > 0 || _unreleased.Count > 0; } }

    /// <summary>
    /// The backup is gone and this primary won the arbiter: release everything, pass output through from now on.
    /// <paramref name="stillOwner"/>, when given, is asked before each release from here on (a leased arbiter can
    /// be lost by a stall longer than its lease); when it says no, nothing more is released and
    /// <paramref name="lost"/> runs (it is expected to stop the process).
    /// </summary>
    public void GoUnprotected(Func<bool>? stillOwner = null, Action? lost = null)
    {
        lock (_lock)
        {
            if (_discarded) return;
            _unprotected = true;
            _stillOwner = stillOwner;
            _ownershipLost = lost;
            Monitor.PulseAll(_lock);
            // held until now (the final release of a guest that ended counts as much as an acknowledged one)
            ReleaseHeldThrough(ulong.MaxValue, fresh: null);
            _files?.ReleaseThrough(ulong.MaxValue);
            ReleaseSockets();
        }
    }

    /// <summary>
    /// A standby that joined this unprotected replica acknowledged its snapshot (or its backlog): from here on output
    /// waits for acknowledgements again. Everything produced up to record <paramref name="upTo"/> (the join point) was
    /// released unheld; the standby may go live only once it holds the log up to there, so its acknowledgements
    /// release output of later records only.
    /// </summary>
    public void Reprotect(ulong upTo)
    {
        lock (_lock)
        {
            if (_discarded) return;
            _unprotected = false;
            _stillOwner = null;
            _ownershipLost = null;
            if (upTo > _acked) _acked = upTo;
        }
    }

    /// <summary>A replica that took over starts at the guest's output offsets where the log it replayed ended (what
    /// its predecessor released or it re-emitted itself): the marks it reports to a standby are offsets of the
    /// guest's whole output.</summary>
    public void StartReleasedAt(ulong stdoutBytes, ulong stderrBytes)
    {
        Interlocked.Exchange(ref _releasedOut, (long)stdoutBytes);
        Interlocked.Exchange(ref _releasedErr, (long)stderrBytes);
    }

    /// <summary>This primary lost the arbiter: the backup is live and owns the output from here; drop what is held.</summary>
    public void Discard()
    {
        lock (_lock)
        {
            _discarded = true;
            _held.Clear();
            _heldBytes = 0;
            DropSockets();
            _files?.Drop();
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Unprotected: may output still be released? A no discards the gate for good and reports it.</summary>
    bool Owner()
    {
        if (_discarded) return false;
        if (_stillOwner == null || _stillOwner()) return true;
        _discarded = true;
        _held.Clear();
        _heldBytes = 0;
        DropSockets();
        _files?.Drop();
        Monitor.PulseAll(_lock);
        _ownershipLost?.Invoke();
        return false;
    }

    void Emit(int fd, ReadOnlyMemory<byte> bytes)
    {
        _emit(fd, bytes);
        if (fd == 2) Interlocked.Add(ref _releasedErr, bytes.Length);
        else Interlocked.Add(ref _releasedOut, bytes.Length);
    }
}
