using System.CommandLine;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Snapshot;

namespace ReVirt.Primary;

/// <summary>
/// The options and actions of `run` and `record`: one definition compiled into both programs that run guests, `primary`
/// (JIT-started, with the compiled tier) and `revirt-run` (ahead-of-time compiled, interpreter only), so that a
/// guest runs the same way, with the same options and messages, in both.
/// </summary>
sealed class GuestCommand
{
    /// <summary>The program's name in its messages ("primary: ...").</summary>
    readonly string _name;

    /// <summary>The command line when this tree is made for one parse of it (null: a tree for any line, as help,
    /// errors and the record and protect commands need): `run` then leaves out the flags that no token of it names.</summary>
    readonly string[]? _line;

    /// <param name="line">the command line the tree will parse, when `run` may leave out the flags (options over
    /// bool) that none of its tokens names; null: every option is made. System.CommandLine's generic code over a
    /// value type has no ReadyToRun code, so each Option&lt;bool&gt; made cost every `run` three JIT-compiled methods
    /// (and, with the only other ones at start being Iced's, the JIT's set-up) for flags a start seldom gives. A token
    /// that does not spell a flag's name (alone or with ':' or '=' and a value) is tokenized alike whether or not the
    /// flag is in the tree (no flag has a single-letter alias to bundle, and response files are parsed under the
    /// full tree: see LeanRoot), so a parse without errors means the same either way; a flag left out reads false,
    /// as an absent one does.</param>
    public GuestCommand(string name, string[]? line = null)
    {
        _name = name;
        _line = line;
    }

    /// <summary>Whether the tree is for any command line, or some token of this one spells the option <paramref name="name"/>.</summary>
    bool MayName(string name)
    {
        if (_line == null) return true;
        foreach (var t in _line)
            if (t.StartsWith(name, StringComparison.Ordinal) && (t.Length == name.Length || t[name.Length] is ':' or '='))
                return true;
        return false;
    }

    public readonly Option<string> Root = new("--root")
    {
        Description = "Directory the guest sees as '/'. Guest paths cannot leave it through '..' or symlinks.",
        DefaultValueFactory = _ => "/",
    };
    public readonly Option<string?> Cwd = new("--cwd")
    {
        Description = "The guest's working directory, as a guest path (default: the current directory when --root is '/', else '/').",
    };
    public readonly Argument<string[]> Program = new("program")
    {
        Description = "The x86-64 Linux program to run (static or dynamically linked, or a #! script), then its arguments (put them after '--'). A name without '/' is looked up in PATH under the root. Without a program: the built-in demo guest (a CPU benchmark compiled from guests/src/bench.c).",
        Arity = ArgumentArity.ZeroOrMore,
    };
    // a string, not a FileInfo: the command-line library converts other types through a table of converters for
    // every type it knows, whose making cost each recording about 3 ms of CPU at its start (the path is made full here)
    public readonly Option<string> Log = new("--log")
    {
        Description = "The event log to write (replace if it exists).",
        Required = true,
    };
    // Options over value types (ulong, ulong?) are made only by the commands that have them: the command-line
    // library's generic code instantiated over a value type has no ReadyToRun code, so building them for every
    // command JIT-compiled nine methods at the start of every `run`.

    /// <summary>--checkpoint-interval (record, protect): a string option checked and converted here (<see
    /// cref="IntervalOf"/>), with the same help and the same error as an option over ulong, whose generic code (13
    /// methods without ReadyToRun code) every recording JIT-compiled at its start.</summary>
    public Option<string> Interval => _interval ??= IntervalOption();
    Option<string>? _interval;

    /// <summary>The --checkpoint-interval a parse gives (validated by the option).</summary>
    public ulong IntervalOf(ParseResult parse) => ParseInterval(parse.GetValue(Interval)) ?? Recording.DefaultCheckpointInterval;

