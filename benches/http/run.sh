#!/usr/bin/env bash
# The HTTP benchmark of issue 13 in one command (docs/benchmarks.md, "HTTP (issue 13)"):
# builds the release binaries, then benches/http/run.py runs the floor (cqrs-http-floor),
# GET /api/v1/users/{id}, durable commands with 64 and 256 connections and the SSE latency
# against one `cqrs --http` on a durable store in a temporary directory, verifies every run
# and prints the table. Needs wrk (apt-get install wrk) and python3.
# Usage: benches/http/run.sh [--quick] [--users N] [--duration SECONDS] [--sse-commands N]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 2; }
cargo build --release --quiet --bin cqrs --bin cqrs-http-floor --bin cqrs-workload
exec python3 benches/http/run.py "$@"
