using System.Text;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Replay;

/// <summary>Builds the log header of a recording from the machine's options.</summary>
public static class Recording
{
    /// <summary>
    /// Instructions between periodic checkpoints when the recorder is not told (`--checkpoint-interval`). Each
    /// checkpoint hashes every thread's registers and every materialised page (<see cref="StateDigest"/>) and stops the
    /// compiled tier's region, so its cost grows with the guest's memory; the compiled tier runs about 1 G instructions
    /// a second, so 200 M is about five checkpoints a second there (one every 1-2 s interpreted), where the old 20 M
    /// was about fifty. What the larger window costs: a divergence that shows in no syscall, signal or output is
    /// located only between the last checkpoint that matched and the first that did not (up to 200 M instructions
    /// apart, both named by the replay); a recording made with a smaller interval narrows it.
    /// </summary>
    public const ulong DefaultCheckpointInterval = 200_000_000;

    /// <summary>The header of a recording of <paramref name="programImage"/> under <paramref name="o"/>, in format
    /// <paramref name="version"/> (an older one only for tests of what older logs do: its program hash is of its kind).</summary>
    public static LogHeader Header(MachineOptions o, ReadOnlyMemory<byte> programImage, ulong checkpointInterval, ushort version = LogFormat.CurrentVersion)
        => Header(o, new HashedProgram(new StartProgram("", programImage), LogHeader.ComputeProgramHash(programImage.Span, version), version), checkpointInterval);

    /// <summary>The header of a recording of a program read with <see cref="ReadProgram"/>, in its format version.</summary>
    public static LogHeader Header(MachineOptions o, HashedProgram program, ulong checkpointInterval)
    {
        var env = o.GuestEnvironment();
        o.Env = env; // the recorded run and its replays see exactly this environment
        // the recorded run answers clock reads between events as its replays will (an older version's log: never)
        o.ClockReadsBetweenEvents = program.Version == LogFormat.CurrentVersion;
        return new LogHeader
        {
            Version = program.Version,
            Flags = o.ClockReadsBetweenEvents ? LogFlags.ClockReadsBetweenEvents : LogFlags.None,
            ProgramHash = program.Hash,
            CpuModel = Cpu.CpuModel.Description,
            RootDirectory = Path.GetFullPath(o.Root),
            Argv = o.Argv(),
            Envp = env,
            StartTime = DateTimeOffset.UtcNow,
            StartState = Encoding.UTF8.GetBytes("cwd=" + o.Cwd + (o.Net != null ? "\nnet=" + o.Net.Identity : "")),
            CheckpointInterval = checkpointInterval,
        };
    }

    /// <summary>
    /// Where periodic checkpoints go, one rule for the recorder and the replay: the recorder takes one at its first
    /// stop at or after <see cref="NextCheckpoint"/> (the first at the interval, then the interval after the last
    /// one); an interval of 0 means none. A replay that knows the rule can tell that a checkpoint was removed.
    /// </summary>
    public static ulong FirstCheckpoint(ulong interval) => interval == 0 ? ulong.MaxValue : interval;

    /// <inheritdoc cref="FirstCheckpoint"/>
    public static ulong NextCheckpoint(ulong at, ulong interval)
        => interval == 0 || at > ulong.MaxValue - interval ? ulong.MaxValue : at + interval;

    /// <summary>The machine a header describes (under another root when given).</summary>
    /// <exception cref="LogFormatException">The header cannot be run (<see cref="LogHeader.NotRunnable"/>).</exception>
    /// <remarks><paramref name="hearsPrimary"/>: this replica's device hears the primary's frames (<see cref="VirtualNetOptions.HearsPrimary"/>),
    /// read by a thread that <paramref name="raiseHearing"/> raises (<see cref="VirtualNetOptions.RaiseHearing"/>).</remarks>
    public static MachineOptions OptionsFrom(LogHeader h, string? rootOverride, string? tap = null, string? netns = null, bool hearsPrimary = false,
        Func<bool>? raiseHearing = null)
    {
        if (h.NotRunnable() is string why) throw new LogFormatException($"the log header cannot be run: {why}");
        // start state: "cwd=DIR", then "net=A.B.C.D/N MAC [WORDS]" (VirtualNetOptions.Identity) when the guest has a virtual interface (one per line)
        var lines = Encoding.UTF8.GetString(h.StartState).Split('\n');
        string cwd = lines[0].StartsWith("cwd=") ? lines[0].Substring(4) : "/";
        string? net = lines.Skip(1).FirstOrDefault(l => l.StartsWith("net="))?.Substring(4);
        return new MachineOptions
        {
            // the replica's own wire: a replay never opens it, a backup that goes live uses its own (--tap, --netns)
            Net = net == null ? null : VirtualNetOptions.FromIdentity(net, tap ?? VirtualNetOptions.DefaultTap, netns) is { } o ? o with { HearsPrimary = hearsPrimary, RaiseHearing = hearsPrimary ? raiseHearing : null }
                : throw new LogFormatException($"the log's start state names a malformed network interface or a stack behaviour this build does not know: '{net}'"),
            Root = rootOverride ?? h.RootDirectory,
            Program = h.Argv[0],
            Args = h.Argv[1..],
            Env = h.Envp,
            Cwd = cwd,
            ClockReadsBetweenEvents = (h.Flags & LogFlags.ClockReadsBetweenEvents) != 0,
        };
    }

    /// <summary>
    /// The program <paramref name="o"/> names, read once, with its program hash for a log of <paramref name="version"/>
    /// taken from the very bytes read (the bytes that will be loaded). From v6 the hash is computed chunk by chunk as the
    /// file is read (<see cref="ProgramFile.ReadAll"/>), never over the image afterwards: that pass touched every page
    /// of a 2 MB image, ~5 ms of CPU at the start of every recording and replay on the hosts measured.
    /// </summary>
    /// <exception cref="ElfLoadException">The program is missing, not a regular file, or cannot be read.</exception>
    /// <param name="native">a large program is read into a <see cref="Abi.NativeImage"/> (huge pages: one fault where a
    /// 2 MB array took ~500, the start cost `run` already saves), which the caller owns: it disposes it after the
    /// machine (<see cref="Abi.NativeImage.Of"/> finds it). A v6+ log's read only.</param>
    public static HashedProgram ReadProgram(MachineOptions o, ushort version = LogFormat.CurrentVersion, bool native = false)
    {
        if (version < LogDigest.Xxh128Since)
        {
            var p = Kernel.ResolveProgram(o);
            return new HashedProgram(p, LogHeader.ComputeProgramHash(p.Image.Span, version), version);
        }
        var hash = new Xxh128();
        var program = Kernel.ResolveProgram(o, hash, native);
        return new HashedProgram(program, LogDigest.ProgramHash(hash), version);
    }

    /// <summary>
    /// The program a header names, found under <paramref name="opts"/>' root and read once (the bytes that will be
    /// loaded), or null with the reason: missing, not a regular file, unreadable, or not the recorded program (its
    /// program hash, of the log version's kind, differs from the header's).
    /// </summary>
    public static StartProgram? RecordedProgram(LogHeader h, MachineOptions opts, out string reason)
    {
        reason = "";
        HashedProgram p;
        try { p = ReadProgram(opts, h.Version); }
        catch (ElfLoadException e) { reason = $"the recorded program is missing or cannot be read: {e.Message}"; return null; }
        if (!p.Hash.AsSpan().SequenceEqual(h.ProgramHash))
        {
            reason = $"{p.Program.GuestPath} under the root {opts.Root} is not the program that was recorded (its {LogDigest.NameFor(h.Version)} differs from the log's {Convert.ToHexStringLower(h.ProgramHash)})";
            return null;
        }
        return p.Program;
    }
}

/// <summary>A program read for a log of format <paramref name="Version"/>: its bytes and its program hash of that
/// version's kind, of exactly those bytes (<see cref="Recording.ReadProgram"/>).</summary>
public sealed record HashedProgram(StartProgram Program, byte[] Hash, ushort Version);

/// <summary>Keeps a running digest and byte count of each output stream (stdout, stderr). Its state travels in a
/// snapshot (<see cref="Save"/>, <see cref="Resume"/>), so a replica restored from one continues the same chains.</summary>
public sealed class OutputDigests
{
    readonly ResumableXxHash64[] _h = { new(), new(), new() };

    /// <summary>The digest's length in bytes.</summary>
    public const int DigestLength = ResumableXxHash64.HashLength;

    /// <summary>Appends <paramref name="bytes"/> to stream <paramref name="fd"/>'s chain: its digest now goes to
    /// <paramref name="digest"/> (<see cref="DigestLength"/> bytes); returns the bytes written to it in all. (Not a
    /// tuple of the total and a new array: an output per write allocated the array, and the tuple over a ulong is
    /// generic code no ReadyToRun image holds, JIT-compiled at the first output of every recording.)</summary>
    public ulong Add(int fd, ReadOnlySpan<byte> bytes, Span<byte> digest)
    {
        int i = Math.Clamp(fd, 0, 2);
        _h[i].Append(bytes);
        _h[i].GetCurrentHash(digest);
        return _h[i].Length;
    }

    /// <summary>Bytes written to the stream so far (fd 0, 1, 2).</summary>
    public ulong Total(int fd) => _h[Math.Clamp(fd, 0, 2)].Length;

    public const int StateSize = 3 * ResumableXxHash64.StateSize;

    public void Save(Span<byte> d)
    {
        for (int i = 0; i < 3; i++) _h[i].SaveState(d.Slice(i * ResumableXxHash64.StateSize, ResumableXxHash64.StateSize));
    }

    /// <summary>An independent copy of the digests as they stand.</summary>
    public OutputDigests Copy()
    {
        var b = new byte[StateSize];
        Save(b);
        return Resume(b);
    }

    public static OutputDigests Resume(ReadOnlySpan<byte> s)
    {
        var o = new OutputDigests();
        for (int i = 0; i < 3; i++) o._h[i] = ResumableXxHash64.Resume(s.Slice(i * ResumableXxHash64.StateSize, ResumableXxHash64.StateSize));
        return o;
    }
}

/// <summary>
/// The boundary of a recording run: performs every host operation and appends its answer to the event log,
/// takes checkpoints every N instructions, and places asynchronous host events (timer signals, signals sent to
/// the recorder) at the block boundary where the guest noticed them, logging that exact position.
/// The log reaches its sink at every checkpoint and at least every <see cref="FlushInterval"/> (a timer asks the
/// guest thread, the writer's only user, to stop at its next block and flush), so a recorder killed with SIGKILL
/// loses only its last moments; the complete log ends with an End record (<see cref="LogWriter.Finish"/>).
/// </summary>
public sealed class RecordingBoundary : IBoundary, Snapshot.ISnapshotSource
{
    /// <summary>Longest time recorded events stay in the writer's buffers.</summary>
    public static readonly TimeSpan FlushInterval = TimeSpan.FromSeconds(1);

    readonly LogWriter _w;
    readonly ulong _interval;
    ulong _nextCheckpoint;
    /// <summary>The checkpoint digest of the log's format version.</summary>
    readonly Func<Kernel, byte[]> _digest;
    /// <summary>The by-reference content hash of the log's format version, and the array each read's hash goes to.</summary>
    readonly ContentHashKind _contentHash;
    readonly byte[] _hash;

    readonly OutputDigests _out = new();
    Kernel? _k;
    FlushTicker? _flushTicker;

    volatile bool _flushDue;

    public RecordingBoundary(LogWriter writer, ulong checkpointInterval)
    {
        _w = writer;
        _digest = StateDigest.ForLogVersion(writer.Header.Version);
        _contentHash = ContentHash.ForLogVersion(writer.Header.Version);
        _hash = new byte[ContentHash.Length(_contentHash)];
        _interval = checkpointInterval;
        _nextCheckpoint = Recording.FirstCheckpoint(checkpointInterval);
    }

