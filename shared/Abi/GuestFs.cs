using ReVirt.Linux;

namespace ReVirt.Abi;

/// <summary>
/// Maps guest paths to host paths under the guest's root directory. With a root other than "/", every
/// component is walked on the host and symlinks are resolved here, relative to the root, so that neither
/// ".." nor a symlink (absolute or relative) can lead outside it. Runs only inside host operations.
/// </summary>
public sealed class GuestFs
{
    public string Root { get; }
    public bool Confined => Root != "/";

    public GuestFs(string root)
    {
        var full = Path.GetFullPath(root);
        if (full.Length > 1) full = full.TrimEnd('/');
        Root = full.Length == 0 ? "/" : full;
    }

    /// <summary>Joins a guest path with a guest base directory, lexically (no host access).</summary>
    public static string Join(string baseDir, string path)
    {
        if (path.StartsWith('/')) return path;
        if (baseDir.EndsWith('/')) return baseDir + path;
        return baseDir + "/" + path;
    }

    /// <summary>
    /// Host path for an absolute guest path, or -errno. followFinal: whether a symlink in the last component is
    /// followed (stat vs lstat, open without O_NOFOLLOW).
    /// </summary>
    public long ToHost(string guestAbs, bool followFinal, out string host)
    {
        host = "";
        if (guestAbs.Length == 0) return -Errno.ENOENT;
        if (guestAbs.Length > 4095) return -Errno.ENAMETOOLONG;
        if (!Confined) { host = guestAbs; return 0; }
        var parts = new List<string>();          // resolved guest components
        var todo = new Stack<string>(Split(guestAbs).Reverse());
        int links = 0;
        while (todo.Count > 0)
        {
            string c = todo.Pop();
            if (c == "." || c.Length == 0) continue;
            if (c == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(c);
            bool last = todo.Count == 0;
            if (last && !followFinal) break;
            string hp = Root + "/" + string.Join('/', parts);
            var fi = new FileInfo(hp);
            if (fi.Exists || Directory.Exists(hp))
            {
                if (fi.LinkTarget is string target)
                {
                    if (++links > 40) return -Errno.ELOOP;
                    parts.RemoveAt(parts.Count - 1);
                    if (target.StartsWith('/')) parts.Clear();
                    foreach (var t in Split(target).Reverse()) todo.Push(t);
                }
            }
            else if (!last)
            {
                // a missing intermediate component: let the host say ENOENT/ENOTDIR on the confined path
                foreach (var rest in todo) parts.Add(rest);
                break;
            }
        }
        host = Root + "/" + string.Join('/', parts);
        return 0;
    }

    static string[] Split(string p) => p.Split('/', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Guest path of a host path under the root (for getcwd-like answers), or null if outside.</summary>
    public string? ToGuest(string hostPath)
    {
        if (!Confined) return hostPath;
        if (hostPath == Root) return "/";
        if (hostPath.StartsWith(Root + "/")) return hostPath.Substring(Root.Length);
        return null;
    }
}
