using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

using ReVirt.Linux;

namespace ReVirt.Abi;

/// <summary>
/// Reads a file the VM itself loads (the program, its ELF interpreter, a script's interpreter) or that a replay
/// re-reads by reference. The security contract: only regular files are read (a directory, a FIFO, a device such
/// as /dev/zero or a socket is refused without blocking: the file is opened O_NONBLOCK and checked with fstat on the
/// opened descriptor, so a swap between check and read cannot turn it into something else), and never more than
/// <see cref="MaxImageBytes"/> bytes, so a hostile file cannot make the host grow without bound or hang.
/// </summary>
public static unsafe class ProgramFile
{
    /// <summary>Upper bound of a program or interpreter image (Debian's largest executables are far below this).</summary>
    public const long MaxImageBytes = 512L << 20;

    const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000, O_NOCTTY = 0x100;
    const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFIFO = 0x1000, S_IFCHR = 0x2000, S_IFBLK = 0x6000, S_IFSOCK = 0xC000;

    /// <summary>What kind of file a guest path names under the root (following symlinks inside it); null when it
    /// does not exist or cannot be reached.</summary>
    public static string? Kind(GuestFs fs, string guestPath)
    {
        HostStat st = default;
        long r = fs.OnObject(guestPath, true, fd => HostStat.Of(fd, out st));
        return r < 0 ? null : KindOf(st.Mode);
    }

    static string KindOf(uint mode) => (mode & S_IFMT) switch
    {
        S_IFREG => "regular file",
        S_IFDIR => "directory",
        S_IFIFO => "FIFO",
        S_IFCHR => "character device",
        S_IFBLK => "block device",
        S_IFSOCK => "socket",
        _ => "special file",
    };

    const int OpenFlags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;

    /// <summary>
    /// Opens a host file the user named (not a guest path) for reading; throws <see cref="ElfLoadException"/> naming
    /// `name` when it is missing, not a regular file, or larger than `limit`. Returns the handle and the file's size.
    /// </summary>
    public static SafeFileHandle OpenRegular(string hostPath, string name, long limit, out long size)
        => Checked(HostSys.WithPath(Nr.open, hostPath, p => HostSys.Call(Nr.open, p, OpenFlags)), name, limit, out size);

    /// <summary>
    /// Opens a guest path's file for reading, resolved under the root in one step (<see cref="GuestFs.Open"/>), with
    /// the checks of <see cref="OpenRegular(string, string, long, out long)"/>.
    /// </summary>
    public static SafeFileHandle OpenRegular(GuestFs fs, string guestPath, string name, long limit, out long size)
    {
        long fd = fs.Open(guestPath, OpenFlags, 0);
        // a socket cannot be opened (ENXIO): name what it is
        if (fd == -Errno.ENXIO && Kind(fs, guestPath) is string kind) throw new ElfLoadException($"{name}: is a {kind}, not a regular file");
        return Checked(fd, name, limit, out size);
    }

    static SafeFileHandle Checked(long fd, string name, long limit, out long size)
    {
        size = 0;
        if (fd == -Errno.ENOENT || fd == -Errno.ENOTDIR) throw ElfLoadException.NotFound(name);
        if (fd == -Errno.EACCES) throw new ElfLoadException($"{name}: permission denied");
        if (fd == -Errno.ELOOP) throw new ElfLoadException($"{name}: too many levels of symbolic links, or a link the guest may not follow");
        if (fd < 0) throw new ElfLoadException($"{name}: cannot open (errno {-fd})");
        var h = new SafeFileHandle((IntPtr)fd, ownsHandle: true);
        long r = HostStat.Of((int)fd, out var st);
        uint mode = st.Mode;
        size = st.Size;
        string? problem = r < 0 ? $"cannot stat (errno {-r})"
            : (mode & S_IFMT) == S_IFDIR ? "is a directory"
            : (mode & S_IFMT) != S_IFREG ? $"is a {KindOf(mode)}, not a regular file"
            : size > limit ? $"is too large ({size} bytes; the limit is {limit})"
            : null;
        if (problem != null) { h.Dispose(); throw new ElfLoadException($"{name}: {problem}"); }
        return h;
    }

