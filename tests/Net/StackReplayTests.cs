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

    /// <summary>The server "guest": accepts one connection and reads it to the end.</summary>
    sealed class Server(NetStack stack)
    {
        readonly TcpSocket _l = Listen(stack);
        TcpSocket? _s;
        public readonly MemoryStream Got = new();
        public bool Eof;
        static TcpSocket Listen(NetStack st) { var l = st.CreateTcp()!; Assert.Equal(0, l.Bind(0, 80)); Assert.Equal(0, l.Listen(4)); return l; }
        public void Step()
        {
            if (_s == null && _l.Accept(out var x) == 0) _s = x;
            if (_s == null || Eof) return;
            var buf = new byte[8192];
            int n;
            while ((n = _s.Receive(buf)) > 0) Got.Write(buf, 0, n);
            if (n == 0) { Eof = true; _s.Close(); }
        }
    }

    [Fact]
    public void A_stack_fed_from_the_log_reproduces_every_frame_and_its_state()
    {
        var ms = new MemoryStream();
        var sent = new List<byte[]>();
        var data = StackLink.Payload(100_000, 2);
        NetConfig config;
        ulong seed = 21 * 2 + 2;   // StackLink's seed for B
        string recordedDigest;
        int syncs = 0;
        using (var w = new LogWriter(Header(), new StreamLogSink(ms, leaveOpen: true)))
        {
            var rec = new RecordingBoundary(w, ulong.MaxValue);
            Server? server = null;
            // Stack B's input goes through the recording boundary, as VirtualNic.Sync does, and the server runs after each.
            var link = new StackLink(21)
            {
                Loss = 0.05, Reorder = 0.1,
                Feed = (to, frame, now) =>
                {
                    if (to.Config.Ip != StackLink.IpB) { if (frame != null) to.Input(frame, now); else to.Advance(now); return; }
                    var got = rec.NetReceive(1, () => new NetReceived(now, frame == null ? [] : [frame]));
                    syncs++;
                    foreach (var f in got.Frames) to.Input(f, got.ClockNs);
                    to.Advance(got.ClockNs);
                    server!.Step();
                },
                Sent = (from, f) => { if (from.Config.Ip == StackLink.IpB) sent.Add(f); },
            };
            config = link.B.Config;
            server = new Server(link.B);
            var c = link.A.CreateTcp()!;
            Assert.Equal(-NetErrno.EINPROGRESS, c.Connect(StackLink.IpB, 80));
            int off = 0; bool shut = false;
            Assert.True(link.Run(() => server.Eof, () =>
            {
                if (c.State != TcpState.Established && c.State != TcpState.CloseWait) return;
                while (off < data.Length) { int n = c.Send(data.AsSpan(off)); if (n <= 0) break; off += n; }
                if (off == data.Length && !shut) { c.Shutdown(ShutdownHow.Write); shut = true; }
            }));
            Assert.Equal(data, server.Got.ToArray());
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
        var rs = new Server(again);
        var resent = new List<byte[]>();
        while (true)
        {
            NetReceived got;
            try { got = replay.NetReceive(1, () => throw new InvalidOperationException("a replay never reads the wire")); }
            catch (ReplayEndOfLogException) { break; }
            foreach (var f in got.Frames) again.Input(f, got.ClockNs);
            again.Advance(got.ClockNs);
            rs.Step();
            while (again.TryTakeFrame(out var f)) resent.Add(f);
        }
        Assert.Equal(data, rs.Got.ToArray());
        Assert.Equal(sent.Count, resent.Count);
        for (int i = 0; i < sent.Count; i++) Assert.Equal(sent[i], resent[i]);
        Assert.Equal(recordedDigest, Convert.ToHexString(again.Digest()));
    }

}
