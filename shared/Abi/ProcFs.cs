using System.Text;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>
/// The guest's /proc (and the few /sys and /dev files that are views of a process). The security contract: a guest
/// path under /proc, /dev/fd, /dev/std{in,out,err} or /sys/devices/system/cpu/{online,possible,present} is answered
/// here from the guest's own state — its pid, maps, auxv, descriptors, argv, the CPU model — and never from the host's
/// /proc: the VM process's /proc/&lt;pid&gt;/mem, fd/, maps, environ and every other host /proc path are ENOENT (and an
/// open that reaches the host's procfs by any other route, such as a symlink, is refused by the kernel's open with
/// <see cref="IsHostProcFs"/>). The answers are functions of the guest's state, so record and replay agree.
/// </summary>
public sealed class ProcFs
{
    public enum Kind { NotProc, Missing, File, Link, Dir }

    /// <summary>What a path names: a synthetic file's bytes, a link's target (a guest path, or "fd:N" for a guest
    /// descriptor), or a directory's entries.</summary>
    public readonly record struct Node(Kind Kind, byte[]? Content = null, string? Target = null, string[]? Entries = null)
    {
        public static readonly Node NotProc = new(Kind.NotProc);
        public static readonly Node Missing = new(Kind.Missing);
        public static Node Text(string s) => new(Kind.File, Encoding.UTF8.GetBytes(s));
        public static Node Link(string target) => new(Kind.Link, Target: target);
        public static Node Dir(params string[] entries) => new(Kind.Dir, Entries: entries);
    }

    /// <summary>procfs' magic number (statfs f_type).</summary>
    public const long ProcSuperMagic = 0x9fa0;

    /// <summary>The guest's view of memory size (the VM sets no limit below the host's; this is what it reports).</summary>
    const ulong MemTotalKb = 4UL << 20;

    static readonly string[] ProcessEntries = { "auxv", "cmdline", "comm", "cwd", "environ", "exe", "fd", "maps", "stat", "statm", "status", "task" };

    readonly Kernel _k;
    public ProcFs(Kernel k) => _k = k;

    /// <summary>Does this guest path belong to the guest's /proc view (answered by <see cref="Lookup"/>)?</summary>
    public static bool Covers(string abs)
    {
        string p = GuestFs.Normalize(abs);
        return p == "/proc" || p.StartsWith("/proc/") || p == "/dev/fd" || p.StartsWith("/dev/fd/")
            || p is "/dev/stdin" or "/dev/stdout" or "/dev/stderr"
            || p is "/sys/devices/system/cpu/online" or "/sys/devices/system/cpu/possible" or "/sys/devices/system/cpu/present";
    }

    /// <summary>
    /// Resolves links inside the /proc view: intermediate components always, the final one when `followFinal`. A
    /// path that leaves the view (/proc/self/exe -> the program) comes back as NotProc with the path to use; a
    /// final "fd:N" link (a guest descriptor) is returned as it is for the caller to act on. (The path is an out
    /// parameter, not half of a tuple: a tuple holding this struct is generic framework code without ReadyToRun code.)
    /// </summary>
    public Node Resolve(string abs, bool followFinal, out string path)
    {
        string p = GuestFs.Normalize(abs);
        // "dir/", "dir/." and "dir/.." name what a link leads to
        followFinal |= abs.EndsWith('/') || abs.EndsWith("/.") || abs.EndsWith("/..");
        for (int hops = 0; hops < 16; hops++)
        {
            if (!Covers(p)) { path = p; return Node.NotProc; }
            var parts = p.Split('/', StringSplitOptions.RemoveEmptyEntries);
            bool moved = false;
            for (int k = 1; k < parts.Length && !moved; k++)
            {
                var n = Lookup("/" + string.Join('/', parts[..k]));
                if (n.Kind == Kind.Missing || n.Kind == Kind.File || (n.Kind == Kind.Link && n.Target!.StartsWith("fd:"))) { path = p; return Node.Missing; }
                if (n.Kind == Kind.Link) { p = GuestFs.Normalize(n.Target + "/" + string.Join('/', parts[k..])); moved = true; }
            }
            if (moved) continue;
            var node = Lookup(p);
            if (node.Kind == Kind.Link && followFinal && !node.Target!.StartsWith("fd:")) { p = GuestFs.Normalize(node.Target); continue; }
            path = p;
            return node;
        }
        path = p;
        return Node.Missing;
    }

