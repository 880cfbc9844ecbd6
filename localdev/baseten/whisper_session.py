"""The streaming-Whisper v1 dialect (protocol doc §3-§4) over the shared core (``session.py``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pydantic

from localdev.baseten.audio import FrameDecoder
from localdev.baseten.session import (
    WHISPER_ERROR_KEYS,
    StopStream,
    StreamSession,
    StreamSettings,
    short_errors,
    stream_id_for,
)
from plugins.baseten_stt.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INTERNAL_ERROR_REASON,
    CLOSE_NORMAL,
    PCM_SAMPLE_RATE,
    ControlMessage,
    Encoding,
    EndAudioBody,
    EndAudioReply,
    ErrorFrame,
    ErrorType,
    HealthCheckBody,
    HealthCheckReply,
    StreamingWhisperInput,
    TranscriptionResult,
)

log = logging.getLogger("localdev.baseten")


class WhisperSession(StreamSession):
    """Baseten's streaming-Whisper v1 (protocol doc §3-§4): a strict JSON first message
    (any violation closes 1011, no error frame, as truss does), binary audio frames of
    exactly one VAD window (``FrameDecoder``; any other size is a fatal
    ``AUDIO_PROCESSING_ERROR``), ``end_audio`` / ``health_check`` text frames."""

    _config: StreamingWhisperInput
    _decoder: FrameDecoder
    #: ``finished`` sent: the next client message ends the stream (close 1000).
    _finished: bool = False

    # ------------------------------------------------------------------ first message
    async def _open(self, first: aiohttp.WSMessage) -> bool:
        try:
            if first.type != aiohttp.WSMsgType.TEXT:
                raise ValueError(f"first message must be JSON text, got {first.type.name}")
            config = StreamingWhisperInput.model_validate(json.loads(first.data))
            self._stats.last_first_message = config
            sp = config.streaming_params
            decoder = FrameDecoder(encoding=sp.encoding)
            # The real server measures the buffer as bytes / (sample_rate * bytes per
            # sample) using the client's *declared* sample_rate, while decoding assumes
            # 16 kHz (s16le) / 8 kHz (mu-law). Reproduce that arithmetic, quirk included.
            enc = decoder.encoding or Encoding.PCM_S16LE
            # StreamingVad raises ValueError for bad VAD kwargs, a 1011 as on truss.
            self._configure(
                StreamSettings(
                    whisper_params=config.whisper_params,
                    vad=config.streaming_vad_config,
                    partials=sp.enable_partial_transcripts,
                    partial_interval_s=sp.partial_transcript_interval_s,
                    final_max_duration_s=sp.final_transcript_max_duration_s,
                    bytes_per_second=max(
                        1, sp.sample_rate * (2 if enc is Encoding.PCM_S16LE else 1)
                    ),
                    skip_partial_if_hallucination=sp.skip_partial_if_hallucination,
                    pipeline_latency=sp.include_pipeline_latency_metric,
                )
            )
        except (ValueError, pydantic.ValidationError) as exc:
            # truss: an exception escaping the handler closes 1011, no error frame.
            log.info("rejecting first message (%s): %s", type(exc).__name__, exc)
            self._stats.bad_first_messages += 1
            await self.close(CLOSE_INTERNAL_ERROR, CLOSE_INTERNAL_ERROR_REASON.encode())
            raise StopStream from exc
        self._config = config
        self._decoder = decoder
        self.stream_id = stream_id_for(config.stream_id)
        return False

    # ------------------------------------------------------------------ client frames
    async def _on_message(self, msg: aiohttp.WSMessage, worker: asyncio.Task[None]) -> None:
        if self._finished:
            # After ``finished`` the real server has left its loop: whatever comes
            # next ends the handler, and truss closes 1000.
            self._stats.messages_after_finished += 1
            await self.close(CLOSE_NORMAL)
            raise StopStream
        if msg.type == aiohttp.WSMsgType.BINARY:
            await self._on_audio(msg.data, worker)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            await self._on_text(msg.data)

    async def _on_audio(self, data: bytes, worker: asyncio.Task[None]) -> None:
        self._stats.frames_received += 1
        self._frames += 1
        try:
            pcm = self._decoder.decode(data)
        except ValueError as exc:
            self._stats.bad_frames += 1
            self._changed()
            await self._send_error(ErrorType.AUDIO_PROCESSING_ERROR, str(exc), recoverable=False)
            await self.close(CLOSE_NORMAL)
            raise StopStream from exc
        self._stats.audio_seconds_received += len(pcm) / PCM_SAMPLE_RATE
        await self._feed_window(pcm, len(data), worker)

    async def _on_text(self, raw: str) -> None:
        try:
            control = ControlMessage.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            self._stats.stream_errors_sent += 1
            self._changed()
            await self._send_error(
                ErrorType.STREAM_ERROR,
                f"Failed to validate text message: {short_errors(exc)}",
                recoverable=True,
            )
            return
        if control.type == "end_audio":
            await self._end_audio(control)
        elif control.type == "health_check":
            await self._health_check(control)
        else:
            frame = ErrorFrame(trace_id=control.trace_id).model_dump(include=WHISPER_ERROR_KEYS)
            frame["body"] = {"error": f"Unhandled message type: {control.type}"}
            await self._send(frame)

    async def _end_audio(self, control: ControlMessage) -> None:
        self._stats.end_audio_received += 1
        self._changed()
        ack = EndAudioReply(trace_id=control.trace_id, body=EndAudioBody(status="acknowledged"))
        await self._send(ack.model_dump())
        await self._queue.join()
        if self._vad.triggered and self._buffer:
            self._close_buffer(final=True, end_of_audio_flush=True)
            await self._queue.join()
        else:
            self._close_buffer(final=False)
        await self._send(EndAudioReply(body=EndAudioBody(status="finished")).model_dump())
        self._finished = True
        self._stats.finished_sent += 1
        self._changed()

    async def _health_check(self, control: ControlMessage) -> None:
        self._stats.health_checks += 1
        self._changed()
        want_interval = bool((control.body or {}).get("get_partial_interval"))
        reply = HealthCheckReply(
            trace_id=control.trace_id,
            timestamp=time.time(),
            body=HealthCheckBody(
                healthy=True,
                partial_interval=(
                    round(time.monotonic() - self._last_partial_at, 4) if want_interval else None
                ),
            ),
        ).model_dump()
        if not want_interval:
            reply["body"].pop("partial_interval", None)
        await self._send(reply)

    # ------------------------------------------------------------------ server frames
    def _result_payload(self, result: TranscriptionResult) -> dict[str, Any]:
        return result.to_wire()

    async def _send_error(self, error_type: ErrorType, message: str, *, recoverable: bool) -> None:
        self._stats.error_frames_sent += 1
        await self._send(self._body_error_frame(error_type, message, recoverable=recoverable))
