using ReVirt.Linux;

using System.Buffers.Binary;
using System.Text;

namespace ReVirt.Abi;

/// <summary>
/// The guest's view of the host file system: every guest path is resolved and acted on in one step, relative to a
/// descriptor of the guest's root directory that is opened once and never leaves it.
/// </summary>
/// <remarks>
/// <para>Contract. Nothing a guest names (through "..", absolute or relative symlinks, /proc magic links, or a
/// symlink swapped by another process between two steps) reaches a host file outside the root. The kernel never
/// hands a host path string that the guest wrote to the host; it asks this class for a descriptor:</para>
/// <list type="bullet">
/// <item><see cref="Open"/> — open(2) semantics for a guest path; the descriptor the guest's file will use.</item>
/// <item><see cref="OnObject"/> — an O_PATH descriptor of the object a path names (following a final symlink or
/// not), for stat, access, chmod, utimensat, readlink, statfs, chdir, truncate (…at with AT_EMPTY_PATH).</item>
/// <item><see cref="InParent"/>/<see cref="InParents"/> — the directory that holds the final name, and the name,
/// for operations on names: mkdir, unlink, rmdir, rename, link, symlink. The root itself, "." and ".." have no
/// name in a parent: such calls get the errno the caller gives (rmdir("/") never touches the host's root).</item>
/// <item><see cref="ViaDescriptor"/> — for AF_UNIX socket addresses (which take a name, not a descriptor): a
/// string naming one of this process's descriptors (/proc/self/fd/N), of the object or of its confined parent.</item>
/// </list>
/// <para>How. On Linux 5.6+ openat2(rootfd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): the host kernel resolves
/// the whole path as if rootfd were "/", atomically with respect to concurrent renames and symlink swaps. Elsewhere
/// an O_PATH walk, one component at a time: each step is openat(dirfd, name, O_PATH | O_NOFOLLOW); symlinks are read
/// from their own descriptor and spliced in, ".." never goes above the root descriptor, and the final open uses
/// O_NOFOLLOW, so a swap after a step makes the call fail instead of escaping.</para>
/// </remarks>
public sealed class GuestFs : IDisposable
{
    const int O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000, O_PATH = 0x200000, O_CREAT = 0x40;
    const int AT_EMPTY_PATH = 0x1000, AT_SYMLINK_NOFOLLOW = 0x100, F_DUPFD_CLOEXEC = 1030;
    const ulong RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_IN_ROOT = 0x10;
    const int SysOpenat2 = 437, MaxLinks = 40, MaxPath = 4095;
    const uint S_IFMT = 0xF000, S_IFLNK = 0xA000;

    readonly int _rootFd;
    readonly long _rootError;
    bool _disposed;

    public string Root { get; }
    /// <summary>True when openat2 resolves paths; false when the component-by-component walk does.</summary>
    public bool UsesOpenat2 { get; }

