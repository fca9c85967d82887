using System.Security.Cryptography;

namespace ReVirt.Log;

/// <summary>
/// The hashes by which a log names its whole content and its program, of the kind its format version defines: the
/// running digest of every byte before the <see cref="End"/> record (the writer's and every reader's) and the
/// header's program hash (<see cref="LogHeader.ProgramHash"/>). Log format v6 uses XXH3-128 (<see cref="Xxh128"/>)
/// for both; v2-v5 used SHA-256, which this build still computes to read their logs.
/// </summary>
/// <remarks>
/// Why v6 changed: SHA-256 is the one thing that made a recording or a replay load OpenSSL (libssl, libcrypto, its
/// configuration file and .NET's cryptography assembly and shim), a fixed cost of about 10 ms of CPU in every run,
/// which for a guest of a few hundred milliseconds was most of what recording adds; XXH3-128 is precompiled code of
/// our own. What is given up is collision resistance against a crafted input: neither hash is keyed, so anyone able
/// to change a log can recompute its End digest either way (the End record detects damage and truncation, not
/// forgery), and a program file crafted to collide with a recorded one on 128 bits is what a replay no longer refuses
/// (docs/SECURITY.md: a faithful replay proves the replayer's files hash to the recorded values).
/// </remarks>
public abstract class LogDigest : IDisposable
{
    /// <summary>The first format version whose End digest and program hash are XXH3-128.</summary>
    public const ushort Xxh128Since = 6;

    /// <summary>A running digest, empty, of the kind a log of <paramref name="version"/> carries.</summary>
    public static LogDigest ForVersion(ushort version) => version >= Xxh128Since ? new Xxh128Digest() : new Sha256Digest();

    /// <summary>The End digest's length in a log of <paramref name="version"/> (16 or 32 bytes).</summary>
    public static int LengthFor(ushort version) => version >= Xxh128Since ? Xxh128.HashLength : SHA256.HashSizeInBytes;

    /// <summary>The hash's name in messages and dumps ("xxh128", "sha256").</summary>
    public static string NameFor(ushort version) => version >= Xxh128Since ? "xxh128" : "sha256";

    /// <summary>
    /// The program hash of a log of <paramref name="version"/> (the header's field is 32 bytes in every version): v6
    /// the XXH3-128 of <paramref name="program"/> in canonical form followed by 16 zero bytes, earlier versions its SHA-256.
    /// </summary>
    public static byte[] ProgramHash(ReadOnlySpan<byte> program, ushort version)
    {
        if (version < Xxh128Since) return Sha256Digest.Of(program);
        var h = new byte[LogHeader.ProgramHashLength];
        Xxh128.Hash(program, h);
        return h;
    }

    /// <summary>The v6+ program hash (<see cref="ProgramHash(ReadOnlySpan{byte}, ushort)"/>) of the bytes appended to
    /// <paramref name="program"/> (a program image hashed as it was read).</summary>
    public static byte[] ProgramHash(Xxh128 program)
    {
        var h = new byte[LogHeader.ProgramHashLength];
        program.GetCurrentHash(h);
        return h;
    }

    /// <summary>The program hash (<see cref="ProgramHash(ReadOnlySpan{byte}, ushort)"/>) of a stream's remaining bytes.</summary>
    public static byte[] ProgramHash(Stream program, ushort version)
    {
        if (version < Xxh128Since) return Sha256Digest.Of(program);
        var x = new Xxh128();
        var buf = new byte[1 << 16];
        int n;
        while ((n = program.Read(buf)) > 0) x.Append(buf.AsSpan(0, n));
        return ProgramHash(x);
    }

    /// <summary>Appends bytes of the log to what is hashed.</summary>
    public abstract void Append(ReadOnlySpan<byte> data);

    /// <summary>The digest of everything appended so far (<see cref="LengthFor"/> bytes); appending may go on.</summary>
    public abstract byte[] Current();

    public virtual void Dispose() { }

    sealed class Xxh128Digest : LogDigest
    {
        readonly Xxh128 _h = new();

        public override void Append(ReadOnlySpan<byte> data) => _h.Append(data);

        public override byte[] Current() => _h.GetCurrentHash();
    }

    /// <summary>SHA-256 through the platform's library, fed in chunks of <see cref="Chunk"/>: a log is appended a record
    /// at a time (a recording of md5sum 16 MB appends 4,100), and one call into the library per chunk costs less than
    /// one per record.</summary>
    sealed class Sha256Digest : LogDigest
    {
        const int Chunk = 64 * 1024;
        readonly IncrementalHash _h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        readonly byte[] _pending = new byte[Chunk];
        int _pendingLength;

        public override void Append(ReadOnlySpan<byte> data)
        {
            if (data.Length > Chunk - _pendingLength)
            {
                Drain();
                if (data.Length >= Chunk) { _h.AppendData(data); return; }
            }
            data.CopyTo(_pending.AsSpan(_pendingLength));
            _pendingLength += data.Length;
        }

        public override byte[] Current()
        {
            Drain();
            return _h.GetCurrentHash();
        }

        void Drain()
        {
            if (_pendingLength == 0) return;
            _h.AppendData(_pending, 0, _pendingLength);
            _pendingLength = 0;
        }

        public override void Dispose() => _h.Dispose();

        // (SHA-256 is called only from here, so that logs of v6 never load the library)
        public static byte[] Of(ReadOnlySpan<byte> data) => SHA256.HashData(data);

        public static byte[] Of(Stream data) => SHA256.HashData(data);
    }
}
