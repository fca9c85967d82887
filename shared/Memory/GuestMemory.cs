using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ReVirt.Memory;

/// <summary>Linux protection bits, as mmap/mprotect take them.</summary>
[Flags]
public enum Prot { None = 0, Read = 1, Write = 2, Exec = 4 }

/// <summary>Raised by the memory when the guest touches an address it may not: becomes SIGSEGV for the guest.</summary>
public sealed class GuestFaultException : Exception
{
    public ulong Address { get; }
    public bool IsWrite { get; }
    public bool Mapped { get; }
    /// <summary>The address lies in a file mapping past the end of its file: SIGBUS (BUS_ADRERR), not SIGSEGV.</summary>
    public bool BeyondEndOfFile { get; }
    public GuestFaultException(ulong address, bool isWrite, bool mapped, bool beyondEndOfFile = false)
        : base(beyondEndOfFile ? $"guest {(isWrite ? "write to" : "read of")} address 0x{address:x}, past the end of the mapped file"
                               : $"guest {(isWrite ? "write to" : "read of")} {(mapped ? "protected" : "unmapped")} address 0x{address:x}")
    { Address = address; IsWrite = isWrite; Mapped = mapped; BeyondEndOfFile = beyondEndOfFile; }
}

/// <summary>A store rewrote code of the block that is running; the store is complete and the block must end.</summary>
public sealed class CodeInvalidatedException : Exception { }

/// <summary>A mapping of the guest's address space (the analogue of a Linux VMA).</summary>
public sealed class Vma
{
    public ulong Start, End; // [Start, End), page aligned
    public Prot Prot;
    public string Name = "";
    /// <summary>For a file mapping: the file offset of <see cref="Start"/> (for /proc/self/maps).</summary>
    public long FileOffset;
    /// <summary>A MAP_SHARED mapping.</summary>
    public bool Shared;
    /// <summary>For a file mapping longer than its file: the first page wholly past the end of the file (an absolute
    /// address; <see cref="ulong.MaxValue"/> when none). Touching it raises SIGBUS, as on Linux; the partial page
    /// holding the end of the file reads zeros past it.</summary>
    public ulong BeyondEof = ulong.MaxValue;
    public override string ToString() => $"{Start:x}-{End:x} {Prot} {Name}";

    /// <summary>The part of this mapping from `at` on, as a new VMA (same name, protection and file).</summary>
    public Vma SplitAt(ulong at, Prot prot)
        => new() { Start = at, End = End, Prot = prot, Name = Name, Shared = Shared, FileOffset = FileOffset + (long)(at - Start), BeyondEof = BeyondEof };
}

/// <summary>
/// The guest's 64-bit address space: 4 KiB pages of native memory allocated on first touch, with permissions,
/// and a software TLB (direct mapped, separate for reads and writes) so that the common access is one compare
/// and one load. A guest address never reaches host memory outside the guest's own pages.
/// Pages that hold decoded code are kept out of the write TLB so that a store to them is seen by the slow path,
/// which tells the code cache to drop what it decoded there.
/// </summary>
public sealed unsafe partial class GuestMemory : IDisposable
{
    public const int PageShift = 12;
    public const ulong PageSize = 1UL << PageShift;
    public const ulong PageMask = PageSize - 1;
    public const ulong AddressLimit = 0x0000_8000_0000_0000UL; // user half of the canonical space
    const int TlbBits = 10;
    const int TlbSize = 1 << TlbBits;

    public sealed class Page
    {
        /// <summary>The page's host bytes. A page placed by the loader (<see cref="PlaceImage"/>) has none until its
        /// first use: reading this property then takes a frame and fills it from the image (see
        /// <see cref="FromImage"/>); every path that hands the bytes to the guest or changes them goes through it.</summary>
        public byte* Data
        {
            get { nint d = _data; return d != 0 ? (byte*)d : Fill(); }
            set { _data = (nint)value; _source = default; _fromImage = false; }
        }
        nint _data;
        /// <summary>An unfilled page's bytes: [_at, _at + _length) of the page are _source[_sourceOffset ..], the rest
        /// zero (what the loader's copy would have written into a fresh zeroed page). Contract: the source array is a
        /// program image's bytes, never changed once read (the image cache and the recording rely on the same).</summary>
        ReadOnlyMemory<byte> _source;
        bool _fromImage; // _source is set (a default ReadOnlyMemory cannot be told from an empty one)
        int _sourceOffset;
        int _at, _length;

        /// <summary>A page of a program image whose bytes are taken from <paramref name="source"/> at its first use.</summary>
        internal static Page FromImage(ReadOnlyMemory<byte> source, int sourceOffset, int at, int length, Prot prot, uint born)
            => new() { _source = source, _fromImage = true, _sourceOffset = sourceOffset, _at = at, _length = length, Prot = prot, Born = born };

        /// <summary>Whether the page has host bytes of its own yet (false: an image page not used since it was placed).</summary>
        internal bool Filled => _data != 0 || !_fromImage;

        /// <summary>A copy of an unfilled page for another address space (a fork): it reads the same immutable image
        /// bytes at its own first use, so nothing is shared and nothing needs copying on write.</summary>
        internal Page UnfilledCopy() => new()
        {
            _source = _source, _fromImage = _fromImage, _sourceOffset = _sourceOffset, _at = _at, _length = _length,
            Prot = Prot, HashLo = HashLo, HashHi = HashHi, Hashed = Hashed,
        };

        /// <summary>The page's bytes without filling it: an unfilled page wholly covered by its image is read where
        /// the image holds it (the checkpoint digest hashes it without a frame); any other is filled.</summary>
        internal ReadOnlySpan<byte> Bytes
        {
            get
            {
                // (the page holds _source, and so its owner, while a caller reads the span: the page is in use)
                if (_data == 0 && _fromImage && _length == (int)PageSize) return _source.Span.Slice(_sourceOffset, (int)PageSize);
                return new ReadOnlySpan<byte>(Data, (int)PageSize);
            }
        }

        /// <summary>The hash of an unfilled page wholly covered by its image at a page-aligned offset, when the
        /// image's read kept its pages' hashes (<see cref="KeepImagePageHashes"/>): the checkpoint digest then takes it
        /// without reading the image's bytes (whose first reads from user mode cost ~10 us a page on the hosts measured,
        /// ~5 ms for a 2 MB program at a recording's first checkpoint). The same value <see cref="HashPage"/> gives for
        /// <see cref="Bytes"/>.</summary>
        internal bool TryImageHash(out ulong lo, out ulong hi)
        {
            lo = hi = 0;
            if (_data != 0 || !_fromImage || _length != (int)PageSize || (_sourceOffset & (int)PageMask) != 0) return false;
            if (ImageHolder(_source) is not { } holder || !ImagePageHashes.TryGetValue(holder, out var hashes)) return false;
            int i = 2 * (_sourceOffset >> PageShift);
            if (i + 1 >= hashes.Length) return false;
            (lo, hi) = (hashes[i], hashes[i + 1]);
            return true;
        }

