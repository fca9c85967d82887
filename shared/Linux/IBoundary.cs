using ReVirt.Abi;
using ReVirt.Log;
namespace ReVirt.Linux;

/// <summary>
/// What a host operation produced: the syscall's return value and the bytes it put into guest memory.
/// Host operations never write guest memory themselves; the boundary applies <see cref="Writes"/> so that the
/// same bytes can be logged when recording and supplied from the log when replaying.
/// </summary>
public sealed class HostResult
{
    public long Value;
    /// <summary>The writes in order, made when the first one is added: most results carry none (a send, a poll that
    /// finds nothing, a close), and a replay answers hundreds of thousands of calls a second. A list of objects, not of
    /// (address, bytes) tuples: the framework's generic code over a tuple holding a ulong has no ReadyToRun code and
    /// was JIT-compiled (13 methods) at the first syscall of every run.</summary>
    List<GuestWrite>? _writes;
    /// <summary>The bytes to put into guest memory, in order (read them before the result changes again).</summary>
    public ReadOnlySpan<GuestWrite> Writes => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_writes);
    /// <summary>The writes as a log record's <see cref="SyscallResult.MemWrites"/> takes them (null: none): the result's own
    /// list, not a copy, for a record encoded at once (the writer keeps nothing of it).</summary>
    internal List<GuestWrite>? WritesToLog => _writes is { Count: > 0 } w ? w : null;
    /// <summary>A following backup re-executed the operation on its own host (reexecuteOnReplay): what its host
    /// answered (e.g. its own descriptor), while <see cref="Value"/> is the logged answer the guest sees.</summary>
    public long? Local;
    /// <summary>Set by a <see cref="IBoundary.FileContent"/> operation: the single write holds the unchanged content
    /// of a stable regular file (<see cref="FileRef.IsStable"/>), which a recording may log by reference.</summary>
    public bool ByReference;
    /// <summary>Set with <see cref="ByReference"/> on a read whose own bytes were not proven to come from the unchanged
    /// file (only the description's first read is checked on its own: <see cref="ContentReads"/>): a boundary that logs
    /// it by reference must ask this check after the read and before it logs, flushes or ships anything that follows
    /// the read, and log the read by value when the check fails (<see cref="Log.LogWriter.AppendContentRead"/> does).</summary>
    public Log.IContentSourceCheck? SourceCheck;
    /// <summary>Set by a <see cref="IBoundary.FileContent"/> operation that read its bytes straight into guest memory:
    /// the <see cref="Value"/> bytes at this address are the content (no <see cref="Writes"/>), and a boundary that
    /// logs the content takes it from there.</summary>
    public ulong? InGuest;
    public static HostResult Of(long value) => new() { Value = value };
    /// <summary>An answer taken from a log record: its value and the record's decoded writes (null: none), which the
    /// result takes over as they are (the decoded record is not used again), not copied one by one.</summary>
    public static HostResult Of(long value, List<GuestWrite>? writes) => new() { Value = value, _writes = writes };
    public HostResult Write(ulong addr, byte[] bytes) { (_writes ??= new()).Add(new GuestWrite(addr, bytes)); return this; }
    /// <summary>Drops every write (a call that sends what the host put in its buffer elsewhere than guest memory).</summary>
    public void ClearWrites() => _writes?.Clear();
}

/// <summary>Kinds of nondeterministic input that are not syscalls.</summary>
public enum InputKind { Rdtsc = 1, Rdrand = 2, StartupRandom = 3, NetSeed = 4 }

/// <summary>What the virtual network interface took from the host at one point: the clock value and the frames.</summary>
public sealed record NetReceived(long ClockNs, List<byte[]> Frames);

