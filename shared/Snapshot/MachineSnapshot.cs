using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Memory;
using ReVirt.Net;
using ReVirt.Replay;
using Process = ReVirt.Linux.Process;
using ThreadState = ReVirt.Linux.ThreadState;

namespace ReVirt.Snapshot;

/// <summary>Where the log stood when a snapshot was taken: the last record the state includes, when the recorder's
/// next periodic checkpoint is due, and the running output digests (so a replay from the snapshot verifies the
/// records after it exactly as a replay from record 1 would).</summary>
public sealed record SnapshotPoint(ulong Sequence, ulong NextCheckpoint, OutputDigests Outputs)
{
    /// <summary>A restored snapshot that carried files: the SHA-256 (hex) of their state read back from this replica's root.</summary>
    public string FilesDigest { get; init; } = "";
    /// <summary>A restored snapshot: its length in bytes and the restored machine's state digest (hex).</summary>
    public long Bytes { get; init; }
    public string Digest { get; init; } = "";
}

/// <summary>The bytes are not a snapshot of this run (wrong magic, version or run, damaged, cut off).</summary>
public sealed class SnapshotFormatException(string message) : Exception(message);

/// <summary>A well-formed snapshot whose restored machine does not match what it claims (a page or a register
/// missing or changed): the reason says what differed.</summary>
public sealed class SnapshotRefusedException(string message) : Exception(message);

/// <summary>Violations a test or drill can plant in a snapshot (never in normal operation): a page left out of the
/// encoding (its state digest still counts it); and, in transfer, a byte of the second chunk flipped after it was
/// hashed, or the second chunk cut to half and sent as the last.</summary>
public enum SnapshotPlant { None, OmitPage, CorruptChunk, TruncateChunk }

/// <summary>
/// A machine snapshot at an instruction boundary: every process (ids, tree, memory layout and pages, descriptors,
/// dispositions and pending signals, brk, cwd, its program's start image), every thread (<see cref="CpuState"/>,
/// instruction and branch counts, signal mask, futex and parked-call state), zombies, in-VM pipes with their bytes,
/// host-backed descriptions by their guest-side state (sockets, epoll sets, eventfds, timerfds), interval and POSIX
/// timers, the scheduler's order and counters, the log position (<see cref="SnapshotPoint"/>), and the virtual network
/// interface when the guest has one (`--net virtual`): the in-VM stack's complete state (connections with their
/// buffers, sequence numbers and timers on the stack's logged clock, listeners and their queues, UDP sockets, the ARP
/// cache, frames queued, its seed and counters: <see cref="NetStack.WriteState"/>), the guest's descriptors of its
/// sockets, and the time-outs of poll-family calls parked on it. The interface's identity (MAC, address) is the run's
/// (its log header) and is checked against the stack's; its TAP device is the restoring replica's own. It is the start state of a
/// replica that joins a running guest: restored, it follows the log from the record after the snapshot.
///
/// Format (little-endian), written and read front to back in one pass (a snapshot is a stream: neither side holds it
/// whole, and its size has no bound but the guest's): "RVSNAP01" | u32 version | u32 kernel-section length | kernel
/// section (its network part: after the scheduler's counters, u8 has-interface and then u32 length + the stack's
/// state; after the timers, the parked poll time-outs) | per process in the kernel section's order: its pages in runs
/// (u32 pages 1..<see cref="RunPages"/>, u64 first page number, u8 protection, the pages' bytes: consecutive pages of
/// one protection, in strictly increasing address order), ended by a u32 0 | u32 file-section length | file section
/// (the paths the guest changed in its root and, for a replica with a root of its own, their state:
/// <see cref="EncodeFiles"/>) | 16-byte state digest (<see cref="StateDigest"/>: what the restored machine must
/// compute) | SHA-256 of all the bytes before it. The kernel section is one encoding used both ways: a restored
/// machine re-encodes to the same bytes, which is checked, as is the state digest; a snapshot that fails either is
/// refused with the reason.
///
/// Capture costs the guest the kernel section and an O(1) capture of each address space
/// (<see cref="GuestMemory.BeginCapture"/>); the pages are read, encoded and hashed afterwards, off the guest thread,
/// while the guest's first store to each page not read yet copies it for the capture.
/// </summary>
public static partial class MachineSnapshot
{
    static readonly byte[] Magic = "RVSNAP01"u8.ToArray();
    /// <summary>4: the virtual network interface's state (3 had none and refused a guest that had one); 5: its TCP
    /// connections' SACK state (negotiation, scoreboard) and counters; 6: pages in runs, each process's ended by a
    /// zero count, so the snapshot is written and read as a stream (5 gave each process's page count first and was
    /// assembled whole); 7: the TCP connections' RACK-TLP and D-SACK state, the stack's RACK and D-SACK settings; 8: each TCP connection's
    /// windowed minimum RTT (three samples for one value) and D-SACK undo episode, the stack's undo and min-RTT window
    /// settings; 9: whether the stack opens a new connection on a SYN for one in TIME-WAIT, and its count of those;
    /// 10: the state digest takes each page by its own XxHash128 (<see cref="StateDigest"/>, log format 4); 11: whether
    /// the stack takes a synchronisation's frames before its timers run (<see cref="ReVirt.Net.NetConfig.BatchInput"/>); 12:
    /// whether a takeover's repair is followed by a tail-loss probe (<see cref="ReVirt.Net.NetConfig.TakeoverProbe"/>).</summary>
    public const uint Version = 12;
    /// <summary>Most pages in one run of the memory section (1 MiB): the encoder's and decoder's buffer for a run.</summary>
    public const int RunPages = 256;
    /// <summary>Largest kernel section and file section a decoder takes (each is one array; the memory section, the
    /// bulk of a snapshot, is unbounded).</summary>
    const int MaxSectionBytes = int.MaxValue - 64;
    const int PageBytes = (int)GuestMemory.PageSize;
    const int MaxString = 1 << 20, MaxItems = 1 << 20;
    /// <summary>CLOCK_THREAD_CPUTIME_ID: the pause's CPU time on the guest thread (its wall time also counts the time
    /// a loaded host did not run the thread).</summary>
    const int ThreadCpuClock = 3;

    /// <summary>The last log record a snapshot includes, read from its kernel section without restoring it (a log
    /// kept by a replica that joined from the snapshot starts after it).</summary>
    /// <exception cref="SnapshotFormatException">Too short or not a snapshot.</exception>
    public static ulong SequenceOf(ReadOnlySpan<byte> snap)
    {
        if (snap.Length < SequenceOfBytes || !snap[..Magic.Length].SequenceEqual(Magic)) throw new SnapshotFormatException("not a machine snapshot (no RVSNAP01 magic)");
        return BinaryPrimitives.ReadUInt64LittleEndian(snap[(16 + 32)..]);
    }

