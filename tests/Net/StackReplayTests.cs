using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Net;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// The stack's input crosses the boundary as NetInput records: a stack fed from a replayed log, with the same
/// socket calls after each input (what the replayed guest does), must send exactly the frames the recorded stack
/// sent and end in the same state. The oracle is the recording itself.
/// </summary>
public class StackReplayTests
{
    static LogHeader Header() => new() { ProgramHash = LogHeader.ComputeProgramHash("net"u8), CpuModel = "test", Argv = ["net"], Envp = [] };

    /// <summary>The server "guest": accepts one connection, reads it to the end, then sends <paramref name="reply"/>
    /// and closes.</summary>
    sealed class Server(NetStack stack, byte[] reply)
    {
        readonly TcpSocket _l = Listen(stack);
        TcpSocket? _s;
        int _replied;
        public readonly MemoryStream Got = new();
        public bool Eof, Done;
        static TcpSocket Listen(NetStack st) { var l = st.CreateTcp()!; Assert.Equal(0, l.Bind(0, 80)); Assert.Equal(0, l.Listen(4)); return l; }
        public void Step()
        {
            if (_s == null && _l.Accept(out var x) == 0) _s = x;
            if (_s == null || Done) return;
            var buf = new byte[8192];
            int n = 0;
            while (!Eof && (n = _s.Receive(buf)) > 0) Got.Write(buf, 0, n);
            if (!Eof && n == 0) Eof = true;
            if (!Eof) return;
            while (_replied < reply.Length && (n = _s.Send(reply.AsSpan(_replied))) > 0) _replied += n;
            if (_replied == reply.Length) { Done = true; _s.Close(); }
        }
    }

    [Fact]
    public void A_stack_fed_from_the_log_reproduces_every_frame_and_its_state() => RecordAndReplay(21, []);

    /// <summary>Both ways under loss with SACK negotiated: the recorded stack sent SACK blocks (as the receiver) and
    /// resent holes from its scoreboard (as the sender of the reply); the replay sends the same frames.</summary>
    [Fact]
    public void A_sack_run_fed_from_the_log_reproduces_every_frame_and_its_state()
    {
        var b = RecordAndReplay(22, StackLink.Payload(400_000, 3));
        Assert.True(b.SackBlocksSent > 0 && b.SackBlocksReceived > 0 && b.RetransmittedBytes > 0,
            $"SACK blocks sent {b.SackBlocksSent}, received {b.SackBlocksReceived}, bytes resent {b.RetransmittedBytes}");
    }

    /// <summary>The same with RACK-TLP and D-SACK (on by default): B's sender marked segments lost by time and the
    /// client reported duplicates; the replay sends every frame again, probes and resends at the same clock values.</summary>
    [Fact]
    public void A_rack_run_fed_from_the_log_reproduces_every_frame_and_its_state()
    {
        var b = RecordAndReplay(23, StackLink.Payload(600_000, 4));
        Assert.True(b.RackLostSegments > 0 && b.DsackBlocksReceived > 0,
            $"segments RACK marked lost {b.RackLostSegments}, D-SACK blocks taken {b.DsackBlocksReceived}, probes {b.TailLossProbes}");
    }

