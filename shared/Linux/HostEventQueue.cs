namespace ReVirt.Linux;

/// <summary>
/// First in, first out, for events that host threads post and the guest thread takes (any number of posters, one
/// taker; every operation under one lock). Contract: every item enqueued is dequeued exactly once, and the items of
/// one poster in the order it posted them. In place of <c>ConcurrentQueue&lt;T&gt;</c>: the framework's generic
/// collections have no ReadyToRun code for value-type items, so the machine's two queues of them were JIT-compiled
/// whenever a machine was made; this type is ReVirt's own, so its instantiations are precompiled with the rest.
/// Host events are rare (timer expiries, signals from outside, ends of host waits): the lock is never contended.
/// </summary>
internal sealed class HostEventQueue<T>
{
    readonly Lock _gate = new();
    T[] _items = new T[8];
    int _head, _count;

    public bool IsEmpty { get { lock (_gate) return _count == 0; } }

    public void Enqueue(T item)
    {
        lock (_gate)
        {
            if (_count == _items.Length) Grow();
            _items[(_head + _count) % _items.Length] = item;
            _count++;
        }
    }

    /// <summary>The oldest item, left in the queue.</summary>
    public bool TryPeek(out T item)
    {
        lock (_gate)
        {
            item = _count == 0 ? default! : _items[_head];
            return _count != 0;
        }
    }

    public bool TryDequeue(out T item)
    {
        lock (_gate)
        {
            if (_count == 0) { item = default!; return false; }
            item = _items[_head];
            _items[_head] = default!;
            _head = (_head + 1) % _items.Length;
            _count--;
            return true;
        }
    }

    /// <summary>Doubles the ring, the oldest item first.</summary>
    void Grow()
    {
        var bigger = new T[_items.Length * 2];
        for (int k = 0; k < _count; k++) bigger[k] = _items[(_head + k) % _items.Length];
        _items = bigger;
        _head = 0;
    }
}

/// <summary>A posted end of a host wait: the thread and the number of its wait; <see cref="Order"/> numbers it among
/// all posted events.</summary>
internal readonly struct PostedWake(int tid, uint seq, long order)
{
    public readonly int Tid = tid;
    public readonly uint Seq = seq;
    public readonly long Order = order;
}

/// <summary>A posted host event: a signal from outside or a timer, or the preemption event; <see cref="Order"/> numbers
/// it among all posted events.</summary>
internal readonly struct PostedSignal(int sig, long order)
{
    public readonly int Sig = sig;
    public readonly long Order = order;
}
