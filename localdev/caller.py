"""The caller side of a voice session, for E2E tests, the demo and benchmarks.

A ``Caller`` is a real LiveKit participant (the ``livekit`` rtc SDK over WebRTC), standing in
for a browser: it publishes a microphone track fed in real time from int16 samples, 48 kHz in
10 ms frames like a browser's capture, with digital silence between utterances (a browser mic
never stops sending), and it records what comes back:

* who joined and when (wall clock), flagging agent participants;
* the ``lk.transcription`` text streams LiveKit Agents 1.8 publishes for the user's speech and
  for the agent's speech (``livekit/agents/voice/room_io/_output.py``);
* every remote audio track's frames with their arrival time and RMS, so agent speech can be
  timed by energy.

It knows nothing about the worker's internals: only what any LiveKit client sees.

Room administration (create a room, dispatch an agent by name, tokens) is in ``RoomAdmin`` and
``create_token``, using ``livekit-api``.

All timestamps are ``time.time()`` (wall clock) so they line up with worker logs.
"""

# The wait_* methods take ``timeout=`` (rather than leaving it to ``asyncio.timeout``) so that a
# timeout can say what was awaited and what had been seen instead, which makes E2E failures
# readable.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from livekit import api, rtc

from agent.turn_publisher import TOPIC as TURN_LATENCY_TOPIC
from localdev.speech import write_wav_pcm16
from localdev.wer import normalise

logger = logging.getLogger(__name__)

T = TypeVar("T")

TOPIC_TRANSCRIPTION = "lk.transcription"
"""Text-stream topic of agent-published transcriptions (``livekit.agents.types``)."""
ATTR_FINAL = "lk.transcription_final"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_TRACK_ID = "lk.transcribed_track_id"

# A browser captures at 48 kHz and WebRTC's audio pipeline works in 10 ms frames.
MIC_SAMPLE_RATE = 48_000
DEFAULT_FRAME_MS = 10
# AudioSource's native queue. Frames are paced by our own clock, so this is only slack for
# event-loop jitter on a loaded 2-core machine; the SDK default (1000 ms) would let a whole
# second of audio be "sent" instantly and skew every timestamp we record.
MIC_QUEUE_MS = 100
# After a stall longer than this (a busy loop), resync the mic clock instead of bursting the
# missed frames out at once, which a real mic could not do either.
MIC_RESYNC_S = 0.2

# Speech detection by energy on received 48 kHz int16 frames. Opus-decoded digital silence
# measures ~0 RMS, espeak speech at full scale several thousand: 300 (about -40 dBFS) separates
# them with a wide margin on both sides (measured in tests/test_livekit_harness.py).
SPEECH_RMS_THRESHOLD = 300.0
# A loud stretch must last this long to count as speech, so a codec click is not an onset.
MIN_SPEECH_S = 0.03
# Quiet for this long ends a stretch of speech: longer than the gaps between espeak's words.
END_OF_SPEECH_SILENCE_S = 0.5

Role = Literal["user", "agent"]


# ---------------------------------------------------------------------------------------------
# Room administration
# ---------------------------------------------------------------------------------------------


def create_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    room: str,
    name: str | None = None,
    kind: Literal["standard", "agent"] = "standard",
    ttl: datetime.timedelta = datetime.timedelta(hours=1),
) -> str:
    """A participant JWT allowed to join ``room``, publish and subscribe.

    ``kind="agent"`` makes a participant other clients see as an agent (what a worker's job
    token carries), for harness tests that stand in for one.
    """
    agent = kind == "agent"
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_kind(kind)
        .with_ttl(ttl)
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=agent or None))
    )
    return token.to_jwt()


