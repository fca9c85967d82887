using System.Buffers.Binary;
using System.Text;
using ReVirt.Abi;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>Files and descriptors: open/close/read/write, paths, dup/fcntl/ioctl, pipes, poll.</summary>
public sealed partial class Kernel
{
    void RegisterFileSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Host);
        r.Add(Nr.read, (t, a) => Read(t, (int)a.A1, a.A2, a.A3, -1));
        r.Add(Nr.pread64, (t, a) => Read(t, (int)a.A1, a.A2, a.A3, (long)a.A4));
        r.Add(Nr.write, (t, a) => Write(t, (int)a.A1, a.A2, a.A3, -1));
        r.Add(Nr.pwrite64, (t, a) => Write(t, (int)a.A1, a.A2, a.A3, (long)a.A4));
        r.Add(Nr.readv, (t, a) => Readv(t.Cpu, (int)a.A1, a.A2, (int)a.A3));
        r.Add(Nr.writev, (t, a) => Writev(t.Cpu, (int)a.A1, a.A2, (int)a.A3));
        r.Add(Nr.open, (t, a) => OpenAt(t.Cpu, At.FDCWD, a.A1, (int)a.A2, (int)a.A3));
        r.Add(Nr.creat, (t, a) => OpenAt(t.Cpu, At.FDCWD, a.A1, O.CREAT | O.WRONLY | O.TRUNC, (int)a.A2));
        r.Add(Nr.openat, (t, a) => OpenAt(t.Cpu, (int)a.A1, a.A2, (int)a.A3, (int)a.A4));
        r.Add(Nr.close, (t, a) => Close(t, (int)a.A1));
        r.Add(Nr.lseek, (t, a) =>
        {
            if (Fds.TryGetValue((int)a.A1, out var sp) && sp.StatMode != null) return -Errno.ESPIPE; // a pipe in the VM
            if (sp is HostFile { OnStorage: true }) SettleFile(sp); // SEEK_END: the end with the guest's own writes
            long r = OnHostFd(t.Cpu, a.Nr, (int)a.A1, h => HostSys.Call(Nr.lseek, h, (long)a.A2, (long)a.A3));
            if (r >= 0 && Fds.TryGetValue((int)a.A1, out var lf)) lf.Offset = r;
            return r;
        });
        r.Add(Nr.fstat, (t, a) => ProcDirStat((int)a.A1, a.A2, statx: false)
            ?? (Fds.TryGetValue((int)a.A1, out var sf) && sf.StatMode is { } mode ? StatInVm(a.A2, mode, sf.StatInode)
                : SettledFdBuffer(t.Cpu, a.Nr, (int)a.A1, a.A2, 144, (h, buf) => HostSys.Call(Nr.fstat, h, buf))));
        r.Add(Nr.stat, (t, a) => PathBuffer(t.Cpu, a.Nr, At.FDCWD, a.A1, true, a.A2, 144, (fd, buf) => AtEmpty(e => HostSys.Call(Nr.newfstatat, fd, e, buf, At.EMPTY_PATH))));
        r.Add(Nr.lstat, (t, a) => PathBuffer(t.Cpu, a.Nr, At.FDCWD, a.A1, false, a.A2, 144, (fd, buf) => AtEmpty(e => HostSys.Call(Nr.newfstatat, fd, e, buf, At.EMPTY_PATH))));
        r.Add(Nr.newfstatat, (t, a) => FstatAt(t.Cpu, (int)a.A1, a.A2, a.A3, (int)a.A4));
        r.Add(Nr.statx, (t, a) => Statx(t.Cpu, (int)a.A1, a.A2, (int)a.A3, (uint)a.A4, a.A5));
        r.Add(Nr.fstatfs, (t, a) => FdBuffer(t.Cpu, a.Nr, (int)a.A1, a.A2, 120, (h, buf) => HostSys.Call(Nr.fstatfs, h, buf)));
        r.Add(Nr.statfs, (t, a) => PathBuffer(t.Cpu, a.Nr, At.FDCWD, a.A1, true, a.A2, 120, (fd, buf) => HostSys.Call(Nr.fstatfs, fd, buf)));
        r.Add(Nr.getdents64, (t, a) => Fds.TryGetValue((int)a.A1, out var gd) && gd is ProcDirectory pd ? ProcGetdents(pd, a.A2, a.A3) : SettleNames() ?? FdBuffer(t.Cpu, a.Nr, (int)a.A1, a.A2, (int)Math.Min(a.A3, 1 << 20), (h, buf) => HostSys.Call(Nr.getdents64, h, buf, (long)Math.Min(a.A3, 1 << 20)), resultIsLength: true));
        r.Add(Nr.readlink, (t, a) => ReadlinkAt(t.Cpu, a.Nr, At.FDCWD, a.A1, a.A2, a.A3));
        r.Add(Nr.readlinkat, (t, a) => ReadlinkAt(t.Cpu, a.Nr, (int)a.A1, a.A2, a.A3, a.A4));
        r.Add(Nr.access, (t, a) => PathOp(t.Cpu, a.Nr, At.FDCWD, a.A1, true, fd => AtEmpty(e => HostSys.Call(Nr.faccessat2, fd, e, (long)a.A2, At.EMPTY_PATH))));
        r.Add(new[] { Nr.faccessat, Nr.faccessat2 }, (t, a) => PathOp(t.Cpu, a.Nr, (int)a.A1, a.A2, true, fd => AtEmpty(e => HostSys.Call(Nr.faccessat2, fd, e, (long)a.A3, At.EMPTY_PATH))));
        r.Add(Nr.unlink, (t, a) => NameOp(t.Cpu, a.Nr, At.FDCWD, a.A1, -Errno.EISDIR, (d, n) => HostSys.Call(Nr.unlinkat, d, n, 0), StorageChangeKind.Unlink));
        r.Add(Nr.unlinkat, (t, a) => NameOp(t.Cpu, a.Nr, (int)a.A1, a.A2, (a.A3 & At.REMOVEDIR) != 0 ? -Errno.EBUSY : -Errno.EISDIR, (d, n) => HostSys.Call(Nr.unlinkat, d, n, (long)(a.A3 & At.REMOVEDIR)),
            (a.A3 & At.REMOVEDIR) != 0 ? StorageChangeKind.Rmdir : StorageChangeKind.Unlink));
        r.Add(Nr.rmdir, (t, a) => NameOp(t.Cpu, a.Nr, At.FDCWD, a.A1, -Errno.EBUSY, (d, n) => HostSys.Call(Nr.unlinkat, d, n, At.REMOVEDIR), StorageChangeKind.Rmdir));
        r.Add(Nr.mkdir, (t, a) => NameOp(t.Cpu, a.Nr, At.FDCWD, a.A1, -Errno.EEXIST, (d, n) => HostSys.Call(Nr.mkdirat, d, n, (long)a.A2), StorageChangeKind.Mkdir));
        r.Add(Nr.mkdirat, (t, a) => NameOp(t.Cpu, a.Nr, (int)a.A1, a.A2, -Errno.EEXIST, (d, n) => HostSys.Call(Nr.mkdirat, d, n, (long)a.A3), StorageChangeKind.Mkdir));
        r.Add(Nr.mknod, (t, a) => MknodAt(t.Cpu, a.Nr, At.FDCWD, a.A1, (uint)a.A2));
        r.Add(Nr.mknodat, (t, a) => MknodAt(t.Cpu, a.Nr, (int)a.A1, a.A2, (uint)a.A3));
        r.Add(Nr.chmod, (t, a) => Chmod(t.Cpu, a.Nr, At.FDCWD, a.A1, (uint)a.A2));
        r.Add(Nr.fchmodat, (t, a) => Chmod(t.Cpu, a.Nr, (int)a.A1, a.A2, (uint)a.A3));
        r.Add(Nr.fchmod, (t, a) => Chmod(t.Cpu, a.Nr, (int)a.A1, 0, (uint)a.A2));
        r.Add(new[] { Nr.chown, Nr.lchown, Nr.fchown, Nr.fchownat }, (t, a) => 0);
        // extended attributes: the guest's files carry none (ls -l asks for ACLs and SELinux labels)
        r.Add(new[] { Nr.getxattr, Nr.lgetxattr, Nr.fgetxattr }, (t, a) => -Errno.ENODATA);
        r.Add(new[] { Nr.listxattr, Nr.llistxattr, Nr.flistxattr }, (t, a) => 0);
        r.Add(Nr.utimensat, (t, a) => Utimensat(t.Cpu, (int)a.A1, a.A2, a.A3 != 0 ? Mem.ReadBytes(a.A3, 32) : null, (int)a.A4));
        r.Add(Nr.futimesat, (t, a) => Futimesat(t.Cpu, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.utimes, (t, a) => Futimesat(t.Cpu, At.FDCWD, a.A1, a.A2));
        r.Add(Nr.rename, (t, a) => TwoPaths(t.Cpu, a.Nr, At.FDCWD, a.A1, At.FDCWD, a.A2, (d1, p, d2, q) => HostSys.Call(Nr.renameat2, d1, p, d2, q, 0), StorageChangeKind.Rename));
        r.Add(Nr.renameat, (t, a) => TwoPaths(t.Cpu, a.Nr, (int)a.A1, a.A2, (int)a.A3, a.A4, (d1, p, d2, q) => HostSys.Call(Nr.renameat2, d1, p, d2, q, 0), StorageChangeKind.Rename));
        r.Add(Nr.renameat2, (t, a) => TwoPaths(t.Cpu, a.Nr, (int)a.A1, a.A2, (int)a.A3, a.A4, (d1, p, d2, q) => HostSys.Call(Nr.renameat2, d1, p, d2, q, (long)a.A5), StorageChangeKind.Rename, (uint)a.A5));
        r.Add(Nr.link, (t, a) => TwoPaths(t.Cpu, a.Nr, At.FDCWD, a.A1, At.FDCWD, a.A2, (d1, p, d2, q) => HostSys.Call(Nr.linkat, d1, p, d2, q, 0), StorageChangeKind.Link));
        r.Add(Nr.linkat, (t, a) => TwoPaths(t.Cpu, a.Nr, (int)a.A1, a.A2, (int)a.A3, a.A4, (d1, p, d2, q) => HostSys.Call(Nr.linkat, d1, p, d2, q, 0), StorageChangeKind.Link));
        r.Add(Nr.symlink, (t, a) => Symlink(t.Cpu, a.A1, At.FDCWD, a.A2));
        r.Add(Nr.symlinkat, (t, a) => Symlink(t.Cpu, a.A1, (int)a.A2, a.A3));
        r.Add(Nr.truncate, (t, a) => Truncate(t.Cpu, a.A1, (long)a.A2));
        r.Add(Nr.ftruncate, (t, a) => Ftruncate(t.Cpu, (int)a.A1, (long)a.A2));
        // a held change that failed on the storage after the guest was told it was made answers here (once)
        r.Add(new[] { Nr.fsync, Nr.fdatasync }, (t, a) => OnHostFd(t.Cpu, a.Nr, (int)a.A1, h => DeferredError((int)a.A1) is < 0 and var e ? e : HostSys.Call(a.Nr, h), true));
        r.Add(Nr.sync, (t, a) => 0);
        r.Add(Nr.fadvise64, (t, a) => 0);
        r.Add(Nr.flock, (t, a) => OnHostFd(t.Cpu, a.Nr, (int)a.A1, h => 0));
        r.Add(Nr.getcwd, (t, a) => Getcwd(a.A1, a.A2));
        r.Add(Nr.chdir, (t, a) => Chdir(t.Cpu, a.A1));
        r.Add(Nr.fchdir, (t, a) =>
        {
            if (!Fds.TryGetValue((int)a.A1, out var df)) return -Errno.EBADF;
            if (!df.IsDirectory) return -Errno.ENOTDIR;
            P.Cwd = df.GuestPath;
            return 0;
        });
        r.Add(Nr.dup, (t, a) => Dup(t, (int)a.A1, -1, false));
        r.Add(Nr.dup2, (t, a) =>
        {
            if (a.A1 == a.A2) return Fds.ContainsKey((int)a.A1) ? (long)a.A1 : -Errno.EBADF;
            return Dup(t, (int)a.A1, (int)a.A2, false);
        });
        r.Add(Nr.dup3, (t, a) =>
        {
            if (a.A1 == a.A2) return -Errno.EINVAL;
            return Dup(t, (int)a.A1, (int)a.A2, (a.A3 & O.CLOEXEC) != 0);
        });
        r.Add(Nr.fcntl, (t, a) => Fcntl(t.Cpu, (int)a.A1, (int)a.A2, a.A3));
        r.Add(Nr.ioctl, (t, a) => IoctlFd(t.Cpu, (int)a.A1, a.A2, a.A3));
        r.Add(Nr.pipe, (t, a) => MakePipe(a.A1, 0), SyscallFlags.Emulated);
        r.Add(Nr.pipe2, (t, a) => MakePipe(a.A1, (int)a.A2), SyscallFlags.Emulated);
        r.Add(Nr.sendfile, (t, a) => Sendfile(t.Cpu, (int)a.A1, (int)a.A2, a.A3, a.A4));
        r.Add(Nr.poll, (t, a) => PollFds(t, a.A1, (int)a.A2, (int)a.A3 < 0 ? -1 : (long)(int)a.A3 * 1_000_000));
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>A host call that fills a guest buffer of `len` bytes (0 = none) with what the host wrote.</summary>
    internal unsafe long HostBuffer(CpuT cpu, int nr, ulong guestBuf, int len, Func<long, long> call, bool resultIsLength = false)
    {
        if (len > 0) CheckWritable(guestBuf, (ulong)len);
        return Host(cpu, nr, () =>
        {
            // a reused buffer: a structure the host may fill in part is cleared first, as a fresh buffer was
            var buf = ReadScratch(len);
            if (!resultIsLength) buf.AsSpan(0, len).Clear();
            long r;
            fixed (byte* p = buf) r = call(len > 0 ? (long)p : 0);
            var res = HostResult.Of(r);
            if (r >= 0 && len > 0)
            {
                int n = resultIsLength ? (int)Math.Min(r, len) : len;
                res.Write(guestBuf, buf.AsSpan(0, n).ToArray());
            }
            return res;
        }).Value;
    }

    /// <summary>The host descriptor of a guest descriptor inside a host operation (-EBADF when there is none).</summary>
    long OnHostFd(CpuT cpu, int nr, int fd, Func<long, long> call, bool reexecuteOnReplay = false)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        if (reexecuteOnReplay) SettleFiles(); // ftruncate, fchmod, fsync: after the guest's held writes
        long r = Host(cpu, nr, () => HostResult.Of(call(f.HostFd)), reexecuteOnReplay).Value;
        if (reexecuteOnReplay && r >= 0) Changes.Mark(f); // ftruncate, fchmod (and fsync, which changes nothing)
        return r;
    }

    long FdBuffer(CpuT cpu, int nr, int fd, ulong guestBuf, int len, Func<long, long, long> call, bool resultIsLength = false)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        return HostBuffer(cpu, nr, guestBuf, len, buf => call(f.HostFd, buf), resultIsLength);
    }

    /// <summary><see cref="FdBuffer"/> of a call that tells about the file's data (fstat: its size): on a file of the
    /// guest's storage, after its held writes (<see cref="SettleFiles"/>).</summary>
    long SettledFdBuffer(CpuT cpu, int nr, int fd, ulong guestBuf, int len, Func<long, long, long> call)
    {
        if (Fds.TryGetValue(fd, out var f) && f is HostFile { OnStorage: true }) SettleFile(f);
        return FdBuffer(cpu, nr, fd, guestBuf, len, call);
    }

    /// <summary>
    /// The guest observes or changes its storage other than by a file write: where the primary of a pair on shared
    /// storage waits until its held file writes are stored (<see cref="IBoundary.SettleFiles"/>). Called at the
    /// same points in every run (a replay learns there that the primary had released everything before).
    /// </summary>
    internal void SettleFiles() => Boundary.SettleFiles(Current.Tid);

    /// <summary>The guest observes one file of its storage through a description (read, fstat, lseek): where the
    /// primary of a pair on shared storage waits for the changes held for that file only.</summary>
    internal void SettleFile(OpenFile f) => Boundary.SettleFile(Current.Tid, f.HostFd);

    /// <summary>The guest looks a path up: where the primary of a pair on shared storage waits for held changes of
    /// names (null, so that it chains before the call it precedes).</summary>
    long? SettleNames()
    {
        Boundary.SettleNames(Current.Tid);
        return null;
    }

    /// <summary>0, or the -errno of a held change of the description's file that failed on the storage after the
    /// guest was told it succeeded (<see cref="DeferredStorageError"/>); taken once. Inside a host operation, so the
    /// answer is logged.</summary>
    long DeferredError(int fd) => Fds.TryGetValue(fd, out var f) && f is HostFile h ? h.ReleaseErrors.Take() : 0;

    /// <summary>Absolute guest path for a path relative to a guest directory descriptor.</summary>
    long GuestAbs(int dirfd, string path, out string abs)
    {
        abs = path;
        if (path.StartsWith('/')) return 0;
        if (dirfd == At.FDCWD) { abs = GuestFs.Join(P.Cwd, path); return 0; }
        if (!Fds.TryGetValue(dirfd, out var d)) return -Errno.EBADF;
        if (!d.IsDirectory) return -Errno.ENOTDIR;
        abs = path.Length == 0 ? d.GuestPath : GuestFs.Join(d.GuestPath, path);
        return 0;
    }

    /// <summary>Is this guest path one the VM answers itself rather than the host (/proc/self/...)?</summary>
    static bool IsProcSelf(string abs, out string rest)
    {
        rest = "";
        foreach (var pre in new[] { "/proc/self/", "/proc/thread-self/" })
            if (abs.StartsWith(pre)) { rest = abs.Substring(pre.Length); return true; }
        return false;
    }

    static readonly byte[] EmptyPath = [0];

    /// <summary>Gives the unnamed file behind host descriptor <paramref name="fd"/> (an O_TMPFILE one) the name
    /// <paramref name="name"/> in <paramref name="dir"/>: linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW, which
    /// needs no privilege (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH). 0 or -errno.</summary>
    static unsafe long LinkUnnamed(int fd, int dir, byte[] name)
    {
        fixed (byte* n = name) { long np = (long)n; return ViaFd(fd, p => HostSys.Call(Nr.linkat, At.FDCWD, p, dir, np, At.SYMLINK_FOLLOW)); }
    }

    /// <summary>Calls a host ...at syscall with "" as its path (with At.EMPTY_PATH it acts on the descriptor itself).</summary>
    static unsafe long AtEmpty(Func<long, long> call) { fixed (byte* e = EmptyPath) return call((long)e); }

    /// <summary>Calls a path syscall on the object a descriptor holds, named through this process's descriptor
    /// table (for calls with no descriptor form): the host resolves /proc/self/fd/N to that very object.</summary>
    static unsafe long ViaFd(int fd, Func<long, long> call)
    {
        var z = HostSys.Z($"/proc/self/fd/{fd}");
        fixed (byte* p = z) return call((long)p);
    }

    /// <summary>An operation on the object a guest path names: `call` gets an O_PATH descriptor of it, resolved
    /// inside the root by <see cref="GuestFs.OnObject"/> (a final symlink followed when `follow`).</summary>
    long PathOp(CpuT cpu, int nr, int dirfd, ulong pathAddr, bool follow, Func<int, long> call, bool reexecuteOnReplay = false)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcPathOp(nr, ref abs, follow) is long pr) return pr;
        if (reexecuteOnReplay) SettleFiles();
        else SettleNames();
        long r = Host(cpu, nr, () => HostResult.Of(Fs.OnObject(abs, follow, call)), reexecuteOnReplay).Value;
        if (reexecuteOnReplay && r >= 0) Changes.Mark(abs); // chmod, fchmodat
        return r;
    }

    /// <summary>mknod/mknodat of what an unprivileged process may make: a FIFO, a regular file or a socket's name
    /// (devices: EPERM, as Linux answers without CAP_MKNOD).</summary>
    long MknodAt(CpuT cpu, int nr, int dirfd, ulong pathAddr, uint mode)
    {
        uint type = mode & SMode.IFMT;
        if (type is not (0 or SMode.IFREG or SMode.IFIFO or SMode.IFSOCK)) return type is SMode.IFCHR or SMode.IFBLK ? -Errno.EPERM : -Errno.EINVAL;
        uint perm = mode & 0xFFF & ~(uint)P.Umask;
        return NameOp(cpu, nr, dirfd, pathAddr, -Errno.EEXIST, (d, n) => HostSys.Call(Nr.mknodat, d, n, type | perm, 0), StorageChangeKind.Mknod);
    }

    /// <summary>
    /// chmod and fchmodat (a final symlink followed), fchmod (<paramref name="pathAddr"/> 0: the description
    /// <paramref name="dirfd"/>): a change a primary on shared storage holds (<see cref="MetadataChange"/>). Made
    /// through /proc/self/fd of a host descriptor of the file, which may be an O_PATH one.
    /// </summary>
    long Chmod(CpuT cpu, int nr, int dirfd, ulong pathAddr, uint mode)
        => MetadataChange(cpu, nr, StorageChangeKind.Chmod, dirfd, pathAddr, true, mode, null,
            fd => ViaFd(fd, p => HostSys.Call(Nr.fchmodat, At.FDCWD, p, mode)));

    /// <summary>
    /// A change of a file's mode or times (<paramref name="kind"/>), by path (a final symlink followed when
    /// <paramref name="follow"/>) or, with <paramref name="pathAddr"/> 0, through the description
    /// <paramref name="dirfd"/>. <paramref name="onFile"/> makes it through a host descriptor of the file (an O_PATH one
    /// by path). A change a primary on shared storage holds (<see cref="IBoundary.StorageChange"/>) through a
    /// descriptor of its own, so it follows the file as a held truncation does; a survivor makes it again by path.
    /// </summary>
    long MetadataChange(CpuT cpu, int nr, StorageChangeKind kind, int dirfd, ulong pathAddr, bool follow, uint mode, byte[]? times, Func<int, long> onFile)
    {
        OpenFile? f = null;
        string abs;
        if (pathAddr == 0)
        {
            if (!Fds.TryGetValue(dirfd, out f)) return -Errno.EBADF;
            abs = f.GuestPath;
        }
        else
        {
            long e = GuestAbs(dirfd, Path(pathAddr), out abs);
            if (e < 0) return e;
            if (ProcPathOp(nr, ref abs, follow) is long pr) return pr;
        }
        SettleFiles();
        Func<HostResult> perform = () => HostResult.Of(f != null ? onFile(f.HostFd) : Fs.OnObject(abs, follow, onFile));
        // a description of something other than a file of the guest's storage (a pipe, a socket, a terminal)
        long r = f is not null and not HostFile { OnStorage: true } || !abs.StartsWith('/')
            ? Host(cpu, nr, perform, true).Value
            : Boundary.StorageChange(cpu.Tid, nr, new GuestStorageChange
            {
                Kind = kind, Path = abs, HostFd = f?.HostFd ?? -1, Mode = mode, Times = times, Follow = follow,
                Errors = (f as HostFile)?.ReleaseErrors, OnFile = onFile, Perform = perform,
            }).Value;
        if (r >= 0 && f != null) Changes.Mark(f);
        else if (r >= 0) Changes.Mark(abs);
        return r;
    }

    /// <summary>An operation on the name a guest path ends in (mkdir, unlink, rmdir): `call` gets the directory
    /// descriptor and the name (<see cref="GuestFs.InParent"/>); the root and "."/".." get `noName`. With a
    /// <paramref name="kind"/>, a change a primary on shared storage holds (<see cref="IBoundary.StorageChange"/>).</summary>
    unsafe long NameOp(CpuT cpu, int nr, int dirfd, ulong pathAddr, int noName, Func<int, long, long> call, StorageChangeKind? kind = null)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (IsProcSelf(abs, out _)) return -Errno.ENOENT;
        SettleFiles();
        Func<HostResult> perform = () => HostResult.Of(Fs.InParent(abs, noName, (d, name) => { fixed (byte* n = name) return call(d, (long)n); }));
        long r = kind is { } k
            ? Boundary.StorageChange(cpu.Tid, nr, new GuestStorageChange { Kind = k, Path = GuestFs.Normalize(abs), Perform = perform }).Value
            : Host(cpu, nr, perform, true).Value;
        if (r >= 0) Changes.Mark(abs);
        return r;
    }

    long Truncate(CpuT cpu, ulong pathAddr, long length)
    {
        long e = GuestAbs(At.FDCWD, Path(pathAddr), out var abs);
        if (e < 0) return e;
        if (IsProcSelf(abs, out _)) return -Errno.ENOENT;
        SettleFiles();
        long res = Boundary.StorageChange(cpu.Tid, Nr.truncate, new GuestStorageChange
        {
            Kind = StorageChangeKind.Truncate, Path = abs, Length = length,
            Perform = () =>
            {
                if (length < 0) return HostResult.Of(-Errno.EINVAL);
                long fd = TruncateOpen.ForWriting(Fs, abs);
                if (fd < 0) return HostResult.Of(fd);
                long r = HostSys.Call(Nr.ftruncate, fd, length);
                HostSys.Call(Nr.close, fd);
                return HostResult.Of(r);
            },
        }).Value;
        if (res >= 0) Changes.Mark(abs);
        return res;
    }

    /// <summary>ftruncate: a change of size a primary on shared storage holds (<see cref="IBoundary.StorageChange"/>);
    /// it goes to the description's file (its host descriptor), a survivor's by the path the description has.</summary>
    long Ftruncate(CpuT cpu, int fd, long length)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        SettleFiles();
        long r = Boundary.StorageChange(cpu.Tid, Nr.ftruncate, new GuestStorageChange
        {
            Kind = StorageChangeKind.Truncate, Path = f.GuestPath, Length = length, HostFd = f.HostFd,
            Writable = (f.StatusFlags & O.ACCMODE) != O.RDONLY, Errors = (f as HostFile)?.ReleaseErrors,
            Perform = () => HostResult.Of(HostSys.Call(Nr.ftruncate, f.HostFd, length)),
        }).Value;
        if (r >= 0) Changes.Mark(f);
        return r;
    }

    unsafe long PathBuffer(CpuT cpu, int nr, int dirfd, ulong pathAddr, bool follow, ulong guestBuf, int len, Func<long, long, long> call)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcStat(cpu, nr, ref abs, follow, guestBuf, len) is long pr) return pr;
        CheckWritable(guestBuf, (ulong)len);
        SettleFiles(); // stat: sizes with the guest's own writes
        return Host(cpu, nr, () =>
        {
            var buf = new byte[len];
            long r = Fs.OnObject(abs, follow, fd => { fixed (byte* b = buf) return call(fd, (long)b); });
            var res = HostResult.Of(r);
            if (r >= 0) res.Write(guestBuf, buf);
            return res;
        }).Value;
    }

    /// <summary>rename (with <paramref name="renameFlags"/>; the guest's descriptions of what moved follow it) or
    /// link (<paramref name="kind"/>): a change a primary on shared storage holds (<see cref="IBoundary.StorageChange"/>).</summary>
    unsafe long TwoPaths(CpuT cpu, int nr, int d1, ulong p1, int d2, ulong p2, Func<int, long, int, long, long> call, StorageChangeKind kind, uint renameFlags = 0)
    {
        long e = GuestAbs(d1, Path(p1), out var a1);
        if (e < 0) return e;
        e = GuestAbs(d2, Path(p2), out var a2);
        if (e < 0) return e;
        SettleFiles();
        Func<HostResult> perform = () => HostResult.Of(Fs.InParents(a1, a2, -Errno.EBUSY, (dir1, n1, dir2, n2) =>
        {
            fixed (byte* q1 = n1) fixed (byte* q2 = n2) return call(dir1, (long)q1, dir2, (long)q2);
        }));
        long r = Boundary.StorageChange(cpu.Tid, nr, new GuestStorageChange
            { Kind = kind, Path = GuestFs.Normalize(a1), Target = GuestFs.Normalize(a2), Flags = renameFlags, Perform = perform }).Value;
        if (r >= 0) { Changes.Mark(a1); Changes.Mark(a2); } // rename: both names; link: the new one (and the old, harmless)
        if (r >= 0 && kind == StorageChangeKind.Rename) Renamed(GuestFs.Normalize(a1), GuestFs.Normalize(a2), (renameFlags & RenameFlags.EXCHANGE) != 0);
        return r;
    }

    /// <summary>
    /// A rename was made: the guest's descriptions of what it moved (the file, or anything below the directory) get
    /// its new path, as Linux's descriptions follow their file. Openat relative to a moved directory, /proc/self/fd and
    /// a takeover's re-opening (and a survivor's writes again) use it. The same in every run: it follows the logged result.
    /// </summary>
    void Renamed(string from, string to, bool exchange)
    {
        if (from == to) return;
        var seen = new HashSet<OpenFile>(ReferenceEqualityComparer.Instance);
        foreach (var proc in Processes)
            foreach (var f in proc.Fds.Files)
            {
                if (!seen.Add(f) || !f.GuestPath.StartsWith('/')) continue;
                string path = GuestFs.Normalize(f.GuestPath);
                if (Moved(path, from, to) is { } moved) f.GuestPath = moved;
                else if (exchange && Moved(path, to, from) is { } back) f.GuestPath = back;
            }
    }

    static string? Moved(string path, string from, string to)
    {
        if (path == from) return to;
        if (path.Length > from.Length && path.StartsWith(from, StringComparison.Ordinal) && path[from.Length] == '/') return to + path[from.Length..];
        return null;
    }

    /// <summary>symlink/symlinkat (logged as symlinkat): a change a primary on shared storage holds
    /// (<see cref="IBoundary.StorageChange"/>).</summary>
    unsafe long Symlink(CpuT cpu, ulong target, int dirfd, ulong linkpath)
    {
        string t = Path(target);
        long e = GuestAbs(dirfd, Path(linkpath), out var abs);
        if (e < 0) return e;
        var zt = HostSys.Z(t);
        SettleFiles();
        long r = Boundary.StorageChange(cpu.Tid, Nr.symlinkat, new GuestStorageChange
        {
            Kind = StorageChangeKind.Symlink, Path = GuestFs.Normalize(abs), Target = t,
            Perform = () => HostResult.Of(Fs.InParent(abs, -Errno.EEXIST, (dir, name) =>
            {
                fixed (byte* q1 = zt) fixed (byte* q2 = name) return HostSys.Call(Nr.symlinkat, (long)q1, dir, (long)q2);
            })),
        }).Value;
        if (r >= 0) Changes.Mark(abs);
        return r;
    }

    // ---------------------------------------------------------------- file syscalls

    unsafe long OpenAt(CpuT cpu, int dirfd, ulong pathAddr, int flags, int mode)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcOpen(cpu, ref abs, flags) is long pr) return pr;
        int isDir = 0;
        var t = Current;
        int hostMode = mode & ~P.Umask & 0xFFF;
        if ((flags & (O.CREAT | O.TRUNC)) != 0) SettleFiles(); // it may change the names or a file's size
        else SettleNames(); // it looks the path up among the names the guest made
        Func<HostResult> perform = () =>
        {
            // a FIFO's open waits for its other end with the calling thread only
            var opened = OpenWithoutWaiting(t, abs, flags, () => Fs.Open(abs, flags | O.CLOEXEC, hostMode));
            long r = opened.Value;
            if (r == WouldBlock) return opened;
            // the host's procfs reached by a route the path check did not see (a symlink under root "/"): not the guest's
            if (r >= 0 && ProcFs.IsHostProcFs(r)) { HostSys.Call(Nr.close, r); r = -Errno.ENOENT; }
            var hr = HostResult.Of(r);
            if (r >= 0)
            {
                isDir = HostStat.Of((int)r) is { IsDirectory: true } ? 1 : 0;
                hr.Value = ((long)isDir << 32) | r; // host fd and directory bit travel together
            }
            return hr;
        };
        // an open that may create its name or truncate its file (not an unnamed O_TMPFILE one): a primary on shared
        // storage holds the creation or the truncation (<see cref="IBoundary.StorageChange"/>), the guest working on
        // the file meanwhile
        var errors = new DeferredStorageError(); // the new description's: a creation or truncation refused at release reports there
        var res = (flags & (O.CREAT | O.TRUNC)) != 0 && (flags & O.TMPFILE & ~O.DIRECTORY) == 0
            ? Boundary.StorageChange(cpu.Tid, Nr.openat, new GuestStorageChange
            {
                Kind = StorageChangeKind.Open, Path = abs, OpenFlags = flags, Mode = (uint)hostMode, Perform = perform, Errors = errors,
                OnFile = fd => Fs.InParent(abs, -Errno.EISDIR, (dir, name) => LinkUnnamed(fd, dir, name)),
            })
            : Host(cpu, Nr.openat, perform, reexecuteOnReplay: true);
        // a following backup opened the file on its own root too: it keeps its own descriptor
        int local = res.Local is long l && l >= 0 ? (int)(l & 0xFFFFFFFF) : -1;
        if (res.Value < 0)
        {
            if (local >= 0) HostSys.Call(Nr.close, local); // the primary's open failed: drop this replica's own descriptor
            return res.Value;
        }
        if ((flags & (O.CREAT | O.TRUNC)) != 0) Changes.Mark(abs);
        var file = new HostFile
        {
            HostFd = Boundary.HostDescriptor(res.Value & 0xFFFFFFFF, local),
            GuestPath = abs,
            Directory = (res.Value >> 32) != 0,
            StatusFlags = flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC),
            ReleaseErrors = errors,
        };
        return Fds.Install(file, (flags & O.CLOEXEC) != 0);
    }

    long Close(GuestThread t, int fd)
    {
        if (!Fds.Remove(fd, out var f)) return -Errno.EBADF;
        return Release(t, f);
    }

    /// <summary>A descriptor referring to `f` went away: the last one closes the description.</summary>
    long Release(GuestThread t, OpenFile f)
    {
        if (--f.RefCount > 0) return 0;
        return f.Close(this, t);
    }

    long Dup(GuestThread t, int oldfd, int newfd, bool cloexec)
    {
        if (!Fds.TryGetValue(oldfd, out var f)) return -Errno.EBADF;
        if (newfd < 0) newfd = Fds.LowestFree();
        else if (newfd > FdTable.MaxFd) return -Errno.EBADF;
        if (Fds.ContainsKey(newfd)) Close(t, newfd);
        f.RefCount++;
        Fds.InstallAt(newfd, f, cloexec);
        return newfd;
    }

    long Fcntl(CpuT cpu, int fd, int cmd, ulong arg)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        switch (cmd)
        {
            case F.DUPFD:
            case F.DUPFD_CLOEXEC:
                {
                    if (arg > FdTable.MaxFd) return -Errno.EINVAL;
                    f.RefCount++;
                    return Fds.Install(f, cmd == F.DUPFD_CLOEXEC, (int)arg);
                }
            case F.GETFD: return Fds.CloseOnExec(fd) ? F.FD_CLOEXEC : 0;
            case F.SETFD: Fds.SetCloseOnExec(fd, (arg & F.FD_CLOEXEC) != 0); return 0;
            case F.GETFL:
            case F.SETFL:
                {
                    long r = Host(cpu, Nr.fcntl, () => HostResult.Of(f.HostFd >= 0 ? HostSys.Call(Nr.fcntl, f.HostFd, cmd, (long)arg) : cmd == F.GETFL ? f.StatusFlags : 0), true).Value;
                    if (cmd == F.SETFL && r >= 0) f.StatusFlags = (f.StatusFlags & ~(O.APPEND | O.NONBLOCK)) | ((int)arg & (O.APPEND | O.NONBLOCK));
                    return r;
                }
            case F.GETLK: case F.SETLK: case F.SETLKW: return 0; // locks: a single process never conflicts with itself
            default: return -Errno.EINVAL;
        }
    }

    long Read(GuestThread t, int fd, ulong buf, ulong count, long offset)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        return f.Read(this, t, buf, (int)Math.Min(count, 1 << 24), offset);
    }

    long Write(GuestThread t, int fd, ulong buf, ulong count, long offset)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        int n = (int)Math.Min(count, 1 << 24);
        var data = Mem.ReadBytes(buf, n);
        return f.Write(this, t, data, offset);
    }

    /// <summary>
    /// A write through the boundary to the host descriptor behind a description. `output`: the bytes leave the
    /// VM (stdout, stderr), so output commit applies and the boundary sees them; `reexecuteOnReplay`: a file of
    /// the guest's, which a following backup writes to its own copy too. A blocking write at the file offset to a
    /// host pipe, FIFO, socket or terminal never blocks the machine: it moves what the host takes and parks its
    /// thread for the rest (<see cref="WriteWithoutWaiting"/>, <see cref="RestWaits"/>).
    /// </summary>
    internal unsafe long WriteHost(CpuT cpu, OpenFile f, byte[] data, long offset, bool output, bool reexecuteOnReplay)
    {
        var t = Current;
        int nr = offset < 0 ? Nr.write : Nr.pwrite64;
        bool blocking = offset < 0 && (f.StatusFlags & O.NONBLOCK) == 0 && !t.WriteMustNotPark;
        int done = blocking ? (int)Math.Min(t.PartialDone, data.Length) : 0;
        var rest = done == 0 ? data : data[done..];
        Func<HostResult> perform = () =>
        {
            // a following backup writes its own copy of a file; the guest's pipes, FIFOs and terminals are not its own
            if (Boundary.Replaying && WritesMayWait(f)) return HostResult.Of(rest.Length);
            if (blocking && !Boundary.Replaying && WritesMayWait(f)) return WriteWithoutWaiting(t, f, rest);
            // a following backup re-executes file writes on its own copy; its descriptor's position does not move
            // with replayed reads and seeks, so it writes at the guest-visible offset (decided when it runs: the
            // same call can be the one at which the replica turns live)
            long at = offset < 0 && Boundary.Replaying && (f.StatusFlags & O.APPEND) == 0 ? f.Offset : offset;
            fixed (byte* p = rest)
                return HostResult.Of(at < 0 ? HostSys.Call(Nr.write, f.HostFd, (long)p, rest.Length)
                                            : HostSys.Call(Nr.pwrite64, f.HostFd, (long)p, rest.Length, at));
        };
        long r = output ? Boundary.Output(cpu.Tid, nr, f.HostFd, rest, perform).Value
               : reexecuteOnReplay ? Boundary.FileWrite(cpu.Tid, nr, new GuestFileWrite
                   {
                       HostFd = f.HostFd, Data = rest, Offset = offset, FileOffset = f.Offset,
                       Append = (f.StatusFlags & O.APPEND) != 0, GuestPath = f.GuestPath, Perform = perform,
                       Errors = (f as HostFile)?.ReleaseErrors, Writable = (f.StatusFlags & O.ACCMODE) != O.RDONLY,
                   }).Value
               : Host(cpu, nr, perform).Value;
        if (r == WouldBlock) return r;
        if (output && r > 0) Boundary.OnOutput(this, cpu, f.HostFd, rest.AsSpan(0, (int)r));
        if (!output && r > 0 && offset < 0) f.Offset += r;
        if (r < 0) return done > 0 ? done : r;
        if (blocking && r < rest.Length && RestWaits(t, nr, f, done + r) is long wait) return wait;
        return done + r;
    }

    long Readv(CpuT cpu, int fd, ulong iov, int cnt)
    {
        if (cnt < 0 || cnt > 1024) return -Errno.EINVAL;
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        var vecs = new List<(ulong, ulong)>();
        ulong total = 0;
        for (int k = 0; k < cnt; k++)
        {
            ulong b = Mem.Read64(iov + (ulong)k * 16), l = Mem.Read64(iov + (ulong)k * 16 + 8);
            if (l > 0) CheckWritable(b, l);
            vecs.Add((b, l)); total += l;
        }
        int n = (int)Math.Min(total, 1 << 24);
        if (f is HostFile { OnStorage: true }) SettleFile(f);
        long got = f.Receive(() => Host(cpu, Nr.readv, () =>
        {
            if (WouldWait(Current, f, Poll.IN) is long w) return HostResult.Of(w);
            var tmp = ReadScratch(n);
            long r;
            unsafe { fixed (byte* p = tmp) r = HostSys.Call(Nr.read, f.HostFd, (long)p, n); }
            var res = HostResult.Of(r);
            long off = 0;
            foreach (var (b, l) in vecs)
            {
                if (off >= r) break;
                long take = Math.Min((long)l, r - off);
                res.Write(b, tmp.AsSpan((int)off, (int)take).ToArray());
                off += take;
            }
            return res;
        }).Value);
        if (got > 0) f.Offset += got;
        return got;
    }

    long Writev(CpuT cpu, int fd, ulong iov, int cnt)
    {
        if (cnt < 0 || cnt > 1024) return -Errno.EINVAL;
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        var ms = new MemoryStream();
        for (int k = 0; k < cnt; k++)
        {
            ulong b = Mem.Read64(iov + (ulong)k * 16), l = Mem.Read64(iov + (ulong)k * 16 + 8);
            if (l > 0) ms.Write(Mem.ReadBytes(b, (int)Math.Min(l, 1 << 24)));
        }
        return f.Write(this, Current, ms.ToArray(), -1);
    }

    unsafe long FstatAt(CpuT cpu, int dirfd, ulong pathAddr, ulong buf, int flags)
    {
        string path = Path(pathAddr);
        if (path.Length == 0 && (flags & At.EMPTY_PATH) != 0 && ProcDirStat(dirfd, buf, statx: false) is long ps) return ps;
        if (path.Length == 0 && (flags & At.EMPTY_PATH) != 0)
            return Fds.TryGetValue(dirfd, out var vf) && vf.StatMode is { } mode ? StatInVm(buf, mode, vf.StatInode)
                : SettledFdBuffer(cpu, Nr.newfstatat, dirfd, buf, 144, (h, b) => HostSys.Call(Nr.fstat, h, b));
        return PathBuffer(cpu, Nr.newfstatat, dirfd, pathAddr, (flags & At.SYMLINK_NOFOLLOW) == 0, buf, 144,
            (fd, b) => AtEmpty(e => HostSys.Call(Nr.newfstatat, fd, e, b, At.EMPTY_PATH)));
    }

    long Statx(CpuT cpu, int dirfd, ulong pathAddr, int flags, uint mask, ulong buf)
    {
        string path = Path(pathAddr);
        if (path.Length == 0 && (flags & At.EMPTY_PATH) != 0 && ProcDirStat(dirfd, buf, statx: true) is long ps) return ps;
        if (path.Length == 0 && (flags & At.EMPTY_PATH) != 0)
        {
            if (!Fds.TryGetValue(dirfd, out var f)) return -Errno.EBADF;
            if (f is HostFile { OnStorage: true }) SettleFile(f);
            var empty = HostSys.Z("");
            return HostBuffer(cpu, Nr.statx, buf, 256, b => { unsafe { fixed (byte* e = empty) return HostSys.Call(Nr.statx, f.HostFd, (long)e, At.EMPTY_PATH | (flags & ~At.EMPTY_PATH), mask, b); } });
        }
        return PathBuffer(cpu, Nr.statx, dirfd, pathAddr, (flags & At.SYMLINK_NOFOLLOW) == 0, buf, 256,
            (fd, b) => AtEmpty(e => HostSys.Call(Nr.statx, fd, e, At.EMPTY_PATH | (flags & ~(At.SYMLINK_NOFOLLOW | At.EMPTY_PATH)), mask, b)));
    }

    /// <summary>readlink and readlinkat; logged under the guest's own syscall number (the replay checks the write
    /// against that call's buffer argument).</summary>
    unsafe long ReadlinkAt(CpuT cpu, int nr, int dirfd, ulong pathAddr, ulong buf, ulong size)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if ((long)size <= 0) return -Errno.EINVAL;
        int n = (int)Math.Min(size, 4096);
        CheckWritable(buf, (ulong)n);
        if (ProcReadlink(cpu, abs, buf, n) is long pr) return pr;
        SettleNames();
        return Host(cpu, nr, () =>
        {
            var tmp = new byte[n];
            long r = Fs.OnObject(abs, false, fd => { fixed (byte* t = tmp) { long tp = (long)t; return AtEmpty(e => HostSys.Call(Nr.readlinkat, fd, e, tp, n)); } });
            var res = HostResult.Of(r);
            if (r > 0) res.Write(buf, tmp.AsSpan(0, (int)r).ToArray());
            return res;
        }).Value;
    }

    /// <summary>utimensat (logged as such; futimesat and utimes come here with their times as timespecs): a change a
    /// primary on shared storage holds (<see cref="MetadataChange"/>), made with AT_EMPTY_PATH on a host descriptor
    /// of the file.</summary>
    unsafe long Utimensat(CpuT cpu, int dirfd, ulong pathAddr, byte[]? t, int flags)
        => MetadataChange(cpu, Nr.utimensat, StorageChangeKind.Utimes, dirfd, pathAddr, (flags & At.SYMLINK_NOFOLLOW) == 0, 0, t,
            fd => { fixed (byte* tp = t) { long tt = t == null ? 0 : (long)tp; return AtEmpty(e => HostSys.Call(Nr.utimensat, fd, e, tt, At.EMPTY_PATH)); } });

    /// <summary>futimesat and utimes: two timevals (or none: now) as utimensat's timespecs; a microsecond count out of
    /// [0, 1e6) is EINVAL, as Linux answers before looking the path up.</summary>
    long Futimesat(CpuT cpu, int dirfd, ulong pathAddr, ulong times)
    {
        byte[]? t = null;
        if (times != 0)
        {
            var tv = Mem.ReadBytes(times, 32);
            t = new byte[32];
            for (int i = 0; i < 2; i++)
            {
                long sec = BinaryPrimitives.ReadInt64LittleEndian(tv.AsSpan(16 * i)), usec = BinaryPrimitives.ReadInt64LittleEndian(tv.AsSpan(16 * i + 8));
                if (usec is < 0 or >= 1_000_000) return -Errno.EINVAL;
                BinaryPrimitives.WriteInt64LittleEndian(t.AsSpan(16 * i), sec);
                BinaryPrimitives.WriteInt64LittleEndian(t.AsSpan(16 * i + 8), usec * 1000);
            }
        }
        return Utimensat(cpu, dirfd, pathAddr, t, 0);
    }

    long Getcwd(ulong buf, ulong size)
    {
        var b = Encoding.UTF8.GetBytes(P.Cwd + "\0");
        if ((ulong)b.Length > size) return -Errno.ERANGE;
        CheckWritable(buf, (ulong)b.Length);
        Mem.WriteBytes(buf, b);
        return b.Length;
    }

    unsafe long Chdir(CpuT cpu, ulong pathAddr)
    {
        string path = Path(pathAddr);
        GuestAbs(At.FDCWD, path, out var abs);
        SettleNames();
        long r = Host(cpu, Nr.chdir, () =>
        {
            HostStat st = default;
            long e = Fs.OnObject(abs, true, fd => HostStat.Of(fd, out st));
            if (e < 0) return HostResult.Of(e);
            return HostResult.Of(st.IsDirectory ? 0 : -Errno.ENOTDIR);
        }).Value;
        if (r == 0) P.Cwd = GuestFs.Normalize(abs);
        return r;
    }


    /// <summary>Pipes made so far (a pipe's inode number: distinct, and the same in a replay).</summary>
    ulong _pipes;

    /// <summary>pipe/pipe2: an in-VM pipe (never the host's, so nothing is logged).</summary>
    long MakePipe(ulong fdsAddr, int flags)
    {
        if ((flags & ~(O.CLOEXEC | O.NONBLOCK | O.DIRECT)) != 0) return -Errno.EINVAL;
        CheckWritable(fdsAddr, 8);
        var pipe = new Pipe(++_pipes);
        bool cloexec = (flags & O.CLOEXEC) != 0;
        int r0 = Fds.Install(new PipeReader(pipe, flags), cloexec);
        int w0 = Fds.Install(new PipeWriter(pipe, flags), cloexec);
        Mem.Write32(fdsAddr, (uint)r0);
        Mem.Write32(fdsAddr + 4, (uint)w0);
        return 0;
    }

    unsafe long Sendfile(CpuT cpu, int outFd, int inFd, ulong offPtr, ulong count)
    {
        if (!Fds.TryGetValue(outFd, out var o) || !Fds.TryGetValue(inFd, out var i)) return -Errno.EBADF;
        int n = (int)Math.Min(count, 1 << 20);
        long offset = offPtr != 0 ? (long)Mem.Read64(offPtr) : -1;
        if (i is HostFile { OnStorage: true }) SettleFile(i);
        // read through the boundary (input), then write as the guest would
        var rd = Boundary.Syscall(cpu.Tid, Nr.sendfile, () =>
        {
            var tmp = new byte[n];
            long r;
            fixed (byte* p = tmp) r = offset < 0 ? HostSys.Call(Nr.read, i.HostFd, (long)p, n) : HostSys.Call(Nr.pread64, i.HostFd, (long)p, n, offset);
            var res = HostResult.Of(r);
            if (r > 0) res.Write(0, tmp.AsSpan(0, (int)r).ToArray());
            return res;
        });
        if (rd.Value <= 0) return rd.Value;
        if (offset < 0) i.Offset += rd.Value;
        var data = rd.Writes[0].Bytes;
        rd.ClearWrites();
        long w;
        Current.WriteMustNotPark = true;
        try { w = o.Write(this, Current, data, -1); }
        finally { Current.WriteMustNotPark = false; }
        if (w > 0 && offPtr != 0) Mem.Write64(offPtr, (ulong)(offset + w));
        return w;
    }

    long IoctlFd(CpuT cpu, int fd, ulong req, ulong arg)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        switch (req)
        {
            case Ioctl.TCGETS:
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 36, (h, b) => HostSys.Call(Nr.ioctl, h, (long)Ioctl.TCGETS, b));
            case Ioctl.TIOCGWINSZ:
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 8, (h, b) => HostSys.Call(Nr.ioctl, h, (long)Ioctl.TIOCGWINSZ, b));
            case Ioctl.TIOCGPGRP:
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 4, (h, b) => HostSys.Call(Nr.ioctl, h, (long)Ioctl.TIOCGPGRP, b));
            case Ioctl.FIONREAD:
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 4, (h, b) => HostSys.Call(Nr.ioctl, h, (long)Ioctl.FIONREAD, b));
            case Ioctl.TCSETS: case Ioctl.TCSETSW: case Ioctl.TCSETSF:
                {
                    var t = Mem.ReadBytes(arg, 36);
                    return OnHostFd(cpu, Nr.ioctl, fd, h => { unsafe { fixed (byte* p = t) return HostSys.Call(Nr.ioctl, h, (long)req, (long)p); } });
                }
            case Ioctl.FIONBIO:
                {
                    var on = Mem.ReadBytes(arg, 4);
                    return OnHostFd(cpu, Nr.ioctl, fd, h => { unsafe { fixed (byte* p = on) return HostSys.Call(Nr.ioctl, h, (long)Ioctl.FIONBIO, (long)p); } });
                }
            case Ioctl.FIOCLEX: Fds.SetCloseOnExec(fd, true); return 0;
            case Ioctl.FIONCLEX: Fds.SetCloseOnExec(fd, false); return 0;
            default: return -Errno.ENOTTY;
        }
    }

    /// <summary>fstat of a description that exists only in the VM: its type and mode, everything else zero.</summary>
    long StatInVm(ulong buf, uint mode, ulong inode)
    {
        CheckWritable(buf, SMode.StatSize);
        var st = new byte[SMode.StatSize];
        BitConverter.GetBytes(mode).CopyTo(st, SMode.StModeOffset);
        BitConverter.GetBytes(inode).CopyTo(st, SMode.StInoOffset);
        BitConverter.GetBytes(SMode.PipeFsDev).CopyTo(st, 0); // st_dev
        BitConverter.GetBytes(1u).CopyTo(st, 16); // st_nlink
        BitConverter.GetBytes(4096L).CopyTo(st, 56); // st_blksize
        Mem.WriteBytes(buf, st);
        return 0;
    }
}
