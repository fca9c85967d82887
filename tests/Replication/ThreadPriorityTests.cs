using System.Runtime.InteropServices;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The replicas' thread priorities (<see cref="ThreadPools"/>): a raised thread (the ack path, the backup's replay)
/// that goes back to ordinary work gets the process's ordinary nice value, not 0. The oracle is the kernel's own
/// account of each thread (/proc/thread-self/stat) and libc's setpriority.
/// </summary>
public class ThreadPriorityTests
{
    [DllImport("libc", SetLastError = true)] static extern int setpriority(int which, int who, int prio);
    [DllImport("libc", SetLastError = true)] static extern int getpriority(int which, int who);
    const int PrioProcess = 0;

    /// <summary>The calling thread's nice value as the kernel reports it (field 19 of /proc/thread-self/stat).</summary>
    static int KernelNice()
    {
        string stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // fields from 3 (state) on
        return int.Parse(fields[19 - 3]);
    }

    [Fact]
    public void ARaisedThreadIsRestoredToTheProcesssNiceValueNotZero()
    {
        if (!Environment.IsPrivilegedProcess) Assert.Fail("this test needs root (CAP_SYS_NICE) to raise a thread's priority");
        int pid = Environment.ProcessId;
        Marshal.SetLastPInvokeError(0);
        int mainBefore = getpriority(PrioProcess, pid);
        Assert.Equal(0, Marshal.GetLastPInvokeError());
        const int ordinary = 6; // as if the replica were started with `nice -n 6`
        Assert.Equal(0, setpriority(PrioProcess, pid, ordinary));
        try
        {
            int? raised = null, restored = null, beforeRaise = null;
            bool raisedOk = false, restoredOk = false;
            var t = new Thread(() =>
            {
                Assert.Equal(0, setpriority(PrioProcess, 0, 2)); // a thread's own value before (inherited or set) does not matter
                beforeRaise = KernelNice();
                raisedOk = ThreadPools.RaiseCurrentThread();
                raised = KernelNice();
                restoredOk = ThreadPools.RestoreCurrentThread();
                restored = KernelNice();
            });
            t.Start();
            Assert.True(t.Join(TimeSpan.FromSeconds(30)), "the thread did not finish within 30 s");
            Assert.Equal(2, beforeRaise);
            Assert.True(raisedOk);
            Assert.Equal(ThreadPools.AckPathNice, raised);
            Assert.True(restoredOk);
            Assert.Equal(ordinary, restored);
        }
        finally { setpriority(PrioProcess, pid, mainBefore); }
    }

    /// <summary>A thread's nice value as the kernel reports it (field 19 of /proc/self/task/TID/stat).</summary>
    static int KernelNice(long tid)
    {
        string stat = File.ReadAllText($"/proc/self/task/{tid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[19 - 3]);
    }

    /// <summary>
    /// A survivor's live guest stays a real-time thread for a bound after the go-live, then runs as an ordinary thread
    /// at the process's nice value (<see cref="ThreadPools.OrdinaryAfter"/>, the backup's LiveRushMs). The oracle is
    /// the kernel's own account of the thread (sched_getscheduler, /proc), polled from another thread: the policy
    /// changes no sooner than the bound (a loaded machine can only make it later). Fails when the thread is made
    /// ordinary at once, or never.
    /// </summary>
    [Fact]
    public void AThreadKeptRealtimeForABoundIsOrdinaryAfterIt()
    {
        if (!Environment.IsPrivilegedProcess) Assert.Fail("this test needs root (CAP_SYS_NICE) to make a thread real-time");
        const int BoundMs = 2000;   // far beyond a loaded machine's delay of a timer callback (a plant that makes the thread ordinary at once must show)
        long tid = 0, from = 0;
        int during = -1;
        bool realtime = false;
        using var started = new ManualResetEventSlim();
        using var end = new ManualResetEventSlim();
        IDisposable? later = null;
        var t = new Thread(() =>
        {
            realtime = ThreadPools.MakeRealtime(ThreadPools.CurrentThreadId());
            tid = ThreadPools.CurrentThreadId();
            from = System.Diagnostics.Stopwatch.GetTimestamp();
            later = ThreadPools.OrdinaryAfter(BoundMs);
            during = ThreadPools.Policy(tid);
            started.Set();
            end.Wait(TimeSpan.FromSeconds(60));   // the thread lives on, as the live guest does
        });
        t.Start();
        try
        {
            Assert.True(started.Wait(TimeSpan.FromSeconds(30)), "the thread did not start within 30 s");
            Assert.True(realtime, "the thread could not be made real-time");
            Assert.Equal(ThreadPools.SchedRoundRobin, during);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (ThreadPools.Policy(tid) != ThreadPools.SchedOther && clock.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(5);
            double ordinaryAfterMs = System.Diagnostics.Stopwatch.GetElapsedTime(from).TotalMilliseconds;
            Assert.Equal(ThreadPools.SchedOther, ThreadPools.Policy(tid));
            Assert.True(clock.ElapsedMilliseconds < 30_000, "the thread was still real-time 30 s after its bound");
            Assert.True(ordinaryAfterMs >= BoundMs, $"the thread was ordinary {ordinaryAfterMs:F0} ms after the bound was set, before its {BoundMs} ms");
            Marshal.SetLastPInvokeError(0);
            int processNice = getpriority(PrioProcess, Environment.ProcessId);
            Assert.Equal(0, Marshal.GetLastPInvokeError());
            Assert.Equal(processNice, KernelNice(tid));
        }
        finally
        {
            later?.Dispose();
            end.Set();
            Assert.True(t.Join(TimeSpan.FromSeconds(30)));
        }
    }
}
