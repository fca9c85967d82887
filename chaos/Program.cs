using System.CommandLine;
using ReVirt.Chaos;

var roundsOpt = new Option<int?>("--rounds") { Description = "Number of rounds (default: one per fault in --faults). Round i uses fault i modulo the list." };
var seedOpt = new Option<int>("--seed") { Description = "Seed of the run; round i uses seed+i, which fixes its fault moment and fault parameters, so any round can be rerun alone with --rounds 1 --seed <its seed> --faults <its fault>.", DefaultValueFactory = _ => 1 };
var faultsOpt = new Option<string>("--faults")
{
    Description = "Comma-separated faults to inject, one per round (--cycles: one per cycle, see there): " + string.Join("; ", Faults.All.Select(f => $"{Faults.Name(f)} = {Faults.Describe(f)}")) + "; all = every one. Only on separate hosts: " +
        string.Join("; ", new[] { FaultKind.LinkDown, FaultKind.PartitionPrimary }.Select(f => $"{Faults.Name(f)} = {Faults.Describe(f)}")) + ".",
    DefaultValueFactory = _ => string.Join(",", Faults.All.Select(Faults.Name)),
};
var workloadOpt = new Option<string>("--workload")
{
    Description = "The guest to protect: kvserver (a key-value server on a fixed loopback port under real client load: several connections send SETs of unique keys and GETs, reconnecting after a failover; every SET answered OK must be readable afterwards from the live replica; a final SHUTDOWN ends it) or counter (numbered lines with a running checksum; every released line is an acknowledged result).",
    DefaultValueFactory = _ => "kvserver",
};
var guestOpt = new Option<string?>("--guest") { Description = "Path of the workload's static binary (default: built from guests/ with guests/build.sh into guests/out)." };
var linesOpt = new Option<int>("--lines") { Description = "counter: lines the guest prints (the length of a round).", DefaultValueFactory = _ => 150 };
var requestsOpt = new Option<int>("--requests") { Description = "kvserver: SETs of unique keys per round (a GET of an earlier key follows every third).", DefaultValueFactory = _ => 400 };
var connectionsOpt = new Option<int>("--connections") { Description = "kvserver: client connections sending at once (also --cycles with --net virtual: the clients, each keeping its one connection across every cycle).", DefaultValueFactory = _ => 4 };
var workOpt = new Option<int>("--work") { Description = "counter: inner-loop iterations between lines.", DefaultValueFactory = _ => 3000 };
var timeoutOpt = new Option<int>("--timeout-ms") { Description = "Failure-detection timeout given to both replicas (--timeout-ms of primary protect; --timeout-ms and --primary-silence-ms of backup listen).", DefaultValueFactory = _ => 1000 };
var hbOpt = new Option<int>("--heartbeat-ms") { Description = "The primary's heartbeat interval.", DefaultValueFactory = _ => 100 };
var cpOpt = new Option<ulong>("--checkpoint-interval") { Description = "Guest instructions between state-digest checkpoints (the backup verifies each; the digest at takeover is compared with the primary's).", DefaultValueFactory = _ => 200_000 };
var reportOpt = new Option<string>("--report") { Description = "Directory for report.json (machine-readable), timeline.svg and report.html (table and timeline).", DefaultValueFactory = _ => "chaos-report" };
var limitOpt = new Option<int>("--round-limit-s") { Description = "Upper bound on one round's run after the fault; a replica still running then is killed and the round fails.", DefaultValueFactory = _ => 120 };
var quietOpt = new Option<bool>("--quiet") { Description = "No live progress line." };
var primaryArgOpt = new Option<string[]>("--primary-arg") { Description = "Testing: an extra argument for `primary protect` (repeatable).", Hidden = true, AllowMultipleArgumentsPerToken = false };
var backupArgOpt = new Option<string[]>("--backup-arg") { Description = "Testing: an extra argument for `backup listen` (repeatable), e.g. to plant a violation.", Hidden = true, AllowMultipleArgumentsPerToken = false };

