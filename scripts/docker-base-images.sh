#!/usr/bin/env bash
# CI-only stand-ins for the two public base images the Dockerfile names, built locally
# under those exact tags so `docker build` uses them without pulling (public registries
# are not reachable here):
#
#   python:3.11-slim-bookworm                       Debian bookworm (debootstrap minbase)
#                                                   + Debian's python3.11 as `python`
#   ghcr.io/astral-sh/uv:python3.11-bookworm-slim   the above + uv (the wheel from PyPI
#                                                   this machine installed) + the machine's
#                                                   CA bundle, so `uv sync` can reach PyPI
#                                                   through the TLS-inspecting proxy
#
# The CA bundle goes only into the build-stage stand-in: the runtime stage, and so the
# image users deploy, gets none of it. Needs a running engine (scripts/docker-engine.sh).
# The minbase root filesystem is cached in $CACHE (about 80 MB); a second run only
# re-tags what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=/usr/bin/docker
export DOCKER_HOST="${DOCKER_HOST:-$(bash scripts/docker-engine.sh env | cut -d= -f2-)}"
CACHE="${DOCKER_BASE_CACHE:-$HOME/.cache/voice-agent/docker-base}"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PYTHON_TAG=python:3.11-slim-bookworm
UV_TAG=ghcr.io/astral-sh/uv:python3.11-bookworm-slim
MINBASE_TAG=voice-agent-ci/bookworm:minbase

log() { echo "docker-base-images: $*" >&2; }
have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if ! have "$MINBASE_TAG"; then
  mkdir -p "$CACHE"
  if [[ ! -s "$CACHE/$SUITE-minbase.tar" ]]; then
    log "debootstrap --variant=minbase $SUITE (once; cached in $CACHE)"
    root=$(mktemp -d)
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
      tail -n 20 "$CACHE/debootstrap.log" >&2
      exit 1
    }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    chmod 755 "$root" # mktemp made it 0700, and tar keeps that as the image's "/"
    tar -C "$root" -cf "$CACHE/$SUITE-minbase.tar.partial" .
    mv "$CACHE/$SUITE-minbase.tar.partial" "$CACHE/$SUITE-minbase.tar"
    rm -rf "$root"
  fi
  log "importing the root filesystem as $MINBASE_TAG"
  "$DOCKER" import "$CACHE/$SUITE-minbase.tar" "$MINBASE_TAG" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

if ! have "$PYTHON_TAG"; then
  log "building $PYTHON_TAG (Debian's python3.11)"
  cat >"$ctx/Dockerfile.python" <<EOF
FROM $MINBASE_TAG
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 \\
    && rm -rf /var/lib/apt/lists/* \\
    && ln -s /usr/bin/python3.11 /usr/local/bin/python \\
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3
CMD ["python3"]
EOF
  DOCKER_BUILDKIT=1 "$DOCKER" build -q --network host -t "$PYTHON_TAG" -f "$ctx/Dockerfile.python" "$ctx" >/dev/null
fi

if ! have "$UV_TAG"; then
  log "building $UV_TAG (uv from PyPI, the machine's CA bundle)"
  uv_bin=$(python3 -c "import uv; print(uv.find_uv_bin())" 2>/dev/null || command -v uv)
  cp -L "$uv_bin" "$ctx/uv"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile.uv" <<EOF
FROM $PYTHON_TAG
COPY uv /usr/local/bin/uv
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1
EOF
  DOCKER_BUILDKIT=1 "$DOCKER" build -q --network host -t "$UV_TAG" -f "$ctx/Dockerfile.uv" "$ctx" >/dev/null
fi
log "ready: $PYTHON_TAG, $UV_TAG"
