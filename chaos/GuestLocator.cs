using System.Diagnostics;

namespace ReVirt.Chaos;

/// <summary>
/// Finds the repository (the folder holding ReVirt.sln) and builds the one bundled guest a drill runs, with the C
/// compiler this machine has: musl-gcc when asked for musl and present, else gcc -static (glibc). A fresh machine
/// with the .NET SDK and gcc needs nothing more; what is missing is said plainly.
/// </summary>
public static class GuestLocator
{
    static readonly Lazy<string> _repo = new(() =>
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
        {
            var d = new DirectoryInfo(start);
            while (d != null && !File.Exists(Path.Combine(d.FullName, "ReVirt.sln"))) d = d.Parent;
            if (d != null) return d.FullName;
        }
        throw new InvalidOperationException("the ReVirt repository (ReVirt.sln) was not found above chaos.dll or the current directory; pass --guest PATH");
    });

    /// <summary>The compiler guests/build.sh uses for a variant.</summary>
    static string CompilerFor(string libc) => libc == "musl" ? "musl-gcc" : "gcc";

    /// <summary>True if <paramref name="program"/> is an executable file in a PATH directory.</summary>
    public static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(d => File.Exists(Path.Combine(d, program)));

    /// <summary>
    /// The built guest, e.g. Guest("kvserver", "musl", note): built (if older than its source) into
    /// <paramref name="outDir"/> (default guests/out). When musl-gcc is missing the glibc build is used instead and
    /// <paramref name="note"/> says so.
    /// </summary>
    public static string Guest(string name, string libc, Action<string> note, string? outDir = null)
    {
        string repo = _repo.Value;
        outDir ??= Path.Combine(repo, "guests", "out");
        if (!File.Exists(Path.Combine(repo, "guests", "src", name + ".c")))
            throw new InvalidOperationException($"there is no bundled guest '{name}' (guests/src/{name}.c)");
        if (!OnPath(CompilerFor(libc)))
        {
            string other = libc == "musl" ? "glibc" : "musl";
            if (!OnPath(CompilerFor(other)))
                throw new InvalidOperationException($"building the {name} guest needs a C compiler: neither gcc nor musl-gcc is installed (Debian: apt-get install gcc); or pass --guest PATH to a static x86-64 build of guests/src/{name}.c");
            note($"{CompilerFor(libc)} is not installed (Debian: apt-get install musl-tools); building the {name} guest with {CompilerFor(other)} -static ({other}) instead");
            libc = other;
        }
        RunOutcome r;
        try { r = Child.Run("bash", [Path.Combine(repo, "guests", "build.sh"), outDir, $"{name}.{libc}"], TimeSpan.FromMinutes(5)); }
        catch (TimeoutException e) { throw new InvalidOperationException("guests/build.sh took too long: " + e.Message); }
        if (r.ExitCode != 0) throw new InvalidOperationException($"building guests/src/{name}.c with {CompilerFor(libc)} failed: {r.Stderr.Trim()}");
        return Path.Combine(outDir, $"{name}.{libc}");
    }
}
