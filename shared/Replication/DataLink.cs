using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using Google.Protobuf;
using ReVirt.Protocol;

namespace ReVirt.Replication;

/// <summary>
/// The data link of a replication session: one TCP connection (TLS with the replicas' certificates when they use
/// mutual TLS) that carries, after the gRPC handshake, the primary's Batch/Heartbeat/Goodbye messages and the
/// backup's Ack/Refused messages, each as a 4-byte little-endian length and the protobuf encoding. Each side reads
/// it on a thread of its own and writes it from whichever thread has something to say (under one lock), with
/// blocking calls: an acknowledgement crosses no thread pool, no HTTP/2 write loop and no stream multiplexer.
///
/// Opening (the primary, right after the Welcome): <see cref="Magic"/>, the Welcome's one-time ticket, and
/// HMAC-SHA256(secret, "revirt-data-v1" | ticket) — the secret never travels and a ticket opens one link once.
/// The backup answers an Ack (accepted) or a Refused with the reason.
///
/// Two transports carry it: TCP to the backup's data port (any two hosts), and, when both replicas run on one host,
/// a Unix-domain stream socket in the abstract namespace that the Welcome names (<see cref="DataLinkKind"/>): the
/// same opening, ticket, proof and (with mutual TLS) TLS, the same messages and bounds, but each message crosses one
/// socket buffer instead of the loopback TCP stack (no segments, no TCP acknowledgements, no softirq on the
/// receiving side). An abstract socket is reachable only from the backup's network namespace on the backup's kernel,
/// so a connection to it also shows that the peer shares the host; what authenticates the peer is still the ticket
/// and its proof of the token (or TLS), since any local process can connect to the name.
/// </summary>
public sealed class DataLink : IDisposable
{
    /// <summary>First bytes of a link opening (names the protocol version).</summary>
    public static ReadOnlySpan<byte> Magic => "RVLINK03"u8;
    public const int TicketBytes = 32;
    public const int ProofBytes = 32;
    public const int OpeningBytes = 8 + TicketBytes + ProofBytes;
    const int InitialBuffer = 64 * 1024;

    readonly Socket _socket;
    readonly Stream _stream;
    readonly object _write = new();
    // what one read of the socket brought beyond the message asked for: a burst of messages costs one read
    byte[] _in = new byte[InitialBuffer];
    int _inPos, _inEnd;
    // the encoding of the message being written (under _write): no allocation per message
    byte[] _out = new byte[InitialBuffer];
    int _closed;
    long _lastWrite;
    // a plain same-host link: a read waits for data in poll(2) first (see Fill)
    readonly bool _pollBeforeRead;
    int _receiveTimeoutMs;

    DataLink(Socket socket, Stream stream, string? peer = null)
    {
        _socket = socket;
        _stream = stream;
        _lastWrite = Environment.TickCount64;
        _pollBeforeRead = socket.AddressFamily == AddressFamily.Unix && stream is NetworkStream;
        _receiveTimeoutMs = socket.ReceiveTimeout;
        if (peer != null) _peer = peer;
        else try { _peer = socket.RemoteEndPoint?.ToString() ?? "?"; } catch (Exception e) when (e is SocketException or ObjectDisposedException) { _peer = "?"; }
    }

    /// <summary>Where the link goes (for messages; still known after the link is closed).</summary>
    public string Peer => _peer;
    readonly string _peer;

    /// <summary>The transport under the link: <see cref="DataLinkKind.Unix"/> (same host) or <see cref="DataLinkKind.Tcp"/>.</summary>
    public DataLinkKind Kind => _socket.AddressFamily == AddressFamily.Unix ? DataLinkKind.Unix : DataLinkKind.Tcp;

    /// <summary>The socket's host descriptor (the exit watch takes a duplicate of it: <see cref="ExitWatch"/>).</summary>
    public int Descriptor => (int)_socket.Handle;

    /// <summary>Environment.TickCount64 of the last message written.</summary>
    public long LastWriteTick => Interlocked.Read(ref _lastWrite);

    /// <summary>A blocking read that waits longer than this fails (0: no limit).</summary>
    public int ReceiveTimeoutMs
    {
        set
        {
            _receiveTimeoutMs = value;
            _socket.ReceiveTimeout = value;
        }
    }

    int _sendTimeoutMs;

