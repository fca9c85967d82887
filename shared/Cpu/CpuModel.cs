namespace ReVirt.Cpu;

/// <summary>
/// The fixed virtual CPU that guests see through CPUID. It advertises exactly what the interpreter implements:
/// the x86-64 baseline (x86-64-v1: FPU, TSC, CX8, CMOV, CLFLUSH, MMX, FXSR, SSE, SSE2, SYSCALL, NX, LM, LAHF in
/// long mode) and nothing newer: no SSE3+, no AVX, no BMI, no RDRAND, no OSXSAVE, no ERMS. The vendor is
/// GenuineIntel so that glibc sizes its copy thresholds from cache leaves 2 and 4, which answer with a fixed,
/// plausible hierarchy (32 KiB L1d/L1i, 1 MiB L2, 8 MiB L3, 64-byte lines).
/// </summary>
public static class CpuModel
{
    public const string Vendor = "GenuineIntel";
    public const string Brand = "ReVirt virtual CPU x86-64-v1 (SSE2)";
    public const uint Leaf1Eax = 0x000306A9;   // family 6, model 0x3A, stepping 9
    public const uint Leaf1Edx = (1u << 0) | (1u << 4) | (1u << 8) | (1u << 15) | (1u << 19) | (1u << 23) | (1u << 24) | (1u << 25) | (1u << 26);
    public const uint Leaf1Ecx = 0;
    public const uint Ext1Ecx = 1u << 0;                              // LAHF/SAHF in long mode
    public const uint Ext1Edx = (1u << 11) | (1u << 20) | (1u << 29); // SYSCALL, NX, LM
    public const string Description = "GenuineIntel family 6 model 0x3a, x86-64-v1 (SSE2), no AVX/BMI/RDRAND";

    public static void Query(uint leaf, uint sub, out uint a, out uint b, out uint c, out uint d)
    {
        a = b = c = d = 0;
        switch (leaf)
        {
            case 0:
                a = 7;
                b = Pack(Vendor, 0); d = Pack(Vendor, 4); c = Pack(Vendor, 8);
                break;
            case 1:
                a = Leaf1Eax;
                b = (8u << 8) | (1u << 16); // clflush line 64 bytes, one logical processor, APIC id 0
                c = Leaf1Ecx;
                d = Leaf1Edx;
                break;
            case 2:
                a = 0x00FF_0001; // one iteration; descriptor 0xFF: "see leaf 4"
                break;
            case 4:
                switch (sub)
                {
                    case 0: Cache(1, 1, 32 * 1024, 8, 0, out a, out b, out c); break;   // L1 data
                    case 1: Cache(2, 1, 32 * 1024, 8, 0, out a, out b, out c); break;   // L1 instruction
                    case 2: Cache(3, 2, 1024 * 1024, 16, 0, out a, out b, out c); break; // L2 unified
                    case 3: Cache(3, 3, 8 * 1024 * 1024, 16, 1, out a, out b, out c); break; // L3 unified
                }
                break;
            case 7:
                break;
            case 0x8000_0000:
                a = 0x8000_0008;
                break;
            case 0x8000_0001:
                c = Ext1Ecx; d = Ext1Edx;
                break;
            case 0x8000_0002: case 0x8000_0003: case 0x8000_0004:
                {
                    int o = (int)(leaf - 0x8000_0002) * 16;
                    a = Pack(Brand, o); b = Pack(Brand, o + 4); c = Pack(Brand, o + 8); d = Pack(Brand, o + 12);
                    break;
                }
            case 0x8000_0006:
                c = (1024u << 16) | (6u << 12) | 64; // 1 MiB L2, 8-way (encoded 6), 64-byte lines
                break;
            case 0x8000_0008:
                a = 0x3027; // 48 virtual, 39 physical address bits
                break;
        }
    }

    static void Cache(uint type, uint level, int size, int ways, uint sharingMinus1, out uint a, out uint b, out uint c)
    {
        const int line = 64;
        int sets = size / (ways * line);
        a = type | (level << 5) | (1u << 8) | (sharingMinus1 << 14);
        b = (uint)(ways - 1) << 22 | (uint)(line - 1);
        c = (uint)(sets - 1);
    }

    static uint Pack(string s, int o)
    {
        uint v = 0;
        for (int i = 0; i < 4; i++) v |= (uint)(o + i < s.Length ? (byte)s[o + i] : 0) << (8 * i);
        return v;
    }
}
