using System.Diagnostics;
using Google.Protobuf;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using ReVirt.Protocol;
using ReVirt.Replay;
using ReVirt.Replication;

namespace ReVirt.Backup;

/// <summary>
/// `backup fuzz`: mutates recorded logs (and ELF files, through the loader) for a while and reports every case in
/// which the host process was harmed or fooled: an exception other than the ones that name bad input (a crash
/// in waiting), a replay that does not finish (a hang), or a mutated log accepted as a faithful recording when the
/// mutation is of a kind the replay promises to catch (an accepted forgery). A mutation that only gives the guest
/// another input it could have received (a syscall's result or bytes, an RDTSC value) may replay as faithful: a
/// log decides its guest's inputs; those are counted, not reported.
/// </summary>
public sealed class LogFuzzer(Random rng, TextWriter output)
{
    public static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(60);

    public long Cases, Findings, AlternativeInputs;
    public readonly Dictionary<string, long> ByVerdict = new();
    public readonly Dictionary<string, long> ByMutation = new();

    void Count(Dictionary<string, long> d, string k) => d[k] = d.GetValueOrDefault(k) + 1;

    void Finding(string what)
    {
        Findings++;
        output.WriteLine($"FINDING: {what}");
        output.Flush();
    }

    /// <summary>One mutated log: what was done and whether a faithful verdict is acceptable for it.</summary>
    sealed record Mutant(string Kind, byte[] Log, bool FaithfulAllowed);

    Mutant Mutate(byte[] seed)
    {
        var img = LogImage.Parse(seed);
        int body = img.Frames.Count - 1; // the End record is last
        int i = rng.Next(body);
        var frame = img.Frames[i];
        var kind = LogImage.KindOf(frame);
        switch (rng.Next(11))
        {
            case 9: // a well-formed header with a field changed, the End record recomputed
                {
                    var h = LogHeader.Decode(img.Header, out _);
                    ulong before = h.CheckpointInterval;
                    string what = ForgeHeader(h);
                    var f = new LogImage { Header = h.Encode() };
                    f.Frames.AddRange(img.Frames.Take(body));
                    // the start time, the cwd and the checkpoint interval need not be observable by the run (then the
                    // log is the faithful recording of a run with that header); the program, its arguments and
                    // environment (on the guest's stack, in every checkpoint digest) are
                    // (an interval is unobservable only when neither it nor the recorded one falls inside the run)
                    ulong last = img.Frames.Where(x => LogImage.KindOf(x) == RecordKind.Checkpoint).Select(x => Checkpoint.Decode(LogImage.Payload(x)).InstrCount).DefaultIfEmpty(0UL).Max();
                    bool unobservable = what is "time" or "cwd" || f.Header.AsSpan().SequenceEqual(img.Header)
                        || (what == "interval" && Recording.FirstCheckpoint(before) > last && Recording.FirstCheckpoint(h.CheckpointInterval) > last);
                    return new("header-" + what, f.Build(), unobservable);
                }
            case 0: // a cut anywhere (record boundary or not)
                {
                    int at = rng.Next(img.Header.Length, seed.Length);
                    return new("truncate", seed[..at], false);
                }
            case 1: // bytes appended after the End record
                {
                    var extra = rng.Next(2) == 0 ? img.Frames[rng.Next(body)] : RandomBytes(rng.Next(1, 64));
                    return new("append", [.. seed, .. extra], false);
                }
            case 2: // a record removed, duplicated or moved, the End record recomputed
                {
                    var f = new LogImage { Header = img.Header };
                    f.Frames.AddRange(img.Frames.Take(body));
                    int op = rng.Next(3);
                    if (op == 0) f.Frames.RemoveAt(i);
                    else if (op == 1) f.Frames.Insert(i, frame);
                    else { int j = rng.Next(body); (f.Frames[i], f.Frames[j]) = (f.Frames[j], f.Frames[i]); if (i == j) f.Frames.RemoveAt(i); }
                    // a repeated asynchronous signal at the same point coalesces with the pending one, as on Linux:
                    // the log then describes an equivalent run
                    bool same = op == 1 && kind == RecordKind.Signal;
                    // a preemption removed: the timer did not fire there, another possible run (asynchronous input)
                    same |= op == 0 && kind == RecordKind.Preempt;
                    return new(op switch { 0 => "delete", 1 => "duplicate", _ => "swap" }, f.Build(), same);
                }
            case 3: // raw bit flips, checksums left as they are
                {
                    var b = (byte[])seed.Clone();
                    for (int k = rng.Next(1, 4); k > 0; k--) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                    return new("flip-raw", b, false);
                }
            case 4: // a record of a random kind with a random payload, checksums and End record correct
                {
                    var f = new LogImage { Header = img.Header };
                    f.Frames.AddRange(img.Frames.Take(body));
                    var rk = (RecordKind)(rng.Next(2) == 0 ? rng.Next(1, 10) : rng.Next(256));
                    f.Frames[i] = LogImage.Frame(rk, RandomBytes(rng.Next(0, 80)));
                    return new("random-record", f.Build(), false);
                }
            case 5: // a guest-memory write moved or resized
                {
                    if (kind != RecordKind.SyscallResult) goto default;
                    var s = SyscallResult.Decode(LogImage.Payload(frame));
                    if (s.MemWrites is not { Count: > 0 } w) goto default;
                    int wi = rng.Next(w.Count);
                    var (addr, bytes) = w[wi];
                    ulong[] addrs = [0, 1, 0x1000, ulong.MaxValue - 3, 0x7fff_ffff_f000, 0xffff_8000_0000_0000, addr - 1, addr + 1, addr + (ulong)bytes.Length, (ulong)rng.NextInt64()];
                    int[] lens = [bytes.Length, bytes.Length + 1, bytes.Length * 2 + 1, 1 << 20];
                    var na = addrs[rng.Next(addrs.Length)];
                    var nl = lens[rng.Next(lens.Length)];
                    w[wi] = new GuestWrite(na, new byte[nl]);
                    var f = new LogImage { Header = img.Header };
                    f.Frames.AddRange(img.Frames.Take(body));
                    f.Frames[i] = LogImage.Frame(s);
                    return new("memwrite", f.Build(), na == addr && nl == bytes.Length);
                }
            default: // payload bit flips, checksums and End record recomputed
                {
                    var p = LogImage.Payload(frame);
                    if (p.Length == 0) return new("flip-empty", seed, true);
                    for (int k = rng.Next(1, 3); k > 0; k--) p[rng.Next(p.Length)] ^= (byte)(1 << rng.Next(8));
                    var f = new LogImage { Header = img.Header };
                    f.Frames.AddRange(img.Frames.Take(body));
                    f.Frames[i] = LogImage.Frame(kind, p);
                    // an input's value may change to another the program could have received
                    bool input = kind is RecordKind.SyscallResult or RecordKind.Rdtsc or RecordKind.Rdrand;
                    return new($"flip-{kind}", f.Build(), input);
                }
        }
    }

