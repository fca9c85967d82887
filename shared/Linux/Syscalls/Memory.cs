using ReVirt.Abi;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Linux;

/// <summary>The address space: brk, mmap, munmap, mprotect, mremap.</summary>
public sealed partial class Kernel
{
    void RegisterMemorySyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Emulated);
        r.Add(Nr.brk, (t, a) => Brk(a.A1));
        r.Add(Nr.mmap, (t, a) => Mmap(t.Cpu, a.A1, a.A2, (int)a.A3, (int)a.A4, (int)a.A5, (long)a.A6));
        r.Add(Nr.munmap, (t, a) =>
        {
            if ((a.A1 & GuestMemory.PageMask) != 0 || a.A2 == 0 || a.A2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
            P.Files.Unmapping(this, t.Tid, a.A1, a.A1 + a.A2);
            Mem.Unmap(a.A1, a.A2);
            return 0;
        });
        r.Add(Nr.mprotect, (t, a) =>
        {
            if ((a.A1 & GuestMemory.PageMask) != 0) return -Errno.EINVAL;
            return Mem.Protect(a.A1, a.A2, (Prot)(a.A3 & 7)) ? 0 : -Errno.ENOMEM;
        });
        r.Add(Nr.mremap, (t, a) => Mremap(a.A1, a.A2, a.A3, (int)a.A4, a.A5));
        r.Add(Nr.madvise, (t, a) =>
        {
            if ((a.A1 & GuestMemory.PageMask) != 0 || a.A2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
            if (a.A3 == MADV_DONTNEED) FileMappings.DontNeed(Mem, a.A1, a.A1 + ((a.A2 + GuestMemory.PageMask) & ~GuestMemory.PageMask));
            return 0;
        });
        r.Add(Nr.msync, (t, a) =>
        {
            if ((a.A1 & GuestMemory.PageMask) != 0 || a.A2 > GuestMemory.AddressLimit) return -Errno.EINVAL;
            P.Files.Sync(this, t.Tid, a.A1, a.A1 + a.A2);
            return 0;
        });
        r.Add(Nr.mincore, (t, a) => -Errno.ENOSYS);
    }

    const ulong MADV_DONTNEED = 4;

    long Brk(ulong want)
    {
        var p = P;
        if (want < p.BrkStart) return (long)p.BrkCur;
        ulong oldTop = (p.BrkCur + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        ulong newTop = (want + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        if (newTop > oldTop)
        {
            if (!Mem.IsFree(oldTop, newTop)) return (long)p.BrkCur;
            Mem.Map(oldTop, newTop - oldTop, Prot.Read | Prot.Write, "[heap]");
        }
        else if (newTop < oldTop) Mem.Unmap(newTop, oldTop - newTop);
        p.BrkCur = want;
        return (long)p.BrkCur;
    }


    long Mmap(CpuT cpu, ulong addr, ulong len, int prot, int flags, int fd, long off)
    {
        if (len == 0 || len > GuestMemory.AddressLimit) return -Errno.EINVAL;
        if ((flags & (Map.SHARED | Map.PRIVATE)) == 0) return -Errno.EINVAL;
        if ((off & (long)GuestMemory.PageMask) != 0) return -Errno.EINVAL;
        len = (len + GuestMemory.PageMask) & ~GuestMemory.PageMask;
        OpenFile? file = null;
        if ((flags & Map.ANONYMOUS) == 0)
        {
            if (!Fds.TryGetValue(fd, out file)) return -Errno.EBADF;
        }
        ulong at;
        if ((flags & (Map.FIXED | Map.FIXED_NOREPLACE)) != 0)
        {
            if ((addr & GuestMemory.PageMask) != 0 || addr + len > GuestMemory.AddressLimit || addr < MmapBottom) return -Errno.EINVAL;
            if ((flags & Map.FIXED_NOREPLACE) != 0 && !Mem.IsFree(addr, addr + len)) return -Errno.EEXIST;
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
        P.Files.Unmapping(this, cpu.Tid, at, at + len);
        Mem.Map(at, len, (Prot)(prot & 7), file != null ? file.GuestPath : "", file != null ? off : 0, (flags & Map.SHARED) != 0);
        if (file != null)
        {
            long got = FileMappings.Fill(this, cpu.Tid, file, at, (int)Math.Min(len, int.MaxValue), off);
            if (got < 0) { Mem.Unmap(at, len); return got == -Errno.EISDIR ? -Errno.ENODEV : -Errno.EACCES; }
            // pages wholly past the end of the file raise SIGBUS when touched (the count is the logged result)
            ulong filled = ((ulong)got + GuestMemory.PageMask) & ~GuestMemory.PageMask;
            if (filled < len) Mem.MarkBeyondEof(at, at + filled);
            if ((flags & Map.SHARED) != 0 && (prot & (int)Prot.Write) != 0) P.Files.AddShared(file, at, at + len, off);
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
        if ((flags & Map.MREMAP_FIXED) == 0 && Mem.IsFree(old + oldLen, old + newLen))
        {
            Mem.Map(old + oldLen, newLen - oldLen, vma.Prot, vma.Name);
            return (long)old;
        }
        if ((flags & Map.MREMAP_MAYMOVE) == 0) return -Errno.ENOMEM;
        ulong at = (flags & Map.MREMAP_FIXED) != 0 ? newAddr : Mem.FindFree(newLen, MmapTop, MmapBottom);
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
