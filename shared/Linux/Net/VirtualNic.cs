using System.Diagnostics;
using System.Security.Cryptography;
using ReVirt.Net;

namespace ReVirt.Linux;

/// <summary>
/// The guest's virtual network interface: its identity (MAC, IPv4 address and prefix, gateway) — part of the machine's
/// start state, recorded in the log — and the TAP device that is its wire on this replica (its name and, optionally,
/// the network namespace it lives in), which each replica chooses for itself.
/// </summary>
public sealed record VirtualNetOptions(MacAddress Mac, uint Ip, int PrefixLength, string TapName, uint Gateway = 0)
{
    /// <summary>TAP device used when none is named.</summary>
    public const string DefaultTap = "revirt0";

    /// <summary>A network namespace (a name under /var/run/netns or a path) to open the TAP device in; null: this
    /// process's own.</summary>
    public string? Namespace { get; init; }

    /// <summary>The stack's TCP senders use RACK-TLP (RFC 8985, <see cref="NetConfig.Rack"/>); off only for comparison
    /// runs (`--no-rack`). Part of the start state: a replay and a backup build the same stack.</summary>
    public bool Rack { get; init; } = true;

    /// <summary>The stack's TCP senders undo a window cut that D-SACKs show was spurious and keep a windowed minimum
    /// RTT (<see cref="NetConfig.DsackUndo"/>, <see cref="NetConfig.WindowedMinRtt"/>). Always on for a new run; off
    /// only when a log recorded before they existed is replayed, so that replay builds the stack it was recorded
    /// with.</summary>
    public bool Undo { get; init; } = true;

    /// <summary>A SYN for a connection in TIME-WAIT beyond its old sequence numbers opens a new one
    /// (<see cref="NetConfig.TimeWaitSyn"/>). Always on for a new run; off only when a log recorded before it existed is
    /// replayed.</summary>
    public bool TimeWaitSyn { get; init; } = true;

    /// <summary>A synchronisation's frames are all taken before the stack's timers run (<see cref="NetConfig.BatchInput"/>).
    /// Always on for a new run; off only when a log recorded before it existed is replayed.</summary>
    public bool BatchInput { get; init; } = true;

    /// <summary>A takeover's repair is followed by one tail-loss probe per connection with data out
    /// (<see cref="NetConfig.TakeoverProbe"/>). Always on for a new run; off only when a log recorded before it existed is
    /// replayed (a survivor's log of that day repaired without it).</summary>
    public bool TakeoverProbe { get; init; } = true;

    /// <summary>The stack's loss repair without long stalls (<see cref="NetConfig.LossRepair"/>). Always on for a new
    /// run; off only when a log recorded before it existed is replayed.</summary>
    public bool LossRepair { get; init; } = true;

    /// <summary>This replica's TAP device receives a copy of every frame the network delivers to the primary's (a port
    /// mirror, a hub): while it follows, a backup keeps the last frames it heard, and at a takeover gives the stack
    /// those the log may lack (<see cref="VirtualNic.OpenAhead"/>). A choice of this replica (backup `--hears-primary`),
    /// not of the machine: no part of <see cref="Identity"/>.</summary>
    public bool HearsPrimary { get; init; }

    /// <summary>With <see cref="HearsPrimary"/>: run by the thread that reads the heard frames as it starts, to make it
    /// run soon after its device wakes it (the backup makes it a real-time thread). A starved reader lets the
    /// device's own queue fill, and the kernel then drops the newest frames — the ones a takeover needs. Returns
    /// whether the thread was raised (reported in <see cref="HeardCounts.Raised"/>). A choice of this replica.</summary>
    public Func<bool>? RaiseHearing { get; init; }

    /// <summary>The stack configuration these options stand for.</summary>
    public NetConfig StackConfig() => new(Mac, Ip, PrefixLength, Gateway)
        { Rack = Rack, DsackUndo = Undo, WindowedMinRtt = Undo, TimeWaitSyn = TimeWaitSyn, BatchInput = BatchInput, TakeoverProbe = TakeoverProbe, LossRepair = LossRepair };

