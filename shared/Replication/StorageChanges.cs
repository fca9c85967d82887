using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>What a held change of names or size will answer the guest, and what it holds until it is made.</summary>
/// <param name="Result">0 or -errno, as the host would answer the change now.</param>
/// <param name="File">The file it concerns (<see cref="HeldChangeRecord"/>).</param>
/// <param name="HostFd">A truncation, creation, truncating open, chmod or change of times: a host descriptor of the
/// file, owned by the held change (an open's result is another one, the guest's).</param>
/// <param name="Unpredictable">The result cannot be told without making the change (renameat2's other flags, a link
/// of a file this process does not own), or the call changes nothing whatever it answers (an O_CREAT open of a name
/// that exists): it is made at once, as before shared-storage holding.</param>
/// <param name="FallBack">Why a change that is normally held is made at once (a file system that refuses O_TMPFILE):
/// said once on the replica's diagnostics.</param>
/// <param name="Truncation">An open (<see cref="StorageChangeKind.Open"/>) of an existing regular file with O_TRUNC: what
/// it holds is the file's truncation to 0, not a creation.</param>
public readonly record struct StoragePrediction(long Result, StorageFile? File = null, int HostFd = -1, bool Unpredictable = false, string? FallBack = null, bool Truncation = false);

/// <summary>
/// Changes of names and sizes on shared storage (<see cref="GuestStorageChange"/>): the primary's prediction of
/// each one's result, and a survivor's test of whether its dead primary made one.
/// </summary>
/// <remarks>
/// The prediction runs after the guest waited for everything held (<c>SettleFiles</c>), so the storage is exactly
/// the guest's view and the host's own answers to lookups (fstatat, faccessat2) decide it: ENOENT/ENOTDIR of the
/// path's directories, then the checks Linux makes for the call (EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, EINVAL,
/// EXDEV, EACCES of the directory). A refusal the checks do not foresee (a read-only file system, quotas, immutable
/// files) shows at release as a failure of a change the guest was told succeeded: counted, reported on stderr and
/// as a `file-release-failed` event, and answered to the guest's next fsync or close of the description concerned.
/// </remarks>
public static class StorageChanges
{
    /// <summary>The primary: the result of <paramref name="c"/> on the storage as it is now, without making it.</summary>
    public static StoragePrediction Predict(GuestFs fs, GuestStorageChange c)
    {
        switch (c.Kind)
        {
            case StorageChangeKind.Mkdir or StorageChangeKind.Mknod:
                return new(PredictNewName(fs, c.Path));
            case StorageChangeKind.Open:
                return PredictOpen(fs, c);
            case StorageChangeKind.Chmod or StorageChangeKind.Utimes:
                return PredictOnFile(fs, c);
            case StorageChangeKind.Symlink:
                // an empty content is refused before the name is looked up; one of PATH_MAX bytes or more too
                if (string.IsNullOrEmpty(c.Target)) return new(-Errno.ENOENT);
                if (System.Text.Encoding.UTF8.GetByteCount(c.Target) >= PathMax) return new(-Errno.ENAMETOOLONG);
                return new(PredictNewName(fs, c.Path));
            case StorageChangeKind.Link:
                return PredictLink(fs, c);
            case StorageChangeKind.Unlink or StorageChangeKind.Rmdir:
            {
                bool dirWanted = c.Kind == StorageChangeKind.Rmdir;
                HostStat st = default;
                // Linux's order (may_delete): the lookup, the directory's permission, the sticky rule, the type
                long r = fs.InParent(c.Path, dirWanted ? -Errno.EBUSY : -Errno.EISDIR, (dir, name) =>
                {
                    long e = HostStat.OfName(dir, name, out st);
                    if (e < 0) return e;
                    e = MayRemoveFrom(dir, st);
                    if (e < 0) return e;
                    if (!dirWanted && st.IsDirectory) return -Errno.EISDIR;
                    if (dirWanted && !st.IsDirectory) return -Errno.ENOTDIR;
                    if (dirWanted && !IsEmptyDirectory(dir, name)) return -Errno.ENOTEMPTY;
                    return 0;
                });
                return new(r, r == 0 ? new StorageFile(st.Dev, st.Ino) : null);
            }
            case StorageChangeKind.Rename:
                return PredictRename(fs, c);
            default:
                return PredictTruncate(fs, c);
        }
    }

