// the exit watch a replica that took over starts beside itself when it re-protects (internal verb: ExitWatch)
if (args.Length > 0 && args[0] == ReVirt.Replication.ExitWatch.Verb) return ReVirt.Replication.ExitWatch.RunWatcher(args);

return ReVirt.Backup.BackupCommandLine.Parse(args).Invoke();
