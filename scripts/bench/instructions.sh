#!/bin/sh
# Instructions per event of `migscope check` (JSONL and native) under callgrind: a number that,
# unlike wall time, does not move when other work shares the machine. Used to develop the
# check hot paths (BENCHMARKS.md, "Method"). Usage: scripts/bench/instructions.sh [EVENTS]
set -eu
n=${1:-100000}
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 77; }
cd "$root"
cargo build -q --release --bin migscope --example gentrace
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/examples/gentrace "$n" 8 > "$dir/t.jsonl" 2>"$dir/gen.log"
events=$(awk '{print $2}' "$dir/gen.log")
./target/release/migscope export -f native -o "$dir/t.mgt" "$dir/t.jsonl" 2>/dev/null
for f in t.jsonl t.mgt; do
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        ./target/release/migscope check "$dir/$f" >/dev/null 2>"$dir/vg.log"
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/vg.log")
    echo "$f: $ir instructions, $events events, $((ir / events)) instructions/event"
done
