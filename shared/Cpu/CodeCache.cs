using System.Runtime.CompilerServices;
using Iced.Intel;
using ReVirt.Memory;

namespace ReVirt.Cpu;

/// <summary>A straight-line run of decoded instructions ending at a control transfer (or a size limit).</summary>
public sealed unsafe class Block
{
    public ulong Start;
    public ulong End; // address after the last instruction
    public Instruction[] Insts = NoInstructions;
    static readonly Instruction[] NoInstructions = new Instruction[0]; // not Array.Empty<Instruction>: JIT-compiled at start-up
    public delegate*<VirtualCpu, ref Instruction, void>[] Handlers = new delegate*<VirtualCpu, ref Instruction, void>[0];
    public int Count;
    /// <summary>1 when the last instruction is a control transfer (counted in BranchCount), else 0.</summary>
    public ulong EndsInBranch;
    public bool Valid = true;
    /// <summary>The block's bytes as decoded (the key of its compiled code, see <see cref="BlockCompiler"/>).</summary>
    public byte[] Bytes = Array.Empty<byte>();
    /// <summary>Times the interpreter ran the whole block (counts toward compilation in the default tier).</summary>
    public int Hits;
    /// <summary>The value of <see cref="Hits"/> at which the code cache compiles the block (its region): the cache's
    /// threshold weighed by what compiling this block costs and saves (<see cref="CompileCost"/>); 0 never (a cache
    /// that does not compile). Set when the block is decoded; the block's bytes decide it.</summary>
    public int CompileAt;
    /// <summary>The compiled form of all <see cref="Count"/> instructions, once compiled; null before. It may run
    /// on into the other blocks of its region (<see cref="Members"/>) without returning to the execution loop.</summary>
    public CompiledBlock? Compiled;
    /// <summary>The blocks of the region <see cref="Compiled"/> belongs to (every member shares the array and the
    /// compiled code, which is entered at <see cref="RegionIndex"/>); the index of the block executing is
    /// <see cref="VirtualCpu.RegionMember"/>. Null while not compiled.</summary>
    public Block[]? Members;
    /// <summary>This block's index in <see cref="Members"/>.</summary>
    public int RegionIndex;
    /// <summary>The region compilation this block waits for (a cache that compiles in the background); null when none.
    /// Set and cleared on the guest thread only.</summary>
    public CompileJob? Pending;
}

/// <summary>
/// Decoded-instruction cache shared by all guest threads: every guest instruction is decoded once by Iced and
/// kept, with its handler resolved, until the guest writes to (or unmaps, or makes non-executable) the page it
/// came from. Lookup is a direct-mapped array probe, falling back to a dictionary on a miss.
/// </summary>
public sealed unsafe class CodeCache
{
    public const int MaxBlockInstructions = 64;
    /// <summary>Whole-block executions before the default tier compiles a block. Compiling one block (IL emission
    /// and the runtime's JIT) costs 1-3 ms, the time of interpreting a short block some 10,000 times; waiting that
    /// long keeps start-up loops (memset, ld.so's relocation walk) interpreted, and costs a hot loop that runs
    /// millions of times at most that 1-3 ms more. (256 compiled 8 blocks of `busybox true` and made it slower.)</summary>
    public const int DefaultCompileThreshold = 4096;
    /// <summary>Bounds of a region (see <see cref="FormRegion"/>): the runtime's compile time grows with the method;
    /// 8-24 blocks measured alike on gzip and bzip2 (their inner loops are 2-8 blocks).</summary>
    public const int MaxRegionBlocks = 16, MaxRegionInstructions = 256;
    const int FastBits = 14;
    readonly Block?[] _fast = new Block?[1 << FastBits];
    readonly Dictionary<ulong, Block> _blocks = new();
    readonly Dictionary<ulong, List<Block>> _byPage = new();
    readonly GuestMemory _mem;
    readonly byte[] _fetch = new byte[MaxBlockInstructions * 15 + 16];
    // the block being decoded (arrays rather than lists: List<Instruction> would be JIT-compiled at start-up)
    readonly Instruction[] _decoded = new Instruction[MaxBlockInstructions];
    readonly delegate*<VirtualCpu, ref Instruction, void>[] _decodedHandlers = new delegate*<VirtualCpu, ref Instruction, void>[MaxBlockInstructions];
    readonly Block _faultBlock;

