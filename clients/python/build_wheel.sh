#!/usr/bin/env bash
# Builds a wheel of the Python client with the fleetlog binary inside it, so that
# `pip install fleetlog-*.whl` is all a Python agent needs (the way ruff and uv ship). The binary
# is this repository's release build unless --binary names one. The wheel lands in dist/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary=""
out="$here/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: build_wheel.sh [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$here/../.." && cargo build --release --locked -p fleetlog)
  binary="$here/../../target/release/fleetlog"
fi
bundled="$here/src/fleetlog/_bin/fleetlog"
mkdir -p "$(dirname "$bundled")"
cp "$binary" "$bundled"
chmod 0755 "$bundled"
trap 'rm -rf "$here/src/fleetlog/_bin" "$here/build"' EXIT
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$out" "$here"
ls "$out"/fleetlog-*.whl
