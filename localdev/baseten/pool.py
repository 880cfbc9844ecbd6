"""A bounded decode pool shared by every stream, finals before partials.

Decoding never runs on the event loop: ``DecodePool.run`` hands the call to one of
``workers`` threads (sized to the cores: one decode per core, see ``whisper.py``) and
awaits it. When more decodes are wanted than there are threads, waiting *finals* go
first: a final ends a user's turn and an agent is waiting for it, while a partial is only
a preview that the next one replaces. Among equals, first come first served.

``workers=0`` runs each call inline on the event loop, for near-free engines only
(``ScriptedEngine``): no thread then competes for the GIL, so send times are exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Priorities (lower runs first).
FINAL = 0
PARTIAL = 1


class DecodePool:
    """Run blocking decodes on a fixed number of threads, in priority order."""

    def __init__(self, *, workers: int) -> None:
        """``workers`` threads (0 = inline on the event loop)."""
        self.workers = workers
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baseten-asr")
            if workers > 0
            else None
        )
        self._free = workers
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def busy(self) -> int:
        """Decodes running now."""
        return self.workers - self._free

    @property
    def queued(self) -> int:
        """Decodes waiting for a thread."""
        return sum(1 for *_, f in self._waiting if not f.done())

    async def run(self, fn: Callable[[], T], *, priority: int) -> T:
        """Run ``fn()`` on a pool thread once one is free for ``priority``; return its result."""
        if self._executor is None:
            return fn()
        await self._acquire(priority)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self._release()

    async def on_every_thread(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once on each pool thread (per-thread warm-up), before serving."""
        if self._executor is None:
            fn()
            return
        import threading

        barrier = threading.Barrier(self.workers, timeout=60)

        def on_own_thread() -> None:
            fn()
            if self.workers > 1:
                barrier.wait()  # keeps each call on a distinct thread

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, on_own_thread) for _ in range(self.workers))
        )

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            raise

    def _release(self) -> None:
        while self._waiting:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free += 1

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
