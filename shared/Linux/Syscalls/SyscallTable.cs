namespace ReVirt.Linux;

/// <summary>The number and arguments of one syscall (rdi, rsi, rdx, r10, r8, r9).</summary>
public readonly record struct SyscallArgs(int Nr, ulong A1, ulong A2, ulong A3, ulong A4, ulong A5, ulong A6);

/// <summary>Runs one syscall for the thread that made it; returns the value for rax (a value or -errno).</summary>
public delegate long SyscallHandler(GuestThread t, SyscallArgs a);

/// <summary>What kind of syscall an entry is (for diagnostics and tests; the handler decides what happens).</summary>
[Flags]
public enum SyscallFlags
{
    None = 0,
    /// <summary>Asks the host (its answer crosses the boundary and is logged).</summary>
    Host = 1,
    /// <summary>Answered by the VM alone (ids, signals, memory, the scheduler).</summary>
    Emulated = 2,
}

/// <summary>One syscall the VM implements.</summary>
public sealed record SyscallEntry(int Nr, SyscallHandler Handler, SyscallFlags Flags)
{
    /// <summary>The syscall's name, looked up when asked for (diagnostics, statistics): <see cref="ReVirt.Linux.Nr"/>'s table
    /// of names is made by reflection over its constants, which cost every machine's first syscall several ms of
    /// CPU when every entry was named at registration.</summary>
    public string Name => ReVirt.Linux.Nr.Name(Nr);
}

/// <summary>
/// Syscall number → name, handler and flags. Each family registers its handlers from its own file
/// (Syscalls/Process.cs, Files.cs, Net.cs, ...); a number without an entry is answered -ENOSYS with a warning
/// that names it. Dispatch is one array index.
/// </summary>
public sealed class SyscallTable
{
    readonly SyscallEntry?[] _entries = new SyscallEntry?[Nr.Max + 1];

    SyscallFlags _family;

    /// <summary>The flags of the entries a family registers next (unless an entry gives its own).</summary>
    public void Family(SyscallFlags flags) => _family = flags;

    public void Add(int nr, SyscallHandler handler, SyscallFlags flags = SyscallFlags.None)
    {
        if (_entries[nr] != null) throw new InvalidOperationException($"syscall {Nr.Name(nr)} registered twice");
        _entries[nr] = new SyscallEntry(nr, handler, flags == SyscallFlags.None ? _family : flags);
    }

    public void Add(int[] nrs, SyscallHandler handler, SyscallFlags flags = SyscallFlags.None)
    {
        foreach (var nr in nrs) Add(nr, handler, flags);
    }

    /// <summary>Puts a handler in front of a registered one: <paramref name="wrap"/> gets the registered handler
    /// and returns the one that answers from now on (it decides when to hand the call on).</summary>
    public void Wrap(int nr, Func<SyscallHandler, SyscallHandler> wrap)
    {
        var e = _entries[nr] ?? throw new InvalidOperationException($"syscall {Nr.Name(nr)} is not registered");
        _entries[nr] = e with { Handler = wrap(e.Handler) };
    }

    public SyscallEntry? this[int nr] => (uint)nr < (uint)_entries.Length ? _entries[nr] : null;

    /// <summary>Every implemented syscall in number order.</summary>
    public IEnumerable<SyscallEntry> Entries => _entries.Where(e => e != null)!;
}

public sealed partial class Kernel
{
    /// <summary>The syscalls this kernel implements.</summary>
    public SyscallTable Syscalls => _syscalls ??= BuildSyscallTable();
    SyscallTable? _syscalls;

    SyscallTable BuildSyscallTable()
    {
        var r = new SyscallTable();
        RegisterProcessSyscalls(r);
        RegisterFutexSyscalls(r);
        RegisterMemorySyscalls(r);
        RegisterSignalSyscalls(r);
        RegisterTimeSyscalls(r);
        RegisterTimerSyscalls(r);
        RegisterFileSyscalls(r);
        RegisterNetSyscalls(r);
        RegisterVirtualNetSyscalls(r);
        RegisterCallMasks(r); // outermost: the mask holds for every way the call is answered
        return r;
    }

    long Dispatch(GuestThread t, SyscallArgs a)
        => Syscalls[a.Nr] is { } e ? e.Handler(t, a) : Unknown(t, a.Nr);
}
