#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml offline, with no API server and no registry, in seconds:
#
#   1. structure: every document parses; every object has apiVersion, kind and a DNS-1123
#      metadata.name; the references inside the manifest agree (Service selectors and the pod
#      labels, target ports and probe ports and the container's named ports, serviceName and
#      the headless Service, volumeMounts and volumes/volumeClaimTemplates, --data-dir on the
#      claim, --auth-file on the Secret mount, listen ports and containerPorts, replicas 1,
#      uid/gid 10001 and command[0] as in the Dockerfile);
#   2. kubectl create --dry-run=client: kubectl reads every object and maps its kind. With no
#      server kubectl has no discovery, so a discovery cache of Kubernetes' GA built-in kinds is
#      seeded in a temporary directory: an apiVersion/kind that is not one of them fails.
#      (Client-side schema validation, --validate=true, needs the server's OpenAPI document;
#      offline there is none, hence 3.)
#   3. a typed round trip through kubectl's own Go API types (kubectl set env|selector --local
#      -o json): a wrongly typed value fails to decode, and a field the API does not have (a
#      typo such as terminationGracePeriodSecond) is dropped, which is reported;
#   4. ledgerqd with the StatefulSet's command: in a private network namespace (root) the
#      arguments are used verbatim except the paths of the data directory and the auth file
#      (a generated one), so the 0.0.0.0 listeners are reachable from nowhere else. Its probes'
#      paths answer 200 on the ports they name, the gRPC port accepts, SIGTERM exits 0 within
#      terminationGracePeriodSeconds, and without --insecure-allow-plaintext the same command is
#      refused. Run as uid/gid runAsUser/runAsGroup when root. Without root (no netns) the
#      listen addresses become free loopback ports and the refusal is not checked.
#
# Usage: deploy/kubernetes/validate.sh [--ledgerqd PATH] [--cli PATH] [--require-daemon] [FILE...]
#   default FILE: deploy/kubernetes/*.yaml; default binaries: $LEDGERQD / $LEDGERQ_CLI, else
#   build/server/ledgerqd and build/client/ledgerq. Without them step 4 is skipped (with
#   --require-daemon it fails).
# Needs: kubectl (any version; Debian: kubernetes-client), python3 with PyYAML (python3-yaml),
# curl; for step 4 as root: unshare and setpriv (util-linux), ip (iproute2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