    /// <summary>How many of a snapshot's first bytes <see cref="SequenceOf"/> needs (magic, version, the kernel
    /// section's length, the log header's hash, the sequence).</summary>
    public const int SequenceOfBytes = 16 + 32 + 8;

    /// <summary>Why this machine cannot be captured now (null: it can). Checked on the guest thread at capture.</summary>
    public static string? Uncapturable(Kernel k, bool withFiles = false)
    {
        if (k.Uncapturable() is { } why) return why;
        if (withFiles && OpenFileWithoutItsName(k) is { } unnamed) return unnamed;
        foreach (var p in k.Processes)
            foreach (var (fd, f) in p.Fds.Entries)
                if (FileKind(f) == null)
                    return $"process {p.Pid} holds descriptor {fd} ({f.GetType().Name} {f.GuestPath}), which is host state a snapshot cannot carry yet";
                else if (f is EpollFile ep && ep.Entries.Values.FirstOrDefault(e => FileKind(e.File) == null) is { } e)
                    return $"process {p.Pid}'s epoll set {fd} watches a {e.File.GetType().Name} ({e.File.GuestPath}), which a snapshot cannot carry yet";
        return null;
    }

    enum Kind : byte { Stdio = 1, PipeRead = 2, PipeWrite = 3, File = 4, Socket = 5, Reset = 6, Epoll = 7, EventFd = 8, TimerFd = 9, Virtual = 10 }

    /// <summary>How a description is carried. Host sockets, epoll instances, eventfds and timerfds are carried by
    /// their guest-side state (what a replay of the log tracks too): on the replica that restores them they are
    /// replay-only descriptions whose results come from the log, and at a takeover they get host objects as the
    /// descriptions of a replayed log do (listeners re-bound, connections reset, epoll sets re-registered, eventfds
    /// and timerfds made with their counter and expiry). A socket on the virtual interface is carried by the id of its
    /// socket in the stack's state (the connection itself is part of the machine and survives a takeover).</summary>
    static Kind? FileKind(OpenFile f) => f switch
    {
        StdioFile => Kind.Stdio,
        PipeReader => Kind.PipeRead,
        PipeWriter => Kind.PipeWrite,
        ResetConnection => Kind.Reset,
        HostSocket => Kind.Socket,
        EpollFile => Kind.Epoll,
        EventFdFile => Kind.EventFd,
        TimerFdFile => Kind.TimerFd,
        VirtualSocket => Kind.Virtual,
        // a regular file or directory opened by path
        HostFile h when h.GetType() == typeof(HostFile) && h.GuestPath.StartsWith('/') => Kind.File,
        _ => null,
    };

    /// <summary>
    /// Captures the machine (guest thread, at an instruction boundary): the kernel section now, and a capture of every
    /// address space whose pages <see cref="SnapshotCapture.Encode"/> reads later on any thread.
    /// </summary>
    /// <exception cref="InvalidOperationException">The machine holds state a snapshot cannot carry (<see cref="Uncapturable"/>).</exception>
    /// <param name="withFiles">The snapshot is for a replica with a root of its own: it carries the state of every path
    /// the guest changed (read now, in the pause, so it grows with those files' size).</param>
    public static SnapshotCapture Capture(Kernel k, SnapshotPoint point, ReadOnlySpan<byte> encodedHeader, bool withFiles = false)
    {
        long t0 = Stopwatch.GetTimestamp(), cpu0 = HostClock.Now(ThreadCpuClock);
        if (Uncapturable(k, withFiles) is { } why) throw new InvalidOperationException(why);
        // clock anchors are not carried: the machine restored from this has none, and neither has this one from here
        k.ForgetClockAnchors();
        var kernel = EncodeKernel(k, point, SHA256.HashData(encodedHeader));
        var changed = k.Changes.Paths;
        var entries = withFiles ? RootFiles.Capture(k.Fs, changed, MaxFileBytes) : null;
        var files = EncodeFiles(changed, entries);
        var procs = new List<(CpuState[], MemoryCapture)>(k.Processes.Count);
        long pages = 0;
        try
        {
            foreach (var p in k.Processes)
            {
                procs.Add((p.Threads.Select(t => t.Cpu.State).ToArray(), p.Mem.BeginCapture()));
                pages += p.Mem.PageCount;
            }
        }
        catch
        {
            foreach (var (_, m) in procs) m.Dispose();
            throw;
        }
        byte[]? net = k.Nic?.Stack.Digest();
        return new SnapshotCapture(kernel, procs, net, files, point.Sequence, pages, Stopwatch.GetElapsedTime(t0),
            TimeSpan.FromTicks((HostClock.Now(ThreadCpuClock) - cpu0) / 100))
        { FileEntries = entries?.Count ?? 0, FileBytes = entries?.Sum(e => (long)(e.Content?.Length ?? 0)) ?? 0, FilesDigest = entries != null ? FilesDigest(files) : "" };
    }

    // ------------------------------------------------------------------ the kernel section

    static byte[] EncodeKernel(Kernel k, SnapshotPoint point, byte[] headerHash)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(headerHash);
        w.Write(point.Sequence);
        w.Write(point.NextCheckpoint);
        var outputs = new byte[OutputDigests.StateSize];
        point.Outputs.Save(outputs);
        w.Write(outputs);
        var st = k.Scheduler;
        w.Write(st.NextTid); w.Write(st.PipesMade); w.Write(st.AccountedAt); w.Write(st.SwitchAsked); w.Write(st.YieldAsked); w.Write(st.Uid);
        // the virtual interface's stack, before the descriptions that name its sockets
        w.Write(k.Nic != null);
        if (k.Nic != null)
        {
            var net = StackState(k.Nic.Stack);
            w.Write(net.Length); w.Write(net);
        }

