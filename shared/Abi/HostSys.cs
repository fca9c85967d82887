using System.Runtime.InteropServices;

namespace ReVirt.Abi;

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

/// <summary>Linux x86-64 syscall numbers used by the kernel emulation.</summary>
public static class Nr
{
    public const int read = 0, write = 1, open = 2, close = 3, stat = 4, fstat = 5, lstat = 6, poll = 7, lseek = 8, mmap = 9,
        mprotect = 10, munmap = 11, brk = 12, rt_sigaction = 13, rt_sigprocmask = 14, rt_sigreturn = 15, ioctl = 16,
        pread64 = 17, pwrite64 = 18, readv = 19, writev = 20, access = 21, pipe = 22, select = 23, sched_yield = 24,
        mremap = 25, msync = 26, mincore = 27, madvise = 28, dup = 32, dup2 = 33, pause = 34, nanosleep = 35,
        getitimer = 36, alarm = 37, setitimer = 38, getpid = 39, sendfile = 40, socket = 41, connect = 42, accept = 43,
        sendto = 44, recvfrom = 45, sendmsg = 46, recvmsg = 47, shutdown = 48, bind = 49, listen = 50, getsockname = 51,
        getpeername = 52, socketpair = 53, setsockopt = 54, getsockopt = 55, clone = 56, fork = 57, vfork = 58,
        execve = 59, exit = 60, wait4 = 61, kill = 62, uname = 63, fcntl = 72, flock = 73, fsync = 74, fdatasync = 75,
        truncate = 76, ftruncate = 77, getdents = 78, getcwd = 79, chdir = 80, fchdir = 81, rename = 82, mkdir = 83,
        rmdir = 84, creat = 85, link = 86, unlink = 87, symlink = 88, readlink = 89, chmod = 90, fchmod = 91, chown = 92,
        fchown = 93, lchown = 94, umask = 95, gettimeofday = 96, getrlimit = 97, getrusage = 98, sysinfo = 99, times = 100,
        getuid = 102, getgid = 104, setuid = 105, setgid = 106, geteuid = 107, getegid = 108, setpgid = 109,
        getppid = 110, getpgrp = 111, setsid = 112, getgroups = 115, getpgid = 121, getsid = 124, sigaltstack = 131,
        utime = 132, statfs = 137, fstatfs = 138, getpriority = 140, prctl = 157, arch_prctl = 158, setrlimit = 160,
        sync = 162, gettid = 186, tkill = 200, time = 201, futex = 202, sched_setaffinity = 203, sched_getaffinity = 204,
        getdents64 = 217, set_tid_address = 218, fadvise64 = 221, timer_create = 222, timer_settime = 223,
        timer_gettime = 224, timer_getoverrun = 225, timer_delete = 226, clock_gettime = 228, clock_getres = 229,
        clock_nanosleep = 230, exit_group = 231, epoll_wait = 232, epoll_ctl = 233, tgkill = 234, utimes = 235,
        openat = 257, mkdirat = 258, fchownat = 260, futimesat = 261, newfstatat = 262, unlinkat = 263, renameat = 264,
        linkat = 265, symlinkat = 266, readlinkat = 267, fchmodat = 268, faccessat = 269, pselect6 = 270, ppoll = 271,
        set_robust_list = 273, get_robust_list = 274, utimensat = 280, epoll_pwait = 281, accept4 = 288,
        eventfd2 = 290, epoll_create1 = 291, dup3 = 292, pipe2 = 293, prlimit64 = 302, getcpu = 309, epoll_create = 213, eventfd = 284,
        getxattr = 191, lgetxattr = 192, fgetxattr = 193, listxattr = 194, llistxattr = 195, flistxattr = 196,
        renameat2 = 316, getrandom = 318, memfd_create = 319, statx = 332, rseq = 334, clone3 = 435, faccessat2 = 439;
}

/// <summary>errno values.</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, ENOEXEC = 8, EBADF = 9,
        ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18, ENODEV = 19,
        ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOTTY = 25, EFBIG = 27, ENOSPC = 28,
        ESPIPE = 29, EROFS = 30, EMLINK = 31, EPIPE = 32, ERANGE = 34, ENODATA = 61, ENAMETOOLONG = 36, ENOSYS = 38, ENOTEMPTY = 39,
        ELOOP = 40, ENOTSOCK = 88, EDESTADDRREQ = 89, EMSGSIZE = 90, EOPNOTSUPP = 95, ETIMEDOUT = 110;
}
