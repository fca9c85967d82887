using System.Buffers.Binary;
using System.Security.Cryptography;
using ReVirt.Memory;

namespace ReVirt.Abi;

public sealed class ElfLoadException : Exception { public ElfLoadException(string m) : base(m) { } }

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
}

/// <summary>
/// Loads static ELF64 x86-64 executables (ET_EXEC, and static-pie ET_DYN without an interpreter) into guest
/// memory, as Linux's binfmt_elf does with address-space randomisation off.
/// </summary>
public static class ElfLoader
{
    public const ulong PieBase = 0x5555_5555_4000;

    public static byte[] Sha256(byte[] image) => SHA256.HashData(image);

    public static LoadedProgram Load(GuestMemory mem, byte[] f, string name)
    {
        if (f.Length < 64 || f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F')
            throw new ElfLoadException($"{name}: not an ELF file");
        if (f[4] != 2) throw new ElfLoadException($"{name}: not a 64-bit ELF file");
        if (f[5] != 1) throw new ElfLoadException($"{name}: not little-endian");
        ushort type = U16(f, 16), machine = U16(f, 18);
        if (machine != 62) throw new ElfLoadException($"{name}: not an x86-64 program (e_machine {machine})");
        if (type != 2 && type != 3) throw new ElfLoadException($"{name}: not an executable (e_type {type})");
        ulong entry = U64(f, 24), phoff = U64(f, 32);
        int phentsize = U16(f, 54), phnum = U16(f, 56);
        if (phentsize < 56 || phoff + (ulong)(phnum * phentsize) > (ulong)f.Length)
            throw new ElfLoadException($"{name}: program headers out of range");
        for (int k = 0; k < phnum; k++)
            if (U32(f, (int)phoff + k * phentsize) == 3 /* PT_INTERP */)
                throw new ElfLoadException($"{name}: dynamically linked programs are not supported (link with -static)");
        ulong bias = type == 3 ? PieBase : 0;
        ulong maxEnd = 0, phdrAddr = 0, firstVaddr = ulong.MaxValue, firstOffset = 0;
        for (int k = 0; k < phnum; k++)
        {
            int p = (int)phoff + k * phentsize;
            uint ptype = U32(f, p), flags = U32(f, p + 4);
            ulong off = U64(f, p + 8), vaddr = U64(f, p + 16), filesz = U64(f, p + 32), memsz = U64(f, p + 40);
            if (ptype == 6 /* PT_PHDR */) phdrAddr = vaddr + bias;
            if (ptype != 1 /* PT_LOAD */) continue;
            if (filesz > memsz || off + filesz > (ulong)f.Length) throw new ElfLoadException($"{name}: segment {k} out of range");
            ulong start = (vaddr + bias) & ~GuestMemory.PageMask;
            ulong end = (vaddr + bias + memsz + GuestMemory.PageMask) & ~GuestMemory.PageMask;
            if (end > GuestMemory.AddressLimit || start < 0x1000) throw new ElfLoadException($"{name}: segment {k} at a bad address");
            var prot = Prot.None;
            if ((flags & 4) != 0) prot |= Prot.Read;
            if ((flags & 2) != 0) prot |= Prot.Write;
            if ((flags & 1) != 0) prot |= Prot.Exec;
            // segments may share a page: map the new part only, widen protection of a shared page
            ulong mapFrom = start;
            var existing = mem.FindVma(start);
            if (existing != null)
            {
                mapFrom = existing.End;
                if ((existing.Prot | prot) != existing.Prot) mem.Protect(existing.End - GuestMemory.PageSize, GuestMemory.PageSize, existing.Prot | prot);
            }
            if (end > mapFrom) mem.Map(mapFrom, end - mapFrom, prot, name);
            mem.Poke(vaddr + bias, f.AsSpan((int)off, (int)filesz));
            if (vaddr < firstVaddr) { firstVaddr = vaddr; firstOffset = off; }
            maxEnd = Math.Max(maxEnd, vaddr + bias + memsz);
        }
        if (maxEnd == 0) throw new ElfLoadException($"{name}: no loadable segments");
        if (phdrAddr == 0) phdrAddr = firstVaddr + bias + (phoff - firstOffset);
        return new LoadedProgram
        {
            Entry = entry + bias,
            LoadBias = bias,
            PhdrAddr = phdrAddr,
            PhNum = phnum,
            PhEnt = phentsize,
            BrkStart = (maxEnd + GuestMemory.PageMask) & ~GuestMemory.PageMask,
            IsPie = type == 3,
        };
    }

    static ushort U16(byte[] b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(o));
    static uint U32(byte[] b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o));
    static ulong U64(byte[] b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(o));
}
