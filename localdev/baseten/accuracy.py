"""``python -m localdev.baseten.accuracy``: what the stand-in's Whisper hears of human speech.

Decodes every clip of ``localdev.human_speech`` with the engine directly (no server, no
VAD: the clip as cut) and prints the word error rate per clip, after normalising case and
punctuation (``localdev.wer``). ``--model-dir`` scores any CTranslate2 Whisper folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from localdev.baseten.whisper import ModelLoadError, WhisperEngine
from localdev.human_speech import CLIPS
from localdev.wer import normalise, word_errors
from plugins.baseten_stt.protocol import WhisperParams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localdev.baseten.accuracy", description=__doc__)
    p.add_argument("--model-dir", type=Path, default=None, help="CTranslate2 Whisper folder")
    args = p.parse_args(argv)
    try:
        engine = WhisperEngine(model_dir=args.model_dir, workers=1)
    except ModelLoadError as exc:
        print(f"accuracy: {exc}", file=sys.stderr)
        return 2
    engine.warm_up()
    errors = words = 0
    print(f"{'clip':28} {'speech':>6} {'decode':>7} {'WER':>5}  heard")
    for clip in CLIPS:
        pcm = clip.samples()
        started = time.perf_counter()
        heard = engine.transcribe(pcm, time_offset=0.0, params=WhisperParams()).text
        took = time.perf_counter() - started
        e, n = word_errors(clip.text, heard), len(normalise(clip.text))
        errors, words = errors + e, words + n
        print(f"{clip.name:28} {len(pcm) / 16000:5.1f}s {took * 1000:5.0f}ms {e / n:5.2f}  {heard}")
    print(f"overall WER {errors / words:.3f} ({errors} errors in {words} words)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
