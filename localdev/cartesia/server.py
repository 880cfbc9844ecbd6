"""aiohttp server speaking Cartesia's TTS wire protocol on loopback.

Routes: ``GET /tts/websocket`` (streaming, contexts, timestamps; what the LiveKit plugin's
``stream()`` uses) and ``POST /tts/bytes`` (one-shot raw/WAV audio; the plugin's
``synthesize()``). Auth and versioning mirror Cartesia: key in ``X-API-Key`` (or the
``api_key`` query parameter browsers use), version in ``Cartesia-Version`` or
``cartesia_version``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from localdev.cartesia import audio, messages
from localdev.cartesia.faults import TTSFaults
from localdev.cartesia.session import CartesiaSession
from localdev.service import AsyncService, serve_app
from localdev.speech import require_tools

log = logging.getLogger("localdev.cartesia")


class SocketClosed(ConnectionError):
    """Raised when replying on a websocket the client has already closed."""


class LocalCartesiaServer(AsyncService):
    """A loopback Cartesia TTS server that speaks with espeak-ng.

    Use as ``async with LocalCartesiaServer(...) as srv`` and pass ``srv.base_url`` to
    ``cartesia.TTS(base_url=...)``. Every accepted generation request (websocket input or
    bytes body, as sent) is appended to ``srv.requests`` with an added ``"endpoint"`` key.

    Args:
        ttfb_s: minimum time from a context's first input (or a bytes request) to its
            first audio, to imitate real synthesis latency; espeak-ng itself takes about
            0.1-0.3 s, so the observed time is ``max(ttfb_s, synthesis time)``.
        api_key: when set, requests must carry this key.
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (read it back from ``base_url``).

    ``srv.faults`` (:class:`~localdev.cartesia.faults.TTSFaults`) queues failures for the
    next websocket contexts: an error message, a closed socket, or a hang.
    """

    def __init__(
        self,
        *,
        ttfb_s: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if ttfb_s < 0:
            raise ValueError("ttfb_s must be >= 0")
        require_tools()
        self.ttfb_s = ttfb_s
        self._api_key = api_key
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.requests: list[dict[str, Any]] = []
        self.faults = TTSFaults()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def transcripts(self) -> dict[str, str]:
        """Text received per websocket context id, concatenated in arrival order."""
        out: dict[str, str] = {}
        for r in self.requests:
            if r.get("endpoint") == "websocket" and r.get("context_id") is not None:
                cid = str(r["context_id"])
                out[cid] = out.get(cid, "") + str(r.get("transcript", ""))
        return out

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/tts/websocket", self._websocket)
        app.router.add_post("/tts/bytes", self._bytes)
        self._runner, self._port = await serve_app(app, host=self._host, port=self._port)
        log.info("Cartesia stand-in listening on %s", self.base_url)

    async def aclose(self) -> None:
        # Close live sockets first, otherwise runner.cleanup() waits for their handlers.
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- auth ---------------------------------------------------------------------------

    def _reject(self, request: web.Request) -> web.Response | None:
        """HTTP error response for bad auth or a missing API version, else None."""
        if self._api_key is not None:
            given = request.headers.get("X-API-Key") or request.query.get("api_key") or ""
            if not given:
                return _http_error(401, "Missing API key")
            if not hmac.compare_digest(given.encode(), self._api_key.encode()):
                return _http_error(401, "Invalid API key")
        if not (request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")):
            return _http_error(400, "Cartesia-Version header or cartesia_version is required")
        return None

    # -- handlers -----------------------------------------------------------------------

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        if (err := self._reject(request)) is not None:
            return err
        started = time.monotonic()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise messages.RequestError("body must be a JSON object")
            req = messages.parse_generation(body, websocket=False)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _http_error(400, "body is not valid JSON")
        except messages.RequestError as e:
            return _http_error(400, str(e))
        if not req.transcript.strip():
            return _http_error(400, "transcript must not be empty")
        self.requests.append({**body, "endpoint": "bytes"})

        samples = await audio.speak(req.transcript.strip(), req.output.sample_rate)
        delay = started + self.ttfb_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        wav = req.container == "wav"
        resp = web.StreamResponse(
            headers={"Content-Type": "audio/wav" if wav else "application/octet-stream"}
        )
        await resp.prepare(request)
        try:
            if wav:
                await resp.write(audio.wav_header(req.output))
            data = audio.encode(samples, req.output.encoding)
            for piece in audio.chunks(data, req.output.chunk_bytes):
                await resp.write(piece)
            await resp.write_eof()
        except ConnectionError:
            log.debug("client went away during /tts/bytes")
        return resp

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if (err := self._reject(request)) is not None:
            return err
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        lock = asyncio.Lock()

        async def send(msg: dict[str, Any]) -> None:
            # Contexts reply concurrently; one lock keeps each JSON message whole.
            async with lock:
                if ws.closed:
                    raise SocketClosed("websocket closed")
                await ws.send_str(json.dumps(msg, separators=(",", ":")))

        def on_request(msg: dict[str, Any]) -> None:
            self.requests.append({**msg, "endpoint": "websocket"})

        async def close_socket() -> None:
            await ws.close(code=aiohttp.WSCloseCode.INTERNAL_ERROR, message=b"injected fault")

        session = CartesiaSession(
            send=send,
            ttfb_s=self.ttfb_s,
            on_request=on_request,
            faults=self.faults,
            close_socket=close_socket,
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await session.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await send(messages.error(None, "binary messages are not supported"))
        except SocketClosed:
            pass
        finally:
            await session.aclose()
            self._sockets.discard(ws)
        return ws


def _http_error(status: int, message: str) -> web.Response:
    # Cartesia answers HTTP errors with a JSON body; it never echoes the key back.
    return web.json_response({"error": message, "status_code": status}, status=status)
