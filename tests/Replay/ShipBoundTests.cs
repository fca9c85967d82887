using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// When a protected recording ships a record whose output waits in the gate (`primary protect --ship-after-us`): at
/// the end of the guest's round once nothing shipped earlier waits for its acknowledgement, at the first syscall after
/// that acknowledgement when the record was logged behind a batch on its way, once the bound has passed, or at once
/// when the guest may wait; while a batch is unacknowledged, never earlier on a call that does not wait.
/// The oracle is the sink's own count of flushes (each flush is a batch to the backup).
/// </summary>
public class ShipBoundTests
{
    /// <summary>A log sink that only counts what it is handed (and knows the newest record, as the link does).</summary>
    sealed class CountingSink : ILogSink
    {
        public int Records, Flushes;
        public ulong Last;
        public void Append(ReadOnlySpan<byte> encodedRecord)
        {
            Records++;
            Last = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(encodedRecord[RecordFrame.SequenceOffset..]);
        }
        public void Flush() => Flushes++;
        public void Dispose() { }
    }

    /// <summary>The gate ships at acknowledgements as the replication client's flush does: everything handed to the
    /// sink goes, and the window is told how far.</summary>
    static void LinkTo(OutputGate gate, CountingSink sink, List<string>? order = null) => gate.Shipping.Link = () =>
    {
        gate.Shipping.Shipped(sink.Last);
        sink.Flush();
        order?.Add("shipped");
    };

    static readonly object Socket = new();

    /// <summary>A send on a socket nobody reads: the gate holds it (no acknowledgement ever comes), so it is never performed.</summary>
    static SocketSend HeldSend() => new()
    {
        Socket = Socket, Data = "reply\n"u8.ToArray(), HostFd = -1, Stream = true,
        Target = new FuncSendTarget((_, _, _) => throw new InvalidOperationException("a held send was performed without an acknowledgement")),
    };

    static (RecordingBoundary Boundary, CountingSink Sink) Recording(int shipAfterUs) => Recording(shipAfterUs, out _);

    static (RecordingBoundary Boundary, CountingSink Sink) Recording(int shipAfterUs, out OutputGate gate)
    {
        var sink = new CountingSink();
        var writer = new LogWriter(new LogHeader { RootDirectory = "/", Argv = ["kv"], Envp = [], CpuModel = "x" }, sink);
        gate = new OutputGate((_, _) => { });
        return (new RecordingBoundary(writer, 0) { Gate = gate, ShipAfterMicroseconds = shipAfterUs }, sink);
    }

    static HostResult Getpid() => HostResult.Of(1);

    /// <summary>A batch holding output goes to the backup and stays unacknowledged (the guest was about to sleep).</summary>
    static void ShipOneUnacknowledged(RecordingBoundary b, CountingSink sink)
    {
        b.Send(1, Nr.sendto, HeldSend());
        int before = sink.Flushes;
        b.Syscall(1, Nr.nanosleep, Getpid);
        Assert.True(sink.Flushes > before);
    }

    [Theory]
    [InlineData(0, true)]          // shipped at the next call
    [InlineData(1_000, true)]      // 1 ms bound, 20 ms passed
    [InlineData(10_000_000, false)] // a 10 s bound has not passed: the record gathers with later ones
    public void ARecordHoldingOutputIsShippedAtTheFirstCallAfterTheBound(int shipAfterUs, bool shipped)
    {
        var (b, sink) = Recording(shipAfterUs);
        ShipOneUnacknowledged(b, sink); // the link is busy: only the bound (or a wait) ships the next record
        b.Send(1, Nr.sendto, HeldSend());
        int before = sink.Flushes;
        Thread.Sleep(20);
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(shipped, sink.Flushes > before);
    }

