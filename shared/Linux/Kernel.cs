using System.Buffers.Binary;
using System.Text;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Options of a virtual machine run.</summary>
public sealed class MachineOptions
{
    public string Root = "/";
    public string Program = "";
    public string[] Args = Array.Empty<string>();   // argv[1..]
    public string[]? Env;                          // null: the host's environment
    public string Cwd = "/";
    /// <summary>The guest's network: null (`--net host`) gives its sockets to the host; a virtual interface
    /// (`--net virtual`) serves its AF_INET sockets with the in-VM stack (Syscalls/VirtualNet.cs).</summary>
    public VirtualNetOptions? Net;
    /// <summary>Where VM diagnostics go (warnings about unknown syscalls, fatal signals): the process's stderr unless
    /// set. Console.Error is made at the first diagnostic, not with the options: making the console's writer (its
    /// encoding set-up) costs a run about 10 ms of CPU at start, and most runs never write a diagnostic.</summary>
    public TextWriter Diagnostics { get => _diagnostics ??= Console.Error; set => _diagnostics = value; }
    TextWriter? _diagnostics;
    /// <summary>Which executor runs guest code (the results are the same in every tier).</summary>
    public ExecutionTier Tier = ExecutionTier.Default;
    /// <summary>The default tier compiles hot regions on a compiler thread of its own while the guest goes on
    /// interpreting them (true), or on the guest's thread, which waits (false: which blocks run compiled is then a
    /// function of the guest's execution alone). The results are the same either way. Off by default: on the loaded
    /// 2-core host it was measured on, the background compiler cost CPU and wall time (docs/PERFORMANCE.md).</summary>
    public bool CompileInBackground;
    /// <summary>A clock read that follows a logged read of the same clock with no other syscall or asynchronous
    /// event between is answered from that read and the instructions run since (<see cref="Kernel"/>'s ClockRead), not
    /// from the host: one log record where a server's pair of reads around a request made two. Set by a recording
    /// (whose log header says so: <c>LogFlags.ClockReadsBetweenEvents</c>) and by its replays; off for `run`.</summary>
    public bool ClockReadsBetweenEvents;

    /// <summary>A copy of these options that runs <paramref name="tier"/> (the caller's options stay as they are).</summary>
    public MachineOptions WithTier(ExecutionTier tier)
    {
        var copy = (MachineOptions)MemberwiseClone();
        copy.Tier = tier;
        return copy;
    }

    /// <summary>The guest's environment: <see cref="Env"/>, or the host's as NAME=value strings in ordinal order
    /// (an order that does not depend on the host's hashing, so a recording and its replays agree).</summary>
    public string[] GuestEnvironment()
    {
        if (Env != null) return Env;
        var vars = Environment.GetEnvironmentVariables();
        var env = new string[vars.Count];
        int i = 0;
        foreach (System.Collections.DictionaryEntry e in vars) env[i++] = $"{e.Key}={e.Value}";
        Array.Sort(env, OrdinalOrder.Instance);
        return env;
    }

    /// <summary>Ordinal order (UTF-16 code units, as <see cref="StringComparer.Ordinal"/>) compared one unit at a time:
    /// the framework's ordinal comparison is vectorised code whose ReadyToRun code is rejected on an AVX2 host, so
    /// sorting the environment JIT-compiled it in every run; a few dozen short strings need no vectors.</summary>
    sealed class OrdinalOrder : IComparer<string>
    {
        public static readonly OrdinalOrder Instance = new();

        public int Compare(string? x, string? y)
        {
            if (x == null || y == null) return x == null ? (y == null ? 0 : -1) : 1;
            int n = Math.Min(x.Length, y.Length);
            for (int k = 0; k < n; k++)
                if (x[k] != y[k]) return x[k] - y[k];
            return x.Length - y.Length;
        }
    }

    /// <summary>argv: the program as given, then its arguments.</summary>
    public string[] Argv()
    {
        var argv = new string[1 + Args.Length];
        argv[0] = Program;
        Args.CopyTo(argv, 1);
        return argv;
    }
}

