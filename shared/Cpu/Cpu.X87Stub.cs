namespace ReVirt.Cpu;

public sealed partial class Cpu
{
    public partial void SaveX87(byte[] fxsave) { }
    public partial void RestoreX87(byte[] fxsave) { }
}
