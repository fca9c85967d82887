# bash without job control: functions (local variables, recursion), indexed and associative arrays, traps
# (EXIT, a signal sent to itself, ERR), subshells, pipelines with pipefail, $(...), here-documents and
# here-strings, process substitution (/dev/fd), read/mapfile, printf -v, arithmetic, parameter expansions,
# background jobs with wait, and a child found with ps through /proc.
set -o pipefail

fact() { local n=$1; if (( n <= 1 )); then echo 1; else echo $(( n * $(fact $((n - 1))) )); fi; }
echo "fact 10 = $(fact 10)"

arr=(zero one "two words" three)
arr+=(four)
echo "count ${#arr[@]}, third '${arr[2]}', slice ${arr[@]:1:2}"
for i in "${!arr[@]}"; do printf '%d=%s;' "$i" "${arr[$i]}"; done; echo
declare -A color=([apple]=red [banana]=yellow [cherry]=red)
for k in $(printf '%s\n' "${!color[@]}" | sort); do echo "$k is ${color[$k]}"; done
unset 'arr[1]'
echo "after unset: ${arr[*]}"

s="hello world hello"
echo "${s//hello/bye} ${s#* } ${s%% *} ${#s} ${s^^} ${s:6:5}"
printf -v padded '%05d' 42
echo "padded=$padded"

trap 'echo "got USR1"' USR1
kill -USR1 $$
echo "after USR1"

count=0
while read -r line; do count=$((count + ${#line})); done <<'END'
first line
second
END
echo "chars $count"
read -r a b c <<< "x y z w"
echo "a=$a b=$b c=$c"
mapfile -t lines < <(printf 'l1\nl2\nl3\n')
echo "mapfile ${#lines[@]}: ${lines[*]}"
diff <(printf 'a\nb\n') <(printf 'a\nc\n') && echo same || echo "diff status $?"

( cd /; echo "subshell in $(pwd)"; exit 4 ) || echo "subshell status $?"
echo "still in $(basename "$PWD")"
if false | true; then echo "pipefail off?"; else echo "pipefail status $?"; fi
echo -e "c\nb\na\nb" | sort | uniq -c | sort -rn | head -2

sleep 0.2 & p1=$!
( sleep 0.1; exit 5 ) & p2=$!
wait $p2; echo "job 2 status $?"
wait $p1; echo "job 1 status $?"

sleep 3.0417 & s=$!
found=$(ps -o pid,args | awk '$2 == "sleep" && $3 == "3.0417" { print $1 }')
[ "$found" = "$s" ] && echo "ps found the sleeper" || echo "ps found '$found', expected '$s'"
kill $s; wait $s; echo "sleeper ended by signal $(( $? - 128 ))"

case "$s" in [0-9]*) echo "a pid";; *) echo "not a pid";; esac
x=7; (( x *= 6 )); echo "x=$x"
f() { return 3; }
f || echo "function status $?"
trap 'echo "ERR trap at status $?"' ERR
false || true
sh_out=$(/bin/bash-static -c 'echo inner $((1+1)); exit 9'); echo "$sh_out, status $?"
trap - ERR
trap 'echo "exit trap, status $?"' EXIT
exit 6
