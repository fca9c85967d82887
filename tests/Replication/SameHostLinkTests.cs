using System.Diagnostics;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using ReVirt.Protocol;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The same-host data link (`--data-link unix`: the log and the acks on an abstract Unix socket the backup's welcome
/// names, shared/Replication/DataLink.cs): output commit, failover and authentication hold on it as on TCP.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)] // replica pairs timing their failure detection: not next to other pairs
public class SameHostLinkTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string Kv => GuestEnv.Guest("kvserver", "musl");

    /// <summary>The primary names the transport of its data link in its `protected` event.</summary>
    static void AssertUnixLink(ReplicaProc p) =>
        Assert.Equal("unix", p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));

    /// <summary>
    /// Output commit over the same-host link, judged by the client's clock: with the backup's acknowledgements
    /// delayed 300 ms, no reply of kvserver reaches the client sooner than 300 ms after its request was sent.
    /// </summary>
    [Fact]
    public void RepliesOverTheSameHostLinkWaitForTheBackupsAcknowledgement() =>
        KvFailoverTests.AssertRepliesWaitForAcks(output, ["--data-link", "unix"], ["--data-link", "unix"], e => Assert.Equal("unix", e.Str("dataLink")));

    /// <summary>
    /// A failover over the same-host link: the primary is killed after a number of acknowledged SETs; the backup sees
    /// the link end, wins the arbiter and serves the port, and every acknowledged SET is readable from it; stdout is
    /// continuous across the takeover (KvFailoverTests' checks).
    /// </summary>
    [Fact]
    public void AFailoverOverTheSameHostLinkLosesNoAcknowledgedWrite()
    {
        var rng = new Random(777);
        string arbiter = Replicas.TempFile(".lock");
        try
        {
            int port = ReVirt.Chaos.LoopbackPorts.Pick();
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000", "--data-link", "unix");
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--data-link", "unix", "--", Kv, port.ToString());
            AssertUnixLink(p);
            Replicas.WaitUntilAccepting(p, port, Long);
            var acked = new List<int>();
            var values = new Dictionary<int, string>();
            int next = 0;
            using var client = new KvFailoverTests.KvClient(port);
            const int killAfter = 40, target = 80;
            var killer = Replicas.KillWhen(p, () => Volatile.Read(ref next), killAfter, rng);
            while (next < target)
            {
                int k = next;
                string v = $"v{k}-{rng.Next()}";
                Assert.Equal("OK", client.Ask($"SET k{k} {v}"));
                acked.Add(k);
                values[k] = v;
                Volatile.Write(ref next, k + 1);
            }
            killer.Join();
            KvFailoverTests.ReadBackAndShutDown(client, acked, values);
            int? code = b.WaitForExit(Long);
            output.WriteLine($"{client.Connections} connections; primary released {p.Stdout.Length} stdout bytes; backup:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            Assert.Null(b.Event(ReplicaEvent.Diverged));
            Assert.Contains(b.Events, e => e.Name == ReplicaEvent.TakeoverDescriptor && Regex.IsMatch(e.Str("detail")!, @"listening again on 127\.0\.0\.1:" + port));
            KvFailoverTests.AssertSetLog(p.Stdout, b.Stdout, b, acked, target);
        }
        finally { Replicas.DeleteArbiter(arbiter); }
    }

    /// <summary>
    /// The same-host socket is open to every local process, so it authenticates as the TCP port does: a stranger with a
    /// made-up ticket is refused with the reason, garbage is cut off; a backup that takes only the same-host link
    /// (--data-link unix) refuses a TCP opening with the reason, and a primary that asks for TCP only is refused with
    /// it; the real primary then replicates over the socket.
    /// </summary>
    [Fact]
    public void AStrangerOnTheSameHostSocketIsRefusedAndTheRealPrimaryGetsIn()
    {
        string tok = Replicas.TempFile(".token");
        ReplicationProtocol.WriteNewSecret(tok);
        var b = Replicas.Backup("--listen", "http://127.0.0.1:0", "--token-file", tok, "--shared-storage", "--data-link", "unix");
        using var _ = b;
        try
        {
            var listening = b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60));
            string url = listening.Str("url")!, name = listening.Str("dataSocket")!;
            Assert.False(string.IsNullOrEmpty(name));
            // a made-up ticket on the socket: a Refused naming why
            using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                s.Connect(DataLink.AbstractEndPoint(name));
                Assert.Contains("ticket", RefusalAfter(s, [.. DataLink.Magic, .. new byte[DataLink.TicketBytes + DataLink.ProofBytes]]));
            }
            // garbage instead of an opening: the connection is closed
            using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                s.Connect(DataLink.AbstractEndPoint(name));
                s.ReceiveTimeout = 30_000;
                s.Send(new byte[DataLink.OpeningBytes]);
                Assert.Equal(0, s.Receive(new byte[16]));
            }
            // the TCP port of a backup that takes only the same-host link: refused with the reason
            using (var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                s.Connect(System.Net.IPAddress.Loopback, (int)listening.Long("dataPort")!.Value);
                Assert.Contains("--data-link unix", RefusalAfter(s, [.. DataLink.Magic, .. new byte[DataLink.TicketBytes + DataLink.ProofBytes]]));
            }
            using (var tcpOnly = Replicas.Primary("--backup", url, "--token-file", tok, "--data-link", "tcp", "--", GuestEnv.Guest("counter", "musl"), "5", "1000"))
            {
                Assert.Equal(2, tcpOnly.WaitForExit(Long));
                Assert.Contains("--data-link unix", tcpOnly.WaitForEvent(ReplicaEvent.Refused, Long).Str("reason"));
                Assert.Empty(tcpOnly.Stdout);
            }
            Assert.False(b.HasExited, "a refused link cost the backup its session:\n" + b.Stderr);
            using var p = Replicas.Primary("--backup", url, "--token-file", tok, "--data-link", "auto", "--", GuestEnv.Guest("counter", "musl"), "5", "1000");
            AssertUnixLink(p);
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.NotNull(b.Event(ReplicaEvent.ReplayMatched));
        }
        finally { File.Delete(tok); }
    }

    /// <summary>Sends an opening and reads the backup's one answer, which must be a refusal: its reason.</summary>
    static string RefusalAfter(Socket s, byte[] opening)
    {
        s.ReceiveTimeout = 30_000;
        s.Send(opening);
        var len = new byte[4];
        ReceiveExactly(s, len);
        var body = new byte[BitConverter.ToInt32(len)];
        ReceiveExactly(s, body);
        var answer = BackupMessage.Parser.ParseFrom(body);
        Assert.Equal(BackupMessage.BodyOneofCase.Refused, answer.BodyCase);
        return answer.Refused.Reason;
    }

    internal static void ReceiveExactly(Socket s, byte[] buffer)
    {
        for (int got = 0; got < buffer.Length;)
        {
            int n = s.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
            if (n == 0) throw new EndOfStreamException("the backup closed the link before answering");
            got += n;
        }
    }
}
