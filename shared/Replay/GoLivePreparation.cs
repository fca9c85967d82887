using System.Reflection;
using System.Runtime.CompilerServices;
using ReVirt.Linux;
using ReVirt.Net;
using ReVirt.Replication;

namespace ReVirt.Replay;

/// <summary>
/// Prepares the go-live's code while a backup follows a guest with a virtual network interface, so that the replay
/// thread does not run it for the first time after the arbiter's grant while every client waits (measured before:
/// 23-24 ms of the replay thread's CPU between the grant and the go-live's end, most of it first use of code a
/// follower never ran). Two parts, both on a thread of their own (raised, never real-time), once per process:
/// <list type="bullet">
/// <item>a dry pass of the in-VM stack's takeover on scratch stacks (<see cref="TakeoverRehearsal"/>): runs the same
/// code, so the generic instantiations it needs are compiled and its types loaded;</item>
/// <item><see cref="RuntimeHelpers.PrepareMethod(RuntimeMethodHandle)"/> on the go-live steps that act on the host or
/// the machine (<see cref="ReplayBoundary.GoLiveMethods"/>: the interface's takeover and transmit, descriptors
/// attached, timers re-armed, host waits renewed, the live boundary): their code is made ready without running
/// them.</item>
/// </list>
/// Contract: nothing of the replicated machine, its TAP device or its log is touched; a failure here is counted in
/// the report and changes nothing but the go-live's speed.
/// </summary>
public static class GoLivePreparation
{
    /// <summary>What the preparation did: methods made ready, methods that could not be (counted, not fatal), the
    /// dry pass's outcome and how long it all took on its thread.</summary>
    public sealed record Report(int Prepared, int Failed, TakeoverRehearsal.Result Rehearsal, double Ms)
    {
        /// <summary>The dry pass of the recording that continues the log (<see cref="FollowOptions.RehearseContinue"/>)
        /// ran to its end (false: none was given, or it threw: counted in <see cref="Failed"/>).</summary>
        public bool ContinuationRehearsed { get; init; }
    }

    static int _started;
    static readonly TaskCompletionSource<Report> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The preparation's report once it has finished (faulted if the dry pass threw).</summary>
    public static Task<Report> Finished => Done.Task;

    /// <summary>True once the preparation has finished successfully (a go-live that came earlier ran cold).</summary>
    public static bool Ready => Done.Task.IsCompletedSuccessfully;

    /// <summary>Starts the preparation for an interface with <paramref name="like"/>'s behaviour, unless it already
    /// started in this process (cheap to call on every network input of a follower). <paramref name="continuation"/>:
    /// a dry pass of the recording a survivor with standbys continues the log with (<see cref="FollowOptions.RehearseContinue"/>).</summary>
    public static void Start(NetConfig like, Action? continuation = null)
    {
        if (Volatile.Read(ref _started) != 0 || Interlocked.Exchange(ref _started, 1) != 0) return;
        new Thread(() =>
        {
            // a thread inherits its creator's scheduling: the replay thread may be real-time, which this work must
            // not be; it is raised as the ack path is (once, 0.1-0.3 s of CPU), or at load 100 it would get its CPU
            // only after the takeover it prepares
            ThreadPools.MakeCurrentThreadOrdinary();
            ThreadPools.RaiseCurrentThread();
            try { Done.TrySetResult(Run(like, continuation)); }
            catch (Exception e) { Done.TrySetException(e); }
        }) { IsBackground = true, Name = "golive-prep" }.Start();
    }

    /// <summary>Runs every part on the calling thread (what <see cref="Start"/> runs on its own).</summary>
    public static Report Run(NetConfig like, Action? continuation = null)
    {
        long began = System.Diagnostics.Stopwatch.GetTimestamp();
        var rehearsal = TakeoverRehearsal.Run(like);
        Instantiate();
        int prepared = 0, failed = 0;
        bool continued = false;
        // the recording a survivor with standbys goes on with: its replica-side objects built once on scratch data by
        // the replica that knows how (the log's continuation, its client and gate; measured before: 40 methods
        // JIT-compiled in the go-live with a standby against 16 without). A failure only leaves that code cold.
        if (continuation != null)
        {
            try { continuation(); continued = true; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException or NotSupportedException) { failed++; }
        }
        foreach (var m in ReplayBoundary.GoLiveMethods())
        {
            if (m.IsAbstract || m.ContainsGenericParameters || m.DeclaringType?.ContainsGenericParameters == true) continue;
            try { RuntimeHelpers.PrepareMethod(m.MethodHandle); prepared++; }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or TypeLoadException or BadImageFormatException) { failed++; }
        }
        return new Report(prepared, failed, rehearsal, System.Diagnostics.Stopwatch.GetElapsedTime(began).TotalMilliseconds) { ContinuationRehearsed = continued };
    }

    /// <summary>
    /// The go-live's generic code over value types that no ReadyToRun image holds (the framework's generic classes and
    /// LINQ instantiated over ReVirt's tuples and key-value pairs: each instantiation is JIT-compiled at its first use,
    /// 81 methods and 13-25 ms of the replay thread's CPU after the grant, measured with the go-live event's `jitMs`).
    /// PrepareMethod does not reach them (they are what the prepared methods call), so each is run once here on scratch
    /// data of the same shape: a reference-type argument shares its compiled code with every other (the canonical
    /// instantiation), a value type needs the exact type. Each line names the go-live site it stands for; a site that
    /// changes shape shows up again in the go-live event's `jitMethods`.
    /// </summary>
    static void Instantiate()
    {
        const int ManyDescriptors = 200;
        var file = new object();
        // TakeoverAgent.AttachHost: the machine's descriptors (Kernel.Descriptors, a SelectMany over the processes'
        // tables) copied with ToList and walked; the epoll instances collected in a list of (fd, file). A server's
        // table holds more descriptors than the copy's first buffer: the growth (the builder's Expand, the array pool
        // of that tuple: 15 methods after the grant at 64 connections) runs only with as many
        var tables = new[] { Enumerable.Range(0, ManyDescriptors).Select(fd => (fd, file)).ToArray() };
        foreach (var (_, f) in tables.SelectMany(t => t).ToList()) GC.KeepAlive(f);
        var epolls = new List<(int, object)> { (0, file) };
        foreach (var (_, f) in epolls) GC.KeepAlive(f);
        // Kernel.RearmTimers: the POSIX timers (a Dictionary<int, timer>) in the order of their ids
        var timers = new Dictionary<int, object> { [2] = file, [1] = file };
        foreach (var (_, t) in timers.OrderBy(kv => kv.Key)) GC.KeepAlive(t);
        // ReplayBoundary.EmitUnreleased: the output the old primary may not have released, walked and cleared
        var unreleased = new Queue<(int Fd, ulong Start, byte[] Bytes)>();
        unreleased.Enqueue((1, 0, []));
        foreach (var (_, _, bytes) in unreleased) GC.KeepAlive(bytes);
        unreleased.Clear();
    }

    /// <summary>Every method, constructor and closure of <paramref name="t"/> (its nested types' too), for
    /// <see cref="ReplayBoundary.GoLiveMethods"/>.</summary>
    internal static IEnumerable<MethodBase> AllOf(Type t)
    {
        const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (var m in t.GetMethods(All)) yield return m;
        foreach (var c in t.GetConstructors(All)) yield return c;
        foreach (var n in t.GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic))
            foreach (var m in AllOf(n)) yield return m;
    }
}
