namespace ReVirt.Linux;

// Names for the numbers of the Linux x86-64 ABI the kernel uses (each class is one family of <linux/*.h>
// constants without its common prefix: Sig.PIPE is SIGPIPE, O.CLOEXEC is O_CLOEXEC).

/// <summary>errno values.</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, ENOEXEC = 8, EBADF = 9,
        ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18, ENODEV = 19,
        ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOTTY = 25, EFBIG = 27, ENOSPC = 28,
        ESPIPE = 29, EROFS = 30, EMLINK = 31, EPIPE = 32, ERANGE = 34, ENODATA = 61, ENAMETOOLONG = 36, ENOSYS = 38, ENOTEMPTY = 39,
        ELOOP = 40, ENOTSOCK = 88, EDESTADDRREQ = 89, EMSGSIZE = 90, EOPNOTSUPP = 95, EADDRINUSE = 98,
        ECONNRESET = 104, ENOTCONN = 107, ETIMEDOUT = 110;
    /// <summary>Socket errnos the in-VM sockets answer.</summary>
    public const int ENOPROTOOPT = 92, EPROTONOSUPPORT = 93, EAFNOSUPPORT = 97, EISCONN = 106, EALREADY = 114, EINPROGRESS = 115;
}

/// <summary>Signal numbers.</summary>
public static class Sig
{
    public const int HUP = 1, INT = 2, QUIT = 3, ILL = 4, TRAP = 5, ABRT = 6, BUS = 7, FPE = 8, KILL = 9, USR1 = 10,
        SEGV = 11, USR2 = 12, PIPE = 13, ALRM = 14, TERM = 15, STKFLT = 16, CHLD = 17, CONT = 18, STOP = 19, TSTP = 20,
        TTIN = 21, TTOU = 22, URG = 23, XCPU = 24, XFSZ = 25, VTALRM = 26, PROF = 27, WINCH = 28, IO = 29, PWR = 30,
        SYS = 31;
    /// <summary>Highest signal number (real-time signals included).</summary>
    public const int Max = 64;

    /// <summary>The bit of a signal in a sigset (bit n-1 for signal n).</summary>
    public static ulong Bit(int sig) => 1UL << (sig - 1);

    /// <summary>Signals that can be neither caught, blocked nor ignored.</summary>
    public static readonly ulong Unblockable = Bit(KILL) | Bit(STOP);

    /// <summary>Signals a fault raises (their siginfo carries the faulting address).</summary>
    public static bool IsFault(int sig) => sig is ILL or BUS or FPE or SEGV;

    /// <summary>Signals whose default action is to do nothing.</summary>
    public static bool DefaultIgnores(int sig) => sig is CHLD or URG or WINCH or CONT;
    /// <summary>Signals whose default action stops the process (job control); SIGCONT continues it.</summary>
    public static bool DefaultStops(int sig) => sig is STOP or TSTP or TTIN or TTOU;
    public static readonly ulong StopSignals = Bit(STOP) | Bit(TSTP) | Bit(TTIN) | Bit(TTOU);

    public static string Name(int sig) => sig switch
    {
        HUP => "SIGHUP", INT => "SIGINT", QUIT => "SIGQUIT", ILL => "SIGILL", TRAP => "SIGTRAP", ABRT => "SIGABRT",
        BUS => "SIGBUS", FPE => "SIGFPE", KILL => "SIGKILL", USR1 => "SIGUSR1", SEGV => "SIGSEGV", USR2 => "SIGUSR2",
        PIPE => "SIGPIPE", ALRM => "SIGALRM", TERM => "SIGTERM", CHLD => "SIGCHLD", _ => $"signal {sig}",
    };
}

/// <summary>sigaction flags and special handlers; sigprocmask's how; sigaltstack flags.</summary>
public static class Sa
{
    public const ulong NOCLDSTOP = 1, SIGINFO = 4, ONSTACK = 0x08000000, RESTART = 0x10000000, NODEFER = 0x40000000, RESETHAND = 0x80000000;
    public const ulong SIG_DFL = 0, SIG_IGN = 1;
    public const int SIG_BLOCK = 0, SIG_UNBLOCK = 1, SIG_SETMASK = 2;
    public const int SS_ONSTACK = 1, SS_DISABLE = 2;
    /// <summary>Smallest alternate signal stack (MINSIGSTKSZ).</summary>
    public const ulong MINSIGSTKSZ = 2048;
    /// <summary>si_code of a signal sent by kill (SI_USER).</summary>
    public const int SI_USER = 0;
}

