#!/usr/bin/env bash
# No Docker engine runs in CI, so exercise the Dockerfile's build-stage recipe directly:
# the same files copied into a scratch directory, the same locked no-dev install and the
# same `download-files` step, with every cache pointed inside that directory (as the
# image does with HF_HOME/XDG_CACHE_HOME under /app), then a smoke import and --help.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cp pyproject.toml uv.lock agent.py "$T"/
cp -r agent plugins "$T"/
cd "$T"
export UV_PROJECT_ENVIRONMENT="$T/.venv" UV_COMPILE_BYTECODE=1
export HF_HOME="$T/.cache/huggingface" XDG_CACHE_HOME="$T/.cache"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/uv}"
uv sync --locked --no-dev --no-install-project --quiet
.venv/bin/python agent.py download-files
.venv/bin/python -m compileall -q agent plugins agent.py
.venv/bin/python -c "import agent.worker, agent.text_console"
.venv/bin/python agent.py --help >/dev/null
# The production environment must not contain dev-only packages.
if .venv/bin/python -c "import pocketsphinx" 2>/dev/null; then
  echo "docker recipe: pocketsphinx leaked into the production dependency set" >&2; exit 1
fi
echo "docker recipe: install + download-files OK"
