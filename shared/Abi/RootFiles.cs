using System.Buffers.Binary;
using System.Text;
using ReVirt.Linux;

namespace ReVirt.Abi;

/// <summary>What a guest path names in a root: nothing, a directory, a regular file, a symlink, a FIFO or a socket.</summary>
public enum RootEntryKind : byte { Absent = 1, Directory = 2, File = 3, Symlink = 4, Fifo = 5, Socket = 6 }

/// <summary>
/// The state of one guest path: its kind, permission bits (07777), a regular file's bytes, a symlink's target. A
/// directory's entry stands for a complete listing: its children are entries of their own, and anything else under it
/// is not there.
/// </summary>
public sealed record RootEntry(string Path, RootEntryKind Kind, uint Mode, byte[]? Content, string? Target);

/// <summary>
/// Reads the state of chosen paths of a guest root and makes another root hold the same state: the files a snapshot
/// carries to a replica with a root of its own (shared/Snapshot, the file section).
/// </summary>
/// <remarks>
/// <para>Contract (that of <see cref="GuestFs"/>): every path is resolved by <see cref="GuestFs"/> under the root
/// descriptor, and every step below a resolved directory is an *at call on its descriptor with O_NOFOLLOW (or
/// AT_SYMLINK_NOFOLLOW), so nothing outside the root is read, written or removed, whatever the symlinks in the root
/// say. A symlink is carried as its target string and made as a symlink: it is never followed here.</para>
/// <para>Paths that come from a peer are checked before anything is touched (<see cref="CheckPath"/>: absolute,
/// lexically normal — no ".", "..", empty or NUL component —, not the root, at most 4095 bytes), as are symlink
/// targets (no NUL, at most 4095 bytes) and modes (permission bits only); sizes are bounded by the caller's reader.
/// Device nodes are never captured nor made.</para>
/// </remarks>
public static class RootFiles
{
    const int MaxPath = 4095, MaxDepth = 256;
    const uint S_IFMT = 0xF000, S_IFLNK = 0xA000, ModeBits = 0xFFF;

    /// <summary>The state of every path in <paramref name="paths"/> under <paramref name="fs"/>'s root (a directory with
    /// its whole subtree), each path once, in ordinal order; at most <paramref name="maxBytes"/> bytes of file content.</summary>
    /// <exception cref="InvalidOperationException">A path cannot be read or names what cannot be carried (a device
    /// node), or the content exceeds the bound: the reason says which.</exception>
    public static List<RootEntry> Capture(GuestFs fs, IEnumerable<string> paths, long maxBytes)
    {
        var byPath = new SortedDictionary<string, RootEntry>(StringComparer.Ordinal);
        long bytes = 0;
        void Add(string p, int depth)
        {
            if (byPath.ContainsKey(p)) return;
            if (depth > MaxDepth) throw new InvalidOperationException($"{p}: directories nested deeper than {MaxDepth}");
            var (type, mode, err) = Lstat(fs, p);
            if (err is -Errno.ENOENT or -Errno.ENOTDIR) { byPath[p] = new RootEntry(p, RootEntryKind.Absent, 0, null, null); return; }
            if (err < 0) throw new InvalidOperationException($"{p}: cannot be read in the guest root (errno {-err})");
            switch (type)
            {
                case SMode.IFREG:
                    var content = ReadFile(fs, p, maxBytes - bytes);
                    bytes += content.Length;
                    byPath[p] = new RootEntry(p, RootEntryKind.File, mode, content, null);
                    break;
                case SMode.IFDIR:
                    byPath[p] = new RootEntry(p, RootEntryKind.Directory, mode, null, null);
                    foreach (var name in List(fs, p)) Add(p == "/" ? "/" + name : p + "/" + name, depth + 1);
                    break;
                case S_IFLNK: byPath[p] = new RootEntry(p, RootEntryKind.Symlink, 0, null, ReadLink(fs, p)); break;
                case SMode.IFIFO: byPath[p] = new RootEntry(p, RootEntryKind.Fifo, mode, null, null); break;
                case SMode.IFSOCK: byPath[p] = new RootEntry(p, RootEntryKind.Socket, mode, null, null); break;
                default: throw new InvalidOperationException($"{p}: a device node (type 0x{type:x}), which a snapshot does not carry");
            }
        }
        foreach (var p in paths) Add(p, 0);
        return byPath.Values.ToList();
    }

    /// <summary>Null when <paramref name="p"/> is a path a peer may name, else why not.</summary>
    public static string? CheckPath(string p)
    {
        if (p.Length == 0 || p.Length > MaxPath || !p.StartsWith('/') || p == "/") return $"path '{Shown(p)}' is not an absolute path below the root of at most {MaxPath} bytes";
        if (p.Contains('\0') || GuestFs.Normalize(p) != p) return $"path '{Shown(p)}' is not lexically normal (a '.', '..', empty or NUL component)";
        return null;
    }

