using System.Text;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Security;

/// <summary>
/// Guest paths cannot reach host files outside the guest's root: not through "..", absolute or relative symlinks,
/// /proc magic links, nor a symlink that another process swaps while the guest resolves it (a real race, many
/// iterations, both resolution strategies). The oracle is the file content: inside the root every file reads
/// "inside", and nothing outside does.
/// </summary>
public class GuestFsSecurityTests
{
    const int O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0x40, O_NOFOLLOW = 0x20000;

    static string NewRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), $"revirt-fsroot-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.Combine(root, "dir"));
        File.WriteAllText(Path.Combine(root, "dir", "passwd"), "inside");
        return root;
    }

    static unsafe string ReadFd(long fd)
    {
        var buf = new byte[256];
        long n;
        fixed (byte* p = buf) n = HostSys.Call(Nr.read, fd, (long)p, buf.Length);
        HostSys.Call(Nr.close, fd);
        return n < 0 ? $"errno {-n}" : Encoding.UTF8.GetString(buf, 0, (int)n);
    }

    /// <summary>rename(2) (File.Move refuses a dangling symlink as its source).</summary>
    static unsafe void Rename(string from, string to)
    {
        byte[] a = HostSys.Z(from), b = HostSys.Z(to);
        fixed (byte* p = a) fixed (byte* q = b)
            if (HostSys.Call(Nr.rename, (long)p, (long)q) < 0) throw new IOException($"rename {from} {to} failed");
    }

    public static IEnumerable<object[]> Strategies() => [[true], [false]];

    /// <summary>
    /// Another thread that keeps replacing symlinks (each atomically, by rename over it) with each of its targets in
    /// turn, until disposed: the race a confined resolution must survive.
    /// </summary>
    sealed class LinkSwapper : IDisposable
    {
        readonly CancellationTokenSource _stop = new();
        readonly Thread _thread;
        long _swaps;
        public long Swaps => Interlocked.Read(ref _swaps);

        public LinkSwapper(params (string Link, string[] Targets)[] links)
        {
            foreach (var (l, t) in links) File.CreateSymbolicLink(l, t[0]);
            _thread = new Thread(() =>
            {
                try
                {
                    for (int i = 0; !_stop.IsCancellationRequested; i++)
                    {
                        for (int k = 0; k < links.Length; k++)
                        {
                            var (l, t) = links[k];
                            string tmp = l + ".tmp";
                            File.Delete(tmp);
                            File.CreateSymbolicLink(tmp, t[(i + k) % t.Length]);
                            Rename(tmp, l); // the link changes atomically
                        }
                        Interlocked.Increment(ref _swaps);
                    }
                }
                catch (IOException) when (_stop.IsCancellationRequested) { }
            }) { IsBackground = true };
            _thread.IsBackground = true;
            _thread.Start();
        }

        public void Dispose() { _stop.Cancel(); _thread.Join(); }

        /// <summary>The number of link changes a race loop needs to have raced against.</summary>
        public const int MinSwaps = 100;
        readonly System.Diagnostics.Stopwatch _since = System.Diagnostics.Stopwatch.StartNew();

        /// <summary>
        /// Whether a race loop goes on: at least <paramref name="minIterations"/> iterations, then on until the links
        /// changed more than <see cref="MinSwaps"/> times (bounded at a minute): on a loaded machine the swapper thread
        /// may get little CPU while the loop runs, and a race that did not happen proves nothing.
        /// </summary>
        public bool Racing(int iteration, int minIterations) =>
            iteration < minIterations || (Swaps <= MinSwaps && _since.Elapsed < TimeSpan.FromMinutes(1));
    }

    [Theory]
    [MemberData(nameof(Strategies))]
    public void DotDotSymlinksAndMagicLinksStayInside(bool openat2)
    {
        string root = NewRoot();
        try
        {
            File.CreateSymbolicLink(Path.Combine(root, "abs"), "/etc");
            File.CreateSymbolicLink(Path.Combine(root, "rel"), "../../../../../../../../etc");
            File.CreateSymbolicLink(Path.Combine(root, "loop"), "loop");
            using var fs = new GuestFs(root, openat2);
            Assert.Equal(openat2, fs.UsesOpenat2);
            foreach (var p in new[] { "/../../../../etc/passwd", "/abs/passwd", "/rel/passwd", "/dir/../../etc/passwd", "/proc/self/root/etc/passwd" })
            {
                long fd = fs.Open(p, O_RDONLY, 0);
                if (fd >= 0) Assert.Equal("inside", ReadFd(fd)); // only a file inside could have opened
            }
            Assert.Equal(-Errno.ELOOP, fs.Open("/loop", O_RDONLY, 0));
            // creating through a symlink to outside creates inside (or fails), never outside
            string outside = Path.Combine(Path.GetTempPath(), $"revirt-outside-{Guid.NewGuid():N}");
            File.CreateSymbolicLink(Path.Combine(root, "out"), outside);
            long c = fs.Open("/out", O_WRONLY | O_CREAT, 0x1a4);
            if (c >= 0) HostSys.Call(Nr.close, c);
            Assert.False(File.Exists(outside));
            // the root has no name in a parent: rmdir/unlink/rename of "/" never reach the host
            bool called = false;
            Assert.Equal(-Errno.EBUSY, fs.InParent("/", -Errno.EBUSY, (_, _) => { called = true; return 0; }));
            Assert.Equal(-Errno.EBUSY, fs.InParent("/dir/..", -Errno.EBUSY, (_, _) => { called = true; return 0; }));
            Assert.False(called);
            Assert.True(Directory.Exists(root));
        }
        finally { Directory.Delete(root, true); }
    }

    [Theory]
    [MemberData(nameof(Strategies))]
    public void AConcurrentSymlinkSwapperNeverLetsAReadOutside(bool openat2)
    {
        string root = NewRoot();
        try
        {
            using var swapper = new LinkSwapper((Path.Combine(root, "link"), ["dir", "/etc", "../../../../../../../etc", "/dir"]));
            using var fs = new GuestFs(root, openat2);
            int opened = 0;
            for (int i = 0; swapper.Racing(i, 20_000); i++)
            {
                long fd = fs.Open("/link/passwd", O_RDONLY, 0);
                if (fd < 0) continue;
                opened++;
                string content = ReadFd(fd);
                Assert.True(content == "inside", $"iteration {i}: read \"{content}\" through the swapped link");
                long n = fs.OnObject("/link/passwd", true, _ => 0);
                Assert.True(n == 0 || n < 0);
            }
            Assert.True(opened > 0 && swapper.Swaps > LinkSwapper.MinSwaps, $"the race did not happen: {opened} opens, {swapper.Swaps} swaps");
        }
        finally { Directory.Delete(root, true); }
    }

    const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;

    /// <summary>bind(2) or connect(2) of a socket to an AF_UNIX path (the host's own call, no guest involved).</summary>
    static unsafe long UnixCall(int nr, long fd, string path)
    {
        var pb = Encoding.UTF8.GetBytes(path);
        var a = new byte[2 + pb.Length + 1];
        a[0] = AF_UNIX;
        pb.CopyTo(a, 2);
        fixed (byte* p = a) return HostSys.Call(nr, fd, (long)p, a.Length);
    }

    static long UnixSocket() => HostSys.Call(Nr.socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    static long Listener(string hostPath)
    {
        long fd = UnixSocket();
        Assert.Equal(0, UnixCall(Nr.bind, fd, hostPath));
        Assert.Equal(0, HostSys.Call(Nr.listen, fd, 64));
        return fd;
    }

    /// <summary>How many connections a listener holds (accepting and closing them).</summary>
    static int Drain(long listener)
    {
        int n = 0;
        for (long a; (a = HostSys.Call(Nr.accept4, listener, 0, 0, SOCK_CLOEXEC)) >= 0; n++) HostSys.Call(Nr.close, a);
        return n;
    }

    /// <summary>
    /// AF_UNIX addresses (connect, sendto, bind) take the same one-step resolution as every other path: a socket
    /// outside the root is never reached and no socket file is ever created outside it, through a symlink to
    /// outside, nor while another thread swaps a directory link or the final link between inside and outside.
    /// Oracle: the outside listener's accept queue stays empty and no file appears in the outside directory.
    /// </summary>
    [Theory]
    [MemberData(nameof(Strategies))]
    public void SocketPathsNeverReachOutsideTheRootEvenWithASwapper(bool openat2)
    {
        string root = NewRoot();
        string outside = Path.Combine(Path.GetTempPath(), $"revirt-outsock-{Guid.NewGuid():N}");
        Directory.CreateDirectory(outside);
        long inner = Listener(Path.Combine(root, "dir", "s")), outer = Listener(Path.Combine(outside, "s"));
        try
        {
            using var fs = new GuestFs(root, openat2);
            long Connect(string guestPath)
            {
                long c = UnixSocket();
                try { return fs.ViaDescriptor(guestPath, create: false, hp => UnixCall(Nr.connect, c, hp)); }
                finally { HostSys.Call(Nr.close, c); }
            }
            long Bind(string guestPath)
            {
                long b = UnixSocket();
                try { return fs.ViaDescriptor(guestPath, create: true, hp => UnixCall(Nr.bind, b, hp)); }
                finally { HostSys.Call(Nr.close, b); }
            }
            // without a race: the socket inside is reached, links to outside are not
            Assert.Equal(0, Connect("/dir/s"));
            Assert.Equal(0, Connect("/../../../../dir/s"));
            File.CreateSymbolicLink(Path.Combine(root, "abs"), Path.Combine(outside, "s"));
            File.CreateSymbolicLink(Path.Combine(root, "absdir"), outside);
            File.CreateSymbolicLink(Path.Combine(root, "reldir"), "../../../../../../.." + outside);
            foreach (var p in new[] { "/abs", "/absdir/s", "/reldir/s", "/proc/self/root" + outside + "/s", "/proc/self/cwd" + outside + "/s" })
                Assert.NotEqual(0, Connect(p));
            foreach (var p in new[] { "/absdir/new", "/reldir/new", "/abs" })
                Assert.NotEqual(0, Bind(p));
            Assert.Equal(-Errno.EADDRINUSE, Bind("/"));
            Assert.Equal(0, Bind("/dir/new")); // a name inside is created
            Assert.True(File.Exists(Path.Combine(root, "dir", "new")));
            File.Delete(Path.Combine(root, "dir", "new"));
            Assert.Equal(2, Drain(inner));
            Assert.Equal(0, Drain(outer));

            // with a swapper: a directory link and a final link change between inside and outside all the time
            using var swapper = new LinkSwapper(
                (Path.Combine(root, "link"), ["dir", outside, "../../../../../../.." + outside, "/dir"]),
                (Path.Combine(root, "sock"), ["dir/s", Path.Combine(outside, "s"), "/dir/s", "../../../../../../.." + outside + "/s"]));
            int connected = 0, bound = 0;
            for (int i = 0; swapper.Racing(i, 6_000); i++)
            {
                if (Connect(i % 2 == 0 ? "/link/s" : "/sock") == 0) connected++;
                if (Bind("/link/new") == 0) { bound++; File.Delete(Path.Combine(root, "dir", "new")); }
                Assert.True(Drain(outer) == 0, $"iteration {i}: a connection reached the socket outside the root");
                Assert.False(File.Exists(Path.Combine(outside, "new")), $"iteration {i}: a socket file was created outside the root");
                Drain(inner);
            }
            Assert.True(connected > 0 && bound > 0 && swapper.Swaps > LinkSwapper.MinSwaps, $"the race did not happen: {connected} connects, {bound} binds, {swapper.Swaps} swaps");
        }
        finally
        {
            HostSys.Call(Nr.close, inner);
            HostSys.Call(Nr.close, outer);
            Directory.Delete(root, true);
            Directory.Delete(outside, true);
        }
    }

    /// <summary>
    /// A guest's AF_UNIX sockets bound to path names under its root behave as natively: names as given in
    /// getsockname/getpeername/accept, EADDRINUSE, ENOENT, ECONNREFUSED; with --root the files are created inside
    /// the root. The oracle is the same program run natively in a host directory.
    /// </summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void GuestSocketPathsBehaveAsNativeUnderARoot(string libc)
    {
        string prog = GuestEnv.Guest("netecho", libc);
        string native = Path.Combine(Path.GetTempPath(), $"revirt-unixn-{Guid.NewGuid():N}");
        string root = Path.Combine(Path.GetTempPath(), $"revirt-unixr-{Guid.NewGuid():N}");
        Directory.CreateDirectory(native);
        Directory.CreateDirectory(Path.Combine(root, "work"));
        File.Copy(prog, Path.Combine(root, "netecho"));
        try
        {
            var n = GuestEnv.Native(prog, ["unixpath", native]);
            Assert.True(n.ExitCode == 0, n.StdoutText);
            Assert.EndsWith("done\n", n.StdoutText);
            var vm = GuestEnv.Vm("/netecho", ["unixpath", "/work"], extra: ["--root", root]);
            Assert.True(vm.ExitCode == 0, vm.Stderr + vm.StdoutText);
            Assert.Equal(n.StdoutText, vm.StdoutText);
        }
        finally { Directory.Delete(native, true); Directory.Delete(root, true); }
    }

    /// <summary>
    /// The start-up program lookup (<see cref="Kernel.ResolveProgram"/>: a path, or a PATH search) reads the program
    /// through the root descriptor in one step: with a swapper changing a directory link between inside and outside,
    /// the bytes it returns are always the inside program's (or the lookup fails); a link to outside is never read.
    /// </summary>
    [Theory]
    [InlineData("/link/prog")]
    [InlineData("prog")]
    public void TheStartupProgramLookupNeverReadsOutsideTheRoot(string program)
    {
        string root = NewRoot();
        string outside = Path.Combine(Path.GetTempPath(), $"revirt-outprog-{Guid.NewGuid():N}");
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(root, "dir", "prog"), "inside program");
        File.WriteAllText(Path.Combine(outside, "prog"), "outside program");
        try
        {
            string link = Path.Combine(root, "link");
            File.CreateSymbolicLink(Path.Combine(root, "abs"), Path.Combine(outside, "prog"));
            var opts = new MachineOptions { Root = root, Program = program, Env = ["PATH=/link"] };
            var direct = new MachineOptions { Root = root, Program = "/abs" };
            Assert.Throws<ElfLoadException>(() => Kernel.ResolveProgram(direct)); // /abs resolves to root/<outside>/prog: missing
            using var swapper = new LinkSwapper((link, ["dir", outside, "../../../../../../.." + outside, "/dir"]));
            int found = 0;
            for (int i = 0; swapper.Racing(i, 5_000); i++)
            {
                StartProgram p;
                try { p = Kernel.ResolveProgram(opts); }
                catch (ElfLoadException) { continue; }
                found++;
                Assert.Equal("inside program", Encoding.UTF8.GetString(p.Image.Span));
            }
            Assert.True(found > 0 && swapper.Swaps > LinkSwapper.MinSwaps, $"the race did not happen: {found} found, {swapper.Swaps} swaps");
        }
        finally { Directory.Delete(root, true); Directory.Delete(outside, true); }
    }

    [Fact]
    public void RmdirOfTheRootInsideTheGuestLeavesTheHostDirectory()
    {
        string root = Path.Combine(Path.GetTempPath(), $"revirt-rmroot-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        File.Copy(GuestEnv.Guest("rmroot", "musl"), Path.Combine(root, "rmroot"));
        try
        {
            var r = GuestEnv.Vm("/rmroot", [], extra: ["--root", root]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.True(Directory.Exists(root), "the guest removed its root directory on the host");
            var steps = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToDictionary(l => l.Split(' ')[0], l => int.Parse(l.Split(' ')[1]));
            Assert.Equal(0, steps["unlink-self"]);
            foreach (var s in new[] { "rmdir-root", "rmdir-dot", "rmdir-dotdot", "unlink-root", "rename-root" })
                Assert.NotEqual(0, steps[s]);
        }
        finally { if (Directory.Exists(root)) Directory.Delete(root, true); }
    }
}
