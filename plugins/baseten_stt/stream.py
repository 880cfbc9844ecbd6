"""One streaming recognition session: connection loop, replay, event synthesis.

Shape follows LiveKit's streaming plugins (``_run`` with send/recv/keepalive tasks and a
reconnect event), with the Baseten specifics from ``shared/docs/baseten-protocol.md``:

* audio leaves as exact 512-sample frames (256 for mu-law), the tail zero-padded;
* every frame is kept in a :class:`ReplayBuffer` until a final covers it, so a dropped,
  stalled or crashed connection is resumed on a new one by replaying exactly the audio
  the server had not finalised: no word lost, none transcribed twice;
* server times restart at 0 on each connection; we keep our own audio timeline (stream
  time) and place each connection's results at the stream time its first frame had;
* START/END_OF_SPEECH are synthesised (the server sends none), usage and latency are
  reported, end of input is ``end_audio`` -> ``finished`` -> close 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import pydantic
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, stt, utils

from . import mulaw
from .connect import open_websocket
from .log import logger
from .models import STTOptions
from .protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED,
    Encoding,
    EndAudioReply,
    ErrorFrame,
    ErrorType,
    HealthCheckReply,
    TranscriptionResult,
    end_audio_message,
    health_check_message,
    parse_server_message,
)
from .stats import TranscriptLatency
from .timeline import InjectedSilence, ReplayBuffer, WallClockMap
from .transcript import speech_span, to_speech_data

if TYPE_CHECKING:
    from .stt import STT

_BIG_ENDIAN = sys.byteorder == "big"

#: RECOGNITION_USAGE cadence in seconds of audio (LiveKit's Deepgram plugin uses 5 s).
USAGE_INTERVAL_S = 5.0
#: A 1011 close this soon after the first message, before any reply, is the server
#: rejecting our StreamingWhisperInput (extra="forbid"), not a crash mid-stream.
SCHEMA_REJECT_WINDOW_S = 5.0
#: How long to wait for the receive side to explain a failed send (close code, error
#: frame) before treating it as a plain drop.
SEND_FAILURE_GRACE_S = 1.0
#: A final whose speech ends within this of the previous final's end repeats it
#: (possible only after a replay that started early); one frame's worth.
DUPLICATE_TOLERANCE_S = 0.032
#: Frames of silence sent on a flush beyond the server's min silence + speech pad: the
#: server's VAD decides per 32 ms window, so one more window guarantees it has counted the
#: full silence whatever the phase of its windows.
FLUSH_MARGIN_FRAMES = 1


class _ConnectionLost(Exception):
    """Internal: this socket is unusable; resume the stream on a new one."""

    def __init__(self, reason: str, *, kind: str = "drop") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class _SendFailed(_ConnectionLost):
    pass


@dataclass
class _Conn:
    """Per-connection state; the stream's state outlives it."""

    ws: aiohttp.ClientWebSocketResponse
    base_s: float  # stream time of the first frame sent on this socket
    opened_at: float = field(default_factory=time.monotonic)
    finalised_s: float = 0.0  # connection-relative end of audio covered by finals
    got_message: bool = False
    last_rx: float = field(default_factory=time.monotonic)  # any frame from the server
    end_sent: bool = False
    end_sent_at: float = 0.0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str | None = None
    health_pending: dict[str, float] = field(default_factory=dict)


