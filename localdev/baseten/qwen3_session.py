"""The Qwen3-ASR streaming dialect (``shared/docs/baseten-qwen3-protocol.md`` §2), over the
core the Whisper dialect uses (``session.py``).

``Qwen3Session`` differs from ``WhisperSession`` only in its wire:

* **First frame**: an optional, tolerant handshake, i.e. the first text frame when it is a
  JSON object without ``type`` (``Qwen3Handshake``: unknown keys ignored, missing sections
  defaulted). A handshake whose *values* do not validate closes 1011, like Whisper's bad
  first message (a stream that silently ran with other settings would be worse). Any
  other first frame means "no handshake": defaults, and the frame is handled as a client
  frame.
* **Client frames**: text only. ``input_audio_buffer.append`` carries base64 PCM16 LE 16 kHz
  mono of any length; the PCM is cut into 512-sample windows for the core (a remainder
  waits for the next append, and a commit takes it), so fault thresholds count 32 ms
  windows as in Whisper. ``input_audio_buffer.commit`` transcribes the buffer now, whatever
  the VAD says, and answers with a final carrying ``is_end_of_audio_flush: true`` (empty
  segments when the buffer held no signal); the socket stays open and the next audio
  starts a new utterance. Not JSON, an unknown ``type`` (``end_audio`` and ``health_check``
  included), or audio that is not base64 PCM16: a recoverable error frame, the stream goes
  on. A **binary** frame: a fatal error frame, then close **1003** (RFC 6455 §7.4.1, "a type
  of data it cannot accept ... an endpoint that understands only text data MAY send this
  if it receives a binary message"), which tells a client that sent the Whisper framing
  what went wrong; a 1000 would read as a normal end of session.
* **Results**: ``TranscriptionResult.to_qwen3_wire()``, ``language_code`` a Qwen3 language
  *name* (``English``). Times are socket-relative and cumulative over the socket.
* **Errors**: ``FaultPlan.error_shape`` (default a top-level ``message``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pydantic

from localdev.baseten.session import (
    WINDOW_SAMPLES,
    StopStream,
    StreamSession,
    StreamSettings,
    short_errors,
)
from plugins.baseten_stt.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INTERNAL_ERROR_REASON,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    PCM_SAMPLE_RATE,
    ErrorFrame,
    ErrorType,
    InputAudioCommit,
    Qwen3Handshake,
    StreamingVadConfig,
    TranscriptionResult,
    WhisperParams,
    parse_qwen3_client_message,
    qwen3_language_code,
    qwen3_language_name,
)

log = logging.getLogger("localdev.baseten")

#: Bytes of one core window on the Qwen3 wire (PCM16).
_WINDOW_BYTES = 2 * WINDOW_SAMPLES
_CLIENT_TYPES = ("input_audio_buffer.append", "input_audio_buffer.commit")
_EMPTY = np.zeros(0, dtype=np.int16)


def qwen3_settings(handshake: Qwen3Handshake) -> StreamSettings:
    """The core's settings for a handshake (an empty one = the deployment defaults)."""
    w, sp, v = handshake.whisper, handshake.streaming, handshake.vad
    return StreamSettings(
        # The engine takes a code: "English" -> "en", "auto" stays "auto".
        whisper_params=WhisperParams(
            audio_language=qwen3_language_code(w.audio_language),
            show_word_timestamps=w.show_word_timestamps,
            prompt=w.prompt or "",
        ),
        vad=StreamingVadConfig(
            threshold=v.threshold,
            min_silence_duration_ms=v.min_silence_duration_ms,
            speech_pad_ms=v.speech_pad_ms,
        ),
        partials=sp.enable_partial_transcripts,
        partial_interval_s=sp.partial_transcript_interval_s,
        final_max_duration_s=sp.final_transcript_max_duration_s,
        bytes_per_second=2 * PCM_SAMPLE_RATE,
    )


