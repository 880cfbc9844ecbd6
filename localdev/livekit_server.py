"""A real LiveKit SFU (``livekit-server --dev``) on loopback, for tests, the demo and benchmarks.

Every instance gets its own free ports, its own generated API key pair and its own temporary
directory (config + log), so several can run side by side on a shared machine. Nothing listens
beyond 127.0.0.1: the signalling/HTTP port and the single WebRTC UDP port are bound to loopback
and ICE over TCP (which livekit-server would bind on all interfaces) is switched off.

Config keys come from the v1.13.5 source (``pkg/config/config.go``, mediatransportutil
``pkg/rtcconfig/config.go``): ``port``, ``bind_addresses``, ``rtc.udp_port`` (one UDP mux port),
``rtc.tcp_port`` (0 disables ICE/TCP), ``rtc.node_ip`` (advertised candidate address; set, so the
server never asks public STUN servers), ``rtc.enable_loopback_candidate`` and ``rtc.ips.includes``
(gather/bind 127.0.0.1 only), ``keys`` (key -> secret), ``logging.level``.

Run one in the foreground: ``python -m localdev.livekit_server`` (prints the env vars to use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from localdev.service import die_with_parent, free_port

LIVEKIT_SERVER_BINARY = "livekit-server"
LIVEKIT_SERVER_VERSION = "1.13.5"
INSTALL_HINT = "install it with: bash scripts/install-livekit-server.sh (needs Go >= 1.26)"

# The health endpoint (GET /) answers 406 until the node's stats are fresh (server.go
# healthCheck); on an idle machine that takes ~0.1 s, on the shared 2-core box under load a few
# seconds. 30 s is a generous ceiling, not an expectation.
DEFAULT_READY_TIMEOUT_S = 30.0
# On the first SIGTERM livekit-server drains: it waits (polling every 5 s) until every
# participant has left; a second signal forces it (cmd/server/main.go). Tests tear the server
# down with participants possibly still connected, so we escalate rather than wait. An idle
# v1.13.5 server took 1.9 s to exit after one SIGTERM here, hence 4 s before forcing.
GRACEFUL_STOP_S = 4.0
FORCED_STOP_S = 3.0
# Port races: a free port found by binding port 0 can be taken by someone else before the
# server binds it. A fresh pair of ports on each attempt makes a collision very unlikely.
START_ATTEMPTS = 3

# livekit-server serves HTTP (so GET / can already say 200) 100 ms before it marks itself
# running (service/server.go Start: time.Sleep(100ms); running.Store(true)), and a SIGTERM
# before that is silently dropped (Stop returns when !running). Observed: a server stopped right
# after its first 200 hung until killed. Waiting this long after the first 200 closes the gap.
SETTLE_AFTER_READY_S = 0.15


class LiveKitServerUnavailable(RuntimeError):
    """The ``livekit-server`` binary is not installed or is not the pinned version."""


class LiveKitServerFailed(RuntimeError):
    """The server process exited or did not become ready in time."""


def find_livekit_server() -> str | None:
    """Path of the ``livekit-server`` binary on PATH, or None."""
    return shutil.which(LIVEKIT_SERVER_BINARY)


def livekit_server_version(binary: str) -> str | None:
    """Version the binary reports (``livekit-server version 1.13.5`` -> ``1.13.5``)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split()
    return parts[-1] if parts else None


def generate_key_pair() -> tuple[str, str]:
    """A fresh API key/secret pair, shaped like ``livekit-server generate-keys`` output.

    Real keys start with ``API`` and secrets are >= 32 chars (shorter ones are rejected with an
    error outside dev mode, ``config.go ValidateKeys``).
    """
    return "API" + secrets.token_hex(6), secrets.token_urlsafe(32)


def render_config(
    *,
    http_port: int,
    udp_port: int,
    api_key: str,
    api_secret: str,
    log_level: str,
    redis_address: str | None = None,
) -> str:
    """The server's YAML config. JSON is valid YAML, and go-yaml parses it in strict mode.

    ``redis_address`` makes the node one of a cluster: every node given the same Redis
    (and the same keys) routes rooms, signalling and agent dispatch through it."""
    config: dict[str, object] = {
        "port": http_port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            "udp_port": udp_port,
            # Default is 7881 on ALL interfaces (webrtc_config.go net.ListenTCP with no IP):
            # a fixed port clashes between parallel servers and leaves loopback. Not needed:
            # UDP on loopback always works.
            "tcp_port": 0,
            "node_ip": "127.0.0.1",
            "use_external_ip": False,
            "enable_loopback_candidate": True,
            "ips": {"includes": ["127.0.0.1/32"]},
        },
        "keys": {api_key: api_secret},
        "logging": {"level": log_level},
    }
    if redis_address is not None:
        config["redis"] = {"address": redis_address}
    return json.dumps(config, indent=2) + "\n"


