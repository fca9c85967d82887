using System.Diagnostics;
using System.Security.Cryptography;
using System.Net;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Arbiter;
using ReVirt.Log;
using ReVirt.Protocol;
using ReVirt.Replay;
using ReVirt.Replication;
using ReVirt.Snapshot;

namespace ReVirt.Backup;

public sealed class ListenSettings
{
    public required Uri Listen { get; init; }
    /// <summary>Port of the data link on the listen address (<c>--data-port</c>; 0: any free port).</summary>
    public int DataPort { get; init; }
    public string? Root { get; init; }
    public byte[] Secret { get; init; } = [];
    public string? ArbiterPath { get; init; }
    public int TimeoutMs { get; init; } = 2000;
    /// <summary>The primary is declared lost after this long without any message on the data link, once its first
    /// heartbeat arrived (<c>--primary-silence-ms</c>; before that, <see cref="TimeoutMs"/>). The Welcome tells the
    /// primary, which heartbeats <see cref="ReplicationProtocol.HeartbeatsPerSilence"/> times within it.</summary>
    public int PrimarySilenceMs { get; init; } = ReplicationProtocol.DefaultPrimarySilenceMs;
    public string? LogPath { get; init; }
    public string Id { get; init; } = $"backup:{Environment.MachineName}:{Environment.ProcessId}";
    /// <summary>Test hook: delay every acknowledgement by this long (shows that output waits for acks).</summary>
    public int AckDelayMs { get; init; }
    /// <summary>Where this replica reports what happens (<c>--events</c>).</summary>
    public ReplicaEvents Events { get; init; } = ReplicaEvents.None;
    /// <summary>Drills only (<c>--plant ack-early:MS</c>, hidden): acknowledge each batch MS ms before holding it,
    /// a violation the drill's checkers must report. 0: no plant.</summary>
    public int PlantAckEarlyMs { get; init; }
    /// <summary>Tests only (<c>--plant join-never-acks</c>, hidden): as a standby joining a live replica, answer it (its
    /// watchdog hears this replica) but acknowledge nothing held, so the join never completes: what the live
    /// replica's bound on a join (<see cref="ProtectSettings.JoinTimeoutMs"/>) must end.</summary>
    public bool PlantJoinNeverAcks { get; init; }
    /// <summary>Tests only (<c>--plant join-slow:MS</c>, hidden): as a standby taking a snapshot, wait this long before
    /// reading each chunk (a slow host or link that still progresses), so the join outlasts the live replica's progress
    /// bound (<see cref="ProtectSettings.JoinProgressMs"/>) many times over while never stopping. 0: no plant.</summary>
    public int PlantJoinSlowMs { get; init; }
    /// <summary>Drills only (<c>--plant gate-early|stale-term|snapshot-omits-page|...</c>, hidden): the violation this
    /// replica carries once it has taken over and records on as the live replica (<see cref="ProtectSettings.Plant"/>,
    /// <see cref="ProtectSettings.PlantSnapshot"/>), so a drill can plant it in a later cycle than the first primary's.</summary>
    public PrimaryPlant LivePlant { get; init; }
    public ReVirt.Snapshot.SnapshotPlant LiveSnapshotPlant { get; init; }
    /// <summary>Mutual TLS (<c>--cert --key --ca</c>, with an https:// --listen URL); null: cleartext with the token proof.</summary>
    public ReplicationTls? Tls { get; init; }
    /// <summary>Accept a primary without a shared secret (--insecure-no-auth): anyone who reaches the port can claim this backup.</summary>
    public bool InsecureNoAuth { get; init; }
    /// <summary>The user chose storage shared with the primary (--shared-storage): a root identical to the primary's is not refused.</summary>
    public bool SharedStorage { get; init; }
    /// <summary>As a standby, take the log from record 1 even when a snapshot is offered (<c>--no-snapshot</c>).</summary>
    public bool NoSnapshot { get; init; }
    /// <summary>A guest with a virtual network interface: this replica's TAP device for it once live (<c>--tap</c>), and
    /// the network namespace to open it in (<c>--netns</c>; null: this process's).</summary>
    public string Tap { get; init; } = VirtualNetOptions.DefaultTap;
    /// <summary>Standbys (<c>--standby</c>) this replica asks to join once it has taken over; empty: it records
    /// nothing after the takeover and runs unprotected.</summary>
    public IReadOnlyList<string> Standbys { get; init; } = [];
    public int StandbyRetryMs { get; init; } = 500;
    /// <summary>Once taken over: the bound of a standby's join (<see cref="ProtectSettings.JoinTimeoutMs"/>).</summary>
    public int JoinTimeoutMs { get; init; } = ProtectSettings.DefaultJoinTimeoutMs;
    /// <summary>Once taken over: the progress bound of a standby's join (<see cref="ProtectSettings.JoinProgressMs"/>).</summary>
    public int JoinProgressMs { get; init; } = ProtectSettings.DefaultJoinProgressMs;
    public string? Netns { get; init; }
    /// <summary>The --tap device receives a copy of the frames the network delivers to the primary's (<c>--hears-primary</c>,
    /// <see cref="VirtualNetOptions.HearsPrimary"/>).</summary>
    public bool HearsPrimary { get; init; }
    /// <summary>How long a survivor's live guest with a virtual interface stays a real-time thread after the go-live
    /// (<c>--live-rush-ms</c>; 0: an ordinary thread from the go-live): long enough for its clients' first
    /// retransmissions (their 200 ms minimum RTO) to be answered, short against a guest that computes for long (the
    /// kernel's real-time throttling bounds it to 95 % of a CPU meanwhile anyway).</summary>
    public int LiveRushMs { get; init; } = DefaultLiveRushMs;
    public const int DefaultLiveRushMs = 500;
    /// <summary>Prepare the go-live's code while following (<see cref="FollowOptions.PrepareGoLive"/>; off with
    /// <c>--no-go-live-preparation</c>, for comparison runs).</summary>
    public bool PrepareGoLive { get; init; } = true;
    /// <summary>The data link's transport (<c>--data-link</c>): whether this replica offers its same-host socket (and
    /// takes only it), and what it uses for the links it opens to standbys after a takeover.</summary>
    public DataLinkKind DataLink { get; init; }
    /// <summary>Where the Prometheus scrape endpoint answers (<c>--metrics-listen</c>); null: none.</summary>
    public string? MetricsListen { get; init; }
    /// <summary>How long the replay, once it has replayed everything held, gathers batches before it replays again
    /// (<c>--replay-gather-us</c>; <see cref="BackupSession.DefaultReplayGatherUs"/> by default, 0: every batch wakes it).</summary>
    public int ReplayGatherUs { get; init; } = BackupSession.DefaultReplayGatherUs;
}

/// <summary>`backup listen`: serves the replication endpoint, follows one primary, takes over when it dies.</summary>
public static class ListenHost
{
    public static int Run(ListenSettings s)
    {
        ThreadPools.ForLowLatency();
        if (s.Secret.Length == 0 && !s.InsecureNoAuth)
        {
            Console.Error.WriteLine("backup: refusing to listen without authentication: pass --token-file FILE (the secret the primary's --token-file holds), " +
                                    "or --insecure-no-auth to accept any client as the primary (anyone who reaches the port could then claim this backup and have it run a program of their choice when it goes live)");
            return 2;
        }
        if (s.Secret.Length == 0)
            Console.Error.WriteLine($"backup: WARNING: --insecure-no-auth: NO AUTHENTICATION; any client that reaches port {s.Listen.Port} can claim this backup");
        MetricsEndpoint? metrics;
        try { metrics = MetricsEndpoint.Open(s.MetricsListen, s.Events); }
        catch (ArgumentException e) { Console.Error.WriteLine($"backup: {e.Message}"); return 2; }
        using var metricsScope = metrics;
        var listenAddr = s.Listen.Host is "localhost" ? IPAddress.Loopback : IPAddress.Parse(s.Listen.Host);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<IHostLifetime, QuietLifetime>();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(listenAddr, s.Listen.Port, lo =>
            {
                lo.Protocols = HttpProtocols.Http2;
                // the TLS layer takes any client certificate; the service refuses one that does not chain to --ca
                // with the reason, which a TLS alert could not carry
                if (s.Tls is { } tls)
                    lo.UseHttps(h =>
                    {
                        h.ServerCertificate = tls.Identity;
                        h.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate;
                        h.ClientCertificateValidation = (_, _, _) => true;
                    });
            });
            k.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(5);
            k.Limits.MaxRequestBodySize = null; // one stream carries the whole log; each message is bounded below
            // what strangers can hold open: a few connections, a few streams each (one primary needs one stream)
            k.Limits.MaxConcurrentConnections = 16;
            k.Limits.Http2.MaxStreamsPerConnection = 4;
            k.Limits.MaxRequestHeadersTotalSize = 16 << 10;
        });
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = ReplicationProtocol.MaxMessageBytes;
            o.MaxSendMessageSize = ReplicationProtocol.MaxBackupMessageBytes;
        });
        var session = new BackupSession(s, Console.Error);
        // the log and the acks travel on the data link, served by threads of its own (shared/Replication/DataLink.cs)
        // with --data-link unix the TCP port still answers, but only with a refusal that says why
        using var data = new DataListener(listenAddr, s.DataPort, s.Tls, s.DataLink == DataLinkKind.Unix ? session.RefuseTcpLink : session.OpenLink, Console.Error);
        session.DataPort = data.Port;
        // a primary on this host and network namespace may open the link on an abstract Unix socket instead
        using var local = s.DataLink == DataLinkKind.Tcp ? null : new DataListener(DataLink.NewSocketName(), s.Tls, session.OpenLink, Console.Error);
        session.DataSocket = local?.SocketName ?? "";
        builder.Services.AddSingleton(session);
        // grpc.health.v1 on the replication endpoint: SERVING while waiting for, following or replacing a primary
        builder.Services.AddGrpcHealthChecks().AddCheck("replication", session.Health);
        var app = builder.Build();
        app.MapGrpcService<ReplicationService>();
        app.MapGrpcHealthChecksService();
        session.Lifetime = app.Lifetime;
        app.Start();
        var addrs = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        Console.Error.WriteLine($"backup: listening on {string.Join(", ", addrs ?? [])} as {s.Id} (data link on port {data.Port}{(local != null ? $" and same-host socket @{local.SocketName}" : "")})");
        s.Events.Emit(ReplicaEvent.Listening, ("url", addrs?.FirstOrDefault()), ("id", s.Id), ("dataPort", data.Port), ("dataSocket", local?.SocketName));
        app.WaitForShutdown();
        metrics?.EmitFinal(s.Events);
        s.Events.Emit(ReplicaEvent.Exit, ("status", session.ExitCode));
        return session.ExitCode;
    }
}

