using System.IO.Hashing;
using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Linux;

namespace ReVirt.Replay;

/// <summary>A 128-bit digest (XxHash128) of the guest's architectural state, process by process: every thread's
/// complete <see cref="Cpu.CpuState"/> (x87 included) and every materialised page of memory with its address and
/// protection; and the in-VM network stack's complete state (connections, buffers, timers) when the guest has a
/// virtual interface.</summary>
public static unsafe class StateDigest
{
    public static byte[] Compute(Kernel k)
    {
        var h = new XxHash128();
        Span<ulong> hdr = stackalloc ulong[2];
        foreach (var p in k.Processes)
        {
            foreach (var t in p.Threads) t.Cpu.State.AppendTo(h);
            foreach (var (pn, page) in p.Mem.PagesInOrder())
            {
                hdr[0] = pn; hdr[1] = (ulong)page.Prot;
                h.Append(MemoryMarshal.AsBytes(hdr));
                h.Append(new ReadOnlySpan<byte>(page.Data, (int)Memory.GuestMemory.PageSize));
            }
        }
        if (k.Nic is { } nic) h.Append(nic.Stack.Digest());
        return h.GetCurrentHash();
    }
}
