using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

using ReVirt.Linux;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>
/// A program image's bytes in native memory laid out in transparent huge pages: the owner behind a
/// <see cref="ReadOnlyMemory{T}"/> that <see cref="ProgramFile.ReadImage"/> hands out for large files. Why: a managed
/// array of a 2 MB program is ~500 fresh 4 KiB pages, and each first touch costs 10-15 us of CPU on the virtualised
/// hosts measured (docs/PERFORMANCE.md); here the bytes sit in 2 MiB-aligned whole huge pages, one fault each.
/// Contract: the bytes are a copy made once (the file's bytes when it was read, never changed afterwards: the loader's
/// lazy page fill, the image cache and the recording rely on that), so a file changed or truncated later changes
/// nothing the guest sees and cannot fault the host (a mapping of the file itself would: SIGBUS past a new end).
/// Lifetime: freed only by <see cref="IDisposable.Dispose"/> (no finalizer: a span over the bytes does not keep the
/// owner reachable), which its one owner calls once nothing reads it any more: the <see cref="ReVirt.Linux.Kernel"/>
/// that read its start program, after its address spaces and image cache are gone (every unfilled page of every
/// process takes its bytes from here).
/// </summary>
public sealed unsafe class NativeImage : MemoryManager<byte>
{
    const ulong HugePage = 1UL << 21;
    const int MADV_HUGEPAGE = 14;

    nint _map;        // the whole mapping (aligned start)
    readonly long _mapBytes;
    readonly int _length;

    /// <summary>Memory for `length` bytes (rounded up to whole huge pages, aligned to one), not yet written.</summary>
    public NativeImage(int length)
    {
        _length = length;
        _mapBytes = (long)(((ulong)length + HugePage - 1) & ~(HugePage - 1));
        const int protRw = (int)(Prot.Read | Prot.Write);
        long r = HostSys.Call(Nr.mmap, 0, _mapBytes + (long)HugePage, protRw, Map.PRIVATE | Map.ANONYMOUS, -1, 0);
        if (r < 0) throw new OutOfMemoryException($"the host refused {_mapBytes} bytes for a program image (errno {-r})");
        // aligned to a huge page: map twice the need's slack and give back the unaligned ends
        ulong at = ((ulong)r + HugePage - 1) & ~(HugePage - 1);
        if (at > (ulong)r) HostSys.Call(Nr.munmap, r, (long)(at - (ulong)r));
        ulong end = (ulong)r + (ulong)_mapBytes + HugePage;
        if (end > at + (ulong)_mapBytes) HostSys.Call(Nr.munmap, (long)(at + (ulong)_mapBytes), (long)(end - at - (ulong)_mapBytes));
        _map = (nint)at;
        // best effort: with transparent huge pages off the pages fault 4 KiB at a time, as a managed array's would
        HostSys.Call(Nr.madvise, (long)at, _mapBytes, MADV_HUGEPAGE);
        lock (LiveLock) _live = [.. _live, this];
    }

    /// <summary>The images not yet disposed (usually one: a machine's start program), for <see cref="Of"/>.</summary>
    static NativeImage[] _live = [];
    static readonly Lock LiveLock = new();

    /// <summary>
    /// The live image whose whole bytes <paramref name="bytes"/> are (same start, same length); null for any other
    /// memory (an array, a part of an image). Why not MemoryMarshal.TryGetMemoryManager: that is generic code over a
    /// reference type which no ReadyToRun image holds, so each start JIT-compiled it (with MemoryManager's TryGetArray:
    /// 3 methods, each a Tier-0 compilation before the guest's first instruction).
    /// </summary>
    public static NativeImage? Of(ReadOnlyMemory<byte> bytes)
    {
        if (bytes.IsEmpty) return null;
        nint at = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(bytes.Span));
        foreach (var i in Volatile.Read(ref _live))
            if (i._map == at && i._length == bytes.Length) return i;
        return null;
    }

    /// <summary>Native memory is no array (overridden so MemoryMarshal.TryGetArray over an image runs precompiled
    /// code: the base class's is generic code the runtime JIT-compiles).</summary>
    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        segment = default;
        return false;
    }

    /// <summary>The image's size in bytes.</summary>
    internal int Length => _length;

    /// <summary>The writable bytes, for the one read that fills them (before the image is handed out).</summary>
    internal Span<byte> Filling => new((void*)_map, _length);

    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_map == 0, this);
        return new Span<byte>((void*)_map, _length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(_map == 0, this);
        return new MemoryHandle((byte*)_map + elementIndex, default, this);
    }

    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        lock (LiveLock) _live = Array.FindAll(_live, i => i != this);
        nint m = Interlocked.Exchange(ref _map, 0);
        if (m != 0) HostSys.Call(Nr.munmap, m, _mapBytes);
    }
}