    /// <summary>What a guest path names in the guest's /proc view (following no link).</summary>
    public Node Lookup(string abs)
    {
        if (!Covers(abs)) return Node.NotProc;
        var parts = GuestFs.Normalize(abs).Split('/', StringSplitOptions.RemoveEmptyEntries);
        switch (parts[0])
        {
            case "sys": return Node.Text("0\n"); // one CPU, as sched_getaffinity and /proc/cpuinfo say
            case "dev":
                if (parts.Length == 2 && parts[1] == "fd") return Node.Link("/proc/self/fd");
                if (parts.Length == 2) return Node.Link($"/proc/self/fd/{Array.IndexOf(new[] { "stdin", "stdout", "stderr" }, parts[1])}");
                return FdEntry(parts[2], parts.Length);
        }
        if (parts.Length == 1) return Node.Dir(RootEntries());
        string top = parts[1];
        if (parts.Length == 2)
            switch (top)
            {
                case "self": return Node.Link($"/proc/{_k.P.Pid}");
                case "thread-self": return Node.Link($"/proc/{_k.P.Pid}/task/{_k.Current.Tid}");
                case "cpuinfo": return Node.Text(CpuInfo());
                case "meminfo": return Node.Text(MemInfo());
                case "version": return Node.Text("Linux version 6.1.0 (revirt) #1 SMP\n");
                case "uptime": return Node.Text("0.00 0.00\n");
                case "stat": return Node.Text($"cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nprocesses {_k.Processes.Count}\nprocs_running 1\nprocs_blocked 0\n");
            }
        if (top is "self" or "thread-self")
            return Lookup("/proc/" + (top == "self" ? _k.P.Pid.ToString() : $"{_k.P.Pid}/task/{_k.Current.Tid}") + "/" + string.Join('/', parts[2..]));
        // a guest process by its pid (or one of its threads by tid); the host's processes do not exist here
        if (!int.TryParse(top, out int pid) || FindProcess(pid) is not { } p) return Node.Missing;
        var rest = parts[2..];
        // /proc/PID/task/TID/... is the same view as /proc/PID/...
        if (rest.Length >= 1 && rest[0] == "task")
        {
            if (rest.Length == 1) return Node.Dir(Tids(p).Select(t => t.ToString()).ToArray());
            if (!int.TryParse(rest[1], out int tid) || !Tids(p).Contains(tid)) return Node.Missing;
            rest = rest[2..];
        }
        if (p.Exited)
        {
            // a zombie has no memory, descriptors or image left: its stat and status say what it was (state Z)
            if (rest.Length == 0) return Node.Dir(ZombieEntries);
            if (rest.Length != 1) return Node.Missing;
            return rest[0] switch
            {
                "stat" => Node.Text(Stat(p)),
                "status" => Node.Text(Status(p)),
                "comm" => Node.Text(Comm(p) + "\n"),
                "cmdline" or "environ" or "auxv" or "maps" => new Node(Kind.File, Array.Empty<byte>()),
                _ => Node.Missing,
            };
        }
        if (rest.Length == 0) return Node.Dir(ProcessEntries);
        switch (rest[0])
        {
            case "exe" when rest.Length == 1: return Node.Link(p.ProgramGuestPath);
            case "cwd" when rest.Length == 1: return Node.Link(p.Cwd);
            // descriptors are shown to their own process only (another's are not the caller's to open)
            case "fd" when p == _k.P: return rest.Length == 1 ? Node.Dir(p.Fds.Entries.Select(e => e.Fd.ToString()).ToArray()) : FdEntry(rest[1], rest.Length + 1);
            case "fd" when rest.Length == 1: return Node.Dir();
            case "maps" when rest.Length == 1: return Node.Text(Maps(p));
            case "auxv" when rest.Length == 1: return new Node(Kind.File, p.Auxv.SelectMany(BitConverter.GetBytes).ToArray());
            case "cmdline" when rest.Length == 1: return new Node(Kind.File, Encoding.UTF8.GetBytes(string.Concat(p.Start.Argv.Select(a => a + "\0"))));
            case "environ" when rest.Length == 1: return new Node(Kind.File, Encoding.UTF8.GetBytes(string.Concat(p.Environment.Select(a => a + "\0"))));
            case "comm" when rest.Length == 1: return Node.Text(Comm(p) + "\n");
            case "stat" when rest.Length == 1: return Node.Text(Stat(p));
            case "statm" when rest.Length == 1: return Node.Text($"{VmPages(p)} {p.Mem.PageCount} 0 0 0 0 0\n");
            case "status" when rest.Length == 1: return Node.Text(Status(p));
        }
        return Node.Missing;
    }

