using System.Text.Json;
using ReVirt.Chaos;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// `chaos drill --hosts netns` run by a user without root: the drill re-runs itself in a user namespace of its own and
/// makes its hosts there (network namespaces, a bridge, etcd on its host), and a real host fault acts: a partition at
/// the bridge silences the replication link between the replicas' hosts while both still reach etcd.
/// </summary>
public class RootlessHostsTests(ITestOutputHelper output) : DrillTests(output)
{
    /// <summary>The unprivileged user the test runs the drill as when it runs as root itself (nobody).</summary>
    const string Unprivileged = "65534";

    /// <summary>
    /// The drill, as nobody (or as this user when it is not root): one cycle of `--cycles` (the ticker guest runs
    /// until the drill ends it, so the fault always lands in a running pair; no guest network, so no TAP device is
    /// needed) whose fault is a partition at the bridge. It exits 0 with every invariant held, its report says the
    /// hosts were made in a user namespace, and the partition acted: the follower on the other side of the bridge lost
    /// its primary and stood down while the live replica kept etcd's term (etcd on its own host, across the bridge),
    /// and after the heal a standby on the cut-off host rejoined by a snapshot over the bridge. Without user
    /// namespaces for that user it is skipped, saying which setting refuses them. Fails on the old code, which refused
    /// to run without root (exit 2). About 10-12 s.
    /// </summary>
    [Fact]
    public void ADrillWithoutRootMakesItsHostsInAUserNamespaceWhereAPartitionAtTheBridgeActs()
    {
        string[] asUser = Environment.IsPrivilegedProcess ? ["setpriv", "--reuid", Unprivileged, "--regid", Unprivileged, "--clear-groups", "--"] : [];
        string[] probe = [.. asUser, "unshare", .. UserNamespace.UnshareArgs, "true"]; // the user namespace the drill makes
        var allowed = Child.Run(probe[0], probe[1..], TimeSpan.FromSeconds(30));
        if (allowed.ExitCode != 0)
        {
            Output.WriteLine($"skipped: this machine refuses user namespaces to an unprivileged user: {UserNamespace.WhyNotAllowed(UserNamespace.ReadProcSys) ?? allowed.Stderr.Trim()}");
            return;
        }
        string guest = GuestEnv.Guest("ticker", "musl"), chaos = Path.Combine(AppContext.BaseDirectory, "chaos.dll");
        // the build and the guest must be readable by that user (a checkout under a private home directory is not)
        foreach (var f in new[] { chaos, guest })
        {
            string[] readable = [.. asUser, "test", "-r", f];
            Assert.True(Child.Run(readable[0], readable[1..], TimeSpan.FromSeconds(30)).ExitCode == 0, $"{f} is not readable by the unprivileged user (uid {(asUser.Length > 0 ? Unprivileged : Environment.UserName)}): run the test from a checkout other users may read");
        }
        string dir = Path.Combine(Path.GetTempPath(), $"revirt-rootless-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        if (!OperatingSystem.IsWindows()) // the unprivileged user writes its report here
            File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupWrite
                | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute);
        try
        {
            string report = Path.Combine(dir, "report");
            string[] drill = [.. asUser, "env", $"HOME={dir}", "dotnet", chaos, "drill", "--hosts", "netns",
                "--cycles", "1", "--faults", "partition", "--guest", guest, "--seed", "3", "--quiet", "--report", report];
            var r = Child.Run(drill[0], drill[1..], TimeSpan.FromMinutes(3), cwd: dir);
            Output.WriteLine(r.StdoutText);
            Output.WriteLine(r.Stderr);
            Assert.True(r.ExitCode == 0, $"the drill without root exited {r.ExitCode}");

            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "report.json")));
            var top = doc.RootElement;
            Assert.Equal("netns", top.GetProperty("hosts").GetString());
            Assert.Equal("user-namespace", top.GetProperty("hostsMadeBy").GetString());
            Assert.Equal("etcd", top.GetProperty("arbiter").GetString());
            var cycle = Assert.Single(top.GetProperty("cycles").EnumerateArray());
            Assert.Equal("partition", cycle.GetProperty("fault").GetString());
            var invariants = cycle.GetProperty("invariants").EnumerateArray().ToDictionary(i => i.GetProperty("name").GetString()!, i => (Ok: i.GetProperty("ok").GetBoolean(), Detail: i.GetProperty("detail").GetString()));
            Assert.All(invariants, i => Assert.True(i.Value.Ok, $"{i.Key}: {i.Value.Detail}"));
            // the partition acted: the follower cut off at the bridge stood down, the live replica kept etcd's term,
            // and a standby on the cut-off host joined over the healed bridge
            Assert.True(invariants.ContainsKey("partition-kept-by-live-replica"), "no partition was checked");
            Assert.Equal("primary", cycle.GetProperty("survivor").GetString());
            Assert.StartsWith("stood down", cycle.GetProperty("replacedFate").GetString());
            Assert.StartsWith("primary:", cycle.GetProperty("arbiterHolder").GetString());
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }
}

/// <summary>The reasons the drill gives when the kernel refuses user namespaces: each names the setting and the
/// value to set.</summary>
public class UserNamespacePolicyTests
{
    [Theory]
    [InlineData("kernel/unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1")]
    [InlineData("user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=")]
    [InlineData("user/max_net_namespaces", "0\n", "sysctl -w user.max_net_namespaces=")]
    [InlineData("kernel/apparmor_restrict_unprivileged_userns", "1", "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")]
    public void ASettingThatRefusesUserNamespacesIsNamedWithTheValueToSet(string setting, string value, string advice)
    {
        string? why = UserNamespace.WhyNotAllowed(name => name == setting ? value : null);
        Assert.NotNull(why);
        Assert.Contains(advice, why);
    }

    [Fact]
    public void SettingsThatAllowUserNamespacesOrAreAbsentGiveNoReason()
    {
        var allowing = new Dictionary<string, string>
        {
            ["kernel/unprivileged_userns_clone"] = "1", ["user/max_user_namespaces"] = "96365", ["user/max_net_namespaces"] = "96365",
            ["kernel/apparmor_restrict_unprivileged_userns"] = "0",
        };
        Assert.Null(UserNamespace.WhyNotAllowed(n => allowing.GetValueOrDefault(n)));
        Assert.Null(UserNamespace.WhyNotAllowed(_ => null)); // a mainline kernel has neither distribution switch
    }
}
