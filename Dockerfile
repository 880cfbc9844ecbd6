# Voice agent worker image: `python agent.py start` as a non-root user.
#
# Build stage: uv installs the locked runtime dependencies (no dev group) into /app/.venv,
# then `agent.py download-files` loads every model once. HF_HOME / XDG_CACHE_HOME point
# inside /app so anything a plugin caches lands in the directory the final stage copies
# (the classic pitfall: caches under /root/.cache are silently left behind).
# Final stage: the same Debian/Python base without uv or build caches.
#
# Health: GET http://<container>:8081/ -> 200 when connected to LiveKit, 503 otherwise
# (use it as the Kubernetes liveness/readiness probe); GET /worker -> JSON worker info.

ARG PYTHON_VERSION=3.11

FROM ghcr.io/astral-sh/uv:python${PYTHON_VERSION}-bookworm-slim AS build

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_CACHE_DIR=/root/.cache/uv \
    HF_HOME=/app/.cache/huggingface \
    XDG_CACHE_HOME=/app/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock file changes. uv's own
# cache is pinned to the build-cache mount (else XDG_CACHE_HOME would put it in /app).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

COPY agent.py ./
COPY agent ./agent
COPY plugins ./plugins

# Load (and, for plugins that need it, download) every model at build time; fails the
# build if a wheel or native library is broken. Needs no secrets.
RUN /app/.venv/bin/python agent.py download-files \
    && /app/.venv/bin/python -m compileall -q agent plugins agent.py


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ENV PATH=/app/.venv/bin:$PATH \
    HF_HOME=/app/.cache/huggingface \
    XDG_CACHE_HOME=/app/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# uid/gid 10001: outside the range of host system users (LiveKit's starter uses the same).
# Writable at run time: only /tmp (agent.py makes a fresh Prometheus multiprocess directory
# there per start), so the root filesystem can be mounted read-only with /tmp as tmpfs.
RUN groupadd --system --gid 10001 appuser \
    && useradd --system --uid 10001 --gid appuser --home-dir /app --no-create-home appuser

WORKDIR /app
# Code and venv stay root-owned (read-only to the worker); only the caches are writable.
COPY --from=build /app /app
RUN chown -R appuser:appuser /app/.cache

USER 10001:10001

EXPOSE 8081

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTH_PORT', '8081') + '/', timeout=4)"]

# SIGTERM starts a drain: live calls get up to DRAIN_TIMEOUT seconds (default 3600) to
# finish, so give the orchestrator a matching grace period.
STOPSIGNAL SIGTERM
CMD ["python", "agent.py", "start"]
