using System.Runtime.InteropServices;

namespace ReVirt.Linux;

/// <summary>
/// Raw Linux syscalls on the host (the host is x86-64 Linux, so kernel structures already have the guest's
/// layout). Only the kernel's host operations (inside <see cref="IBoundary"/> calls) use this.
/// Returns the kernel convention: a value, or -errno.
/// </summary>
internal static unsafe partial class HostSys
{
    // LibraryImport, not DllImport with SetLastError: errno is then read by generated C# around a call that needs no
    // marshalling, which ReadyToRun precompiles; the runtime built (JIT-compiled) a marshalling stub for the
    // DllImport at the first syscall of every run.
    // The C library by its glibc soname (the host runtime this builds for, linux-x64, is glibc's): the runtime loads
    // a name with a suffix as given, where the bare "libc" was first tried as libc.so (a linker script: read and
    // refused) and liblibc.so in six folders before the loader's own alias: about 0.7 ms of every start-up.
    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6);

    /// <summary>The C library's file name for the runtime's native loader (see syscall6).</summary>
    internal const string Libc = "libc.so.6";

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

    /// <summary>
    /// n bytes from the host kernel's cryptographically secure source (getrandom(2), which OpenSSL behind the
    /// framework's <c>RandomNumberGenerator</c> seeds from): the randomness the guest is given (AT_RANDOM, its
    /// getrandom, RDRAND). Straight from the kernel so that a run does not load and initialise OpenSSL for it (about
    /// 4 ms of every start-up).
    /// </summary>
    public static byte[] RandomBytes(int n)
    {
        var b = new byte[n];
        fixed (byte* p = b)
            for (int got = 0; got < n;)
            {
                long r = Call(Nr.getrandom, (long)(p + got), n - got, 0);
                if (r == -Errno.EINTR) continue;
                if (r <= 0) throw new IOException($"getrandom failed on the host (errno {-r})");
                got += (int)r;
            }
        return b;
    }
}
