#!/usr/bin/env bash
# Starts a fresh ledgerqd (--sync=always) on a temporary data dir and runs the full-cycle
# benchmark: producers enqueue while workers lease in batches and complete every job. First
# closed loop (throughput), then an open-loop rate (enqueue-to-lease latency at that load).
# Prints figures; asserts nothing.
#   bench/run-cycle.sh [build-dir] [duration] [open-loop rate]
set -euo pipefail
build=${1:-build}
duration=${2:-10s}
rate=${3:-7500}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$build/server/ledgerqd" --data-dir "$dir/data" --grpc-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --sync=always >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'grpc=[^ ]*' "$dir/out" | cut -d= -f2)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "ledgerqd --sync=always at $addr"
"$build/bench/ledgerq-bench" cycle --server "$addr" --duration "$duration" "${@:4}"
"$build/bench/ledgerq-bench" cycle --server "$addr" --duration "$duration" --rate "$rate" "${@:4}"
