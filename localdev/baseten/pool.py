"""The decode pool shared by every stream: finals always get a thread, partials only a spare one.

Decoding never runs on the event loop: ``DecodePool.run`` hands the call to one of
``workers`` threads (sized to the cores: one decode per core, see ``whisper.py``) and awaits
it. The two kinds of decode are treated differently, because a final ends a user's turn and
an agent is waiting for it, while a partial is only a preview the next one replaces:

* a **final** waits for a free thread if it must (first come, first served among finals);
* a **partial** never waits: it runs only if a thread is free *now* and fewer than
  ``partial_limit`` partials are running (``workers - 1``, at least 1), otherwise
  ``PoolBusy`` and the caller drops it. With two or more threads one is therefore always
  left for finals, so a final never queues behind other streams' previews. Measured with
  the previous design (partials queued, finals merely first in line; ``bench.whisper_bench``,
  4 concurrent streams): a final spent p50 ~265 ms waiting for a thread (593 ms from the end
  of the VAD silence to the final sent, against a 328 ms decode).

``workers=0`` runs each call inline on the event loop, for near-free engines only
(``ScriptedEngine``): no thread then competes for the GIL, so send times are exact.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolBusy(Exception):
    """No spare thread for a partial right now (it is dropped, not queued)."""


class DecodePool:
    """Run blocking decodes on a fixed number of threads; see the module docstring."""

    def __init__(self, *, workers: int) -> None:
        """``workers`` threads (0 = inline on the event loop)."""
        self.workers = workers
        self.partial_limit = max(1, workers - 1)
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baseten-asr")
            if workers > 0
            else None
        )
        self._free = workers
        self._partials = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def busy(self) -> int:
        """Decodes running now."""
        return self.workers - self._free

    @property
    def queued(self) -> int:
        """Finals waiting for a thread."""
        return sum(1 for f in self._waiting if not f.done())

    def partial_would_run(self) -> bool:
        """Whether a partial submitted now would run (not raise ``PoolBusy``)."""
        if self._executor is None:
            return True
        return self._free > 0 and not self.queued and self._partials < self.partial_limit

    async def run(self, fn: Callable[[], T], *, final: bool) -> T:
        """``fn()`` on a pool thread; a partial raises ``PoolBusy`` instead of waiting."""
        if self._executor is None:
            return fn()
        if final:
            await self._acquire_for_final()
        elif self.partial_would_run():
            self._free -= 1
            self._partials += 1
        else:
            raise PoolBusy
        loop = asyncio.get_running_loop()
        try:
            job = self._executor.submit(fn)
        except BaseException:
            self._finished(final)
            raise
        # The slot is free when the thread is, not when the awaiting task is: a stream that
        # ends mid-decode cancels its task while the decode runs on (it cannot be stopped).
        job.add_done_callback(lambda _: _call_soon(loop, self._finished, final))
        return await asyncio.wrap_future(job, loop=loop)

    async def on_every_thread(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once on each pool thread at the same time (per-thread warm-up)."""
        if self._executor is None:
            fn()
            return
        barrier = threading.Barrier(self.workers, timeout=60)

        def on_own_thread() -> None:
            fn()
            if self.workers > 1:
                barrier.wait()  # keeps each call on a distinct thread

        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, on_own_thread) for _ in range(self.workers))
        )

    async def _acquire_for_final(self) -> None:
        if self._free > 0 and not self.queued:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the thread was handed over just as we were cancelled
            raise

    def _finished(self, final: bool) -> None:
        if not final:
            self._partials -= 1
        self._release()

    def _release(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)  # the thread passes straight to the next final
                return
        self._free += 1

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[bool], None], arg: bool) -> None:
    """``fn(arg)`` on ``loop`` from a pool thread (nothing to do once the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, arg)
