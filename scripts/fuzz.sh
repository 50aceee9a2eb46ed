#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang-14 with ASan and UBSan) in build-fuzz and runs
# each one for SECONDS (default 10) over a copy of its seed corpus (tests/fuzz/corpus/<target>;
# the tree is never rewritten). Fails if any target crashes, leaks, hits UB or times out, and
# prints the executions per target. Crashing inputs are kept in build-fuzz/fuzz-artifacts/.
#
#   bash scripts/fuzz.sh          # 10 s per target (CI)
#   bash scripts/fuzz.sh 300      # a longer run
#   FUZZ_TARGETS="http_request config_file" bash scripts/fuzz.sh 60
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-10}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
TARGETS=(${FUZZ_TARGETS:-grpc_handlers http_request config_file record_decode})

# Largest input per target: enough for a batch of requests, a real config file or a job record.
declare -A MAX_LEN=(
  [grpc_handlers]=4096 [http_request]=4096 [config_file]=4096 [record_decode]=4096
)
# The gRPC target keeps one store and server across inputs, so nearly every input grows the heap
# and a leak scan after each would cost more than the input: it checks for leaks once, at exit,
# after shutting everything down.
declare -A EXTRA=([grpc_handlers]="-detect_leaks=0")

bash scripts/install-deps.sh
missing=()
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "fuzz: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -DLEDGERQ_FUZZ=ON \
    -DLEDGERQ_SANITIZE=address,undefined -DLEDGERQ_BUILD_TESTS=OFF
fi
cmake --build "$BUILD" -j "$JOBS" --target fuzz

work=$(mktemp -d "${TMPDIR:-/tmp}/ledgerq-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$PWD/$BUILD/fuzz-artifacts"
mkdir -p "$artifacts"
# UBSan findings stop the run like ASan's; leaks are checked (LSan) after every input.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1

declare -A EXECS=()
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/tmp"
  cp -r "tests/fuzz/corpus/$t/." "$work/$t/corpus/"
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  rc=0
  TMPDIR="$work/$t/tmp" "$BUILD/tests/fuzz/fuzz_$t" "$work/$t/corpus" \
    -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" -timeout=30 \
    -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" ${EXTRA[$t]:-} \
    >"$work/$t/log" 2>&1 || rc=$?
  EXECS[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
  if ((rc != 0)); then
    failed+=("$t")
    tail -n 60 "$work/$t/log"
    echo "fuzz: $t FAILED (exit $rc); inputs in $artifacts/$t-*"
  fi
done

echo
printf '%-16s %14s\n' target executions
for t in "${TARGETS[@]}"; do printf '%-16s %14s\n' "$t" "${EXECS[$t]:-?}"; done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ok (${SECONDS_PER_TARGET}s per target)"
