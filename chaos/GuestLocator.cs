using System.Diagnostics;

namespace ReVirt.Chaos;

/// <summary>Finds the repository (the folder holding ReVirt.sln) and builds the bundled guests into guests/out.</summary>
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

    static readonly Lazy<string> _out = new(() =>
    {
        string outDir = Path.Combine(_repo.Value, "guests", "out");
        var psi = new ProcessStartInfo("bash") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(_repo.Value, "guests", "build.sh"));
        psi.ArgumentList.Add(outDir);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(true); throw new InvalidOperationException("guests/build.sh took too long"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"guests/build.sh failed (it needs gcc and musl-gcc): {err.Result}");
        return outDir;
    });

    /// <summary>The built guest, e.g. Guest("counter", "musl").</summary>
    public static string Guest(string name, string libc) => Path.Combine(_out.Value, $"{name}.{libc}");
}