    [Fact]
    public void ACallThatMayWaitShipsWhateverTheBound()
    {
        var (b, sink) = Recording(10_000_000);
        ShipOneUnacknowledged(b, sink);
        b.Send(1, Nr.sendto, HeldSend());
        int before = sink.Flushes;
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before, sink.Flushes);
        b.Syscall(1, Nr.nanosleep, Getpid); // the guest is about to sleep: its reply must not wait for the bound
        Assert.True(sink.Flushes > before);
    }

    [Fact]
    public void WithNothingUnacknowledgedARoundsRepliesGoWhenTheRoundEnds()
    {
        var (b, sink) = Recording(10_000_000);
        b.Send(1, Nr.sendto, HeldSend());
        int before = sink.Flushes;
        b.Syscall(1, Nr.getpid, Getpid); // not the end of a round
        Assert.Equal(before, sink.Flushes);
        b.Syscall(1, Nr.poll, Getpid); // a poll that finds more requests ready: no batch on its way, so the reply goes
        Assert.True(sink.Flushes > before);
    }

    [Fact]
    public void RecordsLoggedWhileABatchIsUnacknowledgedGoAtTheFirstRoundEndAfterItsWholeAcknowledgement()
    {
        var (b, sink) = Recording(10_000_000, out var gate);
        b.Send(1, Nr.sendto, ReleasableSend());
        b.Send(1, Nr.sendto, ReleasableSend());
        ulong firstBatch = b.Point.Sequence; // the two sends' records
        b.Syscall(1, Nr.nanosleep, Getpid); // the guest is about to sleep: they go
        int before = sink.Flushes;
        b.Send(1, Nr.sendto, ReleasableSend());
        b.Syscall(1, Nr.poll, Getpid);
        Assert.Equal(before, sink.Flushes); // it gathers behind the batch on its way
        gate.Ack(firstBatch - 1); // part of that batch
        b.Syscall(1, Nr.poll, Getpid);
        Assert.Equal(before, sink.Flushes);
        gate.Ack(firstBatch); // the whole batch: the next call ships what gathered, in one batch
        b.Syscall(1, Nr.poll, Getpid);
        Assert.Equal(before + 1, sink.Flushes);
    }

    [Fact]
    public void RecordsLoggedBehindABatchGoAtTheFirstCallAfterItsAcknowledgementNotAtTheRoundsEnd()
    {
        var (b, sink) = Recording(10_000_000, out var gate);
        b.Send(1, Nr.sendto, ReleasableSend());
        ulong firstBatch = b.Point.Sequence;
        b.Syscall(1, Nr.nanosleep, Getpid); // it goes, and stays unacknowledged for now
        int before = sink.Flushes;
        b.Send(1, Nr.sendto, ReleasableSend()); // a reply of the next round, logged while that batch is on its way
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before, sink.Flushes); // it gathers behind the batch
        gate.Ack(firstBatch);
        b.Syscall(1, Nr.getpid, Getpid); // the round goes on (no poll yet): the reply goes now, not at the round's end
        Assert.Equal(before + 1, sink.Flushes);
        // the next reply is logged behind that new batch: it gathers again until the new acknowledgement
        b.Send(1, Nr.sendto, ReleasableSend());
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before + 1, sink.Flushes);
    }

    /// <summary>A recording whose gate ships at acknowledgements as the replication client does, with a batch of
    /// <paramref name="sends"/> releasable sends on its way (the guest was about to sleep); <paramref name="batch"/> is
    /// its last record.</summary>
    static (RecordingBoundary Boundary, CountingSink Sink) Linked(int sends, out OutputGate gate, out ulong batch, List<string>? order = null)
    {
        var (b, sink) = Recording(10_000_000, out gate);
        LinkTo(gate, sink, order);
        for (int i = 0; i < sends; i++) b.Send(1, Nr.sendto, order == null ? ReleasableSend() : ReleasableSend(order));
        batch = b.Point.Sequence;
        b.Syscall(1, Nr.nanosleep, Getpid);
        return (b, sink);
    }

    [Fact]
    public void RecordsLoggedBehindABatchAreShippedByItsAcknowledgementBeforeItsOutputIsReleased()
    {
        var order = new List<string>();
        var (b, sink) = Linked(2, out var gate, out ulong firstBatch, order);
        int before = sink.Flushes;
        b.Send(1, Nr.sendto, ReleasableSend(order)); // a reply of the next round, logged while that batch is on its way
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before, sink.Flushes); // it gathers behind the batch
        gate.Ack(firstBatch - 1); // part of the batch: the link is still busy, nothing ships
        Assert.Equal(before, sink.Flushes);
        Assert.Equal(["sent"], order); // (the first send's record came before the second's)
        gate.Ack(firstBatch); // the whole batch: the reply behind it goes with the acknowledgement, no guest call needed
        Assert.Equal(before + 1, sink.Flushes);
        Assert.Equal(["sent", "shipped", "sent"], order); // shipped before the acknowledged output was released
        Assert.False(gate.Shipping.OutputWaits);
        Assert.Equal(1, gate.Shipping.ShippedAtAcknowledgements);
        b.Syscall(1, Nr.poll, Getpid); // the guest's next round end finds nothing left to ship
        Assert.Equal(before + 1, sink.Flushes);
    }

    [Fact]
    public void AnAcknowledgementShipsNothingWhenNoOutputWaits()
    {
        var (b, sink) = Linked(1, out var gate, out ulong firstBatch);
        b.Syscall(1, Nr.getpid, Getpid); // a record without output, logged behind the batch
        int before = sink.Flushes;
        gate.Ack(firstBatch);
        Assert.Equal(before, sink.Flushes); // only output is worth a batch of its own
        Assert.Equal(0, gate.Shipping.ShippedAtAcknowledgements);
    }

    [Fact]
    public void OutputLoggedOnAnIdleLinkWaitsForTheRoundsEndNotForAnAcknowledgement()
    {
        var (b, sink) = Linked(1, out var gate, out ulong firstBatch);
        gate.Ack(firstBatch); // the link is idle
        int before = sink.Flushes;
        b.Send(1, Nr.sendto, ReleasableSend()); // logged with nothing on its way
        gate.Ack(firstBatch); // a repeated acknowledgement (acks are cumulative) ships nothing
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before, sink.Flushes);
        b.Syscall(1, Nr.poll, Getpid); // the round ends: it goes
        Assert.Equal(before + 1, sink.Flushes);
    }

    /// <summary>A send the gate may release (its acknowledgement came): the host takes it whole.</summary>
    static SocketSend ReleasableSend(List<string> order) => new()
    {
        Socket = Socket, Data = "reply\n"u8.ToArray(), HostFd = -1, Stream = true,
        Target = new FuncSendTarget((offset, count, _) => { order.Add("sent"); return count; }),
    };

    /// <summary>A send the gate may release (its acknowledgement came): the host takes it whole.</summary>
    static SocketSend ReleasableSend() => new()
    {
        Socket = Socket, Data = "reply\n"u8.ToArray(), HostFd = -1, Stream = true,
        Target = new FuncSendTarget((offset, count, _) => count),
    };

    [Fact]
    public void ANegativeBoundIsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Recording(-1));
    }
}
