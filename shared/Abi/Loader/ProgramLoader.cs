using ReVirt.Cpu;
using ReVirt.Memory;

using ReVirt.Linux;

namespace ReVirt.Abi;

/// <summary>The program a machine starts with, found under its root: its guest path and its bytes, read once through
/// the root descriptor (so the bytes a recording hashes are the bytes that run).</summary>
public sealed record StartProgram(string GuestPath, ReadOnlyMemory<byte> Image);

/// <summary>What execve set up: the loaded program, its interpreter, the argv it runs with and where it starts.</summary>
public sealed class StartImage
{
    public required LoadedProgram Program;
    /// <summary>Where the ELF interpreter was loaded (AT_BASE); 0 for a static program.</summary>
    public ulong InterpreterBase;
    /// <summary>First instruction: the interpreter's entry, or the program's for a static program.</summary>
    public ulong StartRip;
    /// <summary>Guest path of the file that was executed (AT_EXECFN, /proc/self/exe's target for a binary).</summary>
    public required string ExecPath;
    /// <summary>Guest path of the ELF that runs (the interpreter of a #! script, else ExecPath).</summary>
    public required string BinaryPath;
    public required string[] Argv;
}

/// <summary>
/// execve's loading half, as Linux's binfmt_script and binfmt_elf do it: a `#!` script runs its interpreter with
/// the script's path as argument; an ELF program is validated and loaded; a program that names an ELF interpreter
/// (PT_INTERP: glibc's ld-linux-x86-64.so.2, musl's ld-musl-x86_64.so.1) gets that interpreter loaded from the
/// guest's root below the mmap area and starts there, and the interpreter maps the libraries through its own
/// syscalls. The interpreter's bytes enter the machine through the boundary (<see cref="IBoundary.FileContent"/>),
/// so a replay loads the same bytes or refuses.
/// </summary>
public static class ProgramLoader
{
    const int MaxScriptDepth = 4; // Linux's BINPRM_MAX_RECURSION
    const int ScriptLineMax = 256; // Linux's BINPRM_BUF_SIZE
    /// <summary>AT_HWCAP2: neither HWCAP2_RING3MWAIT nor HWCAP2_FSGSBASE (the CPU model has no FSGSBASE).</summary>
    const ulong Hwcap2 = 0;

    /// <summary>Loads the program named by argv[0] (already resolved to `guestPath` and read: `image`).</summary>
    public static StartImage Load(GuestMemory mem, GuestFs fs, IBoundary boundary, int tid, string guestPath, ReadOnlyMemory<byte> image, string[] argv, ImageCache? images = null)
    {
        string execPath = guestPath;
        for (int depth = 0; ElfImage.IsScript(image.Span); depth++)
        {
            if (depth >= MaxScriptDepth) throw new ElfLoadException($"{guestPath}: too many levels of #! interpreters");
            var (interp, arg) = ParseShebang(image.Span, guestPath);
            var list = new List<string> { interp };
            if (arg != null) list.Add(arg);
            list.Add(guestPath);
            list.AddRange(argv.Skip(1));
            argv = list.ToArray();
            guestPath = interp;
            image = ReadThroughBoundary(fs, boundary, tid, interp, $"{execPath}: its #! interpreter {interp}");
        }
        return LoadElf(mem, fs, boundary, tid, image, guestPath, execPath, argv, images);
    }

    /// <summary>Loads an ELF image already read (by the start-up path or by execve) and, when it names one, its
    /// interpreter; through `images` when given (see <see cref="ImageCache.Load"/>). Throws
    /// <see cref="ElfLoadException"/> (exit status 127 when the interpreter is missing).</summary>
    public static StartImage LoadElf(GuestMemory mem, GuestFs fs, IBoundary boundary, int tid, ReadOnlyMemory<byte> image, string guestPath, string execPath, string[] argv, ImageCache? images = null)
    {
        var img = ElfImage.Parse(image.Span, guestPath);
        ulong bias = img.Type == ElfImage.EtDyn ? ElfLoader.PieBase - img.LowVaddr : 0;
        var program = images != null ? images.Load(mem, image, img, bias, guestPath) : ElfLoader.Load(mem, image, img, bias, guestPath);
        var start = new StartImage { Program = program, StartRip = program.Entry, ExecPath = execPath, BinaryPath = guestPath, Argv = argv };
        if (img.Interpreter is string ip)
        {
            var bytes = ReadThroughBoundary(fs, boundary, tid, ip, $"{guestPath}: its interpreter {ip}");
            var ii = ElfImage.Parse(bytes, ip);
            if (ii.Interpreter != null) throw new ElfLoadException($"{ip}: an interpreter that names an interpreter itself");
            if (ii.Type != ElfImage.EtDyn) throw new ElfLoadException($"{ip}: an interpreter must be position independent (ET_DYN)");
            ulong span = ii.HighVaddr - ii.LowVaddr;
            ulong at = mem.FindFree(span, Kernel.MmapTop, Kernel.MmapBottom);
            if (at == 0) throw new ElfLoadException($"{ip}: no room for the interpreter");
            var interp = ElfLoader.Load(mem, bytes, ii, at - ii.LowVaddr, ip);
            start.InterpreterBase = interp.LoadBias + ii.LowVaddr;
            start.StartRip = interp.Entry;
        }
        return start;
    }

