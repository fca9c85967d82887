using System.Diagnostics;
using System.Runtime.InteropServices;
using ReVirt.Linux;
using Process = System.Diagnostics.Process;
using ReVirt.Net;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// A network namespace made for one test, holding the TAP device whose other end is the stack. The Linux side
/// (10.213.0.1) and the stack (10.213.0.2) exist only inside it, so no frame can leave: the namespace has no other
/// interface and no route out. Needs root and /dev/net/tun (CI runs as root).
/// </summary>
sealed class TapNamespace : IDisposable
{
    public const string HostCidr = "10.213.0.1/24";
    public const uint HostIp = 0x0AD50001, StackIp = 0x0AD50002;
    static int _count;

    public string Name { get; }
    /// <summary>The test's own end of the TAP device (null when a VM process opens it: <see cref="TapNamespace(bool)"/>).</summary>
    public TapDevice Tap => _tap ?? throw new InvalidOperationException("the TAP device is left to a VM process");
    readonly TapDevice? _tap;
    /// <summary>Name of the TAP device inside the namespace.</summary>
    public const string TapName = "rvtap0";

    public TapNamespace() : this(openTap: true) { }

    /// <summary>
    /// <paramref name="openTap"/> false: the device is made persistent (`ip tuntap add`) and left for a VM process to
    /// open by name with `--tap rvtap0 --netns NAME`; the host side is configured before the VM attaches.
    /// </summary>
    public TapNamespace(bool openTap) : this(openTap ? null : [TapName]) { }

    /// <summary>
    /// Persistent TAP devices for VM processes to open by name (null: one the test opens itself). Several devices are
    /// ports of one bridge that holds the Linux side's address, as the switch between two replicas and their
    /// clients: the replica that announces the interface (gratuitous ARP) is the one the bridge sends its frames to.
    /// </summary>
    TapNamespace(string[]? persistentTaps, bool relayed = false)
    {
        Assert.True(Environment.UserName == "root" || geteuid() == 0, "the TAP tests need root (CI runs as root)");
        Name = $"rvnet{Environment.ProcessId}n{Interlocked.Increment(ref _count)}";
        Run("ip", "netns", "add", Name);
        try
        {
            Exec("ip", "link", "set", "lo", "up");
            if (persistentTaps == null) _tap = TapDevice.Open(TapName, Name);
            else foreach (var t in persistentTaps) Exec("ip", "tuntap", "add", "dev", t, "mode", "tap");
            string hostSide = TapName;
            if (persistentTaps is { Length: > 1 } || (relayed && persistentTaps != null))
            {
                hostSide = BridgeName;
                Exec("ip", "link", "add", BridgeName, "type", "bridge");
                foreach (var t in persistentTaps) { Exec("ip", "link", "set", t, "master", BridgeName); Exec("ip", "link", "set", t, "up"); }
            }
            if (relayed)
            {
                // the replicas' bridge gets a veth port (RelayGuestSide's peer); the Linux side's address sits on
                // another veth (its peer RelayClientSide), so every frame between them crosses bench/lossyrelay.py
                Exec("ip", "link", "add", RelayGuestSide, "type", "veth", "peer", "name", RelayGuestSide + "p");
                Exec("ip", "link", "set", RelayGuestSide + "p", "master", BridgeName);
                Exec("ip", "link", "add", RelayClientSide, "type", "veth", "peer", "name", ClientDevice);
                foreach (var d in new[] { RelayGuestSide, RelayGuestSide + "p", RelayClientSide }) Exec("ip", "link", "set", d, "up");
                Exec("ip", "link", "set", BridgeName, "up");
                // the relay copies frames as AF_PACKET sees them and cannot split a segmentation-offload super-frame
                Exec("ip", "link", "set", ClientDevice, "gso_max_segs", "1", "gso_max_size", "1500");
                hostSide = ClientDevice;
            }
            Exec("ip", "addr", "add", HostCidr, "dev", hostSide);
            Exec("ip", "link", "set", hostSide, "up");
        }
        catch { Run("ip", "netns", "del", Name); throw; }
    }

    /// <summary>The bridge of <see cref="Bridged"/>.</summary>
    public const string BridgeName = "rvbr0";

    /// <summary>A namespace whose Linux side is a bridge with the persistent TAP devices <paramref name="taps"/> as ports.</summary>
    public static TapNamespace Bridged(params string[] taps) => new(taps);

