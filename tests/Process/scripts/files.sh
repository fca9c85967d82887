# Files and processes: find -exec, sort | uniq -c | sort -rn over a generated file, 2>&1 into a pipe,
# appending redirections, a here-document fed to a loop, and $(...) nested in arithmetic.
mkdir -p work/a/b work/c
for i in 1 2 3; do echo "file $i" > work/a/f$i.txt; done
echo deep > work/a/b/deep.txt
echo other > work/c/other.log
find work -name '*.txt' -exec cat {} \; | sort
find work -type f | sort | while read f; do echo "$(wc -c < "$f") $f"; done
seq 1 40 | awk '{ print $1 % 7 }' | sort | uniq -c | sort -rn | head -3
{ echo to-out; echo to-err >&2; } 2>&1 | sed 's/^/[both] /'
echo first > work/log; echo second >> work/log; cat work/log
total=0
while read n; do total=$((total + n)); done <<END
$(seq 1 10)
END
echo "total $total"
echo "nested $(( $(echo 6) * $(echo 7) ))"
ls work/missing 2>/dev/null || echo "missing: $?"
rm -r work
