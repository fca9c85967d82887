using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Replay;

namespace ReVirt.Snapshot;

/// <summary>
/// Moves a running machine from a process that has no compiled tier (revirt-run, compiled ahead of time: it starts in
/// milliseconds but interprets every block) into the JIT-started host (`primary`, whose compiled tier runs long guests
/// several times faster), inside the same process: after the guest's first <see cref="HandOffBoundary.After"/>
/// instructions the process writes a snapshot of the machine into a memfd and calls execve on the JIT host, which
/// restores the machine and runs it on. What execve keeps is what the guest and its parent see: the process id, the
/// parent, the descriptors (the machine's host descriptors are inherited, not reopened: same offsets, same pipes and
/// sockets, bytes not yet read still there), ignored signals and the signal mask. The snapshot carries every
/// instruction count, so counts and the exit status are those of a run that never moved.
///
/// Contract: a hand-off happens only at an instruction boundary where nothing of the machine lives in this process
/// alone (no thread waits on the host, no timer is armed, no description a snapshot cannot carry or whose host
/// object holds more than its descriptor: epoll sets, eventfds, timerfds); otherwise the guest runs on here and the
/// hand-off is tried again later. A failed execve (no JIT host) leaves the guest running here, interpreted, with one
/// line on stderr. Nothing a guest does can make the JIT host read bytes but the snapshot its own process wrote.
///
/// Payload (little-endian, in the memfd): "RVHANDOF" | u32 version | root | program | u8 tier | u8 stats |
/// i64 start timestamp | u64 instructions run before the hand-off (all threads) | u32 n, then n host descriptors (i32)
/// in the snapshot's description order | snapshot.
/// </summary>
public static class HandOff
{
    /// <summary>The JIT host's internal verb: `primary hand-off FD` (FD: the memfd holding the payload).</summary>
    public const string Verb = "hand-off";

    /// <summary>Guest instructions interpreted before the hand-off by default: about the time (0.1-0.2 CPU s) the JIT
    /// host takes to start and restore, so a guest that ends sooner never pays for it.</summary>
    public const ulong DefaultAfter = 20_000_000;

    static readonly byte[] Magic = "RVHANDOF"u8.ToArray();
    const uint PayloadVersion = 1;

    /// <summary>The log header a snapshot is bound to; a hand-off has no log, so both sides use these bytes.</summary>
    static ReadOnlySpan<byte> Header => "revirt hand-off: no log"u8;

    /// <summary>What the JIT host needs besides the machine: the options it is built with and how the run reports.</summary>
    public sealed record Settings(string Root, string Program, ExecutionTier Tier, bool Stats, long StartTimestamp);

    /// <summary>A restored machine, the settings of the run it continues and the instructions (all threads) that run
    /// executed before the hand-off.</summary>
    public sealed record Resumed(Machine Machine, Settings Settings, ulong At);

    /// <summary>Where the JIT host is: the dotnet host program and primary.dll. Null when either is missing.</summary>
    public sealed record Target(string Dotnet, string HostDll)
    {
        /// <summary>dotnet from DOTNET_HOST_PATH or PATH, primary.dll as given or beside this program or at its place in the
        /// repository's build (this program in run/bin/aot/).</summary>
        public static Target? Find(string? hostDll)
        {
            string baseDir = AppContext.BaseDirectory;
            hostDll ??= new[] { Path.Combine(baseDir, "primary.dll"), Path.Combine(baseDir, "..", "..", "..", "primary", "bin", "Release", "net10.0", "primary.dll") }
                .FirstOrDefault(File.Exists);
            if (hostDll == null || !File.Exists(hostDll)) return null;
            string? dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
            if (dotnet == null || !File.Exists(dotnet))
                dotnet = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                    .Select(d => Path.Combine(d, "dotnet")).FirstOrDefault(File.Exists);
            return dotnet == null ? null : new Target(dotnet, Path.GetFullPath(hostDll));
        }
    }

    /// <summary>Why this machine cannot be handed off now (null: it can).</summary>
    internal static string? WhyNot(Kernel k)
    {
        if (k.HostWorkUnderWay() is { } work) return work;
        if (MachineSnapshot.Uncapturable(k) is { } why) return why;
        foreach (var f in MachineSnapshot.Descriptions(k))
            if (f is EpollFile or EventFdFile or TimerFdFile || f is HostSocket { ConnectPending: true })
                return $"{f.GetType().Name} {f.GuestPath} has host state beyond its descriptor";
        return null;
    }

