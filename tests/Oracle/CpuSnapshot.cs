using System.Globalization;
using System.Text;

namespace ReVirt.Tests.Oracle;

/// <summary>
/// Architectural user-mode CPU state used as input and output of differential CPU tests:
/// the 16 general-purpose registers, RFLAGS, XMM0-15, MXCSR and an image of the scratch data memory.
/// The same snapshot is fed to <see cref="NativeRunner.Run"/> (the host-CPU oracle) and to the VM under test,
/// and the two results are compared with <see cref="Diff"/>.
/// </summary>
public sealed class CpuSnapshot
{
    // GPR indices, x86 encoding order.
    public const int RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7;
    public const int R8 = 8, R9 = 9, R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15;

    // RFLAGS bits.
    public const ulong CF = 1UL << 0, PF = 1UL << 2, AF = 1UL << 4, ZF = 1UL << 6, SF = 1UL << 7;
    public const ulong TF = 1UL << 8, IF = 1UL << 9, DF = 1UL << 10, OF = 1UL << 11;

    /// <summary>The six arithmetic status flags: CF PF AF ZF SF OF.</summary>
    public const ulong ArithFlags = CF | PF | AF | ZF | SF | OF;

    /// <summary>The flags that <see cref="NativeRunner"/> takes from the input: the arithmetic flags plus DF.</summary>
    public const ulong InputFlags = ArithFlags | DF;

    /// <summary>Power-on MXCSR: all exceptions masked, round to nearest, no flags.</summary>
    public const uint DefaultMxcsr = 0x1F80;

    public static readonly string[] GprNames =
    [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
        "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15",
    ];

    /// <summary>General-purpose registers, index order RAX RCX RDX RBX RSP RBP RSI RDI R8..R15.</summary>
    public ulong[] Gpr { get; set; } = new ulong[16];

    /// <summary>RFLAGS. On input only <see cref="InputFlags"/> bits are honoured; output is the raw pushfq value.</summary>
    public ulong Rflags { get; set; } = 0x2;

    /// <summary>XMM0-15 (low 64 bits of the register are the low half of the UInt128).</summary>
    public UInt128[] Xmm { get; set; } = new UInt128[16];

    /// <summary>MXCSR. Loaded before the snippet and stored afterwards. Not compared unless asked.</summary>
    public uint Mxcsr { get; set; } = DefaultMxcsr;

    /// <summary>
    /// Image of the scratch region starting at <see cref="NativeRunner.ScratchBase"/>. Normally
    /// <see cref="NativeRunner.DataSize"/> bytes; it may be up to <see cref="NativeRunner.ScratchSize"/> bytes
    /// long to also observe the snippet's stack.
    /// </summary>
    public byte[] Memory { get; set; } = new byte[NativeRunner.DataSize];

    /// <summary>A zeroed snapshot whose RSP is <see cref="NativeRunner.DefaultRsp"/>, ready to run.</summary>
    public static CpuSnapshot Create()
    {
        var s = new CpuSnapshot();
        s.Gpr[RSP] = NativeRunner.DefaultRsp;
        return s;
    }

    public ulong this[int gpr]
    {
        get => Gpr[gpr];
        set => Gpr[gpr] = value;
    }

    public CpuSnapshot Clone() => new()
    {
        Gpr = (ulong[])Gpr.Clone(),
        Rflags = Rflags,
        Xmm = (UInt128[])Xmm.Clone(),
        Mxcsr = Mxcsr,
        Memory = (byte[])Memory.Clone(),
    };

    /// <summary>
    /// Describes every difference between <paramref name="expected"/> and <paramref name="actual"/>, one per line;
    /// returns the empty string if they agree. Only the RFLAGS bits in <paramref name="flagMask"/> are compared.
    /// </summary>
    public static string Diff(CpuSnapshot expected, CpuSnapshot actual, ulong flagMask,
        bool compareXmm = true, bool compareMemory = true, bool compareMxcsr = false)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        var sb = new StringBuilder();

        for (int i = 0; i < 16; i++)
        {
            ulong e = expected.Gpr[i], a = actual.Gpr[i];
            if (e != a)
                sb.Append(CultureInfo.InvariantCulture, $"{GprNames[i]}: expected 0x{e:X16}, actual 0x{a:X16} (xor 0x{e ^ a:X16})\n");
        }