    /// <summary>Start of the block whose instructions are executing (set by Lookup), to detect self-modification.
    /// An address, not a reference, so that the per-block store needs no GC write barrier; at most one valid block
    /// starts at an address.</summary>
    ulong _running = ulong.MaxValue;

    /// <summary>Use the handlers specialised per operand form (Isa.Fast.cs); false runs everything through the generic
    /// handlers, so tests can check that both give identical results. Set before the first lookup.</summary>
    public bool SpecializedHandlers { get; init; } = true;

    public long Decoded;      // instructions decoded (statistics)
    public long Invalidations;

    /// <summary>Which tier runs blocks (<see cref="ExecutionTier"/>); results are the same in every tier.</summary>
    public ExecutionTier Tier { get; }

    /// <summary>Executions of a whole block after which the default tier compiles it; 0 never compiles. With
    /// <see cref="WeighByCost"/> a block whose compiled code saves less per run (SSE forms) waits longer
    /// (<see cref="Block.CompileAt"/>).</summary>
    public readonly int CompileThreshold;

    /// <summary>Each block's compile point is the threshold weighed by its instruction mix (<see cref="CompileCost"/>);
    /// false: every block compiles after exactly <see cref="CompileThreshold"/> runs (tests that need regions to form
    /// at a known iteration).</summary>
    public bool WeighByCost { get; }

    // statistics of the tiers (instructions that ran compiled: all retired minus these interpreted ones); CompileTicks
    // are those of the regions compiled (published ones, with a background compiler), MaxCompileTicks the longest
    public long BlocksCompiled, RegionsCompiled, CompileTicks, MaxCompileTicks, InterpretedInstructions, CompileFailures;
    /// <summary>Regions queued to the background compiler, and those whose result was discarded because one of their
    /// blocks was invalidated while they were compiled or waited to be published.</summary>
    public long RegionsQueued, CompilesDiscarded;
    /// <summary>Queued regions the guest thread compiled itself because the compiler thread had not started them
    /// while the head ran another threshold's worth of times (see <see cref="TryPublish"/>).</summary>
    public long RegionsTakenBack;

    /// <summary>Where the default tier compiles: null on the guest thread, when a block gets hot (the guest waits);
    /// else on that compiler's thread while the guest goes on interpreting (<see cref="TryPublish"/>).</summary>
    public BackgroundCompiler? Background { get; }

    /// <summary>Blocks decoded from program images, shared with the other processes of the machine (null: none).</summary>
    readonly SharedCode? _shared;

    /// <summary>Counts of region exits and handler calls (<see cref="TierProfile"/>); null (the default) counts
    /// nothing. Regions compiled while it is set count their handler calls into it.</summary>
    public TierProfile? Profile;

    /// <summary>Whether this host process can run the compiled tier: it emits IL for the runtime's JIT, which a program
    /// compiled ahead of time (revirt-run) does not have. A constant there, so the compiler is left out of it.</summary>
    public static bool CanCompile => RuntimeFeature.IsDynamicCodeSupported;

