using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>
/// The fields of a host stat(2) answer that the VM itself looks at: which file it is (st_dev, st_ino), its type
/// and permission bits and its size. The guest's own stat calls copy the host's whole buffer instead; this is for
/// the VM's decisions (is it a regular file, a directory, the same file as before, how long is it, whose is it).
/// </summary>
public readonly record struct HostStat(ulong Dev, ulong Ino, uint Mode, long Size, uint Uid = 0)
{
    public uint Type => Mode & SMode.IFMT;
    public bool IsRegular => Type == SMode.IFREG;
    public bool IsDirectory => Type == SMode.IFDIR;

    /// <summary>The same file (device and inode) as <paramref name="other"/>.</summary>
    public bool SameFile(in HostStat other) => Dev == other.Dev && Ino == other.Ino;

    /// <summary>The fields of a struct stat buffer (x86-64 layout).</summary>
    public static HostStat From(ReadOnlySpan<byte> st) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(st[SMode.StDevOffset..]),
        BinaryPrimitives.ReadUInt64LittleEndian(st[SMode.StInoOffset..]),
        BinaryPrimitives.ReadUInt32LittleEndian(st[SMode.StModeOffset..]),
        BinaryPrimitives.ReadInt64LittleEndian(st[SMode.StSizeOffset..]),
        BinaryPrimitives.ReadUInt32LittleEndian(st[SMode.StUidOffset..]));

    /// <summary>fstat of a host descriptor: 0 or -errno.</summary>
    public static unsafe long Of(int fd, out HostStat stat)
    {
        Span<byte> st = stackalloc byte[SMode.StatSize];
        long r;
        fixed (byte* p = st) r = HostSys.Call(Nr.fstat, fd, (long)p);
        stat = r < 0 ? default : From(st);
        return r < 0 ? r : 0;
    }

    /// <summary>fstat of a host descriptor, or null when it fails.</summary>
    public static HostStat? Of(int fd) => Of(fd, out var st) < 0 ? null : st;

    /// <summary>fstatat of <paramref name="name"/> (NUL-terminated) in the host directory <paramref name="dirfd"/>, a
    /// final symlink not followed (an empty name: the descriptor itself, with AT_EMPTY_PATH): 0 or -errno.</summary>
    public static unsafe long OfName(long dirfd, ReadOnlySpan<byte> name, out HostStat stat)
    {
        Span<byte> st = stackalloc byte[SMode.StatSize];
        long r;
        int flags = At.SYMLINK_NOFOLLOW | (name.Length <= 1 ? At.EMPTY_PATH : 0);
        ReadOnlySpan<byte> empty = [0];
        fixed (byte* n = name.Length == 0 ? empty : name) fixed (byte* p = st) r = HostSys.Call(Nr.newfstatat, dirfd, (long)n, (long)p, flags);
        stat = r < 0 ? default : From(st);
        return r < 0 ? r : 0;
    }
}