/// <summary>
/// THE nondeterminism boundary. Everything the virtual machine learns from the host crosses here and nowhere
/// else: syscall results and the bytes they return, time, randomness, RDTSC/RDRAND, the start-up randomness of
/// AT_RANDOM. A live run performs the operation; recording performs it and writes the answer to the event log;
/// replay never performs it and answers from the log instead.
/// </summary>
public interface IBoundary
{
    /// <summary>
    /// A syscall that consults the host. `perform` does the real work (it runs only when the boundary is live or
    /// recording); `reexecuteOnReplay` marks operations whose host effect belongs to this replica (writes to
    /// its own copy of the guest's files) and that a replaying backup performs too.
    /// </summary>
    HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false);

    /// <summary>
    /// A write to the guest's stdout or stderr: something that leaves the VM. `perform` writes it to the host.
    /// The default treats it as any other syscall; a protected primary instead logs it as done and holds the
    /// bytes in its output gate until the backup holds the log up to this point (output commit).
    /// </summary>
    HostResult Output(int tid, int nr, int fd, byte[] data, Func<HostResult> perform) => Syscall(tid, nr, perform);

    /// <summary>
    /// Bytes that leave the VM on a socket (send, write on a socket). A protected primary accepts them at once
    /// within the socket's credit and holds them until the backup holds the log up to here (output commit);
    /// everyone else treats it as any other syscall that performs the whole send.
    /// </summary>
    HostResult Send(int tid, int nr, in SocketSend send)
    {
        var s = send;
        return Syscall(tid, nr, () => s.Unheld());
    }

    /// <summary>
    /// A shutdown or the last close of a socket. A protected primary that still holds bytes for the socket
    /// performs it after they are released (the guest gets 0 at once); otherwise it is any other syscall.
    /// </summary>
    HostResult SocketEnd(int tid, int nr, object socket, Func<HostResult> perform, bool reexecuteOnReplay)
        => Syscall(tid, nr, perform, reexecuteOnReplay);

    /// <summary>
    /// A write to a file of the guest's (a description opened by path: its data is the guest's storage). The default
    /// treats it as any other syscall whose host effect a following backup performs on its own copy; a protected
    /// primary whose backup shares the storage logs it as done and holds its bytes in its output gate until the
    /// backup holds the log up to here (shared/Replication/FileOutput.cs).
    /// </summary>
    HostResult FileWrite(int tid, int nr, GuestFileWrite write) => Syscall(tid, nr, write.Perform, reexecuteOnReplay: true);

    /// <summary>
    /// The guest is about to observe or change its storage other than by a file write (a read of a file, fstat, stat,
    /// lseek, mmap of a file, an open that creates or truncates, rename, unlink, truncate, fsync, ...). A primary
    /// holding file writes waits here until every one is released, so the guest sees exactly what it wrote and an
    /// operation on names or sizes never overtakes a held write; a following backup learns that the primary had
    /// released everything before this point once the log goes on past it. Logs nothing.
    /// </summary>
    void SettleFiles(int tid) { }

    /// <summary>
    /// The guest is about to read, fstat or seek in the file behind <paramref name="hostFd"/>: a primary holding changes
    /// for that file waits until they are made (changes held for other files do not make it wait). A following backup
    /// learns nothing here. Logs nothing.
    /// </summary>
    void SettleFile(int tid, int hostFd) { }

    /// <summary>
    /// The guest is about to look a path up (open, access, readlink, chdir, a directory listing): a primary holding a
    /// change of names waits until it is made, so the lookup sees the names the guest made. A following backup learns
    /// nothing here. Logs nothing.
    /// </summary>
    void SettleNames(int tid) { }

    /// <summary>
    /// A change of names, size or metadata of the guest's storage (rename, unlink, rmdir, mkdir, mknod, link, symlink,
    /// truncate, ftruncate, chmod, utimensat, an open with O_CREAT or O_TRUNC), after <see cref="SettleFiles"/>. The default treats it as any other syscall whose host effect a following backup
    /// performs on its own copy; a protected primary whose backup shares the storage predicts its result from the
    /// storage (which is the guest's view after the settle), logs it as done and holds the change in its output gate
    /// until the backup holds the log up to here (shared/Replication/StorageChanges.cs).
    /// </summary>
    HostResult StorageChange(int tid, int nr, GuestStorageChange change) => Syscall(tid, nr, change.Perform, reexecuteOnReplay: true);

    /// <summary>
    /// Bytes of a file entering the guest (a file mapping, the loader reading an interpreter): `perform` reads them on
    /// the host into <see cref="HostResult.Writes"/> and says whether they may be logged by reference. The default
    /// treats it as any other syscall (the bytes are logged).
    /// </summary>
    HostResult FileContent(int tid, int nr, FileRef file, Func<HostResult> perform) => Syscall(tid, nr, perform);

    /// <summary>
    /// Whether this boundary keeps what <see cref="FileContent"/> returns (a recording logs it): a read then says
    /// whether its bytes may be logged by reference (<see cref="HostResult.ByReference"/>), which costs host calls per
    /// read that a run nobody records need not make. A read whose result is <see cref="HostResult.InGuest"/> is only
    /// ever performed through a boundary that takes its bytes from guest memory.
    /// </summary>
    bool KeepsFileContent => true;

    /// <summary>
    /// The virtual network interface's input: frames received on its TAP device and the clock value its stack runs
    /// at (`perform` reads them from the host). Recording logs them as a NetInput record at this instruction;
    /// replay hands back the logged ones, so the in-VM stack sees the same frames at the same clock values.
    /// </summary>
    NetReceived NetReceive(int tid, Func<NetReceived> perform) => perform();

    /// <summary>
    /// The virtual network interface is taken over here by a replica that went live (`perform` brings it up on this
    /// replica's wire and returns the stack's clock). Recording logs a NetTakeover record at this instruction, so a
    /// replay of the survivor's log repairs the connections at the same point and clock; replay returns the logged clock.
    /// </summary>
    long NetTakeover(int tid, Func<long> perform) => perform();

    /// <summary>A 64-bit nondeterministic value (RDTSC, RDRAND).</summary>
    ulong Value(int tid, InputKind kind, Func<ulong> perform);

    /// <summary>Bytes of nondeterministic data (AT_RANDOM at start).</summary>
    byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform);

    /// <summary>True when replaying: host effects must not happen (no output, no files, no sockets).</summary>
    bool Replaying { get; }

    /// <summary>The host descriptor a new guest description holds: what the host operation returned, or in a
    /// replay none (-1) unless this replica opened its own copy (`local`, from a re-executed operation).</summary>
    int HostDescriptor(long performed, int local = -1) => Replaying ? local : (int)performed;

    /// <summary>Instruction count of the thread at which the machine must stop next for an event (checkpoint,
    /// asynchronous signal, preemption); ulong.MaxValue when none is due. Checked once per block.</summary>
    ulong NextStop(Kernel kernel, Cpu.VirtualCpu cpu) => kernel.HostEventsPending ? cpu.InstructionCount : ulong.MaxValue;

    /// <summary>The thread reached <see cref="NextStop"/>: take the event(s) due here.</summary>
    void AtStop(Kernel kernel, Cpu.VirtualCpu cpu) => kernel.TakeHostEvent(cpu);

    /// <summary>Every guest thread waits (`cpu` is the last one that ran): wait for the next asynchronous event and
    /// take it as at a stop. False when none can ever come (the guest is deadlocked).</summary>
    bool Idle(Kernel kernel, Cpu.VirtualCpu cpu)
    {
        if (!kernel.WaitForHostEvent()) return false;
        AtStop(kernel, cpu);
        return true;
    }

    /// <summary>Every guest thread waits for the virtual network interface and the machine is about to wait on the
    /// host for it (an instruction boundary, as at <see cref="Idle"/>, but the wait's outcome is a logged network input,
    /// not a host event): run what the boundary was asked to run at its next stop (<see cref="Kernel.Interrupt"/> ends
    /// such a wait). Logs nothing, so a replay, which never waits there, needs no counterpart.</summary>
    void AtNetworkWait(Kernel kernel) { }

    /// <summary>The guest produced output on its stdout or stderr (already written to the host unless replaying).</summary>
    void OnOutput(Kernel kernel, Cpu.VirtualCpu cpu, int fd, ReadOnlySpan<byte> bytes) { }

    /// <summary>Connects the boundary to the kernel it serves (for instruction counts in records).</summary>
    void Attach(Kernel kernel) { }

    /// <summary>The guest process ended.</summary>
    void OnExit(Kernel kernel, Cpu.VirtualCpu cpu, int status) { }
}

