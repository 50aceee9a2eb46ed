# Sourced by the bench runners: starts a fresh ledgerqd (--sync=always) on a temporary data
# dir, sets $addr to its gRPC address, and stops it and removes the dir on exit.
#   usage: . bench/start-daemon.sh BUILD_DIR
build=${1:-build}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$build/server/ledgerqd" --data-dir "$dir/data" --grpc-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --sync=always >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'grpc=[^ ]*' "$dir/out" | cut -d= -f2)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "ledgerqd --sync=always at $addr"
