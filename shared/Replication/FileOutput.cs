using System.Buffers.Binary;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>Which file a held write goes to: the host's device and inode numbers (two descriptions of one file,
/// or two names of it, are one file).</summary>
public readonly record struct StorageFile(ulong Dev, ulong Ino);

/// <summary>
/// A guest file write held under the output rule: its bytes go to <see cref="Offset"/> of the file through
/// <see cref="HostFd"/>, a duplicate of the description's host descriptor that this write owns (the guest may close
/// its own before the write is released).
/// </summary>
public sealed record HeldFileWrite(ulong Seq, StorageFile File, int HostFd, long Offset, byte[] Data);

/// <summary>
/// The file writes a protected primary holds when both replicas share the guest's storage (`backup listen
/// --shared-storage`). A write is logged as done (its record says where it goes, <see cref="HeldWriteRecord"/>), and
/// its bytes wait here until the backup holds the log up to its record; the output gate then releases them, in the
/// order they were written, with pwrite at the absolute offset the guest's write had. Until then the storage never
/// holds a write the backup could not reproduce.
/// </summary>
/// <remarks>
/// The guest never reads storage around its held writes: every operation that observes or changes a file's data or
/// the names (a read, fstat, stat, lseek, mmap, an open that creates or truncates, rename, unlink, truncate, fsync,
/// ...) first waits until everything held was released (<see cref="WaitReleased"/>, the kernel's
/// <c>SettleFiles</c>), so it sees exactly what it wrote. An O_APPEND write's offset is the file's end as the guest
/// sees it: the host's size or the end of the furthest write still held for that file. The gate calls in under its
/// own lock (<see cref="Enqueue"/>, <see cref="ReleaseThrough"/>, <see cref="Drop"/>); the guest thread asks
/// <see cref="EndOf"/>, <see cref="Pending"/> and waits; both under this object's lock, always taken after the
/// gate's.
/// </remarks>
public sealed class FileOutput
{
    readonly object _lock = new();
    readonly Queue<HeldFileWrite> _held = new();
    ulong _releasedThrough;
    bool _dropped;
    long _heldBytes, _failures;
    readonly TextWriter _diagnostics;

    public FileOutput(TextWriter diagnostics) => _diagnostics = diagnostics;

    /// <summary>Drills and tests only (<c>--plant files-early</c>): each write is released as soon as it is held,
    /// before the backup holds its record.</summary>
    public bool ReleaseEarly { get; init; }

    /// <summary>Sequence number of the record of the last write released (all before it were released too).</summary>
    public ulong ReleasedThrough { get { lock (_lock) return _releasedThrough; } }

    /// <summary>Writes held right now.</summary>
    public bool Pending { get { lock (_lock) return _held.Count > 0; } }

    public long HeldBytes => Interlocked.Read(ref _heldBytes);

    /// <summary>Releases the host storage reported failing (the guest had been told the write succeeded).</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>The end of <paramref name="file"/> as the guest sees it: the larger of the host's size (asked here,
    /// under the lock, so that no release moves it meanwhile) and the end of the furthest write held for it.</summary>
    public unsafe long EndOf(StorageFile file, int hostFd)
    {
        lock (_lock)
        {
            long end = HostSize(hostFd);
            foreach (var w in _held)
                if (w.File == file) end = Math.Max(end, w.Offset + w.Data.Length);
            return end;
        }
    }

    /// <summary>The file behind a host descriptor and whether it is a regular file (held writes are for those only),
    /// or null when fstat fails.</summary>
    public static unsafe (StorageFile File, bool Regular)? Identify(int hostFd)
    {
        Span<byte> st = stackalloc byte[SMode.StatSize];
        fixed (byte* p = st) if (HostSys.Call(Nr.fstat, hostFd, (long)p) < 0) return null;
        var file = new StorageFile(BinaryPrimitives.ReadUInt64LittleEndian(st[SMode.StDevOffset..]), BinaryPrimitives.ReadUInt64LittleEndian(st[SMode.StInoOffset..]));
        return (file, (BinaryPrimitives.ReadUInt32LittleEndian(st[SMode.StModeOffset..]) & SMode.IFMT) == SMode.IFREG);
    }

    static unsafe long HostSize(int hostFd)
    {
        Span<byte> st = stackalloc byte[SMode.StatSize];
        fixed (byte* p = st) if (HostSys.Call(Nr.fstat, hostFd, (long)p) < 0) return 0;
        return BinaryPrimitives.ReadInt64LittleEndian(st[SMode.StSizeOffset..]);
    }

    /// <summary>Gate: a write to hold until its record is acknowledged.</summary>
    internal void Enqueue(HeldFileWrite w)
    {
        lock (_lock)
        {
            if (_dropped) { HostSys.Call(Nr.close, w.HostFd); return; }
            _held.Enqueue(w);
            _heldBytes += w.Data.Length;
            if (ReleaseEarly) ReleaseLocked(ulong.MaxValue);
        }
    }

    /// <summary>Gate: the backup holds the log up to <paramref name="seq"/> (or the gate releases everything:
    /// ulong.MaxValue): write what was held for records up to there, in order.</summary>
    internal void ReleaseThrough(ulong seq)
    {
        lock (_lock) ReleaseLocked(seq);
    }

    /// <summary>Gate, unprotected: a write goes to storage at once.</summary>
    internal void WriteNow(HeldFileWrite w)
    {
        lock (_lock)
        {
            if (_dropped) { HostSys.Call(Nr.close, w.HostFd); return; }
            _held.Enqueue(w);
            _heldBytes += w.Data.Length;
            ReleaseLocked(ulong.MaxValue);
        }
    }