    /// <summary>Snapshots the machine (guest thread, at an instruction boundary, <see cref="WhyNot"/> null) and execs
    /// the JIT host on it. Returns only if execve failed: the reason (the guest goes on here).</summary>
    internal static unsafe string Exec(Kernel k, Target target, Settings settings, ulong at)
    {
        var descs = MachineSnapshot.Descriptions(k);
        byte[] snap;
        using (var capture = MachineSnapshot.Capture(k, new SnapshotPoint(0, 0, new OutputDigests()), Header))
            snap = capture.Encode();
        var ms = new MemoryStream(snap.Length + 4096);
        var w = new BinaryWriter(ms, Encoding.UTF8);
        w.Write(Magic); w.Write(PayloadVersion);
        w.Write(settings.Root); w.Write(settings.Program); w.Write((byte)settings.Tier); w.Write(settings.Stats); w.Write(settings.StartTimestamp);
        w.Write(at);
        w.Write(descs.Count);
        foreach (var f in descs) w.Write(f.HostFd);
        w.Write(snap);
        w.Flush();

        int memfd;
        fixed (byte* name = "revirt-hand-off\0"u8) memfd = (int)HostSys.Call(Nr.memfd_create, (long)name, 0); // no MFD_CLOEXEC: the JIT host inherits it
        if (memfd < 0) return $"memfd_create: errno {-memfd}";
        var bytes = ms.GetBuffer().AsSpan(0, (int)ms.Length);
        fixed (byte* p = bytes)
            for (int o = 0; o < bytes.Length;)
            {
                long n = HostSys.Call(Nr.write, memfd, (long)(p + o), bytes.Length - o);
                if (n <= 0) { HostSys.Call(Nr.close, memfd); return $"writing the snapshot: errno {-n}"; }
                o += (int)n;
            }

        // the machine's host descriptors survive the exec (the runtime opened them close-on-exec)
        var kept = descs.Where(f => f.HostFd > 2).Select(f => f.HostFd).Distinct().ToArray();
        foreach (int fd in kept) HostSys.Call(Nr.fcntl, fd, F.SETFD, 0);

        var argv = new[] { target.Dotnet, target.HostDll, Verb, memfd.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        // the environment this process was started with (the runtime's view of it may have been changed since)
        var env = File.ReadAllBytes("/proc/self/environ");
        var envs = Encoding.UTF8.GetString(env).Split('\0', StringSplitOptions.RemoveEmptyEntries);
        var strings = new List<IntPtr>();
        try
        {
            IntPtr[] Block(string[] items)
            {
                var a = new IntPtr[items.Length + 1];
                for (int i = 0; i < items.Length; i++) strings.Add(a[i] = Marshal.StringToCoTaskMemUTF8(items[i]));
                return a;
            }
            var av = Block(argv);
            var ev = Block(envs);
            Console.Out.Flush();
            Console.Error.Flush();
            long r;
            fixed (IntPtr* pa = av, pe = ev) r = HostSys.Call(Nr.execve, av[0], (long)pa, (long)pe);
            // still here: the exec failed; the guest runs on in this process
            foreach (int fd in kept) HostSys.Call(Nr.fcntl, fd, F.SETFD, F.FD_CLOEXEC);
            HostSys.Call(Nr.close, memfd);
            return $"execve {target.Dotnet}: errno {-r}";
        }
        finally { foreach (var s in strings) Marshal.FreeCoTaskMem(s); }
    }

    /// <summary>The JIT host's side: reads the payload from the inherited memfd, restores the machine on a live
    /// boundary and gives its descriptions the inherited host descriptors.</summary>
    /// <exception cref="SnapshotFormatException">The descriptor does not hold a hand-off of this version.</exception>
    public static Resumed Restore(int memfd)
    {
        byte[] bytes = File.ReadAllBytes($"/proc/self/fd/{memfd}");
        HostSys.Call(Nr.close, memfd);
        if (bytes.Length < Magic.Length + 4 || !bytes.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new SnapshotFormatException($"descriptor {memfd} does not hold a hand-off (no RVHANDOF magic)");
        var r = new BinaryReader(new MemoryStream(bytes, Magic.Length, bytes.Length - Magic.Length), Encoding.UTF8);
        uint version = r.ReadUInt32();
        if (version != PayloadVersion) throw new SnapshotFormatException($"hand-off version {version} (this host reads {PayloadVersion})");
        var settings = new Settings(r.ReadString(), r.ReadString(), (ExecutionTier)r.ReadByte(), r.ReadBoolean(), r.ReadInt64());
        ulong at = r.ReadUInt64();
        int n = r.ReadInt32();
        if (n < 0 || n > 1 << 20) throw new SnapshotFormatException($"{n} descriptions");
        var fds = new int[n];
        for (int i = 0; i < n; i++) fds[i] = r.ReadInt32();
        var snap = bytes.AsSpan(Magic.Length + (int)r.BaseStream.Position).ToArray();
        var options = new MachineOptions { Root = settings.Root, Program = settings.Program, Tier = settings.Tier };
        var (m, _) = MachineSnapshot.Restore(snap, Header, options, new LiveBoundary());
        var descs = MachineSnapshot.Descriptions(m.Kernel);
        if (descs.Count != n) { m.Dispose(); throw new SnapshotFormatException($"the snapshot restored {descs.Count} descriptions where the hand-off names {n} host descriptors"); }
        for (int i = 0; i < n; i++)
        {
            descs[i].HostFd = fds[i];
            // this process may start others (a protected replica's exit watch): the guest's descriptors are its own
            if (fds[i] > 2) HostSys.Call(Nr.fcntl, fds[i], F.SETFD, F.FD_CLOEXEC);
        }
        m.Kernel.ResumeLive();
        return new Resumed(m, settings, at);
    }
}

/// <summary>
/// The boundary of a live run that hands its machine to the JIT host (<see cref="HandOff"/>) once the guest has run
/// <see cref="After"/> instructions (all threads and processes together): live like <see cref="LiveBoundary"/>, it
/// asks the running thread to stop when the rest of that budget is spent and tries the hand-off at that stop.
/// </summary>
public sealed class HandOffBoundary(HandOff.Target target, HandOff.Settings settings, ulong after) : IBoundary
{
    /// <summary>Instructions to run before the first attempt.</summary>
    public ulong After { get; } = after;
    /// <summary>A machine that cannot be handed off at an attempt tries again after this many more instructions.</summary>
    public const ulong Retry = 1_000_000;

    ulong _due = after, _total, _lastStart;
    VirtualCpu? _last;
    bool _gaveUp;

    /// <summary>Why the last attempt did not hand off (null: none made or none refused).</summary>
    public string? LastRefusal { get; private set; }

    public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false) => perform();
    public ulong Value(int tid, InputKind kind, Func<ulong> perform) => perform();
    public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform) => perform();
    public bool Replaying => false;
    public bool KeepsFileContent => false;

