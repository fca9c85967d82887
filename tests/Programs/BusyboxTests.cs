using System.Text;
using Xunit;

namespace ReVirt.Tests.Programs;

/// <summary>Debian's busybox-static (glibc) running real applets on real files, in the VM and natively.</summary>
public class BusyboxTests : IClassFixture<BusyboxTests.Files>
{
    public const string Busybox = "/bin/busybox";

    /// <summary>Deterministic input files in a temporary directory.</summary>
    public sealed class Files : IDisposable
    {
        public string Dir { get; } = Directory.CreateTempSubdirectory("revirt-bb").FullName;
        public Files()
        {
            var rng = new Random(1234);
            var words = new[] { "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa" };
            var sb = new StringBuilder();
            for (int i = 0; i < 4000; i++)
                sb.Append($"{words[rng.Next(words.Length)]} {rng.Next(100000)} {words[rng.Next(words.Length)]},{rng.Next(-500, 500)}.{rng.Next(100)}\n");
            File.WriteAllText(Path.Combine(Dir, "text.txt"), sb.ToString());
            var bin = new byte[300_000];
            rng.NextBytes(bin);
            for (int i = 0; i < bin.Length; i += 7) bin[i] = (byte)'a'; // compressible
            File.WriteAllBytes(Path.Combine(Dir, "data.bin"), bin);
            File.WriteAllText(Path.Combine(Dir, "calc.dc"), "2 64 ^ 1 - p 355 113 / p 10 k 2 v p\n");
            var text = File.ReadAllBytes(Path.Combine(Dir, "text.txt"));
            using (var gz = new System.IO.Compression.GZipStream(File.Create(Path.Combine(Dir, "text.gz")), System.IO.Compression.CompressionLevel.Optimal))
                gz.Write(text);
            File.WriteAllText(Path.Combine(Dir, "text.b64"), Convert.ToBase64String(text, Base64FormattingOptions.InsertLineBreaks));
            var lines = File.ReadAllLines(Path.Combine(Dir, "text.txt")).Select(l => l.Split(' ')[0]).OrderBy(x => x, StringComparer.Ordinal);
            File.WriteAllLines(Path.Combine(Dir, "sorted.txt"), lines);
        }
        public void Dispose() => Directory.Delete(Dir, true);
    }

    readonly Files _files;
    public BusyboxTests(Files files) => _files = files;

    // Each case: an applet with arguments, and optionally a file (in the fixture directory) fed to its stdin.
    public static IEnumerable<object[]> Applets() => new[]
    {
        new object[] { "awk -F, '{s+=$2; n[$1]++} END {printf \"%.2f %d\\n\", s, NR; for (k in n) c++; print c}' text.txt", "" },
        new object[] { "awk 'BEGIN{srand(7); for(i=0;i<5;i++) printf \"%d \", int(rand()*1000); print \"\"}'", "" },
        new object[] { "sed -e s/alpha/ALPHA/g -e /beta/d -e s/\\([0-9]\\+\\)/<\\1>/ text.txt", "" },
        new object[] { "sort -k2,2n -k1,1 text.txt", "" },
        new object[] { "sort -r -t, -k2 text.txt", "" },
        new object[] { "md5sum text.txt data.bin", "" },
        new object[] { "sha256sum text.txt data.bin", "" },
        new object[] { "gzip -c -6 data.bin", "" },
        new object[] { "gzip -c -9 text.txt", "" },
        new object[] { "gunzip -c", "text.gz" },
        new object[] { "tr a-z A-Z", "text.txt" },
        new object[] { "wc -l -w -c text.txt data.bin", "" },
        new object[] { "od -A x -t x1z -N 256 data.bin", "" },
        new object[] { "cut '-d ' -f1,3 text.txt", "" },
        new object[] { "uniq -c", "sorted.txt" },
        new object[] { "expr 123456789 * 987 + 17 % 5", "" },
        new object[] { "printf %5d|%-8s|%x|%o|%e|%.3f\\n 42 hello 255 8 12345.678 3.14159", "" },
        new object[] { "dc calc.dc", "" },
        new object[] { "factor 1234567890 600851475143 97 1000000007", "" },
        new object[] { "base64 data.bin", "" },
        new object[] { "base64 -d", "text.b64" },
    };

    /// <summary>Splits on spaces, keeping 'single-quoted' groups together.</summary>
    static string[] Split(string cmd)
    {
        var parts = new List<string>();
        var cur = new StringBuilder();
        bool quoted = false;
        foreach (char ch in cmd)
        {
            if (ch == '\'') { quoted = !quoted; continue; }
            if (ch == ' ' && !quoted) { if (cur.Length > 0) { parts.Add(cur.ToString()); cur.Clear(); } continue; }
            cur.Append(ch);
        }
        if (cur.Length > 0) parts.Add(cur.ToString());
        return parts.ToArray();
    }

    [Theory]
    [MemberData(nameof(Applets))]
    public void SameAsNative(string command, string stdinFile)
    {
        var args = Split(command);
        byte[]? stdin = stdinFile.Length > 0 ? File.ReadAllBytes(Path.Combine(_files.Dir, stdinFile)) : null;
        var native = GuestEnv.Native(Busybox, args, stdin, cwd: _files.Dir);
        var vm = GuestEnv.Vm(Busybox, args, stdin, cwd: _files.Dir);
        Assert.True(native.Stdout.AsSpan().SequenceEqual(vm.Stdout),
            $"{command}: stdout differs\n--- native\n{Head(native.StdoutText)}\n--- vm\n{Head(vm.StdoutText)}\n--- vm stderr\n{vm.Stderr}");
        Assert.Equal(native.ExitCode, vm.ExitCode);
    }

    static string Head(string s) => s.Length > 2000 ? s[..2000] + "..." : s;
}
