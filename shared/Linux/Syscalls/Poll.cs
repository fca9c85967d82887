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
        => set.Select(e => new PollEntry(e.Fd, e.Fd >= 0 && Fds.TryGetValue(e.Fd, out var f) ? f : null, e.Events)).ToArray();

    static bool IsHostBacked(OpenFile? f) => f != null && f.ReadyEvents(0) == null;

    /// <summary>What each entry reports now (revents): the description itself, or one host poll without waiting over
    /// the host descriptors (inside a host operation only when some entry is host-backed). POLLNVAL for a
    /// descriptor that is not open.</summary>
    static unsafe short[] ReadyNow(PollEntry[] set)
    {
        var rev = new short[set.Length];
        var hostIdx = new List<int>();
        for (int k = 0; k < set.Length; k++)
        {
            var e = set[k];
            if (e.Fd < 0) continue;
            if (e.File == null) rev[k] = Poll.NVAL;
            else if (e.File.ReadyEvents(e.Events) is short ev) rev[k] = ev;
            else hostIdx.Add(k);
        }
        if (hostIdx.Count == 0) return rev;
        var pfd = new byte[hostIdx.Count * 8];
        for (int i = 0; i < hostIdx.Count; i++)
        {
            var e = set[hostIdx[i]];
            BinaryPrimitives.WriteInt32LittleEndian(pfd.AsSpan(i * 8), e.File!.HostFd);
            BinaryPrimitives.WriteInt16LittleEndian(pfd.AsSpan(i * 8 + 4), e.Events);
        }
        fixed (byte* p = pfd) HostSys.Call(Nr.poll, (long)p, hostIdx.Count, 0);
        for (int i = 0; i < hostIdx.Count; i++) rev[hostIdx[i]] = BinaryPrimitives.ReadInt16LittleEndian(pfd.AsSpan(i * 8 + 6));
        return rev;
    }

    /// <summary>The host descriptors a wait on a poll set watches.</summary>
    static (int, short)[] WaitFds(PollEntry[] set)
        => set.Where(e => e.File != null).Select(e => e.File!.HostWaitFd(e.Events)).OfType<(int, short)>().ToArray();

    long PollFds(GuestThread t, ulong fdsAddr, int nfds, long timeoutNs)
    {
        if (nfds < 0 || nfds > 4096) return -Errno.EINVAL;
        var raw = Mem.ReadBytes(fdsAddr, nfds * 8);
        CheckWritable(fdsAddr, (ulong)nfds * 8);
        var asked = new (int Fd, short Events)[nfds];
        for (int k = 0; k < nfds; k++)
            asked[k] = (BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(k * 8)), BinaryPrimitives.ReadInt16LittleEndian(raw.AsSpan(k * 8 + 4)));
        var now = LookUp(asked);
        return ReadyOrWait(t, Nr.poll, timeoutNs, now.Any(e => IsHostBacked(e.File)), now.Any(e => e.File != null && !IsHostBacked(e.File)),
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
        bool host = table.Values.Any(e => IsHostBacked(e.File));
        return ReadyOrWait(t, Nr.epoll_wait, ns, host, table.Values.Any(e => !IsHostBacked(e.File)),
            () =>
            {
                var outb = new List<byte>();
                int count = 0;
                void Add(uint events, ulong data)
                {
                    var ev = new byte[Epoll.EventSize];
                    BinaryPrimitives.WriteUInt32LittleEndian(ev, events);
                    BinaryPrimitives.WriteUInt64LittleEndian(ev.AsSpan(4), data);
                    outb.AddRange(ev);
                    count++;
                }
                foreach (var e in table.Values)
                    if (count < n && e.File.ReadyEvents((short)e.Events) is short r && r != 0) Add((ushort)r, e.Data);
                if (host && count < n && ep.HostFd >= 0)
                {
                    var buf = new byte[(n - count) * Epoll.EventSize];
                    long got;
                    fixed (byte* p = buf) got = HostSys.Call(Nr.epoll_wait, ep.HostFd, (long)p, n - count, 0);
                    for (int k = 0; k < got; k++)
                    {
                        // the host reports the guest descriptor as its data: the guest gets its own data back
                        uint events = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(k * Epoll.EventSize));
                        int gfd = (int)BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(k * Epoll.EventSize + 4));
                        if (table.TryGetValue(gfd, out var entry)) Add(events, entry.Data);
                    }
                }
                var res = HostResult.Of(count);
                if (count > 0) res.Write(evPtr, outb.ToArray());
                return (res, count);
            },
            () => ep.HostFd >= 0 ? [(ep.HostFd, Poll.IN)] : []);
    }
}
