using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>futex: waits and wake-ups between the threads of the machine.</summary>
public sealed partial class Kernel
{
    void RegisterFutexSyscalls(SyscallTable r)
    {
        r.Family(SyscallFlags.Emulated);
        r.Add(Nr.futex, (t, a) => FutexOp(t, a.A1, (int)a.A2, (uint)a.A3, a.A4, a.A5, (uint)a.A6));
    }

    long FutexOp(GuestThread t, ulong uaddr, int op, uint val, ulong timeout, ulong uaddr2, uint val3)
    {
        int cmd = op & Futex.CMD_MASK;
        switch (cmd)
        {
            case Futex.WAIT:
            case Futex.WAIT_BITSET:
                {
                    if (timeout != 0) return TimedFutexWait(t, uaddr, op, val, timeout, cmd == Futex.WAIT_BITSET ? val3 : Futex.BITSET_MATCH_ANY);
                    uint cur = Mem.Read32(uaddr);
                    if (cur != val) return -Errno.EAGAIN;
                    SetState(t, ThreadState.Blocked);
                    t.FutexAddr = uaddr;
                    t.FutexBitset = cmd == Futex.WAIT_BITSET ? val3 : Futex.BITSET_MATCH_ANY;
                    RequestSwitch(t);
                    return 0; // the value the waiter sees when woken
                }
            case Futex.WAKE:
            case Futex.WAKE_BITSET:
                return FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), cmd == Futex.WAKE_BITSET ? val3 : Futex.BITSET_MATCH_ANY);
            case Futex.REQUEUE:
            case Futex.CMP_REQUEUE:
                {
                    if (cmd == Futex.CMP_REQUEUE && Mem.Read32(uaddr) != val3) return -Errno.EAGAIN;
                    int woken = FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), Futex.BITSET_MATCH_ANY);
                    int moved = 0;
                    foreach (var w in Waiters(t.Process))
                        if (w.FutexAddr == uaddr && moved < (int)Math.Min(timeout, int.MaxValue)) { w.FutexAddr = uaddr2; moved++; }
                    return woken + moved;
                }
            case Futex.WAKE_OP:
                {
                    uint oparg = (val3 >> 12) & 0xFFF, cmparg = val3 & 0xFFF;
                    int opn = (int)((val3 >> 28) & 0xF), cmpn = (int)((val3 >> 24) & 0xF);
                    if ((opn & 8) != 0) oparg = 1u << (int)(oparg & 31);
                    uint old = Mem.Read32(uaddr2);
                    uint nv = (opn & 7) switch { 0 => oparg, 1 => old + oparg, 2 => old | oparg, 3 => old & ~oparg, _ => old ^ oparg };
                    Mem.Write32(uaddr2, nv);
                    int r = FutexWake(uaddr, (int)Math.Min(val, int.MaxValue), Futex.BITSET_MATCH_ANY);
                    bool cond = cmpn switch { 0 => old == cmparg, 1 => old != cmparg, 2 => old < cmparg, 3 => old <= cmparg, 4 => old > cmparg, _ => old >= cmparg };
                    if (cond) r += FutexWake(uaddr2, (int)Math.Min(timeout, int.MaxValue), Futex.BITSET_MATCH_ANY);
                    return r;
                }
            default:
                return -Errno.ENOSYS;
        }
    }

    /// <summary>
    /// A futex wait with a timeout parks only its thread, as a sleep does: the first attempt checks the word and
    /// fixes the deadline on the host's monotonic clock (FUTEX_WAIT: relative; FUTEX_WAIT_BITSET: absolute on
    /// CLOCK_MONOTONIC, or CLOCK_REALTIME with FUTEX_CLOCK_REALTIME), and the thread parks with a host wait until
    /// then; the logged wake-up at the deadline runs the call again, which answers ETIMEDOUT. A FUTEX_WAKE that
    /// chooses the thread unparks it (an in-VM event, nothing logged) and the call answers 0. A run of the call
    /// after any other wake-up (a signal that did not interrupt it) checks the word again, as a new call would:
    /// EAGAIN when it changed, which every futex user takes as "look again".
    /// </summary>
    long TimedFutexWait(GuestThread t, ulong uaddr, int op, uint val, ulong timeout, uint bitset)
    {
        if (t.FutexWoken) { EndFutexWait(t); return 0; }
        var ts = Mem.ReadBytes(timeout, 16);
        long sec = BinaryPrimitives.ReadInt64LittleEndian(ts), nsec = BinaryPrimitives.ReadInt64LittleEndian(ts.AsSpan(8));
        if (sec < 0 || nsec < 0 || nsec >= 1_000_000_000) { EndFutexWait(t); return -Errno.EINVAL; }
        if (Mem.Read32(uaddr) != val) { EndFutexWait(t); return -Errno.EAGAIN; }
        long ns = sec > long.MaxValue / 2_000_000_000 ? long.MaxValue / 2 : sec * 1_000_000_000 + nsec;
        bool absolute = (op & Futex.CMD_MASK) == Futex.WAIT_BITSET;
        int clock = (op & Futex.CLOCK_REALTIME) != 0 ? Clocks.REALTIME : Clocks.MONOTONIC;
        t.FutexAddr = uaddr;
        t.FutexBitset = bitset;
        t.FutexTimed = true;
        long r = Host(t.Cpu, Nr.futex, () =>
        {
            long now = HostClock.NowNs();
            long deadline = DeadlineOf(t, () => absolute ? now + (ns - HostClock.Now(clock)) : now + ns);
            if (now >= deadline) return HostResult.Of(-Errno.ETIMEDOUT);
            return BlockUntil(t, [], deadline);
        }).Value;
        if (r != WouldBlock) EndFutexWait(t);
        return r;
    }

    static void EndFutexWait(GuestThread t)
    {
        t.FutexTimed = false;
        t.FutexWoken = false;
    }

    /// <summary>Threads of the process waiting on a futex (futex words are addresses in its memory): blocked in an
    /// untimed wait, or parked in a timed one.</summary>
    static IEnumerable<GuestThread> Waiters(Process p)
        => p.Threads.Where(w => w.Blocked && (!w.Parked || (w.FutexTimed && !w.FutexWoken && w.ParkedNr == Nr.futex)));

    int FutexWake(ulong uaddr, int n, uint bitset)
    {
        int woken = 0;
        foreach (var w in Waiters(P).ToList())
        {
            if (woken >= n) break;
            if (w.FutexAddr == uaddr && (w.FutexBitset & bitset) != 0)
            {
                if (w.Parked) { w.FutexWoken = true; Unpark(w); }
                else SetState(w, ThreadState.Runnable);
                woken++;
            }
        }
        return woken;
    }

}
