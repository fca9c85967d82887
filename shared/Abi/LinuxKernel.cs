using System.Buffers.Binary;
using System.Text;
using ReVirt.Cpu;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>A guest file descriptor: what the guest's number refers to on the host (only live/recording runs
/// have a host descriptor; a replay keeps the same table without one).</summary>
public sealed class GuestFile
{
    public int HostFd = -1;
    public string GuestPath = "";
    public bool CloseOnExec;
    public bool IsStdio;
    public bool IsDirectory;
    public int RefCount = 1; // shared by dup'd guest descriptors
    /// <summary>A directory of the guest's /proc view: its entries (read by getdents64 from <see cref="Offset"/>).</summary>
    public string[]? SyntheticEntries;

    // sockets (set from guest inputs and logged answers only, so a replay has the same values)
    public bool IsSocket;
    public int SocketFamily, SocketType, SocketProtocol;
    /// <summary>The address the socket is bound to (what the host's getsockname said right after bind/listen).</summary>
    public byte[]? BoundAddress;
    public bool Listening;
    public int Backlog;
    /// <summary>An epoll instance: the guest descriptors registered with it (guest fd -> entry).</summary>
    public Dictionary<int, EpollEntry>? Epoll;

    // failover state (from guest inputs and logged results only, so a replay tracks the same values)
    /// <summary>File status flags the guest gave (open flags without O_CREAT/O_EXCL/O_TRUNC; O_APPEND/O_NONBLOCK
    /// as set by F_SETFL).</summary>
    public int StatusFlags;
    /// <summary>The guest-visible file offset (moved by read/write/readv/writev/lseek/sendfile, not by pread/pwrite).</summary>
    public long Offset;
    /// <summary>A connection only the old primary had: after a takeover it is reset (reads 0/ECONNRESET,
    /// writes EPIPE, poll POLLHUP|POLLERR).</summary>
    public bool Reset;
    public bool ResetReported;
}

/// <summary>A guest descriptor registered with an epoll instance: the guest's events mask and user data.</summary>
public sealed class EpollEntry
{
    public required GuestFile File;
    public uint Events;
    public ulong Data;
}

/// <summary>Options of a virtual machine run.</summary>
public sealed class MachineOptions
{
    public string Root = "/";
    public string Program = "";
    public string[] Args = Array.Empty<string>();   // argv[1..]
    public string[]? Env;                          // null: the host's environment
    public string Cwd = "/";
    /// <summary>Where VM diagnostics go (warnings about unknown syscalls, fatal signals).</summary>
    public TextWriter Diagnostics = Console.Error;
}

/// <summary>
/// The Linux ABI for a guest process: program loading and the initial stack, the syscalls, signals' default
/// actions, and the run loop. Every host interaction goes through <see cref="IBoundary"/>.
/// </summary>
public sealed partial class LinuxKernel : ICpuHost
{
    public const ulong StackTop = 0x7fff_ffff_f000;
    public const ulong StackSize = 8 * 1024 * 1024;
    public const ulong MmapTop = 0x7fff_f7ff_f000;
    public const ulong MmapBottom = 0x10000;

    public readonly GuestMemory Mem;
    public readonly CodeCache Code;
    public readonly IBoundary Boundary;
    public readonly GuestFs Fs;
    public readonly MachineOptions Options;
    public readonly Cpu.Cpu MainThread;
    public readonly Dictionary<int, GuestFile> Fds = new();
    public string Cwd;
    public ulong BrkStart, BrkCur;
    public int Pid = 1000;
    public bool Exited;
    public int ExitStatus;
    public int? TerminatingSignal;
    public LoadedProgram Program = null!;
    /// <summary>File mappings: their content through the boundary, shared mappings written back.</summary>
    public readonly FileMappings Files;
    /// <summary>The guest's /proc view.</summary>
    public readonly ProcFs Proc;
    public byte[] ProgramImage = Array.Empty<byte>();
    public string ProgramGuestPath = "";
    readonly HashSet<int> _warnedSyscalls = new();

    /// <summary>All guest threads (the main thread first).</summary>
    public readonly List<Cpu.Cpu> Threads = new();

    /// <summary>The thread that is running.</summary>
    public Cpu.Cpu Current = null!;

