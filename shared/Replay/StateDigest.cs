using System.IO.Hashing;
using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replay;

/// <summary>A 128-bit digest (XxHash128) of the guest's architectural state: every thread's registers and
/// every materialised page of memory with its address and protection, process by process.</summary>
public static unsafe class StateDigest
{
    public static byte[] Compute(Kernel k)
    {
        var h = new XxHash128();
        Span<ulong> misc = stackalloc ulong[5];
        Span<ulong> hdr = stackalloc ulong[2];
        foreach (var p in k.Processes)
        {
            foreach (var t in p.Threads)
            {
                var cpu = t.Cpu;
                h.Append(MemoryMarshal.AsBytes(cpu.R.AsSpan()));
                misc[0] = cpu.Rip; misc[1] = cpu.Rflags & 0xCD5; misc[2] = cpu.FsBase; misc[3] = cpu.GsBase; misc[4] = cpu.Mxcsr;
                h.Append(MemoryMarshal.AsBytes(misc));
                h.Append(MemoryMarshal.AsBytes(cpu.Xmm.AsSpan()));
            }
            foreach (var (pn, page) in p.Mem.PagesInOrder())
            {
                hdr[0] = pn; hdr[1] = (ulong)page.Prot;
                h.Append(MemoryMarshal.AsBytes(hdr));
                h.Append(new ReadOnlySpan<byte>(page.Data, (int)Memory.GuestMemory.PageSize));
            }
        }
        return h.GetCurrentHash();
    }
}
