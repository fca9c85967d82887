// replaycost LOG [ROOT] [--records-per-chunk N] [--alloc-types] [--paced-us US [--gather-us G]]
//
// Build it against a ReVirt build (the same source for both sides of an A/B), then run each on one log:
//   dotnet build bench/replaycost/replaycost.csproj -c Release -p:ReVirtBin=BUILD/tests/bin/Release/net10.0 -o OUT
//   dotnet OUT/replaycost.dll LOG
// A kvserver log: `primary record --log LOG -- guests/out/kvserver.musl PORT` under `kvload PORT 16 40 1`
// (bench/kvload.c), then SHUTDOWN.
//
// Replays a recorded log the way a following backup's replay thread does (records read in place from chunks of
// verified frames, follow mode on shared storage, a thread of its own with the replay's stack) and reports that
// thread's CPU time and allocation over the second half of the log (the first half warms the compiled tier and the
// runtime's tiering up), per guest request (a `read` syscall record: kvserver reads each request with one read) and per record. Nothing waits: the chunks are all
// in memory, so the figure is the replay's own work per request, without the pipe's waits and wake-ups (those are
// the data link's and the pipe's; bench/replication.py --kv-profile measures them live).
//
// Output (one line, `key value` pairs): records, requests (read records in the measured half), cpu_ms, alloc_kb,
// us_per_request, bytes_per_request, gc0 (gen-0 collections in the measured half), status (the guest's exit status).
//
// --paced-us US: the chunks reach the replay the way a live backup's do instead: a feeder thread appends one chunk
// every US microseconds (on an absolute schedule) to the backup's pipe (BlockingPipeStream, gathering for G
// microseconds, default the backup's --replay-gather-us default), and the replay reads them from it, sleeping and
// being woken as the live replay does. Then the output adds wall_ms (the measured half), cpu_ms_per_s (the replay
// thread's CPU per second of it), sleeps and wakes (the pipe's, in the measured half) and feeder_cpu_ms (the
// appending thread's CPU in that half: the futex wakes are its). Against the same log without pacing the difference
// is what the replay pays for waiting at that arrival rate.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using ReVirt.Log;
using ReVirt.Replay;

static class ReplayCost
{
    const int ClockThreadCputime = 3; // CLOCK_THREAD_CPUTIME_ID
    const int ReadNr = 0;             // x86-64 read(2): kvserver reads each request with one read

    [DllImport("libc", SetLastError = true)]
    static extern int clock_gettime(int clock, out Timespec ts);

    [StructLayout(LayoutKind.Sequential)]
    struct Timespec { public long Sec, Nsec; }

    static long ThreadCpuNs() => clock_gettime(ClockThreadCputime, out var t) == 0 ? t.Sec * 1_000_000_000 + t.Nsec : 0;

    /// <summary>The log's header and frames as chunks of <c>perChunk</c> frames (a burst of batches), noting, as the
    /// replay thread takes the chunk that starts the second half, that thread's CPU time and allocation.</summary>
    sealed class Chunks : IFrameChunks
    {
        readonly List<ReadOnlyMemory<byte>> _chunks = new();
        readonly int _half;
        int _next;
        public long CpuAtHalf, AllocAtHalf, Gc0AtHalf;
        public long Requests; // read records from the half on

        public Chunks(byte[] log, int headerLength, int perChunk)
        {
            _chunks.Add(log.AsMemory(0, headerLength));
            int pos = headerLength, start = pos, inChunk = 0;
            var starts = new List<int>();
            while (pos < log.Length)
            {
                int len = BinaryPrimitives.ReadInt32LittleEndian(log.AsSpan(pos + RecordFrame.LengthOffset));
                starts.Add(pos);
                pos += len;
                if (++inChunk == perChunk || pos >= log.Length)
                {
                    _chunks.Add(log.AsMemory(start, pos - start));
                    start = pos;
                    inChunk = 0;
                }
            }
            _half = _chunks.Count / 2;
            // the requests of the measured half: the guest's read records
            for (int i = starts.Count / 2; i < starts.Count; i++)
            {
                int p = starts[i];
                if ((RecordKind)log[p + RecordFrame.KindOffset] != RecordKind.SyscallResult) continue;
                int nr = BinaryPrimitives.ReadInt32LittleEndian(log.AsSpan(p + RecordFrame.PayloadOffset + 12));
                if (nr == ReadNr) Requests++;
            }
            // (approximation: the half by frames, the requests counted from the frame half; chunks are equal in frames)
        }

