using ReVirt.Abi;
using ReVirt.Cpu;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Memory;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Replay;

/// <summary>
/// A checkpoint's state digest takes each page by a hash the page keeps between checkpoints, rehashed only when the
/// page was written since (<see cref="GuestMemory.HashedPagesInOrder"/>). The oracle is the same digest with every
/// page hashed from its bytes now (<see cref="StateDigest.ComputeFromBytes(Kernel)"/>): after any mix of stores (TLB
/// hits and misses, across pages, by every write path), protection changes, unmaps, remaps and forks, the two must be
/// equal. A write path that does not drop a page's kept hash makes them differ at the next digest.
/// </summary>
public unsafe class CheckpointDigestTests
{
    const ulong Rw = 0x1000_0000, Ro = 0x2000_0000;
    const int RwPages = 48, RoPages = 8;
    const ulong Page = GuestMemory.PageSize;

    static byte[] Kept(GuestMemory m) => StateDigest.Compute([(Array.Empty<CpuState>(), m)], null);
    static byte[] FromBytes(GuestMemory m) => StateDigest.ComputeFromBytes([(Array.Empty<CpuState>(), m)], null);

    /// <summary>Seeded random operations on address spaces (forks add more); after most of them every address space's
    /// kept digest must equal its digest from the bytes. Small regions, so that most stores hit a page that was
    /// hashed at an earlier digest, through a TLB entry filled before or after it. About a second.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void KeptPageHashesGiveTheDigestOfEveryPagesBytes(int seed)
    {
        var rng = new Random(seed);
        var spaces = new List<GuestMemory>();
        try
        {
            var first = new GuestMemory();
            spaces.Add(first);
            first.Map(Rw, RwPages * Page, Prot.Read | Prot.Write);
            first.Map(Ro, RoPages * Page, Prot.Read);
            int checks = 0, changed = 0;
            byte[]? last = null;
            Span<byte> buf = stackalloc byte[3 * (int)Page];
            Span<long> iov = stackalloc long[2 * 4];
            for (int op = 0; op < 4000; op++)
            {
                var m = spaces[rng.Next(spaces.Count)];
                ulong a = Rw + (ulong)rng.NextInt64(RwPages * (long)Page - 16);
                ulong v = (ulong)rng.NextInt64();
                try
                {
                    switch (rng.Next(13))
                    {
                        case 0: case 1: m.Write64(a, v); break; // unaligned ones may cross a page
                        case 2: m.Write8(a, (byte)v); break;
                        case 3: m.Write32(a, (uint)v); break;
                        case 4: m.Write128(a, System.Runtime.Intrinsics.Vector128.Create(~v, v)); break;
                        case 5: // a syscall's copy-out, up to three pages
                        {
                            int n = rng.Next(1, buf.Length);
                            ulong at = Rw + (ulong)rng.NextInt64(RwPages * (long)Page - n);
                            rng.NextBytes(buf[..n]);
                            m.WriteBytes(at, buf[..n]);
                            break;
                        }
                        case 6: // the loader's write into a read-only mapping
                            m.Poke(Ro + (ulong)rng.NextInt64(RoPages * (long)Page - 8), BitConverter.GetBytes(v));
                            break;
                        case 7: // a host call filling guest memory in place (read(2) into the guest's buffer)
                        {
                            int n = rng.Next(1, 2 * (int)Page);
                            ulong at = Rw + (ulong)rng.NextInt64(RwPages * (long)Page - n);
                            int count = m.WritableIovecs(at, n, iov);
                            for (int i = 0; i < count; i++) new Span<byte>((void*)iov[2 * i], (int)iov[2 * i + 1]).Fill((byte)v);
                            break;
                        }
                        case 8: // the compiled tier's store slow path
                            m.StoreSlow(a, v, 8);
                            if (m.Faulted) m.TakeFault();
                            break;
                        case 9: // mprotect a few pages read-only, a store there faults, then writable again
                        {
                            ulong pg = a & ~(Page - 1);
                            int n = rng.Next(1, 4);
                            if (pg + (ulong)n * Page > Rw + RwPages * Page) break;
                            m.Protect(pg, (ulong)n * Page, Prot.Read);
                            Assert.Throws<GuestFaultException>(() => m.Write64(pg, v));
                            if (rng.Next(2) == 0) m.Protect(pg, (ulong)n * Page, Prot.Read | Prot.Write);
                            break;
                        }
                        case 10: // munmap a few pages and map them again: they read zeros
                        {
                            ulong pg = a & ~(Page - 1);
                            int n = rng.Next(1, 4);
                            if (pg + (ulong)n * Page > Rw + RwPages * Page) break;
                            m.Unmap(pg, (ulong)n * Page);
                            m.Map(pg, (ulong)n * Page, Prot.Read | Prot.Write);
                            break;
                        }
                        case 11: // fork: both sides go on being written
                            if (spaces.Count < 4) spaces.Add(m.Fork());
                            break;
                        default: _ = m.Read64(a); break; // fills the read TLB only
                    }
                }
                catch (GuestFaultException) { } // a store into a page made read-only above
                if (rng.Next(3) != 0) continue;
                foreach (var s in spaces)
                {
                    var kept = Kept(s);
                    Assert.True(FromBytes(s).AsSpan().SequenceEqual(kept), $"seed {seed}, operation {op}: the kept page hashes give another digest than the pages' bytes");
                    checks++;
                    if (s == first) { if (last != null && !last.AsSpan().SequenceEqual(kept)) changed++; last = kept; }
                }
            }
            Assert.True(checks > 1000, $"only {checks} digests compared");
            Assert.True(changed > 100, $"the first address space's digest changed only {changed} times"); // the stores reached it
        }
        finally
        {
            foreach (var s in spaces) s.Dispose();
        }
    }

