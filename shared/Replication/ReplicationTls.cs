using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace ReVirt.Replication;

/// <summary>
/// Mutual TLS on the replication channel: each replica presents its own certificate (PEM certificate and key
/// files) and accepts a peer only when the peer's certificate chains to the CA given in the CA file — the system's
/// trust store plays no part. Without these files the channel is cleartext HTTP/2 with the shared-token proof
/// (loopback use).
/// </summary>
public sealed class ReplicationTls
{
    public X509Certificate2 Identity { get; }
    public X509Certificate2Collection Roots { get; }

    ReplicationTls(X509Certificate2 identity, X509Certificate2Collection roots) { Identity = identity; Roots = roots; }

    /// <summary>
    /// Loads the options; null when none is given.
    /// </summary>
    /// <exception cref="ArgumentException">Only some of the three were given, or a file is unusable (with the reason).</exception>
    public static ReplicationTls? Load(string? certFile, string? keyFile, string? caFile)
    {
        if (certFile == null && keyFile == null && caFile == null) return null;
        if (certFile == null || keyFile == null || caFile == null)
            throw new ArgumentException("mutual TLS needs all of --cert, --key and --ca");
        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(certFile, keyFile);
            // an identity with an ephemeral key cannot be used by the TLS stack on every platform: round-trip it
            var identity = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            var roots = new X509Certificate2Collection();
            roots.ImportFromPemFile(caFile);
            if (roots.Count == 0) throw new ArgumentException($"--ca {caFile}: no certificate in the file");
            return new ReplicationTls(identity, roots);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"cannot load the TLS files (--cert {certFile}, --key {keyFile}, --ca {caFile}): {e.Message}");
        }
    }

    /// <summary>Null when <paramref name="peer"/> chains to this replica's CA; otherwise why it does not.</summary>
    public string? Verify(X509Certificate? peer)
    {
        if (peer == null) return "the peer presented no certificate";
        using var cert = peer as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(peer.GetRawCertData());
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(Roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain.Build(cert)) return null;
        var why = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct());
        return $"the peer's certificate ({cert.Subject}, issued by {cert.Issuer}) does not chain to the CA in --ca{(why.Length > 0 ? $": {why}" : "")}";
    }

    /// <summary>The primary's view of the backup's certificate: it must chain to the CA and name the host dialled.</summary>
    public string? VerifyServer(X509Certificate? peer, SslPolicyErrors errors)
    {
        if (Verify(peer) is { } reason) return reason;
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) return "the backup's certificate does not name the host in --backup";
        return null;
    }
}

/// <summary>The channel options `primary protect` and `backup listen` share: TLS files, the URL's scheme, the event stream.</summary>
public static class ReplicaChannelOptions
{
    /// <summary>
    /// Loads <c>--token-file</c>, <c>--cert/--key/--ca</c> and <c>--events</c> and checks that the URL's scheme goes with them;
    /// null when fine, otherwise the error for the command line (exit status 2).
    /// </summary>
    public static string? Load(string urlOption, string url, string? tokenFile, string? cert, string? key, string? ca, string? eventsSpec,
        out byte[] secret, out ReplicationTls? tls, out ReplicaEvents events)
    {
        secret = [];
        tls = null;
        events = ReplicaEvents.None;
        try { secret = ReplicationProtocol.ReadSecret(tokenFile); }
        catch (IOException e) { return e.Message; }
        try
        {
            tls = ReplicationTls.Load(cert, key, ca);
            events = ReplicaEvents.Open(eventsSpec);
        }
        catch (ArgumentException e) { return e.Message; }
        bool https = url.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
        if (https != (tls != null))
            return $"an https:// {urlOption} URL goes with --cert, --key and --ca (mutual TLS), an http:// one without them";
        return null;
    }
}
