using System.Buffers.Binary;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>Which file a held write goes to: the host's device and inode numbers (two descriptions of one file,
/// or two names of it, are one file).</summary>
public readonly record struct StorageFile(ulong Dev, ulong Ino);

/// <summary>
/// A change of the guest's storage held under the output rule: made on the storage, in the order of the records that
/// produced it, once the backup holds its record (<see cref="FileOutput"/>).
/// </summary>
public abstract class HeldStorageChange
{
    protected HeldStorageChange(ulong seq, StorageFile? file) { Seq = seq; File = file; }

    /// <summary>Sequence number of the record that produced it.</summary>
    public ulong Seq { get; }

    /// <summary>The file whose data, size or links it changes (a read or fstat of that file waits for it); null for a
    /// change of names only (mkdir).</summary>
    public StorageFile? File { get; }

    /// <summary>Where a failure of the change on the storage is reported to the guest (its next fsync or close of the
    /// description; <see cref="DeferredStorageError"/>); null when no description is concerned.</summary>
    public DeferredStorageError? Errors { get; init; }

    /// <summary>Bytes of guest data it holds (the held_bytes metric).</summary>
    public virtual long Bytes => 0;

    /// <summary>A change of names (rename, unlink, rmdir, mkdir, mknod, link, symlink, a creation) or of a mode (chmod):
    /// path lookups of the guest wait for it.</summary>
    public virtual bool ChangesNames => false;

    /// <summary>The end of <see cref="File"/> once this change is made, given the end before it.</summary>
    public virtual long EndAfter(long end) => end;

    /// <summary>Makes the change on the storage: 0 or -errno.</summary>
    public abstract long Apply();

    /// <summary>Releases the host descriptor it owns (after <see cref="Apply"/>, or when it is dropped).</summary>
    public virtual void Close() { }

    /// <summary>What it is, for reports.</summary>
    public abstract string What { get; }
}

/// <summary>
/// A guest file write held under the output rule: its bytes go to <see cref="Offset"/> of the file through
/// <see cref="HostFd"/>, a duplicate of the description's host descriptor that this write owns (the guest may close
/// its own before the write is released). The descriptor follows the open file: a rename made meanwhile does not
/// move the write to another file.
/// </summary>
public sealed class HeldFileWrite(ulong seq, StorageFile file, int hostFd, long offset, byte[] data) : HeldStorageChange(seq, file)
{
    public int HostFd { get; } = hostFd;
    public long Offset { get; } = offset;
    public byte[] Data { get; } = data;
    public override long Bytes => Data.Length;
    public override long EndAfter(long end) => Math.Max(end, Offset + Data.Length);
    public override long Apply() => FileOutput.WriteAt(HostFd, Offset, Data);
    public override void Close() => HostSys.Call(Nr.close, HostFd);
    public override string What => $"a file write of {Data.Length} bytes at offset {Offset}";
}

/// <summary>A held ftruncate/truncate: the file's size becomes <see cref="Length"/>, through a host descriptor of the
/// file this change owns (it follows the open file, as a held write does).</summary>
public sealed class HeldTruncate(ulong seq, StorageFile file, int hostFd, long length) : HeldStorageChange(seq, file)
{
    public int HostFd { get; } = hostFd;
    public long Length { get; } = length;
    public override long EndAfter(long end) => Length;
    public override long Apply() => HostSys.Call(Nr.ftruncate, HostFd, Length);
    public override void Close() => HostSys.Call(Nr.close, HostFd);
    public override string What => $"a truncation to {Length} bytes";
}

/// <summary>A held change made through a host descriptor of its file that this change owns (<see
/// cref="GuestStorageChange.OnFile"/>), so it follows the file as a held write does: a creation (the primary's
/// unnamed O_TMPFILE file given its name at release), a chmod or a change of times.</summary>
public sealed class HeldOnFile(ulong seq, StorageFile file, int hostFd, GuestStorageChange change) : HeldStorageChange(seq, file)
{
    public int HostFd { get; } = hostFd;
    public GuestStorageChange Change { get; } = change;
    // a creation adds a name and a mode decides what lookups and opens answer: path lookups wait for both
    public override bool ChangesNames => Change.Kind != StorageChangeKind.Utimes;
    public override long Apply() => Change.OnFile!(HostFd);
    public override void Close() => HostSys.Call(Nr.close, HostFd);
    public override string What => Change.Describe();
}

