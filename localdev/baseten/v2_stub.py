"""A stub of Baseten's v2 "unified" STT server, as far as it is known (qwen3 protocol doc §4).

It says ``session.created`` first, before the client says anything, then reads and ignores
every frame until the client closes. It exists so a client can be tested for recognising
v2; the ``session`` contents are made up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from aiohttp import web

from localdev.baseten.session import CLOSED_TYPES
from localdev.baseten.stats import ServerStats
from plugins.baseten_stt.protocol import SessionCreated


class V2StubSession:
    """v2 "unified" server stub: ``session.created`` first, then reads and ignores."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        stats: ServerStats,
        stats_changed: Callable[[], None],
    ) -> None:
        self._ws = ws
        self._stats = stats
        self._changed = stats_changed
        self.session_id = f"sess_{uuid.uuid4().hex}"

    async def run(self) -> None:
        created = SessionCreated(session={"id": self.session_id, "object": "stt.session"})
        await self._ws.send_str(created.model_dump_json())
        self._stats.sessions_created_sent += 1
        self._changed()
        while True:
            msg = await self._ws.receive()
            if msg.type in CLOSED_TYPES:
                self._stats.client_disconnects += 1
                self._changed()
                return
            self._stats.frames_ignored += 1
            self._changed()
