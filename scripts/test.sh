#!/usr/bin/env bash
# Quick start, step 2 (and what CI runs): install what is needed, build everything, and run
# every test through CTest. Unit and end-to-end tests start their own daemons on free
# loopback ports with their own temporary directories.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-tests
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGERQ_BUILD_TESTS=ON >/dev/null
cmake --build build -j2
cd build
ctest --output-on-failure -j2 --timeout 600