        /// <summary>Copies the page's 4096 bytes to <paramref name="to"/> without filling it (a capture's reader, any
        /// thread).</summary>
        internal void CopyTo(Span<byte> to)
        {
            var src = _source;
            bool fromImage = _fromImage;
            nint d = _data;
            if (d != 0 || !fromImage) { new ReadOnlySpan<byte>((byte*)d, (int)PageSize).CopyTo(to); return; }
            if (_length != (int)PageSize) to.Clear();
            src.Span.Slice(_sourceOffset, _length).CopyTo(to[_at..]);
            GC.KeepAlive(this); // the page holds the native image's owner while its bytes are read
        }

        /// <summary>First use of an image page: a frame with its bytes. The guest's thread fills; should another thread
        /// fill the same page at once, the first frame stays and the other goes back.</summary>
        byte* Fill()
        {
            var src = _source;
            if (!_fromImage) return null; // a released page
            bool whole = _length == (int)PageSize;
            byte* f = whole ? PagePool.Rent() : PagePool.RentZeroed();
            src.Span.Slice(_sourceOffset, _length).CopyTo(new Span<byte>(f + _at, _length));
            GC.KeepAlive(this); // the page holds the native image's owner while its bytes are read
            nint was = Interlocked.CompareExchange(ref _data, (nint)f, 0);
            if (was == 0) return f;
            PagePool.Return(f);
            return (byte*)was;
        }

        public Prot Prot;
        public bool HasCode;
        /// <summary>Non-null while <see cref="Data"/> may be seen by another address space (a fork's copy-on-write,
        /// or a program image's page shared from an <see cref="ImageTemplate"/>): it is then read-only to this one,
        /// and the first store copies it (<see cref="Unshare"/>). Null: the page is this address space's alone.</summary>
        public SharedFrame? Shared;
        /// <summary>Captures begun before the page entered the table (<see cref="BeginCapture"/>): a capture with a
        /// larger number leaves the page out, since the page did not exist when it was taken.</summary>
        public uint Born;
        /// <summary>The capture that holds this page's bytes as they were when it was taken (see
        /// <see cref="MemoryCapture"/>): the guest's first store after it no longer needs to preserve them.</summary>
        public uint Saved;
        /// <summary>XxHash128 of <see cref="Data"/>'s bytes (the 16 bytes XxHash128.Hash writes, read as two words),
        /// valid while <see cref="Hashed"/> (the checkpoint digest rehashes only pages
        /// written since it last ran, see <see cref="HashedPagesInOrder"/>). Two words, not a UInt128: a field of a
        /// type from outside this assembly's version bubble whose layout is not fixed would cost every method that
        /// touches a Page its ReadyToRun code.</summary>
        public ulong HashLo, HashHi;
        /// <summary>Whether <see cref="HashLo"/>, <see cref="HashHi"/> are the hash of the bytes as they are. Contract: cleared by every path
        /// that may change the bytes (a write-TLB fill in <see cref="TryTranslate"/>, a forced write), and set only by
        /// <see cref="HashedPagesInOrder"/>, which also empties the write TLB, so no store reaches a hashed page
        /// without passing through a clearing path first.</summary>
        public bool Hashed;
    }

    /// <summary>A software-TLB entry: the page number it holds (<see cref="ulong.MaxValue"/> when empty) and the
    /// page's addend, the host address of its bytes minus the guest address of the page, so that the host address
    /// of a guest address a on that page is Addend + a (one add, no mask; an entry is only used once its tag
    /// matched, so an empty entry's stale addend is never added).</summary>
    struct TlbEntry
    {
        public ulong Tag;
        public ulong Addend;
        public readonly byte* At(ulong a) => (byte*)(Addend + a);
        public void Fill(ulong pn, byte* data) { Tag = pn; Addend = (ulong)data - (pn << PageShift); }
    }

    readonly TlbEntry* _rtlb;
    readonly TlbEntry* _wtlb;
    readonly Dictionary<ulong, Page> _pages = new();
    readonly List<Vma> _vmas = new(); // sorted by Start, non-overlapping

    /// <summary>Called with a page number when a store hits a page that holds decoded code; returns true when the
    /// block that is running right now was among the code dropped (the store then ends that block).</summary>
    public Func<ulong, bool>? CodeWritten;
    bool _abortAfterStore;

    public GuestMemory()
    {
        // one allocation, the write TLB right after the read TLB (WriteTlbOffset): compiled code keeps one base
        _rtlb = (TlbEntry*)NativeMemory.AllocZeroed((nuint)(2 * TlbSize * sizeof(TlbEntry)));
        _wtlb = _rtlb + TlbSize;
        FlushTlb();
    }

    public IReadOnlyList<Vma> Vmas => _vmas;
    public int PageCount => _pages.Count;

    /// <summary>Pages of the table that hold a frame of their own (the others are image pages not used yet, see
    /// <see cref="PlaceImage"/>).</summary>
    public int FilledPageCount
    {
        get
        {
            int n = 0;
            foreach (var p in _pages.Values) if (p.Filled) n++;
            return n;
        }
    }

    public void FlushTlb()
    {
        for (int i = 0; i < TlbSize; i++) { _rtlb[i].Tag = ulong.MaxValue; _wtlb[i].Tag = ulong.MaxValue; }
    }

    void FlushTlbPage(ulong pn)
    {
        int ix = (int)(pn & (TlbSize - 1));
        if (_rtlb[ix].Tag == pn) _rtlb[ix].Tag = ulong.MaxValue;
        if (_wtlb[ix].Tag == pn) _wtlb[ix].Tag = ulong.MaxValue;
    }