sealed class QuietLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// The one primary this backup follows: its log is appended to this replica's own durable copy and fed to a
/// lockstep replay as it arrives; when the primary is lost the replay drains what it holds, asks the arbiter and
/// goes live.
/// </summary>
public sealed class BackupSession(ListenSettings s, TextWriter log)
{
    public IHostApplicationLifetime? Lifetime;
    public int ExitCode = 1;
    int _claimed;
    BlockingPipeStream _pipe = NewPipe(s.ReplayGatherUs);

    /// <summary>
    /// How long the replay, once it has replayed everything held, gathers batches before it replays again
    /// (<see cref="BlockingPipeStream.Gather"/>): under a request-response load a batch arrives every few hundred
    /// microseconds, and waking the replay for each cost a context switch on both the link and the replay thread. The
    /// replay trails by up to this much more, well within the primary's bound on replay lag (20 ms by default);
    /// a lost primary ends the gathering at once.
    /// </summary>
    public const int DefaultReplayGatherUs = 1000;

    static BlockingPipeStream NewPipe(int gatherUs) => new() { Gather = TimeSpan.FromMicroseconds(gatherUs) };
    // a standby that joined from a snapshot: the last record it includes (its log copy holds the records after it)
    ulong _snapshotSequence;
    /// <summary>A standby that joined a live replica: the join point it was told (JoinPoint; 0: not yet), the last record
    /// whose output the live replica released unheld while it joined. It may go live only once it holds it.</summary>
    ulong _joinPoint;
    StreamLogSink? _file;
    ReplayBoundary? _boundary;
    IArbiter? _arbiter;
    string _primaryId = "";
    long _term, _wonTerm;
    /// <summary>The arbiter's answer once asked (it is asked once: as the primary is lost, or at the end of the drain).</summary>
    ArbiterResult? _decision;
    readonly object _decide = new();
    Hello? _hello;
    string _logPath = "";
    // once live with standbys: the log goes on being recorded and streamed to whichever standby joins
    ReplicationClient? _liveClient;
    Timer? _catchUpTimer; // referenced here so that it is not collected while it watches
    LogWriter? _liveWriter;
    long _lostAt;
    string? _lostReason;
    /// <summary>Set when the primary said goodbye or was lost: how a finished replay learns whether the primary
    /// released the output its gate held when the guest ended.</summary>
    readonly ManualResetEventSlim _primaryEnded = new();
    volatile bool _goodbye;
    ulong _held, _received, _ackedReplayed;
    /// <summary>The highest sequence in this replica's log copy, handed to the OS (any thread). An ack reports what the
    /// link thread has verified and keeps in memory (<c>_received</c>), which reaches the log copy and the replay right
    /// after the ack, and at once when the primary is lost.</summary>
    public ulong Held { get => Volatile.Read(ref _held); private set => Volatile.Write(ref _held, value); }
    public ListenSettings Settings => s;
    /// <summary>The data link's port (the Welcome names it).</summary>
    public int DataPort;
    /// <summary>The same-host data link's abstract socket name (the Welcome names it; empty: not offered).</summary>
    public string DataSocket = "";
    PendingLink? _pendingLink;
    volatile DataLink? _link;
    // set before this replica closes the data link itself (its replay ended): the link thread's read then ends too,
    // and that end is not the primary's
    volatile string? _closingLink;

    /// <summary>The backup's health: serving unless its primary was lost and it has not (yet) gone live.</summary>
    public Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult Health()
    {
        if (_boundary?.Live == true) return Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy("live: took over from " + _primaryId);
        if (_lostReason != null) return Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Unhealthy("the primary was lost: " + _lostReason);
        return Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy(_primaryId == "" ? "waiting for a primary" : "following " + _primaryId);
    }

    /// <summary>
    /// What is checked before the peer has proved the secret: only what costs nothing (no file is looked at, so a
    /// stranger learns nothing about this machine's files and cannot make it hash anything).
    /// </summary>
    public static string? CheckBeforeAuth(Hello h)
    {
        if (h.ProtocolVersion != ReplicationProtocol.Version)
            return $"protocol version {h.ProtocolVersion} is not supported (this backup speaks version {ReplicationProtocol.Version})";
        return null;
    }

    /// <summary>Checks an authenticated primary's hello against this replica; returns the refusal reason or null.</summary>
    public string? Check(Hello h, out LogHeader? header)
    {
        header = null;
        if (CheckBeforeAuth(h) is { } early) return early;
        try { header = LogHeader.Decode(h.LogHeader.Span, out _); }
        catch (LogFormatException e) { return $"bad log header: {e.Message}"; }
        MachineOptions opts;
        try { opts = Recording.OptionsFrom(header, s.Root); }
        catch (LogFormatException e) { return $"bad log header: {e.Message}"; }
        if (header.CpuModel != ReVirt.Cpu.CpuModel.Description)
            return $"CPU model mismatch: the primary's guest runs on the CPU model '{header.CpuModel}', this replica's is '{ReVirt.Cpu.CpuModel.Description}' (a replay on another model diverges)";
        if (!s.SharedStorage && RootIdentities.Same(h.Root, RootIdentities.Of(opts.Root)))
            return $"shared root: the primary's guest root and this backup's ({Path.GetFullPath(opts.Root)}) are the same directory on the same machine, " +
                   "so both would apply the guest's file writes to the same files. Fix: give the backup its own copy of the root (backup listen --root DIR, " +
                   "a copy of the primary's --root), or, if the two replicas share storage on purpose, pass --shared-storage to backup listen";
        if (Recording.RecordedProgram(header, opts, out var why) is null) return $"program mismatch: {why}";
        // a standby that shares the guest's files and takes a snapshot starts from the guest's state now, not from
        // the root as the guest started (the files have changed since, and a snapshot is checked by its own digest);
        // one with a root of its own must hold the root as the guest started: the snapshot carries what changed since
        if (AcceptsSnapshot(h) && s.SharedStorage) return null;
        byte[] mine;
        try { mine = RootDigest.Compute(opts.Root); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return $"the guest root {opts.Root} cannot be read on the backup: {e.Message}"; }
        if (!mine.AsSpan().SequenceEqual(h.RootDigest.Span))
            return $"root mismatch: the guest root {Path.GetFullPath(opts.Root)} on the backup differs from the primary's (digest {Convert.ToHexStringLower(mine)[..Math.Min(16, mine.Length * 2)]} vs {Convert.ToHexStringLower(h.RootDigest.ToByteArray())[..Math.Min(16, h.RootDigest.Length * 2)]})";
        return null;
    }

    /// <summary>This standby takes a snapshot the live replica offers (unless --no-snapshot). With a root of its own it
    /// asks for the files the guest changed along with it (<see cref="WantsSnapshotFiles"/>).</summary>
    public bool AcceptsSnapshot(Hello h) => h.SnapshotOffered && !s.NoSnapshot;

    /// <summary>A standby with a root of its own (a copy of the root as the guest started): the snapshot it takes must
    /// carry the files the guest changed, which it applies to its root and verifies before it acknowledges.</summary>
    public bool WantsSnapshotFiles(Hello h) => AcceptsSnapshot(h) && !s.SharedStorage;

    /// <summary>
    /// A snapshot being received: the chunks go, as they arrive, through a bounded pipe to a thread that restores the
    /// machine from them (<see cref="MachineSnapshot.Restore(Stream, ReadOnlySpan{byte}, MachineOptions, IBoundary, bool)"/>:
    /// pages restored as they come, SHA-256 and state digest accumulated, both checked after the last byte) and copies
    /// them to <c>LOG.snapshot.partial.N</c> (N numbers the attempts of this process: an attempt that failed deletes its
    /// own copy, never the next attempt's, which may already be writing). Neither the link's thread nor the restore holds the snapshot whole. A
    /// refusal (damaged, cut off, not the machine it claims) disposes the machine and deletes the copy: nothing is kept.
    /// </summary>
    sealed class SnapshotReceive
    {
        static int s_attempts;
        /// <summary>Chunks that may wait for the restore (the link's thread waits for room beyond that): 16 MiB of the
        /// live replica's 64 KiB chunks at most, however large the snapshot.</summary>
        const int ChunksAhead = 256;
        readonly SnapshotPipe _pipe = new(ChunksAhead);
        readonly Thread _thread;
        public readonly ulong Sequence;
        public readonly string CopyPath;
        public readonly long Started = Stopwatch.GetTimestamp();
        public ulong Received;
        public readonly ManualResetEventSlim Done = new();
        /// <summary>After <see cref="Done"/>: why the snapshot was refused (null: restored and verified).</summary>
        public string? Error;
        public Machine? Machine;
        public SnapshotPoint? Point;
        public ReplayBoundary? Boundary;
        public BlockingPipeStream? LogPipe;
        public long RestoredAt;

        public SnapshotReceive(BackupSession owner, Hello h, LogHeader header, ulong sequence, string copyPath)
        {
            Sequence = sequence;
            CopyPath = copyPath;
            _thread = new Thread(() => Restore(owner, h, header)) { Name = "snapshot-restore", IsBackground = true };
            _thread.Start();
        }