    Node FdEntry(string name, int depth)
    {
        if (depth != 3 || !int.TryParse(name, out int fd) || !_k.P.Fds.ContainsKey(fd)) return Node.Missing;
        return Node.Link($"fd:{fd}");
    }

    /// <summary>The live process a pid names, or the process of a live thread with that tid, or a zombie.</summary>
    Process? FindProcess(int pid)
        => _k.Processes.FirstOrDefault(q => !q.Exited && q.Pid == pid)
           ?? _k.Processes.FirstOrDefault(q => !q.Exited && q.Threads.Any(t => !t.Dead && t.Tid == pid))
           ?? _k.Zombies.FirstOrDefault(q => q.Pid == pid);

    /// <summary>The entries of /proc: the fixed files, then the pids of live processes and zombies in ascending
    /// order. Loops rather than LINQ over ints: every path under /proc resolves through this directory, and LINQ's
    /// code over a value type is JIT-compiled at its first use.</summary>
    string[] RootEntries()
    {
        string[] fixedEntries = { "self", "thread-self", "cpuinfo", "meminfo", "stat", "uptime", "version" };
        var pids = new List<int>();
        foreach (var q in _k.Processes) if (!q.Exited) pids.Add(q.Pid);
        foreach (var q in _k.Zombies) pids.Add(q.Pid);
        var entries = new string[fixedEntries.Length + pids.Count];
        fixedEntries.CopyTo(entries, 0);
        for (int i = 0; i < pids.Count; i++) // few processes: an insertion sort
        {
            int at = i;
            while (at > 0 && pids[at - 1] > pids[i]) at--;
            pids.Insert(at, pids[i]);
            pids.RemoveAt(i + 1);
        }
        for (int i = 0; i < pids.Count; i++) entries[fixedEntries.Length + i] = pids[i].ToString();
        return entries;
    }

    static readonly string[] ZombieEntries = { "cmdline", "comm", "environ", "stat", "status" };

    static IEnumerable<int> Tids(Process p) => p.Threads.Where(t => !t.Dead).Select(t => t.Tid);

    static string Comm(Process p)
    {
        string name = p.Name;
        if (name.Length == 0) name = p.ProgramGuestPath[(p.ProgramGuestPath.LastIndexOf('/') + 1)..];
        return name.Length > 15 ? name[..15] : name;
    }

    static ulong VmPages(Process p) => p.Exited ? 0 : p.Mem.Vmas.Aggregate(0UL, (n, v) => n + ((v.End - v.Start) >> GuestMemory.PageShift));

    /// <summary>'Z' a zombie, 'T' stopped (job control), 'R' while one of its threads can run, 'S' while all wait.</summary>
    static char State(Process p) => p.Exited ? 'Z' : p.Stopped ? 'T' : p.Threads.Any(t => !t.Dead && !t.Blocked) ? 'R' : 'S';

    static string StateName(Process p) => State(p) switch { 'Z' => "Z (zombie)", 'T' => "T (stopped)", 'R' => "R (running)", _ => "S (sleeping)" };

    static long Rss(Process p) => p.Exited ? 0 : p.Mem.PageCount;

    /// <summary>Threads as /proc counts them (a zombie: its leader, 1).</summary>
    static int ThreadCount(Process p) => p.Exited ? 1 : Tids(p).Count();

    /// <summary>The parent's pid as the guest sees it (the first process's parent is outside the VM: 0).</summary>
    static int Ppid(Process p) => p.Parent?.Pid ?? 0;

    /// <summary>Lines as Linux prints them: start-end perms offset dev inode path.</summary>
    static string Maps(Process p)
    {
        var sb = new StringBuilder();
        foreach (var v in p.Mem.Vmas)
        {
            string perms = $"{((v.Prot & Prot.Read) != 0 ? 'r' : '-')}{((v.Prot & Prot.Write) != 0 ? 'w' : '-')}{((v.Prot & Prot.Exec) != 0 ? 'x' : '-')}{(v.Shared ? 's' : 'p')}";
            string line = $"{v.Start:x8}-{v.End:x8} {perms} {v.FileOffset:x8} 00:00 0";
            sb.Append(v.Name.Length == 0 ? line : line.PadRight(73) + v.Name).Append('\n');
        }
        return sb.ToString();
    }

