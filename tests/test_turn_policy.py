"""The ``signals`` turn policy's pure parts: how a final ends, and the verdict it gives.

The detector's timing (flush, waiting for the final, holding a statement's silence) is
exercised end to end by ``bench/turn_bench.py`` and the E2E tests on human speech.
"""

from __future__ import annotations

import pytest

from agent.turn_policy import (
    CONTINUE,
    END,
    STATEMENT_SILENCE_S,
    SURE_PROBABILITY,
    Ending,
    classify_ending,
    decide,
)


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
