#!/usr/bin/env bash
# Quick start, step 1: install what is needed, build, and start ledgerqd in the foreground on an
# embedded data directory (./ledgerq-data). Extra arguments go to ledgerqd, e.g.
#   bash scripts/run.sh --grpc-listen 127.0.0.1:7500
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERQ_BUILD_TESTS=OFF >/dev/null
cmake --build build -j2 --target ledgerqd ledgerq
echo "starting ledgerqd; the CLI is build/client/ledgerq; stop with Ctrl-C"
exec build/server/ledgerqd --data-dir ./ledgerq-data "$@"
