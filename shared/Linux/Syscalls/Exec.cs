using System.Text;
using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// execve/execveat: the process gets a new image in place. The image's bytes are start state, not input: the
/// host operation reads the file and the log keeps only its length and digest (XxHash128); a replay reads the same
/// path under its own root and refuses an image whose digest differs. Errors are Linux's: ENOENT, EACCES (a
/// directory, not a regular file, not executable), ENOEXEC (neither ELF nor #!), E2BIG, ELOOP (#! nesting).
/// </summary>
public sealed partial class Kernel
{
    /// <summary>Most bytes of argument and environment strings (a quarter of the 8 MiB stack, as Linux).</summary>
    const int ArgMax = 2 * 1024 * 1024;
    /// <summary>Longest single argument or environment string (MAX_ARG_STRLEN).</summary>
    const int MaxArgStrlen = 32 * 4096;
    const int MaxInterpreterDepth = 4;

    long Execve(GuestThread t, int dirfd, ulong pathAddr, ulong argvAddr, ulong envpAddr, int flags)
    {
        string path = Path(pathAddr);
        if (path.Length == 0) return -Errno.ENOENT;
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcExecPath(ref abs) is long pe) return pe;
        var argv = ReadStrings(argvAddr, out e);
        if (e < 0) return e;
        var env = ReadStrings(envpAddr, out e);
        if (e < 0) return e;
        return ExecImage(t, abs, path, argv, env, 0);
    }

    /// <summary>A NULL-terminated array of guest strings (E2BIG beyond Linux's limits).</summary>
    List<string> ReadStrings(ulong addr, out long err)
    {
        err = 0;
        var list = new List<string>();
        if (addr == 0) return list;
        long total = 0;
        for (ulong p = addr; ; p += 8)
        {
            ulong s = Mem.Read64(p);
            if (s == 0) break;
            string v;
            // a string without its NUL within MAX_ARG_STRLEN is too long, not a bad address
            try { v = Mem.ReadCString(s, MaxArgStrlen + 1); }
            catch (ArgumentException) { err = -Errno.E2BIG; return list; }
            int len = Encoding.UTF8.GetByteCount(v) + 1;
            total += len + 8;
            if (len > MaxArgStrlen || total > ArgMax) { err = -Errno.E2BIG; return list; }
            list.Add(v);
        }
        return list;
    }

    long ExecImage(GuestThread t, string abs, string execPath, List<string> argv, List<string> env, int depth)
    {
        if (depth > MaxInterpreterDepth) return -Errno.ELOOP;
        var read = ReadImage(t, abs, out long e);
        if (read is not { } image) return e;
        var head = image.Span;
        if (head.Length >= 2 && head[0] == '#' && head[1] == '!')
        {
            int nl = head.IndexOf((byte)'\n');
            string line = Encoding.UTF8.GetString(head.Slice(2, (nl < 0 ? Math.Min(image.Length, 256) : Math.Min(nl, 256)) - 2)).Trim(' ', '\t', '\r');
            if (line.Length == 0) return -Errno.ENOEXEC;
            int sp = line.IndexOfAny(new[] { ' ', '\t' });
            string interp = sp < 0 ? line : line[..sp];
            string? arg = sp < 0 ? null : line[(sp + 1)..].Trim(' ', '\t');
            var nargv = new List<string> { interp };
            if (!string.IsNullOrEmpty(arg)) nargv.Add(arg);
            nargv.Add(execPath);
            nargv.AddRange(argv.Skip(1));
            long ge = GuestAbs(At.FDCWD, interp, out var iabs);
            if (ge < 0) return ge;
            return ExecImage(t, iabs, interp, nargv, env, depth + 1);
        }
        if (head.Length < 4 || head[0] != 0x7F || head[1] != 'E' || head[2] != 'L' || head[3] != 'F') return -Errno.ENOEXEC;
        var mem = new GuestMemory();
        StartImage start;
        try { start = ProgramLoader.LoadElf(mem, Fs, Boundary, t.Tid, image, abs, execPath, argv.ToArray(), Images); }
        catch (ElfLoadException le) { mem.Dispose(); return le.ExitStatus == 127 ? -Errno.ENOENT : -Errno.ENOEXEC; }
        var prog = start.Program;

        // the point of no return: the process becomes the new image
        var p = t.Process;
        foreach (var x in p.Threads) if (x != t) SetState(x, ThreadState.Dead);
        p.Threads.Clear();
        p.Threads.Add(t);
        var old = p.Mem;
        p.Mem = mem;
        p.Code = NewCodeCache(mem, p.Code.Profile);
        old.Dispose();
        p.Program = prog;
        p.ProgramImage = image;
        p.ProgramGuestPath = abs;
        p.Name = System.IO.Path.GetFileName(abs);
        p.BrkStart = p.BrkCur = prog.BrkStart;
        foreach (int fd in p.Fds.Numbers())
            if (p.Fds.CloseOnExec(fd) && p.Fds.Remove(fd, out var f)) Release(t, f);
        for (int s = 1; s <= Sig.Max; s++)
        {
            var a = p.Actions[s];
            if (a.Handler != Sa.SIG_IGN) { a.Handler = Sa.SIG_DFL; a.Flags = 0; a.Mask = 0; a.Restorer = 0; }
        }
        t.AltSp = 0; t.AltSize = 0; t.AltFlags = Sa.SS_DISABLE;
        t.ClearChildTid = 0;
        var oldCpu = t.Cpu;
        var cpu = new CpuT(mem, p.Code, this) { Tid = t.Tid, InstructionCount = oldCpu.InstructionCount, BranchCount = oldCpu.BranchCount };
        t.Cpu = cpu;
        oldCpu.Yield = true;
        mem.Map(StackTop - StackSize, StackSize, Prot.Read | Prot.Write, "[stack]");
        var random = Boundary.Bytes(t.Tid, InputKind.StartupRandom, 16, () => HostSys.RandomBytes(16));
        p.Start = start;
        BuildStack(p, env, random);
        cpu.Rip = start.StartRip;
        return 0;
    }

    /// <summary>
    /// The bytes of an executable, checked as execve checks them (ENOENT, EACCES). The log holds the answer, the
    /// length and the digest; the bytes come from the file under this replica's root, or from the machine's
    /// <see cref="ImageCache"/> when it is the same stable file as one read before.
    /// </summary>
    unsafe ReadOnlyMemory<byte>? ReadImage(GuestThread t, string abs, out long err)
    {
        ReadOnlyMemory<byte>? bytes = null;
        var res = HostSide(t.Cpu, Nr.execve, () =>
        {
            // the checks and the read act on descriptors resolved under the root in one step each; the read checks
            // the opened file again (regular, bounded), so a swap in between is refused, never followed outside
            var st = new byte[SMode.StatSize];
            long r = Fs.OnObject(abs, true, fd =>
            {
                long e;
                fixed (byte* ps = st) e = HostSys.Call(Nr.fstat, fd, (long)ps);
                if (e < 0) return e;
                if (!HostStat.From(st).IsRegular) return -Errno.EACCES;
                fixed (byte* pe = EmptyPath) return HostSys.Call(Nr.faccessat2, fd, (long)pe, Access.X_OK, At.EMPTY_PATH);
            });
            if (r < 0) return HostResult.Of(r);
            var read = ReadProgramFile(abs, st, out long readErr);
            if (read == null) return HostResult.Of(readErr);
            bytes = read.Value.Bytes;
            return HostResult.Of(read.Value.Bytes.Length).Write(0, read.Value.Digest);
        }, out var digest);
        err = res.Value;
        if (res.Value < 0) return null;
        if (bytes == null)
        {
            // a replay: the same file under this replica's root, which must be the one the recording ran
            var read = ReadProgramFile(abs, StatOf(abs), out _);
            if (read == null || read.Value.Bytes.Length != res.Value || digest == null || !read.Value.Digest.AsSpan().SequenceEqual(digest))
                throw new ReplayInputMismatchException($"execve {abs}: the file under this root is not the one the log says the recording ran (length {res.Value}, digest {(digest == null ? "none" : Convert.ToHexStringLower(digest))})");
            bytes = read.Value.Bytes;
        }
        return bytes;
    }

    /// <summary>The bytes and digest of a program file whose stat buffer is `st` (null: not stat'ed): from the
    /// image cache when it is a stable file seen before, else read (and kept when stable). Null when unreadable
    /// (err: ENOENT when it is gone, else EACCES).</summary>
    (ReadOnlyMemory<byte> Bytes, byte[] Digest)? ReadProgramFile(string abs, byte[]? st, out long err)
    {
        err = 0;
        var id = st == null ? null : ImageCache.FileIdentity.OfStable(st);
        if (id is { } known && Images.TryGet(known, out var cached, out var cachedDigest)) return (cached, cachedDigest);
        ReadOnlyMemory<byte> bytes;
        try { bytes = ProgramFile.ReadAll(Fs, abs, abs); }
        catch (ElfLoadException e) { err = e.ExitStatus == 127 ? -Errno.ENOENT : -Errno.EACCES; return null; }
        var digest = Log.Xxh128.Hash(bytes.Span);
        if (id is { } stable) Images.Add(stable, bytes, digest);
        return (bytes, digest);
    }

    /// <summary>The stat buffer of a guest path (symlinks followed under the root), or null.</summary>
    unsafe byte[]? StatOf(string abs)
    {
        var st = new byte[SMode.StatSize];
        long r = Fs.OnObject(abs, true, fd => { fixed (byte* ps = st) return HostSys.Call(Nr.fstat, fd, (long)ps); });
        return r < 0 ? null : st;
    }
}

/// <summary>
/// A file the log says the recording read (by reference, or an executable execve ran) is missing or different under
/// this replica's root: the replay is refused, because the root does not hold what the log says the recording ran on
/// (a different root, or a forged log).
/// </summary>
public sealed class ReplayInputMismatchException(string message) : Exception(message);
