"""What a simulated user says: human recordings, the user's own files, espeak-ng phrases.

The demo, the E2E benchmark and the E2E tests speak ``UserTurn``s into a room (or a
room-less session). Each carries its audio, the words when they are known (so what was
heard can be scored, ``localdev.wer``) and where its speech really ends: recordings have
room tone after the last word, and "end of speech" is what every latency is measured from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from localdev.human_speech import HumanClip, clip
from localdev.speech import load_audio, synthesize

#: Rate turns are kept at: what Whisper and the server VAD get, and what sox resamples to.
TURN_SAMPLE_RATE = 16_000
#: The demo's default turns, in order: human recordings first (a question, a question, a
#: long question), then espeak-ng phrases (a synthetic voice, for comparison).
DEMO_TURN_NAMES: tuple[str, ...] = (
    "endgame_hear_me",
    "endgame_talking_about",
    "endgame_ditch",
    "espeak:turn on the lights",
    "espeak:what is the weather like today",
)
#: Silero frames of 32 ms; a frame at or above this speech probability is speech.
_SPEECH_PROBABILITY = 0.5
_FRAME = 512


@dataclass(frozen=True)
class UserTurn:
    """One user utterance: mono int16 audio at ``TURN_SAMPLE_RATE`` and what is said."""

    label: str
    samples: npt.NDArray[np.int16]
    text: str | None = None
    """The words spoken, when known (recordings and phrases); None for a user's file."""
    voice: str = "human"
    """``human`` (a recording) or ``espeak`` (synthetic)."""

    @property
    def sample_rate(self) -> int:
        return TURN_SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return len(self.samples) / TURN_SAMPLE_RATE

    @property
    def tail_s(self) -> float:
        """Seconds of non-speech after the last speech frame (Silero VAD)."""
        return _tail_seconds(self.samples)


def _tail_seconds(samples: npt.NDArray[np.int16]) -> float:
    from localdev.baseten.vad import SileroProbability

    probability = SileroProbability()
    n = len(samples) // _FRAME
    last = -1
    for i in range(n):
        if probability(samples[i * _FRAME : (i + 1) * _FRAME]) >= _SPEECH_PROBABILITY:
            last = i
    if last < 0:
        return 0.0
    return max(0.0, (len(samples) - (last + 1) * _FRAME) / TURN_SAMPLE_RATE)


def from_clip(human: HumanClip) -> UserTurn:
    return UserTurn(
        label=f"{human.name} (recording)",
        samples=human.samples(sample_rate=TURN_SAMPLE_RATE),
        text=human.text,
    )


def from_phrase(text: str) -> UserTurn:
    return UserTurn(
        label="espeak-ng phrase",
        samples=synthesize(text, sample_rate=TURN_SAMPLE_RATE),
        text=text,
        voice="espeak",
    )


def from_file(path: str | Path) -> UserTurn:
    """A user's own recording: any file and rate sox reads, channels averaged.

    ``FileNotFoundError`` / ``ValueError`` with the path when it cannot be read or holds
    no audio.
    """
    samples = load_audio(path, sample_rate=TURN_SAMPLE_RATE)
    if samples.size < TURN_SAMPLE_RATE // 10:
        raise ValueError(f"{path}: less than 0.1 s of audio")
    return UserTurn(label=Path(path).name, samples=samples)


def named(name: str) -> UserTurn:
    """``espeak:<phrase>`` or the name of a ``localdev.human_speech`` clip."""
    if name.startswith("espeak:"):
        return from_phrase(name.removeprefix("espeak:"))
    return from_clip(clip(name))


def demo_turns(count: int) -> list[UserTurn]:
    """The first ``count`` of ``DEMO_TURN_NAMES``."""
    return [named(n) for n in DEMO_TURN_NAMES[:count]]
