using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Changes of names and sizes on shared storage, without processes: the primary's predicted result is the host's own
/// answer (oracle: the change made on a copy of the same tree); a survivor makes exactly the changes its primary had
/// not made (oracle: the tree a single run leaves); a read of one file does not wait for another file's held writes;
/// a change the storage refuses at release reaches the description and the replica's event; an append's end counts
/// a held truncation.
/// </summary>
public class StorageChangesTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"revirt-storagechanges-{Guid.NewGuid():N}");

    public StorageChangesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A tree with a file, a second file, an empty and a non-empty directory, and a dangling symlink.</summary>
    static void MakeTree(string root)
    {
        Directory.CreateDirectory(root);
        File.CreateSymbolicLink(Path.Combine(root, "dl"), "nowhere");
        File.WriteAllText(Path.Combine(root, "f"), "f");
        File.WriteAllText(Path.Combine(root, "g"), "g");
        Directory.CreateDirectory(Path.Combine(root, "empty"));
        Directory.CreateDirectory(Path.Combine(root, "full"));
        File.WriteAllText(Path.Combine(root, "full", "x"), "x");
    }

    static unsafe GuestStorageChange Change(GuestFs fs, StorageChangeKind kind, string path, string? target = null, uint flags = 0, long length = 0, uint mode = 0)
        => new()
        {
            Kind = kind, Path = path, Target = target, Flags = flags, Length = length,
            Perform = () => HostResult.Of(kind switch
            {
                StorageChangeKind.Rename => fs.InParents(path, target!, -Errno.EBUSY, (d1, n1, d2, n2) =>
                {
                    fixed (byte* a = n1) fixed (byte* b = n2) return HostSys.Call(Nr.renameat2, d1, (long)a, d2, (long)b, flags);
                }),
                StorageChangeKind.Unlink => fs.InParent(path, -Errno.EISDIR, (d, n) => { fixed (byte* a = n) return HostSys.Call(Nr.unlinkat, d, (long)a, 0); }),
                StorageChangeKind.Rmdir => fs.InParent(path, -Errno.EBUSY, (d, n) => { fixed (byte* a = n) return HostSys.Call(Nr.unlinkat, d, (long)a, At.REMOVEDIR); }),
                StorageChangeKind.Mkdir => fs.InParent(path, -Errno.EEXIST, (d, n) => { fixed (byte* a = n) return HostSys.Call(Nr.mkdirat, d, (long)a, 0x1ed); }),
                StorageChangeKind.Mknod => fs.InParent(path, -Errno.EEXIST, (d, n) => { fixed (byte* a = n) return HostSys.Call(Nr.mknodat, d, (long)a, mode, 0); }),
                StorageChangeKind.Link => fs.InParents(path, target!, -Errno.EBUSY, (d1, n1, d2, n2) =>
                {
                    fixed (byte* a = n1) fixed (byte* b = n2) return HostSys.Call(Nr.linkat, d1, (long)a, d2, (long)b, 0);
                }),
                StorageChangeKind.Symlink => fs.InParent(path, -Errno.EEXIST, (d, n) =>
                {
                    fixed (byte* t = HostSys.Z(target!)) fixed (byte* a = n) return HostSys.Call(Nr.symlinkat, (long)t, d, (long)a);
                }),
                _ => StorageChanges.MakeAgain(fs, new GuestStorageChange { Kind = kind, Path = path, Length = length, Perform = () => HostResult.Of(0) }),
            }),
        };

    public static IEnumerable<object[]> Cases() =>
    [
        [StorageChangeKind.Mkdir, "/new", null!, 0u, 0L],
        [StorageChangeKind.Mkdir, "/f", null!, 0u, 0L],
        [StorageChangeKind.Mkdir, "/missing/new", null!, 0u, 0L],
        [StorageChangeKind.Mkdir, "/f/new", null!, 0u, 0L],
        [StorageChangeKind.Unlink, "/f", null!, 0u, 0L],
        [StorageChangeKind.Unlink, "/empty", null!, 0u, 0L],
        [StorageChangeKind.Unlink, "/missing", null!, 0u, 0L],
        [StorageChangeKind.Rmdir, "/empty", null!, 0u, 0L],
        [StorageChangeKind.Rmdir, "/full", null!, 0u, 0L],
        [StorageChangeKind.Rmdir, "/f", null!, 0u, 0L],
        [StorageChangeKind.Rmdir, "/missing", null!, 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/h", 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/g", 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/f", 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/empty", 0u, 0L],
        [StorageChangeKind.Rename, "/empty", "/f", 0u, 0L],
        [StorageChangeKind.Rename, "/empty", "/full", 0u, 0L],
        [StorageChangeKind.Rename, "/full", "/empty", 0u, 0L],
        [StorageChangeKind.Rename, "/full", "/full/sub", 0u, 0L],
        [StorageChangeKind.Rename, "/missing", "/h", 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/missing/h", 0u, 0L],
        [StorageChangeKind.Rename, "/f", "/g", RenameFlags.NOREPLACE, 0L],
        [StorageChangeKind.Rename, "/f", "/h", RenameFlags.NOREPLACE, 0L],
        [StorageChangeKind.Rename, "/f", "/g", RenameFlags.EXCHANGE, 0L],
        [StorageChangeKind.Rename, "/f", "/h", RenameFlags.EXCHANGE, 0L],
        [StorageChangeKind.Rename, "/f", "/g", RenameFlags.EXCHANGE | RenameFlags.NOREPLACE, 0L],
        [StorageChangeKind.Truncate, "/f", null!, 0u, 5L],
        [StorageChangeKind.Truncate, "/missing", null!, 0u, 5L],
        [StorageChangeKind.Truncate, "/empty", null!, 0u, 5L],
        [StorageChangeKind.Truncate, "/f", null!, 0u, -1L],
        [StorageChangeKind.Link, "/f", "/h", 0u, 0L],
        [StorageChangeKind.Link, "/f", "/g", 0u, 0L],
        [StorageChangeKind.Link, "/f", "/dl", 0u, 0L],
        [StorageChangeKind.Link, "/f", "/full/x", 0u, 0L],
        [StorageChangeKind.Link, "/full/x", "/empty/x", 0u, 0L],
        [StorageChangeKind.Link, "/missing", "/h", 0u, 0L],
        [StorageChangeKind.Link, "/f", "/missing/h", 0u, 0L],
        [StorageChangeKind.Link, "/f", "/f/h", 0u, 0L],
        [StorageChangeKind.Link, "/empty", "/h", 0u, 0L],
        [StorageChangeKind.Link, "/dl", "/h", 0u, 0L],
        [StorageChangeKind.Symlink, "/s", "f", 0u, 0L],
        [StorageChangeKind.Symlink, "/f", "g", 0u, 0L],
        [StorageChangeKind.Symlink, "/dl", "f", 0u, 0L],
        [StorageChangeKind.Symlink, "/empty", "f", 0u, 0L],
        [StorageChangeKind.Symlink, "/missing/s", "f", 0u, 0L],
        [StorageChangeKind.Symlink, "/f/s", "f", 0u, 0L],
        [StorageChangeKind.Symlink, "/s", "", 0u, 0L],
        [StorageChangeKind.Symlink, "/s", new string('a', 4096), 0u, 0L],
        [StorageChangeKind.Symlink, "/s", new string('a', 4095), 0u, 0L],
    ];

    /// <summary>The prediction (made on one copy, which it must leave as it was) equals what the host answers when
    /// the change is made on another copy of the same tree.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void APredictionIsTheHostsOwnAnswer(StorageChangeKind kind, string path, string? target, uint flags, long length)
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        MakeTree(a);
        MakeTree(b);
        using var fa = new GuestFs(a);
        using var fb = new GuestFs(b);
        var p = StorageChanges.Predict(fa, Change(fa, kind, path, target, flags, length));
        if (p.HostFd >= 0) HostSys.Call(Nr.close, p.HostFd);
        long real = kind == StorageChangeKind.Truncate && length < 0 ? -Errno.EINVAL : Change(fb, kind, path, target, flags, length).Perform().Value;
        Assert.Equal(real, p.Result);
        Assert.Equal(Listing(Path.Combine(_dir, "untouched-" + Guid.NewGuid().ToString("N"))), Listing(a)); // nothing made
    }

    static readonly uint Rw = Convert.ToUInt32("600", 8), Rwx = Convert.ToUInt32("700", 8), RwR = Convert.ToUInt32("644", 8);

    /// <summary>utimensat's two timespecs (seconds, nanoseconds) as the guest passes them.</summary>
    static byte[] Times(long aSec, long aNsec, long mSec, long mNsec)
    {
        var t = new byte[32];
        BitConverter.TryWriteBytes(t.AsSpan(0), aSec);
        BitConverter.TryWriteBytes(t.AsSpan(8), aNsec);
        BitConverter.TryWriteBytes(t.AsSpan(16), mSec);
        BitConverter.TryWriteBytes(t.AsSpan(24), mNsec);
        return t;
    }

    public static IEnumerable<object?[]> MetadataCases() =>
    [
        [StorageChangeKind.Chmod, "/f", Rw, null, true],
        [StorageChangeKind.Chmod, "/empty", Rwx, null, true],
        [StorageChangeKind.Chmod, "/full/x", Rw, null, true],
        [StorageChangeKind.Chmod, "/missing", Rw, null, true],
        [StorageChangeKind.Chmod, "/f/x", Rw, null, true],
        [StorageChangeKind.Chmod, "/dl", Rw, null, true],
        [StorageChangeKind.Utimes, "/f", 0u, null, true],
        [StorageChangeKind.Utimes, "/missing", 0u, null, true],
        [StorageChangeKind.Utimes, "/f", 0u, Times(5, 0, 7, 9), true],
        [StorageChangeKind.Utimes, "/f", 0u, Times(0, Utime.NOW, 0, Utime.NOW), true],
        [StorageChangeKind.Utimes, "/f", 0u, Times(5, Utime.NOW, 0, Utime.OMIT), true],
        [StorageChangeKind.Utimes, "/missing", 0u, Times(0, Utime.OMIT, 0, Utime.OMIT), true],
        [StorageChangeKind.Utimes, "/f", 0u, Times(5, 1_000_000_000, 7, 0), true],
        [StorageChangeKind.Utimes, "/missing", 0u, Times(5, -1, 7, 0), true],
        [StorageChangeKind.Utimes, "/f", 0u, Times(5, -1, 7, 0), true],
        [StorageChangeKind.Utimes, "/f/x", 0u, Times(5, 0, 7, 0), true],
        [StorageChangeKind.Utimes, "/dl", 0u, Times(5, 0, 7, 0), true],
        [StorageChangeKind.Utimes, "/dl", 0u, Times(5, 0, 7, 0), false],
        [StorageChangeKind.Mknod, "/p", SMode.IFIFO | Rw, null, true],
        [StorageChangeKind.Mknod, "/r", SMode.IFREG | RwR, null, true],
        [StorageChangeKind.Mknod, "/f", SMode.IFIFO | Rw, null, true],
        [StorageChangeKind.Mknod, "/dl", SMode.IFIFO | Rw, null, true],
        [StorageChangeKind.Mknod, "/missing/p", SMode.IFIFO | Rw, null, true],
        [StorageChangeKind.Mknod, "/f/p", SMode.IFIFO | Rw, null, true],
    ];

    /// <summary>A chmod or change of times as the kernel hands it over: made through a host descriptor of the file
    /// (as the kernel makes them).</summary>
    static unsafe GuestStorageChange OnFileChange(StorageChangeKind kind, string path, uint mode, byte[]? times, bool follow = true)
    {
        Func<int, long> onFile = kind == StorageChangeKind.Chmod
            ? fd => HostSys.WithPath(Nr.fchmodat, $"/proc/self/fd/{fd}", p => HostSys.Call(Nr.fchmodat, At.FDCWD, p, mode))
            : fd => { fixed (byte* t = times) fixed (byte* e = new byte[1]) return HostSys.Call(Nr.utimensat, fd, (long)e, times == null ? 0 : (long)t, At.EMPTY_PATH); };
        return new GuestStorageChange { Kind = kind, Path = path, Mode = mode, Times = times, Follow = follow, OnFile = onFile, Perform = () => HostResult.Of(0) };
    }

    /// <summary>An O_CREAT open as the kernel hands it over: at release, the unnamed file is linked to its name.</summary>
    static unsafe GuestStorageChange CreateChange(GuestFs fs, string path, int flags, uint mode) => new()
    {
        Kind = StorageChangeKind.Open, Path = path, OpenFlags = flags, Mode = mode, Perform = () => HostResult.Of(0),
        OnFile = fd => fs.InParent(path, -Errno.EISDIR, (dir, name) =>
        {
            fixed (byte* n = name) { long np = (long)n; return HostSys.WithPath(Nr.linkat, $"/proc/self/fd/{fd}", q => HostSys.Call(Nr.linkat, At.FDCWD, q, dir, np, At.SYMLINK_FOLLOW)); }
        }),
    };

    /// <summary>Type, permission bits and modification time (ns) of every entry (a final symlink not followed).</summary>
    static string MetaListing(string root) => string.Join("\n", Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories)
        .Order(StringComparer.Ordinal)
        .Select(e =>
        {
            HostStat.OfName(At.FDCWD, HostSys.Z(e), out var st);
            return $"{Path.GetRelativePath(root, e)} {Convert.ToString(st.Mode, 8)} {(File.Exists(e) || Directory.Exists(e) ? File.GetLastWriteTimeUtc(e).Ticks : 0)}";
        }));

    /// <summary>
    /// chmod, utimensat and mknod: the prediction (made on one copy, which it must leave as it was, modes and times
    /// included) is what the host answers to the plain system call on the path in another copy; where it holds
    /// the change, making the held change leaves the first copy's modes and times as the call left the second's.
    /// Cases the prediction leaves to the host (both times UTIME_OMIT: Linux does nothing) are made at once.
    /// </summary>
    [Theory]
    [MemberData(nameof(MetadataCases))]
    public unsafe void AMetadataPredictionIsTheHostsOwnAnswer(StorageChangeKind kind, string path, uint mode, byte[]? times, bool follow)
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        MakeTree(a);
        MakeTree(b);
        // the same times on both copies, so that a listing tells a change apart
        foreach (var root in new[] { a, b })
            foreach (var e in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories).Where(e => File.Exists(e) || Directory.Exists(e)))
                File.SetLastWriteTimeUtc(e, new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        using var fa = new GuestFs(a);
        var change = kind == StorageChangeKind.Mknod ? Change(fa, StorageChangeKind.Mknod, path, mode: mode) : OnFileChange(kind, path, mode, times, follow);
        string before = MetaListing(a);
        var p = StorageChanges.Predict(fa, change);
        Assert.Equal(before, MetaListing(a)); // nothing made
        string host = Path.Combine(b, path.TrimStart('/'));
        long real;
        fixed (byte* t = times)
        fixed (byte* hp = HostSys.Z(host))
            real = kind switch
            {
                StorageChangeKind.Chmod => HostSys.Call(Nr.fchmodat, At.FDCWD, (long)hp, mode),
                StorageChangeKind.Mknod => HostSys.Call(Nr.mknodat, At.FDCWD, (long)hp, mode, 0),
                _ => HostSys.Call(Nr.utimensat, At.FDCWD, (long)hp, times == null ? 0 : (long)t, follow ? 0 : At.SYMLINK_NOFOLLOW),
            };
        if (p.Unpredictable) { Assert.Equal(0, real); return; }
        Assert.Equal(real, p.Result);
        if (p.Result < 0) return;
        var held = StorageChanges.Hold(1, change, p);
        try { Assert.Equal(0, held.Apply()); }
        finally { held.Close(); }
        if (times == null || times.AsSpan(8, 8).SequenceEqual(BitConverter.GetBytes(Utime.NOW))) return; // "now" differs by when
        Assert.Equal(MetaListing(b), MetaListing(a));
    }

    public static IEnumerable<object[]> CreateCases() =>
    [
        ["/new", O.WRONLY | O.CREAT | O.EXCL, true],
        ["/new", O.RDONLY | O.CREAT, true],
        ["/new", O.RDWR | O.CREAT | O.APPEND, true],
        ["/full/new", O.WRONLY | O.CREAT | O.TRUNC, true],
        ["/f", O.WRONLY | O.CREAT, false],
        ["/f", O.WRONLY | O.CREAT | O.EXCL, false],
        ["/dl", O.WRONLY | O.CREAT, false],
        ["/missing/new", O.WRONLY | O.CREAT, false],
        ["/f/new", O.WRONLY | O.CREAT, false],
        ["/new/", O.WRONLY | O.CREAT, false],
    ];

    /// <summary>
    /// An O_CREAT open: held exactly when it creates its name (oracle: the host's open of the same path in another
    /// copy made a file there). Held, the guest's descriptor is a file with no name yet (the first copy is left as
    /// it was) with the access mode and status flags asked for; written through and then released, the first copy
    /// equals the second, where the host's open made the file and the same bytes were written through it.
    /// </summary>
    [Theory]
    [MemberData(nameof(CreateCases))]
    public unsafe void ACreationIsHeldExactlyWhenItMakesItsName(string path, int flags, bool held)
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        MakeTree(a);
        MakeTree(b);
        using var fa = new GuestFs(a);
        using var fb = new GuestFs(b);
        string before = Listing(b);
        long real = HostSys.WithPath(Nr.open, Path.Combine(b, path.TrimStart('/')), q => HostSys.Call(Nr.open, q, flags | O.CLOEXEC, RwR));
        // held: the host's open made the name (not held: it made none, or the target of a dangling symlink, a limit)
        if (held) Assert.True(real >= 0 && Listing(b) != before, "the host's open made no name");
        var change = CreateChange(fa, path, flags, RwR);
        var p = StorageChanges.Predict(fa, change);
        Assert.Equal(before, Listing(a)); // nothing named yet
        Assert.Equal(!held, p.Unpredictable);
        if (!held) { if (real >= 0) HostSys.Call(Nr.close, real); return; }
        try
        {
            Assert.Equal(HostSys.Call(Nr.fcntl, real, F.GETFL) & (O.ACCMODE | O.APPEND), HostSys.Call(Nr.fcntl, p.Result, F.GETFL) & (O.ACCMODE | O.APPEND));
            var data = "abc"u8.ToArray();
            fixed (byte* d = data)
                Assert.Equal(HostSys.Call(Nr.write, real, (long)d, 3), HostSys.Call(Nr.write, p.Result, (long)d, 3)); // EBADF when read-only
            var hold = StorageChanges.Hold(1, change, p);
            try { Assert.Equal(0, hold.Apply()); }
            finally { hold.Close(); }
            Assert.Equal(Listing(b), Listing(a));
            Assert.Equal(MetaListing(b).Split('\n').Select(l => l[..l.LastIndexOf(' ')]), MetaListing(a).Split('\n').Select(l => l[..l.LastIndexOf(' ')]));
        }
        finally
        {
            HostSys.Call(Nr.close, real);
            HostSys.Call(Nr.close, p.Result);
        }
    }

    public static IEnumerable<object[]> TruncatingOpenCases() =>
    [
        ["/f", O.WRONLY | O.TRUNC, true],
        ["/f", O.RDONLY | O.TRUNC, true],
        ["/f", O.RDWR | O.TRUNC | O.APPEND, true],
        ["/f", O.WRONLY | O.CREAT | O.TRUNC, true],
        ["/f", O.WRONLY | O.TRUNC | O.NOFOLLOW, true],
        ["/full/x", O.RDWR | O.TRUNC, true],
        ["/f", O.WRONLY | O.CREAT | O.EXCL | O.TRUNC, false],
        ["/empty", O.WRONLY | O.TRUNC, false],
        ["/empty", O.RDONLY | O.TRUNC, false],
        ["/missing", O.WRONLY | O.TRUNC, false],
        ["/f/x", O.WRONLY | O.TRUNC, false],
        ["/f/", O.WRONLY | O.TRUNC, false],
        ["/dl", O.WRONLY | O.TRUNC, false],
        ["/dl", O.WRONLY | O.TRUNC | O.NOFOLLOW, false],
        ["/dl", O.WRONLY | O.CREAT | O.TRUNC, false],
        ["/f", O.WRONLY | O.TRUNC | O.DIRECTORY, false],
    ];

    /// <summary>
    /// An open with O_TRUNC of an existing name: held exactly when the host's open of the same path in another copy
    /// truncated a regular file (oracle: that copy's listing changed), with the host's own answer otherwise (an
    /// error, or an open that truncates nothing, made at once). Held, the guest's descriptor is the file with its
    /// old bytes still on the storage (the first copy is left as it was) and the access mode and status flags asked
    /// for; written through and then released, the first copy equals the second, where the host's open truncated the
    /// file and the same bytes were written through it.
    /// </summary>
    [Theory]
    [MemberData(nameof(TruncatingOpenCases))]
    public unsafe void ATruncatingOpenIsHeldExactlyWhenItTruncatesAFile(string path, int flags, bool held)
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        MakeTree(a);
        MakeTree(b);
        using var fa = new GuestFs(a);
        string before = Listing(b);
        long real = HostSys.WithPath(Nr.open, Path.Combine(b, path.TrimStart('/')), q => HostSys.Call(Nr.open, q, flags | O.CLOEXEC, RwR));
        if (held) Assert.True(real >= 0 && Listing(b) != before, "the host's open truncated nothing");
        var change = CreateChange(fa, path, flags, RwR);
        var p = StorageChanges.Predict(fa, change);
        Assert.Equal(before, Listing(a)); // nothing truncated yet
        Assert.Equal(!held, p.Unpredictable);
        if (!held) { if (real >= 0) HostSys.Call(Nr.close, real); return; }
        try
        {
            Assert.True(p.Truncation);
            Assert.Equal(HostSys.Call(Nr.fcntl, real, F.GETFL) & (O.ACCMODE | O.APPEND), HostSys.Call(Nr.fcntl, p.Result, F.GETFL) & (O.ACCMODE | O.APPEND));
            var hold = StorageChanges.Hold(1, change, p);
            try { Assert.Equal(0, hold.Apply()); }
            finally { hold.Close(); }
            var data = "abc"u8.ToArray();
            fixed (byte* d = data)
                Assert.Equal(HostSys.Call(Nr.write, real, (long)d, 3), HostSys.Call(Nr.write, p.Result, (long)d, 3)); // EBADF when read-only
            Assert.Equal(Listing(b), Listing(a));
        }
        finally
        {
            HostSys.Call(Nr.close, real);
            HostSys.Call(Nr.close, p.Result);
        }
    }

    /// <summary>truncate(2) of a FIFO answers EINVAL, as the host's does, without waiting for a reader (an open for
    /// writing first would wait forever); the answer is predicted, not held.</summary>
    [Fact]
    public void ATruncationOfAFifoIsRefusedWithoutWaitingForAReader()
    {
        string a = Path.Combine(_dir, "a");
        Directory.CreateDirectory(a);
        Assert.Equal(0, HostSys.WithPath(Nr.mknodat, Path.Combine(a, "p"), q => HostSys.Call(Nr.mknodat, At.FDCWD, q, SMode.IFIFO | Rw, 0)));
        using var fa = new GuestFs(a);
        long real = HostSys.WithPath(Nr.truncate, Path.Combine(a, "p"), q => HostSys.Call(Nr.truncate, q, 0));
        Assert.Equal(-Errno.EINVAL, real);
        StoragePrediction p = default;
        var predict = new Thread(() => p = StorageChanges.Predict(fa, Change(fa, StorageChangeKind.Truncate, "/p"))) { IsBackground = true };
        predict.Start();
        Assert.True(predict.Join(TimeSpan.FromSeconds(30)), "the prediction of a FIFO's truncation waited for a reader");
        Assert.Equal(real, p.Result);
    }

    /// <summary>
    /// A survivor whose list holds a held truncating open of f (O_WRONLY|O_TRUNC, or O_CREAT|O_TRUNC of c, which
    /// creates it) and then a write through it: whether its primary made the truncation (and released the write) or
    /// not, the file ends as a single run leaves it, with no old byte left past the write (a truncation taken for
    /// made because the name still names the file would leave them).
    /// </summary>
    [Theory]
    [InlineData(true, "/f", false)]
    [InlineData(false, "/f", false)]
    [InlineData(true, "/c", true)]
    [InlineData(false, "/c", true)]
    public void ASurvivorMakesAHeldTruncatingOpenItsPrimaryMayNotHaveMade(bool primaryMadeIt, string path, bool create)
    {
        string root = Path.Combine(_dir, "r");
        MakeTree(root);
        File.WriteAllText(Path.Combine(root, "f"), "old bytes of f, longer than the write");
        using var fs = new GuestFs(root);
        var change = CreateChange(fs, path, O.WRONLY | O.TRUNC | (create ? O.CREAT : 0), RwR);
        var p = StorageChanges.Predict(fs, change);
        Assert.False(p.Unpredictable);
        Assert.True(p.Result >= 0);
        Assert.Equal(!create, p.Truncation);
        var held = StorageChanges.Hold(10, change, p);
        if (primaryMadeIt) Assert.Equal(0, held.Apply());
        held.Close();
        HostSys.Call(Nr.close, p.Result);
        var redo = new UnreleasedFileWrites();
        redo.AddChange(10, change, p.File, releasedThrough: 9);
        redo.Add(11, path, 0, "new"u8.ToArray(), releasedThrough: 9);
        if (primaryMadeIt) File.WriteAllText(Path.Combine(root, path.TrimStart('/')), "new"); // its write released too
        string report = redo.Apply(fs);
        Assert.DoesNotContain("failed", report);
        Assert.Equal("new", File.ReadAllText(Path.Combine(root, path.TrimStart('/'))));
    }

    /// <summary>Relative paths and contents of a tree (a fresh tree when <paramref name="root"/> does not exist yet).</summary>
    static string Listing(string root)
    {
        if (!Directory.Exists(root)) { MakeTree(root); try { return Listing(root); } finally { Directory.Delete(root, true); } }
        return string.Join("\n", Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories)
            .Order(StringComparer.Ordinal)
            .Select(e => Path.GetRelativePath(root, e) + (new FileInfo(e).LinkTarget is { } t ? "->" + t
                : File.Exists(e) ? "=" + File.ReadAllText(e) + "/" + new FileInfo(e).Length : "/")));
    }

    static ulong InodeOf(string path)
    {
        using var s = new FileStream(path, FileMode.Open, FileAccess.Read);
        return HostStat.Of((int)s.SafeFileHandle.DangerousGetHandle())!.Value.Ino;
    }

    /// <summary>
    /// A survivor whose list holds a held rename of f to h (then a write to h by its new name): whether its primary
    /// made the rename or not, the tree it leaves is the one a single run leaves, and the rename is never made twice
    /// (a second rename of a name that no longer exists would fail; one of f made anew would move the wrong file).
    /// Likewise a held mkdir, unlink, link (of h, as k) and symlink.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ASurvivorMakesExactlyTheChangesItsPrimaryHadNotMade(bool primaryMadeThem)
    {
        string root = Path.Combine(_dir, "r");
        MakeTree(root);
        using var fs = new GuestFs(root);
        var renameF = Change(fs, StorageChangeKind.Rename, "/f", "/h");
        var unlinkG = Change(fs, StorageChangeKind.Unlink, "/g");
        var mkdirD = Change(fs, StorageChangeKind.Mkdir, "/d");
        var linkH = Change(fs, StorageChangeKind.Link, "/h", "/k");
        var symlinkS = Change(fs, StorageChangeKind.Symlink, "/sl", "h");
        var f = new StorageFile(0, InodeOf(Path.Combine(root, "f")));
        var g = new StorageFile(0, InodeOf(Path.Combine(root, "g")));
        var cases = new (GuestStorageChange Change, StorageFile? File)[] { (renameF, f), (unlinkG, g), (mkdirD, null), (linkH, f), (symlinkS, null) };
        ulong seq = 10;
        foreach (var (change, file) in cases)
        {
            var redo = new UnreleasedFileWrites();
            redo.AddChange(seq, change, file, releasedThrough: seq - 1);
            redo.Add(seq + 1, "/h", 1, "!"u8.ToArray(), releasedThrough: seq - 1);
            if (primaryMadeThem)
            {
                Assert.Equal(0, change.Perform().Value);
                if (change == renameF) File.WriteAllText(Path.Combine(root, "h"), "f!"); // and its write after
            }
            redo.Apply(fs);
            seq += 10;
        }
        // the single run: f moved to h with "!" after its byte, g gone, d made, h linked as k, sl made; h written
        // again by each round
        Assert.Equal("d/\ndl->nowhere\nempty/\nfull/\nfull/x=x/1\nh=f!/2\nk=f!/2\nsl->h", Listing(root));
    }

    /// <summary>
    /// A survivor whose list holds a held creation of c (then a write to it), a mknod of the FIFO p, a chmod of f and
    /// a change of g's times: whether its primary made them or not (a creation not made: the primary's unnamed file
    /// went with it), the tree ends as a single run leaves it, and nothing fails for having been made before (a
    /// creation is made again with O_EXCL only when its name does not name the primary's file).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ASurvivorMakesAHeldCreationMknodChmodAndTimesItsPrimaryHadNotMade(bool primaryMadeThem)
    {
        string root = Path.Combine(_dir, "r");
        MakeTree(root);
        using var fs = new GuestFs(root);
        uint rwR = Convert.ToUInt32("640", 8);
        var create = CreateChange(fs, "/c", O.WRONLY | O.CREAT | O.EXCL, rwR);
        var changes = new[] { create, Change(fs, StorageChangeKind.Mknod, "/p", mode: SMode.IFIFO | Rw), OnFileChange(StorageChangeKind.Chmod, "/f", Rw, null), OnFileChange(StorageChangeKind.Utimes, "/g", 0, Times(5, 0, 7, 0)) };
        ulong seq = 10;
        foreach (var change in changes)
        {
            var p = StorageChanges.Predict(fs, change);
            Assert.False(p.Unpredictable);
            Assert.True(p.Result >= 0);
            if (change == create) HostSys.Call(Nr.close, p.Result); // the guest's descriptor
            var held = StorageChanges.Hold(seq, change, p);
            if (primaryMadeThem) Assert.Equal(0, held.Apply());
            held.Close();
            var redo = new UnreleasedFileWrites();
            redo.AddChange(seq, change, p.File, releasedThrough: seq - 1);
            if (change == create) redo.Add(seq + 1, "/c", 0, "abc"u8.ToArray(), releasedThrough: seq - 1);
            string report = redo.Apply(fs);
            Assert.DoesNotContain("failed", report);
            seq += 10;
        }
        Assert.Equal("abc", File.ReadAllText(Path.Combine(root, "c")));
        HostStat Lstat(string name) { Assert.Equal(0, HostStat.OfName(At.FDCWD, HostSys.Z(Path.Combine(root, name)), out var st)); return st; }
        Assert.Equal(SMode.IFREG | rwR, Lstat("c").Mode);
        Assert.Equal(SMode.IFIFO | Rw, Lstat("p").Mode);
        Assert.Equal(SMode.IFREG | Rw, Lstat("f").Mode);
        Assert.Equal(new DateTime(1970, 1, 1, 0, 0, 7, DateTimeKind.Utc), File.GetLastWriteTimeUtc(Path.Combine(root, "g")));
    }

    [Fact]
    public void AReadOfOneFileDoesNotWaitForAnotherFilesHeldWrites()
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        File.WriteAllText(a, "");
        File.WriteAllText(b, "");
        using var ha = File.OpenHandle(a, FileMode.Open, FileAccess.ReadWrite);
        using var hb = File.OpenHandle(b, FileMode.Open, FileAccess.ReadWrite);
        int fa = (int)ha.DangerousGetHandle(), fb = (int)hb.DangerousGetHandle();
        var gate = OutputGate.ToHostStdio();
        gate.HoldFileWrites(TextWriter.Null);
        var files = gate.Files!;
        gate.HoldFileWrite(new HeldFileWrite(1, FileOutput.Identify(fa)!.Value.File, (int)HostSys.Call(Nr.dup, fa), 0, "held"u8.ToArray()));
        var waitB = new Thread(() => files.WaitReleased(fb)) { IsBackground = true };
        waitB.Start();
        Assert.True(waitB.Join(TimeSpan.FromSeconds(30)), "a wait for file b waited for file a's held write");
        var waitA = new Thread(() => files.WaitReleased(fa)) { IsBackground = true };
        waitA.Start();
        Assert.False(waitA.Join(TimeSpan.FromMilliseconds(200)), "a wait for file a returned with its write still held");
        gate.Ack(1);
        Assert.True(waitA.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal("held", File.ReadAllText(a));
    }

    /// <summary>A held write the storage refuses on release (here through a descriptor opened read-only: EBADF):
    /// counted, handed to the replica's event callback and kept for the description's next fsync or close, once.</summary>
    [Fact]
    public void AChangeTheStorageRefusesAtReleaseReachesTheDescriptionAndTheEvent()
    {
        string a = Path.Combine(_dir, "a");
        File.WriteAllText(a, "");
        using var ro = File.OpenHandle(a, FileMode.Open, FileAccess.Read);
        int fd = (int)ro.DangerousGetHandle();
        var failed = new List<(string What, long Errno)>();
        var gate = OutputGate.ToHostStdio();
        gate.HoldFileWrites(TextWriter.Null, failed: (c, e) => failed.Add((c.What, e)));
        var errors = new DeferredStorageError();
        gate.HoldFileWrite(new HeldFileWrite(4, FileOutput.Identify(fd)!.Value.File, (int)HostSys.Call(Nr.dup, fd), 0, "x"u8.ToArray()) { Errors = errors });
        Assert.Empty(failed);
        gate.Ack(4);
        Assert.Equal(1, gate.Files!.Failures);
        Assert.Equal([("a file write of 1 bytes at offset 0", -Errno.EBADF)], failed);
        Assert.Equal(-Errno.EBADF, errors.Take());
        Assert.Equal(0, errors.Take()); // answered once
    }

    /// <summary>An O_APPEND write's offset counts a held truncation: a write to 10, then a truncation to 4 and the
    /// end is 4, whatever the host's size still is.</summary>
    [Fact]
    public void AnAppendsEndCountsAHeldTruncation()
    {
        string a = Path.Combine(_dir, "a");
        File.WriteAllText(a, "12345678");
        using var h = File.OpenHandle(a, FileMode.Open, FileAccess.ReadWrite);
        int fd = (int)h.DangerousGetHandle();
        var id = FileOutput.Identify(fd)!.Value.File;
        var gate = OutputGate.ToHostStdio();
        gate.HoldFileWrites(TextWriter.Null);
        gate.HoldFileWrite(new HeldFileWrite(1, id, (int)HostSys.Call(Nr.dup, fd), 8, "90"u8.ToArray()));
        Assert.Equal(10, gate.Files!.EndOf(id, fd));
        gate.HoldFileWrite(new HeldTruncate(2, id, (int)HostSys.Call(Nr.dup, fd), 4));
        Assert.Equal(4, gate.Files.EndOf(id, fd));
        gate.Ack(2);
        Assert.Equal("1234", File.ReadAllText(a));
    }
}
