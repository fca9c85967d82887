using ReVirt.Net;
using ReVirt.Replay;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>
/// The go-live's preparation while a backup follows (<see cref="GoLivePreparation"/>, <see cref="TakeoverRehearsal"/>):
/// a dry pass of the takeover on scratch stacks that must run the takeover's code for real and touch nothing else.
/// </summary>
public class TakeoverRehearsalTests
{
    /// <summary>
    /// The dry pass runs a real takeover: its scratch server queues the repair a takeover of that state queues — the
    /// oracle is the stack itself, a twin of the scratch pair driven by hand through the same steps here (a listener, one
    /// exchange, a reply held by the "old replica", a request only its wire carried) and taken over by
    /// <see cref="NetStack.TakeOver"/> — and its scratch peer still reads the reply whole. Fails on a dry pass that
    /// skips the takeover (no repair frames: the takeover's code would then first run after the grant) or whose
    /// scratch connection never opened.
    /// </summary>
    [Fact]
    public void The_dry_pass_takes_a_scratch_connection_over_as_a_real_takeover_does()
    {
        var like = new NetConfig(StackLink.MacB, StackLink.IpB, 24);
        var r = TakeoverRehearsal.Run(like);
        Assert.True(r.StreamIntact, "the scratch peer did not read the held reply whole after the scratch takeover");
        Assert.True(r.Judged >= 1, "no heard frame was judged");

        // the same steps by hand on a twin pair: what TakeOver queues for that state
        var link = new StackLink(5, b: like);
        var (c, s, _) = link.Connect(port: 9);
        Assert.Equal(700, c.Send(new byte[700]));
        var buf = new byte[5000];
        int got = 0;
        Assert.True(link.Run(() => (got += Math.Max(0, s.Receive(buf.AsSpan(got)))) >= 700, () => { }));
        Assert.Equal(5000, s.Send(new byte[5000]));
        while (link.B.TryTakeFrame(out _)) { }
        link.B.TakeOver(link.Now);
        int expected = link.B.PendingFrames;
        Assert.True(expected >= 1 + 4 + 1, $"the twin's takeover queued {expected} frames");
        Assert.Equal(expected, r.RepairFrames);
    }

    /// <summary>
    /// The preparation has no effect on a machine's stack beside it: a transfer between two stacks gives the same
    /// frames, byte for byte and at the same clock (the link's trace digest), whether a preparation runs on another
    /// thread meanwhile or not; and the preparation reports that it made the go-live's host-side steps ready
    /// (<see cref="ReplayBoundary"/>'s go-live, the interface's takeover, descriptors attached, timers, the live
    /// boundary) with no failure.
    /// </summary>
    [Fact]
    public async Task The_preparation_changes_nothing_beside_it_and_prepares_the_go_live_steps()
    {
        static string Transfer()
        {
            var link = new StackLink(11);
            var (c, s, _) = link.Connect();
            var data = StackLink.Payload(200_000, 11);
            Assert.Equal(data, link.Transfer(c, s, data));
            return link.TraceDigest();
        }
        string alone = Transfer();
        var prep = Task.Run(() => GoLivePreparation.Run(new NetConfig(StackLink.MacB, StackLink.IpB, 24)));
        string beside = Transfer();
        var report = await prep.WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Equal(alone, beside);
        Assert.True(report.Rehearsal.StreamIntact);
        Assert.Equal(0, report.Failed);
        Assert.True(report.Prepared >= 20, $"{report.Prepared} methods prepared");
    }

    /// <summary>
    /// A survivor with standbys records on after the grant: the preparation runs the replica's dry pass of that
    /// continuation (<see cref="FollowOptions.RehearseContinue"/>) once, on its own thread, and says so in its report;
    /// a dry pass that fails (a scratch file it cannot write) is counted as a failure and leaves the rest of the
    /// preparation standing (the go-live only runs that code cold). Fails on a preparation that ignores the dry pass
    /// (the continuation's 24 methods would then first be compiled after the grant), runs it twice, or lets its
    /// failure end the preparation.
    /// </summary>
    [Fact]
    public void The_preparation_runs_the_continuations_dry_pass_once_and_survives_its_failure()
    {
        var like = new NetConfig(StackLink.MacB, StackLink.IpB, 24);
        int runs = 0, thread = -1;
        var report = GoLivePreparation.Run(like, () => { runs++; thread = Environment.CurrentManagedThreadId; });
        Assert.Equal(1, runs);
        Assert.Equal(Environment.CurrentManagedThreadId, thread);
        Assert.True(report.ContinuationRehearsed);
        Assert.Equal(0, report.Failed);

        var failed = GoLivePreparation.Run(like, () => throw new IOException("the scratch log cannot be written"));
        Assert.False(failed.ContinuationRehearsed);
        Assert.Equal(1, failed.Failed);
        Assert.True(failed.Rehearsal.StreamIntact);
        Assert.True(failed.Prepared >= 20, $"{failed.Prepared} methods prepared");

        Assert.False(GoLivePreparation.Run(like).ContinuationRehearsed); // none given: nothing to rehearse
    }
}