        void Restore(BackupSession owner, Hello h, LogHeader header)
        {
            string partial = $"{CopyPath}.partial.{Interlocked.Increment(ref s_attempts)}";
            Stream? copy = null;
            Machine? m = null;
            try
            {
                // written past the page cache: the copy is read back only by a later offline replay, and a buffered copy
                // cost the restore thread most of its CPU and stalled it on write-back (DirectFileWriter)
                copy = new DirectFileWriter(partial);
                var pipe = NewPipe(owner.Settings.ReplayGatherUs);
                pipe.Append(h.LogHeader.Span);
                pipe.Starving = () => owner.AckReplayed(pipe.ReadingFor);
                var reader = LogReader.OverVerifiedChunks(pipe, startsAfter: Sequence); // the link thread verifies every frame it appends; records are read in place
                var opts = Recording.OptionsFrom(header, owner.Settings.Root, owner.Settings.Tap, owner.Settings.Netns, owner.Settings.HearsPrimary, ThreadPools.MakeCurrentThreadRealtime);
                var boundary = new ReplayBoundary(reader, showOutput: false, owner.Follow(header));
                var (restored, point) = MachineSnapshot.Restore(new CopyingReader(_pipe.Reader(), copy), h.LogHeader.Span, opts, boundary, applyFiles: !owner.Settings.SharedStorage);
                m = restored;
                if (point.Sequence != Sequence) throw new SnapshotFormatException($"the snapshot is of record #{point.Sequence}, announced as #{Sequence}");
                // the interface's identity was checked by the restore; its wire is this replica's own TAP device (--tap, --netns)
                if (restored.Kernel.Nic is { } nic && nic.OpenAheadOrWhyNot(TimeSpan.FromSeconds(10)) is { } noWire)
                    throw new SnapshotRefusedException($"the virtual network interface {nic.Options.Identity} could not come up on this replica at a takeover: {noWire}");
                copy.Dispose();
                copy = null;
                File.Move(partial, CopyPath, overwrite: true);
                (Machine, Point, Boundary, LogPipe) = (restored, point, boundary, pipe);
            }
            catch (Exception e)
            {
                Error = e is SnapshotFormatException or SnapshotRefusedException ? e.Message : $"{e.GetType().Name}: {e.Message}";
                m?.Dispose();
                copy?.Dispose();
                try { File.Delete(partial); } catch (IOException) { }
                _pipe.Fail(Error); // the link's thread stops feeding and refuses with this reason
            }
            finally
            {
                RestoredAt = Stopwatch.GetTimestamp();
                Done.Set();
            }
        }

        /// <summary>Hands a chunk to the restore, calling <paramref name="keepAlive"/> every 100 ms while it waits for
        /// room. False: the restore refused the snapshot already (<see cref="Error"/> once <see cref="Done"/>).</summary>
        public bool Feed(ReadOnlyMemory<byte> data, Action keepAlive)
        {
            Received += (ulong)data.Length;
            try
            {
                while (!_pipe.TryAdd(data, 100)) keepAlive();
                return true;
            }
            catch (IOException) { return false; }
        }

        /// <summary>The last chunk was fed: the restore reads the end after it.</summary>
        public void Complete() => _pipe.Complete();

        /// <summary>The transfer ended before its last chunk: the restore fails with the reason and keeps nothing.</summary>
        public void Abandon(string reason) => _pipe.Fail(reason);
    }

    /// <summary>Reads a stream and writes what it read to another.</summary>
    sealed class CopyingReader(Stream from, Stream copy) : ReVirt.Replication.ReadOnlyStream
    {
        public override int Read(Span<byte> buffer)
        {
            int n = from.Read(buffer);
            copy.Write(buffer[..n]);
            return n;
        }

    }

    /// <summary>
    /// A standby whose snapshot was restored and verified (<see cref="SnapshotReceive"/>) follows the log from the
    /// record after it; what the live replica had not released of the output logged before it comes along (`held`).
    /// </summary>
    void StartFromSnapshot(Hello h, LogHeader header, SnapshotReceive snap, IEnumerable<HeldOutput> held, double receiveMs, double restoreMs)
    {
        var (m, point, boundary) = (snap.Machine!, snap.Point!, snap.Boundary!);
        boundary.ResumeAt(point, held.Select(o => (o.Fd, o.Start, o.Data.ToByteArray())));
        _pipe = snap.LogPipe!;
        _boundary = boundary;
        _snapshotSequence = snap.Sequence;
        Held = _received = snap.Sequence;
        Begin(h);
        log.WriteLine($"backup: restored a snapshot of {point.Bytes} bytes at record #{snap.Sequence} (received in {receiveMs:F0} ms while restoring, verified {restoreMs:F0} ms after the last chunk, state digest {point.Digest})");
        s.Events.Emit(ReplicaEvent.SnapshotRestored, ("sequence", snap.Sequence), ("bytes", point.Bytes), ("receiveMs", receiveMs), ("restoreMs", restoreMs), ("digest", point.Digest),
            ("stdoutAt", point.Outputs.Total(1)), ("filesDigest", point.FilesDigest));
        var t = new Thread(() => ReplayMain(header, m), 64 << 20) { Name = "replay" };
        t.Start();
        if (h.LiveSequence > 0) WatchCatchUp(h.LiveSequence);
    }

    /// <summary>This replica's log copy (--log, or a file of its own in the temporary directory); a snapshot it
    /// joined from lies next to it as <c>LOG.snapshot</c>.</summary>
    string LogCopyPath() => s.LogPath ?? Path.Combine(Path.GetTempPath(), $"revirt-backup-{Environment.ProcessId}.rvlog");

    /// <summary>Claims the session for one primary (false: a primary was already accepted).</summary>
    public bool Claim() => Interlocked.CompareExchange(ref _claimed, 1, 0) == 0;

    /// <summary>The claiming stream ended before the primary's first message: nothing of the guest was received,
    /// so this backup waits for a primary again (the same one retrying, typically).</summary>
    public void Unclaim(string reason)
    {
        log.WriteLine($"backup: handshake not completed ({reason}); waiting for a primary again");
        s.Events.Emit(ReplicaEvent.HandshakeAbandoned, ("reason", reason));
        Volatile.Write(ref _claimed, 0);
    }

    public void Start(Hello h, LogHeader header)
    {
        Begin(h);
        _pipe.Append(h.LogHeader.Span);
        // the replay has consumed everything held: tell the primary at once (it bounds how far the replay may trail)
        var pipe = _pipe;
        pipe.Starving = () => AckReplayed(pipe.ReadingFor);
        var t = new Thread(() => ReplayMain(header), 64 << 20) { Name = "replay" };
        t.Start();
        if (h.LiveSequence > 0) WatchCatchUp(h.LiveSequence);
    }

    /// <summary>The primary (or live replica) this replica follows from now on: its term, arbiter and log copy.</summary>
    void Begin(Hello h)
    {
        _primaryId = h.PrimaryId;
        _term = (long)h.Term;
        _hello = h;
        _arbiter = Arbiters.Create(s.ArbiterPath, h.LogHeader.ToByteArray());
        string path = LogCopyPath();
        _logPath = path;
        _file = StreamLogSink.CreateFile(path);
        _file.Append(h.LogHeader.Span);
        _file.Flush();
        _copyDigest?.Dispose();
        _copyDigest = null;
        if (s.Standbys.Count > 0)
        {
            // a replica that records on after a takeover continues the log's running digest over the copy's bytes:
            // kept here as the copy grows, it is not read and digested again on the go-live path
            _copyDigest = new CopyDigest(LogHeader.Decode(h.LogHeader.Span, out _).Version);
            _copyDigest.Append(h.LogHeader.Span);
        }
        log.WriteLine($"backup: following {h.PrimaryId}; log copy {path}; arbiter {_arbiter.Describe}");
        s.Events.Emit(ReplicaEvent.Following, ("primary", h.PrimaryId), ("log", path), ("arbiter", _arbiter.Describe), ("term", _term), ("liveSequence", h.LiveSequence),
            ("fromSnapshot", _snapshotSequence > 0 ? _snapshotSequence : null));
    }

    /// <summary>A standby that joined a live replica: reports when its replay has reached the record the live
    /// replica's log ended at when it joined (from there on it follows in lockstep).</summary>
    void WatchCatchUp(ulong target)
    {
        long t0 = Stopwatch.GetTimestamp();
        Timer? timer = null;
        _catchUpTimer = timer = new Timer(_ =>
        {
            if (_boundary is not { } b || _lostReason != null) { if (_lostReason != null) timer?.Dispose(); return; }
            if (b.RecordsConsumed < target && !b.Live) return;
            timer?.Dispose();
            double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            log.WriteLine($"backup: caught up: replayed the {target} records the live replica held when this standby joined in {ms:F0} ms");
            s.Events.Emit(ReplicaEvent.CaughtUp, ("records", target), ("ms", ms));
        }, null, 10, 10);
    }

    /// <summary>Takes a batch of frames (verified, sequence-checked) for the log copy and the replay; returns the last
    /// sequence. With <paramref name="hold"/> false the batch waits in memory: it is written to the log copy and handed
    /// to the replay only by <see cref="HoldReceived"/>, so that a burst of batches costs one write and at most one
    /// wake-up of the replay.</summary>
    public ulong Receive(Batch b, bool hold = true) => Receive(BatchView.Of(b), hold);

    /// <summary><see cref="Receive(Batch, bool)"/> of a batch read in place from the link (its frames are copied here,
    /// before the link's next read).</summary>
    ulong Receive(in BatchView b, bool hold)
    {
        var data = b.Frames;
        // the one verification of these frames on this replica: the replay trusts what reaches its pipe
        ulong seq = RecordFrame.CheckRun(data, b.Count, _received);
        _toReplay.Write(data.Span);
        _received = seq;
        if (b.HasReleased) _boundary?.ReportReleased(b.ReleasedStdout, b.ReleasedStderr);
        if (hold) HoldReceived();
        return seq;
    }

    /// <summary>The frames received so far reach this replica's log copy (one write, to the OS's buffers) and then the
    /// replay's pipe, which reads them in place (link thread). The replay only ever reads what the log copy holds (a
    /// replay that ends and closes the copy has read nothing it could still lose, and a live replica continues the
    /// copy after what its replay consumed), except when the copy cannot be written: then the replay gets them
    /// anyway (an ack may have reported them already) and the copy stays short of them (<see cref="Held"/>). Returns
    /// the held sequence.</summary>
    ulong HoldReceived()
    {
        if (_toReplay.Length == 0) return Held;
        var burst = _toReplay.GetBuffer().AsSpan(0, (int)_toReplay.Length);
        try
        {
            _file!.Append(burst);
            _file.Flush();
            Held = _received;
            _copyDigest?.Append(burst);
        }
        catch
        {
            // the copy may hold part of the burst: its bytes are read again if this replica goes live
            _copyDigest?.Dispose();
            _copyDigest = null;
            throw;
        }
        finally
        {
            _pipe.Append(burst);
            _toReplay.SetLength(0);
        }
        return Held;
    }

    /// <summary>With standbys and the go-live prepared: the continued recording's flush ticker, its thread started while
    /// following (taken by the go-live; null before the preparation, after the go-live, or without standbys).</summary>
    RecordingBoundary.FlushTicker? _readyTicker;

    /// <summary>With standbys: the running digest of every byte of the log copy (link thread until the go-live, which
    /// takes it; null without standbys, or once a write of the copy failed and the copy's bytes are not known).</summary>
    CopyDigest? _copyDigest;

