#!/usr/bin/env bash
# A throw-away Docker engine for CI and local image checks: `start` installs Debian's
# docker.io if needed and runs dockerd with everything in one state directory; `stop`
# ends it and removes that directory. Prints nothing but progress; callers use
# `scripts/docker-engine.sh env` for the DOCKER_HOST to export.
#
# Why these flags (this kind of machine is itself a container):
# * --storage-driver vfs: overlayfs cannot be mounted inside the machine's own overlay
#   root; vfs copies layers instead (slower, always works).
# * --iptables=false --ip6tables=false --bridge=none: no netfilter or bridge here, so
#   containers and builds use --network host (the image's services are loopback anyway).
# * data/exec roots and socket under $DOCKER_STATE_DIR: nothing touches /var/lib/docker
#   and `stop` leaves the machine as it was.
# * Debian's 20.10 client (/usr/bin/docker): it builds with BuildKit without buildx; the
#   newer client some machines carry in /usr/local/bin wants the buildx plugin.
set -euo pipefail

STATE="${DOCKER_STATE_DIR:-/tmp/voice-agent-docker}"
SOCK="$STATE/docker.sock"
DOCKER=/usr/bin/docker
START_TIMEOUT_S=60

log() { echo "docker-engine: $*" >&2; }

install_engine() {
  if [[ -x /usr/sbin/dockerd && -x "$DOCKER" ]] && command -v debootstrap >/dev/null; then
    return
  fi
  log "installing docker.io and debootstrap from Debian"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    docker.io debootstrap >/dev/null
}

start() {
  install_engine
  if [[ -S "$SOCK" ]] && DOCKER_HOST="unix://$SOCK" "$DOCKER" info >/dev/null 2>&1; then
    log "already running ($SOCK)"
    return
  fi
  mkdir -p "$STATE/data" "$STATE/exec"
  log "starting dockerd (vfs, no bridge) in $STATE"
  # setsid: its own process group, so `stop` can end dockerd and its containerd together
  setsid /usr/sbin/dockerd \
    --storage-driver vfs --iptables=false --ip6tables=false --bridge=none \
    --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    --host "unix://$SOCK" >"$STATE/dockerd.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until DOCKER_HOST="unix://$SOCK" "$DOCKER" info >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "dockerd did not answer within ${START_TIMEOUT_S}s; its log:"
      tail -n 30 "$STATE/dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "ready: export DOCKER_HOST=unix://$SOCK"
}

stop() {
  if [[ -f "$STATE/dockerd.pid" ]]; then
    local pid
    pid=$(cat "$STATE/dockerd.pid")
    log "stopping dockerd ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  # vfs layers are plain directories, but a container's mounts may outlive a killed daemon
  grep -o " $STATE/[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "DOCKER_HOST=unix://$SOCK" ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
