// replaycost LOG [ROOT] [--records-per-chunk N] [--alloc-types]
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

        public ReadOnlyMemory<byte> NextChunk()
        {
            if (_next == _half)
            {
                CpuAtHalf = ThreadCpuNs();
                AllocAtHalf = GC.GetAllocatedBytesForCurrentThread();
                Gc0AtHalf = GC.CollectionCount(0);
            }
            return _next < _chunks.Count ? _chunks[_next++] : ReadOnlyMemory<byte>.Empty;
        }
    }

    static int Main(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: replaycost LOG [ROOT] [--records-per-chunk N]"); return 2; }
        string log = args[0];
        string? root = args.Length > 1 && !args[1].StartsWith("--") ? args[1] : null;
        int per = 8;
        int at = Array.IndexOf(args, "--records-per-chunk");
        if (at >= 0) per = int.Parse(args[at + 1]);
        var bytes = File.ReadAllBytes(log);
        int headerLength;
        using (var r = LogReader.Open(log)) headerLength = (int)r.HeaderLength;
        var chunks = new Chunks(bytes, headerLength, per);
        using var types = args.Contains("--alloc-types") ? new AllocationTypes() : null;
        string result = "";
        int code = 0;
        var t = new Thread(() =>
        {
            try
            {
                var reader = LogReader.OverVerifiedChunks(chunks);
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
