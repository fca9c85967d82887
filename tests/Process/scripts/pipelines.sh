# Pipelines, command substitution, subshells, here-documents, while-read, redirections, background jobs
# and wait, xargs, trap, and the exit status of a child shell.
set -e
x=$(echo abc | tr a-z A-Z)
echo "x=$x"
( echo sub; exit 3 ) || echo "subshell status $?"
cat <<END | sort -r
line1
line3
line2
END
printf 'b\na\nb\nc\na\nb\n' | sort | uniq -c | sort -rn
i=0
printf '1\n2\n3\n' | while read n; do echo "read $n"; done
for f in a b c; do echo $f; done > out.txt
cat out.txt 2>&1
ls /nonexistent 2>&1 || echo "ls failed $?"
sleep 0.1 &
wait $!
echo "bg done $?"
echo 1 2 3 | xargs -n1 echo item
trap 'echo trapped' EXIT
sh -c 'exit 7'; echo "child $?" || true
