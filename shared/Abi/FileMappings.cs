using ReVirt.Linux;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>
/// File mappings of one guest process. A mapping's bytes are host input and cross the boundary as
/// <see cref="IBoundary.FileContent"/>: a stable regular file (a library, a data file untouched during the run) is
/// recorded by reference, (path, offset, SHA-256), and a replay reads the same range from its own root; any other
/// file is recorded by value. The mapping itself is a private copy in guest memory. A MAP_SHARED writable mapping
/// keeps its file open (as Linux's mapping holds a file reference) and its pages are written back to the file, as
/// file writes through the boundary, on msync, on munmap (or anything mapped over it) and when the guest exits.
/// </summary>
public sealed class FileMappings
{
    sealed class Shared
    {
        public ulong Start, End;
        public long Offset; // file offset of Start
        public required OpenFile File;
    }

    readonly List<Shared> _shared = new();

    /// <summary>The process holds a MAP_SHARED writable mapping (its file stays open; a snapshot cannot carry it yet).</summary>
    public bool HasShared => _shared.Count > 0;

    /// <summary>
    /// Reads up to `len` bytes of the file behind `file` at `offset` into guest memory at `at` (already mapped by the
    /// caller); never more than the file holds. Returns the bytes read or -errno from the host.
    /// </summary>
    public static unsafe long Fill(Kernel k, int tid, OpenFile file, ulong at, int len, long offset)
    {
        k.Boundary.SettleFiles(tid); // a mapping's bytes include the guest's own held writes
        var res = k.Boundary.FileContent(tid, Nr.mmap, new FileRef(file.GuestPath, offset, len, at), () =>
        {
            long r = HostStat.Of(file.HostFd, out var st);
            if (r < 0) return HostResult.Of(r);
            long size = st.Size;
            bool regular = st.IsRegular;
            // a huge mapping of a small file costs what the file holds
            int n = regular ? (int)Math.Clamp(size - offset, 0, len) : len;
            var tmp = new byte[n];
            fixed (byte* p = tmp) r = n == 0 ? 0 : HostSys.Call(Nr.pread64, file.HostFd, (long)p, n, offset);
            var hr = HostResult.Of(r);
            if (r > 0)
            {
                hr.Write(at, r == n ? tmp : tmp.AsSpan(0, (int)r).ToArray());
                hr.ByReference = FileRef.IsStable(k.Fs, file.GuestPath, file.HostFd);
            }
            return hr;
        });
        foreach (var (addr, bytes) in res.Writes) k.Mem.Poke(addr, bytes);
        return res.Value;
    }

    /// <summary>A MAP_SHARED writable mapping of `file` at [start, end) from file offset `offset`.</summary>
    public void AddShared(OpenFile file, ulong start, ulong end, long offset)
    {
        file.RefCount++;
        _shared.Add(new Shared { Start = start, End = end, Offset = offset, File = file });
    }

    /// <summary>msync: writes back the shared pages in [start, end).</summary>
    public void Sync(Kernel k, int tid, ulong start, ulong end)
    {
        foreach (var s in _shared) WriteBack(k, tid, s, Math.Max(start, s.Start), Math.Min(end, s.End));
    }

    /// <summary>[start, end) stops being mapped (munmap, MAP_FIXED over it): write back, then forget that part.</summary>
    public void Unmapping(Kernel k, int tid, ulong start, ulong end)
    {
        for (int i = 0; i < _shared.Count; i++)
        {
            var s = _shared[i];
            if (s.End <= start || s.Start >= end) continue;
            WriteBack(k, tid, s, Math.Max(start, s.Start), Math.Min(end, s.End));
            if (start <= s.Start && end >= s.End) { _shared.RemoveAt(i--); Release(k, s.File); }
            else if (start <= s.Start) { s.Offset += (long)(end - s.Start); s.Start = end; }
            else if (end >= s.End) s.End = start;
            else
            {
                // a hole in the middle: two mappings of the same file
                s.File.RefCount++;
                _shared.Insert(i + 1, new Shared { Start = end, End = s.End, Offset = s.Offset + (long)(end - s.Start), File = s.File });
                s.End = start;
                i++;
            }
        }
    }

    /// <summary>The guest exits: every shared mapping is written back, as the kernel does when the last reference goes.</summary>
    public void ExitAll(Kernel k, int tid)
    {
        foreach (var s in _shared) { WriteBack(k, tid, s, s.Start, s.End); Release(k, s.File); }
        _shared.Clear();
    }

    static void Release(Kernel k, OpenFile f)
    {
        // the guest closed its descriptors already: the mapping held the last reference
        if (--f.RefCount == 0) f.Close(k, k.Current);
    }

    static unsafe void WriteBack(Kernel k, int tid, Shared s, ulong from, ulong to)
    {
        if (to <= from) return;
        byte[] data;
        try { data = k.Mem.ReadBytes(from, (int)Math.Min(to - from, 1 << 30)); }
        catch (GuestFaultException) { return; } // protected against reading (PROT_NONE): nothing written through it
        long off = s.Offset + (long)(from - s.Start);
        k.Boundary.SettleFiles(tid); // written back at once (not held): after the writes the guest made before
        k.Boundary.Syscall(tid, Nr.pwrite64, () =>
        {
            // a shared mapping never extends its file: only what lies before the end of the file is written
            long r = HostStat.Of(s.File.HostFd, out var st);
            if (r < 0) return HostResult.Of(r);
            long size = st.Size;
            int n = (int)Math.Clamp(size - off, 0, data.Length);
            fixed (byte* p = data) return HostResult.Of(n == 0 ? 0 : HostSys.Call(Nr.pwrite64, s.File.HostFd, (long)p, n, off));
        }, reexecuteOnReplay: true);
    }

    /// <summary>
    /// madvise(MADV_DONTNEED): private anonymous pages in the range read as zeros afterwards, as on Linux; file
    /// mappings keep their content (Linux would read the file again, which is what they hold unless written).
    /// </summary>
    public static void DontNeed(GuestMemory mem, ulong start, ulong end)
    {
        var anon = mem.Vmas.Where(v => v.Start < end && start < v.End && (v.Name.Length == 0 || v.Name == "[heap]" || v.Name == "[stack]"))
            .Select(v => (From: Math.Max(v.Start, start), To: Math.Min(v.End, end), v.Prot, v.Name)).ToList();
        foreach (var (from, to, prot, name) in anon) mem.Map(from, to - from, prot, name);
    }
}
