#!/usr/bin/env bash
# The PostgreSQL figures of docs/benchmarks.md, in one run on one machine:
#   1. the streamed workload (cqrs-workload: creates, then 4 changes per user) through 1, 2 and
#      4 `cqrs --postgres` nodes on one local PostgreSQL, each node fed the commands of its own
#      users (split by user, so each user's commands stay in order), all at once;
#   2. the same workload through one node on the embedded SQLite store;
#   3. pgbench's own rate for single-row INSERTs (autocommit: one round trip + one WAL flush
#      each), one client and four;
#   4. one-at-a-time latency: a node sent one command, its reply awaited, then the next,
#      against pgbench's single-row INSERT latency with one client.
# Usage: benches/postgres/run.sh [USERS]   (default 40,000 users = 200,000 commands)
# Needs the release binaries (cargo build --release) and the PostgreSQL binaries; it starts a
# throwaway cluster of its own (scripts/pg-test-cluster) and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
users=${1:-40000}
bin=target/release
work=$(mktemp -d /tmp/cqrs-pg-bench.XXXXXX)
chmod 755 "$work" # the cluster inside it runs as the postgres user
trap 'scripts/pg-test-cluster stop "$work/pg" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
url=$(scripts/pg-test-cluster start "$work/pg")
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)")
psql() { "$pgbin/psql" "$url" -qAtX "$@"; }

"$bin/cqrs-workload" --users "$users" --updates 4 --get-queries 0 --at-time-queries 0 \
    >"$work/all.jsonl" 2>/dev/null
commands=$(wc -l <"$work/all.jsonl")
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(psql -c 'SHOW server_version')"
echo "workload: $commands commands ($users users)"

split() { # split the workload into $1 files by user id
    python3 - "$work/all.jsonl" "$1" "$work" <<'PY'
import json, sys, zlib
src, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
outs = [open(f"{work}/part{n}-{i}.jsonl", "w") for i in range(n)]
for line in open(src):
    uid = json.loads(line)["body"]["command"]["payload"]["id"]
    outs[zlib.crc32(uid.encode()) % n].write(line)
PY
}

now() { date +%s.%N; }

for n in 1 2 4; do
    split "$n"
    schema="bench_$n"
    # The tables first, so that the run measures commands, not the migration.
    echo "" | "$bin/cqrs" --postgres "$url" --postgres-schema "$schema" --node-id n0 2>/dev/null
    start=$(now)
    pids=()
    for i in $(seq 0 $((n - 1))); do
        CQRS_LOG=warn "$bin/cqrs" --postgres "$url" --postgres-schema "$schema" --node-id "n$i" \
            <"$work/part$n-$i.jsonl" >"$work/out$n-$i.jsonl" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    end=$(now)
    ok=$(cat "$work"/out$n-*.jsonl | grep -c '"success":true' || true)
    python3 -c "print(f'postgres, $n node(s): {($end-$start):.2f} s, {$commands/($end-$start):,.0f} commands/s, $ok/$commands succeeded')"
done

start=$(now)
CQRS_LOG=warn "$bin/cqrs" --data-dir "$work/sqlite" --node-id n1 <"$work/all.jsonl" >"$work/out-sqlite.jsonl"
end=$(now)
python3 -c "print(f'sqlite (embedded), 1 node: {($end-$start):.2f} s, {$commands/($end-$start):,.0f} commands/s')"

psql -c "CREATE TABLE IF NOT EXISTS pgbench_insert (id bigserial PRIMARY KEY, stream bigint, data text)"
echo "INSERT INTO pgbench_insert (stream, data) VALUES (1, '{\"name\":\"x\"}');" >"$work/insert.sql"
for c in 1 4; do
    tps=$("$pgbin/pgbench" "$url" -n -f "$work/insert.sql" -c "$c" -j "$c" -T 10 2>/dev/null |
        awk '/^tps/ {print $3}')
    lat=$("$pgbin/pgbench" "$url" -n -f "$work/insert.sql" -c "$c" -j "$c" -T 5 2>/dev/null |
        awk '/latency average/ {print $4}')
    echo "pgbench single-row INSERT + COMMIT, $c client(s): $tps tps, latency $lat ms"
done

# One at a time: 2,000 creates, each sent after the previous reply.
python3 - "$bin/cqrs" "$url" <<'PY'
import subprocess, sys, time, json
cqrs, url = sys.argv[1], sys.argv[2]
p = subprocess.Popen([cqrs, "--postgres", url, "--postgres-schema", "one_at_a_time",
                      "--node-id", "n1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
times = []
for i in range(2200):
    line = json.dumps({"src": "c", "dest": "n1", "body": {"type": "command", "msg_id": i,
        "command": {"type": "CreateUser", "payload": {"id": f"o{i}", "name": "x"}}}})
    t = time.perf_counter()
    p.stdin.write(line + "\n")
    reply = p.stdout.readline()
    times.append(time.perf_counter() - t)
    assert '"success":true' in reply, reply
p.stdin.close(); p.wait()
times = sorted(times[200:])
print(f"one at a time, 1 node: mean {1000*sum(times)/len(times):.3f} ms, "
      f"p50 {1000*times[len(times)//2]:.3f} ms, p99 {1000*times[int(len(times)*0.99)]:.3f} ms")
PY
