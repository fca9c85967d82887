using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Net;

/// <summary>A line-oriented TCP client on 127.0.0.1 for talking to guest servers.</summary>
sealed class LineClient : IDisposable
{
    readonly TcpClient _c;
    readonly NetworkStream _s;
    readonly StreamReader _r;

    public LineClient(int port)
    {
        _c = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true, ReceiveTimeout = 60_000, SendTimeout = 60_000 };
        _c.Connect(IPAddress.Loopback, port);
        _s = _c.GetStream();
        _r = new StreamReader(_s, Encoding.ASCII);
    }

    public void Send(string text) { var b = Encoding.ASCII.GetBytes(text); _s.Write(b); _s.Flush(); }
    public string? ReadLine() => _r.ReadLine();
    public string? Ask(string line) { Send(line + "\n"); return ReadLine(); }

    public void Dispose() { _r.Dispose(); _c.Dispose(); }
}

/// <summary>
/// Guest TCP/IP networking: guest servers under `primary run` and `primary record` serve real connections from
/// the test on 127.0.0.1, and a replay of the recording reproduces them without any socket.
/// </summary>
public class NetworkTests
{
    static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);
    static readonly Regex Listening = new(@"listening on 127\.0\.0\.1:(\d+)");

    static string TempLog() => Path.Combine(Path.GetTempPath(), $"revirt-net-{Guid.NewGuid():N}.rvlog");

    static RunningProgram StartVm(string guest, string? log, params string[] args)
    {
        var a = new List<string>();
        if (log == null) a.Add("run");
        else { a.Add("record"); a.Add("--log"); a.Add(log); a.Add("--checkpoint-interval"); a.Add("500000"); }
        a.Add("--");
        a.Add(guest);
        a.AddRange(args);
        return RunningProgram.Dotnet(GuestEnv.PrimaryDll, a.ToArray());
    }

    static RunOutcome Replay(string log)
        => GuestEnv.Dotnet(GuestEnv.BackupDll, new[] { "replay", "--log", log, "--show-output" });

    /// <summary>Starts a guest server, waits for its port, lets `drive` talk to it and returns its outcome.</summary>
    internal static RunOutcome Serve(string guest, string? log, Func<int, string> drive, out string expectedStdout)
    {
        using var p = StartVm(guest, log, "0");
        int port = int.Parse(p.WaitForStderr(Listening, Timeout));
        expectedStdout = drive(port);
        return p.WaitForExit(Timeout);
    }

    // ---------------------------------------------------------------- kvserver (poll)

    /// <summary>SET/GET/DEL from several connections (sequential, pipelined, concurrent), then SHUTDOWN.
    /// Returns the stdout the server must have written.</summary>
    static string DriveKv(int port)
    {
        var expected = new StringBuilder();
        using (var a = new LineClient(port))
        {
            Assert.Equal("OK", a.Ask("SET a 1"));
            Assert.Equal("OK", a.Ask("SET b hello world"));
            expected.Append("set a\nset b\n");
            using var b = new LineClient(port);
            Assert.Equal("VALUE 1", b.Ask("GET a"));
            Assert.Equal("VALUE hello world", b.Ask("GET b"));
            Assert.Equal("NOTFOUND", b.Ask("GET zzz"));
            Assert.Equal("OK", b.Ask("DEL b"));
            Assert.Equal("NOTFOUND", b.Ask("DEL b"));
            b.Send("SET c 3\nGET c\nSET a 2\r\n"); // pipelined
            Assert.Equal("OK", b.ReadLine());
            Assert.Equal("VALUE 3", b.ReadLine());
            Assert.Equal("OK", b.ReadLine());
            expected.Append("set c\nset a\n");
            Assert.Equal("VALUE 2", a.Ask("GET a"));
            Assert.Equal("NOTFOUND", a.Ask("GET b"));
            Assert.StartsWith("ERROR", a.Ask("BOGUS"));
            string big = new string('x', 50_000) + "y";
            Assert.Equal("OK", b.Ask("SET big " + big));
            expected.Append("set big\n");
            Assert.Equal("VALUE " + big, a.Ask("GET big"));
            Assert.Equal("BYE", a.Ask("QUIT"));
            Assert.Null(a.ReadLine()); // the server closed the connection
        }
        var clients = Enumerable.Range(0, 6).Select(_ => new LineClient(port)).ToList();
        try
        {
            for (int i = 0; i < clients.Count; i++)
            {
                Assert.Equal("OK", clients[i].Ask($"SET k{i} v{i} of {clients.Count}"));
                expected.Append($"set k{i}\n");
            }
            for (int i = 0; i < clients.Count; i++)
                Assert.Equal($"VALUE v{i} of {clients.Count}", clients[(i + 1) % clients.Count].Ask($"GET k{i}"));
        }
        finally { foreach (var c in clients) c.Dispose(); }
        using (var s = new LineClient(port))
        {
            Assert.Equal("OK", s.Ask("DEL k0"));
            Assert.Equal("BYE", s.Ask("SHUTDOWN"));
        }
        return expected.ToString();
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void KvServerServesClients(string libc)
    {
        var r = Serve(GuestEnv.Guest("kvserver", libc), null, DriveKv, out var expected);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(expected, r.StdoutText);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void KvServerRecordsAndReplays(string libc)
    {
        string log = TempLog();
        try
        {
            var rec = Serve(GuestEnv.Guest("kvserver", libc), log, DriveKv, out var expected);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(expected, rec.StdoutText);
            var rp = Replay(log);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.Stdout, rp.Stdout);
            Assert.Contains("kvserver: listening on 127.0.0.1:", rp.Stderr);
        }
        finally { File.Delete(log); }
    }

    // ---------------------------------------------------------------- epollserver

    internal static string DriveEpoll(int port)
    {
        var expected = new StringBuilder();
        var clients = new List<LineClient>();
        try
        {
            for (int i = 1; i <= 4; i++)
            {
                var c = new LineClient(port);
                clients.Add(c);
                Assert.Equal($"ECHO hello from {i}", c.Ask($"hello from {i}"));
                expected.Append($"conn {i}: open\nconn {i}: hello from {i}\n");
            }
            for (int round = 0; round < 3; round++)
                for (int i = 0; i < clients.Count; i++)
                {
                    string line = $"round {round} client {i + 1} " + new string((char)('a' + i), round * 3000);
                    Assert.Equal("ECHO " + line, clients[i].Ask(line));
                    expected.Append($"conn {i + 1}: {line}\n");
                }
            clients[1].Send("one\ntwo\nthree\n");
            Assert.Equal("ECHO one", clients[1].ReadLine());
            Assert.Equal("ECHO two", clients[1].ReadLine());
            Assert.Equal("ECHO three", clients[1].ReadLine());
            expected.Append("conn 2: one\nconn 2: two\nconn 2: three\n");
            Assert.Equal("BYE", clients[3].Ask("SHUTDOWN"));
            expected.Append($"served 4 connections, {4 + 12 + 3} lines\n");
        }
        finally { foreach (var c in clients) c.Dispose(); }
        return expected.ToString();
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void EpollServerServesClients(string libc)
    {
        var r = Serve(GuestEnv.Guest("epollserver", libc), null, DriveEpoll, out var expected);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(expected, r.StdoutText);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void EpollServerRecordsAndReplays(string libc)
    {
        string log = TempLog();
        try
        {
            var rec = Serve(GuestEnv.Guest("epollserver", libc), log, DriveEpoll, out var expected);
            Assert.True(rec.ExitCode == 0, rec.Stderr);
            Assert.Equal(expected, rec.StdoutText);
            var rp = Replay(log);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.Stdout, rp.Stdout);
        }
        finally { File.Delete(log); }
    }

    // ---------------------------------------------------------------- netecho (a guest client)

    /// <summary>A C# server on 127.0.0.1 that answers each line with its upper-case form (or closes at once).</summary>
    sealed class UpperServer : IDisposable
    {
        readonly TcpListener _l = new(IPAddress.Loopback, 0);
        readonly Task _loop;
        public int Port => ((IPEndPoint)_l.LocalEndpoint).Port;

        public UpperServer(bool closeAtOnce = false)
        {
            _l.Start();
            _loop = Task.Run(async () =>
            {
                while (true)
                {
                    TcpClient c;
                    try { c = await _l.AcceptTcpClientAsync(); } catch (Exception) { return; }
                    _ = Task.Run(() =>
                    {
                        using (c)
                        {
                            if (closeAtOnce) return;
                            var s = c.GetStream();
                            var r = new StreamReader(s, Encoding.ASCII);
                            string? line;
                            while ((line = r.ReadLine()) != null)
                            {
                                var b = Encoding.ASCII.GetBytes(line.ToUpperInvariant() + "\n");
                                s.Write(b);
                            }
                        }
                    });
                }
            });
        }

        public void Dispose() { _l.Stop(); try { _loop.Wait(5000); } catch (AggregateException) { } }
    }

    static RunOutcome Record(string log, string prog, params string[] args)
    {
        var a = new List<string> { "record", "--log", log, "--checkpoint-interval", "200000", "--", prog };
        a.AddRange(args);
        return GuestEnv.Dotnet(GuestEnv.PrimaryDll, a.ToArray());
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void NetechoClientRecordsAndReplaysWithoutTheServer(string libc)
    {
        string prog = GuestEnv.Guest("netecho", libc);
        string log = TempLog();
        try
        {
            RunOutcome rec;
            using (var srv = new UpperServer())
            {
                var native = GuestEnv.Native(prog, new[] { srv.Port.ToString(), "hello", "second line", "x", new string('q', 3000) });
                Assert.Equal(0, native.ExitCode);
                rec = Record(log, prog, srv.Port.ToString(), "hello", "second line", "x", new string('q', 3000));
                Assert.True(rec.ExitCode == 0, rec.Stderr);
                Assert.Equal(native.StdoutText, rec.StdoutText);
            }
            Assert.Equal("type stream, optlen 4\npeer 127.0.0.1:PORT, len 16; local 127.0.0.1, len 16\n" +
                         "reply: HELLO\nreply: SECOND LINE\nreply: X\nreply: " + new string('Q', 3000) + "\neof\n", rec.StdoutText);
            var rp = Replay(log); // the server is gone: everything comes from the log
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.Stdout, rp.Stdout);
        }
        finally { File.Delete(log); }
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void SigpipeOnAClosedConnection(string libc)
    {
        string prog = GuestEnv.Guest("netecho", libc);
        using var srv = new UpperServer(closeAtOnce: true);
        var vm = GuestEnv.Vm(prog, new[] { "sigpipe", srv.Port.ToString() });
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal("read after server close: 0\nsend(MSG_NOSIGNAL): EPIPE, sigpipes 0\nwrite: -1 Broken pipe, sigpipes 1\n", vm.StdoutText);
    }

    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void LocalSocketsEventfdAndEpollMatchNative(string libc) => NetechoMatchesNativeRecordedAndReplayed(libc, "local");

    /// <summary>
    /// The kernel's own answer is the oracle for what receives leave in the guest's buffer (only the bytes received,
    /// after a large message went through the VM's reused read buffer), for a blocking receive that waits for its peer
    /// (the receive is its own readiness test: it must still wait, not answer EAGAIN), and for poll and epoll over many
    /// descriptors; the recording replays the same.
    /// </summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void SocketReceivesPollAndEpollMatchNative(string libc) => NetechoMatchesNativeRecordedAndReplayed(libc, "reads");

    /// <summary>
    /// Blocking receives whose sender is another process or thread of the same guest, which can send the rest only
    /// if the machine runs it while the receive waits: MSG_WAITALL over a socketpair (recv, and recvmsg over three
    /// iovecs) from a forked child sending in parts, over TCP loopback from a thread; its end at end of file, by a
    /// signal's handler (with the bytes so far; EINTR, not a restart, under SA_RESTART on a socket with a receive
    /// time-out) and by SO_RCVTIMEO (the part, then EAGAIN; also for plain recv and read). The native run is the
    /// oracle; the recording replays the same. A machine that waits on the host inside the receive fails in bounded
    /// time: the guest's 20 s receive time-outs end such a wait with fewer bytes than natively.
    /// </summary>
    [Theory]
    [InlineData("glibc")]
    [InlineData("musl")]
    public void WaitAllReceivesFromAPeerInTheSameGuestMatchNative(string libc)
    {
        string prog = GuestEnv.Guest("waitall", libc);
        var native = GuestEnv.Native(prog, []);
        Assert.Equal(0, native.ExitCode);
        // the oracle itself went through each case
        Assert.Contains("socketpair recv waitall 4100: 4100 ok\n", native.StdoutText);
        Assert.Contains("tcp thread recv waitall 6000: 6000 ok\n", native.StdoutText);
        Assert.Contains("signal without SA_RESTART ends recv waitall 100: 10 ok\n", native.StdoutText);
        Assert.Contains("SO_RCVTIMEO recv waitall 100 with 10 there: 10 ok\n", native.StdoutText);
        MatchesNativeRecordedAndReplayed(prog, [], native);
    }

    /// <summary>netecho's <paramref name="mode"/> in the VM prints what the same binary prints natively (ending in
    /// "done"), and so does its recording, whose replay prints the same bytes.</summary>
    static void NetechoMatchesNativeRecordedAndReplayed(string libc, string mode)
    {
        string prog = GuestEnv.Guest("netecho", libc);
        MatchesNativeRecordedAndReplayed(prog, [mode], GuestEnv.Native(prog, [mode]));
    }

    /// <summary>The program in the VM prints what it printed natively (<paramref name="native"/>, ending in "done"),
    /// and so does its recording, whose replay prints the same bytes.</summary>
    static void MatchesNativeRecordedAndReplayed(string prog, string[] args, RunOutcome native)
    {
        Assert.Equal(0, native.ExitCode);
        Assert.EndsWith("done\n", native.StdoutText);
        var vm = GuestEnv.Vm(prog, args);
        Assert.True(vm.ExitCode == 0, vm.Stderr);
        Assert.Equal(native.StdoutText, vm.StdoutText);

        string log = TempLog();
        try
        {
            var rec = Record(log, prog, args);
            Assert.Equal(native.StdoutText, rec.StdoutText);
            var rp = Replay(log);
            Assert.True(rp.ExitCode == 0, rp.Stderr);
            Assert.Equal(rec.Stdout, rp.Stdout);
        }
        finally { File.Delete(log); }
    }
}
