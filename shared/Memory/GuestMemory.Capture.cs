using System.Runtime.CompilerServices;

namespace ReVirt.Memory;

/// <summary>
/// Captures of an address space for machine snapshots, taken in O(1) on the guest thread: beginning one numbers it
/// and empties the write TLB (a fixed 1024 entries), nothing else. From then on the guest's first store to a page
/// (every store after the capture misses the write TLB once per page), a protection change, an unmap or the end of
/// the address space first preserves that page's bytes and protection for the capture (<see cref="Preserve"/>),
/// unless the capture already holds them. The capture reads the other pages directly, on any thread, under the
/// capture's lock, which the guest thread takes only to preserve a page or to add or remove one.
/// Contract: the pages a capture yields are exactly those of the table when it began, each with the bytes and
/// protection it had then.
/// </summary>
public sealed unsafe partial class GuestMemory
{
    /// <summary>Captures begun on this address space (the number of the latest).</summary>
    uint _captures;
    MemoryCapture? _capture;

    /// <summary>Begins a capture of the address space as it is now (guest thread, at an instruction boundary). One
    /// at a time: a capture still being read (one whose transfer was abandoned) is ended, and its reader fails. The
    /// capture must be disposed.</summary>
    public MemoryCapture BeginCapture()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(GuestMemory));
        _capture?.Dispose();
        var c = new MemoryCapture(this, ++_captures);
        Volatile.Write(ref _capture, c);
        FlushWriteTlb(); // every page's next store comes through Translate, which preserves it first
        return c;
    }

    internal void EndCapture(MemoryCapture c) => Interlocked.CompareExchange(ref _capture, null, c);

    /// <summary>Before page p (number pn) changes its bytes or protection or leaves the table (guest thread).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    void Preserve(Page p, ulong pn) => _capture?.Preserve(p, pn);

    /// <summary>Adds or removes a page of the table; under the capture's lock while one may be reading the table.</summary>
    void AddPage(ulong pn, Page p)
    {
        if (_capture is { } c) lock (c.Lock) _pages[pn] = p;
        else _pages[pn] = p;
        _ordered = null;
    }

    void RemovePage(ulong pn)
    {
        if (_capture is { } c) lock (c.Lock) _pages.Remove(pn);
        else _pages.Remove(pn);
        _ordered = null;
    }

    /// <summary>The pages that entered the table before capture `id` (call under the capture's lock).</summary>
    internal List<(ulong PageNumber, Page Page)> PagesBefore(uint id)
    {
        var list = new List<(ulong, Page)>(_pages.Count);
        foreach (var (pn, p) in _pages) if (p.Born < id) list.Add((pn, p));
        return list;
    }
}

/// <summary>
/// One capture of an address space (<see cref="GuestMemory.BeginCapture"/>): the bytes the guest has changed since
/// are kept here, the rest are read from the live pages. <see cref="ReadPages"/> yields the page table as it was when
/// the capture began, in address order.
/// </summary>
public sealed unsafe class MemoryCapture : IDisposable
{
    readonly GuestMemory _mem;
    readonly uint _id;
    /// <summary>Guards the address space's page table and the pages' <see cref="GuestMemory.Page.Saved"/> marks against
    /// the reader.</summary>
    internal readonly Lock Lock = new();
    readonly Dictionary<ulong, (Prot Prot, nint Data)> _preserved = new();
    bool _done;

    internal MemoryCapture(GuestMemory mem, uint id) { _mem = mem; _id = id; }

    /// <summary>Pages the guest changed before the capture had read them (their old bytes were copied).</summary>
    public int Preserved => Volatile.Read(ref _preservedCount);
    int _preservedCount;

