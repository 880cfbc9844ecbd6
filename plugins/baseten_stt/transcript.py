"""Server transcription results -> LiveKit ``SpeechData`` on the stream's timeline."""

from __future__ import annotations

import math
from collections.abc import Callable

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
    text: str | None = None,
    language_code: Callable[[str | None], str | None] | None = None,
) -> stt.SpeechData:
    """Place a result on the stream timeline.

    ``base_s`` is the stream time at which the current connection's audio began (server
    times restart at 0 per connection); ``offset_s`` is ``start_time_offset``, which the
    framework sets to put the stream on the session timeline. ``text`` is
    ``result.text`` if the caller already has it. ``language_code`` turns the reported
    language into a code (Qwen3 reports names: ``Cantonese`` -> ``yue``).

    One pass over segments and words builds the words, the span (as ``speech_span``)
    and the confidence (as ``confidence_of``): this runs for every partial, ~2 per
    second per stream.
    """
    shift = base_s + offset_s
    isfinite = math.isfinite
    words: list[TimedString] = []
    lo, hi = math.inf, -math.inf
    prob_sum, prob_n, logp_sum, logp_n = 0.0, 0, 0.0, 0
    for seg in result.segments:
        lp = seg.log_prob
        if lp is not None and isfinite(lp):
            logp_sum += lp
            logp_n += 1
        seg_text = seg.text.strip()
        for w in seg.word_timestamps:
            prob = w.prob
            if prob is not None and isfinite(prob):
                prob_sum += prob
                prob_n += 1
            else:
                prob = None
            if not seg_text:
                continue  # probabilities count (confidence_of); times and words do not
            w0, w1 = _finite(w.start_time), _finite(w.end_time)
            lo, hi = min(lo, w0), max(hi, w1)
            word = w.word.strip()
            if word:
                words.append(
                    TimedString(
                        word,
                        start_time=w0 + shift,
                        end_time=w1 + shift,
                        confidence=prob if prob is not None else NOT_GIVEN,
                        start_time_offset=offset_s,
                    )
                )
        if not seg_text:
            continue
        s0, s1 = _finite(seg.start_time), _finite(seg.end_time)
        lo, hi = min(lo, s0), max(hi, s1)
        if not seg.word_timestamps:
            words.append(
                TimedString(
                    seg_text,
                    start_time=s0 + shift,
                    end_time=s1 + shift,
                    start_time_offset=offset_s,
                )
            )
    start, end = (lo, hi) if hi >= 0 else (0.0, 0.0)
    if prob_n:
        confidence = min(1.0, max(0.0, prob_sum / prob_n))
    elif logp_n:
        confidence = min(1.0, max(0.0, math.exp(logp_sum / logp_n)))
    else:
        confidence = 0.0
    language = result.language_code or next(
        (s.language_code for s in result.segments if s.language_code), None
    )
    if language_code is not None:
        language = language_code(language)
    if not language or language == "auto":
        language = fallback_language
    return stt.SpeechData(
        language=LanguageCode(language),
        text=result.text if text is None else text,
        start_time=start + shift,
        end_time=end + shift,
        confidence=confidence,
        words=words,
    )
