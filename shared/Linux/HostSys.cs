using System.Runtime.InteropServices;

namespace ReVirt.Linux;

/// <summary>
/// Raw Linux syscalls on the host (the host is x86-64 Linux, so kernel structures already have the guest's
/// layout). Only the kernel's host operations (inside <see cref="IBoundary"/> calls) use this.
/// Returns the kernel convention: a value, or -errno.
/// </summary>
internal static unsafe class HostSys
{
    [DllImport("libc", EntryPoint = "syscall", SetLastError = true)]
    static extern long syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6);

    public static long Call(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        long r = syscall6(nr, a1, a2, a3, a4, a5, a6);
        if (r == -1) return -Marshal.GetLastPInvokeError();
        return r;
    }

    /// <summary>Calls with a NUL-terminated copy of a path as the argument at position pathArg (1-based).</summary>
    public static long WithPath(long nr, string path, Func<long, long> call)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes) return call((long)p);
    }

    public static byte[] Z(string s) => System.Text.Encoding.UTF8.GetBytes(s + "\0");
}
