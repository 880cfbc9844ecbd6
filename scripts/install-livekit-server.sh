#!/usr/bin/env bash
# Install the real LiveKit SFU (`livekit-server`) used by the end-to-end tests and the demo.
#
# Idempotent: when `livekit-server --version` already reports the pinned version nothing is
# built. Otherwise the binary is built from source with the Go toolchain through the Go module
# proxy (the only route to it here: prebuilt release downloads are not reachable).
#
# Pinned to v1.13.5 because its go.mod has no `replace` directives, which `go install
# module@version` refuses; later main has them.
#
# Environment:
#   LIVEKIT_SERVER_VERSION  version to install (default 1.13.5, without the leading "v")
#   LIVEKIT_BIN_DIR         where the `livekit-server` link goes (default /usr/local/bin when
#                           root, else ~/.local/bin)
#   GOBIN                   where `go install` writes its `server` binary (default $(go env GOPATH)/bin)
set -euo pipefail

VERSION="${LIVEKIT_SERVER_VERSION:-1.13.5}"
MODULE="github.com/livekit/livekit-server/cmd/server"

log() { printf 'install-livekit-server: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -n "${LIVEKIT_BIN_DIR:-}" ]; then
  BIN_DIR="$LIVEKIT_BIN_DIR"
elif [ "$(id -u)" = "0" ]; then
  BIN_DIR=/usr/local/bin
else
  BIN_DIR="$HOME/.local/bin"
fi

# Prints the version a `livekit-server` binary reports, or nothing when it cannot run.
# Output looks like "livekit-server version 1.13.5".
binary_version() {
  "$1" --version 2>/dev/null | awk '{print $NF}' || true
}

# 1. Already installed on PATH at the pinned version: nothing to do.
if existing="$(command -v livekit-server 2>/dev/null)"; then
  have="$(binary_version "$existing")"
  if [ "$have" = "$VERSION" ]; then
    log "livekit-server $VERSION already installed at $existing (nothing to do)"
    exit 0
  fi
  log "found livekit-server ${have:-<unrunnable>} at $existing; want $VERSION"
fi

# 2. Build (or reuse the cached build) with Go. /usr/local/go/bin is where the official Go
# tarball installs, and it is often missing from non-login shells' PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
# go.mod of v1.13.5 says `go 1.26`; an older toolchain fetches a newer one via the module
# proxy (GOTOOLCHAIN=auto) when it can.
command -v go >/dev/null 2>&1 \
  || die "Go toolchain not found on PATH or in /usr/local/go/bin; install Go >= 1.26 and re-run"

GOBIN_DIR="${GOBIN:-$(go env GOPATH)/bin}"
built="$GOBIN_DIR/server"

if [ -x "$built" ] && [ "$(binary_version "$built")" = "$VERSION" ]; then
  log "reusing cached build $built ($VERSION)"
else
  log "building $MODULE@v$VERSION with $(go version) (takes a few minutes on 2 cores)"
  mkdir -p "$GOBIN_DIR"
  GOBIN="$GOBIN_DIR" go install "$MODULE@v$VERSION" \
    || die "go install $MODULE@v$VERSION failed (see Go output above)"
  got="$(binary_version "$built")"
  [ "$got" = "$VERSION" ] || die "built $built reports version '${got}', expected $VERSION"
fi

# 3. Expose it as `livekit-server`.
mkdir -p "$BIN_DIR"
ln -sf "$built" "$BIN_DIR/livekit-server"
log "linked $BIN_DIR/livekit-server -> $built"

# 4. Verify through PATH, as the tests will find it.
if ! resolved="$(command -v livekit-server 2>/dev/null)"; then
  die "$BIN_DIR is not on PATH; add it (export PATH=\"$BIN_DIR:\$PATH\")"
fi
have="$(binary_version "$resolved")"
[ "$have" = "$VERSION" ] \
  || die "livekit-server on PATH ($resolved) reports '${have}', expected $VERSION; another copy shadows $BIN_DIR"
log "ok: $resolved is livekit-server $VERSION"
