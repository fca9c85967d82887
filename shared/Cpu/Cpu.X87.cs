namespace ReVirt.Cpu;

public sealed partial class Cpu
{
    /// <summary>Writes the x87 part of an FXSAVE image (control/status/tag words and ST0-7).</summary>
    public partial void SaveX87(byte[] fxsave);
    /// <summary>Loads the x87 part of an FXSAVE image.</summary>
    public partial void RestoreX87(byte[] fxsave);
}
