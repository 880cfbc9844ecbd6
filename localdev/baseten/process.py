"""Run the local Baseten server as its own process (``python -m localdev.baseten``).

Whisper decodes, the Silero VAD and the websocket I/O then share neither the GIL nor the
event loop with whoever uses the server: a test's WebRTC callers pacing audio, the demo's
room, a benchmark's clock. In the same process, a decode holding the GIL once stalled a
caller long enough to split a phrase in two ("book book a table for two"). E2E tests, the
demo and the benchmarks use this; unit tests keep the in-process ``LocalBasetenServer``
(faster to start, stats as live objects).

``BasetenServerProcess`` mirrors the in-process server's surface where it can: ``url``,
``port``, ``stats()`` (``GET /_localdev/stats``, the same ``ServerStats`` fields plus
``decodes``) and ``wait_for``::

    async with BasetenServerProcess(api_key="k", faults=FaultPlan(inference_delay_s=0.1)) as srv:
        url = srv.url + "/environments/production/websocket"
        stats = await srv.wait_for(lambda s: s["finals_sent"] >= 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp

from localdev.baseten.__main__ import API_KEY_VARIABLE, LISTENING
from localdev.baseten.faults import FaultPlan
from localdev.baseten.server import STATS_ROUTE, ProtocolName
from localdev.service import AsyncService, die_with_parent, stop_process

REPO: Final = Path(__file__).resolve().parents[2]
#: Interpreter start, imports, the Whisper model load (~1-2 s) and warm-up decodes. 90 s
#: leaves room for a machine busy with a whole test run.
START_TIMEOUT_S: Final = 90.0
#: SIGTERM -> exit: the server closes its sockets and returns within ~1 s.
STOP_TIMEOUT_S: Final = 10.0


class BasetenProcessFailed(RuntimeError):
    """The server process exited or did not start listening in time."""


def _fault_flags(plan: FaultPlan) -> list[str]:
    """``plan`` as command-line flags (the CLI covers every fault but injected errors)."""
    if plan.inject_errors:
        raise ValueError("injected error frames need the in-process LocalBasetenServer")
    flags = ["--inference-delay-ms", str(round(plan.inference_delay_s * 1000))]
    if plan.reject_upgrades_with_503:
        flags += ["--fail-first-upgrades", str(plan.reject_upgrades_with_503)]
    if plan.drop_after_frames is not None:
        flags += ["--drop-after-frames", str(plan.drop_after_frames)]
        flags += ["--drop-connections", str(plan.drop_connections)]
    if plan.stall_after_frames is not None:
        flags += ["--stall-after-frames", str(plan.stall_after_frames)]
        flags += ["--stall-connections", str(plan.stall_connections)]
    if plan.close_after_commit:
        flags += ["--close-after-commit", str(plan.close_after_commit)]
    if plan.close_after_commit_reply:
        flags += ["--close-after-commit-reply", str(plan.close_after_commit_reply)]
    if plan.flush_reply_without_is_final:
        flags.append("--flush-reply-without-is-final")
    if plan.error_shape != "message":
        flags += ["--error-shape", plan.error_shape]
    return flags


class BasetenServerProcess(AsyncService):
    """``python -m localdev.baseten`` on a free loopback port; stopped with SIGTERM."""

    def __init__(
        self,
        *,
        api_key: str,
        faults: FaultPlan | None = None,
        model_dir: str | Path | None = None,
        send_log: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        python: str = sys.executable,
        protocol: ProtocolName = "whisper",
    ) -> None:
        """Configure the process; nothing runs until ``start()`` / ``async with``.

        Args:
            api_key: the key upgrades (and the stats route) must carry.
            faults: fault plan, passed as CLI flags (no injected error frames).
            model_dir: a CTranslate2 Whisper folder (default: the bundled tiny.en).
            send_log: JSONL file for one line per transcription sent (send times).
            extra_args: more ``python -m localdev.baseten`` arguments.
            protocol: ``--protocol``: ``"whisper"`` (default), ``"qwen3"`` or ``"v2"``.
        """
        self._api_key = api_key
        self._args = [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--protocol",
            protocol,
            *_fault_flags(faults or FaultPlan()),
            *(["--model-dir", str(model_dir)] if model_dir else []),
            *(["--send-log", str(send_log)] if send_log else []),
            *extra_args,
        ]
        self._python = python
        self._proc: asyncio.subprocess.Process | None = None
        self._url: str | None = None
        self._stderr_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives with self
            prefix="baseten-standin-", suffix=".log", delete=False
        )
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>`` (append one of ``WEBSOCKET_ROUTES``)."""
        if self._url is None:
            raise RuntimeError("server process not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def log_text(self) -> str:
        """What the process wrote to stderr so far (its log; never contains the key)."""
        return Path(self._stderr_file.name).read_text(errors="replace")

    async def stats(self) -> dict[str, Any]:
        """The server's counters and ``decodes`` (``GET /_localdev/stats``)."""
        assert self._http is not None
        http_url = "http" + self.url.removeprefix("ws") + STATS_ROUTE
        headers = {"Authorization": f"Api-Key {self._api_key}"}
        async with self._http.get(http_url, headers=headers) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, within_s: float = 10.0
    ) -> dict[str, Any]:
        """Poll ``stats()`` every 50 ms until ``predicate`` holds."""
        deadline = time.monotonic() + within_s
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"Baseten stand-in stats never matched within {within_s}s")
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            API_KEY_VARIABLE: self._api_key,
        }
        self._proc = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "localdev.baseten",
            *self._args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._stderr_file,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not it
            preexec_fn=die_with_parent,  # a killed test run leaves no stand-in behind
        )
        self._http = aiohttp.ClientSession()
        try:
            self._url = await self._wait_listening()
        except BaseException:
            await self.aclose()
            raise

    async def _wait_listening(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.log_text.splitlines():
                if line.startswith(LISTENING):
                    # "listening on ws://127.0.0.1:PORT/environments/production/websocket"
                    url = line.removeprefix(LISTENING).strip()
                    return url[: url.index("/", len("ws://"))]
            if self._proc.returncode is not None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 0.05)
        tail = "\n".join(self.log_text.splitlines()[-5:])
        state = (
            f"exited with {self._proc.returncode}"
            if self._proc.returncode is not None
            else f"did not listen within {START_TIMEOUT_S:.0f}s"
        )
        raise BasetenProcessFailed(f"python -m localdev.baseten {state}:\n{tail}")

    async def kill(self) -> None:
        """SIGKILL: the deployment vanishes with its sockets open (no close frame, no
        drain), as a crashed pod or a lost region does. ``stats()`` is gone with it."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, grace_s=STOP_TIMEOUT_S)
        self._stderr_file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._stderr_file.name)