    /// <summary>Parses `--ip A.B.C.D/N` and `--mac aa:bb:cc:dd:ee:ff`; null with a reason when either is malformed.</summary>
    public static VirtualNetOptions? Parse(string ip, string? mac, string tap, out string? error)
    {
        error = null;
        if (!Ip4.TryParseCidr(ip, out uint addr, out int prefix)) { error = $"--ip '{ip}' is not an IPv4 address with a prefix length (e.g. 10.0.0.2/24)"; return null; }
        MacAddress m;
        if (mac == null) m = new MacAddress(0x02_52_56_00_00_00UL | (addr & 0xFFFFFF));   // locally administered, from the address
        else if (!MacAddress.TryParse(mac, out m)) { error = $"--mac '{mac}' is not a unicast MAC address (aa:bb:cc:dd:ee:ff)"; return null; }
        if (tap.Length == 0 || tap.Length >= 16) { error = $"--tap '{tap}' is not an interface name (1 to 15 characters)"; return null; }
        return new VirtualNetOptions(m, addr, prefix, tap);
    }

    /// <summary>The identity as the log's start state records it: "A.B.C.D/N aa:bb:cc:dd:ee:ff", then the words of the
    /// stack's behaviour: " norack" when RACK-TLP is off, " undo" when D-SACK undo and the windowed minimum RTT are on,
    /// " twsyn" when a SYN may reopen a connection in TIME-WAIT, " batch" when a synchronisation's frames are all taken
    /// before the timers run, " tkprobe" when a takeover's repair is followed by a tail-loss probe, " lossrepair" with
    /// <see cref="NetConfig.LossRepair"/>. A log written before a word existed lacks it and replays with the behaviour of
    /// its day (RACK on, no undo, no reopening, timers after each frame, no probe after a repair, the old loss repair); a build that does not know a word refuses the log instead of replaying it
    /// with another stack.</summary>
    public string Identity => $"{Ip4.ToString(Ip)}/{PrefixLength} {Mac}" + (Rack ? "" : " " + NoRackWord) + (Undo ? " " + UndoWord : "")
        + (TimeWaitSyn ? " " + TimeWaitSynWord : "") + (BatchInput ? " " + BatchInputWord : "") + (TakeoverProbe ? " " + TakeoverProbeWord : "") + (LossRepair ? " " + LossRepairWord : "");

    const string NoRackWord = "norack", UndoWord = "undo", TimeWaitSynWord = "twsyn", BatchInputWord = "batch", TakeoverProbeWord = "tkprobe", LossRepairWord = "lossrepair";

    /// <summary>Reads <see cref="Identity"/> back, with this replica's TAP device; null when malformed or when it names
    /// a behaviour this build does not know.</summary>
    public static VirtualNetOptions? FromIdentity(string identity, string tap, string? ns)
    {
        var parts = identity.Split(' ');
        if (parts.Length < 2) return null;
        bool rack = true, undo = false, twSyn = false, batch = false, takeoverProbe = false, lossRepair = false;
        foreach (string word in parts.AsSpan(2))
        {
            if (word == NoRackWord && rack) rack = false;
            else if (word == UndoWord && !undo) undo = true;
            else if (word == TimeWaitSynWord && !twSyn) twSyn = true;
            else if (word == BatchInputWord && !batch) batch = true;
            else if (word == TakeoverProbeWord && !takeoverProbe) takeoverProbe = true;
            else if (word == LossRepairWord && !lossRepair) lossRepair = true;
            else return null;
        }
        return Parse(parts[0], parts[1], tap, out _) is { } o
            ? o with { Namespace = ns, Rack = rack, Undo = undo, TimeWaitSyn = twSyn, BatchInput = batch, TakeoverProbe = takeoverProbe, LossRepair = lossRepair } : null;
    }
}