/// <summary>A held change of names (<see cref="GuestStorageChange"/>: rename, unlink, rmdir, mkdir, mknod, link,
/// symlink), made by path inside the root at release.</summary>
public sealed class HeldNameChange(ulong seq, StorageFile? file, GuestStorageChange change) : HeldStorageChange(seq, file)
{
    public GuestStorageChange Change { get; } = change;
    public override bool ChangesNames => true;
    public override long Apply() => Change.Perform().Value;
    public override string What => Change.Describe();
}

/// <summary>
/// The changes of the guest's storage a protected primary holds when both replicas share it (`backup listen
/// --shared-storage`): file writes, truncations and changes of names. Each is logged as done (its record says what it
/// does: <see cref="HeldWriteRecord"/>, <see cref="HeldChangeRecord"/>) and waits here until the backup holds the log
/// up to its record; the output gate then releases them, in the order they were made. Until then the storage never
/// holds a change the backup could not reproduce.
/// </summary>
/// <remarks>
/// The guest never observes storage around what is held for it. A read, fstat or lseek of a file waits until the
/// changes held for that file are made (<see cref="WaitReleased(int)"/>, the kernel's <c>SettleFile</c>); a path
/// lookup waits for held changes of names (<see cref="WaitNamesReleased"/>, <c>SettleNames</c>); an operation that
/// changes names or sizes, or a stat by path, waits for everything (<see cref="WaitReleased()"/>,
/// <c>SettleFiles</c>), so the result the primary predicts for it (<see cref="StorageChanges.Predict"/>) is the
/// storage's own answer. An O_APPEND write's offset is the file's end as the guest sees it (<see cref="EndOf"/>).
/// The gate calls in under its own lock (<see cref="Enqueue"/>, <see cref="ReleaseThrough"/>, <see cref="Drop"/>);
/// the guest thread asks <see cref="EndOf"/>, <see cref="Pending"/> and waits; both under this object's lock, always
/// taken after the gate's. A change the storage refuses at release is counted, reported to the guest on its next
/// fsync or close of the description (<see cref="HeldStorageChange.Errors"/>) and through <see cref="Failed"/>.
/// </remarks>
public sealed class FileOutput
{
    readonly object _lock = new();
    readonly Queue<HeldStorageChange> _held = new();
    ulong _releasedThrough, _lastNameChange;
    bool _dropped;
    long _heldBytes, _failures;
    readonly TextWriter _diagnostics;

    readonly HashSet<string> _noted = new();

    public FileOutput(TextWriter diagnostics) => _diagnostics = diagnostics;

    /// <summary>Says <paramref name="line"/> on the diagnostics, the first time only (a change normally held that
    /// is made at once, and why).</summary>
    public void NoteOnce(string line)
    {
        lock (_lock)
            if (_noted.Add(line)) _diagnostics.WriteLine("revirt: " + line);
    }

    /// <summary>Drills and tests only (<c>--plant files-early</c>): each change is released as soon as it is held,
    /// before the backup holds its record.</summary>
    public bool ReleaseEarly { get; init; }

    /// <summary>Called (on the releasing thread, under the lock) for each held change the storage refused:
    /// the change and -errno. A replica reports it as a named event.</summary>
    public Action<HeldStorageChange, long>? Failed { get; init; }

    /// <summary>Sequence number of the record of the last change released (all before it were released too).</summary>
    public ulong ReleasedThrough { get { lock (_lock) return _releasedThrough; } }

    /// <summary>Changes held right now.</summary>
    public bool Pending { get { lock (_lock) return _held.Count > 0; } }

    /// <summary>A change of names is held right now.</summary>
    public bool NamesPending { get { lock (_lock) return _lastNameChange > _releasedThrough && _held.Count > 0; } }

    public long HeldBytes => Interlocked.Read(ref _heldBytes);

    /// <summary>Releases the host storage refused (the guest had been told the change was made).</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>The end of <paramref name="file"/> as the guest sees it: the host's size (asked here, under the lock,
    /// so that no release moves it meanwhile) moved by every change held for it, in order.</summary>
    public long EndOf(StorageFile file, int hostFd)
    {
        lock (_lock)
        {
            long end = HostStat.Of(hostFd) is { } st ? st.Size : 0;
            foreach (var c in _held)
                if (c.File == file) end = c.EndAfter(end);
            return end;
        }
    }

    /// <summary>The file behind a host descriptor and whether it is a regular file (held writes are for those only),
    /// or null when fstat fails.</summary>
    public static (StorageFile File, bool Regular)? Identify(int hostFd)
        => HostStat.Of(hostFd) is { } st ? (new StorageFile(st.Dev, st.Ino), st.IsRegular) : null;

