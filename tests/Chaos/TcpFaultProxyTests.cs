using System.Net;
using System.Net.Sockets;
using System.Text;
using ReVirt.Chaos;
using Xunit;

namespace ReVirt.Tests.Chaos;

/// <summary>The drill's relay between the replicas.</summary>
public class TcpFaultProxyTests
{
    /// <summary>
    /// The relay runs in the process of whoever drills (a test host full of other tests): it must relay while that
    /// process's thread pool is starved. A relay on pool tasks held the primary's first messages until a cut swallowed
    /// them, and the planted-gate round found a backup that had never received a record ("no failover needed").
    /// Deterministic: every pool thread is blocked and many more blocked work items wait in the queue for the whole
    /// round trip (the pool adds a thread about every half second, so they outlast the test's bound by far).
    /// </summary>
    [Fact]
    public void RelaysWhileThePoolOfItsProcessIsStarved()
    {
        using var target = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        target.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        target.Listen(1);
        new Thread(() =>
        {
            try
            {
                using var c = target.Accept();
                var b = new byte[256];
                int n;
                while ((n = c.Receive(b)) > 0) c.Send(b, 0, n, SocketFlags.None);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        }) { IsBackground = true, Name = "echo" }.Start();
        using var proxy = new TcpFaultProxy((IPEndPoint)target.LocalEndPoint!);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 20_000, SendTimeout = 20_000 };
        client.Connect(IPAddress.Loopback, proxy.Port);
        Assert.Equal("before", RoundTrip(client, "before"));

        int blockers = ThreadPool.ThreadCount + 200, started = 0;
        var release = new ManualResetEventSlim(); // not disposed: work items still queued wait on it after the test
        for (int i = 0; i < blockers; i++)
            ThreadPool.UnsafeQueueUserWorkItem(_ => { Interlocked.Increment(ref started); release.Wait(TimeSpan.FromSeconds(60)); }, null);
        try
        {
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref started) > 0, TimeSpan.FromSeconds(30)), "no pool thread took a blocking work item within 30 s");
            string reply = RoundTrip(client, "starved");
            int ran = Volatile.Read(ref started);
            Assert.Equal("starved", reply);
            // the reply came while blocked work still waited for a thread: the pool was starved the whole time
            Assert.True(ran < blockers, $"all {blockers} blocking work items had started before the reply came: the pool was not starved throughout");
        }
        finally { release.Set(); }
    }

    /// <summary>Sends a line and reads it back through the relay (bounded by the client's 20 s time-outs).</summary>
    static string RoundTrip(Socket client, string text)
    {
        client.Send(Encoding.ASCII.GetBytes(text));
        var buf = new byte[text.Length];
        for (int got = 0; got < buf.Length;)
        {
            int n;
            try { n = client.Receive(buf, got, buf.Length - got, SocketFlags.None); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut) { return $"(no reply within 20 s: the relay did not run; {got} bytes)"; }
            if (n == 0) return $"(the relay closed the connection after {got} bytes)";
            got += n;
        }
        return Encoding.ASCII.GetString(buf);
    }
}
