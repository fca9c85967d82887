namespace ReVirt.Net;

/// <summary>
/// A bounded FIFO of bytes (a socket's send or receive buffer). Capacity is fixed at creation; the backing array
/// grows on demand up to it, so an idle connection costs little. Never allocates beyond <see cref="Capacity"/>.
/// </summary>
sealed class ByteRing
{
    byte[] _buf = [];
    int _head, _count;

    public ByteRing(int capacity) => Capacity = capacity;

    public int Capacity { get; }
    public int Count => _count;
    public int Free => Capacity - _count;

    /// <summary>Appends as much of <paramref name="data"/> as fits; returns how many bytes were taken.</summary>
    public int Write(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, Free);
        if (n == 0) return 0;
        Reserve(_count + n);
        int tail = (_head + _count) % _buf.Length;
        int first = Math.Min(n, _buf.Length - tail);
        data[..first].CopyTo(_buf.AsSpan(tail));
        data[first..n].CopyTo(_buf);
        _count += n;
        return n;
    }

    /// <summary>Copies bytes starting <paramref name="offset"/> bytes after the head, without removing them.</summary>
    public int Peek(int offset, Span<byte> dest)
    {
        int n = Math.Min(dest.Length, _count - offset);
        if (n <= 0) return 0;
        int start = (_head + offset) % _buf.Length;
        int first = Math.Min(n, _buf.Length - start);
        _buf.AsSpan(start, first).CopyTo(dest);
        _buf.AsSpan(0, n - first).CopyTo(dest[first..]);
        return n;
    }

    public void Discard(int n)
    {
        n = Math.Min(n, _count);
        _count -= n;
        _head = _count == 0 ? 0 : (_head + n) % _buf.Length;
    }

    public int Read(Span<byte> dest)
    {
        int n = Peek(0, dest);
        Discard(n);
        return n;
    }

    /// <summary>The contents in order (for state serialisation).</summary>
    public byte[] ToArray()
    {
        var a = new byte[_count];
        Peek(0, a);
        return a;
    }

    void Reserve(int needed)
    {
        if (needed <= _buf.Length) return;
        int size = Math.Min(Capacity, Math.Max(needed, Math.Max(4096, _buf.Length * 2)));
        var nb = new byte[size];
        Peek(0, nb);
        _buf = nb;
        _head = 0;
    }
}
