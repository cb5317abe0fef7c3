#!/usr/bin/env python3
"""The HTTP benchmark of issue 13 (docs/benchmarks.md, "HTTP (issue 13)"), in one run.

Started by benches/http/run.sh (which builds the release binaries first). In one run, on
loopback, with wrk as the load generator:

  1. the floor: `cqrs-http-floor` (a minimal axum "hello" on the node's own runtime settings),
     GET with 64 connections, the same wrk script as 2;
  2. GET /api/v1/users/{id}, 64 connections, ids drawn at random from the seeded users;
  3. durable POST /api/v1/commands (CreateUser of new users), 64 connections, then 256;
  4. commit-to-SSE delivery with 100 live-feed subscribers, measured by two clients: sse_epoll.py
     (raw sockets under one epoll, ids found in the bytes: little work per message) and
     sse_latency.py (asyncio streams and json.loads: its own per-message cost shows).
  5. the writer alone: the same CreateUser streamed through `cqrs` on stdin, at most 32 and
     1,024 per commit (what the HTTP figures can at best approach on the machine as it is).

The node is `cqrs --http 127.0.0.1:0` on a durable SQLite store in a temporary directory,
seeded through stdin with USERS users (3 events each). Every run is checked: no socket error
and no status >= 400 (wrk counts them), and for the commands, every acknowledged command is in
the log (the head moved by at least the number of 2xx replies, and by at most that plus the
requests in flight when wrk stopped; the node's own counters say no command failed). At the
end the node is stopped with SIGTERM (exit 0) and `cqrs check` must say the store is ok.
Any failure: exit 1.

For each run it records the load average, and the CPU time of wrk and of each of the server's
threads (from /proc), so that the figures say where the time went.

Usage: run.py [--users N] [--duration SECONDS] [--sse-commands N] [--quick]
"""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")
TICK = os.sysconf("SC_CLK_TCK")


def load():
    return " / ".join(open("/proc/loadavg").read().split()[:3])


def fail(why):
    print(f"FAILED: {why}", flush=True)
    sys.exit(1)


