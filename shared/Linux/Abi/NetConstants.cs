namespace ReVirt.Linux;

/// <summary>The socket ABI's numbers that the in-VM sockets (<see cref="VirtualSocket"/>) answer themselves.</summary>
public static class SockAbi
{
    public const int DGRAM = 2;
    /// <summary>SOL_SOCKET option names.</summary>
    public const int SO_TYPE = 3, SO_ERROR = 4, SO_SNDBUF = 7, SO_RCVBUF = 8, SO_KEEPALIVE = 9, SO_LINGER = 13,
        SO_REUSEPORT = 15, SO_RCVTIMEO = 20, SO_SNDTIMEO = 21, SO_ACCEPTCONN = 30, SO_PROTOCOL = 38, SO_DOMAIN = 39;
    /// <summary>Protocol levels.</summary>
    public const int IPPROTO_IP = 0, IPPROTO_TCP = 6, IPPROTO_UDP = 17;
    /// <summary>IPPROTO_TCP option names.</summary>
    public const int TCP_NODELAY = 1, TCP_MAXSEG = 2, TCP_KEEPIDLE = 4, TCP_KEEPINTVL = 5, TCP_KEEPCNT = 6;
    /// <summary>recv/send flags beyond <see cref="Msg"/>.</summary>
    public const int MSG_PEEK = 0x2, MSG_TRUNC = 0x20, MSG_WAITALL = 0x100;
    /// <summary>st_mode of a socket.</summary>
    public const uint S_IFSOCK = 0xC000;
    /// <summary>struct sockaddr_in: family (host order), port and address (network order), 8 bytes of zero.</summary>
    public const int SockAddrInSize = 16;
    /// <summary>POLLRDHUP (epoll's EPOLLRDHUP has the same value).</summary>
    public const short POLLRDHUP = 0x2000;
}