    /// <param name="compileThreshold">overrides the tier's threshold (tests use small ones to have regions form
    /// after a few iterations); ignored by the interpreter-only tier.</param>
    /// <param name="background">the default tier's compiler thread (null: compile on the guest thread); the
    /// <see cref="ExecutionTier.Compiled"/> tier always compiles on the guest thread, before a block's first run.</param>
    /// <param name="weighByCost">see <see cref="WeighByCost"/>; by default on unless a threshold is given.</param>
    public CodeCache(GuestMemory mem, ExecutionTier tier = ExecutionTier.Default, SharedCode? shared = null, int? compileThreshold = null, BackgroundCompiler? background = null,
        bool? weighByCost = null)
    {
        _shared = shared;
        Tier = tier;
        Background = tier == ExecutionTier.Default ? background : null;
        // a host that cannot generate code (an ahead-of-time compiled program: no JIT for DynamicMethod) interprets
        // in every tier; the results are the same in every tier, so only the speed differs
        CompileThreshold = !CanCompile ? 0 : tier switch
        {
            ExecutionTier.Interpreter => 0,
            ExecutionTier.Compiled => 1,
            _ => compileThreshold is > 0 ? compileThreshold.Value : DefaultCompileThreshold,
        };
        // the compiled tier compiles every block before its first run: nothing to weigh
        WeighByCost = tier == ExecutionTier.Default && (weighByCost ?? compileThreshold == null);

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
        _running = rip;
        return b;
    }

    /// <summary>The valid block decoded at rip, or null (nothing is decoded; for reports).</summary>
    public Block? Find(ulong rip) => _blocks.TryGetValue(rip, out var b) ? b : null;

    Block LookupSlow(ulong rip)
    {
        if (_blocks.TryGetValue(rip, out var b)) return b;
        b = _shared != null && SpecializedHandlers ? SharedOrTranslate(rip, _shared) : Translate(rip, out _);
        _blocks[rip] = b;
        for (ulong pn = b.Start >> GuestMemory.PageShift; pn <= (Math.Max(b.End, b.Start + 1) - 1) >> GuestMemory.PageShift; pn++)
        {
            if (!_byPage.TryGetValue(pn, out var list)) _byPage[pn] = list = new List<Block>();
            list.Add(b);
        }
        return b;
    }

    /// <summary>
    /// The block at rip from the machine's shared store when the bytes it spans are pinned frames of a program
    /// image (the same frames mapped executable here: the same bytes, so the same decoding), else decoded here and,
    /// when it lies on such frames and its end did not depend on what follows them, added to the store.
    /// </summary>
    Block SharedOrTranslate(ulong rip, SharedCode shared)
    {
        ulong pn = rip >> GuestMemory.PageShift;
        var first = _mem.PinnedCodeFrame(pn);
        if (first == null) return Translate(rip, out _);
        if (shared.TryGet(first, rip, out var b, out var second))
        {
            ulong last = (b.End - 1) >> GuestMemory.PageShift;
            if (last == pn || (second != null && _mem.PinnedCodeFrame(last) == second))
            {
                for (ulong p = pn; p <= last; p++) _mem.MarkCode(p);
                shared.Hits++;
                return b;
            }
        }
        b = Translate(rip, out bool complete);
        if (!complete) return b;
        ulong lastPage = (b.End - 1) >> GuestMemory.PageShift;
        SharedFrame? next = null;
        if (lastPage != pn && (next = _mem.PinnedCodeFrame(lastPage)) == null) return b;
        shared.Add(first, rip, b, next);
        return b;
    }

