using System.Text.RegularExpressions;
using ReVirt.Tests.Programs;
using Xunit;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Privileged, legacy, trapping and hint-space instructions: guests/src/insnprobe.c runs each one from a fresh page
/// and prints the signal (number, si_code, si_addr, rip) or the rax it left; the host CPU under the host kernel is
/// the oracle, so the VM must print exactly what the same program prints natively.
/// </summary>
public class SystemInstructionTests
{
    public static IEnumerable<object[]> Cases() => new[]
    {
        // #GP in user mode -> SIGSEGV, SI_KERNEL, si_addr 0
        "fa", "fb", "f4", "e4 10", "ec", "e6 10", "ee", "6c", "6e", "0f 32", "0f 30", "0f 33",
        "0f 20 c0", "0f 22 c0", "0f 21 c0", "0f 23 c0", "0f 01 10", "0f 01 18", "0f 00 d0", "0f 00 d8", "0f 01 f0",
        "0f 08", "0f 09", "0f 01 38", "0f 06", "0f 01 f8", "48 0f 07", "cd 80", "cd 10",
        // iretq to the same ring works; to a ring-0 code selector it is #GP
        "48 89 e1 6a 2b 51 9c 6a 33 48 8d 15 03 00 00 00 52 48 cf b8 77 00 00 00",
        "48 89 e1 6a 2b 51 9c 6a 10 48 8d 15 03 00 00 00 52 48 cf b8 77 00 00 00",
        // #UD -> SIGILL, ILL_ILLOPN, si_addr = rip
        "0f 35", "0f 34", "0f 0b", "ce", "62", "0f aa",
        // LOCK: #UD unless a read-modify-write instruction with a memory destination
        "f0 90", "f0 48 01 c0", "f0 48 89 00", "f0 48 01 00", "f0 0f c1 00",
        // traps: the instruction retires, the signal reports the next rip
        "cc", "cd 03", "f1",
        // hint space without CET/MPX: no-ops; the CET instructions outside it are #UD
        "f3 48 0f 1e c8", "f3 0f 1e c8", "f3 0f 1e fa", "f3 0f 1e fb", "0f 18 20", "0f 18 38", "0f 19 c0", "0f 1a 00",
        "0f 1b 00", "0f 1c 00", "0f 1d c0", "0f 1e 00", "0f 1f 00", "0f 0d 08",
        "f3 48 0f ae e8", "f3 0f 01 e8", "f3 0f 01 ea",
    }.Select(c => new object[] { c });

    [Fact]
    public void SignalsAndNoOpsMatchTheHost()
    {
        var cases = Cases().Select(c => (string)c[0]).ToArray();
        foreach (var libc in new[] { "glibc", "musl" })
        {
            string prog = GuestEnv.Guest("insnprobe", libc);
            var native = GuestEnv.Native(prog, cases);
            var vm = GuestEnv.Vm(prog, cases);
            Assert.Equal(0, native.ExitCode);
            Assert.True(vm.ExitCode == 0, vm.Stderr);
            var n = Lines(native.StdoutText);
            var v = Lines(vm.StdoutText);
            Assert.Equal(cases.Length, n.Length);
            for (int k = 0; k < n.Length; k++)
            {
                // where hosts disagree among themselves, the VM gives its one documented answer
                if (n[k] != v[k] && HostsDisagree.TryGetValue(cases[k], out var answer)) Assert.Equal($"{cases[k]}: {answer}", v[k]);
                else Assert.Equal(n[k], v[k]);
            }
        }
    }

    /// <summary>Cases whose host answer depends on the host's kernel or hypervisor rather than on the architecture,
    /// with the answer the VM gives everywhere: `int 0x80` is a 32-bit system call only on a kernel built with IA32
    /// emulation (the VM models one without it: the #GP of any other `int n`); SYSEXIT in 64-bit user mode is #UD
    /// on AMD silicon, while some hypervisors report #GP; INT1 (`f1`) is a trap that reports the rip after it, while a
    /// hypervisor that intercepts it may report its own rip.</summary>
    static readonly Dictionary<string, string> HostsDisagree = new()
    {
        ["cd 80"] = "signal 11 code 128 addr 0 rip page+0",
        ["0f 35"] = "signal 4 code 2 addr page+0 rip page+0",
        ["f1"] = "signal 5 code 1 addr ? rip page+1",
    };

    /// <summary>The kernel fills si_pid rather than si_addr for a CPU-raised SIGTRAP (a kernel follow-up), so the
    /// address of signal 5 is not compared; its si_code and rip are.</summary>
    static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(l => Regex.Replace(l, @"signal 5 code (-?\d+) addr \S+", "signal 5 code $1 addr ?")).ToArray();
}
