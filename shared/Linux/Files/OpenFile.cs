namespace ReVirt.Linux;

/// <summary>
/// An open file description: what one or more guest descriptors (after dup, or in several processes after a
/// fork) refer to, with its status flags and offset. The kind of description decides how the generic
/// operations behave; a syscall finds the description and asks it, never branches on its kind.
/// The fields are set from guest inputs and logged answers only, so a replay tracks the same values.
/// </summary>
public abstract class OpenFile
{
    /// <summary>The host descriptor behind it (live and recording runs; a replay has none, -1).</summary>
    public int HostFd = -1;
    public string GuestPath = "";
    /// <summary>File status flags the guest gave (open flags without O_CREAT/O_EXCL/O_TRUNC; O_APPEND/O_NONBLOCK
    /// as set by F_SETFL).</summary>
    public int StatusFlags;
    /// <summary>The guest-visible file offset (moved by read/write/readv/writev/lseek/sendfile, not by pread/pwrite).</summary>
    public long Offset;
    /// <summary>Guest descriptors that refer to this description (in every process).</summary>
    public int RefCount = 1;
    /// <summary>The host descriptor's file type (S_IFMT bits; -1 until a host operation looked it up): host-side
    /// knowledge of live and recording runs, never guest state.</summary>
    internal int HostFileType = -1;
    /// <summary>The host answered EOPNOTSUPP to a write with RWF_NOWAIT on this description (a property of the open
    /// host file, fixed for its life): blocking writes poll before they write instead of asking again each time.
    /// Host-side knowledge, never guest state.</summary>
    internal bool HostRefusesNoWait;

    public virtual bool IsDirectory => false;

    /// <summary>st_mode of a description that exists only in the VM (fstat answers without the host); null for
    /// host-backed ones.</summary>
    public virtual uint? StatMode => null;

    /// <summary>st_ino of a description that exists only in the VM (distinct per object, deterministic).</summary>
    public virtual ulong StatInode => 0;

    /// <summary>read/pread64 of up to n bytes into guest memory at buf.</summary>
    public abstract long Read(Kernel k, GuestThread t, ulong buf, int n, long offset);

    /// <summary>write/pwrite64/writev of guest bytes (offset -1: at the file offset).</summary>
    public abstract long Write(Kernel k, GuestThread t, byte[] data, long offset);

    /// <summary>A stream read or receive: performs the host operation unless the description answers itself.</summary>
    public virtual long Receive(Func<long> host) => host();

    /// <summary>A send on a stream: the answer the description gives itself without the host (and the signal it
    /// raises), or null when the send goes to the host.</summary>
    public virtual long? RefusesSend(Kernel k, GuestThread t, int flags) => null;

    /// <summary>accept on a listener.</summary>
    public virtual long Accept(Func<long> host) => host();

    /// <summary>shutdown of a connection.</summary>
    public virtual long Shutdown(Func<long> host) => host();

    /// <summary>poll/select/epoll: events the description reports by itself without asking the host (null: ask
    /// the host about <see cref="HostFd"/>).</summary>
    public virtual short? ReadyEvents(short requested) => null;

    /// <summary>The host descriptor (and events) whose readiness ends a wait on this description (inside host
    /// operations only); null when no host descriptor can wake it: an in-VM description's readiness changes only
    /// with the VM's state, and a waiter that watches one also wakes on every in-VM change.</summary>
    public virtual (int Fd, short Events)? HostWaitFd(short events)
        => ReadyEvents(0) == null && HostFd >= 0 ? (HostFd, events) : null;

    /// <summary>The last descriptor referring to it was closed.</summary>
    public abstract long Close(Kernel k, GuestThread t);
}
