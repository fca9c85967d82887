using System.CommandLine;
using ReVirt;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;

// the exit watch a protected replica starts beside itself (internal verb: ExitWatch), before anything else is built
if (args.Length > 0 && args[0] == ReVirt.Replication.ExitWatch.Verb) return ReVirt.Replication.ExitWatch.RunWatcher(args);

var rootOpt = new Option<string>("--root")
{
    Description = "Directory the guest sees as '/'. Guest paths cannot leave it through '..' or symlinks.",
    DefaultValueFactory = _ => "/",
};
var cwdOpt = new Option<string?>("--cwd")
{
    Description = "The guest's working directory, as a guest path (default: the current directory when --root is '/', else '/').",
};
var program = new Argument<string[]>("program")
{
    Description = "The x86-64 Linux program to run (static or dynamically linked, or a #! script), then its arguments (put them after '--'). A name without '/' is looked up in PATH under the root. Without a program: the built-in demo guest (a CPU benchmark compiled from guests/src/bench.c).",
    Arity = ArgumentArity.ZeroOrMore,
};
var logOpt = new Option<FileInfo>("--log")
{
    Description = "The event log to write (replace if it exists).",
    Required = true,
};
var intervalOpt = new Option<ulong>("--checkpoint-interval")
{
    Description = "Write a checkpoint (a digest of registers and memory, verified by replay) every N guest instructions; 0 disables periodic checkpoints.",
    DefaultValueFactory = _ => Recording.DefaultCheckpointInterval,
};
var netOpt = new Option<string>("--net")
{
    Description = "The guest's network. host (default): its sockets are this host's sockets, with the host's addresses. virtual: its AF_INET sockets are served by a TCP/IP stack inside the VM on a virtual interface (--ip, --mac) whose wire is a TAP device (--tap); the connections are part of the replicated machine, so with `protect` they survive a failover.",
    DefaultValueFactory = _ => "host",
};
netOpt.AcceptOnlyFromAmong("host", "virtual");
var ipOpt = new Option<string?>("--ip") { Description = "--net virtual: the interface's IPv4 address and prefix length, e.g. 10.0.0.2/24." };
var macOpt = new Option<string?>("--mac") { Description = "--net virtual: the interface's MAC address (default: 02:52:56 followed by the address's last three bytes)." };
var tapOpt = new Option<string>("--tap") { Description = "--net virtual: the TAP device that is the interface's wire (create it with `ip tuntap add NAME mode tap` and give the host side an address on the same network).", DefaultValueFactory = _ => VirtualNetOptions.DefaultTap };
var netnsOpt = new Option<string?>("--netns") { Description = "--net virtual: open the TAP device in this network namespace (a name of `ip netns`, or a path) instead of this process's." };
var statsOpt = new Option<bool>("--stats")
{
    Description = "Print instruction counts and timing to stderr when the guest ends.",
};

var tierOpt = new Option<string>("--tier")
{
    Description = "Which executor runs guest code: Default (interpret, compile hot blocks), Interpreter, or Compiled (every block). The results are the same in every tier.",
    HelpName = ReVirt.Cpu.ExecutionTiers.HelpName,
    DefaultValueFactory = _ => nameof(ReVirt.Cpu.ExecutionTier.Default),
};
tierOpt.Validators.Add(r => { if (!ReVirt.Cpu.ExecutionTiers.TryParse(r.GetValueOrDefault<string>(), out _)) r.AddError($"--tier: expected {ReVirt.Cpu.ExecutionTiers.HelpName}"); });

var run = new Command("run", "Run an x86-64 Linux program (and the processes it starts) in the ReVirt virtual machine. The guest's stdin, stdout and stderr are this process's; the exit status is the guest's (128+signal when a signal ended it).")
{
    rootOpt, cwdOpt, netOpt, ipOpt, macOpt, tapOpt, netnsOpt, statsOpt, tierOpt, program,
};
run.SetAction(parse => Guest(parse, null));

var recordCmd = new Command("record", "Run like `run` and record every nondeterministic input to an event log that `backup replay --log FILE` re-executes instruction for instruction.")
{
    logOpt, intervalOpt, rootOpt, cwdOpt, netOpt, ipOpt, macOpt, tapOpt, netnsOpt, statsOpt, tierOpt, program,
};
recordCmd.SetAction(parse => Guest(parse, parse.GetValue(logOpt)));

var rootCmd = new RootCommand("ReVirt primary: runs and records guest programs in a deterministic x86-64 virtual machine.")
{
    run, recordCmd,
};
if (args.Length == 0 || args[0] is not ("run" or "record")) rootCmd.Subcommands.Add(ProtectCommand());
return rootCmd.Parse(args).Invoke();

