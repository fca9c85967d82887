using ReVirt.Arbiter;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

public class GateAndArbiterTests
{
    [Fact]
    public void GateReleasesInOrderOnlyOnceAcked()
    {
        var emitted = new List<(int, string)>();
        var g = new OutputGate((fd, d) => emitted.Add((fd, System.Text.Encoding.ASCII.GetString(d.Span))));
        g.Hold(3, 1, "a"u8.ToArray());
        g.Hold(5, 2, "b"u8.ToArray());
        g.Hold(9, 1, "c"u8.ToArray());
        Assert.Empty(emitted);
        g.Ack(4);
        Assert.Equal(new[] { (1, "a") }, emitted);
        g.Ack(2); // stale ack: nothing
        g.Ack(9);
        Assert.Equal(new[] { (1, "a"), (2, "b"), (1, "c") }, emitted);
        Assert.Equal(2UL, g.ReleasedStdout);
        Assert.Equal(1UL, g.ReleasedStderr);
        g.Hold(8, 1, "d"u8.ToArray()); // already acked and nothing held before it: passes
        Assert.Equal((1, "d"), emitted[^1]);
    }

    /// <summary>Output a stale link kept held (Fresh false when its ack came) leaves with the next ack once the link
    /// is fresh again, even one that acknowledges nothing new (a heartbeat's answer proving the backup follows).
    /// Fails with a gate that ignores an ack not beyond the last.</summary>
    [Fact]
    public void OutputKeptHeldByAStaleLinkLeavesWithTheNextAckThoughItRepeatsTheLast()
    {
        var emitted = new List<string>();
        bool fresh = false;
        var g = new OutputGate((_, d) => emitted.Add(System.Text.Encoding.ASCII.GetString(d.Span))) { Fresh = () => fresh };
        g.Hold(3, 1, "a"u8.ToArray());
        g.Ack(3);
        Assert.Empty(emitted);
        fresh = true;
        g.Ack(3);
        Assert.Equal(["a"], emitted);
        g.Ack(3);
        Assert.Equal(["a"], emitted);
    }

    /// <summary>
    /// After a gap on the link (this replica unheard-of long enough for its backup to have gone live), only an answer
    /// to something sent after the gap proves the backup still follows: the echo of a heartbeat sent since, or an
    /// ack beyond the records produced by then; queued acks from before prove nothing. Fails with the proof taken
    /// from any ack.
    /// </summary>
    [Fact]
    public void AfterAGapOnlyAnAnswerToSomethingSentSinceProvesTheBackupFollows()
    {
        var stale = new ReplicationClient.StaleLink();
        Assert.True(stale.Proven);
        Assert.True(stale.ProvenBy(0, 1));
        long before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - 1;
        stale.GapSeen(produced: 10);
        Assert.False(stale.Proven);
        Assert.False(stale.ProvenBy(0, 10));        // an ack of records produced before the gap
        Assert.False(stale.ProvenBy(before, 9));    // the echo of a heartbeat sent before it
        Assert.False(stale.Proven);
        Assert.True(stale.ProvenBy(0, 11));         // a record produced since
        Assert.True(stale.Proven);
        stale.GapSeen(produced: 20);
        Assert.True(stale.ProvenBy(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0)); // a heartbeat sent since
        Assert.True(stale.Proven);
    }

    [Fact]
    public void OutputsOneAckReleasesToOneDescriptorLeaveInOneWriteInOrder()
    {
        var emitted = new List<(int, string)>();
        var g = new OutputGate((fd, d) => emitted.Add((fd, System.Text.Encoding.ASCII.GetString(d.Span))));
        g.Hold(1, 1, "a"u8.ToArray());
        g.Hold(2, 1, "b"u8.ToArray());
        g.Hold(3, 2, "e"u8.ToArray());
        g.Hold(4, 1, "c"u8.ToArray());
        g.Hold(6, 1, "d"u8.ToArray());
        g.Ack(5);
        Assert.Equal(new[] { (1, "ab"), (2, "e"), (1, "c") }, emitted);
        g.Ack(6);
        Assert.Equal((1, "d"), emitted[^1]);
        Assert.Equal(4UL, g.ReleasedStdout);
        Assert.Equal(1UL, g.ReleasedStderr);
    }

    /// <summary>
    /// The release a primary makes holding the arbiter at its guest's end must be all-or-nothing for a survivor that
    /// finds the arbiter held: consecutive outputs to one descriptor leave in one write (a pipe write of up to
    /// PIPE_BUF bytes cannot be cut by SIGKILL), not one write per output as before.
    /// </summary>
    [Fact]
    public void TheFinalReleaseToOneDescriptorLeavesInOneWrite()
    {
        var emitted = new List<(int, string)>();
        var g = new OutputGate((fd, d) => emitted.Add((fd, System.Text.Encoding.ASCII.GetString(d.Span))));
        g.Hold(1, 1, "a"u8.ToArray());
        g.Hold(2, 1, "b"u8.ToArray());
        g.Hold(3, 1, "c"u8.ToArray());
        g.Hold(4, 2, "e"u8.ToArray());
        g.Hold(5, 1, "d"u8.ToArray());
        g.GuestEnded();
        g.Ack(5); // after the guest's end acknowledgements release nothing
        Assert.Empty(emitted);
        g.GoUnprotected();
        Assert.Equal(new[] { (1, "abc"), (2, "e"), (1, "d") }, emitted);
        Assert.Equal(4UL, g.ReleasedStdout);
        Assert.Equal(1UL, g.ReleasedStderr);
    }

