using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;
using Xunit.Abstractions;

namespace ReVirt.Tests.Replication;

/// <summary>
/// Both replicas on one root directory (`backup listen --shared-storage`): the primary's file writes reach the files
/// only once the backup holds their records, so the following backup applies none of them again, and at the takeover
/// it writes again only what the primary may not have released. A script appends numbered records to a file with
/// `>>` (an open, a write and a close each); the primary is SIGKILLed mid-script and the backup carries on: every
/// record is in the file exactly once and in order. Re-applying the primary's writes would double every record
/// written while it was followed; a write released before the backup held it would be doubled by the survivor.
/// </summary>
[Collection(ReVirt.Tests.Chaos.RealProcesses.Name)]
public class SharedStorageTests(ITestOutputHelper output)
{
    static readonly TimeSpan Long = TimeSpan.FromMinutes(3);

    [Fact]
    public void AFollowingBackupOnSharedStorageDoesNotApplyThePrimarysWritesAgain()
    {
        const int records = 120;
        string data = Path.Combine(Path.GetTempPath(), $"revirt-shared-{Guid.NewGuid():N}.log");
        string arbiter = Path.Combine(Path.GetTempPath(), $"revirt-test-{Guid.NewGuid():N}.lock");
        string script = $"i=0; while [ $i -lt {records} ]; do echo \"record $i\" >> {data}; echo \"line $i\"; i=$((i + 1)); sleep 0.05; done";
        try
        {
            var (b, url) = Replicas.StartBackup("--arbiter", arbiter, "--timeout-ms", "1000"); // no --root: shared storage
            using var _ = b;
            using var p = Replicas.Primary("--backup", url, "--arbiter", arbiter, "--", BusyboxTests.Busybox, "sh", "-c", script);
            p.WaitForStdoutBytes(30 * 8, Long);
            p.KillHard();
            int? code = b.WaitForExit(Long);
            output.WriteLine($"primary released {p.Stdout.Length} stdout bytes; backup {code}:\n{b.Stderr}");
            Assert.Equal(0, code);
            Assert.NotNull(b.Event(ReplicaEvent.TookOver));
            var keys = File.ReadAllLines(data).Select(l => int.Parse(Regex.Match(l, @"^record (\d+)$").Groups[1].Value)).ToList();
            Assert.Equal(Enumerable.Range(0, records), keys);
        }
        finally { File.Delete(data); File.Delete(arbiter); }
    }
}
