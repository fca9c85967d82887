using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>
/// poll, ppoll, select, pselect6, epoll_wait: readiness of descriptions and waiting for it. A description reports
/// its readiness itself (<see cref="OpenFile.ReadyEvents"/>: pipes, a reset connection) or through its host
/// descriptor, and says which host descriptor a wait on it watches (<see cref="OpenFile.HostWaitFd"/>).
/// A call that finds nothing ready never waits on the host: it parks the calling thread (<see cref="ReadyOrWait"/>)
/// and the rest of the machine runs on. Over in-VM descriptions only, with no timeout, nothing is logged; otherwise
/// each attempt is one logged host operation and the end of the wait a logged wake-up.
/// </summary>
public sealed partial class Kernel
{
    /// <summary>
    /// The common shape of the poll family. `attempt` evaluates readiness without waiting and gives the answer
    /// (value and guest writes) and how many are ready; `waitOn` the host descriptors (and events) a wait watches.
    /// Both run again at each attempt (inside the host operation when the host is involved: descriptions are
    /// looked up then, since the call can be the one at which a backup turns live). Timeout in ns, -1: none.
    /// </summary>
    long ReadyOrWait(GuestThread t, int nr, long timeoutNs, bool hostInvolved, bool inVmInvolved,
        Func<(HostResult Answer, int Count)> attempt, Func<(int Fd, short Events)[]> waitOn)
    {
        if (!hostInvolved && timeoutNs <= 0)
        {
            // in-VM descriptions only: no host call, nothing logged; without a timeout, an in-VM change wakes it
            var (res, count) = attempt();
            if (count == 0 && timeoutNs < 0) return Restart;
            foreach (var (addr, bytes) in res.Writes) Mem.Poke(addr, bytes);
            return res.Value;
        }
        t.AlsoWaitsInVm = inVmInvolved;
        return Host(t.Cpu, nr, () =>
        {
            var (res, count) = attempt();
            if (count == 0 && timeoutNs != 0)
            {
                long now = HostClock.NowNs();
                long deadline = DeadlineOf(t, () => timeoutNs < 0 ? HostWaitSpec.Never : now + timeoutNs);
                if (now < deadline) return BlockUntil(t, waitOn(), deadline);
            }
            return res;
        }).Value;
    }

    /// <summary>Time left of a timed call, in ns (inside a host operation; the whole timeout before any wait).</summary>
    static long TimeLeft(GuestThread t, long timeoutNs)
        => t.HostDeadline is { } d && d != HostWaitSpec.Never ? Math.Max(0, d - HostClock.NowNs()) : timeoutNs;

    /// <summary>One entry of a poll set: the description (null: the descriptor is not open), the events asked.</summary>
    readonly record struct PollEntry(int Fd, OpenFile? File, short Events);

    /// <summary>The descriptions of a guest poll set, looked up now (a negative fd is skipped, as poll does).</summary>
    PollEntry[] LookUp((int Fd, short Events)[] set)
    {
        var entries = new PollEntry[set.Length];
        for (int k = 0; k < set.Length; k++)
        {
            var (fd, events) = set[k];
            entries[k] = new PollEntry(fd, fd >= 0 && Fds.TryGetValue(fd, out var f) ? f : null, events);
        }
        return entries;
    }

    static bool IsHostBacked(OpenFile? f) => f != null && f.ReadyEvents(0) == null;

    /// <summary>Whether some open description of the set is host-backed (<paramref name="host"/>) and some is the
    /// VM's own (<paramref name="inVm"/>).</summary>
    static void Kinds(PollEntry[] set, out bool host, out bool inVm)
    {
        host = inVm = false;
        foreach (var e in set)
        {
            if (e.File == null) continue;
            if (IsHostBacked(e.File)) host = true;
            else inVm = true;
        }
    }

    /// <summary>struct pollfd.</summary>
    struct HostPollFd
    {
        public int Fd;
        public short Events, Revents;
    }

    /// <summary>Host poll sets up to this many entries live on the stack.</summary>
    const int StackPollFds = 256;