    static string Shown(string p) => p.Length > 80 ? p[..80] + "..." : p.Replace('\0', '?');

    /// <summary>
    /// Makes <paramref name="fs"/>'s root hold <paramref name="entries"/> (as <see cref="Capture"/> returns them): absent
    /// paths removed (a directory with its subtree), directories made and emptied of what they do not list, files
    /// written whole, symlinks, FIFOs and sockets made, then the modes set (deepest first, so a read-only directory
    /// is filled before it is closed). Paths not named stay as they are.
    /// </summary>
    /// <exception cref="InvalidDataException">An entry a peer may not send (the reason says which); nothing was touched.</exception>
    /// <exception cref="IOException">The root could not be changed (the reason names the path and errno).</exception>
    public static void Apply(GuestFs fs, IReadOnlyList<RootEntry> entries)
    {
        var named = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in entries)
        {
            if (CheckPath(e.Path) is { } bad) throw new InvalidDataException(bad);
            if (!named.Add(e.Path)) throw new InvalidDataException($"path {Shown(e.Path)} appears twice");
            if ((e.Mode & ~ModeBits) != 0) throw new InvalidDataException($"{Shown(e.Path)}: mode 0{Convert.ToString(e.Mode, 8)} has bits beyond the permissions");
            if (e.Kind == RootEntryKind.Symlink && (e.Target is not { Length: > 0 and <= MaxPath } t || t.Contains('\0')))
                throw new InvalidDataException($"{Shown(e.Path)}: a symlink target that is empty, too long or holds a NUL");
            if ((e.Kind == RootEntryKind.File) != (e.Content != null)) throw new InvalidDataException($"{Shown(e.Path)}: content on a {e.Kind}");
        }
        var present = new HashSet<string>(entries.Where(e => e.Kind != RootEntryKind.Absent).Select(e => e.Path), StringComparer.Ordinal);
        foreach (var e in entries.Where(e => e.Kind == RootEntryKind.Absent).OrderByDescending(e => e.Path, StringComparer.Ordinal))
            Check(e.Path, "remove", Remove(fs, e.Path));
        foreach (var e in entries.Where(e => e.Kind != RootEntryKind.Absent).OrderBy(e => e.Path, StringComparer.Ordinal))
        {
            var (type, _, err) = Lstat(fs, e.Path);
            bool keep = err == 0 && e.Kind == RootEntryKind.Directory && type == SMode.IFDIR;
            if (err == 0 && !keep) Check(e.Path, "replace", Remove(fs, e.Path));
            if (!keep) Check(e.Path, "make", Make(fs, e));
            if (e.Kind == RootEntryKind.Directory)
                foreach (var name in List(fs, e.Path))
                    if (!present.Contains(e.Path + "/" + name)) Check(e.Path + "/" + name, "remove", Remove(fs, e.Path + "/" + name));
        }
        foreach (var e in entries.Where(e => e.Kind is not (RootEntryKind.Absent or RootEntryKind.Symlink)).OrderByDescending(e => e.Path, StringComparer.Ordinal))
            Check(e.Path, "chmod", fs.OnObject(e.Path, false, fd => HostSys.WithPath(Nr.fchmodat, $"/proc/self/fd/{fd}", p => HostSys.Call(Nr.fchmodat, At.FDCWD, p, e.Mode))));
    }

    static void Check(string path, string what, long r)
    {
        if (r < 0) throw new IOException($"{what} {Shown(path)} in the guest root: errno {-r}");
    }

    // ------------------------------------------------------------------ reading

    /// <summary>Type (S_IFMT bits), permission bits and 0, or -errno, of what a path names (a final symlink not followed).</summary>
    static unsafe (uint Type, uint Mode, long Err) Lstat(GuestFs fs, string p)
    {
        HostStat st = default;
        long r = fs.OnObject(p, false, fd => HostStat.OfName(fd, [], out st));
        if (r < 0) return (0, 0, r);
        uint mode = st.Mode;
        return (mode & S_IFMT, mode & ModeBits, 0);
    }

    static readonly byte[] EmptyName = [0];

    static unsafe byte[] ReadFile(GuestFs fs, string p, long budget)
    {
        long fd = fs.Open(p, O.RDONLY | O.NOFOLLOW | O.NONBLOCK | O.NOCTTY, 0);
        if (fd < 0) throw new InvalidOperationException($"{p}: cannot be opened in the guest root (errno {-fd})");
        try
        {
            var ms = new MemoryStream();
            var buf = new byte[1 << 16];
            while (true)
            {
                long n;
                fixed (byte* b = buf) n = HostSys.Call(Nr.read, fd, (long)b, buf.Length);
                if (n == -Errno.EINTR) continue;
                if (n < 0) throw new InvalidOperationException($"{p}: cannot be read in the guest root (errno {-n})");
                if (n == 0) return ms.ToArray();
                if (ms.Length + n > budget) throw new InvalidOperationException($"the files the guest changed exceed what a snapshot carries (at {p})");
                ms.Write(buf, 0, (int)n);
            }
        }
        finally { HostSys.Call(Nr.close, fd); }
    }

    static unsafe string ReadLink(GuestFs fs, string p)
    {
        var buf = new byte[MaxPath + 1];
        long n = fs.OnObject(p, false, fd => { fixed (byte* b = buf) fixed (byte* e = EmptyName) return HostSys.Call(Nr.readlinkat, fd, (long)e, (long)b, buf.Length); });
        if (n < 0) throw new InvalidOperationException($"{p}: its symlink cannot be read (errno {-n})");
        return Encoding.UTF8.GetString(buf, 0, (int)n);
    }

    /// <summary>The names in a directory (not "." and ".."), in ordinal order.</summary>
    static List<string> List(GuestFs fs, string p)
    {
        long fd = fs.Open(p, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
        if (fd < 0) throw new IOException($"list {Shown(p)} in the guest root: errno {-fd}");
        try { return ListAt(fd); }
        finally { HostSys.Call(Nr.close, fd); }
    }

    /// <summary>The names in the open host directory <paramref name="dirFd"/>, without "." and ".."; IOException when it
    /// cannot be read.</summary>
    internal static unsafe List<string> ListAt(long dirFd)
    {
        var names = new List<string>();
        var buf = new byte[1 << 15];
        while (true)
        {
            long n;
            fixed (byte* b = buf) n = HostSys.Call(Nr.getdents64, dirFd, (long)b, buf.Length);
            if (n < 0) throw new IOException($"getdents64: errno {-n}");
            if (n == 0) break;
            for (int o = 0; o < n;)
            {
                int reclen = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(o + Dirent64.ReclenOffset));
                int nameAt = o + Dirent64.NameOffset;
                int end = Array.IndexOf(buf, (byte)0, nameAt, reclen - Dirent64.NameOffset);
                string name = Encoding.UTF8.GetString(buf, nameAt, (end < 0 ? o + reclen : end) - nameAt);
                if (name is not ("." or "..")) names.Add(name);
                o += reclen;
            }
        }
        names.Sort(StringComparer.Ordinal);
        return names;
    }

    // ------------------------------------------------------------------ writing

    static unsafe long Make(GuestFs fs, RootEntry e) => fs.InParent(e.Path, -Errno.EEXIST, (dir, name) =>
    {
        fixed (byte* n = name)
            switch (e.Kind)
            {
                case RootEntryKind.Directory: return HostSys.Call(Nr.mkdirat, dir, (long)n, 0x1C0);
                case RootEntryKind.Fifo: return HostSys.Call(Nr.mknodat, dir, (long)n, SMode.IFIFO | 0x180, 0);
                case RootEntryKind.Socket: return HostSys.Call(Nr.mknodat, dir, (long)n, SMode.IFSOCK | 0x180, 0);
                case RootEntryKind.Symlink:
                    var t = HostSys.Z(e.Target!);
                    fixed (byte* tp = t) return HostSys.Call(Nr.symlinkat, (long)tp, dir, (long)n);
                default:
                    long fd = HostSys.Call(Nr.openat, dir, (long)n, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC, 0x180);
                    if (fd < 0) return fd;
                    try
                    {
                        var c = e.Content!;
                        for (int off = 0; off < c.Length;)
                        {
                            long w;
                            fixed (byte* p = c) w = HostSys.Call(Nr.write, fd, (long)(p + off), c.Length - off);
                            if (w == -Errno.EINTR) continue;
                            if (w <= 0) return w < 0 ? w : -Errno.EIO;
                            off += (int)w;
                        }
                        return 0;
                    }
                    finally { HostSys.Call(Nr.close, fd); }
            }
    });

    /// <summary>Removes what a path names (a directory with its whole subtree); nothing there is no error.</summary>
    static long Remove(GuestFs fs, string p)
    {
        long r = fs.InParent(p, -Errno.EBUSY, (dir, name) => RemoveAt(dir, name, 0));
        return r is -Errno.ENOENT or -Errno.ENOTDIR ? 0 : r;
    }

    static unsafe long RemoveAt(long dir, byte[] name, int depth)
    {
        if (depth > MaxDepth) return -Errno.ELOOP;
        long r = HostStat.OfName(dir, name, out var st);
        if (r == -Errno.ENOENT) return 0;
        if (r < 0) return r;
        bool isDir = st.IsDirectory;
        if (isDir)
        {
            long sub;
            fixed (byte* n = name) sub = HostSys.Call(Nr.openat, dir, (long)n, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
            if (sub < 0) return sub;
            try
            {
                foreach (var child in ListAt(sub))
                    if (RemoveAt(sub, HostSys.Z(child), depth + 1) is < 0 and var bad) return bad;
            }
            finally { HostSys.Call(Nr.close, sub); }
        }
        fixed (byte* n = name) return HostSys.Call(Nr.unlinkat, dir, (long)n, isDir ? At.REMOVEDIR : 0);
    }
}