    /// <summary>Frames received and not handed to the replay yet, in order (link thread).</summary>
    readonly MemoryStream _toReplay = new();

    /// <summary>Batches received but not acknowledged yet are acknowledged together once nothing more has arrived
    /// already (no batch waits for a later one), or after this many.</summary>
    const int MaxBatchesPerAck = 64;

    /// <summary>The welcomed primary's data link, expected with a one-time ticket (state: 0 waiting, 1 taken,
    /// 2 abandoned).</summary>
    public sealed class PendingLink(Hello hello, LogHeader header)
    {
        public readonly byte[] Ticket = ReplicationProtocol.Nonce();
        public readonly Hello Hello = hello;
        public readonly LogHeader Header = header;
        public int State;
        public readonly TaskCompletionSource Taken = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource Ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>The claimed primary was welcomed: its data link is expected with this ticket.</summary>
    public PendingLink ExpectLink(Hello h, LogHeader header) => _pendingLink = new PendingLink(h, header);

    /// <summary>The data link did not come: the ticket is void. False when a link took it meanwhile.</summary>
    public bool Abandon(PendingLink p)
    {
        if (Interlocked.CompareExchange(ref p.State, 2, 0) != 0) return false;
        Interlocked.CompareExchange(ref _pendingLink, null, p);
        return true;
    }

    /// <summary>
    /// A data link presented a ticket (on the link's own thread): refused with the reason unless it is the pending
    /// ticket with a proof of the secret; then the session runs on this thread until the link ends.
    /// </summary>
    public string? OpenLink(DataLink link, byte[] ticket, byte[] proof)
    {
        if (_pendingLink is not { } p || !CryptographicOperations.FixedTimeEquals(ticket, p.Ticket))
            return "unknown data link ticket (no primary was welcomed with it, or it was used)";
        if (!CryptographicOperations.FixedTimeEquals(DataLink.Proof(s.Secret, ticket), proof))
            return "authentication failed: the data link's opener does not hold this backup's token";
        if (Interlocked.CompareExchange(ref p.State, 1, 0) != 0) return "the data link ticket expired";
        Interlocked.CompareExchange(ref _pendingLink, null, p);
        p.Taken.TrySetResult();
        try { RunLink(p, link); }
        finally { p.Ended.TrySetResult(); }
        return null;
    }

    /// <summary>A data link on the TCP port of a backup that takes it only on its same-host socket (--data-link unix).</summary>
    public string? RefuseTcpLink(DataLink link, byte[] ticket, byte[] proof) =>
        "this backup takes its data link only on its same-host Unix socket (--data-link unix): run the primary on the backup's host and network namespace, or the backup with --data-link auto or tcp";

    /// <summary>
    /// The session on its data link: batches are held (log copy, then the replay's pipe) and acknowledged at once
    /// from this thread; heartbeats are answered; the session starts with the primary's first message.
    /// </summary>
    void RunLink(PendingLink p, DataLink link)
    {
        // until the session has started (its first message after a snapshot, if this standby takes one) the primary may
        // be taking or encoding a snapshot: the long time-out; from the session's first message on, the primary writes
        // something (a batch, or a heartbeat when no batch went out for its interval) within the short silence bound,
        // which then decides when it is lost. Armed by a message of any kind: a primary whose guest never idles sends
        // only batches, and a bound armed by its first heartbeat was never armed (a frozen busy primary was waited
        // out for the long time-out)
        var silence = new LinkSilence(s.TimeoutMs);
        link.ReceiveTimeoutMs = s.TimeoutMs;
        link.SendTimeoutMs = ReplicationProtocol.SendBoundMs(s.TimeoutMs);
        if (!link.TrySend(new BackupMessage { Ack = new Ack() })) { Unclaim("the data link broke as it opened"); return; }
        bool started = false;
        var planted = s.PlantAckEarlyMs > 0 ? new Queue<(Batch Batch, long Due)>() : null;
        ulong earlyAcked = 0;
        int owed = 0; // batches received and not acknowledged yet
        // the batch path's timings the next ack carries (--stats on the primary): when this thread held the first owed
        // batch, and the newest batch's way here from the primary's write (same-host links; 0: not known)
        long firstOwedAt = 0;
        uint newestTransitUs = 0;
        // a snapshot arriving in chunks (a standby that takes one): restored as it arrives, nothing kept until it is
        // whole and verified
        SnapshotReceive? snap = null;
        string Cut() => snap != null ? $" (the snapshot was cut off after {snap.Received} bytes; nothing of it is kept)" : "";
        // Why the link stopped taking this replica's acknowledgements (null: it takes them). A write that fails does
        // not end the reading: a primary that died while this replica could not read (frozen, starved) left records in
        // this end's socket, and a kernel answers the first write to a dead peer with EPIPE or a reset while every byte
        // the peer sent can still be read. Each of those records was shipped, may hold output the primary never
        // released, and belongs to this replica's log: the link is read to its end (or to the silence bound) and only
        // then is the primary lost, with all of it held. No more acks are written once one failed.
        string? unanswerable = null;
        // planted (join-never-acks): a joining standby's answers hold nothing, however much it holds
        bool withholdAcks = s.PlantJoinNeverAcks && p.Hello.LiveSequence > 0;
        void Answer(ulong held, long echoUnixMs = 0, uint transitUs = 0, uint holdUs = 0)
        {
            if (unanswerable != null) return;
            if (withholdAcks) held = 0;
            try { SendAck(link, held, echoUnixMs, transitUs, holdUs); }
            catch (LinkSendTimeoutException) { throw; } // the link closed itself: nothing more can be read
            catch (IOException e)
            {
                unanswerable = e.Message;
                log.WriteLine($"backup: an acknowledgement to the primary could not be sent ({e.Message}); reading what it sent to the end of the link");
            }
        }
        string Unanswered() => unanswerable != null ? $" (acknowledgements had stopped going out: {unanswerable})" : "";
        void AckOwed()
        {
            owed = 0;
            if (s.AckDelayMs > 0)
            {
                // the test hook delays the ack, not the holding: what was received is written and replayed at once
                ulong written = HoldReceived();
                Thread.Sleep(s.AckDelayMs);
                Answer(written, 0, newestTransitUs, HoldUs());
                return;
            }
            // The ack goes out first, as soon as the burst is verified and in this replica's memory (what it acknowledges
            // its replay will replay and a takeover will drain: PrimaryLost writes and hands over everything received),
            // and only then is the burst written to the log copy and handed to the replay: the write (a file system
            // call, the slowest of the link's per-burst calls) and the hand-off (which may wake the replay thread, and on
            // a busy host let it take this thread's CPU before the ack is written) are off the acknowledgement's path;
            // the primary's output waits for the ack, the log copy and the replay only trail. Whatever happens to the
            // ack, what was received reaches the log copy and the replay.
            try { Answer(_received, 0, newestTransitUs, HoldUs()); }
            finally { HoldReceived(); }
        }
        // microseconds since this thread held the first batch the ack about to go out covers (at least 1: measured)
        uint HoldUs() => (uint)Math.Clamp(Stopwatch.GetElapsedTime(firstOwedAt).Ticks / (TimeSpan.TicksPerMillisecond / 1000), 1, uint.MaxValue);
        void OnBatch(in BatchView b, long readAt)
        {
            if (planted != null)
            {
                // planted violation (--plant ack-early:MS): a batch is acknowledged at once but held only
                // MS later, and never if the link ends first (HoldDuePlanted; the end drops the queue)
                earlyAcked = Math.Max(earlyAcked, Held) + b.Count;
                link.SendAck(earlyAcked, 0, 0);
                planted.Enqueue((b.ToMessage(), Environment.TickCount64 + s.PlantAckEarlyMs));
                return;
            }
            Receive(b, hold: false);
            if (owed++ == 0) firstOwedAt = readAt;
            newestTransitUs = link.SharesClock ? LinkWire.TransitUs(b.SentMonotonicNs, LinkWire.MonotonicNs()) : 0;
        }
        try
        {
            while (true)
            {
                if (planted != null) HoldDuePlanted(planted, link);
                // one ack for a burst: whatever already arrived is held first (one write of the log copy), but no
                // batch ever waits for a batch that has not arrived
                if (owed > 0 && (!link.HasBuffered || owed >= MaxBatchesPerAck)) AckOwed();
                silence.Listening();
                // a batch (the message of every request) is read in place: no message objects, no copy of its frames
                bool isBatch = link.ReceiveBatch(ReplicationProtocol.MaxMessageBytes, out var batch, out var other);
                long readAt = Stopwatch.GetTimestamp();
                silence.Heard();
                if (isBatch)
                {
                    silence.Spoke();
                    if (!started) { Start(p.Hello, p.Header); _link = link; started = true; }
                    if (silence.Arm(s.PrimarySilenceMs)) link.ReceiveTimeoutMs = s.PrimarySilenceMs;
                    OnBatch(batch, readAt);
                    continue;
                }
                var m = other!;
                if (m.BodyCase == PrimaryMessage.BodyOneofCase.Pulse)
                {
                    // the primary's liveness pulse (LinkPulse): counted against the silence bound (Heard, above), never
                    // answered, and no start of the session (it may come while a snapshot is being taken)
                    silence.Pulsed(m.Pulse.SentMonotonicNs, link.SharesClock);
                    continue;
                }
                silence.Spoke();
                if (!started && m.BodyCase == PrimaryMessage.BodyOneofCase.Heartbeat && AcceptsSnapshot(p.Hello))
                {
                    // the live replica is taking or encoding the snapshot: this standby starts only with it
                    link.Send(new BackupMessage { Ack = new Ack { HeldSequence = 0, EchoUnixMs = m.Heartbeat.SentUnixMs } });
                    continue;
                }
                if (!started && m.BodyCase == PrimaryMessage.BodyOneofCase.SnapshotChunk)
                {
                    if (!AcceptsSnapshot(p.Hello)) { RefuseLink(link, "protocol error: a snapshot this standby did not ask for"); return; }
                    var c = m.SnapshotChunk;
                    snap ??= new SnapshotReceive(this, p.Hello, p.Header, c.Sequence, LogCopyPath() + ".snapshot");
                    if (c.Sequence != snap.Sequence || c.Offset != snap.Received || (c.Last && c.TotalBytes != snap.Received + (ulong)c.Data.Length) || c.Data.Length > SnapshotChunkBytes)
                    {
                        RefuseLink(link, $"protocol error: a snapshot chunk at {c.Offset} ({c.Data.Length} bytes{(c.Last ? $", the last of {c.TotalBytes}" : "")}, record #{c.Sequence}) after {snap.Received} bytes of record #{snap.Sequence}'s");
                        return;
                    }
                    // answered every 100 ms (and while the restore makes room), so the live replica's watchdog hears
                    // from this standby; each answer says how much of the snapshot is restored, the join's progress
                    // (--join-progress-ms) while no record can be acknowledged
                    var restoring = snap;
                    BackupMessage Alive() => new() { Ack = new Ack { HeldSequence = 0, SnapshotBytes = withholdAcks ? 0 : restoring.Received } };
                    bool fed = snap.Feed(c.Data.Memory, () => link.Send(Alive()));
                    if (fed && !c.Last)
                    {
                        if (Environment.TickCount64 - link.LastWriteTick >= 100) link.Send(Alive());
                        // planted (join-slow:MS): a slow standby that still progresses
                        if (s.PlantJoinSlowMs > 0) Thread.Sleep(s.PlantJoinSlowMs);
                        continue;
                    }
                    double receiveMs = Stopwatch.GetElapsedTime(snap.Started).TotalMilliseconds;
                    if (fed) snap.Complete();
                    long lastAt = Stopwatch.GetTimestamp();
                    while (!snap.Done.Wait(100)) link.Send(Alive());
                    if (snap.Error is { } reason)
                    {
                        log.WriteLine($"backup: refused the snapshot after {snap.Received} bytes: {reason}");
                        s.Events.Emit(ReplicaEvent.SnapshotRefused, ("reason", reason), ("receivedBytes", snap.Received));
                        RefuseLink(link, $"snapshot refused: {reason}");
                        return;
                    }
                    StartFromSnapshot(p.Hello, p.Header, snap, c.Held, receiveMs, Stopwatch.GetElapsedTime(lastAt, snap.RestoredAt).TotalMilliseconds);
                    snap = null;
                    started = true;
                    _link = link;
                    Answer(Held);
                    continue;
                }
                if (!started) { Start(p.Hello, p.Header); _link = link; started = true; }
                if (silence.Arm(s.PrimarySilenceMs)) link.ReceiveTimeoutMs = s.PrimarySilenceMs;
                switch (m.BodyCase)
                {
                    case PrimaryMessage.BodyOneofCase.Batch: // one the in-place reader left to the parser
                        OnBatch(BatchView.Of(m.Batch), readAt);
                        break;
                    case PrimaryMessage.BodyOneofCase.Heartbeat:
                        if (owed > 0) AckOwed(); // batches before the heartbeat are acknowledged as batches are
                        Released(m.Heartbeat.Released);
                        Answer(Held, m.Heartbeat.SentUnixMs);
                        break;
                    case PrimaryMessage.BodyOneofCase.JoinPoint:
                        if (_hello is not { LiveSequence: > 0 } joined || m.JoinPoint.Sequence < joined.LiveSequence || m.JoinPoint.Sequence < _snapshotSequence || Volatile.Read(ref _joinPoint) != 0)
                        {
                            PrimaryLost($"protocol error: a join point at record #{m.JoinPoint.Sequence} (this replica {(_hello is { LiveSequence: > 0 } ? $"joined at record #{_hello.LiveSequence}" : "did not join a live replica")})", silence);
                            return;
                        }
                        Volatile.Write(ref _joinPoint, m.JoinPoint.Sequence);
                        log.WriteLine($"backup: join point record #{m.JoinPoint.Sequence}: the live replica released output unheld up to there; this standby may go live once it holds it (holds #{Held})");
                        s.Events.Emit(ReplicaEvent.JoinPoint, ("sequence", m.JoinPoint.Sequence), ("held", Held));
                        break;
                    case PrimaryMessage.BodyOneofCase.Goodbye:
                        while (planted is { Count: > 0 }) Receive(planted.Dequeue().Batch); // a normal end: hold them all
                        Goodbye(m.Goodbye, silence);
                        return;
                    default:
                        PrimaryLost($"protocol error: unexpected {m.BodyCase}", silence);
                        return;
                }
            }
        }
        catch (LogFormatException e)
        {
            PrimaryLost($"the primary sent a damaged batch: {e.Message}", silence);
        }
        catch (IOException) when (_closingLink is { } own)
        {
            // this replica closed the link (its replay had ended): not a loss of the primary, and no decision
            log.WriteLine($"backup: closed the data link to the primary: {own}");
        }
        catch (EndOfStreamException)
        {
            if (started) PrimaryLost($"the primary closed the stream without saying goodbye{Unanswered()}", silence, unanswerable);
            else Unclaim($"the primary closed the data link before its first message{Cut()}");
        }
        catch (IOException e)
        {
            string why = TimedOut(e) ? $"no batch or heartbeat for {silence.BoundMs} ms" : $"the connection to the primary broke ({e.Message})";
            if (started) PrimaryLost(why + Unanswered(), silence, unanswerable);
            else Unclaim($"{why} after the welcome{Cut()}");
        }
        finally
        {
            _link = null;
            snap?.Abandon("the data link ended before the snapshot's last chunk");
        }
    }

    /// <summary>Largest snapshot chunk a standby takes in one message (the live replica sends 64 KiB).</summary>
    const int SnapshotChunkBytes = 4 << 20;

    /// <summary>Planted early acks: holds every queued batch whose time has come, unless something arrives on the
    /// link first (read it: if it is the end, the batches still queued are lost although acknowledged).</summary>
    void HoldDuePlanted(Queue<(Batch Batch, long Due)> planted, DataLink link)
    {
        while (planted.Count > 0)
        {
            long wait = planted.Peek().Due - Environment.TickCount64;
            if (wait > 0 && link.WaitReadable((int)wait)) return;
            Receive(planted.Dequeue().Batch);
        }
    }

    /// <summary>Refuses the primary on its data link with the reason and waits for a primary again (nothing was kept).</summary>
    void RefuseLink(DataLink link, string reason)
    {
        if (link.TrySend(new BackupMessage { Refused = new Refused { Reason = reason } }))
            link.EndAfterLastMessage(TimeSpan.FromSeconds(2)); // the primary reads the refusal, then closes its side
        Unclaim(reason);
    }

    static bool TimedOut(Exception? e)
    {
        for (; e != null; e = e.InnerException)
            if (e is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.TimedOut or System.Net.Sockets.SocketError.WouldBlock }) return true;
        return false;
    }

