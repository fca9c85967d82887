using ReVirt.Linux;

namespace ReVirt.Replication;

/// <summary>Thread settings of the replicas' processes.</summary>
public static class ThreadPools
{
    /// <summary>
    /// The handshake and the health service cross pool tasks (Kestrel, gRPC). With the default minimum (one thread
    /// per core) a burst of them waits for the pool's slow thread injection; keep enough threads ready instead.
    /// </summary>
    public static void ForLowLatency()
    {
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 16), Math.Max(io, 16));
    }

    /// <summary>Nice value asked for the threads on the acknowledgement path.</summary>
    public const int AckPathNice = -10;

    const int PrioProcess = 0;

    /// <summary>Linux SCHED_OTHER (the ordinary time-sharing policy).</summary>
    public const int SchedOther = 0;
    /// <summary>Linux SCHED_RR (round-robin real-time policy).</summary>
    public const int SchedRoundRobin = 2;
    /// <summary>The lowest real-time priority: above every ordinary thread, below any real-time work the machine has.</summary>
    const int LowestRealtimePriority = 1;

    /// <summary>
    /// Best effort: makes the calling thread a real-time thread of the lowest priority (SCHED_RR 1), for a thread that
    /// sleeps almost always and must run within milliseconds when it wakes — the primary's heartbeat sender, whose
    /// silence the backup takes for a death. A nice value is not enough for that: with autogroup scheduling (most
    /// distributions' kernels) it weighs only against threads of the same session, and the session's group as a
    /// whole waits behind the machine's other sessions for a time slice (silences of ~100 ms measured at load 20 on 2
    /// cores). The thread must never compute for long (the kernel's real-time throttling bounds it to 95% of a CPU
    /// anyway). Needs CAP_SYS_NICE (root); returns whether it was raised (otherwise <see cref="RaiseCurrentThread"/>).
    /// </summary>
    public static bool MakeCurrentThreadRealtime() => OperatingSystem.IsLinux() && (MakeRealtime(HostSys.Call(Nr.gettid)) || RaiseCurrentThread());

    /// <summary>The calling thread's kernel id (for <see cref="MakeRealtime"/> and <see cref="MakeRaised"/> from
    /// another thread); 0 off Linux.</summary>
    public static long CurrentThreadId() => OperatingSystem.IsLinux() ? HostSys.Call(Nr.gettid) : 0;

    /// <summary>Thread <paramref name="tid"/> (of this process) a real-time thread of the lowest priority (SCHED_RR 1),
    /// as <see cref="MakeCurrentThreadRealtime"/> but from any thread and without a fallback. Needs CAP_SYS_NICE.</summary>
    public static bool MakeRealtime(long tid) => SetPolicy(tid, SchedRoundRobin, LowestRealtimePriority);

    /// <summary>Thread <paramref name="tid"/> back from real time to the ordinary policy, raised as
    /// <see cref="RaiseCurrentThread"/> raises.</summary>
    public static bool MakeRaised(long tid) => SetPolicy(tid, SchedOther, 0) & SetNice(tid, AckPathNice);

    static unsafe bool SetPolicy(long tid, int policy, int priority) =>
        OperatingSystem.IsLinux() && tid > 0 && HostSys.Call(Nr.sched_setscheduler, tid, policy, (long)&priority) == 0;

    /// <summary>
    /// Best effort: gives the calling thread (one on the acknowledgement path: the backup's data link thread, the
    /// primary's ack thread; the backup's replay, which bounds the takeover's drain) a higher scheduling weight, so that on a loaded machine it runs soon after its socket
    /// wakes it instead of queueing behind other work for a time slice. Needs CAP_SYS_NICE (root); without it the
    /// thread keeps its priority. Returns whether it was raised.
    /// </summary>
    public static bool RaiseCurrentThread() => SetCurrentThreadNice(AckPathNice);

    /// <summary>
    /// The calling thread back at the process's ordinary priority: the nice value of its main thread, which nothing
    /// raises (a backup's replay thread that goes live runs the guest; a replica started with `nice -n 5` keeps its 5,
    /// and a thread made by a raised thread, which inherits the raise, does not keep that). False when it cannot be
    /// read or set.
    /// </summary>
    public static bool RestoreCurrentThread() => ThreadNice(Environment.ProcessId) is int ordinary && SetCurrentThreadNice(ordinary);

    /// <summary>
    /// The calling thread back to the ordinary policy (SCHED_OTHER) at the process's ordinary nice value, from a raise
    /// or from <see cref="MakeCurrentThreadRealtime"/>. False when either cannot be set.
    /// </summary>
    public static bool MakeCurrentThreadOrdinary() => SetPolicy(CurrentThreadId(), SchedOther, 0) & RestoreCurrentThread();

    /// <summary>Thread <paramref name="tid"/> (of this process) back to the ordinary policy at the process's ordinary nice
    /// value, as <see cref="MakeCurrentThreadOrdinary"/> but from any thread.</summary>
    public static bool MakeOrdinary(long tid) => SetPolicy(tid, SchedOther, 0) & (ThreadNice(Environment.ProcessId) is int n && SetNice(tid, n));

    /// <summary>
    /// Keeps the calling thread as it is (raised or real-time) for <paramref name="ms"/> more milliseconds, then makes it
    /// ordinary (<see cref="MakeOrdinary"/>) from a timer: for work whose first moments others wait for but that may
    /// then compute for long (a survivor's live guest catching up with its clients). Disposing the result before it
    /// fires makes the thread ordinary at once.
    /// </summary>
    public static IDisposable OrdinaryAfter(int ms) => new OrdinaryLater(CurrentThreadId(), ms);

    sealed class OrdinaryLater : IDisposable
    {
        readonly long _tid;
        readonly Timer _timer;
        readonly long _due;
        int _done;

        public OrdinaryLater(long tid, int ms)
        {
            _tid = tid;
            _due = System.Diagnostics.Stopwatch.GetTimestamp() + ms * System.Diagnostics.Stopwatch.Frequency / 1000;
            _timer = new Timer(_ => Expire(), null, ms, Timeout.Infinite);
        }

        /// <summary>The timer's firing: System.Threading.Timer counts on a coarse millisecond tick and can fire a ms or
        /// two early, so a firing before the bound on the precise clock waits out the rest (the thread stays real-time
        /// for its whole bound, not about it).</summary>
        void Expire()
        {
            long left = _due - System.Diagnostics.Stopwatch.GetTimestamp();
            if (left > 0)
            {
                try { _timer.Change((long)Math.Ceiling(left * 1000.0 / System.Diagnostics.Stopwatch.Frequency), Timeout.Infinite); return; }
                catch (ObjectDisposedException) { return; } // disposed meanwhile: Dispose made it ordinary
            }
            Fire();
        }

        void Fire()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) MakeOrdinary(_tid);
        }

        public void Dispose()
        {
            _timer.Dispose();
            Fire();
        }
    }

    /// <summary>The scheduling policy of thread <paramref name="tid"/> of this process (<see cref="SchedOther"/>,
    /// <see cref="SchedRoundRobin"/>, ...), or -1 when it cannot be read.</summary>
    public static int Policy(long tid) => OperatingSystem.IsLinux() && tid > 0 ? (int)HostSys.Call(Nr.sched_getscheduler, tid) : -1;

    /// <summary>The calling thread's nice value (-20..19), or null when it cannot be read.</summary>
    public static int? CurrentThreadNice() => OperatingSystem.IsLinux() ? ThreadNice(HostSys.Call(Nr.gettid)) : null;

    static int? ThreadNice(long tid)
    {
        if (!OperatingSystem.IsLinux()) return null;
        long r = HostSys.Call(Nr.getpriority, PrioProcess, tid);
        return r < 0 ? null : (int)(20 - r); // the system call answers 20 - nice (1..40), so that no answer looks like an error
    }

    static bool SetCurrentThreadNice(int nice) => SetNice(CurrentThreadId(), nice);

    static bool SetNice(long tid, int nice) => OperatingSystem.IsLinux() && tid > 0 && HostSys.Call(Nr.setpriority, PrioProcess, tid, nice) == 0;
}