    /// <param name="complete">The block ended at a control transfer or at its size limit, not where the executable
    /// bytes ran out (so its decoding depends on its own bytes alone).</param>
    Block Translate(ulong rip, out bool complete)
    {
        complete = false;
        int avail = _mem.FetchCode(rip, _fetch);
        var insts = _decoded;
        int n = 0;
        var b = new Block { Start = rip };
        if (avail == 0)
        {
            // not executable: a block of one pseudo-instruction that raises SIGSEGV at rip
            var fault = new Instruction();
            fault.IP = rip;
            fault.NextIP = rip;
            b.Insts = new[] { fault };
            b.Handlers = new delegate*<VirtualCpu, ref Instruction, void>[] { &Isa.ExecFault };
            b.Count = 1;
            b.End = rip;
            b.CompileAt = CompileThreshold;
            return b;
        }
        var reader = new ByteArrayCodeReader(_fetch, 0, avail);
        var decoder = Decoder.Create(64, reader, rip, DecoderOptions.NoInvalidCheck);
        var handlers = _decodedHandlers;
        ulong end = rip;
        while (n < MaxBlockInstructions)
        {
            if ((int)(decoder.IP - rip) >= avail) break;
            decoder.Decode(out insts[n]);
            ref var ins = ref insts[n];
            if (ins.Code == Code.INVALID && decoder.LastError == DecoderError.NoMoreBytes && n > 0)
                break; // the rest of the instruction is on a page we may not fetch: end the block before it
            handlers[n] = Isa.HandlerFor(ref ins, SpecializedHandlers);
            n++;
            Decoded++;
            end = ins.NextIP;
            if (Isa.EndsBlock(ref ins)) { if (Isa.IsBranch(ref ins)) b.EndsInBranch = 1; complete = true; break; }
        }
        if (n == MaxBlockInstructions) complete = true;
        b.Insts = new Instruction[n];
        Array.Copy(insts, b.Insts, n);
        b.Count = n;
        b.Handlers = new delegate*<VirtualCpu, ref Instruction, void>[n];
        for (int i = 0; i < n; i++) b.Handlers[i] = handlers[i];
        b.End = end;
        b.Bytes = _fetch.AsSpan(0, (int)(end - rip)).ToArray();
        b.CompileAt = WeighByCost ? CompileCost.CompileAt(CompileThreshold, b.Insts) : CompileThreshold;
        return b;
    }

    /// <summary>Compiles b with the warm blocks it leads to (its region, <see cref="FormRegion"/>); its compiled code
    /// then runs whenever all of b is to be executed. Null (and b stays interpreted) when the compiler fails, which
    /// is a defect of the compiler that must cost speed, never the guest's results or the host process. With a
    /// <see cref="Background"/> compiler the region is queued there and null returned: its blocks run interpreted
    /// until <see cref="TryPublish"/> finds the compilation finished.</summary>
    public CompiledBlock? Compile(Block b)
    {
        if (!RuntimeFeature.IsDynamicCodeSupported) return null; // no compiled tier in this host (see CanCompile)
        Block[] members = FormRegion(b);
        if (Background is { } background)
        {
            var job = new CompileJob(members, countHelpers: Profile != null);
            foreach (var m in members) m.Pending = job;
            RegionsQueued++;
            background.Enqueue(job);
            return null;
        }
        var f = CompileHere(members, Profile != null, out long ticks);
        return Install(members, f, ticks);
    }