    /// <summary>Devices of <see cref="BridgedBehindRelay"/>: the relay copies frames between these two.</summary>
    public const string RelayGuestSide = "rvg0", RelayClientSide = "rvc1", ClientDevice = "rvc0";

    /// <summary>Like <see cref="Bridged"/>, but the Linux side's address is on a device of its own whose frames reach
    /// the bridge only through a relay the test runs between <see cref="RelayGuestSide"/> and
    /// <see cref="RelayClientSide"/> (<see cref="StartRelay"/>): loss, duplication and reordering between the clients
    /// and whichever replica the bridge sends to (the bridge still learns the survivor from its gratuitous ARP).</summary>
    public static TapNamespace BridgedBehindRelay(params string[] taps) => new(taps, relayed: true);

    /// <summary>Starts bench/lossyrelay.py between the relay devices with seeded faults; its counts go to <paramref name="stats"/>.</summary>
    public Process StartRelay(double loss, double duplicate, double reorder, int seed, string stats)
    {
        var relay = Start("python3", Path.Combine(ReVirt.Tests.Programs.GuestEnv.RepoRoot, "bench", "lossyrelay.py"), RelayGuestSide, RelayClientSide,
            loss.ToString(System.Globalization.CultureInfo.InvariantCulture), seed.ToString(),
            "--duplicate", duplicate.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--reorder", reorder.ToString(System.Globalization.CultureInfo.InvariantCulture), "--stats", stats);
        if (!relay.StandardOutput.ReadLineAsync().Wait(TimeSpan.FromMinutes(1))) { relay.Kill(); throw new TimeoutException("the relay did not start"); }
        return relay;
    }

    /// <summary>Runs a command inside the namespace and returns its standard output (throws on a non-zero exit).</summary>
    public string Exec(params string[] args) => Run(["ip", "netns", "exec", Name, .. args]);

    /// <summary>Starts a command inside the namespace.</summary>
    public Process Start(params string[] args)
    {
        var p = Process.Start(Child.StartInfo("ip", new[] { "netns", "exec", Name }.Concat(args)))!;
        p.StandardInput.Close();
        return p;
    }

    internal static string Run(params string[] args) => Child.Check(TimeSpan.FromMinutes(2), args[0], args[1..]);

    [DllImport("libc")] static extern uint geteuid();

    public void Dispose()
    {
        _tap?.Dispose();
        try { Run("ip", "netns", "del", Name); } catch (InvalidOperationException) { }
    }
}

/// <summary>
/// Drives a stack from a TAP device on the host clock, injecting seeded loss, duplication and reordering on both
/// directions of the wire (the kernel here has no netem qdisc, so the faults are injected where the frames cross).
/// </summary>
sealed class TapPump(NetStack stack, TapDevice tap, int seed, double loss = 0, double duplicate = 0, double reorder = 0)
{
    readonly Random _rng = new(seed);
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly List<(long At, byte[] Frame, bool In)> _held = [];
    public long Dropped, Duplicated, Reordered;
    /// <summary>TCP data bytes of the stack's own frames the wire lost (what a perfect sender would resend).</summary>
    public long DroppedOutBytes;

    public long Now => _clock.ElapsedTicks * (1_000_000_000 / Stopwatch.Frequency);

    /// <summary>When set, the last frames that crossed the wire (either way, with what the wire did to them) are
    /// kept, summarised, for a report of a stalled transfer.</summary>
    public Queue<string>? Trace;
    /// <summary>Sees each frame the wire hands the stack, just before the stack takes it.</summary>
    public Action<byte[]>? OnIncoming;

    void Note(byte[] f, bool incoming, string fate)
    {
        if (Trace == null) return;
        Trace.Enqueue($"{Now / 1_000_000,8} {(incoming ? "in " : "out")} {fate,-4} {TcpSummary(f)}");
        while (Trace.Count > 400) Trace.Dequeue();
    }