    /// <summary>The interpreter and optional single argument of a `#!` line (as Linux splits it).</summary>
    public static (string Interp, string? Arg) ParseShebang(ReadOnlySpan<byte> f, string name)
    {
        var line = f[2..Math.Min(f.Length, ScriptLineMax)];
        int nl = line.IndexOf((byte)'\n');
        if (nl < 0 && f.Length > ScriptLineMax) throw new ElfLoadException($"{name}: #! line too long");
        if (nl >= 0) line = line[..nl];
        var text = System.Text.Encoding.UTF8.GetString(line).Trim(' ', '\t', '\r');
        if (text.Length == 0) throw new ElfLoadException($"{name}: #! line names no interpreter");
        int sp = text.IndexOfAny(new[] { ' ', '\t' });
        if (sp < 0) return (text, null);
        string arg = text[(sp + 1)..].Trim(' ', '\t');
        return (text[..sp], arg.Length == 0 ? null : arg);
    }

    /// <summary>
    /// Reads a whole file the loader needs (an interpreter) through the boundary: recorded by reference when it is
    /// a stable regular file, read again and checked by a replay. Missing: 127 with `what` in the message.
    /// </summary>
    static byte[] ReadThroughBoundary(GuestFs fs, IBoundary boundary, int tid, string guestPath, string what)
    {
        string reason = "";
        var res = boundary.FileContent(tid, Nr.execve, new FileRef(guestPath, 0, FileRef.WholeFile, 0), () =>
        {
            try
            {
                var bytes = ProgramFile.ReadAll(fs, guestPath, guestPath);
                var hr = HostResult.Of(bytes.Length).Write(0, bytes);
                hr.ByReference = FileRef.IsStable(fs, guestPath);
                return hr;
            }
            catch (ElfLoadException e)
            {
                reason = e.Message;
                return HostResult.Of(e.ExitStatus == 127 ? -Errno.ENOENT : -Errno.EACCES);
            }
        });
        if (res.Value == -Errno.ENOENT || res.Value == -Errno.ENOTDIR) throw new ElfLoadException($"{what}: no such file", 127);
        if (res.Value < 0) throw new ElfLoadException(reason.Length > 0 ? $"{what}: {reason}" : $"{what}: cannot be read (errno {-res.Value})");
        return res.Writes.Length == 1 ? res.Writes[0].Bytes : Array.Empty<byte>();
    }

    /// <summary>
    /// The auxiliary vector a dynamic loader and libc read, Linux's order, as key, value pairs one after the other
    /// (AT_NULL last). uid/gid come through the boundary; `platform` and `random` are the addresses of the
    /// AT_PLATFORM string and the AT_RANDOM bytes on the stack.
    /// </summary>
    public static ulong[] AuxVector(StartImage s, ulong platform, ulong random, ulong execfn, ulong uid, ulong gid)
    {
        var p = s.Program;
        return
        [
            Auxv.HWCAP, CpuModel.Leaf1Edx, Auxv.PAGESZ, GuestMemory.PageSize, Auxv.CLKTCK, 100,
            Auxv.PHDR, p.PhdrAddr, Auxv.PHENT, (ulong)p.PhEnt, Auxv.PHNUM, (ulong)p.PhNum,
            Auxv.BASE, s.InterpreterBase, Auxv.FLAGS, 0, Auxv.ENTRY, p.Entry,
            Auxv.UID, uid, Auxv.EUID, uid, Auxv.GID, gid, Auxv.EGID, gid, Auxv.SECURE, 0,
            Auxv.RANDOM, random, Auxv.HWCAP2, Hwcap2, Auxv.EXECFN, execfn, Auxv.PLATFORM, platform,
            Auxv.MINSIGSTKSZ, Sa.MINSIGSTKSZ, Auxv.NULL, 0,
        ];
    }
}

