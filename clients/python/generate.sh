#!/bin/sh
# Generates the Python gRPC stubs of proto/ledgerq/v1/ledgerq.proto into ledgerq/v1/ (git-ignored),
# so that `import ledgerq` finds them as the subpackage ledgerq.v1. Run from any directory.
#
# Compiler: Debian 12's python3-grpc-tools (1.14.1) bundles protoc 3.5.1, which rejects the
# proto3 `optional` fields of ledgerq.proto. So the default is the system protoc (Debian's
# protobuf-compiler, 3.21) with grpc_python_plugin (protobuf-compiler-grpc), the same packages
# the C++ build uses; `python3 -m grpc_tools.protoc` is used when those are missing and it is new
# enough. Override with PROTOC=/path/to/protoc and GRPC_PYTHON_PLUGIN=/path/to/plugin.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
proto_dir=${LEDGERQ_PROTO_DIR:-$(cd "$here/../../proto" && pwd)}
out=$here
python=${PYTHON:-/usr/bin/python3}
protoc=${PROTOC:-$(command -v protoc || true)}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}
src=ledgerq/v1/ledgerq.proto

if [ ! -f "$proto_dir/$src" ]; then
  echo "generate.sh: $proto_dir/$src not found (set LEDGERQ_PROTO_DIR)" >&2
  exit 1
fi

tmp=$(mktemp -d "$here/.gen.XXXXXX")  # same file system: the final mv is a rename
trap 'rm -rf "$tmp"' EXIT

if [ -n "$protoc" ] && [ -n "$plugin" ]; then
  "$protoc" -I "$proto_dir" --python_out="$tmp" --grpc_out="$tmp" \
    --plugin=protoc-gen-grpc="$plugin" "$proto_dir/$src"
elif "$python" -c 'import grpc_tools' 2>/dev/null; then
  # grpc_tools carries google/protobuf/*.proto in its _proto directory.
  wkt=$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
  "$python" -m grpc_tools.protoc -I "$proto_dir" -I "$wkt" --python_out="$tmp" \
    --grpc_python_out="$tmp" "$proto_dir/$src"
else
  echo "generate.sh: need protoc and grpc_python_plugin (apt-get install protobuf-compiler" \
       "protobuf-compiler-grpc) or a grpc_tools new enough for proto3 optional" >&2
  exit 1
fi

# Replace ledgerq/v1 in one step, so a concurrent import never sees half a package.
mkdir -p "$out/ledgerq"
printf '"""Generated from proto/ledgerq/v1/ledgerq.proto by generate.sh. Do not edit."""\n' \
  > "$tmp/ledgerq/v1/__init__.py"
rm -rf "$out/ledgerq/v1.old"
if [ -d "$out/ledgerq/v1" ]; then mv "$out/ledgerq/v1" "$out/ledgerq/v1.old"; fi
mv "$tmp/ledgerq/v1" "$out/ledgerq/v1"
rm -rf "$out/ledgerq/v1.old"
echo "generate.sh: stubs written to $out/ledgerq/v1" >&2
