namespace ReVirt.Log;

/// <summary>
/// A source of a log's bytes in whole chunks whose record frames were verified before they entered it (a replica's
/// replay pipe, fed by its data link thread after <see cref="RecordFrame.CheckRun"/>): the log header first, then
/// frames, each frame whole within one chunk. Read by <see cref="LogReader.OverVerifiedChunks"/> in place.
/// </summary>
public interface IFrameChunks
{
    /// <summary>The next chunk (blocking until there is one); empty at the end. The chunk's bytes are the caller's
    /// from then on: nothing writes to them again.</summary>
    ReadOnlyMemory<byte> NextChunk();
}
