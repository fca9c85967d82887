using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace ReVirt.Cpu;

[InlineArray(16)] public struct GprFile { ulong _r0; }
[InlineArray(32)] public struct XmmFile { ulong _q0; }
[InlineArray(8)] public struct X87File { Float80 _st0; }

/// <summary>
/// Elements of the register files by index, for loops over them. With an index that is not a constant C# reaches an
/// inline array's element through a span over the array (MemoryMarshal.CreateSpan/CreateReadOnlySpan and the span
/// constructors over ulong and Float80): generic code without ReadyToRun code, which every recording and replay
/// JIT-compiled at its first checkpoint (11 methods). These are reference arithmetic the ahead-of-time compiler
/// expands in place. The caller keeps the index within the file (16, 32, 8 elements).
/// </summary>
static class RegisterFiles
{
    public static ref ulong At(ref GprFile f, int k) => ref Unsafe.Add(ref Unsafe.As<GprFile, ulong>(ref f), k);
    public static ref ulong At(ref XmmFile f, int k) => ref Unsafe.Add(ref Unsafe.As<XmmFile, ulong>(ref f), k);
    public static ref Float80 At(ref X87File f, int k) => ref Unsafe.Add(ref Unsafe.As<X87File, Float80>(ref f), k);
}

/// <summary>
/// One guest thread's complete architectural state as a value: general registers, rip, rflags, FS/GS base, XMM,
/// MXCSR and the x87 unit (physical registers, control, status, empty tags, top). It is what a thread clone copies
/// and what the checkpoint digest covers, so a state that replay must reproduce cannot be left out of one of them.
/// </summary>
public struct CpuState
{
    public GprFile R;
    public ulong Rip, Rflags, FsBase, GsBase;
    /// <summary>XMM registers as pairs of 64-bit lanes: Xmm[2*n] is the low half of xmmN.</summary>
    public XmmFile Xmm;
    public uint Mxcsr;
    /// <summary>x87 registers by physical number (ST(i) is Fpr[(FpTop + i) &amp; 7]).</summary>
    public X87File Fpr;
    public int FpTop;
    public ushort Fcw, Fsw;
    /// <summary>Bit n set: physical register n is empty.</summary>
    public byte FpEmpty;

    /// <summary>The rflags bits the digest covers: the status flags and DF (the rest are fixed or not
    /// architecturally visible to a user-mode guest).</summary>
    public const ulong DigestedFlags = VirtualCpu.ArithFlags | VirtualCpu.DF;

    /// <summary>Bytes of <see cref="WriteCanonical"/>.</summary>
    public const int CanonicalSize = 16 * 8 + 4 * 8 + 32 * 8 + 4 + 8 * 10 + 1 + 2 + 2 + 1;

    /// <summary>A fixed little-endian encoding of the state (independent of the struct's layout), for digests.</summary>
    public readonly void WriteCanonical(Span<byte> d)
    {
        int o = 0;
        ref var r = ref Unsafe.AsRef(in R);
        for (int k = 0; k < 16; k++, o += 8) BinaryPrimitives.WriteUInt64LittleEndian(d[o..], RegisterFiles.At(ref r, k));
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], Rip); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], Rflags & DigestedFlags); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], FsBase); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], GsBase); o += 8;
        ref var x = ref Unsafe.AsRef(in Xmm);
        for (int k = 0; k < 32; k++, o += 8) BinaryPrimitives.WriteUInt64LittleEndian(d[o..], RegisterFiles.At(ref x, k));
        BinaryPrimitives.WriteUInt32LittleEndian(d[o..], Mxcsr); o += 4;
        ref var f = ref Unsafe.AsRef(in Fpr);
        for (int k = 0; k < 8; k++, o += 10) RegisterFiles.At(ref f, k).WriteTo(d.Slice(o, 10));
        d[o++] = (byte)FpTop;
        BinaryPrimitives.WriteUInt16LittleEndian(d[o..], Fcw); o += 2;
        BinaryPrimitives.WriteUInt16LittleEndian(d[o..], Fsw); o += 2;
        d[o++] = FpEmpty;
    }

    /// <summary>Appends <see cref="WriteCanonical"/>'s bytes to a digest.</summary>
    public readonly void AppendTo(Log.Xxh128 h)
    {
        Span<byte> b = stackalloc byte[CanonicalSize];
        WriteCanonical(b);
        h.Append(b);
    }
}

public sealed partial class VirtualCpu
{
    /// <summary>The thread's architectural state as a value (see <see cref="CpuState"/>).</summary>
    public CpuState State
    {
        get
        {
            var s = new CpuState
            {
                Rip = Rip, Rflags = Rflags, FsBase = FsBase, GsBase = GsBase, Mxcsr = Mxcsr,
                FpTop = FpTop, Fcw = Fcw, Fsw = Fsw, FpEmpty = FpEmpty,
            };
            // element loops, not span copies (see RegisterFiles)
            for (int k = 0; k < 16; k++) RegisterFiles.At(ref s.R, k) = R[k];
            for (int k = 0; k < 32; k++) RegisterFiles.At(ref s.Xmm, k) = Xmm[k];
            for (int k = 0; k < 8; k++) RegisterFiles.At(ref s.Fpr, k) = Fpr[k];
            return s;
        }
        set
        {
            for (int k = 0; k < 16; k++) R[k] = RegisterFiles.At(ref value.R, k);
            for (int k = 0; k < 32; k++) Xmm[k] = RegisterFiles.At(ref value.Xmm, k);
            for (int k = 0; k < 8; k++) Fpr[k] = RegisterFiles.At(ref value.Fpr, k);
            Rip = value.Rip; Rflags = value.Rflags; FsBase = value.FsBase; GsBase = value.GsBase; Mxcsr = value.Mxcsr;
            FpTop = value.FpTop; Fcw = value.Fcw; Fsw = value.Fsw; FpEmpty = value.FpEmpty;
        }
    }
}
