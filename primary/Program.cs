using System.CommandLine;
using ReVirt.Primary;

// the exit watch a protected replica starts beside itself (internal verb: ExitWatch), before anything else is built
if (args.Length > 0 && args[0] == ReVirt.Replication.ExitWatch.Verb) return ReVirt.Replication.ExitWatch.RunWatcher(args);

// a machine handed over by revirt-run (the same process, after execve): it continues the run, reporting as revirt-run
if (args.Length > 0 && args[0] == ReVirt.Snapshot.HandOff.Verb) return new GuestCommand("revirt-run").Resume(args);

// a command that runs a guest builds the decoder's tables on a second thread meanwhile (see DecodeTables)
if (args.Length > 0 && args[0] is "run" or "record" or "protect") ReVirt.Cpu.DecodeTables.BuildInBackground();

const string Description = "ReVirt primary: runs and records guest programs in a deterministic x86-64 virtual machine.";

// A command line that cannot ask for help, the version or a directive is parsed under a plain root command first:
// RootCommand's constructor makes its help option, whose description System.CommandLine looks up through a
// ResourceManager (about 12 ms of every start-up, an eighth of a `busybox true`). What that parse accepts, the full
// tree accepts with the same meaning (see LeanRoot); anything it refuses is parsed again under the RootCommand, so
// errors, help and --version read as before.
if (LeanRoot.Fits(args))
{
    // (and `run` leaves out the flags no token names: GuestCommand's line)
    var lean = Tree(new Command("primary", Description), new GuestCommand("primary", args));
    if (lean.Errors.Count == 0) return lean.Invoke();
}
return Tree(new RootCommand(Description), new GuestCommand("primary")).Invoke();

// The root's subcommands and the parse of the command line under it.
ParseResult Tree(Command root, GuestCommand guest)
{
    root.Subcommands.Add(guest.RunCommand());
    // record and protect are built only when the command line can name them: `run` needs none of their options (see
    // ProtectCommand); the root's subcommands keep their order in --help
    if (args.Length == 0 || args[0] is not "run") root.Subcommands.Add(guest.RecordCommand());
    if (args.Length == 0 || args[0] is not ("run" or "record")) root.Subcommands.Add(ProtectCommand(guest));
    return root.Parse(args);
}

