using ReVirt.Abi;

namespace ReVirt.Linux;

/// <summary>
/// The guest paths whose files the guest may have changed in its root since the machine started: every name it
/// created, wrote, truncated, renamed (both names), linked, removed or changed the mode of, with a successful result.
/// A snapshot for a replica with a root of its own carries these paths' present state (shared/Snapshot, the file
/// section), so that replica's root, a copy of the root as the guest started, becomes the live root's equal.
/// </summary>
/// <remarks>
/// Marked on the guest thread from the results the kernel sees, which are the logged ones on every replica, so a
/// replay, a following backup and a replica restored from a snapshot (seeded with the snapshot's set) know the same
/// set as the recorder. A superset is harmless (an unchanged path is carried as it is); what is missing is not
/// carried, so every route by which the guest changes a file marks it: the name-based calls by their path, writes
/// and fd-based truncate/chmod by the path the description was opened by (and a rename marks the new name too).
/// Paths are lexically normalised guest paths; the root itself and the VM's /proc are never marked.
/// </remarks>
public sealed class RootChanges
{
    readonly HashSet<string> _paths = new(StringComparer.Ordinal);

    /// <summary>Marks a guest path (absolute, as the guest named it after joining it with its base directory).</summary>
    public void Mark(string guestAbs)
    {
        if (!guestAbs.StartsWith('/')) return;
        string p = GuestFs.Normalize(guestAbs);
        if (p == "/" || p == "/proc" || p.StartsWith("/proc/", StringComparison.Ordinal)) return;
        _paths.Add(p);
    }

    /// <summary>Marks the file behind a description the guest wrote, truncated or changed the mode of (once per
    /// description: the flag keeps the write path free of lookups).</summary>
    public void Mark(OpenFile f)
    {
        if (f is not HostFile h || h.ChangesMarked) return;
        h.ChangesMarked = true;
        Mark(f.GuestPath);
    }

    /// <summary>The marked paths in ordinal order (parents before their children).</summary>
    public IReadOnlyList<string> Paths => _paths.Order(StringComparer.Ordinal).ToList();

    /// <summary>Adds the paths a snapshot carried (a replica restored from it goes on from that set).</summary>
    public void Seed(IEnumerable<string> paths) { foreach (var p in paths) Mark(p); }
}