    /// <summary>
    /// Goes on recording where a replay of the same log turned live (a backup that took over): the output totals
    /// and the next periodic checkpoint continue from the replay's, so a replay of the whole log — the records the
    /// old primary wrote, then these — sees one recording.
    /// </summary>
    public RecordingBoundary(LogWriter writer, RecordingContinuation from)
    {
        _w = writer;
        _digest = StateDigest.ForLogVersion(writer.Header.Version);
        _contentHash = ContentHash.ForLogVersion(writer.Header.Version);
        _hash = new byte[ContentHash.Length(_contentHash)];
        _interval = writer.Header.CheckpointInterval;
        _nextCheckpoint = from.NextCheckpoint;
        _out = from.Outputs;
    }

    /// <summary>The guest exits right after the replay consumed its final checkpoint (the old primary died between
    /// that record and its exit record): the exit follows without a second checkpoint.</summary>
    public void ExitAfterCheckpoint(int status)
    {
        Gate?.GuestEnded();
        _w.Append(new Exit { InstrCount = Icount, Status = status });
        _flushTicker?.Dispose();
        _flushTicker = null;
        _w.Finish();
    }

    /// <summary>
    /// Asks for a flush every <see cref="FlushInterval"/> on a thread of its own until disposed. A
    /// <see cref="Timer"/> would start the thread pool (a timer thread, a gate thread and a worker that spins before it
    /// sleeps) in a recording that otherwise never uses it. The thread holds its recording weakly: one abandoned
    /// without its exit (a test's, a failed run's) is collected, and the thread ends with it. The thread may be started
    /// ahead of its recording (<see cref="UseTicker"/>): <see cref="Thread.Start()"/> returns only once the new thread
    /// runs, a wait for a time slice on a loaded machine (up to ~70 ms at load 50-60 on 2 cores), which a survivor's
    /// go-live must not spend; until <see cref="Own"/> gives it its recording the thread only waits.
    /// <para>It waits on a monitor, not on wait handles: making the first ManualResetEvent of a process JIT-compiled a
    /// method of the runtime's type cache that no ReadyToRun image holds, in every recording and never in `run`.</para>
    /// </summary>
    public sealed class FlushTicker : IDisposable
    {
        /// <summary>Guards <see cref="_owner"/> and <see cref="_stopped"/>; pulsed when either changes.</summary>
        readonly object _gate = new(); // (an object: Monitor.Wait needs its monitor, which a Lock does not take)
        WeakReference<RecordingBoundary>? _owner;
        bool _stopped;

        /// <summary>Starts the ticker's thread (it asks for nothing until <see cref="Own"/>).</summary>
        public FlushTicker() => new Thread(Tick) { IsBackground = true, Name = "revirt log flush" }.Start();

        /// <summary>From now on the ticker asks <paramref name="owner"/> for its flushes (once; later calls are ignored).</summary>
        internal void Own(RecordingBoundary owner)
        {
            lock (_gate)
            {
                if (_owner != null) return;
                _owner = new WeakReference<RecordingBoundary>(owner);
                Monitor.PulseAll(_gate);
            }
        }

        void Tick()
        {
            WeakReference<RecordingBoundary> owner;
            lock (_gate)
            {
                while (!_stopped && _owner == null) Monitor.Wait(_gate);
                if (_stopped) return;
                owner = _owner!;
            }
            while (WaitInterval() && Ask(owner)) { }
        }

        /// <summary>Waits one <see cref="FlushInterval"/> (a wake-up before it waits on); false once stopped.</summary>
        bool WaitInterval()
        {
            long due = Environment.TickCount64 + (long)FlushInterval.TotalMilliseconds;
            lock (_gate)
            {
                for (long left; !_stopped && (left = due - Environment.TickCount64) > 0;) Monitor.Wait(_gate, (int)left);
                return !_stopped;
            }
        }

        static bool Ask(WeakReference<RecordingBoundary> owner)
        {
            if (!owner.TryGetTarget(out var b)) return false;
            b.RequestFlush();
            return true;
        }

