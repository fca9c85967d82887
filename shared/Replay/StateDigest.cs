using System.IO.Hashing;
using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Memory;

namespace ReVirt.Replay;

/// <summary>A 128-bit digest (XxHash128) of the guest's architectural state, process by process: every thread's
/// complete <see cref="Cpu.CpuState"/> (x87 included) and every materialised page of memory with its address and
/// protection; and the in-VM network stack's complete state (connections, buffers, timers) when the guest has a
/// virtual interface. A machine snapshot carries the same digest of the state it was taken from, computed over its
/// copy-on-write copy (<see cref="Compute(IEnumerable{ValueTuple{IEnumerable{CpuState}, GuestMemory}}, byte[])"/>),
/// and a replica that restores it must arrive at it.</summary>
public static unsafe class StateDigest
{
    public static byte[] Compute(Kernel k)
        => Compute(k.Processes.Select(p => (p.Threads.Select(t => t.Cpu.State), p.Mem)), k.Nic?.Stack.Digest());

    /// <summary>The digest of processes given as (their threads' states in order, their memory).</summary>
    public static byte[] Compute(IEnumerable<(IEnumerable<CpuState> Threads, GuestMemory Mem)> processes, byte[]? netDigest)
    {
        var h = new XxHash128();
        Span<ulong> hdr = stackalloc ulong[2];
        foreach (var (threads, mem) in processes)
        {
            foreach (var s in threads) s.AppendTo(h);
            foreach (var (pn, page) in mem.PagesInOrder())
            {
                hdr[0] = pn; hdr[1] = (ulong)page.Prot;
                h.Append(MemoryMarshal.AsBytes(hdr));
                h.Append(new ReadOnlySpan<byte>(page.Data, (int)GuestMemory.PageSize));
            }
        }
        if (netDigest != null) h.Append(netDigest);
        return h.GetCurrentHash();
    }
}
