using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The held file writes of shared storage, without processes: the gate stores a write only with the
/// acknowledgement of its record (in order, at its absolute offset), an append's end counts held writes, a lost
/// arbiter drops them; a follower keeps what its primary may not have released and stores exactly that at a
/// takeover. Oracle: the file's bytes as read back from the host.
/// </summary>
public class FileOutputTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"revirt-fileoutput-{Guid.NewGuid():N}");
    readonly string _path;
    readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;

    public FileOutputTests()
    {
        Directory.CreateDirectory(_dir);
        _path = Path.Combine(_dir, "f");
        _file = File.OpenHandle(_path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
    }

    public void Dispose()
    {
        _file.Dispose();
        Directory.Delete(_dir, true);
    }

    int Fd => (int)_file.DangerousGetHandle();

    HeldFileWrite Write(ulong seq, long offset, string text)
        => new(seq, FileOutput.Identify(Fd)!.Value.File, (int)HostSys.Call(Nr.dup, Fd), offset, System.Text.Encoding.ASCII.GetBytes(text));

    string Content => File.ReadAllText(_path);

    [Fact]
    public void AWriteIsStoredOnlyWithTheAcknowledgementOfItsRecordAndInOrder()
    {
        var gate = OutputGate.ToHostStdio();
        gate.HoldFileWrites(TextWriter.Null);
        var files = gate.Files!;
        gate.HoldFileWrite(Write(3, 0, "aaaa"));
        gate.HoldFileWrite(Write(5, 2, "bb"));
        Assert.Equal("", Content);
        Assert.Equal(6, gate.AllHeldBytes); // what the held_bytes metric reports counts held file writes
        Assert.True(files.Pending);
        Assert.Equal(4, files.EndOf(FileOutput.Identify(Fd)!.Value.File, Fd)); // an append goes after both held writes
        gate.Ack(4);
        Assert.Equal("aaaa", Content);
        Assert.Equal(2, gate.AllHeldBytes);
        Assert.Equal(3ul, files.ReleasedThrough);
        gate.Ack(5);
        Assert.Equal("aabb", Content); // the later write over the earlier one, as the guest made them
        Assert.False(files.Pending);
        Assert.Equal(0, gate.AllHeldBytes);
        gate.Ack(7);
        gate.HoldFileWrite(Write(6, 4, "c")); // its record acknowledged before it reached the gate: stored at once
        Assert.Equal("aabbc", Content);
    }

    [Fact]
    public void LosingTheArbiterDropsHeldWritesAndWinningItStoresThem()
    {
        var lost = OutputGate.ToHostStdio();
        lost.HoldFileWrites(TextWriter.Null);
        lost.HoldFileWrite(Write(1, 0, "lost"));
        lost.Discard();
        lost.Ack(1);
        Assert.Equal("", Content);

        var won = OutputGate.ToHostStdio();
        won.HoldFileWrites(TextWriter.Null);
        won.HoldFileWrite(Write(1, 0, "won"));
        won.GoUnprotected();
        Assert.Equal("won", Content);
        won.HoldFileWrite(Write(2, 3, "!")); // unprotected: passes straight through
        Assert.Equal("won!", Content);
    }

    [Fact]
    public void AFollowerStoresOnlyWhatItsPrimaryMayNotHaveReleasedAndTheResultIsTheSameEitherWay()
    {
        File.WriteAllText(_path, "0123456789");
        var redo = new UnreleasedFileWrites();
        redo.Add(10, "/f", 0, "ab"u8.ToArray(), releasedThrough: 0);
        redo.Add(11, "/f", 10, "tail"u8.ToArray(), releasedThrough: 0);
        redo.Add(12, "/f", 1, "X"u8.ToArray(), releasedThrough: 10); // the primary had stored record 10's write
        Assert.Equal(2, redo.Count);
        // the primary had stored record 11's write too (a repeat is harmless), not record 12's
        File.WriteAllText(_path, "ab23456789tail");
        using (var fs = new GuestFs(_dir)) redo.Apply(fs);
        Assert.Equal("aX23456789tail", Content);
        Assert.Equal(0, redo.Count);
        redo.Add(13, "/f", 0, "zz"u8.ToArray(), releasedThrough: 12);
        redo.Settled(); // the primary went past a point where it had stored everything
        Assert.Equal(0, redo.Count);
    }

    [Fact]
    public void AHeldWritesRecordRoundTrips()
    {
        var b = HeldWriteRecord.Encode(1L << 40, 77);
        Assert.Equal(HeldWriteRecord.Size, b.Length);
        Assert.Equal((1L << 40, 77ul), HeldWriteRecord.Decode(b));
    }
}
