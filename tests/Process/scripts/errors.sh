# Exit statuses as a shell sees them: a missing command (127), a directory (126), a file without the
# execute bit (126), a child killed by a signal (128+signal), exit codes through pipelines and subshells.
nosuchcommand 2>/dev/null; echo "missing $?"
mkdir -p d; ./d 2>/dev/null; echo "directory $?"
echo 'echo hi' > plain; ./plain 2>/dev/null; echo "not executable $?"
printf '#!/bin/busybox sh\necho "script says $1"\nexit 4\n' > script; chmod +x script
./script arg; echo "script $?"
sh -c 'kill -SEGV $$'; echo "segv $?"
sh -c 'kill -TERM $$'; echo "term $?"
false | true; echo "pipeline $?"
(exit 42); echo "subshell $?"
rm -r d plain script
exit 3
