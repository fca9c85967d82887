using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Memory;

namespace ReVirt.Replay;

/// <summary>A 128-bit digest (XxHash128) of the guest's architectural state, process by process: every thread's
/// complete <see cref="Cpu.CpuState"/> (x87 included) and every materialised page of memory as (address, protection,
/// XxHash128 of its bytes); and the in-VM network stack's complete state (connections, buffers, timers) when the guest
/// has a virtual interface. Pages enter as their own hashes (log format 4; format 3 hashed all bytes as one stream) so
/// that a checkpoint rehashes only the pages written since the last one (<see cref="GuestMemory.HashedPagesInOrder"/>):
/// the digest is the same whether a page's hash was kept or computed now (<see cref="ComputeFromBytes(Kernel)"/>).
/// A machine snapshot carries the same digest of the state it was taken from, computed over its capture of the memory
/// as it encodes it (<see cref="Builder"/>), and a replica that restores it must arrive at it.</summary>
public static unsafe class StateDigest
{
    /// <summary>The digest a log of this format version checkpoints with: v4 and later <see cref="Compute(Kernel)"/>,
    /// v3 <see cref="ComputeAsOneStream(Kernel)"/> (every page's bytes hashed at each checkpoint).</summary>
    public static Func<Kernel, byte[]> ForLogVersion(ushort version) => version >= 4 ? Compute : ComputeAsOneStream;

    /// <summary>The log format v3 digest: the same threads, then each page as (number, protection) followed by its
    /// bytes, all in one stream (no page hash of its own), so every checkpoint hashes all of memory.</summary>
    public static byte[] ComputeAsOneStream(Kernel k)
    {
        var b = new Builder();
        foreach (var p in k.Processes)
        {
            foreach (var t in p.Threads) b.Thread(t.Cpu.State);
            b.PagesAsOneStream(p.Mem);
        }
        return b.Finish(k.Nic?.Stack.Digest());
    }

    /// <summary>The machine's digest, from the pages' kept hashes (rehashing the pages written since the last digest).
    /// Loops rather than LINQ: a recording computes it at its first checkpoint, and LINQ over the tuple and
    /// <see cref="CpuState"/> value types is JIT-compiled at its first use.</summary>
    public static byte[] Compute(Kernel k) => Of(k, fromBytes: false);

    /// <summary>The same digest with every page hashed from its bytes now, no kept hash used or changed: what
    /// <see cref="Compute(Kernel)"/> must equal (the check of the kept hashes).</summary>
    public static byte[] ComputeFromBytes(Kernel k) => Of(k, fromBytes: true);

    /// <summary>The digest of processes given as (their threads' states in order, their memory).</summary>
    public static byte[] Compute(IEnumerable<(IEnumerable<CpuState> Threads, GuestMemory Mem)> processes, byte[]? netDigest)
        => Of(processes, netDigest, fromBytes: false);

    /// <summary><see cref="ComputeFromBytes(Kernel)"/> of processes given as (their threads' states, their memory).</summary>
    public static byte[] ComputeFromBytes(IEnumerable<(IEnumerable<CpuState> Threads, GuestMemory Mem)> processes, byte[]? netDigest)
        => Of(processes, netDigest, fromBytes: true);

    static byte[] Of(Kernel k, bool fromBytes)
    {
        var b = new Builder();
        foreach (var p in k.Processes)
        {
            foreach (var t in p.Threads) b.Thread(t.Cpu.State);
            b.Pages(p.Mem, fromBytes);
        }
        return b.Finish(k.Nic?.Stack.Digest());
    }

    static byte[] Of(IEnumerable<(IEnumerable<CpuState> Threads, GuestMemory Mem)> processes, byte[]? netDigest, bool fromBytes)
    {
        var b = new Builder();
        foreach (var (threads, mem) in processes)
        {
            b.Threads(threads);
            b.Pages(mem, fromBytes);
        }
        return b.Finish(netDigest);
    }

    /// <summary>The same digest built piece by piece, process after process: its threads, then its pages in address
    /// order (a snapshot computes it while it encodes the pages).</summary>
    public sealed class Builder
    {
        readonly Log.Xxh128 _h = new();
        /// <summary>Page entries (number, protection, hash: 4 little-endian words each) waiting to be appended
        /// together: one append per page would cost more than the entries' hashing. Bytes written through a pointer:
        /// spans of ulong and UInt128 are generic code without ReadyToRun code here, JIT-compiled at the first
        /// checkpoint.</summary>
        readonly byte[] _entries = new byte[EntryBytes * 128];
        int _pending;
        const int EntryBytes = 32;

        public void Threads(IEnumerable<CpuState> threads)
        {
            foreach (var s in threads) Thread(s);
        }

        public void Thread(in CpuState s)
        {
            FlushEntries();
            s.AppendTo(_h);
        }

        /// <summary>Every materialised page of the address space, in address order: by its kept hash, or (fromBytes)
        /// hashed from its bytes now, the kept hashes neither used nor changed.</summary>
        public void Pages(GuestMemory mem, bool fromBytes = false)
        {
            if (fromBytes)
            {
                foreach (var (pn, page) in mem.PagesInOrder()) Page(pn, page.Prot, new ReadOnlySpan<byte>(page.Data, (int)GuestMemory.PageSize));
                return;
            }
            var pages = mem.HashedPagesInOrder(out var numbers);
            for (int i = 0; i < pages.Length; i++) PageHash(numbers[i], pages[i].Prot, pages[i].HashLo, pages[i].HashHi);
        }

        /// <summary>Every materialised page, in address order, as the v3 digest takes it: (number, protection) and
        /// the page's bytes appended to the one stream.</summary>
        public void PagesAsOneStream(GuestMemory mem)
        {
            FlushEntries();
            ulong* hdr = stackalloc ulong[2];
            foreach (var (pn, page) in mem.PagesInOrder())
            {
                hdr[0] = pn; hdr[1] = (ulong)page.Prot;
                _h.Append(new ReadOnlySpan<byte>(hdr, 16));
                _h.Append(new ReadOnlySpan<byte>(page.Data, (int)GuestMemory.PageSize));
            }
        }

        /// <summary>A page given by its bytes (hashed now).</summary>
        public void Page(ulong pn, Prot prot, ReadOnlySpan<byte> bytes)
        {
            GuestMemory.HashPage(bytes, out ulong lo, out ulong hi);
            PageHash(pn, prot, lo, hi);
        }

        void PageHash(ulong pn, Prot prot, ulong hashLo, ulong hashHi)
        {
            if (_pending == _entries.Length / EntryBytes) FlushEntries();
            fixed (byte* e = &_entries[EntryBytes * _pending++])
            {
                var w = (ulong*)e;
                w[0] = pn;
                w[1] = (ulong)prot;
                w[2] = hashLo;
                w[3] = hashHi;
            }
        }

        void FlushEntries()
        {
            if (_pending == 0) return;
            _h.Append(new ReadOnlySpan<byte>(_entries, 0, EntryBytes * _pending));
            _pending = 0;
        }

        public byte[] Finish(byte[]? netDigest)
        {
            FlushEntries();
            if (netDigest != null) _h.Append(netDigest);
            return _h.GetCurrentHash();
        }
    }
}