class Server:
    """A server process that prints `listening on http://ADDR` on stdout once bound."""

    def __init__(self, args, name):
        self.name = name
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "CQRS_LOG": "warn"}, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on http://(\S+)", line)
        if not m:
            fail(f"{name} did not start: {line!r}")
        self.addr = m.group(1)
        self.url = f"http://{self.addr}"

    def threads(self):
        """CPU seconds by thread name (threads of the same name summed)."""
        out = {}
        base = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(base):
            try:
                stat = open(f"{base}/{tid}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            out[name] = out.get(name, 0.0) + cpu
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def metrics(node):
    """The node's /metrics, as {name{labels}: value}."""
    out = {}
    for line in get(node.url + "/metrics").splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wrk(server, script, connections, seconds, args=(), warmup=0):
    """Runs wrk; returns its WRK_RESULT figures, the load average and the CPU times."""
    if warmup:
        subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{warmup}s", "-s", script,
                        server.url + "/", "--", *args], cwd=ROOT, capture_output=True,
                       check=True)
    before_load = load()
    threads = server.threads()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout",
                          "10s", "-s", script, server.url + "/", "--", *args],
                         cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    kids2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads2 = server.threads()
    m = re.search(r"^WRK_RESULT (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        fail(f"wrk failed on {server.name} {script}: {out.stdout} {out.stderr}")
    r = json.loads(m.group(1))
    r["load"] = before_load
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["wall"] = wall
    r["wrk_cpu"] = (kids2.ru_utime - kids.ru_utime) + (kids2.ru_stime - kids.ru_stime)
    r["server_cpu"] = {k: threads2.get(k, 0) - threads.get(k, 0) for k in threads2}
    errors = {k: r[k] for k in ("connect", "read", "write", "timeout", "status") if r[k]}
    if errors:
        fail(f"{server.name} {script} -c{connections}: errors {errors}\n{out.stdout}")
    return r


def histogram(m, name):
    return m.get(f"{name}_sum", 0.0), m.get(f"{name}_count", 0.0)


def commands(node, connections, seconds, tag):
    """Durable CreateUser with `connections` connections, checked against the log."""
    before = metrics(node)
    r = wrk(node, "benches/http/create.lua", connections, seconds, [tag])
    time.sleep(0.5)  # requests in flight when wrk stopped are answered
    after = metrics(node)
    head = after["cqrs_store_head_position"] - before["cqrs_store_head_position"]
    if not r["requests"] <= head <= r["requests"] + connections:
        fail(f"{r['requests']} commands acknowledged but the head moved by {head}")
    failed = sum(v - before.get(k, 0) for k, v in after.items()
                 if k.startswith("cqrs_commands_total") and 'outcome="ok"' not in k)
    if failed:
        fail(f"{failed} commands failed")
    bs, bc = histogram(after, "cqrs_batch_size")
    bs0, bc0 = histogram(before, "cqrs_batch_size")
    cs, cc = histogram(after, "cqrs_commit_duration_seconds")
    cs0, cc0 = histogram(before, "cqrs_commit_duration_seconds")
    r["commits"] = cc - cc0
    r["per_commit"] = (bs - bs0) / max(1, bc - bc0)
    r["commit_ms"] = (cs - cs0) / max(1, cc - cc0) * 1000
    r["appended"] = head
    return r


def cpu_text(r):
    parts = [f"wrk {r['wrk_cpu']:.1f}"]
    for name, s in sorted(r["server_cpu"].items(), key=lambda kv: -kv[1]):
        if s >= 0.05:
            parts.append(f"{name} {s:.1f}")
    return ", ".join(parts) + f" (of {2 * r['wall']:.1f} CPU-s)"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--sse-subscribers", type=int, default=100)
    p.add_argument("--sse-commands", type=int, default=500)
    p.add_argument("--stdio-commands", type=int, default=50000)
    p.add_argument("--quick", action="store_true", help="3 s runs, 100 SSE commands")
    a = p.parse_args()
    if a.quick:
        a.duration, a.sse_commands, a.stdio_commands = 3, 100, 10000
    secs = a.duration
    work = tempfile.mkdtemp(prefix="cqrs-http-bench.")
    data = os.path.join(work, "data")
    print(f"machine: {os.cpu_count()} cores, load {load()}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    print(f"commit: {commit}{' (with local changes)' if dirty else ''}; store: {data}")

    # Seed: USERS users, 3 events each, through stdin (a durable store in `work`).
    workload = subprocess.run(
        [f"{BIN}/cqrs-workload", "--users", str(a.users), "--updates", "2", "--get-queries",
         "0", "--at-time-queries", "0", "--dest", "cqrs"], capture_output=True, check=True)
    seeded = subprocess.run([f"{BIN}/cqrs", "--data-dir", data, "--node-id", "cqrs"],
                            input=workload.stdout, capture_output=True, check=True)
    ok = seeded.stdout.count(b'"success":true')
    if ok != 3 * a.users:
        fail(f"seeding: {ok} of {3 * a.users} commands succeeded")
    print(f"seeded: {a.users} users, {ok} events")

    floor = Server([f"{BIN}/cqrs-http-floor", "127.0.0.1:0"], "floor")
    node = Server([f"{BIN}/cqrs", "--http", "127.0.0.1:0", "--data-dir", data], "cqrs")
    try:
        body = get(node.url + "/api/v1/users/user-0")
        if '"id":"user-0"' not in body:
            fail(f"GET user-0: {body}")
        results = []
        users = [str(a.users)]
        r = wrk(floor, "benches/http/get.lua", 64, secs, users, warmup=2)
        results.append(("floor: GET (axum hello, cqrs-http-floor)", 64, r))
        print(f"  floor: {r['rps']:,.0f}/s  load {r['load']}  cpu: {cpu_text(r)}", flush=True)
        r = wrk(node, "benches/http/get.lua", 64, secs, users, warmup=2)
        results.append(("GET /api/v1/users/{id}", 64, r))
        print(f"  GET user: {r['rps']:,.0f}/s  load {r['load']}  cpu: {cpu_text(r)}", flush=True)
        stamp = str(time.time_ns())
        for c in (64, 256):
            r = commands(node, c, secs, f"c{c}-{stamp}")
            results.append(("POST /api/v1/commands (CreateUser, durable)", c, r))
            print(f"  commands c{c}: {r['rps']:,.0f}/s, {r['per_commit']:.1f} per commit, "
                  f"{r['commit_ms']:.2f} ms per commit  load {r['load']}  cpu: {cpu_text(r)}",
                  flush=True)
        floor.stop()  # idle from here on; stopped so that it takes nothing
        sse = {}
        for probe in ("sse_epoll.py", "sse_latency.py"):
            sse_load = load()
            out = subprocess.run([sys.executable, os.path.join(ROOT, "benches/http", probe),
                                  "127.0.0.1", node.addr.rsplit(":", 1)[1],
                                  str(a.sse_subscribers), str(a.sse_commands)],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                fail(f"{probe}: {out.stdout} {out.stderr}")
            line = out.stdout.strip().splitlines()[-1]
            m = re.search(r"(\d+) deliveries: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms",
                          line)
            if not m or int(m.group(1)) != a.sse_subscribers * a.sse_commands:
                fail(f"{probe}: not every event reached every subscriber: {line}")
            sse[probe] = (line, sse_load, float(m.group(3)))
            print(f"  {probe}: {line}  load {sse_load}", flush=True)
    except BaseException:
        for s in (floor, node):
            if s.proc.poll() is None:
                s.proc.kill()
        raise
    status = node.stop()
    if status != 0:
        fail(f"cqrs exited {status} after SIGTERM")
    check = subprocess.run([f"{BIN}/cqrs", "--data-dir", data, "--node-id", "cqrs", "check"],
                           capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.strip().endswith("ok"):
        fail(f"cqrs check: {check.stdout} {check.stderr}")

    # The writer alone, in the same run: the same durable CreateUser streamed on stdin (no HTTP,
    # no wrk), with at most 32 commands per commit (about what 64 connections make) and with
    # the default 1,024. What the HTTP figures can at best approach on this machine now.
    creates = subprocess.run(
        [f"{BIN}/cqrs-workload", "--users", str(a.stdio_commands), "--updates", "0",
         "--get-queries", "0", "--at-time-queries", "0", "--dest", "cqrs"],
        capture_output=True, check=True).stdout
    stdio = []
    for batch in (32, 1024):
        d = os.path.join(work, f"stdio-{batch}")
        l = load()
        start = time.monotonic()
        out = subprocess.run([f"{BIN}/cqrs", "--data-dir", d, "--node-id", "cqrs",
                              "--max-batch", str(batch)], input=creates, capture_output=True)
        wall = time.monotonic() - start
        ok = out.stdout.count(b'"success":true')
        if out.returncode != 0 or ok != a.stdio_commands:
            fail(f"stdio, --max-batch {batch}: {ok} of {a.stdio_commands} succeeded")
        stdio.append((batch, a.stdio_commands / wall, l))
        print(f"  stdio --max-batch {batch}: {a.stdio_commands / wall:,.0f} commands/s  load {l}",
              flush=True)

    floor_rps = results[0][2]["rps"]
    print()
    print(f"| run | connections | requests/s | vs floor | mean | p50 | p99 | per commit | "
          f"commit | load average |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for what, c, r in results:
        extra = (f"{r['per_commit']:.1f} | {r['commit_ms']:.2f} ms" if "commits" in r
                 else " | ")
        print(f"| {what} | {c} | {r['rps']:,.0f} | {r['rps'] / floor_rps:.0%} | "
              f"{r['mean_us'] / 1000:.2f} ms | {r['p50_us'] / 1000:.2f} ms | "
              f"{r['p99_us'] / 1000:.2f} ms | {extra} | {r['load']} |")
    for batch, rate, l in stdio:
        print(f"| the writer alone: CreateUser on stdin, --max-batch {batch} | | {rate:,.0f} | "
              f"{rate / floor_rps:.0%} | | | | | | {l} |")
    print()
    for probe, (line, l, _) in sse.items():
        print(f"SSE ({probe}), {line} (load {l})")
    print("\nCPU seconds during each run (wrk, then the server's threads):")
    for what, c, r in results:
        print(f"- {what}, {c} connections: {cpu_text(r)}")
    get_ratio = results[1][2]["rps"] / floor_rps
    best = max(r["rps"] for w, c, r in results if "commits" in r)
    p99 = sse["sse_epoll.py"][2]
    print("\ntargets:")
    print(f"- GET >= 50% of the floor: {get_ratio:.0%} ({'met' if get_ratio >= 0.5 else 'MISSED'})")
    print(f"- durable commands >= 30,000/s: {best:,.0f}/s "
          f"({'met' if best >= 30000 else 'MISSED'}; 64 connections: {results[2][2]['rps']:,.0f}/s)")
    print(f"- SSE p99 <= 10 ms with {a.sse_subscribers} subscribers: {p99:.2f} ms with the "
          f"epoll probe ({'met' if p99 <= 10 else 'MISSED'}; the asyncio probe: "
          f"{sse['sse_latency.py'][2]:.2f} ms)")
    print("verified: no errors, every acknowledged command in the log, exit 0, cqrs check ok")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