    /// <summary>Gate: a change to hold until its record is acknowledged.</summary>
    internal void Enqueue(HeldStorageChange c)
    {
        lock (_lock)
        {
            if (_dropped) { c.Close(); return; }
            _held.Enqueue(c);
            _heldBytes += c.Bytes;
            if (c.ChangesNames) _lastNameChange = c.Seq;
            if (ReleaseEarly) ReleaseLocked(ulong.MaxValue);
        }
    }

    /// <summary>Gate: the backup holds the log up to <paramref name="seq"/> (or the gate releases everything:
    /// ulong.MaxValue): make what was held for records up to there, in order.</summary>
    internal void ReleaseThrough(ulong seq)
    {
        lock (_lock) ReleaseLocked(seq);
    }

    /// <summary>Gate, unprotected: a change goes to storage at once.</summary>
    internal void WriteNow(HeldStorageChange c)
    {
        lock (_lock)
        {
            if (_dropped) { c.Close(); return; }
            _held.Enqueue(c);
            _heldBytes += c.Bytes;
            ReleaseLocked(ulong.MaxValue);
        }
    }

    void ReleaseLocked(ulong seq)
    {
        bool any = false;
        while (_held.Count > 0 && _held.Peek().Seq <= seq)
        {
            var c = _held.Dequeue();
            Apply(c);
            c.Close();
            _heldBytes -= c.Bytes;
            _releasedThrough = Math.Max(_releasedThrough, c.Seq);
            any = true;
        }
        if (any) Monitor.PulseAll(_lock);
    }

    void Apply(HeldStorageChange c)
    {
        long e = c.Apply();
        if (e >= 0) return;
        // the guest was told the change was made (as a kernel's write-back error comes after write(2) returned): it
        // learns of it at its next fsync or close of the description, as from a kernel
        Interlocked.Increment(ref _failures);
        c.Errors?.Report(e);
        _diagnostics.WriteLine($"revirt: {c.What} (record #{c.Seq}) failed on release: errno {-e}");
        Failed?.Invoke(c, e);
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

    /// <summary>Gate: this replica lost the arbiter: nothing held is ever made.</summary>
    internal void Drop()
    {
        lock (_lock)
        {
            _dropped = true;
            while (_held.Count > 0) _held.Dequeue().Close();
            _heldBytes = 0;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Guest thread: waits until nothing is held (every change released, or dropped because this replica
    /// lost the arbiter and is stopping). What it waits for must have been shipped to the backup.</summary>
    public void WaitReleased()
    {
        lock (_lock)
            while (_held.Count > 0 && !_dropped) Monitor.Wait(_lock, 50);
    }

    /// <summary>Guest thread: waits until no change is held for the file behind <paramref name="hostFd"/> (a read
    /// of file A does not wait for the writes held for file B).</summary>
    public void WaitReleased(int hostFd)
    {
        lock (_lock)
        {
            if (_held.Count == 0) return;
            if (Identify(hostFd) is not { } id) { WaitAllLocked(); return; }
            while (!_dropped && HeldFor(id.File)) Monitor.Wait(_lock, 50);
        }
    }

    /// <summary>Guest thread: waits until every held change of names is made (and what was held before it).</summary>
    public void WaitNamesReleased()
    {
        lock (_lock)
            while (!_dropped && _held.Count > 0 && _lastNameChange > _releasedThrough) Monitor.Wait(_lock, 50);
    }

    void WaitAllLocked()
    {
        while (_held.Count > 0 && !_dropped) Monitor.Wait(_lock, 50);
    }

    bool HeldFor(StorageFile file)
    {
        foreach (var c in _held) if (c.File == file) return true;
        return false;
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
/// The payload of a held change of names or size (a rename, unlink, rmdir, mkdir, link, symlink, truncate or
/// ftruncate record whose <see cref="Log.SyscallResult.Data"/> it is): how far the primary had released when it
/// logged the change, and the device and inode numbers of the file it concerns (rename: the source; unlink, rmdir:
/// the name's file; link: the file linked; a creation: the file made unnamed; chmod, utimes: the file; 0 for mkdir,
/// mknod, symlink and truncations), by which a survivor tells whether its primary made it (<see cref="UnreleasedFileWrites"/>).
/// A record of a change that was not held (an error, or a change made at once) carries none.
/// </summary>
public static class HeldChangeRecord
{
    public const int Size = 24;

    public static byte[] Encode(ulong releasedThrough, StorageFile? file)
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, releasedThrough);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), file?.Dev ?? 0);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), file?.Ino ?? 0);
        return b;
    }

