#!/usr/bin/env bash
# Browser tests of the demos: Debian's Chromium driven by playwright-core
# against the real roost binary. Installs what it needs (chromium via apt-get,
# npm packages via npm ci), starts roost on a free 127.0.0.1 port with a temp
# data directory, runs the tests with node's test runner, and kills the server
# by its PID. Screenshots go to $SCREENSHOT_DIR (default: under the temp dir).
#
# Env: ROOST_BIN (default target/debug/roost, built if missing), CHROMIUM
# (default /usr/bin/chromium), SCREENSHOT_DIR, ROOST_TEST_LOGS=1 for server logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "==> installing chromium (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
fi

command -v node >/dev/null || { echo "Node.js >= 20 is required (apt-get install nodejs npm)"; exit 1; }
npm ci --no-audit --no-fund

work="$(mktemp -d "${TMPDIR:-/tmp}/roost-browser.XXXXXX")"

# The binary embeds the committed demos/web/dist: check it matches the sources.
echo "==> checking that demos/web/dist is built from demos/web/src"
(cd "$root/demos/web" && npm ci --no-audit --no-fund && DEMOS_OUT="$work/dist" node build.mjs)
# A warning by default (a client-ts/src change also changes the bundles, and
# should not fail its author's run); DEMOS_DIST_STRICT=1 makes it an error.
if ! diff -r "$root/demos/web/dist" "$work/dist" >/dev/null; then
  echo "WARNING: demos/web/dist is stale: run (cd demos/web && npm ci && npm run build) and commit dist/"
  diff -rq "$root/demos/web/dist" "$work/dist" || true
  [ "${DEMOS_DIST_STRICT:-0}" = 1 ] && exit 1
fi

bin="${ROOST_BIN:-target/debug/roost}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "==> building $bin"
  (cd "$root" && cargo build -p roost --bin roost)
fi
export ROOST_BIN="$bin"

export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$work/screenshots}"
port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
export ROOST_URL="http://127.0.0.1:$port"

"$bin" serve --listen "127.0.0.1:$port" --data "$work/data" >"$work/roost.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work/data" "$work/dist"
}
trap cleanup EXIT

# Wait (bounded) until it answers.
node -e '
  const url = process.argv[1] + "/healthz"
  const deadline = Date.now() + 30000
  ;(async () => {
    while (Date.now() < deadline) {
      try { if ((await fetch(url)).ok) return } catch {}
      await new Promise((r) => setTimeout(r, 100))
    }
    console.error("roost did not answer " + url + " within 30 s"); process.exit(1)
  })()' "$ROOST_URL" || { cat "$work/roost.log"; exit 1; }

echo "==> roost (pid $pid) on $ROOST_URL, data in $work/data; screenshots in $SCREENSHOT_DIR"
status=0
node --test --test-concurrency=1 --test-timeout=180000 demos.test.mjs admin.test.mjs || status=$?
echo "screenshots: $SCREENSHOT_DIR"
if [ "$status" -ne 0 ]; then
  echo "==> server log ($work/roost.log), last 50 lines:"
  tail -n 50 "$work/roost.log"
fi
exit "$status"