class RoomAdmin:
    """Server-API operations a test or demo needs (RoomService, AgentDispatchService).

    Usage::

        async with RoomAdmin(url=..., api_key=..., api_secret=...) as admin:
            await admin.create_room("r1")
            await admin.dispatch_agent(agent_name="baseten-agent", room="r1")
    """

    def __init__(self, *, url: str, api_key: str, api_secret: str) -> None:
        """``url`` may be the ws:// or http:// address of the server."""
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._lkapi: api.LiveKitAPI | None = None

    async def __aenter__(self) -> RoomAdmin:
        # failover=False: region failover is a LiveKit Cloud feature; against a local server a
        # transient error should surface, not be replayed against discovered "regions".
        self._lkapi = api.LiveKitAPI(
            url=self._url, api_key=self._api_key, api_secret=self._api_secret, failover=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._lkapi is not None:
            await self._lkapi.aclose()
            self._lkapi = None

    @property
    def lkapi(self) -> api.LiveKitAPI:
        if self._lkapi is None:
            raise RuntimeError("use RoomAdmin as an async context manager")
        return self._lkapi

    async def create_room(self, name: str, *, empty_timeout_s: int = 60) -> api.Room:
        return await self.lkapi.room.create_room(
            api.CreateRoomRequest(name=name, empty_timeout=empty_timeout_s)
        )

    async def delete_room(self, name: str) -> None:
        await self.lkapi.room.delete_room(api.DeleteRoomRequest(room=name))

    async def list_participants(self, room: str) -> list[api.ParticipantInfo]:
        resp = await self.lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        return list(resp.participants)

    async def dispatch_agent(
        self, *, agent_name: str, room: str, metadata: str = ""
    ) -> api.AgentDispatch:
        """Explicit dispatch: ask the server to send a job for ``room`` to ``agent_name``."""
        return await self.lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        )

    async def list_dispatches(self, room: str) -> list[api.AgentDispatch]:
        return await self.lkapi.agent_dispatch.list_dispatch(room_name=room)

    async def dispatch_until_joined(
        self,
        caller: Caller,
        *,
        agent_name: str,
        room: str,
        join_timeout_s: float = 60.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> DispatchResult:
        """Dispatch ``agent_name`` to ``room`` until its participant joins ``caller``'s room.

        livekit-server (v1.13.5) drops an explicit dispatch when the only worker reports
        itself full (its CPU load, the whole machine's on a shared box, above LiveKit's 0.7
        threshold) and never retries it once the worker is available again. A client app has
        to dispatch again, and so does this: a dispatch that created no job within
        ``DISPATCH_RETRY_AFTER_S`` is replaced, ``DISPATCH_ATTEMPTS`` times at most (a job
        that exists is only slow, and is waited for). ``on_retry`` hears each re-dispatch.
        """
        for attempt in range(1, DISPATCH_ATTEMPTS + 1):
            dispatched_at = time.time()
            dispatch = await self.dispatch_agent(agent_name=agent_name, room=room)
            with contextlib.suppress(TimeoutError):
                agent = await caller.wait_for_agent(timeout=DISPATCH_RETRY_AFTER_S)
                return DispatchResult(dispatched_at, agent, attempt)
            state = await self.lkapi.agent_dispatch.get_dispatch(dispatch.id, room)
            if state is not None and state.state.jobs:  # a job exists: the agent is just slow
                agent = await caller.wait_for_agent(timeout=join_timeout_s)
                return DispatchResult(dispatched_at, agent, attempt)
            if on_retry is not None:
                on_retry(f"{room}: dispatch {attempt} got no job (worker full?), dispatching again")
            await self.lkapi.agent_dispatch.delete_dispatch(dispatch.id, room)
        raise TimeoutError(f"no agent joined {room} after {DISPATCH_ATTEMPTS} dispatches")


#: See ``RoomAdmin.dispatch_until_joined``: a job normally exists within ~0.3 s of a dispatch.
DISPATCH_RETRY_AFTER_S = 8.0
DISPATCH_ATTEMPTS = 4


@dataclass(frozen=True)
class DispatchResult:
    """The dispatch that brought the agent: when it was made, the agent, how many were made."""

    dispatched_at: float
    agent: ParticipantRecord
    attempts: int


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass
class ParticipantRecord:
    identity: str
    kind: int
    """``rtc.ParticipantKind`` value."""
    joined_at: float
    """Wall clock when we saw it join; our own connect time if it was already in the room."""
    present_before_us: bool
    left_at: float | None = None

    @property
    def is_agent(self) -> bool:
        return self.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


@dataclass
class TranscriptSegment:
    """One transcription segment (``lk.segment_id``) as it evolved on the wire.

    User segments arrive as a new stream per interim carrying the full text; agent segments as
    one stream whose chunks are appended. Either way ``text`` is the latest full text.
    """

    segment_id: str
    role: Role
    participant_identity: str
    track_id: str | None
    text: str = ""
    final: bool = False
    first_at: float = 0.0
    updated_at: float = 0.0
    final_at: float | None = None
    updates: int = 0


@dataclass
class Utterance:
    """Timing of one ``Caller.say``: wall-clock times at which frames were handed to WebRTC."""

    started_at: float
    speech_ended_at: float
    """The last frame of speech (before the trailing silence) was sent."""
    ended_at: float
    """The trailing silence was sent too."""
    speech_seconds: float


@dataclass
class SpeechSpan:
    """A stretch of received audio above ``SPEECH_RMS_THRESHOLD``."""

    participant_identity: str
    started_at: float
    """Arrival time of the first loud frame."""
    ended_at: float | None
    """Arrival time of the last loud frame, once ``END_OF_SPEECH_SILENCE_S`` of quiet followed."""


@dataclass
class RemoteAudio:
    """Everything received on one remote participant's audio track(s)."""

    participant_identity: str
    sample_rate: int
    subscribed_at: float
    first_frame_at: float | None = None
    times: list[float] = field(default_factory=list)
    """Arrival time of each frame."""
    rms: list[float] = field(default_factory=list)
    """RMS of each frame (int16 units)."""
    durations: list[float] = field(default_factory=list)
    chunks: list[npt.NDArray[np.int16]] = field(default_factory=list)

    def samples(self) -> npt.NDArray[np.int16]:
        """All received mono int16 samples, concatenated."""
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.chunks)

    def save_wav(self, path: str | Path) -> None:
        """Write what was received as a mono 16-bit WAV (for listening or offline recognition)."""
        write_wav_pcm16(path, self.samples(), self.sample_rate)

    def speech_spans(
        self,
        *,
        after: float = 0.0,
        threshold: float = SPEECH_RMS_THRESHOLD,
        min_speech_s: float = MIN_SPEECH_S,
        end_silence_s: float = END_OF_SPEECH_SILENCE_S,
    ) -> list[SpeechSpan]:
        """Loud stretches among frames that arrived at or after ``after``."""
        spans: list[SpeechSpan] = []
        loud_run_start: int | None = None  # index of the first loud frame of the current run
        loud_run_s = 0.0
        current: SpeechSpan | None = None
        last_loud_at = 0.0
        quiet_s = 0.0
        # Arrival times are increasing: start at ``after`` instead of scanning the whole call
        # (waiters re-run this on every received frame).
        first = bisect.bisect_left(self.times, after)
        for i in range(first, len(self.times)):
            t, r, d = self.times[i], self.rms[i], self.durations[i]
            if r >= threshold:
                if loud_run_start is None:
                    loud_run_start, loud_run_s = i, 0.0
                loud_run_s += d
                quiet_s = 0.0
                last_loud_at = t
                if current is None and loud_run_s >= min_speech_s:
                    current = SpeechSpan(
                        self.participant_identity, self.times[loud_run_start], None
                    )
                    spans.append(current)
            else:
                loud_run_start = None
                quiet_s += d
                if current is not None and quiet_s >= end_silence_s:
                    current.ended_at = last_loud_at
                    current = None
        return spans


