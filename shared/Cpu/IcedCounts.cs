using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// Sizes of the tables indexed by Iced's enums (handlers by <see cref="Iced.Intel.Code"/>, register and operand
/// sizes). Constants rather than <c>Enum.GetValues</c>: that reads and sorts ~5,000 metadata fields by reflection
/// and JIT-compiles its generic code during start-up. Each is the enum's last member + 1 (Iced numbers its members
/// densely from 0); a test checks them against the enums, so an Iced update that adds members fails there instead
/// of indexing past a table.
/// </summary>
internal static class IcedCounts
{
    public const int Code = (int)Iced.Intel.Code.VEX_Vsm3rnds2_xmm_xmm_xmmm128_imm8 + 1;
    public const int Mnemonic = (int)Iced.Intel.Mnemonic.Vsm4rnds4 + 1;
#pragma warning disable CS0618 // the last member is a reserved placeholder, still a slot of the table
    public const int Register = (int)Iced.Intel.Register.DontUseFF + 1;
#pragma warning restore CS0618
    public const int MemorySize = (int)Iced.Intel.MemorySize.Broadcast512_2xBFloat16 + 1;
}
