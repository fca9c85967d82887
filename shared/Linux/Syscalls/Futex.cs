
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
                    uint cur = Mem.Read32(uaddr);
                    if (cur != val) return -Errno.EAGAIN;
                    SetState(t, ThreadState.Blocked);
                    t.FutexAddr = uaddr;
                    t.FutexBitset = cmd == Futex.WAIT_BITSET ? val3 : Futex.BITSET_MATCH_ANY;
                    t.FutexTimed = timeout != 0;
                    RequestSwitch(t);
                    return 0; // the value the waiter sees when woken (a timeout writes -ETIMEDOUT instead)
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

    /// <summary>Threads of the process blocked in a futex wait (futex words are addresses in its memory).</summary>
    static IEnumerable<GuestThread> Waiters(Process p) => p.Threads.Where(w => w.Blocked && !w.Parked);

    int FutexWake(ulong uaddr, int n, uint bitset)
    {
        int woken = 0;
        foreach (var w in Waiters(P))
        {
            if (woken >= n) break;
            if (w.FutexAddr == uaddr && (w.FutexBitset & bitset) != 0)
            {
                SetState(w, ThreadState.Runnable);
                woken++;
            }
        }
        return woken;
    }

}
