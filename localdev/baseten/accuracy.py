"""``python -m localdev.baseten.accuracy``: how well pocketsphinx hears espeak-ng speech.

Prints word error rate per phrase for the full language model and for a phrase-list
grammar, at two speaking rates. Numbers go in ``localdev/baseten/README.md``.
"""

from __future__ import annotations

import numpy as np

from localdev.baseten.engine import PocketsphinxEngine, normalise_words
from localdev.speech import silence, synthesize

PHRASES = [
    "book a table for two",
    "what is the weather like today",
    "hello how are you",
    "cancel my order please",
    "turn on the lights",
    "i would like to speak to an agent",
    "my account number is one two three four",
    "can you repeat that please",
]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions + insertions + deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def main() -> None:
    engines = {
        "full LM": PocketsphinxEngine(),
        "phrase list": PocketsphinxEngine(phrases=PHRASES),
    }
    for wpm in (150, 120):
        for name, engine in engines.items():
            errors = total = 0
            print(f"--- {name}, espeak-ng en-us {wpm} wpm")
            for phrase in PHRASES:
                audio = np.concatenate(
                    [silence(0.3), synthesize(phrase, words_per_minute=wpm), silence(0.3)]
                )
                segs = engine.transcribe(
                    audio, time_offset=0.0, word_timestamps=False, language="en"
                )
                hyp = " ".join(s.text for s in segs)
                ref = normalise_words(phrase)
                e = word_errors(ref, normalise_words(hyp))
                errors += e
                total += len(ref)
                print(f"  {e}/{len(ref)}  {phrase!r} -> {hyp!r}")
            print(f"  WER {errors / total:.0%}")


if __name__ == "__main__":
    main()
