"""Cartesia TTS wire messages: parsing generation requests, building server replies.

Shapes follow Cartesia's WebSocket reference (``chunk``, ``timestamps``, ``flush_done``,
``done``, ``error``; every reply echoes ``context_id`` and carries ``status_code`` 206
while a context is live) and what ``livekit.plugins.cartesia`` sends and reads.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from localdev.cartesia.audio import (
    SUPPORTED_ENCODINGS,
    SUPPORTED_SAMPLE_RATES,
    OutputFormat,
    WordTiming,
)

# Cartesia's documented default for how long text is buffered waiting for more context.
DEFAULT_MAX_BUFFER_DELAY_MS = 3000


class RequestError(ValueError):
    """A request Cartesia would reject with HTTP/status 400."""


@dataclass(frozen=True)
class GenerationRequest:
    """One input on a context (or the whole body of a ``/tts/bytes`` request)."""

    context_id: str | None
    transcript: str
    cont: bool
    flush: bool
    output: OutputFormat
    container: str
    add_timestamps: bool
    max_buffer_delay_ms: int


def parse_generation(msg: dict[str, Any], *, websocket: bool) -> GenerationRequest:
    """Validate a generation request the way Cartesia does (model, voice, output format)."""
    if not isinstance(msg.get("model_id"), str) or not msg["model_id"]:
        raise RequestError("model_id is required")
    voice = msg.get("voice")
    if not isinstance(voice, dict) or not (voice.get("id") or voice.get("embedding")):
        raise RequestError("voice must be an object with an id or an embedding")
    transcript = msg.get("transcript")
    if not isinstance(transcript, str):
        raise RequestError("transcript must be a string")
    fmt = msg.get("output_format")
    if not isinstance(fmt, dict):
        raise RequestError("output_format is required")
    container = fmt.get("container", "raw")
    encoding = fmt.get("encoding")
    sample_rate = fmt.get("sample_rate")
    allowed_containers = ("raw",) if websocket else ("raw", "wav")
    if container not in allowed_containers:
        raise RequestError(f"container must be one of {', '.join(allowed_containers)}")
    if encoding not in SUPPORTED_ENCODINGS or (container == "wav" and encoding != "pcm_s16le"):
        raise RequestError(f"unsupported encoding {encoding!r}")
    if sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise RequestError(f"unsupported sample_rate {sample_rate!r}")
    delay = msg.get("max_buffer_delay_ms", DEFAULT_MAX_BUFFER_DELAY_MS)
    if not isinstance(delay, int) or not 0 <= delay <= 5000:
        raise RequestError("max_buffer_delay_ms must be an integer between 0 and 5000")
    context_id = msg.get("context_id")
    return GenerationRequest(
        context_id=str(context_id) if context_id is not None else None,
        transcript=transcript,
        cont=bool(msg.get("continue", False)),
        flush=bool(msg.get("flush", False)),
        output=OutputFormat(encoding=encoding, sample_rate=sample_rate),
        container=container,
        add_timestamps=bool(msg.get("add_timestamps", False)),
        max_buffer_delay_ms=delay,
    )


def chunk(context_id: str, audio: bytes, step_time_ms: float) -> dict[str, Any]:
    return {
        "type": "chunk",
        "data": base64.b64encode(audio).decode("ascii"),
        "done": False,
        "status_code": 206,
        "step_time": round(step_time_ms, 3),
        "context_id": context_id,
    }


def timestamps(context_id: str, words: list[WordTiming]) -> dict[str, Any]:
    return {
        "type": "timestamps",
        "done": False,
        "status_code": 206,
        "context_id": context_id,
        "word_timestamps": {
            "words": [w.word for w in words],
            "start": [w.start for w in words],
            "end": [w.end for w in words],
        },
    }


def flush_done(context_id: str, flush_id: int) -> dict[str, Any]:
    return {
        "type": "flush_done",
        "done": False,
        "flush_done": True,
        "flush_id": flush_id,
        "status_code": 206,
        "context_id": context_id,
    }


def done(context_id: str) -> dict[str, Any]:
    return {"type": "done", "done": True, "status_code": 206, "context_id": context_id}


def error(context_id: str | None, message: str, *, status_code: int = 400) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "error",
        "done": True,
        "error": message,
        "status_code": status_code,
    }
    if context_id is not None:
        body["context_id"] = context_id
    return body
