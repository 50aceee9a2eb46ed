#!/usr/bin/env bash
# Recovery time and resident memory per pending job: fills a fresh ledgerqd (--sync=always)
# with N pending jobs (EnqueueBatch of 1000, 100-byte payloads, no idempotency keys), reads its
# RSS before and after, stops it with SIGTERM, restarts it on the same data directory and times
# how long until it answers gRPC calls and GET /readyz is 200.
#   bench/peers/recovery.sh [build-dir] [jobs]        defaults: build-peers 1000000
# Writes bench/peers/results/recovery-<date>.json and prints it.
set -euo pipefail
build=${1:-build-peers}
jobs=${2:-1000000}

. "$(dirname "$0")/common.sh"
cd "$peers_repo"
build_bench "$build"
bench="$build/bench/ledgerq-bench"
data="$peers_work/data"
grpc="127.0.0.1:$(free_port)"
http="127.0.0.1:$(free_port)"

daemon() { # daemon LOG: starts ledgerqd on $data; sets $pid
  spawn "$1" "$build/server/ledgerqd" --data-dir "$data" --grpc-listen "$grpc" \
    --http-listen "$http" --sync=always
  pid=$spawned
}

daemon "$peers_work/first.log"
run "$bench" wait-ready --server "$grpc" --http "$http" >/dev/null
sleep 2
rss_empty=$(rss_bytes "$pid")
echo "filling with $jobs jobs..." >&2
fill_start=$(date +%s%N)
run "$bench" enqueue --server "$grpc" --jobs "$jobs" --batch 1000 --concurrency 4 --no-keys \
  --payload-bytes 100 --duration 1h --queue recovery >&2
fill_s=$(awk -v a="$fill_start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
sleep 2
rss_filled=$(rss_bytes "$pid")
stop_start=$(date +%s%N)
stop "$pid"
stop_s=$(awk -v a="$stop_start" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')

drop=""
if [[ ${DROP_CACHES:-0} == 1 ]]; then
  sync
  echo 3 >/proc/sys/vm/drop_caches && drop=" (page cache dropped)"
fi
start=$(date +%s%N)
daemon "$peers_work/second.log"
ready=$("$bench" wait-ready --server "$grpc" --http "$http" --since-unix-ns "$start")
sleep 2
rss_recovered=$(rss_bytes "$pid")
# The daemon's own timeline of the restart: when the store was open, the indexes rebuilt, the
# ports listening.
timeline=$(grep -E 'opened|recovered indexes|listening' "$peers_work/second.log" | tr -d '"\\' |
  sed 's/^/    "/; s/$/",/' | sed '$ s/,$//')
stop "$pid"
db_bytes=$(du -sb "$data" | cut -f1)

mkdir -p bench/peers/results
out="bench/peers/results/recovery-$(date -u +%Y-%m-%d).json"
[[ -e $out ]] && out="bench/peers/results/recovery-$(date -u +%Y-%m-%d-%H%M%S).json"
cat >"$out" <<JSON
{
  "machine": "$(machine_description)",
  "command": "bench/peers/recovery.sh $build $jobs",
  "jobs": $jobs,
  "payload_bytes": 100,
  "fill_seconds": $fill_s,
  "shutdown_seconds": $stop_s,
  "restart": $ready,
  "restart_note": "seconds from spawning the daemon$drop (started at $(date -u -d "@${start:0:10}.${start:10:3}" +%H:%M:%S.%3N) UTC)",
  "restart_log": [
$timeline
  ],
  "rss_empty_bytes": $rss_empty,
  "rss_after_fill_bytes": $rss_filled,
  "rss_after_restart_bytes": $rss_recovered,
  "rss_bytes_per_pending_job_after_fill": $(((rss_filled - rss_empty) / jobs)),
  "rss_bytes_per_pending_job_after_restart": $(((rss_recovered - rss_empty) / jobs)),
  "data_dir_bytes": $db_bytes
}
JSON
cat "$out"
