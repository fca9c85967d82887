using System.Runtime.InteropServices;

namespace ReVirt.Linux;

/// <summary>
/// A Linux TAP interface (Ethernet frames, no packet-information prefix) opened through /dev/net/tun: the wire of
/// the VM's virtual network interface. Reads are non-blocking; <see cref="WaitReadable"/> waits with a timeout.
/// The device exists in the network namespace of the thread that opens it and disappears when it is disposed
/// (unless it was made persistent with <c>ip tuntap add</c>).
/// </summary>
public sealed unsafe class TapDevice : IDisposable
{
    const int O_RDWR = 2, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000;
    const uint TUNSETIFF = 0x400454CA;
    const short IFF_TAP = 0x0002, IFF_NO_PI = 0x1000;
    const int IfNameSize = 16, IfReqSize = 40;
    const int EAGAIN = 11;
    const short POLLIN = 1;
    /// <summary>Largest frame we read: Ethernet header + MTU 1500 (no VLAN tags, no offloads negotiated).</summary>
    public const int MaxFrame = 1514;

    int _fd;

    TapDevice(int fd, string name) { _fd = fd; Name = name; }

    public string Name { get; }

    /// <summary>The host descriptor (polled by the output gate when it must wait for room).</summary>
    public int Fd => _fd;

    const int CloneNewNet = 0x40000000;

    /// <summary>
    /// Opens the TAP interface <paramref name="name"/> inside the network namespace <paramref name="ns"/> (a name under
    /// /var/run/netns, as `ip netns add` makes them, or a path; null: this process's own). A dedicated thread enters the
    /// namespace, opens the device and the thread ends; the descriptor stays bound to the device in that namespace, so
    /// the rest of the process keeps its own network.
    /// </summary>
    public static TapDevice Open(string name, string? ns)
    {
        if (ns == null) return Open(name);
        string path = ns.Contains('/') ? ns : $"/var/run/netns/{ns}";
        TapDevice? tap = null;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                long target = HostSys.WithPath(Nr.open, path, p => HostSys.Call(Nr.open, p, O_CLOEXEC));
                if (target < 0) throw new IOException($"network namespace {path}: errno {-target}");
                try
                {
                    long r = HostSys.Call(Nr.setns, target, CloneNewNet);
                    if (r < 0) throw new IOException($"entering network namespace {path}: errno {-r}");
                    tap = Open(name);
                }
                finally { HostSys.Call(Nr.close, target); }
            }
            catch (Exception e) { error = e; }
            // the thread ends here: it never runs anything else inside the namespace
        });
        t.Start();
        t.Join();
        if (error != null) throw error;
        return tap!;
    }

    /// <summary>Opens (creating if needed) the TAP interface <paramref name="name"/>; throws with the errno on failure.</summary>
    public static TapDevice Open(string name)
    {
        if (name.Length == 0 || name.Length >= IfNameSize) throw new ArgumentException($"bad interface name '{name}'");
        long fd = HostSys.WithPath(Nr.open, "/dev/net/tun", p => HostSys.Call(Nr.open, p, O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (fd < 0) throw new IOException($"open /dev/net/tun: errno {-fd}");
        var req = new byte[IfReqSize];
        System.Text.Encoding.ASCII.GetBytes(name).CopyTo(req, 0);
        BitConverter.TryWriteBytes(req.AsSpan(IfNameSize), (short)(IFF_TAP | IFF_NO_PI));
        long r;
        fixed (byte* p = req) r = HostSys.Call(Nr.ioctl, fd, TUNSETIFF, (long)p);
        if (r < 0) { HostSys.Call(Nr.close, fd); throw new IOException($"TUNSETIFF {name}: errno {-r}"); }
        return new TapDevice((int)fd, name);
    }

    /// <summary>Reads one frame into <paramref name="buffer"/> (at least <see cref="MaxFrame"/> bytes): its length, or 0 when none is waiting.</summary>
    public int Read(Span<byte> buffer)
    {
        long n;
        fixed (byte* p = buffer) n = HostSys.Call(Nr.read, _fd, (long)p, buffer.Length);
        if (n == -EAGAIN) return 0;
        if (n < 0) throw new IOException($"read {Name}: errno {-n}");
        return (int)n;
    }

    /// <summary>Writes one frame; a full device queue drops it (as a busy wire would), which TCP repairs.</summary>
    public void Write(ReadOnlySpan<byte> frame)
    {
        long n;
        fixed (byte* p = frame) n = HostSys.Call(Nr.write, _fd, (long)p, frame.Length);
        if (n < 0 && n != -EAGAIN) throw new IOException($"write {Name}: errno {-n}");
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for a frame to read; true when one is waiting.</summary>
    public bool WaitReadable(int timeoutMs)
    {
        var pfd = stackalloc int[2];
        pfd[0] = _fd;
        pfd[1] = POLLIN;
        return HostSys.Call(Nr.poll, (long)pfd, 1, Math.Max(0, timeoutMs)) > 0;
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for a frame to read or for <paramref name="wakeFd"/> (an
    /// eventfd another thread writes to end the wait) to become readable, whichever comes first.</summary>
    public void WaitReadableOr(int wakeFd, int timeoutMs)
    {
        var pfd = stackalloc int[4];
        pfd[0] = _fd;
        pfd[1] = POLLIN;
        pfd[2] = wakeFd;
        pfd[3] = POLLIN;
        HostSys.Call(Nr.poll, (long)pfd, 2, Math.Max(0, timeoutMs));
    }

    public void Dispose()
    {
        if (_fd >= 0) { HostSys.Call(Nr.close, _fd); _fd = -1; }
    }
}