    /// <summary>Notes an ack of <paramref name="held"/> (what this replica holds: received, verified, kept) going out now; returns how far the
    /// replay got, which the ack carries.</summary>
    ulong NoteAck(ulong held)
    {
        Interlocked.Exchange(ref _lastAckTicks, Stopwatch.GetTimestamp());
        if (held > Volatile.Read(ref _ackedHeld)) Volatile.Write(ref _ackedHeld, held);
        ulong replayed = _boundary?.ReplayedSequence ?? 0;
        if (replayed > Volatile.Read(ref _ackedReplayed)) Volatile.Write(ref _ackedReplayed, replayed);
        return replayed;
    }

    /// <summary>An ack of what this replica holds and how far its replay got (encoded by hand: no message objects).</summary>
    void SendAck(DataLink link, ulong held, long echoUnixMs = 0, uint transitUs = 0, uint holdUs = 0) => link.SendAck(held, echoUnixMs, NoteAck(held), transitUs, holdUs);

    /// <summary>
    /// The replay's position reaches the primary at most this long after the replay consumed everything held. Acks
    /// of held batches carry it too; a report of its own for every batch would double the messages that wake the
    /// primary's ack thread. The primary's bound on how far the replay may trail (20 ms by default) allows for it.
    /// 5 ms: under load acks of held batches flow every fraction of a millisecond and carry the position anyway; at
    /// 2 ms the reports of their own were a fifth of all acks the primary handled (kvserver, 16 connections).
    /// </summary>
    const int ReplayAckIntervalMs = 5;
    long _lastAckTicks;
    // the held position the link thread acknowledged last: the replay's own reports repeat it (holding is acknowledged
    // by the link thread only, after any --ack-delay-ms)
    ulong _ackedHeld;

