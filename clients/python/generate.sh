#!/usr/bin/env bash
# Regenerates the gRPC stubs in src/sweep_client/_gen/ from the project's proto file
# (../../proto/proto/sweep/v1/sweep.proto, or $PROTO_ROOT/sweep/v1/sweep.proto).
#
#   ./generate.sh            write the stubs into src/sweep_client/_gen/
#   ./generate.sh OUT_DIR    write them into OUT_DIR instead (the tests compare the two)
#
# Needs grpcio-tools at exactly the version below (pip install "grpcio-tools==1.66.2", or
# pip install "./clients/python[dev]"): the generated code embeds that version, and the package's
# runtime requirements (grpcio>=1.66.2, protobuf>=5.27.2) are chosen to match it. Running it twice
# gives the same files. $PYTHON picks the interpreter (default: python3).
set -euo pipefail

GRPC_TOOLS_VERSION="1.66.2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_root="${PROTO_ROOT:-$here/../../proto/proto}"
out="${1:-$here/src/sweep_client/_gen}"
python="${PYTHON:-python3}"

installed="$("$python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$installed" != "$GRPC_TOOLS_VERSION" ]]; then
    echo "generate.sh: needs grpcio-tools==$GRPC_TOOLS_VERSION for $python (found: ${installed:-none});" >&2
    echo "  $python -m pip install 'grpcio-tools==$GRPC_TOOLS_VERSION'" >&2
    exit 1
fi
if [[ ! -f "$proto_root/sweep/v1/sweep.proto" ]]; then
    echo "generate.sh: no $proto_root/sweep/v1/sweep.proto" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The import path keeps the descriptor's file name "sweep/v1/sweep.proto", as every other
# implementation of the contract registers it.
"$python" -m grpc_tools.protoc -I "$proto_root" \
    --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
    sweep/v1/sweep.proto

mkdir -p "$out"
cp "$tmp/sweep/v1/sweep_pb2.py" "$tmp/sweep/v1/sweep_pb2.pyi" "$out/"
# The stubs live inside the package: import the messages relative to it, not as `sweep.v1`.
sed -e 's/^from sweep\.v1 import sweep_pb2 as /from . import sweep_pb2 as /' \
    "$tmp/sweep/v1/sweep_pb2_grpc.py" > "$out/sweep_pb2_grpc.py"
if grep -q '^from sweep\.v1 import' "$out/sweep_pb2_grpc.py"; then
    echo "generate.sh: could not rewrite the imports of sweep_pb2_grpc.py" >&2
    exit 1
fi
cat > "$out/__init__.py" <<'PY'
"""Generated gRPC stubs of sweep/v1/sweep.proto (by ../../generate.sh; do not edit).

`sweep_pb2` holds the messages and enums, `sweep_pb2_grpc` the SweepService and WorkerService
stubs.
"""
PY
