using ReVirt.Linux;

namespace ReVirt.Memory;

/// <summary>
/// The host memory behind guest pages: page-aligned 4 KiB frames carved out of 2 MiB chunks that are mapped from the
/// host (anonymous, private) and aligned to their size, so a frame's chunk is found from its address alone.
/// Why: one posix_memalign(4096, 4096) per page cost about 8 KiB of resident memory per 4 KiB page (the allocator's
/// header and alignment slack); a chunk costs its pages and nothing more.
/// Contract: <see cref="RentZeroed"/> gives a frame whose bytes are all zero (a frame never handed out is zero as the
/// host mapped it, a reused one is cleared here), so no guest reads earlier bytes through a reused frame;
/// <see cref="Rent"/> gives a frame of unspecified bytes to a caller that overwrites all of it at once (copy-on-write,
/// a capture's copy, a restored page). A returned frame goes back to its chunk, where it is handed out again before the
/// chunk's never-used frames; a chunk whose frames are all free is kept for reuse (at most <see cref="SpareChunks"/>:
/// a process tree that spawns and exits reuses resident memory instead of faulting in fresh pages) or unmapped, so
/// host memory follows the guests' pages down as well as up. Thread-safe (several machines may run in one host
/// process); allocation and release are slow-path operations (first touch, copy-on-write, unmap), never per access.
/// </summary>
static unsafe class PagePool
{
    const int ChunkShift = 21;
    const ulong ChunkBytes = 1UL << ChunkShift;
    const int FramesPerChunk = (int)(ChunkBytes >> GuestMemory.PageShift);
    /// <summary>Wholly free chunks kept mapped (16 MiB).</summary>
    const int SpareChunks = 8;

    sealed class Chunk(byte* at)
    {
        public readonly byte* At = at;
        /// <summary>Frames returned and not yet handed out again (their indexes, a stack: the warmest first).</summary>
        public readonly ushort[] Returned = new ushort[FramesPerChunk];
        public int ReturnedCount;
        /// <summary>Frames from this index on were never handed out (still zero as mapped).</summary>
        public int Fresh;
        public int InUse;
        /// <summary>Index in <see cref="Available"/>, -1 while every frame is in use.</summary>
        public int Slot = -1;
        public bool HasFree => ReturnedCount > 0 || Fresh < FramesPerChunk;
    }

    static readonly Dictionary<ulong, Chunk> Chunks = new();
    /// <summary>Chunks with a frame to give; the last is used first, and a chunk a frame was returned to moves last,
    /// so reused frames (resident already) go before never-touched ones.</summary>
    static readonly List<Chunk> Available = new();
    static int _whollyFree;
    static long _unmapped;
    static readonly Lock Gate = new();

    /// <summary>Host memory mapped for frames, in bytes.</summary>
    public static long MappedBytes { get { lock (Gate) return (long)Chunks.Count * (long)ChunkBytes; } }
    /// <summary>Chunks unmapped since the start (all their frames returned, beyond the spares).</summary>
    public static long ChunksUnmapped { get { lock (Gate) return _unmapped; } }

    /// <summary>A frame whose 4096 bytes are zero.</summary>
    public static byte* RentZeroed()
    {
        byte* f = Take(out bool zero);
        if (!zero) new Span<byte>(f, (int)GuestMemory.PageSize).Clear();
        return f;
    }

    /// <summary>A frame of unspecified bytes: the caller overwrites all of them before anyone reads them.</summary>
    public static byte* Rent() => Take(out _);

    static byte* Take(out bool zero)
    {
        lock (Gate)
        {
            if (Available.Count == 0) MapChunk();
            var c = Available[^1];
            int ix;
            if (c.ReturnedCount > 0) { ix = c.Returned[--c.ReturnedCount]; zero = false; }
            else { ix = c.Fresh++; zero = true; }
            if (c.InUse++ == 0) _whollyFree--;
            if (!c.HasFree) Unlist(c);
            return c.At + ((ulong)ix << GuestMemory.PageShift);
        }
    }

    public static void Return(byte* f)
    {
        lock (Gate)
        {
            var c = Chunks[(ulong)f & ~(ChunkBytes - 1)];
            c.Returned[c.ReturnedCount++] = (ushort)(((ulong)f - (ulong)c.At) >> GuestMemory.PageShift);
            if (c.Slot >= 0) Unlist(c);
            c.Slot = Available.Count;
            Available.Add(c);
            if (--c.InUse > 0) return;
            if (_whollyFree < SpareChunks) { _whollyFree++; return; }
            Unlist(c);
            Chunks.Remove((ulong)c.At);
            HostSys.Call(Nr.munmap, (long)c.At, (long)ChunkBytes);
            _unmapped++;
        }
    }

    /// <summary>Removes c from <see cref="Available"/> (the last one takes its place).</summary>
    static void Unlist(Chunk c)
    {
        var last = Available[^1];
        Available[c.Slot] = last;
        last.Slot = c.Slot;
        Available.RemoveAt(Available.Count - 1);
        c.Slot = -1;
    }

    /// <summary>Maps a chunk aligned to its size (twice its size mapped, the unaligned ends unmapped again).</summary>
    static void MapChunk()
    {
        const int protRw = (int)(Prot.Read | Prot.Write);
        long r = HostSys.Call(Nr.mmap, 0, (long)(2 * ChunkBytes), protRw, Map.PRIVATE | Map.ANONYMOUS, -1, 0);
        // the host refuses memory: as the aligned allocator did, the run cannot go on with the guest's page
        if (r < 0) throw new OutOfMemoryException($"the host refused {2 * ChunkBytes} bytes for guest pages (errno {-r})");
        ulong at = ((ulong)r + ChunkBytes - 1) & ~(ChunkBytes - 1);
        if (at > (ulong)r) HostSys.Call(Nr.munmap, r, (long)(at - (ulong)r));
        ulong end = (ulong)r + 2 * ChunkBytes;
        if (end > at + ChunkBytes) HostSys.Call(Nr.munmap, (long)(at + ChunkBytes), (long)(end - at - ChunkBytes));
        var c = new Chunk((byte*)at) { Slot = Available.Count };
        Chunks.Add(at, c);
        Available.Add(c);
        _whollyFree++;
    }
}
