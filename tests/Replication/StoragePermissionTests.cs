using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Replication;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The permission answers (EACCES, EPERM) of the shared-storage predictions for a guest that does not run as root.
/// Tests run as root, which passes every permission check, so these cases are compared on a thread whose own
/// credentials are nobody's: Linux keeps credentials per thread, and the raw setgroups/setresgid/setresuid system
/// calls (not the C library's, which change every thread) change only the calling thread's. On that thread each
/// change is predicted on one copy of a tree and made by the host on another (the oracle); both copies are made by
/// root, with directories and files owned by root, by nobody and by a third user, a read-only directory, one nobody
/// cannot search, a writable one and a sticky writable one (as /tmp). A prediction the host contradicts is listed.
/// </summary>
public class StoragePermissionTests(ITestOutputHelper output) : IDisposable
{
    const uint Nobody = 65534, Other = 4321;
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"revirt-storageperm-{Guid.NewGuid():N}");

    public void Dispose() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    static uint Oct(string s) => Convert.ToUInt32(s, 8);

    static void Make(string path, bool dir, string mode, uint owner)
    {
        if (dir) Directory.CreateDirectory(path);
        else File.WriteAllText(path, "content");
        Assert.Equal(0, HostSys.WithPath(Nr.chown, path, p => HostSys.Call(Nr.chown, p, owner, owner)));
        Assert.Equal(0, HostSys.WithPath(Nr.chmod, path, p => HostSys.Call(Nr.chmod, p, Oct(mode))));
    }

    /// <summary>The tree both copies hold (made by root).</summary>
    static void MakeTree(string root)
    {
        Make(root, true, "755", 0);
        Make(Path.Combine(root, "ro"), true, "755", 0);
        Make(Path.Combine(root, "ro", "f"), false, "644", 0);
        Make(Path.Combine(root, "ro", "mine"), false, "644", Nobody);
        Make(Path.Combine(root, "ro", "sub"), true, "755", 0);
        Make(Path.Combine(root, "rw"), true, "777", 0);
        Make(Path.Combine(root, "rw", "rf"), false, "644", 0);
        Make(Path.Combine(root, "rw", "rf6"), false, "666", 0);
        Make(Path.Combine(root, "rw", "nf"), false, "644", Nobody);
        Make(Path.Combine(root, "rw", "rsub"), true, "755", 0);
        Make(Path.Combine(root, "rw", "nsub"), true, "755", Nobody);
        Make(Path.Combine(root, "st"), true, "1777", 0);
        Make(Path.Combine(root, "st", "sf"), false, "666", 0);
        Make(Path.Combine(root, "st", "of"), false, "666", Other);
        Make(Path.Combine(root, "st", "nsf"), false, "644", Nobody);
        Make(Path.Combine(root, "st", "rdir"), true, "777", 0);
        Make(Path.Combine(root, "nx"), true, "700", 0);
        Make(Path.Combine(root, "nx", "x"), false, "666", 0);
    }

    /// <summary>One case: the change as the kernel hands it over, and the host's own system call for it on a path
    /// of the other copy (a function of that copy's root).</summary>
    sealed record Case(string Name, GuestStorageChange Change, Func<string, long> Host);

    static GuestStorageChange C(StorageChangeKind kind, string path, string? target = null, uint flags = 0, long length = 0, uint mode = 0,
        int openFlags = 0, byte[]? times = null)
        => new()
        {
            Kind = kind, Path = path, Target = target, Flags = flags, Length = length, Mode = mode, OpenFlags = openFlags, Times = times,
            Perform = () => HostResult.Of(0),
        };

    static string In(string root, string path) => Path.Combine(root, path.TrimStart('/'));

    static long Call(string path, Func<long, long> call) => HostSys.WithPath(0, path, call);

    static long Call2(string a, string b, Func<long, long, long> call) => HostSys.WithPath(0, a, pa => HostSys.WithPath(0, b, pb => call(pa, pb)));

    static unsafe long UtimensAt(string path, byte[]? times)
    {
        fixed (byte* t = times)
        {
            long tp = times == null ? 0 : (long)t;
            return Call(path, p => HostSys.Call(Nr.utimensat, At.FDCWD, p, tp, 0));
        }
    }

    static long OpenClosed(string path, int flags, uint mode)
    {
        long fd = Call(path, p => HostSys.Call(Nr.open, p, flags | O.CLOEXEC, mode));
        if (fd >= 0) HostSys.Call(Nr.close, fd);
        return fd < 0 ? fd : 0;
    }

    static byte[] Times(long sec)
    {
        var t = new byte[32];
        BitConverter.TryWriteBytes(t.AsSpan(0), sec);
        BitConverter.TryWriteBytes(t.AsSpan(16), sec);
        return t;
    }

    static IEnumerable<Case> Cases()
    {
        foreach (var p in new[] { "/ro/f", "/ro/sub", "/rw/rf", "/rw/rsub", "/st/sf", "/st/nsf", "/nx/x", "/ro/missing" })
            yield return new($"unlink {p}", C(StorageChangeKind.Unlink, p), r => Call(In(r, p), q => HostSys.Call(Nr.unlinkat, At.FDCWD, q, 0)));
        foreach (var p in new[] { "/ro/sub", "/rw/rsub", "/rw/rf", "/st/rdir" })
            yield return new($"rmdir {p}", C(StorageChangeKind.Rmdir, p), r => Call(In(r, p), q => HostSys.Call(Nr.unlinkat, At.FDCWD, q, At.REMOVEDIR)));
        foreach (var p in new[] { "/ro/new", "/rw/new", "/ro/f", "/nx/new" })
            yield return new($"mkdir {p}", C(StorageChangeKind.Mkdir, p), r => Call(In(r, p), q => HostSys.Call(Nr.mkdirat, At.FDCWD, q, Oct("755"))));
        foreach (var p in new[] { "/ro/p", "/rw/p" })
            yield return new($"mknod {p}", C(StorageChangeKind.Mknod, p, mode: SMode.IFIFO | Oct("600")), r => Call(In(r, p), q => HostSys.Call(Nr.mknodat, At.FDCWD, q, SMode.IFIFO | Oct("600"), 0)));
        foreach (var p in new[] { "/ro/s", "/rw/s" })
            yield return new($"symlink {p}", C(StorageChangeKind.Symlink, p, "f"), r => Call(In(r, p), q => HostSys.WithPath(0, "f", t => HostSys.Call(Nr.symlinkat, t, At.FDCWD, q))));
        foreach (var (a, b) in new[] { ("/st/sf", "/st/x"), ("/rw/rf", "/rw/x"), ("/rw/nf", "/st/sf"), ("/ro/f", "/rw/x"), ("/rw/nf", "/ro/x"),
                     ("/rw/nsub", "/st/nsub2"), ("/rw/rsub", "/st/rsub2"), ("/rw/rf", "/rw/rsub"), ("/rw/nsub", "/rw/rf"), ("/rw/rsub", "/ro/x"), ("/st/nsf", "/st/sf") })
            yield return new($"rename {a} {b}", C(StorageChangeKind.Rename, a, b), r => Call2(In(r, a), In(r, b), (x, y) => HostSys.Call(Nr.renameat2, At.FDCWD, x, At.FDCWD, y, 0)));
        foreach (var (a, b) in new[] { ("/rw/nf", "/rw/l"), ("/rw/nf", "/ro/l"), ("/rw/rf", "/rw/l"), ("/rw/nsub", "/rw/l") })
            yield return new($"link {a} {b}", C(StorageChangeKind.Link, a, b), r => Call2(In(r, a), In(r, b), (x, y) => HostSys.Call(Nr.linkat, At.FDCWD, x, At.FDCWD, y, 0)));
        foreach (var p in new[] { "/rw/rf", "/rw/rf6", "/rw/nf", "/ro/f", "/rw/rsub", "/nx/x" })
            yield return new($"truncate {p}", C(StorageChangeKind.Truncate, p, length: 1), r => Call(In(r, p), q => HostSys.Call(Nr.truncate, q, 1)));
        foreach (var p in new[] { "/rw/rf", "/rw/nf", "/nx/x" })
            yield return new($"chmod {p}", C(StorageChangeKind.Chmod, p, mode: Oct("600")), r => Call(In(r, p), q => HostSys.Call(Nr.fchmodat, At.FDCWD, q, Oct("600"))));
        foreach (var (p, t) in new[] { ("/rw/rf", (byte[]?)null), ("/rw/rf6", null), ("/rw/nf", null), ("/rw/rf6", Times(5)), ("/rw/nf", Times(5)) })
            yield return new($"utimensat {p} {(t == null ? "now" : "5")}", C(StorageChangeKind.Utimes, p, times: t), r => UtimensAt(In(r, p), t));
        foreach (var (p, f) in new[] { ("/rw/rf", O.WRONLY | O.TRUNC), ("/rw/rf", O.RDONLY | O.TRUNC), ("/rw/rf6", O.RDONLY | O.TRUNC), ("/rw/nf", O.WRONLY | O.TRUNC),
                     ("/ro/f", O.WRONLY | O.CREAT | O.TRUNC), ("/ro/mine", O.WRONLY | O.CREAT | O.TRUNC), ("/ro/new", O.WRONLY | O.CREAT), ("/rw/new", O.WRONLY | O.CREAT),
                     ("/st/of", O.WRONLY | O.CREAT | O.TRUNC), ("/st/sf", O.WRONLY | O.TRUNC), ("/nx/x", O.WRONLY | O.TRUNC) })
            yield return new($"open {p} {f:x}", C(StorageChangeKind.Open, p, openFlags: f, mode: Oct("644")), r => OpenClosed(In(r, p), f, Oct("644")));
    }

    /// <summary>Runs <paramref name="body"/> on a thread of its own whose credentials are nobody's (uid and gid 65534,
    /// no supplementary groups); the thread ends with it, so nothing else in the process changes identity.</summary>
    static void AsNobody(Action body)
    {
        Exception? failed = null;
        var t = new Thread(() =>
        {
            try
            {
                Assert.Equal(0, HostSys.Call(Nr.setgroups, 0, 0));
                Assert.Equal(0, HostSys.Call(Nr.setresgid, Nobody, Nobody, Nobody));
                Assert.Equal(0, HostSys.Call(Nr.setresuid, Nobody, Nobody, Nobody));
                Assert.Equal(Nobody, (uint)HostSys.Call(Nr.geteuid));
                body();
            }
            catch (Exception e) { failed = e; }
        }) { IsBackground = true, Name = "as-nobody" };
        t.Start();
        Assert.True(t.Join(TimeSpan.FromMinutes(2)), "the thread running as nobody did not finish");
        if (failed != null) throw new Xunit.Sdk.XunitException($"as nobody: {failed}");
    }

    [Fact]
    public void PredictionsForAGuestThatIsNotRootAreTheHostsOwnAnswers()
    {
        if (HostSys.Call(Nr.geteuid) != 0) return; // the comparison needs root to make the trees and become nobody
        var cases = Cases().ToList();
        for (int i = 0; i < cases.Count; i++)
        {
            MakeTree(Path.Combine(_dir, $"a{i}"));
            MakeTree(Path.Combine(_dir, $"b{i}"));
        }
        var differ = new List<string>();
        int predicted = 0, atOnce = 0;
        AsNobody(() =>
        {
            for (int i = 0; i < cases.Count; i++)
            {
                var c = cases[i];
                using var fa = new GuestFs(Path.Combine(_dir, $"a{i}"));
                var p = StorageChanges.Predict(fa, c.Change);
                if (p.HostFd >= 0) HostSys.Call(Nr.close, p.HostFd);
                if (c.Change.Kind == StorageChangeKind.Open && p.Result >= 0 && !p.Unpredictable) HostSys.Call(Nr.close, p.Result);
                long real = c.Host(Path.Combine(_dir, $"b{i}"));
                string line = $"{c.Name}: host {real}, predicted {(p.Unpredictable ? "(made at once)" : p.Result)}";
                lock (differ) output.WriteLine(line);
                if (p.Unpredictable) { atOnce++; continue; }
                predicted++;
                if (p.Result < 0 ? p.Result != real : real < 0) lock (differ) differ.Add(line);
            }
        });
        Assert.True(predicted >= cases.Count - 6, $"only {predicted} of {cases.Count} cases were predicted ({atOnce} made at once)");
        Assert.True(differ.Count == 0, "predictions the host contradicts, as nobody:\n" + string.Join("\n", differ));
    }
}