    static string Stat(Process p)
    {
        ulong vsize = VmPages(p) << GuestMemory.PageShift;
        int threads = ThreadCount(p);
        ulong ticks = p.Instructions / (Kernel.NominalInstructionsPerSecond / 100), cticks = p.ChildInstructions / (Kernel.NominalInstructionsPerSecond / 100);
        // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
        // priority nice num_threads itrealvalue starttime vsize rss rsslim startcode endcode startstack ... (52 fields)
        var f = new List<string> { p.Pid.ToString(), $"({Comm(p)})", State(p).ToString(), Ppid(p).ToString(), p.Pgid.ToString(), p.Sid.ToString(), "0", "-1", "4194304",
            "0", "0", "0", "0", ticks.ToString(), "0", cticks.ToString(), "0", "20", "0", threads.ToString(), "0", "0", vsize.ToString(), Rss(p).ToString(),
            "18446744073709551615", "0", "0", Kernel.StackTop.ToString(), "0", "0", "0", "0", "0", "0", "0", "0", "0", "17", "0", "0", "0", "0", "0",
            "0", "0", "0", "0", "0", "0", "0", "0", "0" };
        return string.Join(' ', f) + "\n";
    }

    static string Status(Process p)
    {
        ulong vmKb = VmPages(p) * 4, rssKb = (ulong)Rss(p) * 4;
        int threads = ThreadCount(p);
        string state = StateName(p);
        ulong mask = p.Threads.FirstOrDefault(t => !t.Dead)?.SigMask ?? 0;
        // a zombie has no memory (no Vm lines) and no descriptors
        string vm = p.Exited ? "" : $"VmPeak:\t{vmKb,8} kB\nVmSize:\t{vmKb,8} kB\nVmRSS:\t{rssKb,8} kB\nVmStk:\t{Kernel.StackSize / 1024,8} kB\n";
        return $"Name:\t{Comm(p)}\nUmask:\t{Convert.ToString(p.Umask, 8).PadLeft(4, '0')}\nState:\t{state}\nTgid:\t{p.Pid}\nNgid:\t0\nPid:\t{p.Pid}\nPPid:\t{Ppid(p)}\nTracerPid:\t0\n"
            + $"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t{(p.Exited ? 0 : Math.Max(64, p.Fds.Count))}\nGroups:\t\n"
            + vm
            + $"Threads:\t{threads}\nSigQ:\t0/63432\nSigPnd:\t0000000000000000\nShdPnd:\t{p.Pending:x16}\n"
            + $"SigBlk:\t{mask:x16}\nSigIgn:\t{SigSet(p, 1):x16}\nSigCgt:\t{SigSet(p, 2):x16}\n"
            + "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n"
            + "Seccomp:\t0\nCpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed:\t1\nMems_allowed_list:\t0\n"
            + "voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n";
    }

    /// <summary>Signals whose handler is SIG_IGN (1) or a function (2), as a mask (bit n-1 for signal n).</summary>
    static ulong SigSet(Process p, int which)
    {
        ulong m = 0;
        for (int sig = 1; sig < 65 && sig < p.Actions.Length; sig++)
        {
            ulong h = p.Actions[sig].Handler;
            if (which == 1 ? h == 1 : h > 1) m |= 1UL << (sig - 1);
        }
        return m;
    }

    string MemInfo()
    {
        ulong used = (ulong)_k.Mem.PageCount * 4;
        ulong free = MemTotalKb > used ? MemTotalKb - used : 0;
        return $"MemTotal:       {MemTotalKb,8} kB\nMemFree:        {free,8} kB\nMemAvailable:   {free,8} kB\nBuffers:               0 kB\n"
            + $"Cached:                0 kB\nSwapCached:            0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n";
    }

