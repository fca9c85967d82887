using System.Diagnostics;

namespace ReVirt.Replication;

/// <summary>
/// How the backup judges its primary's silence on the data link (one per link, used by its reader thread only).
/// The bound starts long (the primary may be taking or encoding a snapshot) and becomes the short silence bound at
/// the running session's first message of any kind, from when on the primary writes a batch or a heartbeat within it
/// (a heartbeat when no batch went out for its interval): a silence is the time since the last message of any kind,
/// so a busy primary's batches are its liveness. (Armed by the first heartbeat only, the bound was never armed for a
/// primary whose guest never idled for a heartbeat interval, and such a primary frozen was waited out for the long
/// time-out.) The longest
/// time the reader waited for a message since then is kept (an upper bound of the primary's silence: it includes
/// the time the reader took to run again once a message had arrived), so a run reports how close a live primary came to being
/// declared lost (events `primary-finished` and `primary-lost`: `longestSilenceMs`) — the margin against false
/// takeovers on a loaded machine.
/// </summary>
public sealed class LinkSilence(int initialBoundMs)
{
    long _last = Stopwatch.GetTimestamp();
    long _armedAt;
    bool _armed;
    double _longest, _longestAt;
    /// <summary>Silences of at least each of <see cref="Steps"/> ms since the short bound was armed.</summary>
    readonly int[] _over = new int[Steps.Length];
    static readonly int[] Steps = [25, 50, 100, 150, 200, 250, 300, 500];
    /// <summary>The first <see cref="LongKept"/> silences of at least <see cref="LongMs"/> ms: when they ended (ms since
    /// the bound was armed) and how long they were: whether a live primary's long silences come with its start or at
    /// any time (what a shorter bound would have taken over from).</summary>
    readonly List<(double At, double Ms)> _long = [];
    const int LongKept = 16;
    const double LongMs = 100;

    /// <summary>The silence after which the primary is lost now.</summary>
    public int BoundMs { get; private set; } = initialBoundMs;

    /// <summary>The longest silence between two messages since the short bound was armed (0 before).</summary>
    public double LongestMs => Math.Round(_longest, 1);

    /// <summary>When the longest silence ended, ms after the short bound was armed (0 before).</summary>
    public double LongestAtMs => Math.Round(_longestAt);

    /// <summary>How many silences reached each step, e.g. "25:40 50:6 100:1 150:0 ..." (the tail that a bound must clear).</summary>
    public string Histogram => string.Join(' ', Steps.Select((ms, i) => $"{ms}:{_over[i]}"));

    /// <summary>The first silences of at least 100 ms as "AT:MS ..." (AT: when each ended, ms after the short bound was
    /// armed; MS: its length).</summary>
    public string Long => string.Join(' ', _long.Select(l => $"{l.At:F0}:{l.Ms:F0}"));

    /// <summary>The reader starts waiting for the next message: a silence is the time it then waits, not the time it
    /// spent on the last message (holding a batch can take a while without the link being silent).</summary>
    public void Listening() => _last = Stopwatch.GetTimestamp();

    /// <summary>A message arrived.</summary>
    public void Heard()
    {
        long now = Stopwatch.GetTimestamp();
        if (_armed)
        {
            double ms = Stopwatch.GetElapsedTime(_last, now).TotalMilliseconds;
            if (ms > _longest)
            {
                _longest = ms;
                _longestAt = Stopwatch.GetElapsedTime(_armedAt, now).TotalMilliseconds;
            }
            for (int i = 0; i < Steps.Length && ms >= Steps[i]; i++) _over[i]++;
            if (ms >= LongMs && _long.Count < LongKept) _long.Add((Stopwatch.GetElapsedTime(_armedAt, now).TotalMilliseconds, ms));
        }
        _last = now;
    }

    // the messages other than pulses (batches, heartbeats: what the bound measured before the pulse), and the pulses
    long _lastOther;
    double _longestOther;
    readonly List<(double At, double Ms)> _longOther = [];
    ulong _lastPulseNs;
    long _pulses;
    double _pulseGap, _pulseDelay;

    /// <summary>The longest silence between messages other than pulses (batches and heartbeats, which the runtime's
    /// pauses stop) since the short bound was armed: what the silence bound measured without the pulse.</summary>
    public double LongestUnpulsedMs => Math.Round(_longestOther, 1);

    /// <summary>The first silences between messages other than pulses of at least 100 ms, "AT:MS ..." as <see cref="Long"/>.</summary>
    public string LongUnpulsed => string.Join(' ', _longOther.Select(l => $"{l.At:F0}:{l.Ms:F0}"));

    /// <summary>Pulses read (<see cref="LinkPulse"/>).</summary>
    public long Pulses => _pulses;

    /// <summary>The longest time between two pulses' sending, by their own stamps (the primary's side of a silence:
    /// its pulse thread's scheduling), ms; 0 before two pulses.</summary>
    public double PulseGapMs => Math.Round(_pulseGap, 1);

    /// <summary>The longest time from a pulse's sending to its reading here (this side of a silence: the link and this
    /// reader's scheduling), ms; 0 when the replicas do not share a clock.</summary>
    public double PulseDelayMs => Math.Round(_pulseDelay, 1);

    /// <summary>A message other than a pulse arrived (after <see cref="Heard"/>).</summary>
    public void Spoke()
    {
        long now = _last;
        if (_armed && _lastOther != 0)
        {
            double ms = Stopwatch.GetElapsedTime(_lastOther, now).TotalMilliseconds;
            if (ms > _longestOther) _longestOther = ms;
            if (ms >= LongMs && _longOther.Count < LongKept) _longOther.Add((Stopwatch.GetElapsedTime(_armedAt, now).TotalMilliseconds, ms));
        }
        if (_armed) _lastOther = now;
    }

    /// <summary>A pulse arrived (after <see cref="Heard"/>), stamped <paramref name="sentNs"/> on the primary's
    /// CLOCK_MONOTONIC, which this replica reads too when <paramref name="sharedClock"/>.</summary>
    public void Pulsed(ulong sentNs, bool sharedClock)
    {
        _pulses++;
        if (_lastPulseNs != 0 && sentNs > _lastPulseNs) _pulseGap = Math.Max(_pulseGap, (sentNs - _lastPulseNs) / 1e6);
        _lastPulseNs = sentNs;
        ulong now = sharedClock ? LinkWire.MonotonicNs() : 0;
        if (now > sentNs) _pulseDelay = Math.Max(_pulseDelay, (now - sentNs) / 1e6);
    }

    /// <summary>A message of the running session arrived: from now on the short bound applies. True the first time
    /// (the caller sets the link's receive time-out to it).</summary>
    public bool Arm(int boundMs)
    {
        if (_armed) return false;
        _armed = true;
        _armedAt = Stopwatch.GetTimestamp();
        _lastOther = _armedAt;
        BoundMs = boundMs;
        return true;
    }
}