    static StoragePrediction PredictRename(GuestFs fs, GuestStorageChange c)
    {
        const uint known = RenameFlags.NOREPLACE | RenameFlags.EXCHANGE;
        if ((c.Flags & ~known) != 0) return new(0, Unpredictable: true);
        if (c.Flags == known) return new(-Errno.EINVAL);
        HostStat src = default;
        long r = fs.InParents(c.Path, c.Target!, -Errno.EBUSY, (d1, n1, d2, n2) =>
        {
            long e = HostStat.OfName(d1, n1, out src);
            if (e < 0) return e;
            e = HostStat.OfName(d2, n2, out var dst);
            bool exists = e == 0;
            if (e < 0 && e != -Errno.ENOENT) return e;
            if (HostStat.Of(d2) is not { } targetDir || targetDir.Dev != src.Dev) return -Errno.EXDEV;
            bool exchange = (c.Flags & RenameFlags.EXCHANGE) != 0;
            if (exchange && !exists) return -Errno.ENOENT;
            if ((c.Flags & RenameFlags.NOREPLACE) != 0 && exists) return -Errno.EEXIST;
            // a directory into itself or below it (exchange: either way)
            if (src.IsDirectory && Below(c.Target!, c.Path)) return -Errno.EINVAL;
            if (exchange && dst.IsDirectory && Below(c.Path, c.Target!)) return -Errno.EINVAL;
            if (exists && dst.SameFile(src)) return 0; // two names of one file: nothing happens
            // Linux's order (vfs_rename): the source may leave its directory (permission, sticky rule), the target
            // may be replaced (the same, then its type against the source's) or the name added; a directory that
            // changes parents must be writable itself (its ".." changes); a non-empty target directory last
            e = MayRemoveFrom(d1, src);
            if (e < 0) return e;
            if (exists)
            {
                e = MayRemoveFrom(d2, dst);
                if (e < 0) return e;
                if (!exchange && src.IsDirectory && !dst.IsDirectory) return -Errno.ENOTDIR;
                if (!exchange && !src.IsDirectory && dst.IsDirectory) return -Errno.EISDIR;
            }
            else if ((e = MayChangeNamesIn(d2)) < 0) return e;
            if (!SameDirectory(d1, d2) && (MovedDirectoryNotWritable(src, d1, n1) || (exchange && MovedDirectoryNotWritable(dst, d2, n2)))) return -Errno.EACCES;
            if (exists && !exchange && dst.IsDirectory && !IsEmptyDirectory(d2, n2)) return -Errno.ENOTEMPTY;
            return 0;
        });
        return new(r, r == 0 ? new StorageFile(src.Dev, src.Ino) : null);
    }

    /// <summary>Linux's PATH_MAX: a symlink's content must be shorter.</summary>
    const int PathMax = 4096;

    /// <summary>mkdir or symlink of <paramref name="path"/>: EEXIST when the name exists (a dangling symlink too),
    /// else the lookup's error, else whether this process may add a name to the directory.</summary>
    static long PredictNewName(GuestFs fs, string path) => fs.InParent(path, -Errno.EEXIST, (dir, name) =>
    {
        long e = HostStat.OfName(dir, name, out _);
        if (e == 0) return -Errno.EEXIST;
        return e != -Errno.ENOENT ? e : MayChangeNamesIn(dir);
    });

