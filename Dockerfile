# ledgerq container image: ledgerqd (the daemon, PID 1) and ledgerq (the CLI).
#
#   docker build -t ledgerq:0.1.0 .
#   docker run -d --name ledgerq -p 127.0.0.1:7400:7400 -p 127.0.0.1:7401:7401 \
#     -v ledgerq-data:/var/lib/ledgerq --stop-timeout 30 ledgerq:0.1.0
#
# Both stages use the same Debian release, so the runtime packages below are exactly the sonames
# the build stage linked against. See docs/deploy.md.

# BASE: any Debian 12 (bookworm) image. The default pulls debian:12 from a registry; where none is
# reachable, deploy/container-test.sh builds a local one with debootstrap and passes
# --build-arg BASE=localhost/debian:12. Both stages use it, so their packages match.
ARG BASE=debian:12

############################## build ##############################
FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# Dependencies first, so editing the sources does not re-run apt.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh

COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLEDGERQ_BUILD_TESTS=OFF \
 && cmake --build build -j2 --target ledgerqd ledgerq

############################## runtime ##############################
FROM ${BASE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive

# Shared libraries only (no -dev packages); their own dependencies (abseil, c-ares, re2, snappy,
# zstd, ...) come in through apt. curl is for HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      curl \
      libfmt9 \
      libgrpc++1.51 \
      libjemalloc2 \
      libprometheus-cpp-core1.0 \
      libprotobuf32 \
      librocksdb7.8 \
      libspdlog1.10 \
      libssl3 \
      libtomlplusplus3 \
 && rm -rf /var/lib/apt/lists/*

# Fixed uid/gid so volume ownership and Kubernetes' runAsUser/fsGroup agree across rebuilds.
RUN groupadd --gid 10001 ledgerq \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ledgerq \
      --shell /usr/sbin/nologin ledgerq \
 && install -d -o ledgerq -g ledgerq -m 0750 /var/lib/ledgerq

COPY --from=build /src/build/server/ledgerqd /src/build/client/ledgerq /usr/local/bin/

# Fail the image build, not the first start, if a shared library is missing.
RUN for b in /usr/local/bin/ledgerqd /usr/local/bin/ledgerq; do \
      if ldd "$b" | grep 'not found'; then echo "missing shared libraries for $b" >&2; exit 1; fi; \
    done \
 && ledgerqd --version

USER 10001:10001
WORKDIR /var/lib/ledgerq
# Declared after the chown above, so a fresh named/anonymous volume starts owned by ledgerq.
VOLUME /var/lib/ledgerq

# 7400 gRPC (producers, workers, operators), 7401 HTTP (/metrics, /healthz, /readyz).
EXPOSE 7400 7401

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:7401/healthz || exit 1

# Exec form: ledgerqd is PID 1 and receives SIGTERM itself; it stops accepting, drains in-flight
# calls and closes the store. It spawns no children, so no init is needed to reap zombies.
# Binding 0.0.0.0 without an auth file exposes an unauthenticated API, which ledgerqd refuses
# unless --insecure-allow-remote is given (it then logs a warning). Run it with an auth file
# instead: mount one and append `--auth-file /etc/ledgerq/auth.toml` (README, "Security"); with
# it, --insecure-allow-remote has no effect, and the bearer tokens need TLS off loopback:
# append `--tls-cert ... --tls-key ...`, or `--insecure-allow-plaintext` where a proxy on the
# same host terminates TLS (it then logs a warning). Other flags (--sync, --tls-cert, ...) may be
# appended at `docker run`; a repeated flag takes its last value, so the ones below can be
# overridden the same way.
ENTRYPOINT ["/usr/local/bin/ledgerqd", \
            "--data-dir", "/var/lib/ledgerq", \
            "--grpc-listen", "0.0.0.0:7400", \
            "--http-listen", "0.0.0.0:7401", \
            "--insecure-allow-remote"]
