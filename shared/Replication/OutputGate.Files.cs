using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>
/// Output commit for the guest's file writes and changes of names and sizes when both replicas share its storage (<see cref="FileOutput"/>): the
/// gate decides when a held write may go — with the acknowledgement of its record, at once when unprotected, never
/// when discarded — and the <see cref="FileOutput"/> holds and makes them.
/// </summary>
public sealed partial class OutputGate
{
    FileOutput? _files;

    /// <summary>The file writes this gate holds (null: the guest's file writes are not outputs, each replica has its
    /// own copy of the files).</summary>
    public FileOutput? Files => Volatile.Read(ref _files);

    /// <summary>The backup shares the guest's storage: from here on the guest's file writes and changes of names and
    /// sizes are held like its other output. Called once the backup said so (its welcome); later calls keep the
    /// first. <paramref name="failed"/>: a held change the storage refused at release (a replica's named event).</summary>
    public void HoldFileWrites(TextWriter diagnostics, bool releaseEarly = false, Action<HeldStorageChange, long>? failed = null)
    {
        lock (_lock) _files ??= new FileOutput(diagnostics) { ReleaseEarly = releaseEarly, Failed = failed };
    }

    /// <summary>Guest thread, after the change's record <paramref name="c"/>.Seq was logged.</summary>
    public void HoldFileWrite(HeldStorageChange c)
    {
        lock (_lock)
        {
            var files = _files!;
            if (_discarded) { c.Close(); return; }
            if (_unprotected)
            {
                if (Owner()) files.WriteNow(c);
                else c.Close();
                return;
            }
            files.Enqueue(c);
            if (Releasable(c.Seq)) files.ReleaseThrough(_acked);
        }
    }

    /// <summary>Under the lock: the acknowledgement of <paramref name="seq"/> releases the file writes up to it
    /// (before the other output it releases: a reply sent after a write never arrives before the write is stored).</summary>
    void ReleaseFiles(ulong seq)
    {
        if (_files != null && (Fresh == null || Fresh())) _files.ReleaseThrough(seq);
    }
}
