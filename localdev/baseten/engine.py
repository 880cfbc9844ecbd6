"""Offline speech recognition behind a small interface.

The local Baseten server only needs "16 kHz int16 audio in, protocol ``Segment``s out".
``RecognitionEngine`` is that contract so Vosk, faster-whisper, ... can be plugged in;
``PocketsphinxEngine`` is the default because its English model ships inside the
pocketsphinx wheel (nothing is downloaded) and it decodes a few seconds of audio in
tens of milliseconds on one core.

Accuracy on espeak-ng speech (``python -m localdev.baseten.accuracy``, 150 wpm en-us,
numbers in ``localdev/baseten/README.md``): with a phrase list the JSGF grammar gets
7/8 phrases exactly (WER 2%); the full language model gets WER 45% ("book a table for
two" -> "will signal for two"), so tests that assert words must pass ``phrases``.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from plugins.baseten_stt.protocol import PCM_SAMPLE_RATE, Segment, Word

#: pocketsphinx's acoustic front end runs at 100 frames per second (``-frate`` default),
#: so ``seg()`` frame indices divide by this to give seconds.
POCKETSPHINX_FRAME_RATE = 100

#: Filler tokens pocketsphinx puts in ``seg()`` that are not words.
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
#: Alternate pronunciations come back as ``on(2)``; the word is ``on``.
_ALT_PRON = re.compile(r"\(\d+\)$")
#: Word posteriors of exactly 0 would make ``log`` blow up; clamp like Whisper's
#: avg-logprob which never goes below a few nats on real speech.
_MIN_PROB = 1e-6

#: Decode a buffer from this long before its first audible sample. A final buffer holds all
#: audio since the previous final (as on the real server): over WebRTC that is seconds of
#: Opus-decoded near-silence (+-3 LSB) before the words, and on such buffers captured at
#: this server the phrase grammar decoded "turn on the lights" as nothing and "what is the
#: weather like today" as "... what is the" (28/30 phrases right with 3 s of +-2 LSB lead).
#: With a 0.25 s lead: 33/33 (0.1 s: 31/33, 0.5 s: 32/33); gating the noise to zero instead
#: lost soft words ("book a table for two" -> "book a table for"). It also keeps partials
#: (each re-decodes the whole buffer) cheap: 10 s of buffer took 359 ms, 2 s 46 ms, on the
#: shared 2-core machine. Word times are shifted back, so timestamps stay exact. Whisper,
#: the real model, has no such weakness; this only makes the stand-in dependable.
LEAD_KEEP_S = 0.25
#: -40 dBFS, the same "audible" level as the server VAD's midpoint (``vad.py``).
AUDIBLE_LSB = 328


@runtime_checkable
class RecognitionEngine(Protocol):
    """Turns one buffer of 16 kHz mono int16 audio into protocol segments.

    ``transcribe`` is synchronous and may be slow: the server calls it from a worker
    thread, possibly from several threads at once, so implementations must be
    thread-safe. Times in the returned segments are ``time_offset`` + position in
    ``pcm16_16k`` (i.e. stream-relative when the caller passes the audio already
    consumed on the connection).
    """

    def transcribe(
        self,
        pcm16_16k: npt.NDArray[np.int16],
        *,
        time_offset: float,
        word_timestamps: bool,
        language: str,
    ) -> list[Segment]: ...


def phrase_grammar(phrases: Sequence[str]) -> str:
    """A JSGF grammar accepting any sequence of the phrases or prefixes of them.

    Prefixes (``book [a [table [for [two]]]]``) are allowed so that a *partial*
    transcription of an utterance that is still being spoken matches the grammar
    too; without them pocketsphinx returns nothing until the phrase is complete.
    """
    alternatives = []
    for phrase in phrases:
        words = normalise_words(phrase)
        if not words:
            continue
        nested = words[-1]
        for word in reversed(words[:-1]):
            nested = f"{word} [{nested}]"
        alternatives.append(f"({nested})")
    if not alternatives:
        raise ValueError("phrase list has no words")
    return (
        "#JSGF V1.0;\ngrammar phrases;\n"
        "public <utterance> = <phrase>+;\n"
        f"<phrase> = {' | '.join(alternatives)};\n"
    )


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation, the form the CMU dictionary uses."""
    return re.findall(r"[a-z']+", text.lower())


