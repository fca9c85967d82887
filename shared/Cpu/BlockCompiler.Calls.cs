using System.Reflection;
using System.Runtime.CompilerServices;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>
/// The memory's slow paths, its TLB and the byte swaps as the compiled regions call them: static methods of this small
/// type, so the block compiler finds each by name among a few methods (<see cref="Of"/>). Looked up where they
/// live, they cost the first region of every run some 3-5 ms of reflection (loaded, 2026-12-02): GuestMemory's property
/// table for two getters, a constructor lookup for the invalidation's exception, and the binder's overload resolution
/// over BinaryPrimitives' hundred-odd methods for ReverseEndianness. Each is a one-line forward the runtime's JIT inlines
/// into the region, so the emitted code calls what it called before.
/// </summary>
internal static unsafe class RegionCalls
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static byte* ReadTlb(GuestMemory m) => m.ReadTlb;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong LoadSlow(GuestMemory m, ulong a, int size) => m.LoadSlow(a, size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int StoreSlow(GuestMemory m, ulong a, ulong v, int size) => m.StoreSlow(a, v, size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool Faulted(GuestMemory m) => m.Faulted;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static GuestFaultException TakeFault(GuestMemory m) => m.TakeFault();

    /// <summary>The exception a region throws after a store dropped its own code (see the execution loop).</summary>
    internal static CodeInvalidatedException CodeInvalidated() => new();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Reverse32(uint v) => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Reverse64(ulong v) => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);

    /// <summary>One of the methods above, by name (each name is declared once).</summary>
    internal static MethodInfo Of(string name) => typeof(RegionCalls).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!;
}
