using System.Security.Cryptography;
using System.Text;

namespace ReVirt.Arbiter;

/// <summary>
/// The outcome of asking the arbiter: whether this replica now owns the guest, and who does. <paramref name="Error"/>
/// is set when the arbiter could not be asked at all (then <paramref name="Won"/> is false and the holder unknown):
/// a replica that cannot reach its arbiter never goes live.
/// </summary>
public readonly record struct ArbiterResult(bool Won, string Holder, string? Error = null)
{
    /// <summary>For the log: who holds the arbiter, or why it could not be asked.</summary>
    public string Explain => Error ?? $"held by {Holder}";
}

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

    /// <summary>
    /// Whether <paramref name="owner"/>, which won earlier, still holds the arbiter. An unprotected replica asks
    /// before every output it releases and stops when the answer is no. Arbiters whose win is permanent (the lock
    /// file) always say yes; a leased one (etcd) says no once the lease may have expired.
    /// </summary>
    bool StillHolds(string owner) => true;

    /// <summary>Why <see cref="StillHolds"/> said no, for the log.</summary>
    string LossReason => "the arbiter no longer names this replica";
}

/// <summary>Chooses the arbiter from an <c>--arbiter</c> value.</summary>
public static class Arbiters
{
    /// <summary>Help text for <c>--arbiter</c>, shared by both commands.</summary>
    public const string Help =
        "Split-brain arbiter both roles can reach, asked by whichever side loses the other. Either a lock file path " +
        "(one machine or shared storage; default: a file in the temp directory named after this run's log header), or " +
        "etcd://HOST:PORT[,HOST:PORT...]/KEY[?ttl=SECONDS]: an etcd v3 cluster (plain HTTP/2) where the winner creates KEY " +
        "holding its id on a lease (TTL default 10 s) kept alive while it runs; the key disappears TTL seconds after the winner dies, " +
        "and a winner running unprotected re-checks it before releasing output and stops if it lost it. An unreachable etcd never makes a replica live.";

    /// <summary>The arbiter named by <paramref name="spec"/> (null: the default lock file of this run).</summary>
    /// <exception cref="FormatException">A malformed etcd URL.</exception>
    public static IArbiter Create(string? spec, byte[] encodedLogHeader)
        => EtcdArbiter.IsEtcdUrl(spec) ? EtcdArbiter.Parse(spec!)
            : new LockFileArbiter(spec ?? LockFileArbiter.DefaultPathFor(encodedLogHeader));

    /// <summary>Checks an <c>--arbiter</c> value up front; returns an error message or null.</summary>
    public static string? Validate(string? spec)
    {
        if (!EtcdArbiter.IsEtcdUrl(spec)) return null;
        try { EtcdArbiter.ParseUrl(spec!); return null; }
        catch (FormatException e) { return e.Message; }
    }
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
                // no fsync: the exclusive create is what decides, atomically, for every process that can see the
                // file (a local file system, or the NFS server, which commits a create before answering); forcing the
                // holder's id to disk only matters after a crash of the machine that holds the file, and cost a
                // takeover tens to hundreds of milliseconds on a busy disk
                fs.Flush();
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
