using System.Diagnostics;
using System.Globalization;
using dotnet_etcd;
using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;

namespace ReVirt.Arbiter;

/// <summary>
/// An arbiter kept in etcd (v3 API, over gRPC with the dotnet-etcd client), for a pair on separate hosts that
/// share no storage. Selected by an <c>--arbiter</c> value of the form
/// <c>etcd://HOST:PORT[,HOST:PORT...]/KEY[?ttl=SECONDS]</c> (plain HTTP/2; KEY is everything after the first
/// slash, e.g. <c>etcd://10.0.0.5:2379,10.0.0.6:2379/revirt/kvserver</c>).
/// </summary>
/// <remarks>
/// <para><b>Compare-and-set on the term.</b> <see cref="TryAcquire"/> from term T grants a lease (TTL from
/// <c>?ttl=</c>, default 10 s; etcd may round it up to its minimum) and runs one transaction: if the persistent
/// key <c>KEY/term</c> still holds T (is absent, for T = 0) put <c>KEY/term = T+1</c> and <c>KEY = owner</c>
/// attached to that lease, otherwise read both. The first replica of term T whose transaction commits wins term
/// T+1; anyone else reads the holder's id and the newest term and loses (the same owner asking again reads its own
/// id in term T+1 and still holds it). A replica of an older term can never win: the term key is never deleted.
/// While the winner's process lives a background task keeps the lease alive (a keep-alive every TTL/3).</para>
/// <para><b>Unreachable etcd.</b> Any failure to reach etcd (no endpoint answers within the call timeout, an error
/// status) makes <see cref="TryAcquire"/> return a lost result whose <see cref="ArbiterResult.Error"/> says why —
/// never a win. A replica that cannot reach its arbiter does not go live; if neither can, both stop (safety over
/// availability).</para>
/// <para><b>Lease expiry.</b> Unlike the lock file, a win is not forever: when the winner's process dies its lease
/// is no longer kept alive and etcd deletes the key once the TTL has passed. That is still safe for the pair:
/// <list type="bullet">
/// <item>A replica asks the arbiter once per term, when it has lost its peer; the loser stops for good (exit
/// status 3), and a dead winner cannot come back as a second primary — a replica of its term can no longer win, and
/// its successor's win overwrites KEY, which the old winner's next <see cref="StillHolds"/> sees.</item>
/// <item>The dangerous case is a winner that is alive but stalled (SIGSTOPped, swapped out, cut off from etcd)
/// while a replica of its term (a standby that had joined it) wins the next term: the stalled winner must not
/// release anything more when it wakes. While it has a standby its output waits for that standby's
/// acknowledgements (and stops when the link is stale), and on losing the standby it asks from its own term,
/// which is gone. Running alone, it has no peer of its term that could win, and it stops once its lease expired. So a replica that runs unprotected after winning calls
/// <see cref="StillHolds"/> before every output it releases: it answers from the last keep-alive while the lease
/// is certainly alive (the deadline is counted from when that keep-alive was <em>sent</em>, on the monotonic
/// clock, which keeps running while a process is stopped) and otherwise asks etcd whether the key still holds
/// this owner's id on this lease. A replica that has lost the key stops without releasing further output.</item>
/// </list>
/// The remaining window is a stall between that check and the write(2) that follows it, which is microseconds
/// long and not larger than the check's margin (one second, or a fifth of the TTL if that is smaller); closing it
/// entirely would need the receiver of the output to check a fencing token.</para>
/// </remarks>
public sealed class EtcdArbiter : IArbiter, IDisposable
{
    public const string Scheme = "etcd://";
    public const int DefaultTtlSeconds = 10;

    readonly EtcdClient _client;
    readonly object _lock = new();
    readonly CancellationTokenSource _cts = new();
    readonly TimeSpan _callTimeout;
    long _leaseId;            // the lease the key is attached to when this replica holds it (0: none)
    string? _owner;           // who this instance holds the key for
    long _validUntil;         // Stopwatch timestamp until which the lease is certainly alive
    volatile bool _lost;      // the lease expired or the key was seen held by someone else: final
    volatile bool _suspendKeepAlive; // test hook: behave like a stopped process
    Task? _keepAlive;

