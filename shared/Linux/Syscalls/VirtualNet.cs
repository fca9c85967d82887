using System.Buffers.Binary;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// The guest's AF_INET sockets on the virtual network interface (`--net virtual`, <see cref="MachineOptions.Net"/>):
/// the socket family's handlers get a front that hands a call on a <see cref="VirtualSocket"/> to it and every other
/// call to the host-socket handler behind it (Net.cs), so neither kind branches on the other. Only the frames that
/// cross the interface are nondeterministic input (<see cref="VirtualNic"/>); everything else here is a function of
/// the machine's state and is never logged.
///
/// Waiting: a blocking call answers <see cref="Restart"/> and parks its thread. When no thread of the machine can
/// run and one is parked, <see cref="WaitForNetwork"/> waits on the TAP device (without spinning: a host poll up to
/// the stack's next timer) and hands the stack what arrived — a NetInput record at that instruction — and every
/// parked thread runs its call again. Parking and the all-parked state are as deterministic as the guest, and the
/// wait's outcome is logged, so a replay takes the same frames at the same instruction.
/// </summary>
public sealed partial class Kernel
{
    VirtualNic? _nic;

    /// <summary>The virtual interface, from the guest's first AF_INET socket on (null before, and with `--net host`).</summary>
    public VirtualNic? Nic => _nic;

    /// <summary>Longest time the machine goes on after its end to let the stack deliver what the guest sent before it
    /// closed its sockets (the kernel's orphaned connections), on the stack's clock.</summary>
    public const long NetLingerNs = 10_000_000_000;

    void RegisterVirtualNetSyscalls(SyscallTable r)
    {
        if (Options.Net == null) return;
        r.Wrap(Nr.socket, host => (t, a) => (int)a.A1 == Af.INET ? VirtualSocketCall(t, (int)a.A2, (int)a.A3) : host(t, a));
        OnVirtual(r, Nr.bind, (t, v, a) => ReadSockAddr(a.A2, (uint)a.A3, out var addr) is var e && e < 0 ? e : v.Bind(addr));
        OnVirtual(r, Nr.listen, (t, v, a) => v.Listen((int)a.A2));
        OnVirtual(r, Nr.accept, (t, v, a) => VirtualAccept(t, v, a.A2, a.A3, 0));
        OnVirtual(r, Nr.accept4, (t, v, a) => VirtualAccept(t, v, a.A2, a.A3, (int)a.A4));
        OnVirtual(r, Nr.connect, (t, v, a) =>
        {
            long e = ReadSockAddr(a.A2, (uint)a.A3, out var addr);
            if (e < 0) return e;
            NetSync(t);
            long res = v.Connect(addr);
            NetTransmit(t);
            return res;
        });
        OnVirtual(r, Nr.getsockname, (t, v, a) => VirtualName(v, false, a.A2, a.A3));
        OnVirtual(r, Nr.getpeername, (t, v, a) => VirtualName(v, true, a.A2, a.A3));
        OnVirtual(r, Nr.sendto, (t, v, a) =>
        {
            byte[]? to = null;
            if (a.A5 != 0) { long e = ReadSockAddr(a.A5, (uint)a.A6, out to); if (e < 0) return e; }
            return VirtualSend(t, v, Mem.ReadBytes(a.A2, (int)Math.Min(a.A3, MaxNetIo)), (int)a.A4, to);
        });
        OnVirtual(r, Nr.recvfrom, (t, v, a) => VirtualReceive(t, v, a.A2, (int)Math.Min(a.A3, MaxNetIo), (int)a.A4, a.A5, a.A6));
        OnVirtual(r, Nr.sendmsg, (t, v, a) => VirtualSendMsg(t, v, a.A2, (int)a.A3));
        OnVirtual(r, Nr.recvmsg, (t, v, a) => VirtualRecvMsg(t, v, a.A2, (int)a.A3));
        OnVirtual(r, Nr.shutdown, (t, v, a) =>
        {
            long res = v.Shutdown((int)a.A2);
            NetTransmit(t);
            InVmChanged();
            return res;
        });
        OnVirtual(r, Nr.setsockopt, (t, v, a) => VirtualSetOpt(v, (int)a.A2, (int)a.A3, a.A4, (uint)a.A5));
        OnVirtual(r, Nr.getsockopt, (t, v, a) => VirtualGetOpt(v, (int)a.A2, (int)a.A3, a.A4, a.A5));
        OnVirtual(r, Nr.readv, (t, v, a) => (int)a.A3 is < 0 or > MaxIov ? -Errno.EINVAL : VirtualReceiveVec(t, v, ReadIovecs(a.A2, a.A3, true, out long total), total, 0));
        OnVirtual(r, Nr.ioctl, (t, v, a) => VirtualIoctl(v, a.A2, a.A3));
        // the poll family takes what the interface received before it looks at readiness; a set of in-VM
        // descriptions only (virtual sockets, pipes) is answered without the host and parks when nothing is ready
        foreach (int nr in new[] { Nr.poll, Nr.ppoll, Nr.select, Nr.pselect6 })
            r.Wrap(nr, host => (t, a) => { NetSync(t); return TimedWait(t, a, host(t, a), () => TimedOut(t, a)); });
        foreach (int nr in new[] { Nr.epoll_wait, Nr.epoll_pwait })
            r.Wrap(nr, host => (t, a) =>
            {
                NetSync(t);
                return Fds.TryGetValue((int)a.A1, out var f) && f is EpollFile ep && ep.Entries.Count > 0 && ep.Entries.Values.All(e => e.File.ReadyEvents(0) != null)
                    ? TimedWait(t, a, EpollWaitInVm(ep, a.A2, (int)a.A3, (int)a.A4), () => 0)
                    : host(t, a);
            });
    }

