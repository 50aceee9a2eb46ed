#!/usr/bin/env bash
# Starts a fresh ledgerqd (--sync=always) on a temporary data dir and runs the enqueue
# benchmarks against it: unary and batched (100 per call). Prints figures; asserts nothing.
#   bench/run-enqueue.sh [build-dir] [duration]
set -euo pipefail
build=${1:-build}
duration=${2:-10s}
. "$(dirname "$0")/start-daemon.sh" "$build"
"$build/bench/ledgerq-bench" enqueue --server "$addr" --duration "$duration" --concurrency 64
"$build/bench/ledgerq-bench" enqueue --server "$addr" --duration "$duration" --concurrency 16 \
  --batch 100
