using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Security;

/// <summary>
/// The README's first command on a machine with the .NET SDK and gcc but without musl-tools: the drill builds the
/// one guest it runs with gcc -static and passes. musl-gcc is hidden by running the drill with a PATH made of links
/// to every program of /usr/bin except the musl ones.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class NewcomerTests
{
    [Fact]
    public void TheDrillRunsWithoutMuslGcc()
    {
        string bin = Path.Combine(Path.GetTempPath(), $"revirt-nomusl-{Guid.NewGuid():N}");
        string build = bin + "-guests";
        Directory.CreateDirectory(bin);
        try
        {
            foreach (var f in Directory.EnumerateFileSystemEntries("/usr/bin"))
            {
                string name = Path.GetFileName(f);
                if (name.Contains("musl")) continue;
                File.CreateSymbolicLink(Path.Combine(bin, name), f);
            }
            // The one round's fault is a kill, which the link's end reports at once; a 10 s silence bound keeps a loaded
            // machine's scheduling pauses from splitting the pair before the fault (at load 50-90 the default 1 s bound
            // let the primary declare its backup lost and go on alone, and the kill then ended the only replica).
            var r = Child.Run("/usr/bin/dotnet",
                [Path.Combine(AppContext.BaseDirectory, "chaos.dll"), "drill", "--rounds", "1", "--requests", "60", "--timeout-ms", "10000", "--quiet", "--build-dir", build, "--report", Path.Combine(build, "report")],
                TimeSpan.FromMinutes(5), env: [new("PATH", bin)]);
            string o = r.StdoutText, e = r.Stderr;
            Assert.True(r.ExitCode == 0, $"exit {r.ExitCode}\n{o}\n{e}");
            Assert.True(File.Exists(Path.Combine(build, "kvserver.glibc")), "the guest was not built with gcc");
            Assert.False(File.Exists(Path.Combine(build, "kvserver.musl")));
        }
        finally
        {
            Directory.Delete(bin, true);
            if (Directory.Exists(build)) Directory.Delete(build, true);
        }
    }
}
