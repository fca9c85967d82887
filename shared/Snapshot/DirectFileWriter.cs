using System.Runtime.InteropServices;
using ReVirt.Linux;
using ReVirt.Replication;

namespace ReVirt.Snapshot;

/// <summary>
/// A file written front to back with O_DIRECT (from an aligned buffer straight to the device, past the page cache),
/// for a large file written once and not read back soon: the copy of a snapshot a standby keeps beside its log.
/// Why: written through the page cache, the kernel copies every byte (measured: about 2 CPU s of the standby's restore
/// thread for a 512 MiB snapshot on a 2-core KVM host) and throttles the writer to the device's write-back speed once
/// dirty pages pile up (dd: 512 MiB buffered 15.6 s and 1.45 s of system time, direct 2.8 s and 0.14 s).
/// Contract: the file holds exactly the bytes written, in order, once the writer is disposed (the last block is padded
/// for the device and the file cut back to its length); not durable before an fsync, as a buffered file is not. A file
/// system that refuses O_DIRECT (tmpfs) gets an ordinary buffered file with the same contract.
/// </summary>
public sealed unsafe class DirectFileWriter : WriteOnlyStream
{
    /// <summary>Bytes per write: a multiple of any device's logical block size.</summary>
    const int BlockBytes = 1 << 20;
    /// <summary>Alignment of the buffer and of a padded last block for O_DIRECT.</summary>
    const int Alignment = 4096;
    /// <summary>rw-r--r--.</summary>
    const int FileMode0644 = 0b110_100_100;

    readonly string _path;
    readonly int _fd = -1;
    readonly FileStream? _buffered;
    byte* _buf;
    int _fill;
    long _length;

    public DirectFileWriter(string path)
    {
        _path = path;
        long fd = HostSys.WithPath(Nr.open, path, p => HostSys.Call(Nr.open, p, O.WRONLY | O.CREAT | O.TRUNC | O.DIRECT | O.CLOEXEC, FileMode0644));
        if (fd == -Errno.EINVAL) { _buffered = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, BlockBytes); return; }
        if (fd < 0) throw Failed("open", fd);
        _fd = (int)fd;
        _buf = (byte*)NativeMemory.AlignedAlloc(BlockBytes, Alignment);
    }

    /// <summary>Whether the file is written past the page cache (false: the file system refused O_DIRECT).</summary>
    public bool Direct => _buffered == null;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (_buffered != null) { _buffered.Write(buffer); return; }
        ObjectDisposedException.ThrowIf(_buf == null, this);
        while (!buffer.IsEmpty)
        {
            int n = Math.Min(buffer.Length, BlockBytes - _fill);
            buffer[..n].CopyTo(new Span<byte>(_buf + _fill, n));
            _fill += n;
            _length += n;
            buffer = buffer[n..];
            if (_fill == BlockBytes) WriteBlock(BlockBytes);
        }
    }

    /// <summary>Writes the buffer's first <paramref name="bytes"/> (a multiple of <see cref="Alignment"/>).</summary>
    void WriteBlock(int bytes)
    {
        for (int done = 0; done < bytes;)
        {
            long r = HostSys.Call(Nr.write, _fd, (long)(_buf + done), bytes - done);
            if (r == -Errno.EINTR) continue;
            if (r <= 0) throw Failed("write", r);
            done += (int)r;
        }
        _fill = 0;
    }

    IOException Failed(string call, long r) => new($"{call} of {_path}: errno {-r}{(r == -Errno.ENOSPC ? " (no space left on the device)" : "")}");

    /// <summary>Nothing is held back but a partial last block, which only the end may write.</summary>
    public override void Flush() => _buffered?.Flush();

    protected override void Dispose(bool disposing)
    {
        if (_buffered != null) { if (disposing) _buffered.Dispose(); base.Dispose(disposing); return; }
        if (_buf == null) { base.Dispose(disposing); return; }
        try
        {
            if (_fill > 0)
            {
                int padded = (_fill + Alignment - 1) & ~(Alignment - 1);
                new Span<byte>(_buf + _fill, padded - _fill).Clear();
                WriteBlock(padded);
                long r = HostSys.Call(Nr.ftruncate, _fd, _length);
                if (r < 0) throw Failed("ftruncate", r);
            }
        }
        finally
        {
            HostSys.Call(Nr.close, _fd);
            NativeMemory.AlignedFree(_buf);
            _buf = null;
            base.Dispose(disposing);
        }
    }
}