        /// <summary>Stops the requests (one under way may still finish: it only sets flags); a ticker never owned ends
        /// its thread. Call once.</summary>
        public void Dispose()
        {
            lock (_gate)
            {
                _stopped = true;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>This recording's flush requests come from <paramref name="ticker"/>, a ticker started ahead of it (its
    /// thread already running), instead of one started when a kernel attaches. Before <see cref="Attach"/> only.</summary>
    public void UseTicker(FlushTicker ticker)
    {
        if (_flushTicker != null) throw new InvalidOperationException("the recording has a flush ticker already");
        _flushTicker = ticker;
    }

    void RequestFlush()
    {
        _flushDue = true;
        var c = _k?.Current?.Cpu;
        if (c != null) c.StopAt = 0; // stop at the next block boundary (AtStop flushes), as a host event does
    }

    /// <summary>Flushes if the timer asked for it (guest thread only).</summary>
    void FlushIfDue()
    {
        if (!_flushDue) return;
        _flushDue = false;
        Ship();
    }

    // ------------------------------------------------------------------ shipping records that hold output
    //
    // A record whose output waits in the gate (stdout/stderr, a socket send, a queued shutdown or close) must reach
    // the backup soon: its bytes leave only once the backup acknowledges it. It is shipped when the guest is about
    // to wait (a host call that parks its thread — a poll-family call, an accept or a read that finds nothing ready —,
    // a sleep, a futex wait, an idle machine) — a server answers every ready request of a round and then polls, so the
    // round's replies travel as one batch and come back as one acknowledgement, instead of one batch and one
    // acknowledgement per reply — or at the first syscall ShipAfterMicroseconds after it was logged. A poll that
    // finds requests ready does not ship: the guest does not wait, and the replies of the next requests join the
    // batch (shipping at every poll's entry sent a batch, and got an ack back, for every couple of requests when the
    // clients' next requests trickled in) — unless no batch is on its way: then the round's replies go at its end, and
    // later rounds gather behind them until their acknowledgement is back, when the ack thread ships them before it
    // releases that acknowledgement's output (Replication.ShipWindow holds these rules and the state they share).
    // The bound is 250 µs by default: each batch costs both replicas a send, a receive, an acknowledgement and a
    // wake-up or two (~100 µs of CPU for the pair on loopback), and a busy server that never parks had its rounds cut
    // into batches of ~7 replies by a 100 µs bound (kvserver, 16 and 64 connections: 0.14-0.17 batches per request);
    // at 250 µs, 64 connections cost both replicas ~30 % less CPU per request, and a server that runs out of requests
    // (its clients wait for the held replies) ships as it parks, well before the bound (docs/PERFORMANCE-replication.md).
    // A guest that computes on without a syscall has it shipped by the sink's own flush interval (the replication
    // client's flush thread, 2 ms): the recording adds no stop of its own to the guest's run, so where the guest
    // stops stays exactly where a replay stops. Shipping later changes what the backup holds when, never what
    // leaves: the gate holds each byte until the acknowledgement of its record.

    /// <summary>Default of <see cref="ShipAfterMicroseconds"/>.</summary>
    public const int DefaultShipAfterMicroseconds = 250;

    long _shipAfterTicks = System.Diagnostics.Stopwatch.Frequency * DefaultShipAfterMicroseconds / 1_000_000;

    /// <summary>Longest time (µs, measured at syscall entries) a record holding output waits on the guest thread before
    /// it is shipped (`primary protect --ship-after-us`). Longer gathers more replies per batch — fewer batches, acks and
    /// wake-ups on both replicas per request — and holds each reply up to that much longer.</summary>
    public int ShipAfterMicroseconds
    {
        init
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _shipAfterTicks = System.Diagnostics.Stopwatch.Frequency * value / 1_000_000;
        }
    }

    /// <summary>A record holding output was logged (guest thread): ship it before the guest waits, or by the rules of
    /// <see cref="Replication.ShipWindow"/>.</summary>
    void OutputLogged(ulong seq) => Gate!.Shipping.OutputLogged(seq);

    /// <summary>Everything logged reaches the sink (the backup) now (guest thread).</summary>
    void Ship()
    {
        _w.EndContentRun();
        Gate?.Shipping.Shipped(_w.LastSequence);
        _w.Flush();
    }

    /// <summary>For each batch that carried a record holding output, how long the oldest such record waited before it
    /// was shipped (null: a plain recording, which has no gate).</summary>
    public Replication.LatencyHistogram? ShipWaits => Gate?.Shipping.Waits;

    /// <summary>Calls after which the guest usually waits or yields without a host call that could tell (in-VM waits,
    /// sleeps): records holding output are shipped before them. Host calls that may wait (poll, accept, reads) ship
    /// when they park the thread (<see cref="Syscall"/>).</summary>
    static bool MayWait(int nr) => nr is Nr.nanosleep or Nr.clock_nanosleep or Nr.pause or Nr.wait4 or Nr.waitid or Nr.rt_sigsuspend
        or Nr.rt_sigtimedwait or Nr.sched_yield or Nr.futex;

    /// <summary>Calls with which an event-driven server ends a round (it answered what was ready and asks what is ready
    /// next), whether or not they then wait.</summary>
    static bool EndsRound(int nr) => nr is Nr.poll or Nr.ppoll or Nr.select or Nr.pselect6 or Nr.epoll_wait or Nr.epoll_pwait or Nr.epoll_pwait2;

    /// <summary>At a syscall's entry (guest thread): ship what holds output if the guest may wait now, or when the
    /// window says it is due (<see cref="Replication.ShipWindow.DueAtCall"/>: the bound passed, or no batch is on its
    /// way and the round ends, its acknowledgement came, or it waited about a round trip).</summary>
    void ShipBeforeCall(int nr)
    {
        // a plain recording has no gate: nothing holds output, nothing is shipped early
        if (Gate?.Shipping is not { } window) return;
        if (window.OutputWaits && (MayWait(nr) || window.DueAtCall(EndsRound(nr), _shipAfterTicks))) Ship();
    }

    // actions another thread asked to run on the guest thread at an instruction boundary (a snapshot for a standby)
    // (ReVirt's own queue, not ConcurrentQueue: that type's assembly was loaded by every recording for this alone)
    readonly HostEventQueue<Action<Kernel>> _atStop = new();

    /// <summary>
    /// Runs <paramref name="action"/> on the guest thread at its next stop, or where it idles (every thread waits):
    /// an instruction boundary at which the log holds everything up to <see cref="Point"/> and the sink has it all.
    /// Any thread; the action must not throw.
    /// </summary>
    public void RunAtNextStop(Action<Kernel> action)
    {
        _atStop.Enqueue(action);
        var c = _k?.Current?.Cpu;
        if (c != null) c.StopAt = 0;
        _k?.Interrupt();
    }

    /// <summary>A machine whose threads all wait for its virtual interface never idles (<see cref="Idle"/>): the
    /// actions asked for run where it is about to wait on the host for the interface.</summary>
    public void AtNetworkWait(Kernel kernel) => RunRequested(kernel);

    void RunRequested(Kernel kernel)
    {
        if (_atStop.IsEmpty) return;
        _w.Flush();
        while (_atStop.TryDequeue(out var a)) a(kernel);
    }

    /// <summary>Where the log stands (guest thread only): the last record, the next checkpoint and the output digests.</summary>
    public Snapshot.SnapshotPoint Point => new(_w.LastSequence, _nextCheckpoint, _out.Copy());

    /// <summary>The log's encoded header.</summary>
    public byte[] EncodedHeader => _w.Header.Encode();

    /// <summary>Checkpoint digests computed (periodic and final) and the guest thread's CPU time in them (ns), for
    /// --stats: what checkpoints cost a recording, counted.</summary>
    public int Checkpoints { get; private set; }
    public long CheckpointCpuNs { get; private set; }

    byte[] Digest(Kernel kernel)
    {
        long began = HostWorkAccount.ThreadNow();
        var d = _digest(kernel);
        CheckpointCpuNs += HostWorkAccount.ThreadNow() - began;
        Checkpoints++;
        return d;
    }

    public bool Replaying => false;
    public long Records => (long)_w.LastSequence;
    public long LogBytes => _w.BytesWritten;

    public void Attach(Kernel k)
    {
        _k = k;
        _guestBytes = new GuestBytes(k);
        _flushTicker ??= new FlushTicker();
        _flushTicker.Own(this);
    }

    ulong Icount => _k?.Current?.Cpu.InstructionCount ?? 0;

    /// <summary>
    /// Output commit (protected primary): when set, guest writes to stdout/stderr are logged as complete and their
    /// bytes are handed to the gate, which releases them once the backup holds the log up to their record.
    /// </summary>
    public Replication.OutputGate? Gate { get; init; }

    public HostResult Output(int tid, int nr, int fd, byte[] data, Func<HostResult> perform)
    {
        if (Gate == null) return Syscall(tid, nr, perform);
        ShipBeforeCall(nr);
        _w.Append(new SyscallResult { InstrCount = Icount, Tid = tid, Nr = nr, Result = data.Length });
        return HostResult.Of(data.Length);
    }

    /// <summary>
    /// Output commit for sockets: with a gate, the send is accepted at once within the socket's credit (its
    /// result logged as any syscall's) and its bytes wait in the gate until the backup holds the log up to this
    /// record; the record is shipped at once, so the acknowledgement comes back as soon as the link allows.
    /// </summary>
    public HostResult Send(int tid, int nr, in SocketSend send)
    {
        if (Gate == null) { var s = send; return Syscall(tid, nr, () => s.Unheld()); }
        ShipBeforeCall(nr);
        long n = Gate.AcceptSend(send, _shipBeforeCreditWait ??= () => { if (Gate.Shipping.OutputWaits) Ship(); });
        ulong seq = _w.Append(new SyscallResult { InstrCount = Icount, Tid = tid, Nr = nr, Result = n });
        if (n < 0) return HostResult.Of(n);
        OutputLogged(seq);
        Gate.HoldSend(seq, send, (int)n);
        return HostResult.Of(n);
    }

    /// <summary>A shutdown or last close of a socket whose bytes are still held runs after them (the guest gets 0 now).</summary>
    public HostResult SocketEnd(int tid, int nr, object socket, Func<HostResult> perform, bool reexecuteOnReplay)
    {
        if (Gate == null || !Gate.Holds(socket))
        {
            var r = Syscall(tid, nr, perform, reexecuteOnReplay);
            if (nr == Nr.close) Gate?.Forget(socket);
            return r;
        }
        ulong seq = _w.Append(new SyscallResult { InstrCount = Icount, Tid = tid, Nr = nr, Result = 0 });
        OutputLogged(seq);
        Gate.HoldEnd(seq, socket, perform, nr == Nr.close);
        return HostResult.Of(0);
    }

    /// <summary>
    /// With a gate that holds file writes (the backup shares the guest's storage): the write is logged as done, with
    /// the absolute offset it goes to and how far the primary had released (<see cref="Replication.HeldWriteRecord"/>),
    /// and its bytes wait in the gate until the backup holds this record. Writes to anything but a regular file, and
    /// through a read-only description (EBADF), go as before. A write at the file offset moves the host descriptor's offset now, as the write would have.
    /// </summary>
    public HostResult FileWrite(int tid, int nr, GuestFileWrite w)
    {
        var files = Gate?.Files;
        if (files == null || w.Data.Length == 0 || !w.Writable || Replication.FileOutput.Identify(w.HostFd) is not { Regular: true } id)
            return Syscall(tid, nr, w.Perform, reexecuteOnReplay: true);
        ShipBeforeCall(nr);
        // O_APPEND goes to the end even for pwrite, as Linux does
        long at = w.Append ? files.EndOf(id.File, w.HostFd) : w.Offset >= 0 ? w.Offset : w.FileOffset;
        long dup = HostSys.Call(Nr.fcntl, w.HostFd, F.DUPFD_CLOEXEC, 0);
        if (dup < 0) return Logged(tid, nr, HostResult.Of(dup));
        ulong seq = _w.Append(new SyscallResult
        {
            InstrCount = Icount, Tid = tid, Nr = nr, Result = w.Data.Length,
            Data = Replication.HeldWriteRecord.Encode(at, files.ReleasedThrough),
        });
        OutputLogged(seq);
        if (w.Offset < 0) HostSys.Call(Nr.lseek, w.HostFd, at + w.Data.Length, Seek.SET);
        Gate!.HoldFileWrite(new Replication.HeldFileWrite(seq, id.File, (int)dup, at, w.Data) { Errors = w.Errors });
        return HostResult.Of(w.Data.Length);
    }

    /// <summary>
    /// With a gate that holds file writes: a change of names or size is predicted from the storage (the kernel settled
    /// everything held first, so the storage is the guest's view), and when it succeeds it is logged as done (its
    /// record carries <see cref="Replication.HeldChangeRecord"/>) and held like a write; a predicted error is logged
    /// as an ordinary result (nothing changes). renameat2 flags the prediction does not know make the change at once.
    /// </summary>
    public HostResult StorageChange(int tid, int nr, GuestStorageChange c)
    {
        var files = Gate?.Files;
        if (files == null || _k == null) return Syscall(tid, nr, c.Perform, reexecuteOnReplay: true);
        ShipBeforeCall(nr);
        var p = Replication.StorageChanges.Predict(_k.Fs, c);
        if (p.FallBack != null) files.NoteOnce(p.FallBack);
        if (p.Unpredictable) return Syscall(tid, nr, c.Perform, reexecuteOnReplay: true);
        if (p.Result < 0) return Logged(tid, nr, HostResult.Of(p.Result));
        ulong seq = _w.Append(new SyscallResult
        {
            InstrCount = Icount, Tid = tid, Nr = nr, Result = p.Result,
            Data = Replication.HeldChangeRecord.Encode(files.ReleasedThrough, p.File),
        });
        OutputLogged(seq);
        Gate!.HoldFileWrite(Replication.StorageChanges.Hold(seq, c, p));
        return HostResult.Of(p.Result);
    }

    /// <summary>Held changes are made before the guest looks at its storage: what they wait for is shipped
    /// first, then the guest thread waits for the acknowledgement (one round trip).</summary>
    public void SettleFiles(int tid)
    {
        if (Gate?.Files is not { Pending: true } files) return;
        Ship();
        files.WaitReleased();
    }

    /// <summary>Only the changes held for this file: a read of one file does not wait for writes to another.</summary>
    public void SettleFile(int tid, int hostFd)
    {
        if (Gate?.Files is not { Pending: true } files) return;
        Ship();
        files.WaitReleased(hostFd);
    }

    /// <summary>A path lookup waits for held changes of names only.</summary>
    public void SettleNames(int tid)
    {
        if (Gate?.Files is not { NamesPending: true } files) return;
        Ship();
        files.WaitNamesReleased();
    }

    public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false)
    {
        ShipBeforeCall(nr);
        var r = Logged(tid, nr, perform());
        // the thread parks on the host (nothing was ready): it waits, so what holds output travels now
        if (r.Value == Kernel.WouldBlock && Gate is { Shipping.OutputWaits: true }) Ship();
        return r;
    }

    // a send that must wait for credit waits for acknowledgements: what it waits for must have been shipped
    Action? _shipBeforeCreditWait;

    /// <summary>Logs a result with the bytes it put into guest memory (its <see cref="HostResult.Writes"/>). The record
    /// takes the result's own list of writes: the writer encodes it at once and keeps nothing, so nothing is copied
    /// or made per call (a copy of the list was one allocation per syscall with writes that `run` never made).</summary>
    HostResult Logged(int tid, int nr, HostResult r)
    {
        _w.Append(new SyscallResult { InstrCount = Icount, Tid = tid, Nr = nr, Result = r.Value, MemWrites = r.WritesToLog });
        FlushIfDue();
        return r;
    }

    /// <summary>Logs a result whose bytes the operation read straight into guest memory (<see cref="HostResult.InGuest"/>)
    /// by value: the record carries them as its one write, copied from guest memory into the record (no array).</summary>
    HostResult LoggedFromGuest(int tid, int nr, HostResult r, ulong inGuest)
    {
        _w.AppendOneWrite(Icount, tid, nr, r.Value, inGuest, (int)r.Value, _guestBytes!);
        FlushIfDue();
        return r;
    }

    /// <summary>The attached kernel's guest memory as the writer's source of by-value bytes.</summary>
    GuestBytes? _guestBytes;

    sealed class GuestBytes(Kernel k) : IWriteSource
    {
        public void CopyTo(ulong addr, Span<byte> into) => k.Mem.ReadBytes(addr, into);
    }

    /// <summary>A stable file's bytes are logged as (path, offset, hash of the log version's kind); anything else by
    /// value. Bytes a read put straight into guest memory (<see cref="HostResult.InGuest"/>) are hashed or copied from
    /// there.</summary>
    public HostResult FileContent(int tid, int nr, FileRef file, Func<HostResult> perform)
    {
        var r = perform();
        // on shared storage a backup replays a read later than it was made, when the file may hold newer writes
        if (Gate?.Files != null && nr != Nr.mmap && nr != Nr.execve) r.ByReference = false;
        if (r.InGuest is ulong inGuest && r.Value > 0)
        {
            if (!r.ByReference) return LoggedFromGuest(tid, nr, r, inGuest);
            if (file.IntoGuest && _w.HoldsContentRuns)
            {
                // a read(2)/pread64 joins the run of reads the writer holds (one record for the run: FileContentRun),
                // which keeps its bytes and asks the read's check, if it has one, at the run's end
                _k!.Mem.ReadBytes(inGuest, _w.AppendContentRead(Icount, tid, nr, file.GuestPath, file.Offset, file.Length, r.Value, inGuest, r.SourceCheck));
                return r;
            }
            // an older log: one record per read, so the read's check (if it has one) is asked now
            if (r.SourceCheck is { } check && !check.Unchanged()) return LoggedFromGuest(tid, nr, r, inGuest);
            _k!.Mem.ContentHash(inGuest, (int)r.Value, _contentHash, _hash);
            AppendFileContent(tid, nr, file, r.Value, inGuest);
            return r;
        }
        if (!r.ByReference || r.Value < 0 || r.Writes.Length != 1) return Logged(tid, nr, r);
        var (addr, bytes) = r.Writes[0];
        ContentHash.Compute(_contentHash, bytes, _hash);
        AppendFileContent(tid, nr, file, r.Value, addr);
        return r;
    }

    /// <summary>Logs a by-reference read whose hash is in <see cref="_hash"/> (the writer encodes it at once, so one
    /// array serves every record).</summary>
    void AppendFileContent(int tid, int nr, FileRef file, long result, ulong addr)
        => _w.Append(new FileContent
        {
            InstrCount = Icount, Tid = tid, Nr = nr, Result = result, Addr = addr, Path = file.GuestPath, Offset = file.Offset,
            Hash = _hash,
        });

    public NetReceived NetReceive(int tid, Func<NetReceived> perform)
    {
        if (Gate is { Shipping.OutputWaits: true }) Ship(); // the interface may wait on the host here (an idle machine with a network)
        var r = perform();
        _w.Append(new NetInput { InstrCount = Icount, Tid = tid, ClockNs = r.ClockNs, Frames = r.Frames });
        return r;
    }

