using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;

namespace ReVirt.Replay;

/// <summary>How a replay of a log ended. The values are `backup replay`'s exit statuses (a contract).</summary>
public enum ReplayVerdictKind
{
    /// <summary>The replay matched a complete recording: every record, and the End record closing it.</summary>
    Faithful = 0,
    /// <summary>The guest did something other than what the log says (message names the first difference).</summary>
    Diverged = 1,
    /// <summary>The log is refused: damaged, forged, appended to, another version, or another/unreadable program.</summary>
    Refused = 2,
    /// <summary>The replay matched every record there is, but the log has no End record: the recording ended early.</summary>
    EndedEarly = 3,
}

public sealed record ReplayVerdict(ReplayVerdictKind Kind, string Message, ulong Instructions = 0);

/// <summary>
/// Replays one log from start to end on this machine and classifies the outcome: the one definition of
/// "faithful", "ended early", "diverged" and "refused" that `backup replay`, the tests and the fuzzer share.
/// Exceptions other than those naming a bad log or a divergence are defects and propagate.
/// </summary>
public static class ReplayCheck
{
    /// <param name="snapshot">The machine snapshot the log starts after (a log kept by a replica that joined from one,
    /// <see cref="LogReader.StartsAfter"/>): the replay starts from it instead of loading the program.</param>
    public static ReplayVerdict Run(LogReader reader, string? rootOverride = null, bool showOutput = false, Action<Machine, ReplayBoundary>? started = null,
        Cpu.ExecutionTier tier = Cpu.ExecutionTier.Default, Stream? snapshot = null)
    {
        MachineOptions opts;
        try { opts = Recording.OptionsFrom(reader.Header, rootOverride); }
        catch (LogFormatException e) { return new(ReplayVerdictKind.Refused, e.Message); }
        opts.Tier = tier; // which tier replays is the replayer's choice: every tier gives the same execution
        if (Recording.RecordedProgram(reader.Header, opts, out var why) is not { } program) return new(ReplayVerdictKind.Refused, why);
        var boundary = new ReplayBoundary(reader, showOutput);
        Machine m;
        if (snapshot == null) m = new Machine(opts, boundary);
        else
        {
            try
            {
                (m, var point) = Snapshot.MachineSnapshot.Restore(snapshot, reader.Header.Encode(), opts, boundary);
                boundary.ResumeAt(point);
            }
            catch (Exception e) when (e is Snapshot.SnapshotFormatException or Snapshot.SnapshotRefusedException or InvalidOperationException)
            {
                return new(ReplayVerdictKind.Refused, $"the snapshot the log starts from is refused: {e.Message}");
            }
        }
        using var machine = m;
        started?.Invoke(m, boundary);
        try
        {
            if (snapshot == null) m.Load(program);
            int status = m.Run();
            // the replay reads no further than the End record: make the reader look past it (it refuses any byte there)
            if (boundary.RecordingComplete) reader.TryRead(out _);
            string from = snapshot != null ? $" from the snapshot at record #{reader.StartsAfter}" : "";
            // the counts of type int as strings: the interpolation handler's generic method for int has no ReadyToRun
            // code, and compiling it (optimised: it has a loop) cost every replay a millisecond or two of CPU
            var inv = System.Globalization.CultureInfo.InvariantCulture;
            string verified = $"{m.InstructionCount} instructions, {boundary.RecordsConsumed} records, {boundary.CheckpointsVerified.ToString(inv)} checkpoints and {boundary.OutputsVerified.ToString(inv)} outputs verified{from}, guest exit status {status.ToString(inv)}";
            return boundary.RecordingComplete
                ? new(ReplayVerdictKind.Faithful, $"faithful: the replay matched the complete recording: {verified}", m.InstructionCount)
                : new(ReplayVerdictKind.EndedEarly, $"recording ended early at record #{boundary.LastRecord}: the replay matched it ({verified}) but the log has no End record", m.InstructionCount);
        }
        catch (ReplayDivergenceException e) { return new(ReplayVerdictKind.Diverged, e.Message, m.InstructionCount); }
        catch (ReplayEndOfLogException e) { return new(ReplayVerdictKind.EndedEarly, e.Message, m.InstructionCount); }
        catch (LogFormatException e) { return new(ReplayVerdictKind.Refused, $"corrupt log: {e.Message}; replay stopped at instruction {m.InstructionCount}", m.InstructionCount); }
        catch (ElfLoadException e) { return new(ReplayVerdictKind.Refused, $"the recorded program cannot be loaded: {e.Message}"); }
        catch (ReplayInputMismatchException e) { return new(ReplayVerdictKind.Refused, e.Message, m.InstructionCount); }
    }
}
