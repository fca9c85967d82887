using ReVirt.Abi;
using ReVirt.Memory;
using ReVirt.Cpu;

namespace ReVirt.Linux;

/// <summary>What a SIGCHLD reports (its siginfo): CLD_EXITED, CLD_KILLED, CLD_STOPPED or CLD_CONTINUED, the child,
/// and its exit code or signal.</summary>
public sealed record ChildEvent(int Code, int Pid, int Status);

/// <summary>A signal's disposition (struct k_sigaction).</summary>
public sealed class SigAction { public ulong Handler, Flags, Restorer, Mask; }

/// <summary>
/// A guest process: its address space and decoded code, its descriptor table, working directory, umask, program
/// break, signal dispositions and process-directed pending signals, its ids, its threads and children, and how
/// it ended. Everything here belongs to one process; the machine-wide parts (scheduler, host events, the
/// boundary) are the <see cref="Kernel"/>'s.
/// </summary>
public sealed class Process
{
    public GuestMemory Mem { get; internal set; }
    public CodeCache Code { get; internal set; }
    public readonly FdTable Fds;
    public string Cwd;
    public int Umask = 0x12;
    public ulong BrkStart, BrkCur;

    public int Pid, Ppid, Pgid, Sid;
    public Process? Parent;
    public readonly List<Process> Children = new();

    /// <summary>Threads of this process, the main thread first.</summary>
    public readonly List<GuestThread> Threads = new();

    public readonly SigAction[] Actions = NewActions();
    /// <summary>Pending process-directed signals (bit n-1 for signal n), delivered to a thread that does not block them.</summary>
    public ulong Pending;

    static SigAction[] NewActions()
    {
        var a = new SigAction[Sig.Max + 1];
        for (int i = 0; i < a.Length; i++) a[i] = new SigAction();
        return a;
    }

    /// <summary>The program image it runs (its bytes are the machine's start state).</summary>
    public LoadedProgram Program = null!;
    public ReadOnlyMemory<byte> ProgramImage = Array.Empty<byte>();
    public string ProgramGuestPath = "";
    /// <summary>What execve loaded (program, interpreter, argv).</summary>
    public StartImage Start = null!;
    /// <summary>The auxiliary vector as key, value pairs (for /proc/self/auxv).</summary>
    public ulong[] Auxv = Array.Empty<ulong>();
    /// <summary>The environment the program started with (for /proc/self/environ).</summary>
    public string[] Environment = Array.Empty<string>();
    /// <summary>File mappings: shared ones are written back.</summary>
    public readonly FileMappings Files = new();
    /// <summary>PR_SET_NAME.</summary>
    public string Name = "";

    /// <summary>The process has ended (a zombie until its parent reaps it).</summary>
    public bool Exited;
    /// <summary>Stopped by a stop signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) until a SIGCONT: none of its threads runs.</summary>
    public bool Stopped;
    /// <summary>What its parent's wait has yet to hear: the signal that stopped it (WUNTRACED/WSTOPPED; 0: nothing), or
    /// that it was continued (WCONTINUED).</summary>
    public int StopReport;
    public bool ContinueReport;
    /// <summary>The siginfo of its pending SIGCHLD (the first child event since it was last delivered).</summary>
    public ChildEvent? ChildSignal;
    /// <summary>Its wait status (exit code &lt;&lt; 8, or the terminating signal).</summary>
    public int WaitStatus;
    /// <summary>The signal its parent gets when it ends (clone's low byte; SIGCHLD for fork).</summary>
    public int ExitSignal = Sig.CHLD;
    /// <summary>PR_SET_PDEATHSIG: the signal it gets when its parent ends (0: none; not inherited by fork).</summary>
    public int DeathSignal;

    /// <summary>Instructions its threads retired (its CPU time, <see cref="Kernel.NominalInstructionsPerSecond"/>),
    /// and the same for its reaped children and their descendants; largest resident sets in pages.</summary>
    public ulong Instructions, ChildInstructions;
    public long MaxRssPages, ChildMaxRssPages;

    public Process(GuestMemory mem, CodeCache code, FdTable fds, string cwd)
    {
        Mem = mem;
        Code = code;
        Fds = fds;
        Cwd = cwd;
    }

    public GuestThread MainThread => Threads[0];
}
