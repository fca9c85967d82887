namespace ReVirt.Linux;

/// <summary>
/// An in-VM pipe: a 64 KiB buffer between a read end and a write end. It never touches the host, so nothing about
/// it is logged: its state is a function of the guest's execution, the same in a replay. A read of an empty pipe
/// (or a write to a full one) parks the thread until the pipe changes (<see cref="Kernel.Park"/>).
/// </summary>
public sealed class Pipe
{
    public const int Capacity = 64 * 1024;
    /// <summary>Writes up to this size are atomic (PIPE_BUF).</summary>
    public const int AtomicWrite = 4096;

    readonly byte[] _buf = new byte[Capacity];

    /// <summary>Its inode number (fstat): pipes are numbered in the order the guest makes them.</summary>
    public readonly ulong Inode;

    public Pipe(ulong inode) => Inode = inode;
    int _head, _count;

    /// <summary>Open descriptions of each end (a description counts once however many descriptors share it).</summary>
    public int Readers = 1, Writers = 1;

    public int Count => _count;

    /// <summary>The bytes buffered, oldest first (a snapshot's copy).</summary>
    public byte[] Contents()
    {
        var b = new byte[_count];
        int first = Math.Min(_count, Capacity - _head);
        _buf.AsSpan(_head, first).CopyTo(b);
        _buf.AsSpan(0, _count - first).CopyTo(b.AsSpan(first));
        return b;
    }

    public int Free => Capacity - _count;

    public int Take(Span<byte> dst)
    {
        int n = Math.Min(dst.Length, _count);
        int first = Math.Min(n, Capacity - _head);
        _buf.AsSpan(_head, first).CopyTo(dst);
        _buf.AsSpan(0, n - first).CopyTo(dst[first..]);
        _head = (_head + n) % Capacity;
        _count -= n;
        return n;
    }

    public int Put(ReadOnlySpan<byte> src)
    {
        int n = Math.Min(src.Length, Free);
        int tail = (_head + _count) % Capacity;
        int first = Math.Min(n, Capacity - tail);
        src[..first].CopyTo(_buf.AsSpan(tail, first));
        src[first..n].CopyTo(_buf.AsSpan(0, n - first));
        _count += n;
        return n;
    }
}

/// <summary>The read end of an in-VM pipe.</summary>
public sealed class PipeReader : OpenFile
{
    public readonly Pipe Pipe;
    public PipeReader(Pipe p, int flags) { Pipe = p; GuestPath = "pipe:"; StatusFlags = O.RDONLY | (flags & O.NONBLOCK); }

    public override uint? StatMode => SMode.IFIFO | 0x180;
    public override ulong StatInode => Pipe.Inode;

    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset)
    {
        if (offset >= 0) return -Errno.ESPIPE;
        if (n == 0) return 0;
        k.CheckWritable(buf, (ulong)n);
        if (Pipe.Count == 0)
        {
            if (Pipe.Writers == 0) return 0;
            if ((StatusFlags & O.NONBLOCK) != 0) return -Errno.EAGAIN;
            return Kernel.Restart;
        }
        var tmp = new byte[Math.Min(n, Pipe.Count)];
        int got = Pipe.Take(tmp);
        t.Process.Mem.WriteBytes(buf, tmp.AsSpan(0, got));
        k.InVmChanged();
        return got;
    }

    public override long Write(Kernel k, GuestThread t, byte[] data, long offset) => -Errno.EBADF;

    public override short? ReadyEvents(short requested)
        => (short)(((Pipe.Count > 0 ? Poll.IN : 0) & requested) | (Pipe.Writers == 0 ? Poll.HUP : 0));

    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        Pipe.Readers--;
        k.InVmChanged();
        return 0;
    }
}

/// <summary>The write end of an in-VM pipe.</summary>
public sealed class PipeWriter : OpenFile
{
    public readonly Pipe Pipe;
    public PipeWriter(Pipe p, int flags) { Pipe = p; GuestPath = "pipe:"; StatusFlags = O.WRONLY | (flags & O.NONBLOCK); }

    public override uint? StatMode => SMode.IFIFO | 0x180;
    public override ulong StatInode => Pipe.Inode;

    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset) => -Errno.EBADF;

    /// <summary>
    /// As Linux: a write of at most PIPE_BUF bytes goes in whole or waits; a larger one moves what fits and, when
    /// blocking, parks for the rest (the bytes already moved are kept in <see cref="GuestThread.PartialDone"/> across
    /// the retries, and are what the call returns if a signal interrupts it); non-blocking, it returns what fit or
    /// EAGAIN. With no reader left: EPIPE and SIGPIPE (or the count already moved).
    /// </summary>
    public override long Write(Kernel k, GuestThread t, byte[] data, long offset)
    {
        if (offset >= 0) return -Errno.ESPIPE;
        int done = (int)Math.Min(t.PartialDone, data.Length);
        if (Pipe.Readers == 0)
        {
            k.RaiseSignal(t, Sig.PIPE);
            return done > 0 ? done : -Errno.EPIPE;
        }
        if (data.Length == 0) return 0;
        bool nonBlocking = (StatusFlags & O.NONBLOCK) != 0;
        bool fits = data.Length <= Pipe.AtomicWrite ? Pipe.Free >= data.Length : Pipe.Free > 0;
        if (!fits) return nonBlocking ? -Errno.EAGAIN : Kernel.Restart;
        int n = Pipe.Put(data.AsSpan(done));
        k.InVmChanged();
        if (done + n < data.Length && !nonBlocking)
        {
            t.PartialDone = done + n;
            return Kernel.Restart;
        }
        return done + n;
    }

    public override short? ReadyEvents(short requested)
        => (short)(((Pipe.Free >= Pipe.AtomicWrite ? Poll.OUT : 0) & requested) | (Pipe.Readers == 0 ? Poll.ERR : 0));

    public override long Close(Kernel k, GuestThread t)
    {
        k.ForgetEpollTarget(this);
        Pipe.Writers--;
        k.InVmChanged();
        return 0;
    }
}