        ulong ef = expected.Rflags & flagMask, af = actual.Rflags & flagMask;
        if (ef != af)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"RFLAGS (mask 0x{flagMask:X}): expected 0x{ef:X} [{FlagNames(ef)}], actual 0x{af:X} [{FlagNames(af)}], differing [{FlagNames(ef ^ af)}]\n");
        }

        if (compareXmm)
        {
            for (int i = 0; i < 16; i++)
            {
                UInt128 e = expected.Xmm[i], a = actual.Xmm[i];
                if (e != a)
                    sb.Append(CultureInfo.InvariantCulture, $"XMM{i}: expected 0x{e:X32}, actual 0x{a:X32}\n");
            }
        }

        if (compareMxcsr && expected.Mxcsr != actual.Mxcsr)
            sb.Append(CultureInfo.InvariantCulture, $"MXCSR: expected 0x{expected.Mxcsr:X8}, actual 0x{actual.Mxcsr:X8}\n");

        if (compareMemory)
            DiffMemory(sb, expected.Memory, actual.Memory);

        return sb.ToString();
    }

    /// <summary>Instance form of <see cref="Diff"/> with this snapshot as the expected one.</summary>
    public string DiffAgainst(CpuSnapshot actual, ulong flagMask,
        bool compareXmm = true, bool compareMemory = true, bool compareMxcsr = false)
        => Diff(this, actual, flagMask, compareXmm, compareMemory, compareMxcsr);

    public bool StateEquals(CpuSnapshot other, ulong flagMask,
        bool compareXmm = true, bool compareMemory = true, bool compareMxcsr = false)
        => Diff(this, other, flagMask, compareXmm, compareMemory, compareMxcsr).Length == 0;

    /// <summary>Names of the set status/control flags in <paramref name="flags"/>, e.g. "CF ZF".</summary>
    public static string FlagNames(ulong flags)
    {
        var parts = new List<string>();
        if ((flags & CF) != 0) parts.Add("CF");
        if ((flags & PF) != 0) parts.Add("PF");
        if ((flags & AF) != 0) parts.Add("AF");
        if ((flags & ZF) != 0) parts.Add("ZF");
        if ((flags & SF) != 0) parts.Add("SF");
        if ((flags & TF) != 0) parts.Add("TF");
        if ((flags & IF) != 0) parts.Add("IF");
        if ((flags & DF) != 0) parts.Add("DF");
        if ((flags & OF) != 0) parts.Add("OF");
        ulong other = flags & ~(CF | PF | AF | ZF | SF | TF | IF | DF | OF);
        if (other != 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"other=0x{other:X}"));
        return parts.Count == 0 ? "-" : string.Join(' ', parts);
    }

    private static void DiffMemory(StringBuilder sb, byte[] expected, byte[] actual)
    {
        if (expected.Length != actual.Length)
            sb.Append(CultureInfo.InvariantCulture, $"Memory: length expected {expected.Length}, actual {actual.Length}\n");

        int n = Math.Min(expected.Length, actual.Length);
        int ranges = 0;
        const int MaxRanges = 16;
        for (int i = 0; i < n;)
        {
            if (expected[i] == actual[i]) { i++; continue; }
            int start = i;
            while (i < n && expected[i] != actual[i] && i - start < 32) i++;
            if (++ranges > MaxRanges)
            {
                sb.Append("Memory: more differences omitted\n");
                return;
            }
            ulong addr = NativeRunner.ScratchBase + (ulong)start;
            sb.Append(CultureInfo.InvariantCulture,
                $"Memory [0x{addr:X} +0x{start:X}, {i - start} bytes]: expected {Convert.ToHexString(expected, start, i - start)}, actual {Convert.ToHexString(actual, start, i - start)}\n");
        }
    }

    public override string ToString()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 16; i++)
            sb.Append(CultureInfo.InvariantCulture, $"{GprNames[i],-3}=0x{Gpr[i]:X16}{(i % 4 == 3 ? "\n" : "  ")}");
        sb.Append(CultureInfo.InvariantCulture, $"RFLAGS=0x{Rflags:X} [{FlagNames(Rflags)}]  MXCSR=0x{Mxcsr:X8}\n");
        for (int i = 0; i < 16; i++)
            if (Xmm[i] != UInt128.Zero)
                sb.Append(CultureInfo.InvariantCulture, $"XMM{i}=0x{Xmm[i]:X32}\n");
        return sb.ToString();
    }
}
