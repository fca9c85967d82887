using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// When a protected recording ships a record whose output waits in the gate (`primary protect --ship-after-us`): at
/// the guest's first syscall once the bound has passed, or at once when the guest may wait; never earlier on a call
/// that does not wait. The oracle is the sink's own count of flushes (each flush is a batch to the backup).
/// </summary>
public class ShipBoundTests
{
    /// <summary>A log sink that only counts what it is handed.</summary>
    sealed class CountingSink : ILogSink
    {
        public int Records, Flushes;
        public void Append(ReadOnlySpan<byte> encodedRecord) => Records++;
        public void Flush() => Flushes++;
        public void Dispose() { }
    }

    static readonly object Socket = new();

    /// <summary>A send on a socket nobody reads: the gate holds it (no acknowledgement ever comes), so it is never performed.</summary>
    static SocketSend HeldSend() => new()
    {
        Socket = Socket, Data = "reply\n"u8.ToArray(), HostFd = -1, Stream = true,
        Perform = (_, _, _) => throw new InvalidOperationException("a held send was performed without an acknowledgement"),
    };

    static (RecordingBoundary Boundary, CountingSink Sink) Recording(int shipAfterUs)
    {
        var sink = new CountingSink();
        var writer = new LogWriter(new LogHeader { RootDirectory = "/", Argv = ["kv"], Envp = [], CpuModel = "x" }, sink);
        var gate = new OutputGate((_, _) => { });
        return (new RecordingBoundary(writer, 0) { Gate = gate, ShipAfterMicroseconds = shipAfterUs }, sink);
    }

    static HostResult Getpid() => HostResult.Of(1);

    [Theory]
    [InlineData(0, true)]          // shipped at the next call
    [InlineData(1_000, true)]      // 1 ms bound, 20 ms passed
    [InlineData(10_000_000, false)] // a 10 s bound has not passed: the record gathers with later ones
    public void ARecordHoldingOutputIsShippedAtTheFirstCallAfterTheBound(int shipAfterUs, bool shipped)
    {
        var (b, sink) = Recording(shipAfterUs);
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
        b.Send(1, Nr.sendto, HeldSend());
        int before = sink.Flushes;
        b.Syscall(1, Nr.getpid, Getpid);
        Assert.Equal(before, sink.Flushes);
        b.Syscall(1, Nr.nanosleep, Getpid); // the guest is about to sleep: its reply must not wait for the bound
        Assert.True(sink.Flushes > before);
    }

    [Fact]
    public void ANegativeBoundIsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Recording(-1));
    }
}
