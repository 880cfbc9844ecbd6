"""Server transcription results -> LiveKit ``SpeechData`` on the stream's timeline."""

from __future__ import annotations

import math

from livekit.agents import LanguageCode, stt
from livekit.agents.types import NOT_GIVEN, TimedString

from .protocol import TranscriptionResult


def confidence_of(result: TranscriptionResult) -> float:
    """Mean word probability, else ``exp(mean segment log_prob)``, else 0.

    The server sends no ``confidence`` field (the official plugin reads one and always
    reports 0.0); these are the numbers it does send.
    """
    probs = [
        w.prob
        for s in result.segments
        for w in s.word_timestamps
        if w.prob is not None and math.isfinite(w.prob)
    ]
    if probs:
        return min(1.0, max(0.0, sum(probs) / len(probs)))
    logps = [
        s.log_prob for s in result.segments if s.log_prob is not None and math.isfinite(s.log_prob)
    ]
    if logps:
        return min(1.0, max(0.0, math.exp(sum(logps) / len(logps))))
    return 0.0


def _finite(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else 0.0


def speech_span(result: TranscriptionResult) -> tuple[float, float] | None:
    """(start, end) of the recognised speech in connection-relative seconds."""
    starts: list[float] = []
    ends: list[float] = []
    for s in result.segments:
        if not s.text.strip():
            continue
        if s.word_timestamps:
            starts += [_finite(w.start_time) for w in s.word_timestamps]
            ends += [_finite(w.end_time) for w in s.word_timestamps]
        starts.append(_finite(s.start_time))
        ends.append(_finite(s.end_time))
    if not ends:
        return None
    return min(starts), max(ends)


def to_speech_data(
    result: TranscriptionResult,
    *,
    base_s: float,
    offset_s: float,
    fallback_language: str,
) -> stt.SpeechData:
    """Place a result on the stream timeline.

    ``base_s`` is the stream time at which the current connection's audio began (server
    times restart at 0 per connection); ``offset_s`` is ``start_time_offset``, which the
    framework sets to put the stream on the session timeline.
    """
    shift = base_s + offset_s
    words: list[TimedString] = []
    for seg in result.segments:
        if not seg.text.strip():
            continue
        if seg.word_timestamps:
            for w in seg.word_timestamps:
                if not w.word.strip():
                    continue
                prob = w.prob if w.prob is not None and math.isfinite(w.prob) else None
                words.append(
                    TimedString(
                        w.word.strip(),
                        start_time=_finite(w.start_time) + shift,
                        end_time=_finite(w.end_time) + shift,
                        confidence=prob if prob is not None else NOT_GIVEN,
                        start_time_offset=offset_s,
                    )
                )
        else:
            words.append(
                TimedString(
                    seg.text.strip(),
                    start_time=_finite(seg.start_time) + shift,
                    end_time=_finite(seg.end_time) + shift,
                    start_time_offset=offset_s,
                )
            )
    span = speech_span(result)
    start, end = span if span is not None else (0.0, 0.0)
    language = result.language_code or next(
        (s.language_code for s in result.segments if s.language_code), None
    )
    if not language or language == "auto":
        language = fallback_language
    return stt.SpeechData(
        language=LanguageCode(language),
        text=result.text,
        start_time=start + shift,
        end_time=end + shift,
        confidence=confidence_of(result),
        words=words,
    )
