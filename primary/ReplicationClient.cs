using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Polly;
using Polly.Retry;
using Polly.Timeout;
using ReVirt.Arbiter;
using ReVirt.Log;
using ReVirt.Protocol;
using ReVirt.Replication;

namespace ReVirt.Primary;

/// <summary>Settings of `primary protect`.</summary>
public sealed class ProtectSettings
{
    public required string BackupUrl { get; init; }
    public byte[] Secret { get; init; } = [];
    public string? ArbiterPath { get; init; }
    public int HeartbeatMs { get; init; } = 100;
    public int TimeoutMs { get; init; } = 2000;
    /// <summary>The guest is slowed down (blocked at its next log record) while this many records are unacknowledged.</summary>
    public long MaxLagRecords { get; init; } = 50_000;
    public long MaxLagBytes { get; init; } = 16 << 20;
    public int ConnectAttempts { get; init; } = 20;
    public string Id { get; init; } = $"primary:{Environment.MachineName}:{Environment.ProcessId}";
    public byte[] RootDigest { get; init; } = [];
    /// <summary>Which directory of this machine the guest root is (the backup refuses a root it would share by accident).</summary>
    public RootIdentity? Root { get; init; }
    public uint ProtocolVersion { get; init; } = ReplicationProtocol.Version;
    /// <summary>Where this replica reports what happens (<c>--events</c>).</summary>
    public ReplicaEvents Events { get; init; } = ReplicaEvents.None;
    /// <summary>Mutual TLS (<c>--cert --key --ca</c>); null: cleartext with the token proof.</summary>
    public ReplicationTls? Tls { get; init; }
    /// <summary>
    /// Drills only (<c>--plant</c>, hidden): a violation the drill's checkers must report. "gate-early" releases
    /// output without waiting for the backup's acknowledgement; "ignore-arbiter" goes on unprotected even after
    /// losing the arbiter.
    /// </summary>
    public PrimaryPlant Plant { get; init; }
}

/// <summary>Violations a drill can plant in a primary (<c>primary protect --plant</c>).</summary>
public enum PrimaryPlant { None, GateEarly, IgnoreArbiter }

enum LinkState { Connecting, Protected, Unprotected, Fenced }

/// <summary>
/// The primary's end of replication: an <see cref="ILogSink"/> that the recording <see cref="LogWriter"/> appends
/// to. The handshake runs before the guest starts; then a sender task streams record frames in batches (coalescing
/// whatever accumulated while the previous batch was in flight) with heartbeats when idle, a receiver task applies
/// the backup's acks to the <see cref="OutputGate"/>, and a watchdog declares the backup lost when it has been
/// silent for the timeout. Losing the backup means asking the arbiter: won → the gate opens and the guest goes on
/// unprotected; lost → the backup is live, so this replica stops without releasing anything more.
/// </summary>
public sealed class ReplicationClient : ILogSink
{
    readonly ProtectSettings _s;
    readonly TextWriter _log;
    readonly Channel<byte[]> _frames = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    readonly ConcurrentQueue<(ulong Seq, long Cum, long Ticks)> _inflight = new();
    readonly List<double> _lagMs = new();
    readonly object _flow = new();
    readonly CancellationTokenSource _cts = new();
    byte[]? _headerSeen;
    volatile string? _tlsRefusal;
    bool _gotHeader;
    GrpcChannel? _channel;
    AsyncDuplexStreamingCall<PrimaryMessage, BackupMessage>? _call;
    Task? _sender, _receiver;
    Timer? _watchdog;
    IArbiter _arbiter = null!;
    volatile LinkState _state = LinkState.Connecting;
    long _produced, _producedBytes, _acked, _ackedBytes, _lastHeard, _throttleTicks;
    int _lost;
    volatile bool _finishing, _finalReleased;

    public OutputGate Gate { get; } = OutputGate.ToHostStdio();