/// <summary>
/// Connects the in-VM <see cref="NetStack"/> to the outside through the boundary. The guest can observe its network
/// only through syscalls, so the interface is synchronised only there: <see cref="Sync"/> takes what the TAP device
/// received (and the clock) through <see cref="IBoundary.NetReceive"/> — logged, so a replay feeds the stack the same
/// frames at the same instruction — and <see cref="Transmit"/> sends what the stack produced through
/// <see cref="IBoundary.Send"/>, so a protected primary holds every frame until the backup has the log that caused it
/// and a replay sends nothing. The TAP device is opened on first use by whoever performs host operations (the
/// recording primary, or a backup once it is live).
/// </summary>
public sealed class VirtualNic : IDisposable, ISendTarget
{
    /// <summary>Pseudo syscall number under which a batch of outgoing frames is logged.</summary>
    public const int TransmitNr = -2001;
    /// <summary>Most frames taken in one synchronisation (the rest wait in the TAP queue for the next).</summary>
    const int MaxFramesPerSync = 256;

    readonly VirtualNetOptions _options;
    TapDevice? _tap;

    public VirtualNic(VirtualNetOptions options, IBoundary boundary, int tid)
    {
        _options = options;
        // The stack's choices (ISNs, ephemeral ports) come from a seed that crosses the boundary, so replays agree.
        var seed = boundary.Bytes(tid, InputKind.NetSeed, 8, () => RandomNumberGenerator.GetBytes(8));
        var first = boundary.NetReceive(tid, () => new NetReceived(HostClock(), []));
        Stack = new NetStack(options.StackConfig(),
            BitConverter.ToUInt64(seed), first.ClockNs);
        Stack.Announce();
        Transmit(boundary, tid);
    }

    /// <summary>An interface restored from a machine snapshot: the stack as the snapshot carries it (its identity
    /// already checked against <paramref name="options"/>, which name this replica's own TAP device). Nothing crosses
    /// the boundary: the seed and the first clock value are in the stack's state.</summary>
    VirtualNic(VirtualNetOptions options, NetStack stack)
    {
        _options = options;
        Stack = stack;
    }

    /// <summary>The interface of a restored machine; null with the reason when the stack's identity (MAC, address,
    /// prefix, gateway) is not the one this run's start state gives the interface.</summary>
    public static VirtualNic? Restored(VirtualNetOptions options, NetStack stack, out string? why)
    {
        var c = stack.Config;
        why = c.Mac == options.Mac && c.Ip == options.Ip && c.PrefixLength == options.PrefixLength && c.Gateway == options.Gateway ? null
            : $"the snapshot's interface is {Ip4.ToString(c.Ip)}/{c.PrefixLength} {c.Mac} (gateway {Ip4.ToString(c.Gateway)}), this run's is {options.Identity} (gateway {Ip4.ToString(options.Gateway)})";
        return why == null ? new VirtualNic(options, stack) : null;
    }

    public NetStack Stack { get; }
    public VirtualNetOptions Options => _options;

    static long HostClock() => (long)(Stopwatch.GetTimestamp() * (1_000_000_000.0 / Stopwatch.Frequency));

    /// <summary>This replica's offset from its host clock to the stack's: zero on the recording primary; a backup that
    /// goes live continues from the clock value the log left the stack at, so its timers neither stall nor jump.</summary>
    long _clockOffset;

    long Clock()
    {
        long raw = HostClock();
        if (raw + _clockOffset < Stack.Now) _clockOffset = Stack.Now - raw;
        return raw + _clockOffset;
    }

    /// <summary>
    /// Feeds the stack what arrived since the last call, waiting up to <paramref name="maxWaitNs"/> when nothing has
    /// (never past the stack's next timer, and not once <paramref name="interrupted"/> says so); runs its timers (after
    /// the whole batch: <see cref="NetStack.Receive"/>); sends what it produced. Returns the number of frames taken.
    /// </summary>
    public int Sync(IBoundary boundary, int tid, long maxWaitNs, Func<bool> interrupted)
    {
        var got = boundary.NetReceive(tid, () => HostReceive(maxWaitNs, interrupted));
        Stack.Receive(got.Frames, got.ClockNs);
        Transmit(boundary, tid);
        return got.Frames.Count;
    }

