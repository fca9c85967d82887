using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using ReVirt.Linux;
using ReVirt.Protocol;

namespace ReVirt.Replication;

/// <summary>Constants and checks shared by both ends of the replication protocol.</summary>
public static class ReplicationProtocol
{
    /// <summary>Version of shared/Protocol/replication.proto spoken by this build (4: a snapshot is streamed, its
    /// length known only in its last chunk, <c>SnapshotChunk.last</c>; 5: a joining standby may go live only once it
    /// holds the record a <c>JoinPoint</c> names, the live replica releasing output unheld until then).</summary>
    public const uint Version = 5;

    /// <summary>
    /// Largest gRPC message either side accepts (both directions, every stream). A batch holds up to 1 MiB of frames
    /// plus at most one larger record (the kernel caps a single read at 16 MiB and getrandom at 32 MiB); a peer that
    /// has not authenticated can make the backup buffer at most this much, once (handshakes are one at a time).
    /// </summary>
    public const int MaxMessageBytes = 40 << 20;

    /// <summary>Largest message the backup sends (acks, challenges, refusals): what the primary accepts.</summary>
    public const int MaxBackupMessageBytes = 64 << 10;

    /// <summary>Longest time a peer may take from connecting to proving the secret.</summary>
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Default silence after which a backup declares its primary lost (<c>backup listen --primary-silence-ms</c>):
    /// from the session's first message on, a primary sends something on the data link (a batch, or a heartbeat when no
    /// batch went out) at least every <see cref="HeartbeatInterval"/>, so a silence this long means the primary (its process or its link) is gone —
    /// noticed without waiting for the kernel to close a killed process's connection (which comes only after the
    /// teardown of its memory) and well before the handshake's time-out. Measured on a loaded 2-core machine (load
    /// 30-40, autogroup scheduling), a live primary fell silent for more than 150 ms and, while starting, more than
    /// 500 ms (its managed threads all wait while a starved thread finishes a garbage collection), so shorter bounds
    /// took over from healthy primaries there (docs/PERFORMANCE-replication.md, "Detection"); 1 s is the bound the
    /// project's failover tests have always run with on such machines. A quiet machine can use a much shorter one.
    /// </summary>
    public const int DefaultPrimarySilenceMs = 1000;

    /// <summary>Heartbeats a primary sends per silence bound: one lost time slice does not look like a death.</summary>
    public const int HeartbeatsPerSilence = 8;

    /// <summary>The primary's heartbeat interval: its own <paramref name="configuredMs"/> (<c>--heartbeat-ms</c>), shortened
    /// so that the backup's silence bound (from the Welcome; 0: not said) holds <see cref="HeartbeatsPerSilence"/> of them.</summary>
    public static int HeartbeatInterval(int configuredMs, uint silenceMs) =>
        silenceMs == 0 ? Math.Max(1, configuredMs) : Math.Clamp((int)(silenceMs / HeartbeatsPerSilence), 1, Math.Max(1, configuredMs));

    /// <summary>
    /// How long a send on the data link may make no progress before the link ends (<see cref="DataLink.SendTimeoutMs"/>):
    /// the session's time-out, but at least <see cref="HandshakeTimeout"/>. A live peer can stop reading for a while
    /// and still answer: a standby restoring a snapshot acknowledges from its link thread without reading, while the
    /// live replica's log fills both sides' buffers. A peer that stops answering too is lost after the time-out by
    /// its silence (which closes the link and ends a blocked send with it); this bound ends a send that neither ends.
    /// </summary>
    public static int SendBoundMs(int timeoutMs) => Math.Max(timeoutMs, (int)HandshakeTimeout.TotalMilliseconds);

    /// <summary>Fewest bytes a token file must hold: a secret anyone could guess is no authentication.</summary>
    public const int MinSecretBytes = 16;

