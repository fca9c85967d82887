using System.Security.Cryptography;
using System.Text;

namespace ReVirt.Arbiter;

/// <summary>
/// The outcome of asking the arbiter: whether this replica now owns the guest, and who does. <paramref name="Error"/>
/// is set when the arbiter could not be asked at all (then <paramref name="Won"/> is false and the holder unknown):
/// a replica that cannot reach its arbiter never goes live.
/// </summary>
public readonly record struct ArbiterResult(bool Won, string Holder, string? Error = null, long Term = 0)
{
    /// <summary>For the log: who holds the arbiter (and in which term), or why it could not be asked.</summary>
    public string Explain => Error ?? $"held by {Holder}{(Term > 0 ? $" in term {Term}" : "")}";
}

/// <summary>
/// Split-brain arbiter: an atomic compare-and-set on a <b>term</b> that every replica of one guest can reach.
/// A replica works in the term it learned when it joined the guest (a fresh pair: term 0; a standby that joins a
/// live replica: that replica's term, sent in the hello). A replica asks only when it has lost its peer (the
/// backup when the primary went silent, the primary when the backup did); asking from term T wins term T+1 if
/// and only if nobody has advanced past T yet. So of the two replicas of a pair exactly one wins, every decision
/// (a takeover, or a primary going on without its backup) starts a new term, and a replica of an older term —
/// one that was cut off, stopped, or planted — can never win again, however long it waits.
/// </summary>
public interface IArbiter
{
    /// <summary>
    /// Asks to own the guest from term <paramref name="term"/> on: won (with <see cref="ArbiterResult.Term"/> =
    /// <paramref name="term"/>+1) when the arbiter still stands at <paramref name="term"/>, or when this very owner
    /// already won term+1 (a retried request); otherwise lost, naming the holder of the newest term.
    /// </summary>
    ArbiterResult TryAcquire(string owner, long term);
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
        "Split-brain arbiter every replica of the guest can reach, asked by whichever side loses the other; every decision starts a new term " +
        "and a replica of an older term can never win again. Either a lock file path (one machine or shared storage; default: a file in the " +
        "temp directory named after this run's log header; term N > 1 is the file PATH.N), or " +
        "etcd://HOST:PORT[,HOST:PORT...]/KEY[?ttl=SECONDS]: an etcd v3 cluster (plain HTTP/2) where the term is KEY/term and the winner " +
        "writes KEY = its id on a lease (TTL default 10 s) kept alive while it runs; a winner running unprotected re-checks KEY before " +
        "releasing output and stops once it names someone else or the lease expired. An unreachable etcd never makes a replica live.";

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
/// The built-in arbiter: lock files on a path both roles see (one machine, or storage shared by all hosts with
/// atomic exclusive create — a local file system or NFSv3+, where O_CREAT|O_EXCL is atomic). Term 1 is the file
/// PATH itself, term N &gt; 1 the file PATH.N. <see cref="TryAcquire"/> from term T creates the file of term T+1
/// with <see cref="FileMode.CreateNew"/> (O_CREAT|O_EXCL) and writes the owner's id into it; if it already exists,
/// whoever's id it holds has won that term. That is a compare-and-set on the term: a term's file is only ever
/// created by a replica of the term before, so it exists exactly when someone has advanced past T.
/// </summary>
/// <remarks>
/// Stale locks: no file is ever released or expired automatically — a winner that dies leaves it in place, so a
/// replica of an older term can never win later (that would be a second live primary). The default path is
/// unique to one protected run (derived from its log header, which holds the start time), so a new run never
/// meets an old lock; an operator who reuses a path with <c>--arbiter</c> removes PATH and PATH.* before starting
/// a new pair. A winner whose file is empty (it died between create and write) still holds its term.
/// <see cref="StillHolds"/> is a stat of the next term's file: a winner that finds its term superseded stops.
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

    /// <summary>The file of term <paramref name="term"/> (1: the path itself).</summary>
    public string TermPath(long term) => term <= 1 ? Path : $"{Path}.{term}";

    long _held; // the term this instance won (0: none)

    public ArbiterResult TryAcquire(string owner, long term)
    {
        string path = TermPath(term + 1);
        // the holder's line is made before the exclusive create: between the create (which decides) and the write
        // nothing may run that could take long (the first formatting of a timestamp in a process JIT-compiles), since
        // a replica that loses the race reads an empty file as "(unknown owner)" and a holder killed in that gap
        // leaves it so
        byte[] holderLine = Encoding.UTF8.GetBytes($"{owner}\n{DateTimeOffset.UtcNow:O}\n");
        try
        {
            using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read))
            {
                fs.Write(holderLine);
                // no fsync: the exclusive create is what decides, atomically, for every process that can see the
                // file (a local file system, or the NFS server, which commits a create before answering); forcing the
                // holder's id to disk only matters after a crash of the machine that holds the file, and cost a
                // takeover tens to hundreds of milliseconds on a busy disk
                fs.Flush();
            }
            _held = term + 1;
            return new ArbiterResult(true, owner, Term: term + 1);
        }
        catch (IOException) when (File.Exists(path))
        {
            string holder = ReadHolder(path);
            if (holder == owner) { _held = term + 1; return new ArbiterResult(true, owner, Term: term + 1); }
            // name the newest term's holder: that is who is live (or was last)
            long newest = term + 1;
            while (File.Exists(TermPath(newest + 1))) newest++;
            return new ArbiterResult(false, newest == term + 1 ? holder : ReadHolder(TermPath(newest)), Term: newest);
        }
    }

    /// <summary>False once a newer term than the one this instance won exists: a successor went live.</summary>
    public bool StillHolds(string owner) => _held > 0 && !File.Exists(TermPath(_held + 1));

    public string LossReason => $"a newer term exists ({TermPath(_held + 1)}): another replica went live after this one";

    static string ReadHolder(string path)
    {
        for (int i = 0; i < 50; i++)
        {
            try
            {
                var text = File.ReadAllText(path);
                int nl = text.IndexOf('\n');
                if (nl > 0) return text[..nl];
            }
            catch (IOException) { }
            Thread.Sleep(10); // the winner may be between create and write
        }
        return "(unknown owner)";
    }
}
