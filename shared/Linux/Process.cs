using ReVirt.Abi;
using ReVirt.Memory;
using ReVirt.Cpu;

namespace ReVirt.Linux;

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
    public readonly GuestMemory Mem;
    public readonly CodeCache Code;
    public readonly FdTable Fds;
    public string Cwd;
    public int Umask = 0x12;
    public ulong BrkStart, BrkCur;

    public int Pid, Ppid, Pgid, Sid;
    public Process? Parent;
    public readonly List<Process> Children = new();

    /// <summary>Threads of this process, the main thread first.</summary>
    public readonly List<GuestThread> Threads = new();

    public readonly SigAction[] Actions = Enumerable.Range(0, Sig.Max + 1).Select(_ => new SigAction()).ToArray();
    /// <summary>Pending process-directed signals (bit n-1 for signal n), delivered to a thread that does not block them.</summary>
    public ulong Pending;

    /// <summary>The program image it runs (its bytes are the machine's start state).</summary>
    public LoadedProgram Program = null!;
    public byte[] ProgramImage = Array.Empty<byte>();
    public string ProgramGuestPath = "";
    /// <summary>PR_SET_NAME.</summary>
    public string Name = "";

    public bool Exited;
    public int ExitStatus;
    public int? TerminatingSignal;

    public Process(GuestMemory mem, CodeCache code, FdTable fds, string cwd)
    {
        Mem = mem;
        Code = code;
        Fds = fds;
        Cwd = cwd;
    }

    public GuestThread MainThread => Threads[0];
}