fail() { echo "k8s-validate: FAIL: $*" >&2; exit 1; }
PY="python3"
[[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import yaml' 2>/dev/null && PY=/usr/bin/python3

# ------------------------------------------------------------------------------------------
# Step 4's body, run inside the private network namespace (or, without root, directly).
# State comes from files in $1, written by the python step below.
# ------------------------------------------------------------------------------------------
daemon_checks() {
  local dir=$1 mode=$2 # mode: netns | loopback
  local -a argv neg
  mapfile -d '' -t argv <"$dir/argv.bin"
  mapfile -d '' -t neg <"$dir/argv-negative.bin"
  local grace http_port grpc_port
  grace=$(cat "$dir/grace")
  http_port=$(cat "$dir/http_port")
  grpc_port=$(cat "$dir/grpc_port")
  local -a as_user=()
  if [[ -s "$dir/runas" ]]; then
    local u g
    read -r u g <"$dir/runas"
    as_user=(setpriv --reuid "$u" --regid "$g" --clear-groups)
  fi
  if [[ "$mode" == netns ]]; then
    ip link set lo up
  fi

  echo "== ledgerqd ${argv[*]:1}"
  "${as_user[@]}" "${argv[@]}" >"$dir/daemon.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + 30)) code
  # Bounded wait for the startup probe's answer.
  until code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$http_port/healthz" 2>/dev/null) \
      && [[ "$code" == 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/daemon.log" >&2; fail "ledgerqd exited at start"; fi
    if ((SECONDS > deadline)); then kill -KILL "$pid" 2>/dev/null || true; cat "$dir/daemon.log" >&2; fail "no /healthz within 30s"; fi
    sleep 0.2
  done
  local path port body
  while read -r path port; do
    code=$(curl -s -o "$dir/body" -w '%{http_code}' --max-time 3 "http://127.0.0.1:$port$path" || true)
    body=$(head -c 100 "$dir/body" 2>/dev/null || true)
    [[ "$code" == 200 ]] || { kill -KILL "$pid"; fail "probe GET $path on :$port answered $code ($body)"; }
    echo "   probe $path :$port -> 200 $body"
  done <"$dir/probes"
  (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null || { kill -KILL "$pid"; fail "gRPC port $grpc_port does not accept"; }
  echo "   gRPC :$grpc_port accepts"
  if [[ -s "$dir/runas" ]]; then
    local uid
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
    [[ "$uid" == "${u:-}" ]] || { kill -KILL "$pid"; fail "ledgerqd runs as uid $uid, want $u"; }
    echo "   runs as uid $uid"
  fi
  local t0=$SECONDS
  kill -TERM "$pid"
  local rc=0
  # Bounded: the kubelet's SIGKILL comes after terminationGracePeriodSeconds.
  deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" || rc=$?
  [[ "$rc" == 0 ]] || { cat "$dir/daemon.log" >&2; fail "ledgerqd exited $rc after SIGTERM (grace ${grace}s)"; }
  grep -q 'draining' "$dir/daemon.log" || fail "no 'draining' in the log"
  grep -q 'cleanly' "$dir/daemon.log" || fail "no clean store close in the log"
  echo "   SIGTERM: exit 0 after $((SECONDS - t0))s (grace ${grace}s), drained, store closed cleanly"

  if [[ "$mode" == netns && ${#neg[@]} -gt 0 ]]; then
    echo "== without --insecure-allow-plaintext: must refuse to start"
    rc=0
    timeout 20 "${as_user[@]}" "${neg[@]}" >"$dir/negative.log" 2>&1 || rc=$?
    [[ "$rc" != 0 && "$rc" != 124 ]] || { cat "$dir/negative.log" >&2; fail "ledgerqd did not refuse (status $rc)"; }
    grep -q 'is not a loopback address' "$dir/negative.log" || { cat "$dir/negative.log" >&2; fail "refused for another reason"; }
    echo "   refused (status $rc): $(grep -o -- '--[a-z-]*: [^ ]* is not a loopback address' "$dir/negative.log" | head -n1)"
  fi
}

if [[ "${1:-}" == --in-netns ]]; then
  daemon_checks "$2" netns
  exit 0
fi

# ------------------------------------------------------------------------------------------
LEDGERQD="${LEDGERQD:-$root/build/server/ledgerqd}"
LEDGERQ_CLI="${LEDGERQ_CLI:-$root/build/client/ledgerq}"
require_daemon=0
files=()
while (($#)); do
  case "$1" in
    --ledgerqd) LEDGERQD=$2; shift 2 ;;
    --cli) LEDGERQ_CLI=$2; shift 2 ;;
    --require-daemon) require_daemon=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$ME" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) fail "unknown option $1" ;;
    *) files+=("$1"); shift ;;
  esac
done
if ((${#files[@]} == 0)); then files=("$root"/deploy/kubernetes/*.yaml); fi

KUBECTL="${KUBECTL:-$(command -v kubectl || true)}"
[[ -n "$KUBECTL" ]] || fail "kubectl not found (Debian: apt-get install -y kubernetes-client)"
"$PY" -c 'import yaml' 2>/dev/null || fail "python3 has no yaml module (Debian: apt-get install -y python3-yaml)"
command -v curl >/dev/null || fail "curl not found"

T0=$(date +%s%N)
tmp=$(mktemp -d /tmp/ledgerq-k8s-validate.XXXXXX)
cleanup() { [[ -n "${tmp:-}" ]] && rm -rf "$tmp"; }
trap cleanup EXIT
chmod 0755 "$tmp"
kv=$("$KUBECTL" version --client 2>/dev/null | head -n1 || true)
echo "k8s-validate: ${files[*]#"$root"/} with $KUBECTL (${kv:-version unknown})"

# ------------------------------------------------------------------------------------------
# 1. structure, cross references; writes the per-object files and step 4's inputs.
# ------------------------------------------------------------------------------------------
echo "== 1. structure and references"
"$PY" - "$tmp" "$root/Dockerfile" "${files[@]}" <<'PY'
import json, os, re, sys, yaml

tmp, dockerfile, files = sys.argv[1], sys.argv[2], sys.argv[3:]
errors = []
def err(msg): errors.append(msg)

objs = []
for f in files:
    try:
        docs = list(yaml.safe_load_all(open(f)))
    except yaml.YAMLError as e:
        print(f"k8s-validate: FAIL: {f}: {e}", file=sys.stderr); sys.exit(1)
    for d in docs:
        if d is None: continue
        if not isinstance(d, dict): err(f"{f}: a document is not a mapping"); continue
        objs.append((f, d))

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
for f, o in objs:
    for k in ("apiVersion", "kind"):
        if not isinstance(o.get(k), str) or not o[k]: err(f"{f}: an object without {k}")
    name = (o.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 253:
        err(f"{f}: {o.get('kind')} has no valid metadata.name ({name!r})")
if errors:
    for e in errors: print("k8s-validate: FAIL:", e, file=sys.stderr)
    sys.exit(1)

def by_kind(kind): return [o for _, o in objs if o["kind"] == kind]
def sub(d, sel): return all(d.get(k) == v for k, v in (sel or {}).items())

# Dockerfile facts: USER and ENTRYPOINT[0].
df = open(dockerfile).read()
m = re.search(r"^USER\s+(\d+):(\d+)", df, re.M)
df_uid, df_gid = (int(m.group(1)), int(m.group(2))) if m else (None, None)
m = re.search(r'^ENTRYPOINT\s+\["([^"]+)"', df, re.M)
df_entry = m.group(1) if m else None

services = {o["metadata"]["name"]: o for o in by_kind("Service")}
sts_list = by_kind("StatefulSet")
if len(sts_list) != 1: err(f"want exactly one StatefulSet, found {len(sts_list)}")
out = {"probes": [], "grace": 30}
for sts in sts_list:
    n = sts["metadata"]["name"]
    spec = sts.get("spec", {})
    tpl = spec.get("template", {})
    labels = tpl.get("metadata", {}).get("labels", {})
    pod = tpl.get("spec", {})
    if spec.get("replicas") != 1: err(f"StatefulSet {n}: replicas must be the integer 1 (one store), is {spec.get('replicas')!r}")
    if not sub(labels, spec.get("selector", {}).get("matchLabels")) or not spec.get("selector", {}).get("matchLabels"):
        err(f"StatefulSet {n}: selector.matchLabels do not match the pod template's labels")
    gov = services.get(spec.get("serviceName"))
    if gov is None: err(f"StatefulSet {n}: serviceName {spec.get('serviceName')!r} is no Service here")
    elif gov.get("spec", {}).get("clusterIP") != "None": err(f"StatefulSet {n}: Service {gov['metadata']['name']} is not headless")
    sc = pod.get("securityContext", {})
    if df_uid is not None and (sc.get("runAsUser"), sc.get("runAsGroup"), sc.get("fsGroup")) != (df_uid, df_gid, df_gid):
        err(f"StatefulSet {n}: runAsUser/runAsGroup/fsGroup {sc.get('runAsUser')}/{sc.get('runAsGroup')}/{sc.get('fsGroup')} != the Dockerfile's USER {df_uid}:{df_gid}")
    if not sc.get("runAsNonRoot"): err(f"StatefulSet {n}: runAsNonRoot is not set")
    out["grace"] = int(pod.get("terminationGracePeriodSeconds", 30))
    if out["grace"] <= 10: err(f"StatefulSet {n}: terminationGracePeriodSeconds {out['grace']} leaves no time after the 10 s gRPC drain")
    if out["grace"] > 120: err(f"StatefulSet {n}: terminationGracePeriodSeconds {out['grace']} is too long for this check")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    cs = pod.get("containers", [])
    if len(cs) != 1: err(f"StatefulSet {n}: want one container, found {len(cs)}"); continue
    c = cs[0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for s in services.values():
        sn = s["metadata"]["name"]
        if not s.get("spec", {}).get("selector") or not sub(labels, s["spec"]["selector"]):
            err(f"Service {sn}: selector does not select the StatefulSet's pods")
        for p in s.get("spec", {}).get("ports", []):
            t = p.get("targetPort", p.get("port"))
            if isinstance(t, str) and t not in ports: err(f"Service {sn}: targetPort {t!r} is no container port name")
            if isinstance(t, int) and t not in ports.values(): err(f"Service {sn}: targetPort {t} is no containerPort")
        ann = s.get("metadata", {}).get("annotations", {}) or {}
        if "prometheus.io/port" in ann and int(ann["prometheus.io/port"]) not in ports.values():
            err(f"Service {sn}: prometheus.io/port {ann['prometheus.io/port']} is no containerPort")
    mounts = {}
    for vm in c.get("volumeMounts", []):
        if vm["name"] not in volumes and vm["name"] not in claims:
            err(f"container {c['name']}: volumeMount {vm['name']!r} has no volume or volumeClaimTemplate")
        mounts[vm["mountPath"].rstrip("/")] = vm["name"]
    cmd = list(c.get("command", [])) + list(c.get("args", []))
    if not cmd: err(f"container {c['name']}: no command"); continue
    if df_entry and cmd[0] != df_entry: err(f"container {c['name']}: command[0] {cmd[0]} != the Dockerfile's ENTRYPOINT {df_entry}")
    if os.path.basename(cmd[0]) != "ledgerqd": err(f"container {c['name']}: command[0] is not ledgerqd")
    # Flags as ledgerqd sees them (last one wins, --flag=value or --flag value).
    flags, i = {}, 1
    while i < len(cmd):
        a = cmd[i]
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1); flags[k] = v
        elif a.startswith("--") and i + 1 < len(cmd) and not cmd[i + 1].startswith("--"):
            flags[a[2:]] = cmd[i + 1]; i += 1
        elif a.startswith("--"):
            flags[a[2:]] = True
        i += 1
    data_dir = str(flags.get("data-dir", "")).rstrip("/")
    if mounts.get(data_dir) not in claims:
        err(f"--data-dir {data_dir!r} is not the mountPath of a volumeClaimTemplate (the store must be persistent)")
    listen_port = {}
    for flag, pname in (("grpc-listen", "grpc"), ("http-listen", "http")):
        v = flags.get(flag)
        if not isinstance(v, str) or ":" not in v: err(f"--{flag} missing or without a port"); continue
        listen_port[pname] = int(v.rsplit(":", 1)[1])
        if ports.get(pname) != listen_port[pname]:
            err(f"--{flag} port {listen_port[pname]} != containerPort {pname} {ports.get(pname)}")
    auth_mount = None
    if "auth-file" in flags:
        af = flags["auth-file"]
        for mp, vn in mounts.items():
            if af.startswith(mp + "/") and "secret" in volumes.get(vn, {}):
                auth_mount = mp
        if auth_mount is None: err(f"--auth-file {af} is not inside a mounted Secret volume")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        pr = c.get(kind)
        if not pr: err(f"container {c['name']}: no {kind}"); continue
        hg = pr.get("httpGet", {})
        p = hg.get("port")
        num = ports.get(p) if isinstance(p, str) else p
        if num is None: err(f"{kind}: port {p!r} is no container port")
        elif num != listen_port.get("http"): err(f"{kind}: port {p!r} ({num}) is not the --http-listen port")
        if hg.get("path") not in ("/healthz", "/readyz"): err(f"{kind}: path {hg.get('path')!r} is no ledgerqd probe")
        out["probes"].append((hg.get("path"), num))

    # Step 4's inputs: the command with the data dir and the auth file moved into tmp.
    def rewrite(args, listen=None):
        res = [args[0]]
        for a in args[1:]:
            if a.startswith("--data-dir="): a = f"--data-dir={tmp}/data"
            elif a.startswith("--auth-file=") and auth_mount: a = f"--auth-file={tmp}/auth" + a[len("--auth-file=") + len(auth_mount):]
            elif listen and a.startswith("--grpc-listen="): a = f"--grpc-listen=127.0.0.1:{listen['grpc']}"
            elif listen and a.startswith("--http-listen="): a = f"--http-listen=127.0.0.1:{listen['http']}"
            res.append(a)
        return res
    if any(a.startswith(("--data-dir ", "--auth-file ")) or a in ("--data-dir", "--auth-file", "--grpc-listen", "--http-listen") for a in cmd):
        err("write path and listen flags as --flag=value (this check rewrites them)")
    out["cmd"] = cmd
    out["rewrite"] = rewrite
    out["listen_port"] = listen_port
    out["auth_rel"] = flags["auth-file"][len(auth_mount):] if auth_mount else None
    out["runas"] = (sc.get("runAsUser"), sc.get("runAsGroup"))

if errors:
    for e in errors: print("k8s-validate: FAIL:", e, file=sys.stderr)
    sys.exit(1)

# Per-object files for kubectl.
for i, (f, o) in enumerate(objs):
    with open(f"{tmp}/obj{i}.json", "w") as fh: json.dump(o, fh)
    with open(f"{tmp}/obj{i}.kind", "w") as fh: fh.write(f"{o['apiVersion']} {o['kind']} {o['metadata']['name']}\n")

# Discovery cache for an offline kubectl: Kubernetes' GA built-in kinds.
GA = {
    "v1": [("services", "Service", True), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
           ("serviceaccounts", "ServiceAccount", True), ("persistentvolumeclaims", "PersistentVolumeClaim", True),
           ("pods", "Pod", True), ("namespaces", "Namespace", False)],
    "apps/v1": [("statefulsets", "StatefulSet", True), ("deployments", "Deployment", True), ("daemonsets", "DaemonSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True), ("ingresses", "Ingress", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("podmonitors", "PodMonitor", True)],
}
base = f"{tmp}/cache/discovery/127.0.0.1_1"
groups = {}
for gv, res in GA.items():
    g, v = gv.split("/") if "/" in gv else ("", gv)
    groups.setdefault(g, []).append({"groupVersion": gv, "version": v})
    d = f"{base}/{gv}"
    os.makedirs(d, exist_ok=True)
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    with open(f"{d}/serverresources.json", "w") as fh:
        json.dump({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": verbs} for r, k, ns in res]}, fh)
with open(f"{base}/servergroups.json", "w") as fh:
    json.dump({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()]}, fh)
with open(f"{tmp}/kubeconfig", "w") as fh:
    fh.write("apiVersion: v1\nkind: Config\n"
             "clusters: [{name: offline, cluster: {server: 'https://127.0.0.1:1'}}]\n"
             "users: [{name: offline, user: {token: offline}}]\n"
             "contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: ledgerq}}]\n"
             "current-context: offline\n")

# Step 4's files. The netns run keeps the listen addresses; argv-loopback.bin is for non-root.
import socket
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
if "cmd" in out:
    def wr(name, args):
        with open(f"{tmp}/{name}", "wb") as fh: fh.write(b"".join(a.encode() + b"\0" for a in args))
    argv = out["rewrite"](out["cmd"])
    wr("argv-netns.bin", argv)
    wr("argv-negative.bin", [a for a in argv if a != "--insecure-allow-plaintext"] if "--insecure-allow-plaintext" in argv else [])
    lp = {"grpc": free_port(), "http": free_port()}
    wr("argv-loopback.bin", out["rewrite"](out["cmd"], lp))
    with open(f"{tmp}/ports-netns", "w") as fh: fh.write(f"{out['listen_port']['grpc']} {out['listen_port']['http']}\n")
    with open(f"{tmp}/ports-loopback", "w") as fh: fh.write(f"{lp['grpc']} {lp['http']}\n")
    with open(f"{tmp}/probes", "w") as fh:
        for path, port in dict.fromkeys(out["probes"]): fh.write(f"{path} {port}\n")
    with open(f"{tmp}/grace", "w") as fh: fh.write(f"{out['grace']}\n")
    with open(f"{tmp}/auth_rel", "w") as fh: fh.write(out["auth_rel"] or "")
    with open(f"{tmp}/runas_manifest", "w") as fh: fh.write("%s %s\n" % out["runas"])
print(f"   {len(objs)} objects: " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for _, o in objs))
PY

# ------------------------------------------------------------------------------------------
# 2. kubectl create --dry-run=client against the seeded discovery cache.
# ------------------------------------------------------------------------------------------
echo "== 2. kubectl create --dry-run=client (offline discovery of GA kinds)"
K=("$KUBECTL" --kubeconfig "$tmp/kubeconfig" --cache-dir "$tmp/cache" --request-timeout 5s)
for f in "${files[@]}"; do
  if ! names=$("${K[@]}" create --dry-run=client --validate=false -f "$f" -o name 2>&1); then
    echo "$names" >&2; fail "kubectl create --dry-run=client -f $f"
  fi
  echo "$names" | sed 's/^/   /'
done

# ------------------------------------------------------------------------------------------
# 3. typed round trip through kubectl's API types.
# ------------------------------------------------------------------------------------------
echo "== 3. typed round trip (kubectl set --local -o json)"
for kf in "$tmp"/obj*.kind; do
  read -r api kind name <"$kf"
  obj="${kf%.kind}.json"
  case "$kind" in
    StatefulSet|Deployment|DaemonSet|Job|CronJob|Pod)
      cmd=(set env --local -e LEDGERQ_VALIDATE_ROUNDTRIP=1) ;;
    Service)
      sel=$("$PY" -c 'import json,sys; s=json.load(open(sys.argv[1]))["spec"].get("selector") or {}; print(",".join(f"{k}={v}" for k,v in s.items()))' "$obj")
      [[ -n "$sel" ]] || fail "Service $name has no selector"
      cmd=(set selector --local "$sel") ;;
    *)
      echo "   $kind/$name: no typed round trip for this kind (checked by steps 1-2 only)"; continue ;;
  esac
  if ! "${K[@]}" "${cmd[@]}" -f "$obj" -o json >"$obj.typed" 2>"$obj.err"; then
    cat "$obj.err" >&2; fail "$kind/$name does not decode into kubectl's $api $kind type"
  fi
  "$PY" - "$obj" "$obj.typed" "$kind/$name" <<'PY'
import json, sys
src, typed, what = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
lost = []
def walk(a, b, path):
    if isinstance(a, dict):
        if not isinstance(b, dict): lost.append(f"{path}: {a!r} became {b!r}"); return
        for k, v in a.items():
            if k not in b:
                if v in ({}, [], None): continue  # empty values are omitted by the API types
                lost.append(f"{path}.{k}"); continue
            walk(v, b[k], f"{path}.{k}")
    elif isinstance(a, list):
        if not isinstance(b, list) or len(b) < len(a): lost.append(f"{path}: list changed"); return
        for i, v in enumerate(a): walk(v, b[i], f"{path}[{i}]")
    elif a != b and str(a) != str(b):
        lost.append(f"{path}: {a!r} became {b!r}")
walk(src, typed, "")
if lost:
    print(f"k8s-validate: FAIL: {what}: fields the API types do not have or changed:", file=sys.stderr)
    for l in lost: print("   ", l, file=sys.stderr)
    sys.exit(1)
print(f"   {what}: every field survives the round trip")
PY
done

# ------------------------------------------------------------------------------------------
# 4. ledgerqd with the manifest's command.
# ------------------------------------------------------------------------------------------
if [[ ! -x "$LEDGERQD" || ! -x "$LEDGERQ_CLI" ]]; then
  ((require_daemon)) && fail "no ledgerqd/ledgerq at $LEDGERQD / $LEDGERQ_CLI"
  echo "== 4. SKIPPED: no ledgerqd/ledgerq built (set LEDGERQD and LEDGERQ_CLI or build build/)"
else
  echo "== 4. ledgerqd with the StatefulSet's command ($LEDGERQD)"
  mkdir -p "$tmp/data" "$tmp/auth"
  auth_rel=$(cat "$tmp/auth_rel")
  if [[ -n "$auth_rel" ]]; then
    "$LEDGERQ_CLI" auth add --file "$tmp/auth$auth_rel" --principal k8s-validate --role operator >/dev/null
  fi
  mode=loopback
  if [[ $(id -u) == 0 ]] && unshare --net true 2>/dev/null && command -v ip >/dev/null; then mode=netns; fi
  # The manifest's command[0] is the image's path; use the built binary.
  "$PY" - "$tmp" "$LEDGERQD" "$mode" <<'PY'
import sys
tmp, bin_, mode = sys.argv[1:]
args = open(f"{tmp}/argv-{mode}.bin", "rb").read().split(b"\0")[:-1]
open(f"{tmp}/argv.bin", "wb").write(b"".join(a + b"\0" for a in [bin_.encode()] + args[1:]))
neg = open(f"{tmp}/argv-negative.bin", "rb").read().split(b"\0")[:-1]
open(f"{tmp}/argv-negative.bin", "wb").write(b"".join(a + b"\0" for a in ([bin_.encode()] + neg[1:] if neg else [])))
PY
  read -r gp hp <"$tmp/ports-$mode"
  echo "$gp" >"$tmp/grpc_port"; echo "$hp" >"$tmp/http_port"
  if [[ "$mode" == loopback ]]; then
    # Probes on the free loopback port instead of the manifest's.
    mport=$(cut -d' ' -f2 "$tmp/ports-netns")
    sed -i "s/ $mport\$/ $hp/" "$tmp/probes"
  fi
  : >"$tmp/runas"
  if [[ $(id -u) == 0 ]]; then
    read -r ru rg <"$tmp/runas_manifest"
    if [[ "$ru" != None ]] && setpriv --reuid "$ru" --regid "${rg/None/$ru}" --clear-groups test -x "$LEDGERQD" 2>/dev/null; then
      echo "$ru ${rg/None/$ru}" >"$tmp/runas"
      chown -R "$ru:${rg/None/$ru}" "$tmp/data" "$tmp/auth"
    else
      echo "   (not as uid $ru: it cannot execute $LEDGERQD)"
    fi
  fi
  if [[ "$mode" == netns ]]; then
    echo "   private network namespace: listen addresses as in the manifest"
    unshare --net --fork -- bash "$ME" --in-netns "$tmp"
  else
    echo "   no root/netns: listen addresses moved to 127.0.0.1:$gp and 127.0.0.1:$hp"
    daemon_checks "$tmp" loopback
  fi
fi

echo "k8s-validate: ok ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"
