namespace ReVirt.Cpu;

/// <summary>The x87 FPU state of a thread: eight 80-bit registers used as a stack, control and status words.</summary>
public sealed partial class VirtualCpu
{
    public readonly Float80[] Fpr = new Float80[8];
    public int FpTop;
    public ushort Fcw = 0x037F;
    public ushort Fsw;
    /// <summary>Bit n set: physical register n is empty.</summary>
    public byte FpEmpty = 0xFF;

    public X87Rounding FpRounding => (X87Rounding)((Fcw >> 10) & 3);
    public X87Precision FpPrecision => (X87Precision)((Fcw >> 8) & 3);

    public ushort FswWithTop => (ushort)((Fsw & ~0x3800) | (FpTop << 11));

    public ref Float80 St(int i) => ref Fpr[(FpTop + i) & 7];

    public bool StEmpty(int i) => (FpEmpty & (1 << ((FpTop + i) & 7))) != 0;

    public void FpPush(Float80 v)
    {
        FpTop = (FpTop - 1) & 7;
        if ((FpEmpty & (1 << FpTop)) == 0) { FpStackOverflow(); v = Float80.Indefinite; }
        Fpr[FpTop] = v;
        FpEmpty &= (byte)~(1 << FpTop);
    }

    /// <summary>Writes ST(i) and marks it valid.</summary>
    public void SetSt(int i, Float80 v)
    {
        int p = (FpTop + i) & 7;
        Fpr[p] = v;
        FpEmpty &= (byte)~(1 << p);
    }

    /// <summary>Masked x87 stack underflow (#IS): IE and SF set, C1 cleared.</summary>
    public void FpStackUnderflow()
    {
        Fsw = (ushort)((Fsw & ~0x0200) | 0x41);
        if ((Fcw & 1) == 0) Fsw |= 0x8080;
    }

    /// <summary>Masked x87 stack overflow (#IS): IE, SF and C1 set.</summary>
    public void FpStackOverflow()
    {
        Fsw |= 0x241;
        if ((Fcw & 1) == 0) Fsw |= 0x8080;
    }

    /// <summary>The control word as hardware keeps it: reserved bits 7 and 13-15 read 0, bit 6 reads 1.</summary>
    public static ushort SanitizeFcw(int cw) => (ushort)((cw & 0x1F3F) | 0x40);

    public void FpPop()
    {
        FpEmpty |= (byte)(1 << FpTop);
        FpTop = (FpTop + 1) & 7;
    }

    public void FpInit()
    {
        // the register contents survive FNINIT (only the tags say empty)
        Fcw = 0x037F; Fsw = 0; FpTop = 0; FpEmpty = 0xFF;
    }

    /// <summary>Writes the x87 part of an FXSAVE image (FCW, FSW, abridged tag, ST0-7).</summary>
    public void SaveX87(byte[] fx)
    {
        BitConverter.GetBytes(Fcw).CopyTo(fx, 0);
        BitConverter.GetBytes(FswWithTop).CopyTo(fx, 2);
        byte tag = 0;
        for (int p = 0; p < 8; p++) if ((FpEmpty & (1 << p)) == 0) tag |= (byte)(1 << p);
        fx[4] = tag;
        for (int i = 0; i < 8; i++) St(i).WriteTo(fx.AsSpan(32 + i * 16, 10));
    }

    /// <summary>Loads the x87 part of an FXSAVE image.</summary>
    public void RestoreX87(byte[] fx)
    {
        Fcw = SanitizeFcw(BitConverter.ToUInt16(fx, 0));
        ushort sw = BitConverter.ToUInt16(fx, 2);
        FpTop = (sw >> 11) & 7;
        Fsw = (ushort)(sw & ~0x3800);
        FpEmpty = (byte)~fx[4];
        for (int i = 0; i < 8; i++) St(i) = Float80.FromBytes(fx.AsSpan(32 + i * 16, 10));
    }
}
