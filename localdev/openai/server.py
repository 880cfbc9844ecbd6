"""aiohttp server speaking OpenAI's Chat Completions wire protocol on loopback.

Routes: ``POST /v1/chat/completions`` (SSE when ``stream: true``, JSON otherwise) and
``GET /v1/models`` (the LiveKit plugin's prewarm calls it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from localdev.openai import payloads
from localdev.openai.faults import ERROR_TYPES, LLMFaults
from localdev.openai.replies import Replies, ReplyScript
from localdev.service import AsyncService, serve_app

log = logging.getLogger("localdev.openai")

# Model ids listed by GET /v1/models; any model name is accepted on completions, so this
# only needs to contain the names our worker config and docs use.
LISTED_MODELS = ["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini"]


class LocalOpenAIServer(AsyncService):
    """A loopback OpenAI Chat Completions server with scripted replies.

    Use as ``async with LocalOpenAIServer(...) as srv`` and pass ``srv.base_url`` to
    ``openai.LLM(base_url=...)``. Every received request body is appended to
    ``srv.requests``.

    Args:
        replies: list of reply texts cycled in request order, or a (sync or async)
            callable ``messages -> str``; ``None`` acknowledges the last user message.
        ttft_s: delay between receiving a request and sending the first token, to
            imitate a real model's time to first token (0 = as fast as possible).
        token_delay_s: delay between successive streamed tokens.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (read it back from ``base_url``).

    ``srv.faults`` (:class:`~localdev.openai.faults.LLMFaults`) queues failures for the
    next completions: an HTTP error, a stream cut mid-reply, or a hang.
    """

    def __init__(
        self,
        *,
        replies: Replies = None,
        ttft_s: float = 0.0,
        token_delay_s: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if ttft_s < 0 or token_delay_s < 0:
            raise ValueError("ttft_s and token_delay_s must be >= 0")
        self._script = ReplyScript(replies=replies)
        self.ttft_s = ttft_s
        self.token_delay_s = token_delay_s
        self._api_key = api_key
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.requests: list[dict[str, Any]] = []
        self.faults = LLMFaults()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        self._runner, self._port = await serve_app(app, host=self._host, port=self._port)
        log.info("OpenAI stand-in listening on %s", self.base_url)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -----------------------------------------------------------------------

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self._api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _json_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                type_="invalid_request_error",
            )
        if not hmac.compare_digest(token.strip().encode(), self._api_key.encode()):
            # OpenAI echoes a masked key here; we echo nothing so no secret reaches logs.
            return _json_error(
                401,
                "Incorrect API key provided.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        return None

    async def _models(self, request: web.Request) -> web.Response:
        if (err := self._auth_error(request)) is not None:
            return err
        return web.json_response(payloads.models_list(LISTED_MODELS))

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _json_error(
                400,
                "We could not parse the JSON body of your request.",
                type_="invalid_request_error",
            )
        if not isinstance(body, dict):
            return _json_error(
                400, "Request body must be a JSON object.", type_="invalid_request_error"
            )
        messages = body.get("messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _json_error(
                400,
                "you must provide a model parameter",
                type_="invalid_request_error",
                param="model",
            )
        if not isinstance(messages, list) or not messages:
            return _json_error(
                400,
                "'messages' must be a non-empty array",
                type_="invalid_request_error",
                param="messages",
            )
        self.requests.append(body)

        started = time.monotonic()
        fault = self.faults.take()
        if fault is not None and fault.kind == "status":
            log.info("injected fault: HTTP %d", fault.status)
            return _json_error(
                fault.status,
                f"The server had an error while processing your request (injected {fault.status}).",
                type_=ERROR_TYPES.get(fault.status, "server_error"),
            )
        reply = await self._script.next_reply(messages)
        tokens = payloads.split_tokens(reply)
        prompt_tokens = payloads.count_prompt_tokens(messages)
        completion_id = payloads.new_completion_id()

        if not body.get("stream"):
            await _sleep_until(started + self.ttft_s + self.token_delay_s * max(len(tokens) - 1, 0))
            return web.json_response(
                payloads.completion(
                    completion_id=completion_id,
                    model=model,
                    content=reply,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(tokens),
                )
            )

        stream_options = body.get("stream_options") or {}
        include_usage = bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Request-Id": "req_" + completion_id.removeprefix("chatcmpl-"),
            }
        )
        try:
            await resp.prepare(request)
        except (ConnectionResetError, ConnectionError):
            # The client gave up before the headers went out (a preemptive generation
            # superseded by a newer transcript): nothing to answer, nothing went wrong.
            return resp
        created = int(time.time())

        def make(
            delta: dict[str, Any] | None,
            finish: str | None = None,
            usage_body: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            return payloads.chunk(
                completion_id=completion_id,
                created=created,
                model=model,
                delta=delta,
                finish_reason=finish,
                include_usage=include_usage,
                usage_body=usage_body,
            )

        try:
            if fault is not None and fault.kind == "hang":
                log.info("injected fault: hanging the stream")
                await asyncio.Event().wait()  # until the client hangs up (cancels us)
            await _sleep_until(started + self.ttft_s)
            # OpenAI's first chunk carries only the role, then one chunk per token.
            await _send_event(resp, make({"role": "assistant", "content": "", "refusal": None}))
            for i, token in enumerate(tokens):
                if i and self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if fault is not None and fault.kind == "cut" and i >= fault.after_tokens:
                    log.info("injected fault: stream cut after %d tokens", i)
                    _drop(request)
                    return resp
                await _send_event(resp, make({"content": token}))
            await _send_event(resp, make({}, "stop"))
            if include_usage:
                await _send_event(
                    resp, make(None, usage_body=payloads.usage(prompt_tokens, len(tokens)))
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            # The client hung up mid-stream (an interrupted agent turn); nothing to do.
            log.debug("client disconnected during stream %s", completion_id)
        return resp


def _drop(request: web.Request) -> None:
    """Close the TCP connection under the response: no final chunk, no ``[DONE]``."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _send_event(resp: web.StreamResponse, body: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n")


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _json_error(
    status: int, message: str, *, type_: str, code: str | None = None, param: str | None = None
) -> web.Response:
    return web.json_response(
        payloads.error(message, type_=type_, code=code, param=param), status=status
    )


def replies_from_cli(texts: Sequence[str] | None) -> Replies:
    """CLI helper: ``--reply`` given zero times means the echo default."""
    return list(texts) if texts else None
