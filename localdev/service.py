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