        var files = new Dictionary<OpenFile, int>(ReferenceEqualityComparer.Instance);
        var pipes = new Dictionary<Pipe, int>(ReferenceEqualityComparer.Instance);
        Number(k, files, pipes);
        w.Write(pipes.Count);
        foreach (var pipe in pipes.Keys)
        {
            w.Write(pipe.Inode); w.Write(pipe.Readers); w.Write(pipe.Writers);
            var c = pipe.Contents();
            w.Write(c.Length); w.Write(c);
        }
        w.Write(files.Count);
        foreach (var f in files.Keys)
        {
            var kind = FileKind(f) ?? throw new InvalidOperationException($"{f.GetType().Name} cannot be captured");
            w.Write((byte)kind);
            w.Write(f.GuestPath); w.Write(f.StatusFlags); w.Write(f.Offset); w.Write(f.RefCount);
            switch (kind)
            {
                case Kind.Stdio: w.Write(f.HostFd); break;
                case Kind.PipeRead: w.Write(pipes[((PipeReader)f).Pipe]); break;
                case Kind.PipeWrite: w.Write(pipes[((PipeWriter)f).Pipe]); break;
                case Kind.File: w.Write(((HostFile)f).Directory); break;
                case Kind.Socket: WriteSocket(w, (HostSocket)f); break;
                case Kind.Reset: WriteSocket(w, (HostSocket)f); w.Write(((ResetConnection)f).Reported); break;
                case Kind.EventFd: { var e = (EventFdFile)f; w.Write(e.Counter); w.Write(e.Semaphore); break; }
                case Kind.TimerFd: { var t = (TimerFdFile)f; w.Write(t.Clock); w.Write(t.ExpiryNs); w.Write(t.IntervalNs); break; }
                case Kind.Virtual: { var v = (VirtualSocket)f; w.Write(v.Type); w.Write(v.Tcp != null); w.Write(v.Tcp?.Id ?? v.Udp!.Id); break; }
            }
        }
        // epoll sets: (guest fd, description, events, user data) in descriptor order
        foreach (var f in files.Keys)
            if (f is EpollFile ep)
            {
                w.Write(ep.Entries.Count);
                foreach (var (fd, e) in ep.Entries) { w.Write(fd); w.Write(files[e.File]); w.Write(e.Events); w.Write(e.Data); }
            }

