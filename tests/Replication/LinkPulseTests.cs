using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using ReVirt.Protocol;
using ReVirt.Replication;
using Xunit;

namespace ReVirt.Tests.Replication;

/// <summary>
/// The primary's liveness pulse (<see cref="LinkPulse"/>): a native thread the runtime does not suspend writes a stamped
/// <c>Pulse</c> message on a socket at its interval, sharing the stream with the link's own messages without ever
/// splitting one. The oracles are the kernel's: CLOCK_MONOTONIC (the pulses' own stamps, and the clock around each
/// forced collection), the runtime's own account of its pauses, and the bytes the socket delivers, parsed by the
/// generated protobuf parser.
/// </summary>
public class LinkPulseTests
{
    const int IntervalMs = 2;

    /// <summary>A connected pair of Unix stream sockets (the data link's same-host transport).</summary>
    static (Socket Writer, Socket Reader) Pair()
    {
        var name = DataLink.AbstractEndPoint($"revirt-pulse-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(name);
        listener.Listen(1);
        var writer = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        writer.Connect(name);
        var reader = listener.Accept();
        return (writer, reader);
    }

    /// <summary>Reads the socket to its end on a thread of its own, parsing every message: pulses (their stamps) and
    /// the others (their sizes and whether their bytes are intact).</summary>
    sealed class Drain
    {
        public readonly List<ulong> Stamps = [];
        public readonly List<int> Others = [];
        public string? Damage;
        readonly Thread _t;

        public Drain(Socket s, Func<byte[], int, int, bool>? intact = null)
        {
            _t = new Thread(() =>
            {
                var buf = new byte[1 << 20];
                int have = 0;
                try
                {
                    while (true)
                    {
                        int n = s.Receive(buf, have, buf.Length - have, SocketFlags.None);
                        if (n == 0) return;
                        have += n;
                        int at = 0;
                        while (have - at >= 4)
                        {
                            int size = BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(at));
                            if (size < 0 || size > buf.Length - 4) { Damage = $"a length of {size} at a message boundary"; Discard(s, buf); return; }
                            if (have - at < 4 + size) break;
                            if (intact != null && size != 11)
                            {
                                if (!intact(buf, at + 4, size)) { Damage = $"a message of {size} bytes with foreign bytes inside"; Discard(s, buf); return; }
                                lock (Others) Others.Add(size);
                            }
                            else
                            {
                                var m = PrimaryMessage.Parser.ParseFrom(buf, at + 4, size);
                                if (m.BodyCase != PrimaryMessage.BodyOneofCase.Pulse) { Damage = $"a {m.BodyCase} of {size} bytes"; Discard(s, buf); return; }
                                lock (Stamps) Stamps.Add(m.Pulse.SentMonotonicNs);
                            }
                            at += 4 + size;
                        }
                        Buffer.BlockCopy(buf, at, buf, 0, have - at);
                        have -= at;
                    }
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException or Google.Protobuf.InvalidProtocolBufferException)
                {
                    Damage ??= e is Google.Protobuf.InvalidProtocolBufferException ? $"unparsable: {e.Message}" : null;
                }
            }) { IsBackground = true, Name = "pulse-test-drain" };
            _t.Start();
        }

        /// <summary>After damage, the rest is read and dropped to the end, so that a writer is never left blocked.</summary>
        static void Discard(Socket s, byte[] buf)
        {
            while (s.Receive(buf) > 0) { }
        }

        public bool Join() => _t.Join(TimeSpan.FromSeconds(30));

        public ulong[] StampsNow() { lock (Stamps) return [.. Stamps]; }
    }

    static ulong Now() => LinkWire.MonotonicNs();