    /// <summary>
    /// link(2) of <see cref="GuestStorageChange.Path"/> (a final symlink not followed, as the guest's link and linkat
    /// make it) as <see cref="GuestStorageChange.Target"/>, in Linux's order: the old name's lookup, EEXIST of the new
    /// name, EXDEV, then the directory's write permission and EPERM for a directory. A file this process does not own
    /// is linked or refused by fs.protected_hardlinks, which the prediction does not read: such a link is made at once.
    /// </summary>
    static StoragePrediction PredictLink(GuestFs fs, GuestStorageChange c)
    {
        HostStat src = default;
        bool foreign = false;
        long r = fs.InParents(c.Path, c.Target!, -Errno.EBUSY, (d1, n1, d2, n2) =>
        {
            long e = HostStat.OfName(d1, n1, out src);
            if (e < 0) return e;
            e = HostStat.OfName(d2, n2, out _);
            if (e == 0) return -Errno.EEXIST;
            if (e != -Errno.ENOENT) return e;
            if (HostStat.Of(d2) is not { } targetDir || targetDir.Dev != src.Dev) return -Errno.EXDEV;
            long euid = HostSys.Call(Nr.geteuid);
            if (euid != 0 && src.Uid != euid) { foreign = true; return 0; }
            e = MayChangeNamesIn(d2);
            if (e < 0) return e;
            return src.IsDirectory ? -Errno.EPERM : 0;
        });
        if (foreign) return new(0, Unpredictable: true);
        return new(r, r == 0 ? new StorageFile(src.Dev, src.Ino) : null);
    }

    /// <summary>
    /// An open with O_CREAT or O_TRUNC: held when it creates its name (<see cref="PredictCreate"/>) or truncates an
    /// existing regular file (<see cref="PredictTruncatingOpen"/>). Made at once, as before, whatever changes nothing
    /// (an O_CREAT open of a name that exists without O_TRUNC, O_EXCL of a name that exists: EEXIST; an error; O_TRUNC
    /// of a FIFO, socket or device, which Linux ignores) and what the prediction cannot name: a path ending in "/",
    /// O_DIRECTORY or O_PATH with O_CREAT or O_TRUNC, a final dangling symlink (the open creates its target).
    /// </summary>
    static StoragePrediction PredictOpen(GuestFs fs, GuestStorageChange c)
    {
        int flags = c.OpenFlags;
        if (c.Path.EndsWith('/') || (flags & (O.DIRECTORY | O.PATH)) != 0) return new(0, Unpredictable: true);
        if ((flags & O.CREAT) != 0 && PredictCreate(fs, c) is { } created) return created;
        bool exclusive = (flags & (O.CREAT | O.EXCL)) == (O.CREAT | O.EXCL); // of a name that exists: EEXIST
        if ((flags & O.TRUNC) == 0 || exclusive) return new(0, Unpredictable: true);
        // fs.protected_regular may refuse an O_CREAT open of someone else's file in a sticky directory (root's too);
        // the prediction does not read the sysctl: such an open is made at once
        if ((flags & O.CREAT) != 0 && MayBeProtectedRegular(fs, c.Path)) return new(0, Unpredictable: true);
        return PredictTruncatingOpen(fs, c);
    }

    /// <summary>The name is an existing file in a sticky directory, owned neither by the directory's owner nor by this
    /// process (Linux's may_create_in_sticky, which fs.protected_regular and protected_fifos switch on).</summary>
    static bool MayBeProtectedRegular(GuestFs fs, string path) => fs.InParent(path, -Errno.EISDIR, (dir, name) =>
    {
        if (HostStat.OfName(dir, name, out var st) < 0 || HostStat.Of(dir) is not { } d || (d.Mode & SMode.ISVTX) == 0) return 0;
        return st.Uid != d.Uid && st.Uid != HostSys.Call(Nr.geteuid) ? 1 : 0;
    }) == 1;

    /// <summary>The status flags a description keeps from an open's flags (O_APPEND, O_NONBLOCK, O_SYNC, ...).</summary>
    static int StatusFlags(int flags) => flags & ~(O.ACCMODE | O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.NOFOLLOW | O.CLOEXEC);

