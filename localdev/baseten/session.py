"""One websocket stream: the dialect-independent core every dialect subclasses.

``StreamSession`` is what every dialect shares: it reads the stream's first message
(through the dialect), then client frames, drives the VAD/buffer state machine of
protocol doc §4.3 (``_process_frame``, one 512-sample window at a time) and feeds a single
FIFO transcription worker, so results leave in the order they were queued. The worker
decodes on the server's shared ``DecodePool`` (never on the event loop). Fault injection
(``_apply_faults``) and stats live here too.

A dialect subclass supplies only its wire: how the first message is read (``_open``, which
returns the core's ``StreamSettings``), how a client frame is read (``_on_message``), and
how results and errors are written (``_result_payload``, ``_send_error``).
``WhisperSession`` (``whisper_session.py``) is Baseten's streaming-Whisper v1;
``Qwen3Session`` (``qwen3_session.py``) the Qwen3-ASR streaming dialect. Both feed the
core 512-sample windows, so ``FaultPlan`` thresholds count the same 32 ms of audio in
both (``faults.py``).

Partials are *dropped, not queued*, when the engine is behind: while this stream's
previous decode is still queued or running, or when the shared pool has no spare thread for
a preview (``pool.py``). A partial is a preview of the open utterance that the next one
replaces, and queueing previews on a CPU that is behind only delays the final behind them
(the real server drops partials once >10 tasks are queued; on a GPU that is never near).
No partial is started once the VAD is timing the silence that will end the utterance: the
final is at most ``min_silence_duration_ms`` away and would wait for that preview's decode.
A partial Whisper decoded as a loop is not sent (``skip_partial_if_hallucination``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pydantic
from aiohttp import web

from localdev.baseten.engine import Decode, DecodeRecord, Recognition, RecognitionEngine
from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.baseten.pool import DecodePool, PoolBusy
from localdev.baseten.sendlog import SentTranscription, TranscriptionSentHook
from localdev.baseten.stats import ServerStats
from localdev.baseten.vad import StreamingVad, VadKind
from localdev.baseten.whisper import has_signal
from plugins.baseten_stt.protocol import (
    CLOSE_NORMAL,
    PCM_SAMPLE_RATE,
    ErrorBody,
    ErrorFrame,
    ErrorType,
    Segment,
    StreamingVadConfig,
    TranscriptionResult,
    WhisperParams,
)

log = logging.getLogger("localdev.baseten")

#: The server clamps ``final_transcript_max_duration_s`` to 30 s (Whisper's window).
MAX_FINAL_DURATION_S = 30
#: Decode an utterance from this long before the VAD's (padded) start of speech. The
#: buffer holds all audio since the previous final (as on the real server): over WebRTC
#: that can be many seconds of Opus near-silence, which costs Whisper nothing to skip but
#: is where it hallucinates. 0.3 s keeps soft onsets a tight VAD start would clip (Silero
#: fires a frame or two into a word). Times are stream-relative, and no word is dated
#: before the VAD's padded start of speech: Whisper puts the first word at the start of the
#: audio it is given, i.e. exactly this lead too early (measured on espeak and human clips).
LEAD_KEEP_S = 0.3
#: Samples the core's state machine takes at a time: one Silero window at 16 kHz (32 ms).
WINDOW_SAMPLES = 512
#: What ``ws.receive()`` returns once the client is gone (close frame or TCP).
CLOSED_TYPES = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


#: The top-level keys of a Whisper v1 error frame (``ErrorFrame`` also models the Qwen3
#: shapes' top-level ``message``/``error``/``recoverable``, which Whisper never sends).
WHISPER_ERROR_KEYS = {"type", "trace_id", "timestamp", "body"}


@dataclass
class FaultState:
    """A ``FaultPlan`` plus how much of each budget has been spent."""

    plan: FaultPlan
    rejected_503: int = 0
    drops: int = 0
    stalls: int = 0
    commit_closes: int = 0
    commit_reply_closes: int = 0
    injected: dict[int, int] = field(default_factory=dict)

    def take_drop(self) -> bool:
        if self.drops < self.plan.drop_connections:
            self.drops += 1
            return True
        return False

    def take_stall(self) -> bool:
        if self.stalls < self.plan.stall_connections:
            self.stalls += 1
            return True
        return False

    def take_close_after_commit(self) -> bool:
        if self.commit_closes < self.plan.close_after_commit:
            self.commit_closes += 1
            return True
        return False

    def take_close_after_commit_reply(self) -> bool:
        if self.commit_reply_closes < self.plan.close_after_commit_reply:
            self.commit_reply_closes += 1
            return True
        return False

    def take_injection(self, index: int, error: InjectedError) -> bool:
        used = self.injected.get(index, 0)
        if used < error.connections:
            self.injected[index] = used + 1
            return True
        return False


@dataclass(frozen=True)
class StreamSettings:
    """What the core needs from a stream's first message, whatever the dialect."""

    #: Handed to the engine (language, prompt, word timestamps, sampling).
    whisper_params: WhisperParams
    #: Handed to the server VAD (``sampling_rate`` must be 8000 or 16000).
    vad: StreamingVadConfig
    partials: bool
    partial_interval_s: float
    final_max_duration_s: float
    #: How buffer bytes convert to seconds (the Whisper server uses the *declared* rate).
    bytes_per_second: int
    skip_partial_if_hallucination: bool = True
    pipeline_latency: bool = False


