using ReVirt.Tests.Net;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Failover of a protected kvserver, and of Debian's redis-server (dynamically linked, unmodified), whose clients'
/// connections are part of the machine (`--net virtual`): the primary
/// and the backup each have a TAP device on one bridge in a network namespace the test makes, where 64 Linux clients
/// hold one connection each to the guest's virtual IP. SIGKILL of the primary mid-load: the backup replays to the end
/// of the log, wins the arbiter, brings the interface up on its own TAP device (same MAC and IP, gratuitous ARP) and
/// carries on with the replayed TCP state. Every connection survives with no reset, every acknowledged SET reads
/// back over the same connection, and the stall (the longest silence between two acknowledgements of all clients)
/// is measured.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class VirtualNetFailoverTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(4);
    const string GuestIp = "10.213.0.2";
    const int Port = 7000, Connections = 64, Requests = 60;

    /// <summary>A server under test: its command line, how its start-up shows (a line it prints through the output
    /// gate) and the protocol its clients speak.</summary>
    sealed record Server(string[] Command, Func<ReplicaProc, bool> Ready, KvClients.Protocol Protocol);

    static readonly Server KvServer = new(
        [GuestEnv.Guest("kvserver", "musl"), Port.ToString(), GuestIp],
        p => p.StderrLines.Any(l => l.Text.Contains($"listening on {GuestIp}:{Port}")), KvClients.Protocol.Kv);

    /// <summary>redis-server bound to the virtual IP (protected mode off: its clients are not on loopback), no
    /// persistence; it logs "Ready to accept connections" on stdout once it listens.</summary>
    static readonly Server RedisServer = new(
        [Redis.Server, "--port", Port.ToString(), "--bind", GuestIp, "--protected-mode", "no", "--save", "", "--appendonly", "no"],
        p => p.StdoutText.Contains("Ready to accept connections"), KvClients.Protocol.Resp);

    /// <summary>With a standby: the survivor records on after the takeover and the standby joins it by its log, which
    /// it replays from record 1 through the takeover (a NetTakeover record, then the frames of the repair) and follows
    /// to the guest's end: the replay of the survivor's log must match it exactly.</summary>
    [Fact]
    public void KillingThePrimaryKeepsEveryClientConnection() => Failover(KvServer, Fault.Kill, standby: true);

    /// <summary>Debian's redis-server with 64 clients: SIGKILL of the primary mid-load keeps every connection, no
    /// client sees a reset, and every SET acknowledged before or after the kill reads back (GET) over the same
    /// connection from the survivor.</summary>
    [Fact]
    public void KillingThePrimaryKeepsEveryRedisConnection()
    {
        Assert.True(File.Exists(Redis.Server), "redis-server is not installed (.ci/run installs it)");
        Failover(RedisServer, Fault.Kill);
    }

    /// <summary>A frozen primary (SIGSTOP until the backup took over, then SIGCONT) is fenced: no frame of its reaches
    /// the wire after the takeover (its TAP device's receive counter stands still), and the clients notice nothing.
    /// Its silence on the data link is what gives it away: the backup's --timeout-ms is two minutes here, its
    /// --primary-silence-ms 5 s (a starting primary on a loaded 2-core machine was seen silent for more than 1.5 s),
    /// so only the heartbeat bound can have declared it lost within the test's wait.</summary>
    [Fact]
    public void AFrozenPrimarySendsNothingAfterTheTakeover() => Failover(KvServer, Fault.Freeze);

    /// <summary>A partition: the replication link between the replicas is cut silently (a relay swallows both
    /// directions) while both replicas stay on the clients' bridge and keep running. The backup declares the primary
    /// lost by its silence (5 s) and takes over; the primary, which hears no acknowledgement, holds every frame its
    /// guest produces from then on, asks the arbiter after its own --timeout-ms (20 s, so the backup asks first), finds
    /// it taken and is fenced. No frame of the old primary reaches the wire after the takeover, and the clients keep
    /// every connection.</summary>
    [Fact]
    public void APartitionedPrimarySendsNothingAfterTheTakeover() => Failover(KvServer, Fault.Partition);

    /// <summary>Debian's redis-server with 64 clients, the primary frozen (as <see cref="AFrozenPrimarySendsNothingAfterTheTakeover"/>):
    /// every connection kept, every acknowledged SET read back, no frame of the old primary on the wire after the
    /// takeover. In the soak (REVIRT_SOAK=1): the kvserver case keeps the behaviour in the default run.</summary>
    [Fact]
    public void AFrozenRedisPrimarySendsNothingAfterTheTakeover()
    {
        if (!SoakSwitch.On) { output.WriteLine(SoakSwitch.Skipped); return; }
        Assert.True(File.Exists(Redis.Server), "redis-server is not installed (.ci/run installs it)");
        Failover(RedisServer, Fault.Freeze);
    }

    /// <summary>Debian's redis-server with 64 clients, the replication link cut (as <see cref="APartitionedPrimarySendsNothingAfterTheTakeover"/>).
    /// In the soak (REVIRT_SOAK=1).</summary>
    [Fact]
    public void APartitionedRedisPrimarySendsNothingAfterTheTakeover()
    {
        if (!SoakSwitch.On) { output.WriteLine(SoakSwitch.Skipped); return; }
        Assert.True(File.Exists(Redis.Server), "redis-server is not installed (.ci/run installs it)");
        Failover(RedisServer, Fault.Partition);
    }

    /// <summary>
    /// The clients reach the virtual IP through a faulty link: bench/lossyrelay.py between the clients' device and
    /// the replicas' bridge loses 2 % of the frames each way, sends 2 % twice and holds 3 % back 1-3 ms (reordered
    /// behind later frames), seeded. SIGKILL of the primary mid-load: the survivor's repair and every later exchange
    /// cross the same faults, and still every connection survives with no reset, every acknowledged SET reads back
    /// over the connection that made it, and every reply is the one its request asked for (a stream that lost,
    /// doubled or reordered a byte would answer wrongly or not at all: an error). The relay's counts show the faults
    /// happened. (A planted survivor that skips its repair, or a gate releasing the old primary's frames early, fails
    /// it as it fails the kill test without the relay.)
    /// </summary>
    [Fact]
    public void KillingThePrimaryUnderLossDuplicationAndReorderingKeepsEveryConnection() =>
        Failover(KvServer, Fault.Kill, link: new LinkFaults(0.02, 0.02, 0.03));

    enum Fault { Kill, Freeze, Partition }

    /// <summary>Most methods the survivor's replay thread may JIT-compile between the grant and the go-live's end once
    /// its code was prepared (a margin over what is left: 9 with a standby, 1 without, measured at load ~70; the guest's
    /// own compiled blocks are not counted there). Unprepared parts show above it: the continuation for a standby 24,
    /// the descriptor copy's growth 15, the rest 65.</summary>
    const int MaxGoLiveJitMethods = 12;

    /// <summary>Faults the relay puts on the clients' link (probabilities per frame, each direction).</summary>
    sealed record LinkFaults(double Loss, double Duplicate, double Reorder);

    /// <summary>The clients saw no error and no reset (by their own count and by their kernel's), every acknowledged
    /// SET read back (an error otherwise), the server said goodbye, and the survivor matched the log it replayed and
    /// ended with the guest's status 0.</summary>
    static void AssertEveryConnectionKept(KvClientReport report, ReplicaProc survivor, int? exit)
    {
        Assert.True(report.Errors.Length == 0, string.Join("\n", report.Errors) + "\nsurvivor:\n" + survivor.Stderr);
        Assert.Equal(0, report.Resets);
        Assert.Equal(0, report.KernelResets);
        Assert.True(report.Bye);
        Assert.Null(survivor.Event(ReplicaEvent.Diverged));
        Assert.Equal(0, exit);
    }

    /// <summary>
    /// The pair heals itself with the clients' connections intact: kvserver on the virtual IP, 8 Linux clients each
    /// holding one connection and SETting until told to stop. Kill the primary: the backup takes over (same MAC and IP
    /// on its TAP device) and re-protects itself with a standby, which joins by a machine snapshot that carries the
    /// interface's state (every connection, its buffers and timers) and verifies it before acknowledging; kill that
    /// survivor: the standby takes over on its own TAP device with the same MAC and IP. No client sees a reset, and
    /// every SET acknowledged across both failovers reads back over the connection that made it. A standby asked
    /// first, whose TAP device cannot be opened (its network namespace does not exist), refuses the snapshot with the
    /// reason instead of acknowledging a machine whose interface it could not bring up.
    /// </summary>
    [Fact]
    public void ConnectionsSurviveAKillATakeoverAJoinBySnapshotAndASecondKill()
    {
        const int Clients = 8, Step = 150;
        var wait = TimeSpan.FromSeconds(90);
        using var ns = TapNamespace.Bridged("rvp0", "rvb0", "rvs0");
        string arbiter = Replicas.TempFile(".lock"), stop = Replicas.TempFile(".stop");
        try
        {
            string[] Tap(string tap) => ["--arbiter", arbiter, "--timeout-ms", "1000", "--tap", tap, "--netns", ns.Name];
            var (s, standbyUrl) = Replicas.StartBackup(Tap("rvs0"));
            using var _s = s;
            var (x, noWireUrl) = Replicas.StartBackup(["--arbiter", arbiter, "--timeout-ms", "1000", "--tap", "rvx0", "--netns", Replicas.TempFile(".no-such-netns")]);
            using var _x = x;
            var (b, url) = Replicas.StartBackup([.. Tap("rvb0"), "--standby", noWireUrl, "--standby", standbyUrl, "--standby-retry-ms", "200"]);
            using var _b = b;
            using var p = Replicas.Primary(["--backup", url, .. Tap("rvp0"), "--net", "virtual", "--ip", GuestIp + "/24", "--", .. KvServer.Command]);
            Assert.True(p.WaitFor(() => KvServer.Ready(p) || p.HasExited, wait) && !p.HasExited, p.Stderr);

            using var clients = KvClients.Start(ns, GuestIp, Port, Clients, 1_000_000, KvClients.Protocol.Kv, stopFile: stop, pauseSeconds: 0.005);
            var lines = new List<string>();
            int progress = Step;
            KvClients.WaitForProgress(clients, progress, lines, wait);
            double firstKill = KvClients.MonotonicMs();
            p.KillHard();
            b.WaitForEvent(ReplicaEvent.TookOver, wait);
            // the survivor re-protects itself: the standby joins from a snapshot that carries the interface
            Assert.Contains("TAP device rvx0", x.WaitForEvent(ReplicaEvent.SnapshotRefused, wait).Str("reason"));
            // then the standby that can: it holds the snapshot and the log after it once the survivor reports it holds
            int Joined() => Array.FindIndex(b.Events, e => e.Name == ReplicaEvent.Reprotected && e.Str("url") == standbyUrl);
            Assert.True(b.WaitFor(() => Joined() >= 0, wait), "the survivor was not protected again by the standby:\n" + b.Stderr);
            var again = b.Events[Joined()];
            Assert.True(again.Str("mode") == "snapshot", $"joined by {again.Str("mode")}: {b.Event(ReplicaEvent.SnapshotUnsupported)?.Str("reason")}");
            var restored = s.WaitForEvent(ReplicaEvent.SnapshotRestored, wait);
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.SnapshotTaken && e.Long("sequence") == restored.Long("sequence"));
            Assert.True(b.WaitFor(() => b.Events.Skip(Joined()).Any(e => e.Name == ReplicaEvent.StandbyHolds), wait), "the standby does not hold the log");
            KvClients.WaitForProgress(clients, progress += 2 * Step, lines, wait);
            double secondKill = KvClients.MonotonicMs();
            b.KillHard();
            var took = s.WaitForEvent(ReplicaEvent.TookOver, wait);
            KvClients.WaitForProgress(clients, progress += 2 * Step, lines, wait);
            File.WriteAllBytes(stop, []);
            var report = KvClients.Finish(clients, lines, wait);
            int? code = s.WaitForExit(wait);
            output.WriteLine($"acknowledged {report.Acked}, resets {report.Resets}; stall after the first kill {report.StallAfter(firstKill):F0} ms, " +
                $"after the second {report.StallAfter(secondKill):F0} ms; snapshot {restored.Long("bytes")} bytes at record {restored.Long("sequence")}, restored in {restored.Num("restoreMs"):F0} ms");
            output.WriteLine(string.Join("\n", s.Events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail"))));

            AssertEveryConnectionKept(report, s, code);
            Assert.True(report.Acked >= progress, $"{report.Acked} acknowledged");
            // the standby brought the interface up with the connections it restored from the snapshot
            var up = s.Events.Single(e => e.Name == ReplicaEvent.TakeoverDescriptor && e.Str("detail")!.StartsWith("virtual interface")).Str("detail")!;
            Assert.Contains("rvs0", up);
            Assert.Contains($"{Clients} connections carried over", up);
            Assert.NotNull(took);
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
            File.Delete(stop);
        }
    }

    /// <summary>
    /// A bulk download survives a failover: bulkserver (guests/src/bulkserver.c) streams a body to one Linux client
    /// (bench/bulkclient.py, which checks every byte against the body it computes itself); SIGKILL of the primary once a
    /// third has arrived. The survivor's repair resends what the old primary's gate held from SND.UNA (go-back-N,
    /// skipping what the client SACKed) and the client's stream goes on: every byte intact, no reset. The longest wait
    /// for data (the stall) is reported; its figures go to docs/PERFORMANCE-replication.md (`bench/vnet.py --bulk`).
    /// </summary>
    [Fact]
    public Task ABulkDownloadKeepsEveryByteAcrossAKill() => BulkAcrossAKill(upload: false);

    /// <summary>
    /// The other way: the client uploads (PUT) and bulkserver reads and checks every byte against the body, answering
    /// "OK BYTES" only when all arrived in order; SIGKILL of the primary once a third was sent. What the old primary
    /// received but never logged is data the client still holds unacknowledged (no ACK leaves before the backup has
    /// the log), so the client's resend repairs it: the survivor's answer is OK, no reset.
    /// </summary>
    [Fact]
    public Task ABulkUploadKeepsEveryByteAcrossAKill() => BulkAcrossAKill(upload: true);

    async Task BulkAcrossAKill(bool upload)
    {
        long bytes = SoakSwitch.On ? 40_000_000 : 3_000_000;
        using var ns = TapNamespace.Bridged("rvp0", "rvb0");
        string arbiter = Replicas.TempFile(".lock");
        try
        {
            var (b, url) = Replicas.StartBackup(["--arbiter", arbiter, "--timeout-ms", "1000", "--tap", "rvb0", "--netns", ns.Name]);
            using var _ = b;
            using var p = Replicas.Primary(["--backup", url, "--arbiter", arbiter, "--timeout-ms", "1000", "--net", "virtual", "--ip", GuestIp + "/24",
                "--tap", "rvp0", "--netns", ns.Name, "--", GuestEnv.Guest("bulkserver", "musl"), Port.ToString(), GuestIp]);
            Assert.True(p.WaitFor(() => p.StderrLines.Any(l => l.Text.Contains($"bulkserver: listening on {GuestIp}:{Port}")) || p.HasExited, Long) && !p.HasExited, p.Stderr);

            using var client = ns.Start(["python3", Path.Combine(GuestEnv.RepoRoot, "bench", "bulkclient.py"), GuestIp, Port.ToString(), bytes.ToString(), "13",
                "--progress", (bytes / 3).ToString(), .. upload ? new[] { "--put" } : []]);
            string? first = await client.StandardOutput.ReadLineAsync().WaitAsync(Long);
            Assert.True(first == $"progress {bytes / 3}", $"the transfer did not get a third of the way: {first}");
            double killedAt = KvClients.MonotonicMs();
            p.KillHard();
            var took = b.WaitForEvent(ReplicaEvent.TookOver, Long);
            string rest = await client.StandardOutput.ReadToEndAsync().WaitAsync(Long);
            Assert.True(client.WaitForExit((int)Long.TotalMilliseconds), "the client did not exit");
            var report = System.Text.Json.JsonDocument.Parse(rest.Trim().Split('\n')[^1]).RootElement;
            using (var bye = ns.Start("python3", "-c", $"import socket; s=socket.create_connection(('{GuestIp}',{Port}),timeout=60); s.sendall(b'SHUTDOWN\\n'); print(s.recv(16))"))
                Assert.True(bye.WaitForExit(60_000) && bye.ExitCode == 0, "the server did not take SHUTDOWN");
            int? code = b.WaitForExit(Long);
            double gapFrom = report.GetProperty("gapFrom").GetDouble() * 1000, gapTo = report.GetProperty("gapTo").GetDouble() * 1000;
            output.WriteLine($"{(upload ? "upload" : "download")}: {bytes} bytes at {report.GetProperty("mbps").GetDouble():F2} MB/s overall; longest wait {report.GetProperty("maxGapMs").GetDouble():F0} ms, " +
                $"from {gapFrom - killedAt:F0} to {gapTo - killedAt:F0} ms after the kill; the backup drained for {took.Long("drainMs")} ms");

            Assert.Equal(bytes, report.GetProperty("bytes").GetInt64());
            Assert.False(report.GetProperty("reset").GetBoolean(), "the client's connection was reset");
            Assert.True(report.GetProperty("ok").GetBoolean(), $"the body differs from byte {report.GetProperty("firstBad")}");
            Assert.Equal(0, client.ExitCode);
            Assert.Null(b.Event(ReplicaEvent.Diverged));
            Assert.Equal(0, code);
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
        }
    }

    /// <summary>
    /// `backup listen --hears-primary` with a port mirror (tc clsact/u32/mirred) copying to the backup's device every frame the
    /// bridge delivers to the primary's: a client's request that reached only the primary (frozen, so it never read
    /// it, then killed) is answered by the survivor from the frames it heard, long before the client's own
    /// retransmission — the clients' route has a minimum RTO of 20 s here, so without the heard frames the answer
    /// could not come sooner than 20 s after the request. Fails without --hears-primary (the answer then waits for the
    /// client's resend), and when the survivor judges the unheard request old (NetStack.HoldsAlready). The thread that
    /// reads the heard frames runs as a real-time thread (the kernel's own view: /proc/PID/task/TID/stat; fails when it
    /// is not raised), and the backup's heard-frames event counts what the frames came to (at least the request
    /// given; fails when the counts are not reported or the given frame is not counted).
    /// </summary>
    [Fact]
    public void ARequestOnlyTheDeadPrimaryReceivedIsAnsweredFromTheFramesTheBackupHeard()
    {
        const int RtoMinMs = 20_000;
        using var ns = TapNamespace.Bridged("rvp0", "rvb0");
        ns.Exec("tc", "qdisc", "add", "dev", "rvp0", "clsact");
        ns.Exec("tc", "filter", "add", "dev", "rvp0", "egress", "protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "rvb0");
        ns.Exec("ip", "route", "replace", "10.213.0.0/24", "dev", TapNamespace.BridgeName, "proto", "kernel", "scope", "link", "src", "10.213.0.1", "rto_min", $"{RtoMinMs}ms");
        string arbiter = Replicas.TempFile(".lock"), go = Replicas.TempFile(".go");
        File.Delete(go);
        try
        {
            var (b, url) = Replicas.StartBackup(["--arbiter", arbiter, "--timeout-ms", "1000", "--tap", "rvb0", "--netns", ns.Name, "--hears-primary"]);
            using var _ = b;
            using var p = Replicas.Primary(["--backup", url, "--arbiter", arbiter, "--timeout-ms", "1000", "--net", "virtual", "--ip", GuestIp + "/24",
                "--tap", "rvp0", "--netns", ns.Name, "--", .. KvServer.Command]);
            Assert.True(p.WaitFor(() => KvServer.Ready(p) || p.HasExited, Long) && !p.HasExited, p.Stderr);
            // one connection: a SET answered (the connection has an RTT sample), then, once told, a GET sent while the
            // primary is frozen; it prints how long the GET's answer took
            const string Script = """
                import os, socket, sys, time
                t = time.monotonic(); s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120); c = time.monotonic() - t
                s.sendall(b'SET k v1\n'); r = s.recv(64); print('ready', round(c * 1000), round((time.monotonic() - t) * 1000), r, flush=True)
                t = time.monotonic()
                while not os.path.exists(sys.argv[3]) and time.monotonic() - t < 120: time.sleep(0.01)
                t = time.monotonic(); s.sendall(b'GET k\n'); print('sent', flush=True)
                r = s.recv(64); print('answered', round((time.monotonic() - t) * 1000), r, flush=True)
                """;
            using var client = ns.Start("python3", "-c", Script, GuestIp, Port.ToString(), go);
            string? Line() => client.StandardOutput.ReadLineAsync().WaitAsync(Long).GetAwaiter().GetResult();
            string? ready = Line();
            if (ready?.StartsWith("ready") != true) Assert.Fail($"the client's SET: {ready} {client.StandardError.ReadToEnd()}");
            // the backup replayed the SET's input, so its device is open and the hearing thread runs (raised as it starts)
            int? policy = null;
            Assert.True(SpinWait.SpinUntil(() => (policy = SchedulingPolicyOf(b.Pid, "tap-hear")) == ThreadPools.SchedRoundRobin, Long),
                $"the backup's tap-hear thread has scheduling policy {policy?.ToString() ?? "(no such thread)"}, not SCHED_RR");
            p.Signal(ReplicaProc.SIGSTOP);
            long stoppedAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            File.WriteAllText(go, "");
            Assert.Equal("sent", Line());
            Thread.Sleep(300);   // the request's frame reaches both devices (the mirror's copy is read by the backup)
            long killedAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            p.KillHard();
            b.WaitForEvent(ReplicaEvent.TookOver, Long);
            string? answered = Line();
            output.WriteLine($"{answered}; " + string.Join("; ", b.Events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail"))));
            output.WriteLine($"stopped at {stoppedAt}, killed at {killedAt}; backup: " + string.Join(", ", b.Events.Select(e => $"{e.Name} {e.Long("unixMs")}")));
            var words = answered?.Split(' ') ?? [];
            if (words.Length < 2 || words[0] != "answered") Assert.Fail($"the client: {answered} {client.StandardError.ReadToEnd()}");
            Assert.True(int.Parse(words[1]) < RtoMinMs * 3 / 4, $"the GET was answered {words[1]} ms after it was sent (the client's own resend comes after {RtoMinMs} ms)");
            Assert.Contains("v1", answered);
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && e.Str("detail")!.Contains("frames heard"));
            var heard = b.Event(ReplicaEvent.HeardFrames);
            Assert.True(heard != null, "no heard-frames event");
            output.WriteLine(heard.ToString());
            Assert.True(heard.Long("given") >= 1, "the request only the dead primary received is not counted as given");
            Assert.True(heard.Long("kept") >= heard.Long("given") && heard.Long("read") >= heard.Long("kept") && heard.Long("overwritten") == heard.Long("read") - heard.Long("kept"),
                "the heard frames' counts do not add up");
            // every kept frame was judged (NetStack.JudgeHeard): not given (own, foreign, old) or given by kind
            Assert.Equal(heard.Long("kept"), heard.Long("own") + heard.Long("foreign") + heard.Long("old") + heard.Long("given"));
            Assert.Equal(heard.Long("given"), heard.Long("givenData") + heard.Long("givenAck") + heard.Long("givenControl") + heard.Long("givenOther"));
            Assert.True(heard.Long("givenData") >= 1, "the request only the dead primary received is not counted as data given");
            Assert.Equal(true, heard.Bool("raised"));
            Assert.True(client.WaitForExit(60_000));
            using (var bye = ns.Start("python3", "-c", $"import socket; s=socket.create_connection(('{GuestIp}',{Port}),timeout=60); s.sendall(b'SHUTDOWN\\n'); print(s.recv(16))"))
                Assert.True(bye.WaitForExit(60_000) && bye.ExitCode == 0, "the server did not take SHUTDOWN");
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.Null(b.Event(ReplicaEvent.Diverged));
        }
        finally
        {
            Replicas.DeleteArbiter(arbiter);
            File.Delete(go);
        }
    }

    /// <summary>The scheduling policy (SCHED_*) of process <paramref name="pid"/>'s thread named <paramref name="name"/>, as
    /// the kernel reports it (field 41 of /proc/PID/task/TID/stat); null when there is no such thread.</summary>
    static int? SchedulingPolicyOf(int pid, string name)
    {
        foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).Trim() != name) continue;
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                // the fields after the command's closing parenthesis begin with field 3 (state)
                return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[41 - 3]);
            }
            catch (IOException) { } // the thread ended meanwhile
        }
        return null;
    }

    /// <summary>Frames the kernel received from a replica's TAP device (what the replica sent on the wire).</summary>
    static long FramesFrom(TapNamespace ns, string tap) => long.Parse(ns.Exec("cat", $"/sys/class/net/{tap}/statistics/rx_packets").Trim());

    void Failover(Server server, Fault fault, bool standby = false, LinkFaults? link = null)
    {
        bool silent = fault != Fault.Kill; // noticed only by the primary's silence on the data link
        using var ns = link != null ? TapNamespace.BridgedBehindRelay("rvp0", "rvb0") : TapNamespace.Bridged("rvp0", "rvb0");
        string arbiter = Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}.lock");
        string? hold = null, relayStats = link != null ? Replicas.TempFile(".relay.json") : null;
        ReplicaProc? sb = null;
        System.Diagnostics.Process? relay = null;
        try
        {
            if (link != null) relay = ns.StartRelay(link.Loss, link.Duplicate, link.Reorder, seed: 13, relayStats!);
            const int Silence = 5000;
            string[] detection = silent ? ["--timeout-ms", "120000", "--primary-silence-ms", Silence.ToString()] : ["--timeout-ms", "1000"];
            // a standby (on a device of its own: it never takes over here, but a following replica opens its device early)
            // joins the survivor once the clients' requests are done, so its catching up does not slow the load
            string? standbyUrl = null;
            if (standby)
            {
                using var free = Replicas.LoopbackListener();
                standbyUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)free.LocalEndPoint!).Port}";
            }
            string[] standbyArgs = standbyUrl != null ? ["--standby", standbyUrl, "--standby-retry-ms", "200"] : [];
            var (b, url) = Replicas.StartBackup(["--arbiter", arbiter, .. detection, "--tap", "rvb0", "--netns", ns.Name, .. standbyArgs]);
            using var _ = b;
            using var cut = fault == Fault.Partition ? Replicas.LinkTo(b) : null;
            using var p = Replicas.Primary([.. cut?.PrimaryArgs ?? ["--backup", url], "--arbiter", arbiter, "--timeout-ms", fault == Fault.Partition ? "20000" : "1000",
                "--net", "virtual", "--ip", GuestIp + "/24", "--tap", "rvp0", "--netns", ns.Name, "--", .. server.Command]);
            // the guest's own start-up line (released through the output gate) says it listens
            Assert.True(p.WaitFor(() => server.Ready(p) || p.HasExited, Long) && !p.HasExited, p.Stderr);
            // the relay cuts only what crosses it: a partitioned primary's data link goes through it over TCP, never
            // over the backup's same-host socket (which no cut of a route or relay reaches)
            if (fault == Fault.Partition) Assert.Equal("tcp", p.Event(ReplicaEvent.Protected)?.Str("dataLink"));

            // with a standby, the server is shut down only after the standby joined the survivor (else the guest could end first)
            hold = standby ? Replicas.TempFile(".hold") : null;
            if (hold != null) File.WriteAllText(hold, "");
            using var clients = KvClients.Start(ns, GuestIp, Port, Connections, Requests, server.Protocol, hold);
            var lines = new List<string>();
            // the fault lands mid-load: after a third of the SETs were acknowledged (progress, not time)
            Assert.True(KvClients.WaitForProgress(clients, Connections * Requests / 3, lines), "the clients ended before the fault: " + string.Join("\n", lines));
            double faultAt = KvClients.MonotonicMs();
            long faultUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            long framesAtTakeover = -1;
            switch (fault)
            {
                case Fault.Freeze:
                    p.Signal(ReplicaProc.SIGSTOP);
                    b.WaitForEvent(ReplicaEvent.TookOver, Long);
                    framesAtTakeover = FramesFrom(ns, "rvp0");
                    p.Signal(ReplicaProc.SIGCONT);
                    break;
                case Fault.Partition:
                    cut!.Cut();
                    b.WaitForEvent(ReplicaEvent.TookOver, Long);
                    framesAtTakeover = FramesFrom(ns, "rvp0");
                    break;
                default: p.KillHard(); break;
            }
            if (hold != null)
            {
                Assert.True(KvClients.WaitForLine(clients, "holding", lines, Long), "the clients' requests did not end: " + string.Join("\n", lines));
                sb = Replicas.Backup(["--listen", standbyUrl!, "--arbiter", arbiter, "--timeout-ms", "1000", "--tap", "rvs0", "--netns", ns.Name]);
                b.WaitForEvent(ReplicaEvent.Reprotected, Long);
                File.Delete(hold);
            }
            var report = KvClients.Finish(clients, lines, Long);
            int? code = b.WaitForExit(Long);
            var took = b.Event(ReplicaEvent.TookOver);
            double stall = report.StallAfter(faultAt);
            output.WriteLine($"{fault}: acknowledged {report.Acked}, resets {report.Resets}, stall {stall:F0} ms (longest silence of the run {report.MaxGapMs:F0} ms); " +
                $"after the fault: primary lost at +{b.Event(ReplicaEvent.PrimaryLost)?.Long("unixMs") - faultUnixMs} ms, took over at +{took?.Long("unixMs") - faultUnixMs} ms (drain {took?.Long("drainMs")} ms)");
            output.WriteLine(string.Join("\n", b.Events.Where(e => e.Name == ReplicaEvent.TakeoverDescriptor).Select(e => e.Str("detail"))));

            AssertEveryConnectionKept(report, b, code);
            Assert.Equal(Connections * Requests, report.Acked);
            Assert.NotNull(took);
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && e.Str("detail")!.StartsWith("virtual interface"));
            // the arbiter was asked as the primary was lost and the address announced before the drain ended
            var announced = b.Event(ReplicaEvent.Announced);
            Assert.NotNull(announced);
            Assert.True(announced.Long("unixMs") <= took.Long("unixMs"), $"announced at {announced.Long("unixMs")}, took over at {took.Long("unixMs")}");
            if (silent)
            {
                Assert.Equal($"no batch or heartbeat for {Silence} ms", b.Event(ReplicaEvent.PrimaryLost)?.Str("reason"));
                Assert.Equal(3, p.WaitForExit(Long)); // lost the arbiter: fenced
                Assert.NotNull(p.Event(ReplicaEvent.Fenced));
                Assert.Equal(framesAtTakeover, FramesFrom(ns, "rvp0"));
            }
            if (sb != null)
            {
                // the standby joined the survivor by its log and replayed it through the takeover to the guest's end
                Assert.NotNull(b.Event(ReplicaEvent.Reprotected));
                int? sc = sb.WaitForExit(Long);
                Assert.True(sb.Event(ReplicaEvent.Diverged) == null && sc == 0, $"the standby's replay of the survivor's log: exit {sc}\n{sb.Stderr}");
            }
            if (standby)
            {
                // the continuation started no thread and read no log on the go-live path: its flush ticker was started
                // while following, and the log's digest was the running digest of the copy (the standby's replay of the
                // whole log above checks the End record's digest)
                var continued = b.Event(ReplicaEvent.RecordingContinued);
                Assert.NotNull(continued);
                output.WriteLine($"recording continued: {continued}");
                Assert.True(continued.Bool("tickerReady") == true, $"the flush ticker was started on the go-live path: {continued}");
                Assert.True(continued.Bool("digestCarried") == true, $"the go-live read the log copy again: {continued}");
            }
            // the go-live's code was prepared while the backup followed (GoLivePreparation): the replay thread compiled
            // (almost) nothing after the grant, by the runtime's own count (JitInfo); unprepared it compiled 81-86
            // methods. With a standby too: the recording that continues the log for it (ContinueRecording) is
            // rehearsed on scratch data while following (40 methods in the go-live before, 16 without a standby)
            var goLive = b.Event(ReplicaEvent.GoLive);
            Assert.NotNull(goLive);
            output.WriteLine($"go-live: {goLive}");
            Assert.True(goLive.Bool("prepared") == true, $"the go-live's code was not prepared before the takeover: {goLive}");
            Assert.True(goLive.Long("jitMethods") <= MaxGoLiveJitMethods, $"the replay thread compiled {goLive.Long("jitMethods")} methods in the go-live: {goLive}");
            // a failover is seconds at worst on a loaded machine; its figure goes to docs/PERFORMANCE-replication.md
            Assert.True(stall < 30_000, $"stall {stall:F0} ms");
            if (link != null)
            {
                var counts = System.Text.Json.JsonDocument.Parse(File.ReadAllText(relayStats!)).RootElement;
                output.WriteLine($"relay: {counts}");
                foreach (var what in new[] { "dropped", "duplicated", "reordered" })
                    Assert.True(counts.GetProperty(what).GetInt64() > 0, $"the relay {what} no frame: {counts}");
            }
        }
        finally
        {
            if (relay != null) { try { relay.Kill(); } catch (InvalidOperationException) { } relay.WaitForExit(60_000); relay.Dispose(); }
            if (relayStats != null) { File.Delete(relayStats); File.Delete(relayStats + ".tmp"); }
            sb?.Dispose();
            Replicas.DeleteArbiter(arbiter);
            if (hold != null) File.Delete(hold);
        }
    }
}
