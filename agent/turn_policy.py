"""``TURN_DETECTION=signals``: end the user's turn on every signal the stack has.

LiveKit's audio end-of-turn model alone waited its 2.5 s maximum on 3 of 5 complete human
questions (probabilities 0.18-0.36 on "What are you talking about?", "Do you remember the
day ... ditch?") and said "finished" (0.69-0.79) at the sentence pauses of a passage read
aloud (``bench/turn_bench.py``, issue 9). Whisper's punctuation separates both cases where
the audio does not, so this detector is LiveKit's model with the transcript as a second
opinion:

1. At 200 ms of silence LiveKit asks the detector for a prediction; the audio model runs.
2. If Baseten's final for the speech that just ended has not arrived, the STT is flushed
   at once (``manual_flush``: the server's remaining VAD silence is sent immediately), so
   the final comes after inference instead of after the server's 300 ms of real-time
   silence, while the audio model runs.
3. The final's ending decides (``classify_ending``):

   * ``?`` / ``!``: a question or exclamation ends the turn now;
   * a trailing comma, dash or connective ("and", "so", "because", ...): the user is
     mid-sentence; the turn waits LiveKit's maximum delay;
   * ``.``: ambiguous (a reader pauses 0.4-0.8 s between sentences of one passage), so the
     turn ends once the silence reaches :data:`STATEMENT_SILENCE_S`, or at once if the
     audio model is very sure (:data:`SURE_PROBABILITY`);
   * no final in time (noise, a cough): the audio model's probability alone.

The verdict is handed to LiveKit as the prediction's probability (at/above the language's
threshold: commit after ``min_delay``; below: wait ``max_delay``), so LiveKit still owns
the commit, interruption and preemptive generation. Each verdict is reported through
``on_decision`` for the ``turn_latency`` log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from livekit import rtc
from livekit.agents import inference
from livekit.agents.inference.eot.base import (
    MIN_SILENCE_DURATION_MS,
    _BaseStreamingTurnDetectorStream,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.turn import TurnDetectionEvent

from agent.logs import get_logger
from plugins.baseten_stt import STT, TranscriptLatency

log = get_logger("agent.turn_policy")

#: A sentence-final "." is only trusted after this much silence. The longest pause inside
#: the 28.9 s passage of ``localdev.human_speech.TWO_CITIES_OPENING`` is 0.83 s (Silero,
#: 32 ms windows); complete statements end with ~0.2-0.4 s of the clip's own silence.
STATEMENT_SILENCE_S: Final = 0.9
#: Audio probability above which a "." ends the turn without the statement wait. Set above
#: everything the passage's pauses produced (0.69-0.79), so only a clearer ending than a
#: reader's pause qualifies.
SURE_PROBABILITY: Final = 0.9
#: How long after the prediction to wait for Baseten's final before deciding on audio
#: alone. Flushed, a final takes one inference (tens of ms on a GPU, ~0.3 s for CPU
#: Whisper); 1 s covers a slow deployment without leaving the user hanging.
FINAL_WAIT_S: Final = 1.0
#: A final belongs to the speech that just ended if its last word ended at most this long
#: before the silence LiveKit measured began (word times vs. VAD: ~0.1-0.3 s apart).
FINAL_MATCH_S: Final = 0.5
#: Probabilities handed to LiveKit for a verdict: well clear of any language threshold.
END: Final = 0.99
CONTINUE: Final = 0.01

#: Words after which an English speaker is mid-sentence (conjunctions, fillers,
#: prepositions, articles): "I want to go and", "so", "um", "the".
CONNECTIVES: Final = frozenset(
    (
        "and",
        "or",
        "but",
        "so",
        "because",
        "then",
        "if",
        "when",
        "while",
        "that",
        "which",
        "who",
        "than",
        "as",
        "to",
        "of",
        "for",
        "with",
        "from",
        "in",
        "on",
        "at",
        "by",
        "about",
        "into",
        "like",
        "the",
        "a",
        "an",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "well",
        "also",
        "plus",
    )
)
_WORD = re.compile(r"[A-Za-z']+")


class Ending(enum.Enum):
    QUESTION = "question"  # ends with ? or !
    STATEMENT = "statement"  # ends with .
    CONTINUATION = "continuation"  # trailing comma/dash/connective, or no punctuation
    NONE = "none"  # no words


def classify_ending(text: str) -> Ending:
    """How a Whisper final ends: question, statement, or a sentence still going on."""
    t = text.strip().rstrip("\"')]}»”’ ")
    if not t:
        return Ending.NONE
    if t.endswith(("?", "!")):
        return Ending.QUESTION
    if t.endswith(("...", "…")):
        return Ending.CONTINUATION  # a trailing-off sentence
    if t.endswith("."):
        words = _WORD.findall(t)
        # "Then I went to the." is a cut, not an ending
        if words and words[-1].lower() in CONNECTIVES:
            return Ending.CONTINUATION
        return Ending.STATEMENT
    return Ending.CONTINUATION  # , ; : - or no punctuation at all


@dataclass(frozen=True)
class TurnDecision:
    """One verdict at a pause: what decided it and how long the silence was held."""

    #: question | statement | statement_sure | continuation | no_final | audio (a final
    #: without words: the audio model alone) (signals);
    #: audio_end | audio_unlikely (LiveKit's model alone: commit now / wait max_delay)
    signal: str
    eou_probability: float | None  # LiveKit's audio model
    probability: float  # what LiveKit was given
    silence_s: float  # silence when the verdict was handed over
    decided_at: float  # wall clock
    ending: str | None = None


def decide(
    ending: Ending,
    audio_probability: float | None,
    *,
    statement_silence_s: float = STATEMENT_SILENCE_S,
) -> tuple[str, float, float]:
    """(signal, probability for LiveKit, silence to hold before answering)."""
    p = audio_probability
    if ending is Ending.QUESTION:
        return "question", END, 0.0
    if ending is Ending.CONTINUATION:
        return "continuation", CONTINUE, 0.0
    if ending is Ending.STATEMENT:
        if p is not None and p >= SURE_PROBABILITY:
            return "statement_sure", END, 0.0
        return "statement", END, statement_silence_s
    # no final: the audio model alone (LiveKit's threshold applies to it)
    return "audio", p if p is not None else CONTINUE, 0.0


class _RecentFinals:
    """Baseten finals as (speech end wall time, text), newest last, from the STT's own
    ``transcript_latency`` event (it carries where the speech ended, unlike LiveKit's)."""

    def __init__(self) -> None:
        self._items: list[tuple[float, float, str]] = []  # (speech end, received, text)
        self._changed = asyncio.Event()

    def add(self, ev: TranscriptLatency) -> None:
        self._items.append((ev.speech_end_wall_time, ev.received_wall_time, ev.text))
        del self._items[:-8]
        self._changed.set()
        self._changed = asyncio.Event()

    def ending_after(self, t: float) -> str | None:
        """Text of the newest final whose speech ended at or after ``t``."""
        for end, _, text in reversed(self._items):
            if end >= t:
                return text
        return None

    async def wait_after(self, t: float, within_s: float) -> str | None:
        deadline = time.monotonic() + within_s
        while (text := self.ending_after(t)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return text


class SignalTurnDetector(inference.TurnDetector):
    """LiveKit's local end-of-turn model with Baseten's final and its punctuation.

    A drop-in ``turn_detection=`` for ``AgentSession``: LiveKit sees a streaming turn
    detector (same model, thresholds and metrics); only each prediction's probability,
    and when it is delivered, come from :func:`decide`.
    """

    def __init__(
        self,
        *,
        stt: STT,
        version: str = "v1-mini",
        use_transcript: bool = True,
        flush_on_prediction: bool = True,
        statement_silence_s: float = STATEMENT_SILENCE_S,
    ) -> None:
        """``stt``: the session's Baseten STT (its finals and flush). ``use_transcript``
        False makes this LiveKit's model unchanged, with its verdicts still reported (how
        ``TURN_DETECTION=model`` logs its probabilities). ``flush_on_prediction`` flushes
        the STT when the prediction finds no final yet. ``statement_silence_s``: the
        silence a final ending in "." must reach before the turn ends. Verdicts go to
        ``on_decision`` listeners."""
        super().__init__(version=version)  # type: ignore[arg-type]
        self._stt = stt
        self._use_transcript = use_transcript
        self._flush = flush_on_prediction
        self.statement_silence_s = statement_silence_s
        self._listeners: list[Callable[[TurnDecision], None]] = []
        self._finals = _RecentFinals()
        stt.on("transcript_latency", self._finals.add)

    # LiveKit only needs its streaming-detector *protocol* (voice/turn.py), which the
    # wrapper implements; the base class annotates its concrete stream class.
    def stream(  # type: ignore[override]
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> SignalTurnDetectorStream:
        return SignalTurnDetectorStream(self, super().stream(conn_options=conn_options))

    def on_decision(self, listener: Callable[[TurnDecision], None]) -> None:
        """Call ``listener`` with every verdict (the turn_latency line's source)."""
        self._listeners.append(listener)

    def _report(self, decision: TurnDecision) -> None:
        for listener in self._listeners:
            listener(decision)


class SignalTurnDetectorStream:
    """LiveKit's streaming-detector protocol over the model's own stream; only
    ``predict`` differs: its future resolves with the combined verdict."""

    def __init__(
        self, detector: SignalTurnDetector, inner: _BaseStreamingTurnDetectorStream
    ) -> None:
        self._detector = detector
        self._inner = inner
        self._task: asyncio.Task[None] | None = None
        self._fut: asyncio.Future[TurnDetectionEvent] | None = None

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    @property
    def is_fallback(self) -> bool:
        return self._inner.is_fallback

    @property
    def prediction_timeout(self) -> float:
        # LiveKit commits without a prediction after this; ours may wait for the final and
        # hold a statement's silence, so give it room beyond the model's own 1 s.
        return self._inner.prediction_timeout + FINAL_WAIT_S + self._detector.statement_silence_s

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return await self._inner.unlikely_threshold(language)

    async def backchannel_threshold(self, language: LanguageCode | None) -> float | None:
        return await self._inner.backchannel_threshold(language)

    async def supports_language(self, language: LanguageCode | None) -> bool:
        return await self._inner.supports_language(language)

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_audio(frame)

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        self._cancel_own()
        await self._inner.aclose()

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self._cancel_own()
        # LiveKit asks at MIN_SILENCE_DURATION_MS of silence: that is where it began
        silence_began = time.time() - MIN_SILENCE_DURATION_MS / 1000
        audio = self._inner.predict()
        d = self._detector
        if (
            d._use_transcript
            and d._flush
            and d._finals.ending_after(silence_began - FINAL_MATCH_S) is None
        ):
            # Ask for the final now, while the audio model runs: the server's own VAD would
            # wait 300 ms of real silence, and the model's CPU inference as long again.
            d._stt.flush_streams()
        fut: asyncio.Future[TurnDetectionEvent] = asyncio.get_running_loop().create_future()
        self._fut = fut
        self._task = asyncio.create_task(self._verdict(audio, fut, silence_began))
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        self._cancel_own()
        self._inner.cancel_inference(timed_out=timed_out)

    def flush(self, reason: str | None = None) -> None:
        self._cancel_own()
        self._inner.flush(reason=reason)

    def _cancel_own(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._fut is not None and not self._fut.done():
            # as LiveKit's own stream does for a superseded request
            self._fut.set_result(
                TurnDetectionEvent(
                    type="eot_prediction",
                    end_of_turn_probability=0.0,
                    last_speaking_time=time.time(),
                )
            )
        self._fut = None

    async def _verdict(
        self,
        audio: asyncio.Future[TurnDetectionEvent],
        fut: asyncio.Future[TurnDetectionEvent],
        silence_began: float,
    ) -> None:
        d = self._detector
        try:
            ev = await asyncio.shield(audio)
        except asyncio.CancelledError:
            raise
        except Exception:
            ev = None
        p = ev.end_of_turn_probability if ev is not None else None
        if not d._use_transcript:
            threshold = await self._inner.unlikely_threshold(None)
            below = p is None or (threshold is not None and p < threshold)
            decision = TurnDecision(
                signal="audio_unlikely" if below else "audio_end",
                eou_probability=p,
                probability=p if p is not None else 0.0,
                silence_s=round(time.time() - silence_began, 3),
                decided_at=time.time(),
            )
            d._report(decision)
            if not fut.done() and ev is not None:
                fut.set_result(ev)
            return
        since = silence_began - FINAL_MATCH_S
        text = d._finals.ending_after(since)
        if text is None:
            text = await d._finals.wait_after(since, FINAL_WAIT_S)
        ending = classify_ending(text) if text is not None else Ending.NONE
        signal, probability, hold_s = decide(ending, p, statement_silence_s=d.statement_silence_s)
        if text is None:
            signal = "no_final"
        wait = silence_began + hold_s - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        log.debug(
            "turn verdict",
            signal=signal,
            eou_probability=p,
            silence_s=round(time.time() - silence_began, 3),
            hold_s=hold_s,
        )
        d._report(
            TurnDecision(
                signal=signal,
                eou_probability=p,
                probability=probability,
                silence_s=round(time.time() - silence_began, 3),
                decided_at=time.time(),
                ending=ending.value,
            )
        )
        if not fut.done():
            fut.set_result(
                TurnDetectionEvent(
                    type="eot_prediction",
                    end_of_turn_probability=probability,
                    last_speaking_time=ev.last_speaking_time if ev is not None else silence_began,
                    detection_delay=ev.detection_delay if ev is not None else None,
                    inference_duration=ev.inference_duration if ev is not None else None,
                )
            )