    /// <summary>Records stack B (a server that reads to the end, then sends <paramref name="reply"/>) behind a lossy link,
    /// replays it from the log alone, and requires the same frames and state; returns the recorded stack's counters.</summary>
    static NetCounters RecordAndReplay(int linkSeed, byte[] reply)
    {
        var ms = new MemoryStream();
        var sent = new List<byte[]>();
        var data = StackLink.Payload(100_000, 2);
        NetConfig config;
        ulong seed = (ulong)linkSeed * 2 + 2;   // StackLink's seed for B
        NetCounters counters;
        string recordedDigest;
        int syncs = 0;
        using (var w = new LogWriter(Header(), new StreamLogSink(ms, leaveOpen: true)))
        {
            var rec = new RecordingBoundary(w, ulong.MaxValue);
            Server? server = null;
            // Stack B's input goes through the recording boundary, as VirtualNic.Sync does, and the server runs after each.
            var link = new StackLink(linkSeed)
            {
                Loss = 0.05, Reorder = 0.1,
                Feed = RecordingFeed(rec, () => { syncs++; server!.Step(); }),
                Sent = (from, f) => { if (from.Config.Ip == StackLink.IpB) sent.Add(f); },
            };
            config = link.B.Config;
            server = new Server(link.B, reply);
            var c = link.A.CreateTcp()!;
            Assert.Equal(-NetErrno.EINPROGRESS, c.Connect(StackLink.IpB, 80));
            int off = 0; bool shut = false, eof = false;
            var back = new MemoryStream();
            var rbuf = new byte[65536];
            Assert.True(link.Run(() => server.Done && eof, () =>
            {
                if (c.State is TcpState.SynSent or TcpState.Closed) return;
                while (off < data.Length) { int n = c.Send(data.AsSpan(off)); if (n <= 0) break; off += n; }
                if (off == data.Length && !shut) { c.Shutdown(ShutdownHow.Write); shut = true; }
                int r;
                while ((r = c.Receive(rbuf)) > 0) back.Write(rbuf, 0, r);
                if (r == 0) eof = true;
            }));
            Assert.Equal(data, server.Got.ToArray());
            Assert.Equal(reply, back.ToArray());
            counters = link.B.Counters;
            while (link.B.TryTakeFrame(out var f)) sent.Add(f);
            recordedDigest = Convert.ToHexString(link.B.Digest());
            w.Flush();
        }
        Assert.True(syncs > 10);

        // Replay: a fresh stack with the same configuration and seed, fed only from the log.
        ms.Position = 0;
        using var reader = new LogReader(ms);
        var replay = new ReplayBoundary(reader, showOutput: false);
        var again = new NetStack(config, seed);
        var rs = new Server(again, reply);
        var resent = FeedFromLog(replay, again, rs.Step);
        Assert.Equal(data, rs.Got.ToArray());
        Assert.Equal(sent.Count, resent.Count);
        for (int i = 0; i < sent.Count; i++) Assert.Equal(sent[i], resent[i]);
        Assert.Equal(recordedDigest, Convert.ToHexString(again.Digest()));
        return counters;
    }

    /// <summary>A <see cref="StackLink.Feed"/> that hands stack B (at <see cref="StackLink.IpB"/>) its input through
    /// <paramref name="rec"/>, as VirtualNic.Sync does, and runs the guest's calls (<paramref name="step"/>) after each;
    /// stack A is fed directly.</summary>
    internal static Action<NetStack, byte[]?, long> RecordingFeed(RecordingBoundary rec, Action step) => (to, frame, now) =>
    {
        if (to.Config.Ip != StackLink.IpB) { if (frame != null) to.Input(frame, now); else to.Advance(now); return; }
        var got = rec.NetReceive(1, () => new NetReceived(now, frame == null ? [] : [frame]));
        to.Receive(got.Frames, got.ClockNs);
        step();
    };

    /// <summary>Feeds <paramref name="stack"/> every input of the log to its end, the guest's calls
    /// (<paramref name="step"/>) after each, as a replayed guest makes them; returns the frames the stack sent.</summary>
    internal static List<byte[]> FeedFromLog(ReplayBoundary replay, NetStack stack, Action step)
    {
        var sent = new List<byte[]>();
        while (true)
        {
            NetReceived got;
            try { got = replay.NetReceive(1, () => throw new InvalidOperationException("a replay never reads the wire")); }
            catch (ReplayEndOfLogException) { break; }
            stack.Receive(got.Frames, got.ClockNs);
            step();
            while (stack.TryTakeFrame(out var f)) sent.Add(f);
        }
        return sent;
    }
}