    /// <summary>Guest thread: keeps page p's bytes and protection unless the capture holds them already or the page
    /// is younger than the capture.</summary>
    internal void Preserve(GuestMemory.Page p, ulong pn)
    {
        if (p.Born >= _id || Volatile.Read(ref p.Saved) == _id) return;
        lock (Lock)
        {
            if (_done || p.Saved == _id) return;
            byte* copy = PagePool.Rent();
            p.CopyTo(new Span<byte>(copy, (int)GuestMemory.PageSize));
            _preserved[pn] = (p.Prot, (nint)copy);
            _preservedCount++;
            Volatile.Write(ref p.Saved, _id);
        }
    }

    /// <summary>A batch of pages from <see cref="ReadPages"/>: page i has number numbers[i], protection prots[i] and the
    /// bytes bytes[i*4096 .. (i+1)*4096]; `last` when no batch follows.</summary>
    public delegate void PageBatch(ReadOnlySpan<ulong> numbers, ReadOnlySpan<Prot> prots, ReadOnlySpan<byte> bytes, bool last);

    /// <summary>
    /// The pages as they were when the capture began, in address order (any thread; once), up to
    /// <paramref name="batchPages"/> at a time: each page is copied once, from the live page or the capture's kept
    /// copy straight into the batch, under the capture's lock (so a guest's store to it waits for that copy only), and
    /// `visit` is called outside the lock with the batch (valid only during the call). An empty capture gives one empty
    /// last batch.
    /// </summary>
    public void ReadPages(int batchPages, PageBatch visit)
    {
        List<(ulong PageNumber, GuestMemory.Page? Page)> pages;
        lock (Lock)
        {
            if (_done) throw new ObjectDisposedException(nameof(MemoryCapture));
            var live = _mem.PagesBefore(_id);
            var seen = new HashSet<ulong>(live.Count);
            pages = new List<(ulong, GuestMemory.Page?)>(live.Count + _preserved.Count);
            foreach (var (pn, p) in live) { pages.Add((pn, p)); seen.Add(pn); }
            foreach (var pn in _preserved.Keys) if (!seen.Contains(pn)) pages.Add((pn, null));
        }
        pages.Sort((a, b) => a.PageNumber.CompareTo(b.PageNumber));
        const int pageBytes = (int)GuestMemory.PageSize;
        var numbers = new ulong[batchPages];
        var prots = new Prot[batchPages];
        var bytes = new byte[batchPages * pageBytes];
        int n = 0;
        for (int i = 0; i < pages.Count; i++)
        {
            var (pn, page) = pages[i];
            var to = bytes.AsSpan(n * pageBytes, pageBytes);
            lock (Lock)
            {
                if (_done) throw new ObjectDisposedException(nameof(MemoryCapture), "the capture was ended (a newer one began) while it was read");
                if (_preserved.TryGetValue(pn, out var kept))
                {
                    new ReadOnlySpan<byte>((void*)kept.Data, pageBytes).CopyTo(to);
                    prots[n] = kept.Prot;
                }
                else
                {
                    // not preserved, so the guest has neither stored to it nor removed it since the capture began: its
                    // bytes are the capture's (and stay so while the lock is held); marked, the guest's next store
                    // need not copy it
                    var p = page!;
                    p.CopyTo(to); // an image page not used yet is copied from the image, not filled
                    prots[n] = p.Prot;
                    Volatile.Write(ref p.Saved, _id);
                }
            }
            numbers[n++] = pn;
            bool last = i == pages.Count - 1;
            if (n == batchPages || last)
            {
                visit(numbers.AsSpan(0, n), prots.AsSpan(0, n), bytes.AsSpan(0, n * pageBytes), last);
                n = 0;
            }
        }
        if (pages.Count == 0) visit([], [], [], true);
    }

    /// <summary>Ends the capture: the guest stops preserving pages and the kept bytes are freed.</summary>
    public void Dispose()
    {
        lock (Lock)
        {
            if (_done) return;
            _done = true;
            foreach (var (_, d) in _preserved.Values) PagePool.Return((byte*)d);
            _preserved.Clear();
        }
        _mem.EndCapture(this);
    }
}
