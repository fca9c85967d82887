using ReVirt.Log;

namespace ReVirt.Backup;

/// <summary>
/// The running digest of a backup's log copy (the log's own digest, <see cref="LogDigest"/>, of the copy's version)
/// and how many bytes it covers: fed with each write of the copy, so that a survivor that records on after a takeover
/// (<see cref="LogWriter"/>'s continuation) need not read the whole copy again on its go-live path. Used by one thread
/// at a time (the link thread, then the go-live, which <see cref="Take"/>s it).
/// </summary>
sealed class CopyDigest(ushort version) : IDisposable
{
    LogDigest? _digest = LogDigest.ForVersion(version);

    /// <summary>Bytes digested so far.</summary>
    public long Bytes { get; private set; }

    /// <summary>The copy's next bytes, as written.</summary>
    public void Append(ReadOnlySpan<byte> written)
    {
        var d = _digest ?? throw new ObjectDisposedException(nameof(CopyDigest));
        d.Append(written);
        Bytes += written.Length;
    }

    /// <summary>The digest, for its new owner (a log writer continuing the copy); this object holds nothing after.</summary>
    public LogDigest Take()
    {
        var d = _digest ?? throw new ObjectDisposedException(nameof(CopyDigest));
        _digest = null;
        return d;
    }

    public void Dispose()
    {
        _digest?.Dispose();
        _digest = null;
    }
}
