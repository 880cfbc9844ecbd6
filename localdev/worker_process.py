"""Run the worker the way users do (``python agent.py start``) and read its JSON log lines.

``WorkerProcess`` starts ``agent.py`` as a subprocess configured by environment variables only,
with the environment the Docker image sets (``PYTHONUNBUFFERED``, a ``PROMETHEUS_MULTIPROC_DIR``
of its own), a free ``HEALTH_PORT`` so parallel workers never fight over 8081, and optionally a
free ``PROMETHEUS_PORT``. stdout (one JSON object per line in ``start``) and stderr go to files,
which are parsed incrementally::

    async with WorkerProcess(env=stack.env) as worker:      # returns once registered
        line = await worker.wait_for_line(lambda ln: ln["message"] == "starting session",
                                          timeout=60)
        worker.terminate()                                   # SIGTERM, as an orchestrator
        assert await worker.wait(timeout=60) == 0

On exit (or ``close()``) a worker still running is killed together with its process group
(forkserver and job processes). Error messages quote the end of the worker's output with every
credential from ``env`` masked.
"""

# The wait_* coroutines take ``timeout=`` so a timeout can say what was awaited and what the
# worker had logged instead (readable E2E failures).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from localdev.service import die_with_parent, free_port

REPO: Final = Path(__file__).resolve().parents[1]

#: The log line LiveKit's ``AgentServer`` prints once the server accepted the worker
#: (``livekit/agents/worker.py`` ``_handle_register``); only then can jobs be dispatched to it.
REGISTERED_MESSAGE: Final = "registered worker"

#: From spawn to registration: interpreter + livekit.agents import, the forkserver preloading
#: the plugins, Silero and the turn-detector model, then the websocket handshake. ~6-10 s on
#: an idle 2-core machine; 120 s leaves room for a machine shared with other test runs.
DEFAULT_REGISTER_TIMEOUT_S: Final = 120.0

#: How often waiters re-read the log file. Lines are appended by another process, so there is
#: nothing to await; 50 ms keeps measured timings honest to ~0.05 s at negligible cost.
POLL_INTERVAL_S: Final = 0.05

#: Variables taken from the caller's environment; nothing else leaks in (no stray LIVEKIT_*
#: or API keys of the developer's shell). The HF/XDG caches hold the turn-detector weights
#: ``download-files`` fetched.
INHERITED_VARIABLES: Final = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "HF_HUB_OFFLINE",
)

#: What ``close()`` gives a running worker after SIGKILL to disappear (it cannot refuse).
_KILL_WAIT_S: Final = 10.0


class WorkerFailed(RuntimeError):
    """The worker exited or did not log what was awaited in time."""


def _is_secret_name(name: str) -> bool:
    return any(word in name for word in ("KEY", "SECRET", "TOKEN", "PASSWORD"))


