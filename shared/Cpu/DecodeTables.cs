using Iced.Intel;
using ReVirt.Linux;

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
    /// Starts building the tables on a thread of its own, for a host that is about to run a guest, when a core is
    /// free for it (<see cref="CoreFree"/>): the thread works on that core while the main thread parses the command
    /// line, builds the machine and reads the program, instead of the first guest block paying for the tables on the
    /// main thread. It saves wall time where a core is idle; where none is, the tables are left to the first decode.
    /// The thread is a background thread and ends when the tables are built.
    /// </summary>
    public static void BuildInBackground()
    {
        if (!CoreFree()) return;
        var t = new Thread(Build) { IsBackground = true, Name = "revirt decode tables" };
        t.Start();
    }

    /// <summary>
    /// Whether fewer tasks are runnable on the host right now (the fourth field of /proc/loadavg, "runnable/total",
    /// this thread included) than this process has CPUs. On a host without a free core the builder thread only
    /// queues behind other work, and the main thread, reaching the first decode while the preempted builder holds
    /// Iced's class initialisation, spins waiting for it: 4 % more CPU per `busybox true` than building the tables
    /// on the main thread, at load 75-99 on 2 cores. False when the file cannot be read. (open/read into a stack
    /// buffer and a plain loop: File.ReadAllText and int.Parse cost milliseconds of first-use work.)
    /// </summary>
    static unsafe bool CoreFree()
    {
        const int Size = 128; // "0.52 0.58 0.59 2/612 12345\n"
        byte* buf = stackalloc byte[Size];
        long len;
        fixed (byte* path = "/proc/loadavg\0"u8)
        {
            long fd = HostSys.Call(Nr.open, (long)path, O.RDONLY | O.CLOEXEC);
            if (fd < 0) return false;
            len = HostSys.Call(Nr.read, fd, (long)buf, Size);
            HostSys.Call(Nr.close, fd);
        }
        return len > 0 && RunnableOf(new ReadOnlySpan<byte>(buf, (int)len)) is int runnable && runnable < Environment.ProcessorCount;
    }

    /// <summary>The runnable-task count of a /proc/loadavg line (the number before '/' in its fourth field); -1 when
    /// the line has none (so no core counts as free).</summary>
    internal static int RunnableOf(ReadOnlySpan<byte> line)
    {
        int i = 0;
        for (int field = 1; field < 4; field++)
        {
            while (i < line.Length && line[i] != (byte)' ') i++;
            i++;
        }
        int v = 0, digits = 0;
        for (; i < line.Length && line[i] is >= (byte)'0' and <= (byte)'9' && digits < 9; i++, digits++) v = v * 10 + (line[i] - '0');
        return digits > 0 && i < line.Length && line[i] == (byte)'/' ? v : -1;
    }

    /// <summary>Builds both tables on the calling thread (no-op once built).</summary>
    public static void Build()
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(Nop), DecoderOptions.NoInvalidCheck);
        decoder.Decode(out var nop);
        Isa.Implements(ref nop);
    }
}
