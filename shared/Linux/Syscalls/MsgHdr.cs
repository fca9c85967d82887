using System.Buffers.Binary;

namespace ReVirt.Linux;

/// <summary>A guest struct msghdr (56 bytes on x86-64) as sendmsg/recvmsg read it: the raw bytes (recvmsg writes
/// them back with the lengths it sets), the name buffer and its length, and the iovecs.</summary>
internal readonly record struct MsgHdr(byte[] Raw, ulong Name, int NameLen, List<(ulong Base, ulong Len)> Vecs, long Total)
{
    public const int Size = 56;
}

public sealed partial class Kernel
{
    /// <summary>
    /// Reads and checks a guest msghdr. For a receive (<paramref name="receiving"/>) the header, the name buffer and
    /// every iovec must be writable and a negative name length is EINVAL; more than UIO_MAXIOV iovecs is EMSGSIZE.
    /// Control messages (SCM_RIGHTS, credentials) are not passed on.
    /// </summary>
    long ReadMsgHdr(ulong msg, bool receiving, out MsgHdr h)
    {
        h = default;
        var m = Mem.ReadBytes(msg, MsgHdr.Size);
        if (receiving) CheckWritable(msg, MsgHdr.Size);
        ulong name = BinaryPrimitives.ReadUInt64LittleEndian(m), iov = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(16));
        int nameLen = (int)BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(8));
        ulong iovLen = BinaryPrimitives.ReadUInt64LittleEndian(m.AsSpan(24));
        if (iovLen > MaxIov) return -Errno.EMSGSIZE;
        if (receiving)
        {
            if (nameLen < 0) return -Errno.EINVAL;
            if (name != 0 && nameLen > 0) CheckWritable(name, (ulong)Math.Min(nameLen, MaxSockAddr));
        }
        var vecs = ReadIovecs(iov, iovLen, receiving, out long total);
        h = new MsgHdr(m, name, nameLen, vecs, total);
        return 0;
    }

    /// <summary>The bytes a sendmsg sends: its iovecs gathered (at most <see cref="MaxNetIo"/>).</summary>
    byte[] Gather(MsgHdr h)
    {
        var ms = new MemoryStream();
        foreach (var (b, l) in h.Vecs)
            if (l > 0 && ms.Length < MaxNetIo) ms.Write(Mem.ReadBytes(b, (int)Math.Min(l, (ulong)(MaxNetIo - ms.Length))));
        return ms.ToArray();
    }

    /// <summary>sendmsg's destination address (null when the header names none).</summary>
    long MsgDestination(MsgHdr h, out byte[]? to)
    {
        to = null;
        return h.Name != 0 && h.NameLen != 0 ? ReadSockAddr(h.Name, (uint)h.NameLen, out to) : 0;
    }
}
