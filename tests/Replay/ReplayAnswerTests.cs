using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using ReVirt.Replay;
using ReVirt.Tests.Security;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// What a replay answers a syscall with, taken from the log without copies of its own: the result carries the
/// record's writes (the decoded list itself, in order, side values included), a result without writes carries none,
/// and the reused buffer list of <see cref="RecordedWrites"/> never lets one call's buffers admit another call's
/// writes. The oracle is the record as it was written (its value, addresses and bytes).
/// </summary>
public class ReplayAnswerTests
{
    /// <summary>A log's bytes as one chunk of verified frames (the backup's replay reads its records in place).</summary>
    sealed class OneChunk(byte[] log) : IFrameChunks
    {
        bool _given;
        public ReadOnlyMemory<byte> NextChunk()
        {
            if (_given) return ReadOnlyMemory<byte>.Empty;
            _given = true;
            return log;
        }
    }

    static HostResult Refused() => throw new InvalidOperationException("a replay performed the host operation");

    [Fact]
    public void AReplayedSyscallAnswersWithTheRecordedValueAndEveryRecordedWriteInOrder()
    {
        var header = LogImage.Parse(LogSecurityTests.Recorded("nondet_random")).Header;
        const int tid = 1;
        var writes = new List<GuestWrite>
        {
            new(0x7000_1000, [1, 2, 3, 4, 5]),
            new(0, [9, 9, 9, 9, 9, 9, 9, 9]),            // a side value the kernel keeps (address 0)
            new(0x7000_2000, new byte[300]),
        };
        writes[2].Bytes[299] = 0xAB;
        var img = new LogImage { Header = header };
        img.Frames.Add(LogImage.Frame(new SyscallResult { Tid = tid, Nr = Nr.read, Result = 5, MemWrites = writes }));
        img.Frames.Add(LogImage.Frame(new SyscallResult { Tid = tid, Nr = Nr.close, Result = 0 }));
        img.Frames.Add(LogImage.Frame(new SyscallResult { Tid = tid, Nr = Nr.read, Result = 2, MemWrites = [new GuestWrite(0x7000_3000, [7, 8])] }));
        var log = img.Build();

        // both ways a replay reads its log: records in place (a backup) and copied out of a stream (`backup replay`)
        foreach (var reader in new[] { LogReader.OverVerifiedChunks(new OneChunk(log)), new LogReader(new MemoryStream(log)) })
        {
            var b = new ReplayBoundary(reader, showOutput: false);
            var first = b.Syscall(tid, Nr.read, Refused);
            Assert.Equal(5, first.Value);
            Assert.Equal(writes.Count, first.Writes.Length);
            for (int i = 0; i < writes.Count; i++)
            {
                Assert.Equal(writes[i].Addr, first.Writes[i].Addr);
                Assert.Equal(writes[i].Bytes, first.Writes[i].Bytes);
            }
            var second = b.Syscall(tid, Nr.close, Refused);
            Assert.Equal(0, second.Value);
            Assert.Equal(0, second.Writes.Length);
            var third = b.Syscall(tid, Nr.read, Refused);
            Assert.Equal(2, third.Value);
            Assert.Equal(1, third.Writes.Length);
            Assert.Equal(0x7000_3000UL, third.Writes[0].Addr);
            Assert.Equal(new byte[] { 7, 8 }, third.Writes[0].Bytes);
            Assert.Equal(3UL, b.RecordsConsumed);
        }
    }

    [Fact]
    public void AHostResultHoldsTheWritesAddedToItInOrderAndNoneOtherwise()
    {
        var none = HostResult.Of(3);
        Assert.Equal(0, none.Writes.Length);
        none.ClearWrites();
        Assert.Equal(0, none.Writes.Length);

        var r = HostResult.Of(4).Write(0x10, [1]).Write(0, [2, 3]).Write(0x30, [4]);
        Assert.Equal(new ulong[] { 0x10, 0, 0x30 }, r.Writes.ToArray().Select(w => w.Addr));
        Assert.Equal(new byte[] { 2, 3 }, r.Writes[1].Bytes);
        r.ClearWrites();
        Assert.Equal(0, r.Writes.Length);
        r.Write(0x40, [5]);
        Assert.Equal(0x40UL, Assert.Single(r.Writes.ToArray()).Addr);

        // an answer from a record: the record's writes, then what is added to it
        var taken = HostResult.Of(6, [new GuestWrite(0x50, [6])]).Write(0x60, [7]);
        Assert.Equal(new ulong[] { 0x50, 0x60 }, taken.Writes.ToArray().Select(w => w.Addr));
        Assert.Equal(0, HostResult.Of(7, null).Writes.Length);
    }

    sealed class NoHost : ICpuHost
    {
        public void Syscall(VirtualCpu cpu) => throw new InvalidOperationException();
        public ulong ReadTimestampCounter(VirtualCpu cpu) => 0;
        public ulong ReadRandom(VirtualCpu cpu) => 0;
    }

    [Fact]
    public void TheBuffersOfOneCheckedSyscallNeverAdmitTheWritesOfTheNext()
    {
        const ulong Base = 0x10_0000;
        using var mem = new GuestMemory();
        mem.Map(Base, 64 * GuestMemory.PageSize, Prot.Read | Prot.Write);
        var cpu = new VirtualCpu(mem, new CodeCache(mem), new NoHost());
        // readv(fd, iov, 12): twelve buffers (more than the list's first size), one page apart from Base + 16 pages
        const ulong Iov = Base;
        for (ulong i = 0; i < 12; i++)
        {
            mem.Write64(Iov + i * 16, Base + (16 + i) * GuestMemory.PageSize);
            mem.Write64(Iov + i * 16 + 8, 100);
        }
        cpu.R[7] = 3; cpu.R[6] = Iov; cpu.R[2] = 12;
        ulong eleventh = Base + (16 + 11) * GuestMemory.PageSize;
        Assert.Null(RecordedWrites.Check(Nr.readv, cpu, mem, [new GuestWrite(eleventh, new byte[100])]));

        // read(fd, buf, 10): only [buf, buf + 10) may be written; the readv's buffers are no longer the call's
        ulong buf = Base + 40 * GuestMemory.PageSize;
        cpu.R[7] = 3; cpu.R[6] = buf; cpu.R[2] = 10;
        Assert.Null(RecordedWrites.Check(Nr.read, cpu, mem, [new GuestWrite(buf, new byte[10])]));
        Assert.NotNull(RecordedWrites.Check(Nr.read, cpu, mem, [new GuestWrite(eleventh, new byte[10])]));
        Assert.NotNull(RecordedWrites.Check(Nr.read, cpu, mem, [new GuestWrite(Base + 16 * GuestMemory.PageSize, new byte[10])]));
        Assert.NotNull(RecordedWrites.Check(Nr.read, cpu, mem, [new GuestWrite(buf, new byte[11])]));
        // and a call that names no buffer admits no write at all
        Assert.NotNull(RecordedWrites.Check(Nr.close, cpu, mem, [new GuestWrite(buf, new byte[1])]));
    }
}