    public static (ulong ReleasedThrough, StorageFile? File) Decode(ReadOnlySpan<byte> b)
    {
        var file = new StorageFile(BinaryPrimitives.ReadUInt64LittleEndian(b[8..]), BinaryPrimitives.ReadUInt64LittleEndian(b[16..]));
        return (BinaryPrimitives.ReadUInt64LittleEndian(b), file.Ino == 0 ? null : file);
    }
}

/// <summary>
/// A backup following on shared storage: the held changes of the records it replayed that the primary may not have
/// made yet. The primary made, at most, what its records say it had released (<see cref="HeldWriteRecord"/>,
/// <see cref="HeldChangeRecord"/>) plus what it released since; at a takeover the survivor makes what its primary may
/// not have made, in order, before its guest goes on.
/// </summary>
/// <remarks>
/// The rule for a change that may or may not have been made: the primary made a prefix of the list, in order. A
/// write at an absolute offset or a truncation leaves the same content when made again with what follows it, so
/// only changes of names need telling apart, and each can be by the storage, since nothing after it in the list
/// undoes what the test looks at unless a later change of names was made too (the walk goes from the last change of
/// names back): a rename or exchange was made when its source name no longer names the recorded file (its inode
/// number: device numbers may differ between the hosts of shared storage), an unlink or rmdir when its name no
/// longer names the recorded file, a mkdir or symlink when its name exists, a link when its new name names the
/// recorded file. Everything up to the last change found made is
/// skipped; everything after it is made (writes by the path their description had when they were made, which follows
/// the guest's renames). A change of names or size waits for everything held before it (<c>SettleFiles</c>), so the
/// list holds at most one of them, at its head; the walk needs no more.
/// </remarks>
public sealed class UnreleasedFileWrites
{
    abstract record Entry(ulong Seq);
    sealed record Write(ulong Seq, string Path, long Offset, byte[] Data) : Entry(Seq);
    sealed record Change(ulong Seq, GuestStorageChange What, StorageFile? File) : Entry(Seq);

    readonly List<Entry> _entries = new();

    public int Count => _entries.Count;

    /// <summary>A held write's record was replayed.</summary>
    public void Add(ulong seq, string guestPath, long offset, byte[] data, ulong releasedThrough)
    {
        Released(releasedThrough);
        _entries.Add(new Write(seq, guestPath, offset, data));
    }

    /// <summary>A held change of names or size was replayed (<paramref name="file"/>: what its record names).</summary>
    public void AddChange(ulong seq, GuestStorageChange change, StorageFile? file, ulong releasedThrough)
    {
        Released(releasedThrough);
        _entries.Add(new Change(seq, change, file));
    }

    /// <summary>The primary had released every held change up to record <paramref name="seq"/>.</summary>
    public void Released(ulong seq)
    {
        int n = 0;
        while (n < _entries.Count && _entries[n].Seq <= seq) n++;
        if (n > 0) _entries.RemoveRange(0, n);
    }

    /// <summary>The primary went past a point at which it had released everything held.</summary>
    public void Settled() => _entries.Clear();

    /// <summary>Takeover: makes what the primary may not have made on the files under this replica's root; returns
    /// one line for the takeover report.</summary>
    public string Apply(GuestFs fs)
    {
        int from = 0;
        for (int i = _entries.Count - 1; i >= 0; i--)
            if (_entries[i] is Change c && StorageChanges.AlreadyMade(fs, c.What, c.File)) { from = i + 1; break; }
        int done = 0, failed = 0, skipped = from;
        long bytes = 0;
        foreach (var e in _entries.Skip(from))
        {
            long r;
            if (e is Write w)
            {
                long fd = fs.Open(w.Path, O.WRONLY | O.CLOEXEC, 0);
                r = fd < 0 ? fd : FileOutput.WriteAt((int)fd, w.Offset, w.Data);
                if (fd >= 0) HostSys.Call(Nr.close, fd);
                if (r >= 0) bytes += w.Data.Length;
            }
            else r = StorageChanges.MakeAgain(fs, ((Change)e).What);
            if (r < 0) failed++;
            else done++;
        }
        _entries.Clear();
        return $"shared storage: {done} file changes the old primary may not have made made again ({bytes} bytes written){(skipped > 0 ? $", {skipped} found made" : "")}{(failed > 0 ? $", {failed} failed (file gone or not writable)" : "")}";
    }
}
