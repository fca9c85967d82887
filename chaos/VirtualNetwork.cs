using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace ReVirt.Chaos;

/// <summary>Where a guest with a virtual interface (`--net virtual`) lives in a drill: the replicas' options for it
/// and the clients' way to reach it.</summary>
public interface IGuestNetwork
{
    /// <summary>`primary protect` options that give the guest its interface.</summary>
    string[] PrimaryArgs { get; }
    /// <summary>`backup listen` options: where the backup brings the interface up when it takes over.</summary>
    string[] BackupArgs { get; }
    /// <summary>`backup listen` options of a cycles drill's replica on endpoint slot <paramref name="slot"/> (slot 0:
    /// <see cref="BackupArgs"/>).</summary>
    string[] StandbyArgs(int slot);
    /// <summary>The guest's address.</summary>
    IPAddress Guest { get; }
    /// <summary>A TCP socket on the clients' side of the network.</summary>
    Socket NewTcpSocket();
}

/// <summary>
/// The network of a drill run with `--net virtual`: a network namespace made for the run, holding a bridge (the
/// clients' side, <see cref="BridgeCidr"/>) whose ports are persistent TAP devices, one per replica. The primary
/// serves the guest's virtual interface (<see cref="GuestIp"/>) on <see cref="PrimaryTap"/>; a backup that takes over
/// brings the same MAC and IP up on <see cref="BackupTap"/> (a cycles drill's standby: on the device of its endpoint
/// slot, <see cref="StandbyTap"/>) and announces it, and the bridge sends it the clients' frames from then on. The clients' sockets are created inside the namespace (by one thread that entered it and
/// does nothing else), so the drill itself and the replication link stay on this process's loopback. Needs root.
/// </summary>
public sealed class VirtualNetwork : IGuestNetwork, IDisposable
{
    public const string BridgeCidr = "10.213.9.1/24", GuestIp = "10.213.9.2", GuestCidr = GuestIp + "/24";
    public const string PrimaryTap = "rvp0", BackupTap = "rvb0", Bridge = "rvbr0";

    public string Name { get; }
    /// <summary>How many standby devices there are (<see cref="StandbyTap"/> 0 .. Standbys-1).</summary>
    public int Standbys { get; }
    static int _made;
    readonly NamespaceSockets _clients;

    /// <summary>The bridge copies every frame it delivers to <see cref="PrimaryTap"/> onto <see cref="BackupTap"/> (a
    /// port mirror), and the backup listens with `--hears-primary`.</summary>
    public bool HearsPrimary { get; }

    VirtualNetwork(string name, int standbys, bool hearsPrimary)
    {
        Name = name;
        Standbys = standbys;
        HearsPrimary = hearsPrimary;
        _clients = new NamespaceSockets(name);
    }

    /// <summary>The TAP device of a replica listening on endpoint slot <paramref name="slot"/> (slot 0 is the
    /// single-round drill's backup, <see cref="BackupTap"/>).</summary>
    public static string StandbyTap(int slot) => $"rvb{slot}";

    /// <summary>Makes the namespace, its bridge and the TAP devices (the primary's and <paramref name="standbys"/>
    /// more); with <paramref name="mirrorPrimary"/> the primary's port mirrored onto the backup's
    /// (<see cref="HearsPrimary"/>). Throws with the failing command.</summary>
    public static VirtualNetwork Create(int standbys = 1, bool mirrorPrimary = false)
    {
        if (standbys < 1) throw new ArgumentOutOfRangeException(nameof(standbys), "a pair needs at least the backup's device");
        string name = $"rvchaos{Environment.ProcessId}n{Interlocked.Increment(ref _made)}";
        Ip("netns", "add", name);
        try
        {
            void In(params string[] a) => Ip(["netns", "exec", name, "ip", .. a]);
            In("link", "set", "lo", "up");
            In("link", "add", Bridge, "type", "bridge");
            foreach (var tap in Enumerable.Range(0, standbys).Select(StandbyTap).Prepend(PrimaryTap))
            {
                In("tuntap", "add", "dev", tap, "mode", "tap");
                In("link", "set", tap, "master", Bridge);
                In("link", "set", tap, "up");
            }
            In("addr", "add", BridgeCidr, "dev", Bridge);
            In("link", "set", Bridge, "up");
            if (mirrorPrimary)
            {
                // what the bridge sends out of the primary's port (the frames its device delivers to the primary) is
                // copied out of the backup's: a clsact egress filter matching every frame (u32 0/0) with mirred
                void Tc(params string[] a) => Child.Check(TimeSpan.FromMinutes(1), "ip", ["netns", "exec", name, "tc", .. a]);
                Tc("qdisc", "add", "dev", PrimaryTap, "clsact");
                Tc("filter", "add", "dev", PrimaryTap, "egress", "protocol", "all", "u32", "match", "u32", "0", "0",
                   "action", "mirred", "egress", "mirror", "dev", BackupTap);
            }
            return new VirtualNetwork(name, standbys, mirrorPrimary);
        }
        catch { Ip("netns", "del", name); throw; }
    }

