using System.Text;
using ReVirt.Linux;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Asynchronous output commit for sockets, against real host socket pairs: the peer's end is the oracle for what
/// left the gate and when (bytes arrive only after the ack covering their send, in order; credit, errors and
/// closes behave as a kernel's send buffer does).
/// </summary>
public class SocketOutputCommitTests
{
    const int AF_UNIX = 1, SHUT_RDWR = 2, SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0x80000, MSG_DONTWAIT = 0x40;

    /// <summary>A host socketpair: end A is the guest's socket, end B the peer the test reads from.</summary>
    sealed class Pair : IDisposable
    {
        public int A, B;
        public readonly object Key = new();
        public Pair(int type)
        {
            var sv = new int[2];
            unsafe { fixed (int* p = sv) Assert.Equal(0, HostSys.Call(Nr.socketpair, AF_UNIX, type | SOCK_CLOEXEC, 0, (long)p)); }
            A = sv[0]; B = sv[1];
        }

        public SocketSend Send(string text, bool nonBlocking = false) => Send(Encoding.ASCII.GetBytes(text), nonBlocking);

        public SocketSend Send(byte[] data, bool nonBlocking = false, bool stream = true)
        {
            int fd = A;
            return new SocketSend
            {
                Socket = Key, Data = data, HostFd = fd, NonBlocking = nonBlocking, Stream = stream,
                Target = new FuncSendTarget((off, count, flags) =>
                {
                    unsafe { fixed (byte* p = data) return HostSys.Call(Nr.sendto, fd, (long)(p + off), count, 0x4000 | flags, 0, 0); }
                }),
            };
        }

        /// <summary>What the peer can read right now without waiting ("" when nothing; null at end of stream).</summary>
        public string? ReadNow()
        {
            var buf = new byte[1 << 20];
            var sb = new StringBuilder();
            while (true)
            {
                long r;
                unsafe { fixed (byte* p = buf) r = HostSys.Call(Nr.recvfrom, B, (long)p, buf.Length, MSG_DONTWAIT, 0, 0); }
                if (r == 0) return sb.Length == 0 ? null : sb.ToString();
                if (r < 0) return sb.ToString();
                sb.Append(Encoding.ASCII.GetString(buf, 0, (int)r));
            }
        }

        /// <summary>Reads until <paramref name="n"/> bytes have arrived (blocking, bounded).</summary>
        public byte[] ReadExactly(int n)
        {
            var buf = new byte[n];
            int got = 0;
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (got < n)
            {
                long r;
                unsafe { fixed (byte* p = buf) r = HostSys.Call(Nr.recvfrom, B, (long)(p + got), n - got, MSG_DONTWAIT, 0, 0); }
                if (r > 0) { got += (int)r; continue; }
                Assert.True(r == -Errno.EAGAIN, $"peer read failed: {r}");
                Assert.True(DateTime.UtcNow < deadline, $"only {got} of {n} bytes arrived");
                Thread.Sleep(2);
            }
            return buf;
        }

        /// <summary>Takes what the peer can read now into <paramref name="buf"/> (reused: allocates nothing); the byte count.</summary>
        public long Drain(byte[] buf)
        {
            long total = 0, r;
            do
            {
                unsafe { fixed (byte* p = buf) r = HostSys.Call(Nr.recvfrom, B, (long)p, buf.Length, MSG_DONTWAIT, 0, 0); }
                if (r > 0) total += r;
            } while (r > 0);
            return total;
        }

        public void CloseA() { if (A >= 0) HostSys.Call(Nr.close, A); A = -1; }
        /// <summary>The peer goes away. Shut down first: a close alone leaves the socket open while a child that
        /// another test forks at this moment still holds a copy of the descriptor (until its exec closes it).</summary>
        public void CloseB() { if (B >= 0) { HostSys.Call(Nr.shutdown, B, SHUT_RDWR); HostSys.Call(Nr.close, B); } B = -1; }
        public void Dispose() { CloseA(); CloseB(); }
    }

    static void Hold(OutputGate g, ulong seq, SocketSend s)
    {
        long n = g.AcceptSend(s);
        Assert.Equal(s.Data.Length, n);
        g.HoldSend(seq, s, (int)n);
    }