    /// <summary>Sends the frames the stack has queued (after a socket call or a synchronisation).</summary>
    public void Transmit(IBoundary boundary, int tid)
    {
        if (Stack.PendingFrames == 0) return;
        // a replay never opens the TAP device: its boundary answers from the log without performing
        int hostFd = boundary.Replaying ? -1 : Tap().Fd;
        // each frame is a datagram for the output gate: a protected primary holds it until the backup has the log
        // that produced it, and releases it whole
        while (Stack.TryTakeFrame(out var f))
            boundary.Send(tid, TransmitNr, new SocketSend { Socket = this, Data = f, HostFd = hostFd, Stream = false, Target = this });
    }

    /// <summary>A frame onto the TAP device (whole: a frame is a datagram).</summary>
    long ISendTarget.Perform(in SocketSend s, int offset, int count, int extraFlags)
    {
        Tap().Write(s.Data.AsSpan(offset, count));
        return count;
    }

    /// <summary>
    /// A backup took over the machine: the interface comes up on this replica's TAP device with the same MAC and IP,
    /// announces itself (gratuitous ARP) and repairs its connections at once (<see cref="NetStack.TakeOver"/>). The
    /// go-live point crosses the boundary (<see cref="IBoundary.NetTakeover"/>): the survivor logs it, and a replay of
    /// the survivor's log calls this at the same instruction and clock (nothing of the host is touched then).
    /// </summary>
    public string TakeOver(IBoundary boundary, int tid)
    {
        long start = Stopwatch.GetTimestamp();
        long clock = boundary.NetTakeover(tid, () =>
        {
            // frames the device queued while this replica followed (broadcasts the primary answered) are not input;
            // when they were dropped as the primary was lost, what came since (clients' retransmissions) is
            if (_ahead != null && !_staleDropped) { StopHearing(); DropQueued(Tap()); }
            // the stack's clock goes on from the value the log left it at, whatever this host's clock reads (another
            // host's monotonic clock is unrelated: a jump would fire every timer at once, a step back none for long)
            _clockOffset = Stack.Now - HostClock();
            return Stack.Now;
        });
        long taken = Stopwatch.GetTimestamp();
        Stack.TakeOver(clock);
        long repaired = Stack.PendingFrames;
        long built = Stopwatch.GetTimestamp();
        Transmit(boundary, tid);
        long sent = Stopwatch.GetTimestamp();
        TakeoverSteps = new NicTakeoverSteps(Ms(start, taken), Ms(taken, built), Ms(built, sent), (int)repaired);
        return $"virtual interface {_options.Identity} up on {Where}, announced; {Stack.ConnectionCount} connections carried over"
            + (_heard != null ? $"; {_heard.Count} frames heard from the primary's wire before the loss kept" : "");
    }

    /// <summary>How long <see cref="TakeOver"/>'s steps took on this host (null before it ran).</summary>
    public NicTakeoverSteps? TakeoverSteps { get; private set; }

    static double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;

    TapDevice Tap()
    {
        if (_tap != null) return _tap;
        // opened ahead by a following backup: use it (a failed attempt is made again here, to report its error)
        if (_ahead != null && Settled(_ahead, TimeSpan.FromSeconds(10)) && _ahead.IsCompletedSuccessfully) return _tap = _ahead.Result;
        return _tap = TapDevice.Open(_options.TapName, _options.Namespace);
    }

    Task<TapDevice>? _ahead;
    volatile bool _staleDropped;

    static void DropQueued(TapDevice tap)
    {
        var buf = new byte[TapDevice.MaxFrame + 64];
        for (int i = 0; i < MaxStaleFrames && tap.Read(buf) > 0; i++) { }
    }