    static readonly string[] Roots = ["/dev", "/proc", "/sys/kernel", "", "relative", "/nonexistent", "/", "a\0b", "/etc/passwd", "/tmp/../dev"];

    static readonly string[] Paths = ["/dev/zero", "/dev/null", "/proc/self/mem", "/proc/self/exe", "/usr", "/", "", "relative", "/nonexistent", "../../etc/passwd", "a\0b", "/bin/sh"];

    /// <summary>Changes one field of a header to a hostile or merely different value; returns which.</summary>
    string ForgeHeader(LogHeader h)
    {
        string P() => Paths[rng.Next(Paths.Length)];
        switch (rng.Next(8))
        {
            case 0: h.Argv = [P(), .. h.Argv.Skip(1)]; return "program";
            case 1: h.RootDirectory = P(); return "root";
            case 2: h.Argv = rng.Next(2) == 0 ? [] : [.. h.Argv, "extra"]; return "argv";
            case 3: h.Envp = rng.Next(2) == 0 ? [] : [.. h.Envp, "X=" + new string('x', rng.Next(1, 100_000))]; return "envp";
            case 4:
                ulong[] iv = [0, 1, 2, 997, ulong.MaxValue, ulong.MaxValue - 1, h.CheckpointInterval / 2 + 1, h.CheckpointInterval * 2];
                ulong v = iv[rng.Next(iv.Length)];
                if (v == h.CheckpointInterval) v++;
                h.CheckpointInterval = v;
                return "interval";
            case 5: h.StartState = System.Text.Encoding.UTF8.GetBytes("cwd=" + P()); return "cwd";
            case 6: h.ProgramHash = RandomBytes(32); return "hash";
            default: h.StartTime = h.StartTime.AddSeconds(rng.Next(1, 1_000_000)); return "time";
        }
    }

    byte[] RandomBytes(int n) { var b = new byte[n]; rng.NextBytes(b); return b; }

    public long LongRunning;

