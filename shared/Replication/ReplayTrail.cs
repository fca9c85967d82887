using System.Collections.Concurrent;
using ReVirt.Log;

namespace ReVirt.Replication;

/// <summary>
/// How far a backup's replay trails the log, as the live replica sees it (its side of <c>--max-replay-lag-ms</c>):
/// the records it produced while protected that the backup has not reported replayed yet, each with the time it was
/// produced, and the last time the reported position advanced. Times are <see cref="System.Diagnostics.Stopwatch"/>
/// ticks given by the caller. Producer: the guest thread; reporter: the ack thread.
///
/// Contract: a record counts only if a replay reports it. The End record closes the log and holds nothing to
/// replay, so it never counts: a throttle that waited for it would wait for a report that a replay which has
/// finished the guest has no reason to send (found in CI: a guest throttled at its End record waited until the
/// backup's process exited, 30 s later).
/// </summary>
public sealed class ReplayTrail
{
    readonly ConcurrentQueue<(ulong Seq, long Ticks)> _unreplayed = new();
    long _replayed, _progressTicks;

    /// <summary>The replay position the backup reported last.</summary>
    public ulong Replayed => (ulong)Interlocked.Read(ref _replayed);

    /// <summary>When the reported position last advanced (or the trail was reset).</summary>
    public long ProgressTicks => Interlocked.Read(ref _progressTicks);

    /// <summary>A record was produced for the backup (guest thread, in sequence order).</summary>
    public void Produced(ulong sequence, RecordKind kind, long ticks)
    {
        if (kind == RecordKind.End) return;
        _unreplayed.Enqueue((sequence, ticks));
    }

    /// <summary>The backup reported its replay at <paramref name="replayed"/> (reports are cumulative; an older one
    /// changes nothing). True when the position advanced.</summary>
    public bool Reported(ulong replayed, long ticks)
    {
        long r = (long)replayed, was;
        bool advanced = false;
        while ((was = Interlocked.Read(ref _replayed)) < r)
            if (Interlocked.CompareExchange(ref _replayed, r, was) == was) { advanced = true; break; }
        if (advanced) Interlocked.Exchange(ref _progressTicks, ticks);
        while (_unreplayed.TryPeek(out var u) && u.Seq <= replayed) _unreplayed.TryDequeue(out _);
        return advanced;
    }

    /// <summary>The age (ms) at <paramref name="now"/> of the oldest record not reported replayed; 0 when none is.</summary>
    public double TrailMs(long now) => _unreplayed.TryPeek(out var e) ? System.Diagnostics.Stopwatch.GetElapsedTime(e.Ticks, now).TotalMilliseconds : 0;

    /// <summary>A new backup: nothing is outstanding, nothing was reported.</summary>
    public void Reset(long ticks)
    {
        Interlocked.Exchange(ref _replayed, 0);
        Interlocked.Exchange(ref _progressTicks, ticks);
        while (_unreplayed.TryDequeue(out _)) { }
    }
}
