using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>What a held change of names or size will answer the guest, and what it holds until it is made.</summary>
/// <param name="Result">0 or -errno, as the host would answer the change now.</param>
/// <param name="File">The file it concerns (<see cref="HeldChangeRecord"/>).</param>
/// <param name="HostFd">A truncation: a host descriptor of the file, owned by the held change.</param>
/// <param name="Unpredictable">The result cannot be told without making the change (renameat2's other flags, a link
/// of a file this process does not own): it is made at once, as before shared-storage holding.</param>
public readonly record struct StoragePrediction(long Result, StorageFile? File = null, int HostFd = -1, bool Unpredictable = false);

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
            case StorageChangeKind.Mkdir:
                return new(PredictNewName(fs, c.Path));
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
                long r = fs.InParent(c.Path, dirWanted ? -Errno.EBUSY : -Errno.EISDIR, (dir, name) =>
                {
                    long e = HostStat.OfName(dir, name, out st);
                    if (e < 0) return e;
                    if (!dirWanted && st.IsDirectory) return -Errno.EISDIR;
                    if (dirWanted && !st.IsDirectory) return -Errno.ENOTDIR;
                    if (dirWanted && !IsEmptyDirectory(dir, name)) return -Errno.ENOTEMPTY;
                    return MayChangeNamesIn(dir);
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
            if (exists && !exchange)
            {
                if (dst.SameFile(src)) return 0; // two names of one file: nothing happens
                if (src.IsDirectory && !dst.IsDirectory) return -Errno.ENOTDIR;
                if (!src.IsDirectory && dst.IsDirectory) return -Errno.EISDIR;
                if (dst.IsDirectory && !IsEmptyDirectory(d2, n2)) return -Errno.ENOTEMPTY;
            }
            e = MayChangeNamesIn(d1);
            return e < 0 ? e : MayChangeNamesIn(d2);
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
            // truncate: the path opened for writing (what the call itself needs; the open changes nothing)
            fd = fs.Open(c.Path, O.WRONLY | O.CLOEXEC, 0);
            if (fd < 0) return new(fd);
            if (HostStat.Of((int)fd) is not { IsRegular: true })
            {
                HostSys.Call(Nr.close, fd);
                return new(-Errno.EINVAL);
            }
        }
        if (fd < 0) return new(fd);
        var id = FileOutput.Identify((int)fd);
        return new(0, id?.File, (int)fd);
    }

    /// <summary>Is <paramref name="path"/> <paramref name="dir"/> itself or below it (lexically)?</summary>
    static bool Below(string path, string dir)
        => path == dir || path.StartsWith(dir.EndsWith('/') ? dir : dir + "/", StringComparison.Ordinal);

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
    /// the writes after it leaves the same content).
    /// </summary>
    public static bool AlreadyMade(GuestFs fs, GuestStorageChange c, StorageFile? file)
    {
        switch (c.Kind)
        {
            case StorageChangeKind.Mkdir or StorageChangeKind.Symlink:
                // the name did not exist when the primary predicted the change
                return fs.InParent(c.Path, -Errno.EEXIST, (dir, name) => HostStat.OfName(dir, name, out _)) == 0;
            case StorageChangeKind.Link:
                // made when its new name names the recorded file
                return file is { } linked && InodeOf(fs, c.Target!) == linked.Ino;
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
        if (c.Kind != StorageChangeKind.Truncate) return c.Perform().Value;
        long fd = fs.Open(c.Path, O.WRONLY | O.CLOEXEC, 0);
        if (fd < 0) return fd;
        long r = HostSys.Call(Nr.ftruncate, fd, c.Length);
        HostSys.Call(Nr.close, fd);
        return r;
    }
}
