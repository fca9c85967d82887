using ReVirt.Linux;
using Xunit;

namespace ReVirt.Tests.Linux;

/// <summary>
/// The queue host threads post events to and the guest thread takes them from (timer expiries, signals from outside,
/// ends of host waits). A lost, doubled or reordered event changes what the guest sees: its contract is that every
/// item posted is taken exactly once, each poster's items in the order it posted them. The oracle is the sequence
/// the test posted.
/// </summary>
public class HostEventQueueTests
{
    [Fact]
    public void ItemsComeOutInTheOrderTheyWentInAcrossGrowthAndWrapAround()
    {
        var q = new HostEventQueue<int>();
        var expected = new Queue<int>();
        int next = 0;
        var rng = new Random(11);
        // bursts of posts and takes move the ring's head around it and make it grow while it has wrapped
        for (int round = 0; round < 200; round++)
        {
            for (int k = rng.Next(0, 40); k > 0; k--) { q.Enqueue(next); expected.Enqueue(next); next++; }
            for (int k = rng.Next(0, 40); k > 0; k--)
            {
                bool got = q.TryDequeue(out int item);
                Assert.Equal(expected.Count > 0, got);
                if (got) Assert.Equal(expected.Dequeue(), item);
            }
            Assert.Equal(expected.Count == 0, q.IsEmpty);
        }
        while (expected.Count > 0)
        {
            Assert.True(q.TryDequeue(out int item));
            Assert.Equal(expected.Dequeue(), item);
        }
        Assert.True(q.IsEmpty);
        Assert.False(q.TryDequeue(out _));
    }

    [Fact]
    public void EveryItemOfConcurrentPostersIsTakenOnceInEachPostersOrder()
    {
        const int Posters = 4, Each = 20_000;
        var q = new HostEventQueue<PostedWake>();
        using var go = new ManualResetEventSlim();
        var posters = Enumerable.Range(0, Posters).Select(p => new Thread(() =>
        {
            go.Wait();
            for (uint k = 0; k < Each; k++) q.Enqueue(new PostedWake(p, k, order: 0));
        })).ToList();
        foreach (var t in posters) t.Start();
        go.Set();
        var nextOf = new uint[Posters];
        int taken = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (taken < Posters * Each)
        {
            if (!q.TryDequeue(out var w))
            {
                Assert.True(DateTime.UtcNow < deadline, $"only {taken} of {Posters * Each} items came out");
                Thread.Yield();
                continue;
            }
            Assert.Equal(nextOf[w.Tid], w.Seq); // none lost or doubled before it, none overtaken
            nextOf[w.Tid]++;
            taken++;
        }
        foreach (var t in posters) Assert.True(t.Join(TimeSpan.FromSeconds(30)));
        Assert.True(q.IsEmpty);
        Assert.All(nextOf, n => Assert.Equal((uint)Each, n));
    }
}
