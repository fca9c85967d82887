using ReVirt.Cpu;
using ReVirt.Memory;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Linux;

/// <summary>
/// What a machine snapshot (shared/Snapshot) needs of the kernel's private state: the scheduler's order and counters,
/// and a way to install a process tree restored from a snapshot in place of the one the constructor made. The
/// encoding itself lives in <see cref="Snapshot.MachineSnapshot"/>; this file only opens the doors it needs.
/// </summary>
public sealed partial class Kernel
{
    bool _restored;

    /// <summary>The scheduler's state that is not in the processes and threads themselves.</summary>
    internal readonly record struct SchedulerState(int NextTid, ulong PipesMade, ulong AccountedAt, bool SwitchAsked, bool YieldAsked, uint Uid);

    internal SchedulerState Scheduler => new(_nextTid, _pipes, _accountedAt, _switch, _yieldAsked, Uid);

    /// <summary>Threads in the scheduler's round-robin order, those of reaped processes left out (dead, never run
    /// again, in no digest).</summary>
    internal IEnumerable<GuestThread> SchedulerOrder => _threads.Where(t => Processes.Contains(t.Process));

    /// <summary>Why the machine's state cannot be captured yet (null: it can). State that a snapshot cannot carry to
    /// another replica (shared file mappings) makes the caller fall back to sending the log.</summary>
    internal string? Uncapturable()
    {
        if (Exited) return "the guest has ended";
        foreach (var p in Processes)
        {
            if (p.Files.HasShared) return $"process {p.Pid} has a shared writable file mapping";
            if (Processes.Any(q => q != p && ReferenceEquals(q.Mem, p.Mem))) return $"process {p.Pid} shares its address space with another process";
        }
        return null;
    }

    /// <summary>Replaces the process tree the constructor made by one restored from a snapshot: `procs` (the first is
    /// the machine's first process), the threads in scheduler order, the running thread and the counters.</summary>
    internal void InstallRestored(List<Process> procs, List<GuestThread> order, GuestThread current, SchedulerState st)
    {
        foreach (var p in Processes) p.Mem.Dispose();
        Processes.Clear();
        Processes.AddRange(procs);
        Init = procs[0];
        _threads.Clear();
        _threads.AddRange(order);
        _live = order.Count(t => t.State != ThreadState.Dead);
        _runnable = order.Count(t => t.CanRun); // a stopped process's runnable threads do not count (SetStopped)
        (_nextTid, _pipes, _accountedAt, _switch, _yieldAsked, Uid) = (st.NextTid, st.PipesMade, st.AccountedAt, st.SwitchAsked, st.YieldAsked, st.Uid);
        Current = current;
        _restored = true;
    }

    /// <summary>An interval or POSIX timer as a snapshot carries it: its clock and signal, whether it is set to expire,
    /// when (CLOCK_REALTIME, nanoseconds since the epoch: the clock the host timer's due time is kept on) and its
    /// interval (nanoseconds). The interval timers have ids -1..-3 (ITIMER_REAL, _VIRTUAL, _PROF).</summary>
    internal readonly record struct TimerState(int Id, int Clock, int Signal, bool Armed, long DueNs, long IntervalNs);

    internal IEnumerable<TimerState> Timers
    {
        get
        {
            for (int i = 0; i < _itimers.Length; i++) yield return Of(-1 - i, 0, TimerSignal(i), _itimers[i]);
            foreach (var (id, t) in _posixTimers.OrderBy(kv => kv.Key)) yield return Of(id, t.Clock, t.Signal, t);
        }
    }

    static TimerState Of(int id, int clock, int signal, HostTimerBase t)
        => new(id, clock, signal, t.Armed, t.Armed ? (t.Due - DateTime.UnixEpoch).Ticks * 100 : 0, t.Armed ? t.Interval.Ticks * 100 : 0);

