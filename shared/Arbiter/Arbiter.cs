using System.Security.Cryptography;
using System.Text;

namespace ReVirt.Arbiter;

/// <summary>The outcome of asking the arbiter: whether this replica now owns the guest, and who does.</summary>
public readonly record struct ArbiterResult(bool Won, string Holder);

/// <summary>
/// Split-brain arbiter: an atomic test-and-set that both replicas can reach. The first replica to ask wins and
/// stays the winner for good; every later request from another owner loses. A replica asks only when it has lost
/// its peer (the backup when the primary went silent, the primary when the backup did), so there are never two
/// live primaries: a replica that loses stops.
/// </summary>
public interface IArbiter
{
    ArbiterResult TryAcquire(string owner);
    string Describe { get; }
}

/// <summary>
/// The built-in arbiter: a lock file on a path both roles see (one machine, or storage shared by both hosts with
/// atomic exclusive create — a local file system or NFSv3+, where O_CREAT|O_EXCL is atomic).
/// <see cref="TryAcquire"/> creates the file with <see cref="FileMode.CreateNew"/> (O_CREAT|O_EXCL) and writes the
/// owner's id into it; if it already exists, whoever's id it holds has won.
/// </summary>
/// <remarks>
/// Stale locks: the lock is never released or expired automatically — a winner that dies leaves it in place, so a
/// replica of the same pair can never win it later (that would be a second live primary). The default path is
/// unique to one protected run (derived from its log header, which holds the start time), so a new run never
/// meets an old lock; an operator who reuses a path with <c>--arbiter</c> removes the file before starting a new
/// pair. A winner whose file is empty (it died between create and write) still holds the lock.
/// </remarks>
public sealed class LockFileArbiter : IArbiter
{
    public string Path { get; }
    public LockFileArbiter(string path) => Path = System.IO.Path.GetFullPath(path);
    public string Describe => $"lock file {Path}";

    /// <summary>The default lock path of one protected run: both roles derive it from the log header.</summary>
    public static string DefaultPathFor(byte[] encodedLogHeader)
        => System.IO.Path.Combine(System.IO.Path.GetTempPath(),
            $"revirt-arbiter-{Convert.ToHexStringLower(SHA256.HashData(encodedLogHeader))[..24]}.lock");

    public ArbiterResult TryAcquire(string owner)
    {
        try
        {
            using (var fs = new FileStream(Path, FileMode.CreateNew, FileAccess.Write, FileShare.Read))
            {
                fs.Write(Encoding.UTF8.GetBytes($"{owner}\n{DateTimeOffset.UtcNow:O}\n"));
                fs.Flush(flushToDisk: true);
            }
            return new ArbiterResult(true, owner);
        }
        catch (IOException) when (File.Exists(Path))
        {
            string holder = ReadHolder();
            return new ArbiterResult(holder == owner, holder);
        }
    }

    string ReadHolder()
    {
        for (int i = 0; i < 50; i++)
        {
            try
            {
                var text = File.ReadAllText(Path);
                int nl = text.IndexOf('\n');
                if (nl > 0) return text[..nl];
            }
            catch (IOException) { }
            Thread.Sleep(10); // the winner may be between create and write
        }
        return "(unknown owner)";
    }
}
