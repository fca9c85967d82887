using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using ReVirt.Protocol;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Bad input on the data link after a valid handshake costs the live replica nothing. A relay the test plays sits on
/// the data link between a protected primary and a real backup (<c>--backup-data</c>): it passes the opening and the
/// backup's messages whole until the guest has printed for a while, then, in place of the backup's next message,
/// sends the primary one of: an oversized frame length (2 GiB: refused before anything is read or allocated for it),
/// garbage (a frame whose body is no protobuf message), or a well-formed acknowledgement of a record the primary never
/// logged. Each time the primary reports `backup-lost` with the reason, wins the arbiter (term 1: its first) and its guest runs
/// on unprotected to its end with every line. The relay keeps the backup's side of the link open and silent, and the
/// backup's silence bound is long, so the backup never competes for the arbiter. Before 2026-12-01 the forged
/// acknowledgement was applied: it released every output held (none of which the backup held), and the backup was
/// lost only by the watchdog 2 s later, "no acknowledgement or heartbeat" (the test fails on that reason); the other
/// two were refused already (covered here as cases no test had).
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class LinkBadInputTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    const int Lines = 400;

    [Theory]
    [InlineData("oversized", "bytes (at most")]
    [InlineData("garbage", "malformed")]
    [InlineData("ack-beyond-the-log", "protocol error: the backup acknowledged record #1099511627776")]
    public void BadInputFromTheBackupAfterAValidHandshakeIsRefusedWithTheReasonAndTheGuestRunsOn(string kind, string reason)
    {
        string arbiter = Replicas.TempFile(".lock");
        // silence bounds far beyond the test: the backup behind the silent relay never declares its primary lost
        var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "120000", "--primary-silence-ms", "120000");
        using var _b = b;
        using var relay = new AckRelay((int)b.WaitForEvent(ReplicaEvent.Listening, Long).Long("dataPort")!.Value);
        using var p = Replicas.Primary("--backup", url, "--backup-data", relay.Address, "--arbiter", arbiter,
            "--", GuestEnv.Guest("counter", "musl"), Lines.ToString(), "100000");
        try
        {
            Assert.Equal("tcp", p.WaitForEvent(ReplicaEvent.Protected, Long).Str("dataLink"));
            Assert.True(p.WaitFor(() => Replicas.Lines(p.Stdout) >= 20, Long), "the guest prints:\n" + p.Stderr);
            relay.Inject(kind switch
            {
                "oversized" => BitConverter.GetBytes(int.MaxValue),
                "garbage" => Frame([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
                _ => Frame(new BackupMessage { Ack = new Ack { HeldSequence = 1UL << 40 } }.ToByteArray()),
            });
            var lost = p.WaitForEvent(ReplicaEvent.BackupLost, Long);
            output.WriteLine($"{kind}: backup-lost: {lost.Str("reason")}");
            Assert.Contains(reason, lost.Str("reason"));
            Assert.Equal(1, p.WaitForEvent(ReplicaEvent.Unprotected, Long).Long("term"));
            int at = Replicas.Lines(p.Stdout);
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.True(Replicas.Lines(p.Stdout) > at, "the guest ran on after the bad input");
            var lines = p.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(Enumerable.Range(0, Lines).Select(i => $"line {i} "), lines.Select(l => l[..(l.IndexOf(" acc") + 1)]));
            Assert.Null(b.Event(ReplicaEvent.PrimaryLost));
        }
        finally { Replicas.DeleteArbiter(arbiter); }
    }

    static byte[] Frame(byte[] body)
    {
        var f = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(f, body.Length);
        body.CopyTo(f, 4);
        return f;
    }

    /// <summary>
    /// A relay for one data link: the primary's bytes go to the backup as they come; the backup's go to the primary a
    /// whole message at a time, until <see cref="Inject"/>: then the next message is replaced by the given bytes and
    /// nothing more of the backup's reaches the primary (its side stays open, read and dropped). Threads of its own,
    /// blocking calls; everything closes with it.
    /// </summary>
    sealed class AckRelay : IDisposable
    {
        readonly Socket _listener = Replicas.LoopbackListener();
        readonly List<Socket> _sockets = [];
        readonly int _backupPort;
        volatile byte[]? _inject;

        public AckRelay(int backupDataPort)
        {
            _backupPort = backupDataPort;
            Start(Accept);
        }

        public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}";

        public void Inject(byte[] bytes) => _inject = bytes;

        static void Start(Action body) => new Thread(() => body()) { IsBackground = true, Name = "test-relay" }.Start();

        void Accept()
        {
            try
            {
                var primary = _listener.Accept();
                var backup = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                lock (_sockets) { _sockets.Add(primary); _sockets.Add(backup); }
                backup.Connect(IPAddress.Loopback, _backupPort);
                Start(() => Pump(primary, backup));
                Start(() => Messages(backup, primary));
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        }

        static void Pump(Socket from, Socket to)
        {
            var buf = new byte[64 << 10];
            try { for (int n; (n = from.Receive(buf)) > 0;) to.Send(buf, 0, n, SocketFlags.None); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        }

        void Messages(Socket from, Socket to)
        {
            var len = new byte[4];
            try
            {
                while (true)
                {
                    SameHostLinkTests.ReceiveExactly(from, len);
                    var body = new byte[BinaryPrimitives.ReadInt32LittleEndian(len)];
                    SameHostLinkTests.ReceiveExactly(from, body);
                    if (_inject is { } bytes)
                    {
                        to.Send(bytes);
                        var drop = new byte[64 << 10];
                        while (from.Receive(drop) > 0) { }
                        return;
                    }
                    to.Send([.. len, .. body]);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or EndOfStreamException) { }
        }

        public void Dispose()
        {
            _listener.Dispose();
            lock (_sockets) foreach (var s in _sockets) s.Dispose();
        }
    }
}
