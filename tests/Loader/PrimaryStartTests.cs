using System.Text.Json;
using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.Loader;

/// <summary>
/// What a `primary` start takes on besides the runtime itself: the shared frameworks the .NET host resolves, and the
/// assemblies a `run` maps. Each one costs every start (the host reads a framework's dependency list and offers all
/// its assemblies to the runtime; an assembly load maps and binds a file), and `run` needs none of what `protect`
/// uses to replicate.
/// </summary>
public class PrimaryStartTests
{
    /// <summary>
    /// primary's runtime configuration names the base framework only: the ASP.NET Core framework (which a former
    /// generic host for `protect` came from) made the host resolve and list its assemblies at every start, about 4 %
    /// of the CPU of a `run` of busybox true. Oracle: the file the .NET host reads to choose the frameworks.
    /// </summary>
    [Fact]
    public void PrimaryStartsOnTheBaseFrameworkAlone()
    {
        string config = Path.ChangeExtension(GuestEnv.PrimaryDll, ".runtimeconfig.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(config));
        var options = doc.RootElement.GetProperty("runtimeOptions");
        var names = new List<string>();
        if (options.TryGetProperty("framework", out var one)) names.Add(one.GetProperty("name").GetString()!);
        if (options.TryGetProperty("frameworks", out var many))
            foreach (var f in many.EnumerateArray()) names.Add(f.GetProperty("name").GetString()!);
        Assert.Equal(["Microsoft.NETCore.App"], names);
    }

    /// <summary>Assemblies only replication (gRPC, Protobuf, etcd, Polly), the in-VM network stack or a generic host
    /// use: a `run` of a guest on the host's network maps none of them.</summary>
    static readonly string[] NotForRun =
        ["Grpc.", "Google.Protobuf", "Google.Api", "dotnet-etcd", "Polly", "ReVirt.Net", "Microsoft.Extensions.", "Microsoft.AspNetCore."];

    /// <summary>
    /// A `run` maps no assembly of replication, the virtual network or a generic host. Oracle: the kernel's list of
    /// the files mapped into the running primary (/proc/PID/maps), read while its guest sleeps after its first
    /// output (so the start path is behind it); it names Iced and ReVirt.Shared, so a list read too early cannot
    /// pass for a lean one.
    /// </summary>
    [Fact]
    public void ARunMapsNoAssemblyOfReplicationOrTheVirtualNetwork()
    {
        using var p = RunningProgram.Dotnet(GuestEnv.PrimaryDll, "run", "--", "/bin/busybox", "sh", "-c", "echo started >&2; sleep 60");
        p.WaitForStderr(new Regex("^started$", RegexOptions.Multiline), TimeSpan.FromSeconds(60));
        var mapped = File.ReadAllLines($"/proc/{p.Pid}/maps")
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length >= 6 && f[5].EndsWith(".dll", StringComparison.Ordinal))
            .Select(f => Path.GetFileName(f[5]))
            .Distinct().ToList();
        Assert.Contains("Iced.dll", mapped);
        Assert.Contains("ReVirt.Shared.dll", mapped);
        var wrong = mapped.Where(a => NotForRun.Any(n => a.StartsWith(n, StringComparison.Ordinal))).ToList();
        Assert.True(wrong.Count == 0, "a run mapped: " + string.Join(", ", wrong));
    }
}