    /// <summary>Guests recorded in this process (memtouch with the compiled tier forced, whose stores take the inline
    /// TLB probe; forkcow and mallocchurn in the default tier: compiling all their blocks takes 10-20 s) with
    /// checkpoints every 200,000
    /// instructions; from another thread the recording is asked every millisecond to compare, at its next stop, the
    /// kept digest with the digest of every page's bytes; then the recording must replay faithfully (every checkpoint
    /// equal). forkcow: forks, copy-on-write, code the guest writes, exec; mallocchurn: mmap/munmap/mremap churn;
    /// memtouch: stores to pseudo-random pages of 8 MiB. About 1-3 s each.</summary>
    [Theory]
    [InlineData(ExecutionTier.Default, "forkcow")]
    [InlineData(ExecutionTier.Default, "mallocchurn", "3000")]
    [InlineData(ExecutionTier.Compiled, "memtouch", "/nonexistent-stop-file", "8", "0", "400")]
    public void AtStopsOfARecordedGuestTheKeptDigestEqualsTheDigestOfTheBytes(ExecutionTier tier, string guest, params string[] args)
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-digest-{Guid.NewGuid():N}.rvlog");
        try
        {
            var opts = new MachineOptions
            {
                Program = GuestEnv.Guest(guest, "musl"), Args = args, Cwd = Environment.CurrentDirectory,
                Tier = tier, Diagnostics = TextWriter.Null,
            };
            var program = Kernel.ResolveProgram(opts);
            var header = Recording.Header(opts, program.Image, 200_000);
            RecordAskingAtStops(log, opts, program, header, k =>
            {
                var fromBytes = StateDigest.ComputeFromBytes(k); // first: it leaves the kept hashes as they are
                var kept = StateDigest.Compute(k);
                return kept.AsSpan().SequenceEqual(fromBytes) ? null : $"at instruction {k.Current?.Cpu.InstructionCount}";
            });
            using var reader = LogReader.Open(log);
            var verdict = ReplayCheck.Run(reader);
            Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, $"{guest}: {verdict.Message}");
        }
        finally { File.Delete(log); }
    }

    /// <summary>Records the program in this process to log; from another thread the recording is asked every
    /// millisecond to run check at its next stop (a mismatch's description, or null); the guest must exit 0, some stop
    /// must have been checked with no mismatch, and the log must hold more than two checkpoints.</summary>
    static void RecordAskingAtStops(string log, MachineOptions opts, StartProgram program, LogHeader header, Func<Kernel, string?> check)
    {
        int compared = 0;
        string? mismatch = null;
        int status;
        using (var writer = LogWriter.Create(log, header))
        {
            var boundary = new RecordingBoundary(writer, header.CheckpointInterval);
            using var m = new Machine(opts, boundary);
            m.Load(program);
            using var done = new ManualResetEventSlim();
            var asker = new Thread(() =>
            {
                while (!done.Wait(1))
                    boundary.RunAtNextStop(k =>
                    {
                        mismatch ??= check(k);
                        compared++;
                    });
            }) { IsBackground = true };
            asker.Start();
            try { status = m.Run(); }
            finally
            {
                done.Set();
                Assert.True(asker.Join(TimeSpan.FromSeconds(30)), "the thread asking for stops did not end");
            }
            writer.Flush();
        }
        Assert.Equal(0, status);
        Assert.Null(mismatch);
        Assert.True(compared > 0, "no stop compared the digests");
        Assert.True(GuestEnv.CountRecords(log, RecordKind.Checkpoint) > 2, "the recording took too few checkpoints");
    }

    /// <summary>The log format v3 digest as d567e52 and earlier builds computed it, written out here as the oracle:
    /// each process's threads, then each page as its number and protection (little-endian 64-bit words) followed by
    /// its bytes, all in one XxHash128 stream, then the network stack's digest.</summary>
    static byte[] Version3Digest(Kernel k)
    {
        var h = new System.IO.Hashing.XxHash128();
        var words = new byte[16];
        foreach (var p in k.Processes)
        {
            var state = new byte[CpuState.CanonicalSize];
            foreach (var t in p.Threads) { t.Cpu.State.WriteCanonical(state); h.Append(state); }
            foreach (var (pn, page) in p.Mem.PagesInOrder())
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(words, pn);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(words.AsSpan(8), (ulong)page.Prot);
                h.Append(words);
                h.Append(new ReadOnlySpan<byte>(page.Data, (int)GuestMemory.PageSize));
            }
        }
        if (k.Nic != null) h.Append(k.Nic.Stack.Digest());
        return h.GetCurrentHash();
    }

    /// <summary>A log of format v3 (checkpoint digests over all pages' bytes as one stream) is still recorded and
    /// replayed by its own digest: at stops of a v3 recording the digest its checkpoints take
    /// (<see cref="StateDigest.ForLogVersion"/>) equals the v3 definition written out above and differs from the v4
    /// one, and the log replays faithfully (every checkpoint equal). Logs recorded by d567e52 replay faithfully with
    /// this build too (checked by hand: forkcow, bench). About 2-4 s.</summary>
    [Fact]
    public void ALogOfFormatVersion3ReplaysFaithfullyByItsOwnDigest()
    {
        string log = Path.Combine(Path.GetTempPath(), $"revirt-digest-v3-{Guid.NewGuid():N}.rvlog");
        try
        {
            var opts = new MachineOptions
            {
                Program = GuestEnv.Guest("forkcow", "musl"), Cwd = Environment.CurrentDirectory,
                Tier = ExecutionTier.Interpreter, Diagnostics = TextWriter.Null,
            };
            var program = Kernel.ResolveProgram(opts);
            var header = Recording.Header(opts, program.Image, 200_000, version: 3);
            var v3 = StateDigest.ForLogVersion(3);
            RecordAskingAtStops(log, opts, program, header, k =>
            {
                var d = v3(k);
                if (!d.AsSpan().SequenceEqual(Version3Digest(k))) return $"at instruction {k.Current?.Cpu.InstructionCount}: not the v3 digest";
                return d.AsSpan().SequenceEqual(StateDigest.Compute(k)) ? "the v3 and v4 digests are the same" : null;
            });
            using var reader = LogReader.Open(log);
            Assert.Equal(3, reader.Header.Version);
            var verdict = ReplayCheck.Run(reader);
            Assert.True(verdict.Kind == ReplayVerdictKind.Faithful, verdict.Message);
        }
        finally { File.Delete(log); }
    }

    /// <summary>The page table's order (<c>GuestMemory.SortAscending</c>, a sort of our own) equals Array.Sort's on
    /// random, sorted, reversed, repeated and tiny inputs.</summary>
    [Fact]
    public void PageNumbersSortAsArraySortSortsThem()
    {
        var rng = new Random(5);
        List<ulong[]> inputs = [[], [7], [2, 1], [1, 1, 1], Enumerable.Range(0, 300).Select(i => (ulong)i).ToArray(),
            Enumerable.Range(0, 300).Select(i => (ulong)(300 - i)).ToArray()];
        for (int n = 3; n < 2000; n = n * 3 + 1)
            inputs.Add(Enumerable.Range(0, n).Select(_ => (ulong)rng.NextInt64() >> rng.Next(0, 60)).ToArray());
        inputs.Add(Enumerable.Range(0, 500).Select(_ => (ulong)rng.Next(0, 8)).ToArray());
        foreach (var input in inputs)
        {
            var expected = (ulong[])input.Clone();
            Array.Sort(expected);
            var actual = (ulong[])input.Clone();
            GuestMemory.SortAscending(actual);
            Assert.Equal(expected, actual);
        }
    }
}
