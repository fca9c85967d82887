using System.CommandLine;

var root = new RootCommand("ReVirt chaos: failover drills with fault injection against a primary-backup pair.");
var drill = new Command("drill", "Start a local primary-backup pair, inject faults and check that nothing was lost.");
drill.SetAction(_ =>
{
    Console.Error.WriteLine("chaos: drills need primary-backup replication, which this build does not have yet");
    return 2;
});
root.Add(drill);
return root.Parse(args).Invoke();