/// <summary>
/// A range of a file whose content enters the guest (a file mapping, an interpreter image, a read): the guest path it
/// was opened by, the offset, the length asked for (<see cref="WholeFile"/> for the whole file) and the guest address
/// it goes to (0 when the loader consumes it). <paramref name="IntoGuest"/>: a read(2) whose bytes go to guest memory
/// at <paramref name="Address"/> that is writable by the guest (<see cref="ReVirt.Memory.GuestMemory.WritableIovecs"/>
/// succeeded for the whole range), where whoever supplies the bytes may put them itself
/// (<see cref="ReVirt.Linux.HostResult.InGuest"/>).
/// </summary>
public readonly record struct FileRef(string GuestPath, long Offset, int Length, ulong Address, bool IntoGuest = false)
{
    public const int WholeFile = -1;

    /// <summary>How long before the VM started a file must have been last changed to be recorded by reference:
    /// file systems stamp changes with a coarse clock.</summary>
    static readonly long SettleNs = 2_000_000_000;
    static readonly long ProcessStartNs = ReadProcessStartNs();

    /// <summary>When this process started, in ns since the Unix epoch: what Process.StartTime computes (the start in
    /// clock ticks since boot from /proc/self/stat, placed on the wall clock through CLOCK_BOOTTIME), without loading
    /// System.Diagnostics.Process during every machine's start-up. Read and parsed with raw system calls into a stack
    /// buffer: File.ReadAllText, string.Split and long.Parse cost every start-up ~3 ms of first-use work (file stream,
    /// reader and decoder set-up) for a few hundred bytes.</summary>
    static unsafe long ReadProcessStartNs()
    {
        const long NsPerTick = 10_000_000; // USER_HZ is 100 on Linux x86-64
        long startTicks = ProcessStartTicks();
        long* ts = stackalloc long[2];
        if (HostSys.Call(Nr.clock_gettime, Clocks.BOOTTIME, (long)ts) < 0) throw new IOException("clock_gettime(CLOCK_BOOTTIME) failed");
        long sinceBootNs = ts[0] * 1_000_000_000 + ts[1];
        if (HostSys.Call(Nr.clock_gettime, Clocks.REALTIME, (long)ts) < 0) throw new IOException("clock_gettime(CLOCK_REALTIME) failed");
        long nowNs = ts[0] * 1_000_000_000 + ts[1];
        return nowNs - sinceBootNs + startTicks * NsPerTick;
    }

    /// <summary>Field 22 of /proc/self/stat (starttime, in clock ticks since boot). The second field, the command
    /// name in parentheses, may itself hold spaces and ')': the fields from the third on start after the last ')'.</summary>
    internal static unsafe long ProcessStartTicks()
    {
        const int Size = 4096; // the line is a few hundred bytes: 52 numbers and a name of at most 16
        byte* buf = stackalloc byte[Size];
        int len = 0;
        fixed (byte* path = "/proc/self/stat\0"u8)
        {
            long fd = HostSys.Call(Nr.open, (long)path, O.RDONLY | O.CLOEXEC);
            if (fd < 0) throw new IOException($"/proc/self/stat: cannot open (errno {-fd})");
            try
            {
                while (len < Size)
                {
                    long n = HostSys.Call(Nr.read, fd, (long)(buf + len), Size - len);
                    if (n == -Errno.EINTR) continue;
                    if (n < 0) throw new IOException($"/proc/self/stat: cannot read (errno {-n})");
                    if (n == 0) break;
                    len += (int)n;
                }
            }
            finally { HostSys.Call(Nr.close, fd); }
        }
        return StartTicksOf(new ReadOnlySpan<byte>(buf, len));
    }

    /// <summary>Field 22 (starttime) of a /proc/PID/stat line. Plain loops: the span searches are vectorised
    /// framework code that an AVX2 host JIT-compiles at first use.</summary>
    internal static long StartTicksOf(ReadOnlySpan<byte> line)
    {
        int i = line.Length - 1;
        while (i >= 0 && line[i] != (byte)')') i--;
        if (i < 0) throw new IOException("/proc/self/stat: no command name");
        i += 2;
        for (int field = 3; field < 22 && i < line.Length; field++)
        {
            while (i < line.Length && line[i] != (byte)' ') i++;
            i++;
        }
        long v = 0;
        int digits = 0;
        for (; i < line.Length && line[i] is >= (byte)'0' and <= (byte)'9'; i++, digits++) v = v * 10 + (line[i] - '0');
        if (digits == 0) throw new IOException("/proc/self/stat: no start time in field 22");
        return v;
    }

    /// <summary>
    /// A regular file whose inode has not changed (st_ctime, which utimes cannot set back) since shortly before this
    /// process started, so that a replay reading the path from its own root later sees what the recording saw; a file
    /// the guest or anyone else wrote during the run is not. With a descriptor, the path must still name the same
    /// file (not renamed over since it was opened).
    /// </summary>
    public static unsafe bool IsStable(GuestFs fs, string guestPath, int hostFd = -1)
    {
        var byPath = new byte[StatSize];
        long r = fs.OnObject(guestPath, true, fd => { fixed (byte* s = byPath) return HostSys.Call(Nr.fstat, fd, (long)s); });
        if (r < 0 || !OldRegular(byPath)) return false;
        if (hostFd < 0) return true;
        var byFd = new byte[StatSize];
        fixed (byte* s = byFd) r = HostSys.Call(Nr.fstat, hostFd, (long)s);
        return r >= 0 && byFd.AsSpan(0, 16).SequenceEqual(byPath.AsSpan(0, 16)) && OldRegular(byFd); // st_dev, st_ino
    }

    /// <summary>A stat buffer of a regular file not changed since shortly before this process started.</summary>
    public static bool OldRegular(ReadOnlySpan<byte> st)
    {
        return IsRegular(st) && StCtimeNs(st) < ProcessStartNs - SettleNs;
    }

    /// <summary>st_ctime of a stat buffer in ns.</summary>
    internal static long StCtimeNs(ReadOnlySpan<byte> st)
        => System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(st[104..]) * 1_000_000_000
            + System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(st[112..]);

    /// <summary>
    /// <see cref="IsStable"/> for the first by-reference read of one open description. <paramref name="stamp"/> is what
    /// the description remembers of it:
    /// <list type="bullet">
    /// <item>Nothing yet: the whole check (the path under the root and the descriptor name one old regular file);
    /// when it passes, the file's identity (<see cref="ImageCache.FileIdentity"/>) is kept. Later reads of the
    /// description are proven by <see cref="Unchanged"/>, once per run of reads (Linux/Files/ContentReads.cs).</item>
    /// <item>An identity: <see cref="Unchanged"/> now.</item>
    /// <item><see cref="ReadStamp.Changed"/>: the file once showed a change during the run; st_ctime only moves
    /// forward, so no later read can be by reference and none asks the host.</item>
    /// </list>
    /// </summary>
    public static unsafe bool IsStable(GuestFs fs, string guestPath, int hostFd, ref ReadStamp stamp)
    {
        if (stamp.Changed) return false;
        if (stamp.Identity != null) return Unchanged(hostFd, ref stamp);
        Span<byte> st = stackalloc byte[StatSize];
        long r;
        fixed (byte* s = st) r = HostSys.Call(Nr.fstat, hostFd, (long)s);
        if (r < 0) return false;
        if (IsRegular(st) && !OldRegular(st))
        {
            stamp = ReadStamp.ChangedDuringRun;
            return false;
        }
        if (!IsStable(fs, guestPath, hostFd)) return false;
        stamp = new ReadStamp(ImageCache.FileIdentity.OfStable(st), false);
        return stamp.Identity != null;
    }

    /// <summary>
    /// Whether fstat of <paramref name="hostFd"/> shows the identity <paramref name="stamp"/> holds: the same device,
    /// inode, size, st_mtime and st_ctime. The kernel sets st_ctime to now on every change of the file's content, size,
    /// mode or links (a write, a truncate, a chmod, an unlink or a rename of it, a rename over it), and nothing can set
    /// it back, so an unchanged old st_ctime means the file still holds what it held shortly before this process
    /// started. Not checked again: that the path still names this file (only a rename of a directory above it, which
    /// leaves the file's st_ctime alone, makes the path name something else). That costs the replay nothing it had: a
    /// replay reads the path from its own root, later, whatever the recording saw, and compares the hash, so a root
    /// whose path names other bytes is refused naming the file, never replayed wrong. When the identity differs,
    /// <paramref name="stamp"/> becomes <see cref="ReadStamp.Changed"/> for a regular file changed during the run, and
    /// nothing (check whole again) otherwise.
    /// </summary>
    public static unsafe bool Unchanged(int hostFd, ref ReadStamp stamp)
    {
        if (stamp.Identity is not { } id) return false;
        Span<byte> st = stackalloc byte[StatSize];
        long r;
        fixed (byte* s = st) r = HostSys.Call(Nr.fstat, hostFd, (long)s);
        if (r < 0) { stamp = default; return false; }
        if (id.Matches(st)) return true;
        stamp = IsRegular(st) && !OldRegular(st) ? ReadStamp.ChangedDuringRun : default;
        return false;
    }

    static bool IsRegular(ReadOnlySpan<byte> st) => (System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(st[24..]) & 0xF000) == 0x8000;

    /// <summary>Bytes of the host's struct stat (x86-64).</summary>
    const int StatSize = 144;
}

/// <summary>What an open description remembers of <see cref="FileRef.IsStable(GuestFs, string, int, ref ReadStamp)"/>:
/// nothing (default), the identity of the file it found stable, or that the file changed during the run.</summary>
public readonly record struct ReadStamp(ImageCache.FileIdentity? Identity, bool Changed)
{
    public static ReadStamp ChangedDuringRun => new(null, true);
}
