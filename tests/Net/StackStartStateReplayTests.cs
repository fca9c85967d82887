using System.Security.Cryptography;
using System.Text;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Net;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// A log's start state names the in-VM stack's behaviours by identity words ("net=A.B.C.D/N MAC undo twsyn batch"); a log
/// written by a build before a word existed lacks it, and its replay must build the stack of that build's day through
/// the same path a replay takes (<see cref="Recording.OptionsFrom"/>), behave by that day's rules and digest its state
/// in that day's layout, else the replay diverges from its recording. The oracles are written out here: the
/// identities past builds wrote and what their stacks did, the old rule for a SYN that meets TIME-WAIT (an ACK of the
/// old connection, RFC 793 §3.9), the old order of a batch's frames and timers (the timers after each frame) and the
/// state layouts before `twsyn` (without its setting and its counter) and before `batch` (without its setting).
/// </summary>
public class StackStartStateReplayTests
{
    const string Address = "10.0.0.2/24 02:52:56:00:00:02";

    /// <summary>Every identity a build wrote, oldest first, with the stack it stood for.</summary>
    public static TheoryData<string, bool, bool, bool, bool, bool, bool> Generations => new()
    {
        { Address, true, false, false, false, false, false },                     // before D-SACK undo: RACK on, nothing else
        { Address + " norack", false, false, false, false, false, false },        // the same, recorded with --no-rack
        { Address + " undo", true, true, false, false, false, false },            // D-SACK undo and the windowed minimum RTT (before twsyn)
        { Address + " norack undo", false, true, false, false, false, false },
        { Address + " undo twsyn", true, true, true, false, false, false },       // a SYN may reopen a connection in TIME-WAIT (before batch)
        { Address + " undo twsyn batch", true, true, true, true, false, false },  // a batch's frames before its timers (before tkprobe)
        { Address + " undo twsyn batch tkprobe", true, true, true, true, true, false },   // a probe after a takeover's repair (before lossrepair)
        { Address + " undo twsyn batch tkprobe lossrepair", true, true, true, true, true, true },   // loss repair without long stalls (today's)
    };

    static LogHeader Header(string identity) => new()
    {
        ProgramHash = LogHeader.ComputeProgramHash("net"u8), CpuModel = "test", RootDirectory = "/", Argv = ["net"], Envp = [],
        StartState = Encoding.UTF8.GetBytes("cwd=/\nnet=" + identity),
    };

    /// <summary>The stack configuration a replay of a log with this header builds.</summary>
    static NetConfig ReplayConfig(LogHeader h) => Recording.OptionsFrom(h, "/", "tap1").Net!.StackConfig() with { Mac = StackLink.MacB, Ip = StackLink.IpB };

    [Theory]
    [MemberData(nameof(Generations))]
    public void A_log_of_every_past_identity_builds_the_stack_of_its_day(string identity, bool rack, bool undo, bool timeWaitSyn, bool batch, bool takeoverProbe, bool lossRepair)
    {
        var c = ReplayConfig(Header(identity));
        Assert.Equal((rack, undo, undo, timeWaitSyn, batch, takeoverProbe, lossRepair),
            (c.Rack, c.DsackUndo, c.WindowedMinRtt, c.TimeWaitSyn, c.BatchInput, c.TakeoverProbe, c.LossRepair));
    }

    [Fact]
    public void A_log_naming_a_behaviour_this_build_does_not_know_is_refused()
    {
        var e = Assert.Throws<LogFormatException>(() => Recording.OptionsFrom(Header(Address + " undo twsyn batch tkprobe lossrepair later"), "/", "tap1"));
        Assert.Contains("does not know", e.Message);
    }

    /// <summary>
    /// A log recorded with the start state of the build before `twsyn` (identity "... undo"): the guest's server
    /// closes first, and the client connects again from the same port while the server's side is in TIME-WAIT. That
    /// day's stack answered the SYN with an ACK of the old connection and accepted nothing; the replay, whose stack
    /// comes from the log's header, sends every frame the recording sent and ends with the recording's digest, which
    /// is the state in that day's layout. The same run from a log of a later identity reopens the connection (the
    /// scenario does tell the rules apart) and digests its own day's layout.
    /// </summary>
    [Theory]
    [InlineData(Address + " undo", false)]
    [InlineData(Address + " undo twsyn", true)]
    [InlineData(Address + " undo twsyn batch", true)]
    public void A_log_recorded_before_time_wait_reopening_replays_by_the_rules_of_its_day(string identity, bool reopens)
    {
        var header = Header(identity);
        var rec = Record(header);
        Assert.Equal(reopens ? 2 : 1, rec.Accepted);
        Assert.Equal(reopens ? 1 : 0, rec.Counters.TimeWaitReopens);
        if (!reopens)
            Assert.Contains(rec.Frames.Skip(rec.SecondSynAt), f => IsAckOnly(f, rec.OldRcvNxt));   // the SYN got the old connection's ACK

        var (frames, stack) = Replay(rec.Log, rec.Seed, s => new ClosingServer(s).Step);
        AssertReplayed(rec.Frames, rec.Digest, frames, stack);
    }

