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

    /// <summary>Reads a whole regular file of the guest's root (see the class contract) into a managed array.
    /// <paramref name="hash"/>, when given (a recording's or replay's program), is appended every byte of the image in
    /// order as it is read, so the hash is of exactly the bytes returned; the hash of each whole 4 KiB page of the image
    /// is then kept for the checkpoint digest too (<see cref="Memory.GuestMemory.KeepImagePageHashes"/>), taken in the
    /// same pass.</summary>
    /// <exception cref="ElfLoadException">The file is missing, not a regular file, too large, or a read failed.</exception>
    public static byte[] ReadAll(GuestFs fs, string guestPath, string name, long limit = MaxImageBytes, Log.Xxh128? hash = null)
    {
        using var h = OpenRegular(fs, guestPath, name, limit, out long size);
        return ReadAll(h, checked((int)size), hash, name);
    }

    static byte[] ReadAll(SafeFileHandle h, int size, Log.Xxh128? hash, string name)
    {
        // not cleared first: every byte handed out is read from the file (a short read returns only what was read);
        // pinned, so its pages can be faulted in at once (Populate) and stay where they were populated
        var buf = GC.AllocateUninitializedArray<byte>(size, pinned: true);
        Populate(buf);
        ulong[]? pages = hash != null ? new ulong[2 * (buf.Length >> Memory.GuestMemory.PageShift)] : null;
        int done;
        fixed (byte* into = buf) done = ReadThroughChunk((int)h.DangerousGetHandle(), into, buf.Length, hash, ref pages, name);
        if (done != buf.Length) return buf.AsSpan(0, done).ToArray(); // (the file shrank: no page hashes kept)
        if (pages != null) Memory.GuestMemory.KeepImagePageHashes(buf, pages);
        return buf;
    }

    /// <summary>Files from this size on are read into a <see cref="NativeImage"/> (huge pages) rather than an array:
    /// a huge page's one fault and 2 MiB zeroing cost about what 30-45 faults of 4 KiB pages do on the hosts measured.</summary>
    public const int NativeFrom = 256 << 10;

    /// <summary>
    /// Reads a whole regular file of the guest's root as <see cref="ReadAll(GuestFs, string, string, long, Log.Xxh128?)"/>
    /// does, for the start program a machine reads itself or a recording reads for its header: the same checks and
    /// errors and the same bytes (what the file held when read, a copy never changed afterwards), held in a
    /// <see cref="NativeImage"/> when the file is large (see <see cref="NativeFrom"/>), else in an array. The caller
    /// owns a native image (<see cref="NativeImage.Of"/> finds it) and disposes it once nothing reads it.
    /// <paramref name="hash"/>, when given (a recording's program), is appended every byte as it is read and the
    /// image's page hashes are kept, as <see cref="ReadAll(GuestFs, string, string, long, Log.Xxh128?)"/> does: the
    /// bytes then pass through the warm chunk (<see cref="ReadThroughChunk"/>) into the image's huge pages.
    /// </summary>
    public static ReadOnlyMemory<byte> ReadImage(GuestFs fs, string guestPath, string name, long limit = MaxImageBytes, Log.Xxh128? hash = null)
    {
        using var h = OpenRegular(fs, guestPath, name, limit, out long size);
        if (size < NativeFrom) return ReadAll(h, checked((int)size), hash, name);
        var image = new NativeImage(checked((int)size));
        ulong[]? pages = hash != null ? new ulong[2 * (image.Length >> Memory.GuestMemory.PageShift)] : null;
        int done;
        try
        {
            int fd = (int)h.DangerousGetHandle();
            fixed (byte* into = image.Filling)
                done = hash == null ? ReadDirect(fd, into, image.Length, name) : ReadThroughChunk(fd, into, image.Length, hash, ref pages, name);
        }
        catch { ((IDisposable)image).Dispose(); throw; }
        if (done == size)
        {
            if (pages != null) Memory.GuestMemory.KeepImagePageHashes(image, pages);
            return image.Memory;
        }
        // the file shrank while being read: what was there, as ReadAll gives it
        var part = image.Filling[..done].ToArray();
        ((IDisposable)image).Dispose();
        return part;
    }

    /// <summary>
    /// Fills the <paramref name="length"/> bytes at <paramref name="into"/> from the file at offset 0 with reads straight
    /// into them (until they are full or the file ends; returns the bytes read). For a <see cref="NativeImage"/>: its
    /// huge pages do not pay the per-4 KiB first-touch cost <see cref="ReadThroughChunk"/> avoids, and the kernel's copy
    /// into them is cheaper without the chunk's second copy (busybox's 2 MB, C probe on this host: 0.8-0.9 ms against
    /// 1.1-1.6 through a chunk and process_vm_writev; docs/PERFORMANCE.md).
    /// </summary>
    static int ReadDirect(int fd, byte* into, int length, string name)
    {
        int done = 0;
        while (done < length)
        {
            long n = HostSys.Call(Nr.pread64, fd, (long)(into + done), length - done, done);
            if (n == -Errno.EINTR) continue;
            if (n < 0) throw new ElfLoadException($"{name}: cannot read (errno {-n})");
            if (n == 0) break; // the file shrank while being read: what was there
            done += (int)n;
        }
        return done;
    }

    /// <summary>Bytes read at a time (<see cref="ReadThroughChunk"/>): whole guest pages.</summary>
    const int Chunk = 64 << 10, PageBytes = (int)Memory.GuestMemory.PageSize;

    /// <summary>
    /// Fills the <paramref name="length"/> bytes at <paramref name="into"/> from the file at offset 0 (until they are
    /// full or the file ends; returns the bytes read), a <see cref="Chunk"/> at a time through one small buffer: each
    /// chunk is read there, hashed there when asked, and moved into the image by the kernel (<see cref="MoveIn"/>). Why
    /// not read into the image directly: on the virtualised hosts measured the first access from user mode to each fresh
    /// 4 KiB page costs ~10 us of CPU even after the kernel populated and filled it (a host artefact, seen the same way
    /// from C), so hashing a 2 MB image in place cost a recording ~5 ms at its start (490 pages it otherwise never
    /// touches: the loader maps only what the program needs), and a read into the image's pages itself cost ~5 ms
    /// against ~1 ms through a warm chunk (docs/PERFORMANCE.md).
    /// </summary>
    /// <param name="pages">when given, receives each whole page's hash (<see cref="Memory.GuestMemory.HashPage"/>) at
    /// 2k, 2k + 1; set to null when a read came back short before the end (a regular file does not do that), since
    /// the pages are then no longer aligned with the chunks</param>
    static int ReadThroughChunk(int fd, byte* into, int length, Log.Xxh128? hash, ref ulong[]? pages, string name)
    {
        byte* chunk = stackalloc byte[Chunk];
        int done = 0;
        while (done < length)
        {
            int want = Math.Min(Chunk, length - done);
            long n = HostSys.Call(Nr.pread64, fd, (long)chunk, want, done);
            if (n == -Errno.EINTR) continue;
            if (n < 0) throw new ElfLoadException($"{name}: cannot read (errno {-n})");
            if (n == 0) break; // the file shrank while being read: what was there
            hash?.Append(new ReadOnlySpan<byte>(chunk, (int)n));
            if (n < want) pages = null;
            if (pages != null)
                for (int at = 0; at + PageBytes <= n; at += PageBytes)
                {
                    int k = 2 * ((done + at) / PageBytes);
                    Memory.GuestMemory.HashPage(new ReadOnlySpan<byte>(chunk + at, PageBytes), out pages[k], out pages[k + 1]);
                }
            MoveIn(chunk, into + done, (int)n);
            done += (int)n;
        }
        return done;
    }

    /// <summary>Whether chunks are moved into the image by the kernel (<see cref="MoveIn"/>): cleared for good when
    /// process_vm_writev is refused here (a seccomp filter, a kernel without it); tests clear it to check the plain
    /// copy gives the same bytes.</summary>
    internal static bool KernelCopy { get; set; } = true;

    /// <summary>Copies <paramref name="count"/> bytes from the chunk to <paramref name="to"/> with the kernel's
    /// process_vm_writev into this process (its pages written without being touched from user mode), or with a plain
    /// copy where the kernel refuses (the result is the same bytes either way).</summary>
    static void MoveIn(byte* from, byte* to, int count)
    {
        if (KernelCopy)
        {
            long* local = stackalloc long[2], remote = stackalloc long[2];
            local[0] = (long)from; local[1] = count;
            remote[0] = (long)to; remote[1] = count;
            long r = HostSys.Call(Nr.process_vm_writev, Environment.ProcessId, (long)local, 1, (long)remote, 1, 0);
            if (r == count) return;
            if (r < 0) KernelCopy = false;
            else { from += r; to += r; count -= (int)r; } // (a partial copy: the rest in user mode)
        }
        Buffer.MemoryCopy(from, to, count, count);
    }

    const int MADV_POPULATE_WRITE = 23, HostPage = 4096;
    /// <summary>Buffers smaller than this are left to fault page by page (a madvise call costs about what a few
    /// faults do).</summary>
    const int PopulateFrom = 64 << 10;

    /// <summary>
    /// Makes the host pages under a fresh (pinned) buffer present in one madvise call instead of one page fault per
    /// 4 KiB page while the read fills it: a program's 2 MB image is ~490 faults, each a trip through the kernel's
    /// fault path that costs 10-15 us of CPU on the virtualised hosts measured (docs/PERFORMANCE.md). Contents are not
    /// changed (MADV_POPULATE_WRITE only faults pages in, as a write would). Best effort: a kernel without it
    /// (before 5.14: EINVAL) leaves the pages to fault as before.
    /// </summary>
    static void Populate(byte[] pinned)
    {
        if (pinned.Length < PopulateFrom) return;
        fixed (byte* p = pinned)
        {
            long start = ((long)p + HostPage - 1) & ~(long)(HostPage - 1);
            long end = ((long)p + pinned.Length) & ~(long)(HostPage - 1);
            if (end > start) HostSys.Call(Nr.madvise, start, end - start, MADV_POPULATE_WRITE);
        }
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