    /// <summary>Reads a shared secret (the whole file, surrounding whitespace trimmed, at most 4 KiB); empty without a file.</summary>
    public static byte[] ReadSecret(string? tokenFile)
    {
        if (string.IsNullOrEmpty(tokenFile)) return [];
        var info = new FileInfo(tokenFile);
        if (!info.Exists) throw new FileNotFoundException($"token file {tokenFile}: no such file", tokenFile);
        if (info.Length > 4096) throw new IOException($"token file {tokenFile}: {info.Length} bytes; a token is at most 4096");
        var secret = Encoding.UTF8.GetBytes(File.ReadAllText(tokenFile).Trim());
        if (secret.Length < MinSecretBytes)
            throw new IOException($"token file {tokenFile}: the secret has {secret.Length} bytes; use at least {MinSecretBytes} (e.g. `head -c 32 /dev/urandom | base64 > {tokenFile}`)");
        return secret;
    }

    /// <summary>Writes a fresh random secret to a new file readable by its owner only (the drill's pairs use one).</summary>
    public static void WriteNewSecret(string tokenFile)
    {
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var f = new FileStream(tokenFile, options);
        f.Write(Encoding.ASCII.GetBytes(Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))));
    }

    public static byte[] Nonce() => RandomNumberGenerator.GetBytes(32);

    /// <summary>
    /// Proof that the primary holds the secret: HMAC-SHA256(secret, "revirt-repl-v1" | client nonce | server
    /// nonce | SHA-256(hello)). The secret never travels; the server's fresh nonce makes a recorded proof useless.
    /// </summary>
    public static byte[] Proof(byte[] secret, Hello hello, byte[] serverNonce)
    {
        using var h = new HMACSHA256(secret);
        var ms = new MemoryStream();
        ms.Write("revirt-repl-v1"u8);
        ms.Write(hello.ClientNonce.Span);
        ms.Write(serverNonce);
        ms.Write(SHA256.HashData(hello.ToByteArray()));
        return h.ComputeHash(ms.ToArray());
    }

    public static bool ProofMatches(byte[] secret, Hello hello, byte[] serverNonce, ReadOnlySpan<byte> proof)
        => CryptographicOperations.FixedTimeEquals(Proof(secret, hello, serverNonce), proof);
}

/// <summary>
/// Digest of a guest root directory (relative paths, types, symlink targets and file contents, in ordinal path
/// order), so that the handshake can check that both replicas start from identical roots. The host's own "/" is
/// not digested (it is the same file system for both roles on one machine, and far too big): the digest is empty
/// and the check is skipped.
/// </summary>
public static class RootDigest
{
    const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000, O_DIRECTORY = 0x10000, O_PATH = 0x200000;
    const uint S_IFMT = 0xF000, S_IFREG = 0x8000;

    /// <summary>File systems whose files describe the running machine, not stored content (reading them may never
    /// end: /proc/kcore, a pipe of a process): their mount points are digested by type, never read.</summary>
    static readonly HashSet<long> PseudoFileSystems =
    [
        0x9fa0, /* proc */ 0x62656572, /* sysfs */ 0x1cd1, /* devpts */ 0x27e0eb, /* cgroup */ 0x63677270, /* cgroup2 */
        0x64626720, /* debugfs */ 0x74726163, /* tracefs */ 0x73636673, /* securityfs */ unchecked((long)0xcafe4a11), /* bpf */
    ];

