using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Mutual TLS on the replication channel with certificate authorities the test makes itself: a pair whose
/// certificates come from the CA both trust replicates as usual; a primary (or backup) whose certificate comes
/// from another CA is refused, and the refusal says why.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class MutualTlsTests(ITestOutputHelper output) : IDisposable
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);
    readonly string _dir = Directory.CreateTempSubdirectory("revirt-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    static X509Certificate2 MakeCa(string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        return req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>Issues a certificate for 127.0.0.1/localhost from <paramref name="ca"/>; writes NAME.crt, NAME.key, and returns their paths.</summary>
    (string Cert, string Key) Issue(X509Certificate2 ca, string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false)); // server and client authentication
        // inside the CA's validity (a leaf may not outlive its issuer: computing "now + 1 day" again could)
        using var cert = req.Create(ca, new DateTimeOffset(ca.NotBefore.ToUniversalTime()).AddMinutes(1), new DateTimeOffset(ca.NotAfter.ToUniversalTime()).AddMinutes(-1), RandomNumberGenerator.GetBytes(8));
        string c = Path.Combine(_dir, name + ".crt"), k = Path.Combine(_dir, name + ".key");
        File.WriteAllText(c, cert.ExportCertificatePem());
        File.WriteAllText(k, key.ExportPkcs8PrivateKeyPem());
        return (c, k);
    }

    string CaFile(X509Certificate2 ca, string name)
    {
        string p = Path.Combine(_dir, name + ".pem");
        File.WriteAllText(p, ca.ExportCertificatePem());
        return p;
    }

    static string Counter => GuestEnv.Guest("counter", "musl");

    [Fact]
    public void APairWithCertificatesFromItsCaReplicates()
    {
        using var ca = MakeCa("ReVirt test CA");
        string caFile = CaFile(ca, "ca");
        var (bc, bk) = Issue(ca, "backup");
        var (pc, pk) = Issue(ca, "primary");
        using var b = Replicas.Backup("--listen", "https://127.0.0.1:0", "--cert", bc, "--key", bk, "--ca", caFile);
        string url = b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60)).Str("url")!;
        Assert.StartsWith("https://", url);
        using var p = Replicas.Primary("--backup", url, "--cert", pc, "--key", pk, "--ca", caFile, "--", Counter, "5", "1000");
        Assert.Equal(0, p.WaitForExit(Long));
        Assert.Equal(0, b.WaitForExit(Long));
        output.WriteLine(p.Stderr + "\n" + b.Stderr);
        ReplicationTests.AssertLines(p.StdoutText, 5);
        Assert.NotNull(p.Event(ReplicaEvent.Protected));
        Assert.Equal(5, b.Event(ReplicaEvent.ReplayMatched)?.Long("outputs"));
    }

    [Fact]
    public void CertificatesFromAnotherCaAreRefusedWithTheReason()
    {
        using var ca = MakeCa("ReVirt test CA");
        using var other = MakeCa("Some other CA");
        string caFile = CaFile(ca, "ca"), otherFile = CaFile(other, "other");
        var (bc, bk) = Issue(ca, "backup");
        var (pc, pk) = Issue(ca, "primary");
        var (xc, xk) = Issue(other, "stranger");
        using var b = Replicas.Backup("--listen", "https://127.0.0.1:0", "--cert", bc, "--key", bk, "--ca", caFile);
        string url = b.WaitForEvent(ReplicaEvent.Listening, TimeSpan.FromSeconds(60)).Str("url")!;

        // a primary whose certificate another CA issued: the backup refuses it and says why, on both sides
        using (var p = Replicas.Primary("--backup", url, "--cert", xc, "--key", xk, "--ca", caFile, "--", Counter, "3", "1000"))
        {
            Assert.Equal(2, p.WaitForExit(Long));
            output.WriteLine(p.Stderr);
            Assert.Contains("does not chain to the CA", p.WaitForEvent(ReplicaEvent.Refused, Long).Str("reason"));
            var refused = b.WaitForEvent(ReplicaEvent.RefusedPrimary, Long);
            Assert.Contains("Some other CA", refused.Str("reason"));
            Assert.Empty(p.Stdout);
        }
        // a primary that trusts only the other CA refuses this backup's certificate itself
        using (var p = Replicas.Primary("--backup", url, "--cert", pc, "--key", pk, "--ca", otherFile, "--", Counter, "3", "1000"))
        {
            Assert.Equal(2, p.WaitForExit(Long));
            output.WriteLine(p.Stderr);
            Assert.Contains("mutual TLS", p.WaitForEvent(ReplicaEvent.Refused, Long).Str("reason"));
        }
        Assert.Null(b.Event(ReplicaEvent.Following));
        // the backup still accepts the right primary afterwards
        using (var p = Replicas.Primary("--backup", url, "--cert", pc, "--key", pk, "--ca", caFile, "--", Counter, "3", "1000"))
        {
            Assert.Equal(0, p.WaitForExit(Long));
            ReplicationTests.AssertLines(p.StdoutText, 3);
        }
        Assert.Equal(0, b.WaitForExit(Long));
    }
}

