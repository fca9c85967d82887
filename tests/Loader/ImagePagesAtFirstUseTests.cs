using System.Buffers.Binary;
using ReVirt.Abi;
using ReVirt.Memory;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// A loaded program's pages take their bytes at their first use (<see cref="GuestMemory.PlaceImage"/>), not at load.
/// The guest must not see the difference: the oracle is the file itself read by the test's own program-header walk
/// (each PT_LOAD's file bytes at its address, zeros elsewhere in its pages: what a copy at load gives), and the
/// guest-memory contract around it (a wild pointer faults, an unmapped page is gone, a fresh mapping reads zeros, a
/// fork's child is private, a capture and a digest see every page of the image as it was placed).
/// </summary>
public class ImagePagesAtFirstUseTests
{
    const int PageSize = (int)GuestMemory.PageSize;

    /// <summary>Three segments: a partial first page, code whose last page a writable segment shares, and a
    /// writable segment that ends inside a page followed by zero-filled memory (.bss).</summary>
    static byte[] ThreeSegmentElf()
    {
        var f = new byte[0x3100];
        new Random(11).NextBytes(f);
        f.AsSpan(0, 64 + 3 * 56).Clear();
        f[0] = 0x7F; f[1] = (byte)'E'; f[2] = (byte)'L'; f[3] = (byte)'F'; f[4] = 2; f[5] = 1; f[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(16), ElfImage.EtExec);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), 62);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(24), 0x401000);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(32), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(52), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(54), 56);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(56), 3);
        Phdr(f, 0, 4, 0, 0x400000, 0x300, 0x300);
        Phdr(f, 1, 5, 0x1000, 0x401000, 0x1800, 0x1800);
        Phdr(f, 2, 6, 0x2800, 0x402800, 0x900, 0x3000);
        return f;
    }

    static void Phdr(byte[] f, int k, uint flags, ulong off, ulong vaddr, ulong filesz, ulong memsz)
    {
        var p = f.AsSpan(64 + k * 56);
        BinaryPrimitives.WriteUInt32LittleEndian(p, ElfImage.PtLoad);
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], flags);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], off);
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[32..], filesz);
        BinaryPrimitives.WriteUInt64LittleEndian(p[40..], memsz);
        BinaryPrimitives.WriteUInt64LittleEndian(p[48..], 0x1000);
    }

    /// <summary>The test's own reading of an ET_EXEC file: every page a PT_LOAD's memory covers, as a copy at load
    /// makes it (the file bytes of [vaddr, vaddr + filesz), zeros around them), and which of those pages hold file
    /// bytes (the pages the loader enters in the table).</summary>
    static (SortedDictionary<ulong, byte[]> Pages, SortedSet<ulong> WithFileBytes) Expected(byte[] f)
    {
        var pages = new SortedDictionary<ulong, byte[]>();
        var withBytes = new SortedSet<ulong>();
        foreach (var (off, vaddr, filesz, memsz) in Loads(f))
        {
            for (ulong pn = vaddr / (ulong)PageSize; pn * (ulong)PageSize < vaddr + memsz; pn++)
                if (!pages.ContainsKey(pn)) pages[pn] = new byte[PageSize];
            for (ulong i = 0; i < filesz; i++)
            {
                ulong a = vaddr + i;
                pages[a / (ulong)PageSize][(int)(a % (ulong)PageSize)] = f[(int)(off + i)];
                withBytes.Add(a / (ulong)PageSize);
            }
        }
        return (pages, withBytes);
    }

    /// <summary>The PT_LOAD headers of an ELF64 file: (file offset, address, file size, memory size).</summary>
    static List<(ulong Offset, ulong Vaddr, ulong FileSize, ulong MemSize)> Loads(byte[] f)
    {
        var loads = new List<(ulong, ulong, ulong, ulong)>();
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(f.AsSpan(32));
        int phnum = BinaryPrimitives.ReadUInt16LittleEndian(f.AsSpan(56));
        for (int k = 0; k < phnum; k++)
        {
            var p = f.AsSpan((int)phoff + k * 56);
            if (BinaryPrimitives.ReadUInt32LittleEndian(p) != ElfImage.PtLoad) continue;
            loads.Add((BinaryPrimitives.ReadUInt64LittleEndian(p[8..]), BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
                BinaryPrimitives.ReadUInt64LittleEndian(p[32..]), BinaryPrimitives.ReadUInt64LittleEndian(p[40..])));
        }
        return loads;
    }

    static byte[] Busybox() => File.ReadAllBytes("/bin/busybox");

    public static TheoryData<string> Images => new() { "three segments", "busybox" };

    static byte[] ImageOf(string name) => name == "busybox" ? Busybox() : ThreeSegmentElf();

    static byte[] PageOf(GuestMemory m, ulong pn) => m.ReadBytes(pn * (ulong)PageSize, PageSize);

    /// <summary>Fails when a page's first use fills it other than a copy at load would (the whole page taken from the
    /// file around a segment's partial first or last page; a page two segments share keeping one segment's bytes
    /// only), or when the loader copies every page at load.</summary>
    [Theory, MemberData(nameof(Images))]
    public void EveryPageReadsTheFilesBytesWithZerosAroundThemAndOnlyUsedPagesHoldAFrame(string image)
    {
        var f = ImageOf(image);
        var (pages, withBytes) = Expected(f);
        using var m = new GuestMemory();
        ElfLoader.Load(m, f, image);
        // the page table is what a copy at load makes; no page holds a frame before it is used, except one that two
        // segments share (the second segment's bytes are copied into it)
        Assert.Equal(withBytes.Count, m.PageCount);
        Assert.True(m.FilledPageCount <= 2, $"{m.FilledPageCount} of {m.PageCount} pages were filled at load");
        ulong first = withBytes.Min;
        Assert.Equal(pages[first], PageOf(m, first));
        Assert.True(m.FilledPageCount <= 3);
        foreach (var (pn, bytes) in pages) Assert.True(bytes.AsSpan().SequenceEqual(PageOf(m, pn)), $"page 0x{pn:x}");
        // every page read since (the .bss pages among them, zero-filled at their first use) holds a frame now
        Assert.Equal(pages.Count, m.PageCount);
        Assert.Equal(m.PageCount, m.FilledPageCount);
    }

    /// <summary>Fails when a store to an image page not used yet lands in a frame without the page's bytes (a write's
    /// first use taking a zeroed frame), or when a store to a read-only one, or an access past the image, does not
    /// fault.</summary>
    [Fact]
    public void StoresFaultsAndWildPointersOnPagesNotUsedYet()
    {
        var f = ThreeSegmentElf();
        var (pages, _) = Expected(f);
        using var m = new GuestMemory();
        ElfLoader.Load(m, f, "three");
        // the writable segment's last file page, its first use a store
        const ulong Data = 0x403000;
        m.Write8(Data + 0x80, 0x5A);
        var want = (byte[])pages[Data >> 12].Clone();
        want[0x80] = 0x5A;
        Assert.Equal(want, PageOf(m, Data >> 12));
        // read-only code: the store faults as protected and the page keeps the file's bytes
        var ro = Assert.Throws<GuestFaultException>(() => m.Write64(0x401010, 0));
        Assert.True(ro.Mapped);
        Assert.Equal(pages[0x401], PageOf(m, 0x401));
        // a wild pointer just past the image's last page (the .bss ends at 0x405800, inside it): unmapped
        Assert.Equal(0, m.Read8(0x405FFF));
        var wild = Assert.Throws<GuestFaultException>(() => m.Read8(0x406000));
        Assert.False(wild.Mapped);
        Assert.Throws<GuestFaultException>(() => m.Read8(0x3FF000));
    }

    /// <summary>Fails when an unmap leaves an image page not used yet in the table (it would still read its bytes),
    /// or when mprotect loses an unused page's bytes.</summary>
    [Fact]
    public void UnmapAndMprotectOfPagesNotUsedYet()
    {
        var f = Busybox();
        var (pages, _) = Expected(f);
        using var m = new GuestMemory();
        var prog = ElfLoader.Load(m, f, "busybox");
        const ulong Code = 0x480000; // inside the code segment, never used by this test before
        Assert.True(m.Protect(Code, 2 * GuestMemory.PageSize, Prot.None));
        Assert.Throws<GuestFaultException>(() => m.Read8(Code));
        Assert.True(m.Protect(Code, 2 * GuestMemory.PageSize, Prot.Read | Prot.Write));
        Assert.Equal(pages[Code >> 12], PageOf(m, Code >> 12));
        m.Write8(Code + GuestMemory.PageSize, 1);
        Assert.Equal(1, m.Read8(Code + GuestMemory.PageSize));

        int before = m.PageCount;
        m.Unmap(Code + 2 * GuestMemory.PageSize, 4 * GuestMemory.PageSize);
        Assert.Equal(before - 4, m.PageCount);
        var gone = Assert.Throws<GuestFaultException>(() => m.Read8(Code + 3 * GuestMemory.PageSize));
        Assert.False(gone.Mapped);
        m.Map(Code + 2 * GuestMemory.PageSize, 4 * GuestMemory.PageSize, Prot.Read | Prot.Write);
        Assert.Equal(new byte[PageSize], PageOf(m, (Code >> 12) + 3)); // a fresh mapping: zeros, not the file's bytes

        // brk starts at the page after the image: unmapped until the program asks for it, then zeros
        Assert.Throws<GuestFaultException>(() => m.Read8(prog.BrkStart));
        m.Map(prog.BrkStart, GuestMemory.PageSize, Prot.Read | Prot.Write);
        Assert.Equal(new byte[PageSize], PageOf(m, prog.BrkStart >> 12));
        // the last file page below it: file bytes then the .bss zeros, as placed
        ulong lastFile = (0x5db708UL + 0x9008 - 1) >> 12;
        Assert.Equal(pages[lastFile], PageOf(m, lastFile));
    }

    /// <summary>Fails when a fork's child shares an unused image page's frame without copy-on-write (a store by one
    /// would show in the other).</summary>
    [Fact]
    public void AForksChildAndItsParentReadTheImageAndKeepTheirStoresApart()
    {
        var f = ThreeSegmentElf();
        var (pages, _) = Expected(f);
        using var parent = new GuestMemory();
        ElfLoader.Load(parent, f, "three");
        // page 0x402 holds a frame since the load (two segments share it); 0x403 has not been used
        using var child = parent.Fork();
        child.Write8(0x403000, 0xC1);
        parent.Write8(0x403008, 0xB1);
        child.Write8(0x402900, 0xC2);
        parent.Write8(0x402904, 0xB2);
        var parentWants = (byte[])pages[0x403].Clone();
        parentWants[8] = 0xB1;
        var childWants = (byte[])pages[0x403].Clone();
        childWants[0] = 0xC1;
        Assert.Equal(parentWants, PageOf(parent, 0x403));
        Assert.Equal(childWants, PageOf(child, 0x403));
        Assert.Equal(pages[0x402][0x900], parent.Read8(0x402900));
        Assert.Equal(pages[0x402][0x904], child.Read8(0x402904));
        Assert.Equal(0xB2, parent.Read8(0x402904));
        Assert.Equal(pages[0x401], PageOf(child, 0x401));
        Assert.Equal(pages[0x400], PageOf(parent, 0x400));
    }

    /// <summary>The test's copy at load: the same mappings as the loader's, every file byte poked at load.</summary>
    static GuestMemory PlacedByCopy(byte[] f, GuestMemory loaded)
    {
        var m = new GuestMemory();
        foreach (var v in loaded.Vmas) m.Map(v.Start, v.End - v.Start, v.Prot, v.Name, v.FileOffset);
        foreach (var (off, vaddr, filesz, _) in Loads(f)) m.Poke(vaddr, f.AsSpan((int)off, (int)filesz));
        return m;
    }

    /// <summary>Fails when the digest of pages not used yet differs from that of the same pages copied at load (a
    /// partial page hashed from the file's bytes around it).</summary>
    [Theory, MemberData(nameof(Images))]
    public void TheDigestOfTheImageIsThatOfACopyAtLoad(string image)
    {
        var f = ImageOf(image);
        using var lazy = new GuestMemory();
        ElfLoader.Load(lazy, f, image);
        using var copied = PlacedByCopy(f, lazy);
        var want = ReVirt.Replay.StateDigest.ComputeFromBytes([(Array.Empty<ReVirt.Cpu.CpuState>(), copied)], null);
        Assert.Equal(want, ReVirt.Replay.StateDigest.Compute([(Array.Empty<ReVirt.Cpu.CpuState>(), lazy)], null));
        Assert.Equal(want, ReVirt.Replay.StateDigest.ComputeFromBytes([(Array.Empty<ReVirt.Cpu.CpuState>(), lazy)], null));
    }

    /// <summary>Fails when a capture reads an unused image page other than as placed (its partial pages' zeros left
    /// to whatever the batch buffer held), or when a store after the capture began loses the page's old bytes.</summary>
    [Theory, MemberData(nameof(Images))]
    public void ACaptureHoldsEveryImagePageAsPlacedAndAStoreAfterItDoesNotShowInIt(string image)
    {
        var f = ImageOf(image);
        var (pages, withBytes) = Expected(f);
        using var m = new GuestMemory();
        ElfLoader.Load(m, f, image);
        using var capture = m.BeginCapture();
        // a store after the capture began, to the last page with file bytes (writable data), not used before
        ulong writable = withBytes.Max * GuestMemory.PageSize;
        Assert.True((m.FindVma(writable)!.Prot & Prot.Write) != 0);
        m.Write64(writable, 0xFEED_FACE);
        var got = new SortedDictionary<ulong, byte[]>();
        capture.ReadPages(3, (numbers, prots, bytes, last) =>
        {
            for (int i = 0; i < numbers.Length; i++) got[numbers[i]] = bytes.Slice(i * PageSize, PageSize).ToArray();
        });
        Assert.Equal(withBytes.ToArray(), got.Keys.ToArray());
        foreach (var pn in withBytes) Assert.True(pages[pn].AsSpan().SequenceEqual(got[pn]), $"page 0x{pn:x}");
        Assert.Equal(0xFEED_FACEUL, m.Read64(writable));
    }
}
