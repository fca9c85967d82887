using System.CommandLine;
using ReVirt;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;

namespace ReVirt.Backup;

/// <summary>
/// `backup`'s command line. A line that cannot ask for help, the version or a directive (<see cref="ReVirt.Primary.LeanRoot"/>)
/// is parsed under a plain root command first, as `primary` does: RootCommand's constructor makes its help option, whose
/// description System.CommandLine looks up through a ResourceManager (a replay's start-up paid it: about 10 ms and two
/// JIT-compiled methods of the runtime's generic cache). A line that parses there without errors has the meaning the
/// full tree gives it; anything else is parsed again under the RootCommand, so help, --version and every error read
/// as before.
/// </summary>
public static class BackupCommandLine
{
    public const string Description = "ReVirt backup: replays recorded executions (and, with replication, follows a primary).";

    /// <summary>The parse `backup` runs: under the plain root when it fits and has no errors, else under the RootCommand.</summary>
    public static ParseResult Parse(string[] args)
    {
        if (ReVirt.Primary.LeanRoot.Fits(args))
        {
            var lean = Tree(new Command("backup", Description), args);
            if (lean.Errors.Count == 0) return lean;
        }
        return Tree(new RootCommand(Description), args);
    }

    /// <summary>The commands under a root and the parse of the command line under it.</summary>
    public static ParseResult Tree(Command root, string[] args)
    {
        var logFile = new Argument<FileInfo>("file") { Description = "An event log written by `primary record`." };
        var dump = new Command("log", "Print a human-readable dump of an event log: the header, then one line per record.") { logFile };
        dump.SetAction(parse =>
        {
            var f = parse.GetValue(logFile)!;
            if (!f.Exists) { Console.Error.WriteLine($"backup: {f.FullName}: no such file"); return 2; }
            return LogDump.Write(f.FullName, Console.Out) ? 0 : 1;
        });
        root.Add(dump);

        // a string, not a FileInfo: the command-line library converts other types through a table of converters for
        // every type it knows, whose making cost each replay about 3 ms of CPU at its start
        var logOpt = new Option<string>("--log") { Description = "The event log to replay.", Required = true };
        var showOpt = new Option<bool>("--show-output") { Description = "Print the guest's stdout and stderr exactly as the recorded run produced them." };
        var rootOpt = new Option<string?>("--root") { Description = "Guest root directory (default: the one recorded in the log)." };
        var tierOpt = new Option<string>("--tier")
        {
            Description = "Which executor runs guest code: Default (interpret, compile hot blocks), Interpreter, or Compiled (every block). The results are the same in every tier.",
            HelpName = ReVirt.Cpu.ExecutionTiers.HelpName,
            DefaultValueFactory = _ => nameof(ReVirt.Cpu.ExecutionTier.Default),
        };
        tierOpt.Validators.Add(r => { if (!ReVirt.Cpu.ExecutionTiers.TryParse(r.GetValueOrDefault<string>(), out _)) r.AddError($"--tier: expected {ReVirt.Cpu.ExecutionTiers.HelpName}"); });
        var statsOpt = new Option<bool>("--stats") { Description = "Report where the replay's host CPU time went (start-up, the guest's execution, syscalls and stops, other threads) with the counts of the guest's execution, as `primary run --stats` does (bench/record_cost.py --work)." };
        var replay = new Command("replay", "Re-execute a recording without touching the outside world, verifying every record against what the guest does: checkpoints, output bytes and digests, where each syscall wrote, the exit status and the log's End record. Exit status 0 when the replay matched a complete recording (faithful); 3 when it matched but the recording ended early (no End record: a crashed recorder or a cut log; the message names the last record); 1 and a message naming the first divergence; 2 when the log is refused (corrupt, forged or appended-to record, other format version, other program).")
        {
            logOpt, showOpt, rootOpt, tierOpt, statsOpt,
        };
        replay.SetAction(parse => Replay(new FileInfo(parse.GetValue(logOpt)!), parse.GetValue(showOpt), parse.GetValue(rootOpt), ReVirt.Cpu.ExecutionTiers.Parse(parse.GetValue(tierOpt)), parse.GetValue(statsOpt)));
        root.Add(replay);
        // `backup replay` and `backup log` make only their own commands: making `listen`'s and `fuzz`'s options (Option<int>,
        // Option<double>: generic code over value types that ReadyToRun does not hold) JIT-compiled 13 methods in every replay.
        if (args.Length == 0 || args[0] is not ("replay" or "log")) AddReplicaCommands(root);
        return root.Parse(args);
    }

