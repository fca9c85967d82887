using System.Diagnostics;

namespace ReVirt.Replication;

/// <summary>
/// When a protected recording's records that hold output travel to the backup: the state that the thread logging
/// them (the guest thread), the threads handing gathered records to the link (the guest thread, the replication
/// client's flush thread, the ack thread) and the acknowledgements share. It decides nothing about what leaves the
/// machine — the gate holds every byte until its record is acknowledged, whenever that record was shipped —, only
/// when an acknowledgement can come, and how many batches (each a send, a receive, an ack and a wake-up or two on each
/// replica) a run costs.
/// </summary>
/// <remarks>
/// A record holding output ships (docs/ARCHITECTURE.md, "Output commit"):
/// <list type="bullet">
/// <item>when the guest may wait (the recording ships it at such a call, or as its thread parks);</item>
/// <item>at the guest's first syscall once it has waited the bound (<c>--ship-after-us</c>);</item>
/// <item>while no batch is on its way (<see cref="Idle"/>): at the end of the guest's round (a poll-family call), or,
/// when it was logged behind a batch, at the guest's first syscall after that batch's acknowledgement
/// (<see cref="DueAtCall"/>);</item>
/// <item>on the ack thread, as an acknowledgement that leaves the link idle arrives while it waits unshipped
/// (<see cref="Acknowledged"/>), before that acknowledgement's output is released: an idle link while output waits is
/// time lost, and the guest's next syscall may be far (a long request), while the batch's send then costs the ack
/// thread, not the guest thread.</item>
/// </list>
/// So at most one batch the guest did not wait for is on its way, and a round's replies gather behind it.
/// </remarks>
public sealed class ShipWindow
{
    readonly OutputGate _gate;
    readonly object _lock = new();
    // the newest record handed to the link (by any thread)
    ulong _shipped;
    // when the oldest record holding output that has not been handed to the link was logged (Stopwatch ticks; 0: none)
    long _since;
    // that record was logged while a batch was on its way: it may go as soon as that batch is acknowledged
    bool _behind;
    long _shippedAtAck;
    readonly LatencyHistogram _waits = new();

    public ShipWindow(OutputGate gate) => _gate = gate;

    /// <summary>Hands every record logged so far to the link, and reports it with <see cref="Shipped"/> (the replication
    /// client's flush; called on the ack thread by <see cref="Acknowledged"/>). Null: nothing ships at acknowledgements.</summary>
    public Action? Link { get; set; }

    /// <summary>No batch is on its way: the backup has acknowledged every record handed to the link.</summary>
    public bool Idle => _gate.AckedThrough >= Volatile.Read(ref _shipped);

    /// <summary>A record holding output waits to be handed to the link.</summary>
    public bool OutputWaits => Volatile.Read(ref _since) != 0;

    /// <summary>The newest record handed to the link.</summary>
    public ulong ShippedThrough => Volatile.Read(ref _shipped);

    /// <summary>Batches <see cref="Acknowledged"/> shipped.</summary>
    public long ShippedAtAcknowledgements => Interlocked.Read(ref _shippedAtAck);

    /// <summary>Record <paramref name="seq"/>, which holds output, was logged (the logging thread, after appending it).
    /// One that another thread has handed to the link meanwhile waits for nothing.</summary>
    public void OutputLogged(ulong seq)
    {
        lock (_lock)
        {
            if (_since != 0 || seq <= _shipped) return;
            _behind = !Idle;
            Volatile.Write(ref _since, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Every record up to <paramref name="through"/> was handed to the link (any thread, before the send).</summary>
    public void Shipped(ulong through)
    {
        lock (_lock)
        {
            if (through > _shipped) Volatile.Write(ref _shipped, through);
            if (_since == 0) return;
            _waits.AddTicks(_since, Stopwatch.GetTimestamp());
            Volatile.Write(ref _since, 0);
        }
    }

    /// <summary>
    /// At the entry of a syscall that does not wait (the logging thread): is what holds output due? Once it has waited
    /// <paramref name="boundTicks"/>; or, with no batch on its way, at the end of a round (<paramref name="endsRound"/>)
    /// or when it was logged behind a batch (acknowledged since).
    /// </summary>
    public bool DueAtCall(bool endsRound, long boundTicks)
    {
        long since = Volatile.Read(ref _since);
        if (since == 0) return false;
        if (Stopwatch.GetTimestamp() - since >= boundTicks) return true;
        return (endsRound || _behind) && Idle;
    }

    /// <summary>
    /// An acknowledgement of the log up to <paramref name="acked"/> arrived (the ack thread, before the gate takes it):
    /// when it acknowledges the rest of what was on its way while output waits unshipped, the waiting records are handed
    /// to the link now (<see cref="Link"/>) rather than at the guest's next syscall. One that acknowledges nothing new (a
    /// report of the backup's replay repeats the last) ships nothing: output logged on an idle link waits for its round.
    /// </summary>
    public void Acknowledged(ulong acked)
    {
        if (Link is not { } link || Volatile.Read(ref _since) == 0 || acked < Volatile.Read(ref _shipped) || acked <= _gate.AckedThrough) return;
        link();
        Interlocked.Increment(ref _shippedAtAck);
    }

    /// <summary>For each batch that carried a record holding output, how long the oldest such record waited before it
    /// was handed to the link.</summary>
    public LatencyHistogram Waits => _waits;
}
