using ReVirt.Cpu;
using ReVirt.Memory;
using ReVirt.Replay;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.ProcessTree;

/// <summary>
/// Guest pages live in frames carved from shared 2 MiB host chunks and reused as soon as they are freed
/// (<c>PagePool</c>): whatever a frame held before, a guest sees only what its own address space wrote. The oracle is
/// the guest's own contract (a fresh mapping reads zeros, a fork's child does not change its parent, a restored
/// capture has the digest of the memory it was taken from), checked on frames known to hold other bytes.
/// </summary>
public class GuestPageFrameTests
{
    const ulong At = 0x7000_0000;
    const int Pages = 1024; // 4 MiB: two chunks' worth, so reuse crosses chunks
    const ulong Pattern = 0xA5A5_5A5A_DEAD_BEEF;

    /// <summary>Fills every 8 bytes of the mapping's pages with a value derived from the pattern and the address.</summary>
    static void Scribble(GuestMemory m, ulong start, int pages, ulong pattern)
    {
        for (ulong a = start; a < start + (ulong)pages * GuestMemory.PageSize; a += 8) m.Write64(a, pattern ^ a);
    }

    static int NonZeroPages(GuestMemory m, ulong start, int pages)
    {
        int dirty = 0;
        for (int i = 0; i < pages; i++)
        {
            ulong page = start + (ulong)i * GuestMemory.PageSize;
            for (ulong a = page; a < page + GuestMemory.PageSize; a += 8)
                if (m.Read64(a) != 0) { dirty++; break; }
        }
        return dirty;
    }

    /// <summary>Fails when a reused frame is handed out uncleared (RentZeroed without its Clear for returned frames).</summary>
    [Fact]
    public void AMappingMadeAfterAnUnmapReadsZerosInTheSameAndAnotherAddressSpace()
    {
        using var m = new GuestMemory();
        m.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
        Scribble(m, At, Pages, Pattern);
        m.Unmap(At, Pages * GuestMemory.PageSize);
        m.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
        Assert.Equal(0, NonZeroPages(m, At, Pages));

        // the frames freed by one address space go to the next one that touches pages
        Scribble(m, At, Pages, Pattern);
        m.Unmap(At, Pages * GuestMemory.PageSize);
        using var other = new GuestMemory();
        other.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
        Assert.Equal(0, NonZeroPages(other, At, Pages));
    }

    /// <summary>Fails when a store to a shared page writes the shared frame instead of a copy (Unshare without its
    /// copy).</summary>
    [Fact]
    public void AForkedChildsStoresLeaveTheParentsPagesAndTheParentsLeaveTheChilds()
    {
        using var parent = new GuestMemory();
        parent.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
        Scribble(parent, At, Pages, Pattern);
        using var child = parent.Fork();
        Scribble(child, At, Pages / 2, ~Pattern); // the first half: the child's own copies
        Scribble(parent, At + Pages / 2 * GuestMemory.PageSize, Pages / 2, Pattern << 1); // the second: the parent's
        for (int i = 0; i < Pages; i++)
        {
            ulong a = At + (ulong)i * GuestMemory.PageSize + 8 * (ulong)(i % 512);
            bool low = i < Pages / 2;
            Assert.Equal(low ? Pattern ^ a : (Pattern << 1) ^ a, parent.Read64(a));
            Assert.Equal(low ? ~Pattern ^ a : Pattern ^ a, child.Read64(a));
        }
    }

    /// <summary>Fails when a capture keeps a page the guest changes without copying its bytes first (Preserve taking a
    /// frame without the copy), or when a restored page does not get all of its bytes.</summary>
    [Fact]
    public void ACaptureRestoredIntoReusedFramesHasTheDigestOfTheMemoryItWasTakenFrom()
    {
        // frames holding other bytes, returned: the capture's copies and the restore take them
        using (var dirt = new GuestMemory())
        {
            dirt.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
            Scribble(dirt, At, Pages, ~Pattern);
        }
        using var m = new GuestMemory();
        m.Map(At, Pages * GuestMemory.PageSize, Prot.Read | Prot.Write);
        m.Map(At + 2 * Pages * GuestMemory.PageSize, 4 * GuestMemory.PageSize, Prot.Read);
        Scribble(m, At, Pages, Pattern);
        m.Read64(At + 2 * Pages * GuestMemory.PageSize); // a read-only zero page
        var before = StateDigest.Compute([(Array.Empty<CpuState>(), m)], null);
        var layout = m.Vmas.ToArray();

        using var capture = m.BeginCapture();
        Scribble(m, At, Pages / 4, Pattern << 3); // stores after the capture: the capture keeps the old bytes
        m.Unmap(At + (Pages - 8) * GuestMemory.PageSize, 8 * GuestMemory.PageSize); // and pages leaving
        Assert.True(capture.Preserved >= Pages / 4);

        using var restored = new GuestMemory();
        restored.RestoreLayout(layout);
        capture.ReadPages(7, (numbers, prots, bytes, _) =>
        {
            for (int i = 0; i < numbers.Length; i++) restored.RestorePage(numbers[i], prots[i], bytes.Slice(i * (int)GuestMemory.PageSize, (int)GuestMemory.PageSize));
        });
        Assert.Equal(Convert.ToHexString(before), Convert.ToHexString(StateDigest.Compute([(Array.Empty<CpuState>(), restored)], null)));
    }

    /// <summary>Fails when chunks whose frames are all free stay mapped (Return without the unmap).</summary>
    [Fact]
    public void ChunksWhoseFramesAreAllFreeGoBackToTheHost()
    {
        long unmappedBefore = PagePool.ChunksUnmapped;
        using (var m = new GuestMemory())
        {
            m.Map(At, 16384 * GuestMemory.PageSize, Prot.Read | Prot.Write); // 64 MiB: 32 chunks
            for (ulong a = At; a < At + 16384 * GuestMemory.PageSize; a += GuestMemory.PageSize) m.Write8(a, 1);
        }
        // all but the spare chunks (8) and any chunk another test's pages still share
        Assert.True(PagePool.ChunksUnmapped - unmappedBefore >= 16, $"{PagePool.ChunksUnmapped - unmappedBefore} chunks unmapped after 64 MiB freed");
    }

    /// <summary>Bad input: a guest that asks for the whole user half of the address space, then 1 TiB at a time until it
    /// is refused, gets ENOMEM (as natively) and goes on with working memory. Fails on 9f25fe8, whose search for a free
    /// range wrapped below address 0 and "mapped" the 128 TiB past the user half.</summary>
    [Fact]
    public void AGuestAskingForMoreThanTheAddressSpaceGetsEnomemAndGoesOn()
    {
        var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, ["run", "--", GuestEnv.Guest("bigmap", "musl")]);
        var lines = System.Text.Encoding.ASCII.GetString(r.Stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {string.Join(" | ", lines)} {r.Stderr}");
        Assert.Equal("whole ENOMEM", lines[0]);
        Assert.Matches("^tib (0|N) ENOMEM$", lines[1]);
        Assert.Equal("after ok", lines[2]);
    }
}
