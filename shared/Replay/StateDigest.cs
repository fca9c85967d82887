using System.IO.Hashing;
using System.Runtime.InteropServices;
using ReVirt.Abi;

namespace ReVirt.Replay;

/// <summary>A 128-bit digest (XxHash128) of the guest's architectural state: every thread's complete
/// <see cref="Cpu.CpuState"/> (x87 included) and every materialised page of memory with its address and protection.</summary>
public static unsafe class StateDigest
{
    public static byte[] Compute(LinuxKernel k)
    {
        var h = new XxHash128();
        foreach (var cpu in k.Threads) cpu.State.AppendTo(h);
        Span<ulong> hdr = stackalloc ulong[2];
        foreach (var (pn, page) in k.Mem.PagesInOrder())
        {
            hdr[0] = pn; hdr[1] = (ulong)page.Prot;
            h.Append(MemoryMarshal.AsBytes(hdr));
            h.Append(new ReadOnlySpan<byte>(page.Data, (int)Memory.GuestMemory.PageSize));
        }
        return h.GetCurrentHash();
    }
}
