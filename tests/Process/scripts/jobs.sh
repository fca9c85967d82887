# Job control without a terminal: background jobs stopped and continued with kill, waited for; a job that stops
# itself and is continued by the script; a stopped job killed. Waits for a state are bounded loops over /proc.
state() { s=$(cat /proc/$1/stat 2>/dev/null); s=${s##*) }; echo "${s%% *}"; }
until_state() { i=0; while [ "$(state $1)" != "$2" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done; echo "job is $(state $1)"; }
sleep 30 & p=$!
kill -STOP $p
until_state $p T
kill -CONT $p
until_state $p S
kill $p
wait $p; echo "killed job: $?"
sh -c 'kill -STOP $$; echo "continued after stopping itself"; exit 5' & q=$!
until_state $q T
kill -CONT $q
wait $q; echo "self-stopped job: $?"
sleep 30 & r=$!
kill -TSTP $r
until_state $r T
kill -KILL $r
wait $r; echo "stopped job killed: $?"
