using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;

namespace ReVirt.Cpu;

[InlineArray(16)] public struct GprFile { ulong _r0; }
[InlineArray(32)] public struct XmmFile { ulong _q0; }
[InlineArray(8)] public struct X87File { Float80 _st0; }

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
        for (int k = 0; k < 16; k++, o += 8) BinaryPrimitives.WriteUInt64LittleEndian(d[o..], R[k]);
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], Rip); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], Rflags & DigestedFlags); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], FsBase); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(d[o..], GsBase); o += 8;
        for (int k = 0; k < 32; k++, o += 8) BinaryPrimitives.WriteUInt64LittleEndian(d[o..], Xmm[k]);
        BinaryPrimitives.WriteUInt32LittleEndian(d[o..], Mxcsr); o += 4;
        for (int k = 0; k < 8; k++, o += 10) Fpr[k].WriteTo(d.Slice(o, 10));
        d[o++] = (byte)FpTop;
        BinaryPrimitives.WriteUInt16LittleEndian(d[o..], Fcw); o += 2;
        BinaryPrimitives.WriteUInt16LittleEndian(d[o..], Fsw); o += 2;
        d[o++] = FpEmpty;
    }

    public readonly void AppendTo(NonCryptographicHashAlgorithm h)
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
            R.AsSpan().CopyTo(s.R);
            Xmm.AsSpan().CopyTo(s.Xmm);
            Fpr.AsSpan().CopyTo(s.Fpr);
            return s;
        }
        set
        {
            ((ReadOnlySpan<ulong>)value.R).CopyTo(R);
            ((ReadOnlySpan<ulong>)value.Xmm).CopyTo(Xmm);
            ((ReadOnlySpan<Float80>)value.Fpr).CopyTo(Fpr);
            Rip = value.Rip; Rflags = value.Rflags; FsBase = value.FsBase; GsBase = value.GsBase; Mxcsr = value.Mxcsr;
            FpTop = value.FpTop; Fcw = value.Fcw; Fsw = value.Fsw; FpEmpty = value.FpEmpty;
        }
    }
}
