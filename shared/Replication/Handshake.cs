using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using ReVirt.Protocol;

namespace ReVirt.Replication;

/// <summary>Constants and checks shared by both ends of the replication protocol.</summary>
public static class ReplicationProtocol
{
    /// <summary>Version of shared/Protocol/replication.proto spoken by this build.</summary>
    public const uint Version = 1;

    /// <summary>Reads a shared secret (the whole file, surrounding whitespace trimmed); empty without a file.</summary>
    public static byte[] ReadSecret(string? tokenFile)
    {
        if (string.IsNullOrEmpty(tokenFile)) return [];
        return Encoding.UTF8.GetBytes(File.ReadAllText(tokenFile).Trim());
    }

    public static byte[] Nonce() => RandomNumberGenerator.GetBytes(32);

    /// <summary>
    /// Proof that the primary holds the secret: HMAC-SHA256(secret, "revirt-repl-v1" | client nonce | server
    /// nonce | SHA-256(hello)). The secret never travels; the server's fresh nonce makes a recorded proof useless.
    /// </summary>
    public static byte[] Proof(byte[] secret, Hello hello, byte[] serverNonce)
    {
        using var h = new HMACSHA256(secret);
        var ms = new MemoryStream();
        ms.Write("revirt-repl-v1"u8);
        ms.Write(hello.ClientNonce.Span);
        ms.Write(serverNonce);
        ms.Write(SHA256.HashData(hello.ToByteArray()));
        return h.ComputeHash(ms.ToArray());
    }

    public static bool ProofMatches(byte[] secret, Hello hello, byte[] serverNonce, ReadOnlySpan<byte> proof)
        => CryptographicOperations.FixedTimeEquals(Proof(secret, hello, serverNonce), proof);
}

/// <summary>
/// Digest of a guest root directory (relative paths, types, symlink targets and file contents, in ordinal path
/// order), so that the handshake can check that both replicas start from identical roots. The host's own "/" is
/// not digested (it is the same file system for both roles on one machine, and far too big): the digest is empty
/// and the check is skipped.
/// </summary>
public static class RootDigest
{
    public static byte[] Compute(string root)
    {
        string full = Path.GetFullPath(root);
        if (full == "/") return [];
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 16];
        void Str(string s) { var b = Encoding.UTF8.GetBytes(s); h.AppendData(BitConverter.GetBytes(b.Length)); h.AppendData(b); }
        void Walk(string dir, string rel)
        {
            var entries = new DirectoryInfo(dir).GetFileSystemInfos();
            Array.Sort(entries, (a, b) => string.CompareOrdinal(a.Name, b.Name));
            foreach (var e in entries)
            {
                string r = rel + "/" + e.Name;
                if (e.LinkTarget != null) { Str("L" + r); Str(e.LinkTarget); continue; }
                if (e is DirectoryInfo d) { Str("D" + r); Walk(d.FullName, r); continue; }
                Str("F" + r);
                using var fs = new FileStream(e.FullName, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                h.AppendData(BitConverter.GetBytes(fs.Length));
                int n;
                while ((n = fs.Read(buf)) > 0) h.AppendData(buf, 0, n);
            }
        }
        Walk(full, "");
        return h.GetHashAndReset();
    }
}

/// <summary>The backup refused this primary (or the primary gave up on the handshake); the message says why.</summary>
public sealed class ReplicationRefusedException : Exception
{
    public ReplicationRefusedException(string message) : base(message) { }
}