/// <summary>
/// The machine-wide part of the Linux ABI: the processes and their threads on one deterministic scheduler
/// (Scheduler.cs), host events (timers, signals sent from outside), the nondeterminism boundary, the syscall
/// table (Syscalls/), signal delivery (Signals.cs) and the run loop. Every host interaction goes through
/// <see cref="IBoundary"/>. Per-process state lives in <see cref="Process"/>, per-thread state in
/// <see cref="GuestThread"/>, descriptors in <see cref="FdTable"/> and <see cref="OpenFile"/>s.
/// </summary>
public sealed partial class Kernel : ICpuHost, IMachineFiles, IDisposable
{
    public const ulong StackTop = 0x7fff_ffff_f000;
    public const ulong StackSize = 8 * 1024 * 1024;
    public const ulong MmapTop = 0x7fff_f7ff_f000;
    public const ulong MmapBottom = 0x10000;

    public readonly IBoundary Boundary;
    public readonly GuestFs Fs;
    /// <summary>The paths the guest changed in its root since the machine started (what a snapshot for a replica with
    /// a root of its own carries).</summary>
    public readonly RootChanges Changes = new();
    public readonly MachineOptions Options;
    /// <summary>The machine's first process (its exit status is the machine's).</summary>
    public Process Init { get; private set; }
    public readonly List<Process> Processes = new();

    /// <summary>The machine has ended (its first process ended or it was killed).</summary>
    public bool Exited;
    public int ExitStatus;
    public int? TerminatingSignal;
    /// <summary>Syscalls already reported as unimplemented (made at the first one: a set of ints is JIT-compiled code).</summary>
    HashSet<int>? _warnedSyscalls;

    /// <summary>The user id the guest runs as (the host's, from the log at each image start).</summary>
    public uint Uid { get; private set; }

    /// <summary>The thread that is running.</summary>
    public GuestThread Current = null!;

    /// <summary>The running thread's process.</summary>
    public Process P => Current.Process;
    /// <summary>The running process's memory (the memory syscalls act on).</summary>
    public GuestMemory Mem => Current.Process.Mem;
    FdTable Fds => Current.Process.Fds;

    // ---------------------------------------------------------------- host events (timers, signals from outside)
    readonly HostEventQueue<PostedSignal> _hostEvents = new();
    /// <summary>Numbers the posts of host events and wake-ups across both queues (Interlocked), so that a stop takes
    /// a signal before a wake-up posted after it (<see cref="TryTakeWake"/>).</summary>
    long _postOrder;
    volatile bool _hostEventsPending;
    ulong _queuedEvents; // bit n: signal n is queued (Interlocked)

    public bool HostEventsPending => _hostEventsPending;

    readonly HostEventQueue<PostedWake> _wakes = new();
    /// <summary>Signalled whenever a host event is posted (an idle machine waits on it).</summary>
    readonly SemaphoreSlim _posted = new(0);

    /// <summary>The host side of blocking calls (registrations are made only inside host operations).</summary>
    public readonly HostWaiter Waiter;

    /// <summary>Called from the waiter's host thread: a parked thread's host wait ended. Like a signal from outside,
    /// the boundary places (and logs) the wake-up at the next block boundary of the running thread.</summary>
    void PostWake(int tid, uint seq)
    {
        _wakes.Enqueue(new PostedWake(tid, seq, Interlocked.Increment(ref _postOrder)));
        _hostEventsPending = true;
        StopRunning();
        _posted.Release();
    }

    /// <summary>
    /// Takes one posted wake-up (guest thread only), unless a host event posted before it is still queued: that one
    /// is taken first (<see cref="TryTakeHostEvent"/>). The host waiter posts the signals of the timers that were due
    /// before the wake-ups of the same pass, and a timer's signal must interrupt a wait before a thread woken after
    /// its expiry runs on (and, say, sends the data that would complete that wait).
    /// </summary>
    public bool TryTakeWake(out int tid, out uint seq)
    {
        if (!_wakes.TryPeek(out var head) || (_hostEvents.TryPeek(out var earlier) && earlier.Order < head.Order))
        {
            (tid, seq) = (0, 0);
            return false;
        }
        bool got = _wakes.TryDequeue(out var w);
        (tid, seq) = (w.Tid, w.Seq);
        if (got && _hostEvents.IsEmpty && _wakes.IsEmpty) ClearPending();
        return got;
    }

    /// <summary>A wake-up taken from the host (or from the log): the thread runs its call again if it still waits
    /// in that very wait (a wait that ended for another reason is not ended twice).</summary>
    public void Wake(int tid, uint seq)
    {
        _clockEpoch++;
        var t = _threads.FirstOrDefault(x => x.Tid == tid && !x.Dead);
        if (t != null && t.Parked && t.HostWait == seq) Unpark(t);
    }