    /// <summary>The replay consumed everything held (on the replay thread, which has read without waiting for
    /// <paramref name="readingFor"/>; its pipe's <see cref="BlockingPipeStream.Starving"/>): reports its position
    /// unless an ack did, at once if no ack went out in the last <see cref="ReplayAckIntervalMs"/> or the replay has
    /// just worked through a backlog (it read that long without waiting); otherwise returns how long until the
    /// interval has passed, and the pipe calls this again then if nothing arrived meanwhile (the replay thread waits
    /// for the next batch at most that long). Returns <see cref="Timeout.InfiniteTimeSpan"/> when nothing is left to
    /// report.</summary>
    /// <remarks>The report is sent from the replay thread itself, which is awake at that point anyway: under a steady
    /// load the replay runs dry every gathering period, so a report that is due goes out at one of those dry points
    /// and costs no wake-up of any thread of this replica. (A reporting thread of its own, ticking once per interval
    /// while the replay kept running dry, cost two wake-ups per interval: its timed sleep, and its arming.)
    /// <para>A replay that trails far enough to work that long without running dry is the one whose live replica
    /// may be holding its guest until a report shows the replay back within its bound (<c>--max-replay-lag-ms</c>:
    /// the guest waits at its next record and sends no more meanwhile, so no ack of a new batch would carry the
    /// position): reporting it only when the interval has passed held that guest up to 5 ms longer each time. A
    /// replay that keeps up runs dry within about a gathering period of being woken and keeps the interval.</para></remarks>
    TimeSpan AckReplayed(TimeSpan readingFor)
    {
        if (!ReplayUnreported(out var l)) return Timeout.InfiniteTimeSpan;
        double sinceAck = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastAckTicks)).TotalMilliseconds;
        if (readingFor.TotalMilliseconds >= ReplayAckIntervalMs || sinceAck >= ReplayAckIntervalMs)
        {
            TrySendReplayAck(l);
            return Timeout.InfiniteTimeSpan;
        }
        return TimeSpan.FromMilliseconds(ReplayAckIntervalMs - sinceAck);
    }

    /// <summary>Reports the replay's position with the held position acknowledged last (the replay's thread: holding
    /// is acknowledged by the link thread only).</summary>
    void TrySendReplayAck(DataLink l)
    {
        ulong held = Volatile.Read(ref _ackedHeld);
        l.TrySendAck(held, 0, NoteAck(held));
    }

    /// <summary>The replay has consumed held records that no ack reported yet.</summary>
    bool ReplayUnreported(out DataLink link)
    {
        link = _link!;
        return link != null && _boundary is { } b && b.ReplayedSequence > Volatile.Read(ref _ackedReplayed);
    }

    public void Released(OutputMark? m) { if (m != null) _boundary?.ReportReleased(m.StdoutBytes, m.StderrBytes); }

    /// <summary>The primary ended its guest normally: the log is complete.</summary>
    public void Goodbye(Goodbye g, LinkSilence silence)
    {
        HoldReceived();
        log.WriteLine($"backup: the primary's guest ended with status {g.ExitStatus} after record #{g.LastSequence}; finishing the replay");
        s.Events.Emit(ReplicaEvent.PrimaryFinished, ("status", g.ExitStatus), ("lastSequence", g.LastSequence),
            ("longestSilenceMs", silence.LongestMs), ("silences", silence.Histogram), ("silenceBoundMs", silence.BoundMs),
            ("longestSilenceAtMs", silence.LongestAtMs), ("longSilences", silence.Long),
            ("longestUnpulsedMs", silence.LongestUnpulsedMs), ("longUnpulsed", silence.LongUnpulsed), ("pulses", silence.Pulses), ("pulseGapMs", silence.PulseGapMs), ("pulseDelayMs", silence.PulseDelayMs));
        _goodbye = true;
        _primaryEnded.Set();
        _pipe.Complete();
    }

    /// <summary>The primary is gone: let the replay drain what it holds, then take over.</summary>
    /// <param name="ackFailed">Why acknowledgements had stopped going out before the loss (null: they went out):
    /// everything the primary sent was read after that all the same.</param>
    public void PrimaryLost(string reason, LinkSilence? silence = null, string? ackFailed = null)
    {
        if (_lostReason != null) return;
        // the link thread (raised, not real-time) runs what follows while the drained replay, a real-time thread, waits
        // for the decision under _decide: at load ~100 it waited 40-100 ms for time slices before the arbiter was asked
        // and 30-80 ms more before the announce (go-live events, 2026-12-02), a priority inversion on the clients'
        // stall. It is a real-time thread until the takeover is prepared (a few ms of CPU), then raised again.
        bool realtime = ThreadPools.MakeCurrentThreadRealtime();
        try { LoseThePrimary(reason, silence, ackFailed); }
        finally { if (realtime) ThreadPools.MakeRaised(ThreadPools.CurrentThreadId()); }
    }

    void LoseThePrimary(string reason, LinkSilence? silence, string? ackFailed)
    {
        try { HoldReceived(); } // everything received is this replica's log: the replay drains it all
        catch (Exception e) when (e is IOException or ObjectDisposedException) { log.WriteLine($"backup: the log copy could not be written: {e.Message}"); }
        _lostReason = reason;
        _lostAt = Stopwatch.GetTimestamp();
        log.WriteLine($"backup: primary lost: {reason}; holding the log up to record #{Held}; draining {_pipe.Buffered} bytes");
        s.Events.Emit(ReplicaEvent.PrimaryLost, ("reason", reason), ("held", Held),
            ("longestSilenceMs", silence?.LongestMs), ("silences", silence?.Histogram), ("silenceBoundMs", silence?.BoundMs), ("ackFailed", ackFailed),
            ("longestSilenceAtMs", silence?.LongestAtMs), ("longSilences", silence?.Long),
            ("longestUnpulsedMs", silence?.LongestUnpulsedMs), ("longUnpulsed", silence?.LongUnpulsed), ("pulses", silence?.Pulses), ("pulseGapMs", silence?.PulseGapMs), ("pulseDelayMs", silence?.PulseDelayMs));
        RushDrain();
        // the takeover (on the replay thread, after the drain) asks for the decision under this lock, so what is done
        // here comes first, while the replay drains
        lock (_decide)
        {
            _primaryEnded.Set();
            _pipe.Complete();
            PrepareTakeover();
        }
    }

    /// <summary>
    /// The clients wait for the drain: the replay thread replays it as a real-time thread (SCHED_RR 1, when allowed),
    /// for at most <see cref="DrainRushMs"/> (then raised as before): the replay-lag bound keeps a drain to tens of
    /// milliseconds of replay, but one that is long after all (a replay the primary stopped waiting for) must not
    /// hold a CPU from the machine's other work. Not for a standby still replaying the backlog it joined with.
    /// </summary>
    void RushDrain()
    {
        if (Interlocked.Read(ref _replayTid) is not (> 0 and var tid)) return;
        if (_hello is { LiveSequence: > 0 } joined && (_boundary?.RecordsConsumed ?? 0) < joined.LiveSequence) return;
        lock (_rush)
        {
            if (_rushEnded || !ThreadPools.MakeRealtime(tid)) return;
            _rushTimer = new Timer(_ => { lock (_rush) if (!_rushEnded) { _rushEnded = true; ThreadPools.MakeRaised(tid); } }, null, DrainRushMs, Timeout.Infinite);
        }
    }
    const int DrainRushMs = 1000;
    bool _servingByNic;
    IDisposable? _liveRush;
    readonly object _rush = new();
    bool _rushEnded;
    Timer? _rushTimer;
    long _replayTid;

    /// <summary>
    /// As the primary is lost (under <see cref="_decide"/>, while the replay drains): a guest with a virtual
    /// interface drops what its TAP device queued so far (it may be in the log) and keeps what arrives from now on;
    /// the arbiter is asked now rather than after the drain, and on winning the address is announced at once, so
    /// clients' retransmissions of what only the dead primary received wait at this replica's device for the stack.
    /// </summary>
    void PrepareTakeover()
    {
        if (_boundary?.Nic is not { } nic || _arbiter == null || StandDownReason() != null) return;
        if (s.HearsPrimary)
            nic.HeardSettled = c => s.Events.Emit(ReplicaEvent.HeardFrames, ("read", c.Read), ("atLoss", c.AtLoss), ("largestBurst", c.LargestBurst),
                ("kept", c.Kept), ("overwritten", c.Overwritten), ("given", c.Given), ("raised", c.Raised),
                ("own", c.Own), ("foreign", c.Foreign), ("old", c.Old), ("givenData", c.GivenData), ("givenAck", c.GivenAck),
                ("givenControl", c.GivenControl), ("givenOther", c.GivenOther));
        nic.DropStaleInput();
        var r = Decide();
        if (!r.Won || !nic.AnnounceEarly()) return;
        double ms = Stopwatch.GetElapsedTime(_lostAt).TotalMilliseconds;
        log.WriteLine($"backup: won the arbiter for term {r.Term} {ms:F0} ms after losing the primary; announced {nic.Options.Identity} on {nic.Options.TapName} while the replay drains");
        s.Events.Emit(ReplicaEvent.Announced, ("term", r.Term), ("afterLostMs", ms));
    }

    ArbiterResult Decide()
    {
        lock (_decide) return _decision ??= s.Events.Ask(_arbiter!, s.Id, _term);
    }

    /// <summary>Why this replica must not take over even if it could win the arbiter (null: it may).</summary>
    string? StandDownReason()
    {
        // a standby that joined a live replica and lost it before holding the log up to the join point: the live
        // replica released output of records up to there unheld while it joined, so the world may have seen output
        // of records it does not hold, and a takeover could contradict it
        if (_hello is not { LiveSequence: > 0 } joined) return null;
        ulong point = Volatile.Read(ref _joinPoint);
        if (point == 0)
            return $"this standby joined a live replica (whose log ended at record #{joined.LiveSequence} at the hello) and lost it before it was told its join point " +
                   $"(the live replica released output unheld meanwhile; this standby holds record #{Held})";
        return Held < point ? $"this standby must hold the log up to record #{point} (the last output the live replica released unheld while it joined) but holds only #{Held}" : null;
    }

    bool TakeOver(TakeoverPoint p)
    {
        if (_lostReason == null)
        {
            log.WriteLine($"backup: the log ended without an exit record after record #{p.Record}");
            s.Events.Emit(ReplicaEvent.StoodDown, ("reason", "the log ended without an exit record"), ("drainMs", null));
            return false;
        }
        double drainMs = Stopwatch.GetElapsedTime(_lostAt).TotalMilliseconds;
        if (StandDownReason() is { } why)
        {
            // the join did not complete: this standby cannot reproduce what the world may have seen, so the pair is
            // lost as an unprotected replica's death loses it
            log.WriteLine($"backup: drained in {drainMs:F0} ms but {why}: standing down; the live replica died before this standby could protect it (the guest is lost, as if it had run unprotected)");
            ulong point = Volatile.Read(ref _joinPoint);
            s.Events.Emit(ReplicaEvent.JoinIncomplete, ("reason", why), ("held", Held), ("joinPoint", point > 0 ? point : null), ("liveSequence", _hello?.LiveSequence));
            s.Events.Emit(ReplicaEvent.StoodDown, ("reason", why), ("drainMs", drainMs));
            return false;
        }
        var r = Decide();
        _wonTerm = r.Term;
        if (!r.Won)
        {
            log.WriteLine($"backup: drained in {drainMs:F0} ms but the arbiter is {r.Explain}: standing down");
            s.Events.Emit(ReplicaEvent.StoodDown, ("reason", $"the arbiter is {r.Explain}"), ("drainMs", drainMs));
            return false;
        }
        string digest = _boundary?.LastVerifiedCheckpoint is { } c ? $"; last verified checkpoint at instruction {c.Instruction}, state digest {c.Digest}" : "";
        log.WriteLine($"backup: drained in {drainMs:F0} ms; won the arbiter; took over at instruction {p.Instruction} (record #{p.Record}), stdout resumes at byte offset {p.ResumeStdoutAt} (the log holds {p.LogStdoutBytes}), stderr at {p.ResumeStderrAt}{digest}");
        ReplicationMetrics.Failovers.Add(1);
        var cp = _boundary?.LastVerifiedCheckpoint;
        s.Events.Emit(ReplicaEvent.TookOver, ("drainMs", drainMs), ("instruction", p.Instruction), ("record", p.Record),
            ("resumeStdoutAt", p.ResumeStdoutAt), ("logStdoutBytes", p.LogStdoutBytes), ("resumeStderrAt", p.ResumeStderrAt),
            ("checkpointInstruction", cp?.Instruction), ("checkpointDigest", cp?.Digest), ("term", r.Term));
        log.Flush();
        lock (_rush) { _rushEnded = true; _rushTimer?.Dispose(); } // the drain is over (a rush of it ends here)
        // the go-live work until the clients are served again (the interface up, announced, its connections' segments
        // resent) is a few ms of CPU that waited ~200 ms for time slices at load 20-40: it runs as a real-time thread,
        // and the thread is an ordinary one again before the live guest runs on it (ServingAgain)
        ThreadPools.MakeCurrentThreadRealtime();
        return true;
    }

    /// <summary>
    /// With standbys: the live machine goes on recording its log after the records this replica received (into the
    /// same log copy), and a client streams it to whichever standby joins, from record 1.
    /// </summary>
    IBoundary? ContinueRecording(TakeoverPoint p, RecordingContinuation from, LogHeader header)
    {
        if (s.Standbys.Count == 0 || _hello is not { } h) return null;
        if (from.LastSequence != Held) throw new InvalidOperationException($"the replay consumed {from.LastSequence} records but this replica holds {Held}");
        long t0 = Stopwatch.GetTimestamp();
        _file?.Dispose();
        _file = null;
        var store = LogStore.Open(_logPath, h.LogHeader.Length, Held, _snapshotSequence);
        // the link thread no longer appends (the primary is lost): the running digest is this thread's now
        var digest = Interlocked.Exchange(ref _copyDigest, null);
        var client = new ReplicationClient(new ProtectSettings
        {
            BackupUrl = s.Standbys[0],
            Standbys = s.Standbys,
            StandbyRetryMs = s.StandbyRetryMs,
            JoinTimeoutMs = s.JoinTimeoutMs,
            JoinProgressMs = s.JoinProgressMs,
            Secret = s.Secret,
            Tls = s.Tls,
            // the links this replica opens itself follow the primary's default (TCP) unless it insists on the socket:
            // its auto means it offers the socket
            DataLink = s.DataLink == DataLinkKind.Unix ? DataLinkKind.Unix : DataLinkKind.Tcp,
            TimeoutMs = s.TimeoutMs,
            Id = s.Id,
            RootDigest = h.RootDigest.ToByteArray(), // the root as the guest started: a standby replays from record 1
            Root = RootIdentities.Of(Recording.OptionsFrom(header, s.Root).Root),
            Events = s.Events,
            Role = "backup",
            ExitWatch = true,
            Plant = s.LivePlant,
            PlantSnapshot = s.LiveSnapshotPlant,
            Stop = code => Environment.Exit(code),
        }, log, store);
        long clientAt = Stopwatch.GetTimestamp();
        // the continued log's digest covers every byte before it: the running digest of the copy when it holds all of
        // them (the copy's length says so), else the copy read and digested again (the measured cost of the go-live
        // with a standby before the running digest: tens of ms for a log of tens of MB on a loaded machine)
        bool carried = digest != null && digest.Bytes == store.Length;
        if (carried) _liveWriter = new LogWriter(header, client, Held, digest!.Take(), store.Length);
        else
        {
            digest?.Dispose();
            using var prefix = new FileStream(_logPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            _liveWriter = new LogWriter(header, client, Held, prefix);
        }
        long writerAt = Stopwatch.GetTimestamp();
        var recording = new RecordingBoundary(_liveWriter, from) { Gate = client.Gate };
        // the flush ticker's thread was started while following (RehearseContinuation): starting it here waited for
        // the new thread's first time slice on the go-live path (a median 60 ms at load 50-60)
        var ticker = Interlocked.Exchange(ref _readyTicker, null);
        if (ticker != null) recording.UseTicker(ticker);
        client.Snapshots = recording; // standbys join from a snapshot (with the changed files when their root is their own)
        client.Gate.StartReleasedAt(p.LogStdoutBytes, p.LogStderrBytes);
        long boundaryAt = Stopwatch.GetTimestamp();
        client.StartLive(h.LogHeader.ToByteArray(), _arbiter!, _wonTerm);
        long liveAt = Stopwatch.GetTimestamp();
        _liveClient = client;
        static double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;
        s.Events.Emit(ReplicaEvent.RecordingContinued, ("storeMs", Ms(t0, clientAt)), ("writerMs", Ms(clientAt, writerAt)),
            ("boundaryMs", Ms(writerAt, boundaryAt)), ("startLiveMs", Ms(boundaryAt, liveAt)), ("prefixBytes", store.Length), ("digestCarried", carried), ("tickerReady", ticker != null));
        log.WriteLine($"backup: recording on after record #{Held} into {_logPath}; asking standbys {string.Join(", ", s.Standbys)} to join");
        return recording;
    }

    /// <summary>
    /// A dry pass of <see cref="ContinueRecording"/> on scratch data, run by the go-live's preparation while this
    /// replica follows (<see cref="FollowOptions.RehearseContinue"/>): the same objects built the same way - the root's
    /// identity, a log store over a scratch file, a replication client over it (its queues, gate and ordered sender:
    /// generic code over value types that no ReadyToRun image holds), the log's continuation after a scratch prefix,
    /// the recording boundary and the gate's start - so that their first use is not on the replay thread after the
    /// grant (measured at load ~45: the continuation JIT-compiled 24 methods, 6-7 ms of the go-live's CPU).
    /// Touches nothing of this replica: no standby is asked, no metric registered (the client never goes live; the
    /// gauges its StartLive registers are instantiated on a scratch meter), and the scratch file is removed. One thread
    /// is started: the flush ticker the continued recording will use (<see cref="_readyTicker"/>), waiting until then.
    /// </summary>
    void RehearseContinuation(LogHeader header)
    {
        var ticker = new RecordingBoundary.FlushTicker();
        if (Interlocked.CompareExchange(ref _readyTicker, ticker, null) != null) ticker.Dispose();
        string path = Path.Combine(Path.GetTempPath(), $"revirt-golive-prep-{Environment.ProcessId}-{Guid.NewGuid():N}.rvlog");
        var encoded = header.Encode();
        File.WriteAllBytes(path, encoded);
        try
        {
            var root = RootIdentities.Of(Recording.OptionsFrom(header, s.Root).Root);
            using var store = LogStore.Open(path, encoded.Length, 0);
            var client = new ReplicationClient(new ProtectSettings { BackupUrl = "http://127.0.0.1:9", Id = s.Id, Root = root, Role = "backup", Stop = _ => { } }, TextWriter.Null, store);
            using (var prefix = new MemoryStream(encoded, writable: false))
            {
                var writer = new LogWriter(header, client, 0, prefix);
                var recording = new RecordingBoundary(writer, new RecordingContinuation(0, new OutputDigests(), Recording.FirstCheckpoint(header.CheckpointInterval))) { Gate = client.Gate };
                client.Snapshots = recording;
            }
            client.Gate.StartReleasedAt(0, 0);
            using var meter = new System.Diagnostics.Metrics.Meter("revirt.golive-prep");
            meter.CreateObservableGauge("scratch", () => 0L, "{record}", "what ReplicationMetrics.Observe registers");
        }
        finally { File.Delete(path); }
    }

    /// <summary>
    /// The replay verified the whole run but the log holds output the primary has not reported released: its gate
    /// held that output when the guest ended and releases it only holding the arbiter (then it says goodbye). A
    /// primary lost before its goodbye leaves it to this replica if this replica wins the arbiter; if the primary
    /// holds the arbiter, it released the output itself.
    /// </summary>
    void FinishOutput(ReplayBoundary b)
    {
        // bounded by the protocol: a primary that stops sending is lost after the timeout; the bound is for a primary
        // that keeps heartbeating and never finishes (its own stdout blocked): that primary still owns its output
        if (!_primaryEnded.Wait(TimeSpan.FromMilliseconds(10L * s.TimeoutMs + 60_000)) || _goodbye || !b.HoldsUnreleasedOutput) return;
        if (b.TakeOverOutput())
        {
            log.WriteLine("backup: the primary was lost after its guest ended: released the output it held");
            return;
        }
        log.WriteLine("backup: the primary was lost after its guest ended and holds the arbiter: it released its last output itself");
    }

    /// <summary>
    /// The replay verified the whole run: the primary says goodbye once it holds the acknowledgement of the whole log
    /// (and, if its gate held output at the guest's end, the arbiter). Waited for within a bound, so a primary that
    /// never says it costs this replica a bounded time, with the reason, rather than the host's shutdown time-out
    /// (the data link keeps the session, and the idle handshake stream, open until it ends).
    /// </summary>
    void AwaitGoodbye()
    {
        var bound = TimeSpan.FromMilliseconds(Math.Max(10_000, 3L * s.TimeoutMs));
        if (_link == null || _primaryEnded.Wait(bound)) return;
        log.WriteLine($"backup: the replay matched the whole log but the primary did not say goodbye within {bound.TotalMilliseconds:F0} ms; closing the data link");
    }

    FollowOptions Follow(LogHeader header) => new()
    {
        TakeOver = TakeOver,
        WentLive = report =>
        {
            foreach (var line in report) s.Events.Emit(ReplicaEvent.TakeoverDescriptor, ("detail", line));
            // the replay thread runs the live guest from here; with a virtual interface it first answers what its
            // clients sent during the outage (the heard frames, their retransmissions), which waited 100-400 ms for
            // an ordinary thread's time slices at load ~80 (docs/PERFORMANCE-replication.md): it stays real-time for
            // LiveRushMs, as the drain does for DrainRushMs, then runs as an ordinary thread
            if (_servingByNic && s.LiveRushMs > 0) _liveRush = ThreadPools.OrdinaryAfter(s.LiveRushMs);
            else ThreadPools.MakeCurrentThreadOrdinary();
        },
        ServingAgain = up =>
        {
            // a virtual interface comes up before the host descriptors are attached, and the guest answers its
            // clients only once both are done: the go-live work stays real-time until WentLive (and LiveRushMs
            // beyond; the descriptors were attached 31-363 ms after the interface was up at load ~2 and the first
            // replies came that late). Without a virtual interface this is called once the descriptors are attached.
            if (up != null)
            {
                _servingByNic = true;
                s.Events.Emit(ReplicaEvent.TakeoverDescriptor, ("detail", up));
            }
            else ThreadPools.MakeCurrentThreadOrdinary();
        },
        Stepped = st => s.Events.Emit(ReplicaEvent.GoLive, ("continuedMs", st.ContinuedMs), ("interfaceUpMs", st.InterfaceUpMs),
            ("servingMs", st.ServingMs), ("attachedMs", st.AttachedMs), ("timersMs", st.TimersMs), ("doneMs", st.DoneMs),
            ("nicDropMs", st.Nic?.DropMs), ("nicRepairMs", st.Nic?.RepairMs), ("nicSendMs", st.Nic?.SendMs), ("nicFrames", st.Nic?.Frames), ("cpuMs", st.CpuMs),
            ("jitMs", st.JitMs), ("jitMethods", st.JitMethods), ("prepared", st.Prepared)),
        PrepareGoLive = s.PrepareGoLive,
        SharedStorage = s.SharedStorage,
        Continue = (p, from) => ContinueRecording(p, from, header),
        RehearseContinue = s.Standbys.Count > 0 ? () => RehearseContinuation(header) : null,
    };

    /// <param name="restored">A machine restored from a snapshot (its boundary is <see cref="_boundary"/>); null: the
    /// program is loaded and the log replayed from record 1.</param>
    void ReplayMain(LogHeader header, Machine? restored = null)
    {
        int code;
        // a takeover replays whatever the replay trails by, and the primary slows its guest while the replay trails
        // by more than its bound: on a loaded machine the replay must not queue behind other work for its time slices
        ThreadPools.RaiseCurrentThread();
        _replayTid = ThreadPools.CurrentThreadId();
        try
        {
            Machine m;
            if (restored != null) m = restored;
            else
            {
                var reader = LogReader.OverVerifiedChunks(_pipe); // the link thread verifies every frame it appends (Receive); records are read in place
                var opts = Recording.OptionsFrom(header, s.Root, s.Tap, s.Netns, s.HearsPrimary, ThreadPools.MakeCurrentThreadRealtime);
                _boundary = new ReplayBoundary(reader, showOutput: false, Follow(header));
                // the program is read again for loading and must still be the one the hello's hash named
                var program = Recording.RecordedProgram(header, opts, out var why) ?? throw new ElfLoadException($"program: {why}");
                m = new Machine(opts, _boundary);
                m.Load(program);
            }
            using var machine = m;
            var b = _boundary!;
            int status = m.Run();
            if (_liveClient is { } lc)
            {
                // the standby (if one joined) holds the whole log before this replica says goodbye
                if (!lc.FinishAsync(_liveWriter!.LastSequence, status).Wait(TimeSpan.FromSeconds(60)))
                    log.WriteLine("backup: the standby did not acknowledge the end of the log within 60 s");
                if (lc.Fenced()) status = 3;
                else if (!lc.Gate.WaitSocketsReleased(TimeSpan.FromSeconds(2)))
                    log.WriteLine($"backup: {lc.Gate.SocketHeldBytes} bytes held for sockets whose peers stopped reading were not delivered");
                lc.Store.Dispose();
            }
            if (b.Live)
                log.WriteLine($"backup: guest exited with status {status} after {m.InstructionCount} instructions (live since instruction {b.Takeover!.Value.Instruction})");
            else
            {
                // the whole log is replayed, the End record included: the primary may be waiting for this (at once)
                AckReplayed(TimeSpan.MaxValue);
                log.WriteLine($"backup: replay matched the primary: {m.InstructionCount} instructions, {b.RecordsConsumed} records, {b.CheckpointsVerified} checkpoints and {b.OutputsVerified} outputs verified, guest exit status {status}");
                s.Events.Emit(ReplicaEvent.ReplayMatched, ("instructions", m.InstructionCount), ("records", b.RecordsConsumed),
                    ("checkpoints", b.CheckpointsVerified), ("outputs", b.OutputsVerified), ("status", status));
                if (b.HoldsUnreleasedOutput) FinishOutput(b);
                AwaitGoodbye();
            }
            code = status;
        }
        catch (ReplayStoodDownException e) { log.WriteLine($"backup: {e.Message}"); code = 3; }
        catch (ReplayDivergenceException e) { log.WriteLine($"backup: {e.Message}"); s.Events.Emit(ReplicaEvent.Diverged, ("message", e.Message)); code = 1; }
        catch (ReplayEndOfLogException e) { log.WriteLine($"backup: {e.Message}"); code = 1; }
        catch (ReplayInputMismatchException e) { log.WriteLine($"backup: refused: {e.Message}"); code = 2; }
        catch (LogFormatException e) { log.WriteLine($"backup: corrupt log: {e.Message}"); code = 2; }
        catch (ElfLoadException e) { log.WriteLine($"backup: refused: the program cannot be loaded: {e.Message}"); code = e.ExitStatus; }
        catch (Exception e)
        {
            // nothing the primary sends may take this process down: an unexpected failure ends the replay with its reason
            log.WriteLine($"backup: refused: the replay failed: {e.GetType().Name}: {e.Message}");
            code = 2;
        }
        // a session that did not end with the replay ends now, not when the host's shutdown gives up on it
        if (_link is { } open)
        {
            _closingLink = $"its replay ended (status {code}) before the primary said goodbye";
            open.Close();
        }
        try { _file?.Dispose(); } catch (IOException) { }
        ExitCode = code;
        log.Flush();
        Lifetime?.StopApplication();
    }
}

