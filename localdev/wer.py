"""Word error rate, the one way the project scores what was heard against what was said.

Scoring is on words after normalising case and punctuation (Whisper writes "Hello world."
where a reference may say "hello world"): lower-case, hyphens and slashes split words,
every other character that is not a letter, digit or apostrophe dropped.
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"[-/–—]")
_DROP = re.compile(r"[^\w' ]")


def normalise(text: str) -> list[str]:
    """Comparable words: ``"Ever tried, ever failed."`` -> ``[ever, tried, ever, failed]``."""
    spaced = _SPLIT.sub(" ", text.lower().replace("’", "'"))
    return [w.strip("'") for w in _DROP.sub(" ", spaced).split() if w.strip("'")]


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
