"""Each ``turn_latency`` record, published to the call's room for the people in it.

The web client (``web/``) draws one latency bar per turn from exactly the numbers the
worker logs, so what a developer sees while talking is what production dashboards get.
Off unless ``PUBLISH_TURN_LATENCY`` is on (``dev`` and the demo turn it on): the records
are operational detail a production caller's app has no use for.

One text-stream message per turn on :data:`TOPIC`, a JSON object: the ``turn_latency``
fields minus the user's words (the room already has them on ``lk.transcription``) and the
room/job ids (the receiver is in that room).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from agent.logs import get_logger

#: The text-stream topic (``lk.`` is LiveKit's own namespace, hence not under it).
TOPIC: Final = "agent.turn_latency"

#: Fields a room participant is not sent: the transcript is personal data that is already on
#: ``lk.transcription`` when the room is told it; room and job identify what they are in.
_NOT_PUBLISHED: Final = frozenset({"transcript", "room", "job_id"})

#: Sends still unfinished at this count mean the room is gone or stuck: a turn is a few
#: seconds, a send a few ms, so 8 pending is minutes of turns; dropping beats piling up.
MAX_PENDING_SENDS: Final = 8

log = get_logger("agent.turn_publisher")


def published_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """What is sent for one ``turn_latency`` event."""
    return {k: v for k, v in event.items() if k not in _NOT_PUBLISHED}


class TurnLatencyPublisher:
    """Sends each turn record to every participant of ``room`` (``rtc.Room``).

    Called from the turn-metrics collector, which is synchronous and must never raise into
    LiveKit's event emitter: each send runs as its own task, and a failed one is logged once
    per call, never raised.
    """

    def __init__(self, room: Any) -> None:
        """``room``: the job's connected ``rtc.Room``."""
        self._room = room
        self._pending: set[asyncio.Task[None]] = set()
        self._warned = False

    def __call__(self, event: Mapping[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING_SENDS:
            self._warn("too many unfinished sends; record dropped")
            return
        text = json.dumps(published_record(event), separators=(",", ":"))
        task = asyncio.get_running_loop().create_task(self._send(text), name="turn_latency_send")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, text: str) -> None:
        try:
            if not self._room.isconnected():
                return
            await self._room.local_participant.send_text(text, topic=TOPIC)
        except Exception as exc:  # the room went away mid-send, or the stream was refused
            self._warn(f"{type(exc).__name__}: {exc}")

    def _warn(self, cause: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("turn_latency_publish_failed", cause=cause, topic=TOPIC)

    async def aclose(self) -> None:
        """Wait (briefly) for sends in flight, so the last turn reaches the room."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=2.0)
