using System.Security.Cryptography;
using System.Text;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Snapshot;

/// <summary>
/// The file section of a snapshot: the files the guest changed in its root since the start, for a replica whose root
/// is a copy of the root as the guest started (not shared storage). With it, that replica's root equals the live
/// replica's at the snapshot's instruction, and following the log from there re-executes the guest's file effects on
/// files that hold what the guest expects.
///
/// Format (little-endian, strings as BinaryWriter writes them: 7-bit length, UTF-8):
///   u8 carried (0: the changed paths only — a standby on shared storage, or a replay; 1: their state too)
///   i32 n | n × str: the changed paths (<see cref="RootChanges"/>, ordinal order), which the restored machine goes on from
///   if carried: i32 m | m × entry, ordinal path order, each path once:
///     u8 kind (<see cref="RootEntryKind"/>) | str path | u32 permission bits |
///     File: i32 length, bytes | Symlink: str target | others: nothing
/// A directory entry stands for its complete listing (its whole subtree is carried: a renamed directory arrives with
/// its children). The entries are read on the guest thread in the capture's pause, so the pause grows with the size
/// of the files the guest changed. The replica that restores them checks every path (<see cref="RootFiles.CheckPath"/>),
/// applies them (<see cref="RootFiles.Apply"/>), reads the same paths back from its own root and requires the same
/// encoding, so its root provably equals the live one on every changed path (the rest is the start root, which the
/// handshake's root digest checked); else the snapshot is refused with the first path that differs.
/// </summary>
public static partial class MachineSnapshot
{
    /// <summary>At most this many bytes of file content in a snapshot (it is held whole in memory on both sides).</summary>
    const long MaxFileBytes = 1L << 30;
    const int MaxPathCount = 1 << 20;

    sealed record FileSection(bool Carried, IReadOnlyList<string> Changed, IReadOnlyList<RootEntry> Entries, byte[] EntriesBytes);