# ---------------------------------------------------------------------------------------------
# Microphone
# ---------------------------------------------------------------------------------------------


def to_mic_rate(samples: npt.NDArray[np.int16], sample_rate: int) -> npt.NDArray[np.int16]:
    """Resample mono int16 to 48 kHz with the SDK's (soxr) resampler."""
    samples = np.asarray(samples, dtype=np.int16)
    if sample_rate == MIC_SAMPLE_RATE or samples.size == 0:
        return samples.copy()
    resampler = rtc.AudioResampler(
        sample_rate, MIC_SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    frames = resampler.push(bytearray(samples.tobytes()))
    frames += resampler.flush()
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames]).copy()


@dataclass
class _Pending:
    samples: npt.NDArray[np.int16]  # 48 kHz speech followed by trailing silence
    speech_len: int
    done: asyncio.Future[Utterance]
    pos: int = 0
    started_at: float | None = None
    speech_ended_at: float | None = None


class _Microphone:
    """Feeds an ``rtc.AudioSource`` in real time, frame by frame, from queued utterances.

    With ``continuous`` it sends digital silence when nothing is queued, as a browser does.
    """

    def __init__(self, *, source: rtc.AudioSource, frame_ms: int, continuous: bool) -> None:
        self._source = source
        self._frame_len = MIC_SAMPLE_RATE * frame_ms // 1000
        self._frame_s = frame_ms / 1000
        self._continuous = continuous
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.frames_sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="caller-mic")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._queue:
            if not p.done.done():
                p.done.cancel()

    def enqueue(self, samples: npt.NDArray[np.int16], speech_len: int) -> asyncio.Future[Utterance]:
        if self._task is not None and self._task.done():
            self._task.result()  # surface the pump's failure
        fut: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(samples=samples, speech_len=speech_len, done=fut))
        self._wakeup.set()
        return fut

    def _next_frame(self) -> npt.NDArray[np.int16] | None:
        """The next frame's samples; None when idle and not continuous."""
        n = self._frame_len
        while self._queue:
            p = self._queue[0]
            now = time.time()
            if p.started_at is None:
                p.started_at = now
            if p.pos >= p.samples.size:
                self._queue.popleft()
                if not p.done.done():
                    p.done.set_result(
                        Utterance(
                            started_at=p.started_at,
                            speech_ended_at=p.speech_ended_at or now,
                            ended_at=now,
                            speech_seconds=p.speech_len / MIC_SAMPLE_RATE,
                        )
                    )
                continue
            chunk = p.samples[p.pos : p.pos + n]
            p.pos += chunk.size
            if p.speech_ended_at is None and p.pos >= p.speech_len:
                p.speech_ended_at = now
            if chunk.size < n:
                chunk = np.concatenate([chunk, np.zeros(n - chunk.size, dtype=np.int16)])
            return chunk
        return np.zeros(n, dtype=np.int16) if self._continuous else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            samples = self._next_frame()
            if samples is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                next_at = loop.time()
                continue
            frame = rtc.AudioFrame(
                data=samples.tobytes(),
                sample_rate=MIC_SAMPLE_RATE,
                num_channels=1,
                samples_per_channel=samples.size,
            )
            await self._source.capture_frame(frame)
            self.frames_sent += 1
            next_at += self._frame_s
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MIC_RESYNC_S:
                next_at = loop.time()


