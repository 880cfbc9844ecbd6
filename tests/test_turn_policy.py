"""The ``signals`` turn policy's pure parts: how a final ends, and the verdict it gives.

Then the detector's own sequencing over a stand-in for LiveKit's model stream: it flushes
the STT when the final is missing, waits for it, holds a statement's silence, and gives up
a pause the user talks through. Its effect on real calls is measured by
``bench/turn_bench.py`` and exercised by the E2E tests on human speech.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from livekit.agents.voice.turn import TurnDetectionEvent

from agent.turn_policy import (
    CONTINUE,
    END,
    STATEMENT_SILENCE_S,
    SURE_PROBABILITY,
    Ending,
    SignalTurnDetector,
    SignalTurnDetectorStream,
    TurnDecision,
    classify_ending,
    decide,
)
from plugins.baseten_stt import STT, TranscriptLatency


@pytest.mark.parametrize(
    ("text", "ending"),
    [
        ("Do you hear me?", Ending.QUESTION),
        ("What are you talking about? ", Ending.QUESTION),
        ('He said "stop!"', Ending.QUESTION),
        ("The Quick Brown Fox jumps over the lazy dog.", Ending.STATEMENT),
        ("It was the best of times, it was the worst of times.", Ending.STATEMENT),
        ("It was the best of times,", Ending.CONTINUATION),
        ("I want to go and", Ending.CONTINUATION),
        ("Then I went to the.", Ending.CONTINUATION),  # Whisper's full stop on a cut
        ("so I was thinking...", Ending.CONTINUATION),
        ("we had everything before us; ", Ending.CONTINUATION),
        ("turn on the lights", Ending.CONTINUATION),  # no punctuation: not finished
        ("   ", Ending.NONE),
    ],
)
def test_classify_ending(text: str, ending: Ending) -> None:
    assert classify_ending(text) is ending


def test_question_ends_the_turn_whatever_the_audio_model_says() -> None:
    # the local model gave 0.18 to "What are you talking about?" (issue 9)
    assert decide(Ending.QUESTION, 0.18) == ("question", END, 0.0)


def test_continuation_waits_even_when_the_audio_model_is_sure() -> None:
    assert decide(Ending.CONTINUATION, 0.95) == ("continuation", CONTINUE, 0.0)


def test_statement_holds_the_silence_unless_the_audio_model_is_sure() -> None:
    # the passage's sentence pauses scored 0.69-0.79: they must wait
    assert decide(Ending.STATEMENT, 0.79) == ("statement", END, STATEMENT_SILENCE_S)
    assert decide(Ending.STATEMENT, None) == ("statement", END, STATEMENT_SILENCE_S)
    assert decide(Ending.STATEMENT, SURE_PROBABILITY) == ("statement_sure", END, 0.0)


def test_without_a_final_the_audio_model_decides() -> None:
    assert decide(Ending.NONE, 0.42) == ("audio", 0.42, 0.0)
    assert decide(Ending.NONE, None)[1] == CONTINUE


# --------------------------------------------------------------------------- the detector
class _ModelStream:
    """Stands in for LiveKit's local-model stream: predictions resolve with ``p``."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.cancelled = 0
        self.prediction_timeout = 1.0

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        fut: asyncio.Future[TurnDetectionEvent] = asyncio.get_running_loop().create_future()
        fut.set_result(
            TurnDetectionEvent(
                type="eot_prediction", end_of_turn_probability=self.p, last_speaking_time=0.0
            )
        )
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        self.cancelled += 1

    async def unlikely_threshold(self, language: object) -> float:
        return 0.36


def _detector(**kw: Any) -> tuple[SignalTurnDetector, list[str], list[TurnDecision]]:
    stt = STT(api_key="k", model_endpoint="ws://127.0.0.1:9/environments/production/websocket")
    flushes: list[str] = []
    stt.flush_streams = lambda: flushes.append("flush") or 0  # type: ignore[method-assign]
    detector = SignalTurnDetector(stt=stt, **kw)
    decisions: list[TurnDecision] = []
    detector.on_decision(decisions.append)
    return detector, flushes, decisions


def _final(detector: SignalTurnDetector, text: str, *, speech_end: float) -> None:
    detector._stt.emit(
        "transcript_latency",
        TranscriptLatency(
            request_id="r",
            latency_s=0.1,
            speech_end_wall_time=speech_end,
            received_wall_time=time.time(),
            audio_duration_s=1.0,
            reconnects_so_far=0,
            text=text,
        ),
    )


async def test_a_question_is_answered_as_soon_as_its_final_arrives() -> None:
    detector, flushes, decisions = _detector()
    stream = SignalTurnDetectorStream(detector, _ModelStream(0.18))  # type: ignore[arg-type]
    fut = stream.predict()
    assert flushes == ["flush"]  # no final yet: the STT is asked for it at once
    await asyncio.sleep(0.05)
    assert not fut.done()  # waiting for Baseten's final
    _final(detector, "What are you talking about?", speech_end=time.time() - 0.2)
    ev = await asyncio.wait_for(fut, 1.0)
    assert ev.end_of_turn_probability == END
    assert decisions[-1].signal == "question" and decisions[-1].eou_probability == 0.18


async def test_a_statement_holds_until_its_silence_and_a_resumption_cancels_it() -> None:
    detector, flushes, decisions = _detector(statement_silence_s=0.5)
    _final(detector, "It was the age of foolishness.", speech_end=time.time())
    model = _ModelStream(0.79)
    stream = SignalTurnDetectorStream(detector, model)  # type: ignore[arg-type]
    fut = stream.predict()
    assert flushes == []  # the final is already here
    await asyncio.sleep(0.1)  # silence ~0.3 s of the 0.5 s
    assert not fut.done()
    stream.cancel_inference()  # the reader went on (LiveKit's VAD heard speech)
    assert (await fut).end_of_turn_probability == 0.0
    assert model.cancelled == 1
    await asyncio.sleep(0.4)
    assert decisions == []  # no verdict for a pause the user talked through

    fut = stream.predict()  # the next pause, this time long enough
    ev = await asyncio.wait_for(fut, 1.0)
    assert ev.end_of_turn_probability == END
    assert decisions[-1].signal == "statement" and decisions[-1].silence_s >= 0.5


async def test_a_trailing_comma_makes_livekit_wait_its_maximum() -> None:
    detector, _, decisions = _detector()
    _final(detector, "It was the best of times,", speech_end=time.time())
    stream = SignalTurnDetectorStream(detector, _ModelStream(0.95))  # type: ignore[arg-type]
    ev = await asyncio.wait_for(stream.predict(), 1.0)
    assert ev.end_of_turn_probability == CONTINUE
    assert decisions[-1].signal == "continuation"


async def test_model_mode_passes_the_audio_probability_through() -> None:
    detector, flushes, decisions = _detector(use_transcript=False)
    stream = SignalTurnDetectorStream(detector, _ModelStream(0.2))  # type: ignore[arg-type]
    ev = await asyncio.wait_for(stream.predict(), 1.0)
    assert ev.end_of_turn_probability == 0.2 and flushes == []
    assert decisions[-1].signal == "audio_unlikely"
