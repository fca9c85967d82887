using System.Text.Json;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Chaos;

/// <summary>
/// The README's `dotnet run --project chaos -- drill` starts primary.dll and backup.dll from chaos's own build output,
/// not from the tests' (where every project's assemblies land together). Each replica resolves its assemblies from its
/// own deps.json, and chaos runs on the ASP.NET Core framework while primary runs on the base framework alone, so a
/// package chaos gets from its framework is not copied beside it by the build, yet primary needs it as a file. The
/// oracle is the runtime's own list: every runtime assembly a replica's deps.json names must be a file in that folder.
/// </summary>
public class ChaosOutputTests
{
    /// <summary>chaos's build output for the configuration these tests were built in (bin/CONFIG/TFM).</summary>
    static string ChaosOutput()
    {
        var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string configuration = tfm.Parent!.Name;
        return Path.Combine(GuestEnv.RepoRoot, "chaos", "bin", configuration, tfm.Name);
    }

    /// <summary>The file names of the runtime assemblies <paramref name="depsJson"/> lists for its target.</summary>
    public static IReadOnlyList<string> RuntimeAssemblies(string depsJson)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(depsJson));
        var names = new List<string>();
        string target = doc.RootElement.GetProperty("runtimeTarget").GetProperty("name").GetString()!;
        foreach (var library in doc.RootElement.GetProperty("targets").GetProperty(target).EnumerateObject())
            if (library.Value.TryGetProperty("runtime", out var runtime))
                foreach (var asset in runtime.EnumerateObject())
                    names.Add(Path.GetFileName(asset.Name));
        return names;
    }

    [Theory]
    [InlineData("primary")]
    [InlineData("backup")]
    public void EveryAssemblyAReplicaNeedsIsBesideChaos(string replica)
    {
        string dir = ChaosOutput();
        string deps = Path.Combine(dir, replica + ".deps.json");
        Assert.True(File.Exists(deps), $"{deps} is missing: chaos's build did not put {replica} beside chaos.dll");
        var needed = RuntimeAssemblies(deps);
        Assert.Contains(replica + ".dll", needed);
        Assert.True(needed.Count > 3, $"{deps} names only {needed.Count} runtime assemblies: not a replica's list");
        var missing = needed.Where(n => !File.Exists(Path.Combine(dir, n))).ToList();
        Assert.True(missing.Count == 0, $"{replica} started from {dir} would not find: {string.Join(", ", missing)}");
    }
}