    /// <summary>
    /// Blocking full collections of a large object graph suspend every managed thread for tens of milliseconds each;
    /// pulses keep being written through those pauses, about one per interval (at least half of them are asked for).
    /// A pulse written by managed code (the heartbeat thread's way) is stopped by each pause: at most one or two would
    /// carry a stamp inside it.
    /// </summary>
    [Fact]
    public void PulsesGoOnWhileACollectionSuspendsTheRuntime()
    {
        Assert.True(Stopwatch.Frequency == 1_000_000_000, "the test reads CLOCK_MONOTONIC through the stopwatch");
        var (w, r) = Pair();
        using var _w = w;
        using var _r = r;
        var drain = new Drain(r);
        // (each 15-byte pulse costs the socket a buffer of its own: about 280 fill a Unix socket's default send budget,
        // and the reader, a managed thread, is suspended by every collection too; so pulses of 10 ms, and the reader
        // catches up after each collection before the next)
        const int GcIntervalMs = 10;
        var pulse = LinkPulse.Start((int)w.Handle, GcIntervalMs, keepAliveMs: 600_000, out var why);
        Assert.True(pulse != null, why);
        // a graph large enough that marking and compacting it takes tens of milliseconds even on a quiet machine
        var graph = new object[48][];
        for (int i = 0; i < graph.Length; i++)
        {
            graph[i] = new object[40_000];
            for (int j = 0; j < graph[i].Length; j++) graph[i][j] = new int[1 + (j & 3)];
        }
        double pausedMs = 0;
        var windows = new List<(ulong From, ulong To, double PauseMs)>();
        var deadline = Stopwatch.StartNew();
        // until the collections have paused the runtime for 300 ms (at least 3 collections, at most 60 s)
        while ((pausedMs < 300 || windows.Count < 3) && deadline.Elapsed < TimeSpan.FromSeconds(60))
        {
            var before = GC.GetTotalPauseDuration();
            ulong t0 = Now();
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            ulong t1 = Now();
            double p = (GC.GetTotalPauseDuration() - before).TotalMilliseconds;
            windows.Add((t0, t1, p));
            pausedMs += p;
            for (var wait = Stopwatch.StartNew(); wait.Elapsed < TimeSpan.FromSeconds(20) && !drain.StampsNow().Any(x => x > t1);) Thread.Sleep(5);
        }
        GC.KeepAlive(graph);
        // every window's pulses arrive within a few intervals (the drain is a managed thread too: give it time)
        ulong last = windows[^1].To;
        for (var wait = Stopwatch.StartNew(); wait.Elapsed < TimeSpan.FromSeconds(20) && !drain.StampsNow().Any(s => s > last);) Thread.Sleep(5);
        pulse!.Stop();
        w.Shutdown(SocketShutdown.Both);
        Assert.True(drain.Join(), "the reader did not finish");
        Assert.Null(drain.Damage);
        var stamps = drain.StampsNow();
        int inside = windows.Sum(x => stamps.Count(s => s > x.From && s < x.To));
        double expected = pausedMs / GcIntervalMs;
        string detail = $"{windows.Count} collections paused the runtime {pausedMs:F0} ms in all (windows {string.Join(", ", windows.Select(x => $"{(x.To - x.From) / 1e6:F0} ms/{x.PauseMs:F0} ms paused"))}); {inside} pulses stamped inside them, {stamps.Length} in all; pulse thread {(pulse.Realtime ? "real-time" : "not real-time")}, latest wake {pulse.MaxLateMs:F1} ms after due";
        Assert.True(inside >= expected / 2, detail);
        pulse.Release();
    }