/// <summary>
/// A send on a socket as the kernel hands it to the boundary: a value (the boundary and a protected primary's output
/// gate copy it; nothing is allocated for it beyond its <see cref="Data"/>). <see cref="Perform"/>(offset, count, flags)
/// has its <see cref="Target"/> send <c>Data[offset..offset+count]</c> on the host socket with extra flags
/// (MSG_NOSIGNAL always; the gate adds MSG_DONTWAIT) and returns the host's answer (bytes sent or -errno); it may run
/// later, on another thread, until the socket's last close has taken effect.
/// </summary>
public readonly struct SocketSend
{
    /// <summary>The socket's identity (the guest's open file description, shared by dup'd descriptors).</summary>
    public required object Socket { get; init; }
    public required byte[] Data { get; init; }
    /// <summary>The host descriptor (polled for room when the host's send buffer is full).</summary>
    public required int HostFd { get; init; }
    /// <summary>O_NONBLOCK or MSG_DONTWAIT: no room answers EAGAIN instead of waiting.</summary>
    public bool NonBlocking { get; init; }
    /// <summary>A byte stream (TCP, AF_UNIX stream): a send may be accepted in part. Datagrams are all or nothing.</summary>
    public bool Stream { get; init; }
    /// <summary>Who performs the send on the host (one object for every send it makes: no closure per send).</summary>
    public required ISendTarget Target { get; init; }
    /// <summary>The guest's send flags, passed to the host with the extra flags (a target that needs them).</summary>
    public int Flags { get; init; }
    /// <summary>The destination address the guest gave (sendto, sendmsg), in guest form; null: the connected peer.</summary>
    public byte[]? Address { get; init; }
    /// <summary>An Af.UNIX destination's guest path (resolved under the root when the send is performed).</summary>
    public string? UnixPath { get; init; }
    /// <summary>Where no gate holds the bytes, a blocking send that must not wait on the host: it sends what the host
    /// takes now and registers its thread's wait when the host takes nothing (<see cref="Kernel.WouldBlock"/>).</summary>
    public bool Parks { get; init; }

    /// <summary>Sends <c>Data[offset..offset+count]</c> on the host (see the type).</summary>
    public long Perform(int offset, int count, int extraFlags) => Target.Perform(this, offset, count, extraFlags);

    /// <summary>The send performed at once, bytes not held (an unprotected run, or a backup following the log).</summary>
    public HostResult Unheld() => Target.Unheld(this);
}