    // ---------------------------------------------------------------- fast paths

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte Read8(ulong a)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _rtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn) return *e->At(a);
        return (byte)ReadSlow(a, 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Read16(ulong a)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _rtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 2) return Unsafe.ReadUnaligned<ushort>(e->At(a));
        return (ushort)ReadSlow(a, 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Read32(ulong a)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _rtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 4) return Unsafe.ReadUnaligned<uint>(e->At(a));
        return (uint)ReadSlow(a, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read64(ulong a)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _rtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 8) return Unsafe.ReadUnaligned<ulong>(e->At(a));
        return ReadSlow(a, 8);
    }

    /// <summary>16 bytes as a vector (element 0 the low 8 bytes). Not UInt128: a method that handles UInt128 values
    /// has no ReadyToRun code, so every SSE load and store handler was JIT-compiled at its first use.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector128<ulong> Read128(ulong a)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _rtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 16) return Unsafe.ReadUnaligned<Vector128<ulong>>(e->At(a));
        ulong hi = ReadSlow(a + 8, 8); // the upper half first, as before: a fault in both halves reports the same address
        return Vector128.Create(ReadSlow(a, 8), hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read(ulong a, int size) => size switch
    {
        1 => Read8(a),
        2 => Read16(a),
        4 => Read32(a),
        _ => Read64(a),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write8(ulong a, byte v)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn) { *e->At(a) = v; return; }
        WriteSlow(a, v, 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write16(ulong a, ushort v)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 2) { Unsafe.WriteUnaligned(e->At(a), v); return; }
        WriteSlow(a, v, 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write32(ulong a, uint v)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 4) { Unsafe.WriteUnaligned(e->At(a), v); return; }
        WriteSlow(a, v, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write64(ulong a, ulong v)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 8) { Unsafe.WriteUnaligned(e->At(a), v); return; }
        WriteSlow(a, v, 8);
    }

    /// <summary>16 bytes from a vector (element 0 to the low 8 bytes); see <see cref="Read128"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write128(ulong a, Vector128<ulong> v)
    {
        ulong pn = a >> PageShift; TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn && (a & PageMask) <= PageSize - 16) { Unsafe.WriteUnaligned(e->At(a), v); return; }
        // check both halves before writing either, so a fault leaves memory unchanged
        ProbeWrite(a, 16);
        WriteSlow(a, v.GetElement(0), 8);
        WriteSlow(a + 8, v.GetElement(1), 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ulong a, ulong v, int size)
    {
        switch (size)
        {
            case 1: Write8(a, (byte)v); break;
            case 2: Write16(a, (ushort)v); break;
            case 4: Write32(a, (uint)v); break;
            default: Write64(a, v); break;
        }
    }

    // ---------------------------------------------------------------- slow paths

    Page? Lookup(ulong pn)
    {
        var p = Lookup(pn, out bool beyondEof);
        if (beyondEof) throw new GuestFaultException(pn << PageShift, false, true, beyondEndOfFile: true);
        return p;
    }

    /// <summary>The page of page number pn, materialised on first touch; null when no mapping covers it, or when
    /// it lies wholly past the end of a mapped file (then <paramref name="beyondEof"/>).</summary>
    Page? Lookup(ulong pn, out bool beyondEof)
    {
        beyondEof = false;
        if (_pages.TryGetValue(pn, out var p)) return p;
        ulong addr = pn << PageShift;
        var vma = FindVma(addr);
        if (vma == null) return null;
        if (addr >= vma.BeyondEof) { beyondEof = true; return null; }
        p = new Page { Data = PagePool.RentZeroed(), Prot = vma.Prot, Born = _captures };
        AddPage(pn, p);
        return p;
    }

    /// <summary>Why an access cannot be made.</summary>
    enum AccessFault : byte { None, Unmapped, Protected, BeyondEndOfFile }

    static GuestFaultException FaultOf(ulong a, bool write, AccessFault why)
        => new(a, write, why != AccessFault.Unmapped, beyondEndOfFile: why == AccessFault.BeyondEndOfFile);

    /// <summary>Page for an access, or throws the guest fault. Fills the TLB.</summary>
    Page Translate(ulong a, bool write) => TryTranslate(a, write, out var why) ?? throw FaultOf(a, write, why);

    /// <summary>Page for an access (filling the TLB, and for a store breaking copy-on-write, preserving a capture's
    /// copy and dropping decoded code), or null with the reason when the guest may not make it.</summary>
    Page? TryTranslate(ulong a, bool write, out AccessFault why)
    {
        why = AccessFault.None;
        if (a >= AddressLimit) { why = AccessFault.Unmapped; return null; }
        ulong pn = a >> PageShift;
        var p = Lookup(pn, out bool beyondEof);
        if (p == null) { why = beyondEof ? AccessFault.BeyondEndOfFile : AccessFault.Unmapped; return null; }
        if (write)
        {
            if ((p.Prot & Prot.Write) == 0) { why = AccessFault.Protected; return null; }
            p.Hashed = false; // every store to the page from here on goes through the entry filled below
            if (_capture != null) Preserve(p, pn);
            if (p.Shared != null) Unshare(p, pn);
            if (p.HasCode)
            {
                p.HasCode = false;
                if (CodeWritten?.Invoke(pn) == true) _abortAfterStore = true;
            }
            TlbEntry* e = _wtlb + (pn & (TlbSize - 1)); e->Fill(pn, p.Data);
        }
        else
        {
            if (p.Prot == Prot.None) { why = AccessFault.Protected; return null; }
            TlbEntry* e = _rtlb + (pn & (TlbSize - 1)); e->Fill(pn, p.Data);
        }
        return p;
    }

    ulong ReadSlow(ulong a, int size)
    {
        ulong v = LoadSlow(a, size);
        if (_fault != AccessFault.None) ThrowFault();
        return v;
    }

    void ProbeWrite(ulong a, int size)
    {
        Translate(a, true);
        if ((a & PageMask) + (ulong)size > PageSize) Translate(a + (ulong)size - 1, true);
    }

    void WriteSlow(ulong a, ulong v, int size)
    {
        int status = StoreSlow(a, v, size);
        if (status == StoreFaulted) ThrowFault();
        if (status == StoreEndsBlock) throw new CodeInvalidatedException();
    }

    // ---------------------------------------------------------------- the compiled tier's side of the TLB

    /// <summary>The compiled tier inlines the TLB probe: entry i of a TLB is at its base + (i &lt;&lt; TlbEntryShift),
    /// the page number it holds (<see cref="ulong.MaxValue"/> when empty) at offset 0 and its addend (host address of
    /// the page's bytes minus the page's guest address, see <see cref="TlbEntry"/>) at offset
    /// <see cref="TlbAddendOffset"/>.</summary>
    public const int TlbIndexMask = TlbSize - 1, TlbEntryShift = 4, TlbAddendOffset = 8;
    /// <summary>The write TLB's base is the read TLB's plus this many bytes.</summary>
    public const int WriteTlbOffset = TlbSize << TlbEntryShift;
    public byte* ReadTlb => (byte*)_rtlb;

    /// <summary><see cref="StoreSlow"/>'s results: the store is done; the guest may not make it (nothing was written,
    /// the fault is pending); the store is done and dropped code of the block that is running, which must end.</summary>
    public const int StoreDone = 0, StoreFaulted = 1, StoreEndsBlock = 2;

    /// <summary>A fault the slow paths found and have not raised yet (<see cref="ThrowFault"/>).</summary>
    AccessFault _fault;
    ulong _faultAddress;
    bool _faultWrite;

    /// <summary>Whether the last <see cref="LoadSlow"/> found a fault (then its value is 0).</summary>
    public bool Faulted => _fault != AccessFault.None;

    int Pend(ulong a, bool write, AccessFault why) { _fault = why; _faultAddress = a; _faultWrite = write; return StoreFaulted; }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    void ThrowFault() => throw TakeFault();

    /// <summary>The fault the last slow path found, as the exception the interpreter's access would have raised
    /// (the compiled tier throws it once it has stored the guest's state); no fault is pending after it.</summary>
    public GuestFaultException TakeFault()
    {
        var why = _fault;
        _fault = AccessFault.None;
        return FaultOf(_faultAddress, _faultWrite, why);
    }

    /// <summary>The slow path of a load (a TLB miss, or an access across two pages), which never throws: the value,
    /// or 0 with <see cref="Faulted"/> set when the guest may not read a byte of it (the first such byte's address
    /// is the fault's).</summary>
    public ulong LoadSlow(ulong a, int size)
    {
        if ((a & PageMask) + (ulong)size <= PageSize)
        {
            var page = TryTranslate(a, false, out var why);
            if (page == null) { Pend(a, false, why); return 0; }
            byte* p = page.Data + (a & PageMask);
            return size switch { 1 => *p, 2 => Unsafe.ReadUnaligned<ushort>(p), 4 => Unsafe.ReadUnaligned<uint>(p), _ => Unsafe.ReadUnaligned<ulong>(p) };
        }
        ulong v = 0;
        for (int i = 0; i < size; i++)
        {
            ulong at = a + (ulong)i;
            var page = TryTranslate(at, false, out var why);
            if (page == null) { Pend(at, false, why); return 0; }
            v |= (ulong)page.Data[at & PageMask] << (8 * i);
        }
        return v;
    }

    /// <summary>The slow path of a store, which never throws: <see cref="StoreDone"/>, <see cref="StoreFaulted"/>
    /// (memory unchanged: both pages of an access across two are checked first) or <see cref="StoreEndsBlock"/>.</summary>
    public int StoreSlow(ulong a, ulong v, int size)
    {
        if ((a & PageMask) + (ulong)size <= PageSize)
        {
            var page = TryTranslate(a, true, out var why);
            if (page == null) return Pend(a, true, why);
            byte* p = page.Data + (a & PageMask);
            switch (size) { case 1: *p = (byte)v; break; case 2: Unsafe.WriteUnaligned(p, (ushort)v); break; case 4: Unsafe.WriteUnaligned(p, (uint)v); break; default: Unsafe.WriteUnaligned(p, v); break; }
        }
        else
        {
            if (TryTranslate(a, true, out var why) == null) return Pend(a, true, why);
            ulong last = a + (ulong)size - 1;
            if (TryTranslate(last, true, out why) == null) return Pend(last, true, why);
            for (int i = 0; i < size; i++) *(Translate(a + (ulong)i, true).Data + ((a + (ulong)i) & PageMask)) = (byte)(v >> (8 * i));
        }
        if (_abortAfterStore) { _abortAfterStore = false; return StoreEndsBlock; }
        return StoreDone;
    }

    // ---------------------------------------------------------------- bulk access (syscalls, loader)

    /// <summary>Copies guest memory to a host buffer; throws GuestFaultException when any byte is not readable.</summary>
    public void ReadBytes(ulong a, Span<byte> dst)
    {
        int done = 0;
        while (done < dst.Length)
        {
            ulong cur = a + (ulong)done;
            int off = (int)(cur & PageMask);
            int n = Math.Min(dst.Length - done, (int)PageSize - off);
            var p = Translate(cur, false);
            new ReadOnlySpan<byte>(p.Data + off, n).CopyTo(dst.Slice(done));
            done += n;
        }
    }

    public byte[] ReadBytes(ulong a, int count) { var b = new byte[count]; ReadBytes(a, b); return b; }

    /// <summary>Copies a host buffer into guest memory, honouring write permission (as a guest store would).</summary>
    public void WriteBytes(ulong a, ReadOnlySpan<byte> src) => WriteBytesCore(a, src, force: false);

    /// <summary>Writes regardless of page protection (the loader filling read-only segments).</summary>
    public void Poke(ulong a, ReadOnlySpan<byte> src) => WriteBytesCore(a, src, force: true);

    /// <summary>
    /// The loader's placement of a segment's file bytes: guest bytes [a, a + length) become
    /// <paramref name="image"/>[offset, offset + length), regardless of protection, as <see cref="Poke"/> would make
    /// them. A page not yet in the table enters it now (so the page table, and with it every digest and capture, is
    /// what a copy at load gives) but takes a frame and its bytes only at its first use (<see cref="Page.Data"/>): a
    /// short run of a large program touches a few of its pages, and the rest cost neither a frame nor a copy. A page
    /// already present (one a segment before filled part of) gets the bytes now. Contract: <paramref name="image"/>
    /// is never changed afterwards. Throws <see cref="GuestFaultException"/> where no mapping covers the range.
    /// </summary>
    public void PlaceImage(ulong a, ReadOnlyMemory<byte> image, int offset, int length)
    {
        if (offset < 0 || length < 0 || offset > image.Length - length) throw new ArgumentOutOfRangeException(nameof(length));
        int done = 0;
        while (done < length)
        {
            ulong cur = a + (ulong)done;
            int off = (int)(cur & PageMask);
            int n = Math.Min(length - done, (int)PageSize - off);
            ulong pn = cur >> PageShift;
            if (_pages.ContainsKey(pn)) Poke(cur, image.Span.Slice(offset + done, n));
            else
            {
                var vma = cur < AddressLimit ? FindVma(cur) : null;
                if (vma == null) throw new GuestFaultException(cur, true, false);
                if (cur >= vma.BeyondEof) throw new GuestFaultException(cur, true, true, beyondEndOfFile: true);
                AddPage(pn, Page.FromImage(image, offset + done, off, n, vma.Prot, _captures));
                FlushTlbPage(pn);
            }
            done += n;
        }
    }

    void WriteBytesCore(ulong a, ReadOnlySpan<byte> src, bool force)
    {
        // probe first so that a fault leaves memory unchanged
        if (!force)
            for (ulong pg = a & ~PageMask; pg < a + (ulong)src.Length; pg += PageSize) Translate(Math.Max(pg, a), true);
        int done = 0;
        _abortAfterStore = false;
        while (done < src.Length)
        {
            ulong cur = a + (ulong)done;
            int off = (int)(cur & PageMask);
            int n = Math.Min(src.Length - done, (int)PageSize - off);
            Page p;
            if (force)
            {
                p = Lookup(cur >> PageShift) ?? throw new GuestFaultException(cur, true, false);
                p.Hashed = false;
                if (_capture != null) Preserve(p, cur >> PageShift);
                if (p.Shared != null) Unshare(p, cur >> PageShift);
                if (p.HasCode) { p.HasCode = false; CodeWritten?.Invoke(cur >> PageShift); }
            }
            else p = Translate(cur, true);
            src.Slice(done, n).CopyTo(new Span<byte>(p.Data + off, n));
            done += n;
        }
        _abortAfterStore = false; // bulk writes come from syscalls, which end their block anyway
    }

    /// <summary>The <paramref name="kind"/> of hash of the guest bytes [a, a + len) into <paramref name="hash"/>
    /// (<see cref="Log.ContentHash.Length"/> bytes), the value <see cref="Log.ContentHash.Compute"/> gives for a copy of
    /// them, without allocation (a recording and a replay hash every by-reference read): a range whose pages follow one
    /// another in host memory is hashed where it is, in one call; another of at most
    /// <see cref="ContentScratchBytes"/> is copied to a per-thread buffer and hashed in one call (a 4 KiB read into a
    /// buffer that straddles two pages, as md5sum's and sha256sum's do, costs a 4 KiB copy, cheaper than the
    /// incremental hash, whose code the runtime would also have to compile for the recording); a longer one goes
    /// through one reused incremental hash per thread, which gives the same value. Throws
    /// <see cref="GuestFaultException"/> when a byte is not readable.</summary>
    public void ContentHash(ulong a, int len, Log.ContentHashKind kind, Span<byte> hash)
    {
        if (len <= 0)
        {
            Log.ContentHash.Compute(kind, default, hash);
            return;
        }
        byte* first = Translate(a, false).Data + (a & PageMask);
        ulong end = a + (ulong)len, next = (a | PageMask) + 1;
        while (next < end && Translate(next, false).Data == first + (next - a)) next += PageSize;
        if (next >= end)
        {
            Log.ContentHash.Compute(kind, new ReadOnlySpan<byte>(first, len), hash);
            return;
        }
        if (len <= ContentScratchBytes)
        {
            var copy = (t_contentScratch ??= new byte[ContentScratchBytes]).AsSpan(0, len);
            ReadBytes(a, copy);
            Log.ContentHash.Compute(kind, copy, hash);
            return;
        }
        try
        {
            AppendToContentHash(kind, new ReadOnlySpan<byte>(first, (int)(next - a)));
            for (ulong cur = next; cur < end;)
            {
                int n = (int)Math.Min(end - cur, PageSize);
                AppendToContentHash(kind, new ReadOnlySpan<byte>(Translate(cur, false).Data, n));
                cur += (ulong)n;
            }
        }
        finally
        {
            // also after a fault: the next hash starts empty
            if (kind == Log.ContentHashKind.XxHash128) t_xxh128!.GetHashAndReset(hash);
            else t_sha256!.GetHashAndReset(hash);
        }
    }

    /// <summary>Appends the guest bytes [a, a + len) to <paramref name="hash"/> where they are, page by page, without
    /// allocation: a replay hashes a run of by-reference reads (<see cref="Log.FileContentRun"/>) read by read (its
    /// recording hashes the copy it keeps of the run's bytes). Throws <see cref="GuestFaultException"/> when a byte is not readable.</summary>
    public void AppendContent(ulong a, int len, Log.Xxh128 hash)
    {
        for (ulong cur = a, end = a + (ulong)Math.Max(len, 0); cur < end;)
        {
            int n = (int)Math.Min(end - cur, PageSize - (cur & PageMask));
            hash.Append(new ReadOnlySpan<byte>(Translate(cur, false).Data + (cur & PageMask), n));
            cur += (ulong)n;
        }
    }

    /// <summary>The longest range <see cref="ContentHash"/> copies to hash in one call when its pages lie apart.</summary>
    public const int ContentScratchBytes = 16 << 10;

    [ThreadStatic] static byte[]? t_contentScratch;

    static void AppendToContentHash(Log.ContentHashKind kind, ReadOnlySpan<byte> bytes)
    {
        if (kind == Log.ContentHashKind.XxHash128) (t_xxh128 ??= new Log.Xxh128()).Append(bytes);
        else (t_sha256 ??= System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256)).AppendData(bytes);
    }

    [ThreadStatic] static System.Security.Cryptography.IncrementalHash? t_sha256;
    [ThreadStatic] static Log.Xxh128? t_xxh128;

    /// <summary>How many pages the guest bytes [a, a + len) touch (len &gt; 0).</summary>
    public static int PagesSpanned(ulong a, int len) => (int)(((a + (ulong)len - 1) >> PageShift) - (a >> PageShift)) + 1;

    /// <summary>
    /// Makes the guest bytes [a, a + len) ready for a host call that fills them in place (read(2) straight into guest
    /// memory) and puts their host addresses in <paramref name="iov"/> as (base, length) pairs, one per page (room for
    /// <see cref="PagesSpanned"/> pairs): each page is translated for writing as a guest store would (copy-on-write
    /// broken, a capture's copy kept, decoded code on it dropped). Throws <see cref="GuestFaultException"/> at the
    /// first page that is not writable, before any byte changes. Returns the count of pairs.
    /// </summary>
    public int WritableIovecs(ulong a, int len, Span<long> iov)
    {
        int count = 0;
        for (ulong cur = a, end = a + (ulong)len; cur < end; count++)
        {
            int off = (int)(cur & PageMask);
            int n = (int)Math.Min(end - cur, PageSize - (ulong)off);
            iov[2 * count] = (long)(Translate(cur, true).Data + off);
            iov[2 * count + 1] = n;
            cur += (ulong)n;
        }
        _abortAfterStore = false; // as for bulk writes: the syscall ends its block anyway
        return count;
    }

    /// <summary>Reads a NUL-terminated string (at most max bytes).</summary>
    public string ReadCString(ulong a, int max = 4096)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < max; i++)
        {
            byte b = Read8(a + (ulong)i);
            if (b == 0) return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
            bytes.Add(b);
        }
        throw new ArgumentException("string too long");
    }

    public bool IsReadable(ulong a, ulong len)
    {
        try { for (ulong pg = a & ~PageMask; pg < a + len; pg += PageSize) Translate(Math.Max(pg, a), false); return true; }
        catch (GuestFaultException) { return false; }
    }

    /// <summary>Reads up to dst.Length bytes of code for the decoder; stops at the first non-executable byte.</summary>
    public int FetchCode(ulong a, Span<byte> dst)
    {
        int n = 0;
        while (n < dst.Length)
        {
            ulong cur = a + (ulong)n;
            if (cur >= AddressLimit) break;
            var p = Lookup(cur >> PageShift);
            if (p == null || (p.Prot & Prot.Exec) == 0) break;
            if (!p.HasCode)
            {
                p.HasCode = true;
                // stores to this page must now take the slow path
                TlbEntry* e = _wtlb + ((cur >> PageShift) & (TlbSize - 1));
                if (e->Tag == cur >> PageShift) e->Tag = ulong.MaxValue;
            }
            int off = (int)(cur & PageMask);
            int k = Math.Min(dst.Length - n, (int)PageSize - off);
            new ReadOnlySpan<byte>(p.Data + off, k).CopyTo(dst.Slice(n));
            n += k;
        }
        return n;
    }

    // ---------------------------------------------------------------- mappings

    public Vma? FindVma(ulong addr)
    {
        int lo = 0, hi = _vmas.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            var v = _vmas[mid];
            if (addr < v.Start) hi = mid - 1;
            else if (addr >= v.End) lo = mid + 1;
            else return v;
        }
        return null;
    }

    public bool IsFree(ulong start, ulong end)
    {
        foreach (var v in _vmas) if (v.Start < end && start < v.End) return false;
        return true;
    }

    /// <summary>Maps [start, start+len) with zeroed pages, replacing whatever was there (MAP_FIXED semantics).</summary>
    public void Map(ulong start, ulong len, Prot prot, string name = "", long fileOffset = 0, bool shared = false)
    {
        len = (len + PageMask) & ~PageMask;
        Unmap(start, len);
        var vma = new Vma { Start = start, End = start + len, Prot = prot, Name = name, FileOffset = fileOffset, Shared = shared };
        int i = 0;
        while (i < _vmas.Count && _vmas[i].Start < start) i++;
        _vmas.Insert(i, vma);
    }

    /// <summary>Marks the pages of the mapping at <paramref name="start"/> from <paramref name="from"/> on as past the
    /// end of its file (see <see cref="Vma.BeyondEof"/>); nothing may have touched them yet.</summary>
    public void MarkBeyondEof(ulong start, ulong from)
    {
        var v = FindVma(start);
        if (v == null || from >= v.End) return;
        FreePages(from, v.End);
        v.BeyondEof = from;
    }

    /// <summary>Removes mappings in [start, start+len), splitting partially covered ones.</summary>
    public void Unmap(ulong start, ulong len)
    {
        len = (len + PageMask) & ~PageMask;
        ulong end = start + len;
        for (int i = 0; i < _vmas.Count; i++)
        {
            var v = _vmas[i];
            if (v.End <= start || v.Start >= end) continue;
            if (v.Start < start && v.End > end)
            {
                var tail = v.SplitAt(end, v.Prot);
                v.End = start;
                _vmas.Insert(i + 1, tail);
                i++;
            }
            else if (v.Start < start) v.End = start;
            else if (v.End > end) { v.FileOffset += (long)(end - v.Start); v.Start = end; }
            else { _vmas.RemoveAt(i); i--; }
        }
        FreePages(start, end);
    }

    void FreePages(ulong start, ulong end)
    {
        ulong count = (end - start) >> PageShift;
        if (count > (ulong)_pages.Count)
        {
            // collect first (freeing changes the dictionary); a loop, not LINQ over ulong (JIT-compiled at start-up)
            var victims = new List<ulong>();
            foreach (var kv in _pages)
                if (kv.Key >= start >> PageShift && kv.Key < end >> PageShift) victims.Add(kv.Key);
            foreach (var pn in victims) FreePage(pn);
        }
        else
            for (ulong pn = start >> PageShift; pn < end >> PageShift; pn++) if (_pages.ContainsKey(pn)) FreePage(pn);
    }

    void FreePage(ulong pn)
    {
        var p = _pages[pn];
        if (p.HasCode) CodeWritten?.Invoke(pn);
        if (_capture != null) Preserve(p, pn);
        RemovePage(pn);
        Release(p);
        FlushTlbPage(pn);
    }

    /// <summary>mprotect: changes protection of whole mappings in the range (splitting VMAs as needed).</summary>
    public bool Protect(ulong start, ulong len, Prot prot)
    {
        len = (len + PageMask) & ~PageMask;
        ulong end = start + len;
        // every page in the range must be mapped (ENOMEM otherwise)
        for (ulong a = start; a < end;)
        {
            var v = FindVma(a);
            if (v == null) return false;
            a = v.End;
        }
        for (int i = 0; i < _vmas.Count; i++)
        {
            var v = _vmas[i];
            if (v.End <= start || v.Start >= end || v.Prot == prot) continue;
            if (v.Start < start)
            {
                var right = v.SplitAt(start, v.Prot);
                v.End = start; _vmas.Insert(i + 1, right); continue;
            }
            if (v.End > end)
            {
                var right = v.SplitAt(end, v.Prot);
                v.End = end; _vmas.Insert(i + 1, right);
            }
            v.Prot = prot;
        }
        for (ulong pn = start >> PageShift; pn < end >> PageShift; pn++)
        {
            if (_pages.TryGetValue(pn, out var p))
            {
                if (p.HasCode && (prot & Prot.Exec) == 0) { p.HasCode = false; CodeWritten?.Invoke(pn); }
                if (_capture != null && p.Prot != prot) Preserve(p, pn);
                p.Prot = prot;
            }
            FlushTlbPage(pn);
        }
        return true;
    }

    /// <summary>Finds a free range of len bytes below `below`, searching downwards (Linux's top-down mmap layout).</summary>
    public ulong FindFree(ulong len, ulong below, ulong above)
    {
        len = (len + PageMask) & ~PageMask;
        // a length the range cannot hold has no place (below - len would wrap to an address past the user half)
        if (below < above || len > below - above) return 0;
        ulong candidate = (below - len) & ~PageMask;
        for (int i = _vmas.Count - 1; i >= 0 && candidate >= above; i--)
        {
            var v = _vmas[i];
            if (v.Start >= candidate + len) continue;
            if (v.End <= candidate) break;
            if (v.Start < len) return 0;
            candidate = (v.Start - len) & ~PageMask;
        }
        return candidate >= above ? candidate : 0;
    }

    /// <summary>
    /// A copy of the address space for a forked process: the same mappings, and every materialised page shared
    /// copy-on-write (no decoded code: the child has its own code cache). Sharing costs a page record per page
    /// instead of a 4 KiB copy, and a process that execs right after fork (the common case) never copies at all;
    /// the first store to a shared page by either side copies that page (<see cref="Unshare"/>). This address
    /// space's write TLB is emptied, since its pages are now shared.
    /// </summary>
    public GuestMemory Fork()
    {
        var m = new GuestMemory();
        foreach (var v in _vmas) m._vmas.Add(Copy(v));
        m._pages.EnsureCapacity(_pages.Count);
        // the child's pages hold the same bytes: their hashes carry over
        foreach (var (pn, p) in _pages)
            m._pages[pn] = !p.Filled ? p.UnfilledCopy()
                : new Page { Data = p.Data, Prot = p.Prot, Shared = Share(p), HashLo = p.HashLo, HashHi = p.HashHi, Hashed = p.Hashed };
        FlushWriteTlb();
        return m;
    }

    /// <summary>Marks p shared by one more address space and returns its frame.</summary>
    static SharedFrame Share(Page p)
    {
        if (p.Shared == null) p.Shared = new SharedFrame(p.Data) { Refs = 2 }; // p's and the new holder's
        else Interlocked.Increment(ref p.Shared.Refs);
        return p.Shared;
    }

    /// <summary>The first store to a shared page: the page becomes this address space's own (its bytes copied,
    /// unless every other holder has let go of them meanwhile). The read TLB's entry for the page (pn) is dropped,
    /// since it may point at the shared bytes.</summary>
    void Unshare(Page p, ulong pn)
    {
        FlushTlbPage(pn);
        var f = p.Shared!;
        p.Shared = null;
        if (!f.Pinned && Interlocked.CompareExchange(ref f.Refs, 0, 1) == 1) return; // the last holder: keep the bytes
        byte* copy = PagePool.Rent();
        Buffer.MemoryCopy(f.Data, copy, PageSize, PageSize);
        p.Data = copy;
        f.Release();
    }

    static void Release(Page p)
    {
        if (p.Shared is { } f) { p.Shared = null; f.Release(); }
        else if (p.Filled) PagePool.Return(p.Data); // an unfilled image page has no frame
        p.Data = null;
    }

    static Vma Copy(Vma v) => new() { Start = v.Start, End = v.End, Prot = v.Prot, Name = v.Name, FileOffset = v.FileOffset, Shared = v.Shared, BeyondEof = v.BeyondEof };

    void FlushWriteTlb()
    {
        for (int i = 0; i < TlbSize; i++) _wtlb[i].Tag = ulong.MaxValue;
    }

    /// <summary>
    /// Captures this address space (a program image just loaded into an otherwise empty one) as a template that
    /// <see cref="MapTemplate"/> maps into other address spaces without copying: its pages become pinned frames,
    /// never written again (every address space that maps them copies a page on its first store to it).
    /// </summary>
    public ImageTemplate ToTemplate()
    {
        // an array of a struct of ReVirt's own: a List of tuples, or any framework generic over a tuple, is JIT-compiled at start-up
        var pages = new TemplatePage[_pages.Count];
        int n = 0;
        foreach (var (pn, p) in _pages)
        {
            var f = p.Shared ?? new SharedFrame(p.Data);
            f.Pinned = true;
            p.Shared = f;
            Interlocked.Increment(ref f.Refs); // the template's own hold
            pages[n++] = new TemplatePage(pn, p.Prot, f);
        }
        FlushWriteTlb();
        return new ImageTemplate(_vmas.Select(Copy).ToArray(), pages);
    }

    /// <summary>Maps a template's mappings (replacing whatever was there) and shares its pages copy-on-write.</summary>
    public void MapTemplate(ImageTemplate t)
    {
        foreach (var v in t.Vmas)
        {
            Map(v.Start, v.End - v.Start, v.Prot, v.Name, v.FileOffset, v.Shared);
            if (v.BeyondEof != ulong.MaxValue) FindVma(v.Start)!.BeyondEof = v.BeyondEof;
        }
        foreach (var (pn, prot, f) in t.Pages)
        {
            Interlocked.Increment(ref f.Refs);
            if (_pages.ContainsKey(pn)) FreePage(pn);
            AddPage(pn, new Page { Data = f.Data, Prot = prot, Shared = f, Born = _captures });
            FlushTlbPage(pn);
        }
    }

    /// <summary>The pinned frame (see <see cref="ToTemplate"/>) mapped executable at page pn, or null: code decoded
    /// from such a frame is the same in every address space that maps it.</summary>
    public SharedFrame? PinnedCodeFrame(ulong pn)
        => _pages.TryGetValue(pn, out var p) && (p.Prot & Prot.Exec) != 0 && p.Shared is { Pinned: true } f ? f : null;

    /// <summary>Marks page pn as holding decoded code (as <see cref="FetchCode"/> does), for code decoded elsewhere
    /// from the same frame.</summary>
    public void MarkCode(ulong pn)
    {
        if (!_pages.TryGetValue(pn, out var p) || p.HasCode) return;
        p.HasCode = true;
        TlbEntry* e = _wtlb + (pn & (TlbSize - 1));
        if (e->Tag == pn) e->Tag = ulong.MaxValue;
    }

    /// <summary>
    /// A restored address space (a machine snapshot): the mappings exactly as given (sorted, non-overlapping; never
    /// merged or split, so /proc/self/maps reads the same) in an address space that holds none yet.
    /// </summary>
    internal void RestoreLayout(IEnumerable<Vma> vmas)
    {
        if (_vmas.Count != 0 || _pages.Count != 0) throw new InvalidOperationException("an address space is restored only when empty");
        foreach (var v in vmas) _vmas.Add(Copy(v));
    }

    /// <summary>A restored page: its bytes and protection (the page must lie in a mapping). Returns the bytes as this
    /// address space now holds them (valid until the page changes).</summary>
    internal ReadOnlySpan<byte> RestorePage(ulong pn, Prot prot, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != (int)PageSize) throw new ArgumentException("a page is 4096 bytes");
        byte* d = PagePool.Rent();
        bytes.CopyTo(new Span<byte>(d, (int)PageSize));
        if (_pages.TryGetValue(pn, out var old)) Release(old);
        _pages[pn] = new Page { Data = d, Prot = prot, Born = _captures };
        _ordered = null;
        FlushTlbPage(pn);
        return new ReadOnlySpan<byte>(d, (int)PageSize);
    }

    /// <summary>Pages in address order.</summary>
    public IEnumerable<(ulong PageNumber, Page Page)> PagesInOrder()
    {
        Order();
        var (numbers, pages) = (_orderedNumbers, _ordered!); // the table may change while the caller walks it
        for (int i = 0; i < numbers.Length; i++) yield return (numbers[i], pages[i]);
    }

    /// <summary>The pages in address order (numbers in <paramref name="numbers"/>), each with a current hash
    /// (<see cref="Page.HashLo"/>, <see cref="Page.HashHi"/>): only pages written since the last call (or new since then) are hashed again, so a
    /// checkpoint of a large guest costs the pages it wrote plus 32 bytes per page. Empties the write TLB (the
    /// <see cref="Page.Hashed"/> contract). Guest thread, at an instruction boundary; the spans are valid until the
    /// table next changes.</summary>
    public ReadOnlySpan<Page> HashedPagesInOrder(out ReadOnlySpan<ulong> numbers)
    {
        Order();
        foreach (var p in _ordered!)
        {
            if (p.Hashed) continue;
            if (!p.TryImageHash(out p.HashLo, out p.HashHi)) HashPage(p.Bytes, out p.HashLo, out p.HashHi);
            p.Hashed = true;
        }
        FlushWriteTlb();
        numbers = _orderedNumbers;
        return _ordered;
    }

    /// <summary>Hashes of program images' whole pages (<see cref="HashPage"/> of image[4096 k ..], as (lo, hi) at 2k,
    /// 2k + 1), kept by the read of a recording's or replay's program (ProgramFile.ReadAll, ReadImage) while its bytes
    /// were in a small warm buffer; keyed by the object holding the image's bytes (<see cref="ImageHolder"/>: an array
    /// or a native image's memory manager) and held as long as that object is.</summary>
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, ulong[]> ImagePageHashes = new();

    /// <summary>Keeps <paramref name="hashes"/> (see <see cref="ImagePageHashes"/>) as the page hashes of the image
    /// whose whole bytes <paramref name="holder"/> holds (<see cref="ImageHolder"/>), never changed afterwards (the
    /// contract of <see cref="PlaceImage"/>).</summary>
    public static void KeepImagePageHashes(object holder, ulong[] hashes) => ImagePageHashes.AddOrUpdate(holder, hashes);

    /// <summary>The object whose whole contents <paramref name="bytes"/> are (an array or a native program image,
    /// <see cref="Abi.NativeImage"/>); null for a part of one. Identifies an image by the very bytes held, not their
    /// values.</summary>
    public static object? ImageHolder(ReadOnlyMemory<byte> bytes)
    {
        if (MemoryMarshal.TryGetArray(bytes, out var seg)) return seg.Offset == 0 && seg.Count == seg.Array!.Length ? seg.Array : null;
        return Abi.NativeImage.Of(bytes);
    }

    /// <summary>A page's hash as its <see cref="Page.HashLo"/>, <see cref="Page.HashHi"/> keep it: XxHash128 of its
    /// bytes, the 16 bytes read as two little-endian words (the one definition kept hashes and hashes of bytes taken
    /// now share, so the two digests agree).</summary>
    public static void HashPage(ReadOnlySpan<byte> bytes, out ulong lo, out ulong hi)
    {
        byte* h = stackalloc byte[16];
        Log.Xxh128.Hash(bytes, new Span<byte>(h, 16));
        lo = *(ulong*)h;
        hi = *(ulong*)(h + 8);
    }

    /// <summary>The page table in address order, kept between digests and dropped whenever a page enters or leaves
    /// the table (<see cref="AddPage"/>, <see cref="RemovePage"/>, <see cref="RestorePage"/>): a large guest's
    /// checkpoints then neither sort nor look up its page numbers again.</summary>
    Page[]? _ordered;
    ulong[] _orderedNumbers = [];

    void Order()
    {
        if (_ordered != null) return;
        // our own sort: neither LINQ's OrderBy instantiations for ulong (a recording's first checkpoints JIT-compiled
        // some 25 of them) nor Array.Sort<ulong> (JIT-compiled at every recording's and replay's first digest) have
        // ReadyToRun code
        var keys = new ulong[_pages.Count];
        _pages.Keys.CopyTo(keys, 0);
        SortAscending(keys);
        var pages = new Page[keys.Length];
        for (int i = 0; i < keys.Length; i++) pages[i] = _pages[keys[i]];
        _orderedNumbers = keys;
        _ordered = pages;
    }

    /// <summary>Sorts <paramref name="keys"/> in ascending order in place: a heap sort (O(n log n) in every case, no
    /// recursion, no allocation).</summary>
    internal static void SortAscending(Span<ulong> keys)
    {
        int n = keys.Length;
        for (int i = n / 2 - 1; i >= 0; i--) SiftDown(keys, i, n);
        for (int end = n - 1; end > 0; end--)
        {
            (keys[0], keys[end]) = (keys[end], keys[0]);
            SiftDown(keys, 0, end);
        }

        // the largest of the heap [0, size) rooted at i goes up to i
        static void SiftDown(Span<ulong> a, int i, int size)
        {
            ulong v = a[i];
            while (true)
            {
                int child = 2 * i + 1;
                if (child >= size) break;
                if (child + 1 < size && a[child + 1] > a[child]) child++;
                if (a[child] <= v) break;
                a[i] = a[child];
                i = child;
            }
            a[i] = v;
        }
    }

    /// <summary>Frees the pages and the TLBs; a second call (memory shared by a vfork child) does nothing.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // a capture under way keeps what it has not read yet
        if (_capture != null) foreach (var (pn, p) in _pages) Preserve(p, pn);
        foreach (var kv in _pages) Release(kv.Value);
        if (_capture is { } c) lock (c.Lock) _pages.Clear();
        else _pages.Clear();
        _ordered = null;
        NativeMemory.Free(_rtlb); // (with the write TLB)
    }
    bool _disposed;
}

