using ReVirt.Abi;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// A description backed by a host descriptor in live and recording runs: regular files, directories, eventfds.
/// Every operation goes through the boundary, so a replay (which has no host descriptor) gets the same answers
/// from the log.
/// </summary>
public class HostFile : OpenFile
{
    public bool Directory;
    public override bool IsDirectory => Directory;
    /// <summary>The guest changed the file through this description and its path is in <see cref="RootChanges"/>.</summary>
    public bool ChangesMarked;

    /// <summary>Reads may be logged by reference when the file proves stable (<see cref="ContentReads"/>); not for
    /// streams (stdio, sockets), whose bytes exist nowhere else.</summary>
    protected virtual bool MayReadByReference => true;

    /// <summary>The description is a file of the guest's storage (opened by path: not stdio, a socket or an epoll
    /// instance): reading it or its size waits for the guest's held writes (<see cref="Kernel.SettleFiles"/>).</summary>
    public bool OnStorage => MayReadByReference;

    /// <summary>A held change of this description's file that failed on shared storage after the guest was told it
    /// was made: answered to the guest's next fsync, fdatasync or close.</summary>
    public DeferredStorageError ReleaseErrors { get; init; } = new();

    /// <summary>What the recording's stability check of this description's file found so far (host-side; see
    /// <see cref="FileRef.IsStable(Abi.GuestFs, string, int, ref ReadStamp)"/>).</summary>
    internal ReadStamp ReadStamp;

    /// <summary>Where this description's offset (<see cref="OpenFile.Offset"/>) and its host descriptor's stood, equal,
    /// after the last read logged by reference whose host offset was checked (-1: none yet, or that read was logged by
    /// value). See <see cref="ContentReads"/>: a read from exactly there needs no lseek to know where the host read.</summary>
    internal long VerifiedReadEnd = -1;

    ReadSourceCheck? _sourceCheck;

    /// <summary>What proves this description's reads after its first by reference, once per run (<see cref="ReadSourceCheck"/>).</summary>
    internal ReadSourceCheck SourceCheck => _sourceCheck ??= new ReadSourceCheck(this);

    public override unsafe long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
    {
        if (IsDirectory) return -Errno.EISDIR;
        k.CheckWritable(buf, (ulong)n);
        if (OnStorage) k.SettleFile(this); // the guest reads what it wrote, held writes included
        if (n >= ContentReads.MinBytes && MayReadByReference) return ContentReads.Read(k, t, this, buf, n, offset);
        long HostRead() => k.HostBuffer(t.Cpu, offset < 0 ? Nr.read : Nr.pread64, buf, n,
            p => offset < 0 ? k.WouldWait(t, this, Poll.IN) ?? HostSys.Call(Nr.read, HostFd, p, n) : HostSys.Call(Nr.pread64, HostFd, p, n, offset),
            resultIsLength: true);
        long r = offset < 0 ? Receive(HostRead) : HostRead();
        if (r > 0 && offset < 0) Offset += r;
        return r;
    }

    /// <summary>A write to a file of the guest's: a following backup re-executes it on its own copy; on storage shared
    /// by both replicas a protected primary holds it under the output rule (<see cref="IBoundary.FileWrite"/>).</summary>
    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
    {
        long r = k.WriteHost(t.Cpu, this, data, offset, output: false, reexecuteOnReplay: true);
        if (r > 0) k.Changes.Mark(this);
        return r;
    }

    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        // a held change already known to have failed answers here, as a kernel's write-back error does (close does
        // not wait for what is still held: fsync does)
        return k.Host(t.Cpu, Nr.close, () =>
        {
            long closed = HostFd >= 0 ? HostSys.Call(Nr.close, HostFd) : 0;
            return HostResult.Of(ReleaseErrors.Take() is < 0 and var e ? e : closed);
        }, true).Value;
    }
}

/// <summary>The guest's stdin, stdout and stderr: the host's own descriptors 0-2. Bytes written to 1 and 2 leave
/// the VM (output commit applies); closing them leaves the host's descriptors alone.</summary>
public sealed class StdioFile : HostFile
{
    protected override bool MayReadByReference => false;

    public StdioFile(int fd)
    {
        HostFd = fd;
        GuestPath = $"/dev/fd/{fd}";
    }

    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
        => k.WriteHost(t.Cpu, this, data, offset, output: HostFd is 1 or 2, reexecuteOnReplay: false);

