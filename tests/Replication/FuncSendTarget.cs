using ReVirt.Linux;

namespace ReVirt.Tests;

/// <summary>A test's host send: a function of (offset, count, extra flags) standing for the kernel's socket send.</summary>
sealed class FuncSendTarget(Func<int, int, int, long> perform) : ISendTarget
{
    public long Perform(in SocketSend s, int offset, int count, int extraFlags) => perform(offset, count, extraFlags);
}