    /// <summary>Reads a whole regular file of the guest's root (see the class contract) into a managed array.</summary>
    public static byte[] ReadAll(GuestFs fs, string guestPath, string name, long limit = MaxImageBytes)
    {
        using var h = OpenRegular(fs, guestPath, name, limit, out long size);
        // not cleared first: every byte handed out is read from the file (a short read returns only what was read)
        var buf = GC.AllocateUninitializedArray<byte>(checked((int)size));
        int done = ReadInto(h, buf);
        return done == buf.Length ? buf : buf.AsSpan(0, done).ToArray();
    }

    /// <summary>Files from this size on are read into a <see cref="NativeImage"/> (huge pages) rather than an array:
    /// a huge page's one fault and 2 MiB zeroing cost about what 30-45 faults of 4 KiB pages do on the hosts measured.</summary>
    public const int NativeFrom = 256 << 10;

    /// <summary>
    /// Reads a whole regular file of the guest's root as <see cref="ReadAll"/> does, for a program image: the same
    /// checks and errors, and the same bytes (what the file held when read, a copy never changed afterwards), held in a
    /// <see cref="NativeImage"/> when the file is large (see <see cref="NativeFrom"/>), else in an array. The caller
    /// owns a native image (MemoryMarshal.TryGetMemoryManager finds it) and disposes it once nothing reads it.
    /// </summary>
    public static ReadOnlyMemory<byte> ReadImage(GuestFs fs, string guestPath, string name, long limit = MaxImageBytes)
    {
        using var h = OpenRegular(fs, guestPath, name, limit, out long size);
        if (size < NativeFrom) return ReadAll(h, checked((int)size));
        var image = new NativeImage(checked((int)size));
        int done = ReadInto(h, image.Filling);
        // the file shrank while being read: what was there, as ReadAll gives it
        return done == size ? image.Memory : image.Memory[..done].ToArray();
    }

    static byte[] ReadAll(SafeFileHandle h, int size)
    {
        var buf = GC.AllocateUninitializedArray<byte>(size);
        int done = ReadInto(h, buf);
        return done == buf.Length ? buf : buf.AsSpan(0, done).ToArray();
    }

    /// <summary>Reads from offset 0 until `to` is full or the file ends; returns the bytes read.</summary>
    static int ReadInto(SafeFileHandle h, Span<byte> to)
    {
        int done = 0;
        while (done < to.Length)
        {
            int n = RandomAccess.Read(h, to[done..], done);
            if (n <= 0) break; // the file shrank while being read: what was there
            done += n;
        }
        return done;
    }

    /// <summary>
    /// Reads [offset, offset+count) of a regular file (fewer bytes at its end); null when the file is missing or not
    /// a regular file. Used by a replay that reads a mapped file's content from its own root.
    /// </summary>
    public static byte[]? ReadRange(GuestFs fs, string guestPath, long offset, int count)
    {
        try
        {
            using var h = OpenRegular(fs, guestPath, guestPath, long.MaxValue, out _);
            return ReadRange(h, offset, count);
        }
        catch (ElfLoadException) { return null; }
        catch (IOException) { return null; }
    }

    /// <summary>Reads [offset, offset+count) of a file opened with <see cref="OpenRegular(GuestFs, string, string, long, out long)"/>
    /// (fewer bytes at its end: never more than the file holds now).</summary>
    public static byte[] ReadRange(SafeFileHandle h, long offset, int count)
    {
        long avail = Math.Max(0, Math.Min(count, RandomAccess.GetLength(h) - offset));
        var buf = new byte[avail];
        int done = 0;
        while (done < buf.Length)
        {
            int n = RandomAccess.Read(h, buf.AsSpan(done), offset + done);
            if (n <= 0) break;
            done += n;
        }
        return done == buf.Length ? buf : buf.AsSpan(0, done).ToArray();
    }
}