    /// <param name="root">The guest's root directory on the host.</param>
    /// <param name="allowOpenat2">False forces the O_PATH walk (the fallback for kernels without openat2; tests).</param>
    public GuestFs(string root, bool allowOpenat2 = true)
    {
        var full = Path.GetFullPath(root);
        if (full.Length > 1) full = full.TrimEnd('/');
        Root = full.Length == 0 ? "/" : full;
        long fd = HostSys.WithPath(0, Root, p => HostSys.Call(Nr.openat, -100, p, O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (fd < 0) { _rootFd = -1; _rootError = fd; }
        else _rootFd = (int)fd;
        UsesOpenat2 = allowOpenat2 && _rootFd >= 0 && Openat2(".", O_PATH | O_CLOEXEC, 0) is long probe and not -Errno.ENOSYS and not -Errno.EPERM
                      && Close(probe);
    }

    static bool Close(long fd) { if (fd >= 0) HostSys.Call(Nr.close, fd); return true; }

    /// <summary>Joins a guest path with a guest base directory, lexically (no host access).</summary>
    public static string Join(string baseDir, string path)
    {
        if (path.StartsWith('/')) return path;
        if (baseDir.EndsWith('/')) return baseDir + path;
        return baseDir + "/" + path;
    }

    /// <summary>Lexically normalised absolute guest path ("." and ".." resolved, repeated slashes removed).</summary>
    public static string Normalize(string abs)
    {
        var parts = new List<string>();
        foreach (var c in abs.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (c == ".") continue;
            if (c == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(c);
        }
        return "/" + string.Join('/', parts);
    }

    static long CheckName(string guestAbs)
    {
        if (guestAbs.Length == 0) return -Errno.ENOENT;
        if (guestAbs.Length > MaxPath) return -Errno.ENAMETOOLONG;
        if (guestAbs.Contains('\0')) return -Errno.EINVAL;
        return 0;
    }

    // ------------------------------------------------------------------ the three operations

    /// <summary>Opens a guest path with open(2) flags and mode; returns a host descriptor the caller owns, or -errno.</summary>
    public long Open(string guestAbs, int flags, int mode)
    {
        if (CheckName(guestAbs) is < 0 and var bad) return bad;
        if (_rootFd < 0) return _rootError;
        if (UsesOpenat2) return Openat2(guestAbs, flags | O_CLOEXEC, mode);
        bool follow = (flags & O_NOFOLLOW) == 0;
        return Walk(guestAbs, follow, (dir, name) => HostSys.WithPath(0, name, p => HostSys.Call(Nr.openat, dir, p, flags | O_CLOEXEC | O_NOFOLLOW, mode)));
    }

    /// <summary>
    /// Runs <paramref name="op"/> on an O_PATH descriptor of the object a guest path names (a final symlink followed
    /// when <paramref name="follow"/>); the descriptor is closed afterwards. Returns op's value or -errno.
    /// </summary>
    public long OnObject(string guestAbs, bool follow, Func<int, long> op)
    {
        long fd = Open(guestAbs, O_PATH | (follow ? 0 : O_NOFOLLOW), 0);
        if (fd < 0) return fd;
        try { return op((int)fd); }
        finally { HostSys.Call(Nr.close, fd); }
    }

    /// <summary>
    /// Runs <paramref name="op"/>(directory descriptor, NUL-terminated final name) for an operation on the name a
    /// guest path ends in. A path naming the root, or ending in "." or "..", has no such name: returns
    /// <paramref name="noNameErrno"/> (negative) without touching the host.
    /// </summary>
    public long InParent(string guestAbs, int noNameErrno, Func<int, byte[], long> op)
    {
        if (CheckName(guestAbs) is < 0 and var bad) return bad;
        if (_rootFd < 0) return _rootError;
        if (!SplitFinal(guestAbs, out var parent, out var name)) return noNameErrno;
        long dir = Open(parent, O_PATH | O_DIRECTORY, 0);
        if (dir < 0) return dir;
        try { return op((int)dir, HostSys.Z(name)); }
        finally { HostSys.Call(Nr.close, dir); }
    }

    /// <summary><see cref="InParent"/> for two paths at once (rename, link).</summary>
    public long InParents(string a, string b, int noNameErrno, Func<int, byte[], int, byte[], long> op)
        => InParent(a, noNameErrno, (da, na) => InParent(b, noNameErrno, (db, nb) => op(da, na, db, nb)));

    /// <summary>Splits "/x/y/name" into "/x/y" and "name"; false for the root and for a final "." or "..".</summary>
    static bool SplitFinal(string guestAbs, out string parent, out string name)
    {
        var parts = guestAbs.Split('/', StringSplitOptions.RemoveEmptyEntries);
        parent = "/";
        name = "";
        if (parts.Length == 0 || parts[^1] is "." or "..") return false;
        name = parts[^1];
        parent = "/" + string.Join('/', parts[..^1]);
        return true;
    }

    // ------------------------------------------------------------------ openat2

    unsafe long Openat2(string path, int flags, int mode)
    {
        var how = new byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(how, (ulong)(uint)flags);
        BinaryPrimitives.WriteUInt64LittleEndian(how.AsSpan(8), (flags & (O_CREAT | 0x410000)) != 0 ? (ulong)(mode & 0xFFF) : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(how.AsSpan(16), RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
        var z = HostSys.Z(path);
        for (int attempt = 0; ; attempt++)
        {
            long r;
            fixed (byte* p = z) fixed (byte* h = how) r = HostSys.Call(SysOpenat2, _rootFd, (long)p, (long)h, how.Length);
            // EAGAIN: a rename raced with the resolution; the kernel refuses rather than risk an escape. Try again.
            if (r != -Errno.EAGAIN || attempt >= 16) return r;
        }
    }

    // ------------------------------------------------------------------ the O_PATH walk (no openat2)

    /// <summary>
    /// Resolves every component but the last (and the last too when it is a symlink to follow), confined to the
    /// root, then calls <paramref name="final"/>(directory descriptor, final name). Returns its value or -errno.
    /// </summary>
    unsafe long Walk(string guestAbs, bool followFinal, Func<int, string, long> final)
    {
        var dirs = new List<int> { (int)HostSys.Call(Nr.fcntl, _rootFd, F_DUPFD_CLOEXEC, 0) };
        if (dirs[0] < 0) return dirs[0];
        var todo = new Stack<string>(guestAbs.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        int links = 0;
        try
        {
            while (true)
            {
                if (todo.Count == 0) return final(dirs[^1], ".");
                string c = todo.Pop();
                if (c == ".") continue;
                if (c == "..")
                {
                    if (dirs.Count > 1) { HostSys.Call(Nr.close, dirs[^1]); dirs.RemoveAt(dirs.Count - 1); }
                    continue;
                }
                bool last = todo.Count == 0;
                var zc = HostSys.Z(c);
                long r = HostStat.OfName(dirs[^1], zc, out var st);
                if (r < 0 && !(last && r == -Errno.ENOENT)) return r;
                bool isLink = r == 0 && st.Type == S_IFLNK;
                if (isLink && (!last || followFinal))
                {
                    if (++links > MaxLinks) return -Errno.ELOOP;
                    var buf = new byte[MaxPath + 1];
                    fixed (byte* p = zc) fixed (byte* b = buf) r = HostSys.Call(Nr.readlinkat, dirs[^1], (long)p, (long)b, buf.Length);
                    if (r < 0) return r;
                    string target = Encoding.UTF8.GetString(buf, 0, (int)r);
                    if (target.StartsWith('/'))
                        while (dirs.Count > 1) { HostSys.Call(Nr.close, dirs[^1]); dirs.RemoveAt(dirs.Count - 1); }
                    foreach (var t in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse()) todo.Push(t);
                    continue;
                }
                if (last) return final(dirs[^1], c);
                // an intermediate directory: step into it without following anything
                fixed (byte* p = zc) r = HostSys.Call(Nr.openat, dirs[^1], (long)p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (r < 0) return r;
                dirs.Add((int)r);
            }
        }
        finally { foreach (var d in dirs) HostSys.Call(Nr.close, d); }
    }

    // ------------------------------------------------------------------ names the host must see as strings

    /// <summary>
    /// Runs <paramref name="op"/> with a host path string for a guest path, for the one interface that takes a name
    /// and no descriptor: an AF_UNIX socket address (bind, connect, sendto). The string names a descriptor of this
    /// process, never anything the guest wrote, so the host resolves nothing on the guest's behalf:
    /// <list type="bullet">
    /// <item>an existing object (<paramref name="create"/> false: connect, sendto): "/proc/self/fd/N", N an O_PATH
    /// descriptor of the object resolved under the root as <see cref="Open"/> does (a final symlink followed, inside
    /// the root); the host follows the descriptor to that very inode;</item>
    /// <item>a name to create (bind): "/proc/self/fd/N/name", N the parent directory resolved under the root; the host
    /// creates the final name itself and fails with EADDRINUSE when anything, a symlink too, is already there. The
    /// root, "." and ".." have no name to create: EADDRINUSE, as binding an existing directory gets.</item>
    /// </list>
    /// The descriptor is open until op returns. A swapped symlink makes the call fail or reach a socket inside the
    /// root, never one outside it.
    /// </summary>
    public long ViaDescriptor(string guestAbs, bool create, Func<string, long> op)
    {
        if (!create) return OnObject(guestAbs, true, fd => op($"/proc/self/fd/{fd}"));
        return InParent(guestAbs, -Errno.EADDRINUSE, (dir, name) => op($"/proc/self/fd/{dir}/{Encoding.UTF8.GetString(name, 0, name.Length - 1)}"));
    }

    /// <summary>True when a host path string is one <see cref="ViaDescriptor"/> makes (the host reports it back as a
    /// socket's address; the guest must be shown its own name instead).</summary>
    public static bool IsDescriptorName(string host) => host.StartsWith("/proc/self/fd/", StringComparison.Ordinal);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_rootFd >= 0) HostSys.Call(Nr.close, _rootFd);
    }
}