/// <summary>The protect command. Built only when it can be the one asked for: `run` and `record` need none of its
/// options, and their value-type instantiations of System.CommandLine's generics (Option&lt;int&gt;, Option&lt;long&gt;, ...)
/// would otherwise be JIT-compiled on every run's start path.</summary>
Command ProtectCommand(GuestCommand guest)
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
    var plantOpt = new Option<string?>("--plant") { Description = "Drills only: plant a violation the drill's checkers must report (gate-early, files-early, ignore-arbiter, stale-term, snapshot-omits-page, snapshot-corrupt-chunk, snapshot-truncated, join-withholds-log).", Hidden = true };
    plantOpt.AcceptOnlyFromAmong(ReVirt.Replication.LivePlants.Names);
    var noPulseOpt = new Option<bool>("--no-pulse")
    {
        Description = "Write no liveness pulse on the data link: by default a native thread of this process (which no garbage collection stops, at real-time priority when permitted) writes a small message on a plain data link every heartbeat interval, so the backup's --primary-silence-ms measures this process and its link rather than the runtime's pauses. Without it only the heartbeats (paused by garbage collections) keep a quiet link alive. A TLS link has no pulse.",
    };
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
    var joinTimeoutOpt = new Option<int>("--join-timeout-ms") { Description = ReVirt.Replication.ProtectSettings.JoinTimeoutHelp, DefaultValueFactory = _ => ReVirt.Replication.ProtectSettings.DefaultJoinTimeoutMs };
    var joinProgressOpt = new Option<int>("--join-progress-ms") { Description = ReVirt.Replication.ProtectSettings.JoinProgressHelp, DefaultValueFactory = _ => ReVirt.Replication.ProtectSettings.DefaultJoinProgressMs };
    var metricsOpt = new Option<string?>("--metrics-listen") { Description = ReVirt.Replication.MetricsEndpoint.OptionHelp };
    var storeOpt = new Option<string?>("--log") { Description = "Where this replica keeps its whole log, which a standby that joins later receives from the beginning (default: a temporary file removed at exit)." };
    var replayLagOpt = new Option<int>("--max-replay-lag-ms") { Description = "Slow the guest down while the backup's replay trails the log by more than this many milliseconds (the age of the oldest record it has not replayed), until it is within half of it: a takeover then has little to replay before going live. 0: no bound.", DefaultValueFactory = _ => 20 };
    var shipAfterOpt = new Option<int>("--ship-after-us") { Description = "A record whose output waits for the backup's acknowledgement is shipped when the guest is about to wait, when it polls again while the backup has acknowledged everything shipped before, at its first syscall after that acknowledgement when it was logged while a batch was on its way, or at its first syscall this many microseconds after it was logged. Longer gathers more replies per batch (fewer batches, acknowledgements and wake-ups on both replicas per request) and may hold a reply up to that much longer; a server that runs out of requests ships as it parks.", DefaultValueFactory = _ => ReVirt.Replay.RecordingBoundary.DefaultShipAfterMicroseconds };
    shipAfterOpt.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 0) r.AddError("--ship-after-us: must be 0 or more"); });
    var backupDataOpt = new Option<string?>("--backup-data") { Description = "HOST:PORT where the backup's data link (the log and the acks, opened after the handshake) is reached, when not at the --backup host and the port the backup names (e.g. through a relay)." };
    var dataLinkOpt = new Option<string>("--data-link") { Description = ReVirt.Replication.DataLinkKinds.Help, DefaultValueFactory = _ => "auto" };
    dataLinkOpt.AcceptOnlyFromAmong("auto", "unix", "tcp");
    var protoOpt = new Option<uint>("--protocol-version") { Description = "Testing: announce another protocol version.", Hidden = true, DefaultValueFactory = _ => ReVirt.Replication.ReplicationProtocol.Version };
    var protect = new Command("protect", "Run like `record`, streaming the event log to a backup (`backup listen`) that replays it in lockstep and takes over if this primary dies. Output leaves the VM only once the backup holds the log up to the point where it was produced.")
    {
        backupOpt, noExitWatchOpt, noPulseOpt, standbyOpt, standbyRetryOpt, joinTimeoutOpt, joinProgressOpt, storeOpt, tokenOpt, certOpt, keyOpt, caOpt, arbiterOpt, hbOpt, timeoutOpt, lagRecOpt, lagBytesOpt, replayLagOpt, shipAfterOpt, backupDataOpt, dataLinkOpt, eventsOpt, metricsOpt, plantOpt, protoOpt, guest.Interval, guest.Root, guest.Cwd, guest.Net, guest.Ip, guest.Mac, guest.Tap, guest.Netns, guest.NoRack, guest.NoTakeoverProbe, guest.Stats, guest.Tier, guest.BackgroundCompile, guest.Program,
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
            JoinTimeoutMs = parse.GetValue(joinTimeoutOpt),
            JoinProgressMs = parse.GetValue(joinProgressOpt),
            LogPath = parse.GetValue(storeOpt),
            Stop = code => Environment.Exit(code),
            Tls = tls,
            BackupUrl = parse.GetValue(backupOpt)!,
            Secret = secret,
            Root = ReVirt.Replication.RootIdentities.Of(parse.GetValue(guest.Root)!),
            ArbiterPath = parse.GetValue(arbiterOpt),
            HeartbeatMs = parse.GetValue(hbOpt),
            TimeoutMs = parse.GetValue(timeoutOpt),
            MaxLagRecords = parse.GetValue(lagRecOpt),
            MaxLagBytes = parse.GetValue(lagBytesOpt),
            // a planted early gate releases output as an unprotected primary would: holding the guest for the backup's
            // replay would stop it the moment the drill cuts the link, before the violation could show
            MaxReplayLagMs = parse.GetValue(plantOpt) == "gate-early" ? 0 : parse.GetValue(replayLagOpt),
            ShipAfterMicroseconds = parse.GetValue(shipAfterOpt),
            BackupDataAddress = parse.GetValue(backupDataOpt),
            DataLink = ReVirt.Replication.DataLinkKinds.Parse(parse.GetValue(dataLinkOpt)!),
            RootDigest = ReVirt.Replication.RootDigest.Compute(parse.GetValue(guest.Root)!),
            ProtocolVersion = parse.GetValue(protoOpt),
            Events = events,
            ExitWatch = !parse.GetValue(noExitWatchOpt),
            Pulse = !parse.GetValue(noPulseOpt),
            Plant = ReVirt.Replication.LivePlants.Parse(parse.GetValue(plantOpt)).Primary,
            PlantSnapshot = ReVirt.Replication.LivePlants.Parse(parse.GetValue(plantOpt)).Snapshot,
        };
        if (guest.MakeOptions(parse) is not { } machine) return 2;
        ReVirt.Replication.MetricsEndpoint? metrics;
        try { metrics = ReVirt.Replication.MetricsEndpoint.Open(parse.GetValue(metricsOpt), events); }
        catch (ArgumentException e) { Console.Error.WriteLine($"primary: {e.Message}"); return 2; }
        using var metricsScope = metrics;
        return ReVirt.Primary.ProtectHost.Run(settings, machine, guest.IntervalOf(parse), parse.GetValue(guest.Stats), metrics);
    });
    return protect;
}
