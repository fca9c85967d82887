using System.Runtime.InteropServices;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// A large program image is read into native memory (<see cref="NativeImage"/>, via
/// <see cref="ProgramFile.ReadImage"/>) instead of a managed array. The guest must not see the difference: the
/// oracle is the host's own read of the file (File.ReadAllBytes) for the bytes, and the array path a caller-resolved
/// program still takes (<see cref="Machine.Load"/> given the file's bytes) for the error a bad file gets.
/// </summary>
public class NativeImageTests
{
    static string TempRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), "revirt-native-image-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(root);
        return root;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(ProgramFile.NativeFrom - 1)]
    [InlineData(ProgramFile.NativeFrom)]
    [InlineData(ProgramFile.NativeFrom + 4097)]   // odd: ends inside a page
    [InlineData(2 << 20)]                         // exactly one huge page
    [InlineData((2 << 20) + 65536 + 17)]          // into a second huge page
    public void AnImageHoldsTheFilesBytesExactly(int size)
    {
        string root = TempRoot();
        try
        {
            var bytes = new byte[size];
            new Random(size).NextBytes(bytes);
            File.WriteAllBytes(Path.Combine(root, "f"), bytes);
            using var fs = new GuestFs(root);
            var image = ProgramFile.ReadImage(fs, "/f", "/f");
            Assert.Equal(File.ReadAllBytes(Path.Combine(root, "f")), image.ToArray());
            bool native = MemoryMarshal.TryGetMemoryManager<byte, NativeImage>(image, out var owner);
            Assert.Equal(size >= ProgramFile.NativeFrom, native);
            // the image is found from its bytes as the library finds it (the image cache's and the kernel's lookup),
            // and no part of it is taken for the whole
            Assert.Same(owner, NativeImage.Of(image));
            if (native) Assert.Null(NativeImage.Of(image[1..]));
            if (native) Assert.Null(NativeImage.Of(image[..^1]));
            ((IDisposable?)owner)?.Dispose();
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void TheLoadedGuestsSegmentsAreTheFilesBytes()
    {
        const string program = "/bin/busybox";
        var file = File.ReadAllBytes(program);
        Assert.True(file.Length >= ProgramFile.NativeFrom, "the test needs a program the native path reads");
        var img = ElfImage.Parse(file, program);
        using var m = new Machine(new MachineOptions { Program = program, Diagnostics = TextWriter.Null }, new LiveBoundary());
        m.Load(); // the machine reads the program itself: the native path
        ulong bias = m.Kernel.Init.Program.LoadBias;
        int segments = 0;
        foreach (var s in img.Segments)
        {
            if (s.Type != ElfImage.PtLoad) continue;
            segments++;
            Assert.Equal(file.AsSpan((int)s.Offset, (int)s.FileSize).ToArray(), m.Kernel.Init.Mem.ReadBytes(s.Vaddr + bias, (int)s.FileSize));
        }
        Assert.True(segments > 0);
    }

    /// <summary>A program cut short (odd-sized, large enough for the native path) and an empty one fail to load with
    /// the error the same bytes given as an array get.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(ProgramFile.NativeFrom + 1001)]
    public void ACutOrEmptyProgramGetsTheSameErrorAsFromAnArray(int keep)
    {
        string root = TempRoot();
        try
        {
            File.WriteAllBytes(Path.Combine(root, "p"), File.ReadAllBytes("/bin/busybox").AsSpan(0, keep).ToArray());
            var opts = new MachineOptions { Root = root, Program = "/p", Diagnostics = TextWriter.Null };
            string fromArray, fromNative;
            using (var m = new Machine(opts, new LiveBoundary()))
                fromArray = Assert.Throws<ElfLoadException>(() => m.Load(new StartProgram("/p", File.ReadAllBytes(Path.Combine(root, "p"))))).Message;
            using (var m = new Machine(opts, new LiveBoundary()))
                fromNative = Assert.Throws<ElfLoadException>(() => m.Load()).Message;
            Assert.Contains("/p", fromArray);
            Assert.Equal(fromArray, fromNative);
        }
        finally { Directory.Delete(root, true); }
    }

    /// <summary>
    /// The start path finds the native image from its bytes with ReVirt's own precompiled code: a `primary run` of
    /// busybox JIT-compiles no memory-manager lookup (MemoryMarshal.TryGetMemoryManager and MemoryManager's
    /// TryGetArray are generic code no ReadyToRun image holds: 3 Tier-0 compilations at every start when used). The
    /// oracle is the runtime's own list of the methods it JIT-compiled.
    /// </summary>
    [Fact]
    public void ARunFindsItsStartImageWithoutJitCompilingAMemoryManagerLookup()
        => Assert.DoesNotContain(JitCompiledByARunOfBusyboxTrue(), l => l.Contains("TryGetMemoryManager", StringComparison.Ordinal) || l.Contains("MemoryManager`1", StringComparison.Ordinal));

    /// <summary>The runtime's list of the methods a `primary run busybox true` JIT-compiled (DOTNET_JitStdOutFile); it
    /// names at least Iced's table loader's List instantiations in every run (so an empty list cannot pass for a
    /// clean one).</summary>
    static List<string> JitCompiledByARunOfBusyboxTrue() => JitCompiledBy("run", "--", "/bin/busybox", "true");

    /// <summary>The runtime's list of the methods `primary ARGS` JIT-compiled (DOTNET_JitStdOutFile), one line each;
    /// the command must succeed and run a guest (the list names Iced's table loader's List instantiations).</summary>
    internal static List<string> JitCompiledBy(params string[] primaryArgs)
    {
        string list = Path.Combine(Path.GetTempPath(), "revirt-start-jit-" + Guid.NewGuid().ToString("N") + ".txt");
        try
        {
            var env = new Dictionary<string, string> { ["DOTNET_JitDisasmSummary"] = "1", ["DOTNET_JitStdOutFile"] = list };
            var r = GuestEnv.Dotnet(GuestEnv.PrimaryDll, primaryArgs, env: env);
            Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}: {r.Stderr}");
            var compiled = File.ReadAllLines(list).Where(l => l.Contains("JIT compiled", StringComparison.Ordinal)).ToList();
            Assert.Contains(compiled, l => l.Contains("Iced.Intel", StringComparison.Ordinal));
            return compiled;
        }
        finally { File.Delete(list); }
    }
    /// <summary>
    /// A `primary run` of busybox true JIT-compiles nothing but what no ReadyToRun image can hold: Iced's table
    /// loader's List&lt;HandlerInfo&gt; instantiations, the runtime's thread-statics helper and compiled guest regions
    /// (dynamic methods). Anything else is ReVirt code or a generic instantiation over another assembly's type that
    /// costs a Tier-0 compilation at every start (a Span&lt;Iced Instruction&gt; walk in the block decoder's compile
    /// point added three). Oracle: the runtime's own list of what it compiled.
    /// </summary>
    [Fact]
    public void ARunOfBusyboxTrueJitCompilesOnlyWhatNoReadyToRunImageHolds()
    {
        string[] unavoidable = ["List`1[Iced.Intel.DecoderInternal.HandlerInfo]", "System.Threading.Thread:GetThreadStaticsBase", "(dynamicClass)"];
        var others = JitCompiledByARunOfBusyboxTrue().Where(l => !unavoidable.Any(u => l.Contains(u, StringComparison.Ordinal)) && !HotHelperTierUp(l)).ToList();
        Assert.True(others.Count == 0, "JIT-compiled at start:\n" + string.Join("\n", others));
    }

    /// <summary>A Tier-1 re-compilation of one of the runtime's cast helpers (CastHelpers.StelemRef and kin, precompiled
    /// code): their call counts start once the runtime's tiering delay has passed without new methods, which a run
    /// slowed down by a loaded machine can reach while Iced's tables (thousands of array stores) are still being
    /// built. A re-compilation of precompiled code, not code an image lacks.</summary>
    static bool HotHelperTierUp(string line)
        => line.Contains("System.Runtime.CompilerServices.CastHelpers:", StringComparison.Ordinal) && line.Contains("[Tier1", StringComparison.Ordinal);
}
