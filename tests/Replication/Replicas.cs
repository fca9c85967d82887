using System.Net;
using System.Net.Sockets;
using ReVirt.Chaos;
using ReVirt.Tests.Programs;

namespace ReVirt.Tests.Replication;

/// <summary>Replica processes for the tests (the shared harness, with the test build's primary.dll and backup.dll).</summary>
public static class Replicas
{
    /// <summary>
    /// `backup listen ARGS`. A backup refuses to listen without a token and refuses a primary whose guest root is the
    /// same directory as its own; tests that give no --token-file run it with --insecure-no-auth, and tests that give
    /// no --root (both replicas on this machine's "/", guests that write no files) with --shared-storage.
    /// </summary>
    public static ReplicaProc Backup(params string[] args)
    {
        var a = new List<string>(args);
        if (!args.Contains("--token-file") && !args.Contains("--insecure-no-auth")) a.Add("--insecure-no-auth");
        if (!args.Contains("--root") && !args.Contains("--shared-storage")) a.Add("--shared-storage");
        return ReplicaProc.Backup(GuestEnv.BackupDll, a.ToArray());
    }
    public static ReplicaProc Primary(params string[] args) => ReplicaProc.Primary(GuestEnv.PrimaryDll, args);

    /// <summary>A relay between a primary and the backup <paramref name="b"/> (its endpoint and its data link) whose
    /// link can be cut silently: a partition (give the primary <see cref="TcpFaultProxy.PrimaryArgs"/>).</summary>
    public static TcpFaultProxy LinkTo(ReplicaProc b) => TcpFaultProxy.To(b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60)));

    /// <summary>A listening TCP socket on a free loopback port (a peer a test plays itself).</summary>
    public static Socket LoopbackListener()
    {
        var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        l.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        l.Listen(1);
        return l;
    }

    /// <summary>Starts a backup on a free loopback port and returns it with its URL (from its listening event).</summary>
    public static (ReplicaProc Backup, string Url) StartBackup(params string[] args)
    {
        var b = Backup(["--listen", "http://127.0.0.1:0", .. args]);
        return (b, b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60)).Str("url")!);
    }

    /// <summary>
    /// SIGKILLs <paramref name="p"/> from another thread at a random moment: once <paramref name="progress"/> reaches
    /// <paramref name="after"/> (e.g. acknowledged writes), plus 0-30 ms. Join the thread before checking the outcome.
    /// </summary>
    public static Thread KillWhen(ReplicaProc p, Func<int> progress, int after, Random rng)
    {
        int delay = rng.Next(0, 30);
        var t = new Thread(() =>
        {
            while (progress() < after && !p.HasExited) Thread.Sleep(1);
            Thread.Sleep(delay);
            p.KillHard();
        }) { IsBackground = true }; // never what keeps the test host alive
        t.Start();
        return t;
    }

    /// <summary>A fresh path in the temporary directory.</summary>
    public static string TempFile(string ext) => Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}{ext}");

    /// <summary>Removes a lock-file arbiter and the files of its later terms (PATH.2, PATH.3, ...).</summary>
    public static void DeleteArbiter(string path)
    {
        foreach (var f in Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + "*")) File.Delete(f);
    }

    public static int Lines(byte[] stdout) => stdout.Count(b => b == (byte)'\n');

    /// <summary>Waits until the guest accepts connections on <paramref name="port"/> (asked of the socket).</summary>
    public static void WaitUntilAccepting(ReplicaProc p, int port, TimeSpan timeout)
    {
        bool Accepts()
        {
            try { using var c = new TcpClient(); c.Connect(IPAddress.Loopback, port); return true; }
            catch (SocketException) { return false; }
        }
        if (!p.WaitFor(Accepts, timeout)) throw new TimeoutException($"nothing accepts on port {port}; stderr:\n{p.Stderr}");
    }
}