    /// <summary>
    /// An open with O_CREAT: null when its name exists (it creates nothing; with O_TRUNC it may truncate it). Held when
    /// it creates its name: the name does not exist and the directory takes new names. The primary then makes the
    /// file unnamed (O_TMPFILE in the directory, with the guest's access mode and status flags, or read-write and
    /// re-opened read-only through /proc/self/fd): the guest gets that descriptor and works on the file at once, its
    /// writes held as any; the held change owns a second descriptor and gives the file its name at release (<see
    /// cref="GuestStorageChange.OnFile"/>). Until then no name on the storage shows it (a takeover: the unnamed file
    /// goes with the primary, and the survivor creates the name itself). Made at once: an error, and a file system
    /// that refuses O_TMPFILE (<see cref="StoragePrediction.FallBack"/>).
    /// </summary>
    static StoragePrediction? PredictCreate(GuestFs fs, GuestStorageChange c)
    {
        int flags = c.OpenFlags;
        int guestFd = -1, heldFd = -1;
        string? fallBack = null;
        const long held = 1, exists = 2;
        long r = fs.InParent(c.Path, -Errno.EISDIR, (dir, name) =>
        {
            long e = HostStat.OfName(dir, name, out _);
            if (e == 0) return exists;
            if (e != -Errno.ENOENT || MayChangeNamesIn(dir) < 0) return 0;
            int access = flags & O.ACCMODE, status = StatusFlags(flags);
            long t = HostSys.WithPath(Nr.openat, ".", p => HostSys.Call(Nr.openat, dir, p, O.TMPFILE | (access == O.RDONLY ? O.RDWR : access) | status | O.CLOEXEC, c.Mode));
            if (t < 0) { fallBack = $"shared storage: O_TMPFILE refused (errno {-t}): creations in {GuestDirectory(c.Path)} are made at once, not held"; return 0; }
            long g = access == O.RDONLY ? ReopenReadOnly(t, status) : HostSys.Call(Nr.fcntl, t, F.DUPFD_CLOEXEC, 0);
            if (g < 0) { HostSys.Call(Nr.close, t); return 0; }
            (guestFd, heldFd) = access == O.RDONLY ? ((int)g, (int)t) : ((int)t, (int)g);
            return held;
        });
        if (r == exists) return null;
        if (r != held) return new(0, Unpredictable: true, FallBack: fallBack);
        var id = FileOutput.Identify(heldFd);
        return new(guestFd, id?.File, heldFd);
    }

    /// <summary>A second description of the file behind <paramref name="fd"/>, read-only with the status flags
    /// <paramref name="status"/> (through /proc/self/fd: the file, whatever its name now), or -errno.</summary>
    static long ReopenReadOnly(long fd, int status)
        => HostSys.WithPath(Nr.open, $"/proc/self/fd/{fd}", p => HostSys.Call(Nr.open, p, O.RDONLY | status | O.CLOEXEC, 0));

    /// <summary>
    /// An open with O_TRUNC of a name that exists, in Linux's order: the path's lookup (a final symlink followed
    /// unless O_NOFOLLOW; its errors change nothing and are made at once), then for a regular file (Linux truncates
    /// nothing else) the open's own checks with write permission asked whatever the access mode (Linux adds
    /// MAY_WRITE for O_TRUNC: an O_RDONLY|O_TRUNC open needs read and write permission, as O_RDWR does; EACCES,
    /// EROFS, ETXTBSY, O_NOATIME's EPERM). A predicted error is the open's answer and changes nothing. Predicted to
    /// succeed, the primary opens the file without O_TRUNC (read-write, and re-opened read-only for an O_RDONLY guest
    /// through /proc/self/fd), the guest works on it at once (a read, fstat or seek of the file waits until the
    /// truncation is made, so it never sees the old bytes; its writes are held after the truncation) and the held
    /// change truncates it to 0 at release through a descriptor of its own. Immutable and append-only files
    /// (EPERM) are not foreseen: their refusal shows at release.
    /// </summary>
    static StoragePrediction PredictTruncatingOpen(GuestFs fs, GuestStorageChange c)
    {
        int flags = c.OpenFlags;
        long probe = fs.Open(c.Path, O.PATH | (flags & O.NOFOLLOW) | O.CLOEXEC, 0);
        if (probe < 0) return new(0, Unpredictable: true);
        // the host's procfs reached by a route the kernel's path check did not see: the open answers ENOENT at once
        bool regular = HostStat.Of((int)probe) is { IsRegular: true } && !ProcFs.IsHostProcFs(probe);
        HostSys.Call(Nr.close, probe);
        if (!regular) return new(0, Unpredictable: true);
        int access = flags & O.ACCMODE, status = StatusFlags(flags);
        long t = fs.Open(c.Path, (access == O.RDONLY ? O.RDWR : access) | status | (flags & O.NOFOLLOW) | O.CLOEXEC, 0);
        if (t < 0) return new(t);
        long g = access == O.RDONLY ? ReopenReadOnly(t, status) : HostSys.Call(Nr.fcntl, t, F.DUPFD_CLOEXEC, 0);
        if (g < 0) { HostSys.Call(Nr.close, t); return new(0, Unpredictable: true); }
        var (guestFd, heldFd) = access == O.RDONLY ? ((int)g, (int)t) : ((int)t, (int)g);
        return new(guestFd, FileOutput.Identify(heldFd)?.File, heldFd, Truncation: true);
    }