    public long NetTakeover(int tid, Func<long> perform)
    {
        long clock = perform();
        _w.Append(new NetTakeover { InstrCount = Icount, Tid = tid, ClockNs = clock });
        return clock;
    }

    public ulong Value(int tid, InputKind kind, Func<ulong> perform)
    {
        ulong v = perform();
        if (kind == InputKind.Rdrand) _w.Append(new Rdrand { InstrCount = Icount, Value = v });
        else _w.Append(new Rdtsc { InstrCount = Icount, Value = v });
        return v;
    }

    public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform)
    {
        var b = perform();
        _w.Append(new SyscallResult { InstrCount = Icount, Tid = tid, Nr = -1000 - (int)kind, Result = b.Length, Data = b });
        return b;
    }

    public ulong NextStop(Kernel kernel, CpuT cpu)
    {
        // an action asked for (a snapshot) runs at once: the stop it asked for must not be overwritten by this one
        if (kernel.HostEventsPending || !_atStop.IsEmpty) return cpu.InstructionCount;
        if (ExtraStopsWithin == 0) return _nextCheckpoint;
        _extraStops ??= new Random(ExtraStopsSeed);
        return Math.Min(_nextCheckpoint, cpu.InstructionCount + 1 + (ulong)_extraStops.NextInt64((long)ExtraStopsWithin));
    }

    /// <summary>
    /// Stops of the guest's run that only this recording makes, for tests of the property that they change nothing
    /// (a replay stops only where the log has a record): when non-zero, the guest also stops after a pseudo-random
    /// number of instructions in [1, ExtraStopsWithin] — inside blocks as at their ends — where nothing is due and
    /// nothing is logged, as at a stop for a flush (<see cref="FlushInterval"/>) or a snapshot
    /// (<see cref="RunAtNextStop"/>). Zero (the default): the recording stops only for checkpoints and host events.
    /// </summary>
    public ulong ExtraStopsWithin { get; init; }

    /// <summary>Seed of the pseudo-random distances of <see cref="ExtraStopsWithin"/>.</summary>
    public int ExtraStopsSeed { get; init; }

    Random? _extraStops;

    public void AtStop(Kernel kernel, CpuT cpu)
    {
        RunRequested(kernel);
        if (cpu.InstructionCount >= _nextCheckpoint)
        {
            _w.Append(new Checkpoint { InstrCount = cpu.InstructionCount, Rip = cpu.Rip, StateDigest = Digest(kernel) });
            _nextCheckpoint = Recording.NextCheckpoint(cpu.InstructionCount, _interval);
            _flushDue = true;
        }
        FlushIfDue();
        if (kernel.TryTakeWake(out int woken, out uint seq))
        {
            _w.Append(new Wake { InstrCount = cpu.InstructionCount, BranchCount = cpu.BranchCount, Rip = cpu.Rip, Tid = cpu.Tid, WokenTid = woken, WaitSeq = seq });
            kernel.Wake(woken, seq);
            return;
        }
        if (kernel.TryTakeHostEvent(out var sig) && sig == Kernel.PreemptEvent)
        {
            if (kernel.NextRunnable(cpu) is { } next)
            {
                _w.Append(new Preempt { InstrCount = cpu.InstructionCount, BranchCount = cpu.BranchCount, Rip = cpu.Rip, FromTid = cpu.Tid, ToTid = next.Tid });
                kernel.SwitchTo(cpu, next.Tid);
            }
        }
        else if (sig != Kernel.PreemptEvent)
        {
            _w.Append(new Signal
            {
                InstrCount = cpu.InstructionCount, BranchCount = cpu.BranchCount, Rip = cpu.Rip, Rcx = cpu.R[1],
                Tid = cpu.Tid, Signo = sig,
            });
            kernel.RaiseAsync(cpu, sig);
        }
    }

    /// <summary>Every thread waits: the log reaches its sink (nothing more may come for a while), then the next host
    /// event is taken and logged as at a stop.</summary>
    public bool Idle(Kernel kernel, CpuT cpu)
    {
        Ship();
        RunRequested(kernel);
        if (!kernel.WaitForHostEvent()) return false;
        AtStop(kernel, cpu);
        return true;
    }

    /// <summary>Where each output's digest is put while its record is written (the writer encodes it at once).</summary>
    readonly byte[] _outputDigest = new byte[OutputDigests.DigestLength];

    /// <summary>Logs an output from the guest's bytes as they are (no copy, no record arrays); only a gate, which holds
    /// the bytes until the backup has their record, gets a copy of its own.</summary>
    public void OnOutput(Kernel kernel, CpuT cpu, int fd, ReadOnlySpan<byte> bytes)
    {
        ulong total = _out.Add(fd, bytes, _outputDigest);
        ulong seq = _w.AppendOutput(cpu.InstructionCount, fd, total, _outputDigest, bytes);
        if (Gate == null) return;
        OutputLogged(seq);
        Gate.Hold(seq, fd, bytes.ToArray());
    }

    public void OnExit(Kernel kernel, CpuT cpu, int status)
    {
        Gate?.GuestEnded(); // what is still held leaves only under the arbiter (every batch from here reports the exact release)
        _w.Append(new Checkpoint { InstrCount = cpu.InstructionCount, Rip = cpu.Rip, StateDigest = Digest(kernel) });
        _w.Append(new Exit { InstrCount = cpu.InstructionCount, Status = status });
        _flushTicker?.Dispose();
        _flushTicker = null;
        _w.Finish();
    }
}

/// <summary>The replay ran past a point where it no longer matches its recording.</summary>
public sealed class ReplayDivergenceException : Exception
{
    public ReplayDivergenceException(string message) : base(message) { }
}

/// <summary>The log ended (a recording that crashed) before the guest did.</summary>
public sealed class ReplayEndOfLogException : Exception
{
    public ReplayEndOfLogException(string message) : base(message) { }
}

/// <summary>A following backup lost the arbiter when its primary went silent: it must not go live.</summary>
public sealed class ReplayStoodDownException : Exception
{
    public ReplayStoodDownException(string message) : base(message) { }
}

/// <summary>Where a following replay turned live: the guest's position and the output offsets it resumed from.</summary>
public readonly record struct TakeoverPoint(
    ulong Instruction, ulong Record, ulong LogStdoutBytes, ulong LogStderrBytes, ulong ResumeStdoutAt, ulong ResumeStderrAt);

/// <summary>
/// The go-live's steps on the survivor, each as ms after the go-live began (the arbiter's grant,
/// <see cref="FollowOptions.TakeOver"/> returning): recording continued for standbys (<see cref="ContinuedMs"/>), the
/// virtual interface up, announced and repaired (<see cref="InterfaceUpMs"/>, null without one; its own steps in
/// <see cref="Nic"/>), clients told they are served again (<see cref="ServingMs"/>: the event written), held file writes
/// applied and host descriptors attached (<see cref="AttachedMs"/>), timers re-armed (<see cref="TimersMs"/>), host waits
/// renewed and the report written (<see cref="DoneMs"/>): the guest runs from there. <see cref="CpuMs"/>: the CPU time
/// the replay thread used meanwhile (far below <see cref="DoneMs"/>: the steps waited to run, not worked).
/// </summary>
public sealed record GoLiveSteps(double ContinuedMs, double? InterfaceUpMs, double ServingMs, double AttachedMs, double TimersMs, double DoneMs,
    ReVirt.Linux.NicTakeoverSteps? Nic, double CpuMs)
{
    /// <summary>Of <see cref="CpuMs"/>: the time the replay thread spent compiling methods (JIT) meanwhile, and how
    /// many it compiled (<see cref="System.Runtime.JitInfo"/>, this thread's own counts): first use of code that
    /// <see cref="GoLivePreparation"/> did not reach.</summary>
    public double JitMs { get; init; }
    public long JitMethods { get; init; }
    /// <summary>The go-live's code had been prepared (<see cref="GoLivePreparation.Ready"/>) when it began.</summary>
    public bool Prepared { get; init; }
}

/// <summary>
/// Follow mode of a replay (a backup replaying a primary's log as it arrives). When the log ends — the primary is
/// gone and everything it sent has been replayed — <see cref="TakeOver"/> decides (by winning the arbiter) whether
/// this replica goes live; it returns false to stand down.
/// </summary>
public sealed class FollowOptions
{
    public required Func<TakeoverPoint, bool> TakeOver { get; init; }
    /// <summary>The machine went live: what happened to each descriptor (one line each).</summary>
    public Action<IReadOnlyList<string>>? WentLive { get; init; }
    /// <summary>Called on the replay thread as soon as clients can be served again: a virtual interface is up,
    /// announced and has resent what its connections need (with its line of the report, which <see cref="WentLive"/>
    /// then leaves out), before the rest of the go-live work (host descriptors, timers); without a virtual interface
    /// (null), once the host descriptors are attached (listeners listen again).</summary>
    public Action<string?>? ServingAgain { get; init; }
    /// <summary>Called on the replay thread at the end of the go-live (after <see cref="WentLive"/>) with how long each
    /// of its steps took (<see cref="GoLiveSteps"/>): where a takeover's own part of a client's stall goes.</summary>
    public Action<GoLiveSteps>? Stepped { get; init; }
    /// <summary>While it follows a guest with a virtual interface, the replica prepares the go-live's code on a thread
    /// of its own (<see cref="GoLivePreparation"/>), so its first run is not on the replay thread after the grant. Off
    /// only for comparison runs (backup `--no-go-live-preparation`).</summary>
    public bool PrepareGoLive { get; init; } = true;
    /// <summary>The primary's guest root is this replica's too (one directory, shared storage): the primary's file
    /// effects are already there, so this replica must not apply them again while it follows (an append would be
    /// doubled, an O_TRUNC open would cut what the primary wrote since). Files are opened when it goes live.</summary>
    public bool SharedStorage { get; init; }
    /// <summary>Called once the replica has won the takeover, before the machine does anything live: returns the
    /// boundary the live machine runs on from here (a <see cref="RecordingBoundary"/> continuing the log, so that a
    /// standby can join this replica later), or null for a plain live machine that records nothing.</summary>
    public Func<TakeoverPoint, RecordingContinuation, IBoundary?>? Continue { get; init; }
    /// <summary>A dry pass of what <see cref="Continue"/> builds, on scratch data that touches nothing of this replica
    /// (null: <see cref="Continue"/> builds nothing): run by the go-live's preparation while following
    /// (<see cref="GoLivePreparation"/>), so that the continuation's first use is not after the grant.</summary>
    public Action? RehearseContinue { get; init; }
}

/// <summary>Where a following replay turned live, for the recording that continues its log: the last record it
/// consumed, the output totals so far (digests chain across the takeover) and when the next checkpoint is due.</summary>
public sealed record RecordingContinuation(ulong LastSequence, OutputDigests Outputs, ulong NextCheckpoint);