    /// <summary>The region compiled, or null when the compiler failed in any way (a defect in an emitter shows as any
    /// exception, a NullReferenceException as well as an InvalidProgramException from the JIT): one that escaped
    /// would unwind through the execution loop with the block half entered and take the host process down.</summary>
    internal static CompiledBlock? CompileHere(Block[] members, bool countHelpers, out long ticks)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        try { return CompiledTier.Compile(members, countHelpers); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return null;
        }
        finally { ticks = System.Diagnostics.Stopwatch.GetTimestamp() - t0; }
    }

    /// <summary>
    /// Publishes the background compilation b waits for, if it finished: into every block of its region at once
    /// (this runs on the guest thread, between blocks, as does every invalidation, so no block of the region can
    /// change while it is published). Discarded when the job was cancelled (a member was invalidated since the
    /// region was formed: <see cref="OnCodeWritten"/>, <see cref="Clear"/>) or a member is no longer valid; the
    /// members then count toward a new compilation from zero. Null while the compilation is in flight. A job the
    /// compiler thread has not started by the time b ran another <see cref="CompileThreshold"/> times since it got
    /// hot is compiled here: on a host with no idle core that thread may not run for a long time, and interpreting a
    /// hot block costs more than compiling it.
    /// </summary>
    public CompiledBlock? TryPublish(Block b)
    {
        var job = b.Pending!;
        if (!job.Finished)
        {
            if (++b.Hits < b.CompileAt + CompileThreshold || job.Cancelled || !job.TryClaim()) return null;
            var f = CompileHere(job.Members, job.CountHelpers, out long ticks);
            job.Finish(f, ticks);
            RegionsTakenBack++;
        }
        Block[] members = job.Members;
        bool stands = !job.Cancelled;
        foreach (var m in members)
        {
            if (m.Pending != job || !m.Valid) stands = false;
            if (m.Pending == job) m.Pending = null;
        }
        if (!stands)
        {
            CompilesDiscarded++;
            foreach (var m in members) m.Hits = 0;
            return null;
        }
        return Install(members, job.Result, job.Ticks);
    }

    /// <summary>Makes f the compiled code of every member (null: the compiler failed, they stay interpreted).</summary>
    CompiledBlock? Install(Block[] members, CompiledBlock? f, long ticks)
    {
        CompileTicks += ticks;
        if (f == null) { CompileFailures++; return null; }
        MaxCompileTicks = Math.Max(MaxCompileTicks, ticks);
        for (int j = 0; j < members.Length; j++)
        {
            members[j].Compiled = f;
            members[j].Members = members;
            members[j].RegionIndex = j;
        }
        BlocksCompiled += members.Length;
        RegionsCompiled++;
        return f;
    }

    /// <summary>Any compilation b waits for will not be published (b changed or left this cache).</summary>
    static void CancelPending(Block b)
    {
        if (b.Pending is not { } job) return;
        job.Cancel();
        b.Pending = null;
    }

    /// <summary>
    /// The region of a hot block: it and the blocks reachable from it by direct jumps, conditional jumps, direct
    /// calls and fall-through that are decoded already, not compiled yet and warm (ran whole at least an eighth of
    /// its own compile point, <see cref="Block.CompileAt"/>), breadth first, within <see cref="MaxRegionBlocks"/> and
    /// <see cref="MaxRegionInstructions"/>. Every block is compiled once, in one region, which is entered at any of
    /// its blocks. Nothing is decoded for it: what a region contains depends only on what ran, and decoding ahead
    /// could touch pages the guest never executed.
    /// </summary>
    Block[] FormRegion(Block head)
    {
        var members = new List<Block> { head };
        // A block of the shared store (and so its compiled code) may be run by another process that maps the same
        // frame at its page, and nothing else alike: a region of shared blocks stays within the head's page (the
        // same bytes wherever the head is), and shared and private blocks never mix.
        bool shared = _shared != null && _shared.Holds(head);
        ulong page = head.Start >> GuestMemory.PageShift;
        if (shared && ((head.End - 1) >> GuestMemory.PageShift) != page) return members.ToArray();
        int instructions = head.Count;
        Span<ulong> next = stackalloc ulong[2];
        for (int j = 0; j < members.Count && members.Count < MaxRegionBlocks; j++)
        {
            Block m = members[j];
            if (m.Count == 0 || m.Bytes.Length == 0) continue;
            int n = Successors(ref m.Insts[m.Count - 1], next);
            for (int t = 0; t < n; t++)
            {
                if (!_blocks.TryGetValue(next[t], out var s) || !s.Valid || s.Bytes.Length == 0) continue;
                if (s.Hits < s.CompileAt / 8 || s.Compiled != null || s.Pending != null) continue;
                if (_shared != null && _shared.Holds(s) != shared) continue;
                if (shared && ((s.Start >> GuestMemory.PageShift) != page || ((s.End - 1) >> GuestMemory.PageShift) != page)) continue;
                if (members.Contains(s) || instructions + s.Count > MaxRegionInstructions || members.Count >= MaxRegionBlocks) continue;
                members.Add(s);
                instructions += s.Count;
            }
        }
        return members.ToArray();
    }

    /// <summary>The addresses a block ending in `last` continues at without an indirect transfer.</summary>
    static int Successors(ref Instruction last, Span<ulong> next)
    {
        if (!Isa.EndsBlock(ref last)) { next[0] = last.NextIP; return 1; } // ended by the size limit or a page edge
        if (last.Op0Kind != OpKind.NearBranch64 || last.OpCount != 1) return 0;
        switch (last.FlowControl)
        {
            case FlowControl.ConditionalBranch: next[0] = last.NearBranch64; next[1] = last.NextIP; return 2;
            case FlowControl.UnconditionalBranch or FlowControl.Call: next[0] = last.NearBranch64; return 1;
            default: return 0;
        }
    }

    bool OnCodeWritten(ulong pn)
    {
        if (!_byPage.TryGetValue(pn, out var list)) return false;
        bool hitRunning = false;
        _byPage.Remove(pn);
        foreach (var b in list)
        {
            // a block of the shared store stays valid for the other processes (their frames did not change): it
            // leaves this cache only, and Valid keeps meaning "valid somewhere"
            if (!_blocks.TryGetValue(b.Start, out var cur) || cur != b) continue;
            if (_shared == null || !_shared.Holds(b)) b.Valid = false;
            Invalidations++;
            _blocks.Remove(b.Start);
            int ix = (int)((b.Start ^ (b.Start >> FastBits)) & ((1 << FastBits) - 1));
            if (_fast[ix] == b) _fast[ix] = null;
            if (b.Start == _running) hitRunning = true;
            CancelPending(b);
            // the region that runs this block's old code is dropped, at each of its entries
            if (b.Members is { } region && DropRegion(region)) hitRunning = true;
        }
        return hitRunning;
    }

    /// <summary>Makes every block of a compiled region interpreted again (they compile again once hot again); true
    /// when the block running now is one of them.</summary>
    public bool DropRegion(Block[] region)
    {
        bool running = false;
        foreach (var m in region)
        {
            if (m.Members != region) continue;
            m.Compiled = null;
            m.Members = null;
            m.Hits = 0;
            if (m.Start == _running) running = true;
        }
        return running;
    }

    /// <summary>Drops everything (after exec or a large unmap).</summary>
    public void Clear()
    {
        Array.Clear(_fast);
        foreach (var b in _blocks.Values)
        {
            CancelPending(b);
            if (_shared == null || !_shared.Holds(b)) b.Valid = false;
        }
        _blocks.Clear();
        _byPage.Clear();
    }
}

