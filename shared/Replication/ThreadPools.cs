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

    /// <summary>
    /// Best effort: gives the calling thread (one on the acknowledgement path: the backup's data link thread, the
    /// primary's ack thread; the backup's replay, which bounds the takeover's drain) a higher scheduling weight, so that on a loaded machine it runs soon after its socket
    /// wakes it instead of queueing behind other work for a time slice. Needs CAP_SYS_NICE (root); without it the
    /// thread keeps its priority. Returns whether it was raised.
    /// </summary>
    public static bool RaiseCurrentThread() => SetCurrentThreadNice(AckPathNice);

    /// <summary>The calling thread back at the ordinary priority (a backup's replay thread that goes live runs the guest).</summary>
    public static bool RestoreCurrentThread() => SetCurrentThreadNice(0);

    static bool SetCurrentThreadNice(int nice)
    {
        if (!OperatingSystem.IsLinux()) return false;
        long tid = HostSys.Call(Nr.gettid);
        return HostSys.Call(Nr.setpriority, PrioProcess, tid, nice) == 0;
    }
}
