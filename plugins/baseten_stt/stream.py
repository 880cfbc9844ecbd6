"""One streaming recognition session: the stream core every Baseten dialect shares.

Shape follows LiveKit's streaming plugins (``_run`` with send/recv/keepalive tasks and a
reconnect event). What differs between Baseten's protocols (first message, audio framing,
commit, end of stream, keepalive) comes from a :class:`~.dialect.Dialect`; the rest is here,
written once:

* audio leaves in fixed frames (Whisper: one 512-sample VAD window, 256 for mu-law;
  Qwen3-ASR: 100 ms), the tail zero-padded;
* every frame is kept in a :class:`ReplayBuffer` until a final covers it, so a dropped,
  stalled or crashed connection is resumed on a new one by replaying exactly the audio
  the server had not finalised (and re-sending any commit it had not answered): no word
  lost, none transcribed twice;
* server times restart at 0 on each connection; we keep our own audio timeline (stream
  time) and place each connection's results at the stream time its first frame had;
* START/END_OF_SPEECH are synthesised (the servers send none), usage and latency are
  reported; end of input is the dialect's (``end_audio`` -> ``finished``, or a last commit
  -> its flush reply), then close 1000;
* connect failures, drops, stalls and fatal errors share one budget of attempts without
  progress; when it is spent the error is final (not retried by the framework, whose own
  counter restarts after every attempt longer than the connect timeout);
* with fallback endpoints (``failover.EndpointPool``), a failure that condemns the endpoint
  (refused, 5xx for ``failover_after_s``, hang, fatal error, two drops) moves the next
  connection to the next endpoint, replaying as for any reconnect; each endpoint gets the
  whole budget, and the stream returns to a recovered primary at an utterance boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import pydantic
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, stt, utils

from .connect import open_websocket
from .dialect import dialect_for
from .failover import EndpointPool
from .log import logger
from .models import STTOptions
from .protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED,
    ErrorFrame,
    ErrorType,
    HealthCheckReply,
    SessionCreated,
    TranscriptionResult,
    parse_server_message,
)
from .stats import TranscriptLatency
from .timeline import InjectedSilence, ReplayBuffer, WallClockMap
from .transcript import speech_span, to_speech_data

if TYPE_CHECKING:
    from .stt import STT

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
#: How often the watchdog checks for a server that owes a reply: a stall is noticed within
#: this of its threshold (``speech_stall_s``, the commit and stall timeouts).
WATCHDOG_INTERVAL_S = 0.25
#: A protocol frame whose RMS is above this carries speech energy (the server owes results
#: for it). Room audio between words sits near -60 dBFS (Opus comfort noise, measured on the
#: packaged human clips over WebRTC), conversational speech at -35..-15 dBFS.
SPEECH_RMS_DBFS = -45.0
_SPEECH_MEAN_SQUARE = (32768 * 10 ** (SPEECH_RMS_DBFS / 20)) ** 2
#: Connection-loss kinds that are the server's normal behaviour, not failures: they neither
#: spend the retry budget nor log a warning.
_EXPECTED_LOSSES = frozenset({"update", "closed_after_commit"})
#: With a fallback endpoint, losses that leave the endpoint at once: it refused or timed out
#: the connect, kept answering 5xx, hung, or sent a fatal error. A plain drop is retried
#: on the same endpoint once first (a redeploy or load balancer blip reconnects fine).
_FAIL_OVER_AT_ONCE = frozenset({"connect", "unavailable", "stall", "fatal_error"})
#: Plain drops in a row, without progress, after which an endpoint is left.
DROPS_BEFORE_FAILOVER = 2


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
    # commits (frame index each ends at -> monotonic send time) awaiting their flush reply
    commits_awaiting: dict[int, float] = field(default_factory=dict)
    last_commit_sent: int = -1  # frame index of the newest commit sent on this socket
    flush_replies: int = 0
    last_audio_sent: float = 0.0
    # seconds of speech-energy audio sent since the server's last result (speech_stall_s)
    speech_unanswered_s: float = 0.0
    last_result: float = field(default_factory=time.monotonic)


class SpeechStream(stt.RecognizeStream):
    """A Baseten streaming session (any dialect); create it with ``STT.stream()``."""

    def __init__(
        self,
        *,
        stt: STT,
        opts: STTOptions,
        conn_options: APIConnectOptions,
        endpoints: EndpointPool,
        api_key: str,
        http_session: aiohttp.ClientSession,
        ssl_context: object,
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=opts.sample_rate)
        self._owner = stt
        self._opts = opts
        self._endpoints = endpoints
        self._conn_endpoint = endpoints.active  # index of the endpoint dialled last
        self._endpoint_failures = 0  # failures without progress on that endpoint
        self._api_key = api_key
        self._session = http_session
        self._ssl_context = ssl_context
        self._request_id = uuid.uuid4().hex
        self._dialect = dialect_for(opts)
        self._frame_samples = self._dialect.frame_samples
        self._frame_s = self._frame_samples / opts.sample_rate
        # audio timeline (stream time), persistent across connections and _run retries
        self._frame_bytes = self._dialect.wire_frame_bytes
        self._rate = opts.sample_rate  # the encoding's; fixed for the stream's life
        self._fallback_language = self._dialect.language_code(opts.language) or opts.language
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
        # Qwen3 commits not yet answered, as the frame index each ends at (stream order).
        # Kept across connections: one lost with a socket is sent again after the replay.
        self._commit_marks: deque[int] = deque()
        self._newest_mark = 0
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
        self._update_reason = "options updated"
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

        LiveKit flushes when its own VAD or turn detector has already heard the user stop;
        waiting for the server's VAD to hear the same silence in real time would add
        ``vad_min_silence_duration_ms`` to every final.

        * Qwen3-ASR has a message for it: the buffered audio (tail zero-padded to a whole
          frame) is followed by ``input_audio_buffer.commit``, answered by a final.
        * Whisper v1 has none: its server VAD ends an utterance after that much silence
          counted in *audio* time, so we send the silence at once (zeros, faster than real
          time) and the final comes back after inference alone.

        Padding and injected silence exist on the wire timeline only: results are placed
        on the user's timeline (``InjectedSilence``), so word times and latencies stay exact.
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
            self._end_utterance_now()

    def _end_utterance_now(self) -> None:
        # Nothing new since the last flush: the server already has its silence / commit.
        if self._pushed_samples <= self._flushed_at_samples:
            return
        n = self._frame_samples
        tail = (-self._pushed_samples) % n  # pad the partial frame of real audio first
        if self._dialect.can_commit:
            added, what = tail, "commit"
        else:
            silence_s = (
                self._opts.vad_min_silence_duration_ms + self._opts.vad_speech_pad_ms
            ) / 1000
            frames = math.ceil(silence_s * self._rate / n) + FLUSH_MARGIN_FRAMES
            added, what = tail + frames * n, "silence"
        wire_s = self._pushed_samples / self._rate
        self._pending += bytes(2 * added)
        self._pushed_samples += added
        self._flushed_at_samples = self._pushed_samples
        # The injected stretch takes no wall time: its audio maps to "now".
        self._wall.record(wire_s, time.time())
        if added:
            self._injected.record(self._pushed_samples / self._rate, added / self._rate)
        if self._dialect.can_commit:
            self._add_commit_mark(self._pushed_samples // n)
        self._owner.stats.flushes += 1
        self._owner.stats.injected_silence_s += added / self._rate
        self._on_frames_completed()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "baseten flush: %s to end the utterance now (%.0f ms of padding)",
                what,
                added / self._rate * 1000,
                extra={"request_id": self._request_id, "wire_s": round(wire_s, 3)},
            )

    def _add_commit_mark(self, frames: int) -> None:
        self._commit_marks.append(frames)
        self._newest_mark = frames

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
        self._reconnect_at_boundary("options updated")

    def return_to_primary(self) -> None:
        """The primary endpoint is healthy again: move back to it at the next utterance
        boundary (as for ``update_options``; the replay makes the move lossless)."""
        if self._conn_endpoint != 0:
            self._reconnect_at_boundary("back to the primary endpoint")

    def _reconnect_at_boundary(self, reason: str) -> None:
        self._update_reason = reason
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
            ws = await self._connect()
            if ws is None:
                continue  # a connect failure within the budget; backed off already
            self._owner.stats.connections += 1
            if self._connections > 0:
                self._reconnects += 1
                self._owner.stats.reconnects += 1
            self._connections += 1
            try:
                await self._run_connection(ws)
                return
            except _ConnectionLost as e:
                await self._after_loss(e)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse | None:
        """Open a socket; a retryable connect failure (timeout, refused) spends the budget.

        Counted here rather than left to the framework: an attempt that outlives
        ``conn_options.timeout`` resets LiveKit's retry counter, so a connect that times
        out every time would be retried forever and a dead endpoint never reported (the
        official client's defect 8). 5xx/429 upgrades are waited out by ``open_websocket``
        within ``cold_start_timeout_s`` and raise on their own.
        """
        t0 = time.perf_counter()
        pool = self._endpoints
        self._conn_endpoint = pool.active
        cold_start_s = self._opts.cold_start_timeout_s
        if pool.can_fail_over:
            cold_start_s = min(cold_start_s, self._opts.failover_after_s)
        try:
            ws = await open_websocket(
                session=self._session,
                url=pool.endpoints[self._conn_endpoint],
                api_key=self._api_key,
                ssl_context=self._ssl_context,  # type: ignore[arg-type]
                connect_timeout_s=self._conn_options.timeout,
                cold_start_timeout_s=cold_start_s,
                on_handshake_retry=self._on_handshake_retry,
            )
        except APIStatusError as e:
            if not (e.retryable and pool.can_fail_over):
                raise
            await self._after_loss(_ConnectionLost(e.message, kind="unavailable"))
            return None
        except APIConnectionError as e:
            if not e.retryable:
                raise
            await self._after_loss(_ConnectionLost(e.message, kind="connect"))
            return None
        self._report_connection_acquired(time.perf_counter() - t0, False)
        return ws

    async def _after_loss(self, e: _ConnectionLost) -> None:
        """Decide what a lost connection costs: resume, or give up for good."""
        extra = {
            "request_id": self._request_id,
            "reason": e.reason,
            "kind": e.kind,
            "unfinalised_s": round(len(self._replay) * self._frame_s, 3),
        }
        if e.kind in _EXPECTED_LOSSES:
            self._failures_without_progress = 0
            self._endpoint_failures = 0
            logger.info("baseten stream reconnecting (%s)", e.reason, extra=extra)
            return
        self._failures_without_progress += 1
        self._endpoint_failures += 1
        if e.kind == "stall":
            self._owner.stats.stalls += 1
        pool = self._endpoints
        switched = False
        if pool.can_fail_over and (
            e.kind in _FAIL_OVER_AT_ONCE or self._endpoint_failures >= DROPS_BEFORE_FAILOVER
        ):
            switched = pool.report_failure(self._conn_endpoint, e.reason)
            self._endpoint_failures = 0
        # Each endpoint gets the whole budget: the stream gives up only once all are failing.
        budget = max(1, self._conn_options.max_retry) * len(pool.endpoints)
        extra["attempt"] = self._failures_without_progress
        if self._failures_without_progress > budget:
            self._failures_without_progress = 0
            # Not retryable: this budget already was the retrying, and the framework's
            # own counter would restart (see _connect). A FallbackAdapter moves on now.
            raise APIConnectionError(
                f"Baseten connection lost ({e.reason}) {budget + 1} times without progress",
                retryable=False,
            ) from None
        logger.warning("baseten connection lost (%s); resuming with replay", e.reason, extra=extra)
        if switched and pool.active != 0:
            return  # a fresh endpoint: dial it now (the way back to the primary backs off)
        if self._failures_without_progress > 1:
            await asyncio.sleep(
                random.uniform(0, min(2.0, 0.2 * 2**self._failures_without_progress))
            )

    def _on_handshake_retry(self, status: int, delay: float) -> None:
        self._owner.stats.handshake_retries += 1

    async def _run_connection(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        conn = _Conn(ws=ws, base_s=self._replay.start_s)
        self._reconnect_event.clear()
        self._pending_update = False
        await self._send(conn, self._dialect.first_message(self._opts))
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
                raise _ConnectionLost(self._update_reason, kind="update")
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

    async def _send_loop(self, conn: _Conn) -> None:
        replay = self._replay
        replayed = len(replay)
        if replayed and self._connections > 1:
            self._owner.stats.replayed_frames += replayed
            logger.info(
                "replaying %.2f s of unfinalised audio",
                replayed * self._frame_s,
                extra={"request_id": self._request_id, "frames": replayed},
            )
        # A commit whose audio is all finalised already still gets its (empty) reply, which
        # keeps replies and commits paired one to one.
        await self._send_due_commits(conn, replay.first_index)
        audio_message = self._dialect.audio_message
        for i, frame in enumerate(replay.frames(), start=replay.first_index + 1):
            await self._send(conn, audio_message(frame))
            conn.last_audio_sent = time.monotonic()
            if self._commit_marks:
                await self._send_due_commits(conn, i)
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
                # Whole frames only (the Whisper server's VAD accepts nothing else): zero-pad.
                self._pending += bytes(self._pending_frame_bytes - tail)
            await self._send_pending(conn)
            self._input_done = True
            self._report_usage(final=True)
        conn.end_sent = True
        conn.end_sent_at = time.monotonic()
        if self._dialect.can_commit:
            end = replay.next_index
            if end > self._newest_mark:
                self._add_commit_mark(end)
            await self._send_due_commits(conn, end)
            if not self._commit_marks:
                conn.finished.set()  # the last commit was answered and no audio came after
        else:
            await self._send(conn, self._dialect.end_of_stream_message())
        await self._await_finished(conn)

    async def _send_due_commits(self, conn: _Conn, sent_frames: int) -> None:
        """Send every commit whose audio (frames before its mark) is now on this socket."""
        for mark in self._commit_marks:
            if mark > sent_frames:
                break
            if mark <= conn.last_commit_sent:
                continue
            await self._send(conn, self._dialect.commit_message())
            conn.commits_awaiting[mark] = time.monotonic()
            conn.last_commit_sent = mark
            self._owner.stats.commits_sent += 1

    async def _send_pending(self, conn: _Conn) -> None:
        """Cut every whole protocol frame off the pending audio, keep it, send it."""
        pending = self._pending
        size = self._pending_frame_bytes
        if len(pending) < size:
            return
        ws = conn.ws
        replay = self._replay
        encode = self._dialect.encode
        audio_message = self._dialect.audio_message
        marks = self._commit_marks
        frame_s = self._frame_s
        speech_limit = self._opts.speech_stall_s
        sent = 0
        try:
            while len(pending) >= size:
                pcm = pending[:size]
                frame = encode(pcm)
                del pending[:size]
                # kept before anything can fail: a frame lost with a dying socket is replayed
                replay.append(frame)
                if _is_speech(pcm):
                    conn.speech_unanswered_s += frame_s
                    if conn.speech_unanswered_s > speech_limit:
                        self._check_speech_answered(conn, time.monotonic())
                if ws.closed:
                    raise _SendFailed("socket closed while sending")
                msg = audio_message(frame)
                if isinstance(msg, bytes):
                    await ws.send_bytes(msg)
                else:
                    await ws.send_str(msg)
                sent += 1
                if marks and marks[-1] > conn.last_commit_sent:
                    await self._send_due_commits(conn, replay.next_index)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise _SendFailed(f"send failed: {type(e).__name__}") from None
        finally:
            if sent:
                conn.last_audio_sent = time.monotonic()
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
        the timeout counts from the newest server frame, not from the end message. If it
        goes quiet with an utterance still open, or without answering our last commit
        (whose final may hold words), those words exist only in our replay buffer: resume
        on a new connection instead of dropping them.
        """
        timeout = self._opts.finish_timeout_s
        while not conn.finished.is_set():
            idle_since = max(conn.last_rx, conn.end_sent_at)
            remaining = idle_since + timeout - time.monotonic()
            if remaining <= 0:
                if self._speaking or self._commit_marks:
                    raise _ConnectionLost(
                        f"no reply to the end of audio for {timeout:g} s with an utterance open",
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
        """Keep the socket busy and notice a server that has stopped answering.

        Every ``WATCHDOG_INTERVAL_S`` the watchdog judges what the server *owes*
        (``_check_owed_reply``): results for speech we sent, the reply to a commit, results
        for an utterance it has started. Whisper also gets a ``health_check`` every
        ``keepalive_interval_s``, which keeps a silent caller's socket busy, measures RTT and
        detects a wedged server while nobody speaks (once it has proven it answers).
        Qwen3-ASR has no probe. Dead TCP is caught by transport pings in both
        (``connect.py``).
        """
        interval = self._opts.keepalive_interval_s
        next_probe = time.monotonic()
        while True:
            now = time.monotonic()
            self._check_owed_reply(conn, now)
            if now >= next_probe:
                next_probe = now + interval
                await self._probe(conn, now)
            await asyncio.sleep(min(WATCHDOG_INTERVAL_S, max(0.0, next_probe - now)))

    async def _probe(self, conn: _Conn, now: float) -> None:
        trace_id = f"{self._request_id[:8]}-{next(self._health_ids)}"
        probe = self._dialect.keepalive_message(trace_id, time.time())
        if probe is None:
            return
        # Probe first, then wait: an early reply proves the server answers health
        # checks, which arms stall detection before anything can go wrong.
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
        conn.health_pending[trace_id] = now
        await self._send(conn, probe)

    def _check_speech_answered(self, conn: _Conn, now: float) -> None:
        """The speech rule (``speech_stall_s``); also run by the send loop on every speech
        frame, so a hang is noticed within a frame of the threshold, with no extra wake-up."""
        stats = self._owner.stats
        if conn.speech_unanswered_s > stats.max_speech_unanswered_s:
            stats.max_speech_unanswered_s = conn.speech_unanswered_s
        limit = self._opts.speech_stall_s
        if (
            self._opts.enable_partial_transcripts
            and conn.speech_unanswered_s > limit
            # in wall time too: audio pushed faster than real time (recognize(), a replay
            # burst) owes its results no sooner than inference can produce them
            and now - conn.last_result > limit
        ):
            raise _ConnectionLost(
                f"no result for {conn.speech_unanswered_s:.1f} s of speech "
                f"({now - conn.last_result:.1f} s)",
                kind="stall",
            )

    def _check_owed_reply(self, conn: _Conn, now: float) -> None:
        """Raise a stall if the server owes a reply and has been silent too long.

        * ``speech_stall_s`` of speech-energy audio sent with no result back (with partials
          on, a live server answers every ``partial_transcript_interval_s`` of speech; a
          slow one later, but it answers): a server that hangs mid-utterance is left in
          about two seconds of the caller's speech, not ``stall_timeout_s``;
        * a commit unanswered for ``finish_timeout_s`` (its final is inference alone);
        * an utterance it has started (a partial arrived) with audio still flowing and
          nothing heard for ``stall_timeout_s`` (partials come every
          ``partial_transcript_interval_s`` of speech, so silence that long is a hang).
        """
        quiet = now - conn.last_rx
        self._check_speech_answered(conn, now)
        if conn.commits_awaiting:
            since = max(min(conn.commits_awaiting.values()), conn.last_rx)
            if now - since > self._opts.finish_timeout_s:
                raise _ConnectionLost(f"no reply to a commit for {now - since:.1f} s", kind="stall")
        if (
            self._speaking
            and quiet > self._opts.stall_timeout_s
            and conn.last_audio_sent > conn.last_rx
        ):
            raise _ConnectionLost(
                f"no result for {quiet:.1f} s with an utterance open", kind="stall"
            )

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
        normal = code == aiohttp.WSCloseCode.OK
        if self._commit_marks and conn.commits_awaiting:
            # A close before the reply to our commit: that final would be lost. Resume
            # and commit again on a new socket (never a silent success: official defect 3).
            raise _ConnectionLost(
                f"server closed ({code}) before replying to a commit", kind="drop"
            )
        if conn.end_sent and self._input_done and normal:
            # Servers that close instead of saying "finished" (older runtimes).
            conn.finished.set()
            return
        if self._dialect.can_commit and normal and conn.flush_replies and conn.last_error is None:
            # A one-turn-per-socket server (multi-turn after commit is OPEN, doc §2.2):
            # carry on on a new socket; nothing was owed.
            raise _ConnectionLost(
                "server closed after answering a commit", kind="closed_after_commit"
            )
        if conn.last_error is not None:
            self._owner.stats.fatal_errors += 1
            raise _ConnectionLost(
                f"server error then close {code}: {conn.last_error}", kind="fatal_error"
            )
        if (
            code == CLOSE_INTERNAL_ERROR
            and self._dialect.strict_first_message
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
        elif isinstance(msg, SessionCreated):
            self._owner.stats.fatal_errors += 1
            raise APIStatusError(
                "this Baseten endpoint runs Baseten's v2 unified STT protocol (its server "
                "sent session.created), which this plugin does not speak yet; point it at a "
                "v1 streaming deployment (Whisper or Qwen3-ASR)",
                retryable=False,
            )
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
        if conn.end_sent and not self._commit_marks and self._dialect.confirms_end(msg):
            conn.finished.set()

    def _on_error_frame(self, conn: _Conn, frame: ErrorFrame) -> None:
        description = frame.description[:300]
        error_type = frame.body.error_type
        extra = {
            "request_id": self._request_id,
            "error_type": str(error_type),
            "server_message": description,
        }
        if frame.is_fatal:
            self._owner.stats.fatal_errors += 1
            logger.error("baseten fatal error: %s", description, extra=extra)
            if error_type == ErrorType.CONFIGURATION_ERROR:
                raise APIStatusError(
                    f"Baseten rejected the stream configuration: {description}",
                    status_code=CLOSE_INTERNAL_ERROR,
                    retryable=False,
                )
            raise _ConnectionLost(f"server error: {description}", kind="fatal_error")
        # Unmarked errors (the Qwen3 shapes carry no flag) count as recoverable: the
        # server decides by closing or not, and a close after one is a fatal_error loss.
        self._owner.stats.recoverable_errors += 1
        conn.last_error = description
        logger.warning("baseten recoverable error: %s", description, extra=extra)

    def _on_transcription(self, conn: _Conn, result: TranscriptionResult) -> None:
        conn.last_error = None  # the server carried on after any earlier error
        # results flow: whatever it owed, it is working on
        conn.speech_unanswered_s = 0.0
        conn.last_result = time.monotonic()
        text = result.text
        # The reply to a commit is that utterance's final, with or without is_final
        # (doc §2.2 OPEN; waiting for the flag hangs the official client, defect 2).
        flush_reply = self._dialect.can_commit and bool(result.is_end_of_audio_flush)
        if flush_reply:
            self._on_commit_answered(conn)
        elif not result.is_final:
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
        self._endpoint_failures = 0
        self._endpoints.report_success(self._conn_endpoint)
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

    def _on_commit_answered(self, conn: _Conn) -> None:
        """The oldest commit on this socket is answered: its audio is all finalised."""
        conn.flush_replies += 1
        self._owner.stats.commit_replies += 1
        if not conn.commits_awaiting:
            return  # a reply we did not ask for (e.g. to the server's own end of input)
        mark = min(conn.commits_awaiting)
        sent_at = conn.commits_awaiting.pop(mark)
        while self._commit_marks and self._commit_marks[0] <= mark:
            self._commit_marks.popleft()
        self._owner.stats.last_commit_reply_s = time.monotonic() - sent_at
        covered = mark * self._frame_s
        conn.finalised_s = max(conn.finalised_s, covered - conn.base_s)
        self._finalised_until = max(self._finalised_until, covered)
        self._replay.trim_until(self._finalised_until)

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
            fallback_language=self._fallback_language,
            text=text,
            language_code=self._dialect.language_code,
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


def _is_speech(pcm: bytes | bytearray) -> bool:
    """Whether a frame of native int16 samples carries speech energy (``SPEECH_RMS_DBFS``)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.dot(samples, samples)) > _SPEECH_MEAN_SQUARE * samples.size


def _keys(first_message: str) -> set[str]:
    import json

    data = json.loads(first_message)
    return {f"{section}.{key}" for section, body in data.items() for key in body}
