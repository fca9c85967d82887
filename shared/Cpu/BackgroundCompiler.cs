using System.Runtime.CompilerServices;

namespace ReVirt.Cpu;

/// <summary>
/// The one way into the block compiler, whose code is IL handed to the runtime's JIT (DynamicMethod). Every call is
/// behind <see cref="RuntimeFeature.IsDynamicCodeSupported"/>, which the ahead-of-time compiler (revirt-run's
/// NativeAOT publish) takes as the constant false: the compiler and its DynamicMethods are then unreachable and left
/// out of the image, so the analysis has no dynamic-code use to warn about (IL3050) and the program cannot reach
/// one. A machine in such a host runs the interpreter tier (<see cref="ExecutionTiers.Effective"/>, chosen where the
/// machine is built); this guard is what makes that choice safe by construction rather than by convention.
/// </summary>
public static class CompiledTier
{
    /// <summary>Whether this host process can run the compiled tier (a JIT is present).</summary>
    public static bool Supported => RuntimeFeature.IsDynamicCodeSupported;

    /// <summary><see cref="BlockCompiler.Compile"/> where the host can generate code; null (the region stays
    /// interpreted) where it cannot.</summary>
    internal static CompiledBlock? Compile(Block[] members, bool countHelpers)
        => RuntimeFeature.IsDynamicCodeSupported ? BlockCompiler.Compile(members, countHelpers) : null;
}

/// <summary>Stopwatch ticks the host process's region compilations spent emitting IL and in the runtime's JIT, every
/// thread together (statistics: where a compilation's cost lies). Apart from <see cref="BlockCompiler"/>, whose
/// static set-up reflects over the CPU's fields, so that reading them does not bring the emitter into a program
/// compiled ahead of time.</summary>
public static class CompileTime
{
    public static long EmitTicks, JitTicks;
    /// <summary>CPU time (ns) of the compiling threads in region compilations, emission and JIT together: unlike the
    /// Stopwatch ticks, not inflated by a loaded host's waits for a core.</summary>
    public static long CpuNs;
}

/// <summary>
/// One region queued for compilation (<see cref="CodeCache.Compile"/> in a code cache that compiles in the
/// background). Formed on the guest thread from what ran; compiled on the compiler thread; published (or discarded)
/// on the guest thread by <see cref="CodeCache.TryPublish"/>. While it is pending every member's
/// <see cref="Block.Pending"/> names it and the members keep being interpreted.
/// </summary>
public sealed class CompileJob
{
    internal readonly Block[] Members;
    CompiledBlock? _result;
    volatile bool _finished;
    /// <summary>Set on the guest thread when a member was invalidated (code written, unmapped, made non-executable)
    /// or the cache cleared: the result, whenever it comes, is of code that no longer stands and is never published.
    /// The compiler thread reads it only to skip work that has not started.</summary>
    volatile bool _cancelled;
    int _claimed;
    /// <summary>Stopwatch ticks the compiler thread spent on it (emission and the runtime's JIT).</summary>
    internal long Ticks;

    /// <summary>The compiled code counts its handler calls (a code cache with a <see cref="TierProfile"/>).</summary>
    internal readonly bool CountHelpers;

    internal CompileJob(Block[] members, bool countHelpers) { Members = members; CountHelpers = countHelpers; }

    /// <summary>True once the compiler thread is done with it (<see cref="Result"/> is then final; null when the
    /// compiler failed).</summary>
    internal bool Finished => _finished;
    internal CompiledBlock? Result => _result;
    internal bool Cancelled => _cancelled;
    internal void Cancel() => _cancelled = true;
    /// <summary>True for the one thread that is to compile it: the compiler thread, or the guest thread that got
    /// tired of waiting for a job the compiler thread had not started (<see cref="CodeCache.TryPublish"/>).</summary>
    internal bool TryClaim() => Interlocked.Exchange(ref _claimed, 1) == 0;

    /// <summary>Called once, by the compiler thread: the volatile write of <see cref="Finished"/> publishes the result
    /// (and the compiled method it refers to) to the guest thread that reads Finished first.</summary>
    internal void Finish(CompiledBlock? result, long ticks)
    {
        _result = result;
        Ticks = ticks;
        _finished = true;
    }
}

/// <summary>
/// Test seam of <see cref="BackgroundCompiler"/>: called on the compiler thread around each job it compiles, so a
/// test can hold a compilation in flight while the guest invalidates its blocks, and know when it finished.
/// </summary>
internal abstract class CompileGate
{
    /// <summary>Before compiling a job that was not cancelled when taken from the queue.</summary>
    public abstract void Entering(CompileJob job);
    /// <summary>After the job's result was stored (<see cref="CompileJob.Finished"/> is true).</summary>
    public abstract void Finished(CompileJob job);
}

/// <summary>
/// Compiles regions on one host thread of its own, so the guest thread keeps interpreting a hot block instead of
/// waiting for IL emission and the runtime's JIT (0.5-1 ms a region). Which tier runs a block then depends on host
/// timing, the results do not: a region's compiled code is published only by the guest thread, between two blocks,
/// and only while none of its blocks was invalidated since it was formed (<see cref="CodeCache.TryPublish"/>).
/// One instance (<see cref="Shared"/>) serves every code cache of the host process; its thread is a background
/// thread started at the first job, so a process that never compiles never starts it.
/// </summary>
public sealed class BackgroundCompiler
{
    static readonly Lazy<BackgroundCompiler> _shared = new(() => new BackgroundCompiler(null));
    /// <summary>The host process's compiler thread.</summary>
    public static BackgroundCompiler Shared => _shared.Value;

    readonly Queue<CompileJob> _queue = new();
    readonly CompileGate? _gate;
    Thread? _thread;
    bool _stopping;

    /// <param name="gate">null in the product; tests pass one to force the order of compilation and invalidation.</param>
    internal BackgroundCompiler(CompileGate? gate) { _gate = gate; }

    /// <summary>Jobs finished (statistics of the compiler thread, all code caches together).</summary>
    public long Compiled;

    /// <summary>Queues a region; never blocks the guest.</summary>
    internal void Enqueue(CompileJob job)
    {
        lock (_queue)
        {
            _queue.Enqueue(job);
            if (_thread == null)
            {
                _thread = new Thread(Loop) { IsBackground = true, Name = "revirt-compiler" };
                _thread.Start();
            }
            else Monitor.Pulse(_queue);
        }
    }

    /// <summary>Ends the thread once the queue is empty (a test's own compiler; <see cref="Shared"/> lives as long
    /// as the host process).</summary>
    internal void Stop()
    {
        lock (_queue) { _stopping = true; Monitor.Pulse(_queue); }
    }

    void Loop()
    {
        while (true)
        {
            CompileJob job;
            lock (_queue)
            {
                while (_queue.Count == 0 && !_stopping) Monitor.Wait(_queue);
                if (_queue.Count == 0) return;
                job = _queue.Dequeue();
            }
            // cancelled: its blocks changed before its turn came; claimed: the guest compiled it itself
            if (job.Cancelled || !job.TryClaim()) continue;
            _gate?.Entering(job);
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            CompiledBlock? f;
            // a defect of the compiler costs speed (the blocks stay interpreted), never the host process: this
            // thread has no guest instruction to blame it on
            try { f = CompiledTier.Compile(job.Members, job.CountHelpers); }
            catch (Exception) { f = null; }
            job.Finish(f, System.Diagnostics.Stopwatch.GetTimestamp() - t0);
            Interlocked.Increment(ref Compiled);
            _gate?.Finished(job);
        }
    }
}
