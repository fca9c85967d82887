using System.Buffers.Binary;
using ReVirt.Abi;
using ReVirt.Memory;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// The loader's contract against hostile files: every header field set to values whose sums overflow, random
/// mutations of real headers, and special files named as the program. The outcome is always a loaded image or an
/// <see cref="ElfLoadException"/>; never another exception, a hang or unbounded memory.
/// </summary>
public class LoaderSafetyTests
{
    const int Ehdr = 64, Phdr = 56;

    /// <summary>A minimal valid ET_EXEC: one PT_LOAD covering the file, one PT_INTERP, code "mov eax,60; syscall".</summary>
    static byte[] MinimalElf()
    {
        var f = new byte[0x200];
        f[0] = 0x7F; f[1] = (byte)'E'; f[2] = (byte)'L'; f[3] = (byte)'F'; f[4] = 2; f[5] = 1; f[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(16), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), 62);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(24), 0x400000 + 0x180);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(32), Ehdr);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(52), Ehdr);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(54), Phdr);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(56), 2);
        WritePhdr(f, 0, 1, 5, 0, 0x400000, (ulong)f.Length, (ulong)f.Length + 0x3000);
        var interp = "/lib64/ld-linux-x86-64.so.2\0"u8;
        interp.CopyTo(f.AsSpan(0x140));
        WritePhdr(f, 1, 3, 4, 0x140, 0x400140, (ulong)interp.Length, (ulong)interp.Length);
        new byte[] { 0xB8, 60, 0, 0, 0, 0x0F, 0x05 }.CopyTo(f, 0x180);
        return f;
    }

    static void WritePhdr(byte[] f, int k, uint type, uint flags, ulong off, ulong vaddr, ulong filesz, ulong memsz)
    {
        int p = Ehdr + k * Phdr;
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(p), type);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(p + 4), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 8), off);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 16), vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 24), vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 32), filesz);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 40), memsz);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(p + 48), 0x1000);
    }

    /// <summary>Loads the bytes into a fresh address space: true when loaded, false when refused as it must be.</summary>
    static bool TryLoad(byte[] f)
    {
        using var mem = new GuestMemory();
        try
        {
            var p = ElfLoader.Load(mem, f, "hostile");
            // whatever loaded lies inside the guest's half of the address space
            foreach (var v in mem.Vmas) Assert.True(v.End <= GuestMemory.AddressLimit && v.Start >= ElfLoader.MinAddress, $"mapping {v}");
            return true;
        }
        catch (ElfLoadException) { return false; }
    }

    [Fact]
    public void TheMinimalElfLoads()
    {
        Assert.True(TryLoad(MinimalElf()));
        using var mem = new GuestMemory();
        var p = ElfLoader.Load(mem, MinimalElf(), "minimal");
        Assert.Equal("/lib64/ld-linux-x86-64.so.2", p.Interpreter);
        Assert.Equal(0x400180UL, p.Entry);
    }

    static readonly ulong[] Hostile =
    {
        0, 1, 55, 56, 57, 0x1000, 0xFFFF, 0x1_0000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
        GuestMemory.AddressLimit - 1, GuestMemory.AddressLimit, long.MaxValue, ulong.MaxValue - 0xFFF, ulong.MaxValue - 55, ulong.MaxValue,
    };

    // (offset, width) of every field of the ELF header and of both program headers
    public static IEnumerable<object[]> Fields()
    {
        yield return new object[] { "e_type", 16, 2 };
        yield return new object[] { "e_entry", 24, 8 };
        yield return new object[] { "e_phoff", 32, 8 };
        yield return new object[] { "e_phentsize", 54, 2 };
        yield return new object[] { "e_phnum", 56, 2 };
        foreach (int k in new[] { 0, 1 })
        {
            int p = Ehdr + k * Phdr;
            yield return new object[] { $"p_type[{k}]", p, 4 };
            yield return new object[] { $"p_flags[{k}]", p + 4, 4 };
            yield return new object[] { $"p_offset[{k}]", p + 8, 8 };
            yield return new object[] { $"p_vaddr[{k}]", p + 16, 8 };
            yield return new object[] { $"p_filesz[{k}]", p + 32, 8 };
            yield return new object[] { $"p_memsz[{k}]", p + 40, 8 };
        }
    }

    [Theory]
    [MemberData(nameof(Fields))]
    public void EveryHostileValueOfAFieldIsLoadedOrRefused(string field, int offset, int width)
    {
        foreach (var v in Hostile)
        {
            var f = MinimalElf();
            for (int i = 0; i < width; i++) f[offset + i] = (byte)(v >> (8 * i));
            try { TryLoad(f); }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"{field} = 0x{v:x}: {e.GetType().Name}: {e.Message}");
            }
        }
    }

    [Theory]
    [InlineData(32, 8, 0xFFFF_FFFF_FFFF_FFF0UL)]             // e_phoff + phnum*56 wraps
    [InlineData(Ehdr + 8, 8, 0xFFFF_FFFF_FFFF_F000UL)]        // p_offset + p_filesz wraps
    [InlineData(Ehdr + 16, 8, 0xFFFF_FFFF_FFFF_F000UL)]       // p_vaddr + p_memsz wraps
    [InlineData(Ehdr + 40, 8, 0xFFFF_FFFF_FFFF_FFFFUL)]       // p_memsz beyond the address space
    [InlineData(Ehdr + 32, 8, 0x10_0000UL)]                   // p_filesz beyond the file
    [InlineData(Ehdr + Phdr + 8, 8, 0xFFFF_FFFF_FFFF_FFF0UL)] // interpreter path offset wraps
    [InlineData(Ehdr + Phdr + 32, 8, 0x7FFF_FFFF_FFFF_FFFFUL)] // interpreter path length
    [InlineData(54, 2, 1UL)]                                   // e_phentsize too small
    [InlineData(56, 2, 0xFFFFUL)]                              // e_phnum beyond 64 KiB of headers
    public void OverflowingSumsAreRefused(int offset, int width, ulong value)
    {
        var f = MinimalElf();
        for (int i = 0; i < width; i++) f[offset + i] = (byte)(value >> (8 * i));
        Assert.False(TryLoad(f));
    }

    [Fact]
    public void RandomMutationsOfRealHeadersNeverThrowAnythingElse()
    {
        var rng = new Random(20261129);
        var bases = new List<byte[]> { MinimalElf() };
        foreach (var real in new[] { "/lib64/ld-linux-x86-64.so.2", "/bin/busybox" })
            if (File.Exists(real)) bases.Add(File.ReadAllBytes(real));
        int loaded = 0, refused = 0;
        for (int i = 0; i < 1500; i++)
        {
            var f = (byte[])bases[i % bases.Count].Clone();
            int n = 1 + rng.Next(6);
            int region = Math.Min(f.Length, 64 + 56 * 16);
            for (int j = 0; j < n; j++)
            {
                int at = rng.Next(region);
                if (rng.Next(3) == 0) f[at] = 0xFF;
                else f[at] = (byte)rng.Next(256);
            }
            if (rng.Next(10) == 0) f = f.AsSpan(0, rng.Next(f.Length)).ToArray(); // truncated
            try { if (TryLoad(f)) loaded++; else refused++; }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"case {i}: {e.GetType().Name}: {e.Message}");
            }
        }
        Assert.True(loaded > 0 && refused > 0, $"{loaded} loaded, {refused} refused");
    }

    [Theory]
    [InlineData("/dev/zero", "character device")]
    [InlineData("/dev/null", "character device")]
    [InlineData("DIR", "directory")]
    [InlineData("FIFO", "FIFO")]
    [InlineData("SCRIPT", "no such file")]
    public void SpecialFilesAsTheProgramAreRefusedAtOnce(string which, string kind)
    {
        string dir = Directory.CreateTempSubdirectory("revirt-special").FullName;
        try
        {
            string prog = which switch
            {
                "DIR" => dir,
                "FIFO" => Path.Combine(dir, "fifo"),
                "SCRIPT" => Path.Combine(dir, "script"),
                _ => which,
            };
            if (which == "FIFO") Assert.Equal(0, GuestEnv.Exec("mkfifo", new[] { prog }, null, TimeSpan.FromSeconds(30)).ExitCode);
            if (which == "SCRIPT") File.WriteAllText(prog, "#!/no/such/interpreter -x\necho hi\n");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var r = GuestEnv.Exec("dotnet", new[] { GuestEnv.PrimaryDll, "run", "--", prog }, null, TimeSpan.FromSeconds(120));
            // a shell's statuses: 127 for a missing (interpreter) file, 126 for a file that cannot be run
            Assert.Equal(which == "SCRIPT" ? 127 : 126, r.ExitCode);
            Assert.Contains(which == "SCRIPT" ? "/no/such/interpreter" : prog, r.Stderr);
            Assert.Contains(kind, r.Stderr);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");
            // recording refuses the same way (the header's program hash must not read a FIFO or /dev/zero)
            var log = Path.Combine(dir, "log");
            var rec = GuestEnv.Exec("dotnet", new[] { GuestEnv.PrimaryDll, "record", "--log", log, "--", prog }, null, TimeSpan.FromSeconds(120));
            Assert.Equal(which == "SCRIPT" ? 127 : 126, rec.ExitCode);
        }
        finally { Directory.Delete(dir, true); }
    }
}
