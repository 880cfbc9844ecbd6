"""What every local stand-in service shares: async context management and a CLI loop.

Each service (Baseten, OpenAI, Cartesia stand-ins, the whole ``LocalStack``) implements
``start()`` and ``aclose()``; this base turns that into ``async with``. ``serve_until_signal``
is the foreground loop their ``python -m localdev.<service>`` commands run.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType
from typing import Self

from aiohttp import web


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
    handlers (the caller's loop owns signals).
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # With port 0 the OS picks a free port; the runner reports the bound address.
    return runner, int(runner.addresses[0][1])