/// <summary>The protect command. Built only when it can be the one asked for: `run` and `record` need none of its
/// options, and their value-type instantiations of System.CommandLine's generics (Option&lt;int&gt;, Option&lt;long&gt;, ...)
/// would otherwise be JIT-compiled on every run's start path.</summary>
Command ProtectCommand()
{
    var backupOpt = new Option<string>("--backup") { Description = "URL of the backup's replication endpoint (`backup listen --listen URL`), e.g. http://127.0.0.1:7000.", Required = true };
    var tokenOpt = new Option<string?>("--token-file") { Description = "File holding the secret shared with the backup (the handshake proves it with an HMAC; it never travels)." };
    var arbiterOpt = new Option<string?>("--arbiter") { Description = ReVirt.Arbiter.Arbiters.Help };
    arbiterOpt.Validators.Add(r => { if (ReVirt.Arbiter.Arbiters.Validate(r.GetValueOrDefault<string?>()) is { } err) r.AddError($"--arbiter: {err}"); });
    var hbOpt = new Option<int>("--heartbeat-ms") { Description = "Heartbeat interval when no log is flowing.", DefaultValueFactory = _ => 100 };
    var timeoutOpt = new Option<int>("--timeout-ms") { Description = "The backup is declared lost after this long without an acknowledgement or heartbeat.", DefaultValueFactory = _ => 2000 };
    var lagRecOpt = new Option<long>("--max-lag-records") { Description = "Slow the guest down while more than this many log records are unacknowledged (bounds failover time).", DefaultValueFactory = _ => 50_000 };
    var lagBytesOpt = new Option<long>("--max-lag-bytes") { Description = "Slow the guest down while more than this many log bytes are unacknowledged.", DefaultValueFactory = _ => 16L << 20 };
    var certOpt = new Option<string?>("--cert") { Description = "Mutual TLS: this replica's certificate (PEM); with --key and --ca, and an https:// --backup URL." };
    var keyOpt = new Option<string?>("--key") { Description = "Mutual TLS: the private key of --cert (PEM)." };
    var caOpt = new Option<string?>("--ca") { Description = "Mutual TLS: the CA certificate(s) (PEM) the backup's certificate must chain to; the system trust store is not used." };
    var eventsOpt = new Option<string?>("--events") { Description = "Report what happens as JSON lines (one event per line: protected, backup-lost, unprotected, fenced, exit, ...) to FILE or to an inherited descriptor fd:N." };
    var plantOpt = new Option<string?>("--plant") { Description = "Drills only: plant a violation the drill's checkers must report (gate-early, ignore-arbiter, snapshot-omits-page).", Hidden = true };
    plantOpt.AcceptOnlyFromAmong("gate-early", "ignore-arbiter", "snapshot-omits-page");
    var noExitWatchOpt = new Option<bool>("--no-exit-watch")
    {
        Description = "Start no exit watch: by default a small process beside this one shuts the data link down the moment this process starts to exit (killed or ended), so the backup learns of a death at once instead of when the kernel has torn the process down and closes its sockets (tens to hundreds of ms on a loaded machine). A frozen or cut-off primary is still judged by the backup's --primary-silence-ms.",
    };
    var standbyOpt = new Option<string[]>("--standby")
    {
        Description = "URL of a standby (`backup listen --listen URL` with the same token or certificates), repeatable. Whenever this replica runs without a backup (it lost its backup and won the arbiter), it asks the standbys in turn every --standby-retry-ms until one accepts, sends it the whole log from the beginning and is protected again; output produced from then on waits for that standby's acknowledgements.",
        AllowMultipleArgumentsPerToken = false,
    };
    var standbyRetryOpt = new Option<int>("--standby-retry-ms") { Description = "Pause between two rounds over the standbys while none accepts.", DefaultValueFactory = _ => 500 };
    var storeOpt = new Option<string?>("--log") { Description = "Where this replica keeps its whole log, which a standby that joins later receives from the beginning (default: a temporary file removed at exit)." };
    var replayLagOpt = new Option<int>("--max-replay-lag-ms") { Description = "Slow the guest down while the backup's replay trails the log by more than this many milliseconds (the age of the oldest record it has not replayed), until it is within half of it: a takeover then has little to replay before going live. 0: no bound.", DefaultValueFactory = _ => 20 };
    var backupDataOpt = new Option<string?>("--backup-data") { Description = "HOST:PORT where the backup's data link (the log and the acks, opened after the handshake) is reached, when not at the --backup host and the port the backup names (e.g. through a relay)." };
    var protoOpt = new Option<uint>("--protocol-version") { Description = "Testing: announce another protocol version.", Hidden = true, DefaultValueFactory = _ => ReVirt.Replication.ReplicationProtocol.Version };
    var protect = new Command("protect", "Run like `record`, streaming the event log to a backup (`backup listen`) that replays it in lockstep and takes over if this primary dies. Output leaves the VM only once the backup holds the log up to the point where it was produced.")
    {
        backupOpt, noExitWatchOpt, standbyOpt, standbyRetryOpt, storeOpt, tokenOpt, certOpt, keyOpt, caOpt, arbiterOpt, hbOpt, timeoutOpt, lagRecOpt, lagBytesOpt, replayLagOpt, backupDataOpt, eventsOpt, plantOpt, protoOpt, intervalOpt, rootOpt, cwdOpt, netOpt, ipOpt, macOpt, tapOpt, netnsOpt, statsOpt, tierOpt, program,
    };
    protect.SetAction(parse =>
    {
        if (ReVirt.Replication.ReplicaChannelOptions.Load("--backup", parse.GetValue(backupOpt)!, parse.GetValue(tokenOpt), parse.GetValue(certOpt), parse.GetValue(keyOpt),
                parse.GetValue(caOpt), parse.GetValue(eventsOpt), out var secret, out var tls, out var events) is { } bad)
        { Console.Error.WriteLine($"primary: {bad}"); return 2; }
        var settings = new ReVirt.Replication.ProtectSettings
        {
            Standbys = parse.GetValue(standbyOpt) ?? [],
            StandbyRetryMs = parse.GetValue(standbyRetryOpt),
            LogPath = parse.GetValue(storeOpt),
            Stop = code => Environment.Exit(code),
            Tls = tls,
            BackupUrl = parse.GetValue(backupOpt)!,
            Secret = secret,
            Root = ReVirt.Replication.RootIdentities.Of(parse.GetValue(rootOpt)!),
            ArbiterPath = parse.GetValue(arbiterOpt),
            HeartbeatMs = parse.GetValue(hbOpt),
            TimeoutMs = parse.GetValue(timeoutOpt),
            MaxLagRecords = parse.GetValue(lagRecOpt),
            MaxLagBytes = parse.GetValue(lagBytesOpt),
            // a planted early gate releases output as an unprotected primary would: holding the guest for the backup's
            // replay would stop it the moment the drill cuts the link, before the violation could show
            MaxReplayLagMs = parse.GetValue(plantOpt) == "gate-early" ? 0 : parse.GetValue(replayLagOpt),
            BackupDataAddress = parse.GetValue(backupDataOpt),
            RootDigest = ReVirt.Replication.RootDigest.Compute(parse.GetValue(rootOpt)!),
            ProtocolVersion = parse.GetValue(protoOpt),
            Events = events,
            ExitWatch = !parse.GetValue(noExitWatchOpt),
            Plant = parse.GetValue(plantOpt) switch
            {
                "gate-early" => ReVirt.Replication.PrimaryPlant.GateEarly,
                "ignore-arbiter" => ReVirt.Replication.PrimaryPlant.IgnoreArbiter,
                _ => ReVirt.Replication.PrimaryPlant.None,
            },
            PlantSnapshot = parse.GetValue(plantOpt) == "snapshot-omits-page" ? ReVirt.Snapshot.SnapshotPlant.OmitPage : ReVirt.Snapshot.SnapshotPlant.None,
        };
        if (MakeOptions(parse) is not { } machine) return 2;
        return ReVirt.Primary.ProtectHost.Run(settings, machine, parse.GetValue(intervalOpt), parse.GetValue(statsOpt));
    });
    return protect;
}

