using System.Diagnostics;
using System.Runtime.InteropServices;
using O = ReVirt.Linux.O;
using Sig = ReVirt.Linux.Sig;

namespace ReVirt.Chaos;

/// <summary>
/// `chaos drill --hosts netns` without root: the drill runs itself again inside a user namespace of its own
/// (<c>unshare --user --map-root-user --net --mount</c>), where it is root over namespaces it creates: the switch's
/// bridge, the hosts' network namespaces and veths, and a private tmpfs over <c>/run/netns</c> for their names (only
/// this drill's mount namespace sees it). The real user's rights on the machine do not change: nothing outside the
/// user namespace is touched, and everything the drill made goes when its last process ends. What the kernel does not
/// allow an unprivileged user is said by <see cref="WhyNotAllowed"/> with the setting to change.
/// </summary>
public static class UserNamespace
{
    /// <summary>The flags of the re-run: a user namespace mapping the caller to root, and its own network and mount
    /// namespaces (the drill's own process touches no network of the machine; the tmpfs over /run/netns stays private).</summary>
    public static readonly string[] UnshareArgs = ["--user", "--map-root-user", "--net", "--mount"];

    /// <summary>The identity map of the initial user namespace (uid 0 maps to 0 for all 2^32 - 1 ids): any other map
    /// in /proc/self/uid_map means this process runs inside a user namespace.</summary>
    const string InitialUidMap = "0 0 4294967295";