        w.Write(k.Processes.Count);
        foreach (var p in k.Processes)
        {
            w.Write(p.Pid); w.Write(p.Ppid); w.Write(p.Pgid); w.Write(p.Sid);
            w.Write(p.Parent != null && k.Processes.Contains(p.Parent) ? p.Parent.Pid : -1);
            w.Write(p.Children.Count);
            foreach (var c in p.Children) w.Write(c.Pid);
            w.Write(p.Cwd); w.Write(p.Umask); w.Write(p.BrkStart); w.Write(p.BrkCur);
            for (int s = 0; s <= Sig.Max; s++) { var a = p.Actions[s]; w.Write(a.Handler); w.Write(a.Flags); w.Write(a.Restorer); w.Write(a.Mask); }
            w.Write(p.Pending); w.Write(p.Name); w.Write(p.Exited); w.Write(p.WaitStatus); w.Write(p.ExitSignal); w.Write(p.DeathSignal);
            w.Write(p.Stopped); w.Write(p.StopReport); w.Write(p.ContinueReport);
            w.Write(p.ChildSignal != null); w.Write(p.ChildSignal?.Code ?? 0); w.Write(p.ChildSignal?.Pid ?? 0); w.Write(p.ChildSignal?.Status ?? 0);
            w.Write(p.Instructions); w.Write(p.ChildInstructions); w.Write(p.MaxRssPages); w.Write(p.ChildMaxRssPages);
            var si = p.Start;
            var lp = si.Program;
            w.Write(lp.Entry); w.Write(lp.LoadBias); w.Write(lp.PhdrAddr); w.Write(lp.PhNum); w.Write(lp.PhEnt); w.Write(lp.BrkStart); w.Write(lp.IsPie);
            WriteOpt(w, lp.Interpreter);
            w.Write(si.InterpreterBase); w.Write(si.StartRip); w.Write(si.ExecPath); w.Write(si.BinaryPath); WriteStrings(w, si.Argv);
            w.Write(p.ProgramGuestPath);
            w.Write(p.Auxv.Length); foreach (var v in p.Auxv) w.Write(v);
            WriteStrings(w, p.Environment);
            w.Write(p.Mem.Vmas.Count);
            foreach (var v in p.Mem.Vmas) { w.Write(v.Start); w.Write(v.End); w.Write((int)v.Prot); w.Write(v.Name); w.Write(v.FileOffset); w.Write(v.Shared); w.Write(v.BeyondEof); }
            var fds = p.Fds.Entries.ToList();
            w.Write(fds.Count);
            foreach (var (fd, f) in fds) { w.Write(fd); w.Write(files[f]); w.Write(p.Fds.CloseOnExec(fd)); }
            w.Write(p.Threads.Count);
            foreach (var t in p.Threads) WriteThread(w, t);
        }
        // zombies: exited children not yet reaped (out of the process list, still in their parent's children, which
        // wait4 reports in order)
        var zombies = k.Processes.SelectMany(p => p.Children).Where(c => !k.Processes.Contains(c)).Distinct().ToList();
        w.Write(zombies.Count);
        foreach (var z in zombies)
        {
            w.Write(z.Pid); w.Write(z.Ppid); w.Write(z.Pgid); w.Write(z.Sid); w.Write(z.Name); w.Write(z.Umask); w.Write(z.Pending);
            w.Write(z.Exited); w.Write(z.WaitStatus); w.Write(z.ExitSignal); w.Write(z.Stopped); w.Write(z.StopReport); w.Write(z.ContinueReport);
            w.Write(z.Instructions); w.Write(z.ChildInstructions); w.Write(z.MaxRssPages); w.Write(z.ChildMaxRssPages);
        }
        var order = k.SchedulerOrder.ToList();
        w.Write(order.Count);
        foreach (var t in order) w.Write(t.Tid);
        w.Write(k.Current.Tid);
        var timers = k.Timers.ToList();
        w.Write(timers.Count);
        foreach (var t in timers) { w.Write(t.Id); w.Write(t.Clock); w.Write(t.Signal); w.Write(t.Armed); w.Write(t.DueNs); w.Write(t.IntervalNs); }
        var waits = k.NetWaits(new HashSet<GuestThread>(k.Processes.SelectMany(p => p.Threads))).ToList();
        w.Write(waits.Count);
        foreach (var nw in waits) { w.Write(nw.Tid); w.Write(nw.Nr); w.Write(nw.Rip); w.Write(nw.DeadlineNs); }
        w.Flush();
        return ms.ToArray();
    }

    /// <summary>Numbers the open file descriptions (shared by descriptors and processes) and pipes in first-use order:
    /// the order of the kernel section's descriptions. Returns the descriptions in that order.</summary>
    static List<OpenFile> Number(Kernel k, Dictionary<OpenFile, int> files, Dictionary<Pipe, int> pipes)
    {
        var numbered = new List<OpenFile>();
        void One(OpenFile f)
        {
            if (files.ContainsKey(f)) return;
            files[f] = files.Count;
            numbered.Add(f);
            var pipe = f switch { PipeReader r => r.Pipe, PipeWriter pw => pw.Pipe, _ => null };
            if (pipe != null && !pipes.ContainsKey(pipe)) pipes[pipe] = pipes.Count;
        }
        foreach (var p in k.Processes)
            foreach (var (_, f) in p.Fds.Entries) One(f);
        // what epoll sets watch is open somewhere as a rule (its last close drops it from the sets); numbered anyway
        for (int i = 0; i < numbered.Count; i++)
            if (numbered[i] is EpollFile ep)
                foreach (var e in ep.Entries.Values) One(e.File);
        return numbered;
    }

    /// <summary>The machine's open file descriptions in the order a snapshot numbers them: a machine restored from a
    /// snapshot of this one lists the same descriptions in the same order.</summary>
    internal static List<OpenFile> Descriptions(Kernel k)
        => Number(k, new(ReferenceEqualityComparer.Instance), new(ReferenceEqualityComparer.Instance));

    /// <summary>The stack's state as <see cref="NetStack.WriteState"/> writes it (its SHA-256 is the stack's digest).</summary>
    static byte[] StackState(NetStack stack)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) stack.WriteState(w);
        return ms.ToArray();
    }

    /// <summary>Rebuilds the interface a snapshot carries, on this replica's TAP device (<paramref name="options"/>).</summary>
    static VirtualNic ReadNic(Reader r, MachineOptions options)
    {
        var bytes = r.Bytes(r.Count(int.MaxValue));
        if (options.Net == null) throw new SnapshotFormatException("the snapshot carries a virtual network interface, and this run has none (its log header gives no --net virtual identity)");
        NetStack stack;
        using (var ms = new MemoryStream(bytes, writable: false))
        using (var br = new BinaryReader(ms, Encoding.UTF8))
        {
            try { stack = NetStack.Restore(br); }
            catch (InvalidDataException e) { throw new SnapshotFormatException($"the virtual network interface's state is refused: {e.Message}"); }
            if (ms.Position != bytes.Length) throw new SnapshotFormatException($"{bytes.Length - ms.Position} bytes after the virtual network interface's state");
        }
        return VirtualNic.Restored(options.Net, stack, out var why) ?? throw new SnapshotRefusedException($"virtual network interface: {why}");
    }

    /// <summary>A guest's socket on the virtual interface: the stack's socket of that id.</summary>
    static VirtualSocket ReadVirtual(Reader r, VirtualNic? nic)
    {
        int type = r.I32();
        bool tcp = r.Bool();
        long id = r.I64();
        if (nic == null) throw new SnapshotFormatException($"a socket on a virtual network interface (id {id}) in a snapshot without one");
        if (tcp)
            return VirtualSocket.Restored(nic, nic.Stack.TcpSockets.FirstOrDefault(s => s.Id == id) ?? throw new SnapshotFormatException($"the guest's TCP socket {id} is not in the stack's state"), null, type);
        return VirtualSocket.Restored(nic, null, nic.Stack.UdpSockets.FirstOrDefault(s => s.Id == id) ?? throw new SnapshotFormatException($"the guest's UDP socket {id} is not in the stack's state"), type);
    }

    static void WriteSocket(BinaryWriter w, HostSocket s)
    {
        w.Write(s.Family); w.Write(s.Type); w.Write(s.Protocol); w.Write(s.Listening); w.Write(s.Backlog);
        w.Write(s.BoundAddress != null);
        if (s.BoundAddress != null) { w.Write(s.BoundAddress.Length); w.Write(s.BoundAddress); }
    }

    static HostSocket ReadSocket(Reader r, HostSocket s)
    {
        s.Family = r.I32(); s.Type = r.I32(); s.Protocol = r.I32(); s.Listening = r.Bool(); s.Backlog = r.I32();
        if (r.Bool()) s.BoundAddress = r.Bytes(r.Count(4096));
        return s;
    }

    static void WriteThread(BinaryWriter w, GuestThread t)
    {
        w.Write(t.Tid); w.Write((byte)t.State);
        var s = t.Cpu.State;
        for (int i = 0; i < 16; i++) w.Write(s.R[i]);
        w.Write(s.Rip); w.Write(s.Rflags); w.Write(s.FsBase); w.Write(s.GsBase);
        for (int i = 0; i < 32; i++) w.Write(s.Xmm[i]);
        w.Write(s.Mxcsr);
        Span<byte> f = stackalloc byte[10];
        for (int i = 0; i < 8; i++) { s.Fpr[i].WriteTo(f); w.Write(f); }
        w.Write(s.FpTop); w.Write(s.Fcw); w.Write(s.Fsw); w.Write(s.FpEmpty);
        w.Write(t.Cpu.InstructionCount); w.Write(t.Cpu.BranchCount); w.Write(t.Cpu.Yield);
        w.Write(t.SigMask); w.Write(t.MaskAfterSuspend.HasValue); w.Write(t.MaskAfterSuspend ?? 0);
        w.Write(t.ClearChildTid); w.Write(t.FutexAddr); w.Write(t.FutexBitset); w.Write(t.FutexTimed); w.Write(t.FutexWoken);
        w.Write(t.Parked); w.Write(t.ParkedNr); w.Write(t.WakesOnVmChange); w.Write(t.HostWait); w.Write(t.WaitSeq);
        w.Write(t.PartialDone); w.Write(t.AlsoWaitsInVm); w.Write(t.AltSp); w.Write(t.AltSize); w.Write(t.AltFlags);
        w.Write(t.LoggedDeadline.HasValue); w.Write(t.LoggedDeadline ?? 0);
    }

    static void WriteOpt(BinaryWriter w, string? s) { w.Write(s != null); if (s != null) w.Write(s); }
    static void WriteStrings(BinaryWriter w, string[] a) { w.Write(a.Length); foreach (var s in a) w.Write(s); }

    // ------------------------------------------------------------------ restoring

    /// <summary>A bounded reader: every count and length is checked against what is left, so damaged bytes give a
    /// <see cref="SnapshotFormatException"/>, never a huge allocation or another exception.</summary>
    sealed class Reader(byte[] b, int start, int end)
    {
        int _o = start;
        public bool AtEnd => _o == end;
        public int Position => _o;
        ReadOnlySpan<byte> Take(int n)
        {
            if (n < 0 || end - _o < n) throw new SnapshotFormatException($"the kernel section ends early (at byte {_o})");
            var s = b.AsSpan(_o, n);
            _o += n;
            return s;
        }
        public byte U8() => Take(1)[0];
        public bool Bool() => U8() switch { 0 => false, 1 => true, var x => throw new SnapshotFormatException($"bad boolean {x}") };
        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
        public byte[] Bytes(int n) => Take(n).ToArray();
        public int Count(int max = MaxItems)
        {
            int n = I32();
            if (n < 0 || n > max) throw new SnapshotFormatException($"a count of {n} (at most {max})");
            return n;
        }
        public string Str()
        {
            // BinaryWriter's 7-bit encoded length
            int len = 0, shift = 0;
            byte x;
            do
            {
                if (shift > 28) throw new SnapshotFormatException("bad string length");
                x = U8();
                len |= (x & 0x7F) << shift;
                shift += 7;
            } while ((x & 0x80) != 0);
            if (len > MaxString) throw new SnapshotFormatException($"a string of {len} bytes");
            return Encoding.UTF8.GetString(Take(len));
        }
        public string? OptStr() => Bool() ? Str() : null;
        public string[] Strs() { var a = new string[Count()]; for (int i = 0; i < a.Length; i++) a[i] = Str(); return a; }
    }

    /// <summary>
    /// Verifies a snapshot of the run whose encoded log header is given and restores the machine: a new
    /// <see cref="Machine"/> on <paramref name="boundary"/> (not loaded: its processes are the snapshot's) whose
    /// <see cref="Machine.Run"/> goes on from the snapshot's instruction. Refuses, with the reason, bytes that are not a
    /// snapshot of this run and a snapshot whose restored state does not match its digest or its own encoding.
    /// </summary>
    /// <exception cref="SnapshotFormatException">Not a well-formed snapshot of this run.</exception>
    /// <exception cref="SnapshotRefusedException">The restored machine is not the machine the snapshot describes.</exception>
    /// <param name="applyFiles">This replica has a root of its own (a copy of the root as the guest started): the
    /// snapshot must carry the files the guest changed, which are applied to the root, read back and required to equal
    /// the snapshot's, and the restored machine's open files are opened on the root (a following replica writes its
    /// own copy). False: the files are the live replica's own (shared storage) or not touched (a replay).</param>
    public static (Machine Machine, SnapshotPoint Point) Restore(byte[] snap, ReadOnlySpan<byte> encodedHeader, MachineOptions options, IBoundary boundary, bool applyFiles = false)
    {
        using var ms = new MemoryStream(snap, writable: false);
        return Restore(ms, encodedHeader, options, boundary, applyFiles);
    }

    /// <summary>
    /// <see cref="Restore(byte[], ReadOnlySpan{byte}, MachineOptions, IBoundary, bool)"/> from a stream read once, front
    /// to back, as the bytes arrive (a standby restores the pages of the chunks that came while later ones cross the
    /// link): the SHA-256 and the state digest accumulate in the same pass, and both are checked at the end, before
    /// anything of the snapshot is used (the root's files included). A stream that ends early is refused as cut off.
    /// The point's <see cref="SnapshotPoint.Bytes"/> and <see cref="SnapshotPoint.Digest"/> report what was read.
    /// </summary>
    public static (Machine Machine, SnapshotPoint Point) Restore(Stream snap, ReadOnlySpan<byte> encodedHeader, MachineOptions options, IBoundary boundary, bool applyFiles = false)
    {
        using var input = new SnapshotInput(snap);
        if (!input.Take(Magic.Length, "its magic").SequenceEqual(Magic))
            throw new SnapshotFormatException("not a machine snapshot (no RVSNAP01 magic)");
        uint version = input.U32("its version");
        if (version != Version) throw new SnapshotFormatException($"snapshot format version {version} (this replica reads {Version})");
        int kernelLen = input.I32("the kernel section's length");
        if (kernelLen is < 0 or > MaxSectionBytes) throw new SnapshotFormatException($"a kernel section of {kernelLen} bytes");
        var kernelBytes = input.Block(kernelLen, "the kernel section");
        var kernelSection = kernelBytes.AsSpan();
        var r = new Reader(kernelBytes, 0, kernelLen);
        if (!r.Bytes(32).AsSpan().SequenceEqual(SHA256.HashData(encodedHeader)))
            throw new SnapshotFormatException("the snapshot was taken of another run (its log header differs)");
        ulong sequence = r.U64(), nextCheckpoint = r.U64();
        var outputs = OutputDigests.Resume(r.Bytes(OutputDigests.StateSize));
        var point = new SnapshotPoint(sequence, nextCheckpoint, outputs);

        var m = new Machine(options, boundary);
        try
        {
            var k = m.Kernel;
            var st = new Kernel.SchedulerState(r.I32(), r.U64(), r.U64(), r.Bool(), r.Bool(), r.U32());
            var nic = r.Bool() ? ReadNic(r, options) : null;
            var pipes = new Pipe[r.Count()];
            for (int i = 0; i < pipes.Length; i++)
            {
                var pipe = new Pipe(r.U64()) { Readers = r.I32(), Writers = r.I32() };
                var c = r.Bytes(r.Count(Pipe.Capacity));
                pipe.Put(c);
                pipes[i] = pipe;
            }
            var files = new OpenFile[r.Count()];
            for (int i = 0; i < files.Length; i++)
            {
                var kind = (Kind)r.U8();
                string path = r.Str();
                int flags = r.I32();
                long offset = r.I64();
                int refs = r.I32();
                Pipe PipeAt(int ix) => ix >= 0 && ix < pipes.Length ? pipes[ix] : throw new SnapshotFormatException($"pipe {ix} of {pipes.Length}");
                OpenFile f = kind switch
                {
                    Kind.Stdio => StdioAt(r.I32()),
                    Kind.PipeRead => new PipeReader(PipeAt(r.I32()), 0),
                    Kind.PipeWrite => new PipeWriter(PipeAt(r.I32()), 0),
                    Kind.File => new HostFile { Directory = r.Bool() },
                    Kind.Socket => ReadSocket(r, new HostSocket()),
                    Kind.Reset => new ResetConnection(ReadSocket(r, new HostSocket())) { Reported = r.Bool() },
                    Kind.Epoll => new EpollFile(),
                    Kind.EventFd => new EventFdFile { Counter = r.U64(), Semaphore = r.Bool() },
                    Kind.TimerFd => new TimerFdFile { Clock = r.I32(), ExpiryNs = r.I64(), IntervalNs = r.I64() },
                    Kind.Virtual => ReadVirtual(r, nic),
                    _ => throw new SnapshotFormatException($"unknown open file kind {(byte)kind}"),
                };
                f.GuestPath = path; f.StatusFlags = flags; f.Offset = offset; f.RefCount = refs;
                files[i] = f;
            }
            foreach (var ep in files.OfType<EpollFile>())
            {
                int n = r.Count(FdTable.MaxFd + 1);
                for (int j = 0; j < n; j++)
                {
                    int fd = r.I32(), ix = r.I32();
                    if (fd < 0 || fd > FdTable.MaxFd || ix < 0 || ix >= files.Length || ReferenceEquals(files[ix], ep) || !ep.Entries.TryAdd(fd, new EpollEntry { File = files[ix], Events = r.U32(), Data = r.U64() }))
                        throw new SnapshotFormatException($"epoll entry {fd} -> description {ix}");
                }
            }

            int nproc = r.Count(1 << 16);
            if (nproc == 0) throw new SnapshotFormatException("a snapshot without processes");
            var procs = new List<Process>(nproc);
            var parents = new List<int>();
            var children = new List<int[]>();
            var threads = new Dictionary<int, GuestThread>();
            for (int i = 0; i < nproc; i++)
            {
                var mem = new GuestMemory();
                var p = new Process(mem, k.NewCodeCache(mem), new FdTable(), "/");
                procs.Add(p);
                p.Pid = r.I32(); p.Ppid = r.I32(); p.Pgid = r.I32(); p.Sid = r.I32();
                parents.Add(r.I32());
                var ch = new int[r.Count()];
                for (int j = 0; j < ch.Length; j++) ch[j] = r.I32();
                children.Add(ch);
                p.Cwd = r.Str(); p.Umask = r.I32(); p.BrkStart = r.U64(); p.BrkCur = r.U64();
                for (int s = 0; s <= Sig.Max; s++) { var a = p.Actions[s]; a.Handler = r.U64(); a.Flags = r.U64(); a.Restorer = r.U64(); a.Mask = r.U64(); }
                p.Pending = r.U64(); p.Name = r.Str(); p.Exited = r.Bool(); p.WaitStatus = r.I32(); p.ExitSignal = r.I32(); p.DeathSignal = r.I32();
                p.Stopped = r.Bool(); p.StopReport = r.I32(); p.ContinueReport = r.Bool();
                bool childSignal = r.Bool(); int csCode = r.I32(), csPid = r.I32(), csStatus = r.I32();
                p.ChildSignal = childSignal ? new ChildEvent(csCode, csPid, csStatus) : null;
                p.Instructions = r.U64(); p.ChildInstructions = r.U64(); p.MaxRssPages = r.I64(); p.ChildMaxRssPages = r.I64();
                var lp = new LoadedProgram { Entry = r.U64(), LoadBias = r.U64(), PhdrAddr = r.U64(), PhNum = r.I32(), PhEnt = r.I32(), BrkStart = r.U64(), IsPie = r.Bool(), Interpreter = r.OptStr() };
                p.Start = new StartImage { Program = lp, InterpreterBase = r.U64(), StartRip = r.U64(), ExecPath = r.Str(), BinaryPath = r.Str(), Argv = r.Strs() };
                p.Program = lp;
                p.ProgramGuestPath = r.Str();
                p.Auxv = new ulong[r.Count()];
                for (int j = 0; j < p.Auxv.Length; j++) p.Auxv[j] = r.U64();
                p.Environment = r.Strs();
                var vmas = new Vma[r.Count()];
                ulong prevEnd = 0;
                for (int j = 0; j < vmas.Length; j++)
                {
                    var v = new Vma { Start = r.U64(), End = r.U64(), Prot = (Prot)r.I32(), Name = r.Str(), FileOffset = r.I64(), Shared = r.Bool(), BeyondEof = r.U64() };
                    if (v.Start < prevEnd || v.End <= v.Start || v.End > GuestMemory.AddressLimit || ((v.Start | v.End) & GuestMemory.PageMask) != 0)
                        throw new SnapshotFormatException($"mapping {v} of process {p.Pid} is not page-aligned, sorted and inside the address space");
                    prevEnd = v.End;
                    vmas[j] = v;
                }
                mem.RestoreLayout(vmas);
                int nfd = r.Count(FdTable.MaxFd + 1);
                for (int j = 0; j < nfd; j++)
                {
                    int fd = r.I32(), ix = r.I32();
                    bool cloexec = r.Bool();
                    if (fd < 0 || fd > FdTable.MaxFd || p.Fds.ContainsKey(fd) || ix < 0 || ix >= files.Length) throw new SnapshotFormatException($"descriptor {fd} -> description {ix} of process {p.Pid}");
                    p.Fds.InstallAt(fd, files[ix], cloexec);
                }
                int nthr = r.Count(k.MaxThreads);
                for (int j = 0; j < nthr; j++)
                {
                    var t = ReadThread(r, k, p);
                    if (!threads.TryAdd(t.Tid, t)) throw new SnapshotFormatException($"thread {t.Tid} appears twice");
                    p.Threads.Add(t);
                }
            }
            var byPid = new Dictionary<int, Process>();
            foreach (var p in procs) if (!byPid.TryAdd(p.Pid, p)) throw new SnapshotFormatException($"process {p.Pid} appears twice");
            int nzombies = r.Count(1 << 16);
            for (int i = 0; i < nzombies; i++)
            {
                var zmem = new GuestMemory();
                var z = new Process(zmem, k.NewCodeCache(zmem), new FdTable(), "/");
                zmem.Dispose(); // a zombie has no memory left
                z.Pid = r.I32(); z.Ppid = r.I32(); z.Pgid = r.I32(); z.Sid = r.I32(); z.Name = r.Str(); z.Umask = r.I32(); z.Pending = r.U64();
                z.Exited = r.Bool(); z.WaitStatus = r.I32(); z.ExitSignal = r.I32(); z.Stopped = r.Bool(); z.StopReport = r.I32(); z.ContinueReport = r.Bool();
                z.Instructions = r.U64(); z.ChildInstructions = r.U64(); z.MaxRssPages = r.I64(); z.ChildMaxRssPages = r.I64();
                if (!byPid.TryAdd(z.Pid, z)) throw new SnapshotFormatException($"process {z.Pid} appears twice");
            }
            for (int i = 0; i < nproc; i++)
            {
                procs[i].Parent = parents[i] < 0 ? null : byPid.GetValueOrDefault(parents[i]) ?? throw new SnapshotFormatException($"parent {parents[i]} of process {procs[i].Pid} is missing");
                foreach (int c in children[i])
                {
                    var child = byPid.GetValueOrDefault(c) ?? throw new SnapshotFormatException($"child {c} of process {procs[i].Pid} is missing");
                    procs[i].Children.Add(child);
                    if (!procs.Contains(child)) child.Parent = procs[i];
                }
            }
            var order = new List<GuestThread>();
            int norder = r.Count(threads.Count);
            for (int i = 0; i < norder; i++) order.Add(threads.GetValueOrDefault(r.I32()) ?? throw new SnapshotFormatException("the scheduler names a thread that is missing"));
            var current = threads.GetValueOrDefault(r.I32()) ?? throw new SnapshotFormatException("the running thread is missing");
            int ntimers = r.Count(1 << 16);
            var timers = new List<Kernel.TimerState>();
            var timerIds = new HashSet<int>();
            for (int i = 0; i < ntimers; i++)
            {
                var t = new Kernel.TimerState(r.I32(), r.I32(), r.I32(), r.Bool(), r.I64(), r.I64());
                if (t.Id < -3 || !timerIds.Add(t.Id) || t.Signal is < 0 or > Sig.Max) throw new SnapshotFormatException($"timer {t.Id} (signal {t.Signal})");
                timers.Add(t);
            }
            int nwaits = r.Count(threads.Count);
            var waits = new List<(GuestThread, Kernel.NetWaitState)>();
            for (int i = 0; i < nwaits; i++)
            {
                var nw = new Kernel.NetWaitState(r.I32(), r.I32(), r.U64(), r.I64());
                var t = threads.GetValueOrDefault(nw.Tid);
                if (t == null || nic == null || waits.Any(x => x.Item1 == t)) throw new SnapshotFormatException($"a network wait of thread {nw.Tid}");
                waits.Add((t, nw));
            }
            if (!r.AtEnd) throw new SnapshotFormatException("bytes after the kernel section's end");

            // memory: per process, its pages in runs, in strictly increasing address order. The state digest is
            // accumulated here, from the restored threads and from each page's bytes as this address space now holds
            // them (read back after the store), in StateDigest.Compute's order: the address spaces start empty and
            // the order is enforced, so the pages digested are exactly the machine's, and nothing runs the machine
            // before the check, which thus equals a digest of the whole restored machine without a second pass over
            // its memory
            var digest = new StateDigest.Builder();
            foreach (var p in procs)
            {
                foreach (var t in p.Threads) digest.Thread(t.Cpu.State);
                string pagesOf = $"the pages of process {p.Pid}";
                ulong next = 0; // the lowest page number the next run may start at
                while (true)
                {
                    int n = input.I32(pagesOf);
                    if (n == 0) break;
                    ulong first = input.U64(pagesOf);
                    var prot = (Prot)input.U8(pagesOf);
                    if (n is < 0 or > RunPages || first < next || first > (GuestMemory.AddressLimit >> GuestMemory.PageShift) - (ulong)n)
                        throw new SnapshotFormatException($"a run of {n} pages at page 0x{first:x} of process {p.Pid} (runs ascend, at most {RunPages} pages, inside the address space)");
                    for (int j = 0; j < n; j++)
                    {
                        ulong pn = first + (ulong)j;
                        if (p.Mem.FindVma(pn << GuestMemory.PageShift) == null) throw new SnapshotFormatException($"page 0x{pn << GuestMemory.PageShift:x} of process {p.Pid} lies outside its mappings");
                        var stored = p.Mem.RestorePage(pn, prot, input.Take(PageBytes, pagesOf));
                        digest.Page(pn, prot, stored);
                    }
                    next = first + (ulong)n;
                }
            }
            int filesLen = input.I32("the file section's length");
            if (filesLen is < 0 or > MaxSectionBytes) throw new SnapshotFormatException($"a file section of {filesLen} bytes");
            var fileBytes = input.Block(filesLen, "the file section");
            var claimed = input.Take(16, "the state digest").ToArray();
            var sha = input.EndHash();
            var trailer = input.Take(32, "the SHA-256 trailer");
            long length = input.Position;
            if (!trailer.SequenceEqual(sha))
                throw new SnapshotFormatException($"the snapshot's {length} bytes do not match their SHA-256 (damaged or cut off in transfer)");
            if (!input.AtEnd()) throw new SnapshotFormatException($"bytes after the snapshot's end (at byte {length})");
            var fileSection = DecodeFiles(fileBytes, 0, fileBytes.Length);
            k.InstallRestored(procs, order, current, st);
            k.RestoreTimers(timers);
            if (nic != null) k.RestoreNet(nic, waits);

            // the restored machine must be the one the snapshot describes
            byte[] computed = k.Processes.SequenceEqual(procs)
                ? digest.Finish(k.Nic?.Stack.Digest())
                : StateDigest.Compute(k); // (the kernel ordered the processes otherwise: digest the machine as it is)
            if (!claimed.AsSpan().SequenceEqual(computed))
                throw new SnapshotRefusedException($"the restored machine's state digest {Convert.ToHexString(computed)} differs from the snapshot's {Convert.ToHexString(claimed)} (a page or register is missing or changed)");
            var again = EncodeKernel(k, point, SHA256.HashData(encodedHeader));
            if (!again.AsSpan().SequenceEqual(kernelSection))
                throw new SnapshotRefusedException($"the restored kernel state re-encodes to {again.Length} bytes that differ from the snapshot's {kernelLen} (first difference at byte {FirstDiff(again, kernelSection)})");
            k.Changes.Seed(fileSection.Changed);
            point = point with { Bytes = length, Digest = Convert.ToHexString(computed) };
            if (applyFiles) point = point with { FilesDigest = ApplyFiles(k, fileSection) };
            return (m, point);
        }
        catch
        {
            m.Dispose();
            throw;
        }
    }

    static StdioFile StdioAt(int fd) => fd is >= 0 and <= 2 ? new StdioFile(fd) : throw new SnapshotFormatException($"stdio descriptor {fd}");

    static int FirstDiff(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
        return n;
    }

    static GuestThread ReadThread(Reader r, Kernel k, Process p)
    {
        int tid = r.I32();
        byte state = r.U8();
        if (state > (byte)ThreadState.Dead) throw new SnapshotFormatException($"thread {tid} in state {state}");
        var s = new CpuState();
        for (int i = 0; i < 16; i++) s.R[i] = r.U64();
        s.Rip = r.U64(); s.Rflags = r.U64(); s.FsBase = r.U64(); s.GsBase = r.U64();
        for (int i = 0; i < 32; i++) s.Xmm[i] = r.U64();
        s.Mxcsr = r.U32();
        for (int i = 0; i < 8; i++) s.Fpr[i] = Float80.FromBytes(r.Bytes(10));
        s.FpTop = r.I32(); s.Fcw = r.U16(); s.Fsw = r.U16(); s.FpEmpty = r.U8();
        if (s.FpTop is < 0 or > 7) throw new SnapshotFormatException($"thread {tid}: x87 top {s.FpTop}");
        var cpu = k.NewCpu(p, tid);
        cpu.State = s;
        cpu.InstructionCount = r.U64(); cpu.BranchCount = r.U64(); cpu.Yield = r.Bool();
        var t = new GuestThread(cpu, p) { State = (ThreadState)state };
        t.SigMask = r.U64();
        bool hasMask = r.Bool();
        ulong mask = r.U64();
        t.MaskAfterSuspend = hasMask ? mask : null;
        t.ClearChildTid = r.U64(); t.FutexAddr = r.U64(); t.FutexBitset = r.U32(); t.FutexTimed = r.Bool(); t.FutexWoken = r.Bool();
        t.Parked = r.Bool(); t.ParkedNr = r.I32(); t.WakesOnVmChange = r.Bool(); t.HostWait = r.U32(); t.WaitSeq = r.U32();
        t.PartialDone = r.I64(); t.AlsoWaitsInVm = r.Bool(); t.AltSp = r.U64(); t.AltSize = r.U64(); t.AltFlags = r.I32();
        bool hasDeadline = r.Bool(); long deadline = r.I64();
        t.LoggedDeadline = hasDeadline ? deadline : null;
        return t;
    }

    /// <summary>Writes the snapshot to <paramref name="output"/> front to back (the pages read from the captures run by
    /// run, the state digest and SHA-256 accumulated as they are written); returns its length and state digest.</summary>
    internal static (long Bytes, byte[] Digest) Write(Stream output, byte[] kernel, IReadOnlyList<(CpuState[] Threads, MemoryCapture Mem)> procs, byte[]? net, byte[] files, SnapshotPlant plant)
    {
        using var w = new SnapshotOutput(output);
        w.Bytes(Magic); w.U32(Version); w.I32(kernel.Length); w.Bytes(kernel);
        var digest = new StateDigest.Builder();
        bool omitted = false;
        foreach (var (threads, mem) in procs)
        {
            digest.Threads(threads);
            // each batch (the pages in address order, copied once from the capture) is written as runs of contiguous
            // pages of one protection; a run ends at a batch's end at the latest
            mem.ReadPages(RunPages, (numbers, prots, bytes, last) =>
            {
                int n = numbers.Length;
                for (int k = 0; k < n; k++) digest.Page(numbers[k], prots[k], bytes.Slice(k * PageBytes, PageBytes));
                // planted (tests and drills only): the last page of the first process that has one is left out (the
                // digest has it, so the restore must notice)
                if (last && plant == SnapshotPlant.OmitPage && !omitted && n > 0) { n--; omitted = true; }
                for (int i = 0; i < n;)
                {
                    int j = i + 1;
                    while (j < n && numbers[j] == numbers[j - 1] + 1 && prots[j] == prots[i]) j++;
                    w.I32(j - i); w.U64(numbers[i]); w.U8((byte)prots[i]);
                    w.Bytes(bytes[(i * PageBytes)..(j * PageBytes)]);
                    i = j;
                }
            });
            w.I32(0);
        }
        w.I32(files.Length);
        w.Bytes(files);
        var d = digest.Finish(net);
        w.Bytes(d);
        w.Trailer();
        return (w.Position, d);
    }
}

