using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Replay;

/// <summary>
/// What a replay accepts as the guest-memory writes of one recorded syscall. A log is input from outside: a record
/// may claim that a syscall wrote anything anywhere. The only writes a recording can hold are those the kernel's
/// host operation made into the buffers the guest named in that syscall's arguments, so each recorded write must
/// lie inside one of those buffers (derived here from the syscall number and the guest's registers and memory at
/// the syscall, which the replay reproduces exactly), must not wrap around the address space, and must land in
/// mapped guest memory. Writes at address 0 are side values the kernel keeps for itself (a node name, a socket
/// address); they never reach guest memory and are bounded in size. A syscall absent from the table cannot write
/// guest memory at all. The contract is kept in one table, next to the kernel's host operations it mirrors.
/// </summary>
public static class RecordedWrites
{
    /// <summary>Most bytes of side values one record may carry (the largest is sendfile's 1 MiB chunk).</summary>
    public const int MaxSideBytes = 1 << 20;
    /// <summary>Largest struct sockaddr (sockaddr_storage).</summary>
    const ulong SockAddrMax = 128;
    /// <summary>Most iovec entries a readv/recvmsg names (UIO_MAXIOV).</summary>
    const ulong MaxIov = 1024;

    /// <summary>The buffers a syscall's arguments name, reused by each call on the thread (a check calls nothing that
    /// checks again).</summary>
    [ThreadStatic] static (ulong Start, ulong Len)[]? t_allowed;

