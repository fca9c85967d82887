#!/usr/bin/env bash
# Build every guests/src/*.c twice (static glibc and static musl) into OUTDIR.
#   usage: guests/build.sh OUTDIR
# Per-file extra flags come from comment lines near the top of the source:
#   // CFLAGS: ...     extra compile flags
#   // LDFLAGS: ...    extra link flags (e.g. -lm, -pthread)
# An output is rebuilt only when it is older than its source (or this script).
# Prints nothing on success; compiler diagnostics go to stderr.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src_dir="$script_dir/src"
out_dir=$1
mkdir -p "$out_dir"

GCC=${GCC:-gcc}
MUSLGCC=${MUSLGCC:-musl-gcc}
BASE_CFLAGS="-static -O2"

# Extract the value of a "// KEY: value" comment from the first 20 lines.
flag_comment() {
    local key=$1 file=$2
    head -n 20 "$file" | sed -n "s|^[[:space:]]*//[[:space:]]*$key:[[:space:]]*||p" | tr '\n' ' '
}

needs_build() {
    local out=$1 src=$2
    [ ! -e "$out" ] || [ "$src" -nt "$out" ] || [ "${BASH_SOURCE[0]}" -nt "$out" ]
}

status=0
shopt -s nullglob
for src in "$src_dir"/*.c; do
    name=$(basename "$src" .c)
    cflags=$(flag_comment CFLAGS "$src")
    ldflags=$(flag_comment LDFLAGS "$src")
    for variant in glibc musl; do
        out="$out_dir/$name.$variant"
        needs_build "$out" "$src" || continue
        if [ "$variant" = glibc ]; then cc=$GCC; else cc=$MUSLGCC; fi
        # shellcheck disable=SC2086  # flags are intentionally word-split
        if ! "$cc" $BASE_CFLAGS $cflags -o "$out.tmp" "$src" $ldflags; then
            echo "build.sh: failed to build $out" >&2
            rm -f "$out.tmp"
            status=1
            continue
        fi
        mv -f "$out.tmp" "$out"
    done
done
exit $status
