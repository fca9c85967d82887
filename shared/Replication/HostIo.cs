using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>
/// Raw writes to this process's descriptors with write(2), bypassing .NET's console: the output gate's releases, the
/// output a replay passes through, and the lines a short command prints once (a replay's verdict). The first use of
/// <see cref="Console"/>.Error in a process initialises the console (encodings, the terminal's settings, a
/// synchronised writer), about 10 ms of CPU, which a replay of a short guest spent on its last line.
/// </summary>
public static unsafe class HostIo
{
    /// <summary>Writes all of <paramref name="data"/> to <paramref name="fd"/>, again after EINTR and short writes;
    /// stops quietly on an error (a closed pipe: there is no one left to tell).</summary>
    public static void WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            int off = 0;
            while (off < data.Length)
            {
                long r = HostSys.Call(Nr.write, fd, (long)(p + off), data.Length - off);
                if (r == -Errno.EINTR) continue;
                if (r <= 0) return;
                off += (int)r;
            }
        }
    }

    /// <summary><paramref name="line"/> in UTF-8 and a newline, in one write.</summary>
    public static void WriteLine(int fd, string line) => WriteAll(fd, System.Text.Encoding.UTF8.GetBytes(line + "\n"));

    /// <summary>Whether <paramref name="fd"/> is a terminal (as isatty(3) decides: it answers TCGETS).</summary>
    public static bool IsTerminal(int fd)
    {
        byte* termios = stackalloc byte[64]; // (the kernel's struct termios is 36 bytes; room to spare)
        return HostSys.Call(Nr.ioctl, fd, (long)Ioctl.TCGETS, (long)termios) == 0;
    }
}