    /// <summary>
    /// Messages far larger than the socket's buffer, written through <see cref="LinkPulse.Write"/> while pulses come
    /// every interval: the stream holds every message whole, with the pulses only between them (a write that did not
    /// take the pulse's lock would let a pulse into the middle of a large message, which the kernel splits).
    /// </summary>
    [Fact]
    public void PulsesNeverSplitAMessageOfTheLink()
    {
        var (w, r) = Pair();
        using var _w = w;
        using var _r = r;
        w.SendBufferSize = 16 * 1024;
        w.SendTimeout = 20_000; // a write that cannot go on fails instead of waiting for ever
        const int MessageBytes = 200_000, Messages = 60;
        // a message's body: its index, then bytes that follow from it, so any foreign byte inside is seen
        static byte Fill(int index, int k) => (byte)(index * 31 + k * 7 + 1);
        var drain = new Drain(r, (buf, at, size) =>
        {
            if (size != MessageBytes) return false;
            int index = BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(at));
            for (int k = 4; k < size; k++) if (buf[at + k] != Fill(index, k)) return false;
            return true;
        });
        var pulse = LinkPulse.Start((int)w.Handle, 1, keepAliveMs: 600_000, out var why);
        Assert.True(pulse != null, why);
        var message = new byte[4 + MessageBytes];
        for (int i = 0; i < Messages; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(message, MessageBytes);
            BinaryPrimitives.WriteInt32LittleEndian(message.AsSpan(4), i);
            for (int k = 4; k < MessageBytes; k++) message[4 + k] = Fill(i, k);
            Assert.Equal(message.Length, pulse!.Write(message));
        }
        pulse!.Stop();
        for (var wait = Stopwatch.StartNew(); wait.Elapsed < TimeSpan.FromSeconds(20) && !pulse.Ended;) Thread.Sleep(1);
        Assert.True(pulse.Ended, "the pulse thread did not end when told");
        long pulses = pulse.Pulses;
        w.Shutdown(SocketShutdown.Both);
        Assert.True(drain.Join(), "the reader did not finish");
        Assert.Null(drain.Damage);
        Assert.Equal(Messages, drain.Others.Count);
        Assert.True(pulses > 0 && drain.StampsNow().Length == pulses, $"{pulses} pulses written, {drain.StampsNow().Length} read");
        pulse.Release();
    }

    /// <summary>
    /// A runtime that stops making progress (nothing refreshes the keep-alive) stops the pulse once its grace has
    /// passed: the backup's silence bound then applies as to a frozen process. Checked on the pulses' own stamps.
    /// </summary>
    [Fact]
    public void PulsesStopOnceTheKeepAliveHasPassed()
    {
        var (w, r) = Pair();
        using var _w = w;
        using var _r = r;
        var drain = new Drain(r);
        const int KeepAliveMs = 100;
        var pulse = LinkPulse.Start((int)w.Handle, IntervalMs, KeepAliveMs, out var why);
        Assert.True(pulse != null, why);
        ulong started = Now(); // the keep-alive was set inside Start: its deadline is before this + the grace
        ulong until = started + KeepAliveMs * 1_000_000UL;
        // well past the grace, by the pulses' clock
        for (var wait = Stopwatch.StartNew(); wait.Elapsed < TimeSpan.FromSeconds(20) && Now() < until + 300_000_000UL;) Thread.Sleep(10);
        var stamps = drain.StampsNow();
        string detail = $"{stamps.Length} pulses read, {pulse!.Pulses} written, stamped {string.Join(' ', stamps.Select(s => $"{((long)s - (long)started) / 1e6:F1}"))} ms after the start; thread {pulse.Tid}, latest wake {pulse.MaxLateMs:F1} ms late";
        Assert.True(Array.FindIndex(stamps, s => s > until + 1_000_000UL * (ulong)IntervalMs * 2 + 50_000_000UL) < 0, detail);
        long before = pulse.Pulses;
        Assert.True(before > 0, "no pulse at all within the grace: " + detail);
        // refreshed: the pulses come again
        pulse.KeepAliveUntil(60_000);
        for (var wait = Stopwatch.StartNew(); wait.Elapsed < TimeSpan.FromSeconds(20) && pulse.Pulses <= before;) Thread.Sleep(5);
        Assert.True(pulse.Pulses > before, "the pulses did not resume with a fresh keep-alive");
        pulse.Stop();
        w.Shutdown(SocketShutdown.Both);
        Assert.True(drain.Join(), "the reader did not finish");
        Assert.Null(drain.Damage);
        pulse.Release();
    }
}
