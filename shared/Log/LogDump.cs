using System.Globalization;
using System.Text;

namespace ReVirt.Log;

/// <summary>Options for <see cref="LogDump"/>.</summary>
public sealed class LogDumpOptions
{
    /// <summary>At most this many bytes of guest output are shown per Output record (escaped).</summary>
    public int MaxOutputPreview { get; init; } = 64;

    /// <summary>Print every envp entry (otherwise only their count).</summary>
    public bool ShowEnvironment { get; init; } = true;

    /// <summary>Stop after this many records (0 = all); the remaining records are still verified.</summary>
    public ulong MaxRecords { get; init; }
}

/// <summary>
/// Human-readable rendering of a log for the <c>backup log FILE</c> command: the header fields, then one
/// line per record such as <c>#12 @icount=12345 syscall read(0) = 17 [17 bytes]</c>, then a summary
/// (including "log ends mid-record at offset X after record #N" for a torn tail).
/// </summary>
public static class LogDump
{
    /// <summary>Dumps the log file at <paramref name="path"/>; see <see cref="Write(Stream, TextWriter, LogDumpOptions?)"/>.</summary>
    public static bool Write(string path, TextWriter output, LogDumpOptions? options = null)
    {
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            output.WriteLine($"error: cannot open {path}: {e.Message}");
            return false;
        }
        using (fs) return Write(fs, output, options);
    }

    /// <summary>
    /// Writes the dump of <paramref name="log"/> to <paramref name="output"/>. Returns true if the log is valid
    /// (a torn tail counts as valid and is reported); on damage it prints what it could, then an
    /// <c>error: ...</c> line, and returns false.
    /// </summary>
    public static bool Write(Stream log, TextWriter output, LogDumpOptions? options = null)
    {
        options ??= new LogDumpOptions();
        LogReader reader;
        try
        {
            reader = new LogReader(log, leaveOpen: true);
        }
        catch (LogFormatException e)
        {
            output.WriteLine($"error: {e.Message}");
            return false;
        }

        using (reader)
        {
            WriteHeader(reader.Header, output, options);
            output.WriteLine("records:");
            var counts = new Dictionary<RecordKind, ulong>();
            try
            {
                while (reader.TryRead(out var r))
                {
                    counts[r.Kind] = counts.GetValueOrDefault(r.Kind) + 1;
                    if (options.MaxRecords == 0 || r.Sequence <= options.MaxRecords)
                        output.WriteLine(FormatRecord(r, options.MaxOutputPreview));
                    else if (r.Sequence == options.MaxRecords + 1)
                        output.WriteLine("...");
                }
            }
            catch (LogFormatException e)
            {
                output.WriteLine($"error: {e.Message}");
                output.WriteLine($"{reader.LastSequence} valid records before the damage, ending at offset {reader.ValidEndOffset}");
                return false;
            }

            var sb = new StringBuilder();
            sb.Append(CultureInfo.InvariantCulture, $"{reader.LastSequence} records, {reader.ValidEndOffset} bytes");
            if (counts.Count > 0)
            {
                sb.Append(" (");
                sb.AppendJoin(", ", counts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Value} {LogRecord.KindName(kv.Key)}"));
                sb.Append(')');
            }
            output.WriteLine(sb.ToString());
            if (reader.Truncated) output.WriteLine(reader.TruncationMessage);
            output.WriteLine(reader.Complete
                ? "complete: the End record matches the record count and the digest of the log"
                : $"incomplete: no End record (the recording ended early, after record #{reader.LastSequence})");
            return true;
        }
    }

    /// <summary>Renders the whole dump into a string.</summary>
    public static string ToText(Stream log, LogDumpOptions? options = null)
    {
        var sw = new StringWriter(CultureInfo.InvariantCulture) { NewLine = "\n" };
        Write(log, sw, options);
        return sw.ToString();
    }

    public static void WriteHeader(LogHeader h, TextWriter o, LogDumpOptions? options = null)
    {
        options ??= new LogDumpOptions();
        o.WriteLine("ReVirt event log");
        o.WriteLine($"  format version:      {h.Version}");
        o.WriteLine($"  flags:               0x{(uint)h.Flags:x} ({h.Flags})");
        o.WriteLine($"  program {LogDigest.NameFor(h.Version),-6}:      {Convert.ToHexStringLower(h.ProgramHash)}");
        o.WriteLine($"  cpu model:           {h.CpuModel}");
        o.WriteLine($"  root directory:      {h.RootDirectory}");
        o.WriteLine($"  argv ({h.Argv.Length}):");
        for (int i = 0; i < h.Argv.Length; i++) o.WriteLine($"    [{i}] {Quote(h.Argv[i])}");
        if (options.ShowEnvironment)
        {
            o.WriteLine($"  envp ({h.Envp.Length}):");
            foreach (var e in h.Envp) o.WriteLine($"    {Quote(e)}");
        }
        else o.WriteLine($"  envp:                {h.Envp.Length} entries");
        o.WriteLine($"  start time:          {h.StartTime.ToString("yyyy-MM-dd HH:mm:ss.fffffff zzz", CultureInfo.InvariantCulture)}");
        o.WriteLine($"  checkpoint interval: {(h.CheckpointInterval == 0 ? "none" : h.CheckpointInterval.ToString(CultureInfo.InvariantCulture) + " instructions")}");
        o.WriteLine($"  start state:         {h.StartState.Length} bytes{(h.StartState.Length > 0 ? " " + Hex(h.StartState, 32) : "")}");
        o.WriteLine($"  header length:       {h.EncodedLength} bytes");
    }

    /// <summary>One line for one record, e.g. <c>#12 @icount=12345 syscall read(0) = 17 [17 bytes]</c>.</summary>
    public static string FormatRecord(in LogRecord r, int maxOutputPreview = 64)
    {
        var sb = new StringBuilder(96);
        sb.Append(CultureInfo.InvariantCulture, $"#{r.Sequence} ");
        switch (r.Kind)
        {
            case RecordKind.SyscallResult:
            {
                var s = r.Decode<SyscallResult>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={s.InstrCount} syscall {SyscallName(s.Nr)}({s.Nr}) = {s.Result}");
                if (s.Result < 0 && s.Result >= -4095) sb.Append(CultureInfo.InvariantCulture, $" ({ErrnoName((int)-s.Result)})");
                sb.Append(CultureInfo.InvariantCulture, $" [{s.TotalBytes} bytes");
                if (s.MemWrites is { Count: > 0 } w) sb.Append(CultureInfo.InvariantCulture, $" in {w.Count} mem write{(w.Count == 1 ? "" : "s")}");
                sb.Append(CultureInfo.InvariantCulture, $"] tid={s.Tid}");
                break;
            }
            case RecordKind.Rdtsc:
            {
                var v = r.Decode<Rdtsc>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} rdtsc = {v.Value} (0x{v.Value:x})");
                break;
            }
            case RecordKind.Rdrand:
            {
                var v = r.Decode<Rdrand>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} rdrand = 0x{v.Value:x16}");
                break;
            }
            case RecordKind.Signal:
            {
                var v = r.Decode<Signal>();
                sb.Append(CultureInfo.InvariantCulture,
                    $"@icount={v.InstrCount} signal {SignalName(v.Signo)}({v.Signo}) tid={v.Tid} branches={v.BranchCount} rip=0x{v.Rip:x} rcx=0x{v.Rcx:x} [{v.SigInfo.Length} bytes siginfo]");
                break;
            }
            case RecordKind.Preempt:
            {
                var v = r.Decode<Preempt>();
                sb.Append(CultureInfo.InvariantCulture,
                    $"@icount={v.InstrCount} preempt tid {v.FromTid} -> {v.ToTid} branches={v.BranchCount} rip=0x{v.Rip:x}");
                break;
            }
            case RecordKind.Checkpoint:
            {
                var v = r.Decode<Checkpoint>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} checkpoint rip=0x{v.Rip:x} digest={Convert.ToHexStringLower(v.StateDigest)}");
                break;
            }
            case RecordKind.Output:
            {
                var v = r.Decode<Output>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} output fd={v.Fd} [{v.Bytes.Length} bytes, total {v.TotalBytes}]");
                if (v.Digest.Length > 0) sb.Append(" digest=").Append(Hex(v.Digest, 16));
                if (v.Bytes.Length > 0) sb.Append(' ').Append(Escape(v.Bytes, maxOutputPreview));
                break;
            }
            case RecordKind.Exit:
            {
                var v = r.Decode<Exit>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} exit status={v.Status}");
                break;
            }
            case RecordKind.FileContent:
            {
                var v = r.Decode<FileContent>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} syscall {SyscallName(v.Nr)}({v.Nr}) = {v.Result} [by reference: {v.Path} at offset {v.Offset}, {ContentHash.Name(v.HashKind)} {Hex(v.Hash, 8)}] tid={v.Tid}");
                break;
            }
            case RecordKind.FileContentRun:
            {
                var v = r.Decode<FileContentRun>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.FirstInstrCount}..{v.LastInstrCount} syscall {SyscallName(v.Nr)}({v.Nr}) x{v.Reads} = {v.Bytes} bytes [by reference: {v.Path} at offset {v.Offset}, xxh128 {Hex(v.Hash, 8)}] tid={v.Tid}");
                break;
            }
            case RecordKind.NetInput:
            {
                var v = r.Decode<NetInput>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} tid={v.Tid} net-input clock={v.ClockNs} frames={v.Frames.Count} [{v.Frames.Sum(f => f.Length)} bytes]");
                break;
            }
            case RecordKind.NetTakeover:
            {
                var v = r.Decode<NetTakeover>();
                sb.Append(CultureInfo.InvariantCulture, $"@icount={v.InstrCount} tid={v.Tid} net-takeover clock={v.ClockNs}");
                break;
            }
            case RecordKind.Wake:
            {
                var v = r.Decode<Wake>();
                sb.Append(CultureInfo.InvariantCulture,
                    $"@icount={v.InstrCount} wake tid {v.WokenTid} (wait {v.WaitSeq}) tid={v.Tid} branches={v.BranchCount} rip=0x{v.Rip:x}");
                break;
            }
            case RecordKind.End:
            {
                var v = r.Decode<End>();
                sb.Append(CultureInfo.InvariantCulture, $"end of the recording: {v.RecordCount} records before, digest={Hex(v.Digest, 8)}");
                break;
            }
            case RecordKind.Opaque:
                sb.Append(CultureInfo.InvariantCulture, $"opaque [{r.Payload.Length} bytes]");
                if (r.Payload.Length > 0) sb.Append(' ').Append(Hex(r.Payload.Span, 16));
                break;
            default:
                sb.Append(CultureInfo.InvariantCulture, $"unknown kind 0x{(byte)r.Kind:x2} [{r.Payload.Length} bytes]");
                break;
        }
        return sb.ToString();
    }

    private static string Hex(ReadOnlySpan<byte> b, int max) =>
        b.Length <= max ? Convert.ToHexStringLower(b) : Convert.ToHexStringLower(b[..max]) + "...";

    private static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c)) sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>C-style escaped, quoted preview of guest output bytes.</summary>
    private static string Escape(ReadOnlySpan<byte> bytes, int max)
    {
        var sb = new StringBuilder().Append('"');
        int n = Math.Min(bytes.Length, Math.Max(0, max));
        foreach (byte b in bytes[..n])
        {
            switch (b)
            {
                case (byte)'"': sb.Append("\\\""); break;
                case (byte)'\\': sb.Append("\\\\"); break;
                case (byte)'\n': sb.Append("\\n"); break;
                case (byte)'\r': sb.Append("\\r"); break;
                case (byte)'\t': sb.Append("\\t"); break;
                default:
                    if (b >= 0x20 && b < 0x7F) sb.Append((char)b);
                    else sb.Append(CultureInfo.InvariantCulture, $"\\x{b:x2}");
                    break;
            }
        }
        sb.Append('"');
        if (bytes.Length > n) sb.Append("...");
        return sb.ToString();
    }

    // ------------------------------------------------------------------ names (x86-64 Linux)

    private static readonly string[] Syscalls0To334 = (
        "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction rt_sigprocmask " +
        "rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap msync mincore madvise " +
        "shmget shmat shmctl dup dup2 pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept " +
        "sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt " +
        "clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl " +
        "flock fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink " +
        "symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace " +
        "getuid syslog getgid setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups " +
        "setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid getsid capget capset rt_sigpending " +
        "rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod uselib personality ustat statfs fstatfs " +
        "sysfs getpriority setpriority sched_setparam sched_getparam sched_setscheduler sched_getscheduler " +
        "sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall vhangup " +
        "modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot sync acct settimeofday mount umount2 " +
        "swapon swapoff reboot sethostname setdomainname iopl ioperm create_module init_module delete_module " +
        "get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid readahead " +
        "setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr " +
        "lremovexattr fremovexattr tkill time futex sched_setaffinity sched_getaffinity set_thread_area io_setup " +
        "io_destroy io_getevents io_submit io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old " +
        "epoll_wait_old remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 timer_create " +
        "timer_settime timer_gettime timer_getoverrun timer_delete clock_settime clock_gettime clock_getres " +
        "clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes vserver mbind set_mempolicy get_mempolicy mq_open " +
        "mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl " +
        "ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat " +
        "fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll " +
        "unshare set_robust_list get_robust_list splice tee sync_file_range vmsplice move_pages utimensat epoll_pwait " +
        "signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2 " +
        "epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg " +
        "fanotify_init fanotify_mark prlimit64 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns " +
        "getcpu process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp " +
        "getrandom memfd_create kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 " +
        "pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq").Split(' ');

    private static readonly string[] Syscalls424To462 = (
        "pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount fsopen fsconfig fsmount " +
        "fspick pidfd_open clone3 close_range openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr " +
        "quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret process_mrelease " +
        "futex_waitv set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack futex_wake futex_wait futex_requeue " +
        "statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal").Split(' ');

    /// <summary>x86-64 Linux syscall name, or "syscall" if unknown.</summary>
    public static string SyscallName(int nr)
    {
        if ((uint)nr < (uint)Syscalls0To334.Length) return Syscalls0To334[nr];
        if (nr >= 424 && nr - 424 < Syscalls424To462.Length) return Syscalls424To462[nr - 424];
        return "syscall";
    }

    private static readonly string[] Signals =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    public static string SignalName(int signo) =>
        signo > 0 && signo < Signals.Length ? Signals[signo]
        : signo >= 32 && signo <= 64 ? $"SIGRT{signo - 32}" : "SIG?";

    private static readonly string[] Errnos =
    [
        "", "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD", "EAGAIN",
        "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV", "ENOTDIR", "EISDIR", "EINVAL",
        "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC", "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM",
        "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK", "ENOSYS", "ENOTEMPTY", "ELOOP",
    ];

    public static string ErrnoName(int errno) => errno switch
    {
        > 0 and < 41 => Errnos[errno],
        61 => "ENODATA",
        75 => "EOVERFLOW",
        88 => "ENOTSOCK",
        95 => "EOPNOTSUPP",
        98 => "EADDRINUSE",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        115 => "EINPROGRESS",
        _ => $"errno {errno}",
    };
}
