#!/usr/bin/env bash
# Installs every Debian 12 package ledgerq needs to build, run and test.
# Idempotent: packages already present are skipped by apt; safe to run on every build.
# Used by README's quick start, .ci/run and the Dockerfile alike.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libboost-dev libboost-system-dev
  librocksdb-dev
  libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  prometheus-cpp-dev
  libssl-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  catch2 libjemalloc-dev
)
# Test-only tools: promtool (metrics/rules checks), procps (pkill/ps in e2e scripts), clang-14
# and libclang-rt-14-dev (libFuzzer targets, scripts/fuzz.sh); the Python client's runtime and
# pytest (for /usr/bin/python3), and openssl for its TLS tests.
TEST_PKGS=(prometheus procps clang-14 libclang-rt-14-dev
  python3-grpcio python3-protobuf python3-pytest openssl
  python3-yaml iproute2 util-linux)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--with-tests" ]]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The Node client's tests need node >= 18 and npm: Debian's nodejs and npm, unless a node and npm
# are already installed (a NodeSource nodejs, for one, conflicts with Debian's npm package).
if [[ "${1:-}" == "--with-tests" ]] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
  for p in nodejs npm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi

# deploy/kubernetes/validate.sh needs a kubectl: Debian's kubernetes-client unless one is there
# (another kubectl package owns /usr/bin/kubectl and conflicts with it).
if [[ "${1:-}" == "--with-tests" ]] && ! command -v kubectl >/dev/null 2>&1; then
  dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed" ||
    missing+=(kubernetes-client)
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
