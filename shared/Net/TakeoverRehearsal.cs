namespace ReVirt.Net;

/// <summary>
/// A dry pass of a takeover on scratch stacks, for a following backup to run while it follows: the first run of the
/// takeover's code (<see cref="NetStack.TakeOver"/>: the announce, every connection's resynchronisation and probe, the
/// generic collection code they instantiate, the judgement of heard frames) otherwise happens on the replay thread
/// after the arbiter's grant, while every client waits. Running the same code once on objects of its own moves that
/// first-use cost (JIT compilation, type loads, ReadyToRun fix-ups; all process-wide) off the failover's path.
/// </summary>
/// <remarks>
/// Contract: touches nothing but the two stacks it makes (no device, no clock, no randomness beyond their fixed
/// seeds, no static state), so it may run on any thread at any time beside the replicated machine without changing
/// what that machine does. The scratch stacks get the behaviour flags of <paramref name="like"/> (so the same code
/// paths run) under addresses of their own.
/// </remarks>
public static class TakeoverRehearsal
{
    /// <summary>What the dry pass did: frames the scratch takeover queued (the announce, the ACKs, the resent
    /// flight), heard frames judged, and whether the scratch peer then read every byte the scratch server sent
    /// before its takeover (the repair worked on the scratch connection).</summary>
    public readonly record struct Result(int RepairFrames, int Judged, bool StreamIntact);

    // addresses of the scratch pair: a private /24 of their own (the code paths do not depend on the values)
    const uint ServerIp = 0x0A_FE_00_01, PeerIp = 0x0A_FE_00_02;
    static readonly MacAddress ServerMac = new(0x02_00_5E_AB_00_01), PeerMac = new(0x02_00_5E_AB_00_02);
    const ushort Port = 9;
    const long StepNs = 1_000_000;
    /// <summary>Bound on the pump's rounds in each phase (each round moves the clock 1 ms): a scratch exchange on a
    /// lossless in-memory link completes in a few rounds, the probe's timer within a second of clock.</summary>
    const int MaxRounds = 4000;
    const int RequestBytes = 700, ReplyBytes = 5000;

    /// <summary>Runs the dry pass with <paramref name="like"/>'s behaviour (RACK, SACK, D-SACK undo, the takeover
    /// probe, batch input ...).</summary>
    public static Result Run(NetConfig like)
    {
        var serverConfig = like with { Mac = ServerMac, Ip = ServerIp, PrefixLength = 24, Gateway = 0 };
        var server = new NetStack(serverConfig, seed: 1);
        var peer = new NetStack(new NetConfig(PeerMac, PeerIp, 24) { Sack = like.Sack }, seed: 2);
        long now = 0;
        var listener = server.CreateTcp() ?? throw new InvalidOperationException("no scratch socket");
        Check(listener.Bind(0, Port), "bind");
        Check(listener.Listen(1), "listen");
        var client = peer.CreateTcp() ?? throw new InvalidOperationException("no scratch socket");
        // a request-response client: its second request goes at once although the first one's ACK never came back
        client.NoDelay = true;
        client.Connect(ServerIp, Port);
        TcpSocket? conn = null;
        Pump(server, peer, ref now, () => conn != null || (listener.Accept(out conn) == 0 && conn != null));
        if (conn == null) throw new InvalidOperationException("the scratch connection did not open");

        // one exchange, so the server has an RTT sample; then a reply that never left the "old replica" and a request
        // only the old replica's wire carried
        var request = Pattern(RequestBytes, 3);
        client.Send(request);
        var buf = new byte[ReplyBytes];
        int got = 0;
        Pump(server, peer, ref now, () => (got += Math.Max(0, conn.Receive(buf.AsSpan(got)))) >= request.Length);
        var reply = Pattern(ReplyBytes, 5);
        conn.Send(reply);
        while (server.TryTakeFrame(out _)) { }
        client.Send(request);
        var heard = new List<byte[]>();
        while (peer.TryTakeFrame(out var f)) heard.Add(f);
        int judged = 0;
        var given = new List<byte[]>();
        foreach (var f in heard)
        {
            judged++;
            if (server.JudgeHeard(f) is not (HeardKind.Own or HeardKind.Foreign or HeardKind.Old)) given.Add(f);
        }

        server.TakeOver(now);
        int repair = server.PendingFrames;
        // the repair's last segment is lost on the path: the takeover's probe (a timer) resends it
        var repairFrames = new List<byte[]>();
        while (server.TryTakeFrame(out var f)) repairFrames.Add(f);
        for (int i = 0; i < repairFrames.Count - 1; i++) peer.Input(repairFrames[i], now);
        server.Receive(given, now);
        int read = 0;
        Pump(server, peer, ref now, () => (read += Math.Max(0, client.Receive(buf.AsSpan(read)))) >= reply.Length);
        bool intact = read == reply.Length && buf.AsSpan(0, read).SequenceEqual(reply);
        _ = server.Digest();
        return new Result(repair, judged, intact);
    }

    static void Check(int r, string what)
    {
        if (r < 0) throw new InvalidOperationException($"scratch {what}: errno {-r}");
    }

    static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)(i * seed + (i >> 8));
        return b;
    }

    /// <summary>Moves frames both ways and the clock (to the next timer, at least 1 ms on) until
    /// <paramref name="done"/> holds or <see cref="MaxRounds"/> rounds passed.</summary>
    static void Pump(NetStack a, NetStack b, ref long now, Func<bool> done)
    {
        for (int round = 0; round < MaxRounds && !done(); round++)
        {
            bool moved = false;
            while (a.TryTakeFrame(out var f)) { b.Input(f, now); moved = true; }
            while (b.TryTakeFrame(out var f)) { a.Input(f, now); moved = true; }
            if (moved) continue;
            long next = Math.Min(a.NextDeadline, b.NextDeadline);
            now = Math.Max(now + StepNs, next == long.MaxValue ? now + StepNs : next);
            a.Advance(now);
            b.Advance(now);
        }
    }
}
