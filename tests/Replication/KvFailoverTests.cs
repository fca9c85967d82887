using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Network failover with the kvserver guest under `primary protect` + `backup listen` on loopback: the backup that
/// takes over listens again on the guest's port, acknowledged writes survive, stdout has no gap, and replies wait
/// for the backup's acknowledgement (output commit). Also file failover with the filelog guest on separate roots.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)] // replica pairs timing their failure detection: not next to other pairs
public class KvFailoverTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string Kv => GuestEnv.Guest("kvserver", "musl");
    static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    /// <summary>A fixed port for the guest, below the ephemeral range (no outbound connection can be given it before the guest binds it).</summary>
    static int FreePort() => ReVirt.Chaos.LoopbackPorts.Pick();

    /// <summary>A kvserver connection that reconnects (with retries) whenever the server goes away. Every wait is
    /// bounded by the deadline of the request it serves (<see cref="Ask"/>).</summary>
    internal sealed class KvClient(int port) : IDisposable
    {
        TcpClient? _c;
        StreamReader? _r;
        NetworkStream? _s;
        public int Connections { get; private set; }

        void Connect(TimeSpan within)
        {
            var sw = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    var c = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true, SendTimeout = 20_000 };
                    c.Connect(IPAddress.Loopback, port);
                    _c = c; _s = c.GetStream(); _r = new StreamReader(_s, Encoding.ASCII);
                    Connections++;
                    return;
                }
                catch (SocketException) when (sw.Elapsed < within) { Thread.Sleep(20); }
            }
        }

        public void Drop() { _r?.Dispose(); _c?.Dispose(); _c = null; }

        /// <summary>One request and its reply line within <paramref name="within"/> (connecting included); null when
        /// the connection broke or the reply did not come in time (the caller retries).</summary>
        public string? TryAsk(string line, TimeSpan within)
        {
            var sw = Stopwatch.StartNew();
            try
            {
                if (_c == null) Connect(within);
                _c!.ReceiveTimeout = (int)Math.Clamp((within - sw.Elapsed).TotalMilliseconds, 1, 20_000);
                _s!.Write(Encoding.ASCII.GetBytes(line + "\n"));
                var reply = _r!.ReadLine();
                if (reply == null) Drop();
                return reply;
            }
            catch (IOException) { Drop(); return null; }
            catch (SocketException) { Drop(); return null; }
        }

        /// <summary>The reply to <paramref name="line"/>, asked again on a new connection when one breaks; every
        /// connect and read within 90 s in all.</summary>
        public string Ask(string line)
        {
            var limit = TimeSpan.FromSeconds(90);
            var sw = Stopwatch.StartNew();
            int tries = 0;
            while (sw.Elapsed < limit)
            {
                tries++;
                if (TryAsk(line, limit - sw.Elapsed) is { } r) return r;
            }
            throw new TimeoutException($"no reply to {line} within {limit.TotalSeconds:F0} s ({tries} tries, {Connections} connections)");
        }

        public void Dispose() => Drop();
    }

    /// <summary>
    /// The guest's stdout across a failover: the primary's released stdout up to the backup's resume offset, then the
    /// backup's, is a sequence of complete `set kN` lines; the part both printed is byte-identical; every SET the
    /// client saw acknowledged is in it, in order; lines repeat only for SETs the client sent again.
    /// </summary>
    internal static void AssertSetLog(byte[] p, byte[] b, ReplicaProc backup, IReadOnlyList<int> acked, int attempted)
    {
        var t = backup.Event(ReplicaEvent.TookOver);
        Assert.True(t != null && t.ULong("instruction") > 0 && t.ULong("record") > 0, "the backup names the instruction, record and stdout offset of the takeover:\n" + backup.Stderr);
        int resume = (int)t.Long("resumeStdoutAt")!.Value;
        long held = t.Long("logStdoutBytes")!.Value;
        Assert.True(resume <= p.Length, $"resume offset {resume} is past what the primary released ({p.Length}): a gap");
        Assert.True(p.Length <= held, $"the primary released {p.Length} stdout bytes but the backup held only {held}");
        int overlap = p.Length - resume;
        Assert.True(b.Length >= overlap && p.AsSpan(resume).SequenceEqual(b.AsSpan(0, overlap)), "a repeat is byte-identical");
        var all = Encoding.ASCII.GetString(p.AsSpan(0, resume)) + Encoding.ASCII.GetString(b);
        var lines = all.Split('\n');
        Assert.Equal("", lines[^1]);
        var keys = new List<int>();
        foreach (var l in lines[..^1])
        {
            var lm = Regex.Match(l, @"^set k(\d+)$");
            Assert.True(lm.Success, $"malformed stdout line '{l}' in:\n{all}");
            keys.Add(int.Parse(lm.Groups[1].Value));
        }
        // SETs are sent one at a time in key order: the log is non-decreasing, each key at most twice (sent again
        // after a failover that hid its acknowledgement), nothing skipped
        for (int i = 1; i < keys.Count; i++) Assert.True(keys[i] == keys[i - 1] || keys[i] == keys[i - 1] + 1, $"stdout jumps from k{keys[i - 1]} to k{keys[i]}:\n{all}");
        Assert.True(keys.Count == 0 || keys[0] == 0);
        Assert.True(keys.GroupBy(k => k).All(g => g.Count() <= 2), "a SET appears at most twice");
        var set = keys.ToHashSet();
        foreach (var k in acked) Assert.Contains(k, set);
        Assert.True(keys.Count == 0 || keys[^1] <= attempted - 1);
    }

    /// <summary>Every acknowledged write is readable from whoever serves the port now; then the server is shut down.</summary>
    internal static void ReadBackAndShutDown(KvClient client, IEnumerable<int> acked, IReadOnlyDictionary<int, string> values)
    {
        foreach (var k in acked) Assert.Equal("VALUE " + values[k], client.Ask($"GET k{k}"));
        Assert.Equal("BYE", client.Ask("SHUTDOWN"));
    }

    [Fact]
    public void KillingThePrimaryAtRandomMomentsLosesNoAcknowledgedWrite()
    {
        var rng = new Random(4242);
        int rounds = 0, tookOver = 0;
        var total = Stopwatch.StartNew();
        while (rounds < 4 && total.Elapsed < TimeSpan.FromMinutes(5))
        {
            rounds++;
            string arbiter = TempFile(".lock");
            int port = FreePort();
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000");
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--", Kv, port.ToString());
            Replicas.WaitUntilAccepting(p, port, Long);

            var acked = new List<int>();
            var values = new Dictionary<int, string>();
            int next = 0;
            using var client = new KvClient(port);
            int killAfter = rng.Next(5, 120);
            // a random moment: after a random number of acknowledged writes, plus a random delay
            var killer = Replicas.KillWhen(p, () => Volatile.Read(ref next), killAfter, rng);
            int target = killAfter + 60;
            while (next < target)
            {
                int k = next;
                string v = $"v{k}-{rng.Next()}";
                // a new connection every 17 requests; reads of earlier keys in between
                if (k % 17 == 16) client.Drop();
                string reply = client.Ask($"SET k{k} {v}");
                Assert.Equal("OK", reply);
                acked.Add(k);
                values[k] = v;
                Volatile.Write(ref next, k + 1);
                if (k % 5 == 4)
                {
                    int old = acked[rng.Next(acked.Count)];
                    Assert.Equal("VALUE " + values[old], client.Ask($"GET k{old}"));
                }
            }
            killer.Join();
            ReadBackAndShutDown(client, acked, values);
            int? code = b.WaitForExit(Long);
            output.WriteLine($"round {rounds}: killed after {killAfter} writes; {client.Connections} connections; primary released {p.Stdout.Length} stdout bytes; backup:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            tookOver++;
            Assert.Null(b.Event(ReplicaEvent.Diverged));
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && Regex.IsMatch(e.Str("detail")!, @"listening again on 127\.0\.0\.1:" + port));
            AssertSetLog(p.Stdout, b.Stdout, b, acked, target);
            File.Delete(arbiter);
        }
        Assert.Equal(rounds, tookOver);
    }

    [Fact]
    public void RepliesWaitForTheBackupsAcknowledgement() => AssertRepliesWaitForAcks(output, [], []);

    /// <summary>
    /// Output commit judged by the client's clock: with the backup's acknowledgements delayed 300 ms, no reply of
    /// kvserver reaches the client sooner than 300 ms after its request was sent. <paramref name="protectedAs"/> checks
    /// the primary's `protected` event (the link it took).
    /// </summary>
    internal static void AssertRepliesWaitForAcks(ITestOutputHelper output, string[] backupArgs, string[] primaryArgs, Action<ReplicaEventRecord>? protectedAs = null)
    {
        int port = FreePort();
        var (b, url) = Replicas.StartBackup(["--ack-delay-ms", "300", .. backupArgs]);
        using var _ = b;
        using var p = Replicas.Primary(["--backup", url, .. primaryArgs, "--stats", "--", Kv, port.ToString()]);
        protectedAs?.Invoke(p.WaitForEvent(ReplicaEvent.Protected, Long));
        Replicas.WaitUntilAccepting(p, port, Long);
        using var client = new KvClient(port);
        var times = new List<double>();
        int? pc, bc;
        try
        {
            for (int i = 0; i < 6; i++)
            {
                var sw = Stopwatch.StartNew();
                Assert.Equal("OK", client.Ask($"SET key{i} value{i}"));
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            Assert.Equal("BYE", client.Ask("SHUTDOWN"));
            pc = p.WaitForExit(Long);
            bc = b.WaitForExit(Long);
        }
        finally
        {
            output.WriteLine("SET round trips (ms): " + string.Join(", ", times.Select(t => t.ToString("F1"))));
            output.WriteLine(p.Stderr);
            output.WriteLine(b.Stderr);
        }
        Assert.Equal(0, pc);
        Assert.Equal(0, bc);
        // no OK reached the client sooner than the acknowledgement delay after its SET was sent
        Assert.All(times, t => Assert.True(t >= 295, $"an OK came back after {t:F1} ms, before the backup's delayed ack"));
        Assert.True(p.WaitForEvent(ReplicaEvent.Stats, Long).Long("socketSendsHeld") > 0);
        Assert.NotNull(b.Event(ReplicaEvent.ReplayMatched));
    }

    [Fact]
    public void TakeoverContinuesOpenFilesOnTheBackupsOwnRoot()
    {
        var rng = new Random(99);
        int takeovers = 0;
        for (int round = 0; round < 6 && takeovers < 2; round++)
        {
            string rootA = TempFile(""), rootB = TempFile(""), arbiter = TempFile(".lock");
            Directory.CreateDirectory(rootA); Directory.CreateDirectory(rootB);
            File.Copy(GuestEnv.Guest("filelog", "musl"), Path.Combine(rootA, "prog"));
            File.Copy(GuestEnv.Guest("filelog", "musl"), Path.Combine(rootB, "prog"));
            try
            {
                const int records = 400;
                var (b, url) = Replicas.StartBackup("--root", rootB, "--arbiter", arbiter, "--timeout-ms", "1000");
                using var _ = b;
                using var p = Replicas.Primary("--backup", url, "--root", rootA, "--arbiter", arbiter, "--", "/prog", "/data.log", records.ToString(), "20000");
                p.WaitForStdoutBytes(rng.Next(100, 2500), TimeSpan.FromSeconds(60));
                p.KillHard();
                int? code = b.WaitForExit(Long);
                output.WriteLine($"round {round}: primary printed {p.Stdout.Length} bytes; backup:\n{b.Stderr}");
                Assert.Equal(0, code);
                if (b.Event(ReplicaEvent.PrimaryFinished) != null) continue; // the kill landed after the guest finished: no takeover to check
                takeovers++;
                Assert.NotNull(b.Event(ReplicaEvent.TookOver));
                Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && Regex.IsMatch(e.Str("detail")!, @"/data\.log at offset \d+"));
                Assert.EndsWith($"verified {records} records\n", b.StdoutText);
                // the backup's own copy holds every record exactly once, in order
                var lines = File.ReadAllLines(Path.Combine(rootB, "data.log"));
                Assert.Equal(Enumerable.Range(0, records).Select(i => $"record {i}"), lines);
            }
            finally
            {
                Directory.Delete(rootA, true); Directory.Delete(rootB, true); File.Delete(arbiter);
            }
        }
        Assert.True(takeovers > 0, "no round killed the primary before its guest finished");
    }
}
