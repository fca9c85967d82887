using ReVirt.Linux;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// The host waiter behind blocking calls. An idle machine ends the guest as deadlocked when no host event is
/// pending and <see cref="HostWaiter.Any"/> says nobody waits, so a wait must count as waiting until its wake-up is
/// posted (a redis-server whose one epoll wait ended at that moment was ended with SIGABRT, status 134).
/// </summary>
public class HostWaiterTests
{
    [Fact]
    public void AWaitStillCountsWhileItsWakeUpIsPosted()
    {
        var seenDuringPost = new List<bool>();
        using var posted = new ManualResetEventSlim();
        HostWaiter? waiter = null;
        waiter = new HostWaiter((tid, seq) =>
        {
            // what an idle machine reads at this moment, on its own thread: the wake-up is not in its queue yet
            lock (seenDuringPost) seenDuringPost.Add(waiter!.Any);
            posted.Set();
        });
        using (waiter)
        {
            // a deadline already due: the waiter's thread ends the wait at once and posts the wake-up
            waiter.Add(tid: 7, seq: 1, new HostWaitSpec([], HostClock.NowNs()));
            // as while guest code runs: the waiter's own thread polls (an idle machine polls on its guest thread)
            waiter.HandToThread();
            Assert.True(posted.Wait(TimeSpan.FromSeconds(30)), "the waiter did not post the wake-up of a due deadline");
            lock (seenDuringPost) Assert.Equal([true], seenDuringPost);
            Assert.True(SpinWait.SpinUntil(() => !waiter.Any, TimeSpan.FromSeconds(30)), "the wait still counts after its wake-up was posted");
        }
    }
}

/// <summary>
/// Where the machine idles, the guest thread waits on the host descriptors itself (<see cref="HostWaiter.PollHere"/>):
/// a wait that ends there is posted on that very thread, with no hand-off to the waiter's thread and back. Oracles:
/// the host's own pipe readiness and the identity of the posting thread. Every wait is bounded (a broken variant
/// fails at its bound instead of hanging).
/// </summary>
public unsafe class HostWaiterIdlePollTests : IDisposable
{
    static readonly long Bound = (long)TimeSpan.FromSeconds(60).TotalNanoseconds;
    static readonly TimeSpan WellBefore = TimeSpan.FromSeconds(30);
    readonly int _read, _write;

    public HostWaiterIdlePollTests()
    {
        int* fds = stackalloc int[2];
        Assert.Equal(0, HostSys.Call(Nr.pipe2, (long)fds, O.CLOEXEC | O.NONBLOCK));
        (_read, _write) = (fds[0], fds[1]);
    }

    public void Dispose()
    {
        HostSys.Call(Nr.close, _read);
        HostSys.Call(Nr.close, _write);
    }

    void MakeReadable()
    {
        byte b = 1;
        Assert.Equal(1, HostSys.Call(Nr.write, _write, (long)&b, 1));
    }

    [Fact]
    public void AWaitThatEndsInTheIdlePollIsPostedOnTheCallingThread()
    {
        var posted = new List<(int Tid, uint Seq, int Thread)>();
        using var waiter = new HostWaiter((tid, seq) => { lock (posted) posted.Add((tid, seq, Environment.CurrentManagedThreadId)); });
        waiter.Add(tid: 3, seq: 9, new HostWaitSpec([(_read, Poll.IN)], HostWaitSpec.Never));
        Assert.True(waiter.NeedsThread);
        MakeReadable();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        waiter.PollHere(Bound, () => false);
        Assert.True(clock.Elapsed < WellBefore, $"the idle poll did not end on its ready descriptor ({clock.Elapsed})");
        lock (posted) Assert.Equal([(3, 9u, Environment.CurrentManagedThreadId)], posted);
        Assert.False(waiter.Any);
        Assert.False(waiter.NeedsThread);
    }

    [Fact]
    public void ASignalFromAnotherThreadEndsAnIdlePollThatNoDescriptorEnds()
    {
        int posts = 0;
        using var waiter = new HostWaiter((_, _) => Interlocked.Increment(ref posts));
        waiter.Add(tid: 3, seq: 1, new HostWaitSpec([(_read, Poll.IN)], HostWaitSpec.Never));
        using var returned = new ManualResetEventSlim();
        // the poster cannot know when the poll is armed: it signals until the poll has returned (as every later
        // event of a real machine would), bounded
        var poster = new Thread(() => { while (!returned.Wait(1)) waiter.Signal(); }) { IsBackground = true };
        poster.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        waiter.PollHere(Bound, () => false);
        returned.Set();
        Assert.True(poster.Join(TimeSpan.FromSeconds(60)));
        Assert.True(clock.Elapsed < WellBefore, $"the idle poll ran to its bound: Signal did not end it ({clock.Elapsed})");
        Assert.Equal(0, posts);
        Assert.True(waiter.Any, "the wait that did not end must still stand");
    }

    [Fact]
    public void AnEventPostedBeforeTheIdlePollIsArmedEndsItAtOnce()
    {
        using var waiter = new HostWaiter((_, _) => { });
        waiter.Add(tid: 3, seq: 1, new HostWaitSpec([(_read, Poll.IN)], HostWaitSpec.Never));
        // posted before the guest thread polls: Signal writes nothing (nobody polls), so only the check made after
        // the poll is armed can see it
        waiter.Signal();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        waiter.PollHere(Bound, () => true);
        Assert.True(clock.Elapsed < WellBefore, $"an event queued before the idle poll was missed ({clock.Elapsed})");
    }

    [Fact]
    public void WhileGuestCodeRunsTheWaitersThreadPostsTheWaitAndAnIdlePollTakesItBack()
    {
        var posted = new List<int>();
        using var ended = new SemaphoreSlim(0);
        using var waiter = new HostWaiter((_, _) => { lock (posted) posted.Add(Environment.CurrentManagedThreadId); ended.Release(); });
        int me = Environment.CurrentManagedThreadId;
        waiter.Add(tid: 3, seq: 1, new HostWaitSpec([(_read, Poll.IN)], HostWaitSpec.Never));
        waiter.HandToThread();
        Assert.False(waiter.NeedsThread);
        MakeReadable();
        Assert.True(ended.Wait(TimeSpan.FromSeconds(60)), "the waiter's thread did not post a wait that ended while guest code ran");
        lock (posted) Assert.NotEqual(me, Assert.Single(posted));
        // the next wait, registered while the waiter's thread still runs, ends in the guest's idle poll
        byte b;
        Assert.Equal(1, HostSys.Call(Nr.read, _read, (long)&b, 1));
        waiter.Add(tid: 3, seq: 2, new HostWaitSpec([(_read, Poll.IN)], HostWaitSpec.Never));
        MakeReadable();
        waiter.PollHere(Bound, () => false);
        Assert.True(SpinWait.SpinUntil(() => !waiter.Any, TimeSpan.FromSeconds(60)));
        // whichever thread saw it first posted it, and only once
        lock (posted) Assert.Equal(2, posted.Count);
        Assert.True(waiter.NeedsThread is false);
    }
}
