using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;

namespace ReVirt;

/// <summary>A virtual machine running one guest program: the facade the commands and tests use.</summary>
public sealed class Machine : IDisposable
{
    public Kernel Kernel { get; }
    public MachineOptions Options { get; }
    public IBoundary Boundary { get; }

    /// <summary>Set when the machine runs another tier than its options ask for: the one line `--stats` prints (see
    /// <see cref="ExecutionTiers.FallbackNote"/>); null when it runs the requested tier.</summary>
    public string? TierNote { get; }

    public Machine(MachineOptions options, IBoundary? boundary = null) : this(options, boundary, CompiledTier.Supported) { }

    /// <param name="dynamicCode">whether this host can run the compiled tier (<see cref="CompiledTier.Supported"/>;
    /// tests pass false to build the machine an ahead-of-time compiled program builds). Without it every tier
    /// interprets: <see cref="Options"/> then holds the interpreter tier and <see cref="TierNote"/> says so.</param>
    public Machine(MachineOptions options, IBoundary? boundary, bool dynamicCode)
    {
        TierNote = ExecutionTiers.FallbackNote(options.Tier, dynamicCode);
        Options = TierNote == null ? options : options.WithTier(ExecutionTiers.Effective(options.Tier, dynamicCode));
        Boundary = boundary ?? new LiveBoundary();
        Kernel = new Kernel(Options, Boundary);
        Boundary.Attach(Kernel);
    }

    /// <summary>Loads the program (see <see cref="Kernel.Load"/>): the one given, already read, or the one the options name.</summary>
    public void Load(StartProgram? program = null) => Kernel.Load(program);

    /// <summary>Runs the loaded program to the end; returns the exit status (128+signal when killed).</summary>
    public int Run()
    {
        // SIGINT/SIGTERM/SIGHUP sent to this process go to the guest, at an instruction boundary the boundary chooses
        // (one call per signal, not a loop over (signal, number) tuples: a tuple of an enum and an int is framework
        // generic code without ReadyToRun code, JIT-compiled at every start)
        var regs = new List<PosixSignalRegistration>();
        if (!Boundary.Replaying)
        {
            regs.Add(Forward(PosixSignal.SIGINT, Sig.INT));
            regs.Add(Forward(PosixSignal.SIGTERM, Sig.TERM));
            regs.Add(Forward(PosixSignal.SIGHUP, Sig.HUP));
        }
        try { return Kernel.Run(); }
        finally { foreach (var r in regs) r.Dispose(); }
    }

    PosixSignalRegistration Forward(PosixSignal host, int guest)
        => PosixSignalRegistration.Create(host, ctx => { ctx.Cancel = true; Kernel.PostHostSignal(guest); });

    public ulong InstructionCount => Kernel.MainThread.Cpu.InstructionCount;

    public void Dispose() => Kernel.Dispose();

    /// <summary>Loads and runs a program, mapping start-up failures to the shell's conventions (127: not found, 126: cannot run).</summary>
    public static int RunProgram(MachineOptions options, IBoundary? boundary = null)
    {
        using var m = new Machine(options, boundary);
        try
        {
            m.Load();
        }
        catch (ElfLoadException e)
        {
            options.Diagnostics.WriteLine($"revirt: {e.Message}");
            return e.ExitStatus;
        }
        return m.Run();
    }
}
