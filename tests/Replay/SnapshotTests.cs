using System.IO.Hashing;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Snapshot;
using ReVirt.Tests.Programs;
using Xunit;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.Replay;

/// <summary>
/// Machine snapshots: a machine captured mid-run and restored goes on exactly as the uninterrupted run did (the
/// oracle is the recording: every output and checkpoint digest after the snapshot is verified against it); a
/// snapshot that omits a page or is damaged is refused with the reason.
/// </summary>
public class SnapshotTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void ResumableXxHash64EqualsTheLibrarysAcrossChunkingsAndResumes()
    {
        var rng = new Random(7);
        for (int round = 0; round < 200; round++)
        {
            var data = new byte[rng.Next(0, 300)];
            rng.NextBytes(data);
            var oracle = new XxHash64();
            var mine = new ResumableXxHash64();
            int off = 0;
            while (off < data.Length)
            {
                int n = Math.Min(data.Length - off, rng.Next(0, 70));
                oracle.Append(data.AsSpan(off, n));
                mine.Append(data.AsSpan(off, n));
                off += n;
                if (rng.Next(3) == 0)
                {
                    var state = new byte[ResumableXxHash64.StateSize];
                    mine.SaveState(state);
                    mine = ResumableXxHash64.Resume(state);
                }
                Assert.Equal(oracle.GetCurrentHash(), mine.GetCurrentHash());
            }
            Assert.Equal(XxHash64.Hash(data), mine.GetCurrentHash());
        }
    }

    /// <summary>Forwards to a replay and takes a snapshot at its first stop after a given record; keeps the output.
    /// With `encodeAfter`, the capture is encoded only at the first stop after that record, on another thread while
    /// the replay runs on (the guest changes pages between the capture and their reading, and during it).</summary>
    sealed class SnapshotAt(ReplayBoundary inner, ulong afterRecord, SnapshotPlant plant = SnapshotPlant.None, ulong encodeAfter = 0) : IBoundary
    {
        /// <summary>The capture waits (after `afterRecord`) for a stop at which this holds of the machine.</summary>
        public Func<Kernel, bool> When = _ => true;
        /// <summary>The virtual network stack's state bytes at the capture, written there (null: no interface).</summary>
        public byte[]? NetStateAtCapture;
        public byte[]? Snapshot;
        public SnapshotPoint? Point;
        public TimeSpan Pause;
        /// <summary>The state digest of the machine at the capture, computed there (the oracle of a late encoding).</summary>
        public byte[]? DigestAtCapture;
        public Thread? Encoding;
        public long Preserved;
        SnapshotCapture? _pending;
        public readonly MemoryStream Stdout = new();
        Kernel? _k;

        public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false) => inner.Syscall(tid, nr, perform, reexecuteOnReplay);
        public HostResult Output(int tid, int nr, int fd, byte[] data, Func<HostResult> perform) => inner.Output(tid, nr, fd, data, perform);
        public HostResult Send(int tid, int nr, in SocketSend send) => inner.Send(tid, nr, send);
        public HostResult SocketEnd(int tid, int nr, object socket, Func<HostResult> perform, bool reexecuteOnReplay) => inner.SocketEnd(tid, nr, socket, perform, reexecuteOnReplay);
        public HostResult FileContent(int tid, int nr, FileRef file, Func<HostResult> perform) => inner.FileContent(tid, nr, file, perform);
        public NetReceived NetReceive(int tid, Func<NetReceived> perform) => inner.NetReceive(tid, perform);
        public ulong Value(int tid, InputKind kind, Func<ulong> perform) => inner.Value(tid, kind, perform);
        public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform) => inner.Bytes(tid, kind, count, perform);
        public bool Replaying => inner.Replaying;
        public bool KeepsFileContent => inner.KeepsFileContent;
        public int HostDescriptor(long performed, int local = -1) => ((IBoundary)inner).HostDescriptor(performed, local);
        public ulong NextStop(Kernel kernel, CpuT cpu) => inner.NextStop(kernel, cpu);
        public bool Idle(Kernel kernel, CpuT cpu) { Take(kernel); return inner.Idle(kernel, cpu); }
        public void OnOutput(Kernel kernel, CpuT cpu, int fd, ReadOnlySpan<byte> bytes) { if (fd == 1) Stdout.Write(bytes); inner.OnOutput(kernel, cpu, fd, bytes); }
        public void Attach(Kernel kernel) { _k = kernel; inner.Attach(kernel); }
        public void OnExit(Kernel kernel, CpuT cpu, int status) => inner.OnExit(kernel, cpu, status);

        public void AtStop(Kernel kernel, CpuT cpu)
        {
            Take(kernel);
            inner.AtStop(kernel, cpu);
        }

        void Take(Kernel kernel)
        {
            if (_pending != null && Encoding == null && inner.RecordsConsumed >= encodeAfter)
            {
                var cap = _pending;
                Encoding = new Thread(() => { var b = cap.Encode(plant); Preserved = cap.Preserved; Snapshot = b; });
                Encoding.Start();
            }
            if (Point != null || inner.RecordsConsumed < afterRecord || !When(kernel)) return;
            Point = inner.Point;
            NetStateAtCapture = kernel.Nic is { } nic ? StackState(nic.Stack) : null;
            var c = MachineSnapshot.Capture(kernel, Point, _header);
            Pause = c.Pause;
            if (EncodeWith != null) { DigestAtCapture = StateDigest.Compute(kernel); EncodeWith(c); return; }
            if (encodeAfter == 0) { using (c) Snapshot = c.Encode(plant); return; }
            DigestAtCapture = StateDigest.Compute(kernel);
            _pending = c;
        }

        public byte[] _header = [];
        /// <summary>Set: the capture is handed to this at the stop (which encodes it however it likes) instead of being
        /// encoded into <see cref="Snapshot"/>.</summary>
        public Action<SnapshotCapture>? EncodeWith;
    }

    static byte[] StackState(ReVirt.Net.NetStack stack)
    {
        var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) stack.WriteState(w);
        return ms.ToArray();
    }

    static string TempLog() => Path.Combine(Path.GetTempPath(), $"revirt-snap-{Guid.NewGuid():N}.rvlog");

    /// <summary>The log's header bytes and the frames after record `after`, as a replica that starts from a snapshot
    /// taken there receives them.</summary>
    static MemoryStream LogAfter(string log, ulong after)
    {
        using var r = LogReader.Open(log);
        int headerLen = (int)r.HeaderLength;
        while (r.LastSequence < after && r.TryRead(out _)) { }
        Assert.Equal(after, r.LastSequence);
        var all = File.ReadAllBytes(log);
        var ms = new MemoryStream();
        ms.Write(all, 0, headerLen);
        ms.Write(all, (int)r.ValidEndOffset, all.Length - (int)r.ValidEndOffset);
        ms.Position = 0;
        return ms;
    }

    static (byte[] Snapshot, SnapshotPoint Point, byte[] Header, byte[] Stdout, int Status, int Checkpoints) ReplayWithSnapshot(string log, ulong afterRecord, SnapshotPlant plant = SnapshotPlant.None)
        => ReplayWithSnapshot(log, afterRecord, plant, _ => { });

    static (byte[] Snapshot, SnapshotPoint Point, byte[] Header, byte[] Stdout, int Status, int Checkpoints) ReplayWithSnapshot(string log, ulong afterRecord, SnapshotPlant plant, Action<SnapshotAt> setUp)
    {
        using var reader = LogReader.Open(log);
        var header = reader.Header.Encode();
        var opts = Recording.OptionsFrom(reader.Header, null);
        var inner = new ReplayBoundary(reader, showOutput: false);
        var b = new SnapshotAt(inner, afterRecord, plant) { _header = header };
        setUp(b);
        var program = Recording.RecordedProgram(reader.Header, opts, out var why) ?? throw new Exception(why);
        using var m = new Machine(opts, b);
        m.Load(program);
        int status = m.Run();
        Assert.True(inner.RecordingComplete);
        Assert.NotNull(b.Snapshot);
        return (b.Snapshot!, b.Point!, header, b.Stdout.ToArray(), status, inner.CheckpointsVerified);
    }

    public static IEnumerable<object[]> Guests()
    {
        // a process tree with pipes (fork, exec, wait, in-VM pipes with bytes in them)
        yield return ["/bin/busybox", new[] { "sh", "-c", "i=0; while [ $i -lt 60 ]; do echo line $i; i=$((i+1)); done | sort -r | head -40; echo done" }];
        // threads on the deterministic scheduler, futexes
        yield return [GuestEnv.Guest("threads", "glibc"), Array.Empty<string>()];
        yield return [GuestEnv.Guest("forkcow", "musl"), Array.Empty<string>()];
        // a timerfd, an eventfd another thread writes, a listener, an epoll set over them, an armed interval timer
        // and a POSIX timer
        yield return [GuestEnv.Guest("tfdtick", "musl"), new[] { "60" }];
        yield return [GuestEnv.Guest("tfdtick", "glibc"), new[] { "60" }];
    }

    [Theory]
    [MemberData(nameof(Guests))]
    public void ARestoredSnapshotGoesOnAsTheUninterruptedRun(string program, string[] args)
    {
        string log = TempLog();
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--checkpoint-interval", "100000", "--", program, .. args]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            AssertRestoredHalfwayGoesOn(log, rec);
        }
        finally { File.Delete(log); }
    }

    /// <summary>A server with a listener, connections of four clients and its epoll set, snapshotted halfway through
    /// their requests.</summary>
    [Theory]
    [InlineData("musl")]
    [InlineData("glibc")]
    public void ARestoredServerWithConnectionsGoesOnAsTheUninterruptedRun(string libc)
    {
        string log = TempLog();
        try
        {
            var rec = ReVirt.Tests.Net.NetworkTests.Serve(GuestEnv.Guest("epollserver", libc), log, ReVirt.Tests.Net.NetworkTests.DriveEpoll, out var expected);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(expected, rec.StdoutText);
            AssertRestoredHalfwayGoesOn(log, rec);
        }
        finally { File.Delete(log); }
    }

    /// <summary>The oracle: the replay of the whole recording takes a snapshot halfway (and must still match the
    /// recording), and a machine restored from that snapshot replays the rest of the log to the same checkpoints,
    /// output and exit status.</summary>
    static void AssertRestoredHalfwayGoesOn(string log, RunOutcome rec) => AssertRestoredHalfwayGoesOn(log, rec, _ => { }, (_, _) => { });

    /// <param name="setUp">Adjusts the capture (e.g. the moment it waits for).</param>
    /// <param name="restored">Checks the restored machine, before it runs, against the capture.</param>
    static void AssertRestoredHalfwayGoesOn(string log, RunOutcome rec, Action<SnapshotAt> setUp, Action<SnapshotAt, Machine> restored)
    {
        SnapshotAt? captured = null;
        ulong records;
        using (var r = LogReader.Open(log)) records = r.Verify();
        Assert.True(records > 20, $"only {records} records");
        // the uninterrupted replay, which also takes the snapshot halfway (the capture must not disturb it)
        var (snap, point, header, fullOut, status, checkpoints) = ReplayWithSnapshot(log, records / 2, SnapshotPlant.None, b => { setUp(b); captured = b; });
        Assert.Equal(rec.ExitCode, status);
        Assert.Equal(rec.Stdout, fullOut);

        // a new machine from the snapshot, following the rest of the log
        using var reader = new LogReader(LogAfter(log, point.Sequence), leaveOpen: false, startsAfter: point.Sequence);
        var opts = Recording.OptionsFrom(reader.Header, null);
        var boundary = new ReplayBoundary(reader, showOutput: false);
        var tail = new SnapshotAt(boundary, ulong.MaxValue);
        var (m, restoredPoint) = MachineSnapshot.Restore(snap, header, opts, tail);
        boundary.ResumeAt(restoredPoint);
        using (m)
        {
            restored(captured!, m);
            int st = m.Run();
            Assert.Equal(rec.ExitCode, st);
        }
        Assert.True(boundary.RecordingComplete, "the restored replay did not reach the End record");
        // every checkpoint and output after the snapshot was verified against the recording, and the output is the
        // uninterrupted run's from the snapshot's offset on
        ulong offset = point.Outputs.Total(1);
        Assert.Equal(rec.Stdout.AsSpan((int)offset).ToArray(), tail.Stdout.ToArray());
        Assert.True(boundary.CheckpointsVerified > 0, "no checkpoint after the snapshot");
        // (an event loop's checkpoints may all lie after its halfway record: it does most of its work there)
        Assert.True(boundary.CheckpointsVerified <= checkpoints);
        Assert.True(point.Sequence >= records / 2 && point.Sequence < records, $"the snapshot is of record {point.Sequence} of {records}");
    }

    /// <summary>
    /// kvserver on the virtual network interface (`--net virtual`, 8 Linux clients in a network namespace), snapshotted
    /// halfway at a stop where a connection has bytes in flight (a reply not yet acknowledged by its client, or a request
    /// not yet read): the restored interface is the captured one (the stack's state bytes, hence its digest, are equal:
    /// every connection with its sequence numbers, buffers and timers), the guest's descriptors name the same
    /// connections, and the restored machine replays the rest of the log faithfully (every later checkpoint digest
    /// covers the stack), to the same output and exit status.
    /// </summary>
    [Theory]
    [InlineData("musl")]
    public void ARestoredServerOnTheVirtualNetworkKeepsItsConnectionsMidTransfer(string libc)
    {
        string log = TempLog();
        try
        {
            var (rec, clients) = ReVirt.Tests.Net.VirtualNetTests.Serve(libc, log);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(0, clients.Resets);
            static bool InFlight(Kernel k) => k.Nic?.Stack.TcpSockets.Any(s => s.State == ReVirt.Net.TcpState.Established && (s.SendBuf.Count > 0 || s.RecvBuf.Count > 0)) == true;
            AssertRestoredHalfwayGoesOn(log, rec, b => b.When = InFlight, (at, m) =>
            {
                var nic = m.Kernel.Nic;
                Assert.NotNull(at.NetStateAtCapture);
                Assert.NotNull(nic);
                Assert.True(InFlight(m.Kernel), "no connection has bytes in flight in the restored stack");
                Assert.True(nic!.Stack.ConnectionCount >= 2, $"{nic.Stack.ConnectionCount} connections");
                Assert.Equal(Convert.ToHexString(at.NetStateAtCapture!), Convert.ToHexString(StackState(nic.Stack)));
                Assert.Equal(System.Security.Cryptography.SHA256.HashData(at.NetStateAtCapture!), nic.Stack.Digest());
                // the guest's descriptors hold the restored stack's connections (the ones a takeover carries on)
                var held = m.Kernel.Processes.SelectMany(p => p.Fds.Entries).Select(e => e.File).OfType<VirtualSocket>().Select(v => v.Tcp).ToList();
                Assert.Contains(held, t => t != null && t.State == ReVirt.Net.TcpState.Established);
                Assert.All(held, t => Assert.Contains(t, nic.Stack.TcpSockets));
            });
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// Copy-on-write at work: memtouch (8 MiB, 16 pages rewritten per line) is captured, runs on for many records,
    /// and only then is the capture read, on another thread while the guest goes on storing to its pages. The
    /// snapshot must hold the machine exactly as it was at the capture: its state digest equals the one computed at
    /// the capture itself, and the machine restored from it replays the rest of the log to its end.
    /// </summary>
    [Fact]
    public void PagesTheGuestWritesWhileACaptureIsReadAreTheCapturesOwn()
    {
        string log = TempLog(), stop = TempLog() + ".stop";
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--checkpoint-interval", "1000000", "--", GuestEnv.Guest("memtouch", "musl"), stop, "8", "1", "300"]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            ulong records;
            using (var r = LogReader.Open(log)) records = r.Verify();
            using var reader = LogReader.Open(log);
            var header = reader.Header.Encode();
            var opts = Recording.OptionsFrom(reader.Header, null);
            var inner = new ReplayBoundary(reader, showOutput: false);
            var b = new SnapshotAt(inner, records / 4, encodeAfter: records / 2) { _header = header };
            using (var m = new Machine(opts, b))
            {
                m.Load(Recording.RecordedProgram(reader.Header, opts, out var why) ?? throw new Exception(why));
                Assert.Equal(0, m.Run());
            }
            Assert.True(inner.RecordingComplete);
            Assert.NotNull(b.Encoding);
            Assert.True(b.Encoding!.Join(TimeSpan.FromMinutes(2)), "the encoding ends");
            var snap = b.Snapshot!;
            Assert.True(b.Preserved > 16, $"the guest changed only {b.Preserved} captured pages before they were read");
            Assert.Equal(Convert.ToHexString(b.DigestAtCapture!), Convert.ToHexString(snap.AsSpan(snap.Length - 48, 16)));

            using var rest = new LogReader(LogAfter(log, b.Point!.Sequence), leaveOpen: false, startsAfter: b.Point.Sequence);
            var boundary = new ReplayBoundary(rest, showOutput: false);
            var tail = new SnapshotAt(boundary, ulong.MaxValue);
            var (restored, point) = MachineSnapshot.Restore(snap, header, opts, tail);
            boundary.ResumeAt(point);
            ulong offset = point.Outputs.Total(1);
            using (restored)
            {
                Assert.Equal(Convert.ToHexString(b.DigestAtCapture!), Convert.ToHexString(StateDigest.Compute(restored.Kernel)));
                Assert.Equal(0, restored.Run());
            }
            Assert.True(boundary.RecordingComplete, "the restored replay did not reach the End record");
            Assert.True(offset > 0 && (int)offset < rec.Stdout.Length);
            Assert.Equal(rec.Stdout.AsSpan((int)offset).ToArray(), tail.Stdout.ToArray());
        }
        finally { File.Delete(log); }
    }

    /// <summary>A recording of a shell pipeline and a snapshot of its replay after record 30.</summary>
    static (byte[] Snapshot, byte[] Header, string Log, ulong After) SnapshotOfBusybox()
    {
        string log = TempLog();
        var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--checkpoint-interval", "100000", "--", "/bin/busybox", "sh", "-c", "seq 1 300 | sort -rn | head -3"]);
        Assert.True(rec.ExitCode == 0, rec.Stderr);
        var (snap, point, header, _, _, _) = ReplayWithSnapshot(log, 30);
        return (snap, header, log, point.Sequence);
    }

    [Fact]
    public void ASnapshotThatOmitsAPageIsRefusedWithTheReason()
    {
        var (good, header, log, after) = SnapshotOfBusybox();
        try
        {
            var planted = ReplayWithSnapshot(log, after, SnapshotPlant.OmitPage).Snapshot;
            // one page fewer (and the header of its run when it was a run of its own)
            Assert.True(planted.Length == good.Length - 4096 || planted.Length == good.Length - 4096 - 13, $"the planted snapshot has {planted.Length} bytes, the good one {good.Length}");
            using var reader = LogReader.Open(log);
            var opts = Recording.OptionsFrom(reader.Header, null);
            var e = Assert.Throws<SnapshotRefusedException>(() => MachineSnapshot.Restore(planted, header, opts, new ReplayBoundary(reader, false)));
            Assert.Contains("state digest", e.Message);
            // the good one restores (the same check passes)
            using var reader2 = LogReader.Open(log);
            var (m, _) = MachineSnapshot.Restore(good, header, opts, new ReplayBoundary(reader2, false));
            m.Dispose();
        }
        finally { File.Delete(log); }
    }

    [Fact]
    public void DamagedCutOrForeignSnapshotsAreRefused()
    {
        var (good, header, log, _) = SnapshotOfBusybox();
        try
        {
            using var reader = LogReader.Open(log);
            var opts = Recording.OptionsFrom(reader.Header, null);
            SnapshotFormatException Refuse(byte[] b) => Assert.Throws<SnapshotFormatException>(() => MachineSnapshot.Restore(b, header, opts, new LiveBoundary()));
            Assert.Contains("cut off", Refuse(good[..(good.Length / 2)]).Message);
            Assert.Contains("cut off", Refuse(good[..^1]).Message);
            var flipped = (byte[])good.Clone();
            flipped[good.Length / 3] ^= 1;
            Assert.Contains("SHA-256", Refuse(flipped).Message);
            Assert.Contains("magic", Refuse(new byte[100]).Message);
            Assert.Contains("after the snapshot's end", Refuse([.. good, 0]).Message);
            // a snapshot of the format before this one (no file section) is refused as another version, not misread
            var older = (byte[])good.Clone();
            BitConverter.GetBytes(MachineSnapshot.Version - 1).CopyTo(older, 8);
            System.Security.Cryptography.SHA256.HashData(older.AsSpan(0, older.Length - 32)).CopyTo(older, older.Length - 32);
            Assert.Contains($"format version {MachineSnapshot.Version - 1}", Refuse(older).Message);
            var otherHeader = (byte[])header.Clone();
            otherHeader[^1] ^= 0x55;
            Assert.Contains("another run", Assert.Throws<SnapshotFormatException>(() => MachineSnapshot.Restore(good, otherHeader, opts, new LiveBoundary())).Message);
            // random garbage with a valid frame (magic, version, SHA-256) never gets past the bounded reader
            var rng = new Random(3);
            for (int i = 0; i < 200; i++)
            {
                var junk = new byte[rng.Next(64, 4000)];
                rng.NextBytes(junk);
                "RVSNAP01"u8.CopyTo(junk);
                BitConverter.GetBytes(MachineSnapshot.Version).CopyTo(junk, 8);
                BitConverter.GetBytes(rng.Next(0, junk.Length)).CopyTo(junk, 12);
                System.Security.Cryptography.SHA256.HashData(junk.AsSpan(0, junk.Length - 32)).CopyTo(junk, junk.Length - 32);
                var ex = Record.Exception(() => MachineSnapshot.Restore(junk, header, opts, new LiveBoundary()).Machine.Dispose());
                Assert.True(ex is SnapshotFormatException or SnapshotRefusedException, $"garbage gave {ex?.GetType().Name}: {ex?.Message}");
            }
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// A 40 MiB guest's snapshot streamed the way a join streams it: the encoder writes 1 MiB chunks into a bounded
    /// pipe (never more than 4 waiting) while another thread restores from them as they come. The restored machine's
    /// state digest, computed over the whole restored machine, equals the source machine's computed at the capture
    /// (the independent oracle: neither is the encoder's claimed digest nor the decoder's running one), the point
    /// reports the bytes the encoder wrote, and the restored machine replays the rest of the log to its end with
    /// exactly the recording's output.
    /// </summary>
    [Fact]
    public void ALargeSnapshotStreamedInChunksRestoresToTheSourcesStateAndReplaysToTheEnd()
    {
        string log = TempLog(), stop = TempLog() + ".stop";
        try
        {
            var rec = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["record", "--log", log, "--checkpoint-interval", "1000000", "--", GuestEnv.Guest("memtouch", "musl"), stop, "40", "1", "60"]);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            ulong records;
            using (var r = LogReader.Open(log)) records = r.Verify();
            using var reader = LogReader.Open(log);
            var header = reader.Header.Encode();
            var opts = Recording.OptionsFrom(reader.Header, null);
            ReplayBoundary? boundary = null;
            SnapshotAt? tail = null;
            (Machine Machine, SnapshotPoint Point)? restored = null;
            Exception? failed = null;
            long written = 0, chunks = 0, mostWaiting = 0, readBytes = 0;
            var b = new SnapshotAt(new ReplayBoundary(reader, showOutput: false), records / 2) { _header = header };
            b.EncodeWith = cap =>
            {
                // the restored machine replays the log after the snapshot's record
                var rest = new LogReader(LogAfter(log, b.Point!.Sequence), leaveOpen: false, startsAfter: b.Point.Sequence);
                boundary = new ReplayBoundary(rest, showOutput: false);
                tail = new SnapshotAt(boundary, ulong.MaxValue);
                using var pipe = new SnapshotPipe(4);
                var counting = new CountingReader(pipe.Reader());
                var restore = new Thread(() =>
                {
                    try { restored = MachineSnapshot.Restore(counting, header, opts, tail!); }
                    catch (Exception e) { failed = e; }
                });
                restore.Start();
                using (var w = new ChunkCounter(pipe.Writer(1 << 20, CancellationToken.None), pipe))
                {
                    written = cap.EncodeTo(w).Bytes;
                    (chunks, mostWaiting) = (w.Chunks, w.MostWaiting);
                }
                pipe.Complete();
                Assert.True(restore.Join(TimeSpan.FromMinutes(2)), "the restore ends");
                readBytes = counting.BytesRead;
            };
            using (var m = new Machine(opts, b))
            {
                m.Load(Recording.RecordedProgram(reader.Header, opts, out var why) ?? throw new Exception(why));
                Assert.Equal(0, m.Run());
            }
            Assert.Null(failed);
            Assert.NotNull(restored);
            var (machine, point) = restored!.Value;
            using (machine)
            {
                output.WriteLine($"{written} bytes in {chunks} chunks, at most {mostWaiting} waiting");
                Assert.True(written > 40L << 20 && chunks > 40, $"a multi-chunk snapshot of the 40 MiB guest ({written} bytes, {chunks} chunks)");
                Assert.True(mostWaiting <= 4, "the pipe holds at most 4 chunks");
                Assert.Equal(written, point.Bytes);
                Assert.Equal(written, readBytes);
                Assert.Equal(Convert.ToHexString(b.DigestAtCapture!), Convert.ToHexString(StateDigest.Compute(machine.Kernel)));
                Assert.Equal(Convert.ToHexString(b.DigestAtCapture!), point.Digest);
                boundary!.ResumeAt(point);
                ulong offset = point.Outputs.Total(1);
                Assert.Equal(0, machine.Run());
                Assert.True(boundary.RecordingComplete, "the restored replay did not reach the End record");
                Assert.Equal(rec.Stdout.AsSpan((int)offset).ToArray(), tail!.Stdout.ToArray());
            }
        }
        finally { File.Delete(log); }
    }

    /// <summary>
    /// A snapshot fed chunk by chunk to a restore that reads as they come: a byte flipped in a middle chunk is refused
    /// by the SHA-256 at the end, a transfer that stops after half the chunks as cut off, one the link ended as ended
    /// with the link's reason; each gives the reason and no machine. The same chunks unchanged restore.
    /// </summary>
    [Fact]
    public void AStreamedSnapshotWithACorruptedOrMissingChunkIsRefusedWithTheReason()
    {
        var (good, header, log, _) = SnapshotOfBusybox();
        try
        {
            using var reader = LogReader.Open(log);
            var opts = Recording.OptionsFrom(reader.Header, null);
            const int ChunkBytes = 16 << 10;
            int n = (good.Length + ChunkBytes - 1) / ChunkBytes;
            Assert.True(n >= 8, $"{good.Length} bytes make {n} chunks");
            Exception? Stream(Func<int, byte[], byte[]?> chunk, string? failWith = null)
            {
                using var pipe = new SnapshotPipe(2);
                Exception? error = null;
                var restore = new Thread(() =>
                {
                    try { MachineSnapshot.Restore(pipe.Reader(), header, opts, new LiveBoundary()).Machine.Dispose(); }
                    catch (Exception e) { error = e; pipe.Fail(e.Message); }
                });
                restore.Start();
                try
                {
                    for (int i = 0; i < n; i++)
                    {
                        var data = good.AsSpan(i * ChunkBytes, Math.Min(ChunkBytes, good.Length - i * ChunkBytes)).ToArray();
                        if (chunk(i, data) is not { } sent) break;
                        while (!pipe.TryAdd(sent, 100)) { }
                    }
                }
                catch (IOException) { } // the restore refused before the last chunk
                if (failWith != null) pipe.Fail(failWith);
                else pipe.Complete();
                Assert.True(restore.Join(TimeSpan.FromMinutes(1)), "the restore ends");
                return error;
            }
            Assert.Null(Stream((_, d) => d));
            var flipped = Stream((i, d) => { if (i == n / 2) d[d.Length / 2] ^= 0x5A; return d; });
            Assert.Contains("SHA-256", Assert.IsType<SnapshotFormatException>(flipped).Message);
            var cut = Stream((i, d) => i < n / 2 ? d : null);
            Assert.Contains("cut off", Assert.IsType<SnapshotFormatException>(cut).Message);
            var broke = Stream((i, d) => i < n / 2 ? d : null, "the data link broke");
            Assert.Contains("the data link broke", Assert.IsType<SnapshotFormatException>(broke).Message);
        }
        finally { File.Delete(log); }
    }

    /// <summary>Counts the bytes read through it.</summary>
    sealed class CountingReader(Stream inner) : ReVirt.Replication.ReadOnlyStream
    {
        public long BytesRead;
        public override int Read(Span<byte> buffer) { int k = inner.Read(buffer); BytesRead += k; return k; }
    }

    /// <summary>Passes writes on and counts the chunks the pipe took, and the most that waited in it at once.</summary>
    sealed class ChunkCounter(Stream inner, SnapshotPipe pipe) : ReVirt.Replication.WriteOnlyStream
    {
        public long Chunks => pipe.Added;
        public long MostWaiting => pipe.MostWaiting;
        public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);
        public override void Flush() => inner.Flush();
        protected override void Dispose(bool disposing) { if (disposing) inner.Dispose(); base.Dispose(disposing); }
    }
}
