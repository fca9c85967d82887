using System.Buffers.Binary;
using System.Security.Cryptography;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>A program cannot be started. <see cref="ExitStatus"/> is what a shell would report: 127 when the file
/// (or the interpreter it names) does not exist, 126 when it exists but cannot be run.</summary>
public sealed class ElfLoadException : Exception
{
    public int ExitStatus { get; }
    public ElfLoadException(string m, int exitStatus = 126) : base(m) { ExitStatus = exitStatus; }
    public static ElfLoadException NotFound(string name) => new($"{name}: no such file", 127);
}

/// <summary>What loading a program produced: where it is and what the initial stack needs.</summary>
public sealed class LoadedProgram
{
    public ulong Entry;
    public ulong LoadBias;
    public ulong PhdrAddr;
    public int PhNum;
    public int PhEnt;
    public ulong BrkStart;
    public bool IsPie;
    /// <summary>The ELF interpreter the program names (PT_INTERP), or null for a static program.</summary>
    public string? Interpreter;

    public LoadedProgram Copy() => (LoadedProgram)MemberwiseClone();
}

/// <summary>One program header (Elf64_Phdr), as read from the file.</summary>
public readonly record struct ElfSegment(uint Type, uint Flags, ulong Offset, ulong Vaddr, ulong FileSize, ulong MemSize);

/// <summary>
/// The validated headers of an ELF64 x86-64 executable or shared object. The contract of <see cref="Parse"/>: every
/// offset, count, size and address in the headers is checked against the file and the address space with
/// arithmetic that cannot overflow, so that whatever bytes a file holds, the result is either an image whose
/// segments lie inside the file and inside the guest's half of the address space, or an
/// <see cref="ElfLoadException"/> that says what is wrong. Nothing else is thrown.
/// </summary>
public sealed class ElfImage
{
    public const ushort EtExec = 2, EtDyn = 3;
    public const uint PtLoad = 1, PtInterp = 3, PtPhdr = 6;
    const int PhdrSize = 56;
    const int MaxInterpreterPath = 4096;

    public ushort Type { get; private init; }
    public ulong Entry { get; private init; }
    public ulong PhOff { get; private init; }
    public int PhNum { get; private init; }
    public ElfSegment[] Segments { get; private init; } = new ElfSegment[0];
    public string? Interpreter { get; private init; }
    /// <summary>Page-aligned lowest start and highest end of the loadable segments (before relocation).</summary>
    public ulong LowVaddr { get; private init; }
    public ulong HighVaddr { get; private init; }

    public static bool IsScript(ReadOnlySpan<byte> f) => f.Length >= 2 && f[0] == (byte)'#' && f[1] == (byte)'!';

    public static ElfImage Parse(ReadOnlySpan<byte> f, string name)
    {
        if (f.Length < 4 || f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F')
            throw new ElfLoadException(IsScript(f) ? $"{name}: is a script (#!), not an ELF file" : $"{name}: not an ELF file");
        if (f.Length < 64) throw new ElfLoadException($"{name}: truncated ELF header ({f.Length} bytes)");
        if (f[4] != 2) throw new ElfLoadException($"{name}: not a 64-bit ELF file");
        if (f[5] != 1) throw new ElfLoadException($"{name}: not little-endian");
        ushort type = U16(f, 16), machine = U16(f, 18);
        if (machine != 62) throw new ElfLoadException($"{name}: not an x86-64 program (e_machine {machine})");
        if (type != EtExec && type != EtDyn) throw new ElfLoadException($"{name}: not an executable (e_type {type})");
        ulong entry = U64(f, 24), phoff = U64(f, 32);
        int phentsize = U16(f, 54), phnum = U16(f, 56);
        if (phentsize != PhdrSize) throw new ElfLoadException($"{name}: program header entry size {phentsize} (expected {PhdrSize})");
        // Linux reads at most 64 KiB of program headers
        if (phnum < 1 || phnum > 65536 / PhdrSize) throw new ElfLoadException($"{name}: {phnum} program headers (expected 1 to {65536 / PhdrSize})");
        if (!Within(phoff, (ulong)(phnum * PhdrSize), (ulong)f.Length)) throw new ElfLoadException($"{name}: program headers out of range");
        var segs = new ElfSegment[phnum];
        string? interp = null;
        ulong low = ulong.MaxValue, high = 0, prevEnd = 0;
        for (int k = 0; k < phnum; k++)
        {
            int p = (int)phoff + k * PhdrSize;
            var s = new ElfSegment(U32(f, p), U32(f, p + 4), U64(f, p + 8), U64(f, p + 16), U64(f, p + 32), U64(f, p + 40));
            segs[k] = s;
            if (s.Type == PtInterp)
            {
                if (interp != null) throw new ElfLoadException($"{name}: more than one interpreter (PT_INTERP)");
                if (!Within(s.Offset, s.FileSize, (ulong)f.Length) || s.FileSize < 2 || s.FileSize > MaxInterpreterPath)
                    throw new ElfLoadException($"{name}: interpreter path out of range");
                var path = f.Slice((int)s.Offset, (int)s.FileSize);
                if (path[^1] != 0 || path[..^1].IndexOf((byte)0) >= 0 || path[0] != (byte)'/')
                    throw new ElfLoadException($"{name}: malformed interpreter path");
                interp = System.Text.Encoding.UTF8.GetString(path[..^1]);
            }
            if (s.Type != PtLoad) continue;
            if (s.FileSize > s.MemSize) throw new ElfLoadException($"{name}: segment {k}: file size exceeds memory size");
            if (!Within(s.Offset, s.FileSize, (ulong)f.Length)) throw new ElfLoadException($"{name}: segment {k} lies beyond the end of the file");
            if (!Within(s.Vaddr, s.MemSize, GuestMemory.AddressLimit)) throw new ElfLoadException($"{name}: segment {k} at a bad address");
            if (s.Vaddr < prevEnd) throw new ElfLoadException($"{name}: segment {k} overlaps or precedes the one before it");
            prevEnd = s.Vaddr + s.MemSize;
            low = Math.Min(low, s.Vaddr & ~GuestMemory.PageMask);
            high = Math.Max(high, PageUp(s.Vaddr + s.MemSize));
        }
        if (high == 0) throw new ElfLoadException($"{name}: no loadable segments");
        return new ElfImage
        {
            Type = type, Entry = entry, PhOff = phoff, PhNum = phnum, Segments = segs, Interpreter = interp,
            LowVaddr = low, HighVaddr = high,
        };
    }

    /// <summary>[off, off+len) lies within [0, limit), computed without overflow.</summary>
    public static bool Within(ulong off, ulong len, ulong limit) => off <= limit && len <= limit - off;

    static ulong PageUp(ulong a) => a > ulong.MaxValue - GuestMemory.PageMask ? ulong.MaxValue & ~GuestMemory.PageMask : (a + GuestMemory.PageMask) & ~GuestMemory.PageMask;

    static ushort U16(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b[o..]);
    static uint U32(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b[o..]);
    static ulong U64(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b[o..]);
}

/// <summary>
/// Loads ELF64 x86-64 images into guest memory as Linux's binfmt_elf does with address-space randomisation off:
/// ET_EXEC at its addresses, a position-independent program at <see cref="PieBase"/>, an interpreter (ld.so) at a
/// base the caller chose. Headers are validated by <see cref="ElfImage.Parse"/> first.
/// </summary>
public static class ElfLoader
{
    public const ulong PieBase = 0x5555_5555_4000;
    /// <summary>Lowest address a segment may occupy (Linux's default vm.mmap_min_addr).</summary>
    public const ulong MinAddress = 0x10000;