    // ---------------------------------------------------------------- host events (timers, signals from outside)
    readonly System.Collections.Concurrent.ConcurrentQueue<int> _hostEvents = new();
    volatile bool _hostEventsPending;
    ulong _queuedEvents; // bit n: signal n is queued (Interlocked)

    public bool HostEventsPending => _hostEventsPending;

    /// <summary>
    /// Called from any host thread (an interval timer, a signal sent to this process): the signal is queued and
    /// the running guest is asked to stop at its next block boundary, where the boundary decides (and records)
    /// the exact instruction at which the guest receives it.
    /// </summary>
    public void PostHostSignal(int sig)
    {
        // like a pending signal on Linux, an event that is already queued and not yet taken is not queued again
        ulong bit = 1UL << (sig & 63);
        ulong old;
        do
        {
            old = Interlocked.Read(ref _queuedEvents);
            if ((old & bit) != 0) { _hostEventsPending = true; var cc = Current; if (cc != null) cc.StopAt = 0; return; }
        } while (Interlocked.CompareExchange(ref _queuedEvents, old | bit, old) != old);
        _hostEvents.Enqueue(sig);
        _hostEventsPending = true;
        var c = Current;
        if (c != null) c.StopAt = 0;
    }

    /// <summary>Takes one queued host event. One event per stop, so that each is delivered (and, when recording,
    /// logged) at a position of its own: the next one is placed after the guest entered the previous handler.</summary>
    public bool TryTakeHostEvent(out int sig)
    {
        _hostEventsPending = false;
        bool got = _hostEvents.TryDequeue(out sig);
        if (got)
        {
            ulong bit = 1UL << (sig & 63), old;
            do old = Interlocked.Read(ref _queuedEvents);
            while (Interlocked.CompareExchange(ref _queuedEvents, old & ~bit, old) != old);
        }
        if (!_hostEvents.IsEmpty) _hostEventsPending = true;
        return got;
    }

    public LinuxKernel(MachineOptions options, IBoundary boundary)
    {
        Options = options;
        Boundary = boundary;
        Fs = new GuestFs(options.Root);
        Cwd = options.Cwd;
        Mem = new GuestMemory();
        Code = new CodeCache(Mem);
        Files = new FileMappings(this);
        Proc = new ProcFs(this);
        MainThread = new Cpu.Cpu(Mem, Code, this);
        Threads.Add(MainThread);
        for (int fd = 0; fd < 3; fd++) Fds[fd] = new GuestFile { HostFd = fd, IsStdio = true, GuestPath = $"/dev/fd/{fd}" };
    }

    // ---------------------------------------------------------------- start-up

