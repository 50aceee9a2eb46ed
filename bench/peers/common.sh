# Sourced by bench/peers/run.sh and recovery.sh: package installation, the build, free ports,
# process bookkeeping with cleanup on exit (also on failure or Ctrl-C).

peers_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Installs the Debian packages given that are missing (idempotent; nothing when all present).
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

# Configures (first time only: an existing build dir keeps its settings) and builds ledgerqd
# and ledgerq-bench with -jJOBS (default 2).
build_bench() {
  local build=$1
  shift
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S "$peers_repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DLEDGERQ_BUILD_TESTS=OFF "$@" >&2
  elif (($# > 0)); then
    cmake "$build" "$@" >/dev/null
  fi
  cmake --build "$build" -j"${JOBS:-2}" --target ledgerqd ledgerq-bench >&2
}

# A TCP port that no socket uses now, below the kernel's ephemeral range (so the benchmark's
# own client connections cannot be holding it).
free_port() {
  local low p
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
  ((low > 12000)) || low=32768
  while :; do
    p=$((10000 + RANDOM % (low - 10000)))
    # Local ports in use, from /proc/net/tcp{,6} (hex, second column's port part).
    if ! awk -v port="$(printf '%04X' "$p")" 'FNR > 1 { split($2, a, ":"); if (a[2] == port) f = 1 }
           END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# Waits until 127.0.0.1:PORT accepts connections (up to 60 s).
wait_port() {
  local i
  for i in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# Resident memory of a process in bytes.
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }

# Every process started through `spawn` is stopped (TERM, then KILL after 15 s) by `stop` or
# at exit; `peers_cleanup_extra` (a function name) runs too, then the work dir is removed.
peers_pids=()
peers_work=$(mktemp -d /tmp/ledgerq-peers.XXXXXX)
chmod 755 "$peers_work"
peers_cleanup_extra=true

spawn() { # spawn LOGFILE CMD...: starts CMD in the background; sets $spawned
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  spawned=$!
  peers_pids+=("$spawned")
}

forget() { # forget PID: no longer ours to stop (it ended)
  local keep=() p
  for p in "${peers_pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  peers_pids=("${keep[@]}")
}

# run CMD...: runs CMD in the background and waits for it, so that a signal to this script is
# handled at once (bash delays traps until a foreground child ends); returns CMD's status.
run() {
  local pid rc=0
  "$@" &
  pid=$!
  peers_pids+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

stop() { # stop PID: TERM, wait up to 15 s, then KILL
  local pid=$1 i
  [[ -n $pid ]] || return 0
  forget "$pid"
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

peers_cleanup() {
  local pid
  set +e
  for pid in "${peers_pids[@]}"; do stop "$pid"; done
  wait 2>/dev/null
  "$peers_cleanup_extra"
  rm -rf "$peers_work"
}
trap peers_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

machine_description() {
  local model
  model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
  echo "$(nproc) cores ($model), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' \
    /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
}
