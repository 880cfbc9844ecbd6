"""Room-less session IO with real audio: a paced microphone and a capturing speaker.

An ``AgentSession`` started without ``room=`` keeps whatever ``session.input.audio`` /
``session.output.audio`` were assigned before ``start()`` (``agent_session.py`` ``start``),
so tests, demos and benchmarks can run the real pipeline (VAD, STT, LLM, TTS, turn taking)
on loopback services without a LiveKit server:

    mic = PacedAudioInput()
    speaker = CapturingAudioOutput()
    session.input.audio, session.output.audio = mic, speaker
    await session.start(agent)
    turn = mic.push_speech(synthesize("book a table for two"))
    await speaker.wait_for_segments(1)

:class:`PacedAudioInput` behaves like a microphone: frames come at real-time pace, and
when nothing is queued it sends digital silence (a real mic never stops, and the VAD needs
silence to end a turn). It records, per scripted utterance, the wall-clock time its first
and last audible sample was delivered: the ground truth for "end of user speech".

:class:`CapturingAudioOutput` is a speaker with a virtual playout clock (the pattern of
LiveKit's test ``FakeAudioOutput``): playback "starts" when the first frame of a segment
arrives and "finishes" ``duration`` seconds later, and it reports both through
``on_playback_started`` / ``on_playback_finished``; without them ``wait_for_playout`` hangs
and no ``e2e_latency`` is computed. It keeps the audio and first-audio times.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents.voice import io

from localdev.speech import read_wav_pcm16

# 10 ms frames: what WebRTC/LiveKit rooms deliver, so the VAD and STT see the same framing
# as in production (the brief allows 10-20 ms).
DEFAULT_FRAME_MS = 10

# "Audible" for ground-truth speech bounds: 1% of full scale (-40 dBFS). espeak-ng output
# peaks near full scale and its inter-word gaps are digital zeros, so this finds the first
# and last phoneme without counting dither or resampling ringing.
AUDIBLE_THRESHOLD = 328


def speech_bounds(
    samples: npt.NDArray[np.int16], *, threshold: int = AUDIBLE_THRESHOLD
) -> tuple[int, int] | None:
    """(first, last+1) sample index above ``threshold``, or None for silence."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return None
    return int(loud[0]), int(loud[-1]) + 1


@dataclass
class SpokenTurn:
    """One scripted utterance and when it was actually delivered (wall clock)."""

    duration_s: float
    started_at: float | None = None  # first audible sample delivered
    ended_at: float | None = None  # last audible sample delivered: the end of user speech
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Queued:
    samples: npt.NDArray[np.int16]
    turn: SpokenTurn | None
    speech_start: int  # index of first audible sample within samples (or -1)
    speech_end: int  # index after the last audible sample (or -1)
    pos: int = 0