/// <summary>Auxiliary vector entry types.</summary>
public static class Auxv
{
    public const ulong NULL = 0, PHDR = 3, PHENT = 4, PHNUM = 5, PAGESZ = 6, BASE = 7, FLAGS = 8, ENTRY = 9, UID = 11,
        EUID = 12, GID = 13, EGID = 14, PLATFORM = 15, HWCAP = 16, CLKTCK = 17, SECURE = 23, RANDOM = 25, HWCAP2 = 26,
        EXECFN = 31, MINSIGSTKSZ = 51;
}

/// <summary>open flags.</summary>
public static class O
{
    public const int RDONLY = 0, WRONLY = 1, RDWR = 2, ACCMODE = 3, CREAT = 0x40, EXCL = 0x80, NOCTTY = 0x100,
        TRUNC = 0x200, APPEND = 0x400, NONBLOCK = 0x800, DIRECT = 0x4000, DIRECTORY = 0x10000, NOFOLLOW = 0x20000, CLOEXEC = 0x80000,
        PATH = 0x200000;
    /// <summary>O_TMPFILE as a program passes it: __O_TMPFILE with O_DIRECTORY (an unnamed file in the directory).</summary>
    public const int TMPFILE = 0x410000;
}

/// <summary>*at() conventions.</summary>
public static class At
{
    public const int FDCWD = -100, SYMLINK_NOFOLLOW = 0x100, REMOVEDIR = 0x200, SYMLINK_FOLLOW = 0x400, EMPTY_PATH = 0x1000;
    /// <summary>faccessat2: check with the effective ids (shares its value with REMOVEDIR, as in Linux).</summary>
    public const int EACCESS = 0x200;
}

/// <summary>utimensat's special tv_nsec values.</summary>
public static class Utime
{
    public const long NOW = (1L << 30) - 1, OMIT = (1L << 30) - 2;
}

/// <summary>access(2) modes.</summary>
public static class Access
{
    public const int X_OK = 1, W_OK = 2, R_OK = 4;
}

/// <summary>renameat2 flags.</summary>
public static class RenameFlags
{
    public const uint NOREPLACE = 1, EXCHANGE = 2, WHITEOUT = 4;
}

/// <summary>fcntl commands and descriptor flags.</summary>
public static class F
{
    public const int DUPFD = 0, GETFD = 1, SETFD = 2, GETFL = 3, SETFL = 4, GETLK = 5, SETLK = 6, SETLKW = 7,
        DUPFD_CLOEXEC = 1030, FD_CLOEXEC = 1;
}

/// <summary>clone flags.</summary>
public static class Clone
{
    public const ulong CSIGNAL = 0xFF, VM = 0x100, FS = 0x200, FILES = 0x400, SIGHAND = 0x800, VFORK = 0x4000,
        PARENT = 0x8000, THREAD = 0x10000, SETTLS = 0x80000, PARENT_SETTID = 0x100000, CHILD_CLEARTID = 0x200000,
        CHILD_SETTID = 0x1000000;
}

/// <summary>futex operations.</summary>
public static class Futex
{
    public const int WAIT = 0, WAKE = 1, REQUEUE = 3, CMP_REQUEUE = 4, WAKE_OP = 5, WAIT_BITSET = 9, WAKE_BITSET = 10;
    /// <summary>FUTEX_PRIVATE_FLAG: the word is not shared with another process (the kernel keys it by address alone).</summary>
    public const int PRIVATE_FLAG = 128;
    /// <summary>The command without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.</summary>
    public const int CMD_MASK = 0x7F;
    /// <summary>FUTEX_CLOCK_REALTIME: WAIT_BITSET's absolute timeout is on CLOCK_REALTIME (else CLOCK_MONOTONIC).</summary>
    public const int CLOCK_REALTIME = 256;
    public const uint BITSET_MATCH_ANY = uint.MaxValue;
}

/// <summary>poll events.</summary>
public static class Poll
{
    public const short IN = 1, PRI = 2, OUT = 4, ERR = 8, HUP = 0x10, NVAL = 0x20;
}

/// <summary>Address families, socket types and flags, message flags.</summary>
public static class Af
{
    public const int UNIX = 1, INET = 2, INET6 = 10;
}

public static class Sock
{
    public const int NONBLOCK = 0x800, CLOEXEC = 0x80000, TYPE_MASK = 0xF;
    public const int STREAM = 1;
    public const int SOL_SOCKET = 1, SO_REUSEADDR = 2;
}

