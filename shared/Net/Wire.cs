using System.Buffers.Binary;

namespace ReVirt.Net;

/// <summary>Linux errno values the socket calls return (negated), so the kernel layer passes them through unchanged.</summary>
public static class NetErrno
{
    public const int EPIPE = 32, EAGAIN = 11, EINVAL = 22, EBADF = 9, EMSGSIZE = 90, EDESTADDRREQ = 89,
        EOPNOTSUPP = 95, EADDRINUSE = 98, EADDRNOTAVAIL = 99, ENETUNREACH = 101, ECONNABORTED = 103,
        ECONNRESET = 104, ENOBUFS = 105, EISCONN = 106, ENOTCONN = 107, ETIMEDOUT = 110, ECONNREFUSED = 111,
        EHOSTUNREACH = 113, EALREADY = 114, EINPROGRESS = 115;
}

/// <summary>poll(2) event bits as Linux defines them (also the epoll bits of the same names).</summary>
public static class PollEvents
{
    public const int In = 0x1, Pri = 0x2, Out = 0x4, Err = 0x8, Hup = 0x10, RdNorm = 0x40, WrNorm = 0x100, RdHup = 0x2000;
}

/// <summary>shutdown(2) directions.</summary>
public enum ShutdownHow { Read = 0, Write = 1, Both = 2 }

/// <summary>A MAC address in the low 48 bits (network order: the first octet is the most significant).</summary>
public readonly record struct MacAddress(ulong Value)
{
    public static readonly MacAddress Broadcast = new(0xFFFF_FFFF_FFFF);
    public static readonly MacAddress Zero = new(0);

    public static MacAddress Read(ReadOnlySpan<byte> b) =>
        new(((ulong)BinaryPrimitives.ReadUInt16BigEndian(b) << 32) | BinaryPrimitives.ReadUInt32BigEndian(b[2..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)(Value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(b[2..], (uint)Value);
    }

    /// <summary>Parses "aa:bb:cc:dd:ee:ff"; a multicast (group bit) address is refused.</summary>
    public static bool TryParse(string s, out MacAddress mac)
    {
        mac = Zero;
        var parts = s.Split(':');
        if (parts.Length != 6) return false;
        ulong v = 0;
        foreach (var p in parts)
        {
            if (p.Length != 2 || !byte.TryParse(p, System.Globalization.NumberStyles.HexNumber, null, out byte x)) return false;
            v = (v << 8) | x;
        }
        if ((v & 0x0100_0000_0000) != 0) return false;
        mac = new MacAddress(v);
        return true;
    }

    public override string ToString()
    {
        ulong v = Value;
        return string.Join(":", Enumerable.Range(0, 6).Select(i => ((v >> (40 - 8 * i)) & 0xFF).ToString("x2")));
    }
}

/// <summary>IPv4 address helpers; an address is a host-order uint (10.0.0.1 = 0x0A000001).</summary>
public static class Ip4
{
    public static bool TryParse(string s, out uint ip)
    {
        ip = 0;
        var parts = s.Split('.');
        if (parts.Length != 4) return false;
        foreach (var p in parts)
        {
            if (!byte.TryParse(p, System.Globalization.NumberStyles.None, null, out byte x)) return false;
            ip = (ip << 8) | x;
        }
        return true;
    }

    /// <summary>Parses "a.b.c.d/len" (prefix length 1..30).</summary>
    public static bool TryParseCidr(string s, out uint ip, out int prefix)
    {
        ip = 0; prefix = 0;
        int slash = s.IndexOf('/');
        return slash > 0 && TryParse(s[..slash], out ip) && int.TryParse(s[(slash + 1)..], out prefix) && prefix is >= 1 and <= 30;
    }

    public static uint Mask(int prefix) => prefix == 0 ? 0 : uint.MaxValue << (32 - prefix);

    public static string ToString(uint ip) => $"{ip >> 24}.{(ip >> 16) & 0xFF}.{(ip >> 8) & 0xFF}.{ip & 0xFF}";
}

/// <summary>Header layouts and the Internet checksum (RFC 1071). Offsets are from the start of each header.</summary>
static class Wire
{
    /// <summary>Bytes of a MAC address (the Ethernet header: destination, source, EtherType).</summary>
    public const int MacLength = 6;
    public const int EthHeader = 14, ArpPacket = 28, Ip4Header = 20, TcpHeader = 20, UdpHeader = 8, IcmpHeader = 8;
    public const ushort EtherTypeIp4 = 0x0800, EtherTypeArp = 0x0806;
    public const byte ProtoIcmp = 1, ProtoTcp = 6, ProtoUdp = 17;
    public const int Mtu = 1500;
    public const int MinFrame = 60;                 // Ethernet minimum without FCS; shorter frames are padded
    public const byte DefaultTtl = 64;
    public const ushort IpFlagMoreFragments = 0x2000, IpFragmentOffsetMask = 0x1FFF, IpFlagDontFragment = 0x4000;
    public const byte IcmpEchoReply = 0, IcmpDestUnreachable = 3, IcmpEchoRequest = 8;
    public const byte IcmpPortUnreachable = 3;
    public const ushort ArpRequest = 1, ArpReply = 2;

    /// <summary>One's-complement sum of 16-bit big-endian words (an odd last byte is padded with zero).</summary>
    public static uint Sum(ReadOnlySpan<byte> data, uint sum = 0)
    {
        int i = 0;
        for (; i + 1 < data.Length; i += 2) sum += (uint)(data[i] << 8 | data[i + 1]);
        if (i < data.Length) sum += (uint)data[i] << 8;
        return sum;
    }

    public static ushort Fold(uint sum)
    {
        while (sum >> 16 != 0) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }

    public static ushort Checksum(ReadOnlySpan<byte> data) => Fold(Sum(data));

    /// <summary>TCP/UDP pseudo-header sum (RFC 793 §3.1, RFC 768).</summary>
    public static uint PseudoSum(uint src, uint dst, byte proto, int length) =>
        (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + (uint)length;

    /// <summary>Checksum of a transport segment including its pseudo-header; 0 when a received segment is intact.</summary>
    public static ushort TransportChecksum(uint src, uint dst, byte proto, ReadOnlySpan<byte> segment) =>
        Fold(Sum(segment, PseudoSum(src, dst, proto, segment.Length)));

    public static ushort U16(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt16BigEndian(b[o..]);
    public static uint U32(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32BigEndian(b[o..]);
    public static void U16(Span<byte> b, int o, ushort v) => BinaryPrimitives.WriteUInt16BigEndian(b[o..], v);
    public static void U32(Span<byte> b, int o, uint v) => BinaryPrimitives.WriteUInt32BigEndian(b[o..], v);
}

/// <summary>Sequence-number arithmetic modulo 2^32 (RFC 793 §3.3; RFC 1982).</summary>
static class Seq
{
    public static bool Lt(uint a, uint b) => (int)(a - b) < 0;
    public static bool Le(uint a, uint b) => (int)(a - b) <= 0;
    public static bool Gt(uint a, uint b) => (int)(a - b) > 0;
    public static bool Ge(uint a, uint b) => (int)(a - b) >= 0;
    public static uint Max(uint a, uint b) => Gt(a, b) ? a : b;
    /// <summary>lo &lt;= x &lt; hi.</summary>
    public static bool InRange(uint x, uint lo, uint hi) => Le(lo, x) && Lt(x, hi);
}