/// <summary>
/// The boundary of a replay: never touches the host. Every answer comes from the log, asynchronous events are
/// injected at the exact instruction count they were recorded at, and checkpoints, output digests and the exit
/// status are verified; the first mismatch stops the replay with a description of the divergence.
/// In follow mode (a backup), the end of the log is where the replica takes over: from there on it is a live
/// machine (real syscalls, real output), after re-emitting the output that the old primary may not have released.
/// </summary>
public sealed class ReplayBoundary : IBoundary
{
    readonly LogReader _r;
    /// <summary>The checkpoint digest of the log's format version (an older readable log is checked by its own).</summary>
    readonly Func<Kernel, byte[]> _digest;
    /// <summary>The content hash of the log's format version: every FileContent record's must be of this kind.</summary>
    readonly ContentHashKind _contentHash;
    OutputDigests _out = new();
    readonly Stream? _stdout, _stderr;
    readonly FollowOptions? _follow;
    LogRecord _peek;
    bool _havePeek, _eof, _live;
    Kernel? _k;
    // what the machine runs on once live: the host as it is, or a recording that continues the log
    IBoundary _after = new LiveBoundary();
    // output replayed but not yet reported released by the primary: (fd, offset of its first byte, bytes)
    readonly Queue<(int Fd, ulong Start, byte[] Bytes)> _unreleased = new();
    long _relOut, _relErr;
    ulong _logOut, _logErr;
    // the header's checkpoint interval and where the recorder's next periodic checkpoint is due (Recording's rule)
    readonly ulong _interval;
    ulong _checkpointDue;

    public int CheckpointsVerified { get; private set; }
    public int OutputsVerified { get; private set; }
    public ulong RecordsConsumed { get; private set; }
    ulong _replayed;
    /// <summary>Sequence number of the last record the replay consumed (any thread), the End record included once
    /// read: a follower reports it as its replayed position, and a live replica bounds how far that may trail the
    /// records it produced, every one of which therefore must come to be covered by it.</summary>
    public ulong ReplayedSequence => Volatile.Read(ref _replayed);
    public int? RecordedExitStatus { get; private set; }
    /// <summary>True once a following replay has taken over.</summary>
    public bool Live => _live;

    /// <summary>The machine's virtual network interface, if it has one (a following backup prepares its takeover with it).</summary>
    public VirtualNic? Nic => _k?.Nic;
    public TakeoverPoint? Takeover { get; private set; }

    public ReplayBoundary(LogReader reader, bool showOutput, FollowOptions? follow = null)
    {
        _r = reader;
        _digest = StateDigest.ForLogVersion(reader.Header.Version);
        _contentHash = ContentHash.ForLogVersion(reader.Header.Version);
        _follow = follow;
        _interval = reader.Header.CheckpointInterval;
        _checkpointDue = Recording.FirstCheckpoint(_interval);
        if (showOutput) { _stdout = Console.OpenStandardOutput(); _stderr = Console.OpenStandardError(); }
    }

    /// <summary>
    /// The replay starts from a machine snapshot (shared/Snapshot) instead of the program's start: the reader holds
    /// the records after it (<see cref="LogReader.StartsAfter"/>), the output digests and the checkpoint schedule
    /// go on from the snapshot's, and `unreleased` is output of records up to the snapshot that the live replica had
    /// not released when it was taken (a follower that takes over emits it as it would have emitted it from its log).
    /// </summary>
    public void ResumeAt(Snapshot.SnapshotPoint point, IEnumerable<(int Fd, ulong Start, byte[] Bytes)>? unreleased = null)
    {
        if (_r.StartsAfter != point.Sequence) throw new InvalidOperationException($"the log starts after record #{_r.StartsAfter}, the snapshot after #{point.Sequence}");
        _out = point.Outputs;
        _checkpointDue = point.NextCheckpoint;
        RecordsConsumed = point.Sequence;
        Volatile.Write(ref _replayed, point.Sequence);
        _logOut = point.Outputs.Total(1);
        _logErr = point.Outputs.Total(2);
        if (unreleased != null) foreach (var u in unreleased) _unreleased.Enqueue(u);
    }

    /// <summary>Where the replay stands (guest thread only): the records consumed, the next checkpoint due and the
    /// output digests, for a snapshot of the replayed machine.</summary>
    public Snapshot.SnapshotPoint Point => new(RecordsConsumed, _checkpointDue, _out.Copy());

    /// <summary>The primary reports how much of its output it has released to the world (any thread).</summary>
    public void ReportReleased(ulong stdoutBytes, ulong stderrBytes)
    {
        InterlockedMax(ref _relOut, (long)stdoutBytes);
        InterlockedMax(ref _relErr, (long)stderrBytes);
    }

    static void InterlockedMax(ref long target, long v)
    {
        long cur;
        while ((cur = Volatile.Read(ref target)) < v && Interlocked.CompareExchange(ref target, v, cur) != cur) { }
    }

    public bool Replaying => !_live;
    /// <summary>Content is performed here only once live: then the boundary after the log says.</summary>
    public bool KeepsFileContent => !_live || _after.KeepsFileContent;
    public void Attach(Kernel k) => _k = k;
    ulong Icount => _k?.Current?.Cpu.InstructionCount ?? 0;
    ulong Rip => _k?.Current?.Cpu.Rip ?? 0;

    /// <summary>The next record of the recording; false at its end. The End record (checked by the reader) is the
    /// end, not a record: after it <see cref="RecordingComplete"/> holds.</summary>
    bool Peek(out LogRecord rec)
    {
        if (!_havePeek && !_eof)
        {
            if (_r.TryRead(out _peek) && _peek.Kind != RecordKind.End) _havePeek = true;
            else
            {
                _eof = true;
                if (_r.Complete) Volatile.Write(ref _replayed, _r.LastSequence); // the End record holds nothing to replay
            }
        }
        rec = _peek;
        return _havePeek;
    }

    /// <summary>True once the log's End record was read: the recording is complete, nothing was cut off.</summary>
    public bool RecordingComplete => _r.Complete;

    /// <summary>Sequence number of the last record of the recording read so far (the End record excluded).</summary>
    public ulong LastRecord => _r.Complete ? _r.LastSequence - 1 : _r.LastSequence;

    /// <summary>In follow mode: true when the machine is (or has just become) live because the log has ended.</summary>
    bool LiveNow()
    {
        if (_live) return true;
        // the reads of a run taken from the log come first: the log goes on after them (Take refuses anything else)
        if (_run != null) return false;
        if (Peek(out var next))
        {
            // a survivor's log: where it went live, its virtual interface was taken over (at the first boundary call
            // that found the old primary's records used up, which is this one in a replay of the same records)
            if (next.Kind == RecordKind.NetTakeover) ReplayNetTakeover(next);
            return false;
        }
        if (_follow == null) return false;
        if (_r.Complete) throw Diverged($"the recording is complete (its End record follows record #{LastRecord}) but the guest goes on");
        GoLive();
        return true;
    }

    /// <summary>The log has no record left for a guest that is still running: where a plain replay stops.</summary>
    Exception OutOfRecords(string needed) => _r.Complete
        ? Diverged($"the recording is complete (its End record follows record #{LastRecord}) but the guest goes on{needed}")
        : new ReplayEndOfLogException($"recording ended early at record #{LastRecord}{(_r.Truncated ? $" ({_r.TruncationMessage})" : "")}: no End record; the replay verified everything up to instruction {Icount}{needed}");