class SpeechStream(stt.RecognizeStream):
    """A Baseten streaming-Whisper session; create it with ``STT.stream()``."""

    def __init__(
        self,
        *,
        stt: STT,
        opts: STTOptions,
        conn_options: APIConnectOptions,
        url: str,
        api_key: str,
        http_session: aiohttp.ClientSession,
        ssl_context: object,
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=opts.sample_rate)
        self._owner = stt
        self._opts = opts
        self._url = url
        self._api_key = api_key
        self._session = http_session
        self._ssl_context = ssl_context
        self._request_id = uuid.uuid4().hex
        self._encoding = opts.encoding
        self._frame_samples = opts.encoding.frame_samples
        self._frame_s = self._frame_samples / opts.sample_rate
        # audio timeline (stream time), persistent across connections and _run retries
        self._frame_bytes = opts.encoding.frame_bytes
        self._rate = opts.sample_rate  # the encoding's; fixed for the stream's life
        # s16le on a little-endian host: pending bytes are already wire bytes
        self._raw_is_wire = opts.encoding is Encoding.PCM_S16LE and not _BIG_ENDIAN
        # Pushed audio not yet cut into protocol frames: native int16 mono at the
        # encoding's rate, as raw bytes (a numpy join/slice per 20 ms frame cost 6x more).
        self._pending = bytearray()
        self._pending_frame_bytes = self._frame_samples * 2  # int16 bytes per protocol frame
        self._pushed_samples = 0  # mono samples at the encoding's rate, ever pushed
        self._next_wall_mark = self._frame_samples  # record wall clock when passing this
        self._sender_waiter: asyncio.Future[None] | None = None
        self._usage_reported_samples = 0
        self._usage_every_samples = int(USAGE_INTERVAL_S * opts.sample_rate)
        self._input_done = False
        self._replay = ReplayBuffer(
            frame_duration_s=self._frame_s,
            frame_bytes=self._frame_bytes,
            max_duration_s=opts.replay_buffer_s,
        )
        self._overflow_reported = 0
        self._wall = WallClockMap()
        # manual_flush: where the last injected silence ended (wire samples), and every
        # injection, so results map back onto the user's timeline
        self._flushed_at_samples = 0
        self._ending_input = False
        self._injected = InjectedSilence()
        self._finalised_until = 0.0
        self._last_final_end = -math.inf
        self._speaking = False
        # connection bookkeeping
        self._first_run = True
        self._timeline_origin = 0.0
        self._connections = 0
        self._reconnects = 0
        self._failures_without_progress = 0
        self._health_supported = False
        self._health_ids = itertools.count(1)
        self._pending_update = False
        self._reconnect_event = asyncio.Event()

    @property
    def request_id(self) -> str:
        return self._request_id

    # ------------------------------------------------------------------ input
    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue audio for the server (any rate and channel count).

        Same contract as ``RecognizeStream.push_frame`` (consistent sample rate, resampled
        to the encoding's rate, errors once input ended or the stream closed), but the
        audio goes straight into a byte buffer and the send loop is woken only when a
        whole protocol frame is ready: a channel item and a task wake-up per 20 ms frame
        was the largest CPU cost of a stream.
        """
        if self._input_ch.closed:
            self._check_input_not_ended()
        if self._event_ch.closed:
            self._check_not_closed()
        rate = frame.sample_rate
        if self._pushed_sr != rate:
            if self._pushed_sr:
                raise ValueError("the sample rate of the input frames must be consistent")
            self._pushed_sr = rate
        if frame.num_channels > 1:
            # The server is mono; average channels rather than feed interleaved samples.
            data = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
            mono = data.mean(axis=1).astype(np.int16)
            frame = rtc.AudioFrame(
                data=mono.tobytes(),
                sample_rate=rate,
                num_channels=1,
                samples_per_channel=frame.samples_per_channel,
            )
        if rate == self._needed_sr:
            self._pending += frame.data
            self._pushed_samples += frame.samples_per_channel
        else:
            if self._resampler is None:
                self._resampler = rtc.AudioResampler(
                    rate, self._rate, quality=rtc.AudioResamplerQuality.HIGH
                )
            for out in self._resampler.push(frame):
                self._pending += out.data
                self._pushed_samples += out.samples_per_channel
        if self._pushed_samples >= self._next_wall_mark:
            self._on_frames_completed()

    def _on_frames_completed(self) -> None:
        """A push completed one or more protocol frames: map them to wall clock, send."""
        n = self._frame_samples
        self._next_wall_mark = (self._pushed_samples // n + 1) * n
        self._wall.record(self._pushed_samples / self._rate, time.time())
        waiter = self._sender_waiter
        if waiter is not None:
            self._sender_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_sender(self) -> None:
        waiter = self._sender_waiter
        if waiter is not None:
            self._sender_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def flush(self) -> None:
        """Drain the resampler and, with ``manual_flush``, end the open utterance now.

        Baseten's protocol has no finalize message: its server VAD ends an utterance after
        ``vad_min_silence_duration_ms`` of silence, counted in *audio* time. LiveKit flushes
        when its own VAD or turn detector has already heard the user stop, so instead of
        letting the server wait that silence out in real time we send it at once (zeros,
        faster than real time) and the final comes back after inference alone. The
        injected audio is on the wire timeline only: results are placed on the user's
        timeline (``InjectedSilence``), so word times and latencies stay exact.
        """
        self._check_input_not_ended()
        self._check_not_closed()
        if self._resampler is not None:
            for out in self._resampler.flush():
                self._pending += out.data
                self._pushed_samples += out.samples_per_channel
            if self._pushed_samples >= self._next_wall_mark:
                self._on_frames_completed()
        if self._opts.manual_flush and not self._ending_input:
            self._inject_end_of_utterance_silence()

    def _inject_end_of_utterance_silence(self) -> None:
        # Nothing new since the last flush: the server already has its silence.
        if self._pushed_samples <= self._flushed_at_samples:
            return
        n = self._frame_samples
        tail = (-self._pushed_samples) % n  # pad the partial frame of real audio first
        silence_s = (self._opts.vad_min_silence_duration_ms + self._opts.vad_speech_pad_ms) / 1000
        frames = math.ceil(silence_s * self._rate / n) + FLUSH_MARGIN_FRAMES
        added = tail + frames * n
        wire_s = self._pushed_samples / self._rate
        self._pending += bytes(2 * added)
        self._pushed_samples += added
        self._flushed_at_samples = self._pushed_samples
        # The injected stretch takes no wall time: its audio maps to "now".
        self._wall.record(wire_s, time.time())
        self._injected.record(self._pushed_samples / self._rate, added / self._rate)
        self._owner.stats.flushes += 1
        self._owner.stats.injected_silence_s += added / self._rate
        self._on_frames_completed()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "baseten flush: sent %.0f ms of silence to end the utterance now",
                added / self._rate * 1000,
                extra={"request_id": self._request_id, "wire_s": round(wire_s, 3)},
            )

    @property
    def input_ended(self) -> bool:
        """No more audio can be pushed (input ended or the stream closed)."""
        return self._input_ch.closed or self._event_ch.closed

    def end_input(self) -> None:
        # end_audio finalises whatever is open; silence sent first would only be billed
        self._ending_input = True
        super().end_input()  # flush() above, then close the input channel
        if self._pending:
            # the padded tail is sent now: map its end too
            self._wall.record(self._pushed_samples / self._rate, time.time())
        self._wake_sender()

    def update_options(self, opts: STTOptions) -> None:
        """Apply new options on a fresh connection at the next utterance boundary.

        Reconnecting mid-utterance would be safe (replay) but wasteful, so while the
        user speaks the switch waits for the final.
        """
        self._opts = opts
        self._pending_update = True
        if not self._speaking:
            self._reconnect_event.set()

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        if self._first_run:
            self._first_run = False
            self._timeline_origin = self.start_time_offset
        else:
            # The base class shifts start_time_offset by wall time on each retry; our
            # timeline counts audio and is already continuous, so undo that shift.
            self.start_time_offset = self._timeline_origin
        while True:
            t0 = time.perf_counter()
            ws = await open_websocket(
                session=self._session,
                url=self._url,
                api_key=self._api_key,
                ssl_context=self._ssl_context,  # type: ignore[arg-type]
                connect_timeout_s=self._conn_options.timeout,
                cold_start_timeout_s=self._opts.cold_start_timeout_s,
                on_handshake_retry=self._on_handshake_retry,
            )
            self._report_connection_acquired(time.perf_counter() - t0, False)
            self._owner.stats.connections += 1
            if self._connections > 0:
                self._reconnects += 1
                self._owner.stats.reconnects += 1
            self._connections += 1
            try:
                await self._run_connection(ws)
                return
            except _ConnectionLost as e:
                self._failures_without_progress += 1
                if e.kind == "stall":
                    self._owner.stats.stalls += 1
                budget = max(1, self._conn_options.max_retry)
                extra = {
                    "request_id": self._request_id,
                    "reason": e.reason,
                    "kind": e.kind,
                    "unfinalised_s": round(len(self._replay) * self._frame_s, 3),
                    "attempt": self._failures_without_progress,
                }
                if e.kind == "update":
                    self._failures_without_progress = 0
                    logger.info("baseten stream reconnecting to apply new options", extra=extra)
                    continue
                if self._failures_without_progress > budget:
                    self._failures_without_progress = 0
                    raise APIConnectionError(
                        f"Baseten connection lost ({e.reason}) {budget + 1} times without progress"
                    ) from None
                logger.warning(
                    "baseten connection lost (%s); resuming with replay", e.reason, extra=extra
                )
                if self._failures_without_progress > 1:
                    await asyncio.sleep(
                        random.uniform(0, min(2.0, 0.2 * 2**self._failures_without_progress))
                    )
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()

    def _on_handshake_retry(self, status: int, delay: float) -> None:
        self._owner.stats.handshake_retries += 1

    async def _run_connection(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        conn = _Conn(ws=ws, base_s=self._replay.start_s)
        self._reconnect_event.clear()
        self._pending_update = False
        await self._send(conn, self._opts.first_message())
        tasks = [
            asyncio.create_task(self._send_loop(conn), name="baseten.send"),
            asyncio.create_task(self._recv_loop(conn), name="baseten.recv"),
            asyncio.create_task(self._keepalive_loop(conn), name="baseten.keepalive"),
        ]
        send_t, recv_t, _ = tasks
        reconnect_t = asyncio.create_task(self._reconnect_event.wait())
        try:
            done, _ = await asyncio.wait([*tasks, reconnect_t], return_when=asyncio.FIRST_COMPLETED)
            if send_t in done and isinstance(send_t.exception(), _SendFailed):
                # The receive side usually knows why (close code, error frame).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(recv_t), SEND_FAILURE_GRACE_S)
                if recv_t.done() and recv_t.exception() is not None:
                    recv_t.result()
            for t in done:
                if t is not reconnect_t:
                    t.result()
            if conn.finished.is_set() or send_t.done():
                await self._close_normally(conn)
                return
            if reconnect_t in done:
                raise _ConnectionLost("options updated", kind="update")
            raise _ConnectionLost("receive loop ended")  # unreachable in practice
        finally:
            await utils.aio.gracefully_cancel(*tasks, reconnect_t)

    async def _close_normally(self, conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            await conn.ws.close(code=aiohttp.WSCloseCode.OK)

    # ------------------------------------------------------------------ send side
    async def _send(self, conn: _Conn, data: str | bytes) -> None:
        if conn.ws.closed:
            raise _SendFailed("socket closed while sending")
        try:
            if isinstance(data, bytes):
                await conn.ws.send_bytes(data)
            else:
                await conn.ws.send_str(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise _SendFailed(f"send failed: {type(e).__name__}") from None

    def _encode(self, raw: bytearray) -> bytes:
        """Wire bytes of one frame of native int16 samples."""
        if self._encoding is Encoding.PCM_MULAW:
            return mulaw.encode(np.frombuffer(raw, dtype=np.int16))
        return np.frombuffer(raw, dtype=np.int16).astype("<i2").tobytes()

    async def _send_loop(self, conn: _Conn) -> None:
        replayed = len(self._replay)
        if replayed and self._connections > 1:
            self._owner.stats.replayed_frames += replayed
            logger.info(
                "replaying %.2f s of unfinalised audio",
                replayed * self._frame_s,
                extra={"request_id": self._request_id, "frames": replayed},
            )
        for frame in self._replay.frames():
            await self._send(conn, frame)
        self._owner.stats.frames_sent += replayed
        if not self._input_done:
            loop = asyncio.get_running_loop()
            while True:
                await self._send_pending(conn)
                if self._pushed_samples - self._usage_reported_samples >= (
                    self._usage_every_samples
                ):
                    self._report_usage(final=False)
                if self._input_ch.closed:
                    break
                if len(self._pending) < self._pending_frame_bytes:
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._sender_waiter = waiter
                    await waiter
            tail = len(self._pending) % self._pending_frame_bytes
            if tail:
                # The server's VAD accepts only whole windows: zero-pad the tail.
                self._pending += bytes(self._pending_frame_bytes - tail)
            await self._send_pending(conn)
            self._input_done = True
            self._report_usage(final=True)
        conn.end_sent = True
        conn.end_sent_at = time.monotonic()
        await self._send(conn, end_audio_message())
        await self._await_finished(conn)

    async def _send_pending(self, conn: _Conn) -> None:
        """Cut every whole protocol frame off the pending audio, keep it, send it."""
        pending = self._pending
        size = self._pending_frame_bytes
        if len(pending) < size:
            return
        ws = conn.ws
        replay = self._replay
        encode = bytes if self._raw_is_wire else self._encode
        sent = 0
        try:
            while len(pending) >= size:
                frame = encode(pending[:size])
                del pending[:size]
                # kept before it is sent: a frame lost with a dying socket is replayed
                replay.append(frame)
                if ws.closed:
                    raise _SendFailed("socket closed while sending")
                await ws.send_bytes(frame)
                sent += 1
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise _SendFailed(f"send failed: {type(e).__name__}") from None
        finally:
            self._owner.stats.frames_sent += sent
            if replay.overflowed > self._overflow_reported:
                self._report_overflow()

    def _report_overflow(self) -> None:
        self._owner.stats.replay_overflow_frames += (
            self._replay.overflowed - self._overflow_reported
        )
        if self._overflow_reported == 0:
            logger.warning(
                "replay buffer full (%.0f s unfinalised); oldest audio can no longer be replayed",
                self._opts.replay_buffer_s,
                extra={"request_id": self._request_id},
            )
        self._overflow_reported = self._replay.overflowed

    async def _await_finished(self, conn: _Conn) -> None:
        """Wait for ``finished`` while the server keeps making progress.

        The server first works through its queue (slow inference can take a while), so
        the timeout counts from the newest server frame, not from ``end_audio``. If it
        goes quiet with an utterance still open, its words exist only in our replay
        buffer: resume on a new connection instead of dropping them.
        """
        timeout = self._opts.finish_timeout_s
        while not conn.finished.is_set():
            idle_since = max(conn.last_rx, conn.end_sent_at)
            remaining = idle_since + timeout - time.monotonic()
            if remaining <= 0:
                if self._speaking:
                    raise _ConnectionLost(
                        f"no reply to end_audio for {timeout:g} s with an utterance open",
                        kind="stall",
                    )
                logger.warning(
                    "baseten did not confirm end of audio within %.1f s; closing",
                    timeout,
                    extra={"request_id": self._request_id},
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.finished.wait(), remaining)

    def _report_usage(self, *, final: bool) -> None:
        rate = self._rate
        new = self._pushed_samples - self._usage_reported_samples
        if new <= 0 or (not final and new < self._usage_every_samples):
            return
        self._usage_reported_samples = self._pushed_samples
        self._owner.stats.audio_seconds += new / rate
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                request_id=self._request_id,
                recognition_usage=stt.RecognitionUsage(audio_duration=new / rate),
            )
        )

    # ------------------------------------------------------------------ keepalive
    async def _keepalive_loop(self, conn: _Conn) -> None:
        """health_check every ``keepalive_interval_s``: keeps a silent caller's socket
        busy, measures RTT and detects a wedged server (once it has proven it answers)."""
        interval = self._opts.keepalive_interval_s
        while True:
            # Probe first, then wait: an early reply proves the server answers health
            # checks, which arms stall detection before anything can go wrong.
            now = time.monotonic()
            if conn.health_pending and self._health_supported:
                # Stalled = a probe unanswered AND nothing else heard for the whole
                # window: a server busy sending results (e.g. draining its queue after
                # end_audio) is alive even if it answers probes late.
                oldest = min(conn.health_pending.values())
                quiet = now - conn.last_rx
                if min(now - oldest, quiet) > self._opts.stall_timeout_s:
                    raise _ConnectionLost(
                        f"no health_check reply for {now - oldest:.1f} s", kind="stall"
                    )
            trace_id = f"{self._request_id[:8]}-{next(self._health_ids)}"
            conn.health_pending[trace_id] = now
            await self._send(
                conn, health_check_message(trace_id, time.time(), get_partial_interval=False)
            )
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ receive side
    async def _recv_loop(self, conn: _Conn) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            conn.last_rx = time.monotonic()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._handle_text(conn, msg.data)
                if conn.finished.is_set():
                    return
            elif msg.type == aiohttp.WSMsgType.BINARY:
                logger.debug("ignoring binary frame from baseten", extra={"bytes": len(msg.data)})
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                self._on_close(conn, ws.close_code, msg.extra if isinstance(msg.extra, str) else "")
                return
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise _ConnectionLost(f"websocket error: {type(msg.data).__name__}")

    def _on_close(self, conn: _Conn, code: int | None, reason: str) -> None:
        if conn.end_sent and self._input_done and code == aiohttp.WSCloseCode.OK:
            # Servers that close instead of saying "finished" (older runtimes).
            conn.finished.set()
            return
        if conn.last_error is not None:
            self._owner.stats.fatal_errors += 1
            raise _ConnectionLost(
                f"server error then close {code}: {conn.last_error}", kind="fatal_error"
            )
        if (
            code == CLOSE_INTERNAL_ERROR
            and not conn.got_message
            and (time.monotonic() - conn.opened_at < SCHEMA_REJECT_WINDOW_S)
        ):
            self._owner.stats.fatal_errors += 1
            raise APIStatusError(
                "Baseten closed the stream (1011) right after the first message: the deployment "
                "rejected the StreamingWhisperInput schema (unknown or invalid key; older server "
                "runtime?)",
                status_code=CLOSE_INTERNAL_ERROR,
                body={"sent": sorted(_keys(self._opts.first_message()))},
                retryable=False,
            )
        if code == CLOSE_UNSUPPORTED:
            raise APIStatusError(
                "Baseten closed 1003: this deployment has no websocket endpoint",
                status_code=CLOSE_UNSUPPORTED,
                retryable=False,
            )
        raise _ConnectionLost(f"server closed the socket ({code} {reason[:80]})".strip())

    def _handle_text(self, conn: _Conn, data: str) -> None:
        try:
            msg = parse_server_message(data)
        except (pydantic.ValidationError, ValueError):
            logger.debug(
                "ignoring unrecognised baseten message",
                extra={"request_id": self._request_id, "chars": len(data)},
            )
            return
        conn.got_message = True
        if isinstance(msg, TranscriptionResult):
            self._on_transcription(conn, msg)
        elif isinstance(msg, ErrorFrame):
            self._on_error_frame(conn, msg)
        elif isinstance(msg, EndAudioReply):
            if msg.finished and conn.end_sent:
                conn.finished.set()
        elif isinstance(msg, HealthCheckReply):
            sent = conn.health_pending.pop(msg.trace_id or "", None)
            if sent is not None:
                self._health_supported = True
                rtt = time.monotonic() - sent
                self._owner.stats.last_rtt_s = rtt
                logger.debug(
                    "baseten health_check rtt %.1f ms",
                    rtt * 1000,
                    extra={
                        "request_id": self._request_id,
                        "rtt_s": round(rtt, 4),
                        "healthy": bool(msg.body.healthy),
                    },
                )

    def _on_error_frame(self, conn: _Conn, frame: ErrorFrame) -> None:
        body = frame.body
        extra = {
            "request_id": self._request_id,
            "error_type": str(body.error_type),
            "server_message": body.description[:300],
        }
        if body.is_fatal:
            self._owner.stats.fatal_errors += 1
            logger.error("baseten fatal error: %s", body.description[:300], extra=extra)
            if body.error_type == ErrorType.CONFIGURATION_ERROR:
                raise APIStatusError(
                    f"Baseten rejected the stream configuration: {body.description[:300]}",
                    status_code=CLOSE_INTERNAL_ERROR,
                    retryable=False,
                )
            raise _ConnectionLost(f"server error: {body.description[:300]}", kind="fatal_error")
        self._owner.stats.recoverable_errors += 1
        conn.last_error = body.description[:300]
        logger.warning("baseten recoverable error: %s", body.description[:300], extra=extra)

    def _on_transcription(self, conn: _Conn, result: TranscriptionResult) -> None:
        conn.last_error = None  # the server carried on after any earlier error
        text = result.text
        if not result.is_final:
            if not text:
                return
            data = self._speech_data(conn, result, text)
            self._start_speech(data)
            self._owner.stats.interims += 1
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                    request_id=self._request_id,
                    alternatives=[data],
                )
            )
            return
        received = time.time()
        span = speech_span(result)
        self._advance_finalised(conn, result, span)
        self._failures_without_progress = 0
        if not text or span is None:
            self._owner.stats.empty_finals += 1
            self._end_speech()
            return
        end_stream_s = conn.base_s + span[1]
        if end_stream_s <= self._last_final_end + DUPLICATE_TOLERANCE_S:
            self._owner.stats.duplicate_finals_dropped += 1
            logger.info(
                "dropping repeated final after replay", extra={"request_id": self._request_id}
            )
            return
        self._last_final_end = end_stream_s
        data = self._speech_data(conn, result, text)
        self._start_speech(data)
        speech_end_wall = self._wall.wall_time_at(end_stream_s)
        self._owner.stats.finals += 1
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                request_id=self._request_id,
                alternatives=[data],
                speech_end_time=speech_end_wall,
            )
        )
        if speech_end_wall is not None:
            latency = TranscriptLatency(
                request_id=self._request_id,
                latency_s=received - speech_end_wall,
                speech_end_wall_time=speech_end_wall,
                received_wall_time=received,
                audio_duration_s=float(result.audio_length_sec or (span[1] - span[0])),
                reconnects_so_far=self._reconnects,
                text=text,
            )
            self._owner.emit("transcript_latency", latency)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "baseten final latency %.0f ms",
                    latency.latency_s * 1000,
                    extra={
                        "request_id": self._request_id,
                        "latency_s": round(latency.latency_s, 4),
                        "reconnects": self._reconnects,
                    },
                )
        self._end_speech()

    def _advance_finalised(
        self, conn: _Conn, result: TranscriptionResult, span: tuple[float, float] | None
    ) -> None:
        """Move the replay point past the audio this final covers.

        The final covers the server's whole buffer, whose length is
        ``audio_length_sec``; silently dropped silent buffers can make that sum lag the
        server's clock, so never place it before the last recognised word (``span``,
        from ``speech_span``).
        """
        length = result.audio_length_sec
        covered = conn.finalised_s
        if length is not None and math.isfinite(length) and length > 0:
            covered += length
        if span is not None:
            covered = max(covered, span[1])
        conn.finalised_s = covered
        self._finalised_until = max(self._finalised_until, conn.base_s + covered)
        self._replay.trim_until(self._finalised_until)
        self._wall.forget_before(self._finalised_until - 1.0)

    def _speech_data(self, conn: _Conn, result: TranscriptionResult, text: str) -> stt.SpeechData:
        # An utterance never spans an injection (the injection ends it), so one shift,
        # taken at its start, holds for all of its words.
        start = result.segments[0].start_time if result.segments else 0.0
        shift = self._injected.before_wire(conn.base_s + start) if self._injected else 0.0
        return to_speech_data(
            result,
            base_s=conn.base_s - shift,
            offset_s=self.start_time_offset,
            fallback_language=self._opts.language,
            text=text,
        )

    def _start_speech(self, data: stt.SpeechData) -> None:
        if self._speaking:
            return
        self._speaking = True
        user_s = max(0.0, data.start_time - self.start_time_offset)
        start_wall = self._wall.wall_time_at(self._injected.to_wire(user_s))
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.START_OF_SPEECH,
                request_id=self._request_id,
                speech_start_time=start_wall,
            )
        )

    def _end_speech(self) -> None:
        if not self._speaking:
            return
        self._speaking = False
        self._event_ch.send_nowait(
            stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=self._request_id)
        )
        if self._pending_update:
            self._reconnect_event.set()


def _keys(first_message: str) -> set[str]:
    import json

    data = json.loads(first_message)
    return {f"{section}.{key}" for section, body in data.items() for key in body}