    /// <summary>True when this process runs in a user namespace other than the machine's initial one: its root is
    /// root over that namespace's own network and mount namespaces only.</summary>
    public static bool Inside
    {
        get
        {
            try { return string.Join(' ', File.ReadAllText("/proc/self/uid_map").Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries)) != InitialUidMap; }
            catch (IOException) { return false; }
        }
    }

    /// <summary>
    /// Why the kernel's settings refuse a user namespace to an unprivileged user, naming the setting and the value to
    /// set; null when they allow it. <paramref name="readSetting"/> reads a file under /proc/sys (e.g.
    /// "user/max_user_namespaces") and returns null when the kernel has no such setting.
    /// </summary>
    public static string? WhyNotAllowed(Func<string, string?> readSetting)
    {
        // Debian and Ubuntu kernels before 6.x: a switch of their own (absent from mainline kernels)
        if (readSetting("kernel/unprivileged_userns_clone")?.Trim() == "0")
            return "kernel.unprivileged_userns_clone = 0: this kernel refuses user namespaces to unprivileged users; as root: sysctl -w kernel.unprivileged_userns_clone=1";
        if (readSetting("user/max_user_namespaces")?.Trim() == "0")
            return "user.max_user_namespaces = 0: no user namespace may be made; as root: sysctl -w user.max_user_namespaces=15000";
        if (readSetting("user/max_net_namespaces")?.Trim() == "0")
            return "user.max_net_namespaces = 0: no network namespace may be made; as root: sysctl -w user.max_net_namespaces=15000";
        // Ubuntu 23.10 and later: AppArmor lets only profiled programs use them
        if (readSetting("kernel/apparmor_restrict_unprivileged_userns")?.Trim() == "1")
            return "kernel.apparmor_restrict_unprivileged_userns = 1: AppArmor refuses user namespaces to unconfined programs; as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or give unshare an AppArmor profile with `userns,`)";
        return null;
    }

    /// <summary>Reads a setting under /proc/sys; null when this kernel has none of that name.</summary>
    public static string? ReadProcSys(string name)
    {
        try { return File.ReadAllText(Path.Combine("/proc/sys", name)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// Why this unprivileged user cannot run the drill in a user namespace here, or null when it can: the kernel's
    /// settings (<see cref="WhyNotAllowed"/>), then a real attempt (a security module or a container's seccomp filter
    /// may refuse what the settings allow).
    /// </summary>
    public static string? WhyNotHere()
    {
        if (WhyNotAllowed(ReadProcSys) is { } setting) return setting;
        RunOutcome probe;
        try { probe = Child.Run("unshare", [.. UnshareArgs, "true"], TimeSpan.FromSeconds(30)); }
        catch (System.ComponentModel.Win32Exception e) { return $"`unshare` (util-linux) cannot be run: {e.Message}"; }
        catch (TimeoutException e) { return e.Message; }
        if (probe.ExitCode != 0)
            return $"`unshare {string.Join(' ', UnshareArgs)} true` failed (exit {probe.ExitCode}: {probe.Stderr.Trim()}); the kernel settings allow user namespaces, so a security module (AppArmor, SELinux) or a seccomp filter refuses them";
        return null;
    }

    /// <summary>
    /// Runs this very command (the same program and arguments) again inside a user namespace of its own and returns
    /// its exit status; standard input, output and error are this process's. SIGINT and SIGTERM given to this process
    /// are passed on, so the inner drill removes what it made (its namespaces end with it in any case). Returns 2 with
    /// the reason on <paramref name="error"/> when the user namespace cannot be made.
    /// </summary>
    public static int RunThisCommandInside(TextWriter error)
    {
        if (WhyNotHere() is { } why)
        {
            error.WriteLine($"chaos: --hosts netns: not root, and a user namespace (to run the drill without root) cannot be made: {why}");
            return 2;
        }
        var psi = new ProcessStartInfo("unshare") { UseShellExecute = false };
        foreach (var a in UnshareArgs) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--");
        // `dotnet chaos.dll ARGS` or the apphost `chaos ARGS`: the command line's first word is the managed program
        string[] command = Environment.GetCommandLineArgs();
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this process's program is unknown");
        psi.ArgumentList.Add(host);
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") psi.ArgumentList.Add(command[0]);
        foreach (var a in command[1..]) psi.ArgumentList.Add(a);
        using var inner = Process.Start(psi) ?? throw new InvalidOperationException("cannot start unshare");
        void Pass(PosixSignalContext c)
        {
            c.Cancel = true; // this process waits for the inner drill's own exit
            try { if (!inner.HasExited) kill(inner.Id, c.Signal == PosixSignal.SIGINT ? Sig.INT : Sig.TERM); }
            catch (InvalidOperationException) { }
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Pass);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Pass);
        inner.WaitForExit();
        return inner.ExitCode;
    }

    [DllImport("libc", SetLastError = true)] static extern int kill(int pid, int sig);

    /// <summary>
    /// Inside a user namespace: gives <c>ip netns</c> a directory of its own for the names of the drill's namespaces,
    /// a tmpfs over /run/netns (over /run when the machine has no /run/netns to cover; /var/run is /run), mounted in
    /// this drill's mount namespace only. Nothing to do when /run/netns is writable already.
    /// </summary>
    public static void PrivateNetnsDirectory()
    {
        const string dir = "/run/netns";
        if (Directory.Exists(dir) && access(dir, WriteAndSearch) == 0) return;
        string over = Directory.Exists(dir) ? dir : "/run";
        try { Child.Check(TimeSpan.FromSeconds(30), "mount", "-t", "tmpfs", "-o", "mode=0755", "revirt-netns", over); }
        catch (InvalidOperationException e)
        { throw new NetnsUnavailableException($"--hosts netns in a user namespace: cannot mount a private tmpfs over {over} for the namespaces' names (is this process in a mount namespace of its own?): {e.Message}"); }
        Directory.CreateDirectory(dir);
    }

    /// <summary>access(2)'s W_OK | X_OK: names may be made in the directory.</summary>
    const int WriteAndSearch = 2 | 1;
    [DllImport("libc", SetLastError = true)] static extern int access(string path, int mode);

    /// <summary>Why a TAP device cannot be made from here (the guest's virtual interface needs one per replica host),
    /// or null: inside a user namespace root has no more right to /dev/net/tun than the real user, and some machines
    /// give that device mode 0600.</summary>
    public static string? WhyNoTap()
    {
        const string tun = "/dev/net/tun";
        int fd = open(tun, O.RDWR | O.CLOEXEC);
        if (fd >= 0) { close(fd); return null; }
        int errno = Marshal.GetLastPInvokeError();
        string mode = File.Exists(tun) && !OperatingSystem.IsWindows() ? $"mode {Convert.ToString((int)File.GetUnixFileMode(tun), 8)}" : "missing";
        return $"the guest's virtual interface needs TAP devices, and {tun} ({mode}) cannot be opened by this user (errno {errno}); " +
               $"as root: chmod 0666 {tun} (the mode most distributions give it: opening it grants nothing by itself), or run the drill as root, or a workload without a guest network (--workload counter; --cycles without --net virtual)";
    }

    [DllImport("libc", SetLastError = true)] static extern int open(string path, int flags);
    [DllImport("libc")] static extern int close(int fd);
}