    // ---------------------------------------------------------------- time-outs of in-VM waits

    /// <summary>Where each thread waiting with a time-out in the poll family must give up: (the call's nr and rip, the
    /// deadline on the stack's clock). A parked call runs again from the start, so its first run sets the deadline and
    /// later runs of the same call compare with it.</summary>
    readonly Dictionary<GuestThread, WaitDeadline> _waitDeadlines = new();
    sealed record WaitDeadline(int Nr, ulong Rip, long DeadlineNs); // a class: a tuple value is JIT-compiled at start-up

    /// <summary>The time-out a poll-family call asked for in ns (-1: none, wait for ever).</summary>
    long WaitTimeoutNs(SyscallArgs a)
    {
        long Spec(ulong p, long unitNs)
        {
            if (p == 0) return -1;
            long sec = (long)Mem.Read64(p), sub = (long)Mem.Read64(p + 8);
            return sec < 0 || sub < 0 ? 0 : sec * 1_000_000_000 + sub * unitNs;
        }
        return a.Nr switch
        {
            Nr.poll => (int)a.A3 < 0 ? -1 : (int)a.A3 * 1_000_000L,
            Nr.ppoll => Spec(a.A3, 1),
            Nr.select => Spec(a.A5, 1000),
            Nr.pselect6 => Spec(a.A5, 1),
            _ => (int)a.A4 < 0 ? -1 : (int)a.A4 * 1_000_000L, // epoll_wait, epoll_pwait
        };
    }

    /// <summary>
    /// A poll-family call over in-VM descriptions that parks (<paramref name="result"/> is <see cref="Restart"/>) with a
    /// time-out: the time-out runs on the stack's clock, which moves only with logged input, so when the thread runs the
    /// call again after the deadline it ends with <paramref name="timedOut"/> (0 ready, outputs cleared) in a replay too.
    /// <see cref="WaitForNetwork"/> wakes the machine at the earliest deadline.
    /// </summary>
    long TimedWait(GuestThread t, SyscallArgs a, long result, Func<long> timedOut)
    {
        if (result != Restart || _nic == null) { _waitDeadlines.Remove(t); return result; }
        long timeout = WaitTimeoutNs(a);
        if (timeout < 0) return result;
        long now = _nic.Stack.Now;
        if (!_waitDeadlines.TryGetValue(t, out var d) || d.Nr != a.Nr || d.Rip != t.Cpu.Rip)
            _waitDeadlines[t] = d = new WaitDeadline(a.Nr, t.Cpu.Rip, now + timeout);
        if (now < d.DeadlineNs) return result;
        _waitDeadlines.Remove(t);
        return timedOut();
    }

