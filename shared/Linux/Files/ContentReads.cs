using ReVirt.Abi;

namespace ReVirt.Linux;

/// <summary>
/// read(2)/pread(2) of a regular file by reference. A program reads its own stable files (python's .pyc modules,
/// a data set) as much as it maps libraries, and logging those bytes by value made a python3 workload's log several
/// hundred KB. Like a file mapping, such a read crosses the boundary as <see cref="IBoundary.FileContent"/>: a
/// recording logs (path, offset, SHA-256) when the file is stable (<see cref="FileRef.IsStable"/>) and the offset
/// the guest's description tracks is where the host read from; a replay reads the same range from its own root and
/// refuses, naming the file, when the bytes differ. Anything else (an unstable file, a short read the host
/// offset does not explain) is logged by value as before.
/// </summary>
static class ContentReads
{
    /// <summary>Below this, the bytes cost less in the log than a reference does.</summary>
    public const int MinBytes = 512;

    /// <summary>Reads up to <paramref name="n"/> bytes at <paramref name="offset"/> (the description's own offset when
    /// negative) into guest memory at <paramref name="buf"/>; the result or -errno.</summary>
    public static unsafe long Read(Kernel k, GuestThread t, HostFile f, ulong buf, int n, long offset)
    {
        long at = offset >= 0 ? offset : f.Offset;
        int nr = offset < 0 ? Nr.read : Nr.pread64;
        var res = k.Boundary.FileContent(t.Tid, nr, new FileRef(f.GuestPath, at, n, buf), () =>
        {
            // a FIFO or a device opened by path may have nothing to read yet: its thread waits, not the machine
            if (offset < 0 && k.WouldWait(t, f, Poll.IN) is long w) return HostResult.Of(w);
            var tmp = new byte[n];
            long r;
            fixed (byte* p = tmp) r = offset < 0 ? HostSys.Call(Nr.read, f.HostFd, (long)p, n) : HostSys.Call(Nr.pread64, f.HostFd, (long)p, n, offset);
            var hr = HostResult.Of(r);
            if (r <= 0) return hr;
            hr.Write(buf, r == n ? tmp : tmp.AsSpan(0, (int)r).ToArray());
            long from = offset >= 0 ? offset : HostSys.Call(Nr.lseek, f.HostFd, 0, Seek.CUR) - r;
            hr.ByReference = from == at && FileRef.IsStable(k.Fs, f.GuestPath, f.HostFd);
            return hr;
        });
        foreach (var (addr, bytes) in res.Writes) k.Mem.Poke(addr, bytes);
        if (res.Value > 0 && offset < 0) f.Offset += res.Value;
        return res.Value;
    }
}
