"""One Cartesia websocket connection: many concurrent contexts, each spoken in order.

A context collects transcript pieces (``continue: true``), speaks text once it is ready
(per Cartesia's buffering rules, below), answers ``flush`` with ``flush_done``, and ends
with ``done`` after the input with ``continue: false`` has been spoken. ``cancel`` stops a
context silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from localdev.cartesia import audio, messages
from localdev.cartesia.faults import TTSFault, TTSFaults
from localdev.cartesia.messages import GenerationRequest

log = logging.getLogger("localdev.cartesia")

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Text ready to speak with managed buffering: everything up to the last sentence end.
_SENTENCE_END = re.compile(r"[.!?;:](?:[\"')\]]*)\s")


@dataclasses.dataclass
class _Context:
    context_id: str
    fault: TTSFault | None = None
    inputs: asyncio.Queue[GenerationRequest] = dataclasses.field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    ended: bool = False  # an input with continue=false has been received


class CartesiaSession:
    """Protocol state of one websocket; feed it messages, it sends replies via ``send``.

    Args:
        send: coroutine that writes one JSON reply to the socket.
        ttfb_s: minimum time from a context's first input to its first audio chunk.
        on_request: called with every accepted generation request (for ``srv.requests``).
        faults: the server's fault queue; each new context takes the next fault.
        close_socket: closes the websocket (a ``"close"`` fault).
    """

    def __init__(
        self,
        *,
        send: Send,
        ttfb_s: float,
        on_request: Callable[[dict[str, Any]], None],
        faults: TTSFaults | None = None,
        close_socket: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._faults = faults or TTSFaults()
        self._close_socket = close_socket
        self._send = send
        self._ttfb_s = ttfb_s
        self._on_request = on_request
        self._contexts: dict[str, _Context] = {}
        self._chunks_sent: dict[str, int] = {}  # per faulted context, for after_chunks
        self._anon_ids = 0

    async def handle_text(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError:
            await self._send(messages.error(None, "message is not valid JSON"))
            return
        if not isinstance(msg, dict):
            await self._send(messages.error(None, "message must be a JSON object"))
            return
        if msg.get("cancel"):
            self._cancel(str(msg.get("context_id")))
            return
        try:
            req = messages.parse_generation(msg, websocket=True)
        except messages.RequestError as e:
            await self._send(messages.error(_opt_str(msg.get("context_id")), str(e)))
            return
        if req.context_id is None:
            # Cartesia assigns an id when the client gives none; it is echoed in replies.
            self._anon_ids += 1
            req = _with_context(req, f"localdev-{self._anon_ids}")
        assert req.context_id is not None
        ctx = self._contexts.get(req.context_id)
        if ctx is not None and ctx.ended:
            await self._send(
                messages.error(req.context_id, "context has already been closed (continue=false)")
            )
            return
        self._on_request(msg)
        if ctx is None:
            ctx = _Context(context_id=req.context_id, fault=self._faults.take())
            ctx.task = asyncio.create_task(self._run_context(ctx), name=f"ctx-{req.context_id}")
            self._contexts[req.context_id] = ctx
        ctx.ended = not req.cont
        ctx.inputs.put_nowait(req)

    async def aclose(self) -> None:
        """Socket is gone: stop every context."""
        tasks = [c.task for c in self._contexts.values() if c.task is not None]
        self._contexts.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _cancel(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is not None and ctx.task is not None:
            ctx.task.cancel()

    async def _run_context(self, ctx: _Context) -> None:
        cid = ctx.context_id
        first = await ctx.inputs.get()
        if ctx.fault is not None and ctx.fault.kind == "hang":
            log.info("injected fault: context %s hangs", cid)
            await asyncio.Event().wait()  # until cancelled or the socket goes
        audio_deadline = time.monotonic() + self._ttfb_s
        fmt, timestamps = first.output, first.add_timestamps
        pending = ""
        offset_s = 0.0  # audio time already sent on this context (timestamps continue on)
        flush_id = 0
        req: GenerationRequest | None = first
        try:
            while True:
                if req is None:
                    # Managed buffering: wait for more text, but no longer than the delay.
                    timeout = first.max_buffer_delay_ms / 1000 if pending.strip() else None
                    try:
                        req = await asyncio.wait_for(ctx.inputs.get(), timeout)
                    except TimeoutError:
                        offset_s = await self._speak(
                            cid, pending, fmt, timestamps, offset_s, audio_deadline, ctx.fault
                        )
                        pending = ""
                        continue
                pending += req.transcript
                last = not req.cont
                if last or req.flush:
                    text, pending = pending, ""
                elif first.max_buffer_delay_ms == 0:
                    text, pending = _split_at(pending, _last_word_end(pending))
                else:
                    text, pending = _split_at(pending, _last_sentence_end(pending))
                offset_s = await self._speak(
                    cid, text, fmt, timestamps, offset_s, audio_deadline, ctx.fault
                )
                if req.flush:
                    flush_id += 1
                    await self._send(messages.flush_done(cid, flush_id))
                req = None
                if last:
                    await self._send(messages.done(cid))
                    return
        except _FaultInjected:
            pass
        except ConnectionError as e:
            # The client closed the socket mid-context (an interrupted turn); just stop.
            log.debug("context %s stopped: %s", cid, type(e).__name__)
        except Exception:
            log.exception("context %s failed", cid)
            with contextlib.suppress(Exception):
                await self._send(messages.error(cid, "internal error", status_code=500))
        finally:
            if self._contexts.get(cid) is ctx:
                del self._contexts[cid]

    async def _speak(
        self,
        cid: str,
        text: str,
        fmt: audio.OutputFormat,
        timestamps: bool,
        offset_s: float,
        audio_deadline: float,
        fault: TTSFault | None = None,
    ) -> float:
        """Synthesise ``text``, stream it as chunk messages; returns the new audio offset.

        A context's ``"error"``/``"close"`` fault fires after its ``after_chunks`` chunks
        (counted over the context, so it may cut a later sentence) and raises
        ``_FaultInjected``: the context says nothing more."""
        if not text.strip():
            return offset_s
        t0 = time.monotonic()
        samples = await audio.speak(text.strip(), fmt.sample_rate)
        step_ms = (time.monotonic() - t0) * 1000
        delay = audio_deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        duration_s = len(samples) / fmt.sample_rate
        words = audio.word_timings(text, duration_s, offset_s) if timestamps else []
        sent_s = offset_s
        for piece in audio.chunks(audio.encode(samples, fmt.encoding), fmt.chunk_bytes):
            if fault is not None and fault.kind != "hang":
                await self._fire_if_due(cid, fault)
            await self._send(messages.chunk(cid, piece, step_ms))
            sent_s += len(piece) / fmt.bytes_per_sample / fmt.sample_rate
            # Word timings follow the audio that contains the word's start, as Cartesia's do.
            due = [w for w in words if w.start < sent_s]
            if due:
                words = words[len(due) :]
                await self._send(messages.timestamps(cid, due))
        if words:
            await self._send(messages.timestamps(cid, words))
        return offset_s + duration_s

    async def _fire_if_due(self, cid: str, fault: TTSFault) -> None:
        sent = self._chunks_sent.get(cid, 0)
        if sent < fault.after_chunks:
            self._chunks_sent[cid] = sent + 1
            return
        if fault.kind == "error":
            log.info("injected fault: error on context %s after %d chunks", cid, sent)
            await self._send(
                messages.error(cid, "injected generation failure", status_code=fault.status_code)
            )
        else:
            log.info("injected fault: closing the socket after %d chunks of %s", sent, cid)
            if self._close_socket is not None:
                await self._close_socket()
        raise _FaultInjected


class _FaultInjected(Exception):
    """Internal: a context's fault fired; it sends nothing more."""


def _last_sentence_end(text: str) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return ends[-1] if ends else 0


def _last_word_end(text: str) -> int:
    # Only complete words are spoken: a piece without trailing whitespace may continue.
    stripped = text.rstrip()
    if stripped != text:
        return len(text)
    cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    return cut + 1 if cut >= 0 else 0


def _split_at(text: str, i: int) -> tuple[str, str]:
    return text[:i], text[i:]


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _with_context(req: GenerationRequest, context_id: str) -> GenerationRequest:
    return dataclasses.replace(req, context_id=context_id)