class Qwen3Session(StreamSession):
    """Server side of one Qwen3-ASR stream (see the module doc)."""

    #: Appended samples short of a whole window, waiting for the next append or a commit.
    _pending: npt.NDArray[np.int16] = _EMPTY

    # ------------------------------------------------------------------ first frame
    async def _open(self, first: aiohttp.WSMessage) -> bool:
        handshake: Qwen3Handshake | None = None
        if first.type == aiohttp.WSMsgType.TEXT:
            obj = _json(first.data)
            if isinstance(obj, dict) and "type" not in obj:
                try:
                    handshake = Qwen3Handshake.model_validate(obj)
                except pydantic.ValidationError as exc:
                    log.info("rejecting Qwen3 handshake: %s", short_errors(exc))
                    self._stats.bad_first_messages += 1
                    await self.close(CLOSE_INTERNAL_ERROR, CLOSE_INTERNAL_ERROR_REASON.encode())
                    raise StopStream from exc
                self._stats.handshakes_received += 1
                self._stats.last_handshake = handshake
        self._configure(qwen3_settings(handshake or Qwen3Handshake()))
        return handshake is None

    # ------------------------------------------------------------------ client frames
    async def _on_message(self, msg: aiohttp.WSMessage, worker: asyncio.Task[None]) -> None:
        if msg.type == aiohttp.WSMsgType.BINARY:
            self._stats.binary_frames_rejected += 1
            self._changed()
            await self._send_error(
                ErrorType.AUDIO_PROCESSING_ERROR,
                "Binary frames are not accepted: send audio as "
                '{"type":"input_audio_buffer.append","audio":"<base64 PCM16 LE 16 kHz mono>"}',
                recoverable=False,
            )
            await self.close(CLOSE_UNSUPPORTED, b"binary frames are not accepted")
            raise StopStream
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        try:
            message = parse_qwen3_client_message(msg.data)
        except pydantic.ValidationError as exc:
            await self._refuse(_why_refused(msg.data, exc))
            return
        if isinstance(message, InputAudioCommit):
            await self._on_commit()
            return
        try:
            data = message.pcm
        except ValueError as exc:
            await self._refuse(f"input_audio_buffer.append: audio is not valid base64 ({exc})")
            return
        if len(data) % 2:
            await self._refuse(
                f"input_audio_buffer.append: {len(data)} bytes is not whole PCM16 samples"
            )
            return
        await self._on_append(data, worker)

    async def _on_append(self, data: bytes, worker: asyncio.Task[None]) -> None:
        self._stats.appends_received += 1
        samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
        self._stats.audio_seconds_received += len(samples) / PCM_SAMPLE_RATE
        pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        whole = len(pending) // WINDOW_SAMPLES * WINDOW_SAMPLES
        self._pending = pending[whole:]
        if whole == 0:
            self._changed()
        for start in range(0, whole, WINDOW_SAMPLES):
            # Counted and fault-checked window by window, even inside one append.
            self._stats.frames_received += 1
            self._frames += 1
            await self._feed_window(pending[start : start + WINDOW_SAMPLES], _WINDOW_BYTES, worker)

    async def _on_commit(self) -> None:
        self._stats.commits_received += 1
        self._changed()
        if self._faults.take_close_after_commit():
            log.info("fault: closing 1000 on a commit, before its reply")
            await self.close(CLOSE_NORMAL)
            raise StopStream
        if len(self._pending):
            # A tail shorter than a VAD window: decoded with the buffer, never seen by the
            # VAD, whose sample count still moves on so later times stay exact.
            self._append(self._pending, 2 * len(self._pending))
            self._vad.skip(len(self._pending))
            self._pending = _EMPTY
        self._close_buffer(final=True, end_of_audio_flush=True)
        self._vad.end_turn()
        # Read nothing more until the reply is out: results stay in order, and a
        # close-after-reply fault closes right after it.
        await self._queue.join()
        if self._faults.take_close_after_commit_reply():
            log.info("fault: closing 1000 after a commit's reply")
            await self.close(CLOSE_NORMAL)
            raise StopStream

    async def _refuse(self, reason: str) -> None:
        self._stats.stream_errors_sent += 1
        self._changed()
        await self._send_error(ErrorType.STREAM_ERROR, reason, recoverable=True)

    # ------------------------------------------------------------------ server frames
    def _result_payload(self, result: TranscriptionResult) -> dict[str, Any]:
        code = result.language_code
        name = qwen3_language_name(code) if code else None
        named = result.model_copy(update={"language_code": name})
        plan = self._faults.plan
        return named.to_qwen3_wire(flush_is_final=not plan.flush_reply_without_is_final)

    async def _send_error(self, error_type: ErrorType, message: str, *, recoverable: bool) -> None:
        shape = self._faults.plan.error_shape
        if shape == "body":
            frame = self._body_error_frame(error_type, message, recoverable=recoverable)
        elif shape == "error":
            frame = ErrorFrame(error=message).model_dump(include={"type", "error"})
        else:
            frame = ErrorFrame(message=message, recoverable=recoverable).model_dump(
                include={"type", "message", "recoverable"}
            )
        self._stats.error_frames_sent += 1
        await self._send(frame)


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _why_refused(raw: str, exc: pydantic.ValidationError) -> str:
    """What was wrong with a client text frame, in words a client developer can act on."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return "Text frame is not JSON"
    if not isinstance(obj, dict):
        return "Text frame is not a JSON object"
    kind = obj.get("type")
    if kind is None:
        return "Message has no 'type' (only the first frame may be a handshake)"
    if kind not in _CLIENT_TYPES:
        return f"Unhandled message type: {kind}"
    return f"Invalid {kind} message: {short_errors(exc)}"