int Guest(ParseResult parse, FileInfo? log)
{
    string root = parse.GetValue(rootOpt)!;
    string? cwd = parse.GetValue(cwdOpt);
    string[] argv = parse.GetValue(program)!;
    if (!Directory.Exists(root))
    {
        Console.Error.WriteLine($"primary: --root {root}: no such directory");
        return 2;
    }
    if (MakeOptions(parse) is not { } opts) return 2;
    var sw = System.Diagnostics.Stopwatch.StartNew();
    int status;
    ulong icount = 0;
    if (log == null)
    {
        using var m = new Machine(opts);
        status = LoadAndRun(m, opts, null, out icount, parse.GetValue(statsOpt));
    }
    else
    {
        StartProgram program;
        try { program = Kernel.ResolveProgram(opts); }
        catch (ElfLoadException e) { Console.Error.WriteLine($"primary: {e.Message}"); return e.ExitStatus; }
        var header = Recording.Header(opts, program.Image, parse.GetValue(intervalOpt));
        using var writer = LogWriter.Create(log.FullName, header);
        var boundary = new RecordingBoundary(writer, header.CheckpointInterval);
        using var m = new Machine(opts, boundary);
        status = LoadAndRun(m, opts, program, out icount, parse.GetValue(statsOpt)); // the very bytes the header's hash is of
        writer.Flush();
        if (parse.GetValue(statsOpt))
            Console.Error.WriteLine($"primary: log {log.FullName}: {boundary.Records} records, {boundary.LogBytes} bytes");
    }
    Console.Out.Flush();
    if (parse.GetValue(statsOpt))
    {
        double s = sw.Elapsed.TotalSeconds;
        Console.Error.WriteLine($"primary: {icount} guest instructions in {s:F3} s ({icount / s / 1e6:F1} M instructions/s), exit status {status}");
        // the host's own share: methods the runtime's JIT compiled (ReadyToRun code needs none) and its time
        Console.Error.WriteLine($"primary: host JIT: {System.Runtime.JitInfo.GetCompiledMethodCount()} methods in {System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds:F0} ms");
        Console.Error.WriteLine($"primary: host GC: {GC.GetTotalAllocatedBytes() >> 20} MB allocated, {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)} collections (gen 0/1/2), {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms paused");
    }
    return status;
}

