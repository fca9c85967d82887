using System.Diagnostics;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using ReVirt.Replay;

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
        switch (rng.Next(10))
        {
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
                    w[wi] = (na, new byte[nl]);
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

    byte[] RandomBytes(int n) { var b = new byte[n]; rng.NextBytes(b); return b; }

    public long LongRunning;

    /// <summary>
    /// Runs one case on its own thread; false when it hung (the caller must stop the process). A forged log can
    /// make its guest compute for as long as the program could (a signal placed far ahead of a spinning guest): a
    /// replay whose guest keeps executing instructions is not hung; after <see cref="LongRun"/> it is stopped and
    /// counted. A case that makes no progress for <see cref="CaseTimeout"/> is a hang.
    /// </summary>
    bool RunCase(string what, Action<Action<Machine>> body)
    {
        Exception? thrown = null;
        Machine? machine = null;
        var t = new Thread(() => { try { body(m => machine = m); } catch (Exception e) { thrown = e; } }, 256 << 20) { IsBackground = true };
        var sw = Stopwatch.StartNew();
        t.Start();
        ulong last = ulong.MaxValue;
        var lastProgress = Stopwatch.StartNew();
        bool stopped = false;
        while (!t.Join(TimeSpan.FromSeconds(2)))
        {
            ulong now = machine?.Kernel.Current?.Cpu.InstructionCount ?? 0;
            if (now != last) { last = now; lastProgress.Restart(); }
            if (!stopped && machine != null && sw.Elapsed > LongRun && lastProgress.Elapsed < TimeSpan.FromSeconds(5))
            {
                stopped = true;
                Interlocked.Increment(ref LongRunning);
                machine.Kernel.Exited = true;
                if (machine.Kernel.Current is { } cur) cur.Cpu.StopAt = 0;
            }
            if (lastProgress.Elapsed > CaseTimeout) { Finding($"hang: {what} made no progress for {CaseTimeout.TotalSeconds:F0} s"); return false; }
        }
        if (thrown != null) Finding($"host exception: {what}: {thrown.GetType().Name}: {thrown.Message}\n{thrown.StackTrace}");
        return true;
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
                bool ok = (n % 4 == 3 || seeds.Count == 0) && elfSeeds.Count > 0
                    ? fz.ElfCase(elfSeeds[(int)(n % elfSeeds.Count)].Bytes, elfSeeds[(int)(n % elfSeeds.Count)].Name)
                    : fz.LogCase(seeds[(int)(n % seeds.Count)].Bytes, seeds[(int)(n % seeds.Count)].Name);
                if (!ok) break;
                if (sw.Elapsed - lastReport > TimeSpan.FromMinutes(1)) { lastReport = sw.Elapsed; output.WriteLine($"backup: fuzz: {sw.Elapsed.TotalMinutes:F1} min, {fz.Cases} cases, {fz.Findings} findings"); output.Flush(); }
            }
        }
        finally { Console.SetError(quiet); }
        output.WriteLine($"backup: fuzz: {fz.Cases} cases in {sw.Elapsed.TotalMinutes:F1} min (seed {seed}), {fz.Findings} findings; {fz.AlternativeInputs} mutated inputs replayed as another faithful run; {fz.LongRunning} replays whose guest was still computing after {LongRun.TotalSeconds:F0} s stopped");
        output.WriteLine("  mutations: " + string.Join(", ", fz.ByMutation.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}")));
        output.WriteLine("  outcomes:  " + string.Join(", ", fz.ByVerdict.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}")));
        return fz.Findings == 0 ? 0 : 1;
    }
}