    /// <summary>
    /// Runs one case on the worker thread; false when it hung (the caller must stop the process). A forged log can
    /// make its guest compute for as long as the program could (a signal placed far ahead of a spinning guest): a
    /// replay whose guest keeps executing instructions is not hung; after <see cref="LongRun"/> it is stopped and
    /// counted. A case that makes no progress for <see cref="CaseTimeout"/> is a hang.
    /// </summary>
    bool RunCase(string what, Action<Action<Machine>> body)
    {
        Machine? machine = null;
        var sw = Stopwatch.StartNew();
        _worker.Start(() => body(m => Volatile.Write(ref machine, m)));
        ulong last = ulong.MaxValue;
        var lastProgress = Stopwatch.StartNew();
        bool stopped = false;
        Exception? thrown;
        while (!_worker.Wait(TimeSpan.FromSeconds(2), out thrown))
        {
            var m = Volatile.Read(ref machine);
            ulong now = m?.Kernel.Current?.Cpu.InstructionCount ?? 0;
            if (now != last) { last = now; lastProgress.Restart(); }
            if (!stopped && m != null && sw.Elapsed > LongRun && lastProgress.Elapsed < TimeSpan.FromSeconds(5))
            {
                stopped = true;
                Interlocked.Increment(ref LongRunning);
                m.Kernel.Exited = true;
                if (m.Kernel.Current is { } cur) cur.Cpu.StopAt = 0;
            }
            if (lastProgress.Elapsed > CaseTimeout) { Finding($"hang: {what} made no progress for {CaseTimeout.TotalSeconds:F0} s"); return false; }
        }
        if (thrown != null) Finding($"host exception: {what}: {thrown.GetType().Name}: {thrown.Message}\n{thrown.StackTrace}");
        return true;
    }

    readonly CaseWorker _worker = new();

    /// <summary>
    /// One long-lived thread that runs the cases one after another: a guest may recurse deeply, so the thread has a
    /// large stack, and it is made once (a thread per case made the process run out of memory within minutes).
    /// </summary>
    sealed class CaseWorker
    {
        const int StackBytes = 256 << 20;
        readonly SemaphoreSlim _go = new(0), _done = new(0);
        Action? _case;
        Exception? _thrown;

        public CaseWorker() => new Thread(Loop, StackBytes) { IsBackground = true, Name = "fuzz case" }.Start();

        void Loop()
        {
            while (true)
            {
                _go.Wait();
                _thrown = null;
                try { _case!(); }
                catch (Exception e) { _thrown = e; }
                _case = null;
                _done.Release();
            }
        }

        public void Start(Action c) { _case = c; _go.Release(); }

        /// <summary>True when the case finished within `timeout` (then `thrown` is what it threw, if anything).</summary>
        public bool Wait(TimeSpan timeout, out Exception? thrown)
        {
            thrown = null;
            if (!_done.Wait(timeout)) return false;
            thrown = _thrown;
            return true;
        }
    }

    static readonly TimeSpan LongRun = TimeSpan.FromSeconds(30);

    public bool LogCase(byte[] seed, string seedName)
    {
        var m = Mutate(seed);
        Cases++;
        Count(ByMutation, m.Kind);
        return RunCase($"log {seedName} mutation {m.Kind}", started =>
        {
            ReplayVerdict v;
            try
            {
                using var reader = new LogReader(new MemoryStream(m.Log, writable: false));
                v = ReplayCheck.Run(reader, started: (machine, _) => started(machine));
            }
            catch (LogFormatException) { v = new(ReplayVerdictKind.Refused, "header"); }
            lock (ByVerdict) Count(ByVerdict, v.Kind.ToString());
            if (v.Kind != ReplayVerdictKind.Faithful || m.Log.AsSpan().SequenceEqual(seed)) return;
            if (m.FaithfulAllowed) { Interlocked.Increment(ref AlternativeInputs); return; }
            Finding($"accepted forgery: log {seedName} mutation {m.Kind} replayed as faithful: {v.Message}");
        });
    }

