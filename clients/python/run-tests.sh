#!/bin/sh
# Generates the Python stubs and runs the Python client's tests against a real ledgerqd (the
# tests start their own daemons: $LEDGERQD, default <repo>/build/server/ledgerqd; the CLI:
# $LEDGERQ_CLI, default <repo>/build/client/ledgerq). Run from any directory; extra arguments go
# to pytest. Exits non-zero on any failure, including "no tests collected".
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-/usr/bin/python3}

"$here/generate.sh"

cd "$repo"
status=0
PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=10 300 \
  "$python" -m pytest -q clients/python/tests "$@" || status=$?
case $status in
  0) ;;
  5) echo "run-tests.sh: pytest collected no tests" >&2; exit 1 ;;
  124|137) echo "run-tests.sh: the Python client tests took longer than 300 s" >&2; exit 1 ;;
  *) exit "$status" ;;
esac