    static string GuestDirectory(string path) => path.LastIndexOf('/') is > 0 and var i ? path[..i] : "/";

    /// <summary>
    /// chmod or a change of times (utimensat), by path or through a description, in Linux's order: utimensat's
    /// times (both UTIME_OMIT: nothing is done, the path not even looked up — made at once), the path's lookup (an
    /// O_PATH open of the file, the descriptor the held change keeps), a tv_nsec out of range (EINVAL), then the
    /// permission: chmod and explicit times need the file's owner (EPERM), "now" (no times, or both UTIME_NOW) the
    /// owner or write permission (EACCES); root passes. Immutable files and read-only file systems are not foreseen.
    /// </summary>
    static StoragePrediction PredictOnFile(GuestFs fs, GuestStorageChange c)
    {
        bool touch = true, valid = true;
        if (c.Kind == StorageChangeKind.Utimes && c.Times is { Length: >= 32 } t)
        {
            long atime = BitConverter.ToInt64(t, 8), mtime = BitConverter.ToInt64(t, 24);
            if (atime == Utime.OMIT && mtime == Utime.OMIT) return new(0, Unpredictable: true);
            valid = ValidNsec(atime) && ValidNsec(mtime);
            touch = atime == Utime.NOW && mtime == Utime.NOW;
        }
        long fd = c.HostFd >= 0
            ? HostSys.Call(Nr.fcntl, c.HostFd, F.DUPFD_CLOEXEC, 0)
            : fs.Open(c.Path, O.PATH | (c.Follow ? 0 : O.NOFOLLOW) | O.CLOEXEC, 0);
        if (fd < 0) return new(fd);
        long e = HostStat.Of((int)fd, out var st);
        if (e == 0 && !valid) e = -Errno.EINVAL; // checked once the path is looked up
        long euid = HostSys.Call(Nr.geteuid);
        if (e == 0 && euid != 0 && st.Uid != euid)
            e = c.Kind == StorageChangeKind.Utimes && touch ? MayWrite((int)fd) : -Errno.EPERM;
        if (e < 0)
        {
            HostSys.Call(Nr.close, fd);
            return new(e);
        }
        return new(0, new StorageFile(st.Dev, st.Ino), (int)fd);
    }

    static bool ValidNsec(long nsec) => nsec is Utime.NOW or Utime.OMIT or >= 0 and <= 999_999_999;

    /// <summary>0 when this process may write the file behind <paramref name="fd"/> (O_PATH or not), else -EACCES.</summary>
    static unsafe long MayWrite(int fd)
    {
        byte empty = 0;
        return HostSys.Call(Nr.faccessat2, fd, (long)&empty, Access.W_OK, At.EMPTY_PATH | At.EACCESS) < 0 ? -Errno.EACCES : 0;
    }