        public IReadOnlyList<ReadOnlyMemory<byte>> All => _chunks;
        public int Half => _half;

        public ReadOnlyMemory<byte> NextChunk()
        {
            if (_next == _half) NoteHalf();
            return _next < _chunks.Count ? _chunks[_next++] : ReadOnlyMemory<byte>.Empty;
        }

        /// <summary>On the replay thread, as it takes the first chunk of the measured half.</summary>
        public void NoteHalf()
        {
            CpuAtHalf = ThreadCpuNs();
            AllocAtHalf = GC.GetAllocatedBytesForCurrentThread();
            Gc0AtHalf = GC.CollectionCount(0);
        }
    }

    /// <summary>--paced-us: the log's chunks through the backup's pipe, appended by a feeder thread one every
    /// <c>periodNs</c>; the replay reads them from the pipe (chunks as appended: one append, one chunk).</summary>
    sealed class Paced : IFrameChunks
    {
        readonly Chunks _log;
        readonly long _periodNs;
        public readonly ReVirt.Replication.BlockingPipeStream Pipe;
        int _taken;
        public long WallAtHalf, SleepsAtHalf, WakesAtHalf, FeederCpuAtHalf, FeederCpuAtEnd;

        public Paced(Chunks log, long periodNs, int gatherUs)
        {
            _log = log;
            _periodNs = periodNs;
            Pipe = new ReVirt.Replication.BlockingPipeStream { Gather = TimeSpan.FromMicroseconds(gatherUs) };
        }

        public void StartFeeder() => new Thread(Feed) { Name = "feeder", IsBackground = true }.Start();

        void Feed()
        {
            var all = _log.All;
            Pipe.Append(all[0].Span); // the header at once, as the backup's session starts with it
            long next = MonotonicNs();
            for (int i = 1; i < all.Count; i++)
            {
                next += _periodNs;
                SleepUntil(next);
                if (i == _log.Half) { FeederCpuAtHalf = ThreadCpuNs(); }
                Pipe.Append(all[i].Span);
            }
            FeederCpuAtEnd = ThreadCpuNs();
            Pipe.Complete();
        }

        public ReadOnlyMemory<byte> NextChunk()
        {
            var c = Pipe.NextChunk();
            if (_taken++ == _log.Half)
            {
                _log.NoteHalf();
                WallAtHalf = System.Diagnostics.Stopwatch.GetTimestamp();
                SleepsAtHalf = Pipe.Sleeps;
                WakesAtHalf = Pipe.Wakes;
            }
            return c;
        }
    }

    const int ClockMonotonic = 1, TimerAbstime = 1;
    /// <summary>The backup's default --replay-gather-us (BackupSession.DefaultReplayGatherUs; this tool does not
    /// reference the backup's assembly).</summary>
    const int BackupGatherUs = 1000;

    [DllImport("libc", SetLastError = true)]
    static extern int clock_nanosleep(int clock, int flags, in Timespec request, IntPtr remain);

    static long MonotonicNs() => clock_gettime(ClockMonotonic, out var t) == 0 ? t.Sec * 1_000_000_000 + t.Nsec : 0;

    static void SleepUntil(long ns)
    {
        var t = new Timespec { Sec = ns / 1_000_000_000, Nsec = ns % 1_000_000_000 };
        while (clock_nanosleep(ClockMonotonic, TimerAbstime, t, IntPtr.Zero) != 0) { } // EINTR: again
    }