    [Fact]
    public void SendsLeaveInOrderOnlyOnceTheirRecordIsAcknowledged()
    {
        using var x = new Pair(SOCK_STREAM);
        using var y = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        Hold(g, 3, x.Send("a1 "));
        Hold(g, 4, y.Send("b1 "));
        Hold(g, 7, x.Send("a2 "));
        Hold(g, 9, y.Send("b2 "));
        Assert.Equal("", x.ReadNow());
        Assert.Equal("", y.ReadNow());
        g.Ack(4);
        Assert.Equal("a1 ", x.ReadNow());
        Assert.Equal("b1 ", y.ReadNow());
        g.Ack(8);
        Assert.Equal("a2 ", x.ReadNow());
        Assert.Equal("", y.ReadNow());
        Hold(g, 10, x.Send("a3 ")); // nothing held before it but its own record is not acknowledged
        Assert.Equal("", x.ReadNow());
        g.Ack(10);
        Assert.Equal("a3 ", x.ReadNow());
        Assert.Equal("b2 ", y.ReadNow());
        Assert.Equal(0, g.SocketHeldBytes);
    }

    /// <summary>
    /// Holding a send and releasing it on an acknowledgement allocates nothing per send in the gate (its entries are
    /// reused): gen-0 collections stop the guest and ack threads together, so a protected server's per-request
    /// garbage shows in its tail latency. The oracle is the runtime's count of bytes this thread allocated; the
    /// measured rounds stay inside the capacity the warm-up gave the gate's statistics lists.
    /// </summary>
    [Fact]
    public void HoldingAndReleasingSendsAllocatesNothingPerSend()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        var s = x.Send("r "); // one send value: its bytes and target made once
        var peer = new byte[4096];
        ulong seq = 0;
        long refused = 0, arrived = 0;
        void Round(int n)
        {
            for (int i = 0; i < n; i++)
            {
                // two replies per acknowledgement, both released by it
                for (int k = 0; k < 2; k++)
                {
                    long taken = g.AcceptSend(s);
                    if (taken != s.Data.Length) refused++;
                    g.HoldSend(++seq, s, (int)taken);
                }
                g.Ack(seq);
                arrived += x.Drain(peer); // the peer reads as it goes: the host never refuses a release for room
            }
        }
        Round(600); // warm: the gate's socket state, its spare entries, its statistics lists (1,200 holds, 600 acks)
        long before = GC.GetAllocatedBytesForCurrentThread();
        Round(400); // 800 sends more
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, refused);
        Assert.Equal(0, g.SocketHeldBytes);
        Assert.Equal(4000, arrived); // every byte of the 2,000 sends reached the peer
        Assert.True(allocated < 800 * 8, $"{allocated} bytes allocated for 800 sends held and released");
    }

    [Fact]
    public void AGateKeepsItsStatisticsWithoutAllocatingHoweverLongItRuns()
    {
        // the hold and release times of every send and ack (--stats) over a long run: counted in fixed buckets, not
        // kept as growing lists (which reallocate as they grow: on the large-object heap once a run is long)
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        var s = x.Send("r ");
        var peer = new byte[4096];
        ulong seq = 0;
        long arrived = 0;
        void Round(int n)
        {
            for (int i = 0; i < n; i++)
            {
                for (int k = 0; k < 2; k++) g.HoldSend(++seq, s, (int)g.AcceptSend(s));
                g.Ack(seq);
                arrived += x.Drain(peer);
            }
        }
        Round(600);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Round(12_000); // 24,000 sends and 12,000 acks more: lists of their times would have grown 8-fold
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(2 * 12_600 * 2, arrived);
        Assert.Equal(2 * 12_600, g.SocketHoldTimes.Count);
        Assert.Equal(12_600, g.AckReleaseTimes.Count);
        Assert.True(allocated < 1024, $"{allocated} bytes allocated for 24,000 sends held and released");
    }

    [Fact]
    public void NonBlockingSendsGetAShortCountThenEagainWhenTheCreditIsUsedUp()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { }) { SocketCredit = 1000 };
        Hold(g, 1, x.Send(new byte[1500], nonBlocking: true)); // an empty socket takes a send whole
        Assert.Equal(-Errno.EAGAIN, g.AcceptSend(x.Send(new byte[10], nonBlocking: true)));
        g.Ack(1);
        Assert.Equal(1500, x.ReadExactly(1500).Length);
        var s = x.Send(new byte[700], nonBlocking: true);
        Assert.Equal(700, g.AcceptSend(s));
        g.HoldSend(2, s, 700);
        s = x.Send(Enumerable.Repeat((byte)'z', 700).ToArray(), nonBlocking: true);
        Assert.Equal(300, g.AcceptSend(s)); // a stream takes what fits
        g.HoldSend(3, s, 300);
        Assert.Equal(-Errno.EAGAIN, g.AcceptSend(x.Send(new byte[1], nonBlocking: true)));
        g.Ack(3);
        var got = x.ReadExactly(1000);
        Assert.True(got.AsSpan(700).ToArray().All(b => b == 'z'));
        Assert.Equal("", x.ReadNow()); // exactly the accepted bytes, nothing more

        using var d = new Pair(SOCK_DGRAM);
        var dg = new OutputGate((_, _) => { }) { SocketCredit = 100 };
        var first = d.Send(new byte[60], nonBlocking: true, stream: false);
        Assert.Equal(60, dg.AcceptSend(first));
        dg.HoldSend(1, first, 60);
        Assert.Equal(-Errno.EAGAIN, dg.AcceptSend(d.Send(new byte[60], nonBlocking: true, stream: false))); // a datagram goes whole or not at all
    }

    [Fact]
    public async Task ABlockingSendWaitsForCreditUntilTheAckReleasesTheHeldBytes()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { }) { SocketCredit = 1000 };
        Hold(g, 1, x.Send(new string('a', 800)));
        var second = x.Send(new string('b', 800));
        var accept = Task.Run(() => g.AcceptSend(second));
        // it waits (a task the pool starts late must not reach the gate after the ack), and it cannot complete:
        // nothing frees credit until the ack (this holds however slow the machine is)
        Assert.True(SpinWait.SpinUntil(() => g.SendsWaitingForCredit == 1 || accept.IsCompleted, TimeSpan.FromSeconds(30)),
            "the blocking send never reached the gate");
        Assert.NotSame(accept, await Task.WhenAny(accept, Task.Delay(300)));
        Assert.Equal(1, g.SendsWaitingForCredit);
        g.Ack(1);
        Assert.Equal(800, await accept.WaitAsync(TimeSpan.FromSeconds(30)));
        g.HoldSend(2, second, 800);
        g.Ack(2);
        Assert.Equal(new string('a', 800) + new string('b', 800), Encoding.ASCII.GetString(x.ReadExactly(1600)));
        Assert.Equal(1, g.CreditWaitTimes.Count);
    }

    [Fact]
    public void HostErrorsSurfaceOnTheNextSendAndDropTheRestOfTheStream()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        Hold(g, 1, x.Send("one "));
        Hold(g, 2, x.Send("two "));
        x.CloseB(); // the peer is gone before anything was released
        g.Ack(2);
        Assert.Equal(0, g.SocketHeldBytes);
        Assert.Equal(-Errno.EPIPE, g.AcceptSend(x.Send("three ")));
        // reported once, as a kernel reports a pending error; the next send fails on its own when released
        var again = x.Send("four ");
        Assert.Equal(5, g.AcceptSend(again));
        g.HoldSend(3, again, 5);
        g.Ack(3);
        Assert.Equal(-Errno.EPIPE, g.AcceptSend(x.Send("five ")));
    }

    [Fact]
    public void ShutdownAndCloseTakeEffectAfterTheHeldBytesAreReleased()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        Hold(g, 1, x.Send("last words"));
        Assert.True(g.Holds(x.Key));
        int fd = x.A;
        // shut down, then close: see CloseB (a child forked elsewhere in this process may hold a copy of fd)
        g.HoldEnd(2, x.Key, () => { HostSys.Call(Nr.shutdown, fd, SHUT_RDWR); return HostResult.Of(HostSys.Call(Nr.close, fd)); }, last: true);
        x.A = -1; // the gate owns the host close now
        Assert.Equal("", x.ReadNow()); // neither the bytes nor the end of stream yet
        g.Ack(1);
        Assert.Equal("last words", x.ReadNow()); // the bytes, but the close is its own record
        g.Ack(2);
        Assert.Null(x.ReadNow()); // end of stream after the bytes
        Assert.False(g.Holds(x.Key));
        Assert.True(g.WaitSocketsReleased(TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void AFullHostBufferKeepsTheBytesInOrderUntilThePeerReads()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { }) { SocketCredit = 8 << 20 };
        var data = new byte[4 << 20]; // far more than a socketpair buffers
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(i * 7 + i / 4096);
        Hold(g, 1, x.Send(data[..(1 << 20)]));
        Hold(g, 2, x.Send(data[(1 << 20)..]));
        g.GoUnprotected();
        Assert.True(g.SocketHeldBytes > 0, "the host socket cannot take 4 MiB at once");
        var got = x.ReadExactly(data.Length); // reading makes room; the drain thread releases the rest
        Assert.True(got.AsSpan().SequenceEqual(data));
        Assert.True(g.WaitSocketsReleased(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public void ADiscardedGateNeverReleasesSocketBytes()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        Hold(g, 1, x.Send("held"));
        g.Discard();
        g.Ack(5);
        Assert.Equal(4, g.AcceptSend(x.Send("more")));
        g.HoldSend(6, x.Send("more"), 4);
        g.Ack(7);
        Assert.Equal("", x.ReadNow());
    }
    /// <summary>
    /// An acknowledgement's host sends run outside the gate's lock: while one is under way (held inside the host call
    /// here), the guest thread accepts and holds further sends at once, even on the socket being released, and those
    /// leave after the bytes released before them (the oracle: the peer's stream). Under the lock the guest's next send
    /// waited for every host send of the release.
    /// </summary>
    [Fact]
    public async Task TheGuestIsNotHeldUpByAnAcknowledgementsHostSends()
    {
        using var x = new Pair(SOCK_STREAM);
        using var y = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        var inHost = new ManualResetEventSlim();
        var goOn = new ManualResetEventSlim();
        Hold(g, 1, Stalled(x.Send("a1 "), inHost, goOn));
        var ack = Task.Run(() => g.Ack(1));
        Assert.True(inHost.Wait(TimeSpan.FromSeconds(30)), "the release never reached the host send");
        // the guest thread goes on while the host send is under way: another socket, and the socket being released
        var guest = Task.Run(() =>
        {
            Hold(g, 2, y.Send("b1 "));
            Hold(g, 3, x.Send("a2 "));
        });
        bool wentOn = await Task.WhenAny(guest, Task.Delay(TimeSpan.FromSeconds(5))) == guest;
        goOn.Set();
        await ack;
        await guest;
        Assert.True(wentOn, "the guest's sends waited for the acknowledgement's host send");
        Assert.Equal("a1 ", x.ReadNow());
        Assert.Equal("", y.ReadNow());
        g.Ack(3);
        Assert.Equal("a2 ", x.ReadNow());
        Assert.Equal("b1 ", y.ReadNow());
        Assert.Equal(0, g.SocketHeldBytes);
    }

    /// <summary><paramref name="send"/> whose host send signals <paramref name="inHost"/> and then waits in the host
    /// call for <paramref name="goOn"/>: an acknowledgement's release held in the middle of its host sends.</summary>
    static SocketSend Stalled(SocketSend send, ManualResetEventSlim inHost, ManualResetEventSlim goOn) => new()
    {
        Socket = send.Socket, Data = send.Data, HostFd = send.HostFd, Stream = true,
        Target = new FuncSendTarget((off, count, flags) => { inHost.Set(); Assert.True(goOn.Wait(TimeSpan.FromSeconds(30))); return send.Perform(off, count, flags); }),
    };

    /// <summary>A send acknowledged while its socket's earlier bytes are being released outside the lock leaves right
    /// after them, released by the thread that performed them (nobody else sends on that socket meanwhile).</summary>
    [Fact]
    public async Task ASendAcknowledgedDuringAReleaseOutsideTheLockFollowsItsSocketsEarlierBytes()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { });
        var inHost = new ManualResetEventSlim();
        var goOn = new ManualResetEventSlim();
        Hold(g, 1, Stalled(x.Send("a1 "), inHost, goOn));
        var ack = Task.Run(() => g.Ack(1));
        Assert.True(inHost.Wait(TimeSpan.FromSeconds(30)));
        var later = Task.Run(() =>
        {
            Hold(g, 2, x.Send("a2 "));
            g.Ack(2); // its socket is busy: left to the releasing thread
        });
        Assert.True(await Task.WhenAny(later, Task.Delay(TimeSpan.FromSeconds(5))) == later, "a hold or ack waited for the host send");
        Assert.Equal("", x.ReadNow()); // a2 did not overtake a1
        goOn.Set();
        await ack;
        Assert.Equal("a1 a2 ", x.ReadNow());
        Assert.Equal(0, g.SocketHeldBytes);
    }

    /// <summary>
    /// One acknowledgement that releases replies on several sockets makes their host sends in the order the sends were
    /// logged (the oldest reply first), whatever order the gate keeps its sockets in: the oracle is the log order the
    /// test assigns, the observed order is the order of the host send calls. Sockets that emptied and hold again are
    /// what reorders a set, so each round holds them in another order.
    /// </summary>
    [Fact]
    public void AnAcknowledgementSendsItsSocketsRepliesInTheOrderTheyWereLogged()
    {
        var pairs = Enumerable.Range(0, 6).Select(_ => new Pair(SOCK_STREAM)).ToArray();
        try
        {
            var g = new OutputGate((_, _) => { });
            var sent = new List<int>();
            ulong seq = 0;
            int[][] rounds = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 3, 1, 4], [1, 0, 3, 2, 5, 4], [4, 2, 0, 5, 3, 1]];
            foreach (var order in rounds)
            {
                sent.Clear();
                foreach (int i in order)
                {
                    var s = pairs[i].Send($"r{i} ");
                    int who = i;
                    Hold(g, ++seq, new SocketSend
                    {
                        Socket = s.Socket, Data = s.Data, HostFd = s.HostFd, Stream = true,
                        Target = new FuncSendTarget((off, count, flags) => { lock (sent) sent.Add(who); return s.Perform(off, count, flags); }),
                    });
                }
                g.Ack(seq);
                Assert.Equal(order, sent);
                foreach (int i in order) Assert.Equal($"r{i} ", pairs[i].ReadNow());
            }
            Assert.Equal(0, g.SocketHeldBytes);
        }
        finally { foreach (var p in pairs) p.Dispose(); }
    }

    /// <summary>
    /// A blocking send that does not fit its socket's credit has what it waits for shipped first, outside the gate's
    /// lock (the ship callback may need threads that take the lock: here the acknowledgement it provokes, which frees
    /// the credit so the send is then taken without waiting); a send that fits ships nothing.
    /// </summary>
    [Fact]
    public void ABlockingSendThatMustWaitShipsFirstOutsideTheLockAndASendThatFitsDoesNot()
    {
        using var x = new Pair(SOCK_STREAM);
        var g = new OutputGate((_, _) => { }) { SocketCredit = 1000 };
        int ships = 0;
        bool ackedMeanwhile = false;
        void Ship()
        {
            ships++;
            // the backup's acknowledgement arrives on its own thread while the guest thread is in the callback
            var acker = new Thread(() => g.Ack(1)) { IsBackground = true };
            acker.Start();
            ackedMeanwhile = acker.Join(TimeSpan.FromSeconds(30));
        }
        var first = x.Send(new string('a', 800));
        Assert.Equal(800, g.AcceptSend(first, Ship));
        Assert.Equal(0, ships); // an empty socket takes it: nothing to ship for it
        g.HoldSend(1, first, 800);
        var second = x.Send(new string('b', 800));
        Assert.Equal(800, g.AcceptSend(second, Ship));
        Assert.Equal(1, ships);
        Assert.True(ackedMeanwhile, "the acknowledgement could not take the gate's lock while the ship callback ran");
        Assert.Equal(0, g.CreditWaitTimes.Count); // the credit was free once the callback returned: no wait
        g.HoldSend(2, second, 800);
        var third = x.Send(new string('c', 100));
        Assert.Equal(100, g.AcceptSend(third, Ship)); // fits the credit next to 800 held
        Assert.Equal(1, ships);
        g.HoldSend(3, third, 100);
        g.Ack(3);
        Assert.Equal(new string('a', 800) + new string('b', 800) + new string('c', 100), Encoding.ASCII.GetString(x.ReadExactly(1700)));
    }
}