    /// <summary>A poll/ppoll/select/pselect6 that timed out: nothing ready, as Linux leaves the caller's sets.</summary>
    long TimedOut(GuestThread t, SyscallArgs a)
    {
        switch (a.Nr)
        {
            case Nr.poll: case Nr.ppoll:
                int n = (int)a.A2;
                for (int k = 0; k < n; k++) Mem.WriteBytes(a.A1 + (ulong)k * 8 + 6, new byte[2]); // revents = 0
                return 0;
            default: // select, pselect6: every set cleared, no time left
                int bytes = ((int)a.A1 + 63) / 64 * 8;
                foreach (var set in new[] { a.A2, a.A3, a.A4 }) if (set != 0 && bytes > 0) Mem.WriteBytes(set, new byte[bytes]);
                if (a.A5 != 0) Mem.WriteBytes(a.A5, new byte[16]);
                return 0;
        }
    }

    /// <summary>The earliest time-out of a parked poll-family call, as a wait from now on the stack's clock.</summary>
    long NextWaitDeadline(long now) => _waitDeadlines.Count == 0 ? long.MaxValue : Math.Max(0, _waitDeadlines.Values.Min(d => d.DeadlineNs) - now);

    /// <summary>Answers a descriptor-first socket call on a virtual socket; any other descriptor goes to the host handler.</summary>
    void OnVirtual(SyscallTable r, int nr, Func<GuestThread, VirtualSocket, SyscallArgs, long> call)
        => r.Wrap(nr, host => (t, a) => Fds.TryGetValue((int)a.A1, out var f) && f is VirtualSocket v ? call(t, v, a) : host(t, a));

    // ---------------------------------------------------------------- the interface

    VirtualNic TheNic(GuestThread t) => _nic ??= new VirtualNic(Options.Net!, Boundary, t.Tid);

    /// <summary>Hands the stack what the interface received since the last call (logged); parked threads look again
    /// when something arrived.</summary>
    internal void NetSync(GuestThread t)
    {
        if (_nic != null && _nic.Sync(Boundary, t.Tid, 0, () => false) > 0) InVmChanged();
    }

    /// <summary>Sends what the stack produced (through the boundary's output rule).</summary>
    internal void NetTransmit(GuestThread t) => _nic?.Transmit(Boundary, t.Tid);

    /// <summary>
    /// No thread can run: when one is parked and the machine has an interface, waits (on the host, not spinning) until
    /// a frame arrives, the stack's next timer is due or a host event (a signal from outside) is pending, hands the
    /// stack what came, and unparks every parked thread. False when there is nothing to wait for.
    /// </summary>
    bool WaitForNetwork()
    {
        if (_nic == null || !_threads.Any(t => t.Parked && !t.Dead)) return false;
        // what the boundary was asked to run at an instruction boundary (a snapshot for a standby) runs here, where a
        // server that waits for its clients spends its time; a request during the wait ends it (Interrupt), and the
        // next round runs it. Cleared before the actions run: a request that comes after them ends the wait.
        _interrupted = false;
        Boundary.AtNetworkWait(this);
        _nic.Sync(Boundary, Current.Tid, NextWaitDeadline(_nic.Stack.Now), () => HostEventsPending || _interrupted);
        InVmChanged();
        return true;
    }

    /// <summary>
    /// The guest has ended and its sockets are closed: lets the stack finish sending what they held (data, FINs) for up
    /// to <see cref="NetLingerNs"/> of its clock, as Linux keeps an exited process's connections until they end.
    /// Every wait is logged like any other, so a replay lingers identically.
    /// </summary>
    void LingerNetwork()
    {
        if (_nic == null) return;
        // the machine's end closes what its processes still hold, in a fixed order (FINs follow the data)
        var open = new List<VirtualSocket>();
        foreach (var p in Processes)
            foreach (var (_, f) in p.Fds.Entries)
                if (f is VirtualSocket v && !open.Contains(v)) open.Add(v);
        foreach (var v in open) v.Close(this, Current);
        long until = _nic.Stack.Now + NetLingerNs;
        while (_nic.Stack.Draining && _nic.Stack.Now < until)
            _nic.Sync(Boundary, Current.Tid, until - _nic.Stack.Now, () => false);
    }

