#!/usr/bin/env bash
# Runs the Node client's tests against real ledgerqd daemons (each test file starts its own):
# installs the locked dependencies (npm ci; offline when npm's cache has them), builds with tsc,
# type-checks the shipped typings and runs `node --test`. Works from any directory; exits
# non-zero on any failure. Needs node >= 18 and npm on PATH, and a built daemon and CLI
# ($LEDGERQD, default <repo>/build/server/ledgerqd; $LEDGERQ_CLI, default
# <repo>/build/client/ledgerq).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "run-tests.sh: $tool not found on PATH" >&2; exit 1; }
done
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "run-tests.sh: node $(node --version) is too old; need 18 or later" >&2
  exit 1
fi
export LEDGERQD="${LEDGERQD:-$repo/build/server/ledgerqd}"
export LEDGERQ_CLI="${LEDGERQ_CLI:-$repo/build/client/ledgerq}"
for bin in "$LEDGERQD" "$LEDGERQ_CLI"; do
  [ -x "$bin" ] || { echo "run-tests.sh: $bin is not built" >&2; exit 1; }
done

# npm ci only when node_modules does not match the lock file already.
stamp=node_modules/.ledgerq-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  npm ci --prefer-offline --no-audit --no-fund
  echo "$want" >"$stamp"
fi

echo "node $(node --version), npm $(npm --version)"
npm run --silent build
npm run --silent typecheck
# Test files are named explicitly: node 18 and 20 differ in what a bare directory means.
exec node --test test/*.test.js