    /// <summary>`listen` and `fuzz`.</summary>
    static void AddReplicaCommands(Command root)
    {
        var listenOpt = new Option<string>("--listen") { Description = "Where to serve the replication endpoint (HTTP/2), e.g. http://127.0.0.1:7000 (port 0: any free port, printed on stderr).", DefaultValueFactory = _ => "http://127.0.0.1:7000" };
        var lrootOpt = new Option<string?>("--root") { Description = "This replica's own copy of the guest root (default: the primary's recorded root). Checked against the primary's at the handshake." };
        var tokenOpt = new Option<string?>("--token-file") { Description = "File holding the secret shared with the primary (at least 16 bytes). Required unless --insecure-no-auth." };
        var insecureOpt = new Option<bool>("--insecure-no-auth") { Description = "Listen WITHOUT authentication: any client that reaches the port can claim this backup as its primary and, when it goes live, have it run a program of its choice. Only for throwaway experiments on a trusted network." };
        var sharedOpt = new Option<bool>("--shared-storage") { Description = "The primary and this backup share the guest root on purpose (the same directory on one machine). Without it, such a pair is refused: both replicas would apply the guest's file writes to the same files. With it, this backup applies none of them while it follows, and the primary holds each of the guest's file writes, renames, unlinks, mkdirs, rmdirs and truncations until this backup holds the log that produced it (output commit for files); on a takeover this backup first makes the held changes the primary may not have made." };
        var noSnapshotOpt = new Option<bool>("--no-snapshot") { Description = "As a standby, take the live replica's log from record 1 and replay it even when it offers a machine snapshot (a standby takes the snapshot by default: joining then costs the size of the guest's state, not the length of its run; with a --root of its own, a copy of the root as the guest started, the snapshot also carries the files the guest changed since)." };
        var arbiterOpt = new Option<string?>("--arbiter") { Description = ReVirt.Arbiter.Arbiters.Help };
        arbiterOpt.Validators.Add(r => { if (ReVirt.Arbiter.Arbiters.Validate(r.GetValueOrDefault<string?>()) is { } err) r.AddError($"--arbiter: {err}"); });
        var timeoutOpt = new Option<int>("--timeout-ms") { Description = "Time-out of the handshake's steps; until the session's first message (a standby waiting for its snapshot, or receiving it), the primary is declared lost after this long without a message.", DefaultValueFactory = _ => 2000 };
        var silenceOpt = new Option<int>("--primary-silence-ms") { Description = "The primary is declared lost after this long without any message on the data link (a batch or a heartbeat, from the session's first message on; the Welcome tells the primary, which writes something at least 8 times within it: a heartbeat whenever no batch went out for that long). Shorter: a dead primary is noticed sooner, before the kernel has closed its connections; too short for the machine's load: a healthy primary is taken over from.", DefaultValueFactory = _ => ReVirt.Replication.ReplicationProtocol.DefaultPrimarySilenceMs };
        silenceOpt.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 8) r.AddError("--primary-silence-ms: at least 8"); });
        var copyOpt = new Option<string?>("--log") { Description = "Where to keep this replica's copy of the primary's log (default: a file in the temp directory)." };
        var certOpt = new Option<string?>("--cert") { Description = "Mutual TLS: this replica's certificate (PEM); with --key and --ca, and an https:// --listen URL." };
        var keyOpt = new Option<string?>("--key") { Description = "Mutual TLS: the private key of --cert (PEM)." };
        var caOpt = new Option<string?>("--ca") { Description = "Mutual TLS: the CA certificate(s) (PEM) a primary's certificate must chain to (refused with the reason otherwise)." };
        var eventsOpt = new Option<string?>("--events") { Description = "Report what happens as JSON lines (one event per line: listening, following, primary-lost, took-over, stood-down, replay-matched, exit, ...) to FILE or to an inherited descriptor fd:N." };
        var plantOpt = new Option<string?>("--plant") { Description = $"Drills only: plant a violation the drill's checkers must report: ack-early:MS acknowledges each batch MS ms before holding it; {JoinNeverAcks} (tests), as a standby, answers the live replica that it joins but never acknowledges its snapshot or log; {JoinSlowPrefix}MS (tests), as a standby taking a snapshot, reads it slowly: MS ms before each chunk; {string.Join(", ", ReVirt.Replication.LivePlants.Names)} act as `primary protect --plant` does, once this replica has taken over and is live.", Hidden = true };
        plantOpt.Validators.Add(r => { if (r.GetValueOrDefault<string?>() is { } v && AckEarlyMs(v) <= 0 && JoinSlowMs(v) <= 0 && v != JoinNeverAcks && !ReVirt.Replication.LivePlants.Names.Contains(v)) r.AddError($"--plant {v}: expected ack-early:MS with MS > 0, {JoinNeverAcks}, {JoinSlowPrefix}MS with MS > 0, or one of {string.Join(", ", ReVirt.Replication.LivePlants.Names)}"); });
        var ackDelayOpt = new Option<int>("--ack-delay-ms") { Description = "Testing: delay every acknowledgement by this many milliseconds.", Hidden = true };
        var tapOpt = new Option<string>("--tap") { Description = "For a guest with a virtual network interface (primary --net virtual): the TAP device this replica brings the interface up on when it takes over (same MAC and IP, announced with a gratuitous ARP).", DefaultValueFactory = _ => VirtualNetOptions.DefaultTap };
        var hearsOpt = new Option<bool>("--hears-primary") { Description = "The --tap device receives a copy of every frame the network delivers to the primary's device (a port mirror such as `tc ... action mirred egress mirror dev TAP` on the primary's port, or a hub). While following, this replica keeps the newest frames it hears (up to 2048); when it takes over it gives its network stack those that tell the stack something new, so a client request only the dead primary received is answered at once instead of after the client's retransmission time-out (200 ms or more). Duplicates of what the log holds are harmless to TCP; a UDP datagram may reach the guest twice." };
        var netnsOpt = new Option<string?>("--netns") { Description = "Open the --tap device in this network namespace (a name of `ip netns`, or a path)." };
        var standbyOpt = new Option<string[]>("--standby")
        {
            Description = "URL of a standby (another `backup listen` with the same token or certificates), repeatable. Once this replica has taken over, it records its guest's log on from where the old primary's ended (into --log) and asks the standbys in turn every --standby-retry-ms until one accepts; that standby receives the whole log from the beginning, replays it and follows. Without --standby a replica that took over runs unprotected and records nothing.",
            AllowMultipleArgumentsPerToken = false,
        };
        var gatherOpt = new Option<int>("--replay-gather-us") { Description = "Once the replay has replayed everything it holds, it sleeps this long (microseconds) and then replays whatever arrived meanwhile, instead of being woken for every batch: fewer wake-ups of the replay (CPU on a shared core) for a replay that trails the log by up to this much more (the primary bounds that trail: its --max-replay-lag-ms). It gathers only while batches come within this long of each other; otherwise each batch wakes it (one sleep per batch). 0: every batch wakes it.", DefaultValueFactory = _ => ReVirt.Backup.BackupSession.DefaultReplayGatherUs };
        gatherOpt.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 0 or > 100_000) r.AddError("--replay-gather-us: 0 to 100000"); });
        var dataPortOpt = new Option<int>("--data-port") { Description = "TCP port of the data link (on the --listen address) that carries the log and the acks after the handshake; the Welcome tells the primary. 0 (default): any free port.", DefaultValueFactory = _ => 0 };
        var dataLinkOpt = new Option<string>("--data-link") { Description = ReVirt.Replication.DataLinkKinds.Help + " On a backup: whether it offers the same-host socket (auto, the default: offered beside TCP; unix: it takes only the socket and also uses only it for the links it opens to standbys after a takeover, which otherwise go over TCP).", DefaultValueFactory = _ => "auto" };
        dataLinkOpt.AcceptOnlyFromAmong("auto", "unix", "tcp");
        var metricsOpt = new Option<string?>("--metrics-listen") { Description = ReVirt.Replication.MetricsEndpoint.OptionHelp };
        var liveRushOpt = new Option<int>("--live-rush-ms") { Description = "--net virtual: once taken over, the live guest's thread stays a real-time thread this long (ms) after the go-live, so the answers to what its clients sent during the outage (heard frames, retransmissions) do not wait for time slices on a loaded host; then it is an ordinary thread. 0: ordinary from the go-live.", DefaultValueFactory = _ => ReVirt.Backup.ListenSettings.DefaultLiveRushMs };
        liveRushOpt.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 0 or > 60_000) r.AddError("--live-rush-ms: 0 to 60000"); });
        var noPrepOpt = new Option<bool>("--no-go-live-preparation") { Description = "--net virtual: do not prepare the go-live's code while following (by default a thread of its own runs a dry pass of the interface's takeover on scratch stacks and makes the go-live's other steps' code ready, so the replay thread does not run that code for the first time after the arbiter's grant). For comparison runs." };
        var standbyRetryOpt = new Option<int>("--standby-retry-ms") { Description = "Pause between two rounds over the standbys while none accepts.", DefaultValueFactory = _ => 500 };
        var joinTimeoutOpt = new Option<int>("--join-timeout-ms") { Description = ReVirt.Replication.ProtectSettings.JoinTimeoutHelp + " (Once this replica has taken over.)", DefaultValueFactory = _ => ReVirt.Replication.ProtectSettings.DefaultJoinTimeoutMs };
        var joinProgressOpt = new Option<int>("--join-progress-ms") { Description = ReVirt.Replication.ProtectSettings.JoinProgressHelp + " (Once this replica has taken over.)", DefaultValueFactory = _ => ReVirt.Replication.ProtectSettings.DefaultJoinProgressMs };
        var listen = new Command("listen", "Serve the replication endpoint, follow one primary (`primary protect`), replay its log in lockstep and acknowledge each batch as soon as it holds it; when the primary is lost, drain, win the arbiter and go live. Exit status: the guest's; 3 when standing down; 1 on divergence.")
        {
            listenOpt, lrootOpt, tokenOpt, insecureOpt, sharedOpt, noSnapshotOpt, certOpt, keyOpt, caOpt, arbiterOpt, timeoutOpt, silenceOpt, copyOpt, eventsOpt, plantOpt, ackDelayOpt, tapOpt, netnsOpt, hearsOpt, liveRushOpt, noPrepOpt, standbyOpt, standbyRetryOpt, joinTimeoutOpt, joinProgressOpt, dataPortOpt, dataLinkOpt, metricsOpt, gatherOpt,
        };
        listen.SetAction(parse =>
        {
            if (ReVirt.Replication.ReplicaChannelOptions.Load("--listen", parse.GetValue(listenOpt)!, parse.GetValue(tokenOpt), parse.GetValue(certOpt), parse.GetValue(keyOpt),
                    parse.GetValue(caOpt), parse.GetValue(eventsOpt), out var secret, out var tls, out var events) is { } bad)
            { Console.Error.WriteLine($"backup: {bad}"); return 2; }
            return ReVirt.Backup.ListenHost.Run(new ReVirt.Backup.ListenSettings
            {
                Listen = new Uri(parse.GetValue(listenOpt)!),
                DataPort = parse.GetValue(dataPortOpt),
                DataLink = ReVirt.Replication.DataLinkKinds.Parse(parse.GetValue(dataLinkOpt)!),
                Standbys = parse.GetValue(standbyOpt) ?? [],
                StandbyRetryMs = parse.GetValue(standbyRetryOpt),
                JoinTimeoutMs = parse.GetValue(joinTimeoutOpt),
                JoinProgressMs = parse.GetValue(joinProgressOpt),
                Root = parse.GetValue(lrootOpt),
                Secret = secret,
                InsecureNoAuth = parse.GetValue(insecureOpt),
                SharedStorage = parse.GetValue(sharedOpt),
                NoSnapshot = parse.GetValue(noSnapshotOpt),
                ArbiterPath = parse.GetValue(arbiterOpt),
                TimeoutMs = parse.GetValue(timeoutOpt),
                PrimarySilenceMs = parse.GetValue(silenceOpt),
                ReplayGatherUs = parse.GetValue(gatherOpt),
                LogPath = parse.GetValue(copyOpt),
                AckDelayMs = parse.GetValue(ackDelayOpt),
                Events = events,
                PlantAckEarlyMs = parse.GetValue(plantOpt) is { } plant ? AckEarlyMs(plant) : 0,
                PlantJoinNeverAcks = parse.GetValue(plantOpt) == JoinNeverAcks,
                PlantJoinSlowMs = parse.GetValue(plantOpt) is { } slow ? JoinSlowMs(slow) : 0,
                LivePlant = ReVirt.Replication.LivePlants.Parse(parse.GetValue(plantOpt)).Primary,
                LiveSnapshotPlant = ReVirt.Replication.LivePlants.Parse(parse.GetValue(plantOpt)).Snapshot,
                Tls = tls,
                Tap = parse.GetValue(tapOpt)!,
                Netns = parse.GetValue(netnsOpt),
                HearsPrimary = parse.GetValue(hearsOpt),
                LiveRushMs = parse.GetValue(liveRushOpt),
                PrepareGoLive = !parse.GetValue(noPrepOpt),
                MetricsListen = parse.GetValue(metricsOpt),
            });
        });
        root.Add(listen);
        var minutesOpt = new Option<double>("--minutes") { Description = "How long to fuzz.", DefaultValueFactory = _ => 1 };
        var seedLogsOpt = new Option<string[]>("--log") { Description = "A recorded log to mutate (repeatable); it must replay faithfully first.", AllowMultipleArgumentsPerToken = false };
        var seedElfsOpt = new Option<string[]>("--elf") { Description = "An ELF program to mutate and load (repeatable).", AllowMultipleArgumentsPerToken = false };
        var rngOpt = new Option<int>("--seed") { Description = "Random seed (the same seed replays the same mutations).", DefaultValueFactory = _ => 1 };
        var fuzz = new Command("fuzz", "Security testing: mutate recorded logs (cuts, appends, removed/duplicated/moved records, bit flips with and without correct checksums and End record, forged records of every kind, memory writes moved outside their buffers), ELF files (through the loader) and peer hellos (through the backup's handshake checks) for the given time, and report every host exception, hang or forgery accepted. Exit status 0 when there was no finding, 1 otherwise. Not part of the default test run.")
        {
            minutesOpt, seedLogsOpt, seedElfsOpt, rngOpt,
        };
        fuzz.SetAction(parse => ReVirt.Backup.LogFuzzer.Run(TimeSpan.FromMinutes(parse.GetValue(minutesOpt)), parse.GetValue(seedLogsOpt) ?? [], parse.GetValue(seedElfsOpt) ?? [], parse.GetValue(rngOpt), Console.Out));
        root.Add(fuzz);
    }

    static int Replay(FileInfo log, bool show, string? rootOverride, ReVirt.Cpu.ExecutionTier tier, bool stats = false)
    {
        if (!log.Exists) { Console.Error.WriteLine($"backup: {log.FullName}: no such file"); return (int)ReplayVerdictKind.Refused; }
        LogReader reader;
        // a log kept by a replica that joined from a snapshot starts after it; the snapshot lies next to it
        string snapPath = log.FullName + ".snapshot";
        // read as a stream (a snapshot has no size bound); its first bytes name the record the log starts after
        using var snapshot = File.Exists(snapPath) ? new FileStream(snapPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20) : null;
        try
        {
            ulong after = 0;
            if (snapshot != null)
            {
                var head = new byte[ReVirt.Snapshot.MachineSnapshot.SequenceOfBytes];
                after = ReVirt.Snapshot.MachineSnapshot.SequenceOf(head.AsSpan(0, snapshot.ReadAtLeast(head, head.Length, throwOnEndOfStream: false)));
                snapshot.Position = 0;
            }
            reader = new LogReader(new FileStream(log.FullName, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0), false, after);
        }
        catch (ReVirt.Snapshot.SnapshotFormatException e) { Console.Error.WriteLine($"backup: {snapPath}: refused: {e.Message}"); return (int)ReplayVerdictKind.Refused; }
        catch (LogFormatException e) { Console.Error.WriteLine($"backup: {log.FullName}: refused: {e.Message}"); return (int)ReplayVerdictKind.Refused; }
        using (reader)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Timer? progress = null;
            Machine? machine = null;
            var v = ReplayCheck.Run(reader, rootOverride, show, (m, boundary) =>
            {
                machine = m;
                if (stats) m.Kernel.WorkAccount = new HostWorkAccount();
                // progress on a terminal: where the replay is, every second
                if (ReVirt.Replication.HostIo.IsTerminal(2))
                    progress = new Timer(_ =>
                        Console.Error.Write($"\rbackup: replaying: instruction {m.Kernel.Current?.Cpu.InstructionCount ?? 0:N0}, record #{boundary.RecordsConsumed:N0}, {boundary.CheckpointsVerified} checkpoints verified   "),
                        null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
            }, tier, snapshot);
            if (progress != null) { progress.Dispose(); Console.Error.WriteLine(); }
            // (the guest's output, with --show-output, went through unbuffered streams: nothing waits in Console.Out)
            string prefix = v.Kind == ReplayVerdictKind.Refused ? "refused: " : "";
            // straight to fd 2: the console's first use would cost a short replay ~10 ms of CPU (HostIo)
            ReVirt.Replication.HostIo.WriteLine(2, $"backup: {prefix}{v.Message} ({sw.Elapsed.TotalSeconds:F2} s)");
            if (machine?.Kernel.WorkAccount is { } account) ReVirt.Replication.HostIo.WriteLine(2, $"backup: {account.Describe(machine.Kernel)}");
            return (int)v.Kind;
        }
    }

    /// <summary>The standby's plant that never acknowledges a join (<see cref="ReVirt.Backup.ListenSettings.PlantJoinNeverAcks"/>).</summary>
    const string JoinNeverAcks = "join-never-acks";
    /// <summary>The standby's plant that reads a snapshot slowly (<see cref="ReVirt.Backup.ListenSettings.PlantJoinSlowMs"/>).</summary>
    const string JoinSlowPrefix = "join-slow:";
    static int JoinSlowMs(string plant) => plant.StartsWith(JoinSlowPrefix, StringComparison.Ordinal) && int.TryParse(plant.AsSpan(JoinSlowPrefix.Length), out int ms) && ms > 0 ? ms : 0;

    static int AckEarlyMs(string plant) =>
        plant.StartsWith("ack-early:", StringComparison.Ordinal) && int.TryParse(plant.AsSpan("ack-early:".Length), out int ms) ? ms : 0;
}