/// <summary>The gRPC health service on the backup's replication endpoint.</summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class BackupHealthTests
{
    [Fact]
    public async Task TheBackupServesTheStandardHealthService()
    {
        var (b, url) = Replicas.StartBackup();
        using var _ = b;
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(url);
        var health = new Grpc.Health.V1.Health.HealthClient(channel);
        var r = await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(30));
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, r.Status);
    }

    /// <summary>
    /// The health follows the backup's state: SERVING while it follows a primary, NOT_SERVING once it has lost the
    /// primary and cannot go live yet. The arbiter it must ask is an "etcd" the test plays that accepts connections
    /// and never answers, so the backup stays between losing its primary (SIGKILLed) and deciding for the arbiter's
    /// call time-out (about 3 s); then it stands down (exit 3: it could not win). Fails when the health check ignores
    /// the lost primary. About 5-8 s.
    /// </summary>
    [Fact]
    public async Task TheBackupIsNotServingBetweenLosingItsPrimaryAndGoingLive()
    {
        using var stalledEtcd = Replicas.LoopbackListener(); // the kernel completes connections; nobody reads them
        int etcdPort = ((IPEndPoint)stalledEtcd.LocalEndPoint!).Port;
        string lockFile = Replicas.TempFile(".lock");
        var (b, url) = Replicas.StartBackup("--arbiter", $"etcd://127.0.0.1:{etcdPort}/revirt-health-test", "--timeout-ms", "1500");
        try
        {
            using var _ = b;
            // the primary never asks its arbiter here (its backup is not lost): a lock file it alone uses
            using var p = Replicas.Primary("--backup", url, "--arbiter", lockFile, "--timeout-ms", "1500", "--", GuestEnv.Guest("counter", "musl"), "100000000", "2000");
            p.WaitForEvent(ReVirt.Replication.ReplicaEvent.Protected, TimeSpan.FromSeconds(60));
            using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(url);
            var health = new Grpc.Health.V1.Health.HealthClient(channel);
            async Task<Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus> Status() =>
                (await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(10))).Status;
            Assert.NotNull(b.WaitForEvent(ReVirt.Replication.ReplicaEvent.Following, TimeSpan.FromSeconds(60)));
            Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, await Status());
            p.KillHard();
            b.WaitForEvent(ReVirt.Replication.ReplicaEvent.PrimaryLost, TimeSpan.FromSeconds(60));
            Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing, await Status());
            Assert.Equal(3, b.WaitForExit(TimeSpan.FromSeconds(60)));
            Assert.NotNull(b.Event(ReVirt.Replication.ReplicaEvent.StoodDown));
        }
        finally { Replicas.DeleteArbiter(lockFile); }
    }
}
