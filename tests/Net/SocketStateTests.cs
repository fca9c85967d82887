using System.Buffers.Binary;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;
using CpuT = ReVirt.Cpu.VirtualCpu;

namespace ReVirt.Tests.Net;

/// <summary>What the kernel knows about a socket (the information a failover needs to re-create listeners).</summary>
public sealed record SocketState(int Fd, int Family, int Type, int Protocol, string BoundAddress, bool Listening, int Backlog);

/// <summary>Forwards to another boundary and snapshots the guest's sockets when the guest first calls poll.</summary>
sealed class ProbingBoundary : IBoundary
{
    readonly IBoundary _inner;
    Kernel? _k;
    public List<SocketState>? Sockets;
    public readonly ManualResetEventSlim Probed = new();

    public ProbingBoundary(IBoundary inner) => _inner = inner;

    public HostResult Syscall(int tid, int nr, Func<HostResult> perform, bool reexecuteOnReplay = false)
    {
        if (nr == Nr.poll && Sockets == null && _k != null)
        {
            Sockets = _k.Init.Fds.Entries.Where(e => e.File is HostSocket)
                .Select(e => (e.Fd, S: (HostSocket)e.File))
                .Select(e => new SocketState(e.Fd, e.S.Family, e.S.Type, e.S.Protocol,
                    Convert.ToHexString(e.S.BoundAddress ?? Array.Empty<byte>()), e.S.Listening, e.S.Backlog)).ToList();
            Probed.Set();
        }
        return _inner.Syscall(tid, nr, perform, reexecuteOnReplay);
    }

    public ulong Value(int tid, InputKind kind, Func<ulong> perform) => _inner.Value(tid, kind, perform);
    public byte[] Bytes(int tid, InputKind kind, int count, Func<byte[]> perform) => _inner.Bytes(tid, kind, count, perform);
    public bool Replaying => _inner.Replaying;
    public bool KeepsFileContent => _inner.KeepsFileContent;
    public ulong NextStop(Kernel kernel, CpuT cpu) => _inner.NextStop(kernel, cpu);
    public void AtStop(Kernel kernel, CpuT cpu) => _inner.AtStop(kernel, cpu);
    public void OnOutput(Kernel kernel, CpuT cpu, int fd, ReadOnlySpan<byte> bytes) => _inner.OnOutput(kernel, cpu, fd, bytes);
    public void Attach(Kernel kernel) { _k = kernel; _inner.Attach(kernel); }
    public void OnExit(Kernel kernel, CpuT cpu, int status) => _inner.OnExit(kernel, cpu, status);
    // every other member forwarded too: a default interface method here would replace the inner boundary's own
    // (a replay's Idle takes the next record, the default waits for host events)
    public bool Idle(Kernel kernel, CpuT cpu) => _inner.Idle(kernel, cpu);
    public HostResult Output(int tid, int nr, int fd, byte[] data, Func<HostResult> perform) => _inner.Output(tid, nr, fd, data, perform);
    public HostResult Send(int tid, int nr, in SocketSend send) => _inner.Send(tid, nr, send);
    public HostResult SocketEnd(int tid, int nr, object socket, Func<HostResult> perform, bool reexecuteOnReplay) => _inner.SocketEnd(tid, nr, socket, perform, reexecuteOnReplay);
    public HostResult FileContent(int tid, int nr, FileRef file, Func<HostResult> perform) => _inner.FileContent(tid, nr, file, perform);
    public NetReceived NetReceive(int tid, Func<NetReceived> perform) => _inner.NetReceive(tid, perform);
    public int HostDescriptor(long performed, int local = -1) => _inner.HostDescriptor(performed, local);
}

/// <summary>The kernel records each listening socket's family, type, protocol, bound address and backlog, and a
/// replay arrives at the same record without a socket.</summary>
public class SocketStateTests
{
    static int PortOf(SocketState s) => BinaryPrimitives.ReadUInt16BigEndian(Convert.FromHexString(s.BoundAddress).AsSpan(2));

    static void AssertListener(SocketState s)
    {
        Assert.Equal((2, 1, 0, true, 128), (s.Family, s.Type, s.Protocol, s.Listening, s.Backlog)); // AF_INET, SOCK_STREAM
        var a = Convert.FromHexString(s.BoundAddress);
        Assert.Equal(16, a.Length);
        Assert.Equal(new byte[] { 127, 0, 0, 1 }, a[4..8]);
        Assert.NotEqual(0, PortOf(s)); // the port the host picked for port 0, not the guest's 0
    }

    [Fact]
    public void ListeningSocketIsKnownToTheKernelLiveAndInReplay()
    {
        string prog = GuestEnv.Guest("kvserver", "musl");
        var opts = new MachineOptions { Program = prog, Args = new[] { "0" }, Cwd = "/", Diagnostics = TextWriter.Null };
        var probe = new ProbingBoundary(new LiveBoundary());
        using (var m = new Machine(opts, probe))
        {
            m.Load();
            int status = -1;
            var run = new Thread(() => status = m.Run()) { IsBackground = true };
            run.Start();
            Assert.True(probe.Probed.Wait(TimeSpan.FromMinutes(1)), "the guest never polled");
            var s = Assert.Single(probe.Sockets!);
            AssertListener(s);
            using (var c = new LineClient(PortOf(s))) Assert.Equal("BYE", c.Ask("SHUTDOWN"));
            Assert.True(run.Join(TimeSpan.FromMinutes(1)));
            Assert.Equal(0, status);
        }

        // a recording, then a replay in this process: the same socket record, with no host socket behind it
        string log = Path.Combine(Path.GetTempPath(), $"revirt-net-{Guid.NewGuid():N}.rvlog");
        try
        {
            using var p = RunningProgram.Dotnet(GuestEnv.PrimaryDll, "record", "--log", log, "--", prog, "0");
            int port = int.Parse(p.WaitForStderr(new System.Text.RegularExpressions.Regex(@"listening on 127\.0\.0\.1:(\d+)"), TimeSpan.FromMinutes(2)));
            using (var c = new LineClient(port)) Assert.Equal("BYE", c.Ask("SHUTDOWN"));
            Assert.Equal(0, p.WaitForExit(TimeSpan.FromMinutes(2)).ExitCode);

            using var reader = LogReader.Open(log);
            var ropts = Recording.OptionsFrom(reader.Header, null);
            ropts.Diagnostics = TextWriter.Null;
            var rprobe = new ProbingBoundary(new ReplayBoundary(reader, false));
            using var rm = new Machine(ropts, rprobe);
            rm.Load();
            Assert.Equal(0, rm.Run());
            var rs = Assert.Single(rprobe.Sockets!);
            AssertListener(rs);
            Assert.Equal(port, PortOf(rs));
        }
        finally { File.Delete(log); }
    }
}