    public override long Close(Kernel k, GuestThread t) => 0;
}

/// <summary>A host socket. It records, for a later takeover, its family, type and protocol, whether it listens
/// and with what backlog, and its bound address (what the host's getsockname said right after bind/listen).</summary>
public class HostSocket : HostFile
{
    protected override bool MayReadByReference => false;

    public int Family, Type, Protocol;
    public byte[]? BoundAddress;
    public bool Listening;
    public int Backlog;
    /// <summary>A blocking connect's host connection is under way (EINPROGRESS): the next attempt waits for it and
    /// reads its outcome. Host-side, set only inside host operations.</summary>
    internal bool ConnectPending;

    public HostSocket() => GuestPath = "socket:";

    /// <summary>A read of a socket is a receive (<see cref="Kernel.ReceiveRead"/>): one host call when bytes are
    /// there, logged as the read it is.</summary>
    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
    {
        if (offset >= 0 || n <= 0) return base.Read(k, t, buf, n, offset);
        long r = k.ReceiveRead(this, buf, n);
        if (r > 0) Offset += r;
        return r;
    }

    /// <summary>write/writev on a connected socket is a send.</summary>
    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
        => offset < 0 ? k.SendBytes(t.Cpu, this, data, 0, null, Nr.write) : base.Write(k, t, data, offset);

    /// <summary>The last close: with bytes held for the socket in the output gate, it takes effect after them.</summary>
    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        return k.Boundary.SocketEnd(t.Cpu.Tid, Nr.close, this, () => HostResult.Of(HostFd >= 0 ? HostSys.Call(Nr.close, HostFd) : 0), true).Value;
    }

    /// <summary>Copies what a takeover needs to know about the socket.</summary>
    protected void CopyFrom(HostSocket s)
    {
        GuestPath = s.GuestPath; StatusFlags = s.StatusFlags; Offset = s.Offset; RefCount = s.RefCount;
        Family = s.Family; Type = s.Type; Protocol = s.Protocol; BoundAddress = s.BoundAddress;
        Listening = s.Listening; Backlog = s.Backlog;
    }
}

/// <summary>
/// A connection only the old primary had: after a takeover it stands in for the socket. Like the kernel after a
/// RST: reads give ECONNRESET once and then end of file, sends EPIPE (and SIGPIPE unless MSG_NOSIGNAL), poll
/// reports hang-up and error at once, accept and shutdown fail.
/// </summary>
public sealed class ResetConnection : HostSocket
{
    /// <summary>The first read reported ECONNRESET (later ones give end of file).</summary>
    internal bool Reported;

    public ResetConnection(HostSocket s)
    {
        CopyFrom(s);
        HostFd = -1;
    }

    public override long Receive(Func<long> host)
    {
        if (Reported) return 0;
        Reported = true;
        return -Errno.ECONNRESET;
    }

    public override long? RefusesSend(Kernel k, GuestThread t, int flags)
    {
        if ((flags & Msg.NOSIGNAL) == 0) k.RaiseSignal(t, Sig.PIPE);
        return -Errno.EPIPE;
    }

    public override long Accept(Func<long> host) => -Errno.EINVAL; // a listener the takeover could not re-open
    public override long Shutdown(Func<long> host) => -Errno.ENOTCONN;

    public override short? ReadyEvents(short requested) => (short)(Poll.HUP | Poll.ERR | (requested & (Poll.IN | Poll.OUT)));

    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        return 0;
    }
}

/// <summary>A guest descriptor registered with an epoll instance: the guest's events mask and user data.</summary>
public sealed class EpollEntry
{
    public required OpenFile File { get; set; }
    public uint Events;
    public ulong Data;
}

/// <summary>An epoll instance: a host epoll (live and recording) and the guest's own table of what is
/// registered (guest fd -> entry). The host reports the guest descriptor as its data; epoll_wait turns it back
/// into the guest's data. The table is ordered by descriptor, so the order in which ready entries are reported
/// depends only on what is registered, not on the history of additions and removals (a machine restored from a
/// snapshot reports them in the same order as the one it was taken from).</summary>
public sealed class EpollFile : HostFile
{
    public readonly SortedDictionary<int, EpollEntry> Entries = new();
    public EpollFile() => GuestPath = "anon_inode:[eventpoll]";
}