class WorkerProcess:
    """``python agent.py start`` as a subprocess; sync and async context manager.

    ``lines`` are the parsed stdout JSON objects so far (a line that is not JSON is kept as
    ``{"message": <text>, "unparsed": True}``), ``stdout``/``stderr`` the raw text.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        command: Sequence[str] = ("start",),
        health_port: int | None = None,
        prometheus: bool = False,
        log_dir: str | Path | None = None,
        cwd: str | Path = REPO,
        python: str = sys.executable,
    ) -> None:
        """Configure (not start) a worker.

        Args:
            env: the worker's configuration, exactly the variables a user sets (e.g.
                ``LocalStack.env`` plus knobs such as ``DRAIN_TIMEOUT``). Only
                ``INHERITED_VARIABLES`` come from this process's environment.
            command: ``agent.py`` arguments.
            health_port: ``HEALTH_PORT``; default: a free port (``env`` may also set it).
            prometheus: serve ``/metrics`` on a free ``PROMETHEUS_PORT``.
            log_dir: where ``worker.stdout.jsonl``, ``worker.stderr.log`` and the Prometheus
                multiprocess directory go; kept afterwards. Default: a temporary directory
                removed by ``close()``.
            cwd: working directory (the repository, where users run it).
            python: interpreter (default: this one, i.e. the project's venv).
        """
        self._command = [python, str(REPO / "agent.py"), *command]
        self._cwd = Path(cwd)
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = None
        self._user_env = dict(env)
        if "HEALTH_PORT" in self._user_env and health_port is None:
            health_port = int(self._user_env["HEALTH_PORT"])
        self.health_port = health_port if health_port is not None else free_port()
        self.prometheus_port: int | None = None
        if prometheus:
            self.prometheus_port = int(self._user_env.get("PROMETHEUS_PORT") or free_port())
        self._secrets = sorted(
            {v for k, v in self._user_env.items() if _is_secret_name(k) and len(v) >= 4},
            key=len,
            reverse=True,  # longest first, so a secret containing another is masked whole
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout_offset = 0
        self._partial = b""
        self._closed_output: dict[str, str] = {}
        self.lines: list[dict[str, Any]] = []
        self.started_at: float | None = None
        """Wall clock (``time.time()``) when the process was spawned."""
        self.registered_at: float | None = None
        """Wall clock when the registration line was seen (``start`` waits for it)."""

    # ------------------------------------------------------------------ properties
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    @property
    def metrics_url(self) -> str | None:
        if self.prometheus_port is None:
            return None
        return f"http://127.0.0.1:{self.prometheus_port}/metrics"

    @property
    def stdout_path(self) -> Path:
        return self._require_log_dir() / "worker.stdout.jsonl"

    @property
    def stderr_path(self) -> Path:
        return self._require_log_dir() / "worker.stderr.log"

    @property
    def stdout(self) -> str:
        """Everything the worker wrote to stdout so far."""
        return self._read_text("stdout", self.stdout_path if self._log_dir else None)

    @property
    def stderr(self) -> str:
        """Everything the worker wrote to stderr so far."""
        return self._read_text("stderr", self.stderr_path if self._log_dir else None)

    def _read_text(self, name: str, path: Path | None) -> str:
        if name in self._closed_output:  # the temporary log directory is gone
            return self._closed_output[name]
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def env(self) -> dict[str, str]:
        """The complete environment the worker is (or will be) started with."""
        env = {k: v for k, v in os.environ.items() if k in INHERITED_VARIABLES}
        env["PYTHONUNBUFFERED"] = "1"  # as the Docker image: every line out at once
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self._require_log_dir() / "prometheus")
        env["HEALTH_PORT"] = str(self.health_port)
        if self.prometheus_port is not None:
            env["PROMETHEUS_PORT"] = str(self.prometheus_port)
        env.update({k: v for k, v in self._user_env.items() if k != "HEALTH_PORT"})
        return env

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid={self.pid} rc={self.returncode}"
        return f"WorkerProcess({state}, health_port={self.health_port})"

    # ------------------------------------------------------------------ lifecycle
    def spawn(self) -> None:
        """Start the process without waiting for anything."""
        if self._proc is not None:
            raise RuntimeError("worker already started")
        if self._log_dir is None:
            if self._log_dir_arg is not None:
                self._log_dir_arg.mkdir(parents=True, exist_ok=True)
                self._log_dir = self._log_dir_arg
            else:
                self._log_dir = Path(tempfile.mkdtemp(prefix="agent-worker-"))
        prom_dir = self._log_dir / "prometheus"
        shutil.rmtree(prom_dir, ignore_errors=True)  # stale files would be merged in
        prom_dir.mkdir()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                self._command,
                cwd=self._cwd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Own process group: teardown can kill the forkserver and job processes too,
                # and a Ctrl-C at the test runner does not start a drain behind our back.
                start_new_session=True,
                preexec_fn=die_with_parent,  # only calls prctl: fork-safe
            )
        self.started_at = time.time()

    async def start(self, *, timeout: float = DEFAULT_REGISTER_TIMEOUT_S) -> None:
        """Spawn and wait until the worker registered with the LiveKit server."""
        self.spawn()
        try:
            line = await self.wait_for_line(
                lambda ln: ln.get("message") == REGISTERED_MESSAGE,
                timeout=timeout,
                what="the worker to register with LiveKit",
            )
        except BaseException:
            await asyncio.to_thread(self.close)
            raise
        self.registered_at = line_time(line) or time.time()

    def start_blocking(self, *, timeout: float = DEFAULT_REGISTER_TIMEOUT_S) -> None:
        """``start()`` for synchronous callers (no event loop running in this thread)."""
        asyncio.run(self.start(timeout=timeout))

    def terminate(self) -> None:
        """SIGTERM to the worker's main process only, as Kubernetes/Docker do: a drain."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    async def wait(self, *, timeout: float) -> int:
        """Wait for the process to exit; its exit code. ``WorkerFailed`` on timeout."""
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker still running after {timeout:g} s; {self._tail()}")
            await asyncio.sleep(POLL_INTERVAL_S)
        self._read_new_lines()
        return int(proc.returncode)

    def wait_blocking(self, *, timeout: float) -> int:
        """``wait()`` for synchronous callers."""
        proc = self._require_proc()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(
                f"worker still running after {timeout:g} s; {self._tail()}"
            ) from None
        self._read_new_lines()
        return int(proc.returncode)

    def close(self) -> None:
        """Kill the worker's whole process group if it is still running. Idempotent.

        The temporary log directory is removed; ``lines`` stay readable.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                # the group id is the worker's pid (start_new_session), valid while it is not
                # reaped: only the worker and its forkserver/job processes get the signal.
                # (Once it exited by itself we send nothing: its job processes exit with it,
                # and the id could by then belong to someone else.)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_KILL_WAIT_S)
            if self._log_dir is not None:
                self._read_new_lines()
        if self._log_dir is not None and self._log_dir_arg is None:
            self._closed_output = {"stdout": self.stdout, "stderr": self.stderr}
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> WorkerProcess:
        self.start_blocking()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> WorkerProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ log lines
    def find_lines(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every line so far matching ``predicate``."""
        self._read_new_lines()
        return [ln for ln in self.lines if _safe(predicate, ln)]

    def messages(self) -> list[str]:
        """The ``message`` of every line so far."""
        self._read_new_lines()
        return [str(ln.get("message", "")) for ln in self.lines]

    async def wait_for_line(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        what: str = "a matching log line",
        start: int = 0,
    ) -> dict[str, Any]:
        """First line (from index ``start``) matching ``predicate``.

        Raises ``WorkerFailed`` when the worker exits without logging one, or on timeout.
        """
        deadline = time.monotonic() + timeout
        # polling: the lines are appended to a file by another process, no event to await
        while (found := self._poll(predicate, start, what, deadline, timeout)) is None:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL_S)
        return found

    def wait_for_line_blocking(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        what: str = "a matching log line",
        start: int = 0,
    ) -> dict[str, Any]:
        """``wait_for_line()`` for synchronous callers."""
        deadline = time.monotonic() + timeout
        while (found := self._poll(predicate, start, what, deadline, timeout)) is None:
            time.sleep(POLL_INTERVAL_S)
        return found

    def health(self) -> int | None:
        """Status of ``GET /`` on the health port (None: not answering)."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    # ------------------------------------------------------------------ internals
    def _poll(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        start: int,
        what: str,
        deadline: float,
        timeout: float,
    ) -> dict[str, Any] | None:
        """One look at the log: the match, None to keep waiting, or raise."""
        self._read_new_lines()
        for ln in self.lines[start:]:
            if _safe(predicate, ln):
                return ln
        self._check_alive(what)
        if time.monotonic() > deadline:
            raise WorkerFailed(f"timed out after {timeout:g} s waiting for {what}; {self._tail()}")
        return None

    def _check_alive(self, what: str) -> None:
        proc = self._require_proc()
        if proc.poll() is not None:
            self._read_new_lines()
            raise WorkerFailed(
                f"worker exited with code {proc.returncode} while waiting for {what}; "
                f"{self._tail()}"
            )

    def _read_new_lines(self) -> None:
        if self._log_dir is None or not self.stdout_path.exists():
            return
        with open(self.stdout_path, "rb") as f:
            f.seek(self._stdout_offset)
            chunk = f.read()
        self._stdout_offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                parsed = {"message": text, "unparsed": True}
            self.lines.append(parsed)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("worker not started")
        return self._proc

    def _require_log_dir(self) -> Path:
        if self._log_dir is None:
            raise RuntimeError("worker not started")
        return self._log_dir

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _tail(self, n_lines: int = 12, max_chars: int = 3000) -> str:
        """The end of stdout (messages) and stderr, credentials masked."""
        messages = [
            f"{ln.get('level', '?')} {ln.get('logger', ln.get('name', ''))}: {ln.get('message')}"
            for ln in self.lines[-n_lines:]
        ]
        err = self.stderr[-max_chars:] if self._log_dir else ""
        out = "\n  ".join(messages) or "(none)"
        return self._mask(f"last log lines:\n  {out}\nstderr tail:\n{err or '(empty)'}")


def _safe(predicate: Callable[[dict[str, Any]], bool], line: dict[str, Any]) -> bool:
    # A predicate written for one kind of line (``ln["room"] == ...``) must not crash on
    # lines without that key; it simply does not match them.
    try:
        return bool(predicate(line))
    except (KeyError, TypeError, AttributeError):
        return False


def line_time(line: dict[str, Any]) -> float | None:
    """Wall-clock time (``time.time()`` scale) of a worker log line's ``timestamp``."""
    stamp = line.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
