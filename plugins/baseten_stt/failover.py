"""Which Baseten deployment a stream dials: the primary, or a fallback while it is down.

LiveKit's ``stt.FallbackAdapter`` fails over by opening a *new* stream on the next STT:
the audio already pushed into the failed stream is gone (the utterance in flight is
lost), and a live stream never returns to the primary. Here every endpoint serves the same
stream: a switch is just a reconnect, so the replay buffer re-sends exactly the audio the
failed server had not finalised (no word lost, one timeline); and while a fallback serves,
the primary is probed, and once it answers, streams move back at their next utterance
boundary.

The pool only decides *where* to connect; *when* to leave an endpoint is the stream's call
(``stream.py``, ``_after_loss``), because only the stream knows what kind of failure it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .log import logger

#: Probe a failed primary this often while a fallback serves. LiveKit's FallbackAdapter
#: retries a failed STT every 5 s (``retry_interval``); the same cadence here.
DEFAULT_PROBE_INTERVAL_S = 5.0

#: A primary that passes the probe but fails again before serving a final (e.g. it accepts
#: streams but dies on audio) doubles the probe interval each time, up to this: flapping
#: costs a replay each time, so it is bounded to about one a minute.
MAX_PROBE_INTERVAL_S = 60.0

#: A probe: raises if the endpoint is not healthy (``STT._probe_endpoint``).
ProbeFn = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class EndpointSwitch:
    """Emitted as ``stt.on("endpoint_switched", ...)`` each time new connections move."""

    from_endpoint: str
    to_endpoint: str
    to_primary: bool
    #: True: the endpoint left had failed (failover, including the wrap from the last
    #: fallback back to the primary); False: the primary answered a probe (failback).
    after_failure: bool
    reason: str


class EndpointPool:
    """The ordered endpoints of one ``STT`` (primary first) and which one is active.

    Shared by all of the STT's streams, so one stream's failover spares the others a
    failed connect to the same dead endpoint.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        probe: ProbeFn,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        on_switch: Callable[[EndpointSwitch], None],
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._endpoints = tuple(endpoints)
        self._active = 0
        self._probe = probe
        self._probe_interval_s = probe_interval_s
        self._on_switch = on_switch
        self._probe_task: asyncio.Task[None] | None = None
        self._failbacks_unproven = 0  # failbacks since the primary last served a final

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._endpoints

    @property
    def active(self) -> int:
        """Index of the endpoint new connections dial (0 = the primary)."""
        return self._active

    @property
    def can_fail_over(self) -> bool:
        return len(self._endpoints) > 1

    def report_failure(self, index: int, reason: str) -> bool:
        """``endpoints[index]`` failed in a way that warrants leaving it; move on to the
        next one (wrapping to the primary after the last). Returns whether the active
        endpoint is now a different one than ``index``."""
        if not self.can_fail_over:
            return False
        if index != self._active:
            return True  # another stream already moved on
        self._switch((index + 1) % len(self._endpoints), reason, after_failure=True)
        return True

    def report_success(self, index: int) -> None:
        """``endpoints[index]`` served a final: a failback to it has proven itself."""
        if index == 0:
            self._failbacks_unproven = 0

    def _switch(self, to: int, reason: str, *, after_failure: bool) -> None:
        event = EndpointSwitch(
            from_endpoint=self._endpoints[self._active],
            to_endpoint=self._endpoints[to],
            to_primary=to == 0,
            after_failure=after_failure,
            reason=reason,
        )
        self._active = to
        extra = {"from_endpoint": event.from_endpoint, "to_endpoint": event.to_endpoint}
        if not after_failure:
            logger.info("baseten STT back on the primary endpoint: %s", reason, extra=extra)
        elif event.to_primary:
            logger.warning(
                "baseten STT fallback failed too; trying the primary again: %s",
                reason,
                extra=extra,
            )
        else:
            logger.warning("baseten STT failing over to a fallback: %s", reason, extra=extra)
        if event.to_primary:
            self._stop_probing()
        else:
            self._start_probing()
        self._on_switch(event)

    def _start_probing(self) -> None:
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(
                self._probe_primary(), name="baseten.probe_primary"
            )

    def _stop_probing(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _probe_primary(self) -> None:
        primary = self._endpoints[0]
        interval = min(MAX_PROBE_INTERVAL_S, self._probe_interval_s * 2**self._failbacks_unproven)
        while self._active != 0:
            await asyncio.sleep(interval)
            try:
                await self._probe(primary)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.debug("baseten primary still unhealthy: %s", e)
                continue
            if self._active != 0:
                self._failbacks_unproven += 1
                self._switch(0, "the primary answered a health probe", after_failure=False)
            return

    async def aclose(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
