using ReVirt.Abi;
using ReVirt.Memory;

namespace ReVirt.Linux;

/// <summary>
/// read(2)/pread(2) of a regular file by reference. A program reads its own stable files (python's .pyc modules,
/// a data set) as much as it maps libraries, and logging those bytes by value made a python3 workload's log several
/// hundred KB. Like a file mapping, such a read crosses the boundary as <see cref="IBoundary.FileContent"/>: a
/// recording logs (path, offset, hash) when the file is stable (<see cref="FileRef.IsStable(Abi.GuestFs, string, int, ref ReadStamp)"/>:
/// checked whole at the description's first such read; every later read of the description is proven by one fstat at
/// the end of the run of reads it belongs to, <see cref="ReadSourceCheck"/>) and the offset
/// the guest's description tracks is where the host read from; a replay reads the same range from its own root and
/// refuses, naming the file, when the bytes differ. Anything else (an unstable file, a short read the host
/// offset does not explain) is logged by value as before.
/// <para>Where the host read from: a pread names its offset; a read(2) went from the host descriptor's own offset, which
/// must be the description's. That is asked (lseek) at a description's first such read and whenever something other
/// than such a read moved the description since (<see cref="HostFile.VerifiedReadEnd"/>); a read that starts where the
/// last checked one ended needs no host call: the read between moved both offsets by the same count, and every other
/// operation on the description (lseek, write, a short read, in any process sharing it) moves both alike or leaves the
/// description elsewhere. The descriptor is the VM's own (stdio never goes by reference), so nothing outside moves
/// its offset unless the guest handed it out (SCM_RIGHTS to a host process); a read from elsewhere is then logged with
/// the wrong offset and its bytes' hash, and the replay refuses it naming the file: never replayed wrong. A recording
/// of sha256sum 8 MB made 2,048 lseeks for this, one per 4 KiB read.</para>
/// The host reads straight into guest memory (<see cref="HostResult.InGuest"/>): no buffer, copy or collection per
/// read; a recording takes the bytes it logs from there.
/// </summary>
static class ContentReads
{
    /// <summary>Below this, the bytes cost less in the log than a reference does.</summary>
    public const int MinBytes = 512;

    /// <summary>The most guest pages one read fills in place (its iovecs live on the stack); a longer read goes
    /// through a buffer.</summary>
    const int MaxInPlacePages = 256;

    /// <summary>Reads up to <paramref name="n"/> bytes at <paramref name="offset"/> (the description's own offset when
    /// negative) into guest memory at <paramref name="buf"/>; the result or -errno.</summary>
    public static unsafe long Read(Kernel k, GuestThread t, HostFile f, ulong buf, int n, long offset)
    {
        long at = offset >= 0 ? offset : f.Offset;
        int nr = offset < 0 ? Nr.read : Nr.pread64;
        int pages = GuestMemory.PagesSpanned(buf, n);
        // every page writable before the boundary is asked, so a fault (EFAULT) comes at the same point whether
        // the read is performed, recorded or replayed
        k.Mem.WritableIovecs(buf, n, pages <= MaxInPlacePages ? stackalloc long[2 * pages] : new long[2 * pages]);
        var res = k.Boundary.FileContent(t.Tid, nr, new FileRef(f.GuestPath, at, n, buf, IntoGuest: true), () =>
        {
            // a FIFO or a device opened by path may have nothing to read yet: its thread waits, not the machine
            if (offset < 0 && k.WouldWait(t, f, Poll.IN) is long w) return HostResult.Of(w);
            long r = pages <= MaxInPlacePages ? ReadInPlace(k.Mem, f.HostFd, buf, n, offset, pages) : ReadThroughBuffer(k.Mem, f.HostFd, buf, n, offset);
            var hr = HostResult.Of(r);
            if (r <= 0) return hr;
            hr.InGuest = buf;
            // a file seen changing during the run never goes by reference again: no host call to find out where
            if (!k.Boundary.KeepsFileContent || f.ReadStamp.Changed) return hr;
            long from = offset >= 0 || at == f.VerifiedReadEnd ? at : HostSys.Call(Nr.lseek, f.HostFd, 0, Seek.CUR) - r;
            if (from != at) hr.ByReference = false;
            else if (f.ReadStamp.Identity != null)
            {
                // found stable before: proven with the run this read joins, at its end (no host call here)
                hr.ByReference = true;
                hr.SourceCheck = f.SourceCheck;
            }
            else hr.ByReference = FileRef.IsStable(k.Fs, f.GuestPath, f.HostFd, ref f.ReadStamp);
            if (offset < 0) f.VerifiedReadEnd = hr.ByReference ? at + r : -1;
            return hr;
        });
        if (res.InGuest == null)
            foreach (var (addr, bytes) in res.Writes) k.Mem.Poke(addr, bytes);
        if (res.Value > 0 && offset < 0) f.Offset += res.Value;
        return res.Value;
    }

    /// <summary>One readv/preadv into the guest pages themselves (host memory the VM owns, made writable first).</summary>
    static unsafe long ReadInPlace(GuestMemory mem, int hostFd, ulong buf, int n, long offset, int pages)
    {
        long* iov = stackalloc long[2 * pages];
        int count = mem.WritableIovecs(buf, n, new Span<long>(iov, 2 * pages));
        return offset < 0 ? HostSys.Call(Nr.readv, hostFd, (long)iov, count) : HostSys.Call(Nr.preadv, hostFd, (long)iov, count, offset, 0);
    }

    /// <summary>A read too long for <see cref="ReadInPlace"/>: into a host buffer, then into guest memory.</summary>
    static unsafe long ReadThroughBuffer(GuestMemory mem, int hostFd, ulong buf, int n, long offset)
    {
        var tmp = GC.AllocateUninitializedArray<byte>(n);
        long r;
        fixed (byte* p = tmp) r = offset < 0 ? HostSys.Call(Nr.read, hostFd, (long)p, n) : HostSys.Call(Nr.pread64, hostFd, (long)p, n, offset);
        if (r > 0) mem.Poke(buf, tmp.AsSpan(0, (int)r));
        return r;
    }
}

/// <summary>
/// The proof a run of by-reference reads of one description ends with (<see cref="Log.IContentSourceCheck"/>): one
/// fstat of the description's host descriptor shows the identity the description's first read found stable (device,
/// inode, size, st_mtime and an st_ctime older than the recording; <see cref="FileRef.Unchanged"/>).
/// <para>Why one check at the run's end proves every read of the run: the kernel sets st_ctime to now whenever the
/// file's content or size changes (it does so before it changes the bytes), and nothing sets it back, so an st_ctime
/// still older than the recording after the run's last read means no byte changed from before the recording began
/// until then: every read of the run got what a replay reading the path gets, as a check after each read showed
/// before (one fstat per read: md5sum 16 MB made 4,096). The writer asks it after the run's last read and before it
/// logs, flushes or ships anything that follows the run (any other record ends the run first), so nothing later in
/// the log — no output, no shipment to a backup — rests on an unchecked read; a changed file has the run logged by
/// value (the bytes the guest got, kept by the writer) and the description's later reads go by value, as before.</para>
/// <para>The descriptor may be closed, or its number reused, by then (a close ends the run only when its record is
/// written, after the close): fstat then fails or shows another identity, and the run goes by value. Another
/// descriptor of the same inode answers as this one would: the question is only whether that inode changed.</para>
/// </summary>
sealed class ReadSourceCheck(HostFile file) : Log.IContentSourceCheck
{
    public bool Unchanged() => FileRef.Unchanged(file.HostFd, ref file.ReadStamp);
}