    /// <summary>Returns why the writes cannot come from this syscall, or null when every write is one it can make.</summary>
    public static string? Check(int nr, CpuT cpu, GuestMemory mem, IReadOnlyList<GuestWrite>? writes)
    {
        if (writes == null || writes.Count == 0) return null;
        ulong a1 = cpu.R[7], a2 = cpu.R[6], a3 = cpu.R[2], a4 = cpu.R[10], a5 = cpu.R[8], a6 = cpu.R[9];
        // an array grown by hand, not a List: List's code over a tuple of ulongs has no ReadyToRun code and would be
        // compiled for each replay at its first syscall with writes; the calling thread's own, kept between calls (a
        // replay checks every read's and poll's writes here: one array per call was a tenth of what it allocated)
        var allowed = t_allowed ??= new (ulong Start, ulong Len)[8];
        int count = 0;
        void Buf(ulong addr, ulong len)
        {
            if (addr == 0 || len == 0) return;
            if (count == allowed.Length)
            {
                var more = new (ulong Start, ulong Len)[2 * count];
                Array.Copy(allowed, more, count);
                t_allowed = allowed = more;
            }
            allowed[count++] = (addr, len);
        }
        ulong U32At(ulong addr) => addr != 0 && mem.IsReadable(addr, 4) ? mem.Read32(addr) : 0;
        void Iovecs(ulong iov, ulong count)
        {
            count = Math.Min(count, MaxIov);
            if (iov == 0 || count == 0 || !mem.IsReadable(iov, count * 16)) return;
            for (ulong i = 0; i < count; i++) Buf(mem.Read64(iov + i * 16), mem.Read64(iov + i * 16 + 8));
        }
        switch (nr)
        {
            case Nr.read: case Nr.pread64: case Nr.getdents64: case Nr.getdents: case Nr.readlink: Buf(a2, a3); break;
            case Nr.readlinkat: Buf(a3, a4); break;
            case Nr.getrandom: Buf(a1, a2); break;
            case Nr.readv: Iovecs(a2, a3); break;
            case Nr.recvfrom: Buf(a2, a3); Buf(a5, Math.Max(SockAddrMax, U32At(a6))); Buf(a6, 4); break;
            case Nr.recvmsg:
                Buf(a2, 56);
                if (mem.IsReadable(a2, 56))
                {
                    Buf(mem.Read64(a2), Math.Max(SockAddrMax, mem.Read32(a2 + 8)));
                    Iovecs(mem.Read64(a2 + 16), mem.Read64(a2 + 24));
                    Buf(mem.Read64(a2 + 32), mem.Read64(a2 + 40));
                }
                break;
            case Nr.accept: case Nr.accept4: case Nr.getsockname: case Nr.getpeername:
                Buf(a2, Math.Max(SockAddrMax, U32At(a3))); Buf(a3, 4); break;
            case Nr.getsockopt: Buf(a4, U32At(a5)); Buf(a5, 4); break;
            case Nr.select: case Nr.pselect6:
                {
                    ulong set = Math.Max(128, (Math.Min(a1, 1 << 20) + 63) / 64 * 8);
                    Buf(a2, set); Buf(a3, set); Buf(a4, set); Buf(a5, 16);
                    break;
                }
            case Nr.poll: case Nr.ppoll: Buf(a1, Math.Min(a2, 1 << 20) * 8); break;
            case Nr.epoll_wait: case Nr.epoll_pwait: Buf(a2, Math.Min(a3, 1 << 20) * 12); break;
            case Nr.fstat: case Nr.stat: case Nr.lstat: Buf(a2, 144); break;
            case Nr.newfstatat: Buf(a3, 144); break;
            case Nr.statx: Buf(a5, 256); break;
            case Nr.statfs: case Nr.fstatfs: Buf(a2, 120); break;
            case Nr.ioctl: Buf(a3, 64); break;
            case Nr.sysinfo: Buf(a1, 112); break;
            case Nr.getrusage: Buf(a2, 144); break;
            case Nr.times: case Nr.gettimeofday: Buf(a1, 32); break;
            case Nr.clock_gettime: case Nr.clock_getres: Buf(a2, 16); break;
            case Nr.nanosleep: Buf(a2, 16); break;
            case Nr.clock_nanosleep: Buf(a4, 16); break;
            case Nr.setitimer: Buf(a3, 32); break;
            case Nr.getitimer: case Nr.timer_gettime: Buf(a2, 32); break;
            case Nr.timer_settime: Buf(a4, 32); break;
            case Nr.mmap:
                // a file mapping is filled at the address the kernel chose: anywhere mapped, at most the length asked
                for (int i = 0; i < writes.Count; i++)
                    if (writes[i] is (not 0, var bytes) && (ulong)bytes.Length > a2) return $"mmap of {a2} bytes cannot fill {bytes.Length} bytes";
                Buf(GuestMemory.PageSize, GuestMemory.AddressLimit - GuestMemory.PageSize);
                break;
        }
        long side = 0;
        for (int w = 0; w < writes.Count; w++) // indexed: an enumerator over the interface is more code compiled per replay
        {
            var (addr, bytes) = writes[w];
            ulong len = (ulong)bytes.Length;
            if (addr == 0)
            {
                side += bytes.Length;
                if (side > MaxSideBytes) return $"{side} bytes of side values (at most {MaxSideBytes})";
                continue;
            }
            if (addr + len < addr || addr + len > GuestMemory.AddressLimit)
                return $"a write of {len} bytes at 0x{addr:x} wraps around or leaves the guest's address space";
            bool inside = false;
            for (int i = 0; i < count && !inside; i++)
            {
                var (s, l) = allowed[i];
                inside = addr >= s && addr - s <= l && len <= l - (addr - s);
            }
            if (!inside)
                return count == 0
                    ? $"syscall {nr} writes no guest memory, yet the record writes {len} bytes at 0x{addr:x}"
                    : $"a write of {len} bytes at 0x{addr:x} lies outside the buffers syscall {nr} was given ({string.Join(", ", allowed.Take(count).Select(b => $"0x{b.Start:x}+{b.Len}"))})";
            if (len > 0 && !Mapped(mem, addr, len))
                return $"a write of {len} bytes at 0x{addr:x} lands in unmapped guest memory";
        }
        return null;
    }

    static bool Mapped(GuestMemory mem, ulong addr, ulong len)
    {
        for (ulong pg = addr & ~GuestMemory.PageMask; pg < addr + len; pg += GuestMemory.PageSize)
            if (mem.FindVma(Math.Max(pg, addr)) == null) return false;
        return true;
    }
}