public static class Msg
{
    public const int NOSIGNAL = 0x4000, DONTWAIT = 0x40;
}

/// <summary>epoll_ctl operations.</summary>
public static class Epoll
{
    public const int CTL_ADD = 1, CTL_DEL = 2, CTL_MOD = 3;
    /// <summary>struct epoll_event is packed on x86-64.</summary>
    public const int EventSize = 12;
}

/// <summary>mmap flags and mremap flags.</summary>
public static class Map
{
    public const int SHARED = 1, PRIVATE = 2, FIXED = 0x10, ANONYMOUS = 0x20, FIXED_NOREPLACE = 0x100000;
    public const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2;
}

/// <summary>ioctl requests on terminals and descriptors.</summary>
public static class Ioctl
{
    public const ulong TCGETS = 0x5401, TCSETS = 0x5402, TCSETSW = 0x5403, TCSETSF = 0x5404, TIOCGPGRP = 0x540F,
        TIOCSPGRP = 0x5410, TIOCGWINSZ = 0x5413, FIONREAD = 0x541B, FIONBIO = 0x5421, FIONCLEX = 0x5450, FIOCLEX = 0x5451;
}

/// <summary>arch_prctl and prctl codes.</summary>
public static class Prctl
{
    public const int ARCH_SET_GS = 0x1001, ARCH_SET_FS = 0x1002, ARCH_GET_FS = 0x1003, ARCH_GET_GS = 0x1004,
        ARCH_CET_STATUS = 0x3001;
    public const int PR_SET_PDEATHSIG = 1, PR_GET_PDEATHSIG = 2, PR_SET_NAME = 15, PR_GET_NAME = 16;
}

/// <summary>wait4/waitid options, waitid id types, and si_code values of SIGCHLD.</summary>
public static class Wait
{
    public const int NOHANG = 1, UNTRACED = 2, STOPPED = 2, EXITED = 4, CONTINUED = 8, NOWAIT = 0x01000000,
        NOTHREAD = 0x20000000, ALL = 0x40000000, CLONE = unchecked((int)0x80000000);
    public const int P_ALL = 0, P_PID = 1, P_PGID = 2;
    public const int CLD_EXITED = 1, CLD_KILLED = 2, CLD_STOPPED = 5, CLD_CONTINUED = 6;
    /// <summary>Wait status of a stopped child ((signal &lt;&lt; 8) | this) and of a continued one.</summary>
    public const int StoppedStatus = 0x7F, ContinuedStatus = 0xFFFF;
}

/// <summary>Clock ids and clock_nanosleep flags.</summary>
public static class Clocks
{
    public const int REALTIME = 0, MONOTONIC = 1, BOOTTIME = 7, TAI = 11;
    /// <summary>CPU time of the whole calling process (every thread) and of the calling thread alone.</summary>
    public const int PROCESS_CPUTIME_ID = 2, THREAD_CPUTIME_ID = 3;
    public const int TIMER_ABSTIME = 1;
}

/// <summary>Resource numbers of getrlimit/prlimit64.</summary>
/// <summary>lseek's whence values.</summary>
public static class Seek
{
    public const int SET = 0, CUR = 1, END = 2;
}

public static class Rlimit
{
    public const int STACK = 3, NPROC = 6, NOFILE = 7;
}

/// <summary>struct linux_dirent64 as getdents64 fills it: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, then the
/// NUL-terminated name; each record padded to 8 bytes.</summary>
public static class Dirent64
{
    public const int InoOffset = 0, OffOffset = 8, ReclenOffset = 16, TypeOffset = 18, NameOffset = 19;
}

public static class SMode
{
    public const uint IFMT = 0xF000, IFIFO = 0x1000, IFCHR = 0x2000, IFDIR = 0x4000, IFBLK = 0x6000, IFREG = 0x8000, IFSOCK = 0xC000;
    /// <summary>The sticky bit (S_ISVTX) and others' write permission (S_IWOTH).</summary>
    public const uint ISVTX = 0x200, IWOTH = 0x2;
    /// <summary>Offset of st_mode in struct stat (x86-64) and the structure's size.</summary>
    public const int StModeOffset = 24, StatSize = 144, StInoOffset = 8;
    /// <summary>Offsets of st_dev, st_uid and st_size in struct stat (x86-64).</summary>
    public const int StDevOffset = 0, StUidOffset = 28, StSizeOffset = 48;
    /// <summary>st_dev of a pipe (Linux's pipefs: an anonymous device).</summary>
    public const ulong PipeFsDev = 0xd;
}