    /// <summary>
    /// Every send is bounded: one that makes no progress for this long (the peer stopped reading and both sides'
    /// buffers are full) ends the link, and <see cref="Send"/> throws a <see cref="LinkSendTimeoutException"/> that says
    /// so, rather than holding the sending thread — and whatever it holds — for as long as the peer is stuck. The opening
    /// bounds it by its own time-out; the owner then sets the session's (<see cref="ReplicationProtocol.SendBoundMs"/>).
    /// </summary>
    public int SendTimeoutMs
    {
        get => _sendTimeoutMs;
        set { _sendTimeoutMs = value; _socket.SendTimeout = value; }
    }

    public static byte[] Proof(byte[] secret, ReadOnlySpan<byte> ticket)
    {
        var data = new byte[14 + ticket.Length];
        "revirt-data-v1"u8.CopyTo(data);
        ticket.CopyTo(data.AsSpan(14));
        return HMACSHA256.HashData(secret, data);
    }

    static Socket NewSocket(AddressFamily family)
    {
        var s = new Socket(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        Tune(s);
        return s;
    }

    static void Tune(Socket s)
    {
        if (s.AddressFamily != AddressFamily.Unix) s.NoDelay = true; // a Unix socket never delays a small write
        // a burst of records (or a catch-up batch) goes to the kernel in one call instead of waiting for acks of it
        s.SendBufferSize = 1 << 20;
        s.ReceiveBufferSize = 1 << 20;
    }

    /// <summary>The abstract Unix socket name (without its leading NUL) a Welcome may carry: at most this long.</summary>
    public const int MaxSocketNameBytes = 100;

    /// <summary>A fresh name for a backup's same-host data link in the abstract namespace (random: another process
    /// cannot take it first, and two backups on one host never collide).</summary>
    public static string NewSocketName() => $"{SocketNamePrefix}{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(SocketNameRandomBytes))}";

    const string SocketNamePrefix = "revirt-data-";
    const int SocketNameRandomBytes = 12;

    /// <summary>True for a name of <see cref="NewSocketName"/>'s form (prefix, a process id, lowercase hex of the
    /// random part). A primary connects only to such a name: the Welcome comes from the peer, and any other abstract
    /// name could be another service on the primary's own host, which must not receive the opening's ticket and
    /// proof.</summary>
    public static bool IsDataSocketName(string name)
    {
        if (!name.StartsWith(SocketNamePrefix, StringComparison.Ordinal)) return false;
        var rest = name.AsSpan(SocketNamePrefix.Length);
        int dash = rest.IndexOf('-');
        if (dash < 1 || !int.TryParse(rest[..dash], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _)) return false;
        var hex = rest[(dash + 1)..];
        if (hex.Length != 2 * SocketNameRandomBytes) return false;
        foreach (char c in hex) if (!char.IsAsciiHexDigitLower(c) && !char.IsAsciiDigit(c)) return false;
        return true;
    }

    /// <summary>The endpoint of an abstract socket name (the kernel's namespace of names that start with a NUL byte:
    /// no file, gone with the socket).</summary>
    public static UnixDomainSocketEndPoint AbstractEndPoint(string name) => new("\0" + name);

    /// <summary>
    /// The primary's side: connects to the backup's data port, authenticates TLS when <paramref name="tls"/> is set
    /// (the backup's certificate checked as on the gRPC channel), presents the ticket with its proof and waits for
    /// the backup's answer, all within <paramref name="timeout"/>.
    /// </summary>
    /// <exception cref="ReplicationRefusedException">The backup refused the ticket, or its certificate is not trusted.</exception>
    /// <exception cref="IOException">The link could not be opened in time.</exception>
    public static DataLink Connect(string host, int port, ReplicationTls? tls, byte[] secret, byte[] ticket, TimeSpan timeout)
    {
        var addr = host is "localhost" ? IPAddress.Loopback : IPAddress.TryParse(host, out var a) ? a : Dns.GetHostAddresses(host)[0];
        return Open(NewSocket(addr.AddressFamily), new IPEndPoint(addr, port), $"{host}:{port}", host, tls, secret, ticket, timeout);
    }

    /// <summary>
    /// The primary's side of a same-host link: connects to the backup's abstract Unix socket <paramref name="name"/>
    /// (the Welcome's <c>data_socket</c>), then opens the link as <see cref="Connect"/> does (TLS checked against
    /// <paramref name="tlsHost"/>, the host of the backup's URL).
    /// </summary>
    /// <exception cref="LocalLinkUnreachableException">Nothing listens on that name here: the backup runs on another
    /// host or in another network namespace (nothing was sent; the ticket is still good for the TCP link).</exception>
    public static DataLink ConnectLocal(string name, string tlsHost, ReplicationTls? tls, byte[] secret, byte[] ticket, TimeSpan timeout)
    {
        if (name.Length == 0 || System.Text.Encoding.UTF8.GetByteCount(name) > MaxSocketNameBytes)
            throw new LocalLinkUnreachableException($"the backup named an unusable same-host socket ({name.Length} characters)");
        if (!IsDataSocketName(name))
            throw new LocalLinkUnreachableException("the backup named a same-host socket that is not a data link's (revirt-data-PID-RANDOM); nothing was connected");
        var socket = NewSocket(AddressFamily.Unix);
        try { socket.Connect(AbstractEndPoint(name)); }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable or SocketError.NetworkUnreachable or SocketError.AccessDenied)
        {
            // a connect to an abstract name answers at once (no handshake on the wire): refused means no such name here
            socket.Dispose();
            throw new LocalLinkUnreachableException($"nothing listens on the same-host socket @{name} here ({e.SocketErrorCode}): the backup runs on another host or network namespace");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return Open(socket, null, $"unix:@{name}", tlsHost, tls, secret, ticket, timeout);
    }

    /// <summary>Connects (unless <paramref name="ep"/> is null: connected already), then TLS, the opening and the answer.</summary>
    static DataLink Open(Socket socket, EndPoint? ep, string where, string tlsHost, ReplicationTls? tls, byte[] secret, byte[] ticket, TimeSpan timeout)
    {
        try
        {
            // a blocking connect (on a pool thread, to bound it): a socket that ever ran an asynchronous operation stays
            // non-blocking underneath, and each of its blocking reads that finds nothing then waits through .NET's
            // epoll thread, one more thread hop per acknowledgement
            if (ep != null)
            {
                var connect = Task.Run(() => socket.Connect(ep));
                if (!connect.Wait(timeout)) throw new IOException($"the backup's data link {where} did not accept a connection within {timeout.TotalMilliseconds:F0} ms");
            }
            socket.ReceiveTimeout = socket.SendTimeout = (int)timeout.TotalMilliseconds;
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            if (tls != null)
            {
                string? untrusted = null;
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                try
                {
                    ssl.AuthenticateAsClient(new SslClientAuthenticationOptions
                    {
                        TargetHost = tlsHost,
                        ClientCertificates = [tls.Identity],
                        RemoteCertificateValidationCallback = (_, cert, _, errors) => (untrusted = tls.VerifyServer(cert, errors)) == null,
                    });
                }
                catch (Exception e) when (e is AuthenticationException or IOException && untrusted != null)
                {
                    throw new ReplicationRefusedException($"mutual TLS on the data link: {untrusted}");
                }
                stream = ssl;
            }
            var link = new DataLink(socket, stream, ep == null ? where : null);
            var opening = new byte[OpeningBytes];
            Magic.CopyTo(opening);
            ticket.CopyTo(opening.AsSpan(8));
            Proof(secret, ticket).CopyTo(opening.AsSpan(8 + TicketBytes));
            link.WriteRaw(opening);
            var answer = link.Receive(BackupMessage.Parser, ReplicationProtocol.MaxBackupMessageBytes);
            if (answer.BodyCase == BackupMessage.BodyOneofCase.Refused) throw new ReplicationRefusedException(answer.Refused.Reason);
            if (answer.BodyCase != BackupMessage.BodyOneofCase.Ack) throw new ReplicationRefusedException($"protocol error: the data link answered {answer.BodyCase}");
            link.ReceiveTimeoutMs = 0;
            link.SendTimeoutMs = (int)timeout.TotalMilliseconds; // the owner sets the session's bound
            return link;
        }
        catch (Exception e) when (e is SocketException or AggregateException or EndOfStreamException or InvalidProtocolBufferException)
        {
            socket.Dispose();
            throw new IOException($"the backup's data link {where} could not be opened: {(e is AggregateException ag ? ag.InnerException?.Message : e.Message)}", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The backup's side of an accepted connection: TLS (the client's certificate must chain to the CA),
    /// then the opening. Returns the link and the ticket and proof it presented.</summary>
    internal static (DataLink Link, byte[] Ticket, byte[] Proof) Accept(Socket socket, ReplicationTls? tls, TimeSpan timeout, string? peer)
    {
        Tune(socket);
        socket.ReceiveTimeout = socket.SendTimeout = (int)timeout.TotalMilliseconds;
        Stream stream = new NetworkStream(socket, ownsSocket: false);
        if (tls != null)
        {
            var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
            ssl.AuthenticateAsServer(new SslServerAuthenticationOptions
            {
                ServerCertificate = tls.Identity,
                ClientCertificateRequired = true,
                // judged below with the reason, which a TLS alert could not carry
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            });
            stream = ssl;
        }
        var link = new DataLink(socket, stream, peer) { SendTimeoutMs = (int)timeout.TotalMilliseconds };
        if (tls != null && tls.Verify(((SslStream)stream).RemoteCertificate) is { } untrusted)
        {
            link.TrySend(new BackupMessage { Refused = new Refused { Reason = $"mutual TLS: {untrusted}" } });
            link.Dispose();
            throw new IOException($"mutual TLS: {untrusted}");
        }
        var opening = new byte[OpeningBytes];
        stream.ReadExactly(opening);
        if (!opening.AsSpan(0, 8).SequenceEqual(Magic))
        {
            link.Dispose();
            throw new IOException("not a data link opening");
        }
        return (link, opening[8..(8 + TicketBytes)], opening[(8 + TicketBytes)..]);
    }

    void WriteRaw(ReadOnlySpan<byte> bytes)
    {
        lock (_write)
        {
            if (_pulse is { } pulse) WritePulsed(pulse, bytes);
            else
            {
                _stream.Write(bytes);
                _stream.Flush();
            }
            Interlocked.Exchange(ref _lastWrite, Environment.TickCount64);
        }
    }

    /// <summary>A write while a pulse shares the socket: through the pulse's lock, in native code (errors as the
    /// stream reports them).</summary>
    void WritePulsed(LinkPulse pulse, ReadOnlySpan<byte> bytes)
    {
        if (Volatile.Read(ref _closed) != 0) throw new ObjectDisposedException(nameof(DataLink));
        long n = pulse.Write(bytes);
        if (n == bytes.Length) return;
        if (n == -PulseEAgain) throw new IOException("the send timed out", new SocketException((int)SocketError.TimedOut));
        if (n == -PulseEBadF) throw new ObjectDisposedException(nameof(DataLink));
        throw new IOException($"the data link broke ({(n < 0 ? $"errno {-n}" : "nothing more could be written")})", new SocketException(n < 0 ? (int)-n : (int)SocketError.Shutdown));
    }
    const int PulseEAgain = 11, PulseEBadF = 9;

    /// <summary>Stops the link's pulse (<see cref="StartPulse"/>): no pulse follows a message written after this
    /// returns (the goodbye). Returns it (its counters stay readable while the link is open), or null.</summary>
    public LinkPulse? StopPulse()
    {
        lock (_write)
        {
            _pulse?.Stop();
            return _pulse;
        }
    }

    // the liveness pulse on this link (a plain link of the primary's, once it runs: StartPulse)
    LinkPulse? _pulse;

    /// <summary>
    /// Starts the primary's liveness pulse on this link (<see cref="LinkPulse"/>): a <c>Pulse</c> message every
    /// <paramref name="intervalMs"/> ms from a native thread, while <see cref="LinkPulse.KeepAliveUntil"/> allows. Only
    /// on a plain link (a TLS link's bytes are the TLS stream's, which only managed code writes): null otherwise, or
    /// when it cannot start, with the reason in <paramref name="why"/>; the link then carries only the managed
    /// heartbeats. From here on every message is written under the pulse's lock.
    /// </summary>
    public LinkPulse? StartPulse(int intervalMs, int keepAliveMs, out string? why)
    {
        why = null;
        if (_stream is not NetworkStream) { why = "a TLS link (its bytes are written by the TLS stream only)"; return null; }
        lock (_write)
        {
            if (_closed != 0) { why = "the link is closed"; return null; }
            if (_pulse != null) { why = "a pulse runs already"; return null; }
            _pulse = LinkPulse.Start((int)_socket.Handle, intervalMs, keepAliveMs, out why);
            return _pulse;
        }
    }

    /// <summary>Writes one message (blocking, within <see cref="SendTimeoutMs"/>; any thread, messages are never
    /// interleaved). The message is encoded before this returns: bytes it wraps may be reused afterwards.</summary>
    /// <exception cref="LinkSendTimeoutException">The message could not be sent within the bound: the link is closed.</exception>
    /// <exception cref="IOException">The link broke or was closed.</exception>
    public void Send(IMessage message)
    {
        int size = 0;
        try
        {
            lock (_write)
            {
                size = message.CalculateSize();
                if (_out.Length < 4 + size) _out = new byte[Math.Max(4 + size, _out.Length * 2)];
                BinaryPrimitives.WriteInt32LittleEndian(_out, size);
                message.WriteTo(_out.AsSpan(4, size));
                WriteRaw(_out.AsSpan(0, 4 + size));
            }
        }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (IOException e) when (IsTimeout(e)) { throw SendTimedOut($"a message of {4 + size} bytes"); }
    }

    /// <summary>
    /// The two replicas read one CLOCK_MONOTONIC: a same-host link (a Unix socket reaches only its own host), where the
    /// batch path's messages carry their writer's clock so that the reader can time their way (--stats).
    /// </summary>
    public bool SharesClock => Kind == DataLinkKind.Unix;

    /// <summary>
    /// Writes a message prepared in place, length prefix included: <paramref name="length"/> bytes of
    /// <paramref name="buffer"/> from <paramref name="start"/> (<see cref="LinkWire.WriteBatchHead"/> in front of a
    /// batch's frames), in one write. Errors as <see cref="Send"/>.
    /// </summary>
    public void SendPrepared(byte[] buffer, int start, int length)
    {
        try { WriteRaw(buffer.AsSpan(start, length)); }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (IOException e) when (IsTimeout(e)) { throw SendTimedOut($"a message of {length} bytes"); }
    }

    /// <summary>A send made no progress within the bound: part of the message may have gone, so the stream cannot carry
    /// another one; the link is closed and the exception to throw names the bound.</summary>
    LinkSendTimeoutException SendTimedOut(string what)
    {
        string peer = _peer;
        Close();
        return new LinkSendTimeoutException($"{what} could not be sent on the data link to {peer} within {_sendTimeoutMs} ms (the peer stopped reading); the link is closed");
    }

    static bool IsTimeout(Exception? e)
    {
        for (; e != null; e = e.InnerException)
            if (e is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock }) return true;
        return false;
    }

    /// <summary>Sends unless the link is broken; false then.</summary>
    public bool TrySend(IMessage message)
    {
        try { Send(message); return true; }
        catch (IOException) { return false; }
    }

    /// <summary>Reads one message (one reader thread at a time). One read of the socket takes whatever has arrived,
    /// so the messages of a burst are parsed from memory (<see cref="HasBuffered"/>).</summary>
    /// <exception cref="EndOfStreamException">The peer closed the link.</exception>
    /// <exception cref="IOException">The link broke, was closed or timed out, or the peer sent an oversized or
    /// malformed message.</exception>
    public T Receive<T>(MessageParser<T> parser, int maxBytes) where T : IMessage<T>
    {
        try
        {
            int at = Next(maxBytes, out int size);
            return parser.ParseFrom(_in, at, size);
        }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (InvalidProtocolBufferException e) { throw new IOException($"the peer sent a malformed message: {e.Message}", e); }
    }

    /// <summary>
    /// Reads one of the primary's messages (the backup's reader thread): a batch is read in place (<see
    /// cref="LinkWire.TryReadBatch"/>: true, <paramref name="batch"/> set, its frames valid until the next read of this
    /// link), any other message through the generated parser (false, <paramref name="other"/> set). Errors as
    /// <see cref="Receive"/>.
    /// </summary>
    public bool ReceiveBatch(int maxBytes, out BatchView batch, out PrimaryMessage? other)
    {
        try
        {
            int at = Next(maxBytes, out int size);
            other = null;
            if (LinkWire.TryReadBatch(new ReadOnlyMemory<byte>(_in, at, size), out batch)) return true;
            other = PrimaryMessage.Parser.ParseFrom(_in, at, size);
            return false;
        }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (InvalidProtocolBufferException e) { throw new IOException($"the peer sent a malformed message: {e.Message}", e); }
    }

    /// <summary>
    /// Reads one of the backup's messages (the primary's ack thread): an ack is read in place (<see
    /// cref="LinkWire.TryReadAck"/>: true, <paramref name="ack"/> set), any other message through the generated parser
    /// (false, <paramref name="other"/> set). Errors as <see cref="Receive"/>.
    /// </summary>
    public bool ReceiveAck(int maxBytes, out AckView ack, out BackupMessage? other)
    {
        try
        {
            int at = Next(maxBytes, out int size);
            other = null;
            if (LinkWire.TryReadAck(_in.AsSpan(at, size), out ack)) return true;
            other = BackupMessage.Parser.ParseFrom(_in, at, size);
            return false;
        }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (InvalidProtocolBufferException e) { throw new IOException($"the peer sent a malformed message: {e.Message}", e); }
    }

    /// <summary>Reads the next message's frame: returns where its encoding starts in the buffer (its
    /// <paramref name="size"/> bytes stay there until the next read) and moves past it.</summary>
    int Next(int maxBytes, out int size)
    {
        Fill(4);
        size = BinaryPrimitives.ReadInt32LittleEndian(_in.AsSpan(_inPos));
        if (size < 0 || size > maxBytes) throw new IOException($"the peer sent a message of {size} bytes (at most {maxBytes})");
        Fill(4 + size);
        int at = _inPos + 4;
        _inPos += 4 + size;
        return at;
    }

    /// <summary>
    /// Sends an acknowledgement (BackupMessage { Ack }) encoded by hand (<see cref="LinkWire.WriteAck"/>): no message
    /// object, one write. Errors as <see cref="Send"/>.
    /// </summary>
    public void SendAck(ulong held, long echoUnixMs, ulong replayed, uint transitUs = 0, uint holdUs = 0)
    {
        Span<byte> frame = stackalloc byte[4 + LinkWire.MaxAckBytes];
        int size = LinkWire.WriteAck(frame[4..], held, echoUnixMs, replayed, transitUs, holdUs, SharesClock ? LinkWire.MonotonicNs() : 0);
        BinaryPrimitives.WriteInt32LittleEndian(frame, size);
        try { WriteRaw(frame[..(4 + size)]); }
        catch (ObjectDisposedException e) { throw new IOException("the data link is closed", e); }
        catch (IOException e) when (IsTimeout(e)) { throw SendTimedOut("an acknowledgement"); }
    }

    /// <summary>Sends an acknowledgement unless the link is broken; false then.</summary>
    public bool TrySendAck(ulong held, long echoUnixMs, ulong replayed, uint transitUs = 0, uint holdUs = 0)
    {
        try { SendAck(held, echoUnixMs, replayed, transitUs, holdUs); return true; }
        catch (IOException) { return false; }
    }

    /// <summary>Reads until at least <paramref name="need"/> bytes are buffered from _inPos on.</summary>
    void Fill(int need)
    {
        if (_inEnd - _inPos >= need) return;
        if (_in.Length < need) // grow (a large message); keep what is buffered
        {
            var bigger = new byte[Math.Max(need, _in.Length * 2)];
            _in.AsSpan(_inPos, _inEnd - _inPos).CopyTo(bigger);
            _in = bigger;
            _inEnd -= _inPos;
            _inPos = 0;
        }
        else if (_in.Length - _inPos < need)
        {
            _in.AsSpan(_inPos, _inEnd - _inPos).CopyTo(_in);
            _inEnd -= _inPos;
            _inPos = 0;
        }
        while (_inEnd - _inPos < need)
        {
            if (_pollBeforeRead) AwaitData();
            int n = _stream.Read(_in, _inEnd, _in.Length - _inEnd);
            if (n == 0) throw new EndOfStreamException("the peer closed the data link");
            _inEnd += n;
        }
    }

    /// <summary>
    /// Waits until the socket has something to read (data, the end, an error), within the receive time-out, in poll(2)
    /// rather than in the read itself. Why: a Unix stream socket has one wait queue for its readers and its writers, and
    /// every message the peer consumes of what this end sent wakes that queue to say there is room to write — a thread
    /// blocked in a read here was woken (and put back to sleep by the kernel) for messages this end sent: each ack the
    /// primary read cost the backup's link thread a wake-up and a context switch for nothing (kvserver: 1.9 -> 1.1
    /// voluntary switches per batch). A poll for input sleeps through those (its wake-up looks at the events); TCP
    /// wakes a writer only when one ran out of room, so a TCP link reads directly.
    /// </summary>
    /// <exception cref="IOException">Nothing arrived within the receive time-out (inner: <see cref="SocketError.TimedOut"/>,
    /// as a timed-out read reports it).</exception>
    void AwaitData()
    {
        int timeoutUs = _receiveTimeoutMs <= 0 ? -1 : _receiveTimeoutMs >= int.MaxValue / 1000 ? int.MaxValue : _receiveTimeoutMs * 1000;
        if (!_socket.Poll(timeoutUs, SelectMode.SelectRead))
            throw new IOException($"nothing arrived on the data link within {_receiveTimeoutMs} ms", new SocketException((int)SocketError.TimedOut));
    }

    /// <summary>A whole message has been read from the socket already: the next <see cref="Receive"/> does not wait.
    /// (Reader thread only.)</summary>
    public bool HasBuffered => _inEnd - _inPos >= 4 && _inEnd - _inPos >= 4 + BinaryPrimitives.ReadInt32LittleEndian(_in.AsSpan(_inPos));

    /// <summary>True when something can be read within <paramref name="ms"/> ms: a message, the end of the link, or an
    /// error (which the next <see cref="Receive"/> reports).</summary>
    public bool WaitReadable(int ms)
    {
        if (_inEnd > _inPos) return true;
        try { return _socket.Poll(Math.Max(0, ms) * 1000L > int.MaxValue ? int.MaxValue : Math.Max(0, ms) * 1000, SelectMode.SelectRead); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { return true; }
    }

    /// <summary>No more messages from this side (the peer reads the end after what was sent).</summary>
    public void ShutdownSend()
    {
        try { _socket.Shutdown(SocketShutdown.Send); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    /// <summary>
    /// Ends this side after its last message (a refusal): no more sends (FIN), then what the peer still sends is read
    /// and dropped until it closes its side or <paramref name="bound"/> passes. Closing a socket with unread bytes
    /// (heartbeats, a snapshot's chunks in flight) makes the kernel reset the connection, and a peer that is reset can
    /// lose the last message before reading it: a refused standby's peer then saw a broken link, not the refusal.
    /// The reader thread only.
    /// </summary>
    public void EndAfterLastMessage(TimeSpan bound)
    {
        ShutdownSend();
        var deadline = Environment.TickCount64 + (long)bound.TotalMilliseconds;
        var drop = new byte[16 * 1024];
        try
        {
            while (true)
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0) return;
                _socket.ReceiveTimeout = (int)left;
                if (_stream.Read(drop) == 0) return;
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
    }

    /// <summary>Breaks the link: a thread blocked reading or writing it returns with an error (any thread, once).</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        // a pulse's writers use the socket's descriptor number: no writer may be inside a write when it closes. The
        // shutdown ended any blocked write, so the write lock comes at once; if it does not, the pulse's block is left
        // (its thread ends at its next write, on its own duplicate of the socket)
        if (_pulse is { } pulse && Monitor.TryEnter(_write, CloseWaitMs))
        {
            try { pulse.Release(); _pulse = null; }
            finally { Monitor.Exit(_write); }
        }
        try { _stream.Dispose(); } catch (Exception) { }
        _socket.Dispose();
    }

    public void Dispose() => Close();

    /// <summary>How long <see cref="Close"/> waits for a writer to leave the pulse's lock.</summary>
    const int CloseWaitMs = 5000;
}

/// <summary>The backup's same-host socket cannot be reached from here (<see cref="DataLink.ConnectLocal"/>): nothing was
/// sent on it.</summary>
public sealed class LocalLinkUnreachableException(string message) : IOException(message);

/// <summary>
/// Which transport a replica uses for the data links it opens and offers (<c>--data-link</c>, on `primary protect` and
/// `backup listen`, default <see cref="Auto"/> on both: on a quiet 2-core host a kvserver pair over the socket served
/// 64 connections 15 % faster than over loopback TCP and 16 connections as fast): <see cref="Auto"/> the same-host Unix socket when the peer offers one and it is reachable (same
/// host, same network namespace) and no relay was named, TCP otherwise; <see cref="Unix"/> only the Unix socket (a
/// primary refuses a backup it cannot reach so, a backup refuses a primary's TCP link); <see cref="Tcp"/> never the
/// Unix socket (a backup does not offer it).
/// </summary>
public enum DataLinkKind { Auto, Unix, Tcp }

public static class DataLinkKinds
{
    public const string Help = "Transport of the data link (the log and the acks after the handshake): auto takes a Unix-domain socket when both replicas run on one host and network namespace (the backup names an abstract socket in its welcome; less kernel CPU per message than loopback TCP: docs/PERFORMANCE-replication.md; the default on both replicas), TCP otherwise or when --backup-data names a relay (a relay, a route or a firewall between two replicas in one network namespace cannot cut the socket: replicas meant to be separated by a network run in separate namespaces or hosts, or use tcp); unix insists on the same-host socket (a primary refuses a backup it cannot reach so; a backup refuses TCP links); tcp never uses it (a backup does not offer it). Authentication is the same on both: the welcome's one-time ticket with the token's proof, or mutual TLS.";

    public static DataLinkKind Parse(string text) => text switch
    {
        "auto" => DataLinkKind.Auto,
        "unix" => DataLinkKind.Unix,
        "tcp" => DataLinkKind.Tcp,
        _ => throw new ArgumentException($"--data-link {text}: expected auto, unix or tcp"),
    };

    public static string Name(this DataLinkKind k) => k switch { DataLinkKind.Unix => "unix", DataLinkKind.Tcp => "tcp", _ => "auto" };
}

/// <summary>A send on the data link made no progress within its bound (<see cref="DataLink.SendTimeoutMs"/>); the link
/// is closed. The message names the bound, so whoever reports the loss of the peer says why.</summary>
public sealed class LinkSendTimeoutException(string message) : IOException(message);

/// <summary>
/// The backup's data port: accepts links on a thread of its own and opens each on a thread of its own (at most
/// <see cref="MaxOpening"/> at a time, each bounded by the handshake time-out; a stranger costs one short-lived
/// thread), then hands it to <c>open</c>, which answers with a refusal reason or runs the link on that thread.
/// </summary>
public sealed class DataListener : IDisposable
{
    public const int MaxOpening = 4;
    readonly Socket _listener;
    readonly ReplicationTls? _tls;
    readonly Func<DataLink, byte[], byte[], string?> _open;
    readonly TextWriter _log;
    int _opening, _closed;

    /// <param name="open">Given the link, its ticket and proof: returns a refusal reason (the link is refused and
    /// closed), or null after running the link to its end.</param>
    public DataListener(IPAddress address, int port, ReplicationTls? tls, Func<DataLink, byte[], byte[], string?> open, TextWriter log)
        : this(new IPEndPoint(address, port), tls, open, log) { }

    /// <summary>A listener on the abstract Unix socket <paramref name="socketName"/> (a same-host link, <see cref="DataLink.ConnectLocal"/>).</summary>
    public DataListener(string socketName, ReplicationTls? tls, Func<DataLink, byte[], byte[], string?> open, TextWriter log)
        : this(DataLink.AbstractEndPoint(socketName), tls, open, log) => SocketName = socketName;

    DataListener(EndPoint endPoint, ReplicationTls? tls, Func<DataLink, byte[], byte[], string?> open, TextWriter log)
    {
        _tls = tls;
        _open = open;
        _log = log;
        bool unix = endPoint.AddressFamily == AddressFamily.Unix;
        _listener = new Socket(endPoint.AddressFamily, SocketType.Stream, unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        if (!unix) _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(endPoint);
        _listener.Listen(16);
        new Thread(AcceptLoop) { Name = "data-accept", IsBackground = true }.Start();
    }

    /// <summary>The TCP port (0 for a Unix socket listener).</summary>
    public int Port => _listener.LocalEndPoint is IPEndPoint ip ? ip.Port : 0;

    /// <summary>The abstract socket name of a same-host listener (null: TCP).</summary>
    public string? SocketName { get; }

    void AcceptLoop()
    {
        // the loop owns the listener: it polls and checks for Dispose rather than having another thread close a
        // socket it is blocked on
        using var listener = _listener;
        while (Volatile.Read(ref _closed) == 0)
        {
            Socket c;
            try
            {
                if (!listener.Poll(200_000, SelectMode.SelectRead)) continue;
                c = listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            if (Interlocked.Increment(ref _opening) > MaxOpening) { Interlocked.Decrement(ref _opening); c.Dispose(); continue; }
            new Thread(() => Serve(c)) { Name = "data-link", IsBackground = true }.Start();
        }
    }

    void Serve(Socket c)
    {
        DataLink link;
        byte[] ticket, proof;
        try { (link, ticket, proof) = DataLink.Accept(c, _tls, ReplicationProtocol.HandshakeTimeout, SocketName != null ? $"unix:@{SocketName}" : null); }
        catch (Exception e)
        {
            Interlocked.Decrement(ref _opening);
            _log.WriteLine($"backup: refused a data link from {SafePeer(c)}: {e.Message}");
            c.Dispose();
            return;
        }
        Interlocked.Decrement(ref _opening);
        ThreadPools.RaiseCurrentThread(); // this thread holds and acknowledges every batch
        try
        {
            if (_open(link, ticket, proof) is { } refusal)
            {
                _log.WriteLine($"backup: refused a data link from {link.Peer}: {refusal}");
                link.TrySend(new BackupMessage { Refused = new Refused { Reason = refusal } });
            }
        }
        finally { link.Close(); }
    }

    string SafePeer(Socket s) { if (SocketName != null) return $"unix:@{SocketName}"; try { return s.RemoteEndPoint?.ToString() ?? "?"; } catch (Exception) { return "?"; } }

    /// <summary>Stops accepting (the accept thread closes the port within 200 ms).</summary>
    public void Dispose() => Volatile.Write(ref _closed, 1);
}