class PacedAudioInput(io.AudioInput):
    """A microphone fed from int16 samples or WAV files, paced in real time."""

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        frame_ms: int = DEFAULT_FRAME_MS,
        trailing_silence_s: float = 1.5,
        label: str = "PacedAudioInput",
    ) -> None:
        """Args:
        sample_rate: rate of the frames handed to the session (and of pushed samples).
        frame_ms: frame length; 10-20 ms like a real audio track.
        trailing_silence_s: silence appended after each utterance by default. 1.5 s is
            longer than the session's endpointing max (3 s default is only reached with
            a turn model; with ``"vad"``/``"stt"`` detection ~0.5 s suffices) plus the
            Silero VAD's min_silence (0.55 s), so every utterance closes its turn.
        """
        super().__init__(label=label)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.trailing_silence_s = trailing_silence_s
        self.turns: list[SpokenTurn] = []
        self._queue: deque[_Queued] = deque()
        self._closed = False
        self._t0: float | None = None  # loop time of stream start
        self._frames_sent = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- scripting ----------------------------------------------------------------------

    def push_speech(
        self,
        samples: npt.NDArray[np.int16],
        *,
        silence_before_s: float = 0.0,
        trailing_silence_s: float | None = None,
    ) -> SpokenTurn:
        """Queue one user utterance (after anything already queued); returns its record,
        whose ``done`` event is set once the utterance and its trailing silence played."""
        tail = self.trailing_silence_s if trailing_silence_s is None else trailing_silence_s
        pre = np.zeros(round(silence_before_s * self.sample_rate), dtype=np.int16)
        post = np.zeros(round(tail * self.sample_rate), dtype=np.int16)
        audio = np.concatenate([pre, np.asarray(samples, dtype=np.int16), post])
        bounds = speech_bounds(audio)
        turn = SpokenTurn(duration_s=len(samples) / self.sample_rate)
        self.turns.append(turn)
        start, end = bounds if bounds is not None else (-1, -1)
        self._queue.append(_Queued(audio, turn, start, end))
        self._idle.clear()
        return turn

    def push_wav(self, path: str | Path, **kwargs: float) -> SpokenTurn:
        """Queue a mono 16-bit WAV, resampled to ``sample_rate`` if needed."""
        samples, rate = read_wav_pcm16(path)
        if rate != self.sample_rate:
            samples = _resample(samples, rate, self.sample_rate)
        return self.push_speech(samples, **kwargs)

    def push_silence(self, seconds: float) -> None:
        """Queue silence (a pause between scripted turns)."""
        audio = np.zeros(round(seconds * self.sample_rate), dtype=np.int16)
        self._queue.append(_Queued(audio, None, -1, -1))
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Wait until every queued sample has been delivered."""
        await self._idle.wait()

    def close(self) -> None:
        """End the stream: the session sees the input finish after the queue drains."""
        self._closed = True

    # -- AudioInput ---------------------------------------------------------------------

    async def __anext__(self) -> rtc.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        if self._closed and not self._queue:
            raise StopAsyncIteration
        # A mic delivers a frame once it has been recorded: frame n is due at the end of
        # its own span. Sleeping to an absolute schedule (not "sleep frame duration") keeps
        # the stream from drifting when the loop is late.
        self._frames_sent += 1
        due = self._t0 + self._frames_sent * self.frame_samples / self.sample_rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        data = self._take(self.frame_samples, delivered_at=time.time())
        return rtc.AudioFrame(
            data=data.tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self.frame_samples,
        )

    def _take(self, n: int, *, delivered_at: float) -> npt.NDArray[np.int16]:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        frame_end_wall = delivered_at
        while filled < n and self._queue:
            q = self._queue[0]
            k = min(n - filled, len(q.samples) - q.pos)
            out[filled : filled + k] = q.samples[q.pos : q.pos + k]
            if q.turn is not None:
                # wall time of sample i of this frame = delivery time - (n - i) / rate
                def wall(i: int) -> float:
                    return frame_end_wall - (n - i) / self.sample_rate

                lo, hi = q.pos, q.pos + k
                if q.turn.started_at is None and lo <= q.speech_start < hi:
                    q.turn.started_at = wall(filled + q.speech_start - lo)
                if lo < q.speech_end <= hi:
                    q.turn.ended_at = wall(filled + q.speech_end - lo)
            q.pos += k
            filled += k
            if q.pos >= len(q.samples):
                self._queue.popleft()
                if q.turn is not None:
                    q.turn.done.set()
        if not self._queue:
            self._idle.set()
        return out


def _resample(samples: npt.NDArray[np.int16], src: int, dst: int) -> npt.NDArray[np.int16]:
    resampler = rtc.AudioResampler(src, dst, num_channels=1)
    frames = resampler.push(
        rtc.AudioFrame(
            data=samples.tobytes(),
            sample_rate=src,
            num_channels=1,
            samples_per_channel=len(samples),
        )
    )
    frames += resampler.flush()
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


@dataclass
class PlayedSegment:
    """One agent speech segment as the virtual speaker played it."""

    started_at: float  # wall clock of the first frame = playback started
    frames: list[rtc.AudioFrame] = field(default_factory=list)
    duration_s: float = 0.0
    finished_at: float | None = None
    interrupted: bool = False
    playback_position_s: float | None = None


class CapturingAudioOutput(io.AudioOutput):
    """A speaker with a virtual playout clock that keeps what it was given."""

    def __init__(self, *, sample_rate: int | None = None, label: str = "CapturingAudioOutput"):
        """``sample_rate=None`` accepts the TTS's own rate (no resampling in the session)."""
        super().__init__(
            label=label,
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self.segments: list[PlayedSegment] = []
        self._current: PlayedSegment | None = None
        self._finish_handle: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()

    @property
    def first_audio_times(self) -> list[float]:
        """Wall-clock time each segment's first audio was played."""
        return [s.started_at for s in self.segments]

    def audio(self) -> tuple[npt.NDArray[np.int16], int | None]:
        """All captured audio (mono int16) and its sample rate."""
        frames = [f for s in self.segments for f in s.frames]
        if not frames:
            return np.zeros(0, dtype=np.int16), None
        return (
            np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames]),
            frames[0].sample_rate,
        )

    async def wait_for_segments(self, n: int, *, finished: bool = True) -> None:
        """Wait until ``n`` segments have started (and, by default, finished playing)."""

        def ready() -> bool:
            done = [s for s in self.segments if s.finished_at is not None or not finished]
            return len(done) >= n

        while not ready():
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    # -- AudioOutput ----------------------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._current is None:
            self._current = PlayedSegment(started_at=time.time())
            self.segments.append(self._current)
            self.on_playback_started(created_at=self._current.started_at)
            self._notify()
        self._current.frames.append(frame)
        self._current.duration_s += frame.duration

    def flush(self) -> None:
        super().flush()
        seg = self._current
        if seg is None:
            return
        # the virtual speaker plays in real time from the first frame: it finishes when the
        # pushed duration has elapsed (or now, if the audio arrived slower than real time)
        delay = max(0.0, seg.duration_s - (time.time() - seg.started_at))
        if self._finish_handle is not None:
            self._finish_handle.cancel()
        self._finish_handle = asyncio.get_running_loop().call_later(
            delay, self._finish, seg, False, seg.duration_s
        )

    def clear_buffer(self) -> None:
        seg = self._current
        if seg is None:
            return
        if self._finish_handle is not None:
            self._finish_handle.cancel()
            self._finish_handle = None
        played = min(seg.duration_s, time.time() - seg.started_at)
        self._finish(seg, True, played)

    def _finish(self, seg: PlayedSegment, interrupted: bool, position: float) -> None:
        if seg.finished_at is not None:
            return
        seg.finished_at = time.time()
        seg.interrupted = interrupted
        seg.playback_position_s = position
        if self._current is seg:
            self._current = None
        self._finish_handle = None
        self.on_playback_finished(
            playback_position=position, interrupted=interrupted, synchronized_transcript=None
        )
        self._notify()