    void ReleaseLocked(ulong seq)
    {
        bool any = false;
        while (_held.Count > 0 && _held.Peek().Seq <= seq)
        {
            var w = _held.Dequeue();
            Apply(w);
            HostSys.Call(Nr.close, w.HostFd);
            _heldBytes -= w.Data.Length;
            _releasedThrough = Math.Max(_releasedThrough, w.Seq);
            any = true;
        }
        if (any) Monitor.PulseAll(_lock);
    }

    unsafe void Apply(HeldFileWrite w)
    {
        long e = WriteAt(w.HostFd, w.Offset, w.Data);
        if (e >= 0) return;
        // the guest was told the write succeeded (as a kernel's write-back error comes after write(2) returned): it
        // is reported here, not to the guest
        Interlocked.Increment(ref _failures);
        _diagnostics.WriteLine($"revirt: a held file write of {w.Data.Length} bytes at offset {w.Offset} failed on release: errno {-e}");
    }

    /// <summary>pwrite of all of <paramref name="data"/> at <paramref name="offset"/>; 0 or -errno.</summary>
    public static unsafe long WriteAt(int hostFd, long offset, byte[] data)
    {
        fixed (byte* p = data)
        {
            int off = 0;
            while (off < data.Length)
            {
                long r = HostSys.Call(Nr.pwrite64, hostFd, (long)(p + off), data.Length - off, offset + off);
                if (r == -Errno.EINTR) continue;
                if (r < 0) return r;
                if (r == 0) return -Errno.EIO;
                off += (int)r;
            }
        }
        return 0;
    }

    /// <summary>Gate: this replica lost the arbiter: nothing held is ever written.</summary>
    internal void Drop()
    {
        lock (_lock)
        {
            _dropped = true;
            while (_held.Count > 0) HostSys.Call(Nr.close, _held.Dequeue().HostFd);
            _heldBytes = 0;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Guest thread: waits until nothing is held (every write released, or dropped because this replica
    /// lost the arbiter and is stopping). What it waits for must have been shipped to the backup.</summary>
    public void WaitReleased()
    {
        lock (_lock)
            while (_held.Count > 0 && !_dropped) Monitor.Wait(_lock, 50);
    }
}

/// <summary>
/// The payload a held write's record carries (<see cref="Log.SyscallResult.Data"/> of its write/pwrite64 record):
/// the absolute offset it goes to and the sequence number of the last write's record the primary had released when
/// it logged this one. A record of an unheld write carries none (as every log before shared-storage holding).
/// </summary>
public static class HeldWriteRecord
{
    public const int Size = 16;

    public static byte[] Encode(long offset, ulong releasedThrough)
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteInt64LittleEndian(b, offset);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), releasedThrough);
        return b;
    }

    public static (long Offset, ulong ReleasedThrough) Decode(ReadOnlySpan<byte> b)
        => (BinaryPrimitives.ReadInt64LittleEndian(b), BinaryPrimitives.ReadUInt64LittleEndian(b[8..]));
}

/// <summary>
/// A backup following on shared storage: the held writes of the records it replayed that the primary may not have
/// released yet. The primary released, at most, what its records say (<see cref="HeldWriteRecord"/>) plus what it
/// released since; at a takeover the survivor writes every write not known released, in order, at its absolute
/// offset, before its guest goes on. A write the primary did release is written again with the same bytes at the
/// same place: a sequence of writes at absolute offsets leaves the same content when applied twice, and nothing but
/// such writes comes between two points where the primary had released everything (<see cref="Settled"/>: the
/// operations that change names, sizes or modes wait for that).
/// </summary>
public sealed class UnreleasedFileWrites
{
    readonly List<(ulong Seq, string Path, long Offset, byte[] Data)> _writes = new();

    public int Count => _writes.Count;

    /// <summary>A held write's record was replayed.</summary>
    public void Add(ulong seq, string guestPath, long offset, byte[] data, ulong releasedThrough)
    {
        Released(releasedThrough);
        _writes.Add((seq, guestPath, offset, data));
    }

    /// <summary>The primary had released every held write up to record <paramref name="seq"/>.</summary>
    public void Released(ulong seq)
    {
        int n = 0;
        while (n < _writes.Count && _writes[n].Seq <= seq) n++;
        if (n > 0) _writes.RemoveRange(0, n);
    }

    /// <summary>The primary went past a point at which it had released everything held.</summary>
    public void Settled() => _writes.Clear();

    /// <summary>Takeover: writes what the primary may not have released to the files under this replica's root;
    /// returns one line for the takeover report.</summary>
    public string Apply(GuestFs fs)
    {
        int done = 0, failed = 0;
        long bytes = 0;
        foreach (var (_, path, offset, data) in _writes)
        {
            long fd = fs.Open(path, O.WRONLY | O.CLOEXEC, 0);
            long r = fd < 0 ? fd : FileOutput.WriteAt((int)fd, offset, data);
            if (fd >= 0) HostSys.Call(Nr.close, fd);
            if (r < 0) failed++;
            else { done++; bytes += data.Length; }
        }
        _writes.Clear();
        return $"shared storage: {done} file writes the old primary may not have released written again ({bytes} bytes){(failed > 0 ? $", {failed} failed (file gone or not writable)" : "")}";
    }
}
