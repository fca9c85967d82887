namespace ReVirt.Linux;

/// <summary>
/// A process's descriptor table: guest descriptor numbers (allocated deterministically, lowest free first) to
/// open file descriptions, each with its own close-on-exec flag.
/// </summary>
public sealed class FdTable
{
    readonly struct Slot
    {
        public readonly OpenFile File;
        public readonly bool CloseOnExec;
        public Slot(OpenFile f, bool cloexec) { File = f; CloseOnExec = cloexec; }
    }

    readonly Dictionary<int, Slot> _fds = new();

    /// <summary>Highest descriptor number a guest may use.</summary>
    public const int MaxFd = 65535;

    public bool TryGetValue(int fd, out OpenFile f)
    {
        if (_fds.TryGetValue(fd, out var s)) { f = s.File; return true; }
        f = null!;
        return false;
    }

    public bool ContainsKey(int fd) => _fds.ContainsKey(fd);

    public int LowestFree(int from = 0)
    {
        int fd = from;
        while (_fds.ContainsKey(fd)) fd++;
        return fd;
    }

    /// <summary>Gives the description the lowest free descriptor at or above `from`.</summary>
    public int Install(OpenFile f, bool cloexec, int from = 0)
    {
        int fd = LowestFree(from);
        _fds[fd] = new Slot(f, cloexec);
        return fd;
    }

    /// <summary>Puts the description at `fd` (which must be free).</summary>
    public void InstallAt(int fd, OpenFile f, bool cloexec) => _fds[fd] = new Slot(f, cloexec);

    /// <summary>Takes the descriptor out of the table; the caller drops its reference.</summary>
    public bool Remove(int fd, out OpenFile f)
    {
        if (_fds.Remove(fd, out var s)) { f = s.File; return true; }
        f = null!;
        return false;
    }

    public bool CloseOnExec(int fd) => _fds.TryGetValue(fd, out var s) && s.CloseOnExec;

    public void SetCloseOnExec(int fd, bool on)
    {
        if (_fds.TryGetValue(fd, out var s)) _fds[fd] = new Slot(s.File, on);
    }

    /// <summary>The descriptors in ascending order.</summary>
    public IEnumerable<(int Fd, OpenFile File)> Entries => _fds.OrderBy(kv => kv.Key).Select(kv => (kv.Key, kv.Value.File));

    /// <summary>Every description in the table.</summary>
    public IEnumerable<OpenFile> Files => _fds.Values.Select(s => s.File);

    /// <summary>Makes every descriptor that refers to `old` refer to `replacement`.</summary>
    public void Replace(OpenFile old, OpenFile replacement)
    {
        foreach (var (fd, s) in _fds.ToList())
            if (ReferenceEquals(s.File, old)) _fds[fd] = new Slot(replacement, s.CloseOnExec);
    }
}
