#!/usr/bin/env bash
# Starts a fresh ledgerqd (--sync=always) on a temporary data dir and runs the enqueue
# benchmarks against it: unary and batched (100 per call). Prints figures; asserts nothing.
#   bench/run-enqueue.sh [build-dir] [duration]
set -euo pipefail
build=${1:-build}
duration=${2:-10s}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$build/server/ledgerqd" --data-dir "$dir/data" --grpc-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --sync=always >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'grpc=[^ ]*' "$dir/out" | cut -d= -f2)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "ledgerqd --sync=always at $addr"
"$build/bench/ledgerq-bench" enqueue --server "$addr" --duration "$duration" --concurrency 64
"$build/bench/ledgerq-bench" enqueue --server "$addr" --duration "$duration" --concurrency 16 \
  --batch 100
