// A startup hook (the runtime's DOTNET_STARTUP_HOOKS, set only by tests for a child `primary` or `backup` process):
// the runtime requires the type to be named StartupHook, outside any namespace.

/// <summary>
/// Starves the thread pool of the process it is loaded into, so that a test can show what of the product still works
/// when no thread-pool work item or System.Threading.Timer callback can run (a loaded machine delayed such a callback
/// by more than 350 ms). Every worker thread the pool has at its minimum is held in a wait and the pool may not add
/// any (its maximum is set to that minimum), for at most <see cref="HoldSeconds"/>. A probe timer of 1 ms is set once
/// the workers are held; at the process's exit the hook writes to the file named by <see cref="ReportVariable"/>
/// whether every worker was held and whether the probe ran, so the test knows the pool really was starved.
/// </summary>
internal static class StartupHook
{
    /// <summary>The environment variable naming the file the hook reports to.</summary>
    public const string ReportVariable = "REVIRT_TEST_STARVED_POOL_REPORT";

    /// <summary>The report of a process whose pool was starved for its whole run.</summary>
    public const string Starved = "workers held: True\nprobe timer ran: False\n";

    /// <summary>The bound of the hold: a process that runs longer gets its pool back.</summary>
    const int HoldSeconds = 120;

    static Timer? _probe;
    static int _probeRan;

    public static void Initialize()
    {
        string? report = Environment.GetEnvironmentVariable(ReportVariable);
        ThreadPool.GetMinThreads(out int workers, out int io);
        workers = Math.Max(workers, Environment.ProcessorCount);
        bool capped = ThreadPool.SetMaxThreads(workers, io);
        var held = new CountdownEvent(workers);
        var never = new ManualResetEventSlim();
        for (int i = 0; i < workers; i++)
            ThreadPool.UnsafeQueueUserWorkItem(_ =>
            {
                held.Signal();
                never.Wait(TimeSpan.FromSeconds(HoldSeconds));
            }, null);
        bool allHeld = capped && held.Wait(TimeSpan.FromSeconds(30));
        _probe = new Timer(_ => Interlocked.Exchange(ref _probeRan, 1), null, 1, Timeout.Infinite);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            if (report != null) File.WriteAllText(report, $"workers held: {allHeld}\nprobe timer ran: {Volatile.Read(ref _probeRan) == 1}\n");
        };
    }
}
