using System.CommandLine;
using ReVirt.Log;

var root = new RootCommand("ReVirt backup: replays recorded executions (and, with replication, follows a primary).");

var logFile = new Argument<FileInfo>("file") { Description = "An event log written by `primary record`." };
var dump = new Command("log", "Print a human-readable dump of an event log: the header, then one line per record.") { logFile };
dump.SetAction(parse =>
{
    var f = parse.GetValue(logFile)!;
    if (!f.Exists) { Console.Error.WriteLine($"backup: {f.FullName}: no such file"); return 2; }
    return LogDump.Write(f.FullName, Console.Out) ? 0 : 1;
});
root.Add(dump);
return root.Parse(args).Invoke();