    /// <summary>What each entry reports now (revents): the description itself, or one host poll without waiting over
    /// the host descriptors (inside a host operation only when some entry is host-backed). POLLNVAL for a
    /// descriptor that is not open.</summary>
    static unsafe short[] ReadyNow(PollEntry[] set)
    {
        var rev = new short[set.Length];
        // the host-backed entries, in set order, are asked in one host poll that does not wait
        Span<HostPollFd> pfd = set.Length <= StackPollFds ? stackalloc HostPollFd[set.Length] : new HostPollFd[set.Length];
        Span<int> at = set.Length <= StackPollFds ? stackalloc int[set.Length] : new int[set.Length];
        int hosts = 0;
        for (int k = 0; k < set.Length; k++)
        {
            var e = set[k];
            if (e.Fd < 0) continue;
            if (e.File == null) rev[k] = Poll.NVAL;
            else if (e.File.ReadyEvents(e.Events) is short ev) rev[k] = ev;
            else
            {
                pfd[hosts] = new HostPollFd { Fd = e.File.HostFd, Events = e.Events, Revents = 0 };
                at[hosts++] = k;
            }
        }
        if (hosts == 0) return rev;
        fixed (HostPollFd* p = pfd) HostSys.Call(Nr.poll, (long)p, hosts, 0);
        for (int i = 0; i < hosts; i++) rev[at[i]] = pfd[i].Revents;
        return rev;
    }

    /// <summary>The host descriptors a wait on a poll set watches.</summary>
    static (int, short)[] WaitFds(PollEntry[] set)
    {
        var fds = new List<(int, short)>(set.Length);
        foreach (var e in set)
            if (e.File?.HostWaitFd(e.Events) is { } w) fds.Add(w);
        return fds.ToArray();
    }

