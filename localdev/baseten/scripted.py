"""A recognition engine that costs (almost) nothing: for load tests of *clients*.

``ScriptedEngine`` answers every buffer with made-up words evenly spread over the
buffer, with word timestamps (finals end in a full stop), so the messages look like
real results (same fields, similar size) while the server spends microseconds instead
of a pocketsphinx decode.
Used by the STT client benchmark (``bench/stt_client_bench.py``) when hundreds of
streams must not make the server the bottleneck. Never use it where words matter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from localdev.baseten.engine import Recognition
from plugins.baseten_stt.protocol import PCM_SAMPLE_RATE, Segment, WhisperParams, Word

#: Words per second of buffered audio: espeak-ng's default 150 wpm is 2.5 words/s.
WORDS_PER_SECOND = 2.5
#: Same cut-off as ``WhisperEngine``: below ~0.1 s there is nothing to say.
MIN_SAMPLES = PCM_SAMPLE_RATE // 10
#: A fixed, plausible word probability (log_prob follows from it).
WORD_PROB = 0.9


class ScriptedEngine:
    """Deterministic fake recognition: ``n = ceil(seconds * 2.5)`` words ``w1 … wn``.

    Thread-safe (no state). Text depends only on the buffer length, so a partial of a
    longer buffer has more words than the one before, like real partials.
    """

    def __init__(self, *, words_per_second: float = WORDS_PER_SECOND) -> None:
        """Create the engine; ``words_per_second`` sets how many words a buffer yields."""
        self._wps = words_per_second

    def warm_up(self) -> None:
        """Nothing to load (same interface as ``WhisperEngine``)."""

    def transcribe(
        self,
        pcm16_16k: npt.NDArray[np.int16],
        *,
        time_offset: float,
        params: WhisperParams,
        final: bool = True,
    ) -> Recognition:
        language = "en" if params.audio_language in ("", "auto") else params.audio_language
        if len(pcm16_16k) < MIN_SAMPLES:
            return Recognition(segments=[], language_code=language)
        seconds = len(pcm16_16k) / PCM_SAMPLE_RATE
        n = max(1, int(np.ceil(seconds * self._wps)))
        step = seconds / n
        words = [
            Word(
                start_time=round(time_offset + i * step, 3),
                end_time=round(time_offset + (i + 1) * step, 3),
                word=f"w{i + 1}",
                prob=WORD_PROB,
            )
            for i in range(n)
        ]
        segment = Segment(
            start_time=words[0].start_time,
            end_time=words[-1].end_time,
            # a final ends in a full stop, as Whisper's do: turn detection (the signals
            # policy reads the final's ending) then treats it as a finished statement
            text=" ".join(w.word for w in words) + ("." if final else ""),
            log_prob=round(float(np.log(WORD_PROB)), 4),
            word_timestamps=words if params.show_word_timestamps else [],
            language_code=language,
        )
        return Recognition(segments=[segment], language_code=language)
