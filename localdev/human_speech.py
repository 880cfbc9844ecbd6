"""Recorded human speech that ships inside packages, cut into turns, with what is said.

Hearing, latency and turn-taking are judged on people, not only on espeak-ng. Nothing is
committed or downloaded: each ``HumanClip`` names a recording inside an installed
package (``moonshine-voice``'s assets, ``pytest-audioeval``'s samples; both MIT) and the
part of it to cut (sox ``trim``), with the words spoken in it. Several speakers (a
two-voice dialogue from Beckett's *Endgame*, a reader of Beckett's *Worstward Ho*, a
reader of *A Tale of Two Cities*, pytest-audioeval's speaker), questions and statements,
1-10 s each. Cut points lie in pauses found with Silero VAD (>= 0.15 s from the
neighbouring speech); each clip keeps its own lead-in and tail.

The texts are the published texts (Dickens, Beckett), pytest-audioeval's own references,
and for the *Endgame* turns the words as heard in the recording (the reading departs
from the printed play).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from localdev.speech import load_audio


class RecordingMissing(RuntimeError):
    """The package that carries a recording is not installed (``uv sync``)."""


def package_dir(package: str) -> Path:
    """Where ``package`` is installed, found without importing it (moonshine-voice's
    ``__init__`` loads a native library and PortAudio bindings we do not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecordingMissing(f"package {package!r} is not installed (uv sync installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class HumanClip:
    """A cut of a packaged human recording and the words spoken in it."""

    name: str
    text: str
    speaker: str
    package: str
    file: str
    start_s: float = 0.0
    end_s: float | None = None

    @property
    def path(self) -> Path:
        return package_dir(self.package) / self.file

    @property
    def is_question(self) -> bool:
        return self.text.rstrip().endswith("?")

    def samples(self, *, sample_rate: int = 16_000) -> npt.NDArray[np.int16]:
        """The cut, mono int16 at ``sample_rate`` (cached per rate)."""
        return _cut(self, sample_rate).copy()


@functools.lru_cache(maxsize=64)
def _cut(clip: HumanClip, sample_rate: int) -> npt.NDArray[np.int16]:
    return load_audio(clip.path, sample_rate=sample_rate, start_s=clip.start_s, end_s=clip.end_s)


_MOONSHINE = "moonshine_voice"
_AUDIOEVAL = "pytest_audioeval"

CLIPS: tuple[HumanClip, ...] = (
    HumanClip(
        name="endgame_hear_me",
        text="Do you hear me?",
        speaker="endgame",
        package=_MOONSHINE,
        file="assets/endgame_nagg_nell.wav",
        start_s=0.0,
        end_s=1.35,
    ),
    HumanClip(
        name="endgame_talking_about",
        text="What are you talking about?",
        speaker="endgame",
        package=_MOONSHINE,
        file="assets/endgame_nagg_nell.wav",
        start_s=17.35,
        end_s=19.2,
    ),
    HumanClip(
        name="endgame_ditch",
        text="Do you remember the day I went and fetched you from that ditch?",
        speaker="endgame",
        package=_MOONSHINE,
        file="assets/endgame_nagg_nell.wav",
        start_s=23.4,
        end_s=27.75,
    ),
    HumanClip(
        name="beckett_fail_better",
        text="Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
        speaker="beckett",
        package=_MOONSHINE,
        file="assets/beckett.wav",
    ),
    HumanClip(
        name="two_cities_best_of_times",
        text="It was the best of times, it was the worst of times.",
        speaker="dickens",
        package=_MOONSHINE,
        file="assets/two_cities.wav",
        start_s=0.8,
        end_s=4.85,
    ),
    HumanClip(
        name="two_cities_age_of_wisdom",
        text="It was the age of wisdom, it was the age of foolishness.",
        speaker="dickens",
        package=_MOONSHINE,
        file="assets/two_cities.wav",
        start_s=4.85,
        end_s=8.6,
    ),
    HumanClip(
        name="audioeval_hello_world",
        text="Hello world.",
        speaker="audioeval",
        package=_AUDIOEVAL,
        file="samples/audio/en/hello_world.wav",
    ),
    HumanClip(
        name="audioeval_quick_brown_fox",
        text="The quick brown fox jumps over the lazy dog.",
        speaker="audioeval",
        package=_AUDIOEVAL,
        file="samples/audio/en/quick_brown_fox.wav",
    ),
)

#: A long passage with comma pauses, for patience (turn-taking) measurements.
TWO_CITIES_OPENING = HumanClip(
    name="two_cities_opening",
    text=(
        "It was the best of times, it was the worst of times, it was the age of wisdom, it "
        "was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity, it was the season of Light, it was the season of Darkness, it was the "
        "spring of hope, it was the winter of despair, we had everything before us, we had "
        "nothing before us, we were all going direct to Heaven, we were all going direct "
        "the other way"
    ),
    speaker="dickens",
    package=_MOONSHINE,
    file="assets/two_cities.wav",
    start_s=0.0,
    end_s=28.9,
)


def clip(name: str) -> HumanClip:
    """The clip called ``name`` (``KeyError`` listing the names otherwise)."""
    for c in (*CLIPS, TWO_CITIES_OPENING):
        if c.name == name:
            return c
    raise KeyError(f"no human clip {name!r}; known: {', '.join(c.name for c in CLIPS)}")
