#!/usr/bin/env bash
# Installs the pinned schemathesis (the OpenAPI fuzzer of tests/openapi/) into
# the virtualenv .tools/schemathesis, unless that version is already there.
# Needs python3 with venv (python3-venv from Debian if missing and we are
# root) and the Python package index.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.32.5
DIR=${SCHEMATHESIS_DIR:-.tools/schemathesis}
if [ -x "$DIR/bin/st" ] && "$DIR/bin/python" -c "import importlib.metadata as m; assert m.version('schemathesis') == '$VERSION'" 2>/dev/null; then
  exit 0
fi
rm -rf "$DIR"
if ! python3 -m venv "$DIR" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv
    rm -rf "$DIR"
    python3 -m venv "$DIR"
  else
    echo "python3 with venv is required for schemathesis (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
"$DIR/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
"$DIR/bin/st" --version
