using System.Text;

namespace ReVirt.Linux;

/// <summary>
/// How many syscalls of each number the guest made and how often a call parked its thread (a wait: in the VM, or
/// on the host), like `strace -c` inside the VM: what `--stats` prints, so a service's calls per request under
/// `run`, `record` and `protect` can be compared without a log. A call that parks runs again from its start when
/// woken (perhaps several times), so a number's calls are its entries minus its parks: each call the guest made
/// counts once, however often it waited. exit and exit_group count although they never return.
/// </summary>
/// <remarks>Guest thread only (the kernel's syscall entry). Two array increments per syscall, no allocation; not
/// part of the machine's state (a snapshot or a hand-off starts the counts again).</remarks>
public sealed class SyscallCounts
{
    /// <summary>How many numbers `--stats` names (the most frequent).</summary>
    public const int ShownByStats = 24;

    readonly long[] _entries = new long[Nr.Max + 1];
    readonly long[] _parks = new long[Nr.Max + 1];
    long _unknown;

    /// <summary>The guest entered syscall <paramref name="nr"/> (a first attempt or a woken call's next one).</summary>
    public void Entered(long nr)
    {
        if ((ulong)nr < (ulong)_entries.Length) _entries[nr]++;
        else _unknown++;
    }

    /// <summary>The attempt of <paramref name="nr"/> just entered parks its thread: it will be entered again.</summary>
    public void Parked(long nr)
    {
        if ((ulong)nr < (ulong)_parks.Length) _parks[nr]++;
    }

    /// <summary>Calls of <paramref name="nr"/> the guest made (entries minus parks).</summary>
    public long Calls(int nr) => (uint)nr < (uint)_entries.Length ? _entries[nr] - _parks[nr] : 0;

    /// <summary>Times a call of <paramref name="nr"/> parked its thread.</summary>
    public long Parks(int nr) => (uint)nr < (uint)_parks.Length ? _parks[nr] : 0;

    /// <summary>Calls of numbers beyond the table (answered ENOSYS).</summary>
    public long OutOfRange => _unknown;

    /// <summary>Every call the guest made.</summary>
    public long Total
    {
        get
        {
            long n = _unknown;
            for (int nr = 0; nr < _entries.Length; nr++) n += _entries[nr] - _parks[nr];
            return n;
        }
    }

    /// <summary>One line: the total, then the <paramref name="most"/> most frequent calls, most first (ties by number),
    /// each with its parks when it parked: "1234 calls: read 500 (parked 20), write 480, ...".</summary>
    public string Describe(int most)
    {
        var nrs = new List<int>();
        for (int nr = 0; nr < _entries.Length; nr++) if (Calls(nr) > 0 || _parks[nr] > 0) nrs.Add(nr);
        nrs.Sort((a, b) => Calls(b) != Calls(a) ? Calls(b).CompareTo(Calls(a)) : a.CompareTo(b));
        var s = new StringBuilder().Append(Total).Append(" calls");
        for (int i = 0; i < nrs.Count && i < most; i++)
        {
            s.Append(i == 0 ? ": " : ", ").Append(Nr.Name(nrs[i])).Append(' ').Append(Calls(nrs[i]));
            if (_parks[nrs[i]] > 0) s.Append(" (parked ").Append(_parks[nrs[i]]).Append(')');
        }
        if (nrs.Count > most) s.Append(", ... (").Append(nrs.Count - most).Append(" more numbers)");
        if (_unknown > 0) s.Append(", ").Append(_unknown).Append(" beyond the table");
        return s.ToString();
    }
}