    /// <summary>One line for a TCP frame: flags, seq, ack, data length, window, SACK blocks (raw numbers).</summary>
    internal static string TcpSummary(byte[] f)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != 0x0800 || f[Wire.EthHeader + 9] != Wire.ProtoTcp) return "non-tcp";
        int ihl = (f[Wire.EthHeader] & 0xF) * 4, total = Wire.U16(f, Wire.EthHeader + 2);
        var t = f.AsSpan(Wire.EthHeader + ihl, total - ihl);
        int doff = (t[12] >> 4) * 4;
        var fl = (TcpFlags)(t[13] & 0x3F);
        var sb = new System.Text.StringBuilder($"{fl} seq {Wire.U32(t, 4)} ack {Wire.U32(t, 8)} len {t.Length - doff} win {Wire.U16(t, 14)}");
        var o = t[Wire.TcpHeader..doff];
        for (int i = 0; i < o.Length;)
        {
            if (o[i] == 0) break;
            if (o[i] == 1) { i++; continue; }
            if (i + 1 >= o.Length || o[i + 1] < 2) break;
            if (o[i] == 5) for (int k = i + 2; k + 8 <= i + o[i + 1]; k += 8) sb.Append($" sack {Wire.U32(o, k)}-{Wire.U32(o, k + 4)}");
            i += o[i + 1];
        }
        return sb.ToString();
    }

    /// <summary>While set, the wire is cut both ways: every frame the TAP device brings is handed to it instead of the
    /// stack, and what the stack sends is dropped (a replica that died).</summary>
    public Action<byte[]>? Cut;

    /// <summary>Loss, duplication, or a delay of up to 3 ms (which reorders it behind later frames).</summary>
    void Pass(byte[] f, bool incoming)
    {
        if (Cut is { } cut) { if (incoming) cut(f); return; }
        if (_rng.NextDouble() < loss) { Dropped++; Note(f, incoming, "LOST"); if (!incoming) DroppedOutBytes += StackSackTests.DataLength(f); return; }
        Note(f, incoming, "");
        int copies = _rng.NextDouble() < duplicate ? 2 : 1;
        if (copies == 2) Duplicated++;
        for (int i = 0; i < copies; i++)
        {
            if (_rng.NextDouble() < reorder) { Reordered++; _held.Add((Now + _rng.Next(200_000, 3_000_000), f, incoming)); }
            else Deliver(f, incoming);
        }
    }

    void Deliver(byte[] f, bool incoming)
    {
        if (incoming) { OnIncoming?.Invoke(f); stack.Input(f, Now); } else tap.Write(f);
    }

    public bool Run(Func<bool> done, Action app, TimeSpan limit)
    {
        var buf = new byte[TapDevice.MaxFrame + 64];
        var until = Now + (long)limit.TotalMilliseconds * 1_000_000;
        while (true)
        {
            app();
            while (stack.TryTakeFrame(out var f)) Pass(f, incoming: false);
            if (done()) return true;
            long now = Now;
            if (now > until) return false;
            long next = Math.Min(stack.NextDeadline, now + 20_000_000);
            foreach (var h in _held) next = Math.Min(next, h.At);
            if (tap.WaitReadable((int)Math.Max(0, (next - now + 999_999) / 1_000_000)))
            {
                int n;
                while ((n = tap.Read(buf)) > 0) Pass(buf.AsSpan(0, n).ToArray(), incoming: true);
            }
            for (int i = 0; i < _held.Count; i++)
                if (_held[i].At <= Now) { var h = _held[i]; _held.RemoveAt(i--); Deliver(h.Frame, h.In); }
            stack.Advance(Now);
        }
    }
}

/// <summary>Detects a transfer that makes no progress (nothing echoed, nothing acknowledged or received by the stack)
/// for <see cref="Limit"/> and keeps a report of the stack connection's state and the wire's last frames.</summary>
sealed class StallWatch
{
    public long Limit = 6_000_000_000;
    public string? Report;
    (long, uint, uint, int) _last;
    long _since = -1;

