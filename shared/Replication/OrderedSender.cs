using System.Collections.Concurrent;

namespace ReVirt.Replication;

/// <summary>
/// Items that must go out in the order they were added, sent by whichever thread offers to send while no other
/// thread is sending — never by one thread waiting for another's send. A thread that finds a send in progress leaves
/// its items to the sending thread, which looks for more after its last item and again after letting go, so every item
/// is sent exactly once, in order, and soon. The contract it serves: the guest thread appends log records under the
/// replication client's lock and ships them itself (no hand-off on the acknowledgement path), but never waits there,
/// nor holding that lock, for a send of the flush thread that the backup is slow to take.
/// </summary>
/// <remarks>Items are added in order by the caller (under its own lock); <paramref name="send"/> must not throw for a
/// broken link (it records the failure), or the items after it wait for the next offer.</remarks>
public sealed class OrderedSender<T>(Action<T> send)
{
    readonly ConcurrentQueue<T> _queue = new();
    readonly object _sending = new();

    /// <summary>Queues an item behind the ones added before (the caller orders concurrent adds).</summary>
    public void Add(T item) => _queue.Enqueue(item);

    public bool IsEmpty => _queue.IsEmpty;

    /// <summary>Sends what is queued, unless another thread is sending now (it sends these too): never waits for another thread.</summary>
    public void Offer()
    {
        while (!_queue.IsEmpty)
        {
            // a thread that fails here added its items before trying: the holder sees them after letting go (below)
            if (!Monitor.TryEnter(_sending)) return;
            try { Drain(); }
            finally { Monitor.Exit(_sending); }
        }
    }

    /// <summary>Waits for a send in progress, then sends what is queued (not for a thread that must never wait).</summary>
    public void SendAll()
    {
        lock (_sending) Drain();
    }

    void Drain()
    {
        while (_queue.TryDequeue(out var item)) send(item);
    }
}