    /// <summary>
    /// A backup that went live and goes on recording its log: every thread parked on one of the old primary's host
    /// waits gets a wake-up posted, which the recording places and logs like any other, so that a replay of the
    /// continued log runs those calls again at the same points (an unlogged <see cref="RenewHostWaits"/>
    /// would leave them parked there).
    /// </summary>
    public void PostRenewedHostWaits()
    {
        foreach (var t in _threads)
            if (t.Parked && t.HostWait != 0 && !t.Dead) PostWake(t.Tid, t.HostWait);
    }

    /// <summary>The machine has nothing to run: waits (live or recording) until a host event is posted. False when
    /// nothing can ever post one (no host wait, no timer, nobody waiting for a signal): a deadlock.</summary>
    public bool WaitForHostEvent()
    {
        while (!EventQueued() && !_interrupted)
        {
            // a thread became runnable meanwhile (a backup that just went live renews its host waits): run it
            if (_runnable > 0) return true;
            // a wait that ends now is posted after it stops counting as registered: look at the queues once more
            if (!MayBeWoken()) { bool any = EventQueued() || _interrupted; _interrupted = false; return any; }
            _posted.Wait(TimeSpan.FromMilliseconds(500));
        }
        _interrupted = false;
        return true;
    }

    volatile bool _interrupted;

    /// <summary>Ends an idle wait (<see cref="WaitForHostEvent"/>, or a wait for the virtual interface) without an event, so the boundary gets the guest
    /// thread at once (any thread): the boundary asked for something to be done at an instruction boundary.</summary>
    public void Interrupt()
    {
        _interrupted = true;
        _posted.Release();
    }

    /// <summary>Takes one posted host event where nothing is logged (a live run): a wake-up, a signal from outside
    /// or a preemption.</summary>
    public void TakeHostEvent(CpuT cpu)
    {
        if (TryTakeWake(out int tid, out uint seq)) { Wake(tid, seq); return; }
        if (!TryTakeHostEvent(out var sig)) return;
        if (sig != PreemptEvent) RaiseAsync(cpu, sig);
        else if (NextRunnable(cpu) is { } next) SwitchTo(cpu, next.Tid);
    }