    public ulong Acked => (ulong)Interlocked.Read(ref _acked);
    public long BytesSent { get; private set; }
    public long Batches { get; private set; }
    public TimeSpan Throttled => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _throttleTicks));
    public string BackupId { get; private set; } = "";

    /// <summary>The backup's lag: for each ack, how long ago the oldest record it covered was produced (ms).</summary>
    public double[] LagMs() { lock (_lagMs) return _lagMs.ToArray(); }
    public bool IsProtected => _state == LinkState.Protected;

    public ReplicationClient(ProtectSettings settings, TextWriter log)
    {
        _s = settings;
        _log = log;
        // found by the chaos drill (freeze): a primary stopped in the middle of releasing acknowledged output must
        // not go on releasing it when it wakes after the timeout — the backup may be live; the watchdog decides
        Gate.Fresh = () => _state != LinkState.Protected
            || Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard)).TotalMilliseconds <= _s.TimeoutMs;
    }

    // ------------------------------------------------------------------ handshake

    /// <summary>Connects (with retries), says hello, proves the secret and waits for Welcome.</summary>
    /// <exception cref="ReplicationRefusedException">The backup refused, or could not be reached.</exception>
    public async Task ConnectAsync(byte[] encodedHeader)
    {
        _arbiter = Arbiters.Create(_s.ArbiterPath, encodedHeader);
        var hello = new Hello
        {
            ProtocolVersion = _s.ProtocolVersion,
            LogHeader = ByteString.CopyFrom(encodedHeader),
            RootDigest = ByteString.CopyFrom(_s.RootDigest),
            ClientNonce = ByteString.CopyFrom(ReplicationProtocol.Nonce()),
            PrimaryId = _s.Id,
            Root = _s.Root,
        };
        _channel = GrpcChannel.ForAddress(_s.BackupUrl, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler
            {
                ConnectTimeout = TimeSpan.FromMilliseconds(Math.Max(500, _s.TimeoutMs)),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                KeepAlivePingDelay = TimeSpan.FromSeconds(5),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
                EnableMultipleHttp2Connections = true,
                SslOptions = _s.Tls is { } tls ? new System.Net.Security.SslClientAuthenticationOptions
                {
                    ClientCertificates = [tls.Identity],
                    RemoteCertificateValidationCallback = (_, cert, _, errors) => (_tlsRefusal = tls.VerifyServer(cert, errors)) == null,
                } : new System.Net.Security.SslClientAuthenticationOptions(),
            },
            MaxReceiveMessageSize = ReplicationProtocol.MaxBackupMessageBytes,
            MaxSendMessageSize = ReplicationProtocol.MaxMessageBytes,
        });
        var client = new Protocol.Replication.ReplicationClient(_channel);

        // Polly: retry while the backup is not there yet (connection refused → Unavailable), each attempt bounded
        // by a timeout; a refusal is final.
        var pipeline = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                // a cancelled call is the attempt timeout cancelling it (not ours: _cts is checked), so it is retried too
                ShouldHandle = new PredicateBuilder().Handle<RpcException>(e => _tlsRefusal == null && e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
                        || (e.StatusCode == StatusCode.Cancelled && !_cts.IsCancellationRequested))
                    .Handle<TimeoutRejectedException>(),
                MaxRetryAttempts = Math.Max(0, _s.ConnectAttempts - 1),
                Delay = TimeSpan.FromMilliseconds(100),
                BackoffType = DelayBackoffType.Exponential,
                MaxDelay = TimeSpan.FromSeconds(1),
                UseJitter = true,
            })
            // the first handshake of a process includes loading and compiling the gRPC stack: be generous per attempt
            // (and the backup's check of the root, which hashes it): 10 s was too short on a loaded 2-core machine
            .AddTimeout(TimeSpan.FromMilliseconds(Math.Max(30_000, _s.TimeoutMs * 3)))
            .Build();

        try
        {
            await pipeline.ExecuteAsync(async ct =>
            {
                _call?.Dispose();
                var call = client.Stream(cancellationToken: _cts.Token);
                _call = call;
                await call.RequestStream.WriteAsync(new PrimaryMessage { Hello = hello }, ct);
                var challenge = await Next(call, ct);
                if (challenge.BodyCase == BackupMessage.BodyOneofCase.Refused) throw new ReplicationRefusedException(challenge.Refused.Reason);
                if (challenge.BodyCase != BackupMessage.BodyOneofCase.Challenge) throw new ReplicationRefusedException($"protocol error: expected a challenge, got {challenge.BodyCase}");
                var proof = ReplicationProtocol.Proof(_s.Secret, hello, challenge.Challenge.ServerNonce.ToByteArray());
                await call.RequestStream.WriteAsync(new PrimaryMessage { Auth = new Auth { Proof = ByteString.CopyFrom(proof) } }, ct);
                var welcome = await Next(call, ct);
                if (welcome.BodyCase == BackupMessage.BodyOneofCase.Refused) throw new ReplicationRefusedException(welcome.Refused.Reason);
                if (welcome.BodyCase != BackupMessage.BodyOneofCase.Welcome) throw new ReplicationRefusedException($"protocol error: expected welcome, got {welcome.BodyCase}");
                BackupId = welcome.Welcome.BackupId;
            }, _cts.Token);
        }
        catch (RpcException e)
        {
            if (_tlsRefusal != null) throw new ReplicationRefusedException($"mutual TLS: {_tlsRefusal}");
            throw new ReplicationRefusedException($"cannot reach the backup at {_s.BackupUrl}: {e.Status.Detail}");
        }
        catch (TimeoutRejectedException)
        {
            throw new ReplicationRefusedException($"the backup at {_s.BackupUrl} did not answer the handshake in time");
        }
        _headerSeen = encodedHeader;
        _state = LinkState.Protected;
        ReplicationMetrics.Observe(() => Interlocked.Read(ref _produced) - Interlocked.Read(ref _acked), () => Gate.HeldBytes + Gate.SocketHeldBytes);
        if (_s.Plant == PrimaryPlant.GateEarly)
        {
            _log.WriteLine("primary: TESTING: the output gate releases without acknowledgements");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", "gate-early"));
            Gate.GoUnprotected();
        }
        Touch();
        _sender = Task.Run(SendLoop);
        _receiver = Task.Run(ReceiveLoop);
        _watchdog = new Timer(_ => Watch(), null, _s.HeartbeatMs, _s.HeartbeatMs);
        _flushTimer = new Timer(_ => Flush(), null, 2, 2);
    }

    static async Task<BackupMessage> Next(AsyncDuplexStreamingCall<PrimaryMessage, BackupMessage> call, CancellationToken ct)
    {
        if (!await call.ResponseStream.MoveNext(ct)) throw new ReplicationRefusedException("the backup closed the stream during the handshake");
        return call.ResponseStream.Current;
    }

    void Touch() => Interlocked.Exchange(ref _lastHeard, Stopwatch.GetTimestamp());

    // ------------------------------------------------------------------ ILogSink (guest thread)

    public void Append(ReadOnlySpan<byte> encoded)
    {
        if (!_gotHeader) { _gotHeader = true; return; } // the header: already sent in Hello
        ulong seq = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(encoded[RecordFrame.SequenceOffset..]);
        var st = _state;
        if (st is LinkState.Unprotected or LinkState.Fenced) return;
        var copy = encoded.ToArray();
        long cum = _producedBytes + copy.Length;
        _producedBytes = cum;
        Interlocked.Exchange(ref _produced, (long)seq);
        _inflight.Enqueue((seq, cum, Stopwatch.GetTimestamp()));
        // coalesce on the guest thread: hand frames to the sender when an output needs committing, when 64 KiB
        // have gathered, or from the 2 ms flush timer; waking the sender for every record costs the guest its core
        lock (_pending)
        {
            _pending.Write(copy);
            if ((RecordKind)copy[RecordFrame.KindOffset] == RecordKind.Output || _pending.Length >= 64 * 1024) PushPending();
        }
        // flow control: keep the backup close enough that failover time stays bounded
        if ((long)seq - Interlocked.Read(ref _acked) > _s.MaxLagRecords || cum - Interlocked.Read(ref _ackedBytes) > _s.MaxLagBytes)
        {
            long t0 = Stopwatch.GetTimestamp();
            lock (_flow)
            {
                while (_state == LinkState.Protected &&
                       ((long)seq - Interlocked.Read(ref _acked) > _s.MaxLagRecords / 2 || cum - Interlocked.Read(ref _ackedBytes) > _s.MaxLagBytes / 2))
                    Monitor.Wait(_flow, 50);
            }
            Interlocked.Add(ref _throttleTicks, Stopwatch.GetTimestamp() - t0);
        }
    }

    readonly MemoryStream _pending = new();
    Timer? _flushTimer;

    void PushPending()
    {
        if (_pending.Length == 0) return;
        _frames.Writer.TryWrite(_pending.ToArray());
        _pending.SetLength(0);
    }

    public void Flush() { lock (_pending) PushPending(); }
    public void Dispose() { }

    // ------------------------------------------------------------------ streaming

    async Task SendLoop()
    {
        var reader = _frames.Reader;
        var ct = _cts.Token;
        var buf = new MemoryStream();
        try
        {
            Task<bool>? wait = null;
            while (!ct.IsCancellationRequested)
            {
                wait ??= reader.WaitToReadAsync(ct).AsTask();
                if (!wait.IsCompleted && await Task.WhenAny(wait, Task.Delay(_s.HeartbeatMs, ct)) != wait)
                {
                    await _call!.RequestStream.WriteAsync(new PrimaryMessage
                    {
                        Heartbeat = new Heartbeat { LastSequence = (ulong)Interlocked.Read(ref _produced), Released = Mark(), SentUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() },
                    }, ct);
                    continue;
                }
                bool more = await wait;
                wait = null;
                if (!more) return;
                buf.SetLength(0);
                ulong first = 0;
                uint count = 0;
                while (buf.Length < (1 << 20) && reader.TryRead(out var f))
                {
                    if (count == 0) first = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(f.AsSpan(RecordFrame.SequenceOffset));
                    buf.Write(f);
                    for (int off = 0; off < f.Length; off += (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(off))) count++;
                }
                if (count == 0) continue;
                var msg = new PrimaryMessage
                {
                    Batch = new Batch { FirstSequence = first, Count = count, Frames = ByteString.CopyFrom(buf.GetBuffer(), 0, (int)buf.Length), Released = Mark() },
                };
                await _call!.RequestStream.WriteAsync(msg, ct);
                BytesSent += buf.Length;
                ReplicationMetrics.LogBytes.Add(buf.Length);
                Batches++;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException or IOException or InvalidOperationException)
        {
            if (!ct.IsCancellationRequested) BackupLost($"sending to the backup failed: {Short(e)}");
        }
    }

    OutputMark Mark() => new() { StdoutBytes = Gate.ReleasedStdout, StderrBytes = Gate.ReleasedStderr };

    async Task ReceiveLoop()
    {
        var ct = _cts.Token;
        try
        {
            while (await _call!.ResponseStream.MoveNext(ct))
            {
                var m = _call.ResponseStream.Current;
                // found by the chaos drill (freeze): after a SIGSTOP longer than the timeout, acks queued before the
                // freeze must not release output — the backup may already be live. Decide on the silence first.
                var silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard));
                if (_state == LinkState.Protected && silent.TotalMilliseconds > _s.TimeoutMs)
                {
                    BackupLost($"no acknowledgement or heartbeat from the backup for {silent.TotalMilliseconds:F0} ms");
                    return;
                }
                Touch();
                if (m.BodyCase == BackupMessage.BodyOneofCase.Ack) OnAck(m.Ack.HeldSequence);
                else if (m.BodyCase == BackupMessage.BodyOneofCase.Refused) { BackupLost($"the backup stopped following: {m.Refused.Reason}"); return; }
            }
            if (!ct.IsCancellationRequested) BackupLost("the backup closed the stream");
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException or IOException or InvalidOperationException)
        {
            if (!ct.IsCancellationRequested) BackupLost($"the stream from the backup broke: {Short(e)}");
        }
    }

    static string Short(Exception e) => e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : e.Message;

    void OnAck(ulong seq)
    {
        long s = (long)seq;
        long cur;
        while ((cur = Interlocked.Read(ref _acked)) < s && Interlocked.CompareExchange(ref _acked, s, cur) != cur) { }
        bool first = true;
        while (_inflight.TryPeek(out var e) && e.Seq <= seq)
        {
            _inflight.TryDequeue(out _);
            Interlocked.Exchange(ref _ackedBytes, e.Cum);
            if (first)
            {
                double ms = Stopwatch.GetElapsedTime(e.Ticks).TotalMilliseconds;
                ReplicationMetrics.AckLatency.Record(ms);
                lock (_lagMs) if (_lagMs.Count < 1_000_000) _lagMs.Add(ms);
            }
            first = false;
        }
        Gate.Ack(seq);
        lock (_flow) Monitor.PulseAll(_flow);
    }

    void Watch()
    {
        if (_state != LinkState.Protected) return;
        var silent = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeard));
        if (silent.TotalMilliseconds > _s.TimeoutMs) BackupLost($"no acknowledgement or heartbeat from the backup for {silent.TotalMilliseconds:F0} ms");
    }

    readonly ManualResetEventSlim _decided = new(false);

    /// <summary>
    /// True when this replica lost the arbiter and must stop (exit status 3). If the backup was lost, waits for the
    /// arbiter's answer, so a guest that ends at the same moment cannot make the process report success.
    /// </summary>
    public bool Fenced()
    {
        if (Volatile.Read(ref _lost) == 0) return false;
        _decided.Wait();
        return _state == LinkState.Fenced;
    }

    /// <summary>The backup is gone: win the arbiter and continue unprotected, or stop this replica.</summary>
    void BackupLost(string reason)
    {
        if (_finishing || Interlocked.Exchange(ref _lost, 1) != 0) return;
        _watchdog?.Dispose();
        _flushTimer?.Dispose();
        _cts.Cancel();
        var r = _arbiter.TryAcquire(_s.Id);
        _s.Events.Emit(ReplicaEvent.BackupLost, ("reason", reason), ("acked", Acked));
        if (_s.Plant == PrimaryPlant.IgnoreArbiter && !r.Won)
        {
            _log.WriteLine($"primary: TESTING: ignoring the arbiter held by {r.Holder}");
            _s.Events.Emit(ReplicaEvent.Planted, ("violation", "ignore-arbiter"));
            r = new ArbiterResult(true, _s.Id);
        }
        if (r.Won)
        {
            _decided.Set();
            _log.WriteLine($"primary: backup lost ({reason}); acknowledged up to record #{Acked}; won the arbiter ({_arbiter.Describe}); continuing unprotected");
            _s.Events.Emit(ReplicaEvent.Unprotected, ("arbiter", _arbiter.Describe));
            _state = LinkState.Unprotected;
            ReplicationMetrics.Failovers.Add(1);
            // a leased arbiter (etcd) can be lost later (a stall longer than its TTL): check before every release
            Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected);
            lock (_flow) Monitor.PulseAll(_flow);
        }
        else
        {
            _state = LinkState.Fenced;
            _decided.Set();
            Gate.Discard();
            _log.WriteLine(r.Error != null
                ? $"primary: backup lost ({reason}) and the arbiter ({_arbiter.Describe}) could not be asked ({r.Error}): the backup may be live; stopping this replica without releasing further output"
                : $"primary: backup lost ({reason}) but the arbiter ({_arbiter.Describe}) is held by {r.Holder}: the backup is live; stopping this replica without releasing further output");
            _s.Events.Emit(ReplicaEvent.Fenced, ("reason", r.Error != null ? $"the arbiter could not be asked: {r.Error}" : $"the arbiter is held by {r.Holder}"));
            _s.Events.Emit(ReplicaEvent.Exit, ("status", 3));
            _log.Flush();
            Environment.Exit(3);
        }
    }

    /// <summary>
    /// The guest ended and the backup holds the whole log; the gate has held what was not released when the guest
    /// ended (<see cref="OutputGate.GuestEnded"/>). A backup that loses this primary now, without a goodbye, takes
    /// that output over if it wins the arbiter, so this primary releases it only holding the arbiter: exactly one
    /// of the two emits it, whether this primary then dies (the backup wins) or was only cut off (whoever asks first
    /// wins; the other stops). False when the backup was lost meanwhile (that path decided) or the arbiter is held by
    /// the backup (then this process stops without releasing, exit status 3).
    /// </summary>
    bool ReleaseFinalOutput()
    {
        if (!Gate.HoldsOutput) return true; // nothing held: everything was released while protected
        if (Interlocked.Exchange(ref _lost, 1) != 0) return false; // a lost backup is being decided: that path releases or stops
        _finishing = true;
        var r = _arbiter.TryAcquire(_s.Id);
        if (r.Won)
        {
            _log.WriteLine($"primary: the guest ended; holding the arbiter ({_arbiter.Describe}), releasing its last output");
            _s.Events.Emit(ReplicaEvent.FinalRelease, ("arbiter", _arbiter.Describe), ("heldBytes", Gate.HeldBytes + Gate.SocketHeldBytes));
            _finalReleased = true;
            Gate.GoUnprotected(() => _arbiter.StillHolds(_s.Id), ArbiterLostWhileUnprotected);
            _decided.Set(); // Fenced(): not fenced; the state stays protected for the goodbye
            return true;
        }
        _state = LinkState.Fenced;
        _decided.Set();
        Gate.Discard();
        string why = r.Error != null ? $"the arbiter could not be asked: {r.Error}" : $"the arbiter is held by {r.Holder}";
        _log.WriteLine($"primary: the guest ended but {why}: the backup releases its last output; stopping this replica without releasing it");
        _s.Events.Emit(ReplicaEvent.Fenced, ("reason", why));
        return false;
    }

    /// <summary>Running unprotected, this primary found it no longer holds the arbiter: the backup may be live.</summary>
    void ArbiterLostWhileUnprotected()
    {
        _state = LinkState.Fenced;
        _log.WriteLine($"primary: lost the arbiter while running unprotected ({_arbiter.LossReason}); stopping this replica without releasing further output");
        _s.Events.Emit(ReplicaEvent.Fenced, ("reason", $"lost the arbiter while running unprotected: {_arbiter.LossReason}"));
        _s.Events.Emit(ReplicaEvent.Exit, ("status", 3));
        _log.Flush();
        Environment.Exit(3);
    }

    // ------------------------------------------------------------------ the end

    /// <summary>
    /// The guest ended: wait until the backup holds the whole log, release the output still held (only holding the
    /// arbiter, see <see cref="ReleaseFinalOutput"/>), then say goodbye.
    /// </summary>
    public async Task FinishAsync(ulong lastSequence, int exitStatus)
    {
        Flush();
        while (_state == LinkState.Protected && Acked < lastSequence) await Task.Delay(1);
        if (_state != LinkState.Protected) return;
        if (!ReleaseFinalOutput()) return;
        _flushTimer?.Dispose();
        Flush();
        _frames.Writer.TryComplete();
        try { if (_sender != null) await _sender; } catch { }
        if (Interlocked.CompareExchange(ref _lost, 0, 0) != 0 && !_finalReleased) return;
        _finishing = true;
        try
        {
            await _call!.RequestStream.WriteAsync(new PrimaryMessage { Goodbye = new Goodbye { LastSequence = lastSequence, ExitStatus = exitStatus } });
            await _call.RequestStream.CompleteAsync();
        }
        catch (Exception e) when (e is RpcException or IOException or InvalidOperationException or OperationCanceledException) { }
        _state = LinkState.Unprotected; // no failover from here on
        _watchdog?.Dispose();
        try { if (_receiver != null) await _receiver.WaitAsync(TimeSpan.FromSeconds(2)); } catch { }
        _cts.Cancel();
    }
}