    void GoLive()
    {
        ulong relOut = (ulong)Volatile.Read(ref _relOut), relErr = (ulong)Volatile.Read(ref _relErr);
        // the primary cannot have released more than the log holds
        relOut = Math.Min(relOut, _logOut);
        relErr = Math.Min(relErr, _logErr);
        var pt = new TakeoverPoint(Icount, RecordsConsumed, _logOut, _logErr, relOut, relErr);
        if (!_follow!.TakeOver(pt))
            throw new ReplayStoodDownException($"the log ended at instruction {Icount} (record #{RecordsConsumed}) and this replica did not win the arbiter: standing down");
        _live = true;
        Takeover = pt;
        long began = System.Diagnostics.Stopwatch.GetTimestamp(), cpuBegan = HostWorkAccount.ThreadNow();
        var jitBegan = System.Runtime.JitInfo.GetCompilationTime(currentThread: true);
        long jitMethodsBegan = System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: true);
        bool prepared = GoLivePreparation.Ready;
        double Since() => System.Diagnostics.Stopwatch.GetElapsedTime(began).TotalMilliseconds;
        if (_follow.Continue?.Invoke(pt, new RecordingContinuation(_r.LastSequence, _out, _checkpointDue)) is { } after)
        {
            _after = after;
            if (_k != null) after.Attach(_k);
        }
        double continued = Since();
        if (_k != null)
        {
            var report = new List<string>();
            // the virtual interface (if the guest has one) comes up first with the replayed connections: its clients
            // wait for it (its announce and the segments it resends), nothing of theirs waits for what follows
            string? up = null;
            double? upMs = null;
            if (_k.Nic is { } nic)
            {
                up = nic.TakeOver(this, _k.Current.Tid);
                double upAt = Since(); // not formatted as a double?: that generic formatter is not in the ReadyToRun image
                upMs = upAt;
                up += $" (interface up in {upAt - continued:F0} ms)";
                _follow.ServingAgain?.Invoke(up);
            }
            double serving = Since();
            // on shared storage, the held writes the old primary may not have released reach the files first
            if (_unreleasedFiles.Count > 0) report.Add(_unreleasedFiles.Apply(_k.Fs));
            // the machine's descriptors get host descriptors of this replica: listeners listen again, files are
            // re-opened at their offsets, the old primary's connections are reset
            report.AddRange(TakeoverAgent.AttachHost(_k));
            double attached = Since();
            report.AddRange(_k.RearmTimers()); // the interval and POSIX timers the guest had set fire on this host now
            double timers = Since();
            if (up != null) report.Add($"descriptors attached in {timers - serving:F0} ms after the interface was up");
            else _follow.ServingAgain?.Invoke(null); // a guest on host sockets is served again once its listeners listen
            // threads parked on the old primary's host waits wait again on this host (logged wake-ups when the log goes on)
            if (_after is RecordingBoundary) _k.PostRenewedHostWaits();
            else _k.RenewHostWaits();
            // the diagnostics are written once the guest's clients are served again: a write to a starved reader's
            // pipe must not hold the interface's repair back
            if (up != null) _k.Options.Diagnostics.WriteLine("backup: takeover: " + up);
            foreach (var line in report) _k.Options.Diagnostics.WriteLine("backup: takeover: " + line);
            _k.Options.Diagnostics.Flush();
            _follow.WentLive?.Invoke(report);
            _follow.Stepped?.Invoke(new GoLiveSteps(continued, upMs, serving, attached, timers, Since(), _k.Nic?.TakeoverSteps,
                (HostWorkAccount.ThreadNow() - cpuBegan) / 1e6)
            {
                JitMs = (System.Runtime.JitInfo.GetCompilationTime(currentThread: true) - jitBegan).TotalMilliseconds,
                JitMethods = System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: true) - jitMethodsBegan,
                Prepared = prepared,
            });
        }
        else _follow.ServingAgain?.Invoke(null);
        EmitUnreleased(relOut, relErr);
    }

    /// <summary>The go-live's steps that act on the host or the machine, whose code <see cref="GoLivePreparation"/>
    /// makes ready without running them: this method's own (and its local functions), the virtual interface's
    /// takeover and transmission and its TAP device, the host descriptors attached, timers re-armed, host waits
    /// renewed, and the live boundary the machine runs on after it.</summary>
    internal static IEnumerable<System.Reflection.MethodBase> GoLiveMethods()
    {
        const System.Reflection.BindingFlags Own = System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Static
            | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.DeclaredOnly;
        foreach (var m in typeof(ReplayBoundary).GetMethods(Own))
            if (m.Name is nameof(GoLive) or nameof(EmitUnreleased) or nameof(HostWrite) || m.Name.Contains($"<{nameof(GoLive)}>")) yield return m;
        foreach (var t in new[] { typeof(VirtualNic), typeof(TapDevice), typeof(TakeoverAgent), typeof(LiveBoundary) })
            foreach (var m in GoLivePreparation.AllOf(t)) yield return m;
        foreach (var name in new[] { nameof(Kernel.RearmTimers), nameof(Kernel.RenewHostWaits), nameof(Kernel.PostRenewedHostWaits) })
            yield return typeof(Kernel).GetMethod(name, Type.EmptyTypes) ?? throw new MissingMethodException(nameof(Kernel), name);
    }

    /// <summary>Re-emits what the old primary may not have released (it can have released it in its last round trip:
    /// then this is a byte-identical repeat).</summary>
    void EmitUnreleased(ulong relOut, ulong relErr)
    {
        foreach (var (fd, start, bytes) in _unreleased)
        {
            ulong rel = fd == 2 ? relErr : relOut;
            ulong end = start + (ulong)bytes.Length;
            if (end <= rel) continue;
            int skip = rel > start ? (int)(rel - start) : 0;
            HostWrite(fd, bytes.AsSpan(skip));
        }
        _unreleased.Clear();
    }

    /// <summary>In follow mode, after the replayed guest ended: output of the log that the primary has not reported
    /// released (its gate holds what was not released when the guest ended until it holds the arbiter).</summary>
    public bool HoldsUnreleasedOutput
    {
        get
        {
            ulong relOut = (ulong)Volatile.Read(ref _relOut), relErr = (ulong)Volatile.Read(ref _relErr);
            foreach (var (fd, start, bytes) in _unreleased)
                if (start + (ulong)bytes.Length > (fd == 2 ? relErr : relOut)) return true;
            return false;
        }
    }

    /// <summary>
    /// The primary was lost after its guest ended (this replay verified the whole run) and before it said goodbye:
    /// the guest has nothing left to run, so taking over means asking the arbiter and, on winning, releasing the
    /// output the primary had not reported released. The primary releases that output only holding the arbiter, so
    /// a win means it never did (beyond what its reports say). False when this replica did not win.
    /// </summary>
    public bool TakeOverOutput()
    {
        ulong relOut = Math.Min((ulong)Volatile.Read(ref _relOut), _logOut), relErr = Math.Min((ulong)Volatile.Read(ref _relErr), _logErr);
        var pt = new TakeoverPoint(Icount, RecordsConsumed, _logOut, _logErr, relOut, relErr);
        if (_follow?.TakeOver(pt) != true) return false;
        _live = true;
        Takeover = pt;
        if (_unreleasedFiles.Count > 0 && _k != null)
            _k.Options.Diagnostics.WriteLine("backup: takeover: " + _unreleasedFiles.Apply(_k.Fs));
        EmitUnreleased(relOut, relErr);
        return true;
    }

    static void HostWrite(int fd, ReadOnlySpan<byte> data) => Replication.HostIo.WriteAll(fd, data);

    /// <summary>What the guest asks the log for, in words: a fixed text, or a text and a syscall number or a path,
    /// put together only for a message (every record a replay takes names one, and formatting each cost a string per
    /// syscall and read).</summary>
    readonly struct Asked
    {
        readonly string _text;
        readonly string? _path;
        readonly int _nr;
        readonly bool _hasNr;

        Asked(string text, string? path, int nr, bool hasNr) => (_text, _path, _nr, _hasNr) = (text, path, nr, hasNr);

        public static implicit operator Asked(string text) => new(text, null, 0, false);
        public static Asked SyscallResult(int nr) => new("the result of syscall ", null, nr, true);
        public static Asked Content(string path) => new("the content of ", path, 0, false);

        public override string ToString() => _hasNr ? _text + _nr.ToString(System.Globalization.CultureInfo.InvariantCulture) : _text + _path;
    }

    LogRecord Take(Asked expecting)
    {
        if (_run != null)
            throw Diverged($"the guest asked for {expecting} where the recording made {_run.ReadsLeft} more of its {_run.Record.Reads} reads of {_run.Record.Path} by reference (offset {_run.NextOffset} next)");
        if (!Peek(out var rec)) throw OutOfRecords($" (it needs {expecting})");
        _havePeek = false;
        RecordsConsumed++;
        Volatile.Write(ref _replayed, rec.Sequence);
        // the next asynchronous event may be due before the guest leaves the block it is in: aim the stop at it
        var cpu = _k?.Current?.Cpu;
        if (cpu != null && rec.Kind is RecordKind.SyscallResult or RecordKind.FileContent or RecordKind.FileContentRun or RecordKind.Rdtsc or RecordKind.Rdrand or RecordKind.Output or RecordKind.NetInput)
            cpu.StopAt = ReplayStop(cpu);
        return rec;
    }

    /// <summary>A record no recording of this guest can contain (a forged or damaged log): refused like a corrupt log.</summary>
    Exception Forged(SyscallResult s, string what) => new LogFormatException($"impossible record at instruction {s.InstrCount}: {what}", _r.LastSequence);

    Exception Diverged(string what) => new ReplayDivergenceException($"replay diverged at instruction {Icount} (rip 0x{Rip:x}): {what}");

    T Expect<T>(Asked what) where T : struct, IRecordPayload<T>
    {
        var rec = Take(what);
        if (rec.Kind != T.Kind) throw Diverged($"the guest asked for {what} but record #{rec.Sequence} is {Describe(rec)}");
        return rec.Decode<T>();
    }

    static string Describe(LogRecord rec)
    {
        try { return LogDump.FormatRecord(rec); } catch { return rec.Kind.ToString(); }
    }

    public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false)
    {
        if (LiveNow()) return _after.Syscall(tid, nr, perform, reexecuteOnReplay);
        var s = ExpectSyscall(tid, nr);
        if (s.Data.Length != 0) throw Forged(s, $"syscall {nr} returns no data bytes, the record holds {s.Data.Length}");
        return Replayed(s, perform, reexecuteOnReplay);
    }

    /// <summary>The next record, which must be the result of syscall <paramref name="nr"/> made by this thread here.</summary>
    SyscallResult ExpectSyscall(int tid, int nr)
    {
        var s = Expect<SyscallResult>(Asked.SyscallResult(nr));
        if (s.Nr != nr) throw Diverged($"the guest made syscall {nr} where the recording made syscall {s.Nr} (at instruction {s.InstrCount})");
        if (s.InstrCount != Icount) throw Diverged($"syscall {nr} came at instruction {Icount}, recorded at {s.InstrCount}");
        if (s.Tid != tid) throw Diverged($"syscall {nr} came from thread {tid}, recorded from thread {s.Tid}");
        // (before the guest runs, e.g. while loading, the main thread's registers are all zero: no buffer at all)
        if (_k?.Current is { } t && RecordedWrites.Check(nr, t.Cpu, _k.Mem, s.MemWrites) is { } bad) throw Forged(s, bad);
        return s;
    }

    HostResult Replayed(SyscallResult s, Func<HostResult> perform, bool reexecuteOnReplay)
    {
        // the decoded record's writes are the answer's: no second list and no second object per write
        var r = HostResult.Of(s.Result, s.MemWrites);
        // a following backup performs this replica's own file effects on its own root (the guest sees the log)
        if (reexecuteOnReplay && _follow is { SharedStorage: false }) r.Local = perform().Value;
        return r;
    }

    // a follower on shared storage: the held writes replayed that the primary may not have released
    readonly Replication.UnreleasedFileWrites _unreleasedFiles = new();

    /// <summary>
    /// A file write. Its record holds, when the primary held it (shared storage), where it went and how far the
    /// primary had released: a follower on the same storage keeps it until the primary is known to have released it,
    /// and writes it again itself if it takes over before (<see cref="Replication.UnreleasedFileWrites"/>).
    /// </summary>
    public HostResult FileWrite(int tid, int nr, GuestFileWrite w)
    {
        if (LiveNow()) return _after.FileWrite(tid, nr, w);
        var s = ExpectSyscall(tid, nr);
        if (s.Data.Length != 0 && s.Data.Length != Replication.HeldWriteRecord.Size)
            throw Forged(s, $"a file write's record holds {s.Data.Length} data bytes (0, or {Replication.HeldWriteRecord.Size} when held)");
        if (s.Data.Length != 0 && _follow is { SharedStorage: true })
        {
            if (s.Result != w.Data.Length) throw Forged(s, $"a held write of {w.Data.Length} bytes answered {s.Result}");
            var (at, released) = Replication.HeldWriteRecord.Decode(s.Data);
            _unreleasedFiles.Add(ReplayedSequence, w.GuestPath, at, w.Data, released);
        }
        return Replayed(s, w.Perform, reexecuteOnReplay: true);
    }

    /// <summary>The primary waited here until it had released every held write; it did if its log goes on past this
    /// point (its guest thread logged nothing while it waited). Where the log ends instead, the replica goes live.</summary>
    public void SettleFiles(int tid)
    {
        if (LiveNow()) _after.SettleFiles(tid);
        else _unreleasedFiles.Settled();
    }

    /// <summary>The primary waited for one file's changes only: a follower learns nothing from it.</summary>
    public void SettleFile(int tid, int hostFd)
    {
        if (LiveNow()) _after.SettleFile(tid, hostFd);
    }

    /// <summary>The primary waited for held changes of names only (when it held one): a follower learns nothing.</summary>
    public void SettleNames(int tid)
    {
        if (LiveNow()) _after.SettleNames(tid);
    }

    /// <summary>
    /// A change of names or size. Its record holds, when the primary held it (shared storage), the file it concerns
    /// and how far the primary had released: a follower on the same storage keeps it until the primary is known to
    /// have made it, and makes it itself if it takes over before (<see cref="Replication.UnreleasedFileWrites"/>).
    /// </summary>
    public HostResult StorageChange(int tid, int nr, GuestStorageChange c)
    {
        if (LiveNow()) return _after.StorageChange(tid, nr, c);
        var s = ExpectSyscall(tid, nr);
        if (s.Data.Length != 0 && s.Data.Length != Replication.HeldChangeRecord.Size)
            throw Forged(s, $"a change of names or size's record holds {s.Data.Length} data bytes (0, or {Replication.HeldChangeRecord.Size} when held)");
        // a held creation or truncating open answers the primary's descriptor of the file, every other held change 0
        if (s.Data.Length != 0 && (c.Kind == StorageChangeKind.Open ? s.Result < 0 || s.Result > int.MaxValue : s.Result != 0))
            throw Forged(s, $"a held {c.Describe()} answered {s.Result}");
        if (s.Data.Length != 0 && _follow is { SharedStorage: true })
        {
            var (released, file) = Replication.HeldChangeRecord.Decode(s.Data);
            _unreleasedFiles.AddChange(ReplayedSequence, c, file, released);
        }
        return Replayed(s, c.Perform, reexecuteOnReplay: true);
    }

    /// <summary>
    /// File content: by value from a <see cref="SyscallResult"/>, or by reference from a <see cref="Log.FileContent"/>
    /// record, read from this replica's own root and checked against the recorded hash (refused, naming the file,
    /// when it differs).
    /// </summary>
    public HostResult FileContent(int tid, int nr, FileRef file, Func<HostResult> perform)
    {
        if (_run != null) return NextOfRun(tid, nr, file);
        if (LiveNow()) return _after.FileContent(tid, nr, file, perform);
        if (!Peek(out var next)) return Syscall(tid, nr, perform);
        if (next.Kind == RecordKind.FileContentRun) return StartRun(tid, nr, file, next);
        if (next.Kind != RecordKind.FileContent) return Syscall(tid, nr, perform);
        var c = Expect<Log.FileContent>(Asked.Content(file.GuestPath));
        if (c.Nr != nr || c.Path != file.GuestPath || c.Offset != file.Offset)
            throw Diverged($"the guest read {file.GuestPath} at offset {file.Offset} (syscall {nr}) where the recording read {c.Path} at offset {c.Offset} (syscall {c.Nr})");
        if (c.InstrCount != Icount) throw Diverged($"syscall {nr} came at instruction {Icount}, recorded at {c.InstrCount}");
        if (c.Result < 0 || (file.Length != FileRef.WholeFile && c.Result > file.Length) || c.Result > ProgramFile.MaxImageBytes)
            throw new LogFormatException($"a FileContent record of {c.Result} bytes for a read of {file.Length}", _r.LastSequence);
        if (c.Addr != file.Address)
            throw new LogFormatException($"a FileContent record writing at 0x{c.Addr:x} for a read into 0x{file.Address:x}", _r.LastSequence);
        if (c.HashKind != _contentHash)
            throw new LogFormatException($"a FileContent record with a {ContentHash.Name(c.HashKind)} hash in a log of format version {_r.Header.Version}, whose content hash is {ContentHash.Name(_contentHash)}", _r.LastSequence);
        if (file.IntoGuest && c.Result > 0) return ContentInGuest(c);
        // each range is hashed once: a match is kept, a miss reads the path afresh and hashes that
        var bytes = ContentRange(c.Path, c.Offset, (int)c.Result, reopen: false);
        if (bytes == null || bytes.Length != c.Result || !ContentHash.Matches(bytes, c.Hash))
        {
            bytes = ContentRange(c.Path, c.Offset, (int)c.Result, reopen: true);
            if (bytes == null || bytes.Length != c.Result) throw ContentMissing(c);
            if (!ContentHash.Matches(bytes, c.Hash)) throw ContentDiffers(c);
        }
        var r = HostResult.Of(c.Result);
        r.Write(c.Addr, bytes);
        return r;
    }

    // the run of by-reference reads being replayed: its record was taken at the run's first read
    ContentRunCursor? _run;

    /// <summary>The first read of a run (<see cref="Log.FileContentRun"/>): the record is taken and the path opened
    /// afresh — the run's bytes are checked against its hash only after its last read, when the guest has used them, so
    /// they must come from the path's file as it is now, not from a file kept open that may have been replaced since.</summary>
    HostResult StartRun(int tid, int nr, FileRef file, LogRecord rec)
    {
        if (_r.Header.Version < LogFormat.ContentRunsSince)
            throw new LogFormatException($"a FileContentRun record in a log of format version {_r.Header.Version} (they exist from version {LogFormat.ContentRunsSince})", rec.Sequence);
        var c = Expect<Log.FileContentRun>(Asked.Content(file.GuestPath));
        if (!OpenContent(c.Path, reopen: true)) throw RunMissing(c, c.Offset);
        _run = new ContentRunCursor(c);
        return NextOfRun(tid, nr, file);
    }

    /// <summary>A read of the run under way: checked against the record (<see cref="ContentRunCursor.Next"/>), served
    /// from the file opened at the run's start straight into the guest's pages and hashed there; after the last, the
    /// run's bytes must hash to the record's hash or the replay is refused, naming the file.</summary>
    HostResult NextOfRun(int tid, int nr, FileRef file)
    {
        var run = _run!;
        if (run.Next(tid, nr, file.GuestPath, file.Offset, file.Length, file.IntoGuest, Icount, out long n) is { } why)
        {
            _run = null;
            throw Diverged(why);
        }
        long at = run.NextOffset;
        if (ContentRangeInGuest(file.Address, (int)n, at) != n)
        {
            _run = null;
            throw RunMissing(run.Record, at);
        }
        _k!.Mem.AppendContent(file.Address, (int)n, run.Hash);
        run.Served(n);
        if (run.Done)
        {
            _run = null;
            if (!run.Matches())
                throw new ReplayInputMismatchException($"{run.Record.Path} under this replica's root {_k.Fs.Root} is not the file the recording read (xxh128 of offset {run.Record.Offset}, {run.Record.Bytes} bytes in {run.Record.Reads} reads, differs from the log's {Convert.ToHexStringLower(run.Record.Hash)[..16]})");
        }
        var r = HostResult.Of(n);
        r.InGuest = file.Address;
        return r;
    }

    ReplayInputMismatchException RunMissing(Log.FileContentRun c, long at)
        => new($"{c.Path} (offset {c.Offset}, {c.Bytes} bytes in {c.Reads} reads), which the recording read by reference, is missing or shorter under this replica's root {_k?.Fs.Root} (at offset {at})");

    ReplayInputMismatchException ContentMissing(Log.FileContent c)
        => new($"{c.Path} (offset {c.Offset}, {c.Result} bytes), which the recording read by reference, is missing or shorter under this replica's root {_k?.Fs.Root}");

    ReplayInputMismatchException ContentDiffers(Log.FileContent c)
        => new($"{c.Path} under this replica's root {_k?.Fs.Root} is not the file the recording read ({ContentHash.Name(c.HashKind)} of offset {c.Offset}, {c.Result} bytes differs from the log's {Convert.ToHexStringLower(c.Hash)[..16]})");

    /// <summary>A read(2) by reference (<see cref="FileRef.IntoGuest"/>): the range is read from this replica's root
    /// straight into the guest's pages, as the recording's host read did, and hashed there (no buffer, copy or
    /// collection per read). The bytes count only when their hash is the log's: otherwise the path is opened afresh
    /// (the file kept open may have been replaced) and read again, and a second miss refuses the replay. A range
    /// that matched is not hashed again.</summary>
    HostResult ContentInGuest(Log.FileContent c)
    {
        if (ContentRangeInGuest(c, reopen: false) != c.Result || !GuestContentMatches(c))
        {
            if (ContentRangeInGuest(c, reopen: true) != c.Result) throw ContentMissing(c);
            if (!GuestContentMatches(c)) throw ContentDiffers(c);
        }
        var r = HostResult.Of(c.Result);
        r.InGuest = c.Addr;
        return r;
    }

    bool GuestContentMatches(Log.FileContent c)
    {
        Span<byte> h = stackalloc byte[System.Security.Cryptography.SHA256.HashSizeInBytes];
        h = h[..c.Hash.Length];
        _k!.Mem.ContentHash(c.Addr, (int)c.Result, c.HashKind, h);
        return h.SequenceEqual(c.Hash);
    }

    /// <summary>One preadv of the record's range into the guest pages at its address; the bytes read, or -1 when the
    /// path is missing or not a regular file.</summary>
    long ContentRangeInGuest(Log.FileContent c, bool reopen)
        => OpenContent(c.Path, reopen) ? ContentRangeInGuest(c.Addr, (int)c.Result, c.Offset) : -1;

    /// <summary>One preadv of [offset, offset + count) of the file kept open (<see cref="OpenContent"/>) into the guest
    /// pages at <paramref name="addr"/>; the bytes read, or -1.</summary>
    unsafe long ContentRangeInGuest(ulong addr, int count, long offset)
    {
        int pages = Memory.GuestMemory.PagesSpanned(addr, count);
        var iov = pages <= 256 ? stackalloc long[2 * pages] : new long[2 * pages];
        int n = _k!.Mem.WritableIovecs(addr, count, iov);
        bool added = false;
        try
        {
            _contentFile!.DangerousAddRef(ref added);
            long r;
            fixed (long* v = iov) r = HostSys.Call(Nr.preadv, (long)_contentFile!.DangerousGetHandle(), (long)v, n, offset, 0);
            return r < 0 ? -1 : r;
        }
        finally { if (added) _contentFile!.DangerousRelease(); }
    }

    // the file of the last content read by reference, kept open: a program reads a file in many pieces (sha256sum
    // of 8 MB: 2,048 reads), and opening the path under the root for each cost more than the read
    string? _contentPath;
    Microsoft.Win32.SafeHandles.SafeFileHandle? _contentFile;

    /// <summary>[offset, offset+count) of a guest path under this replica's root, from the file kept open for it
    /// unless <paramref name="reopen"/> (the path is opened afresh: bytes that did not match may come from a file
    /// since replaced); null when it is missing or not a regular file.</summary>
    byte[]? ContentRange(string path, long offset, int count, bool reopen)
    {
        if (!OpenContent(path, reopen)) return null;
        try { return ProgramFile.ReadRange(_contentFile!, offset, count); }
        catch (IOException) { return null; }
    }

    /// <summary>The file kept open is the guest path's (opened afresh when <paramref name="reopen"/>); false when it is
    /// missing or not a regular file.</summary>
    bool OpenContent(string path, bool reopen)
    {
        if (_k == null) return false;
        if (reopen || _contentPath != path || _contentFile == null)
        {
            _contentFile?.Dispose();
            (_contentFile, _contentPath) = (null, null);
            try { _contentFile = ProgramFile.OpenRegular(_k.Fs, path, path, long.MaxValue, out _); }
            catch (ElfLoadException) { return false; }
            _contentPath = path;
        }
        return true;
    }

    // a write to stdout/stderr whose result came from the log; if the log ends before its Output record, the
    // live machine writes the bytes itself
    bool _writeFromLog;

    public HostResult Output(int tid, int nr, int fd, byte[] data, Func<HostResult> perform)
    {
        _writeFromLog = false;
        if (LiveNow()) return _after.Output(tid, nr, fd, data, perform);
        var r = Syscall(tid, nr, perform);
        _writeFromLog = true;
        return r;
    }

    public HostResult Send(int tid, int nr, in SocketSend send)
    {
        if (!LiveNow()) { var s = send; return Syscall(tid, nr, () => s.Unheld()); }
        return _after.Send(tid, nr, send);
    }

    public HostResult SocketEnd(int tid, int nr, object socket, Func<HostResult> perform, bool reexecuteOnReplay)
        => LiveNow() ? _after.SocketEnd(tid, nr, socket, perform, reexecuteOnReplay) : Syscall(tid, nr, perform, reexecuteOnReplay);

    public NetReceived NetReceive(int tid, Func<NetReceived> perform)
    {
        if (LiveNow()) return _after.NetReceive(tid, perform);
        // a following backup opens its TAP device now, off the failover's critical path (nothing is read before it),
        // and prepares the go-live's code on a thread of its own
        if (_follow != null && _k?.Nic is { } nic)
        {
            nic.OpenAhead();
            if (_follow.PrepareGoLive) GoLivePreparation.Start(nic.Stack.Config, _follow.RehearseContinue);
        }
        var n = Expect<NetInput>("the network interface's input");
        if (n.InstrCount != Icount || n.Tid != tid)
            throw Diverged($"network input taken at instruction {Icount} by thread {tid}, recorded at {n.InstrCount} by thread {n.Tid}");
        return new NetReceived(n.ClockNs, n.Frames);
    }

    /// <summary>The logged takeover of the virtual interface (see <see cref="LiveNow"/>): the interface repairs its
    /// connections as the survivor's did, and its frames are the records that follow.</summary>
    void ReplayNetTakeover(LogRecord rec)
    {
        if (_k?.Nic is not { } nic || _k.Current is not { } t)
            throw new LogFormatException($"impossible record: a takeover of the virtual network interface at instruction {Icount}, where the guest has none", rec.Sequence);
        nic.TakeOver(this, t.Tid);
    }

    public long NetTakeover(int tid, Func<long> perform)
    {
        if (_live) return _after.NetTakeover(tid, perform);
        var n = Expect<NetTakeover>("the takeover of the network interface");
        if (n.InstrCount != Icount || n.Tid != tid)
            throw Diverged($"the network interface was taken over at instruction {Icount} by thread {tid}, recorded at {n.InstrCount} by thread {n.Tid}");
        return n.ClockNs;
    }

    public ulong Value(int tid, InputKind kind, Func<ulong> perform)
    {
        if (LiveNow()) return _after.Value(tid, kind, perform);
        ulong at, value;
        if (kind == InputKind.Rdrand) { var r = Expect<Rdrand>("an RDRAND value"); (at, value) = (r.InstrCount, r.Value); }
        else { var t = Expect<Rdtsc>("an RDTSC value"); (at, value) = (t.InstrCount, t.Value); }
        if (at != Icount) throw Diverged($"{kind} came at instruction {Icount}, recorded at {at}");
        return value;
    }

    public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform)
    {
        if (LiveNow()) return _after.Bytes(tid, kind, count, perform);
        var s = Expect<SyscallResult>($"{kind} bytes");
        if (s.Nr != -1000 - (int)kind || s.Data.Length != count || s.MemWrites != null) throw Diverged($"expected {count} bytes of {kind}, found {Describe(_peek)}");
        return s.Data;
    }

    /// <summary>The next recorded asynchronous event's instruction count (never turns the machine live).</summary>
    ulong ReplayStop(CpuT cpu)
    {
        // a plain replay whose log has no record left stops at once (AtStop reports it); a follower goes live; the reads
        // left of a run taken from the log come first (a plain replay stops at the next checkpoint due at the latest)
        if (!Peek(out var rec)) return _run != null ? (_follow == null ? _checkpointDue : ulong.MaxValue) : _follow == null ? Icount : ulong.MaxValue;
        ulong at = rec.Kind switch
        {
            RecordKind.Checkpoint => rec.Decode<Checkpoint>().InstrCount,
            RecordKind.Signal => rec.Decode<Signal>().InstrCount,
            RecordKind.Preempt => rec.Decode<Preempt>().InstrCount,
            RecordKind.Wake => rec.Decode<Wake>().InstrCount,
            _ => ulong.MaxValue,
        };
        if (at < Icount)
            throw Diverged($"record #{rec.Sequence} ({Describe(rec)}) is due at instruction {at}, which the replay has already passed");
        // the replay stops where the recorder's periodic checkpoint was due, to see that it is there
        return Math.Min(at, _checkpointDue);
    }

    /// <summary>Once live, the recording that continues the log runs what it was asked to (a replay never waits for
    /// the network: its input comes from the log).</summary>
    public void AtNetworkWait(Kernel kernel)
    {
        if (_live) _after.AtNetworkWait(kernel);
    }

    public ulong NextStop(Kernel kernel, CpuT cpu)
    {
        if (LiveNow()) return _after.NextStop(kernel, cpu);
        return ReplayStop(cpu);
    }

    public void AtStop(Kernel kernel, CpuT cpu)
    {
        if (_live)
        {
            _after.AtStop(kernel, cpu);
            return;
        }
        while (Peek(out var rec))
        {
            // the recorder takes a checkpoint first at a stop where one is due: its record cannot be missing
            if (cpu.InstructionCount >= _checkpointDue && !(rec.Kind == RecordKind.Checkpoint && rec.Decode<Checkpoint>().InstrCount == cpu.InstructionCount))
                throw Diverged($"the recording takes a checkpoint at its first stop at or after instruction {_checkpointDue} (interval {_interval}), here at {cpu.InstructionCount}; " +
                               $"record #{rec.Sequence} ({Describe(rec)}) is there instead: a checkpoint record was removed");
            switch (rec.Kind)
            {
                case RecordKind.Checkpoint:
                    {
                        var c = rec.Decode<Checkpoint>();
                        if (c.InstrCount != cpu.InstructionCount) return;
                        if (c.InstrCount < _checkpointDue)
                            throw Diverged($"record #{rec.Sequence} is a checkpoint at instruction {c.InstrCount}, where the recording takes none (the next is due at its first stop at or after instruction {_checkpointDue}; the interval is {_interval})");
                        Take("a checkpoint");
                        VerifyCheckpoint(kernel, cpu, c);
                        _checkpointDue = Recording.NextCheckpoint(cpu.InstructionCount, _interval);
                        continue;
                    }
                case RecordKind.Signal:
                    {
                        var s = rec.Decode<Signal>();
                        if (s.InstrCount != cpu.InstructionCount) return;
                        Take("a signal");
                        if (s.Tid != cpu.Tid) throw Diverged($"signal {s.Signo} was recorded for thread {s.Tid}, the replay is running thread {cpu.Tid}");
                        if (s.Signo is < 1 or > MaxSignal) throw new LogFormatException($"impossible record: signal number {s.Signo}", rec.Sequence);
                        if (s.Rip != cpu.Rip || s.BranchCount != cpu.BranchCount || s.Rcx != cpu.R[1])
                            throw Diverged($"signal {s.Signo} was recorded at rip 0x{s.Rip:x} after {s.BranchCount} branches; replay is at rip 0x{cpu.Rip:x} after {cpu.BranchCount}");
                        kernel.RaiseAsync(cpu, s.Signo);
                        return; // one signal per stop, as recorded: the next one names the handler's position
                    }
                case RecordKind.Preempt:
                    {
                        var p = rec.Decode<Preempt>();
                        if (p.InstrCount != cpu.InstructionCount) return;
                        Take("a preemption");
                        if (p.FromTid != cpu.Tid) throw Diverged($"the recording preempted thread {p.FromTid} here, the replay is running thread {cpu.Tid}");
                        if (kernel.NextRunnable(cpu)?.Tid != p.ToTid) throw Diverged($"the recording switched from thread {p.FromTid} to thread {p.ToTid}, which cannot run here");
                        if (p.Rip != cpu.Rip || p.BranchCount != cpu.BranchCount)
                            throw Diverged($"preemption of thread {p.FromTid} was recorded at rip 0x{p.Rip:x} after {p.BranchCount} branches; replay is at rip 0x{cpu.Rip:x} after {cpu.BranchCount}");
                        kernel.SwitchTo(cpu, p.ToTid);
                        return;

                    }
                case RecordKind.Wake:
                    {
                        var w = rec.Decode<Wake>();
                        if (w.InstrCount != cpu.InstructionCount) return;
                        Take("a wake-up");
                        if (w.Tid != cpu.Tid || w.Rip != cpu.Rip || w.BranchCount != cpu.BranchCount)
                            throw Diverged($"the wake-up of thread {w.WokenTid} was recorded in thread {w.Tid} at rip 0x{w.Rip:x} after {w.BranchCount} branches; replay is in thread {cpu.Tid} at rip 0x{cpu.Rip:x} after {cpu.BranchCount}");
                        kernel.Wake(w.WokenTid, w.WaitSeq);
                        return;
                    }
                default:
                    return;
            }
        }
        if (_follow == null) throw OutOfRecords("");
    }

    /// <summary>Every thread waits: the recording's next asynchronous event must be due right here (a signal, a
    /// wake-up or a preemption); without one the recorded run found the guest deadlocked too. A following backup
    /// whose log has ended is live and waits for the host.</summary>
    public bool Idle(Kernel kernel, CpuT cpu)
    {
        if (LiveNow()) return _after.Idle(kernel, cpu);
        if (!Peek(out var rec)) throw OutOfRecords(" (every guest thread waits)");
        ulong at = rec.Kind switch
        {
            RecordKind.Signal => rec.Decode<Signal>().InstrCount,
            RecordKind.Preempt => rec.Decode<Preempt>().InstrCount,
            RecordKind.Wake => rec.Decode<Wake>().InstrCount,
            _ => ulong.MaxValue,
        };
        if (at != cpu.InstructionCount) return false;
        AtStop(kernel, cpu);
        return true;
    }

    /// <summary>Highest signal number (SIGRTMAX).</summary>
    const int MaxSignal = 64;

    void VerifyCheckpoint(Kernel kernel, CpuT cpu, Checkpoint c)
    {
        if (c.InstrCount != cpu.InstructionCount) throw Diverged($"a checkpoint recorded at instruction {c.InstrCount} came at instruction {cpu.InstructionCount}");
        if (c.Rip != cpu.Rip) throw Diverged($"checkpoint at instruction {c.InstrCount}: recorded rip 0x{c.Rip:x}, replay rip 0x{cpu.Rip:x}");
        var d = _digest(kernel);
        if (!d.AsSpan().SequenceEqual(c.StateDigest))
            throw Diverged($"checkpoint at instruction {c.InstrCount}: machine state digest {Convert.ToHexString(d)} differs from the recorded {Convert.ToHexString(c.StateDigest)}");
        CheckpointsVerified++;
        _lastVerified = (c.InstrCount, d);
    }

    (ulong Instruction, byte[] Digest)? _lastVerified;

    /// <summary>Instruction count and state digest (hex) of the last checkpoint the replay verified. Formatted when
    /// asked, not at each checkpoint: the hex encoder is code the runtime compiles for the occasion.</summary>
    public (ulong Instruction, string Digest)? LastVerifiedCheckpoint
        => _lastVerified is { } v ? (v.Instruction, Convert.ToHexString(v.Digest)) : null;

    public void OnOutput(Kernel kernel, CpuT cpu, int fd, ReadOnlySpan<byte> bytes)
    {
        if (LiveNow())
        {
            // a recording continuation logs every output and releases it through its gate; without one, a write
            // whose result came from the log but whose Output record never arrived was seen by nobody: write it
            if (_after is RecordingBoundary) _after.OnOutput(kernel, cpu, fd, bytes);
            else if (_writeFromLog) HostWrite(fd, bytes);
            _writeFromLog = false;
            return;
        }
        _writeFromLog = false;
        var o = Expect<Output>("an output record");
        Span<byte> digest = stackalloc byte[OutputDigests.DigestLength];
        ulong total = _out.Add(fd, bytes, digest);
        if (o.InstrCount != cpu.InstructionCount) throw Diverged($"output recorded at instruction {o.InstrCount} came at instruction {cpu.InstructionCount}");
        if (o.Fd != fd || o.TotalBytes != total || !digest.SequenceEqual(o.Digest) || !bytes.SequenceEqual(o.Bytes))
            throw Diverged($"output on fd {fd} ({bytes.Length} bytes, {total} in all) differs from the recorded output on fd {o.Fd} ({o.Bytes.Length} bytes, {o.TotalBytes} in all)");
        OutputsVerified++;
        if (fd == 2) _logErr = total; else _logOut = total;
        if (_follow != null)
        {
            // the record's own copy of the bytes (equal to the guest's, checked above): no second copy per output
            _unreleased.Enqueue((fd, total - (ulong)bytes.Length, o.Bytes));
            while (_unreleased.Count > 0)
            {
                var (f, start, b) = _unreleased.Peek();
                ulong rel = (ulong)(f == 2 ? Volatile.Read(ref _relErr) : Volatile.Read(ref _relOut));
                if (start + (ulong)b.Length > rel) break;
                _unreleased.Dequeue();
            }
        }
        var s = fd == 2 ? _stderr : _stdout;
        if (s != null) { s.Write(bytes); s.Flush(); }
    }

    public void OnExit(Kernel kernel, CpuT cpu, int status)
    {
        if (LiveNow()) { _after.OnExit(kernel, cpu, status); return; }
        var c = Expect<Checkpoint>("the final checkpoint");
        VerifyCheckpoint(kernel, cpu, c);
        if (LiveNow())
        {
            // the primary was lost between its final checkpoint and its exit record
            if (_after is RecordingBoundary rec) rec.ExitAfterCheckpoint(status);
            return;
        }
        var e = Expect<Exit>("the exit record");
        RecordedExitStatus = e.Status;
        if (e.Status != status) throw Diverged($"the guest exited with status {status}; the recording exited with {e.Status}");
        if (e.InstrCount != cpu.InstructionCount) throw Diverged($"the guest exited after {cpu.InstructionCount} instructions; the recording after {e.InstrCount}");
        // only the End record may follow the exit record (RecordingComplete says whether it came)
        if (Peek(out var after)) throw Diverged($"record #{after.Sequence} ({Describe(after)}) follows the exit record");
    }
}
