using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace ReVirt.Log;

/// <summary>
/// Opens a file that is to be a guest program (named by a command line, a log header or a peer's hello) without
/// letting the name cost more than a bounded read: the open never blocks (O_NONBLOCK, so a FIFO with no writer
/// cannot hang it), and the open descriptor must be a regular file of at most the given size (so /dev/zero, a
/// directory or a socket is refused). The check is made on the descriptor that is then read, not on the path.
/// </summary>
public static class ProgramFile
{
    const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000, SysFstat = 5;
    const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000, S_IFIFO = 0x1000, S_IFCHR = 0x2000;

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    static extern int open(string path, int flags, int mode);

    [DllImport("libc", EntryPoint = "syscall", SetLastError = true)]
    static extern unsafe long syscall2(long nr, long a1, long a2);

    /// <summary>Opens <paramref name="path"/> for reading if it is a regular file of at most <paramref name="maxBytes"/>; else IOException naming what it is.</summary>
    public static unsafe FileStream OpenRegular(string path, long maxBytes)
    {
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno == 2 ? new FileNotFoundException($"{path}: no such file", path) : new IOException($"{path}: cannot open (errno {errno})");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var st = new byte[144];
            long r;
            fixed (byte* p = st) r = syscall2(SysFstat, fd, (long)p);
            if (r != 0) throw new IOException($"{path}: cannot stat (errno {Marshal.GetLastPInvokeError()})");
            uint mode = BinaryPrimitives.ReadUInt32LittleEndian(st.AsSpan(24));
            long size = BinaryPrimitives.ReadInt64LittleEndian(st.AsSpan(48));
            if ((mode & S_IFMT) != S_IFREG)
                throw new IOException($"{path}: not a regular file ({Describe(mode & S_IFMT)}); a program must be a regular file");
            if (size > maxBytes)
                throw new IOException($"{path}: {size} bytes, more than the {maxBytes} bytes a program may have");
            return new FileStream(handle, FileAccess.Read, bufferSize: 1 << 16);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The whole content of a program file (see <see cref="OpenRegular"/>); the size is read from the open file, bounded.</summary>
    public static byte[] ReadAll(string path, long maxBytes)
    {
        using var f = OpenRegular(path, maxBytes);
        var ms = new MemoryStream();
        var buf = new byte[1 << 16];
        int n;
        while ((n = f.Read(buf)) > 0)
        {
            if (ms.Length + n > maxBytes) throw new IOException($"{path}: grew past {maxBytes} bytes while being read");
            ms.Write(buf, 0, n);
        }
        return ms.ToArray();
    }

    static string Describe(uint type) => type switch
    {
        S_IFDIR => "a directory",
        S_IFIFO => "a FIFO",
        S_IFCHR => "a character device",
        _ => $"file type {Convert.ToString(type >> 12, 8)}",
    };
}
