#!/usr/bin/env bash
# The comparison with the queues users would pick instead of ledgerq, on loopback, with the same
# payloads, concurrency and durability (see README, "Compared with peers"):
#   ledgerqd --sync=always          fsync (group commit) before every answer
#   beanstalkd -b DIR -f0           binlog fsynced on every write, before the reply
#   beanstalkd -b DIR               binlog fsynced at most every 50 ms (its default): a crash
#                                   may lose acknowledged puts and deletes
#   redis --appendfsync always      AOF fsynced before replies (reliable queue: LPUSH, BLMOVE to
#                                   a processing list, LREM)
#   PostgreSQL 15                   queue table, FOR UPDATE SKIP LOCKED, synchronous_commit=on
#   grpc-echo                       a bare gRPC service: the framework's ceiling
# Workloads: enqueue only; full cycle (enqueue, take, complete); payloads 100 B and 1 KiB;
# concurrency 8 and 64 (closed loop, one operation in flight per client connection). Every cell
# gets a freshly started server on a free port in a temporary directory.
#
#   bench/peers/run.sh [build-dir] [duration]      defaults: build-peers 10s
# Environment: SYSTEMS, WORKLOADS, PAYLOADS, CONCURRENCY (space-separated subsets), WARMUP
# (default 1s), JOBS (build parallelism, default 2).
# Writes bench/peers/results/<date>.json (<date>-<time>.json when that exists) and prints a
# markdown table.
set -euo pipefail
build=${1:-build-peers}
duration=${2:-10s}
warmup=${WARMUP:-1s}
systems=${SYSTEMS:-"ledgerq beanstalkd-f0 beanstalkd redis postgres grpc-echo"}
workloads=${WORKLOADS:-"enqueue cycle"}
payloads=${PAYLOADS:-"100 1024"}
concurrencies=${CONCURRENCY:-"8 64"}

. "$(dirname "$0")/common.sh"
cd "$peers_repo"

pkgs=(redis-server beanstalkd postgresql libhiredis-dev libpq-dev)
command -v pkg-config >/dev/null || pkgs+=(pkgconf)
install_missing "${pkgs[@]}"
build_bench "$build" -DLEDGERQ_BENCH_PEERS=ON
bench="$build/bench/ledgerq-bench"
if ! "$bench" --help | grep -q '^ *peer '; then
  echo "$bench has no peer drivers (LEDGERQ_BENCH_PEERS off or libraries missing)" >&2
  exit 1
fi

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdata="$peers_work/pgdata"
pg_running=""
stop_postgres() {
  if [[ -n "$pg_running" ]]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
    pg_running=""
  fi
}
peers_cleanup_extra=stop_postgres

# start SYSTEM DIR: starts a fresh server in DIR; sets $addr and $pid (empty for PostgreSQL,
# which pg_ctl manages).
start() {
  local system=$1 dir=$2 port
  port=$(free_port)
  addr="127.0.0.1:$port"
  pid=""
  case $system in
    ledgerq)
      spawn "$dir/log" "$build/server/ledgerqd" --data-dir "$dir/data" \
        --grpc-listen "$addr" --http-listen "127.0.0.1:$(free_port)" --sync=always
      pid=$spawned ;;
    beanstalkd-f0)
      spawn "$dir/log" beanstalkd -l 127.0.0.1 -p "$port" -b "$dir" -f0
      pid=$spawned ;;
    beanstalkd)
      spawn "$dir/log" beanstalkd -l 127.0.0.1 -p "$port" -b "$dir"
      pid=$spawned ;;
    redis)
      spawn "$dir/log" redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --appendonly yes --appendfsync always --save '' --daemonize no --protected-mode no
      pid=$spawned ;;
    grpc-echo)
      spawn "$dir/log" "$bench" echo-server --listen "$addr"
      pid=$spawned ;;
    postgres)
      if [[ ! -d "$pgdata" ]]; then
        install -d -o postgres -g postgres "$pgdata"
        runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -U postgres -A trust \
          >"$peers_work/initdb.log" 2>&1
      fi
      chown postgres "$dir"
      install -d -o postgres -g postgres "$dir/sock"
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$dir/log" -w -o \
        "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir/sock \
         -c fsync=on -c synchronous_commit=on -c max_connections=100" start >/dev/null
      pg_running=1 ;;
  esac
  wait_port "$port"
}

stop_server() {
  local system=$1
  if [[ $system == postgres ]]; then stop_postgres; else stop "$pid"; fi
}

lines="$peers_work/results.jsonl"
: >"$lines"
# The systems of one cell run back to back, so that the load other users put on a shared
# machine spreads over all systems rather than falling on one.
for workload in $workloads; do
  for bytes in $payloads; do
    for conc in $concurrencies; do
      for system in $systems; do
        driver=${system%-f0}
        dir=$(mktemp -d "$peers_work/$system.XXXX")
        chmod 755 "$dir"
        started=""
        for attempt in 1 2 3; do
          if start "$system" "$dir"; then
            started=1
            break
          fi
          echo "$system did not start (attempt $attempt); its log: $(tail -3 "$dir/log")" >&2
          stop_server "$system"
        done
        [[ -n $started ]] || continue
        run "$bench" peer --system "$driver" --label "$system" --server "$addr" \
          --workload "$workload" --payload-bytes "$bytes" --concurrency "$conc" \
          --duration "$duration" --warmup "$warmup" --json "$lines" ||
          echo "$system $workload $bytes B x$conc failed; server log: $(tail -3 "$dir/log")" >&2
        stop_server "$system"
        rm -rf "$dir"
      done
    done
  done
done

mkdir -p bench/peers/results
out="bench/peers/results/$(date -u +%Y-%m-%d).json"
# A second run on the same day keeps the first one's file.
[[ -e $out ]] && out="bench/peers/results/$(date -u +%Y-%m-%d-%H%M%S).json"
versions="ledgerqd $(git describe --always --dirty); $(redis-server --version | cut -d' ' -f1-3); \
$(beanstalkd -v); $("$pgbin/postgres" --version)"
"$bench" peer-table --in "$lines" --out "$out" \
  --machine "$(machine_description); $versions" \
  --command "bench/peers/run.sh $build $duration (warm-up $warmup)"
echo
echo "results: $out"