    // ------------------------------------------------------------------ frames heard while following (HearsPrimary)

    /// <summary>Most frames a following backup keeps (the newest): what a primary reads from its device but has not
    /// yet shipped (a round of its log, milliseconds at load) plus its device's queue, at tens of thousands of frames a
    /// second; at a lower rate, everything a frozen primary did not read before the silence gave it away. No age
    /// bound: what the log already holds is told apart by the stack's own state (<see cref="NetStack.HoldsAlready"/>),
    /// and older frames are what a network may always deliver late (TCP's sequence numbers and RFC 5961 are for them).</summary>
    internal const int HeardCapacity = 2048;

    HeardFrames? _hearing;
    Thread? _hearingThread;
    volatile bool _stopHearing;
    /// <summary>After the loss: the frames heard before it (oldest first: the ring's own buffers, no copy while the
    /// takeover waits) that the stack is offered at the first synchronisations once live, before what its device
    /// received since; only those it is given are copied.</summary>
    Queue<ArraySegment<byte>>? _heard;

    /// <summary>What the frames heard while following came to (<see cref="HeardCounts"/>); complete once the stack has
    /// been offered every frame kept, when <see cref="HeardSettled"/> is called.</summary>
    public HeardCounts Heard => _counts;
    HeardCounts _counts;

    /// <summary>Called once (on the thread that feeds the stack, host side) when the stack has judged every frame heard
    /// before the loss: the counts are final then.</summary>
    public Action<HeardCounts>? HeardSettled { get; set; }

    /// <summary>Reads the device while the backup follows (the primary's frames, copied here, would otherwise fill the
    /// device's queue with the oldest and drop the newest), keeping the newest in a ring. After each read of what the
    /// device queued it naps <see cref="HearNapMs"/>: raised to real time, it would otherwise wake once per frame (tens
    /// of thousands of times a second at load), while a nap lets the device queue a batch, far below its own bound
    /// (500 frames: the 1 ms nap holds ~50 at 50,000 frames/s). Its waits end at once when <see cref="StopHearing"/>
    /// writes to <see cref="_hearWake"/>: the loss must not wait for a wait's slice to run out.</summary>
    void Hear(TapDevice tap)
    {
        var ring = _hearing!;
        _counts = _counts with { Raised = _options.RaiseHearing?.Invoke() ?? false };
        int largest = 0;
        while (!_stopHearing)
        {
            tap.WaitReadableOr(_hearWake, HearSliceMs);
            if (_stopHearing) break;
            int n = ring.ReadAll(tap);
            if (n == 0) continue;
            if (n > largest) _counts = _counts with { LargestBurst = largest = n };
            Thread.Sleep(HearNapMs);
        }
    }
    const int HearSliceMs = 1000, HearNapMs = 1;

    /// <summary>An eventfd that ends the hearing thread's wait (<see cref="StopHearing"/>); -1 when none.</summary>
    int _hearWake = -1;

    /// <summary>Stops the reading thread (bounded: its wait ends when woken); true when it has ended.</summary>
    unsafe bool StopHearing()
    {
        if (_hearingThread == null) return true;
        _stopHearing = true;
        if (_hearWake >= 0)
        {
            long one = 1;
            HostSys.Call(Nr.write, _hearWake, (long)&one, sizeof(long));
        }
        bool ended = _hearingThread.Join(TimeSpan.FromSeconds(5));
        if (ended && _hearWake >= 0) { HostSys.Call(Nr.close, _hearWake); _hearWake = -1; }
        return ended;
    }

    /// <summary>The device opened ahead, if it is open by now (never waits).</summary>
    TapDevice? OpenedAhead() => _ahead is { IsCompletedSuccessfully: true } t ? t.Result : null;