var plantOpt = new Option<string?>("--plant") { Description = "Drills only: plant a violation in the replica that commits it (its hidden --plant option): gate-early, ignore-arbiter (primary), ack-early:MS (backup).", Hidden = true };
var baseDelayOpt = new Option<int>("--link-delay-ms") { Description = "A delay the replication link adds in every round, outside any fault (as for a distant backup)." };
var netOpt = new Option<string>("--net")
{
    Description = "The guest's network. host (default): host sockets on loopback; a failover resets the clients' connections and they reconnect. virtual: the guest's own TCP/IP stack on a virtual interface in a network namespace the drill makes (needs root), with one TAP device per replica on a bridge; the clients' connections are part of the replicated machine and must survive every round (invariant connections-survive).",
    DefaultValueFactory = _ => "host",
};
netOpt.AcceptOnlyFromAmong("host", "virtual");
var hearsOpt = new Option<bool>("--hears-primary")
{
    Description = "With --net virtual (rounds on this host, not --cycles or --hosts netns): the bridge mirrors every frame it delivers to the primary's TAP port onto the backup's (tc clsact + u32 + mirred) and the backup listens with --hears-primary, so a request only the dead primary received is answered from the frames the backup heard instead of after the client's retransmission time-out. The frames the backup heard, kept and gave its stack at each takeover are printed under the table and in report.json (heardFrames; hearsPrimary).",
};
var hostsOpt = new Option<string>("--hosts")
{
    Description = "Where the replicas run. local (default): processes of this host, the replication link through a loopback relay. netns: the primary, the backup, the clients and etcd (the arbiter) each on a host of its own, a network namespace with one interface on a bridge the drill makes (and removes on exit; needs iproute2, and root or user namespaces: run by another user the drill re-runs itself in a user namespace of its own, where it is root over the namespaces it makes and nothing else; kvserver's guest network also needs TAP devices, i.e. a /dev/net/tun that user may open), so host faults are real: kill = the primary's host killed (its processes SIGKILLed, its ports down), link-down = its ports down at the bridge, partition = the bridge stops forwarding between the replicas' hosts (both still reach etcd and the clients), kill-backup, freeze, cut-kill (slow-link and throttle need the relay). With kvserver the guest serves on a virtual interface (--net virtual) moving between the replicas' TAP ports on the bridge. With --cycles: a host per replica slot besides the first primary's (see --cycles).",
    DefaultValueFactory = _ => "local",
};
hostsOpt.AcceptOnlyFromAmong("local", "netns");
var cyclesOpt = new Option<int?>("--cycles") { Description = "Instead of rounds: one run of the guest (guests/src/ticker.c), N times: a fault takes a replica of the pair out (by default SIGKILL of the live replica; cycle i takes fault i of --faults, below), its follower takes over (or, when the follower was taken out, the live replica goes on after winning the arbiter), a new standby process starts and the survivor re-protects itself with it (the standby joins by a snapshot of the running machine, or by the whole log, and catches up), again. Every invariant is checked after each cycle; at the end the last live replica's whole log is replayed and must print exactly what the world saw. report.json gives each cycle's takeover, join, pause, transfer and catch-up times. With --net virtual the guest is kvserver on its virtual interface under --connections clients (their own network namespace) that each keep one connection across ALL cycles: connections-survive is checked after each cycle and over the run (no reset, no reply lost or doubled, every acknowledged SET read back over its connection), and each cycle's clients' stall (the longest silence between two replies after the kill) is in the table and report.json. With --hosts netns the first primary and each replica slot (--slots, default 3) run on a host of their own (network namespaces on a bridge, the clients and etcd on theirs; etcd is the arbiter, each takeover a new term) and each cycle's fault is a host fault, cycle i taking fault i of --faults modulo the list (default: all seven): kill (the live replica's host: its ports down, its processes SIGKILLed), freeze (SIGSTOP until the survivor decided, then SIGCONT: it must stand down), partition (the bridge stops forwarding between the live and the follower's hosts; the arbiter decides which goes on), link-down (the live host's ports down), kill-backup (the follower's host killed: the live replica goes on after winning the arbiter and re-protects), cut-kill (a partition, then the live host killed), partition-primary (the live host cut from etcd's and the follower's, both directions, while it still reaches the clients: it cannot win or renew the arbiter, the follower wins and takes over, and the cut-off replica must stand down without releasing output); the taken-out host comes back on the wire empty before the next standby starts. After each cycle also: output-commit-across-cycles (the replaced replica released no more than its successor's log held, nothing after it went live), arbiter-names-survivor (etcd's key), replaced-replica-stands-down (a replica taken out but still running ends by itself, fenced or stood down, without going on alone), stale-replica-stays-down (a replica the arbiter did not grant a term never asks again from its old term) and snapshots-match-their-digest (no standby refused a snapshot; a refusal ends the run after its cycle). On loopback --faults may be kill, freeze, kill-backup (default kill): partition, link-down, cut-kill and partition-primary need --hosts netns, and slow-link and throttle act on the single-round drill's relay, which cycles do not use. With --hosts netns and --net virtual the guest is kvserver on its virtual interface (10.215.0.100), whose wire is a TAP port per replica host on the bridge, and the --connections clients on their own host keep their connections across every cycle's host fault." };
var replicasOpt = new Option<string?>("--replicas") { Description = "Run the replicas from this directory (its primary.dll and backup.dll, e.g. another build's bin/Release/net10.0 for side-by-side figures). Default: the ones next to chaos.dll." };
var tickOpt = new Option<int>("--tick-ms") { Description = "--cycles: the guest's sleep between two output lines.", DefaultValueFactory = _ => 20 };
var plantCycleOpt = new Option<int>("--plant-cycle") { Description = "Drills only, with --cycles and --plant: which replica carries the plant: 0 (default) the first primary; N the replica that takes over in cycle N (it carries it from its takeover on; cycle N's fault must be one whose follower takes over, not kill-backup or partition).", Hidden = true };
var slotsOpt = new Option<int>("--slots") { Description = $"--cycles: the endpoint slots the replicas rotate through ({CycleDrill.MinSlots} to {CycleDrill.MaxSlots}; with --hosts netns a host each): every listener is given the others as --standby, and each cycle's new standby starts on a slot no running replica uses. Two suffice (the replaced replica has ended before the new standby starts); more spread the standbys over more hosts.", DefaultValueFactory = _ => CycleDrill.DefaultSlots };
var netnsTagOpt = new Option<string>("--netns-tag") { Description = "--hosts netns: a tag in the names of the network namespaces the drill makes (rvh<pid>x<n><tag><host>), to tell several people's drills on one machine apart; letters and digits, at most 16.", DefaultValueFactory = _ => "" };
netnsTagOpt.Validators.Add(r => { if (r.GetValueOrDefault<string>() is { } t && (t.Length > 16 || !t.All(char.IsAsciiLetterOrDigit))) r.AddError("--netns-tag: letters and digits, at most 16"); });
var buildDirOpt = new Option<string?>("--build-dir") { Description = "Where the bundled guest is built (default: guests/out of the repository)." };
var drill = new Command("drill", "Start a local primary-backup pair (separate processes, replication through a fault-injecting loopback proxy) with a bundled workload, inject one fault per round at a random moment and check the invariants: no acknowledged write lost, no output released before the backup held it, output continuous across a failover (a repeat only byte-identical and only from the last round trip), exactly one live primary, the takeover state digest equal to the primary's, the workload finishing correctly. Prints a table per round and writes a JSON report and a timeline picture. Exit status 0 only when every invariant held in every round; 1 with the first violation and its seed otherwise; 2 on bad usage or when the pair cannot be started.")
{
    roundsOpt, cyclesOpt, tickOpt, replicasOpt, seedOpt, faultsOpt, workloadOpt, guestOpt, requestsOpt, connectionsOpt, linesOpt, workOpt, timeoutOpt, hbOpt, cpOpt, reportOpt, limitOpt, quietOpt, baseDelayOpt, plantOpt, plantCycleOpt, primaryArgOpt, backupArgOpt, buildDirOpt, netOpt, hearsOpt, hostsOpt, slotsOpt, netnsTagOpt,
};
drill.SetAction(parse =>
{
    // without root the drill's hosts are made by root of a user namespace of its own: this command, run again in one
    if (parse.GetValue(hostsOpt) == "netns" && OperatingSystem.IsLinux() && !Environment.IsPrivilegedProcess) return UserNamespace.RunThisCommandInside(Console.Error);
    bool onHosts = parse.GetValue(hostsOpt) == "netns";
    if (parse.GetValue(hearsOpt) && (parse.GetValue(netOpt) != "virtual" || onHosts || parse.GetValue(cyclesOpt) != null))
    { Console.Error.WriteLine("chaos: --hears-primary needs --net virtual, on this host (not --hosts netns) and in rounds (not --cycles)"); return 2; }
    if (parse.GetValue(cyclesOpt) is int cycles) return Cycles(parse, cycles);
    FaultKind[] faults;
    string faultList = parse.GetValue(faultsOpt)!;
    if (onHosts && faultList == string.Join(",", Faults.All.Select(Faults.Name))) faultList = "all"; // the default: every fault of the hosts
    try { faults = Faults.Parse(faultList, onHosts); }
    catch (ArgumentException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
    string workload = parse.GetValue(workloadOpt)!;
    if (workload is not ("kvserver" or "counter")) { Console.Error.WriteLine($"chaos: unknown workload '{workload}' (known: kvserver, counter)"); return 2; }
    if (parse.GetValue(requestsOpt) < 1 || parse.GetValue(connectionsOpt) < 1) { Console.Error.WriteLine("chaos: --requests and --connections must be at least 1"); return 2; }
    string? guest = parse.GetValue(guestOpt);
    try { guest ??= GuestLocator.Guest(workload, "musl", msg => Console.Error.WriteLine($"chaos: {msg}"), parse.GetValue(buildDirOpt)); }
    catch (InvalidOperationException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
    if (!File.Exists(guest)) { Console.Error.WriteLine($"chaos: {guest}: no such file"); return 2; }
    string replicaDir = parse.GetValue(replicasOpt) ?? AppContext.BaseDirectory;
    string primaryDll = Path.Combine(replicaDir, "primary.dll"), backupDll = Path.Combine(replicaDir, "backup.dll");
    foreach (var d in new[] { primaryDll, backupDll })
        if (!File.Exists(d)) { Console.Error.WriteLine($"chaos: {d} is missing (build the chaos project, which copies primary and backup next to it)"); return 2; }

    NetnsHosts? hosts = null;
    if (onHosts)
    {
        if (parse.GetValue(baseDelayOpt) > 0) { Console.Error.WriteLine("chaos: --link-delay-ms needs the loopback relay (not with --hosts netns)"); return 2; }
        try { hosts = NetnsHosts.Create(guestNetwork: workload == "kvserver", tag: parse.GetValue(netnsTagOpt)!); }
        catch (NetnsUnavailableException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or TimeoutException)
        { Console.Error.WriteLine($"chaos: --hosts netns: cannot make the drill's hosts: {e.Message}"); return 2; }
    }
    using var hostsScope = hosts;
    VirtualNetwork? virtualNet = null;
    if (parse.GetValue(netOpt) == "virtual" && hosts == null)
    {
        try { virtualNet = VirtualNetwork.Create(mirrorPrimary: parse.GetValue(hearsOpt)); }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        { Console.Error.WriteLine($"chaos: --net virtual: cannot make the drill's network namespace (root and iproute2 needed): {e.Message}"); return 2; }
    }
    using var _ = virtualNet;
    // on separate hosts the kvserver guest serves on its virtual interface (its address moves with a takeover)
    IGuestNetwork? network = hosts != null ? (workload == "kvserver" ? hosts : null) : virtualNet;
    bool live = !parse.GetValue(quietOpt);
    bool tty = !Console.IsErrorRedirected;
    string last = "";
    var settings = new DrillSettings
    {
        Rounds = parse.GetValue(roundsOpt) ?? faults.Length,
        Seed = parse.GetValue(seedOpt),
        Faults = faults,
        Workload = workload == "kvserver"
            ? new KvWorkload(guest, parse.GetValue(requestsOpt), parse.GetValue(connectionsOpt)) { Network = network }
            : new CounterWorkload(guest, parse.GetValue(linesOpt), parse.GetValue(workOpt)),
        TimeoutMs = parse.GetValue(timeoutOpt),
        HeartbeatMs = parse.GetValue(hbOpt),
        CheckpointInterval = parse.GetValue(cpOpt),
        PrimaryDll = primaryDll,
        BackupDll = backupDll,
        ExtraPrimaryArgs = parse.GetValue(primaryArgOpt) ?? [],
        ExtraBackupArgs = parse.GetValue(backupArgOpt) ?? [],
        Plant = parse.GetValue(plantOpt),
        BaseLinkDelayMs = parse.GetValue(baseDelayOpt),
        Network = network,
        Hosts = hosts,
        RoundLimit = TimeSpan.FromSeconds(parse.GetValue(limitOpt)),
        Progress = !live ? null : m =>
        {
            if (tty) { Console.Error.Write("\r\x1b[K" + (m.Length > Console.WindowWidth - 1 && Console.WindowWidth > 20 ? m[..(Console.WindowWidth - 2)] : m)); if (m.Contains("invariants held") || m.Contains("VIOLATION")) Console.Error.WriteLine(); }
            else
            {
                // without a terminal: one line per phase, not per tick
                string phase = m.Split("; t=")[0];
                if (phase != last) Console.Error.WriteLine(m);
                last = phase;
            }
        },
    };
    if (settings.Rounds < 1) { Console.Error.WriteLine("chaos: --rounds must be at least 1"); return 2; }
    List<RoundResult> results;
    try { results = new Drill(settings).Run(); }
    catch (DrillSetupException e) { Console.Error.WriteLine($"\nchaos: cannot start the pair: {e.Message}"); return 2; }
    Console.WriteLine();
    Console.WriteLine(Report.Table(results));
    if (Report.HeardLines(results) is { Count: > 0 } heard) foreach (var line in heard) Console.WriteLine(line);
    foreach (var r in results.Where(r => !r.Ok))
        foreach (var i in r.Invariants.Where(i => !i.Ok))
            Console.WriteLine($"round {r.Observation.Round + 1} ({Faults.Name(r.Observation.Fault)}, seed {r.Observation.Seed}): {i.Name} VIOLATED: {i.Detail}");
    var files = Report.Write(parse.GetValue(reportOpt)!, results, settings);
    Console.WriteLine($"report: {string.Join(", ", files)}");
    var first = Report.FirstViolation(results, settings.Workload.Name);
    if (first != null) { Console.WriteLine($"chaos: FAILED: first violation in {first}"); return 1; }
    Console.WriteLine($"chaos: every invariant held in all {results.Count} rounds");
    return 0;
});

int Cycles(ParseResult parse, int cycles)
{
    if (cycles < 1) { Console.Error.WriteLine("chaos: --cycles must be at least 1"); return 2; }
    bool onHosts = parse.GetValue(hostsOpt) == "netns";
    if (parse.GetValue(plantOpt) is { } plant && plant.StartsWith("ack-early:", StringComparison.Ordinal))
    { Console.Error.WriteLine("chaos: --cycles plants only in a live replica (gate-early, ignore-arbiter, stale-term, snapshot-omits-page): the first primary's, or with --plant-cycle N the one that takes over in cycle N"); return 2; }
    int slots = parse.GetValue(slotsOpt);
    if (slots is < CycleDrill.MinSlots or > CycleDrill.MaxSlots) { Console.Error.WriteLine($"chaos: --slots must be {CycleDrill.MinSlots} to {CycleDrill.MaxSlots}"); return 2; }
    // the faults of the cycles: by default kill on loopback and every host fault on separate hosts; cycle i takes
    // fault i modulo the list
    string faultList = parse.GetValue(faultsOpt)!;
    bool defaultFaults = faultList == string.Join(",", Faults.All.Select(Faults.Name));
    FaultKind[] cycleFaults;
    try { cycleFaults = defaultFaults ? (onHosts ? CycleDrill.Applicable(true) : [FaultKind.Kill]) : Faults.Parse(faultList, onHosts, cycles: true); }
    catch (ArgumentException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
    if (cycleFaults.Select(k => CycleDrill.WhyNot(k, onHosts)).FirstOrDefault(w => w != null) is { } whyNot) { Console.Error.WriteLine($"chaos: --cycles: {whyNot}"); return 2; }
    if (CycleDrill.WhyNotPlantCycle(parse.GetValue(plantCycleOpt), cycles, cycleFaults) is { } noPlant) { Console.Error.WriteLine($"chaos: {noPlant}"); return 2; }
    bool onNet = parse.GetValue(netOpt) == "virtual";
    if (onNet && parse.GetValue(connectionsOpt) < 1) { Console.Error.WriteLine("chaos: --connections must be at least 1"); return 2; }
    string? guest = parse.GetValue(guestOpt);
    try { guest ??= GuestLocator.Guest(onNet ? "kvserver" : "ticker", "musl", msg => Console.Error.WriteLine($"chaos: {msg}"), parse.GetValue(buildDirOpt)); }
    catch (InvalidOperationException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
    VirtualNetwork? net = null;
    if (onNet && !onHosts)
    {
        // a TAP device per endpoint slot
        try { net = VirtualNetwork.Create(standbys: slots); }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        { Console.Error.WriteLine($"chaos: --net virtual: cannot make the drill's network namespace (root and iproute2 needed): {e.Message}"); return 2; }
    }
    using var netScope = net;
    NetnsHosts? hosts = null;
    if (onHosts)
    {
        // a host per replica slot (the backup's and one per further standby slot) besides the first primary's
        try { hosts = NetnsHosts.Create(standbys: slots - 1, guestNetwork: onNet, tag: parse.GetValue(netnsTagOpt)!); }
        catch (NetnsUnavailableException e) { Console.Error.WriteLine($"chaos: {e.Message}"); return 2; }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or TimeoutException)
        { Console.Error.WriteLine($"chaos: --hosts netns: cannot make the drill's hosts: {e.Message}"); return 2; }
    }
    using var hostsScope = hosts;
    string replicaDir = parse.GetValue(replicasOpt) ?? AppContext.BaseDirectory;
    string primaryDll = Path.Combine(replicaDir, "primary.dll"), backupDll = Path.Combine(replicaDir, "backup.dll");
    string reportDir = Path.GetFullPath(parse.GetValue(reportOpt)!);
    Directory.CreateDirectory(reportDir);
    var settings = new CycleSettings
    {
        Cycles = cycles,
        Seed = parse.GetValue(seedOpt),
        Guest = guest,
        SleepMs = parse.GetValue(tickOpt),
        TimeoutMs = parse.GetValue(timeoutOpt),
        HeartbeatMs = parse.GetValue(hbOpt),
        PrimaryDll = primaryDll,
        BackupDll = backupDll,
        StepLimit = TimeSpan.FromSeconds(parse.GetValue(limitOpt)),
        WorkDir = Path.Combine(reportDir, "cycles-work"),
        // on separate hosts the guest's interface has a TAP port per replica host on the bridge, the clients their own host
        Network = onNet ? (IGuestNetwork?)hosts ?? net : null,
        Hosts = hosts,
        Faults = cycleFaults,
        Slots = slots,
        Plant = parse.GetValue(plantOpt),
        PlantCycle = parse.GetValue(plantCycleOpt),
        Connections = parse.GetValue(connectionsOpt),
        Progress = parse.GetValue(quietOpt) ? null : m => Console.Error.WriteLine("chaos: " + m),
    };
    List<CycleRecord> rs;
    List<InvariantResult> final;
    string report;
    try { (rs, final, report) = new CycleDrill(settings).Run(); }
    catch (DrillSetupException e) { Console.Error.WriteLine($"chaos: the cycles drill could not go on: {e.Message}"); return 2; }
    string dest = Path.Combine(reportDir, "report.json");
    File.Copy(report, dest, overwrite: true);
    Console.WriteLine(CycleDrill.Table(rs));
    foreach (var i in final) Console.WriteLine($"{(i.Ok ? "ok  " : "FAIL")} {i.Name}: {i.Detail}");
    Console.WriteLine($"report: {dest}");
    var bad = rs.SelectMany(r => r.Invariants.Where(i => !i.Ok).Select(i => $"cycle {r.Cycle}: {i.Name}: {i.Detail}")).Concat(final.Where(i => !i.Ok).Select(i => $"end: {i.Name}: {i.Detail}")).FirstOrDefault();
    if (bad != null) { Console.WriteLine($"chaos: FAILED: {bad}"); return 1; }
    Console.WriteLine($"chaos: every invariant held in all {rs.Count} cycles");
    return 0;
}

var root = new RootCommand("ReVirt chaos: failover drills with fault injection against a local primary-backup pair.") { drill };
return root.Parse(args).Invoke();