/// <summary>The gRPC service: handshake, then batches and heartbeats in, acks out.</summary>
public sealed class ReplicationService(BackupSession session) : Protocol.Replication.ReplicationBase
{
    /// <summary>One handshake at a time (shared by every stream of this process).</summary>
    static readonly SemaphoreSlim HandshakeGate = new(1, 1);


    public override async Task Stream(IAsyncStreamReader<PrimaryMessage> requestStream, IServerStreamWriter<BackupMessage> responseStream, ServerCallContext context)
    {
        var s = session.Settings;
        var ct = context.CancellationToken;
        Task Refuse(string reason)
        {
            Console.Error.WriteLine($"backup: refused a primary ({context.Peer}): {reason}");
            s.Events.Emit(ReplicaEvent.RefusedPrimary, ("peer", context.Peer), ("reason", reason));
            return responseStream.WriteAsync(new BackupMessage { Refused = new Refused { Reason = reason } }, ct);
        }
        if (s.Tls is { } tls && tls.Verify(context.GetHttpContext().Connection.ClientCertificate) is { } untrusted)
        { await Refuse($"mutual TLS: {untrusted}"); return; }
        // Before the peer proves the secret it gets one bounded message (gRPC's size limit), a fixed time and no
        // look at this machine's files; handshakes run one at a time, so strangers cannot add their costs up.
        // (a peer waits for the one before it, which has a deadline; a retrying primary queues behind its own first try)
        if (!await HandshakeGate.WaitAsync(ReplicationProtocol.HandshakeTimeout + TimeSpan.FromSeconds(1), ct)) { await Refuse("busy: another peer is being authenticated; retry"); return; }
        Hello hello;
        LogHeader? header;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
            deadline.CancelAfter(ReplicationProtocol.HandshakeTimeout);
            try
            {
                if (!await requestStream.MoveNext(deadline.Token)) return;
                var first = requestStream.Current;
                if (first.BodyCase != PrimaryMessage.BodyOneofCase.Hello) { await Refuse("protocol error: the first message must be a hello"); return; }
                hello = first.Hello;
                if (BackupSession.CheckBeforeAuth(hello) is { } early) { await Refuse(early); return; }
                var nonce = ReplicationProtocol.Nonce();
                await responseStream.WriteAsync(new BackupMessage { Challenge = new Challenge { ServerNonce = ByteString.CopyFrom(nonce), BackupId = s.Id } }, ct);
                if (!await requestStream.MoveNext(deadline.Token) || requestStream.Current.BodyCase != PrimaryMessage.BodyOneofCase.Auth) { await Refuse("protocol error: expected auth"); return; }
                if (!ReplicationProtocol.ProofMatches(s.Secret, hello, nonce, requestStream.Current.Auth.Proof.Span))
                { await Refuse("authentication failed: the primary does not hold this backup's token"); return; }
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                await Refuse($"the handshake took longer than {ReplicationProtocol.HandshakeTimeout.TotalSeconds:F0} s");
                return;
            }
            // authenticated: now the hello may cost this replica work (program hash, root digest)
            var reason = session.Check(hello, out header);
            if (reason != null) { await Refuse(reason); return; }
            if (!session.Claim()) { await Refuse("this backup already follows a primary"); return; }
        }
        finally { HandshakeGate.Release(); }

