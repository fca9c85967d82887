using Iced.Intel;
using ReVirt.Cpu;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>The instruction set's compact registry (<see cref="HandlerTable"/>: two-byte indexes by Code and by
/// Mnemonic into a list of handlers) answers as the plain pointer tables by Code and by Mnemonic it replaced: the
/// Code's handler before the Mnemonic's, the last registration of a key winning, a null registration removing one,
/// and the list growing past its first capacity. The oracle is a dictionary per key kind, fed the same registrations.</summary>
public unsafe class HandlerTableTests
{
    [Theory]
    [InlineData(1, 300)]
    [InlineData(2, 5000)]
    public void AnswersAsPointerTablesByCodeAndMnemonic(int seed, int registrations)
    {
        var rng = new Random(seed);
        var table = new HandlerTable();
        var byCode = new Dictionary<int, nint>();
        var byMnemonic = new Dictionary<int, nint>();
        for (int k = 0; k < registrations; k++)
        {
            // a few keys often (re-registration), the rest anywhere in the enums; about one in 20 a null (removal)
            bool code = rng.Next(2) == 0;
            int key = rng.Next(4) == 0 ? rng.Next(8) : rng.Next(code ? IcedCounts.Code : IcedCounts.Mnemonic);
            nint h = rng.Next(20) == 0 ? 0 : (nint)(k + 1) * 16;
            var p = (delegate*<VirtualCpu, ref Instruction, void>)h;
            if (code) { table.Add((Code)key, p); byCode[key] = h; }
            else { table.Add((Mnemonic)key, p); byMnemonic[key] = h; }
        }
        int checkedPairs = 0;
        for (int c = 0; c < IcedCounts.Code; c++)
        {
            var i = new Instruction { Code = (Code)c };
            // each Code with its own Mnemonic and with one drawn at random (the table takes them separately)
            foreach (int m in new[] { (int)i.Mnemonic, rng.Next(IcedCounts.Mnemonic), c % 8 })
            {
                nint want = byCode.GetValueOrDefault(c);
                if (want == 0) want = byMnemonic.GetValueOrDefault(m);
                nint got = (nint)table.Find((Code)c, (Mnemonic)m);
                Assert.True(want == got, $"Code {c}, Mnemonic {m}: registry {got:x}, pointer tables {want:x}");
                Assert.Equal(want != 0, table.Has((Code)c, (Mnemonic)m));
                checkedPairs++;
            }
        }
        Assert.Equal(3 * IcedCounts.Code, checkedPairs);
    }
}
