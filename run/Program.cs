using System.CommandLine;
using ReVirt.Primary;

// revirt-run: `primary run` as an ahead-of-time compiled program (see ReVirt.Run.csproj)
var root = new GuestCommand("revirt-run").Runs(new RootCommand(
    "ReVirt run: runs an x86-64 Linux program (and the processes it starts) in the ReVirt virtual machine exactly as `primary run` does, from a program compiled ahead of time: it starts in a few milliseconds, and interprets every block (no compiled tier) until, after its first instructions, it hands the machine to `primary`'s JIT-started host in this same process (see --hand-off-after). The guest's stdin, stdout and stderr are this process's; the exit status is the guest's (128+signal when a signal ended it)."), handOff: true);
return root.Parse(args).Invoke();
