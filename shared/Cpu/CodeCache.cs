using System.Runtime.CompilerServices;
using Iced.Intel;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>A straight-line run of decoded instructions ending at a control transfer (or a size limit).</summary>
public sealed unsafe class Block
{
    public ulong Start;
    public ulong End; // address after the last instruction
    public Instruction[] Insts = Array.Empty<Instruction>();
    public delegate*<Cpu, ref Instruction, void>[] Handlers = new delegate*<Cpu, ref Instruction, void>[0];
    public int Count;
    /// <summary>1 when the last instruction is a control transfer (counted in BranchCount), else 0.</summary>
    public ulong EndsInBranch;
    public bool Valid = true;
    /// <summary>The block's bytes as decoded (the key of its compiled code, see <see cref="BlockCompiler"/>).</summary>
    public byte[] Bytes = Array.Empty<byte>();
    /// <summary>Times the interpreter ran the whole block (counts toward compilation in the default tier).</summary>
    public int Hits;
    /// <summary>The compiled form of all <see cref="Count"/> instructions, once compiled; null before.</summary>
    public CompiledBlock? Compiled;
}

/// <summary>
/// Decoded-instruction cache shared by all guest threads: every guest instruction is decoded once by Iced and
/// kept, with its handler resolved, until the guest writes to (or unmaps, or makes non-executable) the page it
/// came from. Lookup is a direct-mapped array probe, falling back to a dictionary on a miss.
/// </summary>
public sealed unsafe class CodeCache
{
    public const int MaxBlockInstructions = 64;
    /// <summary>Whole-block executions before the default tier compiles a block: enough that start-up code which
    /// runs a few times is never compiled (a compilation costs as much as thousands of interpreted blocks).</summary>
    public const int DefaultCompileThreshold = 256;
    const int FastBits = 14;
    readonly Block?[] _fast = new Block?[1 << FastBits];
    readonly Dictionary<ulong, Block> _blocks = new();
    readonly Dictionary<ulong, List<Block>> _byPage = new();
    readonly GuestMemory _mem;
    readonly byte[] _fetch = new byte[MaxBlockInstructions * 15 + 16];
    readonly Block _faultBlock;

    /// <summary>The block whose instructions are executing (set by Lookup), to detect self-modification.</summary>
    Block? _running;

    /// <summary>Use the handlers specialised per operand form (Isa.Fast.cs); false runs everything through the generic
    /// handlers, so tests can check that both give identical results. Set before the first lookup.</summary>
    public bool SpecializedHandlers { get; init; } = true;

    public long Decoded;      // instructions decoded (statistics)
    public long Invalidations;

    /// <summary>Which tier runs blocks (<see cref="ExecutionTier"/>); results are the same in every tier.</summary>
    public ExecutionTier Tier { get; }

    /// <summary>Executions of a whole block after which the default tier compiles it; 0 never compiles.</summary>
    public readonly int CompileThreshold;

    // statistics of the compiled tier
    public long BlocksCompiled, CompileTicks, CompiledInstructions;

    public CodeCache(GuestMemory mem, ExecutionTier tier = ExecutionTier.Default)
    {
        Tier = tier;
        CompileThreshold = tier switch { ExecutionTier.Interpreter => 0, ExecutionTier.Compiled => 1, _ => DefaultCompileThreshold };

        _mem = mem;
        _mem.CodeWritten = OnCodeWritten;
        _faultBlock = new Block();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Block Lookup(ulong rip)
    {
        int ix = (int)((rip ^ (rip >> FastBits)) & ((1 << FastBits) - 1));
        Block? b = _fast[ix];
        if (b == null || b.Start != rip) b = _fast[ix] = LookupSlow(rip);
        _running = b;
        return b;
    }

    Block LookupSlow(ulong rip)
    {
        if (_blocks.TryGetValue(rip, out var b)) return b;
        b = Translate(rip);
        _blocks[rip] = b;
        for (ulong pn = b.Start >> GuestMemory.PageShift; pn <= (Math.Max(b.End, b.Start + 1) - 1) >> GuestMemory.PageShift; pn++)
        {
            if (!_byPage.TryGetValue(pn, out var list)) _byPage[pn] = list = new List<Block>();
            list.Add(b);
        }
        return b;
    }

    Block Translate(ulong rip)
    {
        int avail = _mem.FetchCode(rip, _fetch);
        var insts = new List<Instruction>(16);
        var b = new Block { Start = rip };
        if (avail == 0)
        {
            // not executable: a block of one pseudo-instruction that raises SIGSEGV at rip
            var fault = new Instruction();
            fault.IP = rip;
            fault.NextIP = rip;
            b.Insts = new[] { fault };
            b.Handlers = new delegate*<Cpu, ref Instruction, void>[] { &Isa.ExecFault };
            b.Count = 1;
            b.End = rip;
            return b;
        }
        var reader = new ByteArrayCodeReader(_fetch, 0, avail);
        var decoder = Decoder.Create(64, reader, rip, DecoderOptions.NoInvalidCheck);
        var handlers = new List<nint>(16);
        ulong end = rip;
        while (insts.Count < MaxBlockInstructions)
        {
            if ((int)(decoder.IP - rip) >= avail) break;
            decoder.Decode(out var ins);
            if (ins.Code == Code.INVALID && decoder.LastError == DecoderError.NoMoreBytes && insts.Count > 0)
                break; // the rest of the instruction is on a page we may not fetch: end the block before it
            insts.Add(ins);
            handlers.Add((nint)Isa.HandlerFor(ref ins, SpecializedHandlers));
            Decoded++;
            end = ins.NextIP;
            if (Isa.EndsBlock(ref ins)) { if (Isa.IsBranch(ref ins)) b.EndsInBranch = 1; break; }
        }
        b.Insts = insts.ToArray();
        b.Count = b.Insts.Length;
        b.Handlers = new delegate*<Cpu, ref Instruction, void>[b.Count];
        for (int i = 0; i < b.Count; i++) b.Handlers[i] = (delegate*<Cpu, ref Instruction, void>)handlers[i];
        b.End = end;
        b.Bytes = _fetch.AsSpan(0, (int)(end - rip)).ToArray();
        return b;
    }

    /// <summary>Compiles b (its compiled code then runs it whenever all of it is to be executed).</summary>
    public CompiledBlock Compile(Block b)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var f = b.Compiled = BlockCompiler.Compile(b);
        CompileTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
        BlocksCompiled++;
        return f;
    }

    bool OnCodeWritten(ulong pn)
    {
        if (!_byPage.TryGetValue(pn, out var list)) return false;
        bool hitRunning = false;
        _byPage.Remove(pn);
        foreach (var b in list)
        {
            if (!b.Valid) continue;
            b.Valid = false;
            Invalidations++;
            if (_blocks.TryGetValue(b.Start, out var cur) && cur == b) _blocks.Remove(b.Start);
            int ix = (int)((b.Start ^ (b.Start >> FastBits)) & ((1 << FastBits) - 1));
            if (_fast[ix] == b) _fast[ix] = null;
            if (b == _running) hitRunning = true;
        }
        return hitRunning;
    }

    /// <summary>Drops everything (after exec or a large unmap).</summary>
    public void Clear()
    {
        Array.Clear(_fast);
        foreach (var b in _blocks.Values) b.Valid = false;
        _blocks.Clear();
        _byPage.Clear();
    }
}