@dataclass
class _Job:
    is_final: bool
    #: What is decoded: the buffer from ``LEAD_KEEP_S`` before the speech.
    audio: npt.NDArray[np.int16]
    #: Stream time of ``audio[0]``.
    time_offset: float
    #: The whole buffer's length, as the real server reports it.
    audio_length_sec: float
    #: Stream time of the VAD's padded start of speech: no word starts before it.
    speech_start_s: float
    transcription_num: int
    end_of_audio_flush: bool
    received_at: float


class StopStream(Exception):
    """The stream is over (server closed, dropped or stalled); leave the read loop."""


class StreamSession(abc.ABC):
    """Server side of one stream: the core every dialect shares (see the module doc)."""

    _settings: StreamSettings
    _vad: StreamingVad

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        transport_abort: Callable[[], None],
        engine: RecognitionEngine,
        pool: DecodePool,
        stats: ServerStats,
        faults: FaultState,
        shutdown: asyncio.Event,
        stats_changed: Callable[[], None],
        path: str = "",
        on_transcription_sent: TranscriptionSentHook | None = None,
        vad: VadKind = "silero",
        decodes: DecodeRecord | None = None,
    ) -> None:
        """Bind a session to an accepted websocket; ``run()`` reads its first message.

        ``on_transcription_sent`` (optional) is told the wall-clock send time of every
        transcription frame, tagged with the request ``path``. ``vad`` picks the speech
        probability (``vad.py``); ``decodes`` records every decode's timing.
        """
        self._ws = ws
        self._abort = transport_abort
        self._engine = engine
        self._pool = pool
        self._decodes = decodes
        self._stats = stats
        self._faults = faults
        self._shutdown = shutdown
        self._changed = stats_changed
        self._path = path
        self._on_sent = on_transcription_sent
        self._vad_kind: VadKind = vad
        self.stream_id = str(uuid.uuid4())
        self._bytes_per_second = 2 * PCM_SAMPLE_RATE
        self._cap_bytes: float = MAX_FINAL_DURATION_S * self._bytes_per_second
        self._partial_bytes: float = 0.5 * self._bytes_per_second

        self._buffer: list[npt.NDArray[np.int16]] = []
        self._buffer_bytes = 0
        self._bytes_since_partial = 0
        self._consumed_samples = 0  # 16 kHz samples before the current buffer
        self._transcription_num = 0
        #: Audio windows (32 ms) received: what fault thresholds count.
        self._frames = 0
        self._last_partial_at = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._decoding = False
        # set when a final is queued: an in-flight partial is then obsolete (see _worker)
        self._final_queued = asyncio.Event()

    # ------------------------------------------------------------------ the dialect
    @abc.abstractmethod
    async def _open(self, first: aiohttp.WSMessage) -> bool:
        """Read the stream's first message and ``_configure`` the core.

        Returns True when ``first`` is also a client frame to handle (a dialect whose
        first message is optional). Raises ``StopStream`` when the stream must end (after
        closing it).
        """

    @abc.abstractmethod
    async def _on_message(self, msg: aiohttp.WSMessage, worker: asyncio.Task[None]) -> None:
        """Handle one client frame after the first message (``StopStream`` ends the stream)."""

    @abc.abstractmethod
    def _result_payload(self, result: TranscriptionResult) -> dict[str, Any]:
        """A result as this dialect sends it."""

    @abc.abstractmethod
    async def _send_error(self, error_type: ErrorType, message: str, *, recoverable: bool) -> None:
        """Send an error frame in this dialect's shape (counted in ``error_frames_sent``)."""

    def _configure(self, settings: StreamSettings) -> None:
        """Apply the first message (``ValueError`` for VAD kwargs Silero refuses)."""
        self._vad = StreamingVad(config=settings.vad, kind=self._vad_kind)
        self._settings = settings
        max_s = settings.final_max_duration_s
        if max_s > MAX_FINAL_DURATION_S:
            log.warning("final_transcript_max_duration_s=%s clamped to %s", max_s, 30)
            max_s = MAX_FINAL_DURATION_S
        self._bytes_per_second = settings.bytes_per_second
        self._cap_bytes = max_s * self._bytes_per_second
        self._partial_bytes = settings.partial_interval_s * self._bytes_per_second

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        first = await self._ws.receive()
        if first.type in CLOSED_TYPES:
            self._stats.client_disconnects += 1
            self._changed()
            return
        try:
            handle_first = await self._open(first)
        except StopStream:
            return
        self._stats.streams_started += 1
        self._changed()
        log.info("stream %s started (%s)", self.stream_id, self._path)
        started = time.monotonic()
        worker = asyncio.create_task(self._worker(), name=f"baseten-worker-{self.stream_id}")
        try:
            if handle_first:
                await self._on_message(first, worker)
            await self._read_loop(worker)
        except StopStream:
            pass
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
            log.info("stream %s ended after %.1fs", self.stream_id, time.monotonic() - started)

    async def _read_loop(self, worker: asyncio.Task[None]) -> None:
        while True:
            msg = await self._ws.receive()
            if msg.type in CLOSED_TYPES:
                self._stats.client_disconnects += 1
                self._changed()
                return
            await self._on_message(msg, worker)

    # ------------------------------------------------------------------ audio
    async def _feed_window(
        self, pcm: npt.NDArray[np.int16], nbytes: int, worker: asyncio.Task[None]
    ) -> None:
        """One 512-sample window (already counted in ``_frames``): state machine, faults."""
        self._process_frame(pcm, nbytes)
        self._changed()
        await self._apply_faults(worker)

    def _process_frame(self, pcm: npt.NDArray[np.int16], nbytes: int) -> None:
        """The per-window state machine of doc §4.3 (``nbytes``: the window's wire size)."""
        if self._buffer_bytes + nbytes > self._cap_bytes:
            # Cap reached before this frame: final if in speech, else drop silently.
            # The frame starts the next buffer and skips the VAD.
            self._close_buffer(final=self._vad.triggered)
            self._append(pcm, nbytes)
            return
        self._append(pcm, nbytes)
        event = self._vad(pcm)
        if event is not None and event.kind == "start":
            self._bytes_since_partial = 0
        if event is not None and event.kind == "end":
            self._close_buffer(final=True)
        elif self._buffer_bytes >= self._cap_bytes:
            self._close_buffer(final=self._vad.triggered)
        elif self._settings.partials and self._vad.triggered:
            self._bytes_since_partial += nbytes
            if self._bytes_since_partial >= self._partial_bytes:
                self._bytes_since_partial = 0
                self._queue_partial()

    def _append(self, pcm: npt.NDArray[np.int16], nbytes: int) -> None:
        self._buffer.append(pcm)
        self._buffer_bytes += nbytes

    def _buffer_audio(self) -> npt.NDArray[np.int16]:
        if not self._buffer:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._buffer)

    def _close_buffer(self, *, final: bool, end_of_audio_flush: bool = False) -> None:
        """Queue a final of the whole buffer (or drop it) and start a new buffer."""
        audio = self._buffer_audio()
        if final:
            # Finals pre-increment the counter; partials carry the current value.
            self._transcription_num += 1
            self._queue.put_nowait(self._job(audio, is_final=True, flush=end_of_audio_flush))
            self._final_queued.set()
        elif len(audio):
            self._stats.buffers_dropped += 1
        self._consumed_samples += len(audio)
        self._buffer = []
        self._buffer_bytes = 0
        self._bytes_since_partial = 0

    def _queue_partial(self) -> None:
        if self._vad.ending:
            return  # the final is due within min_silence: a preview now would delay it
        if self._decoding or not self._queue.empty() or not self._pool.partial_would_run():
            self._stats.partials_dropped += 1  # the engine is behind: drop, never queue
            return
        self._queue.put_nowait(self._job(self._buffer_audio(), is_final=False, flush=False))

    def _job(self, audio: npt.NDArray[np.int16], *, is_final: bool, flush: bool) -> _Job:
        lead = int(LEAD_KEEP_S * PCM_SAMPLE_RATE)
        cut = min(len(audio), max(0, self._vad.speech_start - self._consumed_samples - lead))
        return _Job(
            is_final=is_final,
            audio=audio[cut:],
            time_offset=(self._consumed_samples + cut) / PCM_SAMPLE_RATE,
            audio_length_sec=round(self._buffer_bytes / self._bytes_per_second, 4),
            speech_start_s=max(self._consumed_samples, self._vad.speech_start) / PCM_SAMPLE_RATE,
            transcription_num=self._transcription_num,
            end_of_audio_flush=flush,
            received_at=time.monotonic(),
        )

    # ------------------------------------------------------------------ worker
    async def _worker(self) -> None:
        """Decode queued jobs in order; results go to ``_sender``, which sends them.

        ``FaultPlan.inference_delay_s`` is latency, not throughput: each result leaves that
        long after its job was queued (plus the decode), as on a GPU whose queue is deep but
        pipelined, so a slow-but-alive server still sends a partial every
        ``partial_transcript_interval_s`` of speech, only later. A job counts as done
        (``_queue.task_done``) once its result is sent, so ``_queue.join()`` still means
        "everything queued has been answered".
        """
        outbox: asyncio.Queue[tuple[float, _Job, TranscriptionResult]] = asyncio.Queue()
        sender = asyncio.create_task(self._sender(outbox), name=f"baseten-sender-{self.stream_id}")
        try:
            while True:
                job = await self._queue.get()
                result = await self._transcribe(job)
                if result is None:
                    self._queue.task_done()
                    continue
                outbox.put_nowait(
                    (job.received_at + self._faults.plan.inference_delay_s, job, result)
                )
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _sender(self, outbox: asyncio.Queue[tuple[float, _Job, TranscriptionResult]]) -> None:
        while True:
            due, _job, result = await outbox.get()
            try:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                payload = self._result_payload(result)
                before = time.time()
                await self._send(payload)
                if self._on_sent is not None:
                    self._report_sent(result, before)
                self._count_result(result)
            finally:
                self._queue.task_done()

    async def _transcribe(self, job: _Job) -> TranscriptionResult | None:
        """One job's result, or None when it is not sent (a dropped or failed partial)."""
        self._decoding = True
        try:
            try:
                if job.is_final:
                    self._final_queued.clear()
                    recognition = await self._decode_final(job)
                else:
                    superseding = await self._decode_unless_final_queued(job)
                    if superseding is None:
                        self._stats.partials_dropped += 1
                        return None
                    recognition = superseding
            except PoolBusy:
                self._stats.partials_dropped += 1  # the spare thread went to another stream
                return None
            except Exception as exc:  # one failed task does not end the stream
                log.exception("transcription failed")
                await self._send_error(
                    ErrorType.TRANSCRIPTION_ERROR,
                    f"Transcription failed: {exc}",
                    recoverable=True,
                )
                return None
            if self._skip(job, recognition):
                self._stats.partials_dropped += 1
                return None
            return TranscriptionResult(
                segments=_not_before(recognition.segments, job.speech_start_s),
                language_code=recognition.language_code,
                language_prob=recognition.language_prob,
                audio_length_sec=job.audio_length_sec,
                is_final=job.is_final,
                transcription_num=job.transcription_num,
                pipeline_latency=(
                    round(time.monotonic() - job.received_at, 4)
                    if self._settings.pipeline_latency
                    else None
                ),
                is_end_of_audio_flush=True if job.end_of_audio_flush else None,
            )
        finally:
            self._decoding = False

    async def _decode_final(self, job: _Job) -> Recognition:
        """A final; a flush of a buffer without signal (a commit after silence) is not
        decoded at all: its answer is empty segments (Whisper would invent "Thank you.")."""
        if job.end_of_audio_flush and not has_signal(job.audio):
            return Recognition(segments=[])
        return await self._decode(job)

    async def _decode_unless_final_queued(self, job: _Job) -> Recognition | None:
        """Decode a partial, but give up waiting for it when the utterance's final is queued.

        The preview is obsolete by then, and waiting for it would delay the final by up to a
        whole decode (~150-300 ms of CPU Whisper; the client's flush makes this the common
        case). Its thread runs to the end unseen, so the pool frees the slot only then.
        """
        if self._final_queued.is_set():
            return None
        decode = asyncio.ensure_future(self._decode(job))
        final = asyncio.ensure_future(self._final_queued.wait())
        try:
            await asyncio.wait({decode, final}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            final.cancel()
        if decode.done():
            return decode.result()
        decode.add_done_callback(_discard_result)
        return None

    def _skip(self, job: _Job, recognition: Recognition) -> bool:
        """A partial flagged as a hallucination is not sent, as on the real server."""
        return (
            not job.is_final
            and self._settings.skip_partial_if_hallucination
            and any(s.possible_hallucination for s in recognition.segments)
        )

    async def _decode(self, job: _Job) -> Recognition:
        def timed() -> Recognition:
            started = time.time()
            try:
                return self._engine.transcribe(
                    job.audio,
                    time_offset=job.time_offset,
                    params=self._settings.whisper_params,
                    final=job.is_final,
                )
            finally:
                if self._decodes is not None:
                    self._decodes.add(
                        Decode(
                            started=started,
                            ended=time.time(),
                            audio_s=len(job.audio) / PCM_SAMPLE_RATE,
                            is_final=job.is_final,
                        )
                    )

        return await self._pool.run(timed, final=job.is_final)

    def _report_sent(self, result: TranscriptionResult, before: float) -> None:
        assert self._on_sent is not None
        self._on_sent(
            SentTranscription(
                path=self._path,
                stream_id=self.stream_id,
                is_final=result.is_final,
                text=result.text,
                before_send=before,
                after_send=time.time(),
            )
        )

    def _count_result(self, result: TranscriptionResult) -> None:
        if result.is_final:
            self._stats.finals_sent += 1
            if result.is_end_of_audio_flush:
                self._stats.flush_replies_sent += 1
            self._stats.last_final_text = result.text
            self._stats.final_texts.append(result.text)
            if not result.segments:
                self._stats.empty_finals_sent += 1
        else:
            self._stats.partials_sent += 1
            self._last_partial_at = time.monotonic()
        self._changed()

    # ------------------------------------------------------------------ faults
    async def _apply_faults(self, worker: asyncio.Task[None]) -> None:
        """After each window: injected errors, drop, stall at ``_frames`` windows."""
        plan = self._faults.plan
        for index, error in enumerate(plan.inject_errors):
            if error.after_frames == self._frames and self._faults.take_injection(index, error):
                self._stats.errors_injected += 1
                self._changed()
                await self._send_error(
                    error.error_type, error.message, recoverable=error.recoverable
                )
                if not error.recoverable:
                    await self.close(CLOSE_NORMAL)
                    raise StopStream
        if plan.drop_after_frames == self._frames and self._faults.take_drop():
            log.info("fault: dropping TCP connection after %d frames", self._frames)
            self._stats.dropped_connections += 1
            self._changed()
            self._abort()
            raise StopStream
        if plan.stall_after_frames == self._frames and self._faults.take_stall():
            log.info("fault: stalling connection after %d frames", self._frames)
            self._stats.stalled_connections += 1
            self._changed()
            worker.cancel()
            # Neither read nor answer (not even pings) until the server shuts down.
            await self._shutdown.wait()
            raise StopStream

    # ------------------------------------------------------------------ sending
    async def _send(self, payload: dict[str, Any]) -> None:
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_json(payload)

    def _body_error_frame(
        self, error_type: ErrorType, message: str, *, recoverable: bool
    ) -> dict[str, Any]:
        """Whisper v1's nested error frame ``{"type":"error","trace_id":null,
        "timestamp":null,"body":{error_type,message,stream_id,recoverable,timestamp}}``."""
        body = ErrorBody(
            error_type=error_type.value,
            message=message,
            stream_id=self.stream_id,
            recoverable=recoverable,
            timestamp=time.time(),
        )
        frame = ErrorFrame().model_dump(include=WHISPER_ERROR_KEYS)
        frame["body"] = body.model_dump(exclude_none=True)
        return frame

    async def close(self, code: int, message: bytes = b"") -> None:
        self._stats.close_codes_sent.append(code)
        self._changed()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.close(code=code, message=message)


def _not_before(segments: list[Segment], start_s: float) -> list[Segment]:
    """Segments and words moved to start no earlier than ``start_s`` (see ``LEAD_KEEP_S``)."""
    start_s = round(start_s, 3)
    for segment in segments:
        for word in segment.word_timestamps:
            word.start_time = max(word.start_time, start_s)
            word.end_time = max(word.end_time, word.start_time)
        segment.start_time = max(segment.start_time, start_s)
        segment.end_time = max(segment.end_time, segment.start_time)
    return segments


def stream_id_for(requested: str | None) -> str:
    """The chain entrypoint adopts the client's ``stream_id`` only if it is a UUID."""
    if requested:
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(requested))
    return str(uuid.uuid4())


def short_errors(exc: pydantic.ValidationError) -> str:
    """The first three validation errors, one line (what error frames tell the client)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:3]
    )


def _discard_result(task: asyncio.Future[Recognition]) -> None:
    """Retrieve an abandoned partial's outcome so asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()
