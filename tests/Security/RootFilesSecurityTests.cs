using ReVirt.Abi;
using Xunit;

namespace ReVirt.Tests.Security;

/// <summary>
/// The files a snapshot carries (<see cref="RootFiles"/>) come from a peer: applying them never reads, writes or removes
/// anything outside the replica's root — not through "..", nor a symlink in the root pointing out of it (absolute or
/// relative), with either resolution strategy — and a path that is not lexically normal is refused before anything is
/// touched. The oracle is the host file system outside the root, unchanged, and a capture applied to a copy of the
/// start root reading back exactly as captured.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")] // file modes
public class RootFilesSecurityTests
{
    static string NewDir(string name) => Directory.CreateTempSubdirectory($"revirt-{name}-").FullName;

    static RootEntry FileEntry(string path, string text) => new(path, RootEntryKind.File, 0x1A4, System.Text.Encoding.UTF8.GetBytes(text), null);

    [Theory]
    [InlineData("/a/../../escape")]
    [InlineData("/a/./b")]
    [InlineData("relative")]
    [InlineData("/a//b")]
    [InlineData("/a/b/")]
    [InlineData("/")]
    [InlineData("/a\0b")]
    public void APathThatIsNotLexicallyNormalIsRefusedBeforeAnythingIsTouched(string bad)
    {
        string root = NewDir("rootfiles");
        try
        {
            using var fs = new GuestFs(root);
            // a good entry first: it must not be applied either
            var e = Assert.Throws<InvalidDataException>(() => RootFiles.Apply(fs, [FileEntry("/good", "x"), FileEntry(bad, "y")]));
            Assert.Contains("path", e.Message);
            Assert.Empty(Directory.GetFileSystemEntries(root));
        }
        finally { Directory.Delete(root, true); }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SymlinksInTheRootNeverLeadAnEntryOutOfIt(bool openat2)
    {
        string root = NewDir("rootfiles"), outside = NewDir("outside");
        try
        {
            File.WriteAllText(Path.Combine(outside, "victim"), "outside");
            File.CreateSymbolicLink(Path.Combine(root, "abs"), outside);
            File.CreateSymbolicLink(Path.Combine(root, "rel"), "../../../../../../../.." + outside);
            using var fs = new GuestFs(root, openat2);
            foreach (var link in new[] { "/abs", "/rel" })
            {
                // removing, writing or making through the link resolves inside the root (where the target does not exist)
                RootFiles.Apply(fs, [new RootEntry(link + "/victim", RootEntryKind.Absent, 0, null, null)]);
                Assert.ThrowsAny<IOException>(() => RootFiles.Apply(fs, [FileEntry(link + "/new", "written")]));
                Assert.ThrowsAny<IOException>(() => RootFiles.Apply(fs, [new RootEntry(link + "/dir", RootEntryKind.Directory, 0x1C0, null, null)]));
            }
            // replacing the link itself replaces the link, never its target
            RootFiles.Apply(fs, [FileEntry("/abs", "now a file")]);
            Assert.Equal("now a file", File.ReadAllText(Path.Combine(root, "abs")));
            Assert.Equal(["victim"], Directory.GetFileSystemEntries(outside).Select(Path.GetFileName));
            Assert.Equal("outside", File.ReadAllText(Path.Combine(outside, "victim")));
            // a capture through a link reads what the root holds there (nothing), not the outside file
            var got = RootFiles.Capture(fs, ["/rel/victim"], 1 << 20);
            Assert.Equal(RootEntryKind.Absent, Assert.Single(got).Kind);
        }
        finally { Directory.Delete(root, true); Directory.Delete(outside, true); }
    }

    [Fact]
    public void ACaptureAppliedToACopyOfTheStartRootReadsBackTheSame()
    {
        string live = NewDir("live"), copy = NewDir("copy");
        try
        {
            // the start state, on both
            foreach (var r in new[] { live, copy })
            {
                Directory.CreateDirectory(Path.Combine(r, "keep", "old"));
                File.WriteAllText(Path.Combine(r, "keep", "old", "f"), "old");
                File.WriteAllText(Path.Combine(r, "gone"), "gone");
                File.WriteAllText(Path.Combine(r, "rewritten"), "0123456789");
            }
            // what the guest did on the live root: a renamed directory, a removal, a rewrite in place, new entries
            Directory.Move(Path.Combine(live, "keep", "old"), Path.Combine(live, "keep", "new"));
            File.Delete(Path.Combine(live, "gone"));
            using (var f = new FileStream(Path.Combine(live, "rewritten"), FileMode.Open)) { f.Position = 3; f.Write("abc"u8); }
            File.SetUnixFileMode(Path.Combine(live, "rewritten"), UnixFileMode.UserRead);
            File.CreateSymbolicLink(Path.Combine(live, "keep", "link"), "new/f");
            Directory.CreateDirectory(Path.Combine(live, "ro"));
            File.WriteAllText(Path.Combine(live, "ro", "inside"), "in a read-only directory");
            File.SetUnixFileMode(Path.Combine(live, "ro"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
            string[] changed = ["/keep/old", "/keep/new", "/gone", "/rewritten", "/keep/link", "/ro"];
            using var liveFs = new GuestFs(live);
            using var copyFs = new GuestFs(copy);
            var captured = RootFiles.Capture(liveFs, changed, 1 << 20);
            RootFiles.Apply(copyFs, captured);
            Assert.Equal(captured, RootFiles.Capture(copyFs, changed, 1 << 20), new EntryComparer());
            Assert.False(Directory.Exists(Path.Combine(copy, "keep", "old")));
            Assert.Equal("old", File.ReadAllText(Path.Combine(copy, "keep", "new", "f")));
            Assert.Equal("012abc6789", File.ReadAllText(Path.Combine(copy, "rewritten")));
            Assert.False(File.Exists(Path.Combine(copy, "gone")));
            Assert.Equal("new/f", new FileInfo(Path.Combine(copy, "keep", "link")).LinkTarget);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(copy, "ro")));
        }
        finally
        {
            foreach (var r in new[] { live, copy })
                if (Directory.Exists(Path.Combine(r, "ro"))) File.SetUnixFileMode(Path.Combine(r, "ro"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.Delete(live, true); Directory.Delete(copy, true);
        }
    }

    sealed class EntryComparer : IEqualityComparer<RootEntry>
    {
        public bool Equals(RootEntry? a, RootEntry? b) => a!.Path == b!.Path && a.Kind == b.Kind && a.Mode == b.Mode && a.Target == b.Target
            && (a.Content ?? []).AsSpan().SequenceEqual(b.Content ?? []);
        public int GetHashCode(RootEntry e) => e.Path.GetHashCode();
    }
}