    /// <summary>/proc/cpuinfo of the CPU model: the flags line lists exactly what CPUID advertises.</summary>
    public static string CpuInfo()
    {
        CpuModel.Query(1, 0, out uint eax1, out _, out uint ecx1, out uint edx1);
        CpuModel.Query(0x8000_0001, 0, out _, out _, out uint ecx8, out uint edx8);
        var flags = new List<string>();
        void Bits(uint reg, (int Bit, string Name)[] names) { foreach (var (b, n) in names) if ((reg & (1u << b)) != 0) flags.Add(n); }
        Bits(edx1, new[] { (0, "fpu"), (1, "vme"), (2, "de"), (3, "pse"), (4, "tsc"), (5, "msr"), (6, "pae"), (7, "mce"), (8, "cx8"), (9, "apic"),
            (11, "sep"), (12, "mtrr"), (13, "pge"), (14, "mca"), (15, "cmov"), (16, "pat"), (17, "pse36"), (19, "clflush"), (23, "mmx"),
            (24, "fxsr"), (25, "sse"), (26, "sse2"), (28, "ht") });
        Bits(edx8, new[] { (11, "syscall"), (20, "nx"), (26, "pdpe1gb"), (27, "rdtscp"), (29, "lm") });
        Bits(ecx1, new[] { (0, "pni"), (1, "pclmulqdq"), (9, "ssse3"), (12, "fma"), (13, "cx16"), (19, "sse4_1"), (20, "sse4_2"),
            (22, "movbe"), (23, "popcnt"), (25, "aes"), (26, "xsave"), (28, "avx"), (29, "f16c"), (30, "rdrand") });
        Bits(ecx8, new[] { (0, "lahf_lm"), (5, "abm") });
        uint family = (eax1 >> 8) & 0xF, model = ((eax1 >> 4) & 0xF) | (((eax1 >> 16) & 0xF) << 4), stepping = eax1 & 0xF;
        return $"processor\t: 0\nvendor_id\t: {CpuModel.Vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: {CpuModel.Brand}\n"
            + $"stepping\t: {stepping}\ncpu MHz\t\t: 1000.000\ncache size\t: 8192 KB\nphysical id\t: 0\nsiblings\t: 1\ncore id\t\t: 0\n"
            + $"cpu cores\t: 1\napicid\t\t: 0\ninitial apicid\t: 0\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 7\nwp\t\t: yes\n"
            + $"flags\t\t: {string.Join(' ', flags)}\nbogomips\t: 2000.00\nclflush size\t: 64\ncache_alignment\t: 64\n"
            + "address sizes\t: 48 bits physical, 48 bits virtual\npower management:\n\n";
    }

    /// <summary>
    /// Is this open host descriptor on the host's procfs? An open that got there by a route the lexical check did not
    /// see (a symlink under root "/") must not hand the guest the VM process's own /proc.
    /// </summary>
    public static unsafe bool IsHostProcFs(long hostFd)
    {
        var buf = new byte[120];
        long r;
        fixed (byte* p = buf) r = HostSys.Call(Nr.fstatfs, hostFd, (long)p);
        return r >= 0 && BitConverter.ToInt64(buf, 0) == ProcSuperMagic;
    }

    /// <summary>A stat buffer (struct stat, 144 bytes) for a synthetic node, as procfs reports its files.</summary>
    public static byte[] StatBuffer(string path, Node n)
    {
        var st = new byte[144];
        uint mode = n.Kind switch { Kind.Dir => 0x4000 | 0x16D, Kind.Link => 0xA000 | 0x1FF, _ => 0x8000 | 0x124 };
        BitConverter.TryWriteBytes(st.AsSpan(0), ProcSuperMagic);               // st_dev
        BitConverter.TryWriteBytes(st.AsSpan(8), (ulong)System.IO.Hashing.XxHash32.HashToUInt32(Encoding.UTF8.GetBytes(GuestFs.Normalize(path)))); // st_ino
        BitConverter.TryWriteBytes(st.AsSpan(16), n.Kind == Kind.Dir ? 2UL : 1UL); // st_nlink
        BitConverter.TryWriteBytes(st.AsSpan(24), mode);
        BitConverter.TryWriteBytes(st.AsSpan(56), 1024L);                         // st_blksize
        return st;
    }

    /// <summary>A statx buffer (256 bytes) for a synthetic node.</summary>
    public static byte[] StatxBuffer(string path, Node n)
    {
        var st = StatBuffer(path, n);
        var sx = new byte[256];
        BitConverter.TryWriteBytes(sx.AsSpan(0), 0x7FFu);                       // stx_mask: STATX_BASIC_STATS
        BitConverter.TryWriteBytes(sx.AsSpan(4), 1024u);                         // stx_blksize
        BitConverter.TryWriteBytes(sx.AsSpan(16), (uint)BitConverter.ToUInt64(st, 16)); // stx_nlink
        BitConverter.TryWriteBytes(sx.AsSpan(28), (ushort)BitConverter.ToUInt32(st, 24)); // stx_mode
        BitConverter.TryWriteBytes(sx.AsSpan(32), BitConverter.ToUInt64(st, 8));  // stx_ino
        return sx;
    }
}