    /// <summary>
    /// A following backup declared its primary lost (called on its link thread while the replay drains; the replay
    /// thread does not touch the device before <see cref="TakeOver"/>, which the caller orders after this). The
    /// frames the device queued until now may have reached the old primary too (broadcasts, floods) and be in the
    /// log: they are dropped. What arrives from now on cannot be in the log this replica holds (the primary's log
    /// ended no later than now), so it is kept as the input of the stack once live — a client's retransmission that
    /// arrives during the drain is answered at the takeover instead of being lost.
    /// </summary>
    public void DropStaleInput()
    {
        if (OpenedAhead() is not { } tap) return;
        if (_hearing != null && StopHearing())
        {
            // the device copies what the network delivers to the primary: what it queued until now (and the newest
            // frames read while following) may be frames the primary received but never logged (a client's request the
            // clients would otherwise resend only on their retransmission timers); duplicates of logged ones are
            // harmless to TCP (and filtered once the stack runs: HoldsAlready)
            int atLoss = _hearing.ReadAll(tap);
            _heard = _hearing.OldestFirst();
            _counts = _counts with { Read = _hearing.Count, AtLoss = atLoss, Kept = _heard.Count };
        }
        else DropQueued(tap);
        _staleDropped = true;
    }

    /// <summary>
    /// This replica won the arbiter (on its link thread, before the replay has drained): announces the interface's
    /// address on its own device at once (a gratuitous ARP, a function of the interface's identity in the start
    /// state), so the bridge or switch sends the clients' frames — their retransmissions of what only the dead
    /// primary received — here, where they wait for the stack, instead of to the dead primary's port. The stack
    /// announces again when it comes up (<see cref="TakeOver"/>). Only after <see cref="DropStaleInput"/>.
    /// </summary>
    public bool AnnounceEarly()
    {
        if (!_staleDropped || OpenedAhead() is not { } tap) return false;
        tap.Write(NetStack.GratuitousArp(_options.Mac, _options.Ip));
        return true;
    }
    /// <summary>Bound on the stale frames dropped at a takeover (the device's own queue holds 500 by default).</summary>
    const int MaxStaleFrames = 4096;

