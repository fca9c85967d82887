using System.CommandLine;
using ReVirt;
using ReVirt.Abi;

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
    Description = "The static x86-64 Linux program to run, then its arguments (put them after '--').",
    Arity = ArgumentArity.OneOrMore,
};

var run = new Command("run", "Run a static x86-64 Linux program in the ReVirt virtual machine. The guest's stdin, stdout and stderr are this process's; the exit status is the guest's (128+signal when a signal ended it).")
{
    rootOpt, cwdOpt, program,
};
run.SetAction(parse => RunGuest(parse.GetValue(rootOpt)!, parse.GetValue(cwdOpt), parse.GetValue(program)!));

var rootCmd = new RootCommand("ReVirt primary: runs (and records, and protects) guest programs in a deterministic x86-64 virtual machine.")
{
    run,
};
return rootCmd.Parse(args).Invoke();

static int RunGuest(string root, string? cwd, string[] argv)
{
    if (!Directory.Exists(root))
    {
        Console.Error.WriteLine($"primary: --root {root}: no such directory");
        return 2;
    }
    string full = Path.GetFullPath(root);
    string guestCwd = cwd ?? (full == "/" ? Environment.CurrentDirectory : "/");
    var opts = new MachineOptions
    {
        Root = root,
        Program = argv[0],
        Args = argv[1..],
        Cwd = guestCwd,
    };
    int status = Machine.RunProgram(opts);
    Console.Out.Flush();
    return status;
}