    /// <summary>
    /// The digest of a root directory tree. Only regular files are read (opened without blocking and checked on the
    /// open descriptor); a FIFO, a socket or a device node counts by its type and device number, a mounted pseudo
    /// file system (/proc, /sys, ...) by its type; so a root holding /dev nodes, a FIFO or a mounted /proc is
    /// digested in time proportional to its stored files, never read without end.
    /// </summary>
    /// <exception cref="IOException">A directory or file cannot be read.</exception>
    public static byte[] Compute(string root)
    {
        string full = Path.GetFullPath(root);
        if (full == "/") return [];
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 16];
        var st = new byte[144];
        void Str(string s) { var b = Encoding.UTF8.GetBytes(s); h.AppendData(BitConverter.GetBytes(b.Length)); h.AppendData(b); }
        void Walk(string dir, string rel)
        {
            if (FileSystemType(dir) is long fsType && PseudoFileSystems.Contains(fsType)) { Str($"P{rel}:{fsType:x}"); return; }
            var entries = new DirectoryInfo(dir).GetFileSystemInfos();
            Array.Sort(entries, (a, b) => string.CompareOrdinal(a.Name, b.Name));
            foreach (var e in entries)
            {
                string r = rel + "/" + e.Name;
                if (e.LinkTarget != null) { Str("L" + r); Str(e.LinkTarget); continue; }
                if (e is DirectoryInfo d) { Str("D" + r); Walk(d.FullName, r); continue; }
                long fd = Open(e.FullName, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | 0x100 /* O_NOCTTY */);
                if (fd < 0) throw new IOException($"{e.FullName}: cannot open (errno {-fd})");
                using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle((IntPtr)fd, ownsHandle: true);
                if (Fstat(fd, st) < 0) throw new IOException($"{e.FullName}: cannot stat");
                uint mode = BitConverter.ToUInt32(st, 24);
                if ((mode & S_IFMT) != S_IFREG)
                {
                    Str($"S{r}:{mode & S_IFMT:x}:{BitConverter.ToUInt64(st, 40):x}"); // type and st_rdev
                    continue;
                }
                Str("F" + r);
                using var fs = new FileStream(handle, FileAccess.Read, 1, isAsync: false);
                h.AppendData(BitConverter.GetBytes(fs.Length));
                int n;
                while ((n = fs.Read(buf)) > 0) h.AppendData(buf, 0, n);
            }
        }
        Walk(full, "");
        return h.GetHashAndReset();
    }

    static long Open(string path, int flags) => HostSys.WithPath(Nr.openat, path, p => HostSys.Call(Nr.openat, AT_FDCWD, p, flags));

    static unsafe long Fstat(long fd, byte[] st)
    {
        fixed (byte* s = st) return HostSys.Call(Nr.fstat, fd, (long)s);
    }

    const int AT_FDCWD = -100;

    /// <summary>statfs f_type of the file system a directory is on; null when it cannot be asked.</summary>
    static unsafe long? FileSystemType(string dir)
    {
        var buf = new byte[120];
        long r = HostSys.WithPath(Nr.statfs, dir, p => { fixed (byte* b = buf) return HostSys.Call(Nr.statfs, p, (long)b); });
        return r < 0 ? null : BitConverter.ToInt64(buf, 0);
    }
}

/// <summary>
/// Which directory of which running machine a guest root is. Two replicas whose roots have the same identity would
/// both apply the guest's file writes to the same files (a protected guest appending 5 lines would leave 10).
/// </summary>
public static class RootIdentities
{
    public static RootIdentity Of(string root)
    {
        string full = Path.GetFullPath(root);
        var (dev, ino) = DeviceAndInode(full);
        return new RootIdentity { HostId = HostId.Value, Device = dev, Inode = ino, Path = full };
    }

    /// <summary>True when both name the same directory on the same running machine.</summary>
    public static bool Same(RootIdentity? a, RootIdentity? b)
        => a != null && b != null && a.HostId.Length > 0 && a.HostId == b.HostId && a.Device == b.Device && a.Inode == b.Inode;

    /// <summary>The machine's id and its boot id: equal for two processes on one running machine (or container host).</summary>
    static readonly Lazy<string> HostId = new(() =>
    {
        static string Read(string p) { try { return File.ReadAllText(p).Trim(); } catch (IOException) { return ""; } catch (UnauthorizedAccessException) { return ""; } }
        return $"{Read("/etc/machine-id")}/{Read("/proc/sys/kernel/random/boot_id")}/{Environment.MachineName}";
    });

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "syscall", SetLastError = true)]
    static extern unsafe long syscall4(long nr, long a1, long a2, long a3, long a4);

    static unsafe (ulong Dev, ulong Ino) DeviceAndInode(string path)
    {
        const int newfstatat = 262, AT_FDCWD = -100;
        var st = new byte[144];
        var p = Encoding.UTF8.GetBytes(path + "\0");
        long r;
        fixed (byte* sp = st) fixed (byte* pp = p) r = syscall4(newfstatat, AT_FDCWD, (long)pp, (long)sp, 0);
        if (r != 0) return (0, 0);
        return (BitConverter.ToUInt64(st, 0), BitConverter.ToUInt64(st, 8));
    }
}

/// <summary>The backup refused this primary (or the primary gave up on the handshake); the message says why.</summary>
public sealed class ReplicationRefusedException : Exception
{
    public ReplicationRefusedException(string message) : base(message) { }
}