    long PollFds(GuestThread t, ulong fdsAddr, int nfds, long timeoutNs)
    {
        if (nfds < 0 || nfds > 4096) return -Errno.EINVAL;
        var raw = Mem.ReadBytes(fdsAddr, nfds * 8);
        CheckWritable(fdsAddr, (ulong)nfds * 8);
        var asked = new (int Fd, short Events)[nfds];
        for (int k = 0; k < nfds; k++)
            asked[k] = (BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(k * 8)), BinaryPrimitives.ReadInt16LittleEndian(raw.AsSpan(k * 8 + 4)));
        Kinds(LookUp(asked), out bool host, out bool inVm);
        return ReadyOrWait(t, Nr.poll, timeoutNs, host, inVm,
            () =>
            {
                var rev = ReadyNow(LookUp(asked));
                var outb = (byte[])raw.Clone();
                int count = 0;
                for (int k = 0; k < nfds; k++)
                {
                    BinaryPrimitives.WriteInt16LittleEndian(outb.AsSpan(k * 8 + 6), rev[k]);
                    if (rev[k] != 0) count++;
                }
                return (HostResult.Of(count).Write(fdsAddr, outb), count);
            },
            () => WaitFds(LookUp(asked)));
    }

    /// <summary>ppoll: poll with a timespec (its signal mask: <see cref="RegisterCallMasks"/>).</summary>
    long Ppoll(GuestThread t, ulong fds, int nfds, ulong tsp)
    {
        long ns = -1;
        if (tsp != 0)
        {
            var ts = Mem.ReadBytes(tsp, 16);
            long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), sub = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
            if (sec < 0 || sub < 0 || sub >= 1_000_000_000) return -Errno.EINVAL;
            ns = sec > long.MaxValue / 2_000_000_000 ? long.MaxValue / 2 : sec * 1_000_000_000 + sub;
        }
        return PollFds(t, fds, nfds, ns);
    }

    /// <summary>select/pselect6: a poll over the descriptors of the guest's fd_sets; the time left is written back.</summary>
    long Select(GuestThread t, int nfds, ulong rd, ulong wr, ulong ex, ulong tmo, bool pselect)
    {
        if (nfds < 0) return -Errno.EINVAL;
        nfds = Math.Min(nfds, 65536);
        int bytes = (nfds + 63) / 64 * 8;
        byte[]? R = rd != 0 ? Mem.ReadBytes(rd, bytes) : null, W = wr != 0 ? Mem.ReadBytes(wr, bytes) : null, X = ex != 0 ? Mem.ReadBytes(ex, bytes) : null;
        static bool Bit(byte[]? s, int i) => s != null && (s[i >> 3] & (1 << (i & 7))) != 0;
        var asked = new List<(int Fd, short Events)>();
        for (int i = 0; i < nfds; i++)
        {
            short ev = (short)((Bit(R, i) ? Poll.IN : 0) | (Bit(W, i) ? Poll.OUT : 0) | (Bit(X, i) ? Poll.PRI : 0));
            if (ev == 0) continue;
            if (!Fds.ContainsKey(i)) return -Errno.EBADF;
            asked.Add((i, ev));
        }
        long ns = -1;
        long unit = pselect ? 1 : 1000;
        if (tmo != 0)
        {
            var ts = Mem.ReadBytes(tmo, 16);
            long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), sub = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
            if (sec < 0 || sub < 0 || sub >= 1_000_000_000 / unit) return -Errno.EINVAL;
            ns = sec > long.MaxValue / 2_000_000_000 ? long.MaxValue / 2 : sec * 1_000_000_000 + sub * unit;
            CheckWritable(tmo, 16);
        }
        foreach (var (s, a) in new[] { (R, rd), (W, wr), (X, ex) }) if (s != null) CheckWritable(a, (ulong)bytes);
        var set = asked.ToArray();
        var now = LookUp(set);
        return ReadyOrWait(t, pselect ? Nr.pselect6 : Nr.select, ns, now.Any(e => IsHostBacked(e.File)), now.Any(e => !IsHostBacked(e.File)),
            () =>
            {
                var rev = ReadyNow(LookUp(set));
                byte[]? oR = R != null ? new byte[bytes] : null, oW = W != null ? new byte[bytes] : null, oX = X != null ? new byte[bytes] : null;
                int count = 0;
                void Set(byte[]? s, int i) { if (s != null) { s[i >> 3] |= (byte)(1 << (i & 7)); count++; } }
                for (int k = 0; k < set.Length; k++)
                {
                    var (g, ev) = set[k];
                    if ((ev & Poll.IN) != 0 && (rev[k] & (Poll.IN | Poll.HUP | Poll.ERR)) != 0) Set(oR, g);
                    if ((ev & Poll.OUT) != 0 && (rev[k] & (Poll.OUT | Poll.ERR)) != 0) Set(oW, g);
                    if ((ev & Poll.PRI) != 0 && (rev[k] & Poll.PRI) != 0) Set(oX, g);
                }
                var res = HostResult.Of(count);
                if (oR != null) res.Write(rd, oR);
                if (oW != null) res.Write(wr, oW);
                if (oX != null) res.Write(ex, oX);
                if (tmo != 0)
                {
                    long left = TimeLeft(t, ns);
                    var ts = new byte[16];
                    BinaryPrimitives.WriteInt64LittleEndian(ts, left / 1_000_000_000);
                    BinaryPrimitives.WriteInt64LittleEndian(ts.AsSpan(8), left % 1_000_000_000 / unit);
                    res.Write(tmo, ts);
                }
                return (res, count);
            },
            () => WaitFds(LookUp(set)));
    }

    /// <summary>epoll_wait: the ready entries of the guest's table, in-VM ones from the descriptions, host ones from
    /// the host epoll (asked without waiting); a wait watches the host epoll descriptor.</summary>
    unsafe long EpollWait(GuestThread t, int epfd, ulong evPtr, int maxEvents, int timeoutMs)
    {
        if (!Fds.TryGetValue(epfd, out var epf)) return -Errno.EBADF;
        if (epf is not EpollFile ep || maxEvents <= 0) return -Errno.EINVAL;
        int n = Math.Min(maxEvents, 4096);
        CheckWritable(evPtr, (ulong)(n * Epoll.EventSize));
        var table = ep.Entries;
        long ns = timeoutMs < 0 ? -1 : timeoutMs * 1_000_000L;
        bool host = false, inVm = false;
        foreach (var e in table.Values)
        {
            if (IsHostBacked(e.File)) host = true;
            else inVm = true;
        }
        return ReadyOrWait(t, Nr.epoll_wait, ns, host, inVm,
            () =>
            {
                // the answer is gathered in the thread's read buffer: in-VM entries first (table order), then what
                // the host epoll reports, translated in place (its slots trail the ones written)
                var buf = ReadScratch(n * Epoll.EventSize);
                int count = 0;
                void Add(uint events, ulong data)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(count * Epoll.EventSize), events);
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(count * Epoll.EventSize + 4), data);
                    count++;
                }
                // every entry is asked (a description can change kind at the attempt at which a backup goes live)
                foreach (var e in table.Values)
                    if (count < n && e.File.ReadyEvents((short)e.Events) is short r && r != 0) Add((ushort)r, e.Data);
                if (host && count < n && ep.HostFd >= 0)
                {
                    int first = count;
                    long got;
                    fixed (byte* p = buf) got = HostSys.Call(Nr.epoll_wait, ep.HostFd, (long)(p + first * Epoll.EventSize), n - first, 0);
                    for (int k = 0; k < got; k++)
                    {
                        // the host reports the guest descriptor as its data: the guest gets its own data back
                        int at = (first + k) * Epoll.EventSize;
                        uint events = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(at));
                        int gfd = (int)BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(at + 4));
                        if (table.TryGetValue(gfd, out var entry)) Add(events, entry.Data);
                    }
                }
                var res = HostResult.Of(count);
                if (count > 0) res.Write(evPtr, buf.AsSpan(0, count * Epoll.EventSize).ToArray());
                return (res, count);
            },
            () => ep.HostFd >= 0 ? [(ep.HostFd, Poll.IN)] : []);
    }
}