# ---------------------------------------------------------------------------------------------
# Caller
# ---------------------------------------------------------------------------------------------


def contains_words(text: str, phrase: str) -> bool:
    """Whether ``phrase``'s words appear consecutively in ``text`` (compared as
    ``localdev.wer.normalise`` words: case, punctuation and small numbers do not matter)."""
    hay, needle = normalise(text), normalise(phrase)
    if not needle:
        return True
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


class Caller:
    """One participant in a room: publishes a mic, records participants, transcripts and audio.

    Usage::

        async with Caller.join(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret,
                               room="r1", identity="user") as c:
            agent = await c.wait_for_agent(timeout=30)
            said = await c.say(samples, sample_rate=16_000)
            seg = await c.wait_for_transcript(role="user", contains="hello", timeout=20)
            span = await c.wait_for_speech(after=said.speech_ended_at, timeout=20)
    """

    def __init__(self, *, room: rtc.Room, identity: str) -> None:
        """Use ``Caller.join`` instead; this only wires the event handlers."""
        self.room = room
        self.identity = identity
        self.connected_at = 0.0
        self.connect_seconds = 0.0
        """Seconds from ``Room.connect`` call to connected."""
        self.mic_published_at: float | None = None
        self.participants: dict[str, ParticipantRecord] = {}
        self.segments: dict[str, TranscriptSegment] = {}
        self.audio: dict[str, RemoteAudio] = {}
        self._my_track_sids: set[str] = set()
        self._mic: _Microphone | None = None
        self._mic_source: rtc.AudioSource | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stream_seq = 0
        self._segment_seq: dict[str, int] = {}
        self.turn_records: list[dict[str, Any]] = []
        """The worker's ``turn_latency`` records as the room got them (PUBLISH_TURN_LATENCY)."""

        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("track_subscribed", self._on_track_subscribed)
        room.register_text_stream_handler(TOPIC_TRANSCRIPTION, self._on_transcription_stream)
        room.register_text_stream_handler(TURN_LATENCY_TOPIC, self._on_turn_latency_stream)

    # -- construction -------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def join(
        cls,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        room: str,
        identity: str,
        name: str | None = None,
        kind: Literal["standard", "agent"] = "standard",
        publish_mic: bool = True,
        continuous_mic: bool = True,
        frame_ms: int = DEFAULT_FRAME_MS,
    ) -> AsyncIterator[Caller]:
        """Connect to ``room`` as ``identity`` (and publish a mic track); disconnect on exit.

        Args:
            kind: ``"agent"`` to stand in for an agent participant (harness tests).
            publish_mic: publish a microphone track (48 kHz mono) fed by ``say``.
            continuous_mic: send digital silence between utterances, like a browser mic.
            frame_ms: capture frame size; browsers use 10 ms (20 ms also realistic).
        """
        token = create_token(
            api_key, api_secret, identity=identity, room=room, name=name, kind=kind
        )
        lk_room = rtc.Room()
        caller = cls(room=lk_room, identity=identity)
        t0 = time.time()
        await lk_room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))
        try:
            caller.connected_at = time.time()
            caller.connect_seconds = caller.connected_at - t0
            for p in lk_room.remote_participants.values():
                caller._record_participant(p, present_before_us=True)
                for pub in p.track_publications.values():
                    if pub.track is not None and pub.kind == rtc.TrackKind.KIND_AUDIO:
                        caller._on_track_subscribed(pub.track, pub, p)
            if publish_mic:
                await caller._publish_mic(frame_ms=frame_ms, continuous=continuous_mic)
            yield caller
        finally:
            await caller._aclose()

    async def _publish_mic(self, *, frame_ms: int, continuous: bool) -> None:
        source = rtc.AudioSource(MIC_SAMPLE_RATE, 1, queue_size_ms=MIC_QUEUE_MS)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        pub = await self.room.local_participant.publish_track(track, opts)
        self._my_track_sids.add(pub.sid)
        self.mic_published_at = time.time()
        self._mic_source = source
        self._mic = _Microphone(source=source, frame_ms=frame_ms, continuous=continuous)
        self._mic.start()

    @property
    def mic_track_sid(self) -> str | None:
        """SID of our published mic track (what the agent's user transcripts refer to)."""
        return next(iter(self._my_track_sids), None)

    async def _aclose(self) -> None:
        if self._mic is not None:
            await self._mic.aclose()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            self.room.unregister_text_stream_handler(TOPIC_TRANSCRIPTION)
        with contextlib.suppress(Exception):
            self.room.unregister_text_stream_handler(TURN_LATENCY_TOPIC)
        await self.room.disconnect()
        if self._mic_source is not None:
            await self._mic_source.aclose()

    # -- speaking -------------------------------------------------------------------------

    async def say(
        self,
        samples: npt.NDArray[np.int16],
        sample_rate: int,
        *,
        trailing_silence_s: float = 1.0,
    ) -> Utterance:
        """Speak ``samples`` (mono int16) into the mic in real time, then ``trailing_silence_s``.

        Returns when the last frame was sent, with wall-clock timing.
        """
        if self._mic is None:
            raise RuntimeError("this Caller did not publish a mic (publish_mic=False)")
        speech = to_mic_rate(samples, sample_rate)
        tail = np.zeros(round(trailing_silence_s * MIC_SAMPLE_RATE), dtype=np.int16)
        return await self._mic.enqueue(np.concatenate([speech, tail]), speech.size)

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """Wait until ``check()`` returns non-None (re-checked on every recorded event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed  # take it before checking: no lost wake-up
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; {self}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def wait_for_participant(
        self, *, identity: str | None = None, agent: bool = False, timeout: float = 30.0
    ) -> ParticipantRecord:
        """First participant matching ``identity`` (or any agent with ``agent=True``)."""

        def check() -> ParticipantRecord | None:
            for rec in self.participants.values():
                if (identity is None or rec.identity == identity) and (not agent or rec.is_agent):
                    return rec
            return None

        what = f"participant {identity!r}" if identity else "an agent participant"
        return await self.wait_for(check, timeout=timeout, what=what)

    async def wait_for_agent(self, *, timeout: float = 30.0) -> ParticipantRecord:
        """The first agent participant (``ParticipantKind.AGENT``) in the room."""
        return await self.wait_for_participant(agent=True, timeout=timeout)

    async def wait_for_transcript(
        self,
        *,
        role: Role = "user",
        contains: str | None = None,
        final: bool = True,
        after: float = 0.0,
        timeout: float = 30.0,
    ) -> TranscriptSegment:
        """First transcript segment of ``role`` whose text contains the words of ``contains``.

        With ``final`` only finished segments count. ``after`` ignores segments first seen
        earlier (wall clock).
        """

        def check() -> TranscriptSegment | None:
            for seg in self.segments.values():
                if seg.role != role or seg.first_at < after or (final and not seg.final):
                    continue
                if contains is None or contains_words(seg.text, contains):
                    return seg
            return None

        what = f"{'final ' if final else ''}{role} transcript" + (
            f" containing {contains!r}" if contains else ""
        )
        return await self.wait_for(check, timeout=timeout, what=what)

    async def wait_for_user_transcript(
        self, *, contains: str | None = None, timeout: float = 30.0, final: bool = True
    ) -> TranscriptSegment:
        return await self.wait_for_transcript(
            role="user", contains=contains, final=final, timeout=timeout
        )

    async def wait_for_agent_transcript(
        self, *, contains: str | None = None, timeout: float = 30.0, final: bool = True
    ) -> TranscriptSegment:
        return await self.wait_for_transcript(
            role="agent", contains=contains, final=final, timeout=timeout
        )

    def agent_speech(self, *, after: float = 0.0) -> list[SpeechSpan]:
        """Every stretch of agent speech (by RMS) that began arriving at or after ``after``."""
        return [s for a in self._audio_from(None, True) for s in a.speech_spans(after=after)]

    def _audio_from(self, identity: str | None, agent: bool) -> list[RemoteAudio]:
        out = []
        for ident, audio in self.audio.items():
            rec = self.participants.get(ident)
            if identity is not None and ident != identity:
                continue
            if agent and (rec is None or not rec.is_agent):
                continue
            out.append(audio)
        return out

    async def wait_for_speech(
        self,
        *,
        identity: str | None = None,
        agent: bool = False,
        after: float = 0.0,
        until_end: bool = False,
        timeout: float = 30.0,
    ) -> SpeechSpan:
        """First stretch of speech (by RMS) received from ``identity`` (or any agent with
        ``agent=True``, or anyone) arriving at or after ``after``.

        With ``until_end`` also wait for its end (``END_OF_SPEECH_SILENCE_S`` of quiet).
        """

        def check() -> SpeechSpan | None:
            found = [
                s
                for a in self._audio_from(identity, agent)
                for s in a.speech_spans(after=after)
                if not until_end or s.ended_at is not None
            ]
            return min(found, key=lambda s: s.started_at) if found else None

        who = identity or ("an agent" if agent else "anyone")
        return await self.wait_for(check, timeout=timeout, what=f"speech from {who}")

    async def wait_for_agent_audio(
        self, *, after: float = 0.0, until_end: bool = False, timeout: float = 30.0
    ) -> SpeechSpan:
        """First agent speech (by RMS) arriving after ``after``."""
        return await self.wait_for_speech(
            agent=True, after=after, until_end=until_end, timeout=timeout
        )

    async def wait_for_first_audio_frame(
        self, *, identity: str | None = None, timeout: float = 30.0
    ) -> float:
        """Arrival time of the first audio frame (speech or not) from ``identity``/anyone."""

        def check() -> float | None:
            times = [
                a.first_frame_at
                for a in self._audio_from(identity, False)
                if a.first_frame_at is not None
            ]
            return min(times) if times else None

        return await self.wait_for(
            check, timeout=timeout, what=f"audio from {identity or 'anyone'}"
        )

    # -- event handlers -------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("caller task %s failed: %r", task.get_name(), task.exception())

    def _record_participant(self, p: rtc.RemoteParticipant, *, present_before_us: bool) -> None:
        if p.identity not in self.participants:
            self.participants[p.identity] = ParticipantRecord(
                identity=p.identity,
                kind=int(p.kind),
                joined_at=time.time() if not present_before_us else self.connected_at,
                present_before_us=present_before_us,
            )
            self._notify()

    def _on_participant_connected(self, p: rtc.RemoteParticipant) -> None:
        self._record_participant(p, present_before_us=False)

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        rec = self.participants.get(p.identity)
        if rec is not None:
            rec.left_at = time.time()
            self._notify()

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        self._record_participant(participant, present_before_us=False)
        audio = self.audio.get(participant.identity)
        if audio is None:
            audio = RemoteAudio(
                participant_identity=participant.identity,
                sample_rate=MIC_SAMPLE_RATE,
                subscribed_at=time.time(),
            )
            self.audio[participant.identity] = audio
        self._spawn(self._read_audio(track, audio), f"caller-audio-{participant.identity}")
        self._notify()

    async def _read_audio(self, track: rtc.Track, audio: RemoteAudio) -> None:
        stream = rtc.AudioStream(track, sample_rate=MIC_SAMPLE_RATE, num_channels=1)
        try:
            async for ev in stream:
                now = time.time()
                frame = ev.frame
                data = np.frombuffer(frame.data, dtype=np.int16)
                rms = (
                    math.sqrt(float(np.mean(np.square(data, dtype=np.float64))))
                    if data.size
                    else 0.0
                )
                if audio.first_frame_at is None:
                    audio.first_frame_at = now
                audio.times.append(now)
                audio.rms.append(rms)
                audio.durations.append(frame.samples_per_channel / frame.sample_rate)
                audio.chunks.append(data.copy())
                self._notify()
        finally:
            await stream.aclose()

    def _on_transcription_stream(
        self, reader: rtc.TextStreamReader, participant_identity: str
    ) -> None:
        self._stream_seq += 1
        self._spawn(
            self._read_transcription(reader, participant_identity, self._stream_seq),
            f"caller-transcription-{reader.info.stream_id}",
        )

    def _on_turn_latency_stream(self, reader: rtc.TextStreamReader, _identity: str) -> None:
        async def read() -> None:
            record = json.loads(await reader.read_all())
            if isinstance(record, dict):
                self.turn_records.append(record)
                self._notify()

        self._spawn(read(), f"caller-turn-latency-{reader.info.stream_id}")

    def _role_of(self, participant_identity: str, track_id: str | None) -> Role:
        # The agent publishes the user's transcript too (sender_identity = the user, track id
        # = the user's mic), so a segment is the user's when it names our track or identity.
        if (track_id and track_id in self._my_track_sids) or participant_identity == self.identity:
            return "user"
        return "agent"

    async def _read_transcription(
        self, reader: rtc.TextStreamReader, participant_identity: str, seq: int
    ) -> None:
        attrs = dict(reader.info.attributes or {})
        seg_id = attrs.get(ATTR_SEGMENT_ID) or reader.info.stream_id
        track_id = attrs.get(ATTR_TRACK_ID)
        seg = self.segments.get(seg_id)
        if seg is None:
            seg = TranscriptSegment(
                segment_id=seg_id,
                role=self._role_of(participant_identity, track_id),
                participant_identity=participant_identity,
                track_id=track_id,
                first_at=time.time(),
            )
            self.segments[seg_id] = seg
        # User segments get one stream per update, read concurrently: a slow reader of an
        # older interim must not overwrite the text of a newer stream (in arrival order).
        self._segment_seq[seg_id] = max(self._segment_seq.get(seg_id, 0), seq)
        text = ""

        def update(final: bool) -> None:
            if self._segment_seq[seg_id] > seq:
                return
            now = time.time()
            seg.text = text
            seg.updated_at = now
            seg.updates += 1
            if final and not seg.final:
                seg.final = True
                seg.final_at = now
            self._notify()

        async for chunk in reader:
            text += chunk
            update(False)
        # End of stream: the closing attributes carry lk.transcription_final for delta streams;
        # non-delta streams had it on the header already.
        final_attrs = dict(reader.info.attributes or {})
        update(final_attrs.get(ATTR_FINAL) == "true")

    # -- reporting ------------------------------------------------------------------------

    def transcripts(self, role: Role | None = None) -> list[TranscriptSegment]:
        """Segments in order of first appearance."""
        segs = [s for s in self.segments.values() if role is None or s.role == role]
        return sorted(segs, key=lambda s: s.first_at)

    def __str__(self) -> str:
        parts = ", ".join(
            f"{r.identity}{'(agent)' if r.is_agent else ''}" for r in self.participants.values()
        )
        segs = "; ".join(
            f"{s.role}{'*' if s.final else ''}: {s.text!r}" for s in self.transcripts()
        )
        audio = ", ".join(
            f"{a.participant_identity}: {len(a.times)} frames, "
            f"max rms {max(a.rms, default=0.0):.0f}"
            for a in self.audio.values()
        )
        return (
            f"Caller({self.identity}) participants=[{parts}] transcripts=[{segs}] audio=[{audio}]"
        )
