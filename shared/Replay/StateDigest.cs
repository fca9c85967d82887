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
/// capture of the memory as it encodes it (<see cref="Builder"/>),
/// and a replica that restores it must arrive at it.</summary>
public static unsafe class StateDigest
{
    /// <summary>The machine's digest. Loops rather than LINQ: a recording computes it at its first checkpoint, and
    /// LINQ over the tuple and <see cref="CpuState"/> value types is JIT-compiled at its first use.</summary>
    public static byte[] Compute(Kernel k)
    {
        var b = new Builder();
        foreach (var p in k.Processes)
        {
            foreach (var t in p.Threads) b.Thread(t.Cpu.State);
            b.Pages(p.Mem);
        }
        return b.Finish(k.Nic?.Stack.Digest());
    }

    /// <summary>The digest of processes given as (their threads' states in order, their memory).</summary>
    public static byte[] Compute(IEnumerable<(IEnumerable<CpuState> Threads, GuestMemory Mem)> processes, byte[]? netDigest)
    {
        var b = new Builder();
        foreach (var (threads, mem) in processes)
        {
            b.Threads(threads);
            b.Pages(mem);
        }
        return b.Finish(netDigest);
    }

    /// <summary>The same digest built piece by piece, process after process: its threads, then its pages in address
    /// order (a snapshot computes it while it encodes the pages).</summary>
    public sealed class Builder
    {
        readonly XxHash128 _h = new();

        public void Threads(IEnumerable<CpuState> threads)
        {
            foreach (var s in threads) Thread(s);
        }

        public void Thread(in CpuState s) => s.AppendTo(_h);

        /// <summary>Every materialised page of the address space, in address order.</summary>
        public void Pages(GuestMemory mem)
        {
            foreach (var (pn, page) in mem.PagesInOrder()) Page(pn, page.Prot, new ReadOnlySpan<byte>(page.Data, (int)GuestMemory.PageSize));
        }

        public void Page(ulong pn, Prot prot, ReadOnlySpan<byte> bytes)
        {
            Span<ulong> hdr = stackalloc ulong[2];
            hdr[0] = pn; hdr[1] = (ulong)prot;
            _h.Append(MemoryMarshal.AsBytes(hdr));
            _h.Append(bytes);
        }

        public byte[] Finish(byte[]? netDigest)
        {
            if (netDigest != null) _h.Append(netDigest);
            return _h.GetCurrentHash();
        }
    }
}