/// <summary>The machine's options from the command line; null (after saying why) when the network options are wrong.</summary>
MachineOptions? MakeOptions(ParseResult parse)
{
    VirtualNetOptions? net = null;
    if (parse.GetValue(netOpt) == "virtual")
    {
        if (parse.GetValue(ipOpt) is not { } ip) { Console.Error.WriteLine("primary: --net virtual needs --ip A.B.C.D/N"); return null; }
        net = VirtualNetOptions.Parse(ip, parse.GetValue(macOpt), parse.GetValue(tapOpt)!, out var err);
        if (net == null) { Console.Error.WriteLine($"primary: {err}"); return null; }
        net = net with { Namespace = parse.GetValue(netnsOpt) };
        // the wire must exist before the guest runs: a clear error now rather than a failed socket call later
        try { TapDevice.Open(net.TapName, net.Namespace).Dispose(); }
        catch (Exception e) when (e is IOException or ArgumentException) { Console.Error.WriteLine($"primary: --tap {net.TapName}: {e.Message}"); return null; }
    }
    else if (parse.GetValue(ipOpt) != null || parse.GetValue(macOpt) != null)
    {
        Console.Error.WriteLine("primary: --ip and --mac need --net virtual");
        return null;
    }
    string root = parse.GetValue(rootOpt)!;
    string[] argv = parse.GetValue(program)!;
    string full = Path.GetFullPath(root);
    if (argv.Length == 0) argv = BuiltInDemo(full);
    return new MachineOptions
    {
        Root = root,
        Program = argv[0],
        Args = argv[1..],
        Cwd = parse.GetValue(cwdOpt) ?? (full == "/" ? Environment.CurrentDirectory : "/"),
        Net = net,
        Tier = ReVirt.Cpu.ExecutionTiers.Parse(parse.GetValue(tierOpt)),
    };
}

/// <summary>Extracts the embedded demo guest under the root (once per content) and returns its command line.</summary>
static string[] BuiltInDemo(string root)
{
    using var res = typeof(Program).Assembly.GetManifestResourceStream("ReVirt.Primary.demo.elf");
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
    Console.Error.WriteLine($"primary: no program given: running the built-in demo guest {guest} (guests/src/bench.c, musl, static) with argument 5");
    return new[] { guest, "5" };
}

static int LoadAndRun(Machine m, MachineOptions opts, StartProgram? program, out ulong icount, bool stats)
{
    icount = 0;
    try { m.Load(program); }
    catch (ElfLoadException e)
    {
        Console.Error.WriteLine($"primary: {e.Message}");
        return e.ExitStatus;
    }
    int status = m.Run();
    icount = m.InstructionCount;
    if (stats)
    {
        var code = m.Kernel.Init.Code;
        long compiled = Math.Max(0, (long)icount - code.InterpretedInstructions);
        Console.Error.WriteLine($"primary: tier {opts.Tier}: {code.BlocksCompiled} blocks compiled in {code.CompileTicks * 1000.0 / System.Diagnostics.Stopwatch.Frequency:F0} ms, "
            + $"{compiled} of {icount} instructions run compiled ({100.0 * compiled / Math.Max(1UL, icount):F1} %)");
    }
    return status;
}