/// <summary>Performs <see cref="SocketSend"/>s on the host (the kernel for guest sockets, the virtual interface for its
/// frames).</summary>
public interface ISendTarget
{
    /// <summary>Sends <c>s.Data[offset..offset+count]</c> with <paramref name="extraFlags"/>: bytes taken or -errno.</summary>
    long Perform(in SocketSend s, int offset, int count, int extraFlags);

    /// <summary>The whole send where no gate holds its bytes.</summary>
    HostResult Unheld(in SocketSend s) => HostResult.Of(Perform(s, 0, s.Data.Length, 0));
}

/// <summary>
/// A write to a file of the guest's as the kernel hands it to the boundary: <see cref="Data"/> goes to
/// <see cref="Offset"/> (pwrite), or when that is negative to the description's offset <see cref="FileOffset"/>, or
/// with <see cref="Append"/> to the file's end. <see cref="Perform"/> writes it on the host at once.
/// </summary>
public sealed class GuestFileWrite
{
    public required int HostFd { get; init; }
    public required byte[] Data { get; init; }
    public required long Offset { get; init; }
    public required long FileOffset { get; init; }
    public required bool Append { get; init; }
    /// <summary>The guest path the description has (opened by, moved by the guest's renames since): where a survivor
    /// writes it again.</summary>
    public required string GuestPath { get; init; }
    /// <summary>Where a failure at release is reported to the guest (the description's).</summary>
    public DeferredStorageError? Errors { get; init; }
    /// <summary>The description's access mode may write: a write through a read-only one is not held (the host
    /// answers EBADF at once).</summary>
    public bool Writable { get; init; } = true;
    public required Func<HostResult> Perform { get; init; }
}

/// <summary>A boundary that simply performs everything on the host (plain `primary run`).</summary>
public sealed class LiveBoundary : IBoundary
{
    public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false) => perform();
    public HostResult Send(int tid, int nr, in SocketSend send) => send.Unheld();
    public ulong Value(int tid, InputKind kind, Func<ulong> perform) => perform();
    public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform) => perform();
    public bool Replaying => false;
    public bool KeepsFileContent => false;
}

/// <summary>The changes of names, sizes and metadata of the guest's storage that a primary on shared storage holds
/// under the output rule (<see cref="IBoundary.StorageChange"/>). Open: an open with O_CREAT or O_TRUNC (its result
/// is a descriptor; it may create its name, or truncate the file it names); Mknod: a regular file, FIFO or socket
/// name; Chmod and Utimes: a file's mode and times.</summary>
public enum StorageChangeKind { Rename, Unlink, Rmdir, Mkdir, Truncate, Link, Symlink, Open, Mknod, Chmod, Utimes }

