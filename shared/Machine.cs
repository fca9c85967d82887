using ReVirt.Abi;

namespace ReVirt;

/// <summary>A virtual machine running one guest program: the facade the commands and tests use.</summary>
public sealed class Machine : IDisposable
{
    public LinuxKernel Kernel { get; }
    public MachineOptions Options { get; }

    public Machine(MachineOptions options, IBoundary? boundary = null)
    {
        Options = options;
        Kernel = new LinuxKernel(options, boundary ?? new LiveBoundary());
    }

    /// <summary>Loads the program and runs it to the end; returns the exit status (128+signal when killed).</summary>
    public int Run()
    {
        Kernel.Load();
        return Kernel.Run();
    }

    public ulong InstructionCount => Kernel.MainThread.InstructionCount;

    public void Dispose() => Kernel.Mem.Dispose();

    /// <summary>Runs a program and maps start-up failures to the shell's conventions (127: not found, 126: cannot run).</summary>
    public static int RunProgram(MachineOptions options, IBoundary? boundary = null)
    {
        using var m = new Machine(options, boundary);
        try
        {
            return m.Run();
        }
        catch (ElfLoadException e)
        {
            options.Diagnostics.WriteLine($"revirt: {e.Message}");
            return e.Message.EndsWith("no such file") ? 127 : 126;
        }
    }
}
