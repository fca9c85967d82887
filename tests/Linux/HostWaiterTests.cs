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

    /// <summary>
    /// A pass of the waiter that finds a timer due and a wait ended fires the timer before it posts the wake-up, however
    /// late the pass (a timer's signal must not reach the guest after a thread woken later ran on). The pass is made
    /// late on purpose: a first alarm's firing holds the waiter's thread while a wait and a second alarm, due before
    /// the wait's deadline, are both overdue.
    /// </summary>
    [Fact]
    public void ATimerDueBeforeAWaitEndedFiresBeforeItsWakeUpIsPosted()
    {
        var order = new List<string>();
        using var holding = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        using var posted = new ManualResetEventSlim();
        using var waiter = new HostWaiter((tid, seq) =>
        {
            lock (order) order.Add($"wake {tid}");
            posted.Set();
        });
        var first = new HostAlarm(() =>
        {
            lock (order) order.Add("first alarm");
            holding.Set();
            release.Wait(TimeSpan.FromSeconds(30));
            return HostWaitSpec.Never;
        });
        var second = new HostAlarm(() =>
        {
            lock (order) order.Add("second alarm");
            return HostWaitSpec.Never;
        });
        long now = HostClock.NowNs();
        waiter.Schedule(first, now);
        Assert.True(holding.Wait(TimeSpan.FromSeconds(30)), "the waiter did not fire a due alarm");
        waiter.Add(tid: 7, seq: 1, new HostWaitSpec([], now));
        waiter.Schedule(second, now - 1_000_000);
        release.Set();
        Assert.True(posted.Wait(TimeSpan.FromSeconds(30)), "the waiter did not post the wake-up of a due deadline");
        lock (order) Assert.Equal(["first alarm", "second alarm", "wake 7"], order);
    }

    /// <summary>A periodic alarm fires again at each due point its firing answers, and a cancelled one no more.</summary>
    [Fact]
    public void AnAlarmFiresAgainAtTheDuePointItAnswersUntilCancelled()
    {
        int fired = 0;
        using var thrice = new ManualResetEventSlim();
        using var waiter = new HostWaiter((_, _) => { });
        var alarm = new HostAlarm(() =>
        {
            if (Interlocked.Increment(ref fired) == 3) thrice.Set();
            return HostClock.NowNs() + 1_000_000;
        });
        waiter.Schedule(alarm, HostClock.NowNs());
        Assert.True(thrice.Wait(TimeSpan.FromSeconds(30)), $"fired {Volatile.Read(ref fired)} times");
        waiter.Cancel(alarm);
        int atCancel = Volatile.Read(ref fired);
        // a firing under way when it was cancelled may still finish (one more), and then it is not scheduled again;
        // uncancelled, it would fire about every millisecond
        Assert.False(SpinWait.SpinUntil(() => Volatile.Read(ref fired) > atCancel + 1, TimeSpan.FromMilliseconds(300)), "a cancelled alarm fired again");
    }
}
