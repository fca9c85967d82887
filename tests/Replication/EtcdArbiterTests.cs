using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using dotnet_etcd;
using Etcdserverpb;
using ReVirt.Arbiter;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// A real etcd (Debian's etcd-server, /usr/bin/etcd) on free loopback ports in a temporary data directory, started
/// once for the test class. A missing binary fails every test with a message naming the package.
/// </summary>
public sealed class EtcdServer : IDisposable
{
    public const string Binary = "/usr/bin/etcd";
    readonly Process _p;
    readonly string _dir;
    public int Port { get; }
    public string Endpoint => $"127.0.0.1:{Port}";

    public EtcdServer()
    {
        if (!File.Exists(Binary))
            throw new InvalidOperationException($"{Binary} is missing: install the Debian package etcd-server (apt-get install -y etcd-server; .ci/run does this) to run the etcd arbiter tests");
        _dir = Path.Combine(Path.GetTempPath(), $"revirt-etcd-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
        Port = FreePort();
        int peer = FreePort();
        var psi = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[]
        {
            "--name", "revirt-test", "--data-dir", _dir,
            "--listen-client-urls", $"http://127.0.0.1:{Port}", "--advertise-client-urls", $"http://127.0.0.1:{Port}",
            "--listen-peer-urls", $"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", $"http://127.0.0.1:{peer}",
            "--initial-cluster", $"revirt-test=http://127.0.0.1:{peer}",
        }) psi.ArgumentList.Add(a);
        _p = Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        _p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (log) log.AppendLine(e.Data); };
        _p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (log) log.AppendLine(e.Data); };
        _p.BeginOutputReadLine();
        _p.BeginErrorReadLine();
        using var client = new EtcdClient($"http://{Endpoint}");
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                client.Status(new StatusRequest(), deadline: DateTime.UtcNow.AddSeconds(1));
                client.Put("revirt/probe", "ok", deadline: DateTime.UtcNow.AddSeconds(2));
                return;
            }
            catch (Exception e) when (sw.Elapsed < TimeSpan.FromSeconds(30) && !_p.HasExited)
            {
                _ = e;
                Thread.Sleep(100);
            }
            catch (Exception e)
            {
                string text;
                lock (log) text = log.ToString();
                Dispose();
                throw new InvalidOperationException($"etcd on {Endpoint} did not answer: {e.Message}\n{text}");
            }
        }
    }

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    public string Url(string key, int? ttl = null) => $"etcd://{Endpoint}/{key}" + (ttl is { } t ? $"?ttl={t}" : "");

    public string? Get(string key)
    {
        using var client = new EtcdClient($"http://{Endpoint}");
        var r = client.Get(key, deadline: DateTime.UtcNow.AddSeconds(5));
        return r.Kvs.Count > 0 ? r.Kvs[0].Value.ToStringUtf8() : null;
    }

    public void Dispose()
    {
        try { if (!_p.HasExited) { _p.Kill(true); _p.WaitForExit(5000); } } catch (InvalidOperationException) { }
        _p.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

public class EtcdArbiterTests(EtcdServer etcd, ITestOutputHelper output) : IClassFixture<EtcdServer>
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string NewKey() => $"revirt/test-{Guid.NewGuid():N}";

    [Fact]
    public void RacingOwnersExactlyOneWinsAndKeepsIt()
    {
        string key = NewKey();
        var arbiters = Enumerable.Range(0, 16).Select(_ => EtcdArbiter.Parse(etcd.Url(key))).ToArray();
        try
        {
            var results = new ArbiterResult[arbiters.Length];
            using var start = new Barrier(arbiters.Length);
            var threads = Enumerable.Range(0, arbiters.Length).Select(i => new Thread(() =>
            {
                start.SignalAndWait();
                results[i] = arbiters[i].TryAcquire($"owner{i}", 0);
            })).ToArray();
            foreach (var t in threads) { t.IsBackground = true; t.Start(); }
            foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(60)));
            foreach (var r in results) Assert.Null(r.Error);
            var winners = results.Select((r, i) => (r, i)).Where(x => x.r.Won).ToArray();
            Assert.Single(winners);
            string winner = $"owner{winners[0].i}";
            Assert.All(results, r => Assert.Equal(winner, r.Holder));
            Assert.Equal(winner, etcd.Get(key));
            // the same owner asking again (this instance or another) still holds it; nobody else does
            Assert.True(arbiters[winners[0].i].TryAcquire(winner, 0).Won);
            using var again = EtcdArbiter.Parse(etcd.Url(key));
            Assert.True(again.TryAcquire(winner, 0).Won);
            Assert.False(again.TryAcquire("someone-else", 0).Won);
            Assert.True(arbiters[winners[0].i].StillHolds(winner));
            Assert.False(arbiters[(winners[0].i + 1) % 16].StillHolds($"owner{(winners[0].i + 1) % 16}"));
        }
        finally { foreach (var a in arbiters) { a.Release(); a.Dispose(); } }
    }

    [Fact]
    public void EachWinStartsANewTermAndAStaleReplicaNeverWinsAgain()
    {
        string key = NewKey();
        using var a = EtcdArbiter.Parse(etcd.Url(key));
        using var b = EtcdArbiter.Parse(etcd.Url(key));
        using var c = EtcdArbiter.Parse(etcd.Url(key));
        var won = a.TryAcquire("a", 0);
        Assert.True(won.Won);
        Assert.Equal(1, won.Term);
        var lost = b.TryAcquire("b", 0);
        Assert.False(lost.Won);
        Assert.Equal(("a", 1L), (lost.Holder, lost.Term));
        // b joined a in term 1 as its standby; a dies: b takes term 2 at once (no waiting for a's lease)
        var b2 = b.TryAcquire("b", 1);
        Assert.True(b2.Won);
        Assert.Equal(2, b2.Term);
        // a stalled winner that wakes up asks from its own term (it had a standby: it lost it) and finds b in term 2;
        // from then on it holds nothing
        var late = a.TryAcquire("a", 1);
        Assert.False(late.Won);
        Assert.Equal(("b", 2L), (late.Holder, late.Term));
        Assert.False(a.StillHolds("a"));
        a.Release();
        Assert.Equal("b", etcd.Get(key));
        // a replica of an older term can never win, even once the key is gone
        b.Release();
        Assert.Null(etcd.Get(key));
        var stale = c.TryAcquire("c", 1);
        Assert.False(stale.Won);
        Assert.Equal(2, stale.Term);
        Assert.False(c.TryAcquire("c", 0).Won);
        Assert.True(c.TryAcquire("c", 2).Won);
        c.Release();
    }

    [Fact]
    public void KeepAliveHoldsTheKeyPastItsTtl()
    {
        string key = NewKey();
        using var a = EtcdArbiter.Parse(etcd.Url(key, ttl: 2));
        Assert.True(a.TryAcquire("a", 0).Won);
        Thread.Sleep(TimeSpan.FromSeconds(3 * Math.Max(2, a.GrantedTtlSeconds)));
        Assert.Equal("a", etcd.Get(key));
        using var b = EtcdArbiter.Parse(etcd.Url(key, ttl: 2));
        Assert.False(b.TryAcquire("b", 0).Won);
        Assert.True(a.StillHolds("a"));
        a.Release();
    }

    [Fact]
    public void AStalledWinnersLeaseExpiresAndItNoticesBeforeReleasingOutput()
    {
        string key = NewKey();
        using var a = EtcdArbiter.Parse(etcd.Url(key, ttl: 2));
        Assert.True(a.TryAcquire("a", 0).Won);
        output.WriteLine($"granted TTL {a.GrantedTtlSeconds} s");
        Assert.True(a.StillHolds("a"));
        a.SuspendKeepAlive(); // as if SIGSTOPped
        var sw = Stopwatch.StartNew();
        while (etcd.Get(key) != null)
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), "the stalled winner's lease never expired");
            Thread.Sleep(200);
        }
        output.WriteLine($"the key went {sw.ElapsedMilliseconds} ms after a stopped keeping its lease alive");
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(1), "the lease outlived at least most of its TTL");
        // the stalled winner wakes up: it must find it lost the key before releasing anything
        Assert.False(a.StillHolds("a"));
        Assert.Contains("expired", a.LossReason);
        // its term is still the newest: the other replica of term 0 cannot win it, a replica of term 1 can
        using var b = EtcdArbiter.Parse(etcd.Url(key, ttl: 2));
        Assert.False(b.TryAcquire("b", 0).Won);
        Assert.True(b.TryAcquire("b", 1).Won);
        Assert.False(a.TryAcquire("a", 0).Won);
        b.Release();
    }

    [Fact]
    public void UnreachableEtcdNeverYieldsAWin()
    {
        int dead = EtcdServer.FreePort(); // nothing listens there
        using var a = EtcdArbiter.Parse($"etcd://127.0.0.1:{dead}/{NewKey()}?ttl=3");
        var sw = Stopwatch.StartNew();
        var r = a.TryAcquire("a", 0);
        output.WriteLine($"{sw.ElapsedMilliseconds} ms: {r.Explain}");
        Assert.False(r.Won);
        Assert.NotNull(r.Error);
        Assert.Contains("could not be asked", r.Error);
        Assert.False(a.StillHolds("a"));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), "an unreachable etcd is given up on in bounded time");
    }

    [Theory]
    [InlineData("etcd://127.0.0.1:2379/revirt/x", "127.0.0.1:2379", "revirt/x", 10)]
    [InlineData("etcd://10.0.0.5:2379,10.0.0.6:2380/a?ttl=3", "10.0.0.5:2379,10.0.0.6:2380", "a", 3)]
    [InlineData("etcd://[::1]:2379/k", "[::1]:2379", "k", 10)]
    public void UrlsAreParsed(string url, string endpoints, string key, int ttl)
    {
        var (e, k, t) = EtcdArbiter.ParseUrl(url);
        Assert.Equal(endpoints, string.Join(",", e));
        Assert.Equal(key, k);
        Assert.Equal(ttl, t);
    }

    [Theory]
    [InlineData("etcd://127.0.0.1:2379")]
    [InlineData("etcd://127.0.0.1:2379/")]
    [InlineData("etcd://127.0.0.1/k")]
    [InlineData("etcd://127.0.0.1:2379/k?ttl=0")]
    [InlineData("etcd://127.0.0.1:2379/k?color=red")]
    public void MalformedUrlsAreRefusedWithAReason(string url)
    {
        Assert.NotNull(Arbiters.Validate(url));
        Assert.Throws<FormatException>(() => EtcdArbiter.ParseUrl(url));
        Assert.Null(Arbiters.Validate("/tmp/some.lock"));
    }

    [Fact]
    public void BackupTakesOverWhenThePrimaryIsKilledWithAnEtcdArbiter()
    {
        const int lines = 300;
        string key = NewKey();
        string arbiter = etcd.Url(key);
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
        using var _ = b;
        using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--checkpoint-interval", "200000", "--",
            GuestEnv.Guest("counter", "musl"), lines.ToString(), "200000"); // computes between lines: the kill lands mid-run
        p.WaitForEvent(ReplicaEvent.Protected, Long);
        p.WaitForStdoutBytes(lines * 26 / 10, TimeSpan.FromSeconds(60));
        p.KillHard();
        int? code = b.WaitForExit(Long);
        output.WriteLine($"primary printed {p.Stdout.Length} bytes; primary:\n{p.Stderr}\nbackup:\n{b.Stderr}");
        Assert.Equal(0, code);
        Assert.NotNull(b.Event(ReplicaEvent.TookOver));
        Assert.Contains($"etcd key {key}", b.Event(ReplicaEvent.Following)!.Str("arbiter"));
        ReplicationTests.AssertContinuous(p.Stdout, b.Stdout, b, lines);
        Assert.StartsWith("backup:", etcd.Get(key)); // the backup's lease outlives it by up to the TTL
    }

    [Fact]
    public void SplitBrainWithAnEtcdArbiterLeavesExactlyOneLiveReplica()
    {
        const int lines = 400;
        string arbiter = etcd.Url(NewKey());
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "800");
        using var _ = b;
        using var link = Replicas.LinkTo(b);
        using var p = Replicas.Primary([.. link.PrimaryArgs, "--arbiter", arbiter, "--timeout-ms", "800", "--",
            GuestEnv.Guest("counter", "musl"), lines.ToString(), "200000"]); // computes between lines: the cut lands mid-run
        p.WaitForEvent(ReplicaEvent.Protected, Long);
        p.WaitForStdoutBytes(lines * 26 / 10, TimeSpan.FromSeconds(60));
        link.Cut();
        int? pc = p.WaitForExit(Long), bc = b.WaitForExit(Long);
        output.WriteLine($"primary {pc}:\n{p.Stderr}\nbackup {bc}:\n{b.Stderr}");
        Assert.True((pc == 0 && bc == 3) || (pc == 3 && bc == 0), $"exactly one side continues (primary {pc}, backup {bc})");
        if (pc == 0)
        {
            Assert.NotNull(p.Event(ReplicaEvent.Unprotected));
            ReplicationTests.AssertLines(p.StdoutText, lines);
            Assert.Empty(b.Stdout);
        }
        else
        {
            Assert.NotNull(p.Event(ReplicaEvent.Fenced));
            ReplicationTests.AssertContinuous(p.Stdout, b.Stdout, b, lines);
        }
    }

    [Fact]
    public void AMalformedEtcdArbiterUrlIsRefusedOnTheCommandLine()
    {
        using var p = Replicas.Primary("--backup", "http://127.0.0.1:1", "--arbiter", "etcd://127.0.0.1/nokey-port", "--", GuestEnv.Guest("counter", "musl"), "1", "1");
        Assert.NotEqual(0, p.WaitForExit(Long));
        Assert.Contains("--arbiter", p.Stderr);
    }
}