    bool MayBeWoken()
        => Waiter.Any || TimersArmed
           || _threads.Any(t => t.Parked && t.ParkedNr is Nr.pause or Nr.rt_sigsuspend);

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
            if ((old & bit) != 0) { _hostEventsPending = true; StopRunning(); return; }
        } while (Interlocked.CompareExchange(ref _queuedEvents, old | bit, old) != old);
        _hostEvents.Enqueue(new PostedSignal(sig, Interlocked.Increment(ref _postOrder)));
        _hostEventsPending = true;
        StopRunning();
        _posted.Release();
    }

    /// <summary>Asks the running thread (from any host thread) to stop at its next block boundary.</summary>
    void StopRunning()
    {
        var c = Volatile.Read(ref Current);
        if (c != null) c.Cpu.StopAt = 0;
    }

    /// <summary>Takes one queued host event. One event per stop, so that each is delivered (and, when recording,
    /// logged) at a position of its own: the next one is placed after the guest entered the previous handler.</summary>
    public bool TryTakeHostEvent(out int sig)
    {
        ClearPending();
        bool got = _hostEvents.TryDequeue(out var posted);
        sig = posted.Sig;
        if (got)
        {
            ulong bit = 1UL << (sig & 63), old;
            do old = Interlocked.Read(ref _queuedEvents);
            while (Interlocked.CompareExchange(ref _queuedEvents, old & ~bit, old) != old);
        }
        if (!_hostEvents.IsEmpty || !_wakes.IsEmpty) _hostEventsPending = true;
        return got;
    }

    /// <summary>
    /// Clears the pending flag unless an event is queued. A wake-up or signal the host posts meanwhile must not be
    /// lost: an idle machine that saw no pending event and no registered wait would end the guest as deadlocked.
    /// The poster queues and then sets the flag; here the flag is cleared, a full fence orders that store before
    /// the queues are read again (x86 may otherwise let the read pass the store, and an event queued in between
    /// would be left with the flag cleared), and the flag is set again if anything is queued.
    /// </summary>
    void ClearPending()
    {
        _hostEventsPending = false;
        Interlocked.MemoryBarrier();
        if (!_hostEvents.IsEmpty || !_wakes.IsEmpty) _hostEventsPending = true;
    }

    /// <summary>An event is queued or flagged (what an idle machine waits for).</summary>
    bool EventQueued()
    {
        if (HostEventsPending) return true;
        if (_hostEvents.IsEmpty && _wakes.IsEmpty) return false;
        _hostEventsPending = true;
        return true;
    }

    /// <summary>What the machine derived from program files, shared by its processes (see <see cref="ImageCache"/>).</summary>
    public ImageCache Images { get; } = new();

    /// <summary>
    /// Gives back every host resource the machine holds whether or not its guest ran to the end: the root
    /// descriptor, the host-wait thread and its eventfd, timers, the virtual NIC, guest memory and the
    /// images shared by its processes. A process that
    /// builds many machines (a replay check per recording, the fuzzer, the tests) must not run out of descriptors.
    /// </summary>
    public void Dispose()
    {
        StopTimers();
        StopSliceTimer();
        Waiter.Dispose();
        Nic?.Dispose();
        foreach (var p in Processes) p.Mem.Dispose();
        Images.Dispose();
        // last: the address spaces and the image cache above read the start program's bytes until they are gone
        ((IDisposable?)_startImage)?.Dispose();
        Fs.Dispose();
    }

    public Kernel(MachineOptions options, IBoundary boundary)
    {
        Options = options;
        Boundary = boundary;
        Fs = new GuestFs(options.Root);
        Waiter = new HostWaiter(PostWake);
        var mem = new GuestMemory();
        var fds = new FdTable();
        for (int fd = 0; fd < 3; fd++) fds.InstallAt(fd, new StdioFile(fd), cloexec: false);
        Init = new Process(mem, NewCodeCache(mem), fds, options.Cwd);
        Processes.Add(Init);
        var main = new GuestThread(new CpuT(Init.Mem, Init.Code, this), Init);
        AddThread(main);
        Current = main;
    }

    /// <summary>The first process's main thread.</summary>
    public GuestThread MainThread => Init.MainThread;

    /// <summary>Processes that ended and that their parents have not reaped yet.</summary>
    public IEnumerable<Process> Zombies => Processes.SelectMany(p => p.Children).Where(c => c.Exited);

    /// <summary>Every thread of every process, in creation order within each process.</summary>
    public IEnumerable<GuestThread> AllThreads => Processes.SelectMany(p => p.Threads);

    // ---------------------------------------------------------------- IMachineFiles

    public IEnumerable<(int Fd, OpenFile File)> Descriptors => Processes.SelectMany(p => p.Fds.Entries);

    GuestFs IMachineFiles.Fs => Fs;

    public void Replace(OpenFile old, OpenFile replacement)
    {
        foreach (var p in Processes)
        {
            p.Fds.Replace(old, replacement);
            foreach (var ep in p.Fds.Files.OfType<EpollFile>())
                foreach (var e in ep.Entries.Values)
                    if (ReferenceEquals(e.File, old)) e.File = replacement;
        }
    }

    // ---------------------------------------------------------------- start-up

    /// <summary>
    /// Finds the program as execve would after a shell's PATH search: a name without '/' is looked up in the
    /// guest's PATH under the root. Returns the guest path and the host path of the file.
    /// </summary>
    public static StartProgram ResolveProgram(MachineOptions o) => ResolveProgram(o, hash: null);

    /// <summary><see cref="ResolveProgram(MachineOptions)"/>, appending the image's bytes to <paramref name="hash"/> as
    /// they are read (a recording's program hash: <see cref="ProgramFile.ReadAll"/>). <paramref name="native"/>: a large
    /// program is read into a <see cref="NativeImage"/> (<see cref="ProgramFile.ReadImage"/>), which the caller owns and
    /// disposes after the machine that runs it.</summary>
    public static StartProgram ResolveProgram(MachineOptions o, Log.Xxh128? hash, bool native = false)
    {
        using var fs = new GuestFs(o.Root);
        return native ? ResolveProgram(o, fs, (f, path) => ProgramFile.ReadImage(f, path, path, hash: hash))
            : ResolveProgram(o, fs, (f, path) => ProgramFile.ReadAll(f, path, path, hash: hash));
    }

    /// <summary>The start program's bytes when the machine read them itself (<see cref="Load"/> without a program) and
    /// they are in native memory: the machine owns them and frees them last in <see cref="Dispose"/>. (A program
    /// resolved by the caller, as a recording does to hash it first, stays an array the collector frees.)</summary>
    NativeImage? _startImage;

    /// <summary><see cref="ResolveProgram(MachineOptions)"/> through a machine's own view of the root (a second
    /// root descriptor and openat2 probe spared on the start path); `read` reads the guest path found (also the name
    /// its errors give).</summary>
    static StartProgram ResolveProgram(MachineOptions o, GuestFs fs, Func<GuestFs, string, ReadOnlyMemory<byte>> read)
    {
        var candidates = new List<string>();
        if (o.Program.Contains('/')) candidates.Add(o.Program.StartsWith('/') ? o.Program : GuestFs.Join(o.Cwd, o.Program));
        else
        {
            string? path = null;
            foreach (var e in o.GuestEnvironment())
                if (e.StartsWith("PATH=", StringComparison.Ordinal)) { path = e[5..]; break; }
            foreach (var dir in (path ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
                candidates.Add(GuestFs.Join(dir, o.Program));
        }
        foreach (var c in candidates)
        {
            string? kind = ProgramFile.Kind(fs, c);
            if (kind == null || (kind == "directory" && candidates.Count > 1)) continue; // a PATH search skips directories
            if (kind != "regular file") throw new ElfLoadException(kind == "directory" ? $"{c}: is a directory" : $"{c}: is a {kind}, not a regular file");
            // read through the root descriptor and checked again on the open descriptor (a swap since is refused)
            return new StartProgram(c, read(fs, c));
        }
        throw ElfLoadException.NotFound(o.Program);
    }

    /// <summary>Loads the program and builds the initial stack. The program's bytes are the machine's start
    /// state (a recording stores their hash and a replay checks it), not a nondeterministic input.</summary>
    public void Load(StartProgram? program = null)
    {
        var p = Init;
        if (program == null)
        {
            program = ResolveProgram(Options, Fs, static (f, path) => ProgramFile.ReadImage(f, path, path));
            _startImage = NativeImage.Of(program.Image);
        }
        var pidResult = Boundary.Syscall(0, Nr.getpid, () => HostResult.Of(Environment.ProcessId));
        p.Pid = p.Pgid = p.Sid = (int)pidResult.Value;
        p.MainThread.Cpu.Tid = p.Pid;
        _nextTid = p.Pid;
        // the start program's bytes serve later execs of the same file (a shell running itself) when it is stable
        if (StatOf(program.GuestPath) is { } st && ImageCache.FileIdentity.OfStable(st) is { } id) Images.Add(id, program.Image);
        p.Start = ProgramLoader.Load(p.Mem, Fs, Boundary, p.Pid, program.GuestPath, program.Image, Options.Argv(), Images);
        p.Program = p.Start.Program;
        p.ProgramGuestPath = p.Start.BinaryPath;
        p.BrkStart = p.BrkCur = p.Program.BrkStart;
        p.Mem.Map(StackTop - StackSize, StackSize, Prot.Read | Prot.Write, "[stack]");
        var random = Boundary.Bytes(p.Pid, InputKind.StartupRandom, 16, () => HostSys.RandomBytes(16));
        var env = Options.GuestEnvironment();
        BuildStack(p, env, random);
        p.MainThread.Cpu.Rip = p.Start.StartRip;
    }

    /// <summary>The initial stack of a new image (<see cref="Process.Start"/>): strings, AT_RANDOM bytes, argv,
    /// envp, auxv.</summary>
    void BuildStack(Process proc, IReadOnlyList<string> env, byte[] random)
    {
        var mem = proc.Mem;
        var start = proc.Start;
        proc.Environment = env.ToArray();
        ulong sp = StackTop;
        ulong PushBytes(byte[] b) { sp -= (ulong)b.Length; mem.WriteBytes(sp, b); return sp; }
        ulong PushStr(string s) => PushBytes(Encoding.UTF8.GetBytes(s + "\0"));
        ulong execfn = PushStr(start.ExecPath);
        var envPtrs = new ulong[env.Count];
        for (int i = 0; i < envPtrs.Length; i++) envPtrs[i] = PushStr(env[i]);
        var argPtrs = new ulong[start.Argv.Length];
        for (int i = 0; i < argPtrs.Length; i++) argPtrs[i] = PushStr(start.Argv[i]);
        ulong platform = PushStr("x86_64");
        sp &= ~15UL;
        ulong rnd = PushBytes(random);
        sp &= ~15UL;
        // uid/gid entries are the host's: filled through the boundary with getuid etc.
        ulong uid = (ulong)Boundary.Syscall(proc.Pid, Nr.getuid, () => HostResult.Of((long)HostSys.Call(Nr.getuid))).Value;
        ulong gid = (ulong)Boundary.Syscall(proc.Pid, Nr.getgid, () => HostResult.Of((long)HostSys.Call(Nr.getgid))).Value;
        Uid = (uint)uid;
        var aux = ProgramLoader.AuxVector(start, platform, rnd, execfn, uid, gid);
        proc.Auxv = aux;
        int words = 1 + argPtrs.Length + 1 + envPtrs.Length + 1 + aux.Length;
        sp -= (ulong)words * 8;
        sp &= ~15UL;
        ulong p = sp;
        void W(ulong v) { mem.Write64(p, v); p += 8; }
        W((ulong)argPtrs.Length);
        foreach (var a in argPtrs) W(a);
        W(0);
        foreach (var e in envPtrs) W(e);
        W(0);
        foreach (var v in aux) W(v);
        proc.MainThread.Cpu.R[CpuT.RSP] = sp;
    }

    // ---------------------------------------------------------------- running

    /// <summary>Where the host's CPU time goes during <see cref="Run"/> (null, the default: not measured). Set before Run.</summary>
    public HostWorkAccount? WorkAccount { get; set; }

    /// <summary>Runs the guest until it exits or is killed by a signal; returns the process exit status.</summary>
    public int Run()
    {
        var account = WorkAccount;
        account?.Begin();
        // a machine restored from a snapshot goes on with the thread that was running when it was taken
        if (!_restored) Current = MainThread;
        while (!Exited)
        {
            var t = Current;
            if (!t.CanRun)
            {
                Schedule(); // switches, waits for the host while every thread waits, or ends a deadlocked guest
                continue;
            }
            var cpu = t.Cpu;
            cpu.StopAt = Boundary.NextStop(this, cpu);
            // A host event posted while NextStop decided (it saw none pending) lowered StopAt to 0 before the store
            // above overwrote it; the event would then wait for the next checkpoint, and a SIGINT to a guest that ends
            // first was lost. The poster sets the pending flag before it lowers StopAt, so with a full fence between
            // our store and our second read of the flag, either that read sees the flag or the poster's 0 lands after
            // our store. (The boundary decides again: a replay's stops come from its log, not from host events.)
            Interlocked.MemoryBarrier();
            if (HostEventsPending) cpu.StopAt = Boundary.NextStop(this, cpu);
            RunResult r;
            if (account == null) r = cpu.Run();
            else
            {
                long at = HostWorkAccount.ThreadNow();
                r = cpu.Run();
                account.InExecutionLoopNs += HostWorkAccount.ThreadNow() - at;
                account.LoopEntries++;
            }
            if (t.Cpu != cpu)
            {
                // execve gave the thread a new CPU during this run: it continues the machine's counts
                t.Cpu.InstructionCount = cpu.InstructionCount;
                t.Cpu.BranchCount = cpu.BranchCount;
            }
            if (r == RunResult.Fault) HandleFault(t, cpu.PendingFault!);
            else if (r == RunResult.ReachedStop) Boundary.AtStop(this, cpu);
            // signals are taken only where record and replay both stop: after a syscall, a yield or a fault, or a
            // stop at which the boundary raised one (a stop that ended up doing nothing is in no log)
            bool deterministicPoint = r != RunResult.ReachedStop || cpu.Yield;
            if (!Exited && deterministicPoint && Current == t && (t.Process.Pending & ~t.SigMask) != 0) DeliverPending(t);
            if (!Exited && (_switch || !t.CanRun)) Schedule();
        }
        StopTimers();
        StopSliceTimer();
        Waiter.Dispose();
        foreach (var proc in Processes) proc.Files.ExitAll(this, Current.Tid);
        LingerNetwork();
        Boundary.OnExit(this, Current.Cpu, ExitStatus);
        account?.End();
        return ExitStatus;
    }

    void HandleFault(GuestThread t, GuestSignalException fault)
    {
        if (TryDeliverSignal(t, fault.Signal, fault.Code, fault.FaultAddress)) return;
        if (t.Process == Init)
            Options.Diagnostics.WriteLine($"revirt: guest killed by {Sig.Name(fault.Signal)} at rip 0x{t.Cpu.Rip:x} after {t.Cpu.InstructionCount} instructions: {fault.Message}");
        KillProcess(t.Process, fault.Signal);
    }

    /// <summary>Ends the machine as if its process were killed by the signal.</summary>
    public void Terminate(int signal)
    {
        TerminatingSignal = signal;
        ExitStatus = 128 + signal;
        Exited = true;
        Current.Cpu.Yield = true;
    }

    /// <summary>The process ended with exit_group (or the exit of its last thread).</summary>
    void ExitProcess(GuestThread t, int status) => EndProcess(t.Process, (status & 0xFF) << 8);

    public static string SignalName(int sig) => Sig.Name(sig);

    // ---------------------------------------------------------------- ICpuHost

    public ulong ReadTimestampCounter(CpuT cpu)
        => Boundary.Value(cpu.Tid, InputKind.Rdtsc, () => (ulong)System.Diagnostics.Stopwatch.GetTimestamp());

    public ulong ReadRandom(CpuT cpu)
        => Boundary.Value(cpu.Tid, InputKind.Rdrand, () => BinaryPrimitives.ReadUInt64LittleEndian(HostSys.RandomBytes(8)));

    /// <summary>The guest's syscalls by number and how often they parked (`--stats`).</summary>
    public SyscallCounts SyscallStats { get; } = new();

    public void Syscall(CpuT cpu)
    {
        if (WorkAccount is not { } account)
        {
            TakeSyscall(cpu);
            return;
        }
        long at = HostWorkAccount.ThreadNow();
        try { TakeSyscall(cpu); }
        finally
        {
            account.InSyscallsNs += HostWorkAccount.ThreadNow() - at;
            account.Syscalls++;
        }
    }

    void TakeSyscall(CpuT cpu)
    {
        var t = Current; // the CPU that makes a syscall is the running thread's
        long nr = (long)cpu.R[CpuT.RAX];
        // every other syscall may take time or let other work run: a clock read after it asks the host again
        if (nr != Nr.clock_gettime && nr != Nr.gettimeofday) _clockEpoch++;
        long r;
        SyscallStats.Entered(nr);
        try
        {
            r = Dispatch(t, new SyscallArgs((int)nr, cpu.R[7], cpu.R[6], cpu.R[2], cpu.R[10], cpu.R[8], cpu.R[9]));
            if (r == Restart || r == WouldBlock)
            {
                // the call waits: the thread parks at the syscall instruction and runs it again when woken, by a
                // change in the VM (Restart: only guest actions, so nothing is logged) or by the end of its host
                // wait (WouldBlock: a logged wake-up)
                cpu.Rip -= SyscallInsnLength;
                SyscallStats.Parked(nr);
                Park(t, (int)nr, inVm: r == Restart || t.AlsoWaitsInVm, onHost: r == WouldBlock);
                t.AlsoWaitsInVm = false;
                return;
            }
            EndCall(t);
        }
        catch (GuestFaultException)
        {
            r = -Errno.EFAULT;
        }
        catch (ArgumentException)
        {
            r = -Errno.EFAULT;
        }
        catch (Exception e) when (CpuT.IsDefect(e))
        {
            // a defect in the emulation of one syscall must not take the host process down
            Options.Diagnostics.WriteLine($"revirt: internal error in syscall {Nr.Describe((int)nr)} at rip 0x{cpu.Rip:x}: {e.GetType().Name}: {e.Message}; returning -EINVAL");
            r = -Errno.EINVAL;
        }
        cpu.R[CpuT.RAX] = (ulong)r;
    }

    /// <summary>What a handler returns to park the calling thread until the VM's state changes; the syscall then
    /// runs again from the start (nothing it did before parking is visible).</summary>
    internal const long Restart = long.MinValue;
    /// <summary>What a host operation answers (after registering the wait with <see cref="BlockOnHost"/>) when the
    /// call would have to wait on the host: the answer is logged, the thread parks and a logged wake-up
    /// (<see cref="Wake"/>) runs the call again. Linux's internal ERESTARTSYS, never seen by a guest.</summary>
    public const long WouldBlock = -512;

    /// <summary>Inside a host operation: registers the calling thread's wait (its next wait number) and answers
    /// <see cref="WouldBlock"/>.</summary>
    internal HostResult BlockOnHost(GuestThread t, HostWaitSpec wait)
    {
        Waiter.Add(t.Tid, t.WaitSeq + 1, wait);
        return HostResult.Of(WouldBlock);
    }

    /// <summary>
    /// Inside a host operation: the deadline of a timed wait (a sleep, a poll's timeout, a timed futex wait) on the
    /// host's monotonic clock, fixed at the call's first attempt and kept across its attempts. A replica that went
    /// live in the middle of the wait has no deadline of its own yet: it continues to the one the log gave
    /// (<see cref="GuestThread.LoggedDeadline"/>), so a takeover does not restart a sleep.
    /// </summary>
    internal static long DeadlineOf(GuestThread t, Func<long> fresh)
        => t.HostDeadline ??= t.LoggedDeadline is long rt ? HostClock.NowNs() + (rt - HostClock.Now(Clocks.REALTIME)) : fresh();

    /// <summary>Inside a host operation: registers a timed wait (<see cref="BlockOnHost"/>) and logs its deadline with
    /// the answer, as a point of CLOCK_REALTIME (the clock replicas on different machines share): a side value the
    /// kernel keeps in <see cref="GuestThread.LoggedDeadline"/>.</summary>
    internal HostResult BlockUntil(GuestThread t, (int Fd, short Events)[] fds, long deadlineNs)
    {
        var res = BlockOnHost(t, new HostWaitSpec(fds, deadlineNs));
        if (deadlineNs != HostWaitSpec.Never)
            res.Write(0, BitConverter.GetBytes(HostClock.Now(Clocks.REALTIME) + (deadlineNs - HostClock.NowNs())));
        return res;
    }

    /// <summary>Inside a host operation: null when a call on the description may go ahead without waiting (it does
    /// not block, or the host descriptor is ready for `events`); otherwise the wait is registered and the answer
    /// is <see cref="WouldBlock"/>.</summary>
    internal long? WouldWait(GuestThread t, OpenFile f, short events, bool nonBlocking = false)
    {
        if (nonBlocking || (f.StatusFlags & O.NONBLOCK) != 0 || f.HostFd < 0 || HostFileType(f) is SMode.IFREG or SMode.IFDIR
            || HostReady(f.HostFd, events)) return null;
        // the host description may be non-blocking without the guest having said so here (SOCK_NONBLOCK of a
        // socketpair, a terminal another program shares): then the operation answers EAGAIN itself
        if ((HostSys.Call(Nr.fcntl, f.HostFd, F.GETFL) & O.NONBLOCK) != 0) return null;
        return BlockOnHost(t, new HostWaitSpec([(f.HostFd, events)], t.HostDeadline ?? HostWaitSpec.Never)).Value;
    }

    /// <summary>Is a host descriptor ready now for any of the events (or in error or hung up)?</summary>
    static unsafe bool HostReady(int fd, short events)
    {
        long* pfd = stackalloc long[1];
        *(int*)pfd = fd;
        ((short*)pfd)[2] = events;
        ((short*)pfd)[3] = 0;
        return HostSys.Call(Nr.poll, (long)pfd, 1, 0) != 0;
    }

    /// <summary>A call ended (it returned to the guest): what its waits kept is dropped.</summary>
    static void EndCall(GuestThread t)
    {
        t.PendingOpen?.Abandon();
        t.PendingOpen = null;
        t.HostDeadline = null;
        t.LoggedDeadline = null;
        t.PartialDone = 0;
        t.AlsoWaitsInVm = false;
        t.FutexTimed = false;
        t.FutexWoken = false;
    }
    /// <summary>Length of the syscall instruction (0F 05): a parked thread's rip goes back over it.</summary>
    const ulong SyscallInsnLength = 2;

    /// <summary>A syscall the VM does not implement: -ENOSYS and a one-line warning naming it (once per syscall).</summary>
    internal long Unknown(GuestThread t, int nr)
    {
        if ((_warnedSyscalls ??= new()).Add(nr))
            Options.Diagnostics.WriteLine($"revirt: warning: unsupported syscall {Nr.Describe(nr)} at rip 0x{t.Cpu.Rip:x}: returning -ENOSYS");
        return -Errno.ENOSYS;
    }

    /// <summary>A host operation through the boundary; its memory writes are applied to the guest.</summary>
    internal HostResult Host(CpuT cpu, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false)
    {
        var res = Boundary.Syscall(cpu.Tid, nr, perform, reexecuteOnReplay);
        foreach (var (addr, bytes) in res.Writes)
        {
            // a side value at address 0: the deadline of the timed wait the call parks in (<see cref="BlockUntil"/>)
            if (addr == 0) { if (res.Value == WouldBlock && bytes.Length == 8) Current.LoggedDeadline = BitConverter.ToInt64(bytes); }
            else Mem.Poke(addr, bytes);
        }
        return res;
    }

    internal long HostValue(CpuT cpu, int nr, Func<long> perform) => Host(cpu, nr, () => HostResult.Of(perform())).Value;

    /// <summary>Throws the guest fault (→ EFAULT) unless [addr, addr+len) is writable by the guest.</summary>
    internal void CheckWritable(ulong addr, ulong len)
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