    /// <summary>Installs the timers of a snapshot. They are not armed on the host: a restored machine follows a log,
    /// whose signal records say when they expire.</summary>
    internal void RestoreTimers(IEnumerable<TimerState> timers)
    {
        foreach (var s in timers)
        {
            HostTimerBase t;
            if (s.Id < 0)
            {
                if (s.Id < -_itimers.Length) throw new ArgumentException($"interval timer {-1 - s.Id}");
                t = _itimers[-1 - s.Id];
            }
            else t = _posixTimers[s.Id] = new PosixTimer { Clock = s.Clock, Signal = s.Signal };
            t.Armed = s.Armed;
            t.Due = DateTime.UnixEpoch + TimeSpan.FromTicks(s.DueNs / 100);
            t.Interval = TimeSpan.FromTicks(s.IntervalNs / 100);
        }
    }

    /// <summary>Why a live machine cannot move to another host process now by a snapshot whose descriptions keep
    /// their host descriptors (a hand-off, shared/Snapshot/HandOff.cs), beyond what a snapshot cannot carry: host
    /// work under way that lives in this process only (a thread waiting on the host, armed timers, a blocking open on
    /// a host thread). Null: it can.</summary>
    internal string? HostWorkUnderWay()
    {
        if (HostEventsPending) return "a host event is pending";
        if (Waiter.Any) return "a thread waits on the host";
        if (TimersArmed) return "a timer is armed";
        foreach (var t in _threads)
            if (!t.Dead && (t.HostWait != 0 || t.PendingOpen != null || t.HostDeadline != null)) return $"thread {t.Tid} waits on the host";
        return null;
    }

    /// <summary>A machine restored from a snapshot of a live machine goes on live in this process (a hand-off): the
    /// preemption timer runs again when more than one thread can run.</summary>
    internal void ResumeLive()
    {
        if (!Boundary.Replaying && _threads.Count(t => !t.Dead) > 1) StartSliceTimer();
    }

    /// <summary>A poll-family call's time-out on the stack's clock, as a snapshot carries it: the waiting thread, the
    /// call (nr and rip: a parked call runs again from the start and keeps its first deadline) and the deadline.</summary>
    internal readonly record struct NetWaitState(int Tid, int Nr, ulong Rip, long DeadlineNs);

    /// <summary>The time-outs of parked poll-family calls over in-VM descriptions, by thread id (those of threads
    /// in <paramref name="threads"/> only: an entry of a reaped thread is never compared again).</summary>
    internal IEnumerable<NetWaitState> NetWaits(IReadOnlySet<GuestThread> threads) =>
        _waitDeadlines.Where(kv => threads.Contains(kv.Key)).Select(kv => new NetWaitState(kv.Key.Tid, kv.Value.Nr, kv.Value.Rip, kv.Value.DeadlineNs)).OrderBy(w => w.Tid);

    /// <summary>Installs the virtual interface of a snapshot (its stack, with the guest's sockets already bound to it)
    /// and the time-outs of the poll-family calls parked on it.</summary>
    internal void RestoreNet(VirtualNic nic, IEnumerable<(GuestThread Thread, NetWaitState Wait)> waits)
    {
        _nic = nic;
        foreach (var (t, w) in waits) _waitDeadlines[t] = new WaitDeadline(w.Nr, w.Rip, w.DeadlineNs);
    }

    /// <summary>A CPU for a restored thread of `p`, answering to this kernel.</summary>
    internal CpuT NewCpu(Process p, int tid) => new(p.Mem, p.Code, this) { Tid = tid };

    /// <summary>A code cache for a new, exec'd or restored process (decoded blocks are derived state: they start
    /// empty), in the machine's tier, sharing the machine's program-image blocks; a forked or exec'd process keeps
    /// counting into its parent's <paramref name="profile"/> (`--profile-tier`).</summary>
    internal CodeCache NewCodeCache(GuestMemory mem, TierProfile? profile = null) => new(mem, Options.Tier, Images.Code,
        background: Options.CompileInBackground ? BackgroundCompiler.Shared : null) { Profile = profile };
}
