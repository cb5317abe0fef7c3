#!/usr/bin/env bash
# Where a one-at-a-time durable command's time goes inside the node, by phase.
#
#   benches/profile/one-at-a-time.sh [COMMANDS]     (default 2000; about 10 seconds)
#
# Runs cqrs-bench's one-at-a-time part (the same commands, probes and durable floor as the full
# benchmark), with the node and the durable floor under an LD_PRELOAD shim (phases.c) that
# times their read, pwrite, fdatasync and reply write system calls, then prints the
# benchmark's figures and the shim's breakdowns. Needs a C compiler (cc). The shim adds a few
# clock reads per system call.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
commands=${1:-2000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
cc -O2 -Wall -shared -fPIC -o "$work/phases.so" "$root/benches/profile/phases.c" -ldl

# cqrs-bench starts its programs from --bin-dir: the real ones, except that the node of the
# one-at-a-time run (its store is latency-sqlite) and the durable floor (--fsync-file) start
# under the shim.
mkdir "$work/bin"
ln -s "$root/target/release/cqrs-workload" "$work/bin/cqrs-workload"
shimmed() { # NAME PATTERN OUT
    cat > "$work/bin/$1" <<SCRIPT
#!/bin/sh
case "\$*" in
  $2) export PHASES_OUT="$work/$3" LD_PRELOAD="$work/phases.so" ;;
esac
exec "$root/target/release/$1" "\$@"
SCRIPT
    chmod +x "$work/bin/$1"
}
shimmed cqrs '*latency-sqlite*' node.txt
shimmed cqrs-echo '*--fsync-file*' floor.txt

"$root/target/release/cqrs-bench" --no-build --bin-dir "$work/bin" --quick --users 1000 \
    --updates 1 --latency-commands "$commands" --stream-events 0 --open-runs 0 --mem-users 0 \
    --dir "$work/bench" 2>/dev/null >"$work/bench.md"
sed -n '/^## fdatasync on this disk/,/^## Targets/p' "$work/bench.md" | sed '$d'
echo "## Inside the node (benches/profile/phases.c)"
echo
cat "$work/node.txt"
echo
echo "## Inside the durable floor, for comparison"
echo
cat "$work/floor.txt"
