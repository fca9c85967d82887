using System.Buffers.Binary;
using ReVirt.Cpu;
using ReVirt.Memory;

namespace ReVirt.Abi;

/// <summary>
/// What a machine derives from a program file, kept for every process of the machine that runs the same file: the
/// file's bytes and digest (an execve of a file already seen neither reads nor hashes it again), the loaded image
/// as a template of pinned frames (<see cref="GuestMemory.ToTemplate"/>) mapped copy-on-write into each process
/// instead of being built and copied again, and the blocks decoded from those frames (<see cref="Code"/>).
///
/// The contract: a file is taken from the cache only when it is the same file (device, inode, size, modification
/// and change times) and it was last changed before shortly before this process started
/// (<see cref="FileRef.OldRegular"/>), the condition under which a recording may log a file by reference: a file
/// that could change under the machine is read and hashed on every execve, as before. What the cache holds is the
/// same bytes the file would give, so a run with it and one without are the same run, and a replay may use its own.
/// Bounded (<see cref="MaxFiles"/>, <see cref="MaxBytes"/>): beyond the bounds files are read every time.
/// One machine's processes run on one host thread at a time, so the cache needs no lock.
/// </summary>
public sealed class ImageCache : IDisposable
{
    public const int MaxFiles = 64;
    public const long MaxBytes = 256L << 20;

    /// <summary>Identity of a stable regular file, from its stat buffer. A class, so the cache's dictionary is an
    /// instantiation over references whose code the framework's ReadyToRun image holds (no JIT at start-up).</summary>
    public sealed record FileIdentity(ulong Dev, ulong Ino, long Size, long MtimeNs, long CtimeNs)
    {
        /// <summary>The identity of the file of a stat buffer when the file may be cached (see the contract).</summary>
        public static FileIdentity? OfStable(ReadOnlySpan<byte> st) => !FileRef.OldRegular(st) ? null : new(
            StDev(st), StIno(st), StSize(st), StMtimeNs(st), FileRef.StCtimeNs(st));

        /// <summary>Whether a stat buffer shows this file unchanged (no allocation: once per read).</summary>
        public bool Matches(ReadOnlySpan<byte> st)
            => StIno(st) == Ino && StDev(st) == Dev && FileRef.StCtimeNs(st) == CtimeNs && StMtimeNs(st) == MtimeNs && StSize(st) == Size;

        static ulong StDev(ReadOnlySpan<byte> st) => BinaryPrimitives.ReadUInt64LittleEndian(st);
        static ulong StIno(ReadOnlySpan<byte> st) => BinaryPrimitives.ReadUInt64LittleEndian(st[8..]);
        static long StSize(ReadOnlySpan<byte> st) => BinaryPrimitives.ReadInt64LittleEndian(st[48..]);
        static long StMtimeNs(ReadOnlySpan<byte> st) => BinaryPrimitives.ReadInt64LittleEndian(st[88..]) * 1_000_000_000 + BinaryPrimitives.ReadInt64LittleEndian(st[96..]);
    }

    sealed class Entry(ReadOnlyMemory<byte> bytes)
    {
        public readonly ReadOnlyMemory<byte> Bytes = bytes;
        public byte[]? Digest;
        /// <summary>Templates built from these bytes, one per (bias, name): usually one, so a list.</summary>
        public readonly List<Template> Templates = new();
        /// <summary>Whether these bytes were loaded once without a template (see <see cref="Load"/>).</summary>
        public bool LoadedOnce;
    }

    sealed class Template(ulong bias, string name, ImageTemplate image, LoadedProgram program)
    {
        public readonly ulong Bias = bias;
        public readonly string Name = name;
        public readonly ImageTemplate Image = image;
        public readonly LoadedProgram Program = program;
    }

    readonly Dictionary<FileIdentity, Entry> _byId = new();
    /// <summary>Entries by the object holding their bytes (<see cref="GuestMemory.ImageHolder"/>: an array or a <see cref="NativeImage"/>): a load is served
    /// from a template only for the very bytes the cache holds.</summary>
    readonly Dictionary<object, Entry> _byBytes = new(ReferenceEqualityComparer.Instance);
    long _bytes;

    /// <summary>Blocks decoded from the templates' frames, shared by the machine's processes.</summary>
    public SharedCode Code { get; } = new();

    /// <summary>Statistics: execs served from the cache, images loaded from a template, templates built.</summary>
    public long FileHits, TemplateHits, TemplatesBuilt;

    /// <summary>The bytes and digest (XxHash128) of the file with this identity, when cached.</summary>
    public bool TryGet(FileIdentity id, out ReadOnlyMemory<byte> bytes, out byte[] digest)
    {
        if (_byId.TryGetValue(id, out var e))
        {
            bytes = e.Bytes;
            digest = e.Digest ??= Log.Xxh128.Hash(e.Bytes.Span);
            FileHits++;
            return true;
        }
        bytes = default;
        digest = null!;
        return false;
    }

    /// <summary>Keeps a file's bytes (read from the file whose identity this is) while the bounds allow.</summary>
    public void Add(FileIdentity id, ReadOnlyMemory<byte> bytes, byte[]? digest = null)
    {
        if (_byId.ContainsKey(id) || bytes.Length != id.Size || _byId.Count >= MaxFiles || _bytes + bytes.Length > MaxBytes) return;
        if (GuestMemory.ImageHolder(bytes) is not { } holder) return;
        var e = new Entry(bytes) { Digest = digest };
        _byId[id] = e;
        _byBytes[holder] = e;
        _bytes += bytes.Length;
    }

    /// <summary>
    /// Loads a validated ELF image as <see cref="ElfLoader.Load(GuestMemory, ReadOnlyMemory{byte}, ElfImage, ulong, string)"/>
    /// does: for bytes this cache holds, from a template built once per (bias, name) and mapped copy-on-write;
    /// other bytes are loaded directly. `mem` must hold nothing where the image goes (a new image's address space).
    /// The first load of a file's bytes goes straight into `mem` too, and the template is built at the second: the
    /// start program of most runs is never executed again (`busybox true`, a compressor), and a template there cost
    /// every such run a second address space, the pinning of every frame and its mapping (about 3 ms of CPU at
    /// start-up on the 2 MB busybox, loaded host). Either way the process sees the same bytes; only the sharing of
    /// frames and decoded blocks with later processes starts one exec later.
    /// </summary>
    public LoadedProgram Load(GuestMemory mem, ReadOnlyMemory<byte> f, ElfImage img, ulong bias, string name)
    {
        if (GuestMemory.ImageHolder(f) is not { } holder || !_byBytes.TryGetValue(holder, out var e)) return ElfLoader.Load(mem, f, img, bias, name);
        Template? t = null;
        foreach (var c in e.Templates)
            if (c.Bias == bias && c.Name == name) { t = c; break; }
        if (t == null && !e.LoadedOnce)
        {
            e.LoadedOnce = true;
            return ElfLoader.Load(mem, f, img, bias, name);
        }
        if (t == null)
        {
            TemplatesBuilt++;
            using var scratch = new GuestMemory();
            var program = ElfLoader.Load(scratch, f, img, bias, name);
            t = new Template(bias, name, scratch.ToTemplate(), program);
            e.Templates.Add(t);
        }
        else TemplateHits++;
        mem.MapTemplate(t.Image);
        return t.Program.Copy();
    }

    public void Dispose()
    {
        foreach (var e in _byId.Values)
            foreach (var t in e.Templates) t.Image.Dispose();
        _byId.Clear();
        _byBytes.Clear();
    }
}