    // ---------------------------------------------------------------- calls

    long VirtualSocketCall(GuestThread t, int type, int protocol)
    {
        if ((type & ~(Sock.TYPE_MASK | Sock.NONBLOCK | Sock.CLOEXEC)) != 0) return -Errno.EINVAL;
        var nic = TheNic(t);
        long r = VirtualSocket.Create(nic, type, protocol, out var s);
        if (r < 0) return r;
        return Fds.Install(s!, (type & Sock.CLOEXEC) != 0);
    }

    long VirtualAccept(GuestThread t, VirtualSocket v, ulong addr, ulong lenPtr, int flags)
    {
        if ((flags & ~(Sock.NONBLOCK | Sock.CLOEXEC)) != 0) return -Errno.EINVAL;
        long e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        NetSync(t);
        long r = v.Accept(flags, out var child);
        if (r < 0) return r;
        int gfd = Fds.Install(child!, (flags & Sock.CLOEXEC) != 0);
        child!.Name(true, out var peer);
        PutAddress(addr, lenPtr, cap, peer);
        return gfd;
    }

    long VirtualName(VirtualSocket v, bool peer, ulong addr, ulong lenPtr)
    {
        if (addr == 0 || lenPtr == 0) return -Errno.EFAULT;
        long e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        e = v.Name(peer, out var a);
        if (e < 0) return e;
        PutAddress(addr, lenPtr, cap, a);
        return 0;
    }

    /// <summary>Writes an output address: min(capacity, length) bytes and the full length.</summary>
    void PutAddress(ulong addr, ulong lenPtr, uint cap, byte[] a)
    {
        if (addr == 0 || lenPtr == 0) return;
        int n = (int)Math.Min((uint)a.Length, cap);
        if (n > 0) Mem.WriteBytes(addr, a.AsSpan(0, n));
        Mem.Write32(lenPtr, (uint)a.Length);
    }

    /// <summary>A send on a virtual socket (send, sendto, sendmsg, write, writev): SIGPIPE on EPIPE unless MSG_NOSIGNAL.</summary>
    internal long VirtualSend(GuestThread t, VirtualSocket v, byte[] data, int flags, byte[]? to)
    {
        long r = v.Send(data, flags, to);
        NetTransmit(t);
        if (r == -Errno.EPIPE && (flags & Msg.NOSIGNAL) == 0) RaiseSignal(t, Sig.PIPE);
        return r;
    }

    /// <summary>A receive into one guest buffer (read, recv, recvfrom), with the sender's address when asked.</summary>
    internal long VirtualReceive(GuestThread t, VirtualSocket v, ulong buf, int n, int flags, ulong addr, ulong lenPtr)
    {
        CheckWritable(buf, (ulong)n);
        long e = OutAddrCapacity(addr, lenPtr, out uint cap);
        if (e < 0) return e;
        var tmp = new byte[Math.Min(n, MaxVirtualRead)];
        NetSync(t);
        long r = v.Receive(tmp, flags, out var from);
        NetTransmit(t); // reading may open the window
        if (r > 0) Mem.WriteBytes(buf, tmp.AsSpan(0, (int)r));
        if (r >= 0 && from != null) PutAddress(addr, lenPtr, cap, from);
        return r;
    }

    /// <summary>Most bytes one receive takes from the stack (its receive buffer is smaller).</summary>
    const int MaxVirtualRead = 1 << 20;

    /// <summary>A receive scattered over iovecs (readv, recvmsg); returns the count and the sender's address.</summary>
    long VirtualReceiveVec(GuestThread t, VirtualSocket v, List<(ulong Base, ulong Len)> vecs, long total, int flags)
        => VirtualReceiveVec(t, v, vecs, total, flags, out _);

    long VirtualReceiveVec(GuestThread t, VirtualSocket v, List<(ulong Base, ulong Len)> vecs, long total, int flags, out byte[]? from)
    {
        var tmp = new byte[(int)Math.Min(total, MaxVirtualRead)];
        NetSync(t);
        long r = v.Receive(tmp, flags, out from);
        NetTransmit(t);
        long off = 0;
        foreach (var (b, l) in vecs)
        {
            if (off >= r) break;
            long take = Math.Min((long)l, r - off);
            Mem.WriteBytes(b, tmp.AsSpan((int)off, (int)take));
            off += take;
        }
        return r;
    }

