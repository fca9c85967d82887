namespace ReVirt.Replication;

/// <summary>Thread-pool settings of the replicas' processes.</summary>
public static class ThreadPools
{
    /// <summary>
    /// The acknowledgement round trip crosses several pool tasks on each side (sender, HTTP/2 read and write
    /// loops, receiver). With the default minimum (one thread per core) a burst of them waits for the pool's slow
    /// thread injection, which adds milliseconds to every output commit; keep enough threads ready instead.
    /// </summary>
    public static void ForLowLatency()
    {
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 16), Math.Max(io, 16));
    }
}