/// <summary>
/// A snapshot taken but not yet encoded: the kernel section and a capture of every address space. The guest runs on
/// meanwhile (its first store to a page the capture has not read copies it); <see cref="Encode"/> reads the captures on
/// any thread and <see cref="Dispose"/> ends them.
/// </summary>
public sealed class SnapshotCapture : IDisposable
{
    readonly byte[] _kernel;
    readonly List<(CpuState[] Threads, MemoryCapture Mem)> _procs;
    readonly byte[]? _net;
    readonly byte[] _files;
    int _disposed;

    internal SnapshotCapture(byte[] kernel, List<(CpuState[], MemoryCapture)> procs, byte[]? net, byte[] files, ulong sequence, long pages, TimeSpan pause, TimeSpan pauseCpu)
    {
        _files = files;
        PauseCpu = pauseCpu;
        _kernel = kernel;
        _procs = procs;
        _net = net;
        Sequence = sequence;
        Pages = pages;
        Pause = pause;
    }

    /// <summary>The last log record the snapshot includes.</summary>
    public ulong Sequence { get; }
    /// <summary>How long the guest was stopped for the capture.</summary>
    public TimeSpan Pause { get; }
    /// <summary>The guest thread's CPU time for the capture.</summary>
    public TimeSpan PauseCpu { get; }
    /// <summary>Pages of the captured address spaces.</summary>
    public long Pages { get; }
    /// <summary>Paths whose state the snapshot carries (0: it carries no files) and their files' bytes.</summary>
    public int FileEntries { get; init; }
    public long FileBytes { get; init; }
    /// <summary>SHA-256 (hex) of the files' state the snapshot carries ("" when it carries none): what the replica that
    /// restores it reads back from its root.</summary>
    public string FilesDigest { get; init; } = "";
    /// <summary>Pages the guest changed while the capture was read (their bytes at the capture were copied first).</summary>
    public long Preserved => _procs.Sum(p => (long)p.Mem.Preserved);

    /// <summary>The snapshot's bytes (with its state digest and SHA-256) in one array; the captures end afterwards.</summary>
    public byte[] Encode(SnapshotPlant plant = SnapshotPlant.None)
    {
        var ms = new MemoryStream();
        EncodeTo(ms, plant);
        return ms.ToArray();
    }

    /// <summary>Writes the snapshot to <paramref name="output"/> as it is encoded (run by run: nothing holds it whole);
    /// the captures end afterwards. Returns its length and its state digest.</summary>
    public (long Bytes, byte[] Digest) EncodeTo(Stream output, SnapshotPlant plant = SnapshotPlant.None)
    {
        try { return MachineSnapshot.Write(output, _kernel, _procs, _net, _files, plant); }
        finally { Dispose(); }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var (_, mem) in _procs) mem.Dispose();
    }
}

/// <summary>A running machine that can be captured at its next instruction boundary (a recording boundary: its
/// guest thread runs the action at its next stop, with the log up to <see cref="Point"/> in the sink).</summary>
public interface ISnapshotSource
{
    void RunAtNextStop(Action<Kernel> action);
    /// <summary>Where the log stands (read inside the action).</summary>
    SnapshotPoint Point { get; }
}
