using ReVirt.Abi;

namespace ReVirt.Linux;

/// <summary>
/// truncate(2) by path, as Linux checks it (vfs_truncate): the path's lookup (a final symlink followed), EISDIR for a
/// directory, EINVAL for anything but a regular file, then what an open for writing answers (EROFS, EACCES, ETXTBSY).
/// The file is opened for writing only once it is known to be a regular file: an open for writing of a FIFO waits for
/// a reader, which truncate(2) never does.
/// </summary>
public static class TruncateOpen
{
    /// <summary>A host descriptor of <paramref name="guestAbs"/> open for writing (the caller owns it), or -errno.</summary>
    public static long ForWriting(GuestFs fs, string guestAbs)
    {
        long probe = fs.Open(guestAbs, O.PATH | O.CLOEXEC, 0);
        if (probe < 0) return probe;
        var st = HostStat.Of((int)probe);
        HostSys.Call(Nr.close, probe);
        if (st is not { } s) return -Errno.EINVAL;
        if (s.IsDirectory) return -Errno.EISDIR;
        if (!s.IsRegular) return -Errno.EINVAL;
        return fs.Open(guestAbs, O.WRONLY | O.CLOEXEC, 0);
    }
}