    /// <summary>The held form of a change predicted to succeed, logged as record <paramref name="seq"/>.</summary>
    public static HeldStorageChange Hold(ulong seq, GuestStorageChange c, StoragePrediction p) => c.Kind switch
    {
        StorageChangeKind.Truncate => new HeldTruncate(seq, p.File ?? default, p.HostFd, c.Length) { Errors = c.Errors },
        StorageChangeKind.Open when p.Truncation => new HeldTruncate(seq, p.File ?? default, p.HostFd, 0) { Errors = c.Errors },
        StorageChangeKind.Open or StorageChangeKind.Chmod or StorageChangeKind.Utimes
            => new HeldOnFile(seq, p.File ?? default, p.HostFd, c) { Errors = c.Errors },
        _ => new HeldNameChange(seq, p.File, c) { Errors = c.Errors },
    };

    static StoragePrediction PredictTruncate(GuestFs fs, GuestStorageChange c)
    {
        if (c.Length < 0) return new(-Errno.EINVAL);
        long fd;
        if (c.HostFd >= 0)
        {
            // ftruncate: a regular file opened for writing
            if (HostStat.Of(c.HostFd) is not { IsRegular: true } || !c.Writable) return new(-Errno.EINVAL);
            fd = HostSys.Call(Nr.fcntl, c.HostFd, F.DUPFD_CLOEXEC, 0);
        }
        else
        {
            // truncate: the path opened for writing as the call checks it (the open changes nothing)
            fd = TruncateOpen.ForWriting(fs, c.Path);
            if (fd < 0) return new(fd);
        }
        if (fd < 0) return new(fd);
        var id = FileOutput.Identify((int)fd);
        return new(0, id?.File, (int)fd);
    }

    /// <summary>Is <paramref name="path"/> <paramref name="dir"/> itself or below it (lexically)?</summary>
    static bool Below(string path, string dir)
        => path == dir || path.StartsWith(dir.EndsWith('/') ? dir : dir + "/", StringComparison.Ordinal);

    /// <summary>
    /// 0 when this process may remove or rename <paramref name="entry"/> in <paramref name="dir"/> (Linux's may_delete):
    /// EACCES without write and search permission of the directory; EPERM in a sticky directory (S_ISVTX, as /tmp)
    /// unless this process owns the entry or the directory, or is root.
    /// </summary>
    static long MayRemoveFrom(int dir, in HostStat entry)
    {
        long e = MayChangeNamesIn(dir);
        if (e < 0) return e;
        if (HostStat.Of(dir) is not { } d || (d.Mode & SMode.ISVTX) == 0) return 0;
        long euid = HostSys.Call(Nr.geteuid);
        return euid == 0 || entry.Uid == euid || d.Uid == euid ? 0 : -Errno.EPERM;
    }

    /// <summary>The two directory descriptors name one directory.</summary>
    static bool SameDirectory(int a, int b) => HostStat.Of(a) is { } x && HostStat.Of(b) is { } y && x.SameFile(y);

    /// <summary>A directory that moves to another parent rewrites its "..": Linux asks write permission of it.</summary>
    static unsafe bool MovedDirectoryNotWritable(in HostStat moved, int dir, byte[] name)
    {
        if (!moved.IsDirectory || HostSys.Call(Nr.geteuid) == 0) return false;
        fixed (byte* n = name) return HostSys.Call(Nr.faccessat2, dir, (long)n, Access.W_OK, At.EACCESS | At.SYMLINK_NOFOLLOW) < 0;
    }

    /// <summary>0 when this process may add and remove names in the directory, else -EACCES.</summary>
    static unsafe long MayChangeNamesIn(int dir)
    {
        byte empty = 0;
        long r = HostSys.Call(Nr.faccessat2, dir, (long)&empty, Access.W_OK | Access.X_OK, At.EMPTY_PATH | At.EACCESS);
        return r < 0 ? -Errno.EACCES : 0;
    }

    /// <summary>The directory <paramref name="name"/> in <paramref name="dir"/> holds nothing but "." and "..".</summary>
    static unsafe bool IsEmptyDirectory(int dir, byte[] name)
    {
        long fd;
        fixed (byte* n = name) fd = HostSys.Call(Nr.openat, dir, (long)n, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC, 0);
        if (fd < 0) return true; // cannot be listed: the change itself will tell at release
        try { return RootFiles.ListAt(fd).Count == 0; }
        catch (IOException) { return true; }
        finally { HostSys.Call(Nr.close, fd); }
    }