    /// <summary>The file section's bytes: the changed paths and, when <paramref name="entries"/> is given, their state.</summary>
    static byte[] EncodeFiles(IReadOnlyList<string> changed, IReadOnlyList<RootEntry>? entries)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(entries != null);
        w.Write(changed.Count);
        foreach (var p in changed) w.Write(p);
        if (entries != null) w.Write(EncodeEntries(entries));
        w.Flush();
        return ms.ToArray();
    }

    static byte[] EncodeEntries(IReadOnlyList<RootEntry> entries)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(entries.Count);
        foreach (var e in entries)
        {
            w.Write((byte)e.Kind); w.Write(e.Path); w.Write(e.Mode);
            if (e.Kind == RootEntryKind.File) { w.Write(e.Content!.Length); w.Write(e.Content); }
            else if (e.Kind == RootEntryKind.Symlink) w.Write(e.Target!);
        }
        w.Flush();
        return ms.ToArray();
    }

    /// <summary>SHA-256 (hex) of a file section's entries (after the changed paths).</summary>
    static string FilesDigest(byte[] files) => DecodeFiles(files, 0, files.Length) is { Carried: true } f ? Convert.ToHexStringLower(SHA256.HashData(f.EntriesBytes)) : "";

    static FileSection DecodeFiles(byte[] b, int start, int end)
    {
        var r = new Reader(b, start, end);
        bool carried = r.Bool();
        var changed = new string[r.Count(MaxPathCount)];
        for (int i = 0; i < changed.Length; i++)
            if (RootFiles.CheckPath(changed[i] = r.Str()) is { } bad) throw new SnapshotFormatException($"file section: {bad}");
        var entries = new List<RootEntry>();
        int entriesAt = r.Position;
        if (carried)
        {
            int n = r.Count(MaxPathCount);
            string prev = "";
            for (int i = 0; i < n; i++)
            {
                var kind = (RootEntryKind)r.U8();
                string path = r.Str();
                uint mode = r.U32();
                if (RootFiles.CheckPath(path) is { } bad) throw new SnapshotFormatException($"file section: {bad}");
                if (string.CompareOrdinal(prev, path) >= 0) throw new SnapshotFormatException($"file section: {path} is out of order or repeated");
                prev = path;
                var e = kind switch
                {
                    RootEntryKind.Absent or RootEntryKind.Directory or RootEntryKind.Fifo or RootEntryKind.Socket => new RootEntry(path, kind, mode, null, null),
                    RootEntryKind.File => new RootEntry(path, kind, mode, r.Bytes(r.Count(int.MaxValue)), null),
                    RootEntryKind.Symlink => new RootEntry(path, kind, mode, null, r.Str()),
                    _ => throw new SnapshotFormatException($"file section: {path} of unknown kind {(byte)kind}"),
                };
                entries.Add(e);
            }
        }
        var entriesBytes = b.AsSpan(entriesAt, r.Position - entriesAt).ToArray();
        if (!r.AtEnd) throw new SnapshotFormatException("bytes after the file section's end");
        return new FileSection(carried, changed, entries, entriesBytes);
    }

    /// <summary>
    /// Makes this replica's root hold the carried files, reads them back and requires the snapshot's encoding, then
    /// opens the restored machine's open files on it. Returns the digest of what was read back.
    /// </summary>
    static string ApplyFiles(Kernel k, FileSection files)
    {
        if (!files.Carried)
            throw new SnapshotRefusedException("the snapshot does not carry the files the guest changed, and this replica has a root of its own (a copy of the root as the guest started)");
        try { RootFiles.Apply(k.Fs, files.Entries); }
        catch (InvalidDataException e) { throw new SnapshotFormatException($"file section: {e.Message}"); }
        catch (IOException e) { throw new SnapshotRefusedException($"the files could not be applied to this replica's root: {e.Message}"); }
        List<RootEntry> back;
        try { back = RootFiles.Capture(k.Fs, files.Changed, MaxFileBytes); }
        catch (InvalidOperationException e) { throw new SnapshotRefusedException($"this replica's root cannot be read back after applying the files: {e.Message}"); }
        var again = EncodeEntries(back);
        if (!again.AsSpan().SequenceEqual(files.EntriesBytes))
        {
            var differs = back.Zip(files.Entries).FirstOrDefault(p => !SameEntry(p.First, p.Second));
            string where = differs.First != null ? $"{differs.Second.Path} ({Describe(differs.Second)} in the snapshot, {Describe(differs.First)} here)" : $"{back.Count} paths here, {files.Entries.Count} in the snapshot";
            throw new SnapshotRefusedException($"this replica's root after applying the snapshot's files differs from the live replica's: {where}");
        }
        foreach (var p in k.Processes)
            foreach (var (fd, f) in p.Fds.Entries)
                if (FileKind(f) == Kind.File && f.HostFd < 0 && !InProc(f.GuestPath))
                {
                    long h = k.Fs.Open(f.GuestPath, (f.StatusFlags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.CLOEXEC, 0);
                    if (h < 0) throw new SnapshotRefusedException($"process {p.Pid}'s descriptor {fd} ({f.GuestPath}) cannot be opened on this replica's root (errno {-h})");
                    f.HostFd = (int)h;
                }
        return Convert.ToHexStringLower(SHA256.HashData(again));
    }

    static bool SameEntry(RootEntry a, RootEntry b)
        => a.Path == b.Path && a.Kind == b.Kind && a.Mode == b.Mode && a.Target == b.Target
           && (a.Content == null ? b.Content == null : b.Content != null && a.Content.AsSpan().SequenceEqual(b.Content));

    static string Describe(RootEntry e) => e.Kind switch
    {
        RootEntryKind.File => $"a file of {e.Content!.Length} bytes, mode 0{Convert.ToString(e.Mode, 8)}",
        RootEntryKind.Symlink => $"a symlink to {e.Target}",
        RootEntryKind.Absent => "nothing",
        _ => $"a {e.Kind.ToString().ToLowerInvariant()}, mode 0{Convert.ToString(e.Mode, 8)}",
    };

    /// <summary>An open file whose guest path no longer names it (removed or replaced): a replica with a root of its
    /// own could not open it there, so such a machine is joined by its log (the reason, else null).</summary>
    static string? OpenFileWithoutItsName(Kernel k)
    {
        foreach (var p in k.Processes)
            foreach (var (fd, f) in p.Fds.Entries)
            {
                if (FileKind(f) != Kind.File || f.HostFd < 0 || InProc(f.GuestPath)) continue;
                var byFd = DeviceAndInode(f.HostFd);
                (ulong, ulong)? byName = null;
                k.Fs.OnObject(f.GuestPath, true, h => { byName = DeviceAndInode(h); return 0; });
                if (byFd == null || byName != byFd)
                    return $"process {p.Pid}'s descriptor {fd} holds {f.GuestPath}, whose name now names another file or none (a replica with a root of its own could not open it)";
            }
        return null;
    }

    /// <summary>The VM's own /proc files (anonymous host files, not in the root): their reads come from the log, and a
    /// takeover makes them again.</summary>
    static bool InProc(string guestPath) => guestPath == "/proc" || guestPath.StartsWith("/proc/", StringComparison.Ordinal);

    static (ulong Dev, ulong Ino)? DeviceAndInode(int fd) => HostStat.Of(fd) is { } st ? (st.Dev, st.Ino) : null;
}
