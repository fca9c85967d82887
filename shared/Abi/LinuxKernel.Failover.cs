using System.Buffers.Binary;
using System.Diagnostics;

namespace ReVirt.Abi;

/// <summary>
/// Takeover: a following backup whose replay has just turned live gives the guest's descriptors host descriptors
/// of its own. Listening sockets are re-opened on this host at the address the guest bound (so clients reconnect to
/// the same port), epoll sets get their host instance back, regular files are re-opened on this replica's root at
/// the guest-visible offset, and connections only the old primary had are reset.
/// </summary>
public sealed partial class LinuxKernel
{
    /// <summary>How long a takeover keeps trying to bind a listener while the dead primary's port is released.</summary>
    public static TimeSpan RebindTimeout = TimeSpan.FromSeconds(5);

    /// <summary>What the takeover did, one line per descriptor that changed.</summary>
    public readonly List<string> TakeoverReport = new();

    /// <summary>Called by the boundary the moment a following replay turns live (on the guest thread).</summary>
    public void AttachHostAtTakeover()
    {
        var seen = new HashSet<GuestFile>(ReferenceEqualityComparer.Instance);
        var epolls = new List<(int Gfd, GuestFile File)>();
        foreach (var (gfd, f) in Fds.OrderBy(kv => kv.Key).ToList())
        {
            if (!seen.Add(f) || f.IsStdio) continue;
            if (f.Epoll != null) { epolls.Add((gfd, f)); continue; }
            if (f.IsSocket)
            {
                if (f.HostFd >= 0) continue;
                if (f.Listening && f.BoundAddress != null) ReopenListener(gfd, f);
                else
                {
                    f.Reset = true;
                    TakeoverReport.Add($"guest fd {gfd}: connection of the old primary reset");
                }
                continue;
            }
            if (f.GuestPath.StartsWith('/')) ReopenFile(gfd, f);
        }
        foreach (var (gfd, ep) in epolls) ReattachEpoll(gfd, ep);
    }

    unsafe void ReopenListener(int gfd, GuestFile f)
    {
        string? unix = UnixGuestPath(f.BoundAddress!);
        long e = HostAddress(f.BoundAddress!, unix, out var host);
        int type = f.SocketType | SOCK_CLOEXEC | ((f.StatusFlags & O_NONBLOCK) != 0 ? SOCK_NONBLOCK : 0);
        long fd = e < 0 ? e : HostSys.Call(Nr.socket, f.SocketFamily, type, f.SocketProtocol);
        if (fd < 0) { FailListener(gfd, f, $"socket: errno {-fd}"); return; }
        int one = 1;
        HostSys.Call(Nr.setsockopt, fd, 1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, (long)&one, 4);
        var sw = Stopwatch.StartNew();
        long r;
        int tries = 0;
        while (true)
        {
            tries++;
            fixed (byte* p = host) r = HostSys.Call(Nr.bind, fd, (long)p, host.Length);
            if (r == 0 || r != -98 /* EADDRINUSE */ || sw.Elapsed > RebindTimeout) break;
            Thread.Sleep(20); // the dead primary's port is being released
        }
        if (r == 0) r = HostSys.Call(Nr.listen, fd, f.Backlog);
        if (r < 0)
        {
            HostSys.Call(Nr.close, fd);
            FailListener(gfd, f, $"bind/listen {FormatAddress(f.BoundAddress!)}: errno {-r} after {tries} tries");
            return;
        }
        f.HostFd = (int)fd;
        TakeoverReport.Add($"guest fd {gfd}: listening again on {FormatAddress(f.BoundAddress!)} (bound in {sw.Elapsed.TotalMilliseconds:F0} ms)");
    }

    void FailListener(int gfd, GuestFile f, string why)
    {
        f.Reset = true;
        TakeoverReport.Add($"guest fd {gfd}: could not listen again: {why}");
    }

    unsafe void ReopenFile(int gfd, GuestFile f)
    {
        bool append = (f.StatusFlags & O_APPEND) != 0;
        if (f.HostFd < 0)
        {
            long r = Fs.ToHost(f.GuestPath, (f.StatusFlags & O_NOFOLLOW) == 0, out var host);
            if (r == 0)
            {
                var z = HostSys.Z(host);
                fixed (byte* p = z) r = HostSys.Call(Nr.openat, AT_FDCWD, (long)p, (f.StatusFlags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC, 0);
            }
            if (r < 0) { TakeoverReport.Add($"guest fd {gfd}: could not re-open {f.GuestPath}: errno {-r}"); return; }
            f.HostFd = (int)r;
        }
        if (!f.IsDirectory && !append)
        {
            long pos = HostSys.Call(Nr.lseek, f.HostFd, f.Offset, 0);
            TakeoverReport.Add($"guest fd {gfd}: {f.GuestPath} at offset {(pos >= 0 ? pos : f.Offset)}");
        }
        else TakeoverReport.Add($"guest fd {gfd}: {f.GuestPath}{(append ? " (append)" : "")}");
    }

    unsafe void ReattachEpoll(int gfd, GuestFile ep)
    {
        if (ep.HostFd < 0)
        {
            long r = HostSys.Call(Nr.epoll_create1, O_CLOEXEC);
            if (r < 0) { TakeoverReport.Add($"guest fd {gfd}: epoll_create1 failed: errno {-r}"); return; }
            ep.HostFd = (int)r;
        }
        int n = 0;
        foreach (var (tfd, entry) in ep.Epoll!)
        {
            if (entry.File.Reset || entry.File.HostFd < 0) continue;
            var hev = new byte[EpollEventSize];
            BinaryPrimitives.WriteUInt32LittleEndian(hev, entry.Events);
            BinaryPrimitives.WriteUInt64LittleEndian(hev.AsSpan(4), (ulong)tfd);
            long r;
            fixed (byte* p = hev) r = HostSys.Call(Nr.epoll_ctl, ep.HostFd, 1 /* ADD */, entry.File.HostFd, (long)p);
            if (r == 0) n++;
        }
        TakeoverReport.Add($"guest fd {gfd}: epoll set re-registered ({n} of {ep.Epoll.Count} entries on the host)");
    }

    static string FormatAddress(byte[] a)
    {
        if (a.Length >= 8 && BinaryPrimitives.ReadUInt16LittleEndian(a) == AF_INET)
            return $"{a[4]}.{a[5]}.{a[6]}.{a[7]}:{BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2))}";
        if (a.Length >= 24 && BinaryPrimitives.ReadUInt16LittleEndian(a) == AF_INET6)
            return $"[{new System.Net.IPAddress(a.AsSpan(8, 16))}]:{BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2))}";
        if (a.Length > 2 && BinaryPrimitives.ReadUInt16LittleEndian(a) == AF_UNIX)
            return "unix:" + System.Text.Encoding.UTF8.GetString(a, 2, a.Length - 2).TrimEnd('\0');
        return "?";
    }
}