    /// <summary>
    /// A survivor: did its primary make <paramref name="c"/> (held, predicted to succeed, on the storage as it was
    /// just before: the rule in <see cref="UnreleasedFileWrites"/>)? Truncations answer no (making one again with
    /// the writes after it leaves the same content), truncating opens too (an O_CREAT|O_TRUNC creation made again
    /// truncates what the primary may have linked, and every write after it is in the list), and so do chmod and
    /// changes of times (made again, they leave the same mode; times given as "now" become the survivor's now).
    /// </summary>
    public static bool AlreadyMade(GuestFs fs, GuestStorageChange c, StorageFile? file)
    {
        switch (c.Kind)
        {
            case StorageChangeKind.Mkdir or StorageChangeKind.Symlink or StorageChangeKind.Mknod:
                // the name did not exist when the primary predicted the change
                return fs.InParent(c.Path, -Errno.EEXIST, (dir, name) => HostStat.OfName(dir, name, out _)) == 0;
            case StorageChangeKind.Link:
                // made when its new name names the recorded file
                return file is { } linked && InodeOf(fs, c.Target!) == linked.Ino;
            case StorageChangeKind.Open when (c.OpenFlags & O.TRUNC) != 0:
                return false;
            case StorageChangeKind.Open:
                // made when the name names the file the primary created unnamed (else that file went with it)
                return file is { } created && InodeOf(fs, c.Path) == created.Ino;
            case StorageChangeKind.Unlink or StorageChangeKind.Rmdir or StorageChangeKind.Rename:
                // made when the name no longer names the recorded file
                return file is { } f && InodeOf(fs, c.Path) != f.Ino;
            default:
                return false;
        }
    }

    /// <summary>The inode number <paramref name="path"/> names (a final symlink not followed), or null when it names
    /// nothing. Inode numbers only: the hosts of shared storage (NFS clients) may number its device differently.</summary>
    static ulong? InodeOf(GuestFs fs, string path)
    {
        HostStat st = default;
        return fs.InParent(path, -Errno.EBUSY, (dir, name) => HostStat.OfName(dir, name, out st)) == 0 ? st.Ino : null;
    }

    /// <summary>A survivor makes a change its primary may not have made: 0 or -errno.</summary>
    public static long MakeAgain(GuestFs fs, GuestStorageChange c)
    {
        switch (c.Kind)
        {
            case StorageChangeKind.Truncate or StorageChangeKind.Open:
            {
                // a creation: the name, empty, with the mode the primary gave it (the writes after it follow); a
                // truncating open: the file emptied (created, with O_CREAT, if the primary's creation went with it)
                bool truncating = c.Kind == StorageChangeKind.Open && (c.OpenFlags & O.TRUNC) != 0;
                long fd = c.Kind == StorageChangeKind.Truncate ? fs.Open(c.Path, O.WRONLY | O.CLOEXEC, 0)
                    : truncating ? fs.Open(c.Path, O.WRONLY | (c.OpenFlags & (O.CREAT | O.NOFOLLOW)) | O.TRUNC | O.CLOEXEC, (int)c.Mode)
                    : fs.Open(c.Path, O.WRONLY | O.CREAT | O.EXCL | O.CLOEXEC, (int)c.Mode);
                if (fd < 0) return fd;
                long r = c.Kind == StorageChangeKind.Truncate ? HostSys.Call(Nr.ftruncate, fd, c.Length) : 0;
                HostSys.Call(Nr.close, fd);
                return r;
            }
            case StorageChangeKind.Chmod or StorageChangeKind.Utimes:
                // by the path (the description's, for fchmod and futimens): this replica has no descriptor yet
                return fs.OnObject(c.Path, c.Follow, c.OnFile!);
            default:
                return c.Perform().Value;
        }
    }
}
