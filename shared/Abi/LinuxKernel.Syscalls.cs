using System.Buffers.Binary;
using System.Text;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Abi;

public sealed partial class LinuxKernel
{
    const int AT_FDCWD = -100;
    const int O_CLOEXEC = 0x80000, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000;
    const int O_CREAT = 0x40, O_EXCL = 0x80, O_TRUNC = 0x200, O_APPEND = 0x400, O_NONBLOCK = 0x800;
    const int AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000, AT_REMOVEDIR = 0x200;

    long Dispatch(CpuT cpu, int nr, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5, ulong a6)
    {
        switch (nr)
        {
            // ---------------- process
            case Nr.exit:
                return ExitThread(cpu, (int)a1);
            case Nr.clone: return Clone(cpu, a1, a2, a3, a4, a5);
            case Nr.clone3: return -Errno.ENOSYS; // libc falls back to clone
            case Nr.fork: case Nr.vfork: return Clone(cpu, 17, 0, 0, 0, 0);
            case Nr.futex: return Futex(cpu, a1, (int)a2, (uint)a3, a4, a5, (uint)a6);
            case Nr.exit_group:
                ExitStatus = (int)(a1 & 0xFF);
                Exited = true;
                cpu.Yield = true;
                return 0;
            case Nr.getpid: return Pid;
            case Nr.gettid: return cpu.Tid;
            case Nr.getppid: return HostValue(cpu, nr, () => HostSys.Call(Nr.getppid));
            case Nr.getuid: case Nr.geteuid: case Nr.getgid: case Nr.getegid:
                return HostValue(cpu, nr, () => HostSys.Call(nr));
            case Nr.getpgrp: case Nr.getsid: case Nr.getpgid: return Pid;
            case Nr.setpgid: case Nr.setsid: return 0;
            case Nr.set_tid_address: cpu.ClearChildTid = a1; return cpu.Tid;
            case Nr.set_robust_list: return 0;
            case Nr.rseq: return -Errno.ENOSYS;
            case Nr.arch_prctl: return ArchPrctl(cpu, (int)a1, a2);
            case Nr.prctl: return Prctl((int)a1, a2);
            case Nr.uname: return Uname(cpu, a1);
            case Nr.prlimit64: return Prlimit(cpu, (int)a1, (int)a2, a3, a4);
            case Nr.getrlimit: return Prlimit(cpu, 0, (int)a1, 0, a2);
            case Nr.setrlimit: return 0;
            case Nr.sched_getaffinity:
                {
                    if (a2 < 8) return -Errno.EINVAL;
                    CheckWritable(a3, 8);
                    Mem.WriteBytes(a3, BitConverter.GetBytes(1UL));
                    return 8;
                }
            case Nr.sched_setaffinity: return 0;
            case Nr.sched_yield: return SchedYield(cpu);
            case Nr.getcpu:
                if (a1 != 0) Mem.Write32(a1, 0);
                if (a2 != 0) Mem.Write32(a2, 0);
                return 0;
            case Nr.umask: { int old = _umask; _umask = (int)(a1 & 0x1FF); return old; }
            case Nr.sysinfo: return HostBuffer(cpu, nr, a1, 112, buf => HostSys.Call(Nr.sysinfo, buf));
            case Nr.getrusage: return HostBuffer(cpu, nr, a2, 144, buf => HostSys.Call(Nr.getrusage, (long)a1, buf));
            case Nr.times: return HostBuffer(cpu, nr, a1, a1 == 0 ? 0 : 32, buf => HostSys.Call(Nr.times, buf));
            case Nr.getgroups:
                if (a1 == 0) return 0;
                return 0;
            case Nr.getpriority: return 20;

            // ---------------- memory
            case Nr.brk: return Brk(a1);
            case Nr.mmap: return Mmap(cpu, a1, a2, (int)a3, (int)a4, (int)a5, (long)a6);
            case Nr.munmap:
                if ((a1 & GuestMemory.PageMask) != 0 || a2 == 0 || a2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
                Files.Unmapping(cpu.Tid, a1, a1 + a2);
                Mem.Unmap(a1, a2);
                return 0;
            case Nr.mprotect:
                if ((a1 & GuestMemory.PageMask) != 0) return -Errno.EINVAL;
                return Mem.Protect(a1, a2, (Prot)(a3 & 7)) ? 0 : -Errno.ENOMEM;
            case Nr.mremap: return Mremap(a1, a2, a3, (int)a4, a5);
            case Nr.madvise:
                if ((a1 & GuestMemory.PageMask) != 0 || a2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
                if (a3 == MADV_DONTNEED) Files.DontNeed(a1, a1 + ((a2 + GuestMemory.PageMask) & ~GuestMemory.PageMask));
                return 0;
            case Nr.msync:
                if ((a1 & GuestMemory.PageMask) != 0 || a2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
                Files.Sync(cpu.Tid, a1, a1 + a2);
                return 0;
            case Nr.mincore: return -Errno.ENOSYS;

            // ---------------- signals (emulated: see LinuxKernel.Signals.cs)
            case Nr.rt_sigaction: return RtSigaction(cpu, (int)a1, a2, a3, a4);
            case Nr.rt_sigprocmask: return RtSigprocmask(cpu, (int)a1, a2, a3, a4);
            case Nr.rt_sigreturn: return RtSigreturn(cpu);
            case Nr.sigaltstack: return Sigaltstack(cpu, a1, a2);
            case Nr.kill: case Nr.tgkill: return Kill(cpu, nr, a1, a2, a3);
            case Nr.tkill: return Kill(cpu, Nr.kill, a1, a2, 0);

            // ---------------- time
            case Nr.clock_gettime:
                return HostBuffer(cpu, nr, a2, 16, buf => HostSys.Call(Nr.clock_gettime, (long)a1, buf));
            case Nr.clock_getres:
                return HostBuffer(cpu, nr, a2, a2 == 0 ? 0 : 16, buf => HostSys.Call(Nr.clock_getres, (long)a1, buf));
            case Nr.gettimeofday:
                return HostBuffer(cpu, nr, a1, a1 == 0 ? 0 : 16, buf => HostSys.Call(Nr.gettimeofday, buf, 0));
            case Nr.time:
                {
                    long t = HostValue(cpu, nr, () => HostSys.Call(Nr.time, 0));
                    if (a1 != 0) Mem.Write64(a1, (ulong)t);
                    return t;
                }
            case Nr.setitimer: return Setitimer(cpu, (int)a1, a2, a3);
            case Nr.getitimer: return Getitimer(cpu, (int)a1, a2);
            case Nr.alarm: return Alarm(cpu, (uint)a1);
            case Nr.timer_create: return TimerCreate(cpu, (int)a1, a2, a3);
            case Nr.timer_settime: return TimerSettime(cpu, (int)a1, (int)a2, a3, a4);
            case Nr.timer_gettime: return TimerGettime(cpu, (int)a1, a2);
            case Nr.timer_getoverrun: return _posixTimers.ContainsKey((int)a1) ? 0 : -Errno.EINVAL;
            case Nr.timer_delete: return TimerDelete(cpu, (int)a1);
            case Nr.pause:
                if (Pending == 0) Host(cpu, nr, () => { while (!HostEventsPending && !Exited) Thread.Sleep(1); return HostResult.Of(-Errno.EINTR); });
                return -Errno.EINTR;
            case Nr.nanosleep:
                return Sleep(cpu, nr, a1, a2, () => 0);
            case Nr.clock_nanosleep:
                return Sleep(cpu, nr, a3, a4, () => a1);

            // ---------------- randomness
            case Nr.getrandom:
                {
                    ulong len = Math.Min(a2, 1 << 25);
                    CheckWritable(a1, len);
                    return Host(cpu, nr, () =>
                    {
                        var b = System.Security.Cryptography.RandomNumberGenerator.GetBytes((int)len);
                        return HostResult.Of((long)len).Write(a1, b);
                    }).Value;
                }

            // ---------------- files
            case Nr.read: return Read(cpu, (int)a1, a2, a3, -1);
            case Nr.pread64: return Read(cpu, (int)a1, a2, a3, (long)a4);
            case Nr.write: return Write(cpu, (int)a1, a2, a3, -1);
            case Nr.pwrite64: return Write(cpu, (int)a1, a2, a3, (long)a4);
            case Nr.readv: return Readv(cpu, (int)a1, a2, (int)a3);
            case Nr.writev: return Writev(cpu, (int)a1, a2, (int)a3);
            case Nr.open: return OpenAt(cpu, AT_FDCWD, a1, (int)a2, (int)a3);
            case Nr.creat: return OpenAt(cpu, AT_FDCWD, a1, 0x241, (int)a2);
            case Nr.openat: return OpenAt(cpu, (int)a1, a2, (int)a3, (int)a4);
            case Nr.close: return Close(cpu, (int)a1);
            case Nr.lseek:
                {
                    long r = OnHostFd(cpu, nr, (int)a1, h => HostSys.Call(Nr.lseek, h, (long)a2, (long)a3));
                    if (r >= 0 && Fds.TryGetValue((int)a1, out var lf)) lf.Offset = r;
                    return r;
                }
            case Nr.fstat when ProcDirStat((int)a1, a2, statx: false) is long ps: return ps;
            case Nr.fstat: return FdBuffer(cpu, nr, (int)a1, a2, 144, (h, buf) => HostSys.Call(Nr.fstat, h, buf));
            case Nr.stat: return PathBuffer(cpu, nr, AT_FDCWD, a1, true, a2, 144, (p, buf) => HostSys.Call(Nr.newfstatat, AT_FDCWD, p, buf, 0));
            case Nr.lstat: return PathBuffer(cpu, nr, AT_FDCWD, a1, false, a2, 144, (p, buf) => HostSys.Call(Nr.newfstatat, AT_FDCWD, p, buf, AT_SYMLINK_NOFOLLOW));
            case Nr.newfstatat: return FstatAt(cpu, (int)a1, a2, a3, (int)a4);
            case Nr.statx: return Statx(cpu, (int)a1, a2, (int)a3, (uint)a4, a5);
            case Nr.fstatfs: return FdBuffer(cpu, nr, (int)a1, a2, 120, (h, buf) => HostSys.Call(Nr.fstatfs, h, buf));
            case Nr.statfs: return PathBuffer(cpu, nr, AT_FDCWD, a1, true, a2, 120, (p, buf) => HostSys.Call(Nr.statfs, p, buf));
            case Nr.getdents64 when Fds.TryGetValue((int)a1, out var gd) && gd.SyntheticEntries != null: return ProcGetdents(gd, a2, a3);
            case Nr.getdents64: return FdBuffer(cpu, nr, (int)a1, a2, (int)Math.Min(a3, 1 << 20), (h, buf) => HostSys.Call(Nr.getdents64, h, buf, (long)Math.Min(a3, 1 << 20)), resultIsLength: true);
            case Nr.readlink: return ReadlinkAt(cpu, AT_FDCWD, a1, a2, a3);
            case Nr.readlinkat: return ReadlinkAt(cpu, (int)a1, a2, a3, a4);
            case Nr.access: return PathOp(cpu, nr, AT_FDCWD, a1, true, p => HostSys.Call(Nr.faccessat, AT_FDCWD, p, (long)a2));
            case Nr.faccessat: case Nr.faccessat2:
                return PathOp(cpu, nr, (int)a1, a2, true, p => HostSys.Call(Nr.faccessat, AT_FDCWD, p, (long)a3));
            case Nr.unlink: return PathOp(cpu, nr, AT_FDCWD, a1, false, p => HostSys.Call(Nr.unlinkat, AT_FDCWD, p, 0), true);
            case Nr.unlinkat: return PathOp(cpu, nr, (int)a1, a2, false, p => HostSys.Call(Nr.unlinkat, AT_FDCWD, p, (long)(a3 & AT_REMOVEDIR)), true);
            case Nr.rmdir: return PathOp(cpu, nr, AT_FDCWD, a1, false, p => HostSys.Call(Nr.unlinkat, AT_FDCWD, p, AT_REMOVEDIR), true);
            case Nr.mkdir: return PathOp(cpu, nr, AT_FDCWD, a1, false, p => HostSys.Call(Nr.mkdirat, AT_FDCWD, p, (long)a2), true);
            case Nr.mkdirat: return PathOp(cpu, nr, (int)a1, a2, false, p => HostSys.Call(Nr.mkdirat, AT_FDCWD, p, (long)a3), true);
            case Nr.chmod: return PathOp(cpu, nr, AT_FDCWD, a1, true, p => HostSys.Call(Nr.fchmodat, AT_FDCWD, p, (long)a2), true);
            case Nr.fchmodat: return PathOp(cpu, nr, (int)a1, a2, true, p => HostSys.Call(Nr.fchmodat, AT_FDCWD, p, (long)a3), true);
            case Nr.fchmod: return OnHostFd(cpu, nr, (int)a1, h => HostSys.Call(Nr.fchmod, h, (long)a2), true);
            case Nr.chown: case Nr.lchown: case Nr.fchown: case Nr.fchownat: return 0;
            // extended attributes: the guest's files carry none (ls -l asks for ACLs and SELinux labels)
            case Nr.getxattr: case Nr.lgetxattr: case Nr.fgetxattr: return -Errno.ENODATA;
            case Nr.listxattr: case Nr.llistxattr: case Nr.flistxattr: return 0;
            case Nr.utimensat: return Utimensat(cpu, (int)a1, a2, a3, (int)a4);
            case Nr.rename: return TwoPaths(cpu, nr, AT_FDCWD, a1, AT_FDCWD, a2, (p, q) => HostSys.Call(Nr.renameat2, AT_FDCWD, p, AT_FDCWD, q, 0));
            case Nr.renameat: return TwoPaths(cpu, nr, (int)a1, a2, (int)a3, a4, (p, q) => HostSys.Call(Nr.renameat2, AT_FDCWD, p, AT_FDCWD, q, 0));
            case Nr.renameat2: return TwoPaths(cpu, nr, (int)a1, a2, (int)a3, a4, (p, q) => HostSys.Call(Nr.renameat2, AT_FDCWD, p, AT_FDCWD, q, (long)a5));
            case Nr.link: return TwoPaths(cpu, nr, AT_FDCWD, a1, AT_FDCWD, a2, (p, q) => HostSys.Call(Nr.linkat, AT_FDCWD, p, AT_FDCWD, q, 0));
            case Nr.linkat: return TwoPaths(cpu, nr, (int)a1, a2, (int)a3, a4, (p, q) => HostSys.Call(Nr.linkat, AT_FDCWD, p, AT_FDCWD, q, 0));
            case Nr.symlink: return Symlink(cpu, a1, AT_FDCWD, a2);
            case Nr.symlinkat: return Symlink(cpu, a1, (int)a2, a3);
            case Nr.truncate: return PathOp(cpu, nr, AT_FDCWD, a1, true, p => HostSys.Call(Nr.truncate, p, (long)a2), true);
            case Nr.ftruncate: return OnHostFd(cpu, nr, (int)a1, h => HostSys.Call(Nr.ftruncate, h, (long)a2), true);
            case Nr.fsync: case Nr.fdatasync: return OnHostFd(cpu, nr, (int)a1, h => HostSys.Call(nr, h), true);
            case Nr.sync: return 0;
            case Nr.fadvise64: return 0;
            case Nr.flock: return OnHostFd(cpu, nr, (int)a1, h => 0);
            case Nr.getcwd: return Getcwd(a1, a2);
            case Nr.chdir: return Chdir(cpu, a1);
            case Nr.fchdir:
                if (!Fds.TryGetValue((int)a1, out var df)) return -Errno.EBADF;
                if (!df.IsDirectory) return -Errno.ENOTDIR;
                Cwd = df.GuestPath;
                return 0;
            case Nr.dup: return Dup(cpu, (int)a1, -1, false);
            case Nr.dup2:
                if (a1 == a2) return Fds.ContainsKey((int)a1) ? (long)a1 : -Errno.EBADF;
                return Dup(cpu, (int)a1, (int)a2, false);
            case Nr.dup3:
                if (a1 == a2) return -Errno.EINVAL;
                return Dup(cpu, (int)a1, (int)a2, (a3 & O_CLOEXEC) != 0);
            case Nr.fcntl: return Fcntl(cpu, (int)a1, (int)a2, a3);
            case Nr.ioctl: return Ioctl(cpu, (int)a1, a2, a3);
            case Nr.pipe: return Pipe(cpu, a1, 0);
            case Nr.pipe2: return Pipe(cpu, a1, (int)a2);
            case Nr.sendfile: return Sendfile(cpu, (int)a1, (int)a2, a3, a4);
            case Nr.poll: return Poll(cpu, a1, (int)a2, (int)a3);

            // ---------------- sockets, select/ppoll, epoll, eventfd (LinuxKernel.Net.cs)
            case Nr.socket: case Nr.socketpair: case Nr.bind: case Nr.listen: case Nr.accept: case Nr.accept4:
            case Nr.connect: case Nr.getsockname: case Nr.getpeername: case Nr.sendto: case Nr.recvfrom:
            case Nr.sendmsg: case Nr.recvmsg: case Nr.shutdown: case Nr.setsockopt: case Nr.getsockopt:
            case Nr.select: case Nr.pselect6: case Nr.ppoll: case Nr.epoll_create: case Nr.epoll_create1:
            case Nr.epoll_ctl: case Nr.epoll_wait: case Nr.epoll_pwait: case Nr.eventfd: case Nr.eventfd2:
                return Net(cpu, nr, a1, a2, a3, a4, a5, a6);

            default: return Unknown(cpu, nr);
        }
    }

    int _umask = 0x12;

    // ---------------------------------------------------------------- helpers

    /// <summary>A host call that fills a guest buffer of `len` bytes (0 = none) with what the host wrote.</summary>
    unsafe long HostBuffer(CpuT cpu, int nr, ulong guestBuf, int len, Func<long, long> call, bool resultIsLength = false)
    {
        if (len > 0) CheckWritable(guestBuf, (ulong)len);
        return Host(cpu, nr, () =>
        {
            var buf = new byte[Math.Max(len, 1)];
            long r;
            fixed (byte* p = buf) r = call(len > 0 ? (long)p : 0);
            var res = HostResult.Of(r);
            if (r >= 0 && len > 0)
            {
                int n = resultIsLength ? (int)r : len;
                res.Write(guestBuf, buf.AsSpan(0, n).ToArray());
            }
            return res;
        }).Value;
    }

    /// <summary>The host descriptor of a guest descriptor inside a host operation (-EBADF when there is none).</summary>
    long OnHostFd(CpuT cpu, int nr, int fd, Func<long, long> call, bool reexecuteOnReplay = false)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        return Host(cpu, nr, () => HostResult.Of(call(f.HostFd)), reexecuteOnReplay).Value;
    }

    long FdBuffer(CpuT cpu, int nr, int fd, ulong guestBuf, int len, Func<long, long, long> call, bool resultIsLength = false)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        return HostBuffer(cpu, nr, guestBuf, len, buf => call(f.HostFd, buf), resultIsLength);
    }

    /// <summary>Absolute guest path for a path relative to a guest directory descriptor.</summary>
    long GuestAbs(int dirfd, string path, out string abs)
    {
        abs = path;
        if (path.StartsWith('/')) return 0;
        if (dirfd == AT_FDCWD) { abs = GuestFs.Join(Cwd, path); return 0; }
        if (!Fds.TryGetValue(dirfd, out var d)) return -Errno.EBADF;
        if (!d.IsDirectory) return -Errno.ENOTDIR;
        abs = path.Length == 0 ? d.GuestPath : GuestFs.Join(d.GuestPath, path);
        return 0;
    }

    unsafe long PathOp(CpuT cpu, int nr, int dirfd, ulong pathAddr, bool follow, Func<long, long> call, bool reexecuteOnReplay = false)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcPathOp(nr, ref abs, follow) is long pr) return pr;
        return Host(cpu, nr, () =>
        {
            long r = Fs.ToHost(abs, follow, out var host);
            if (r < 0) return HostResult.Of(r);
            var z = HostSys.Z(host);
            fixed (byte* p = z) return HostResult.Of(call((long)p));
        }, reexecuteOnReplay).Value;
    }

    unsafe long PathBuffer(CpuT cpu, int nr, int dirfd, ulong pathAddr, bool follow, ulong guestBuf, int len, Func<long, long, long> call)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcStat(cpu, nr, ref abs, follow, guestBuf, len) is long pr) return pr;
        CheckWritable(guestBuf, (ulong)len);
        return Host(cpu, nr, () =>
        {
            long r = Fs.ToHost(abs, follow, out var host);
            if (r < 0) return HostResult.Of(r);
            var z = HostSys.Z(host);
            var buf = new byte[len];
            fixed (byte* p = z) fixed (byte* b = buf) r = call((long)p, (long)b);
            var res = HostResult.Of(r);
            if (r >= 0) res.Write(guestBuf, buf);
            return res;
        }).Value;
    }

    unsafe long TwoPaths(CpuT cpu, int nr, int d1, ulong p1, int d2, ulong p2, Func<long, long, long> call)
    {
        long e = GuestAbs(d1, Path(p1), out var a1);
        if (e < 0) return e;
        e = GuestAbs(d2, Path(p2), out var a2);
        if (e < 0) return e;
        return Host(cpu, nr, () =>
        {
            long r = Fs.ToHost(a1, false, out var h1);
            if (r < 0) return HostResult.Of(r);
            r = Fs.ToHost(a2, false, out var h2);
            if (r < 0) return HostResult.Of(r);
            var z1 = HostSys.Z(h1); var z2 = HostSys.Z(h2);
            fixed (byte* q1 = z1) fixed (byte* q2 = z2) return HostResult.Of(call((long)q1, (long)q2));
        }, true).Value;
    }

    unsafe long Symlink(CpuT cpu, ulong target, int dirfd, ulong linkpath)
    {
        string t = Path(target);
        long e = GuestAbs(dirfd, Path(linkpath), out var abs);
        if (e < 0) return e;
        return Host(cpu, Nr.symlinkat, () =>
        {
            long r = Fs.ToHost(abs, false, out var host);
            if (r < 0) return HostResult.Of(r);
            var zt = HostSys.Z(t); var zl = HostSys.Z(host);
            fixed (byte* q1 = zt) fixed (byte* q2 = zl) return HostResult.Of(HostSys.Call(Nr.symlinkat, (long)q1, AT_FDCWD, (long)q2));
        }, true).Value;
    }

    // ---------------------------------------------------------------- file syscalls

    int LowestFreeFd(int from = 0)
    {
        int fd = from;
        while (Fds.ContainsKey(fd)) fd++;
        return fd;
    }

    unsafe long OpenAt(CpuT cpu, int dirfd, ulong pathAddr, int flags, int mode)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if (ProcOpen(cpu, ref abs, flags) is long pr) return pr;
        int isDir = 0;
        var res = Host(cpu, Nr.openat, () =>
        {
            long r = Fs.ToHost(abs, (flags & O_NOFOLLOW) == 0, out var host);
            if (r < 0) return HostResult.Of(r);
            var z = HostSys.Z(host);
            fixed (byte* p = z) r = HostSys.Call(Nr.openat, AT_FDCWD, (long)p, flags | O_CLOEXEC, mode & ~_umask & 0xFFF);
            // the host's procfs reached by a route the path check did not see (a symlink under root "/"): not the guest's
            if (r >= 0 && ProcFs.IsHostProcFs(r)) { HostSys.Call(Nr.close, r); r = -Errno.ENOENT; }
            var hr = HostResult.Of(r);
            if (r >= 0)
            {
                var st = new byte[144];
                fixed (byte* s = st) HostSys.Call(Nr.fstat, r, (long)s);
                isDir = (BinaryPrimitives.ReadUInt32LittleEndian(st.AsSpan(24)) & 0xF000) == 0x4000 ? 1 : 0;
                hr.Value = ((long)isDir << 32) | r; // host fd and directory bit travel together
            }
            return hr;
        }, reexecuteOnReplay: true);
        // a following backup opened the file on its own root too: it keeps its own descriptor
        int local = res.Local is long l && l >= 0 ? (int)(l & 0xFFFFFFFF) : -1;
        if (res.Value < 0)
        {
            if (local >= 0) HostSys.Call(Nr.close, local); // the primary's open failed: drop this replica's own descriptor
            return res.Value;
        }
        int gfd = LowestFreeFd();
        Fds[gfd] = new GuestFile
        {
            HostFd = Boundary.Replaying ? local : (int)(res.Value & 0xFFFFFFFF),
            GuestPath = abs,
            CloseOnExec = (flags & O_CLOEXEC) != 0,
            IsDirectory = (res.Value >> 32) != 0,
            StatusFlags = flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC),
        };
        return gfd;
    }

    long Close(CpuT cpu, int fd)
    {
        if (!Fds.Remove(fd, out var f)) return -Errno.EBADF;
        if (--f.RefCount > 0 || f.IsStdio) return 0;
        ForgetEpollTarget(f);
        return Host(cpu, Nr.close, () => HostResult.Of(f.HostFd >= 0 ? HostSys.Call(Nr.close, f.HostFd) : 0), true).Value;
    }

    long Dup(CpuT cpu, int oldfd, int newfd, bool cloexec)
    {
        if (!Fds.TryGetValue(oldfd, out var f)) return -Errno.EBADF;
        if (newfd < 0) newfd = LowestFreeFd();
        else if (newfd > 65535) return -Errno.EBADF;
        if (Fds.ContainsKey(newfd)) Close(cpu, newfd);
        f.RefCount++;
        Fds[newfd] = f;
        return newfd;
    }

    long Fcntl(CpuT cpu, int fd, int cmd, ulong arg)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        switch (cmd)
        {
            case 0: // F_DUPFD
            case 1030: // F_DUPFD_CLOEXEC
                {
                    int nfd = LowestFreeFd((int)arg);
                    f.RefCount++;
                    Fds[nfd] = f;
                    return nfd;
                }
            case 1: return f.CloseOnExec ? 1 : 0; // F_GETFD
            case 2: f.CloseOnExec = (arg & 1) != 0; return 0; // F_SETFD
            case 3: // F_GETFL
            case 4: // F_SETFL
                {
                    long r = Host(cpu, Nr.fcntl, () => HostResult.Of(f.HostFd >= 0 ? HostSys.Call(Nr.fcntl, f.HostFd, cmd, (long)arg) : cmd == 3 ? f.StatusFlags : 0), true).Value;
                    if (cmd == 4 && r >= 0) f.StatusFlags = (f.StatusFlags & ~(O_APPEND | O_NONBLOCK)) | ((int)arg & (O_APPEND | O_NONBLOCK));
                    return r;
                }
            case 5: case 6: case 7: return 0; // locks: a single process never conflicts with itself
            default: return -Errno.EINVAL;
        }
    }

    long Read(CpuT cpu, int fd, ulong buf, ulong count, long offset)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        if (f.IsDirectory) return -Errno.EISDIR;
        int n = (int)Math.Min(count, 1 << 24);
        CheckWritable(buf, (ulong)n);
        if (f.Reset && offset < 0) return ResetRead(f);
        long r = HostBuffer(cpu, offset < 0 ? Nr.read : Nr.pread64, buf, n,
            p => offset < 0 ? HostSys.Call(Nr.read, f.HostFd, p, n) : HostSys.Call(Nr.pread64, f.HostFd, p, n, offset),
            resultIsLength: true);
        if (r > 0 && offset < 0) f.Offset += r;
        return r;
    }

    unsafe long Write(CpuT cpu, int fd, ulong buf, ulong count, long offset)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        int n = (int)Math.Min(count, 1 << 24);
        var data = Mem.ReadBytes(buf, n);
        return WriteBytes(cpu, f, data, offset);
    }

    unsafe long WriteBytes(CpuT cpu, GuestFile f, byte[] data, long offset)
    {
        if (f.IsSocket && offset < 0) return SendBytes(cpu, f, data, 0, null, Nr.write);
        bool output = f.IsStdio && (f.HostFd == 1 || f.HostFd == 2);
        int nr = offset < 0 ? Nr.write : Nr.pwrite64;
        Func<HostResult> perform = () =>
        {
            // a following backup re-executes file writes on its own copy; its descriptor's position does not move
            // with replayed reads and seeks, so it writes at the guest-visible offset (decided when it runs: the
            // same call can be the one at which the replica turns live)
            long at = offset < 0 && Boundary.Replaying && (f.StatusFlags & O_APPEND) == 0 ? f.Offset : offset;
            fixed (byte* p = data)
                return HostResult.Of(at < 0 ? HostSys.Call(Nr.write, f.HostFd, (long)p, data.Length)
                                            : HostSys.Call(Nr.pwrite64, f.HostFd, (long)p, data.Length, at));
        };
        long r = output ? Boundary.Output(cpu.Tid, nr, f.HostFd, data, perform).Value
                        : Host(cpu, nr, perform, reexecuteOnReplay: !f.IsStdio).Value;
        if (output && r > 0) Boundary.OnOutput(this, cpu, f.HostFd, data.AsSpan(0, (int)r));
        if (!output && r > 0 && offset < 0) f.Offset += r;
        return r;
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
        if (f.Reset) return ResetRead(f);
        long got = Host(cpu, Nr.readv, () =>
        {
            var tmp = new byte[n];
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
        }).Value;
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
        return WriteBytes(cpu, f, ms.ToArray(), -1);
    }

    unsafe long FstatAt(CpuT cpu, int dirfd, ulong pathAddr, ulong buf, int flags)
    {
        string path = Path(pathAddr);
        if (path.Length == 0 && (flags & AT_EMPTY_PATH) != 0 && ProcDirStat(dirfd, buf, statx: false) is long ps) return ps;
        if (path.Length == 0 && (flags & AT_EMPTY_PATH) != 0)
            return FdBuffer(cpu, Nr.newfstatat, dirfd, buf, 144, (h, b) => HostSys.Call(Nr.fstat, h, b));
        return PathBuffer(cpu, Nr.newfstatat, dirfd, pathAddr, (flags & AT_SYMLINK_NOFOLLOW) == 0, buf, 144,
            (p, b) => HostSys.Call(Nr.newfstatat, AT_FDCWD, p, b, flags & AT_SYMLINK_NOFOLLOW));
    }

    long Statx(CpuT cpu, int dirfd, ulong pathAddr, int flags, uint mask, ulong buf)
    {
        string path = Path(pathAddr);
        if (path.Length == 0 && (flags & AT_EMPTY_PATH) != 0 && ProcDirStat(dirfd, buf, statx: true) is long ps) return ps;
        if (path.Length == 0 && (flags & AT_EMPTY_PATH) != 0)
        {
            if (!Fds.TryGetValue(dirfd, out var f)) return -Errno.EBADF;
            var empty = HostSys.Z("");
            return HostBuffer(cpu, Nr.statx, buf, 256, b => { unsafe { fixed (byte* e = empty) return HostSys.Call(Nr.statx, f.HostFd, (long)e, AT_EMPTY_PATH | (flags & ~AT_EMPTY_PATH), mask, b); } });
        }
        return PathBuffer(cpu, Nr.statx, dirfd, pathAddr, (flags & AT_SYMLINK_NOFOLLOW) == 0, buf, 256,
            (p, b) => HostSys.Call(Nr.statx, AT_FDCWD, p, flags, mask, b));
    }

    unsafe long ReadlinkAt(CpuT cpu, int dirfd, ulong pathAddr, ulong buf, ulong size)
    {
        string path = Path(pathAddr);
        long e = GuestAbs(dirfd, path, out var abs);
        if (e < 0) return e;
        if ((long)size <= 0) return -Errno.EINVAL;
        int n = (int)Math.Min(size, 4096);
        CheckWritable(buf, (ulong)n);
        if (ProcReadlink(cpu, abs, buf, n) is long pr) return pr;
        return Host(cpu, Nr.readlinkat, () =>
        {
            long r = Fs.ToHost(abs, false, out var host);
            if (r < 0) return HostResult.Of(r);
            var z = HostSys.Z(host);
            var tmp = new byte[n];
            fixed (byte* p = z) fixed (byte* t = tmp) r = HostSys.Call(Nr.readlinkat, AT_FDCWD, (long)p, (long)t, n);
            var res = HostResult.Of(r);
            if (r > 0) res.Write(buf, tmp.AsSpan(0, (int)r).ToArray());
            return res;
        }).Value;
    }

    unsafe long Utimensat(CpuT cpu, int dirfd, ulong pathAddr, ulong times, int flags)
    {
        byte[]? t = times != 0 ? Mem.ReadBytes(times, 32) : null;
        if (pathAddr == 0)
        {
            if (!Fds.TryGetValue(dirfd, out var f)) return -Errno.EBADF;
            return Host(cpu, Nr.utimensat, () => { fixed (byte* tp = t) return HostResult.Of(HostSys.Call(Nr.utimensat, f.HostFd, 0, t == null ? 0 : (long)tp, 0)); }, true).Value;
        }
        return PathOp(cpu, Nr.utimensat, dirfd, pathAddr, (flags & AT_SYMLINK_NOFOLLOW) == 0,
            p => { fixed (byte* tp = t) return HostSys.Call(Nr.utimensat, AT_FDCWD, p, t == null ? 0 : (long)tp, flags); }, true);
    }

    long Getcwd(ulong buf, ulong size)
    {
        var b = Encoding.UTF8.GetBytes(Cwd + "\0");
        if ((ulong)b.Length > size) return -Errno.ERANGE;
        CheckWritable(buf, (ulong)b.Length);
        Mem.WriteBytes(buf, b);
        return b.Length;
    }

    unsafe long Chdir(CpuT cpu, ulong pathAddr)
    {
        string path = Path(pathAddr);
        GuestAbs(AT_FDCWD, path, out var abs);
        long r = Host(cpu, Nr.chdir, () =>
        {
            long e = Fs.ToHost(abs, true, out var host);
            if (e < 0) return HostResult.Of(e);
            var st = new byte[144];
            var z = HostSys.Z(host);
            fixed (byte* p = z) fixed (byte* s = st) e = HostSys.Call(Nr.newfstatat, AT_FDCWD, (long)p, (long)s, 0);
            if (e < 0) return HostResult.Of(e);
            return HostResult.Of((BinaryPrimitives.ReadUInt32LittleEndian(st.AsSpan(24)) & 0xF000) == 0x4000 ? 0 : -Errno.ENOTDIR);
        }).Value;
        if (r == 0) Cwd = GuestFs.Normalize(abs);
        return r;
    }

    unsafe long Pipe(CpuT cpu, ulong fdsAddr, int flags)
    {
        CheckWritable(fdsAddr, 8);
        var res = Host(cpu, Nr.pipe2, () =>
        {
            var fds = new int[2];
            long r;
            fixed (int* p = fds) r = HostSys.Call(Nr.pipe2, (long)p, O_CLOEXEC | (flags & ~O_CLOEXEC));
            return HostResult.Of(r < 0 ? r : ((long)fds[1] << 32) | (uint)fds[0]);
        });
        if (res.Value < 0) return res.Value;
        int r0 = LowestFreeFd();
        Fds[r0] = new GuestFile { HostFd = Boundary.Replaying ? -1 : (int)(res.Value & 0xFFFFFFFF), GuestPath = "pipe:", CloseOnExec = (flags & O_CLOEXEC) != 0 };
        int w0 = LowestFreeFd();
        Fds[w0] = new GuestFile { HostFd = Boundary.Replaying ? -1 : (int)(res.Value >> 32), GuestPath = "pipe:", CloseOnExec = (flags & O_CLOEXEC) != 0 };
        Mem.Write32(fdsAddr, (uint)r0);
        Mem.Write32(fdsAddr + 4, (uint)w0);
        return 0;
    }

    unsafe long Sendfile(CpuT cpu, int outFd, int inFd, ulong offPtr, ulong count)
    {
        if (!Fds.TryGetValue(outFd, out var o) || !Fds.TryGetValue(inFd, out var i)) return -Errno.EBADF;
        int n = (int)Math.Min(count, 1 << 20);
        long offset = offPtr != 0 ? (long)Mem.Read64(offPtr) : -1;
        // read through the boundary (input), then write as the guest would
        var rd = Boundary.Syscall(cpu.Tid, Nr.sendfile, () =>
        {
            var tmp = new byte[n];
            long r;
            fixed (byte* p = tmp) r = offset < 0 ? HostSys.Call(Nr.read, i.HostFd, (long)p, n) : HostSys.Call(Nr.pread64, i.HostFd, (long)p, n, offset);
            var res = HostResult.Of(r);
            if (r > 0) res.Writes.Add((0, tmp.AsSpan(0, (int)r).ToArray()));
            return res;
        });
        if (rd.Value <= 0) return rd.Value;
        if (offset < 0) i.Offset += rd.Value;
        var data = rd.Writes[0].Bytes;
        rd.Writes.Clear();
        long w = WriteBytes(cpu, o, data, -1);
        if (w > 0 && offPtr != 0) Mem.Write64(offPtr, (ulong)(offset + w));
        return w;
    }

    long Ioctl(CpuT cpu, int fd, ulong req, ulong arg)
    {
        if (!Fds.TryGetValue(fd, out var f)) return -Errno.EBADF;
        switch (req)
        {
            case 0x5401: // TCGETS
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 36, (h, b) => HostSys.Call(Nr.ioctl, h, 0x5401, b));
            case 0x5413: // TIOCGWINSZ
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 8, (h, b) => HostSys.Call(Nr.ioctl, h, 0x5413, b));
            case 0x540F: // TIOCGPGRP
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 4, (h, b) => HostSys.Call(Nr.ioctl, h, 0x540F, b));
            case 0x541B: // FIONREAD
                return FdBuffer(cpu, Nr.ioctl, fd, arg, 4, (h, b) => HostSys.Call(Nr.ioctl, h, 0x541B, b));
            case 0x5402: case 0x5403: case 0x5404: // TCSETS, TCSETSW, TCSETSF
                {
                    var t = Mem.ReadBytes(arg, 36);
                    return OnHostFd(cpu, Nr.ioctl, fd, h => { unsafe { fixed (byte* p = t) return HostSys.Call(Nr.ioctl, h, (long)req, (long)p); } });
                }
            case 0x5421: // FIONBIO
                {
                    var on = Mem.ReadBytes(arg, 4);
                    return OnHostFd(cpu, Nr.ioctl, fd, h => { unsafe { fixed (byte* p = on) return HostSys.Call(Nr.ioctl, h, 0x5421, (long)p); } });
                }
            case 0x5451: f.CloseOnExec = true; return 0;  // FIOCLEX
            case 0x5450: f.CloseOnExec = false; return 0; // FIONCLEX
            default: return -Errno.ENOTTY;
        }
    }

    unsafe long Poll(CpuT cpu, ulong fdsAddr, int nfds, int timeout)
    {
        if (nfds < 0 || nfds > 4096) return -Errno.EINVAL;
        var raw = Mem.ReadBytes(fdsAddr, nfds * 8);
        CheckWritable(fdsAddr, (ulong)nfds * 8);
        var hostFds = new int[nfds];
        return Host(cpu, Nr.poll, () =>
        {
            // host descriptors are looked up when the call runs: it can be the call at which a backup turns live
            for (int k = 0; k < nfds; k++)
            {
                int gfd = BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(k * 8));
                hostFds[k] = gfd >= 0 && Fds.TryGetValue(gfd, out var f) ? (f.Reset ? ResetFd : f.HostFd) : (gfd < 0 ? -1 : int.MinValue);
            }
            int tmo = hostFds.Contains(ResetFd) ? 0 : timeout; // a reset connection is ready at once
            var buf = (byte[])raw.Clone();
            for (int k = 0; k < nfds; k++)
                BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(k * 8), hostFds[k] == int.MinValue ? 1 << 30 : hostFds[k] == ResetFd ? -1 : hostFds[k]);
            long r;
            fixed (byte* p = buf) r = HostSys.Call(Nr.poll, (long)p, nfds, tmo);
            var res = HostResult.Of(r);
            if (r >= 0)
            {
                var outb = (byte[])raw.Clone();
                for (int k = 0; k < nfds; k++)
                {
                    short rev = BinaryPrimitives.ReadInt16LittleEndian(buf.AsSpan(k * 8 + 6));
                    if (hostFds[k] == int.MinValue) rev = 0x20; // POLLNVAL
                    if (hostFds[k] == ResetFd)
                    {
                        rev = ResetEvents(BinaryPrimitives.ReadInt16LittleEndian(raw.AsSpan(k * 8 + 4)));
                        r++;
                    }
                    BinaryPrimitives.WriteInt16LittleEndian(outb.AsSpan(k * 8 + 6), rev);
                }
                res.Value = r;
                res.Write(fdsAddr, outb);
            }
            return res;
        }).Value;
    }

    long Sleep(CpuT cpu, int nr, ulong req, ulong rem, Func<ulong> clock)
    {
        var ts = Mem.ReadBytes(req, 16);
        long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), nsec = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
        if (sec < 0 || nsec < 0 || nsec >= 1_000_000_000) return -Errno.EINVAL;
        return Host(cpu, nr, () =>
        {
            unsafe
            {
                fixed (byte* p = ts)
                    return HostResult.Of(nr == Nr.nanosleep ? HostSys.Call(Nr.nanosleep, (long)p, 0) : HostSys.Call(Nr.clock_nanosleep, (long)clock(), 0, (long)p, 0));
            }
        }).Value;
    }

    // ---------------------------------------------------------------- process and memory syscalls

    long ArchPrctl(CpuT cpu, int code, ulong addr)
    {
        switch (code)
        {
            case 0x1002: cpu.FsBase = addr; return 0; // ARCH_SET_FS
            case 0x1001: cpu.GsBase = addr; return 0; // ARCH_SET_GS
            case 0x1003: Mem.Write64(addr, cpu.FsBase); return 0; // ARCH_GET_FS
            case 0x1004: Mem.Write64(addr, cpu.GsBase); return 0; // ARCH_GET_GS
            case 0x3001: return -Errno.EINVAL; // ARCH_CET_STATUS
            default: return -Errno.EINVAL;
        }
    }

    string _procName = "";

    long Prctl(int option, ulong arg2)
    {
        switch (option)
        {
            case 15: _procName = Mem.ReadCString(arg2, 16); return 0; // PR_SET_NAME
            case 16: Mem.WriteBytes(arg2, Encoding.UTF8.GetBytes((_procName + "\0").PadRight(16, '\0'))[..16]); return 0;
            default: return -Errno.EINVAL;
        }
    }

    long Uname(CpuT cpu, ulong buf)
    {
        CheckWritable(buf, 390);
        // the VM presents its own machine: fixed fields, the host's node name through the boundary
        var res = Boundary.Syscall(cpu.Tid, Nr.uname, () =>
        {
            var b = new byte[390];
            unsafe { fixed (byte* p = b) HostSys.Call(Nr.uname, (long)p); }
            return HostResult.Of(0).Write(0, b.AsSpan(65, 65).ToArray());
        });
        var node = res.Writes.Count > 0 ? res.Writes[0].Bytes : new byte[65];
        var outb = new byte[390];
        void Field(int idx, string s) => Encoding.ASCII.GetBytes(s).CopyTo(outb, idx * 65);
        Field(0, "Linux");
        node.CopyTo(outb, 65);
        Field(2, "6.1.0-revirt");
        Field(3, "#1 SMP ReVirt");
        Field(4, "x86_64");
        Field(5, "(none)");
        Mem.WriteBytes(buf, outb);
        return 0;
    }

    long Prlimit(CpuT cpu, int pid, int resource, ulong newLimit, ulong oldLimit)
    {
        if (oldLimit == 0) return 0;
        ulong cur = ulong.MaxValue, max = ulong.MaxValue;
        switch (resource)
        {
            case 3: cur = StackSize; break;   // RLIMIT_STACK
            case 7: cur = 1024; max = 1048576; break; // RLIMIT_NOFILE
        }
        CheckWritable(oldLimit, 16);
        Mem.Write64(oldLimit, cur);
        Mem.Write64(oldLimit + 8, max);
        return 0;
    }

    long Brk(ulong want)
    {
        if (want < BrkStart) return (long)BrkCur;
        ulong oldTop = (BrkCur + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        ulong newTop = (want + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        if (newTop > oldTop)
        {
            if (!Mem.IsFree(oldTop, newTop)) return (long)BrkCur;
            Mem.Map(oldTop, newTop - oldTop, Prot.Read | Prot.Write, "[heap]");
        }
        else if (newTop < oldTop) Mem.Unmap(newTop, oldTop - newTop);
        BrkCur = want;
        return (long)BrkCur;
    }

    const ulong MADV_DONTNEED = 4;
    const int MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_FIXED_NOREPLACE = 0x100000;

    long Mmap(CpuT cpu, ulong addr, ulong len, int prot, int flags, int fd, long off)
    {
        if (len == 0 || len > GuestMemory.AddressLimit) return -Errno.EINVAL;
        if ((flags & (MAP_SHARED | MAP_PRIVATE)) == 0) return -Errno.EINVAL;
        if ((off & (long)GuestMemory.PageMask) != 0) return -Errno.EINVAL;
        len = (len + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        GuestFile? file = null;
        if ((flags & MAP_ANONYMOUS) == 0)
        {
            if (!Fds.TryGetValue(fd, out file)) return -Errno.EBADF;
        }
        ulong at;
        if ((flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0)
        {
            if ((addr & GuestMemory.PageMask) != 0 || addr + len > GuestMemory.AddressLimit || addr < MmapBottom) return -Errno.EINVAL;
            if ((flags & MAP_FIXED_NOREPLACE) != 0 && !Mem.IsFree(addr, addr + len)) return -Errno.EEXIST;
            at = addr;
        }
        else
        {
            ulong hint = addr & ~GuestMemory.PageMask;
            if (hint >= MmapBottom && hint + len <= MmapTop && Mem.IsFree(hint, hint + len)) at = hint;
            else
            {
                at = Mem.FindFree(len, MmapTop, MmapBottom);
                if (at == 0) return -Errno.ENOMEM;
            }
        }
        Files.Unmapping(cpu.Tid, at, at + len);
        Mem.Map(at, len, (Prot)(prot & 7), file != null ? file.GuestPath : "", file != null ? off : 0, (flags & MAP_SHARED) != 0);
        if (file != null)
        {
            long got = Files.Fill(cpu.Tid, file, at, (int)Math.Min(len, int.MaxValue), off);
            if (got < 0) { Mem.Unmap(at, len); return got == -Errno.EISDIR ? -Errno.ENODEV : -Errno.EACCES; }
            if ((flags & MAP_SHARED) != 0 && (prot & (int)Prot.Write) != 0) Files.AddShared(file, at, at + len, off);
        }
        return (long)at;
    }

    long Mremap(ulong old, ulong oldLen, ulong newLen, int flags, ulong newAddr)
    {
        if ((old & GuestMemory.PageMask) != 0 || newLen == 0) return -Errno.EINVAL;
        oldLen = (oldLen + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        newLen = (newLen + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        var vma = Mem.FindVma(old);
        if (vma == null) return -Errno.EFAULT;
        if (newLen <= oldLen)
        {
            if (newLen < oldLen) Mem.Unmap(old + newLen, oldLen - newLen);
            return (long)old;
        }
        if ((flags & 2) == 0 && Mem.IsFree(old + oldLen, old + newLen))
        {
            Mem.Map(old + oldLen, newLen - oldLen, vma.Prot, vma.Name);
            return (long)old;
        }
        if ((flags & 1) == 0) return -Errno.ENOMEM; // MREMAP_MAYMOVE
        ulong at = (flags & 2) != 0 ? newAddr : Mem.FindFree(newLen, MmapTop, MmapBottom);
        if (at == 0) return -Errno.ENOMEM;
        var data = new byte[oldLen];
        bool readable = vma.Prot != Prot.None;
        if (!readable) Mem.Protect(old, oldLen, Prot.Read);
        Mem.ReadBytes(old, data);
        Mem.Map(at, newLen, vma.Prot, vma.Name);
        Mem.Poke(at, data);
        Mem.Unmap(old, oldLen);
        return (long)at;
    }
}
