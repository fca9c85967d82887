using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using ReVirt.Harness;
using ReVirt.Log;
using ReVirt.Protocol;
using ReVirt.Replication;
using ReVirt.Tests.Programs;
using ReVirt.Tests.Replication;
using Xunit;

namespace ReVirt.Tests.Security;

/// <summary>
/// A hostile peer gets nowhere: a backup does not listen without a secret unless told to loudly; before a peer has
/// proved the secret it costs the backup a bounded amount of memory and time and learns nothing about its files; an
/// accidental shared root is refused; a primary's malformed program is refused with a reason, not a crash.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class PeerSecurityTests
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    static string TempPath(string ext = "") => Path.Combine(Path.GetTempPath(), $"revirt-sec-{Guid.NewGuid():N}{ext}");

    static string Token()
    {
        string t = TempPath(".tok");
        ReplicationProtocol.WriteNewSecret(t);
        return t;
    }

    /// <summary>`backup listen` exactly as given (no test defaults added); returns it and its URL.</summary>
    static (ReplicaProc, string) RawBackup(params string[] args)
    {
        var b = ReplicaProc.Backup(GuestEnv.BackupDll, ["--listen", "http://127.0.0.1:0", .. args]);
        return (b, b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60)).Str("url")!);
    }

    static long PeakRssKiB(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmHWM:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        return 0;
    }

    [Fact]
    public void ABackupWithoutATokenRefusesToListen()
    {
        var r = GuestEnv.Dotnet(GuestEnv.BackupDll, ["listen", "--listen", "http://127.0.0.1:0"]);
        Assert.Equal(2, r.ExitCode);
        // a token too short to be a secret is refused too
        string t = TempPath(".tok");
        File.WriteAllText(t, "short");
        try { Assert.Equal(2, GuestEnv.Dotnet(GuestEnv.BackupDll, ["listen", "--listen", "http://127.0.0.1:0", "--token-file", t]).ExitCode); }
        finally { File.Delete(t); }
    }

    static Hello HelloFor(string program, int padding = 0) => HelloWith(new LogHeader
    {
        RootDirectory = "/", Argv = [program], Envp = padding > 0 ? ["PAD=" + new string('x', padding)] : [], CpuModel = "x", StartState = "cwd=/"u8.ToArray(),
    });

    static Hello HelloWith(LogHeader h)
    {
        return new Hello
        {
            ProtocolVersion = ReplicationProtocol.Version,
            LogHeader = ByteString.CopyFrom(h.Encode()),
            ClientNonce = ByteString.CopyFrom(ReplicationProtocol.Nonce()),
            PrimaryId = "stranger",
        };
    }

    /// <summary>The longest a test's own gRPC call to the backup may take (far beyond any answer on a loaded machine).</summary>
    static readonly TimeSpan CallBound = TimeSpan.FromSeconds(90);

    /// <summary>A stranger's handshake: hello, then a proof made with a secret it guessed. Returns the backup's refusal.</summary>
    static Task<string> StrangerHandshake(string url, Hello hello) => Handshake(url, hello, "a guessed secret, long enough"u8.ToArray());

    /// <summary>What <see cref="Handshake"/> returns when the call did not end within its bound.</summary>
    const string TimedOut = "timeout";

    /// <summary>
    /// A handshake proving `secret`; returns the backup's refusal reason, the kind of its answer, or
    /// <see cref="TimedOut"/>. Bounded as a whole, disposal included: in suite runs on a loaded machine a call here
    /// outlived its gRPC deadline (the test host was stopped as hung after 20 minutes), so the deadline alone is not
    /// the bound; a stuck step now ends the test with a failure that says so.
    /// </summary>
    static async Task<string> Handshake(string url, Hello hello, byte[] secret)
    {
        var work = Task.Run(() => HandshakeCall(url, hello, secret));
        try { return await work.WaitAsync(CallBound + TimeSpan.FromSeconds(30)); }
        catch (TimeoutException) { return TimedOut; }
    }

    static async Task<string> HandshakeCall(string url, Hello hello, byte[] secret)
    {
        using var ch = GrpcChannel.ForAddress(url, new GrpcChannelOptions { MaxSendMessageSize = null, MaxReceiveMessageSize = null });
        var client = new Protocol.Replication.ReplicationClient(ch);
        // bounded: a transport that refuses a message by resetting the stream can leave a large write waiting for a
        // window that never opens; the deadline (and the token, for the writes) turn that into an RpcException
        using var cts = new CancellationTokenSource(CallBound);
        using var call = client.Stream(deadline: DateTime.UtcNow + CallBound, cancellationToken: cts.Token);
        try
        {
            await call.RequestStream.WriteAsync(new PrimaryMessage { Hello = hello }, cts.Token);
            if (!await call.ResponseStream.MoveNext(cts.Token)) return "closed";
            var m = call.ResponseStream.Current;
            if (m.BodyCase == BackupMessage.BodyOneofCase.Refused) return m.Refused.Reason;
            var proof = ReplicationProtocol.Proof(secret, hello, m.Challenge.ServerNonce.ToByteArray());
            await call.RequestStream.WriteAsync(new PrimaryMessage { Auth = new Auth { Proof = ByteString.CopyFrom(proof) } }, cts.Token);
            if (!await call.ResponseStream.MoveNext(cts.Token)) return "closed";
            return call.ResponseStream.Current.Refused?.Reason ?? call.ResponseStream.Current.BodyCase.ToString();
        }
        catch (RpcException e) { return $"rpc: {e.StatusCode}"; }
        catch (OperationCanceledException) { return TimedOut; }
    }

    [Fact]
    public async Task BeforeAuthenticationAPeerCostsLittleAndLearnsNothingAndTheRealPrimaryStillGetsIn()
    {
        string tok = Token();
        var (b, url) = RawBackup("--token-file", tok, "--shared-storage");
        using var _ = b;
        try
        {
            long rss0 = PeakRssKiB(b.Pid);
            // a 48 MiB hello (over the 40 MiB message limit) is refused by the transport before it is buffered
            // (the client's own write of it may then wait for a window that never opens: that ends at the call's bound,
            // and what this test guards is the backup's side: its memory below, and that it still answers)
            var r = await StrangerHandshake(url, HelloFor("/bin/true", 48 << 20));
            Assert.True(r.StartsWith("rpc:") || r == TimedOut, r);
            // hellos naming a device, a huge tree and a missing file all get the same answer, at once: nothing is
            // opened or hashed before the secret is proved, so nothing tells whether a path exists
            var answers = new List<string>();
            foreach (var program in new[] { "/dev/zero", "/usr", "/no/such/program", GuestEnv.Guest("counter", "musl") })
            {
                var sw = Stopwatch.StartNew();
                answers.Add(await StrangerHandshake(url, HelloFor(program)));
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"{program}: {sw.Elapsed}");
            }
            Assert.All(answers, a => Assert.Contains("authentication failed", a));
            Assert.Single(answers.Distinct());
            long grew = PeakRssKiB(b.Pid) - rss0;
            Assert.True(grew < 200 * 1024, $"the backup's peak memory grew by {grew} KiB for unauthenticated peers");
            Assert.False(b.HasExited);
            // the real primary is not locked out
            using var p = Replicas.Primary("--backup", url, "--token-file", tok, "--", GuestEnv.Guest("counter", "musl"), "5", "1000");
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
        }
        finally { File.Delete(tok); }
    }

    /// <summary>
    /// Found by `backup fuzz`: a hello whose log header names no program, or a root that is empty, relative or holds
    /// a NUL, made the backup's checks of an authenticated primary throw (Path.GetFullPath). Such headers are refused
    /// with the reason, and the backup goes on waiting for its real primary.
    /// </summary>
    [Fact]
    public async Task AnAuthenticatedHelloWhoseHeaderCannotBeRunIsRefusedWithTheReason()
    {
        string tok = Token();
        var (b, url) = RawBackup("--token-file", tok, "--shared-storage");
        using var _ = b;
        try
        {
            var secret = ReplicationProtocol.ReadSecret(tok);
            string counter = GuestEnv.Guest("counter", "musl");
            LogHeader H(string root, string[] argv, string cwd = "/") => new() { RootDirectory = root, Argv = argv, Envp = [], CpuModel = "x", StartState = System.Text.Encoding.UTF8.GetBytes("cwd=" + cwd) };
            foreach (var h in new[] { H("", [counter]), H("relative", [counter]), H("/tmp\0x", [counter]), H("/", []), H("/", [""]), H("/", [counter, "a\0b"]), H("/", [counter], "/\0") })
            {
                var reason = await Handshake(url, HelloWith(h), secret);
                Assert.StartsWith("bad log header", reason);
                Assert.False(b.HasExited);
            }
            // a runnable header recorded on another CPU model: refused with the reason (a replay would diverge)
            Assert.StartsWith("CPU model mismatch", await Handshake(url, HelloWith(H("/", [counter])), secret));
            using var p = Replicas.Primary("--backup", url, "--token-file", tok, "--", counter, "5", "1000");
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
        }
        finally { File.Delete(tok); }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "mknod", SetLastError = true)]
    static extern int Mknod(string path, uint mode, ulong dev);

    /// <summary>
    /// Found by `backup fuzz`: the root digest an authenticated primary's hello makes the backup compute read every
    /// file of the root, so a FIFO, a device node (a chroot's /dev/zero) or a mounted /proc in it hung the handshake.
    /// Only regular files are read now; the others count by type (and device number), pseudo file systems by type.
    /// Oracle: the digest finishes at once, and changes when a special file is replaced by another kind.
    /// </summary>
    [Fact]
    public void TheRootDigestReadsNoSpecialFile()
    {
        string root = TempPath();
        Directory.CreateDirectory(Path.Combine(root, "dev"));
        File.WriteAllText(Path.Combine(root, "file"), "content");
        try
        {
            Assert.Equal(0, Mknod(Path.Combine(root, "fifo"), 0x1000 | 0x1a4, 0));                 // S_IFIFO
            bool devices = Mknod(Path.Combine(root, "dev", "zero"), 0x2000 | 0x1b6, (1 << 8) | 5) == 0; // S_IFCHR 1:5, root only
            Directory.CreateSymbolicLink(Path.Combine(root, "proc"), "/proc");                     // a link: digested as a link
            var sw = Stopwatch.StartNew();
            var d1 = RootDigest.Compute(root);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"the digest took {sw.Elapsed}");
            Assert.Equal(d1, RootDigest.Compute(root));
            File.Delete(Path.Combine(root, "fifo"));
            File.WriteAllText(Path.Combine(root, "fifo"), "");
            Assert.NotEqual(d1, RootDigest.Compute(root));
            Assert.True(devices || Environment.UserName != "root", "mknod of a character device failed as root");
            // a pseudo file system's mount point is not walked: /sys/kernel as a root is digested by its type at once
            sw.Restart();
            RootDigest.Compute("/sys/kernel");
            RootDigest.Compute("/proc/self");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"pseudo file systems took {sw.Elapsed}");
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public async Task AStrangerWhoNeverAuthenticatesIsCutOffAndTheRealPrimaryGetsIn()
    {
        string tok = Token();
        var (b, url) = RawBackup("--token-file", tok, "--shared-storage");
        using var _ = b;
        try
        {
            using var ch = GrpcChannel.ForAddress(url);
            using var call = new Protocol.Replication.ReplicationClient(ch).Stream(deadline: DateTime.UtcNow + ReplicationProtocol.HandshakeTimeout + CallBound);
            await call.RequestStream.WriteAsync(new PrimaryMessage { Hello = HelloFor("/bin/true") });
            Assert.True(await call.ResponseStream.MoveNext());
            Assert.Equal(BackupMessage.BodyOneofCase.Challenge, call.ResponseStream.Current.BodyCase);
            // ... and says nothing more: the backup gives up on it after the handshake timeout
            var sw = Stopwatch.StartNew();
            Assert.True(await call.ResponseStream.MoveNext());
            Assert.Equal(BackupMessage.BodyOneofCase.Refused, call.ResponseStream.Current.BodyCase);
            Assert.True(sw.Elapsed < ReplicationProtocol.HandshakeTimeout + TimeSpan.FromSeconds(10));
            using var p = Replicas.Primary("--backup", url, "--token-file", tok, "--", GuestEnv.Guest("counter", "musl"), "5", "1000");
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
        }
        finally { File.Delete(tok); }
    }

    /// <summary>
    /// The data link (the log and the acks after the handshake) opens only with the ticket of a welcomed primary and
    /// a proof of the token: a stranger who reaches the data port with a made-up ticket, or with garbage, is refused
    /// with the reason (or cut off) and costs nothing; the real primary then replicates as usual.
    /// </summary>
    [Fact]
    public void AStrangerOnTheDataPortIsRefusedAndTheRealPrimaryGetsIn()
    {
        string tok = Token();
        var b = ReplicaProc.Backup(GuestEnv.BackupDll, ["--listen", "http://127.0.0.1:0", "--token-file", tok, "--shared-storage"]);
        using var _ = b;
        try
        {
            var listening = b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60));
            string url = listening.Str("url")!;
            int dataPort = (int)listening.Long("dataPort")!.Value;
            // a made-up ticket with a made-up proof: a Refused naming why
            using (var s = new System.Net.Sockets.TcpClient())
            {
                s.Connect(System.Net.IPAddress.Loopback, dataPort);
                s.ReceiveTimeout = 30_000;
                var st = s.GetStream();
                st.Write([.. DataLink.Magic, .. new byte[DataLink.TicketBytes + DataLink.ProofBytes]]);
                var len = new byte[4];
                st.ReadExactly(len);
                var body = new byte[BitConverter.ToInt32(len)];
                st.ReadExactly(body);
                var answer = BackupMessage.Parser.ParseFrom(body);
                Assert.Equal(BackupMessage.BodyOneofCase.Refused, answer.BodyCase);
                Assert.Contains("ticket", answer.Refused.Reason);
            }
            // garbage instead of an opening: the connection is closed
            using (var s = new System.Net.Sockets.TcpClient())
            {
                s.Connect(System.Net.IPAddress.Loopback, dataPort);
                s.ReceiveTimeout = 30_000;
                var st = s.GetStream();
                st.Write(new byte[DataLink.OpeningBytes]);
                Assert.Equal(0, st.Read(new byte[16]));
            }
            using var p = Replicas.Primary("--backup", url, "--token-file", tok, "--", GuestEnv.Guest("counter", "musl"), "5", "1000");
            Assert.Equal(0, p.WaitForExit(Long));
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.NotNull(b.Event(ReplicaEvent.ReplayMatched));
        }
        finally { File.Delete(tok); }
    }

    [Fact]
    public void APairOnOneMachineWithTheSameRootIsRefusedAndNoFileIsWrittenTwice()
    {
        string tok = Token(), root = TempPath();
        Directory.CreateDirectory(root);
        File.Copy(GuestEnv.Guest("filelog", "musl"), Path.Combine(root, "prog"));
        try
        {
            // the backup's root defaults to the primary's recorded one: the same directory
            var (b, url) = RawBackup("--token-file", tok);
            using var _ = b;
            using var r = Replicas.Primary("--backup", url, "--token-file", tok, "--root", root, "--", "/prog", "/data.log", "5", "1000");
            Assert.Equal(2, r.WaitForExit(TimeSpan.FromMinutes(2)));
            Assert.Contains("shared root", r.Event(ReplicaEvent.Refused)?.Str("reason") ?? $"no refused event:\n{r.Stderr}");
            Assert.False(File.Exists(Path.Combine(root, "data.log")), "the refused guest ran anyway");
            Assert.False(b.HasExited);
        }
        finally { File.Delete(tok); Directory.Delete(root, true); }
    }

    [Fact]
    public void ABackupFollowingAPrimaryWhoseProgramIsAMalformedElfRefusesWithAReason()
    {
        string tok = Token(), rootA = TempPath(), rootB = TempPath();
        var elf = File.ReadAllBytes(GuestEnv.Guest("counter", "musl"));
        // program headers said to lie past the end of the file
        BitConverter.GetBytes((ulong)elf.Length - 8).CopyTo(elf, 32);
        foreach (var root in new[] { rootA, rootB })
        {
            Directory.CreateDirectory(root);
            File.WriteAllBytes(Path.Combine(root, "prog"), elf);
        }
        try
        {
            var (b, url) = RawBackup("--token-file", tok, "--root", rootB);
            using var _ = b;
            var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["protect", "--backup", url, "--token-file", tok, "--root", rootA, "--", "/prog"]);
            Assert.NotEqual(134, r.ExitCode);
            if (!b.HasExited) b.KillHard();
            else Assert.NotEqual(134, b.WaitForExit(Long));
        }
        finally { File.Delete(tok); Directory.Delete(rootA, true); Directory.Delete(rootB, true); }
    }
    /// <summary>
    /// A primary whose handshake attempt timed out on its side (a loaded machine) ends that stream right after the
    /// backup's welcome and retries on a new one. The backup must be free for the retry: before, it had started
    /// following the first stream, took the guest over from record 0 when that stream ended, and refused the retry
    /// ("already follows a primary"), so two machines ran the guest.
    /// </summary>
    [Fact]
    public async Task AHandshakeThatEndsBeforeThePrimarysFirstMessageLeavesTheBackupFreeForTheRetry()
    {
        string tok = Token();
        var (b, url) = RawBackup("--token-file", tok, "--shared-storage");
        using var _ = b;
        try
        {
            string counter = GuestEnv.Guest("counter", "musl");
            var opts = new ReVirt.Linux.MachineOptions { Root = "/", Program = counter, Args = ["3", "1000"], Cwd = "/" };
            var header = ReVirt.Replay.Recording.Header(opts, ReVirt.Linux.Kernel.ResolveProgram(opts).Image, 20_000_000);
            var hello = HelloWith(header);
            hello.PrimaryId = "primary:first-attempt";
            // the first attempt: authenticated and welcomed, then the stream ends before any batch or heartbeat
            Assert.Equal("Welcome", await Handshake(url, hello, ReplicationProtocol.ReadSecret(tok)));
            var abandoned = b.WaitForEvent(ReplicaEvent.HandshakeAbandoned, Long);
            Assert.NotNull(abandoned.Str("reason"));
            Assert.Null(b.Event(ReplicaEvent.Following));
            Assert.Null(b.Event(ReplicaEvent.TookOver));
            // the retry: a real primary, accepted and replayed to the end
            var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["protect", "--backup", url, "--token-file", tok, "--", counter, "3", "1000"]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal(0, b.WaitForExit(Long));
            Assert.NotNull(b.Event(ReplicaEvent.ReplayMatched));
            Assert.Null(b.Event(ReplicaEvent.TookOver));
        }
        finally { File.Delete(tok); }
    }
}
