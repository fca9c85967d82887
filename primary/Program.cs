using System.CommandLine;
using ReVirt;
using ReVirt.Abi;
using ReVirt.Log;
using ReVirt.Replay;

var rootOpt = new Option<string>("--root")
{
    Description = "Directory the guest sees as '/'. Guest paths cannot leave it through '..' or symlinks.",
    DefaultValueFactory = _ => "/",
};
var cwdOpt = new Option<string?>("--cwd")
{
    Description = "The guest's working directory, as a guest path (default: the current directory when --root is '/', else '/').",
};
var program = new Argument<string[]>("program")
{
    Description = "The static x86-64 Linux program to run, then its arguments (put them after '--'). A name without '/' is looked up in PATH under the root.",
    Arity = ArgumentArity.OneOrMore,
};
var logOpt = new Option<FileInfo>("--log")
{
    Description = "The event log to write (replace if it exists).",
    Required = true,
};
var intervalOpt = new Option<ulong>("--checkpoint-interval")
{
    Description = "Write a checkpoint (a digest of registers and memory, verified by replay) every N guest instructions; 0 disables periodic checkpoints.",
    DefaultValueFactory = _ => Recording.DefaultCheckpointInterval,
};
var statsOpt = new Option<bool>("--stats")
{
    Description = "Print instruction counts and timing to stderr when the guest ends.",
};

var run = new Command("run", "Run a static x86-64 Linux program in the ReVirt virtual machine. The guest's stdin, stdout and stderr are this process's; the exit status is the guest's (128+signal when a signal ended it).")
{
    rootOpt, cwdOpt, statsOpt, program,
};
run.SetAction(parse => Guest(parse, null));

var recordCmd = new Command("record", "Run like `run` and record every nondeterministic input to an event log that `backup replay --log FILE` re-executes instruction for instruction.")
{
    logOpt, intervalOpt, rootOpt, cwdOpt, statsOpt, program,
};
recordCmd.SetAction(parse => Guest(parse, parse.GetValue(logOpt)));

var rootCmd = new RootCommand("ReVirt primary: runs and records guest programs in a deterministic x86-64 virtual machine.")
{
    run, recordCmd,
};
return rootCmd.Parse(args).Invoke();

int Guest(ParseResult parse, FileInfo? log)
{
    string root = parse.GetValue(rootOpt)!;
    string? cwd = parse.GetValue(cwdOpt);
    string[] argv = parse.GetValue(program)!;
    if (!Directory.Exists(root))
    {
        Console.Error.WriteLine($"primary: --root {root}: no such directory");
        return 2;
    }
    string full = Path.GetFullPath(root);
    var opts = new MachineOptions
    {
        Root = root,
        Program = argv[0],
        Args = argv[1..],
        Cwd = cwd ?? (full == "/" ? Environment.CurrentDirectory : "/"),
    };
    var sw = System.Diagnostics.Stopwatch.StartNew();
    int status;
    ulong icount = 0;
    if (log == null)
    {
        using var m = new Machine(opts);
        status = LoadAndRun(m, opts, out icount);
    }
    else
    {
        byte[] image;
        try { image = File.ReadAllBytes(LinuxKernel.ResolveProgram(opts).HostPath); }
        catch (ElfLoadException e) { Console.Error.WriteLine($"primary: {e.Message}"); return 127; }
        var header = Recording.Header(opts, image, parse.GetValue(intervalOpt));
        using var writer = LogWriter.Create(log.FullName, header);
        var boundary = new RecordingBoundary(writer, header.CheckpointInterval);
        using var m = new Machine(opts, boundary);
        status = LoadAndRun(m, opts, out icount);
        writer.Flush();
        if (parse.GetValue(statsOpt))
            Console.Error.WriteLine($"primary: log {log.FullName}: {boundary.Records} records, {boundary.LogBytes} bytes");
    }
    Console.Out.Flush();
    if (parse.GetValue(statsOpt))
    {
        double s = sw.Elapsed.TotalSeconds;
        Console.Error.WriteLine($"primary: {icount} guest instructions in {s:F3} s ({icount / s / 1e6:F1} M instructions/s), exit status {status}");
    }
    return status;
}

static int LoadAndRun(Machine m, MachineOptions opts, out ulong icount)
{
    icount = 0;
    try { m.Load(); }
    catch (ElfLoadException e)
    {
        Console.Error.WriteLine($"primary: {e.Message}");
        return e.Message.EndsWith("no such file") ? 127 : 126;
    }
    int status = m.Run();
    icount = m.InstructionCount;
    return status;
}
