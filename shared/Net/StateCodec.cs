namespace ReVirt.Net;

/// <summary>
/// Writes or reads the stack's state with one piece of code per class (<c>Serialize(StateCodec)</c>), so that saving
/// and restoring cannot drift apart. Reading checks every count and length against a bound, so a corrupt snapshot
/// is refused with <see cref="InvalidDataException"/> instead of allocating without limit.
/// </summary>
public sealed class StateCodec
{
    const int MaxCount = 1 << 20, MaxBytes = 64 << 20;
    readonly BinaryWriter? _w;
    readonly BinaryReader? _r;

    public StateCodec(BinaryWriter w) => _w = w;
    public StateCodec(BinaryReader r) => _r = r;

    public bool Reading => _r != null;

    public void Do(ref long v) { if (_r != null) v = _r.ReadInt64(); else _w!.Write(v); }
    public void Do(ref ulong v) { if (_r != null) v = _r.ReadUInt64(); else _w!.Write(v); }
    public void Do(ref int v) { if (_r != null) v = _r.ReadInt32(); else _w!.Write(v); }
    public void Do(ref uint v) { if (_r != null) v = _r.ReadUInt32(); else _w!.Write(v); }
    public void Do(ref ushort v) { if (_r != null) v = _r.ReadUInt16(); else _w!.Write(v); }
    public void Do(ref byte v) { if (_r != null) v = _r.ReadByte(); else _w!.Write(v); }
    public void Do(ref bool v) { if (_r != null) v = _r.ReadBoolean(); else _w!.Write(v); }

    public void Do(ref byte[] v)
    {
        int n = v?.Length ?? 0;
        Do(ref n);
        if (_r == null) { _w!.Write(v ?? []); return; }
        if (n < 0 || n > MaxBytes) throw new InvalidDataException($"network stack state: a {n}-byte field");
        v = _r.ReadBytes(n);
        if (v.Length != n) throw new InvalidDataException("network stack state: truncated");
    }

    /// <summary>A collection's size: written as given, or read and checked.</summary>
    public int Count(int n)
    {
        Do(ref n);
        if (n < 0 || n > MaxCount) throw new InvalidDataException($"network stack state: a collection of {n}");
        return n;
    }

    /// <summary>A property, through a local: <c>c.Prop(State, v => State = v)</c>.</summary>
    public void Prop<T>(T value, Action<T> set) where T : struct
    {
        switch (value)
        {
            case long l: Do(ref l); set((T)(object)l); break;
            case uint u: Do(ref u); set((T)(object)u); break;
            case ushort s: Do(ref s); set((T)(object)s); break;
            case int i: Do(ref i); set((T)(object)i); break;
            case bool b: Do(ref b); set((T)(object)b); break;
            default: throw new NotSupportedException(typeof(T).Name);
        }
    }
}