    static ulong? ParseInterval(string? s)
        => ulong.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out ulong v) ? v : null;

    static Option<string> IntervalOption()
    {
        var o = new Option<string>("--checkpoint-interval")
        {
            Description = $"Write a checkpoint (a digest of registers and all memory, verified by replay) every N guest instructions (default {Grouped(Recording.DefaultCheckpointInterval)}: about five a second in the compiled tier); 0 disables periodic checkpoints (the final one is still written). A replay locates a divergence that no syscall, signal or output shows between two checkpoints: a smaller N narrows that window and costs, each time, rehashing the pages the guest wrote since the last checkpoint plus 32 bytes per page of its memory.",
            DefaultValueFactory = _ => Recording.DefaultCheckpointInterval.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        o.Validators.Add(r =>
        {
            foreach (var t in r.Tokens)
                if (ParseInterval(t.Value) == null)
                    r.AddError($"Cannot parse argument '{t.Value}' for option '{o.Name}' as expected type '{typeof(ulong)}'.");
        });
        return o;
    }
    /// <summary><paramref name="v"/> with a comma between groups of three digits, as the invariant culture's "N0"
    /// writes it. Not "N0" itself: formatting a number by a culture's rules made that culture's formatting data and
    /// cost every `record` about 3 ms of CPU while it built its command line, for a line only --help shows.</summary>
    internal static string Grouped(ulong v)
    {
        Span<char> text = stackalloc char[26]; // 20 digits and 6 commas at most
        int at = text.Length, n = 0;
        do
        {
            if (n > 0 && n % 3 == 0) text[--at] = ',';
            text[--at] = (char)('0' + (int)(v % 10));
            v /= 10;
            n++;
        } while (v != 0);
        return new string(text[at..]);
    }

    public readonly Option<string> Net = NetOption();
    public readonly Option<string?> Ip = new("--ip") { Description = "--net virtual: the interface's IPv4 address and prefix length, e.g. 10.0.0.2/24." };
    public readonly Option<string?> Mac = new("--mac") { Description = "--net virtual: the interface's MAC address (default: 02:52:56 followed by the address's last three bytes)." };
    public readonly Option<string> Tap = new("--tap") { Description = "--net virtual: the TAP device that is the interface's wire (create it with `ip tuntap add NAME mode tap` and give the host side an address on the same network).", DefaultValueFactory = _ => VirtualNetOptions.DefaultTap };
    public readonly Option<string?> Netns = new("--netns") { Description = "--net virtual: open the TAP device in this network namespace (a name of `ip netns`, or a path) instead of this process's." };
    // The flags (options over bool) are made at their first use (see the constructor's `line`): a flag never made
    // is in no tree, and reads false (IsSet).
    public Option<bool> NoTakeoverProbe => _noTakeoverProbe ??= new("--no-takeover-probe") { Description = "protect --net virtual: a backup that takes over repairs each connection without the tail-loss probe that follows the repair (a lost repair segment then waits for the retransmission time-out). For comparison runs; recorded in the log, so the backup does the same." };
    Option<bool>? _noTakeoverProbe;
    public Option<bool> NoRack => _noRack ??= new("--no-rack") { Description = "--net virtual: the in-VM TCP senders without RACK-TLP (RFC 8985): SACK loss recovery by duplicate ACKs only, no tail-loss probe, a lost retransmission waits for the retransmission time-out. For comparison runs; recorded in the log, so replays and backups do the same." };
    Option<bool>? _noRack;
    public Option<bool> Stats => _stats ??= new("--stats")
    {
        Description = "Print instruction counts and timing to stderr when the guest ends.",
    };
    Option<bool>? _stats;
    public Option<bool> ProfileTier => _profileTier ??= new("--profile-tier")
    {
        Description = "Count where compiled code returns to the execution loop (by target address) and which instructions it hands to the interpreter's handlers (by mnemonic), and print the most frequent to stderr when the guest ends. Slows the run; for finding what the compiled tier should do next, not for timing.",
    };
    Option<bool>? _profileTier;
    public readonly Option<string> Tier = TierOption();
    public Option<bool> BackgroundCompile => _backgroundCompile ??= new("--background-compile")
    {
        Description = "Default tier: compile a hot region on a compiler thread of its own while the guest goes on interpreting it, instead of on the guest's thread, which waits for it. Which blocks run compiled then depends on host timing; the results are the same either way. Needs an idle core to pay off. --stats reports the compile time in both cases.",
    };
    Option<bool>? _backgroundCompile;
    /// <summary>--hand-off-after (revirt-run only).</summary>
    public Option<ulong?> HandOffAfter => _handOffAfter ??= HandOffAfterOption();
    Option<ulong?>? _handOffAfter;

    static Option<ulong?> HandOffAfterOption() => new("--hand-off-after")
    {
        Description = $"After N guest instructions (all processes together; default {HandOff.DefaultAfter:N0} in this ahead-of-time compiled program, none where the compiled tier is here already), hand the machine to `primary`'s JIT-started host with the compiled tier, in this same process (execve: the process id, parent and descriptors stay) at the first point where nothing of it waits on the host; 0: never. Results, instruction counts and the exit status are those of a run that never moved.",
        HelpName = "N",
    };
    public readonly Option<string?> JitHost = new("--jit-host")
    {
        Description = "The primary.dll that takes the machine over (default: beside this program, or the repository's primary/bin/Release/net10.0/primary.dll); without one the guest stays here, interpreted.",
        HelpName = "PRIMARY.DLL",
    };

    static Option<string> NetOption()
    {
        var o = new Option<string>("--net")
        {
            Description = "The guest's network. host (default): its sockets are this host's sockets, with the host's addresses. virtual: its AF_INET sockets are served by a TCP/IP stack inside the VM on a virtual interface (--ip, --mac) whose wire is a TAP device (--tap); the connections are part of the replicated machine, so with `protect` they survive a failover.",
            DefaultValueFactory = _ => "host",
        };
        o.AcceptOnlyFromAmong("host", "virtual");
        return o;
    }

    static Option<string> TierOption()
    {
        var o = new Option<string>("--tier")
        {
            Description = "Which executor runs guest code: Default (interpret, compile hot blocks), Interpreter, or Compiled (every block). The results are the same in every tier."
                + (System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported ? "" : " This ahead-of-time compiled program has no compiled tier: every tier interprets."),
            HelpName = ReVirt.Cpu.ExecutionTiers.HelpName,
            DefaultValueFactory = _ => nameof(ReVirt.Cpu.ExecutionTier.Default),
        };
        o.Validators.Add(r => { if (!ReVirt.Cpu.ExecutionTiers.TryParse(r.GetValueOrDefault<string>(), out _)) r.AddError($"--tier: expected {ReVirt.Cpu.ExecutionTiers.HelpName}"); });
        return o;
    }

    /// <summary>The `run` command.</summary>
    public Command RunCommand() => Runs(new Command("run", "Run an x86-64 Linux program (and the processes it starts) in the ReVirt virtual machine. The guest's stdin, stdout and stderr are this process's; the exit status is the guest's (128+signal when a signal ended it)."));

    /// <summary>Gives a command the options and the action of `run` (revirt-run's root command is `run`, with the
    /// hand-off options: <paramref name="handOff"/>).</summary>
    public T Runs<T>(T command, bool handOff = false) where T : Command
    {
        foreach (var o in new Option[] { Root, Cwd, Net, Ip, Mac, Tap, Netns }) command.Options.Add(o);
        if (MayName("--no-rack")) command.Options.Add(NoRack);
        if (MayName("--stats")) command.Options.Add(Stats);
        command.Options.Add(Tier);
        if (MayName("--background-compile")) command.Options.Add(BackgroundCompile);
        if (handOff) { command.Options.Add(HandOffAfter); command.Options.Add(JitHost); }
        if (!handOff && MayName("--profile-tier")) command.Options.Add(ProfileTier);
        command.Arguments.Add(Program);
        command.SetAction(parse => Guest(parse, null));
        return command;
    }

    /// <summary>The `record` command. Its flags are made only when the command line may name them, as `run`'s are
    /// (see the constructor's `line`): each Option&lt;bool&gt; made cost every recording three JIT-compiled methods (and the
    /// runtime's generic cache a fourth) that `run` never compiles.</summary>
    public Command RecordCommand()
    {
        var record = new Command("record", "Run like `run` and record every nondeterministic input to an event log that `backup replay --log FILE` re-executes instruction for instruction.")
        {
            Log, Interval, Root, Cwd, Net, Ip, Mac, Tap, Netns,
        };
        if (MayName("--no-rack")) record.Options.Add(NoRack);
        if (MayName("--stats")) record.Options.Add(Stats);
        record.Options.Add(Tier);
        if (MayName("--background-compile")) record.Options.Add(BackgroundCompile);
        record.Arguments.Add(Program);
        record.SetAction(parse => Guest(parse, parse.GetValue(Log)));
        return record;
    }

    int Guest(ParseResult parse, string? log)
    {
        string root = parse.GetValue(Root)!;
        if (!Directory.Exists(root))
        {
            Console.Error.WriteLine($"{_name}: --root {root}: no such directory");
            return 2;
        }
        if (MakeOptions(parse) is not { } opts) return 2;
        bool stats = IsSet(parse, _stats);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        int status;
        ulong icount = 0;
        if (log == null)
        {
            using var m = new Machine(opts, HandOffBoundary(parse, opts, stats, start));
            // (revirt-run's and record's commands have no --profile-tier)
            bool profile = _profileTier is { } p && parse.CommandResult.Command.Options.Contains(p) && Flag(parse, p);
            status = LoadAndRun(m, opts, null, out icount, stats, profile);
        }
        else
        {
            string logPath = Path.GetFullPath(log);
            HashedProgram program;
            // a large program in a native image, as `run` reads it: disposed after the machine (declared before it)
            try { program = Recording.ReadProgram(opts, native: true); }
            catch (ElfLoadException e) { Console.Error.WriteLine($"{_name}: {e.Message}"); return e.ExitStatus; }
            using var image = ReVirt.Abi.NativeImage.Of(program.Program.Image);
            var header = Recording.Header(opts, program, IntervalOf(parse));
            LogWriter writer;
            try { writer = LogWriter.Create(logPath, header); }
            catch (IOException e)
            {
                Console.Error.WriteLine($"{_name}: --log: {e.Message}");
                return 2;
            }
            using var recording = writer;
            var boundary = new RecordingBoundary(writer, header.CheckpointInterval);
            using var m = new Machine(opts, boundary);
            status = LoadAndRun(m, opts, program.Program, out icount, stats); // the very bytes the header's hash is of
            writer.Flush();
            if (stats)
                Console.Error.WriteLine($"{_name}: log {logPath}: {boundary.Records} records, {boundary.LogBytes} bytes, "
                    + $"{boundary.Checkpoints} checkpoint digests in {boundary.CheckpointCpuNs / 1e6:F1} ms of CPU");
        }
        Report(stats, start, icount, status);
        return status;
    }

    /// <summary>The boundary of a run that hands off to the JIT host (null: a plain live run): only with the hand-off
    /// options, when the tier can compile at all, and where a JIT host is found.</summary>
    HandOffBoundary? HandOffBoundary(ParseResult parse, MachineOptions opts, bool stats, long start)
    {
        // `primary run` (its command never made the option): the compiled tier is here
        if (_handOffAfter is not { } handOffAfter || !parse.CommandResult.Command.Options.Contains(handOffAfter)) return null;
        ulong after = parse.GetValue(HandOffAfter) ?? (ReVirt.Cpu.CodeCache.CanCompile ? 0 : HandOff.DefaultAfter);
        if (after == 0 || opts.Tier == ReVirt.Cpu.ExecutionTier.Interpreter) return null;
        if (HandOff.Target.Find(parse.GetValue(JitHost)) is not { } target)
        {
            if (parse.GetValue(JitHost) is { } given) Console.Error.WriteLine($"{_name}: --jit-host {given}: not found (or no dotnet on PATH): the guest runs interpreted");
            return null;
        }
        return new HandOffBoundary(target, new HandOff.Settings(opts.Root, opts.Program, opts.Tier, stats, start), after);
    }

    /// <summary>The JIT host's side of a hand-off (`primary hand-off FD`): restores the machine from the payload in
    /// the inherited descriptor and runs it on; the exit status is the guest's.</summary>
    public int Resume(string[] args)
    {
        if (args.Length != 2 || !int.TryParse(args[1], out int fd))
        {
            Console.Error.WriteLine($"usage: {HandOff.Verb} FD (revirt-run hands its machine over with it)");
            return 2;
        }
        HandOff.Resumed resumed;
        try { resumed = HandOff.Restore(fd); }
        catch (Exception e) when (e is SnapshotFormatException or SnapshotRefusedException or IOException)
        {
            Console.Error.WriteLine($"{_name}: the hand-off could not be restored: {e.Message}");
            return 2;
        }
        using var m = resumed.Machine;
        int status = m.Run();
        ulong icount = m.InstructionCount;
        if (resumed.Settings.Stats)
        {
            Console.Error.WriteLine($"{_name}: handed off to the JIT host after {resumed.At} guest instructions");
            TierStats(m, resumed.Settings.Tier, icount, resumed.At);
            SyscallStats(m);
        }
        Report(resumed.Settings.Stats, resumed.Settings.StartTimestamp, icount, status);
        return status;
    }

    void Report(bool stats, long start, ulong icount, int status)
    {
        // (no Console.Out.Flush() here: the guest writes its stdout through the host's descriptor, and the console's
        // own writer flushes every write; making that writer only to flush it cost every run ~10 ms of CPU)
        if (stats)
        {
            double s = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
            Console.Error.WriteLine($"{_name}: {icount} guest instructions in {s:F3} s ({icount / s / 1e6:F1} M instructions/s), exit status {status}");
            // the host's own share: methods the runtime's JIT compiled (ReadyToRun and ahead-of-time code need none) and its time
            Console.Error.WriteLine($"{_name}: host JIT: {System.Runtime.JitInfo.GetCompiledMethodCount()} methods in {System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds:F0} ms");
            Console.Error.WriteLine($"{_name}: host GC: {GC.GetTotalAllocatedBytes() >> 20} MB allocated, {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)} collections (gen 0/1/2), {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms paused");
        }
    }

    /// <summary>The value of a flag (an option over bool) in a parse without errors: what <c>parse.GetValue(flag)</c>
    /// gives (false when absent: the library's result is then implicit; true when given without a value, else its
    /// value), read from the option's tokens.
    /// GetValue over bool is the command-line library's generic code instantiated over a value type, which has no
    /// precompiled code: its four methods were JIT-compiled at the start of every run.</summary>
    internal static bool Flag(ParseResult parse, Option<bool> flag)
        => parse.GetResult(flag) is { Implicit: false } r && (r.Tokens.Count == 0 || bool.Parse(r.Tokens[r.Tokens.Count - 1].Value));

    /// <summary>What the run reads of each flag in a parse of a tree this command made, in the order --no-rack,
    /// --no-takeover-probe, --stats, --profile-tier, --background-compile (for tests: the same reads the run makes).</summary>
    internal bool[] FlagValues(ParseResult parse)
        => [IsSet(parse, _noRack), IsSet(parse, _noTakeoverProbe), IsSet(parse, _stats), IsSet(parse, _profileTier), IsSet(parse, _backgroundCompile)];

    /// <summary>A flag's value (<see cref="Flag"/>), false for one never made (in no tree: the command line does not
    /// name it). Reading a flag through this leaves it unmade.</summary>
    internal static bool IsSet(ParseResult parse, Option<bool>? made) => made != null && Flag(parse, made);

    /// <summary>The machine's options from the command line; null (after saying why) when the network options are wrong.</summary>
    public MachineOptions? MakeOptions(ParseResult parse)
    {
        VirtualNetOptions? net = null;
        if (parse.GetValue(Net) == "virtual")
        {
            if (parse.GetValue(Ip) is not { } ip) { Console.Error.WriteLine($"{_name}: --net virtual needs --ip A.B.C.D/N"); return null; }
            net = VirtualNetOptions.Parse(ip, parse.GetValue(Mac), parse.GetValue(Tap)!, out var err);
            if (net == null) { Console.Error.WriteLine($"{_name}: {err}"); return null; }
            net = net with { Namespace = parse.GetValue(Netns), Rack = !IsSet(parse, _noRack), TakeoverProbe = !IsSet(parse, _noTakeoverProbe) };
            // the wire must exist before the guest runs: a clear error now rather than a failed socket call later
            try { TapDevice.Open(net.TapName, net.Namespace).Dispose(); }
            catch (Exception e) when (e is IOException or ArgumentException) { Console.Error.WriteLine($"{_name}: --tap {net.TapName}: {e.Message}"); return null; }
        }
        else if (parse.GetValue(Ip) != null || parse.GetValue(Mac) != null || IsSet(parse, _noRack) || IsSet(parse, _noTakeoverProbe))
        {
            Console.Error.WriteLine($"{_name}: --ip, --mac, --no-rack and --no-takeover-probe need --net virtual");
            return null;
        }
        string root = parse.GetValue(Root)!;
        string[] argv = parse.GetValue(Program)!;
        string full = Path.GetFullPath(root);
        if (argv.Length == 0) argv = BuiltInDemo(full);
        return new MachineOptions
        {
            Root = root,
            Program = argv[0],
            Args = argv[1..],
            Cwd = parse.GetValue(Cwd) ?? (full == "/" ? Environment.CurrentDirectory : "/"),
            Net = net,
            Tier = ReVirt.Cpu.ExecutionTiers.Parse(parse.GetValue(Tier)),
            CompileInBackground = IsSet(parse, _backgroundCompile),
        };
    }

    /// <summary>Extracts the embedded demo guest under the root (once per content) and returns its command line.</summary>
    string[] BuiltInDemo(string root)
    {
        using var res = typeof(GuestCommand).Assembly.GetManifestResourceStream("ReVirt.Primary.demo.elf");
        if (res == null) throw new InvalidOperationException("the built-in demo guest is missing from this build");
        var bytes = new MemoryStream();
        res.CopyTo(bytes);
        string name = $"revirt-demo-{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(bytes.ToArray()))[..12].ToLowerInvariant()}";
        string dir = Path.Combine(root, "tmp");
        if (!Directory.Exists(dir)) dir = root;
        string host = Path.Combine(dir, name);
        if (!File.Exists(host))
        {
            string tmp = host + $".{Environment.ProcessId}";
            File.WriteAllBytes(tmp, bytes.ToArray());
            File.Move(tmp, host, overwrite: true);
        }
        string guest = "/" + Path.GetRelativePath(root, host);
        Console.Error.WriteLine($"{_name}: no program given: running the built-in demo guest {guest} (guests/src/bench.c, musl, static) with argument 5");
        return new[] { guest, "5" };
    }

    int LoadAndRun(Machine m, MachineOptions opts, StartProgram? program, out ulong icount, bool stats, bool profile = false)
    {
        icount = 0;
        try { m.Load(program); }
        catch (ElfLoadException e)
        {
            Console.Error.WriteLine($"{_name}: {e.Message}");
            return e.ExitStatus;
        }
        // set before the first instruction: every code cache of the machine's processes inherits it
        if (profile) m.Kernel.Init.Code.Profile = new ReVirt.Cpu.TierProfile();
        if (stats) m.Kernel.WorkAccount = new HostWorkAccount();
        int status = m.Run();
        icount = m.InstructionCount;
        m.Kernel.Init.Code.Profile?.Write(Console.Error, m.Kernel.Init.Code, _name);
        if (stats)
        {
            if (m.Boundary is HandOffBoundary { LastRefusal: { } why }) Console.Error.WriteLine($"{_name}: no hand-off: {why}");
            // an ahead-of-time compiled host interprets whatever tier was asked for (ExecutionTiers.Effective)
            if (m.TierNote is { } note) Console.Error.WriteLine($"{_name}: {note}");
            TierStats(m, m.Options.Tier, icount);
            SyscallStats(m);
            Console.Error.WriteLine($"{_name}: {m.Kernel.WorkAccount!.Describe(m.Kernel)}");
        }
        return status;
    }

    /// <summary>The guest's syscalls by number (strace -c inside the VM; the hand-off's JIT host counts from the
    /// hand-off on).</summary>
    void SyscallStats(Machine m) => Console.Error.WriteLine($"{_name}: guest syscalls: {m.Kernel.SyscallStats.Describe(SyscallCounts.ShownByStats)}");

    /// <param name="interpretedBefore">instructions a run interpreted before it was handed to this process</param>
    void TierStats(Machine m, ReVirt.Cpu.ExecutionTier tier, ulong icount, ulong interpretedBefore = 0)
    {
        var code = m.Kernel.Init.Code;
        long compiled = Math.Max(0, (long)icount - (long)interpretedBefore - code.InterpretedInstructions);
        double ms = 1000.0 / System.Diagnostics.Stopwatch.Frequency;
        // the first part's format is read by bench/run.py (also from older builds): new figures go after it
        Console.Error.WriteLine($"{_name}: tier {tier}: {code.BlocksCompiled} blocks compiled in {code.CompileTicks * ms:F0} ms, "
            + $"{compiled} of {icount} instructions run compiled ({100.0 * compiled / Math.Max(1UL, icount):F1} %); "
            + $"{code.RegionsCompiled} regions, {code.CompileTicks * ms / Math.Max(1, code.RegionsCompiled):F2} ms per region (longest {code.MaxCompileTicks * ms:F2}), "
            + $"IL emission {ReVirt.Cpu.CompileTime.EmitTicks * ms:F0} ms, JIT {ReVirt.Cpu.CompileTime.JitTicks * ms:F0} ms, "
            + (code.Background != null ? $"compiled in the background ({code.RegionsQueued} queued, {code.RegionsTakenBack} taken back by the guest, {code.CompilesDiscarded} discarded)" : "compiled on the guest thread")
            + $", {code.CompileFailures} compilations refused"
            + $", compile CPU {ReVirt.Cpu.CompileTime.CpuNs / 1e6:F1} ms");
    }
}