    static int Main(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: replaycost LOG [ROOT] [--records-per-chunk N]"); return 2; }
        string log = args[0];
        string? root = args.Length > 1 && !args[1].StartsWith("--") ? args[1] : null;
        int per = 8;
        int at = Array.IndexOf(args, "--records-per-chunk");
        if (at >= 0) per = int.Parse(args[at + 1]);
        at = Array.IndexOf(args, "--paced-us");
        long pacedUs = at >= 0 ? long.Parse(args[at + 1]) : 0;
        at = Array.IndexOf(args, "--gather-us");
        int gatherUs = at >= 0 ? int.Parse(args[at + 1]) : BackupGatherUs;
        var bytes = File.ReadAllBytes(log);
        int headerLength;
        using (var r = LogReader.Open(log)) headerLength = (int)r.HeaderLength;
        var chunks = new Chunks(bytes, headerLength, per);
        var paced = pacedUs > 0 ? new Paced(chunks, pacedUs * 1000, gatherUs) : null;
        IFrameChunks source = paced != null ? paced : chunks;
        using var types = args.Contains("--alloc-types") ? new AllocationTypes() : null;
        string result = "";
        int code = 0;
        var t = new Thread(() =>
        {
            try
            {
                paced?.StartFeeder();
                var reader = LogReader.OverVerifiedChunks(source);
                var opts = Recording.OptionsFrom(reader.Header, root);
                var follow = new FollowOptions { TakeOver = _ => false, SharedStorage = true, PrepareGoLive = false };
                var boundary = new ReplayBoundary(reader, showOutput: false, follow);
                // the primary releases its output soon after the backup holds it: the replay keeps no output queued
                boundary.ReportReleased(ulong.MaxValue >> 1, ulong.MaxValue >> 1);
                var program = Recording.RecordedProgram(reader.Header, opts, out var why) ?? throw new InvalidOperationException(why);
                using var m = new ReVirt.Machine(opts, boundary);
                m.Load(program);
                int status = m.Run();
                long cpu = ThreadCpuNs() - chunks.CpuAtHalf;
                long alloc = GC.GetAllocatedBytesForCurrentThread() - chunks.AllocAtHalf;
                long gc0 = GC.CollectionCount(0) - chunks.Gc0AtHalf;
                double requests = Math.Max(1, chunks.Requests);
                result = $"records {boundary.RecordsConsumed} requests {chunks.Requests} cpu_ms {cpu / 1e6:F1} alloc_kb {alloc >> 10} "
                       + $"us_per_request {cpu / 1e3 / requests:F3} bytes_per_request {alloc / requests:F0} gc0 {gc0} status {status}";
                if (paced != null)
                {
                    double wallMs = System.Diagnostics.Stopwatch.GetElapsedTime(paced.WallAtHalf).TotalMilliseconds;
                    result += $" wall_ms {wallMs:F1} cpu_ms_per_s {cpu / 1e3 / wallMs:F1} sleeps {paced.Pipe.Sleeps - paced.SleepsAtHalf} "
                            + $"wakes {paced.Pipe.Wakes - paced.WakesAtHalf} feeder_cpu_ms {(paced.FeederCpuAtEnd - paced.FeederCpuAtHalf) / 1e6:F1}";
                }
            }
            catch (Exception e) { result = "failed: " + e; code = 1; }
        }, 64 << 20) { Name = "replay" };
        t.Start();
        t.Join();
        Console.WriteLine(result);
        types?.Print();
        return code;
    }

    /// <summary>--alloc-types: the runtime's allocation samples (one per ~100 KB allocated) by type, over the run.</summary>
    sealed class AllocationTypes : System.Diagnostics.Tracing.EventListener
    {
        readonly Dictionary<string, long> _bytes = new();
        protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
                EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
        }
        protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
        {
            if (e.EventName?.StartsWith("GCAllocationTick") != true || e.Payload == null) return;
            int i = e.PayloadNames!.IndexOf("TypeName");
            string type = i >= 0 ? e.Payload[i]?.ToString() ?? "?" : "?";
            lock (_bytes) _bytes[type] = _bytes.GetValueOrDefault(type) + 1;
        }
        public void Print()
        {
            lock (_bytes)
                foreach (var (t, n) in _bytes.OrderByDescending(kv => kv.Value).Take(25)) Console.WriteLine($"{n,6} {t}");
        }
    }
}
