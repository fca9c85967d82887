using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Google.Protobuf;
using ReVirt.Protocol;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The data link's sends are bounded, and the primary's sending never makes one thread wait for another's send: a
/// backup that stops reading costs the live replica a named loss after the bound, not a guest thread blocked with
/// the append lock held for as long as the backup is stuck.
/// </summary>
public class DataLinkTests
{
    /// <summary>
    /// A peer that opened the link and then never reads again (a stuck backup; the kernel keeps the connection up):
    /// the sender fills both sides' buffers and its next send must end within the bound with the reason, closing the
    /// link. Before the bound, that send blocked for as long as the peer lived.
    /// </summary>
    [Fact]
    public void ASendThePeerDoesNotTakeEndsTheLinkWithinItsBound()
    {
        using var listener = Replicas.LoopbackListener();
        byte[] secret = RandomNumberGenerator.GetBytes(32), ticket = RandomNumberGenerator.GetBytes(DataLink.TicketBytes);
        Socket? peer = null;
        var backup = new Thread(() =>
        {
            peer = listener.Accept();
            ReadExactly(peer, DataLink.OpeningBytes);
            peer.Send(Frame(new BackupMessage { Ack = new Ack() })); // accepted; from here on this peer reads nothing
        }) { IsBackground = true, Name = "stuck-backup" };
        backup.Start();
        try
        {
            using var link = DataLink.Connect("127.0.0.1", ((IPEndPoint)listener.LocalEndPoint!).Port, null, secret, ticket, TimeSpan.FromSeconds(30));
            Assert.True(backup.Join(TimeSpan.FromSeconds(30)), "the peer did not accept the opening within 30 s");
            link.SendTimeoutMs = 500;
            Exception? failed = null;
            long sent = 0;
            var sender = new Thread(() =>
            {
                var batch = new PrimaryMessage { Batch = new Batch { FirstSequence = 1, Count = 1, Frames = ByteString.CopyFrom(new byte[256 << 10]) } };
                try { while (sent < 1L << 30) { link.Send(batch); sent += 256 << 10; } }
                catch (IOException e) { failed = e; }
            }) { IsBackground = true, Name = "sender" };
            sender.Start();
            Assert.True(sender.Join(TimeSpan.FromSeconds(60)), $"a send was still blocked 60 s after it started, {sent} bytes in: nothing bounds a send the peer does not take");
            var timedOut = Assert.IsType<LinkSendTimeoutException>(failed);
            Assert.Contains("within 500 ms", timedOut.Message);
            Assert.True(sent < 1L << 30, "a peer that reads nothing took a gigabyte");
            // the link is closed: a part of a message may have gone, nothing can follow it
            Assert.ThrowsAny<IOException>(() => link.Send(new PrimaryMessage { Heartbeat = new Heartbeat() }));
        }
        finally { peer?.Dispose(); }
    }

    /// <summary>A thread that offers items while another is blocked in a send returns at once; the sending thread
    /// sends them after its own, in order.</summary>
    [Fact]
    public void AnOfferNeverWaitsForAnotherThreadsSend()
    {
        var sent = new List<int>();
        using var inSend = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var sender = new OrderedSender<int>(i =>
        {
            if (i == 0) { inSend.Set(); release.Wait(TimeSpan.FromSeconds(30)); }
            lock (sent) sent.Add(i);
        });
        sender.Add(0);
        var first = new Thread(sender.Offer) { IsBackground = true };
        first.Start();
        Assert.True(inSend.Wait(TimeSpan.FromSeconds(30)), "the first send did not start");
        for (int i = 1; i <= 100; i++) sender.Add(i);
        var second = new Thread(sender.Offer) { IsBackground = true };
        second.Start();
        bool returned = second.Join(TimeSpan.FromSeconds(10));
        lock (sent) Assert.Empty(sent);
        release.Set();
        Assert.True(returned, "an offer waited for another thread's send");
        Assert.True(first.Join(TimeSpan.FromSeconds(30)), "the sending thread did not finish");
        Assert.Equal(Enumerable.Range(0, 101), sent);
    }

