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
            Assert.True(posted.Wait(TimeSpan.FromSeconds(30)), "the waiter did not post the wake-up of a due deadline");
            lock (seenDuringPost) Assert.Equal([true], seenDuringPost);
            Assert.True(SpinWait.SpinUntil(() => !waiter.Any, TimeSpan.FromSeconds(30)), "the wait still counts after its wake-up was posted");
        }
    }
}