    public IReadOnlyList<string> Endpoints { get; }
    public string Key { get; }
    public int TtlSeconds { get; }
    /// <summary>The TTL etcd actually granted (it may raise a small one to its minimum); 0 until a lease is granted.</summary>
    public long GrantedTtlSeconds { get; private set; }
    public string Describe => $"etcd key {Key} at {string.Join(",", Endpoints)} (lease TTL {TtlSeconds} s)";

    public EtcdArbiter(IReadOnlyList<string> endpoints, string key, int ttlSeconds = DefaultTtlSeconds, TimeSpan? callTimeout = null)
    {
        if (endpoints.Count == 0) throw new ArgumentException("no etcd endpoint", nameof(endpoints));
        if (string.IsNullOrEmpty(key)) throw new ArgumentException("empty etcd key", nameof(key));
        if (ttlSeconds < 1) throw new ArgumentOutOfRangeException(nameof(ttlSeconds), "the lease TTL must be at least 1 second");
        Endpoints = endpoints;
        Key = key;
        TtlSeconds = ttlSeconds;
        _callTimeout = callTimeout ?? TimeSpan.FromSeconds(Math.Clamp(ttlSeconds / 3.0, 1, 5));
        _client = new EtcdClient(string.Join(",", endpoints.Select(e => "http://" + e)), configureChannelOptions: o =>
        {
            o.HttpHandler = new SocketsHttpHandler
            {
                ConnectTimeout = _callTimeout,
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                KeepAlivePingDelay = TimeSpan.FromSeconds(Math.Max(1, ttlSeconds / 3)),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(Math.Max(1, ttlSeconds / 3)),
                EnableMultipleHttp2Connections = true,
            };
        });
    }

    public static bool IsEtcdUrl(string? spec) => spec != null && spec.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses <c>etcd://HOST:PORT[,HOST:PORT...]/KEY[?ttl=SECONDS]</c>.</summary>
    /// <exception cref="FormatException">The URL is malformed; the message says how.</exception>
    public static EtcdArbiter Parse(string url)
    {
        var (endpoints, key, ttl) = ParseUrl(url);
        return new EtcdArbiter(endpoints, key, ttl);
    }

