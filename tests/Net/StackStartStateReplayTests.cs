using System.Security.Cryptography;
using System.Text;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Net;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// A log's start state names the in-VM stack's behaviours by identity words ("net=A.B.C.D/N MAC undo twsyn"); a log
/// written by a build before a word existed lacks it, and its replay must build the stack of that build's day through
/// the same path a replay takes (<see cref="Recording.OptionsFrom"/>), behave by that day's rules and digest its state
/// in that day's layout, else the replay diverges from its recording. The oracles are written out here: the
/// identities past builds wrote and what their stacks did, the old rule for a SYN that meets TIME-WAIT (an ACK of the
/// old connection, RFC 793 §3.9) and the state layout before `twsyn` (without its setting and its counter).
/// </summary>
public class StackStartStateReplayTests
{
    const string Address = "10.0.0.2/24 02:52:56:00:00:02";

    /// <summary>Every identity a build wrote, oldest first, with the stack it stood for.</summary>
    public static TheoryData<string, bool, bool, bool> Generations => new()
    {
        { Address, true, false, false },                    // before D-SACK undo: RACK on, nothing else
        { Address + " norack", false, false, false },       // the same, recorded with --no-rack
        { Address + " undo", true, true, false },           // D-SACK undo and the windowed minimum RTT (before twsyn)
        { Address + " norack undo", false, true, false },
        { Address + " undo twsyn", true, true, true },      // a SYN may reopen a connection in TIME-WAIT (today's)
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
    public void A_log_of_every_past_identity_builds_the_stack_of_its_day(string identity, bool rack, bool undo, bool timeWaitSyn)
    {
        var c = ReplayConfig(Header(identity));
        Assert.Equal((rack, undo, undo, timeWaitSyn), (c.Rack, c.DsackUndo, c.WindowedMinRtt, c.TimeWaitSyn));
    }

    [Fact]
    public void A_log_naming_a_behaviour_this_build_does_not_know_is_refused()
    {
        var e = Assert.Throws<LogFormatException>(() => Recording.OptionsFrom(Header(Address + " undo twsyn later"), "/", "tap1"));
        Assert.Contains("does not know", e.Message);
    }

    /// <summary>
    /// A log recorded with the start state of the build before `twsyn` (identity "... undo"): the guest's server
    /// closes first, and the client connects again from the same port while the server's side is in TIME-WAIT. That
    /// day's stack answered the SYN with an ACK of the old connection and accepted nothing; the replay, whose stack
    /// comes from the log's header, sends every frame the recording sent and ends with the recording's digest, which
    /// is the state in that day's layout. The same run from a log of today's identity reopens the connection (the
    /// scenario does tell the rules apart) and digests today's layout.
    /// </summary>
    [Theory]
    [InlineData(Address + " undo", false)]
    [InlineData(Address + " undo twsyn", true)]
    public void A_log_recorded_before_time_wait_reopening_replays_by_the_rules_of_its_day(string identity, bool reopens)
    {
        var header = Header(identity);
        var rec = Record(header);
        Assert.Equal(reopens ? 2 : 1, rec.Accepted);
        Assert.Equal(reopens ? 1 : 0, rec.Counters.TimeWaitReopens);
        if (!reopens)
            Assert.Contains(rec.Frames.Skip(rec.SecondSynAt), f => IsAckOnly(f, rec.OldRcvNxt));   // the SYN got the old connection's ACK

        var (frames, stack) = Replay(rec.Log, rec.Seed);
        Assert.Equal(rec.Frames.Count, frames.Count);
        for (int i = 0; i < frames.Count; i++) Assert.Equal(rec.Frames[i], frames[i]);
        Assert.Equal(rec.Digest, Convert.ToHexString(stack.Digest()));

        // the digest is the state as the build of the log's day wrote it: today's bytes without twsyn's
        var full = State(stack);
        var dayLayout = reopens ? full : WithoutTimeWaitSynBytes(full);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(dayLayout)), rec.Digest);
        if (!reopens) Assert.NotEqual(Convert.ToHexString(SHA256.HashData(full)), rec.Digest);
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
    /// the log, with the guest's calls after each input; its frames and the stack.</summary>
    static (List<byte[]> Frames, NetStack Stack) Replay(byte[] log, ulong seed)
    {
        using var reader = new LogReader(new MemoryStream(log));
        var replay = new ReplayBoundary(reader, showOutput: false);
        var stack = new NetStack(ReplayConfig(reader.Header), seed);
        var server = new ClosingServer(stack);
        return (StackReplayTests.FeedFromLog(replay, stack, server.Step), stack);
    }

    static byte[] State(NetStack s)
    {
        using var m = new MemoryStream();
        using (var w = new BinaryWriter(m, Encoding.UTF8, leaveOpen: true)) s.WriteState(w);
        return m.ToArray();
    }

    // Today's state layout (NetStack.WriteState) up to the two fields `twsyn` added: the configuration (MAC 8, address 4,
    // prefix 4, gateway 4, eleven int bounds 44, five bools, the minimum-RTT window 8), then its TimeWaitSyn byte; the
    // stack (clock 8, generator 8, ISN key 8, next socket id 8, next ephemeral port 2, IP id 2, rate window 8 and count
    // 4), then the counters: 35 longs before TimeWaitReopens.
    const int TimeWaitSynSettingAt = 8 + 4 + 4 + 4 + 11 * 4 + 5 + 8;
    const int TimeWaitReopensAt = TimeWaitSynSettingAt + 1 + 8 + 8 + 8 + 8 + 2 + 2 + 8 + 4 + 35 * 8;

    /// <summary>The state in the layout before `twsyn`: today's bytes without its setting and its counter.</summary>
    static byte[] WithoutTimeWaitSynBytes(byte[] s) =>
        [.. s.AsSpan(0, TimeWaitSynSettingAt), .. s.AsSpan(TimeWaitSynSettingAt + 1, TimeWaitReopensAt - TimeWaitSynSettingAt - 1), .. s.AsSpan(TimeWaitReopensAt + 8)];

    /// <summary>A TCP segment from B with only ACK set, acknowledging <paramref name="ack"/>.</summary>
    static bool IsAckOnly(byte[] f, uint ack)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != Wire.EtherTypeIp4 || f[Wire.EthHeader + 9] != Wire.ProtoTcp)
            return false;
        int t = Wire.EthHeader + (f[Wire.EthHeader] & 0xF) * 4;
        return f[t + 13] == (byte)TcpFlags.Ack && Wire.U32(f, t + 8) == ack;
    }
}