    [Fact]
    public void UnprotectedReleasesEverythingDiscardedReleasesNothing()
    {
        var emitted = new List<string>();
        var g = new OutputGate((_, d) => emitted.Add(System.Text.Encoding.ASCII.GetString(d.Span)));
        g.Hold(1, 1, "x"u8.ToArray());
        g.GoUnprotected();
        g.Hold(2, 1, "y"u8.ToArray());
        Assert.Equal(new[] { "x", "y" }, emitted);

        var lost = new List<string>();
        var g2 = new OutputGate((_, d) => lost.Add("!"));
        g2.Hold(1, 1, "x"u8.ToArray());
        g2.Discard();
        g2.Ack(10);
        g2.Hold(11, 1, "y"u8.ToArray());
        Assert.Empty(lost);
    }

    [Fact]
    public void ExactlyOneOwnerWinsTheLockFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"revirt-arb-{Guid.NewGuid():N}.lock");
        try
        {
            var results = new ArbiterResult[16];
            Parallel.For(0, results.Length, i => results[i] = new LockFileArbiter(path).TryAcquire($"owner{i}", 0));
            Assert.Single(results, r => r.Won);
            string winner = results.Single(r => r.Won).Holder;
            Assert.All(results, r => Assert.Equal(winner, r.Holder));
            Assert.True(new LockFileArbiter(path).TryAcquire(winner, 0).Won); // the winner stays the winner
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void LockFileTermsAdvanceOnceEachAndAStaleReplicaNeverWins()
    {
        string path = Path.Combine(Path.GetTempPath(), $"revirt-arb-{Guid.NewGuid():N}.lock");
        try
        {
            var primary = new LockFileArbiter(path);
            var backup = new LockFileArbiter(path);
            var standby = new LockFileArbiter(path);
            var won = backup.TryAcquire("backup", 0); // the primary died: the backup takes term 1
            Assert.True(won.Won);
            Assert.Equal(1, won.Term);
            Assert.True(backup.StillHolds("backup"));
            var stale = primary.TryAcquire("primary", 0); // the old primary comes back from a stall: term 0 is over
            Assert.False(stale.Won);
            Assert.Equal(("backup", 1L), (stale.Holder, stale.Term));
            // a standby joined the backup in term 1; the backup dies: the standby takes term 2
            var next = standby.TryAcquire("standby", 1);
            Assert.True(next.Won);
            Assert.Equal(2, next.Term);
            Assert.False(backup.StillHolds("backup")); // a stalled winner sees the newer term before releasing output
            Assert.False(primary.TryAcquire("primary", 0).Won);
            var late = backup.TryAcquire("backup", 1);
            Assert.False(late.Won);
            Assert.Equal(("standby", 2L), (late.Holder, late.Term));
            Assert.True(standby.TryAcquire("standby", 1).Won); // a retried request of the winner
            // racing replicas of one term: exactly one wins it
            var results = new ArbiterResult[8];
            Parallel.For(0, results.Length, i => results[i] = new LockFileArbiter(path).TryAcquire($"r{i}", 2));
            Assert.Single(results, r => r.Won);
            Assert.All(results, r => Assert.Equal(3, r.Term));
        }
        finally
        {
            foreach (var f in Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + "*")) File.Delete(f);
        }
    }

    [Fact]
    public async Task PipeStreamBlocksUntilDataOrCompletion()
    {
        var p = new BlockingPipeStream();
        var t = Task.Run(() => { var b = new byte[10]; int n = p.Read(b); return (n, b[0]); });
        await Task.Delay(50);
        Assert.False(t.IsCompleted);
        p.Append(new byte[] { 7, 8 });
        Assert.Equal((2, (byte)7), await t);
        p.Complete();
        Assert.Equal(0, p.Read(new byte[4]));
    }

    /// <summary>
    /// A gathering reader (the backup's replay) that has consumed everything is not woken by a small append before
    /// its gathering sleep is over, but at once by an append of <see cref="BlockingPipeStream.GatherBytes"/> and by
    /// the end of the stream (a lost primary: the drain must not wait), and it reads everything that gathered. The
    /// sleep here is far longer than any test waits, so a read that completes early was woken.
    /// </summary>
    [Fact]
    public async Task GatheringReaderIsWokenByEnoughBytesOrTheEndNotByEachAppend()
    {
        var bound = TimeSpan.FromSeconds(20);
        var p = new BlockingPipeStream { Gather = TimeSpan.FromMinutes(10), GatherBytes = 100 };
        p.Append(new byte[] { 1 });
        Assert.Equal(1, p.Read(new byte[10])); // consumed everything: the next read gathers
        var gathering = Task.Run(() => { var b = new byte[1000]; return p.Read(b); });
        await Until(() => p.Gathering, bound, "the reader to start gathering");
        p.Append(new byte[10]);
        await Task.Delay(200);
        Assert.False(gathering.IsCompleted, "a small append woke the gathering reader");
        p.Append(new byte[95]); // 105 bytes wait now
        Assert.True(await Task.WhenAny(gathering, Task.Delay(bound)) == gathering, "enough bytes did not wake the gathering reader");
        Assert.Equal(10, await gathering); // the first chunk; the rest follows without waiting
        Assert.Equal(95, p.Read(new byte[1000]));

        var ending = Task.Run(() => p.Read(new byte[10]));
        await Until(() => p.Gathering, bound, "the reader to start gathering again");
        await Task.Delay(200);
        Assert.False(ending.IsCompleted, "the gathering reader returned without data or the end");
        p.Complete();
        Assert.True(await Task.WhenAny(ending, Task.Delay(bound)) == ending, "the end of the stream did not wake the gathering reader");
        Assert.Equal(0, await ending);
    }

    static async Task Until(Func<bool> condition, TimeSpan bound, string what)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(sw.Elapsed < bound, $"waited {bound.TotalSeconds:F0} s for {what}");
            await Task.Delay(5);
        }
    }
}