class PocketsphinxEngine:
    """CMU pocketsphinx with the bundled US-English model.

    One ``Decoder`` per worker thread (decoders are not thread-safe and take ~0.3 s and
    ~30 MB each to build, so they are created lazily and reused).
    """

    def __init__(self, *, phrases: Sequence[str] | None = None) -> None:
        """Create the engine.

        Args:
            phrases: optional closed phrase list. When given, recognition is
                restricted to sequences of these phrases (a JSGF grammar), which makes
                espeak-ng speech recognise deterministically. Words missing from the
                CMU dictionary make the grammar fail to load (``ValueError``).
                When omitted, the full en-us trigram language model is used.
        """
        self._grammar = phrase_grammar(phrases) if phrases else None
        self._local = threading.local()
        #: (wall start, wall end, seconds of audio decoded) of recent decodes, so
        #: benchmarks can tell the stand-in's own time from the client's.
        self.decodes: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=10_000
        )
        # Imported lazily (pocketsphinx is a dev-only dependency) but on the thread that
        # builds the engine, never in a worker thread: CPython 3.11's compiler keeps a
        # process-global AST recursion counter, so compiling a module's source in one
        # thread while another thread parses (pytest's assertion rewriting, hypothesis)
        # fails with "AST constructor recursion depth mismatch".
        from pocketsphinx import Decoder

        self._decoder_class = Decoder

    @property
    def uses_phrase_list(self) -> bool:
        return self._grammar is not None

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = self._decoder_class(loglevel="FATAL")
            if self._grammar is not None:
                decoder.add_jsgf_string("phrases", self._grammar)
                decoder.activate_search("phrases")
            self._local.decoder = decoder
        return decoder

    def warm_up(self) -> None:
        """Build this thread's decoder now so the first utterance is not 0.3 s late.

        Also validates the phrase grammar (``ValueError`` for words missing from the
        dictionary) before any stream depends on it.
        """
        self._decoder()

    def transcribe(
        self,
        pcm16_16k: npt.NDArray[np.int16],
        *,
        time_offset: float,
        word_timestamps: bool,
        language: str,
    ) -> list[Segment]:
        # Below ~0.1 s there is nothing to decode and pocketsphinx only logs warnings.
        if len(pcm16_16k) < PCM_SAMPLE_RATE // 10:
            return []
        started = time.time()
        loud = np.flatnonzero(np.abs(pcm16_16k) > AUDIBLE_LSB)
        cut = max(0, int(loud[0]) - int(LEAD_KEEP_S * PCM_SAMPLE_RATE)) if loud.size else 0
        pcm16_16k = pcm16_16k[cut:]
        time_offset += cut / PCM_SAMPLE_RATE
        decoder = self._decoder()
        decoder.start_utt()
        decoder.process_raw(
            np.ascontiguousarray(pcm16_16k, dtype=np.int16).tobytes(), full_utt=True
        )
        decoder.end_utt()
        self.decodes.append((started, time.time(), len(pcm16_16k) / PCM_SAMPLE_RATE))
        if decoder.hyp() is None:
            return []
        words: list[Word] = []
        for seg in decoder.seg():
            if _FILLER.match(seg.word):
                continue
            words.append(
                Word(
                    start_time=round(time_offset + seg.start_frame / POCKETSPHINX_FRAME_RATE, 3),
                    end_time=round(time_offset + (seg.end_frame + 1) / POCKETSPHINX_FRAME_RATE, 3),
                    word=_ALT_PRON.sub("", seg.word),
                    prob=round(min(1.0, max(0.0, float(seg.prob))), 4),
                )
            )
        if not words:
            return []
        log_prob = sum(math.log(max(w.prob or 0.0, _MIN_PROB)) for w in words) / len(words)
        return [
            Segment(
                start_time=words[0].start_time,
                end_time=words[-1].end_time,
                text=" ".join(w.word for w in words),
                log_prob=round(log_prob, 4),
                word_timestamps=words if word_timestamps else [],
                language_code=language,
            )
        ]
