"""``to_speech_data`` (one pass over segments and words) against the per-field rules."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.agents.types import NOT_GIVEN

from plugins.baseten_stt.protocol import Segment, TranscriptionResult, Word
from plugins.baseten_stt.transcript import confidence_of, speech_span, to_speech_data

times = st.one_of(
    st.floats(min_value=0, max_value=40),
    st.sampled_from([-1.0, math.nan, math.inf]),
)
probs = st.one_of(st.none(), st.floats(min_value=0, max_value=1), st.just(math.nan))
texts = st.sampled_from(["", "  ", "hello", " book ", "two."])
words = st.builds(Word, start_time=times, end_time=times, word=texts, prob=probs)
segments = st.builds(
    Segment,
    start_time=times,
    end_time=times,
    text=texts,
    log_prob=st.one_of(st.none(), st.floats(min_value=-5, max_value=0), st.just(-math.inf)),
    word_timestamps=st.lists(words, max_size=4),
    language_code=st.sampled_from([None, "en", "de"]),
)
results = st.builds(
    TranscriptionResult,
    segments=st.lists(segments, max_size=4),
    language_code=st.sampled_from([None, "", "auto", "fr"]),
    is_final=st.booleans(),
)


def _f(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else 0.0


@settings(max_examples=300)
@given(results, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_speech_data_matches_span_confidence_and_word_rules(
    result: TranscriptionResult, base_s: float, offset_s: float
) -> None:
    data = to_speech_data(result, base_s=base_s, offset_s=offset_s, fallback_language="en")
    shift = base_s + offset_s
    span = speech_span(result)
    start, end = span if span is not None else (0.0, 0.0)
    assert data.start_time == start + shift and data.end_time == end + shift
    assert data.confidence == confidence_of(result)
    assert data.text == result.text
    expected: list[tuple[str, float, float, object]] = []
    for seg in result.segments:
        if not seg.text.strip():
            continue
        if seg.word_timestamps:
            for w in seg.word_timestamps:
                if w.word.strip():
                    ok = w.prob is not None and math.isfinite(w.prob)
                    expected.append(
                        (
                            w.word.strip(),
                            _f(w.start_time) + shift,
                            _f(w.end_time) + shift,
                            w.prob if ok else NOT_GIVEN,
                        )
                    )
        else:
            expected.append(
                (seg.text.strip(), _f(seg.start_time) + shift, _f(seg.end_time) + shift, NOT_GIVEN)
            )
    got = [(str(w), w.start_time, w.end_time, w.confidence) for w in data.words or []]
    assert got == expected
    assert all(w.start_time_offset == offset_s for w in data.words or [])
    lang = result.language_code or next(
        (s.language_code for s in result.segments if s.language_code), None
    )
    assert data.language == (lang if lang and lang != "auto" else "en")
