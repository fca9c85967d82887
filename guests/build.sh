#!/usr/bin/env bash
# Build every guests/src/*.c twice (static glibc and static musl) into OUTDIR.
#   usage: guests/build.sh OUTDIR [NAME.VARIANT...]
# With targets (e.g. kvserver.glibc), only those are built.
# Per-file extra flags come from comment lines in the first 20 lines of the source:
#   // CFLAGS: ...     extra compile flags
#   // LDFLAGS: ...    extra link flags (e.g. -lm, -pthread)
# An output is rebuilt only when it is older than its source (or this script).
# Compiles run in parallel (JOBS, default: number of CPUs).
# Prints nothing on success; compiler diagnostics go to stderr.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [NAME.VARIANT...]" >&2
    exit 2
fi

script=${BASH_SOURCE[0]}
src_dir=$(cd "$(dirname "$script")" && pwd)/src
out_dir=$1
shift
targets=" $* "
mkdir -p "$out_dir"

GCC=${GCC:-gcc}
MUSLGCC=${MUSLGCC:-musl-gcc}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# Sets CFLAGS_EXTRA / LDFLAGS_EXTRA from "// KEY: value" comments (pure bash, no subprocesses).
read_flag_comments() {
    local file=$1 line n=0 re='^[[:space:]]*//[[:space:]]*(CFLAGS|LDFLAGS):[[:space:]]*(.*)$'
    CFLAGS_EXTRA=""
    LDFLAGS_EXTRA=""
    while [ $n -lt 20 ] && IFS= read -r line; do
        n=$((n + 1))
        if [[ $line =~ $re ]]; then
            if [ "${BASH_REMATCH[1]}" = CFLAGS ]; then
                CFLAGS_EXTRA+=" ${BASH_REMATCH[2]}"
            else
                LDFLAGS_EXTRA+=" ${BASH_REMATCH[2]}"
            fi
        fi
    done < "$file"
}

build_one() {
    local cc=$1 src=$2 out=$3
    # shellcheck disable=SC2086  # flags are intentionally word-split
    if ! "$cc" -static -O2 $CFLAGS_EXTRA -o "$out.tmp.$$" "$src" $LDFLAGS_EXTRA; then
        echo "build.sh: failed to build $out" >&2
        rm -f "$out.tmp.$$"
        return 1
    fi
    mv -f "$out.tmp.$$" "$out"
}

status=0
running=0
shopt -s nullglob
for src in "$src_dir"/*.c; do
    name=${src##*/}
    name=${name%.c}
    flags_read=0
    for variant in glibc musl; do
        out=$out_dir/$name.$variant
        if [ "$targets" != "  " ] && [[ $targets != *" $name.$variant "* ]]; then
            continue
        fi
        if [ -e "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "$script" ]; then
            continue
        fi
        if [ $flags_read -eq 0 ]; then
            read_flag_comments "$src"
            flags_read=1
        fi
        if [ "$variant" = glibc ]; then cc=$GCC; else cc=$MUSLGCC; fi
        if [ $running -ge "$JOBS" ]; then
            wait -n || status=1
            running=$((running - 1))
        fi
        build_one "$cc" "$src" "$out" &
        running=$((running + 1))
    done
done
while [ $running -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit $status