    public static byte[] Sha256(byte[] image) => SHA256.HashData(image);

    /// <summary>Loads a program: ET_EXEC at its own addresses, ET_DYN at <see cref="PieBase"/>.</summary>
    public static LoadedProgram Load(GuestMemory mem, ReadOnlyMemory<byte> f, string name)
    {
        var img = ElfImage.Parse(f.Span, name);
        return Load(mem, f, img, img.Type == ElfImage.EtDyn ? PieBase - img.LowVaddr : 0, name);
    }

    /// <summary>Loads a validated image with the given bias (0 for ET_EXEC).</summary>
    public static LoadedProgram Load(GuestMemory mem, ReadOnlyMemory<byte> f, ElfImage img, ulong bias, string name)
    {
        if (img.Type == ElfImage.EtExec) bias = 0;
        if (!ElfImage.Within(bias, img.HighVaddr, GuestMemory.AddressLimit) || bias + img.LowVaddr < MinAddress)
            throw new ElfLoadException($"{name}: segments at a bad address");
        ulong phdrAddr = 0, firstVaddr = ulong.MaxValue, firstOffset = 0, maxEnd = 0;
        int k = -1;
        foreach (var s in img.Segments)
        {
            k++;
            if (s.Type == ElfImage.PtPhdr) phdrAddr = s.Vaddr + bias;
            if (s.Type != ElfImage.PtLoad) continue;
            ulong start = (s.Vaddr + bias) & ~GuestMemory.PageMask;
            ulong end = (s.Vaddr + bias + s.MemSize + GuestMemory.PageMask) & ~GuestMemory.PageMask;
            var prot = Prot.None;
            if ((s.Flags & 4) != 0) prot |= Prot.Read;
            if ((s.Flags & 2) != 0) prot |= Prot.Write;
            if ((s.Flags & 1) != 0) prot |= Prot.Exec;
            // segments may share a page: map the new part only, widen protection of the shared page
            ulong mapFrom = start;
            var existing = mem.FindVma(start);
            if (existing != null)
            {
                mapFrom = existing.End;
                if ((existing.Prot | prot) != existing.Prot) mem.Protect(existing.End - GuestMemory.PageSize, GuestMemory.PageSize, existing.Prot | prot);
            }
            if (end > mapFrom) mem.Map(mapFrom, end - mapFrom, prot, name, (long)((s.Offset & ~GuestMemory.PageMask) + (mapFrom - start)));
            // pages take their bytes at first use (PlaceImage): `f` is a program image, never changed once read
            try { mem.PlaceImage(s.Vaddr + bias, f, (int)s.Offset, (int)s.FileSize); }
            catch (GuestFaultException) { throw new ElfLoadException($"{name}: segment {k} cannot be placed"); }
            if (s.Vaddr < firstVaddr) { firstVaddr = s.Vaddr; firstOffset = s.Offset; }
            maxEnd = Math.Max(maxEnd, s.Vaddr + bias + s.MemSize);
        }
        // as Linux: the program headers' address is the first segment's load address plus e_phoff (wrapping
        // arithmetic; a file that lies here gets a wrong AT_PHDR, which only hurts itself)
        if (phdrAddr == 0) phdrAddr = unchecked(firstVaddr + bias + (img.PhOff - firstOffset));
        return new LoadedProgram
        {
            Entry = unchecked(img.Entry + bias),
            LoadBias = bias,
            PhdrAddr = phdrAddr,
            PhNum = img.PhNum,
            PhEnt = 56,
            BrkStart = (maxEnd + GuestMemory.PageMask) & ~GuestMemory.PageMask,
            IsPie = img.Type == ElfImage.EtDyn,
            Interpreter = img.Interpreter,
        };
    }
}