    public long MaxRto, MaxGap, EdgeAcks, EdgeAcksNew;
    /// <summary>Counts pure ACKs whose sequence number is exactly the right edge of the stack's receive window (a
    /// strict RFC 793 test drops them), and those of them that acknowledge new data.</summary>
    public void Inspect(byte[] f, TcpSocket? c)
    {
        if (c == null || c.State is not (TcpState.Established or TcpState.CloseWait)) return;
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != 0x0800 || f[Wire.EthHeader + 9] != Wire.ProtoTcp) return;
        int ihl = (f[Wire.EthHeader] & 0xF) * 4, total = Wire.U16(f, Wire.EthHeader + 2);
        var t = f.AsSpan(Wire.EthHeader + ihl, total - ihl);
        int doff = (t[12] >> 4) * 4;
        if (t.Length != doff || (t[13] & 0x07) != 0) return;
        uint wnd = c.ReceiveWindow();
        if (wnd > 0 && Wire.U32(t, 4) == c.RcvNxt + wnd) { EdgeAcks++; if (Seq.Gt(Wire.U32(t, 8), c.SndUna)) EdgeAcksNew++; }
    }
    public bool Stalled(TapPump pump, NetStack stack, TcpSocket? c, long echoed, int pending)
    {
        if (c == null) return false;
        MaxRto = Math.Max(MaxRto, c.Rto);
        var now = (echoed, c.SndUna, c.RcvNxt, pending);
        if (now != _last || _since < 0) { MaxGap = Math.Max(MaxGap, pump.Now - _since); _last = now; _since = pump.Now; return false; }
        if (pump.Now - _since < Limit) return false;
        var k = stack.Counters;
        string Rel(long d) => d == long.MaxValue ? "never" : $"{(d - stack.Now) / 1_000_000} ms";
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"echoed {echoed} pending {pending} state {c.State} una {c.SndUna} nxt {c.SndNxt} max {c.SndMax} (iss {c.Iss}) sndwnd {c.SndWnd} cwnd {c.Cwnd} ssthresh {c.Ssthresh} " +
            $"inrec {c.InRecovery} recover {c.Recover} highrxt {c.HighRxt} dupacks {c.DupAcks} retries {c.Retries} rto {c.Rto / 1_000_000} srtt {c.Srtt / 1_000_000} hasrtt {c.HasRtt}");
        sb.AppendLine($"rtx {Rel(c.RtxDeadline)} rack {Rel(c.RackDeadline)} probe {Rel(c.ProbeDeadline)} keep {Rel(c.KeepDeadline)} end {Rel(c.EndDeadline)} probeout {c.ProbeOut} " +
            $"sendbuf {c.SendBuf.Count} recvbuf {c.RecvBuf.Count} ooo {c.Ooo.Count} rcvnxt {c.RcvNxt} (irs {c.Irs}) advwnd {c.RcvAdvEdge - c.RcvNxt} rwnd {c.ReceiveWindow()} finsent {c.FinSent} finrecv {c.FinReceived} shutwrite {c.ShutWrite}");
        sb.AppendLine($"sacked [{string.Join(" ", c.Sacked.Select(r => $"{r.Start}-{r.End}"))}]");
        sb.AppendLine($"flight {c.Flight.Count}: [{string.Join(" ", c.Flight.Take(40).Select(r => $"{r.Start}-{r.End}{(r.Lost ? "L" : "")}{(r.Sacked ? "S" : "")}{(r.Retransmitted ? "R" : "")}@{(r.At - stack.Now) / 1_000_000}"))}]");
        sb.AppendLine($"rackat {(c.RackAt == long.MinValue ? "none" : ((c.RackAt - stack.Now) / 1_000_000).ToString())} rackrtt {c.RackRtt / 1_000_000} minrtt {c.MinRtt / 1_000_000} reo {c.ReorderingSeen}x{c.ReorderMultiplier} undo {c.UndoOpen}");
        sb.AppendLine($"counters: timeouts {k.RetransmitTimeouts} retransmits {k.Retransmits} fast {k.FastRetransmits} tlp {k.TailLossProbes} racklost {k.RackLostSegments} ratelimited {k.RateLimited} oow {k.DropOutOfWindow} badack {k.DropBadAck}");
        foreach (var line in pump.Trace ?? new()) sb.AppendLine(line);
        Report = sb.ToString();
        return true;
    }
}

