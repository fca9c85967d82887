using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// The process-wide tables every first decode needs: Iced's decoder tables (built by its static initialisers: the
/// runtime loads some hundred handler types and JIT-compiles Iced's List&lt;HandlerInfo&gt;, which no ReadyToRun image
/// holds) and the ISA's handler table (<see cref="Isa"/>'s one-time registration). Both are built once per process
/// from constants, so their content does not depend on who builds them or when; the runtime's class initialisation
/// makes a reader that comes first wait until they are complete.
/// </summary>
public static class DecodeTables
{
    /// <summary>One NOP: decoding it runs Iced's table initialisers for every encoding (the decoder's constructor
    /// reads them all).</summary>
    static readonly byte[] Nop = [0x90];

    /// <summary>
    /// Starts building the tables on a thread of its own, for a host that is about to run a guest: the thread works
    /// on the second core while the main thread parses the command line, builds the machine and reads the program,
    /// instead of the first guest block paying for the tables on the main thread. It costs the same CPU; it saves
    /// wall time where a core is idle. The thread is a background thread and ends when the tables are built.
    /// </summary>
    public static void BuildInBackground()
    {
        var t = new Thread(Build) { IsBackground = true, Name = "revirt decode tables" };
        t.Start();
    }

    /// <summary>Builds both tables on the calling thread (no-op once built).</summary>
    public static void Build()
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(Nop), DecoderOptions.NoInvalidCheck);
        decoder.Decode(out var nop);
        Isa.Implements(ref nop);
    }
}
