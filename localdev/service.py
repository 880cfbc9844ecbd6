"""What every local stand-in service shares: async context management and a CLI loop.

Each service (Baseten, OpenAI, Cartesia stand-ins, the whole ``LocalStack``) implements
``start()`` and ``aclose()``; this base turns that into ``async with``. ``serve_until_signal``
is the foreground loop their ``python -m localdev.<service>`` commands run. Services run as
child processes (livekit-server, Redis, the worker, the Baseten stand-in) take a free port
from ``free_port()`` and die with their parent (``die_with_parent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
from types import TracebackType
from typing import Self

from aiohttp import web

_PR_SET_PDEATHSIG = 1


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """Child-side ``preexec_fn``: SIGTERM when the parent dies, so a killed test run
    leaves no process behind. Only calls prctl, so it is fork-safe."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: best effort only


async def stop_process(proc: asyncio.subprocess.Process, *, grace_s: float) -> None:
    """SIGTERM ``proc``, SIGKILL it if it is still there after ``grace_s``; reaped either way."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class AsyncService:
    """Base for services used as ``async with Service(...) as svc:``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM, so a foreground service shuts down cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_app(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (``0`` = a free port); returns the runner and bound port.

    No access log (a line per request in test output for no benefit) and no signal
    handlers (the caller's loop owns signals). A handler still running at shutdown (a
    stand-in's "hang" fault) gets 1 s, not aiohttp's default 60 s: that default made the
    module teardown after the hung-TTS test take 61 s in CI.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # With port 0 the OS picks a free port; the runner reports the bound address.
    return runner, int(runner.addresses[0][1])