    /// <summary>
    /// Finds the program as execve would after a shell's PATH search: a name without '/' is looked up in the
    /// guest's PATH under the root. Returns the guest path and the host path of the file.
    /// </summary>
    public static (string GuestPath, string HostPath) ResolveProgram(MachineOptions o)
    {
        var fs = new GuestFs(o.Root);
        var candidates = new List<string>();
        if (o.Program.Contains('/')) candidates.Add(o.Program.StartsWith('/') ? o.Program : GuestFs.Join(o.Cwd, o.Program));
        else
        {
            string? path = (o.Env ?? Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
                    .Select(e => $"{e.Key}={e.Value}").ToArray())
                .FirstOrDefault(e => e.StartsWith("PATH="))?.Substring(5);
            foreach (var dir in (path ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
                candidates.Add(GuestFs.Join(dir, o.Program));
        }
        foreach (var c in candidates)
        {
            if (fs.ToHost(c, true, out var host) != 0) continue;
            string? kind = ProgramFile.Kind(host);
            if (kind == null || (kind == "directory" && candidates.Count > 1)) continue; // a PATH search skips directories
            if (kind != "regular file") throw new ElfLoadException(kind == "directory" ? $"{c}: is a directory" : $"{c}: is a {kind}, not a regular file");
            return (c, host);
        }
        throw ElfLoadException.NotFound(o.Program);
    }

    /// <summary>Loads the program and builds the initial stack. The program's bytes are the machine's start
    /// state (a recording stores their hash and a replay checks it), not a nondeterministic input.</summary>
    public void Load()
    {
        var (guestPath, host) = ResolveProgram(Options);
        var pidResult = Boundary.Syscall(0, Nr.getpid, () => HostResult.Of(Environment.ProcessId));
        Pid = (int)pidResult.Value;
        MainThread.Tid = Pid;
        Start = ProgramLoader.Load(Mem, Fs, Boundary, Pid, guestPath, host, new[] { Options.Program }.Concat(Options.Args).ToArray());
        Program = Start.Program;
        ProgramGuestPath = Start.BinaryPath;
        BrkStart = BrkCur = Program.BrkStart;
        Mem.Map(StackTop - StackSize, StackSize, Prot.Read | Prot.Write, "[stack]");
        var random = Boundary.Bytes(Pid, InputKind.StartupRandom, 16, () => System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        BuildStack(Start, random);
        MainThread.Rip = Start.StartRip;
    }

    /// <summary>What execve loaded (program, interpreter, argv).</summary>
    public StartImage Start = null!;

    void BuildStack(StartImage start, byte[] random)
    {
        var env = Options.Env ?? Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .Select(e => $"{e.Key}={e.Value}").OrderBy(s => s, StringComparer.Ordinal).ToArray();
        GuestEnvironment = env;
        ulong sp = StackTop;
        ulong PushBytes(byte[] b) { sp -= (ulong)b.Length; Mem.WriteBytes(sp, b); return sp; }
        ulong PushStr(string s) => PushBytes(Encoding.UTF8.GetBytes(s + "\0"));
        ulong execfn = PushStr(start.ExecPath);
        var envPtrs = env.Select(PushStr).ToList();
        var argPtrs = start.Argv.Select(PushStr).ToList();
        ulong platform = PushStr("x86_64");
        sp &= ~15UL;
        ulong rnd = PushBytes(random);
        sp &= ~15UL;
        // uid/gid entries are the host's: filled through the boundary with getuid etc.
        ulong uid = (ulong)Boundary.Syscall(Pid, Nr.getuid, () => HostResult.Of((long)HostSys.Call(Nr.getuid))).Value;
        ulong gid = (ulong)Boundary.Syscall(Pid, Nr.getgid, () => HostResult.Of((long)HostSys.Call(Nr.getgid))).Value;
        var aux = ProgramLoader.Auxv(start, platform, rnd, execfn, uid, gid);
        Auxv = aux.SelectMany(kv => new[] { kv.Key, kv.Value }).ToArray();
        int words = 1 + argPtrs.Count + 1 + envPtrs.Count + 1 + aux.Count * 2;
        sp -= (ulong)words * 8;
        sp &= ~15UL;
        ulong p = sp;
        void W(ulong v) { Mem.Write64(p, v); p += 8; }
        W((ulong)argPtrs.Count);
        foreach (var a in argPtrs) W(a);
        W(0);
        foreach (var e in envPtrs) W(e);
        W(0);
        foreach (var (k, v) in aux) { W(k); W(v); }
        MainThread.R[Cpu.Cpu.RSP] = sp;
    }

    /// <summary>The environment the guest started with (for /proc/self/environ).</summary>
    public string[] GuestEnvironment = Array.Empty<string>();
    /// <summary>The auxiliary vector as key, value pairs (for /proc/self/auxv).</summary>
    public ulong[] Auxv = Array.Empty<ulong>();

    // ---------------------------------------------------------------- running

    /// <summary>Runs the guest until it exits or is killed by a signal; returns the process exit status.</summary>
    public int Run()
    {
        Current = MainThread;
        while (!Exited)
        {
            var cpu = Current;
            cpu.StopAt = Boundary.NextStop(this, cpu);
            var r = cpu.Run();
            if (r == RunResult.Fault) HandleFault(cpu, cpu.PendingFault!);
            else if (r == RunResult.ReachedStop) Boundary.AtStop(this, cpu);
            if (!Exited && Pending != 0 && Current == cpu) DeliverPending(cpu);
            if (!Exited && (_switch || cpu.Dead || cpu.Blocked)) Schedule();
        }
        StopTimers();
        StopSliceTimer();
        Files.ExitAll(Current.Tid);
        Boundary.OnExit(this, Current, ExitStatus);
        return ExitStatus;
    }

    void HandleFault(Cpu.Cpu cpu, GuestSignalException fault)
    {
        if (TryDeliverSignal(cpu, fault.Signal, fault.Code, fault.FaultAddress)) return;
        string name = SignalName(fault.Signal);
        Options.Diagnostics.WriteLine($"revirt: guest killed by {name} at rip 0x{cpu.Rip:x} after {cpu.InstructionCount} instructions: {fault.Message}");
        Terminate(fault.Signal);
    }

    public void Terminate(int signal)
    {
        TerminatingSignal = signal;
        ExitStatus = 128 + signal;
        Exited = true;
        Current.Yield = true;
    }

    public static string SignalName(int sig) => sig switch
    {
        1 => "SIGHUP", 2 => "SIGINT", 3 => "SIGQUIT", 4 => "SIGILL", 5 => "SIGTRAP", 6 => "SIGABRT", 7 => "SIGBUS",
        8 => "SIGFPE", 9 => "SIGKILL", 10 => "SIGUSR1", 11 => "SIGSEGV", 12 => "SIGUSR2", 13 => "SIGPIPE",
        14 => "SIGALRM", 15 => "SIGTERM", 17 => "SIGCHLD", _ => $"signal {sig}",
    };

    // ---------------------------------------------------------------- ICpuHost

    public ulong ReadTimestampCounter(Cpu.Cpu cpu)
        => Boundary.Value(cpu.Tid, InputKind.Rdtsc, () => (ulong)System.Diagnostics.Stopwatch.GetTimestamp());

    public ulong ReadRandom(Cpu.Cpu cpu)
        => Boundary.Value(cpu.Tid, InputKind.Rdrand, () => BinaryPrimitives.ReadUInt64LittleEndian(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8)));

    public void Syscall(Cpu.Cpu cpu)
    {
        long nr = (long)cpu.R[Cpu.Cpu.RAX];
        long r;
        try
        {
            r = Dispatch(cpu, (int)nr, cpu.R[7], cpu.R[6], cpu.R[2], cpu.R[10], cpu.R[8], cpu.R[9]);
        }
        catch (GuestFaultException)
        {
            r = -Errno.EFAULT;
        }
        catch (ArgumentException)
        {
            r = -Errno.EFAULT;
        }
        catch (Exception e) when (Cpu.Cpu.IsDefect(e))
        {
            // a defect in the emulation of one syscall must not take the host process down
            Options.Diagnostics.WriteLine($"revirt: internal error in syscall {nr} at rip 0x{cpu.Rip:x}: {e.GetType().Name}: {e.Message}; returning -EINVAL");
            r = -Errno.EINVAL;
        }
        cpu.R[Cpu.Cpu.RAX] = (ulong)r;
    }

    long Unknown(Cpu.Cpu cpu, int nr)
    {
        if (_warnedSyscalls.Add(nr))
            Options.Diagnostics.WriteLine($"revirt: warning: unsupported syscall {nr} at rip 0x{cpu.Rip:x}: returning -ENOSYS");
        return -Errno.ENOSYS;
    }

    /// <summary>A host operation through the boundary; its memory writes are applied to the guest.</summary>
    HostResult Host(Cpu.Cpu cpu, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false)
    {
        var res = Boundary.Syscall(cpu.Tid, nr, perform, reexecuteOnReplay);
        foreach (var (addr, bytes) in res.Writes) Mem.Poke(addr, bytes);
        return res;
    }

    long HostValue(Cpu.Cpu cpu, int nr, Func<long> perform) => Host(cpu, nr, () => HostResult.Of(perform())).Value;

    /// <summary>Throws the guest fault (→ EFAULT) unless [addr, addr+len) is writable by the guest.</summary>
    void CheckWritable(ulong addr, ulong len)
    {
        if (len == 0) return;
        for (ulong pg = addr & ~GuestMemory.PageMask; pg < addr + len; pg += GuestMemory.PageSize)
        {
            var v = Mem.FindVma(Math.Max(pg, addr));
            if (v == null || (v.Prot & Prot.Write) == 0) throw new GuestFaultException(pg, true, v != null);
        }
    }

    string Path(ulong addr) => Mem.ReadCString(addr, 4096);
}
