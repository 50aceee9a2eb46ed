#!/usr/bin/env bash
# Starts a fresh ledgerqd (--sync=always) on a temporary data dir and runs the full-cycle
# benchmark: producers enqueue while workers lease in batches and complete every job, each step
# durable before it is answered. Throughput runs are closed loop; latency runs offer a fixed rate
# (open loop) and report enqueue-to-lease latency. Prints figures; asserts nothing.
#   bench/run-cycle.sh [build-dir] [duration] [open-loop rate]
set -euo pipefail
build=${1:-build}
duration=${2:-10s}
rate=${3:-7500}
. "$(dirname "$0")/start-daemon.sh" "$build"
b() { "$build/bench/ledgerq-bench" cycle --server "$addr" --duration "$duration" "$@"; }
# Throughput: batched on both ends (EnqueueBatch of 100, CompleteBatch of 100).
b --producers 8 --enqueue-batch 100 --complete-batch 100 --lease-batch 256
# Throughput: unary Enqueue from 256 producers, CompleteBatch of 64.
b --producers 256 --complete-batch 64 --lease-batch 256
# Latency at a fixed offered rate.
b --rate "$rate" --enqueue-batch 10 --complete-batch 64
b --rate "$rate" --complete-batch 64
b --rate "$rate"