    public static (string[] Endpoints, string Key, int TtlSeconds) ParseUrl(string url)
    {
        const string form = "expected etcd://HOST:PORT[,HOST:PORT...]/KEY[?ttl=SECONDS]";
        if (!IsEtcdUrl(url)) throw new FormatException($"'{url}' is not an etcd arbiter URL ({form})");
        string rest = url[Scheme.Length..];
        int ttl = DefaultTtlSeconds;
        int q = rest.IndexOf('?');
        if (q >= 0)
        {
            foreach (var kv in rest[(q + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                var parts = kv.Split('=', 2);
                if (parts[0] == "ttl" && parts.Length == 2 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ttl) && ttl >= 1) continue;
                throw new FormatException($"'{url}': unknown or invalid parameter '{kv}' (only ttl=SECONDS, at least 1, is understood)");
            }
            rest = rest[..q];
        }
        int slash = rest.IndexOf('/');
        if (slash < 0 || slash == rest.Length - 1) throw new FormatException($"'{url}' names no key ({form})");
        string key = Uri.UnescapeDataString(rest[(slash + 1)..]);
        var endpoints = rest[..slash].Split(',', StringSplitOptions.TrimEntries);
        foreach (var e in endpoints)
        {
            if (!Uri.TryCreate("http://" + e, UriKind.Absolute, out var u) || u.IsDefaultPort || u.AbsolutePath != "/" || u.UserInfo != "")
                throw new FormatException($"'{url}': '{e}' is not HOST:PORT ({form})");
        }
        return (endpoints, key, ttl);
    }

    DateTime Deadline() => DateTime.UtcNow + _callTimeout;
    ByteString KeyBytes => ByteString.CopyFromUtf8(Key);

    /// <summary>The persistent key holding the current term (decimal; absent: term 0).</summary>
    public string TermKey => Key + "/term";
    ByteString TermKeyBytes => ByteString.CopyFromUtf8(TermKey);

    public ArbiterResult TryAcquire(string owner, long term)
    {
        lock (_lock)
        {
            long granted = 0;
            try
            {
                long sent = Stopwatch.GetTimestamp();
                var lease = _client.LeaseGrant(new LeaseGrantRequest { TTL = TtlSeconds }, deadline: Deadline());
                granted = lease.ID;
                // compare-and-set on the term: it must still be the one this replica works in
                var txn = new TxnRequest();
                txn.Compare.Add(term == 0
                    ? new Compare { Key = TermKeyBytes, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 }
                    : new Compare { Key = TermKeyBytes, Target = Compare.Types.CompareTarget.Value, Result = Compare.Types.CompareResult.Equal, Value = ByteString.CopyFromUtf8(term.ToString(CultureInfo.InvariantCulture)) });
                txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = TermKeyBytes, Value = ByteString.CopyFromUtf8((term + 1).ToString(CultureInfo.InvariantCulture)) } });
                txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = KeyBytes, Value = ByteString.CopyFromUtf8(owner), Lease = granted } });
                txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = KeyBytes } });
                txn.Failure.Add(new RequestOp { RequestRange = new RangeRequest { Key = TermKeyBytes } });
                var r = _client.Transaction(txn, deadline: Deadline());
                if (r.Succeeded)
                {
                    Hold(owner, granted, lease.TTL, sent);
                    return new ArbiterResult(true, owner, Term: term + 1);
                }
                var kvs = r.Responses.Count > 0 ? r.Responses[0].ResponseRange?.Kvs : null;
                var kv = kvs is { Count: > 0 } ? kvs[0] : null;
                var tkvs = r.Responses.Count > 1 ? r.Responses[1].ResponseRange?.Kvs : null;
                long current = tkvs is { Count: > 0 } && long.TryParse(tkvs[0].Value.ToStringUtf8(), NumberStyles.None, CultureInfo.InvariantCulture, out long t) ? t : 0;
                string holder = kv?.Value.ToStringUtf8() ?? "(nobody: the last holder's lease expired)";
                if (kv != null && holder == owner && current == term + 1)
                {
                    // our own earlier win (this process, or a retried transaction whose first answer was lost)
                    if (kv.Lease != granted) Revoke(granted);
                    var ttl = kv.Lease != 0 ? _client.LeaseTimeToLive(new LeaseTimeToLiveRequest { ID = kv.Lease }, deadline: Deadline()).TTL : TtlSeconds;
                    if (kv.Lease == 0 || ttl > 0)
                    {
                        Hold(owner, kv.Lease, ttl, sent);
                        return new ArbiterResult(true, owner, Term: current);
                    }
                    return new ArbiterResult(false, holder, "this owner's lease has just expired", current);
                }
                Revoke(granted);
                if (_owner != null) _lost = true;
                return new ArbiterResult(false, holder, Term: current);
            }
            catch (Exception e)
            {
                if (granted != 0) Revoke(granted); // best effort: it expires by itself otherwise
                return new ArbiterResult(false, "(unknown)", $"etcd at {string.Join(",", Endpoints)} could not be asked: {Explain(e)}");
            }
        }
    }

    void Hold(string owner, long leaseId, long ttl, long sentAt)
    {
        bool start = _owner == null || _leaseId != leaseId;
        _owner = owner;
        _leaseId = leaseId;
        _lost = false;
        GrantedTtlSeconds = ttl;
        Interlocked.Exchange(ref _validUntil, sentAt + (long)(ttl * Stopwatch.Frequency));
        if (start && leaseId != 0) _keepAlive = Task.Run(() => KeepAliveLoop(leaseId));
    }

    static string Explain(Exception e) => e is RpcException r ? $"{r.StatusCode}: {r.Status.Detail}" : $"{e.GetType().Name}: {e.Message}";

    void Revoke(long leaseId)
    {
        try { _client.LeaseRevoke(new LeaseRevokeRequest { ID = leaseId }, deadline: Deadline()); }
        catch (Exception) { }
    }

    /// <summary>Keeps the lease alive every TTL/3 on one keep-alive stream, re-opened if it breaks.</summary>
    async Task KeepAliveLoop(long leaseId)
    {
        var ct = _cts.Token;
        var period = TimeSpan.FromSeconds(Math.Max(0.2, GrantedTtlSeconds / 3.0));
        while (!ct.IsCancellationRequested && !_lost && _leaseId == leaseId)
        {
            try
            {
                using var call = _client.GetConnection().LeaseClient.LeaseKeepAlive(cancellationToken: ct);
                while (!ct.IsCancellationRequested && !_lost && _leaseId == leaseId)
                {
                    if (!_suspendKeepAlive)
                    {
                        long sent = Stopwatch.GetTimestamp();
                        await call.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = leaseId }, ct);
                        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                        timeout.CancelAfter(_callTimeout);
                        if (!await call.ResponseStream.MoveNext(timeout.Token)) break;
                        var resp = call.ResponseStream.Current;
                        if (resp.TTL <= 0) { _lost = true; return; } // etcd says the lease is gone
                        long until = sent + (long)(resp.TTL * Stopwatch.Frequency);
                        if (until > Interlocked.Read(ref _validUntil)) Interlocked.Exchange(ref _validUntil, until);
                    }
                    await Task.Delay(period, ct);
                }
            }
            catch (Exception) when (!ct.IsCancellationRequested)
            {
                // etcd unreachable for now: keep trying; StillHolds stops trusting the lease once its deadline passes
                try { await Task.Delay(TimeSpan.FromMilliseconds(200), ct); } catch (OperationCanceledException) { return; }
            }
            catch (Exception) { return; }
        }
    }

    /// <summary>Margin kept before the lease deadline: within it the key is checked in etcd instead.</summary>
    TimeSpan Margin => TimeSpan.FromSeconds(Math.Min(1.0, Math.Max(GrantedTtlSeconds, 1) / 5.0));

    /// <summary>
    /// Whether <paramref name="owner"/> still holds the key — checked before every output an unprotected replica
    /// releases. True from the last keep-alive while the lease is certainly alive (minus a margin); otherwise
    /// etcd is asked (the key must still hold this owner's id on this lease). False when etcd cannot be asked:
    /// a replica that cannot confirm its ownership must stop. Once false, always false.
    /// </summary>
    public bool StillHolds(string owner)
    {
        if (_lost || _owner != owner) return false;
        long now = Stopwatch.GetTimestamp();
        if (_leaseId == 0 || now + (long)(Margin.TotalSeconds * Stopwatch.Frequency) < Interlocked.Read(ref _validUntil)) return true;
        lock (_lock)
        {
            if (_lost) return false;
            try
            {
                long sent = Stopwatch.GetTimestamp();
                var r = _client.Get(new RangeRequest { Key = KeyBytes }, deadline: Deadline());
                var kv = r.Kvs.Count > 0 ? r.Kvs[0] : null;
                if (kv == null || kv.Value.ToStringUtf8() != owner || kv.Lease != _leaseId) { _lost = true; return false; }
                var ttl = _client.LeaseTimeToLive(new LeaseTimeToLiveRequest { ID = _leaseId }, deadline: Deadline()).TTL;
                if (ttl <= 0) { _lost = true; return false; }
                long until = sent + (long)(ttl * Stopwatch.Frequency);
                if (until > Interlocked.Read(ref _validUntil)) Interlocked.Exchange(ref _validUntil, until);
                return true;
            }
            catch (Exception)
            {
                // cannot confirm; not final by itself (the next check may reach etcd while the key is still ours),
                // but nothing may be released on an unconfirmed lease
                return false;
            }
        }
    }

    /// <summary>Why <see cref="StillHolds"/> said no, for the log.</summary>
    public string LossReason => _lost
        ? $"the lease on {Key} expired or the key now names another owner (this replica was stalled or cut off from etcd for longer than the {GrantedTtlSeconds} s TTL)"
        : $"etcd at {string.Join(",", Endpoints)} cannot confirm that this replica still holds {Key} and its lease deadline has passed";

    /// <summary>Test hook: stop sending keep-alives, as a SIGSTOPped process would.</summary>
    internal void SuspendKeepAlive() => _suspendKeepAlive = true;

    /// <summary>Gives the key up at once (revokes the lease, which deletes the key).</summary>
    public void Release()
    {
        lock (_lock)
        {
            if (_leaseId != 0) Revoke(_leaseId);
            _leaseId = 0;
            _owner = null;
            _lost = true;
        }
    }

    /// <summary>Stops the keep-alive; the lease then expires after its TTL (it is not revoked: see <see cref="Release"/>).</summary>
    public void Dispose()
    {
        _cts.Cancel();
        try { _keepAlive?.Wait(TimeSpan.FromSeconds(1)); } catch (AggregateException) { }
        _client.Dispose();
    }
}