    long VirtualSendMsg(GuestThread t, VirtualSocket v, ulong msg, int flags)
    {
        long e;
        if ((e = ReadMsgHdr(msg, false, out var h)) < 0 || (e = MsgDestination(h, out var to)) < 0) return e;
        return VirtualSend(t, v, Gather(h), flags, to);
    }

    long VirtualRecvMsg(GuestThread t, VirtualSocket v, ulong msg, int flags)
    {
        long e = ReadMsgHdr(msg, true, out var h);
        if (e < 0) return e;
        long r = VirtualReceiveVec(t, v, h.Vecs, h.Total, flags, out var from);
        if (r < 0) return r;
        var m = h.Raw;
        uint nameLenOut = 0;
        if (h.Name != 0 && from != null)
        {
            int k = Math.Min(from.Length, h.NameLen);
            if (k > 0) Mem.WriteBytes(h.Name, from.AsSpan(0, k));
            nameLenOut = (uint)from.Length;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(8), nameLenOut);
        BinaryPrimitives.WriteUInt64LittleEndian(m.AsSpan(40), 0); // msg_controllen: no control messages
        BinaryPrimitives.WriteInt32LittleEndian(m.AsSpan(48), 0);  // msg_flags
        Mem.WriteBytes(msg, m);
        return r;
    }

    long VirtualSetOpt(VirtualSocket v, int level, int name, ulong val, uint len)
    {
        if (len < 4 || val == 0) return -Errno.EINVAL;
        return v.SetOption(level, name, (int)Mem.Read32(val));
    }

    long VirtualGetOpt(VirtualSocket v, int level, int name, ulong val, ulong lenPtr)
    {
        int cap = (int)Mem.Read32(lenPtr);
        if (cap < 0) return -Errno.EINVAL;
        long e = v.GetOption(level, name, out int value);
        if (e < 0) return e;
        int n = Math.Min(cap, 4);
        if (n > 0) Mem.WriteBytes(val, BitConverter.GetBytes(value).AsSpan(0, n));
        Mem.Write32(lenPtr, 4);
        return 0;
    }

    long VirtualIoctl(VirtualSocket v, ulong req, ulong arg)
    {
        switch (req)
        {
            case Ioctl.FIONREAD: Mem.Write32(arg, (uint)v.Available); return 0;
            case Ioctl.FIONBIO:
                v.StatusFlags = Mem.Read32(arg) != 0 ? v.StatusFlags | Sock.NONBLOCK : v.StatusFlags & ~Sock.NONBLOCK;
                return 0;
            case Ioctl.FIOCLEX: case Ioctl.FIONCLEX: return 0;
            default: return -Errno.ENOTTY;
        }
    }

    /// <summary>epoll_wait over descriptions the VM answers itself (virtual sockets, pipes): level-triggered readiness
    /// in descriptor order; parks when nothing is ready and the caller waits.</summary>
    long EpollWaitInVm(EpollFile ep, ulong evPtr, int maxEvents, int timeout)
    {
        if (maxEvents <= 0) return -Errno.EINVAL;
        int n = Math.Min(maxEvents, 4096);
        CheckWritable(evPtr, (ulong)(n * Epoll.EventSize));
        var outb = new byte[n * Epoll.EventSize];
        int count = 0;
        foreach (var (_, e) in ep.Entries.OrderBy(kv => kv.Key))
        {
            short rev = e.File.ReadyEvents((short)e.Events)!.Value;
            if (rev == 0) continue;
            BinaryPrimitives.WriteUInt32LittleEndian(outb.AsSpan(count * Epoll.EventSize), (ushort)rev);
            BinaryPrimitives.WriteUInt64LittleEndian(outb.AsSpan(count * Epoll.EventSize + 4), e.Data);
            if (++count == n) break;
        }
        if (count == 0) return timeout == 0 ? 0 : Restart;
        Mem.WriteBytes(evPtr, outb.AsSpan(0, count * Epoll.EventSize));
        return count;
    }
}