    /// <summary>The replay sent every frame the recording sent and ends with its digest, which is the state in the
    /// layout of the log's day: today's bytes without those of the words the log's identity lacks.</summary>
    static void AssertReplayed(List<byte[]> recorded, string digest, List<byte[]> frames, NetStack stack)
    {
        Assert.Equal(recorded.Count, frames.Count);
        for (int i = 0; i < frames.Count; i++) Assert.Equal(recorded[i], frames[i]);
        Assert.Equal(digest, Convert.ToHexString(stack.Digest()));
        var full = State(stack);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(DayLayout(full, stack.Config))), digest);
        if (!stack.Config.BatchInput) Assert.NotEqual(Convert.ToHexString(SHA256.HashData(full)), digest);
    }

    /// <summary>
    /// A log recorded with the start state of the build before `batch` (identity "... undo twsyn"): the guest's server
    /// sends a byte on each of two connections; the client's two ACKs reach the interface while the guest is busy and
    /// are read in one batch after both retransmission timers are due. That day's stack ran the timers after the first
    /// frame, so the second connection timed out although its ACK was in the batch (a go-back-N resend and a backed-off
    /// RTO); the replay, whose stack comes from the log's header, sends that retransmission again, frame for frame, and
    /// ends with the recording's digest. Today's stack (identity "... batch") takes both ACKs first: nothing is resent,
    /// the RTO is not backed off.
    /// </summary>
    [Theory]
    [InlineData(Address + " undo twsyn", 1)]
    [InlineData(Address + " undo twsyn batch", 0)]
    public void A_batch_holding_the_ack_of_a_due_retransmission_times_out_only_in_a_log_of_the_old_rule(string identity, int timeouts)
    {
        var header = Header(identity);
        var ms = new MemoryStream();
        var sent = new List<byte[]>();
        const int LinkSeed = 43;
        ulong seed = LinkSeed * 2 + 2;   // StackLink's seed for B
        List<byte[]>? held = null;       // frames for B that reached its device while its guest was busy
        TwoByteServer server = null!;
        NetCounters counters;
        string digest;
        using (var w = new LogWriter(header, new StreamLogSink(ms, leaveOpen: true)))
        {
            var rec = new RecordingBoundary(w, ulong.MaxValue);
            var feed = StackReplayTests.RecordingFeed(rec, () => server.Step());
            var link = new StackLink(LinkSeed, b: ReplayConfig(header))
            {
                // while frames are held, B's guest does not synchronise: nothing reaches its stack, no timer runs
                Feed = (to, frame, now) =>
                {
                    if (held == null || to.Config.Ip != StackLink.IpB) feed(to, frame, now);
                    else if (frame != null) held.Add(frame);
                },
                Sent = (from, f) => { if (from.Config.Ip == StackLink.IpB) sent.Add(f); },
            };
            server = new TwoByteServer(link.B, () => held = []);
            var clients = new[] { link.A.CreateTcp()!, link.A.CreateTcp()! };
            for (int i = 0; i < 2; i++) Assert.Equal(-NetErrno.EINPROGRESS, clients[i].Connect(StackLink.IpB, (ushort)(7000 + i)));
            var buf = new byte[16];
            // until both clients have their byte and have acknowledged it (their ACKs wait in held)
            Assert.True(link.Run(() => held is { Count: >= 2 } && clients.All(c => c.RcvNxt == c.Irs + 2),
                () => { foreach (var c in clients) c.Receive(buf); }));
            var second = server.Conns[1];
            Assert.True(server.Conns[0].RtxDeadline <= second.RtxDeadline);
            long rtoBefore = second.Rto;
            int sentBeforeBatch = sent.Count;
            // the guest comes back after both timers fell due and reads what its device queued, in one batch
            long batchAt = second.RtxDeadline + 1_000_000;
            var batch = held!;
            held = null;
            var got = rec.NetReceive(1, () => new NetReceived(batchAt, batch));
            link.B.Receive(got.Frames, got.ClockNs);
            server.Step();
            while (link.B.TryTakeFrame(out var f)) sent.Add(f);
            Assert.Equal(timeouts, link.B.Counters.RetransmitTimeouts);
            Assert.Equal(timeouts, sent.Count - sentBeforeBatch);                    // the resend is the only frame
            // backed off by the time-out (Karn: the ACK then gives no sample); else the late ACK's RTT sample sets it
            if (timeouts == 1) Assert.Equal(2 * rtoBefore, second.Rto);
            else Assert.InRange(second.Rto, rtoBefore, 2 * rtoBefore - 1);
            Assert.Equal(second.SndMax, second.SndUna);                              // the ACK was taken either way
            counters = link.B.Counters;
            digest = Convert.ToHexString(link.B.Digest());
            w.Flush();
        }
        Assert.Equal(timeouts, counters.Retransmits);
        var (frames, stack) = Replay(ms.ToArray(), seed, s => new TwoByteServer(s, () => { }).Step);
        AssertReplayed(sent, digest, frames, stack);
        Assert.Equal(timeouts, stack.Counters.RetransmitTimeouts);
    }

    /// <summary>The guest of the batch case: accepts on ports 7000 and 7001 and, once it holds both connections, sends
    /// one byte on each (first on 7000's), once; <c>sent</c> is told when it has.</summary>
    sealed class TwoByteServer
    {
        readonly TcpSocket[] _listeners;
        readonly Action _sent;
        public readonly List<TcpSocket> Conns = [];

        public TwoByteServer(NetStack stack, Action sent)
        {
            _sent = sent;
            _listeners = [stack.CreateTcp()!, stack.CreateTcp()!];
            for (int i = 0; i < 2; i++)
            {
                Assert.Equal(0, _listeners[i].Bind(0, (ushort)(7000 + i)));
                Assert.Equal(0, _listeners[i].Listen(4));
            }
        }

        public void Step()
        {
            if (Conns.Count == 2) return;
            while (Conns.Count < 2 && _listeners[Conns.Count].Accept(out var s) == 0 && s != null) Conns.Add(s);
            if (Conns.Count < 2) return;
            foreach (var c in Conns) Assert.Equal(1, c.Send("x"u8));
            _sent();
        }
    }

    /// <summary>The guest: a server on port 7000 that says BYE and closes every connection it accepts (it closes first).
    /// It runs after every input, the same calls in the recording and in the replay.</summary>
    sealed class ClosingServer
    {
        readonly TcpSocket _listener;
        public int Accepted;
        public TcpSocket? First;

        public ClosingServer(NetStack stack)
        {
            _listener = stack.CreateTcp()!;
            Assert.Equal(0, _listener.Bind(0, 7000));
            Assert.Equal(0, _listener.Listen(16));
        }

        public void Step()
        {
            while (_listener.Accept(out var s) == 0 && s != null)
            {
                Accepted++;
                First ??= s;
                Assert.Equal(3, s.Send("BYE"u8));
                s.Close();
            }
        }
    }

    /// <summary>A recording: the log, B's seed, every frame B sent (from <c>SecondSynAt</c> on, after the client's
    /// second SYN), B's digest and counters, and what B's first connection had received (its RCV.NXT in TIME-WAIT).</summary>
    sealed record Recorded(byte[] Log, ulong Seed, List<byte[]> Frames, int SecondSynAt, string Digest, int Accepted, NetCounters Counters, uint OldRcvNxt);

    /// <summary>Records stack B (the guest's, built from <paramref name="header"/> as the recorder did) serving a
    /// client that reconnects from its port while B's first connection is in TIME-WAIT; B's input crosses a recording
    /// boundary as VirtualNic.Sync does.</summary>
    static Recorded Record(LogHeader header)
    {
        const ushort ClientPort = 40000;
        var ms = new MemoryStream();
        var sent = new List<byte[]>();
        const int LinkSeed = 41;
        ulong seed = LinkSeed * 2 + 2;   // StackLink's seed for B
        ClosingServer server = null!;
        using var w = new LogWriter(header, new StreamLogSink(ms, leaveOpen: true));
        var rec = new RecordingBoundary(w, ulong.MaxValue);
        var link = new StackLink(LinkSeed, b: ReplayConfig(header))
        {
            Feed = StackReplayTests.RecordingFeed(rec, () => server.Step()),
            Sent = (from, f) => { if (from.Config.Ip == StackLink.IpB) sent.Add(f); },
        };
        server = new ClosingServer(link.B);
        var buf = new byte[16];
        var c1 = link.A.CreateTcp()!;
        Assert.Equal(0, c1.Bind(0, ClientPort));
        Assert.Equal(-NetErrno.EINPROGRESS, c1.Connect(StackLink.IpB, 7000));
        Assert.True(link.Run(() => c1.State == TcpState.CloseWait, () => c1.Receive(buf)));
        c1.Close();
        Assert.True(link.Run(() => server.First!.State == TcpState.TimeWait && c1.State == TcpState.Closed, () => { }));
        uint oldRcvNxt = server.First!.RcvNxt;
        link.Idle(1_000_000_000);
        int secondSynAt = sent.Count;
        var c2 = link.A.CreateTcp()!;
        Assert.Equal(0, c2.Bind(0, ClientPort));
        Assert.Equal(-NetErrno.EINPROGRESS, c2.Connect(StackLink.IpB, 7000));
        link.Run(() => server.Accepted == 2 && c2.State == TcpState.CloseWait, () => c2.Receive(buf), link.Now + 3_000_000_000);
        while (link.B.TryTakeFrame(out var f)) sent.Add(f);
        w.Flush();
        return new Recorded(ms.ToArray(), seed, sent, secondSynAt, Convert.ToHexString(link.B.Digest()), server.Accepted, link.B.Counters, oldRcvNxt);
    }

    /// <summary>A fresh stack built from the log's header (as a replay builds it) and the recorded seed, fed only from
    /// the log, with the guest's calls (<paramref name="guest"/>'s step) after each input; its frames and the stack.</summary>
    static (List<byte[]> Frames, NetStack Stack) Replay(byte[] log, ulong seed, Func<NetStack, Action> guest)
    {
        using var reader = new LogReader(new MemoryStream(log));
        var replay = new ReplayBoundary(reader, showOutput: false);
        var stack = new NetStack(ReplayConfig(reader.Header), seed);
        return (StackReplayTests.FeedFromLog(replay, stack, guest(stack)), stack);
    }

    static byte[] State(NetStack s)
    {
        using var m = new MemoryStream();
        using (var w = new BinaryWriter(m, Encoding.UTF8, leaveOpen: true)) s.WriteState(w);
        return m.ToArray();
    }

    // Today's state layout (NetStack.WriteState) up to the fields `twsyn`, `batch`, `tkprobe` and `lossrepair` added: the configuration
    // (MAC 8, address 4, prefix 4, gateway 4, eleven int bounds 44, five bools, the minimum-RTT window 8), then the
    // TimeWaitSyn byte, the BatchInput byte and the TakeoverProbe byte; the stack (clock 8, generator 8, ISN key 8, next
    // socket id 8, next ephemeral port 2, IP id 2, rate window 8 and count 4), then the counters: 35 longs before
    // TimeWaitReopens.
    const int TimeWaitSynSettingAt = 8 + 4 + 4 + 4 + 11 * 4 + 5 + 8;
    const int BatchSettingAt = TimeWaitSynSettingAt + 1;
    const int TakeoverProbeSettingAt = BatchSettingAt + 1;
    const int LossRepairSettingAt = TakeoverProbeSettingAt + 1;
    const int TimeWaitReopensAt = LossRepairSettingAt + 1 + 8 + 8 + 8 + 8 + 2 + 2 + 8 + 4 + 35 * 8;

    /// <summary>The state in the layout of the day of a stack configured as <paramref name="c"/>: today's bytes without
    /// `tkprobe`'s setting when it lacks tkprobe, without `batch`'s too when it lacks batch, and without `twsyn`'s
    /// setting and counter too when it lacks twsyn.</summary>
    static byte[] DayLayout(byte[] s, NetConfig c)
    {
        bool Kept(int i) => !(!c.LossRepair && i == LossRepairSettingAt) && !(!c.TakeoverProbe && i == TakeoverProbeSettingAt) && !(!c.BatchInput && i == BatchSettingAt)
            && !(!c.TimeWaitSyn && (i == TimeWaitSynSettingAt || i >= TimeWaitReopensAt && i < TimeWaitReopensAt + 8));
        return [.. s.Where((_, i) => Kept(i))];
    }

    /// <summary>A TCP segment from B with only ACK set, acknowledging <paramref name="ack"/>.</summary>
    static bool IsAckOnly(byte[] f, uint ack)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != Wire.EtherTypeIp4 || f[Wire.EthHeader + 9] != Wire.ProtoTcp)
            return false;
        int t = Wire.EthHeader + (f[Wire.EthHeader] & 0xF) * 4;
        return f[t + 13] == (byte)TcpFlags.Ack && Wire.U32(f, t + 8) == ack;
    }
}
