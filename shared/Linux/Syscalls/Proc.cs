using System.Buffers.Binary;
using System.Text;
using ReVirt.Abi;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>The path syscalls' side of the guest's /proc view (<see cref="ProcFs"/>): each returns null when the path
/// is not in the view (the host handles it, possibly at the redirected path) or the syscall's result.</summary>
public sealed partial class Kernel
{
    /// <summary>The guest's /proc view.</summary>
    public ProcFs Proc => _proc ??= new ProcFs(this);
    ProcFs? _proc;

    const int MFD_CLOEXEC = 1;
    const byte DT_DIR = 4, DT_REG = 8, DT_LNK = 10;

    /// <summary>execve of a /proc path: /proc/self/exe and other links run what they name in the guest's view
    /// (never the host's /proc); a synthetic file cannot be executed.</summary>
    long? ProcExecPath(ref string abs)
    {
        if (!ProcFs.Covers(abs)) return null;
        var node = Proc.Resolve(abs, followFinal: true, out var path);
        switch (node.Kind)
        {
            case ProcFs.Kind.NotProc: abs = path; return null;
            case ProcFs.Kind.Missing: return -Errno.ENOENT;
            default: return -Errno.EACCES;
        }
    }

    /// <summary>open/openat of a /proc path.</summary>
    long? ProcOpen(CpuT cpu, ref string abs, int flags)
    {
        if (!ProcFs.Covers(abs)) return null;
        var node = Proc.Resolve(abs, (flags & O.NOFOLLOW) == 0, out var path);
        switch (node.Kind)
        {
            case ProcFs.Kind.NotProc: abs = path; return null;
            case ProcFs.Kind.Missing: return -Errno.ENOENT;
            case ProcFs.Kind.Link:
                // /proc/self/fd/N, /dev/fd/N: the guest's own descriptor N
                if (node.Target!.StartsWith("fd:")) return Dup(Current, int.Parse(node.Target[3..]), -1, (flags & O.CLOEXEC) != 0);
                return -Errno.ELOOP; // O_NOFOLLOW on a link
        }
        if ((flags & O.ACCMODE) != 0) return -Errno.EACCES;
        if (node.Kind == ProcFs.Kind.Dir)
        {
            var dir = new ProcDirectory { GuestPath = path };
            int dfd = Fds.Install(dir, (flags & O.CLOEXEC) != 0);
            // listed as it is now, as Linux lists a directory when it is read (fd/ includes this descriptor)
            dir.Entries = Proc.Lookup(path).Entries ?? Array.Empty<string>();
            return dfd;
        }
        if ((flags & O.DIRECTORY) != 0) return -Errno.ENOTDIR;
        // a synthetic file: its bytes (a function of the guest's state) in an anonymous host file, read like any file
        var content = node.Content!;
        var res = Host(cpu, Nr.openat, () =>
        {
            long fd = HostSys.WithPath(Nr.memfd_create, "revirt-proc", p => HostSys.Call(Nr.memfd_create, p, MFD_CLOEXEC));
            if (fd < 0) return HostResult.Of(fd);
            unsafe { fixed (byte* c = content) HostSys.Call(Nr.pwrite64, fd, (long)c, content.Length, 0); }
            return HostResult.Of(fd);
        }, reexecuteOnReplay: true);
        int local = res.Local is long l && l >= 0 ? (int)l : -1;
        if (res.Value < 0) return res.Value;
        var file = new HostFile { HostFd = Boundary.HostDescriptor(res.Value, local), GuestPath = path, StatusFlags = flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC) };
        return Fds.Install(file, (flags & O.CLOEXEC) != 0);
    }

    /// <summary>stat, lstat, newfstatat, statx, statfs of a /proc path.</summary>
    long? ProcStat(CpuT cpu, int nr, ref string abs, bool follow, ulong guestBuf, int len)
    {
        if (!ProcFs.Covers(abs)) return null;
        var node = Proc.Resolve(abs, follow, out var path);
        switch (node.Kind)
        {
            case ProcFs.Kind.NotProc: abs = path; return null;
            case ProcFs.Kind.Missing: return -Errno.ENOENT;
        }
        CheckWritable(guestBuf, (ulong)len);
        if (node.Kind == ProcFs.Kind.Link && follow && node.Target!.StartsWith("fd:"))
        {
            int fd = int.Parse(node.Target[3..]);
            // a description that exists only in the VM (a pipe) answers itself
            if (nr is Nr.stat or Nr.newfstatat && Fds.TryGetValue(fd, out var vf) && vf.StatMode is { } mode) return StatInVm(guestBuf, mode, vf.StatInode);
            if (nr != Nr.statx) return FdBuffer(cpu, Nr.fstat, fd, guestBuf, Math.Min(len, 144), (h, b) => HostSys.Call(nr == Nr.statfs ? Nr.fstatfs : Nr.fstat, h, b));
            node = new ProcFs.Node(ProcFs.Kind.File);
        }
        byte[] buf = nr == Nr.statx ? ProcFs.StatxBuffer(path, node)
            : nr == Nr.statfs ? BitConverter.GetBytes(ProcFs.ProcSuperMagic).Concat(new byte[len - 8]).ToArray()
            : ProcFs.StatBuffer(path, node);
        Mem.WriteBytes(guestBuf, buf.AsSpan(0, Math.Min(len, buf.Length)));
        return 0;
    }

    /// <summary>access and the path operations that change a file, on a /proc path: the view is read-only.</summary>
    long? ProcPathOp(int nr, ref string abs, bool follow)
    {
        if (!ProcFs.Covers(abs)) return null;
        var node = Proc.Resolve(abs, follow, out var path);
        if (node.Kind == ProcFs.Kind.NotProc) { abs = path; return null; }
        if (node.Kind == ProcFs.Kind.Missing) return -Errno.ENOENT;
        return nr is Nr.access or Nr.faccessat or Nr.faccessat2 ? 0 : -Errno.EACCES;
    }

    /// <summary>readlink of a /proc path.</summary>
    long? ProcReadlink(CpuT cpu, string abs, ulong buf, int n)
    {
        if (!ProcFs.Covers(abs)) return null;
        var node = Proc.Resolve(abs, followFinal: false, out _);
        if (node.Kind == ProcFs.Kind.NotProc) return null; // an intermediate link led out of the view
        if (node.Kind == ProcFs.Kind.Missing) return -Errno.ENOENT;
        if (node.Kind != ProcFs.Kind.Link) return -Errno.EINVAL;
        string target = node.Target!;
        if (target.StartsWith("fd:"))
        {
            Fds.TryGetValue(int.Parse(target[3..]), out var f);
            if (f is StdioFile)
            {
                // what the VM's own stdin/stdout/stderr are (a terminal, a pipe) is host state: through the boundary
                return Host(cpu, Nr.readlinkat, () =>
                {
                    var tmp = new byte[n];
                    var z = HostSys.Z($"/proc/self/fd/{f.HostFd}");
                    long r;
                    unsafe { fixed (byte* t = tmp) fixed (byte* p = z) r = HostSys.Call(Nr.readlinkat, At.FDCWD, (long)p, (long)t, n); }
                    var res = HostResult.Of(r);
                    if (r > 0) res.Write(buf, tmp.AsSpan(0, (int)r).ToArray());
                    return res;
                }).Value;
            }
            target = f is HostSocket ? "socket:[0]" : f.GuestPath;
        }
        var b = Encoding.UTF8.GetBytes(target);
        int k = Math.Min(b.Length, n);
        Mem.WriteBytes(buf, b.AsSpan(0, k));
        return k;
    }

    /// <summary>fstat/statx of a descriptor of a /proc directory (it has no host descriptor); null for any other.</summary>
    long? ProcDirStat(int fd, ulong buf, bool statx)
    {
        if (!Fds.TryGetValue(fd, out var f) || f is not ProcDirectory) return null;
        var node = new ProcFs.Node(ProcFs.Kind.Dir);
        var b = statx ? ProcFs.StatxBuffer(f.GuestPath, node) : ProcFs.StatBuffer(f.GuestPath, node);
        CheckWritable(buf, (ulong)b.Length);
        Mem.WriteBytes(buf, b);
        return 0;
    }

    /// <summary>getdents64 of a /proc directory: linux_dirent64 records from entry number Offset on.</summary>
    long ProcGetdents(ProcDirectory f, ulong buf, ulong count)
    {
        var entries = f.Entries;
        var outBytes = new List<byte>();
        var all = new[] { ".", ".." }.Concat(entries).ToArray();
        while (f.Offset < all.Length)
        {
            var name = Encoding.UTF8.GetBytes(all[f.Offset]);
            int reclen = (Dirent64.NameOffset + name.Length + 1 + 7) & ~7;
            if ((ulong)(outBytes.Count + reclen) > count) break;
            var rec = new byte[reclen];
            BinaryPrimitives.WriteUInt64LittleEndian(rec, (ulong)System.IO.Hashing.XxHash32.HashToUInt32(Encoding.UTF8.GetBytes(f.GuestPath + "/" + all[f.Offset]))); // d_ino
            BinaryPrimitives.WriteInt64LittleEndian(rec.AsSpan(Dirent64.OffOffset), f.Offset + 1);
            BinaryPrimitives.WriteUInt16LittleEndian(rec.AsSpan(Dirent64.ReclenOffset), (ushort)reclen);
            var kind = f.Offset < 2 ? ProcFs.Kind.Dir : Proc.Lookup(f.GuestPath + "/" + all[f.Offset]).Kind;
            rec[Dirent64.TypeOffset] = kind switch { ProcFs.Kind.Dir => DT_DIR, ProcFs.Kind.Link => DT_LNK, _ => DT_REG };
            name.CopyTo(rec, Dirent64.NameOffset);
            outBytes.AddRange(rec);
            f.Offset++;
        }
        if (outBytes.Count == 0 && f.Offset < all.Length) return -Errno.EINVAL;
        CheckWritable(buf, (ulong)outBytes.Count);
        Mem.WriteBytes(buf, outBytes.ToArray());
        return outBytes.Count;
    }
}

/// <summary>A directory of the guest's /proc view: no host descriptor; getdents64 lists its entries from entry
/// number <see cref="OpenFile.Offset"/> on.</summary>
public sealed class ProcDirectory : OpenFile
{
    public string[] Entries = Array.Empty<string>();
    public override bool IsDirectory => true;
    public override long Read(Kernel k, GuestThread t, ulong buf, int n, long offset) => -Errno.EISDIR;
    public override long Write(Kernel k, GuestThread t, byte[] data, long offset) => -Errno.EBADF;
    public override long Close(Kernel k, GuestThread t) => 0;
}