/// <summary>
/// A change of the guest's storage other than a write, as the kernel hands it to the boundary: rename (with
/// renameat2 flags), unlink, rmdir, mkdir, mknod, link or symlink of a name, an open that may create its name or
/// truncate its file, a
/// truncation, chmod or change of times of a file (by path, or through a description: <see cref="HostFd"/>). Paths
/// are absolute guest paths. <see cref="Perform"/> makes it on the host at once.
/// </summary>
public sealed class GuestStorageChange
{
    public required StorageChangeKind Kind { get; init; }
    /// <summary>The name it changes (rename: the source; link: the existing name; symlink: the new link); a
    /// truncation: the file's path (through a description: the path the description has now).</summary>
    public required string Path { get; init; }
    /// <summary>A rename's target, a link's new name (absolute guest paths); a symlink's content, as the guest gave it.</summary>
    public string? Target { get; init; }
    /// <summary>renameat2 flags (<see cref="RenameFlags"/>).</summary>
    public uint Flags { get; init; }
    /// <summary>A truncation's length.</summary>
    public long Length { get; init; }
    /// <summary>ftruncate: the description's host descriptor (-1: by path, or none in a replay).</summary>
    public int HostFd { get; init; } = -1;
    /// <summary>ftruncate: the description's access mode may write.</summary>
    public bool Writable { get; init; }
    /// <summary>Open: the guest's open flags.</summary>
    public int OpenFlags { get; init; }
    /// <summary>Open (a creation), mknod: the host mode of the new file (type and permission bits, the guest's umask applied);
    /// chmod: the mode asked for.</summary>
    public uint Mode { get; init; }
    /// <summary>Utimes: the two timespecs the guest gave (32 bytes), or null for "now".</summary>
    public byte[]? Times { get; init; }
    /// <summary>Chmod, utimes by path: a final symlink is followed.</summary>
    public bool Follow { get; init; } = true;
    /// <summary>Open, chmod, utimes: the change made through a host descriptor of the file (a creation: the unnamed
    /// file the primary made with O_TMPFILE given its name; chmod, utimes: a descriptor of the file, O_PATH or not).
    /// A held change makes it at release through a descriptor of its own.</summary>
    public Func<int, long>? OnFile { get; init; }
    /// <summary>Where a failure at release is reported to the guest (the description's, for ftruncate).</summary>
    public DeferredStorageError? Errors { get; init; }
    public required Func<HostResult> Perform { get; init; }

    public string Describe() => Kind switch
    {
        StorageChangeKind.Rename => $"rename of {Path} to {Target}{(Flags != 0 ? $" (flags {Flags})" : "")}",
        StorageChangeKind.Truncate => $"truncation of {Path} to {Length} bytes",
        StorageChangeKind.Link => $"link of {Path} as {Target}",
        StorageChangeKind.Symlink => $"symlink {Path} to {Target}",
        StorageChangeKind.Open => (OpenFlags & O.TRUNC) != 0 ? $"truncating open of {Path}" : $"creation of {Path}",
        StorageChangeKind.Chmod => $"chmod of {Path} to {Convert.ToString(Mode, 8)}",
        StorageChangeKind.Utimes => $"change of the times of {Path}",
        _ => $"{Kind.ToString().ToLowerInvariant()} of {Path}",
    };
}

/// <summary>
/// A failure of a held change of the guest's storage, made after the guest was told it succeeded (on shared
/// storage: <c>FileOutput</c>): kept on the description and answered to the guest's next fsync, fdatasync or close
/// of it, once, as a kernel reports a failed write-back (EIO, ENOSPC).
/// </summary>
public sealed class DeferredStorageError
{
    int _errno;

    /// <summary>A release failed with -errno <paramref name="e"/> (the first failure is the one reported).</summary>
    public void Report(long e) => Interlocked.CompareExchange(ref _errno, (int)-e, 0);

    /// <summary>0, or the -errno of a failure not reported yet (then cleared).</summary>
    public long Take() => -(long)Interlocked.Exchange(ref _errno, 0);
}
