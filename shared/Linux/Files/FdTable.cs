namespace ReVirt.Linux;

/// <summary>
/// A process's descriptor table: guest descriptor numbers (allocated deterministically, lowest free first) to
/// open file descriptions, each with its own close-on-exec flag.
/// </summary>
public sealed class FdTable
{
    struct Slot
    {
        public OpenFile? File; // null: the number is free
        public bool CloseOnExec;
    }

    // Indexed by descriptor number: numbers are allocated lowest free first, so the table is dense; its length is
    // the high-water mark rounded up. An array of our own struct rather than a Dictionary<int, Slot>: the framework's
    // generic code over a value type cannot be precompiled into our ReadyToRun image, and this table is built for
    // every process at start-up.
    Slot[] _slots = new Slot[8];
    int _count;

    /// <summary>Highest descriptor number a guest may use.</summary>
    public const int MaxFd = 65535;

    public int Count => _count;

    public bool TryGetValue(int fd, out OpenFile f)
    {
        if ((uint)fd < (uint)_slots.Length && _slots[fd].File is { } file) { f = file; return true; }
        f = null!;
        return false;
    }

    public bool ContainsKey(int fd) => (uint)fd < (uint)_slots.Length && _slots[fd].File != null;

    public int LowestFree(int from = 0)
    {
        int fd = Math.Max(0, from);
        while (ContainsKey(fd)) fd++;
        return fd;
    }

    /// <summary>Gives the description the lowest free descriptor at or above `from`.</summary>
    public int Install(OpenFile f, bool cloexec, int from = 0)
    {
        int fd = LowestFree(from);
        InstallAt(fd, f, cloexec);
        return fd;
    }

    /// <summary>Puts the description at `fd` (which must be free).</summary>
    public void InstallAt(int fd, OpenFile f, bool cloexec)
    {
        if ((uint)fd > MaxFd) throw new ArgumentOutOfRangeException(nameof(fd), fd, "beyond the highest descriptor number");
        if (fd >= _slots.Length) Array.Resize(ref _slots, Math.Min(MaxFd + 1, Math.Max(fd + 1, _slots.Length * 2)));
        if (_slots[fd].File == null) _count++;
        _slots[fd] = new Slot { File = f, CloseOnExec = cloexec };
    }

    /// <summary>Takes the descriptor out of the table; the caller drops its reference.</summary>
    public bool Remove(int fd, out OpenFile f)
    {
        if (!TryGetValue(fd, out f)) return false;
        _slots[fd] = default;
        _count--;
        return true;
    }

    public bool CloseOnExec(int fd) => ContainsKey(fd) && _slots[fd].CloseOnExec;

    public void SetCloseOnExec(int fd, bool on)
    {
        if (ContainsKey(fd)) _slots[fd].CloseOnExec = on;
    }

    /// <summary>The open descriptor numbers in ascending order (a copy: the caller may close them as it goes).</summary>
    public int[] Numbers()
    {
        var n = new int[_count];
        int i = 0;
        for (int fd = 0; fd < _slots.Length && i < n.Length; fd++)
            if (_slots[fd].File != null) n[i++] = fd;
        return n;
    }

    /// <summary>The descriptors in ascending order (a copy).</summary>
    public (int Fd, OpenFile File)[] Entries
    {
        get
        {
            var e = new (int, OpenFile)[_count];
            int i = 0;
            for (int fd = 0; fd < _slots.Length && i < e.Length; fd++)
                if (_slots[fd].File is { } f) e[i++] = (fd, f);
            return e;
        }
    }

    /// <summary>Every description in the table, in descriptor order (a copy).</summary>
    public OpenFile[] Files
    {
        get
        {
            var files = new OpenFile[_count];
            int i = 0;
            for (int fd = 0; fd < _slots.Length && i < files.Length; fd++)
                if (_slots[fd].File is { } f) files[i++] = f;
            return files;
        }
    }

    /// <summary>A child's table after fork: the same descriptions (shared offsets), each referred to once more.</summary>
    public FdTable Fork()
    {
        var t = new FdTable { _slots = (Slot[])_slots.Clone(), _count = _count };
        foreach (var s in _slots) if (s.File != null) s.File.RefCount++;
        return t;
    }

    /// <summary>Makes every descriptor that refer to `old` refer to `replacement`.</summary>
    public void Replace(OpenFile old, OpenFile replacement)
    {
        for (int fd = 0; fd < _slots.Length; fd++)
            if (ReferenceEquals(_slots[fd].File, old)) _slots[fd].File = replacement;
    }
}