    /// <summary>Adds what the thread that ran last executed since it was given its stop.</summary>
    void Account()
    {
        if (_last != null && _last.InstructionCount >= _lastStart) _total += _last.InstructionCount - _lastStart;
        _last = null;
    }

    public ulong NextStop(Kernel kernel, VirtualCpu cpu)
    {
        Account();
        _last = cpu;
        _lastStart = cpu.InstructionCount;
        if (kernel.HostEventsPending) return cpu.InstructionCount;
        if (_gaveUp) return ulong.MaxValue;
        return _total >= _due ? cpu.InstructionCount : cpu.InstructionCount + (_due - _total);
    }

    public void AtStop(Kernel kernel, VirtualCpu cpu)
    {
        Account();
        _last = cpu;
        _lastStart = cpu.InstructionCount;
        kernel.TakeHostEvent(cpu);
        if (_gaveUp || _total < _due || kernel.Exited) return;
        if (HandOff.WhyNot(kernel) is { } why)
        {
            LastRefusal = why;
            _due = _total + Retry;
            return;
        }
        string failed = HandOff.Exec(kernel, target, settings, _total);
        kernel.Options.Diagnostics.WriteLine($"revirt: the hand-off to the compiled tier failed ({failed}): the guest goes on interpreted");
        _gaveUp = true;
    }
}