    /// <summary>
    /// A following backup opens its TAP device while it follows (on a thread of its own, which enters the network
    /// namespace), so a takeover does not wait for it: opening it then cost a thread start, the namespace switch and
    /// the device's bring-up on the failover's critical path. Nothing is read from it before the takeover.
    /// </summary>
    public void OpenAhead()
    {
        if (_tap != null || _ahead != null) return;
        _ahead = Task.Factory.StartNew(() => TapDevice.Open(_options.TapName, _options.Namespace), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (!_options.HearsPrimary) return;
        long wake = HostSys.Call(Nr.eventfd2, 0, O.CLOEXEC | O.NONBLOCK);
        // without its eventfd the thread still stops, within its wait's slice
        _hearWake = wake >= 0 ? (int)wake : -1;
        _hearing = new HeardFrames(HeardCapacity);
        _hearingThread = new Thread(() =>
        {
            if (Settled(_ahead, TimeSpan.FromSeconds(30)) && _ahead.IsCompletedSuccessfully) Hear(_ahead.Result);
        }) { IsBackground = true, Name = "tap-hear" };
        _hearingThread.Start();
    }

    /// <summary>
    /// A replica that restored this interface from a snapshot opens its TAP device now, as a following backup does on
    /// its first replayed input, and waits for it up to <paramref name="timeout"/>: null once it is open, else why not.
    /// A standby that could not bring the interface up when it takes over must not acknowledge the snapshot: its
    /// clients' connections would end there.
    /// </summary>
    public string? OpenAheadOrWhyNot(TimeSpan timeout)
    {
        OpenAhead();
        var open = _ahead!;
        if (!Settled(open, timeout)) return $"its TAP device {Where} did not open within {timeout.TotalSeconds:F0} s";
        return open.IsCompletedSuccessfully ? null : $"its TAP device {Where} cannot be opened: {open.Exception?.InnerException?.Message}";
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the device opened ahead, failed or not (a failure is the
    /// caller's to report, never thrown here): false when it is still opening.</summary>
    static bool Settled(Task<TapDevice> open, TimeSpan timeout)
    {
        try { return open.Wait(timeout); }
        catch (AggregateException) { return true; }
    }

    string Where => _options.TapName + (_options.Namespace != null ? $" (netns {_options.Namespace})" : "");

    /// <summary>Longest single host wait, so that a pending host event is noticed soon.</summary>
    const int WaitSliceMs = 50;

    NetReceived HostReceive(long maxWaitNs, Func<bool> interrupted)
    {
        var tap = Tap();
        var frames = new List<byte[]>();
        if (_heard is { } heard)
        {
            // frames heard before the loss first (older than anything the device queued since), those that tell the
            // stack something; chosen here, on the host side, and logged as they are given
            while (heard.Count > 0 && frames.Count < MaxFramesPerSync)
            {
                var f = heard.Dequeue();
                var kind = Stack.JudgeHeard(f);
                _counts = _counts.Judged(kind);
                if (HeardCounts.IsGiven(kind)) frames.Add(f.ToArray());
            }
            if (heard.Count == 0)
            {
                _heard = null;
                HeardSettled?.Invoke(_counts);
            }
            if (frames.Count > 0) return new NetReceived(Clock(), frames);
        }
        var buf = new byte[TapDevice.MaxFrame + 64];
        int n = tap.Read(buf);
        if (n == 0 && maxWaitNs > 0)
        {
            long start = Clock();
            long until = Math.Min(Stack.NextDeadline, maxWaitNs == long.MaxValue ? long.MaxValue : start + maxWaitNs);
            while (n == 0 && !interrupted())
            {
                long now = Clock();
                if (now >= until) break;
                int ms = (int)Math.Min(WaitSliceMs, (until - now + 999_999) / 1_000_000);
                if (tap.WaitReadable(ms)) n = tap.Read(buf);
            }
        }
        while (n > 0)
        {
            // a copy of this interface's own frame (a port mirror sends the survivor's broadcasts back) is no peer's
            // input (NetStack.JudgeHeard): not given, not logged
            if (Stack.IsOwnFrame(buf.AsSpan(0, n))) OwnFramesDropped++;
            else frames.Add(buf.AsSpan(0, n).ToArray());
            if (frames.Count >= MaxFramesPerSync) break;
            n = tap.Read(buf);
        }
        return new NetReceived(Clock(), frames);
    }

    /// <summary>Frames read from the device since it opened whose source MAC was this interface's own (not given to the
    /// stack: <see cref="HeardKind.Own"/>).</summary>
    public long OwnFramesDropped { get; private set; }

    public void Dispose()
    {
        StopHearing();
        _tap?.Dispose();
        if (_ahead != null && _tap == null && Settled(_ahead, TimeSpan.FromSeconds(10)) && _ahead.IsCompletedSuccessfully) _ahead.Result.Dispose();
    }
}

/// <summary>
/// What a following backup's heard frames came to at its takeover (<see cref="VirtualNetOptions.HearsPrimary"/>):
/// frames read from its device in all (<see cref="Read"/>), of them read only as the primary was declared lost
/// (<see cref="AtLoss"/>: what the device had queued meanwhile), the most read in one wake-up while following
/// (<see cref="LargestBurst"/>: near the device's queue bound, 500, the kernel dropped frames), kept in the ring
/// (<see cref="Kept"/>; <see cref="Overwritten"/> = read − kept), given to the stack as telling it something new
/// (<see cref="Given"/>), and whether the reading thread was raised. The kept frames are judged one by one
/// (<see cref="NetStack.JudgeHeard"/>): <see cref="Own"/>, <see cref="Foreign"/> and <see cref="Old"/> are not given;
/// <see cref="GivenData"/>, <see cref="GivenAck"/>, <see cref="GivenControl"/> and <see cref="GivenOther"/> are (their
/// sum is <see cref="Given"/>).
/// </summary>
public readonly record struct HeardCounts(long Read, int AtLoss, int LargestBurst, int Kept, int Given, bool Raised)
{
    public int Own { get; init; }
    public int Foreign { get; init; }
    public int Old { get; init; }
    public int GivenData { get; init; }
    public int GivenAck { get; init; }
    public int GivenControl { get; init; }
    public int GivenOther { get; init; }

    /// <summary>Whether a frame of this kind is given to the stack.</summary>
    public static bool IsGiven(HeardKind k) => k is not (HeardKind.Own or HeardKind.Foreign or HeardKind.Old);

    /// <summary>These counts with one more frame judged <paramref name="k"/>.</summary>
    public HeardCounts Judged(HeardKind k) => k switch
    {
        HeardKind.Own => this with { Own = Own + 1 },
        HeardKind.Foreign => this with { Foreign = Foreign + 1 },
        HeardKind.Old => this with { Old = Old + 1 },
        HeardKind.Data => this with { Given = Given + 1, GivenData = GivenData + 1 },
        HeardKind.Ack => this with { Given = Given + 1, GivenAck = GivenAck + 1 },
        HeardKind.Control => this with { Given = Given + 1, GivenControl = GivenControl + 1 },
        _ => this with { Given = Given + 1, GivenOther = GivenOther + 1 },
    };

    /// <summary>Frames the ring no longer held at the loss (older than the newest <see cref="Kept"/>).</summary>
    public long Overwritten => Read - Kept;
}

/// <summary>
/// The newest frames a following backup heard on its device (<see cref="VirtualNetOptions.HearsPrimary"/>), with the
/// a ring of reused buffers, written by one thread, read by another only after that one ended.
/// </summary>
internal sealed class HeardFrames
{
    readonly byte[][] _bufs;
    readonly int[] _lengths;
    long _count;   // frames read in all; the ring holds the last min(_count, capacity)

    public HeardFrames(int capacity)
    {
        _bufs = new byte[capacity][];
        _lengths = new int[capacity];
    }

    /// <summary>Frames added in all (the ring holds the newest of them).</summary>
    public long Count => _count;

    /// <summary>Reads every frame the device has queued into the ring, overwriting the oldest; returns how many.</summary>
    public int ReadAll(TapDevice tap)
    {
        for (int read = 0; ; read++)
        {
            int n = tap.Read(Slot(out int i));
            if (n <= 0) return read;
            Commit(i, n);
        }
    }

    /// <summary>Adds one frame, overwriting the oldest.</summary>
    public void Add(ReadOnlySpan<byte> frame)
    {
        frame.CopyTo(Slot(out int i));
        Commit(i, frame.Length);
    }

    byte[] Slot(out int i)
    {
        i = (int)(_count % _bufs.Length);
        return _bufs[i] ??= new byte[TapDevice.MaxFrame + 64];
    }

    void Commit(int i, int length)
    {
        _lengths[i] = length;
        _count++;
    }

    /// <summary>The frames held, oldest first: views of the ring's buffers, valid as long as nothing is added.</summary>
    public Queue<ArraySegment<byte>> OldestFirst()
    {
        var q = new Queue<ArraySegment<byte>>(_bufs.Length);
        for (long k = Math.Max(0, _count - _bufs.Length); k < _count; k++)
        {
            int i = (int)(k % _bufs.Length);
            q.Enqueue(new ArraySegment<byte>(_bufs[i], 0, _lengths[i]));
        }
        return q;
    }
}

/// <summary>How long a takeover of the interface took on the survivor's host (<see cref="VirtualNic.TakeOver"/>):
/// the go-live point crossing the boundary with the device's stale frames dropped (<see cref="DropMs"/>), the stack's
/// repair built (<see cref="RepairMs"/>: the announce, every connection's ACKs and resent segments), and those
/// <see cref="Frames"/> frames sent through the boundary to the device (<see cref="SendMs"/>).</summary>
public readonly record struct NicTakeoverSteps(double DropMs, double RepairMs, double SendMs, int Frames);