        // The session starts with the primary's first message after the welcome, on the data link the welcome names
        // (a one-time ticket): a primary whose handshake attempt timed out on its side (a loaded machine) retries on
        // a new stream and must find this backup free, not following a stream that ended before the guest's first
        // record (which it would then take over from record 0, running the guest a second time next to the primary
        // that retried).
        var pending = session.ExpectLink(hello, header!);
        try
        {
            await responseStream.WriteAsync(new BackupMessage
            {
                Welcome = new Welcome { BackupId = s.Id, DataPort = (uint)session.DataPort, DataSocket = session.DataSocket, DataUnixOnly = s.DataLink == DataLinkKind.Unix, DataTicket = ByteString.CopyFrom(pending.Ticket), Snapshot = session.AcceptsSnapshot(hello), SnapshotFiles = session.WantsSnapshotFiles(hello), SharedStorage = s.SharedStorage, PrimarySilenceMs = (uint)s.PrimarySilenceMs },
            }, ct);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or RpcException or InvalidOperationException)
        {
            if (session.Abandon(pending)) session.Unclaim($"the connection broke before the welcome ({e.GetType().Name}: {e.Message})");
            return;
        }
        var streamEnded = WatchEnd(requestStream, ct);
        var limit = Task.Delay(TimeSpan.FromMilliseconds(Math.Max(s.TimeoutMs, ReplicationProtocol.HandshakeTimeout.TotalMilliseconds)), ct);
        var firstDone = await Task.WhenAny(pending.Taken.Task, streamEnded, limit);
        if (firstDone != pending.Taken.Task && session.Abandon(pending))
        {
            session.Unclaim(firstDone == limit && !ct.IsCancellationRequested
                ? "the primary did not open the data link in time"
                : "the primary closed the stream before opening the data link");
            return;
        }
        // the gRPC stream stays open, idle, while the data link lives; the link decides the session's end
        try { await pending.Ended.Task.WaitAsync(ct); }
        catch (OperationCanceledException) { }
    }

    /// <summary>Completes when the primary's side of the stream ends (nothing more is expected on it).</summary>
    static async Task WatchEnd(IAsyncStreamReader<PrimaryMessage> requestStream, CancellationToken ct)
    {
        try { while (await requestStream.MoveNext(ct)) { } }
        catch (Exception e) when (e is OperationCanceledException or IOException or RpcException or InvalidOperationException) { }
    }
}
