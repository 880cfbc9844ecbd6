#!/usr/bin/env bash
# Build the production image from the unchanged Dockerfile with a real engine.
#
#   eval "$(bash scripts/docker-image.sh build)"   # engine + stand-in bases + image;
#                                                  # prints the exports the tests read
#   bash scripts/docker-image.sh stop              # the engine and everything it held
#
# `build` starts a throw-away engine (scripts/docker-engine.sh), makes the CI-only
# stand-ins for the Dockerfile's two public base images (scripts/docker-base-images.sh;
# registries are unreachable here) and runs `docker build` of the repository as users do.
# Progress goes to stderr; stdout carries only the `export` lines.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${VOICE_AGENT_IMAGE:-voice-agent:ci}"
DOCKER=/usr/bin/docker

case "${1:-}" in
  build)
    bash scripts/docker-engine.sh start
    DOCKER_HOST=$(bash scripts/docker-engine.sh env | cut -d= -f2-)
    export DOCKER_HOST
    bash scripts/docker-base-images.sh
    echo "docker-image: building $IMAGE" >&2
    t0=$SECONDS
    # --network host: the engine runs without a bridge (see docker-engine.sh)
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host -t "$IMAGE" . >&2
    echo "docker-image: built $IMAGE in $((SECONDS - t0)) s" \
      "($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
    echo "export DOCKER_HOST=$DOCKER_HOST VOICE_AGENT_IMAGE=$IMAGE"
    ;;
  stop)
    bash scripts/docker-engine.sh stop
    ;;
  *)
    echo "usage: $0 build|stop" >&2
    exit 2
    ;;
esac
