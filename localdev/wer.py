"""Word error rate, the one way the project scores what was heard against what was said.

Scoring is on words after normalising case, punctuation and small numbers (Whisper writes
"Hello world." and "a table for 2" where a reference says "hello world", "a table for
two"): lower-case, hyphens and slashes split words, every other character that is not a
letter, digit or apostrophe dropped, and the number words zero to twenty written as digits
(as Whisper's own English normaliser does).
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"[-/–—]")
_DROP = re.compile(r"[^\w' ]")
#: Whisper's normaliser writes these as digits; so do we, on both sides.
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBERS = {word: str(value) for value, word in enumerate(_NUMBER_WORDS.split())}


def normalise(text: str) -> list[str]:
    """Comparable words: ``"Ever tried, ever failed."`` -> ``[ever, tried, ever, failed]``."""
    spaced = _SPLIT.sub(" ", text.lower().replace("’", "'"))
    words = (w.strip("'") for w in _DROP.sub(" ", spaced).split())
    return [_NUMBERS.get(w, w) for w in words if w]


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions turning the reference into the hypothesis."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """``word_errors / reference words`` (1.0 for any hypothesis of an empty reference)."""
    words = len(normalise(reference))
    if words == 0:
        return 0.0 if not normalise(hypothesis) else 1.0
    return word_errors(reference, hypothesis) / words