/// <summary>
/// Blocks decoded from the pinned frames of program images (<see cref="GuestMemory.ToTemplate"/>), shared by every
/// process of one machine that maps those frames executable: a process that execs a program another one ran (a
/// shell's children) does not decode its code again, and the hit counts and compiled code are shared too. Keyed by
/// the frame of the block's first byte and its address; a block that crosses into the next page records that
/// page's frame, and is used only where both are mapped. A pinned frame never changes, so a block here never goes
/// stale; a process that writes to such a page gets its own copy of it and drops the block from its own cache only.
/// One machine's processes run on one host thread at a time, so the store needs no lock.
/// </summary>
public sealed class SharedCode
{
    // by frame, then by address: instantiations over references and ulong keys, whose code the framework's
    // ReadyToRun image holds (a tuple key would be JIT-compiled at start-up)
    readonly Dictionary<SharedFrame, Dictionary<ulong, Entry>> _blocks = new(ReferenceEqualityComparer.Instance);
    readonly HashSet<Block> _held = new(ReferenceEqualityComparer.Instance);

    sealed class Entry(Block block, SharedFrame? next)
    {
        public readonly Block Block = block;
        public readonly SharedFrame? Next = next;
    }

    /// <summary>Blocks taken from the store instead of being decoded (statistics).</summary>
    public long Hits;
    public int Count => _count;
    int _count;

    public bool TryGet(SharedFrame first, ulong rip, out Block block, out SharedFrame? next)
    {
        if (_blocks.TryGetValue(first, out var inFrame) && inFrame.TryGetValue(rip, out var e)) { block = e.Block; next = e.Next; return true; }
        block = null!; next = null;
        return false;
    }

    public void Add(SharedFrame first, ulong rip, Block b, SharedFrame? next)
    {
        if (!_blocks.TryGetValue(first, out var inFrame)) _blocks[first] = inFrame = new Dictionary<ulong, Entry>();
        if (!inFrame.ContainsKey(rip)) _count++;
        inFrame[rip] = new Entry(b, next);
        _held.Add(b);
    }

    public bool Holds(Block b) => _held.Contains(b);
}