/// <summary>
/// Interoperability with Linux's own TCP: a Linux client and server (python3 sockets) in a namespace, the stack on the
/// other end of a TAP device, 1 MB each way compared byte for byte, with and without injected faults.
/// </summary>
public class StackTapTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static readonly MacAddress StackMac = new(0x02_52_56_00_00_02);
    const int Megabyte = 1 << 20;
    static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    // A client that sends N seeded bytes while reading the echo, then checks what came back against what it sent.
    const string EchoClient = """
import socket, sys, threading, random, hashlib
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(int(sys.argv[4])).randbytes(n)
s = socket.create_connection((host, port), timeout=60)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
got = bytearray()
while True:
    b = s.recv(65536)
    if not b: break
    got += b
t.join(); s.close()
print(len(got), "match" if bytes(got) == data else "differ", hashlib.sha256(data).hexdigest())
""";

    // A server that echoes one connection until end of stream, then closes.
    const string EchoServer = """
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1)
print("listening", flush=True)
c, _ = l.accept(); c.settimeout(60)
n = 0
while True:
    b = c.recv(65536)
    if not b: break
    c.sendall(b); n += len(b)
c.shutdown(socket.SHUT_WR); c.close()
print(n, flush=True)
""";

    static NetStack NewStack(int seed) => new(new NetConfig(StackMac, TapNamespace.StackIp, 24), (ulong)seed);

    /// <summary>The stack serves an echo port; a Linux client sends 1 MB and reads it back. <paramref name="linuxSack"/>
    /// false: the client's namespace has net.ipv4.tcp_sack 0, so its SYN offers no SACK. Returns the stack, its
    /// connection and the wire.</summary>
    static (NetStack Stack, TcpSocket Conn, TapPump Pump) LinuxClientThroughStack(int seed, double loss, double dup, double reorder, bool linuxSack = true,
        StallWatch? watch = null)
    {
        using var ns = new TapNamespace();
        if (!linuxSack) ns.Exec("sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_sack");
        var stack = NewStack(seed);
        var pump = new TapPump(stack, ns.Tap, seed, loss, dup, reorder);
        var listener = stack.CreateTcp()!;
        Assert.Equal(0, listener.Bind(0, 7));
        Assert.Equal(0, listener.Listen(8));
        var script = Path.Combine(Path.GetTempPath(), $"rv-echo-client-{Environment.ProcessId}-{seed}.py");
        File.WriteAllText(script, EchoClient);
        using var client = ns.Start(Python, script, "10.213.0.2", "7", Megabyte.ToString(), seed.ToString());
        var output = client.StandardOutput.ReadToEndAsync();
        TcpSocket? conn = null;
        var pending = new Queue<byte>();
        var buf = new byte[65536];
        long echoed = 0;
        bool closed = false;
        if (watch != null) { pump.Trace = new(); pump.OnIncoming = f => watch.Inspect(f, conn); }
        bool ok = pump.Run(() => client.HasExited && closed || watch != null && watch.Stalled(pump, stack, conn, echoed, pending.Count), () =>
        {
            if (conn == null && listener.Accept(out var c) == 0) conn = c;
            if (conn == null || closed) return;
            while (pending.Count < 512 * 1024)
            {
                int n = conn.Receive(buf);
                if (n <= 0)
                {
                    if (n == 0 && pending.Count == 0) { conn.Close(); closed = true; }
                    break;
                }
                foreach (var x in buf.AsSpan(0, n)) pending.Enqueue(x);
            }
            while (pending.Count > 0 && !closed)
            {
                var chunk = pending.Take(16384).ToArray();
                int w = conn.Send(chunk);
                if (w <= 0) break;
                for (int i = 0; i < w; i++) pending.Dequeue();
                echoed += w;
            }
        }, TimeSpan.FromSeconds(120));
        if (!client.HasExited) client.Kill();
        client.WaitForExit();
        File.Delete(script);
        if (watch?.Report != null) return (stack, conn!, pump);
        Assert.True(ok, $"echo did not finish: echoed {echoed}, client exited {client.HasExited}, stderr {client.StandardError.ReadToEnd()}; " +
            (conn == null ? "no connection" : $"stack's connection: {conn.State}, rto {conn.Rto / 1_000_000} ms (srtt {conn.Srtt / 1_000_000} ms), una {conn.SndUna - conn.Iss} nxt {conn.SndNxt - conn.Iss} max {conn.SndMax - conn.Iss}, " +
            $"rtx deadline in {(conn.RtxDeadline == long.MaxValue ? "never" : ((conn.RtxDeadline - stack.Now) / 1_000_000).ToString())} ms, timeouts {stack.Counters.RetransmitTimeouts}, retransmits {stack.Counters.Retransmits}, fast {stack.Counters.FastRetransmits}, pending echo {pending.Count}"));
        var words = output.Result.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(0, client.ExitCode);
        Assert.Equal(Megabyte.ToString(), words[0]);
        Assert.Equal("match", words[1]);
        Assert.Equal(Megabyte, echoed);
        if (loss > 0) Assert.True(pump.Dropped > 0 && stack.Counters.Retransmits > 0);
        return (stack, conn!, pump);
    }

    /// <summary>The stack connects to a Linux echo server, sends 1 MB, and reads the same bytes back.</summary>
    static void StackClientToLinux(int seed, double loss, double dup, double reorder)
    {
        using var ns = new TapNamespace();
        var stack = NewStack(seed);
        var pump = new TapPump(stack, ns.Tap, seed, loss, dup, reorder);
        var script = Path.Combine(Path.GetTempPath(), $"rv-echo-server-{Environment.ProcessId}-{seed}.py");
        File.WriteAllText(script, EchoServer);
        using var server = ns.Start(Python, script, "10.213.0.1", "9000");
        Assert.Equal("listening", server.StandardOutput.ReadLine());
        var data = StackLink.Payload(Megabyte, seed);
        var c = stack.CreateTcp()!;
        Assert.Equal(-NetErrno.EINPROGRESS, c.Connect(TapNamespace.HostIp, 9000));
        int sent = 0;
        bool shut = false, eof = false;
        var got = new MemoryStream();
        var buf = new byte[65536];
        bool ok = pump.Run(() => eof, () =>
        {
            if (c.State is TcpState.SynSent) return;
            while (sent < data.Length) { int n = c.Send(data.AsSpan(sent)); if (n <= 0) break; sent += n; }
            if (sent == data.Length && !shut) { Assert.Equal(0, c.Shutdown(ShutdownHow.Write)); shut = true; }
            int r;
            while ((r = c.Receive(buf)) > 0) got.Write(buf, 0, r);
            if (r == 0) eof = true;
            else Assert.Equal(-NetErrno.EAGAIN, r);
        }, TimeSpan.FromSeconds(120));
        if (!server.WaitForExit(10_000)) server.Kill();
        File.Delete(script);
        Assert.True(ok, $"transfer stalled: sent {sent}, received {got.Length}, state {c.State}, stderr {server.StandardError.ReadToEnd()}");
        Assert.Equal(data, got.ToArray());
        Assert.Equal(Megabyte.ToString(), server.StandardOutput.ReadToEnd().Trim());
    }

    [Fact] public void Linux_client_through_the_stack() => LinuxClientThroughStack(1, 0, 0, 0);
    [Fact] public void Linux_client_through_the_stack_with_loss_duplication_reordering() => LinuxClientThroughStack(2, 0.03, 0.02, 0.05);

    /// <summary>
    /// SACK with Linux's TCP under 3 % loss each way: negotiated (Linux offers it by default), the stack SACKs what it
    /// holds out of order and resends from the scoreboard Linux's SACK blocks fill, about only the bytes the wire lost;
    /// the stream is intact. The same transfer with SACK off in the client's namespace negotiates none (no block either
    /// way). The oracle for what was lost is the wire (the bytes of the stack's frames it dropped).
    /// </summary>
    [Fact]
    public void Linux_negotiates_sack_and_the_stack_resends_only_what_was_lost()
    {
        var (on, onConn, onPump) = LinuxClientThroughStack(7, 0.03, 0, 0);
        var (off, offConn, offPump) = LinuxClientThroughStack(7, 0.03, 0, 0, linuxSack: false);
        double onRatio = (double)on.Counters.RetransmittedBytes / Math.Max(1, onPump.DroppedOutBytes);
        double offRatio = (double)off.Counters.RetransmittedBytes / Math.Max(1, offPump.DroppedOutBytes);
        output.WriteLine($"SACK on: resent {on.Counters.RetransmittedBytes} bytes for {onPump.DroppedOutBytes} lost ({onRatio:F2}), " +
            $"SACK blocks sent {on.Counters.SackBlocksSent}, received {on.Counters.SackBlocksReceived}, fast recoveries {on.Counters.FastRetransmits}; " +
            $"SACK off: resent {off.Counters.RetransmittedBytes} for {offPump.DroppedOutBytes} lost ({offRatio:F2}), fast recoveries {off.Counters.FastRetransmits}");
        Assert.True(onConn.SackOk);
        Assert.True(on.Counters.SackBlocksSent > 0 && on.Counters.SackBlocksReceived > 0);
        Assert.Equal(0, on.Counters.SackBlocksIgnored);
        Assert.False(offConn.SackOk);
        Assert.Equal(0, off.Counters.SackBlocksSent + off.Counters.SackBlocksReceived);
        // with SACK what goes again is about what the wire lost (plus resends it lost too and a time-out's resend);
        // loaded runs gave 1.00-1.10 with SACK and 1.00-1.14 without: with Linux's timing the two are not ordered
        // reliably run by run, so the comparison of SACK on and off is StackSackTests' (deterministic)
        Assert.True(onRatio <= 1.5, $"resent per lost byte: SACK on {onRatio:F2}, off {offRatio:F2}");
    }
    /// <summary>Soak: the SACK echo over many seeds; a transfer without progress for 6 s is reported with the stack
    /// connection's state and the wire's last frames. Seeds from REVIRT_TCPSTALL_SEEDS ("FIRST-LAST").</summary>
    [Fact]
    public void Soak_sack_echo_over_seeds()
    {
        if (!SoakSwitch.On) { output.WriteLine(SoakSwitch.Skipped); return; }
        var range = (Environment.GetEnvironmentVariable("REVIRT_TCPSTALL_SEEDS") ?? "100-119").Split('-').Select(int.Parse).ToArray();
        int stalls = 0, runs = 0;
        var log = Environment.GetEnvironmentVariable("REVIRT_TCPSTALL_LOG") ?? "/tmp/tcpstall-soak.log";
        int repeat = int.Parse(Environment.GetEnvironmentVariable("REVIRT_TCPSTALL_REPEAT") ?? "1");
        for (int seed = range[0]; seed <= range[1]; seed++)
        for (int rep = 0; rep < repeat; rep++)
        {
            var watch = new StallWatch();
            var sw = Stopwatch.StartNew();
            var (st, conn, _) = LinuxClientThroughStack(seed, 0.03, 0, 0, watch: watch);
            runs++;
            if (watch.Report != null) { stalls++; File.AppendAllText(log, $"=== seed {seed} STALL\n{watch.Report}\n"); }
            else File.AppendAllText(log, $"seed {seed} ok {sw.ElapsedMilliseconds} ms maxrto {watch.MaxRto / 1_000_000} final rto {conn.Rto / 1_000_000} srtt {conn.Srtt / 1_000} us maxgap {watch.MaxGap / 1_000_000} ms timeouts {st.Counters.RetransmitTimeouts} fast {st.Counters.FastRetransmits} tlp {st.Counters.TailLossProbes} edgeacks {watch.EdgeAcks} new {watch.EdgeAcksNew} oow {st.Counters.DropOutOfWindow} ratelimited {st.Counters.RateLimited}\n");
        }
        File.AppendAllText(log, $"runs {runs} stalls {stalls}\n");
        Assert.Equal(0, stalls);
    }

    [Fact] public void Stack_client_to_a_Linux_server() => StackClientToLinux(3, 0, 0, 0);
    [Fact] public void Stack_client_to_a_Linux_server_with_loss_duplication_reordering() => StackClientToLinux(4, 0.03, 0.02, 0.05);

    /// <summary>Whether an Ethernet frame is an IPv4 TCP segment carrying data.</summary>
    static bool CarriesTcpData(byte[] f)
    {
        if (f.Length < Wire.EthHeader + Wire.Ip4Header + Wire.TcpHeader || Wire.U16(f, 12) != 0x0800 || f[Wire.EthHeader + 9] != Wire.ProtoTcp) return false;
        int ihl = (f[Wire.EthHeader] & 0xF) * 4, total = Wire.U16(f, Wire.EthHeader + 2);
        int doff = (f[Wire.EthHeader + ihl + 12] >> 4) * 4;
        return total - ihl - doff > 0;
    }

    const string TwoRequestClient = """
import socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile('rwb')
for line in (b'one\n', b'two\n'):
    f.write(line); f.flush()
    if f.readline() != line: sys.exit(1)
print('ok', flush=True)
""";

    /// <summary>
    /// A Linux client's request that only a replica which then died received, and whose retransmissions went to it
    /// too until its retransmission timer had doubled several times (the last interval at least 3 s, so the next one
    /// is at least 6 s away): the stack's takeover (<see cref="NetStack.TakeOver"/>: our unacknowledged segment again
    /// and three ACKs) reaches a client whose TCP is in its loss state after a timeout, where any ACK makes it
    /// retransmit what it holds as lost, so the request arrives well before that next timer. The kernel's own
    /// retransmission schedule is the oracle, observed on the wire. (A client whose first timer has not fired yet
    /// gets no such push: it resends on its tail-loss probe or timer, docs/ARCHITECTURE.md, Takeover.)
    /// </summary>
    [Fact]
    public void Takeover_makes_a_backed_off_Linux_client_resend_at_once()
    {
        using var ns = new TapNamespace();
        var stack = NewStack(6);
        var pump = new TapPump(stack, ns.Tap, 6);
        var listener = stack.CreateTcp()!;
        Assert.Equal(0, listener.Bind(0, 7));
        Assert.Equal(0, listener.Listen(8));
        var script = Path.Combine(Path.GetTempPath(), $"rv-two-requests-{Environment.ProcessId}.py");
        File.WriteAllText(script, TwoRequestClient);
        using var client = ns.Start(Python, script, "10.213.0.2");
        try
        {
            TcpSocket? conn = null;
            var got = new List<byte>();
            var copies = new List<long>(); // when the client's data segments reached the cut wire
            var buf = new byte[256];
            void Serve()
            {
                if (conn == null && listener.Accept(out var c) == 0) conn = c;
                if (conn == null) return;
                int n;
                while ((n = conn.Receive(buf)) > 0) { got.AddRange(buf.AsSpan(0, n).ToArray()); Assert.Equal(n, conn.Send(buf.AsSpan(0, n).ToArray())); }
            }
            // the first request is answered, then the wire is cut: the second reaches nobody, time after time
            bool cutLongEnough = pump.Run(() => copies.Count >= 2 && copies[^1] - copies[^2] >= 3_000_000_000L, () =>
            {
                Serve();
                if (got.Count == 4 && pump.Cut == null) pump.Cut = f => { if (CarriesTcpData(f)) copies.Add(pump.Now); };
            }, TimeSpan.FromSeconds(90));
            Assert.True(cutLongEnough, $"the client's retransmissions: {string.Join(", ", copies.Select(t => t / 1_000_000))} ms");
            long takeover = pump.Now;
            pump.Cut = null;
            stack.TakeOver(takeover);
            long arrived = -1;
            Assert.True(pump.Run(() => client.HasExited, () =>
            {
                Serve();
                if (arrived < 0 && got.Count == 8) arrived = pump.Now;
            }, TimeSpan.FromSeconds(90)), "the client did not finish after the takeover");
            Assert.True(client.WaitForExit(60_000), "the client did not exit");
            Assert.Equal(0, client.ExitCode);
            Assert.Equal("ok", client.StandardOutput.ReadToEnd().Trim()); // a line: it fits the pipe while the client runs
            Assert.Equal("one\ntwo\n", System.Text.Encoding.ASCII.GetString(got.ToArray()));
            double waited = (arrived - takeover) / 1e6, interval = (copies[^1] - copies[^2]) / 1e6;
            output.WriteLine($"the client's data segments on the cut wire at {string.Join(", ", copies.Select(t => $"{(t - copies[0]) / 1e6:F0}"))} ms; " +
                $"the takeover {(takeover - copies[^1]) / 1e6:F0} ms after the last; the request arrived {waited:F0} ms after the takeover");
            Assert.True(waited < 3000, $"the request arrived {waited:F0} ms after the takeover; the client's last interval was {interval:F0} ms");
        }
        finally
        {
            if (!client.HasExited) client.Kill();
            File.Delete(script);
        }
    }

    [Fact]
    public void Linux_pings_the_stack()
    {
        using var ns = new TapNamespace();
        var stack = NewStack(5);
        var pump = new TapPump(stack, ns.Tap, 5);
        using var ping = ns.Start("/bin/busybox", "ping", "-c", "3", "-W", "5", "10.213.0.2");
        Assert.True(pump.Run(() => ping.HasExited, () => { }, TimeSpan.FromSeconds(30)));
        ping.WaitForExit();
        Assert.Equal(0, ping.ExitCode);
        Assert.Equal(3, stack.Counters.IcmpEchoReplies);
    }
}
