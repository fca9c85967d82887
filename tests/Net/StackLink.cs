using System.Security.Cryptography;
using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// Two stacks on a simulated Ethernet link with seeded loss, duplication and reordering (extra delay), driven by a
/// discrete-event clock: the next event is the earliest frame delivery or stack deadline. Everything the link
/// carries is hashed in order, so two runs can be compared frame for frame.
/// </summary>
sealed class StackLink
{
    public const uint IpA = 0x0A000001, IpB = 0x0A000002;
    public static readonly MacAddress MacA = new(0x02_00_00_00_00_01), MacB = new(0x02_00_00_00_00_02);

    public NetStack A { get; }
    public NetStack B { get; set; }
    public long Now { get; private set; }
    public double Loss { get; init; }
    public double Duplicate { get; init; }
    public double Reorder { get; init; }
    /// <summary>One-way delay; a test may change it mid-run (a path whose delay rises).</summary>
    public long LatencyNs { get; set; } = 1_000_000;
    /// <summary>Extra delay for one frame to the given stack (ns; 0: none): a test's deterministic reordering.</summary>
    public Func<NetStack, byte[], long>? ExtraDelay { get; set; }
    public long FramesCarried { get; private set; }
    public long FramesLost { get; private set; }

    /// <summary>Replaces how a stack is handed a frame (or, with null, its timers): lets a test route a stack's
    /// input through the boundary.</summary>
    public Action<NetStack, byte[]?, long>? Feed { get; init; }

    /// <summary>Sees every frame a stack sends, in order.</summary>
    public Action<NetStack, byte[]>? Sent { get; set; }

    void Deliver(NetStack to, byte[]? frame)
    {
        if (Feed != null) Feed(to, frame, Now);
        else if (frame != null) to.Input(frame, Now);
        else to.Advance(Now);
    }

    readonly Random _rng;
    readonly PriorityQueue<(NetStack To, byte[] Frame), (long At, long N)> _wire = new();
    long _n;
    readonly IncrementalHash _trace = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    public StackLink(int seed, NetConfig? a = null, NetConfig? b = null)
    {
        _rng = new Random(seed);
        A = new NetStack(a ?? new NetConfig(MacA, IpA, 24), (ulong)seed * 2 + 1);
        B = new NetStack(b ?? new NetConfig(MacB, IpB, 24), (ulong)seed * 2 + 2);
    }

    /// <summary>SHA-256 over every frame either side sent, in order, with its send time.</summary>
    public string TraceDigest() => Convert.ToHexString(_trace.GetCurrentHash());

    void Collect(NetStack from, NetStack to)
    {
        while (from.TryTakeFrame(out var f))
        {
            _trace.AppendData(BitConverter.GetBytes(Now));
            _trace.AppendData(f);
            Sent?.Invoke(from, f);
            FramesCarried++;
            if (_rng.NextDouble() < Loss) { FramesLost++; continue; }
            int copies = _rng.NextDouble() < Duplicate ? 2 : 1;
            for (int i = 0; i < copies; i++)
            {
                long delay = LatencyNs + (_rng.NextDouble() < Reorder ? _rng.NextInt64(LatencyNs * 4) : 0) + (ExtraDelay?.Invoke(to, f) ?? 0);
                _wire.Enqueue((to, f), (Now + delay, _n++));
            }
        }
    }

    /// <summary>
    /// Runs until <paramref name="done"/> holds or the clock passes <paramref name="limitNs"/>; <paramref name="app"/>
    /// runs after every event (the applications' socket calls).
    /// </summary>
    public bool Run(Func<bool> done, Action app, long limitNs = 600_000_000_000)
    {
        while (true)
        {
            app();
            Collect(A, B); Collect(B, A);
            if (done()) return true;
            long next = Math.Min(A.NextDeadline, B.NextDeadline);
            if (_wire.TryPeek(out _, out var at)) next = Math.Min(next, at.At);
            if (next == long.MaxValue || next > limitNs) return false;
            Now = Math.Max(Now, next);
            while (_wire.TryPeek(out var item, out var when) && when.At <= Now)
            {
                _wire.Dequeue();
                Deliver(item.To, item.Frame);
            }
            Deliver(A, null); Deliver(B, null);
        }
    }

    /// <summary>Lets <paramref name="ns"/> pass: every event due meanwhile happens, then the clock stands at the end
    /// (an idle connection whose next deadline is later).</summary>
    public void Idle(long ns)
    {
        long end = Now + ns;
        Run(() => false, () => { }, end);
        Now = Math.Max(Now, end);
        Deliver(A, null); Deliver(B, null);
    }

    /// <summary>Connects a client on A to a listener on B; returns (client, server side) once both are established.</summary>
    public (TcpSocket Client, TcpSocket Server, TcpSocket Listener) Connect(ushort port = 7000, Action<TcpSocket>? configure = null)
    {
        var l = B.CreateTcp()!;
        configure?.Invoke(l);
        Assert.Equal(0, l.Bind(0, port));
        Assert.Equal(0, l.Listen(16));
        var c = A.CreateTcp()!;
        configure?.Invoke(c);
        Assert.Equal(-NetErrno.EINPROGRESS, c.Connect(IpB, port));
        TcpSocket? s = null;
        Assert.True(Run(() => s != null && c.State == TcpState.Established, () => { if (s == null && l.Accept(out var x) == 0) s = x; }));
        return (c, s!, l);
    }

    /// <summary>Seeded pseudo-random bytes (the payload oracle).</summary>
    public static byte[] Payload(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>Sends <paramref name="data"/> from <paramref name="from"/> (then shuts down its writing side) and
    /// collects what <paramref name="to"/> reads until end of stream.</summary>
    public byte[] Transfer(TcpSocket from, TcpSocket to, byte[] data, long limitNs = 600_000_000_000, int alreadySent = 0)
    {
        int sent = alreadySent;
        bool eof = false, shut = false;
        var got = new MemoryStream();
        var buf = new byte[65536];
        bool ok = Run(() => eof, () =>
        {
            while (sent < data.Length) { int n = from.Send(data.AsSpan(sent)); if (n <= 0) break; sent += n; }
            if (sent == data.Length && !shut) { Assert.Equal(0, from.Shutdown(ShutdownHow.Write)); shut = true; }
            while (true)
            {
                int n = to.Receive(buf);
                if (n > 0) { got.Write(buf, 0, n); continue; }
                if (n == 0) eof = true;
                else Assert.Equal(-NetErrno.EAGAIN, n);
                break;
            }
        }, limitNs);
        Assert.True(ok, $"transfer stalled at {got.Length} of {data.Length} bytes, sent {sent}, states {from.State}/{to.State}");
        return got.ToArray();
    }
}