    /// <summary>Producers that add under one lock (as the log is appended) and offer concurrently: every item is sent
    /// exactly once and in order, and nothing is left once every offer has returned.</summary>
    [Fact]
    public void EveryItemIsSentOnceInOrderWhileManyThreadsOffer()
    {
        var sent = new List<int>();
        var sender = new OrderedSender<int>(i => { sent.Add(i); Thread.SpinWait(20); }); // one sender at a time: no lock
        object order = new();
        int next = 0;
        var producers = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (int k = 0; k < 5000; k++)
            {
                lock (order) sender.Add(next++);
                sender.Offer();
            }
        }) { IsBackground = true }).ToList();
        producers.ForEach(t => t.Start());
        Assert.All(producers, t => Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a producer did not finish in 60 s"));
        Assert.True(sender.IsEmpty, "items were left unsent after every offer returned");
        Assert.Equal(Enumerable.Range(0, 20_000), sent);
    }

    /// <summary>
    /// A thread blocked reading a same-host link sleeps until something arrives for it: the peer taking what this end
    /// sent does not wake it. A Unix stream socket's readers and writers share one wait queue, and each message the
    /// peer consumes wakes it to say there is room to write; a reader blocked in the read itself was woken (and put back
    /// to sleep) once per message this end sent — each batch woke the primary's ack thread, each ack the backup's link
    /// thread. Here the peer consumes 200 messages one at a time while the reader waits: before the reader waited in
    /// poll(2) it switched out about 200 times, now about none. ~0.5 s.
    /// </summary>
    [Fact]
    public void AReaderOfASameHostLinkIsNotWokenByThePeerTakingWhatItsEndSent()
    {
        string name = DataLink.NewSocketName();
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(DataLink.AbstractEndPoint(name));
        listener.Listen(1);
        byte[] secret = RandomNumberGenerator.GetBytes(32), ticket = RandomNumberGenerator.GetBytes(DataLink.TicketBytes);
        Socket? peer = null;
        var accept = new Thread(() =>
        {
            peer = listener.Accept();
            ReadExactly(peer, DataLink.OpeningBytes);
            peer.Send(Frame(new BackupMessage { Ack = new Ack() }));
        }) { IsBackground = true, Name = "peer" };
        accept.Start();
        using var link = DataLink.ConnectLocal(name, "localhost", null, secret, ticket, TimeSpan.FromSeconds(30));
        Assert.True(accept.Join(TimeSpan.FromSeconds(30)), "the peer did not take the opening within 30 s");
        try
        {
            long tid = 0;
            BackupMessage? got = null;
            var reader = new Thread(() =>
            {
                Volatile.Write(ref tid, ThreadPools.CurrentThreadId());
                got = link.Receive(BackupMessage.Parser, ReplicationProtocol.MaxBackupMessageBytes);
            }) { IsBackground = true, Name = "reader" };
            reader.Start();
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref tid) != 0 && Sleeping(tid), TimeSpan.FromSeconds(30)), "the reader did not block");
            long before = VoluntarySwitches(tid);
            var heartbeat = new PrimaryMessage { Heartbeat = new Heartbeat { LastSequence = 1 } };
            int size = Frame(heartbeat).Length;
            for (int i = 0; i < 200; i++)
            {
                link.Send(heartbeat);
                ReadExactly(peer!, size); // the peer takes it while the reader sleeps
                Thread.Sleep(1); // (a reader woken by it has run and slept again before the next)
            }
            long woken = VoluntarySwitches(tid) - before;
            peer!.Send(Frame(new BackupMessage { Ack = new Ack { HeldSequence = 7 } }));
            Assert.True(reader.Join(TimeSpan.FromSeconds(30)), "the reader did not get the message sent to it");
            Assert.Equal(7UL, got!.Ack.HeldSequence);
            Assert.True(woken <= 20, $"the reader was switched out {woken} times while the peer took 200 messages this end sent (it must sleep until something arrives for it)");
        }
        finally { peer?.Dispose(); }

        static bool Sleeping(long tid) => File.ReadAllText($"/proc/self/task/{tid}/stat").Split(')')[1].Trim().StartsWith('S');
        static long VoluntarySwitches(long tid) => long.Parse(File.ReadAllLines($"/proc/self/task/{tid}/status")
            .First(l => l.StartsWith("voluntary_ctxt_switches:")).Split(':')[1].Trim());
    }

    static byte[] Frame(IMessage message)
    {
        var body = message.ToByteArray();
        var frame = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(frame, body.Length);
        body.CopyTo(frame, 4);
        return frame;
    }

    static void ReadExactly(Socket s, int n)
    {
        var buf = new byte[n];
        for (int got = 0; got < n;)
        {
            int r = s.Receive(buf, got, n - got, SocketFlags.None);
            if (r == 0) throw new EndOfStreamException("the link closed");
            got += r;
        }
    }

    /// <summary>
    /// The same-host socket's name comes from the peer's Welcome: a primary connects only to a name of the data link's
    /// own form, so a Welcome naming another abstract socket on the primary's host (some other service listening
    /// there) costs that service nothing: no connection, no ticket or proof sent; the primary falls back to TCP.
    /// </summary>
    [Fact]
    public void APrimaryConnectsOnlyToASameHostSocketOfTheDataLinksForm()
    {
        string foreign = $"foreign-service-{Guid.NewGuid():N}";
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(DataLink.AbstractEndPoint(foreign));
        listener.Listen(4);
        byte[] secret = RandomNumberGenerator.GetBytes(32), ticket = RandomNumberGenerator.GetBytes(DataLink.TicketBytes);
        var e = Assert.Throws<LocalLinkUnreachableException>(() =>
            DataLink.ConnectLocal(foreign, "localhost", null, secret, ticket, TimeSpan.FromSeconds(5)));
        Assert.Contains("not a data link's", e.Message);
        Assert.False(listener.Poll(0, SelectMode.SelectRead), "the foreign socket was connected to");
        Assert.True(DataLink.IsDataSocketName(DataLink.NewSocketName()));
        foreach (string bad in (string[])["revirt-data-", "revirt-data-12-", "revirt-data-x-0123456789abcdef01234567", "revirt-data-12-0123456789ABCDEF01234567",
                     "revirt-data-12-0123456789abcdef0123456", "revirt-data-12-0123456789abcdef01234567/x", "revirt-data--0123456789abcdef01234567"])
            Assert.False(DataLink.IsDataSocketName(bad), bad);
    }
}