    public bool ElfCase(byte[] seed, string seedName)
    {
        var b = (byte[])seed.Clone();
        string kind;
        switch (rng.Next(4))
        {
            case 0: kind = "truncate"; b = b[..rng.Next(b.Length)]; break;
            case 1: // the ELF header and program headers: every field a candidate
                kind = "header";
                int span = Math.Min(b.Length, 64 + 56 * 16);
                for (int k = rng.Next(1, 6); k > 0; k--) b[rng.Next(span)] = (byte)rng.Next(256);
                break;
            case 2: // a 64-bit field of a program header set to an extreme
                {
                    kind = "phdr-extreme";
                    int phoff = b.Length >= 40 ? (int)Math.Min(BitConverter.ToUInt64(b, 32), int.MaxValue) : 0;
                    int at = phoff + 56 * rng.Next(8) + 8 * rng.Next(1, 7);
                    ulong[] v = [0, 1, ulong.MaxValue, ulong.MaxValue - 0xfff, 0x8000_0000_0000, 1UL << 63, (ulong)b.Length];
                    if (at + 8 <= b.Length) BitConverter.GetBytes(v[rng.Next(v.Length)]).CopyTo(b, at);
                    break;
                }
            default: kind = "anywhere"; for (int k = rng.Next(1, 16); k > 0; k--) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8)); break;
        }
        Cases++;
        Count(ByMutation, "elf-" + kind);
        return RunCase($"elf {seedName} mutation {kind}", _ =>
        {
            using var mem = new GuestMemory();
            try { ElfLoader.Load(mem, b, "fuzz"); lock (ByVerdict) Count(ByVerdict, "elf loaded"); }
            catch (ElfLoadException) { lock (ByVerdict) Count(ByVerdict, "elf refused"); }
        });
    }

    /// <summary>
    /// A peer's hello, as a backup receives it: the serialised message mutated (bytes, or its log header forged with
    /// correct structure), then what the backup does with it before the proof (parse, version check, proof check)
    /// and, as if the peer held the secret, after it (header decode, program lookup and hash, root checks).
    /// Refusals are outcomes; only an exception, a hang or an accepted mismatched program is a finding.
    /// </summary>
    public bool HelloCase(byte[] seedLog, string seedName)
    {
        var header = LogImage.Parse(seedLog).Header;
        var original = LogHeader.Decode(header, out int _);
        var secret = RandomBytes(32);
        var hello = new Hello
        {
            ProtocolVersion = ReplicationProtocol.Version,
            LogHeader = ByteString.CopyFrom(header),
            ClientNonce = ByteString.CopyFrom(RandomBytes(32)),
            PrimaryId = "fuzz",
            Root = new RootIdentity { HostId = "elsewhere", Path = "/" },
        };
        byte[] wire = hello.ToByteArray();
        string kind;
        switch (rng.Next(4))
        {
            case 0: kind = "truncate"; wire = wire[..rng.Next(wire.Length)]; break;
            case 1: kind = "flip"; for (int k = rng.Next(1, 8); k > 0; k--) wire[rng.Next(wire.Length)] ^= (byte)(1 << rng.Next(8)); break;
            case 2: // the log header's bytes flipped inside a well-formed message
                {
                    kind = "header-flip";
                    var h = (byte[])header.Clone();
                    for (int k = rng.Next(1, 4); k > 0; k--) h[rng.Next(h.Length)] ^= (byte)(1 << rng.Next(8));
                    hello.LogHeader = ByteString.CopyFrom(h);
                    wire = hello.ToByteArray();
                    break;
                }
            default: // a well-formed header naming another program, argv or root
                {
                    kind = "header-forged";
                    var lh = LogHeader.Decode(header, out _);
                    string[] programs = ["/dev/zero", "/dev/null", "/proc/self/mem", "/usr", "/", "", "/nonexistent", "../../etc/passwd", new string('a', 5000), "/bin/sh"];
                    switch (rng.Next(4))
                    {
                        case 0: lh.Argv = [programs[rng.Next(programs.Length)], .. lh.Argv.Skip(1)]; break;
                        // roots an authenticated primary may name; the backup digests the tree (a large one such as /usr
                        // costs what hashing it costs, which is the check the protocol asks for: not drawn here)
                        case 1: lh.RootDirectory = Roots[rng.Next(Roots.Length)]; break;
                        case 2: lh.Argv = []; break;
                        default: lh.ProgramHash = RandomBytes(32); break;
                    }
                    hello.LogHeader = ByteString.CopyFrom(lh.Encode());
                    wire = hello.ToByteArray();
                    break;
                }
        }
        Cases++;
        Count(ByMutation, "hello-" + kind);
        return RunCase($"hello from log {seedName} mutation {kind}", _ =>
        {
            Hello got;
            try { got = Hello.Parser.ParseFrom(wire); }
            catch (InvalidProtocolBufferException) { lock (ByVerdict) Count(ByVerdict, "hello unparsable"); return; }
            if (BackupSession.CheckBeforeAuth(got) != null) { lock (ByVerdict) Count(ByVerdict, "hello refused before auth"); return; }
            var nonce = ReplicationProtocol.Nonce();
            if (!ReplicationProtocol.ProofMatches(secret, got, nonce, ReplicationProtocol.Proof(secret, got, nonce)))
            { Finding($"hello {kind}: a correct proof was not accepted"); return; }
            var session = new BackupSession(new ListenSettings { Listen = new Uri("http://127.0.0.1:1"), SharedStorage = false }, TextWriter.Null);
            string? reason = session.Check(got, out var lh);
            lock (ByVerdict) Count(ByVerdict, reason == null ? "hello accepted" : "hello refused after auth");
            if (reason == null && lh != null && !lh.ProgramHash.AsSpan().SequenceEqual(original.ProgramHash) && lh.Argv[0] == original.Argv[0] && lh.RootDirectory == original.RootDirectory)
                Finding($"accepted forgery: hello {kind} with another program hash was accepted");
        });
    }

    static long Megabytes(long bytes) => bytes >> 20;

    /// <summary>Fuzzes until the deadline; returns the process exit status (0: no finding).</summary>
    public static int Run(TimeSpan duration, IReadOnlyList<string> logs, IReadOnlyList<string> elfs, int seed, TextWriter output)
    {
        var seeds = logs.Select(p => (Name: Path.GetFileName(p), Bytes: File.ReadAllBytes(p))).ToList();
        foreach (var (name, bytes) in seeds)
        {
            using var r = new LogReader(new MemoryStream(bytes));
            var v = ReplayCheck.Run(r);
            if (v.Kind != ReplayVerdictKind.Faithful) { output.WriteLine($"backup: fuzz: seed log {name} does not replay faithfully: {v.Message}"); return 2; }
        }
        var elfSeeds = elfs.Select(p => (Name: Path.GetFileName(p), Bytes: File.ReadAllBytes(p))).ToList();
        if (seeds.Count + elfSeeds.Count == 0) { output.WriteLine("backup: fuzz: give at least one --log or --elf seed"); return 2; }
        var fz = new LogFuzzer(new Random(seed), output);
        var sw = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        // the guests' diagnostics (warnings, fatal signals of mutated runs) are not the fuzzer's output
        var quiet = Console.Error;
        Console.SetError(TextWriter.Null);
        try
        {
            for (long n = 0; sw.Elapsed < duration; n++)
            {
                // three log cases, one ELF case, one hello case in every five (the hellos come from the log seeds)
                var (name, bytes) = seeds.Count > 0 ? seeds[(int)(n % seeds.Count)] : default;
                bool ok = (n % 5) switch
                {
                    3 when elfSeeds.Count > 0 => fz.ElfCase(elfSeeds[(int)(n % elfSeeds.Count)].Bytes, elfSeeds[(int)(n % elfSeeds.Count)].Name),
                    4 when seeds.Count > 0 => fz.HelloCase(bytes, name),
                    _ when seeds.Count > 0 => fz.LogCase(bytes, name),
                    _ => fz.ElfCase(elfSeeds[(int)(n % elfSeeds.Count)].Bytes, elfSeeds[(int)(n % elfSeeds.Count)].Name),
                };
                if (!ok) break;
                if (sw.Elapsed - lastReport > TimeSpan.FromMinutes(1))
                {
                    lastReport = sw.Elapsed;
                    output.WriteLine($"backup: fuzz: {sw.Elapsed.TotalMinutes:F1} min, {fz.Cases} cases, {fz.Findings} findings, {Megabytes(Environment.WorkingSet)} MiB resident");
                    output.Flush();
                }
            }
        }
        finally { Console.SetError(quiet); }
        output.WriteLine($"backup: fuzz: {fz.Cases} cases in {sw.Elapsed.TotalMinutes:F1} min (seed {seed}), {fz.Findings} findings; {fz.AlternativeInputs} mutated inputs replayed as another faithful run; {fz.LongRunning} replays whose guest was still computing after {LongRun.TotalSeconds:F0} s stopped");
        using (var self = System.Diagnostics.Process.GetCurrentProcess())
            output.WriteLine($"  memory:    {Megabytes(Environment.WorkingSet)} MiB resident at the end, peak {Megabytes(self.PeakWorkingSet64)} MiB");
        output.WriteLine("  mutations: " + string.Join(", ", fz.ByMutation.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}")));
        output.WriteLine("  outcomes:  " + string.Join(", ", fz.ByVerdict.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}")));
        return fz.Findings == 0 ? 0 : 1;
    }
}
