using System.Buffers.Binary;
using System.Diagnostics;
using ReVirt.Linux;

namespace ReVirt.Replay;

/// <summary>
/// Takeover: a following backup whose replay has just turned live gives the guest's descriptors host descriptors
/// of its own. Listening sockets are re-opened on this host at the address the guest bound (so clients reconnect to
/// the same port), epoll sets get their host instance back, regular files are re-opened on this replica's root at
/// the guest-visible offset, eventfds and timerfds are made again with the counter and expiry the VM kept, and
/// connections only the old primary had become <see cref="ResetConnection"/>s.
/// The kernel knows nothing of replication roles: this works on the descriptions it exposes
/// (<see cref="IMachineFiles"/>).
/// </summary>
public static class TakeoverAgent
{
    /// <summary>How long a takeover keeps trying to bind a listener while the dead primary's port is released.</summary>
    public static TimeSpan RebindTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Called the moment a following replay turns live (on the guest thread). Returns what it did, one
    /// line per descriptor that changed.</summary>
    public static List<string> AttachHost(IMachineFiles machine)
    {
        var report = new List<string>();
        var seen = new HashSet<OpenFile>(ReferenceEqualityComparer.Instance);
        var epolls = new List<(int Gfd, EpollFile File)>();
        foreach (var (gfd, f) in machine.Descriptors.ToList())
        {
            if (!seen.Add(f) || f is StdioFile) continue;
            switch (f)
            {
                case EpollFile ep: epolls.Add((gfd, ep)); break;
                case EventFdFile e: if (e.HostFd < 0) RemakeEventFd(gfd, e, report); break;
                case TimerFdFile tf: if (tf.HostFd < 0) RemakeTimerFd(gfd, tf, report); break;
                case ResetConnection: break;
                case HostSocket s:
                    if (s.HostFd >= 0) break;
                    if (s.Listening && s.BoundAddress != null) ReopenListener(machine, gfd, s, report);
                    else
                    {
                        machine.Replace(s, new ResetConnection(s));
                        report.Add($"guest fd {gfd}: connection of the old primary reset");
                    }
                    break;
                default:
                    if (f.GuestPath.StartsWith('/')) ReopenFile(machine, gfd, f, report);
                    break;
            }
        }
        foreach (var (gfd, ep) in epolls) ReattachEpoll(gfd, ep, report);
        return report;
    }

    static unsafe void ReopenListener(IMachineFiles machine, int gfd, HostSocket f, List<string> report)
    {
        string? unix = machine.UnixGuestPath(f.BoundAddress!);
        int type = f.Type | Sock.CLOEXEC | ((f.StatusFlags & O.NONBLOCK) != 0 ? Sock.NONBLOCK : 0);
        long fd = HostSys.Call(Nr.socket, f.Family, type, f.Protocol);
        if (fd < 0) { FailListener(machine, gfd, f, $"socket: errno {-fd}", report); return; }
        int one = 1;
        HostSys.Call(Nr.setsockopt, fd, Sock.SOL_SOCKET, Sock.SO_REUSEADDR, (long)&one, 4);
        var sw = Stopwatch.StartNew();
        long r;
        int tries = 0;
        while (true)
        {
            tries++;
            r = machine.WithHostAddress(f.BoundAddress!, unix, bind: true, host => { fixed (byte* p = host) return HostSys.Call(Nr.bind, fd, (long)p, host.Length); });
            if (r == 0 || r != -Errno.EADDRINUSE || sw.Elapsed > RebindTimeout) break;
            Thread.Sleep(20); // the dead primary's port is being released
        }
        if (r == 0) r = HostSys.Call(Nr.listen, fd, f.Backlog);
        if (r < 0)
        {
            HostSys.Call(Nr.close, fd);
            FailListener(machine, gfd, f, $"bind/listen {FormatAddress(f.BoundAddress!)}: errno {-r} after {tries} tries", report);
            return;
        }
        f.HostFd = (int)fd;
        report.Add($"guest fd {gfd}: listening again on {FormatAddress(f.BoundAddress!)} (bound in {sw.Elapsed.TotalMilliseconds:F0} ms)");
    }

    static void FailListener(IMachineFiles machine, int gfd, HostSocket f, string why, List<string> report)
    {
        machine.Replace(f, new ResetConnection(f));
        report.Add($"guest fd {gfd}: could not listen again: {why}");
    }