/// <summary>
/// A page's bytes seen by more than one address space (a fork's copy-on-write) or kept by an
/// <see cref="ImageTemplate"/> (<see cref="Pinned"/>: never written in place again). Freed when the last holder lets go.
/// </summary>
public sealed unsafe class SharedFrame
{
    public readonly byte* Data;
    /// <summary>Holders (address spaces, and a template).</summary>
    public int Refs = 1;
    /// <summary>Held by a template: no holder may take the bytes over, so they never change.</summary>
    public bool Pinned;

    public SharedFrame(byte* data) { Data = data; }

    public void Release()
    {
        if (Interlocked.Decrement(ref Refs) == 0) PagePool.Return(Data);
    }
}

/// <summary>A page of an <see cref="ImageTemplate"/>: its number, protection and pinned frame.</summary>
public readonly record struct TemplatePage(ulong PageNumber, Prot Prot, SharedFrame Frame);

/// <summary>The mappings and pages of a loaded program image, mapped copy-on-write into every process that runs it
/// (<see cref="GuestMemory.MapTemplate"/>).</summary>
public sealed class ImageTemplate(Vma[] vmas, TemplatePage[] pages) : IDisposable
{
    public Vma[] Vmas { get; } = vmas;
    public TemplatePage[] Pages { get; } = pages;
    public long Bytes => (long)Pages.Length * (long)GuestMemory.PageSize;

    /// <summary>Lets go of the template's hold on its frames (address spaces that map them keep theirs).</summary>
    public void Dispose()
    {
        foreach (var (_, _, f) in Pages) f.Release();
    }
}
