using System.Diagnostics;
using System.Security.Cryptography;
using ReVirt.Net;

namespace ReVirt.Linux;

/// <summary>The guest's virtual network interface: its identity and the TAP device that is its wire.</summary>
public sealed record VirtualNetOptions(MacAddress Mac, uint Ip, int PrefixLength, string TapName, uint Gateway = 0)
{
    /// <summary>Parses `--ip A.B.C.D/N` and `--mac aa:bb:cc:dd:ee:ff`; null with a reason when either is malformed.</summary>
    public static VirtualNetOptions? Parse(string ip, string? mac, string tap, out string? error)
    {
        error = null;
        if (!Ip4.TryParseCidr(ip, out uint addr, out int prefix)) { error = $"--ip '{ip}' is not an IPv4 address with a prefix length (e.g. 10.0.0.2/24)"; return null; }
        MacAddress m;
        if (mac == null) m = new MacAddress(0x02_52_56_00_00_00UL | (addr & 0xFFFFFF));   // locally administered, from the address
        else if (!MacAddress.TryParse(mac, out m)) { error = $"--mac '{mac}' is not a unicast MAC address (aa:bb:cc:dd:ee:ff)"; return null; }
        return new VirtualNetOptions(m, addr, prefix, tap);
    }
}

/// <summary>
/// Connects the in-VM <see cref="NetStack"/> to the outside through the boundary. The guest can observe its network
/// only through syscalls, so the interface is synchronised only there: <see cref="Sync"/> takes what the TAP device
/// received (and the clock) through <see cref="IBoundary.NetReceive"/> — logged, so a replay feeds the stack the same
/// frames at the same instruction — and <see cref="Transmit"/> sends what the stack produced through
/// <see cref="IBoundary.Send"/>, so a protected primary holds every frame until the backup has the log that caused it
/// and a replay sends nothing. The TAP device is opened on first use by whoever performs host operations (the
/// recording primary, or a backup once it is live).
/// </summary>
public sealed class VirtualNic : IDisposable
{
    /// <summary>Pseudo syscall number under which a batch of outgoing frames is logged.</summary>
    public const int TransmitNr = -2001;
    /// <summary>Most frames taken in one synchronisation (the rest wait in the TAP queue for the next).</summary>
    const int MaxFramesPerSync = 256;

    readonly VirtualNetOptions _options;
    TapDevice? _tap;

    public VirtualNic(VirtualNetOptions options, IBoundary boundary, int tid)
    {
        _options = options;
        // The stack's choices (ISNs, ephemeral ports) come from a seed that crosses the boundary, so replays agree.
        var seed = boundary.Bytes(tid, InputKind.NetSeed, 8, () => RandomNumberGenerator.GetBytes(8));
        var first = boundary.NetReceive(tid, () => new NetReceived(HostClock(), []));
        Stack = new NetStack(new NetConfig(options.Mac, options.Ip, options.PrefixLength, options.Gateway),
            BitConverter.ToUInt64(seed), first.ClockNs);
        Stack.Announce();
        Transmit(boundary, tid);
    }

    public NetStack Stack { get; }
    public VirtualNetOptions Options => _options;

    static long HostClock() => (long)(Stopwatch.GetTimestamp() * (1_000_000_000.0 / Stopwatch.Frequency));

    /// <summary>
    /// Feeds the stack what arrived since the last call, waiting up to <paramref name="maxWaitNs"/> (never past the
    /// stack's next timer) when nothing has; runs its timers; sends what it produced.
    /// </summary>
    public void Sync(IBoundary boundary, int tid, long maxWaitNs)
    {
        var got = boundary.NetReceive(tid, () => HostReceive(maxWaitNs));
        foreach (var f in got.Frames) Stack.Input(f, got.ClockNs);
        Stack.Advance(got.ClockNs);
        Transmit(boundary, tid);
    }

    /// <summary>Sends the frames the stack has queued (after a socket call or a synchronisation).</summary>
    public void Transmit(IBoundary boundary, int tid)
    {
        if (Stack.PendingFrames == 0) return;
        // a replay never opens the TAP device: its boundary answers from the log without performing
        int hostFd = boundary.Replaying ? -1 : Tap().Fd;
        // each frame is a datagram for the output gate: a protected primary holds it until the backup has the log
        // that produced it, and releases it whole
        while (Stack.TryTakeFrame(out var f))
        {
            var frame = f;
            boundary.Send(tid, TransmitNr, new SocketSend
            {
                Socket = this, Data = frame, HostFd = hostFd, Stream = false,
                Perform = (offset, count, _) => { Tap().Write(frame.AsSpan(offset, count)); return count; },
            });
        }
    }

    /// <summary>
    /// Announces the interface (gratuitous ARP) so neighbours send to this replica: called when a backup takes over
    /// the same MAC and IP.
    /// </summary>
    public void Announce(IBoundary boundary, int tid)
    {
        Stack.Announce();
        Transmit(boundary, tid);
    }

    TapDevice Tap() => _tap ??= TapDevice.Open(_options.TapName);

    NetReceived HostReceive(long maxWaitNs)
    {
        var tap = Tap();
        var frames = new List<byte[]>();
        var buf = new byte[TapDevice.MaxFrame + 64];
        int n = tap.Read(buf);
        if (n == 0 && maxWaitNs > 0)
        {
            long now = HostClock();
            long wait = Math.Min(maxWaitNs, Math.Max(0, Stack.NextDeadline - now));
            if (wait > 0 && tap.WaitReadable((int)Math.Min(int.MaxValue, (wait + 999_999) / 1_000_000))) n = tap.Read(buf);
        }
        while (n > 0)
        {
            frames.Add(buf.AsSpan(0, n).ToArray());
            if (frames.Count >= MaxFramesPerSync) break;
            n = tap.Read(buf);
        }
        return new NetReceived(HostClock(), frames);
    }

    public void Dispose() => _tap?.Dispose();
}
