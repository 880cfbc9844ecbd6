"""A local server speaking Baseten's streaming-STT websocket protocols.

``protocol="whisper"`` (default): ``shared/docs/baseten-protocol.md`` §3, §4 and §7, a
strict first message (1011 on any violation), strict 512-sample frames, server-side VAD,
partials/finals, ``end_audio`` and ``health_check`` (``whisper_session.WhisperSession``).
``protocol="qwen3"``: the Qwen3-ASR streaming dialect of
``shared/docs/baseten-qwen3-protocol.md`` §2 (``qwen3_session.Qwen3Session``), on the same core.
``protocol="v2"``: a stub that only says ``session.created`` (``v2_stub.V2StubSession``).
All of them: the same routes, the gateway's auth check at the upgrade (401) and injected
503s. Recognition is real: Whisper (faster-whisper, ``whisper.py``) by default, over the
real Silero VAD (``vad.py``), decoded on a bounded pool (``pool.py``).

Usage::

    async with LocalBasetenServer(api_key="k") as srv:
        url = srv.url + "/environments/production/websocket"

Besides Baseten's routes it answers ``GET /_localdev/stats`` with its counters and decode
timings as JSON, so a test or benchmark can watch a server running in another process
(``process.py``); a real deployment has no such route (404 there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
from collections.abc import Callable
from typing import Literal

import aiohttp
from aiohttp import web

from localdev.baseten.engine import DecodeRecord, RecognitionEngine
from localdev.baseten.faults import FaultPlan
from localdev.baseten.pool import DecodePool
from localdev.baseten.qwen3_session import Qwen3Session
from localdev.baseten.sendlog import TranscriptionSentHook
from localdev.baseten.session import FaultState, StreamSession
from localdev.baseten.stats import ServerStats, stats_json
from localdev.baseten.v2_stub import V2StubSession
from localdev.baseten.vad import VadKind
from localdev.baseten.vad import warm_up as warm_up_vad
from localdev.baseten.whisper_session import WhisperSession
from localdev.service import AsyncService

log = logging.getLogger("localdev.baseten")

#: URL forms of doc §2 that carry the websocket (``/sync/...`` is for custom servers
#: and not served).
WEBSOCKET_ROUTES = (
    "/v1/websocket",
    "/environments/{env}/websocket",
    "/deployment/{deployment_id}/websocket",
    "/development/websocket",
)
#: truss server's max websocket message size.
MAX_MESSAGE_BYTES = 100 * 1024 * 1024
#: One decode per core: CTranslate2 releases the GIL while it decodes, so the threads
#: really run in parallel, and more threads than cores would only slow each decode down.
DEFAULT_INFERENCE_WORKERS = max(1, min(os.cpu_count() or 2, 4))
#: How long aclose() lets one session's close handshake take (a local client answers in
#: milliseconds; the bound only matters for a client that never answers).
SESSION_CLOSE_TIMEOUT_S = 2.0
#: The stand-in's own introspection route (not part of Baseten's protocol).
STATS_ROUTE = "/_localdev/stats"
#: What a deployment behind the URL speaks (the URL does not say: doc qwen3 §1).
ProtocolName = Literal["whisper", "qwen3", "v2"]
PROTOCOLS: tuple[ProtocolName, ...] = ("whisper", "qwen3", "v2")
_SESSIONS: dict[ProtocolName, type[StreamSession]] = {
    "whisper": WhisperSession,
    "qwen3": Qwen3Session,
}


class LocalBasetenServer(AsyncService):
    """Async context manager running the server on loopback (``port=0`` = a free port)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        engine: RecognitionEngine | None = None,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        inference_workers: int = DEFAULT_INFERENCE_WORKERS,
        on_transcription_sent: TranscriptionSentHook | None = None,
        vad: VadKind = "silero",
        protocol: ProtocolName = "whisper",
    ) -> None:
        """Configure the server; nothing listens until ``start()`` / ``async with``.

        Args:
            api_key: when set, upgrades need ``Authorization: Api-Key <key>`` or
                ``Bearer <key>`` (401 otherwise). ``None`` accepts anything.
            engine: any ``RecognitionEngine``; default a ``WhisperEngine`` with the
                bundled tiny.en, loaded at ``start()`` (share one engine between servers
                of a test session to load the model once).
            faults: initial ``FaultPlan`` (default: no faults).
            host, port: where to listen.
            inference_workers: the decode pool's threads (one decode per core); ``0``
                runs decodes inline on the event loop (only for near-free engines such
                as ``ScriptedEngine``: no thread then competes for the GIL, so the send
                times given to ``on_transcription_sent`` are exact).
            on_transcription_sent: called with a ``SentTranscription`` (request path,
                text, wall-clock send time) after every transcription frame is sent;
                e.g. ``JsonlSendLog`` for client-latency benchmarks.
            vad: the server VAD's speech probability: ``"silero"`` (the real model, as
                Baseten runs) or ``"energy"`` (near-zero CPU, client load tests only).
            protocol: what every websocket speaks: ``"whisper"`` (streaming Whisper v1),
                ``"qwen3"`` (Qwen3-ASR streaming) or ``"v2"`` (a ``session.created`` stub).
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        self.protocol: ProtocolName = protocol
        self._api_key = api_key
        self._engine = engine
        self._fault_state = FaultState(plan=faults or FaultPlan())
        self._host = host
        self._port = port
        self._workers = inference_workers
        self._on_sent = on_transcription_sent
        self._vad = vad
        self.stats = ServerStats()
        #: Timing of every decode (finals and partials), for benchmarks.
        self.decodes = DecodeRecord()
        self._pool: DecodePool | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._shutdown = asyncio.Event()
        self._sessions: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        """``ws://host:port`` (append one of ``WEBSOCKET_ROUTES``)."""
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return f"ws://{self._host}:{self._bound_port}"

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def faults(self) -> FaultPlan:
        return self._fault_state.plan

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        # New plan, fresh budgets; connections already open keep the old state.
        self._fault_state = FaultState(plan=plan)

    @property
    def engine(self) -> RecognitionEngine:
        if self._engine is None:
            raise RuntimeError("server not started")
        return self._engine

    async def wait_for(
        self, predicate: Callable[[ServerStats], bool], *, within_s: float = 10.0
    ) -> ServerStats:
        """Wait until ``predicate(stats)`` holds (re-checked on every stats change)."""
        async with asyncio.timeout(within_s):
            while True:
                # Clear before checking so a change in between is not missed.
                self._changed.clear()
                if predicate(self.stats):
                    break
                await self._changed.wait()
        return self.stats

    async def start(self) -> None:
        self._pool = DecodePool(workers=self._workers)
        try:
            if self._engine is None:
                from localdev.baseten.whisper import WhisperEngine

                # Off the event loop: loading takes ~1 s. A bad model folder raises
                # ModelLoadError here, before anything listens.
                self._engine = await asyncio.to_thread(WhisperEngine, workers=max(1, self._workers))
            # Warm every decode thread and the VAD model now, off the event loop: lazily,
            # the first utterance of the first call paid for it (and a stall of the GIL
            # mid-utterance once split a caller's phrase in two).
            await self._pool.on_every_thread(self._engine.warm_up)
            await asyncio.to_thread(warm_up_vad, self._vad)
        except BaseException:
            await self.aclose()
            raise
        app = web.Application()
        for route in WEBSOCKET_ROUTES:
            app.router.add_route("*", route, self._handle_websocket)
        app.router.add_get(STATS_ROUTE, self._handle_stats)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._bound_port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        log.info("local Baseten server listening on %s", self.url)

    async def aclose(self) -> None:
        self._shutdown.set()
        # All sessions at once, each bounded: aiohttp's close() waits for the client's
        # close frame and, when another task is inside receive(), for that task to notice,
        # neither of which a dying deployment owes anyone. Past the bound the transport
        # is dropped (aiohttp's own handling of a cancelled close).
        await asyncio.gather(*(self._close_session(ws) for ws in list(self._sessions)))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    @staticmethod
    async def _close_session(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SESSION_CLOSE_TIMEOUT_S):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # ------------------------------------------------------------------ HTTP layer
    def _notify(self) -> None:
        self._changed.set()

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() not in ("api-key", "bearer"):
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    async def _handle_stats(self, request: web.Request) -> web.Response:
        # Same key as the websocket routes: the counters include request paths.
        if not self._authorized(request):
            return _json_error(401, "Invalid or missing API key")
        return web.json_response(stats_json(self.stats, self.decodes))

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return _json_error(
            404,
            f"No route {request.path!r}. Websocket routes: {', '.join(WEBSOCKET_ROUTES)}",
        )

    async def _handle_websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoclose=True)
        if request.method != "GET" or not ws.can_prepare(request).ok:
            return _json_error(
                426,
                "This endpoint only speaks WebSocket: open it with a GET carrying "
                "'Upgrade: websocket' (e.g. ws://host:port/environments/production/websocket)",
            )
        self.stats.upgrade_attempts += 1
        if not self._authorized(request):
            self.stats.upgrades_rejected += 1
            self.stats.auth_failures += 1
            self._notify()
            # Never echo the key (or what was sent) back.
            return _json_error(
                401, "Invalid or missing API key: send 'Authorization: Api-Key <key>'"
            )
        faults = self._fault_state
        if faults.rejected_503 < faults.plan.reject_upgrades_with_503:
            faults.rejected_503 += 1
            self.stats.upgrades_rejected += 1
            self.stats.unavailable_503 += 1
            self._notify()
            return _json_error(
                503, "Model is not ready to serve requests (injected by the local server)"
            )
        await ws.prepare(request)
        self.stats.connections += 1
        self.stats.active_connections += 1
        self._sessions.add(ws)
        self._notify()
        try:
            await self._serve(ws, request, faults)
        finally:
            self._sessions.discard(ws)
            self.stats.active_connections -= 1
            self._notify()
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, request: web.Request, faults: FaultState
    ) -> None:
        if self.protocol == "v2":
            await V2StubSession(ws=ws, stats=self.stats, stats_changed=self._notify).run()
            return
        transport = request.transport

        def abort() -> None:
            if transport is not None:
                transport.abort()

        assert self._engine is not None and self._pool is not None
        session = _SESSIONS[self.protocol](
            ws=ws,
            transport_abort=abort,
            engine=self._engine,
            pool=self._pool,
            vad=self._vad,
            decodes=self.decodes,
            stats=self.stats,
            faults=faults,
            shutdown=self._shutdown,
            stats_changed=self._notify,
            path=request.path,
            on_transcription_sent=self._on_sent,
        )
        await session.run()


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
