using ReVirt.Abi;

namespace ReVirt.Linux;

/// <summary>
/// What the kernel exposes of its descriptors to code outside it that gives them host resources (a backup that
/// takes over): every guest descriptor of every process, a way to put a description in place of another
/// everywhere it is referred to, and the guest's file system and socket address forms.
/// </summary>
public interface IMachineFiles
{
    /// <summary>Every guest descriptor of every process (process order, then descriptor order).</summary>
    IEnumerable<(int Fd, OpenFile File)> Descriptors { get; }

    /// <summary>Makes every descriptor and epoll registration that refers to `old` refer to `replacement`.</summary>
    void Replace(OpenFile old, OpenFile replacement);

    GuestFs Fs { get; }

    /// <summary>The guest path of an AF_UNIX pathname address (null for other families and abstract names).</summary>
    string? UnixGuestPath(byte[] addr);

    /// <summary>Runs `op` with the host form of a guest socket address: an AF_UNIX path resolved under the root and
    /// named through a descriptor (`bind`: a name to create), see <see cref="GuestFs.ViaDescriptor"/>.</summary>
    long WithHostAddress(byte[] addr, string? unixPath, bool bind, Func<byte[], long> op);
}
