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
        using var stop = new CancellationTokenSource();
        Thread? swapper = null;
        try
        {
            string link = Path.Combine(root, "link"), tmp = Path.Combine(root, "link.tmp");
            File.CreateSymbolicLink(link, "dir");
            var targets = new[] { "dir", "/etc", "../../../../../../../etc", "/dir" };
            long swaps = 0;
            swapper = new Thread(() =>
            {
                int i = 0;
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        File.Delete(tmp);
                        File.CreateSymbolicLink(tmp, targets[i++ % targets.Length]);
                        Rename(tmp, link); // the link changes atomically
                        swaps++;
                    }
                }
                catch (IOException) when (stop.IsCancellationRequested) { }
            }) { IsBackground = true };
            swapper.Start();
            using var fs = new GuestFs(root, openat2);
            int opened = 0, iterations = 20_000;
            for (int i = 0; i < iterations; i++)
            {
                long fd = fs.Open("/link/passwd", O_RDONLY, 0);
                if (fd < 0) continue;
                opened++;
                string content = ReadFd(fd);
                Assert.True(content == "inside", $"iteration {i}: read \"{content}\" through the swapped link");
                long n = fs.OnObject("/link/passwd", true, _ => 0);
                Assert.True(n == 0 || n < 0);
            }
            stop.Cancel();
            swapper.Join();
            Assert.True(opened > 0 && swaps > 100, $"the race did not happen: {opened} opens, {swaps} swaps");
        }
        finally { stop.Cancel(); swapper?.Join(); Directory.Delete(root, true); }
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