class LocalLiveKitServer:
    """A ``livekit-server --dev`` subprocess on loopback, usable as a sync or async context manager.

    Usage::

        async with LocalLiveKitServer() as lk:
            connect(lk.url, lk.api_key, lk.api_secret)

    ``start()`` must be called from a thread that outlives the server (the process is tied to
    its parent thread via PR_SET_PDEATHSIG); the async context manager spawns on the loop thread.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        log_level: str = "info",
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        workdir: str | Path | None = None,
        redis_address: str | None = None,
    ) -> None:
        """Configure (not start) a server.

        Args:
            binary: path to ``livekit-server``; default: found on PATH.
            api_key / api_secret: credentials to accept; default: a freshly generated pair.
                Pass both or neither.
            log_level: livekit-server log level (debug, info, warn, error). Logs go to
                ``log_path``, never to the caller's stdout.
            ready_timeout_s: how long ``start()`` waits for the health endpoint.
            workdir: where to put config and log; default: a new temporary directory that is
                removed on stop.
            redis_address: ``host:port`` of a Redis shared with other nodes (a cluster: give
                them the same api_key/api_secret too); default: a single node.
        """
        if (api_key is None) != (api_secret is None):
            raise ValueError("pass both api_key and api_secret, or neither")
        if api_key is None or api_secret is None:
            api_key, api_secret = generate_key_pair()
        self._binary = binary
        self._api_key = api_key
        self._api_secret = api_secret
        self._log_level = log_level
        self._ready_timeout_s = ready_timeout_s
        self._redis_address = redis_address
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._http_port = 0
        self._udp_port = 0
        self.ready_seconds: float | None = None
        """Seconds from spawning the (last, successful) process to its first 200 on GET /."""

    # -- public properties --------------------------------------------------------------

    @property
    def url(self) -> str:
        """WebSocket URL for clients and workers (``LIVEKIT_URL``)."""
        return f"ws://127.0.0.1:{self._require_port()}"

    @property
    def http_url(self) -> str:
        """HTTP base URL for the server API (RoomService, AgentDispatchService, health)."""
        return f"http://127.0.0.1:{self._require_port()}"

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def api_secret(self) -> str:
        return self._api_secret

    @property
    def udp_port(self) -> int:
        return self._udp_port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "livekit-server.log" if self._workdir is not None else None

    def env(self) -> dict[str, str]:
        """The ``LIVEKIT_*`` variables a worker or client needs to reach this server."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self._api_key,
            "LIVEKIT_API_SECRET": self._api_secret,
        }

    def __repr__(self) -> str:
        # Deliberately without credentials: pytest prints fixture reprs in failure reports.
        state = "running" if self.is_running() else "stopped"
        port = self._http_port or "-"
        return f"LocalLiveKitServer(port={port}, {state})"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the server and block until it answers GET / with 200."""
        last_error: LiveKitServerFailed | None = None
        for _ in range(START_ATTEMPTS):
            self._spawn()
            try:
                self._wait_ready_sync()
                return
            except LiveKitServerFailed as e:
                last_error = e
                port_clash = "address already in use" in self.log_tail().lower()
                self.stop(remove_workdir=not port_clash)
                if not port_clash:
                    raise
        assert last_error is not None
        raise last_error

    async def astart(self) -> None:
        """Async ``start()``: spawns on the loop thread, polls readiness without blocking it."""
        last_error: LiveKitServerFailed | None = None
        for _ in range(START_ATTEMPTS):
            self._spawn()
            try:
                await self._wait_ready_async()
                return
            except LiveKitServerFailed as e:
                last_error = e
                port_clash = "address already in use" in self.log_tail().lower()
                await asyncio.to_thread(self.stop, remove_workdir=not port_clash)
                if not port_clash:
                    raise
        assert last_error is not None
        raise last_error

    def stop(self, *, remove_workdir: bool = True) -> None:
        """SIGTERM (drain), then SIGTERM again (forced), then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, GRACEFUL_STOP_S), (signal.SIGTERM, FORCED_STOP_S)):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                proc.kill()
                proc.wait()
        if remove_workdir and self._workdir is not None and self._workdir_arg is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> LocalLiveKitServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LocalLiveKitServer:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the server log, with this server's credentials redacted.

        livekit-server logs the API key (not the secret) on job assignment lines.
        """
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace")[-max_chars:]
        return text.replace(self._api_secret, "<secret>").replace(self._api_key, "<api-key>")

    # -- internals --------------------------------------------------------------------------

    def _require_port(self) -> int:
        if not self._http_port:
            raise RuntimeError("LocalLiveKitServer is not started")
        return self._http_port

    def _resolve_binary(self) -> str:
        binary = self._binary or find_livekit_server()
        if binary is None:
            raise LiveKitServerUnavailable(
                f"{LIVEKIT_SERVER_BINARY} not found on PATH; {INSTALL_HINT}"
            )
        return binary

    def _spawn(self) -> None:
        binary = self._resolve_binary()
        if self._workdir is None:
            if self._workdir_arg is not None:
                self._workdir_arg.mkdir(parents=True, exist_ok=True)
                self._workdir = self._workdir_arg
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="livekit-server-"))
        self._http_port = free_port(socket.SOCK_STREAM)
        self._udp_port = free_port(socket.SOCK_DGRAM)
        config_path = self._workdir / "livekit.yaml"
        # The config holds the secret: create it owner-only before writing.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                render_config(
                    http_port=self._http_port,
                    udp_port=self._udp_port,
                    api_key=self._api_key,
                    api_secret=self._api_secret,
                    log_level=self._log_level,
                    redis_address=self._redis_address,
                )
            )
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, "--dev", "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C aimed at the test runner must not start the
                # server's drain behind our back; stop() handles shutdown.
                start_new_session=True,
                preexec_fn=die_with_parent,  # only calls prctl: fork-safe
                # LIVEKIT_KEYS / LIVEKIT_CONFIG from the caller's env would override ours.
                env={k: v for k, v in os.environ.items() if k not in _OVERRIDING_ENV},
            )
        self._spawned_at = time.monotonic()

    def _check_ready(self) -> bool:
        """One health probe; raises when the process has died."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise LiveKitServerFailed(
                f"livekit-server exited with code {self._proc.returncode} before becoming "
                f"ready; log tail:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(self.http_url + "/", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False  # not listening yet, or 406 "Not Ready"

    def _timed_out(self) -> LiveKitServerFailed:
        return LiveKitServerFailed(
            f"livekit-server not ready after {self._ready_timeout_s:.0f} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _wait_ready_sync(self) -> None:
        deadline = self._spawned_at + self._ready_timeout_s
        while not self._check_ready():
            if time.monotonic() > deadline:
                raise self._timed_out()
            time.sleep(0.05)
        time.sleep(SETTLE_AFTER_READY_S)
        self.ready_seconds = time.monotonic() - self._spawned_at

    async def _wait_ready_async(self) -> None:
        deadline = self._spawned_at + self._ready_timeout_s
        while not await asyncio.to_thread(self._check_ready):
            if time.monotonic() > deadline:
                raise self._timed_out()
            await asyncio.sleep(0.05)
        await asyncio.sleep(SETTLE_AFTER_READY_S)
        self.ready_seconds = time.monotonic() - self._spawned_at


# Environment variables livekit-server reads that would silently override the generated config.
_OVERRIDING_ENV = frozenset(
    {"LIVEKIT_KEYS", "LIVEKIT_CONFIG", "NODE_IP", "UDP_PORT", "REDIS_HOST", "REDIS_PASSWORD"}
)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localdev.livekit_server",
        description="Run a loopback livekit-server in the foreground until Ctrl-C.",
    )
    parser.add_argument(
        "--generate-keys",
        action="store_true",
        help="use a fresh key pair (written to an owner-only env file, never printed) "
        "instead of LiveKit's public dev placeholder devkey/secret",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    if args.generate_keys:
        server = LocalLiveKitServer(log_level=args.log_level)
    else:
        # LiveKit's documented --dev placeholder pair: public, so printing it leaks nothing.
        server = LocalLiveKitServer(api_key="devkey", api_secret="secret", log_level=args.log_level)
    try:
        server.start()
    except (LiveKitServerUnavailable, LiveKitServerFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    print(f"livekit-server ready in {server.ready_seconds:.2f} s (pid {server.pid})")
    print(f"log: {server.log_path}")
    if args.generate_keys:
        assert server.log_path is not None
        env_file = server.log_path.parent / "livekit.env"
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"export {k}={v}\n" for k, v in server.env().items())
        print(f"export LIVEKIT_URL={server.url}")
        print(f"source {env_file}   # sets LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET")
    else:
        for k, v in server.env().items():
            print(f"export {k}={v}")
    print("Ctrl-C to stop.", flush=True)

    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop and server.is_running():
            time.sleep(0.2)
        if not server.is_running() and not stop:
            print(f"livekit-server exited; log tail:\n{server.log_tail()}", file=sys.stderr)
            return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
