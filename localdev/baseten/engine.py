"""What the local Baseten server needs from a speech recogniser.

The server only needs "16 kHz int16 audio of one utterance in, protocol ``Segment``s
out". ``RecognitionEngine`` is that contract; ``WhisperEngine`` (``whisper.py``, a real
streaming-Whisper stand-in, the default) and ``ScriptedEngine`` (``scripted.py``, made-up
words at ~zero CPU, for client load tests) implement it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from plugins.baseten_stt.protocol import Segment, WhisperParams

#: How many decodes ``DecodeRecord`` keeps (a long benchmark run is ~10^3).
DECODE_RECORD_LEN = 10_000


@dataclass(frozen=True)
class Recognition:
    """One decode's result: the segments and the (detected or forced) language."""

    segments: list[Segment]
    language_code: str | None = None
    language_prob: float | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass(frozen=True)
class Decode:
    """Timing of one decode, so benchmarks can tell the stand-in's time from the client's."""

    started: float
    """``time.time()`` when the decode began (after waiting for a pool thread)."""
    ended: float
    audio_s: float
    is_final: bool

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class DecodeRecord:
    """The most recent decodes of a server, oldest first (thread-safe appends)."""

    decodes: collections.deque[Decode] = field(
        default_factory=lambda: collections.deque(maxlen=DECODE_RECORD_LEN)
    )

    def add(self, decode: Decode) -> None:
        self.decodes.append(decode)


@runtime_checkable
class RecognitionEngine(Protocol):
    """Turns one buffer of 16 kHz mono int16 audio into a ``Recognition``.

    ``transcribe`` is synchronous and may be slow: the server calls it from its decode
    pool, possibly from several threads at once, so implementations must be
    thread-safe. Times in the returned segments are ``time_offset`` + position in
    ``pcm16_16k`` (stream-relative when the caller passes the audio already consumed
    on the connection). ``params`` are the client's ``whisper_params``; an engine
    honours what it can (language, prompt, word timestamps, sampling). ``final`` is
    False for a partial: a preview, worth less effort than a final (e.g. a decode that
    went wrong is flagged ``possible_hallucination`` rather than redone).
    """

    def warm_up(self) -> None:
        """Load whatever the first decode would otherwise load (called before listening)."""
        ...

    def transcribe(
        self,
        pcm16_16k: npt.NDArray[np.int16],
        *,
        time_offset: float,
        params: WhisperParams,
        final: bool = True,
    ) -> Recognition: ...
