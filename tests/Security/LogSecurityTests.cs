using System.Buffers.Binary;
using System.Diagnostics;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Security;

/// <summary>
/// A hostile log gets nowhere: real recordings are cut at every record boundary, extended, and forged with
/// correct checksums and a correct End record (what anyone who knows the format can write), and the replay of
/// each is checked against the safe outcome. The oracle is the replay of the untouched recording (faithful).
/// </summary>
public class LogSecurityTests
{
    static readonly Dictionary<string, byte[]> Recordings = new();

    /// <summary>A recording made by `primary record` (once per guest and test run).</summary>
    internal static byte[] Recorded(string guest, params string[] args) => Recorded(guest, null, args);

    /// <summary>
    /// A recording with periodic checkpoints every <paramref name="interval"/> instructions (null: the default). Recorded
    /// in the interpreter: the itimer guest computes until 100 ticks of a 2 ms timer arrived, so the length of its log
    /// in instructions is what the recorder executes in that wall time (~690 M compiled, ~39 M interpreted), and the
    /// tests below replay a log hundreds of times. The records (signals, syscalls, checkpoints, output, exit) are the
    /// same kinds at either length, and a recording replays in any tier.
    /// </summary>
    internal static byte[] Recorded(string guest, string? interval, params string[] args)
    {
        string key = guest + " " + interval + " " + string.Join(' ', args);
        lock (Recordings)
        {
            if (Recordings.TryGetValue(key, out var b)) return b;
            string log = Path.Combine(Path.GetTempPath(), $"revirt-sec-{Guid.NewGuid():N}.rvlog");
            try
            {
                string[] every = interval == null ? [] : ["--checkpoint-interval", interval];
                var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, new[] { "record", "--log", log, "--tier", "Interpreter" }.Concat(every).Concat(["--", GuestEnv.Guest(guest, "musl")]).Concat(args).ToArray());
                Assert.True(r.ExitCode == 0, r.Stderr);
                return Recordings[key] = File.ReadAllBytes(log);
            }
            finally { File.Delete(log); }
        }
    }

    internal static ReplayVerdict Replay(byte[] log)
    {
        using var reader = new LogReader(new MemoryStream(log, writable: false));
        return ReplayCheck.Run(reader);
    }

    static byte[] Concat(byte[] header, IEnumerable<byte[]> frames, int extra = 0, byte[]? next = null)
    {
        var ms = new MemoryStream();
        ms.Write(header);
        foreach (var f in frames) ms.Write(f);
        if (next != null) ms.Write(next, 0, extra);
        return ms.ToArray();
    }

    public static IEnumerable<object[]> Guests() => new[] { new object[] { "nondet_random" }, new object[] { "itimer" } };

    [Theory]
    [MemberData(nameof(Guests))]
    public void TheUntouchedRecordingIsFaithful(string guest)
    {
        var v = Replay(Recorded(guest));
        Assert.True(v.Kind == ReplayVerdictKind.Faithful, v.Message);
    }

    [Theory]
    [MemberData(nameof(Guests))]
    public void ALogCutAtAnyRecordBoundaryOrInsideARecordEndedEarly(string guest)
    {
        var img = LogImage.Parse(Recorded(guest));
        Assert.Equal(RecordKind.End, LogImage.KindOf(img.Frames[^1]));
        for (int k = 0; k < img.Frames.Count; k++)
        {
            // the first k records whole (k = Frames.Count - 1: everything but the End record)
            var cut = Concat(img.Header, img.Frames.Take(k));
            var v = Replay(cut);
            Assert.True(v.Kind == ReplayVerdictKind.EndedEarly, $"cut after record #{k}: {v.Kind}: {v.Message}");
            Assert.Contains($"record #{k}", v.Message);
            // and a torn piece of the next one
            var torn = Concat(img.Header, img.Frames.Take(k), img.Frames[k].Length / 2, img.Frames[k]);
            v = Replay(torn);
            Assert.True(v.Kind == ReplayVerdictKind.EndedEarly, $"torn inside record #{k + 1}: {v.Kind}: {v.Message}");
        }
    }

    [Fact]
    public void RecordsAppendedAfterTheEndAreRefused()
    {
        var good = Recorded("nondet_random");
        var img = LogImage.Parse(good);
        // a well-formed record with the next sequence number after the End record
        var extra = (byte[])img.Frames[0].Clone();
        var appended = new LogImage { Header = img.Header };
        appended.Frames.AddRange(img.Frames);
        appended.Frames.Add(extra);
        var v = Replay(appended.Build(reseal: true, freshEnd: false));
        Assert.True(v.Kind == ReplayVerdictKind.Refused, v.Message);
        Assert.Contains("after the End record", v.Message);
        // a single stray byte
        v = Replay([.. good, 0]);
        Assert.True(v.Kind == ReplayVerdictKind.Refused, v.Message);
        // every record of the log, once more, after the End record
        v = Replay(Concat(good, img.Frames));
        Assert.True(v.Kind == ReplayVerdictKind.Refused, v.Message);
    }

    [Fact]
    public void RecordsInsertedAfterTheExitRecordWithAFreshEndRecordDiverge()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        int exit = img.Frames.FindIndex(f => LogImage.KindOf(f) == RecordKind.Exit);
        foreach (var kind in ForgeableKinds.Where(k => k != RecordKind.End)) // (a second End: see RecordsAppendedAfterTheEndAreRefused)
        {
            var forged = new LogImage { Header = img.Header };
            forged.Frames.AddRange(img.Frames);
            forged.Frames.Insert(exit + 1, Forge(kind, img.Frames[exit - 1]));
            var v = Replay(forged.Build());
            Assert.True(v.Kind is ReplayVerdictKind.Diverged or ReplayVerdictKind.Refused, $"{kind} after exit: {v.Kind}: {v.Message}");
        }
    }

    [Fact]
    public void AnEndRecordThatDoesNotMatchTheLogIsRefused()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        var end = End.Decode(LogImage.Payload(img.Frames[^1]));
        foreach (var bad in new[]
        {
            new End { RecordCount = end.RecordCount + 1, Digest = end.Digest },
            new End { RecordCount = end.RecordCount - 1, Digest = end.Digest },
            new End { RecordCount = end.RecordCount, Digest = Flip(end.Digest, 5) },
        })
        {
            var forged = new LogImage { Header = img.Header };
            forged.Frames.AddRange(img.Frames.Take(img.Frames.Count - 1));
            forged.Frames.Add(LogImage.Frame(bad));
            var v = Replay(forged.Build(reseal: true, freshEnd: false));
            Assert.True(v.Kind == ReplayVerdictKind.Refused, v.Message);
        }
        // a record removed from the middle, the End record left as it was: the guest misses it first (diverged) or the
        // End record does not match (refused)
        for (int i = 0; i < img.Frames.Count - 1; i++)
        {
            var removed = new LogImage { Header = img.Header };
            removed.Frames.AddRange(img.Frames);
            removed.Frames.RemoveAt(i);
            var r = Replay(removed.Build(reseal: true, freshEnd: false));
            Assert.True(r.Kind is ReplayVerdictKind.Refused or ReplayVerdictKind.Diverged, $"record #{i + 1} removed: {r.Kind}: {r.Message}");
        }
    }

    /// <summary>
    /// A record removed and the log sealed again with a fresh End record (what a forger writes): never faithful.
    /// Inputs, outputs and the exit are missed by the guest (the recordings have no removable preemption); a periodic checkpoint is missed
    /// because the replay knows where the recorder takes them (its first stop at or after each interval, from the
    /// header) and stops there to see it. Every record of a short recording with several periodic checkpoints, and
    /// each periodic checkpoint of a longer one with signals.
    /// </summary>
    [Theory]
    [InlineData("nondet_random", "5000", false)]
    [InlineData("itimer", "1000000", true)]
    public void ARecordRemovedWithAFreshEndRecordIsNeverFaithful(string guest, string interval, bool checkpointsOnly)
    {
        var img = LogImage.Parse(Recorded(guest, interval));
        Assert.True(Replay(img.Build()).Kind == ReplayVerdictKind.Faithful, "the resealed untouched log");
        int n = img.Frames.Count - 1, periodic = 0;
        for (int i = 0; i < n; i++)
        {
            var kind = LogImage.KindOf(img.Frames[i]);
            bool isPeriodic = kind == RecordKind.Checkpoint && LogImage.KindOf(img.Frames[i + 1]) != RecordKind.Exit;
            if (isPeriodic) periodic++;
            if (checkpointsOnly && !isPeriodic) continue;
            var removed = new LogImage { Header = img.Header };
            removed.Frames.AddRange(img.Frames.Take(n));
            removed.Frames.RemoveAt(i);
            var v = Replay(removed.Build());
            Assert.True(v.Kind != ReplayVerdictKind.Faithful, $"record #{i + 1} ({kind}) removed, End record fresh: {v.Message}");
            if (isPeriodic) Assert.True(v.Kind == ReplayVerdictKind.Diverged, $"periodic checkpoint #{i + 1} removed: {v.Kind}: {v.Message}");
        }
        Assert.True(periodic >= 3, $"only {periodic} periodic checkpoints: the interval does not exercise the rule");
    }

    /// <summary>
    /// A well-formed header (correct checksum and End record) that no recorder writes and no machine can start from:
    /// no program, an empty or relative root, a NUL in a path, argument, variable or the start state. Refused with
    /// the reason, never a host exception (found by `backup fuzz` through the handshake, which shares this check).
    /// </summary>
    [Fact]
    public void AHeaderThatCannotBeRunIsRefused()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        var forgeries = new List<Action<LogHeader>>
        {
            h => h.RootDirectory = "", h => h.RootDirectory = "relative/root", h => h.RootDirectory = "/tmp\0x",
            h => h.Argv = [], h => h.Argv = ["", .. h.Argv.Skip(1)], h => h.Argv = [.. h.Argv, "a\0b"],
            h => h.Envp = [.. h.Envp, "X=\0"], h => h.StartState = "cwd=/\0"u8.ToArray(),
        };
        foreach (var forge in forgeries)
        {
            var h = LogHeader.Decode(img.Header, out _);
            forge(h);
            var forged = new LogImage { Header = h.Encode() };
            forged.Frames.AddRange(img.Frames.Take(img.Frames.Count - 1));
            var v = Replay(forged.Build());
            Assert.True(v.Kind == ReplayVerdictKind.Refused, $"{v.Kind}: {v.Message}");
        }
    }

    /// <summary>
    /// Found by `backup fuzz`: an execve record whose length or digest of the executable was forged made the replay
    /// throw (the executable under the root no longer matched what the log claimed) instead of refusing. The guest is
    /// busybox sh running a pipeline, which execs /bin/busybox in its children.
    /// </summary>
    [Fact]
    public void AForgedExecveRecordIsRefused()
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-sec-{Guid.NewGuid():N}.rvlog");
        try
        {
            var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--", "/bin/busybox", "sh", "-c", "/bin/busybox echo a | /bin/busybox cat"]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            var img = LogImage.Parse(File.ReadAllBytes(log));
            Assert.True(Replay(img.Build()).Kind == ReplayVerdictKind.Faithful);
            const int execve = 59;
            int forgedCount = 0;
            for (int i = 0; i < img.Frames.Count - 1; i++)
            {
                if (LogImage.KindOf(img.Frames[i]) != RecordKind.SyscallResult) continue;
                var orig = SyscallResult.Decode(LogImage.Payload(img.Frames[i]));
                if (orig.Nr != execve || orig.Result <= 0) continue;
                int k = 0;
                // (SyscallResult is a value: each forgery returns the changed copy)
                foreach (var forge in new Func<SyscallResult, SyscallResult>[]
                {
                    s => { s.Result += 1; return s; },
                    s => { s.Result = 1; return s; },
                    s => { if (s.MemWrites is { Count: > 0 } w) w[0] = w[0] with { Bytes = Flip(w[0].Bytes, 1) }; else s.Data = Flip(s.Data, 1); return s; },
                })
                {
                    var s = forge(SyscallResult.Decode(LogImage.Payload(img.Frames[i])));
                    var forged = new LogImage { Header = img.Header };
                    forged.Frames.AddRange(img.Frames.Take(img.Frames.Count - 1));
                    forged.Frames[i] = LogImage.Frame(s);
                    var v = Replay(forged.Build());
                    Assert.True(v.Kind == ReplayVerdictKind.Refused, $"record #{i + 1} (execve = {orig.Result}), forgery {k}: {v.Kind}: {v.Message}");
                    forgedCount++;
                    k++;
                }
            }
            Assert.True(forgedCount >= 3, "the recording holds no execve of a file");
        }
        finally { File.Delete(log); }
    }

    static readonly RecordKind[] ForgeableKinds =
    [
        RecordKind.SyscallResult, RecordKind.Rdtsc, RecordKind.Rdrand, RecordKind.Signal, RecordKind.Preempt,
        RecordKind.Checkpoint, RecordKind.Output, RecordKind.Exit, RecordKind.End, RecordKind.Opaque, RecordKind.Wake, RecordKind.NetTakeover, (RecordKind)0x42,
    ];

    static byte[] Flip(byte[] b, int at) { var c = (byte[])b.Clone(); if (c.Length > 0) c[at % c.Length] ^= 0x20; return c; }

    /// <summary>
    /// A well-formed record of <paramref name="kind"/> that differs from <paramref name="original"/>: the same kind
    /// with one field changed, or another kind at the original's instruction count.
    /// </summary>
    static byte[] Forge(RecordKind kind, byte[] original)
    {
        var orig = RecordFrame.Parse(original);
        ulong at = orig.Kind switch
        {
            RecordKind.SyscallResult => orig.Decode<SyscallResult>().InstrCount,
            RecordKind.Checkpoint => orig.Decode<Checkpoint>().InstrCount,
            RecordKind.Output => orig.Decode<Output>().InstrCount,
            RecordKind.Signal => orig.Decode<Signal>().InstrCount,
            RecordKind.Exit => orig.Decode<Exit>().InstrCount,
            _ => 1000,
        };
        bool same = kind == orig.Kind;
        switch (kind)
        {
            case RecordKind.SyscallResult:
                {
                    var s = same ? orig.Decode<SyscallResult>() : new SyscallResult { InstrCount = at, Nr = 1, Result = 1 };
                    s.Result += 1;
                    return LogImage.Frame(s);
                }
            case RecordKind.Rdtsc: return LogImage.Frame(new Rdtsc { InstrCount = at, Value = 12345 });
            case RecordKind.Rdrand: return LogImage.Frame(new Rdrand { InstrCount = at, Value = 0xdead });
            case RecordKind.Signal:
                {
                    var s = same ? orig.Decode<Signal>() : new Signal { InstrCount = at, Signo = 14, Tid = 1 };
                    s.Signo = s.Signo == 10 ? 12 : 10;
                    return LogImage.Frame(s);
                }
            case RecordKind.Preempt: return LogImage.Frame(new Preempt { InstrCount = at, FromTid = 1, ToTid = 2 });
            case RecordKind.Wake: return LogImage.Frame(new Wake { InstrCount = at, Tid = 1, WokenTid = 2, WaitSeq = 1 });
            case RecordKind.Checkpoint:
                {
                    var c = same ? orig.Decode<Checkpoint>() : new Checkpoint { InstrCount = at, StateDigest = new byte[32] };
                    c.StateDigest = Flip(c.StateDigest, 3);
                    return LogImage.Frame(c);
                }
            case RecordKind.Output:
                {
                    var o = same ? orig.Decode<Output>() : new Output { InstrCount = at, Fd = 1, TotalBytes = 3, Digest = new byte[8], Bytes = "abc"u8.ToArray() };
                    o.Bytes = Flip(o.Bytes, 0);
                    return LogImage.Frame(o);
                }
            case RecordKind.Exit:
                {
                    var e = same ? orig.Decode<Exit>() : new Exit { InstrCount = at };
                    e.Status += 1;
                    return LogImage.Frame(e);
                }
            case RecordKind.End: return LogImage.Frame(new End { RecordCount = 1, Digest = new byte[32] });
            case RecordKind.Opaque: return LogImage.Frame(new Opaque { Data = [1, 2, 3] });
            // a takeover of a virtual interface, in a log whose run has none
            case RecordKind.NetTakeover: return LogImage.Frame(new NetTakeover { InstrCount = at, Tid = 1, ClockNs = 1_000_000 });
            default: return LogImage.Frame(kind, [9, 9, 9, 9]);
        }
    }

    /// <summary>
    /// Every forged record is caught, except one that only changes an input (a syscall's result, an RDTSC or
    /// RDRAND value) to another the program could have received: a log decides its guest's inputs, so such a log
    /// is the faithful recording of another run. Those must still replay without harm (no host exception).
    /// </summary>
    static bool IsAlternativeInput(RecordKind forged, RecordKind original)
        => forged == original && forged is RecordKind.SyscallResult or RecordKind.Rdtsc or RecordKind.Rdrand;

    [Theory]
    [MemberData(nameof(Guests))]
    public void ACrcCorrectForgedRecordOfEveryKindAtEveryPositionIsNeverFaithful(string guest)
    {
        var img = LogImage.Parse(Recorded(guest));
        int n = img.Frames.Count - 1; // without the End record
        // itimer has 100 signal records: every position of the short log, every 7th of the long one
        for (int i = 0; i < n; i += n > 40 ? 7 : 1)
            foreach (var kind in ForgeableKinds)
            {
                var forged = new LogImage { Header = img.Header };
                forged.Frames.AddRange(img.Frames);
                forged.Frames[i] = Forge(kind, img.Frames[i]);
                // a forged End stays where it was put (a fresh End would drop it and seal the log without record i:
                // that is the removal case, checked with the End left as it was in AnEndRecordThatDoesNotMatch...)
                var v = Replay(forged.Build(freshEnd: kind != RecordKind.End));
                if (IsAlternativeInput(kind, LogImage.KindOf(img.Frames[i]))) continue;
                Assert.True(v.Kind != ReplayVerdictKind.Faithful, $"{kind} in place of record #{i + 1} ({LogImage.KindOf(img.Frames[i])}) was accepted: {v.Message}");
            }
    }

    [Fact]
    public void ForgedOutputBytesWithTheDigestLeftAsItWasDiverge()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        int i = img.Frames.FindIndex(f => LogImage.KindOf(f) == RecordKind.Output);
        var o = Output.Decode(LogImage.Payload(img.Frames[i]));
        o.Bytes = Flip(o.Bytes, 1); // same length, total and digest
        img.Frames[i] = LogImage.Frame(o);
        var v = Replay(img.Build());
        Assert.True(v.Kind == ReplayVerdictKind.Diverged, v.Message);
        Assert.Contains("output on fd", v.Message);
    }

    [Fact]
    public void MemoryWritesOutsideTheSyscallsBufferAreRefused()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        int i = img.Frames.FindIndex(f => LogImage.KindOf(f) == RecordKind.SyscallResult
                                           && SyscallResult.Decode(LogImage.Payload(f)).MemWrites is { Count: > 0 });
        Assert.True(i >= 0, "the recording has a syscall that writes guest memory");
        var orig = SyscallResult.Decode(LogImage.Payload(img.Frames[i]));
        var (addr, bytes) = orig.MemWrites![0];
        var cases = new (string What, ulong Addr, byte[] Bytes)[]
        {
            ("unmapped", 0x1000, bytes),
            ("wrapped", ulong.MaxValue - 7, new byte[16]),
            ("kernel half", 0xffff_8000_0000_0000, bytes),
            ("past the buffer", addr + (ulong)bytes.Length, bytes),
            ("longer than the buffer", addr, new byte[bytes.Length + 1]),
            ("one byte before", addr - 1, bytes),
            ("huge", addr, new byte[64 << 20]),
        };
        foreach (var (what, a, b) in cases)
        {
            var s = orig;
            s.MemWrites = [new GuestWrite(a, b)];
            var forged = new LogImage { Header = img.Header };
            forged.Frames.AddRange(img.Frames);
            forged.Frames[i] = LogImage.Frame(s);
            var v = Replay(forged.Build());
            Assert.True(v.Kind == ReplayVerdictKind.Refused, $"{what}: {v.Kind}: {v.Message}");
            Assert.Contains("impossible record", v.Message);
        }
        // a memory write added to a syscall that writes no memory
        int j = img.Frames.FindIndex(f => LogImage.KindOf(f) == RecordKind.SyscallResult
                                           && SyscallResult.Decode(LogImage.Payload(f)) is { MemWrites: null, Nr: >= 0 });
        var plain = SyscallResult.Decode(LogImage.Payload(img.Frames[j]));
        plain.MemWrites = [new GuestWrite(addr, bytes)];
        var f2 = new LogImage { Header = img.Header };
        f2.Frames.AddRange(img.Frames);
        f2.Frames[j] = LogImage.Frame(plain);
        var v2 = Replay(f2.Build());
        Assert.True(v2.Kind == ReplayVerdictKind.Refused, v2.Message);
    }

    [Fact]
    public void AFrameAnnouncingMoreThanTheLogHoldsAllocatesNothingLarge()
    {
        var img = LogImage.Parse(Recorded("nondet_random"));
        var frame = LogImage.Frame(new Opaque { Data = new byte[RecordFrame.MaxPayloadLength] });
        var log = Concat(img.Header, [], RecordFrame.HeaderSize + 10, frame);
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var reader = new LogReader(new MemoryStream(log));
        Assert.False(reader.TryRead(out _));
        Assert.True(reader.Truncated);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 4 << 20, "the reader allocated the announced frame length");
    }

    [Fact]
    public void AHeaderNamingADeviceOrAFifoAsTheProgramIsRefusedAtOnce()
    {
        string fifo = Path.Combine(Path.GetTempPath(), $"revirt-fifo-{Guid.NewGuid():N}");
        Assert.Equal(0, GuestEnv.Exec("mkfifo", [fifo], null, TimeSpan.FromSeconds(10)).ExitCode);
        try
        {
            foreach (var program in new[] { "/dev/zero", fifo, "/tmp" })
            {
                var h = new LogHeader { RootDirectory = "/", Argv = [program], Envp = [], CpuModel = "x", StartState = "cwd=/"u8.ToArray() };
                var sink = new MemoryLogSink();
                using (var w = new LogWriter(h, sink)) w.Finish();
                var sw = Stopwatch.StartNew();
                var v = Replay(sink.ToArray());
                Assert.True(v.Kind == ReplayVerdictKind.Refused, $"{program}: {v.Message}");
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"{program}: took {sw.Elapsed}");
            }
        }
        finally { File.Delete(fifo); }
    }

    /// <summary>True once the log file (being written) holds a whole record of this kind.</summary>
    static bool Holds(string log, RecordKind kind)
    {
        try
        {
            using var r = new LogReader(new MemoryStream(File.ReadAllBytes(log)));
            return r.ReadAll().Any(x => x.Kind == kind);
        }
        catch (Exception e) when (e is IOException) { return false; }
    }

    [Theory]
    [InlineData("2000000")]
    [InlineData("0")]
    public void ARecorderKilledWhileItsGuestComputesLeavesALogThatReplaysToItsLastRecord(string interval)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-kill-{Guid.NewGuid():N}.rvlog");
        try
        {
            using (var p = RunningProgram.Dotnet(GuestEnv.PrimaryDll, "record", "--log", log, "--checkpoint-interval", interval, "--", GuestEnv.Guest("bench", "musl"), "100000"))
            {
                // CPU-bound: the guest makes no syscall for seconds. Wait until the log holds what must have been
                // flushed by now (the start-up records after a second; a checkpoint after 2M instructions), then ~2 s more
                var sw = Stopwatch.StartNew();
                while (sw.Elapsed < TimeSpan.FromSeconds(90) && !Holds(log, interval == "0" ? RecordKind.SyscallResult : RecordKind.Checkpoint)) Thread.Sleep(100);
                Thread.Sleep(2000);
            } // SIGKILL (RunningProgram.Dispose kills the process)
            Thread.Sleep(500);
            var bytes = File.ReadAllBytes(log);
            using var reader = new LogReader(new MemoryStream(bytes));
            ulong records = reader.Verify();
            Assert.True(records > 0, $"the killed recorder left {bytes.Length} bytes and no record");
            Assert.False(reader.Complete);
            var v = Replay(bytes);
            Assert.True(v.Kind == ReplayVerdictKind.EndedEarly, v.Message);
            Assert.Contains($"record #{records}", v.Message);
            // with checkpoints every 2M instructions, a few have been taken (and flushed) before the kill
            if (interval != "0") Assert.Contains(RecordKind.Checkpoint, LogImage.Parse(bytes).Frames.Select(LogImage.KindOf));
        }
        finally { File.Delete(log); }
    }
}