    /// <summary>`primary protect` options that give the guest its interface on this network.</summary>
    public string[] PrimaryArgs => ["--net", "virtual", "--ip", GuestCidr, "--tap", PrimaryTap, "--netns", Name];

    /// <summary>`backup listen` options: where the backup brings the interface up when it takes over.</summary>
    public string[] BackupArgs => HearsPrimary ? [.. StandbyArgs(0), "--hears-primary"] : StandbyArgs(0);

    /// <summary>`backup listen` options of a replica on endpoint slot <paramref name="slot"/>.</summary>
    public string[] StandbyArgs(int slot) => slot >= 0 && slot < Standbys
        ? ["--tap", StandbyTap(slot), "--netns", Name]
        : throw new ArgumentOutOfRangeException(nameof(slot), $"this network has devices for slots 0..{Standbys - 1}");

    public IPAddress Guest => IPAddress.Parse(GuestIp);

    /// <summary>A TCP socket that lives in the namespace (it stays there whichever thread uses it).</summary>
    public Socket NewTcpSocket() => _clients.NewTcpSocket();

    static void Ip(params string[] args) => Child.Check(TimeSpan.FromMinutes(1), "ip", args);

    public void Dispose()
    {
        _clients.Dispose();
        try { Ip("netns", "del", Name); } catch (InvalidOperationException) { }
    }
}

/// <summary>
/// Sockets created inside a network namespace by one thread that entered it and does nothing else (a socket stays
/// in the namespace it was made in, whichever thread uses it), so this process's own sockets stay where they are.
/// </summary>
public sealed class NamespaceSockets : IDisposable
{
    readonly string _name;
    readonly BlockingCollection<TaskCompletionSource<Socket>> _requests = new();

    public NamespaceSockets(string name)
    {
        _name = name;
        new Thread(Inside) { IsBackground = true, Name = $"netns {name}" }.Start();
    }

    /// <summary>A TCP socket in the namespace (bounded: the thread answers at once or not at all).</summary>
    public Socket NewTcpSocket()
    {
        var tcs = new TaskCompletionSource<Socket>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Add(tcs);
        if (!tcs.Task.Wait(TimeSpan.FromSeconds(30))) throw new TimeoutException($"no socket from network namespace {_name} within 30 s");
        return tcs.Task.GetAwaiter().GetResult();
    }

    void Inside()
    {
        int target = open($"/var/run/netns/{_name}", 0);
        bool entered = target >= 0 && setns(target, CloneNewNet) == 0;
        if (target >= 0) close(target);
        foreach (var tcs in _requests.GetConsumingEnumerable())
        {
            if (!entered) { tcs.SetException(new InvalidOperationException($"cannot enter network namespace {_name}")); continue; }
            try { tcs.SetResult(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)); }
            catch (SocketException e) { tcs.SetException(e); }
        }
    }

    const int CloneNewNet = 0x40000000;
    [DllImport("libc", SetLastError = true)] static extern int setns(int fd, int nstype);
    [DllImport("libc", SetLastError = true)] static extern int open(string path, int flags);
    [DllImport("libc")] static extern int close(int fd);

    public void Dispose() => _requests.CompleteAdding();
}

/// <summary>Where a workload's clients reach the guest: this host's loopback (the guest's sockets are host sockets)
/// or the guest's virtual interface inside a <see cref="VirtualNetwork"/>.</summary>
public sealed class ServiceAddress(IPAddress address, Func<Socket> newSocket)
{
    public IPAddress Address => address;
    public Socket NewSocket() => newSocket();

    public static readonly ServiceAddress Loopback = new(IPAddress.Loopback, () => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
    public static ServiceAddress On(IGuestNetwork net) => new(net.Guest, net.NewTcpSocket);
}