    static unsafe void ReopenFile(IMachineFiles machine, int gfd, OpenFile f, List<string> report)
    {
        bool append = (f.StatusFlags & O.APPEND) != 0;
        if (f.HostFd < 0)
        {
            long r = machine.Fs.Open(f.GuestPath, (f.StatusFlags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.CLOEXEC, 0);
            if (r < 0) { report.Add($"guest fd {gfd}: could not re-open {f.GuestPath}: errno {-r}"); return; }
            f.HostFd = (int)r;
        }
        if (!f.IsDirectory && !append)
        {
            long pos = HostSys.Call(Nr.lseek, f.HostFd, f.Offset, 0);
            report.Add($"guest fd {gfd}: {f.GuestPath} at offset {(pos >= 0 ? pos : f.Offset)}");
        }
        else report.Add($"guest fd {gfd}: {f.GuestPath}{(append ? " (append)" : "")}");
    }

    /// <summary>An eventfd of the replayed guest gets a host eventfd holding the counter the VM kept.</summary>
    static unsafe void RemakeEventFd(int gfd, EventFdFile e, List<string> report)
    {
        int flags = O.CLOEXEC | (e.StatusFlags & O.NONBLOCK) | (e.Semaphore ? EventFdFile.SemaphoreFlag : 0);
        long fd = HostSys.Call(Nr.eventfd2, 0, flags);
        if (fd < 0) { report.Add($"guest fd {gfd}: eventfd2 failed: errno {-fd}"); return; }
        ulong v = e.Counter;
        if (v > 0 && HostSys.Call(Nr.write, fd, (long)&v, 8) != 8) { HostSys.Call(Nr.close, fd); report.Add($"guest fd {gfd}: eventfd counter {v} not restored"); return; }
        e.HostFd = (int)fd;
        report.Add($"guest fd {gfd}: eventfd made again with counter {v}");
    }

    /// <summary>A timerfd of the replayed guest gets a host timerfd armed at the expiry the VM kept (on the timer's
    /// own clock, absolute), with its interval.</summary>
    static unsafe void RemakeTimerFd(int gfd, TimerFdFile t, List<string> report)
    {
        long fd = HostSys.Call(Nr.timerfd_create, t.Clock, O.CLOEXEC | (t.StatusFlags & O.NONBLOCK));
        if (fd < 0) { report.Add($"guest fd {gfd}: timerfd_create failed: errno {-fd}"); return; }
        long* spec = stackalloc long[4];
        spec[0] = t.IntervalNs / 1_000_000_000; spec[1] = t.IntervalNs % 1_000_000_000;
        spec[2] = t.ExpiryNs / 1_000_000_000; spec[3] = t.ExpiryNs % 1_000_000_000;
        const int AbsTime = 1;
        long r = t.ExpiryNs == 0 ? 0 : HostSys.Call(Nr.timerfd_settime, fd, AbsTime, (long)spec, 0);
        if (r < 0) { HostSys.Call(Nr.close, fd); report.Add($"guest fd {gfd}: timerfd_settime failed: errno {-r}"); return; }
        t.HostFd = (int)fd;
        report.Add(t.ExpiryNs == 0 ? $"guest fd {gfd}: timerfd made again (disarmed)" : $"guest fd {gfd}: timerfd armed again at {t.ExpiryNs} ns on clock {t.Clock}, interval {t.IntervalNs} ns");
    }

    static unsafe void ReattachEpoll(int gfd, EpollFile ep, List<string> report)
    {
        if (ep.HostFd < 0)
        {
            long r = HostSys.Call(Nr.epoll_create1, O.CLOEXEC);
            if (r < 0) { report.Add($"guest fd {gfd}: epoll_create1 failed: errno {-r}"); return; }
            ep.HostFd = (int)r;
        }
        int n = 0;
        foreach (var (tfd, entry) in ep.Entries)
        {
            if (entry.File.ReadyEvents(0) != null || entry.File.HostFd < 0) continue;
            var hev = new byte[Epoll.EventSize];
            BinaryPrimitives.WriteUInt32LittleEndian(hev, entry.Events);
            BinaryPrimitives.WriteUInt64LittleEndian(hev.AsSpan(4), (ulong)tfd);
            long r;
            fixed (byte* p = hev) r = HostSys.Call(Nr.epoll_ctl, ep.HostFd, Epoll.CTL_ADD, entry.File.HostFd, (long)p);
            if (r == 0) n++;
        }
        report.Add($"guest fd {gfd}: epoll set re-registered ({n} of {ep.Entries.Count} entries on the host)");
    }

    static string FormatAddress(byte[] a)
    {
        if (a.Length >= 8 && BinaryPrimitives.ReadUInt16LittleEndian(a) == Af.INET)
            return $"{a[4]}.{a[5]}.{a[6]}.{a[7]}:{BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2))}";
        if (a.Length >= 24 && BinaryPrimitives.ReadUInt16LittleEndian(a) == Af.INET6)
            return $"[{new System.Net.IPAddress(a.AsSpan(8, 16))}]:{BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2))}";
        if (a.Length > 2 && BinaryPrimitives.ReadUInt16LittleEndian(a) == Af.UNIX)
            return "unix:" + System.Text.Encoding.UTF8.GetString(a, 2, a.Length - 2).TrimEnd('\0');
        return "?";
    }
}
