"""Real synthetic speech for tests, demos, benchmarks and the TTS stand-in.

Uses espeak-ng (text -> 22.05 kHz WAV) and sox (resample), both from Debian
packages, so every run speaks the same words without shipping audio files.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

ESPEAK = "espeak-ng"
SOX = "sox"
#: sox dithers whenever it resamples to 16 bits, with a fresh random seed per run: the
#: same phrase came out different at the LSB level every time, and Whisper tiny.en heard
#: "hello how are you" as "Hello, how are you?" in one run and "Hello Hello" in the next.
#: No dither (``-D``) and repeatable randomness (``-R``) make every conversion bit-exact.
DETERMINISTIC = ("-D", "-R")


class SpeechToolMissing(RuntimeError):
    pass


def require_tools() -> None:
    """Raise with an install hint when espeak-ng or sox is not on PATH."""
    missing = [t for t in (ESPEAK, SOX) if shutil.which(t) is None]
    if missing:
        raise SpeechToolMissing(
            f"{', '.join(missing)} not found on PATH; install with: apt-get install espeak-ng sox"
        )


@functools.lru_cache(maxsize=64)
def _synthesize_cached(text: str, sample_rate: int, words_per_minute: int, voice: str) -> bytes:
    require_tools()
    with tempfile.TemporaryDirectory() as tmp:
        raw_wav = Path(tmp) / "espeak.wav"
        out_wav = Path(tmp) / "out.wav"
        subprocess.run(
            [ESPEAK, "-v", voice, "-s", str(words_per_minute), "-w", str(raw_wav), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                SOX,
                *DETERMINISTIC,
                str(raw_wav),
                "-r",
                str(sample_rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed",
                str(out_wav),
            ],
            check=True,
            capture_output=True,
        )
        return read_wav_pcm16(out_wav)[0].tobytes()


def synthesize(
    text: str,
    *,
    sample_rate: int = 16_000,
    words_per_minute: int = 150,
    voice: str = "en-us",
) -> npt.NDArray[np.int16]:
    """Speak ``text`` and return mono int16 samples at ``sample_rate``."""
    data = _synthesize_cached(text, sample_rate, words_per_minute, voice)
    return np.frombuffer(data, dtype=np.int16).copy()


def silence(seconds: float, *, sample_rate: int = 16_000) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * sample_rate), dtype=np.int16)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int = 16_000,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> npt.NDArray[np.int16]:
    """Any file sox reads (any rate, any channel count), as mono int16 at ``sample_rate``.

    Channels are averaged (a stereo phone recording keeps both talkers); ``start_s`` /
    ``end_s`` cut a part of it (sox ``trim``). Raises ``ValueError`` naming the file when
    sox cannot read it, ``FileNotFoundError`` when it does not exist.
    """
    require_tools()
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such audio file")
    trim = ["trim", f"{start_s}"] + ([f"={end_s}"] if end_s is not None else [])
    raw_out = ["-t", "raw", "-r", str(sample_rate), "-c", "1", "-b", "16", "-e", "signed", "-L"]
    done = subprocess.run(
        [SOX, "-V1", *DETERMINISTIC, str(source), *raw_out, "-", *trim],
        capture_output=True,
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"{source}: sox cannot read it ({reason[-1] if reason else 'no reason'})")
    return np.frombuffer(done.stdout, dtype="<i2").astype(np.int16)


def read_wav_pcm16(path: str | Path) -> tuple[npt.NDArray[np.int16], int]:
    """Read a mono 16-bit PCM WAV; returns (samples, sample_rate)."""
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        frames = w.readframes(w.getnframes())
        samples = np.frombuffer(frames, dtype=np.int16)
        if w.getnchannels() > 1:
            samples = samples.reshape(-1, w.getnchannels())[:, 0]
        return samples.copy(), w.getframerate()


def write_wav_pcm16(path: str | Path, samples: npt.NDArray[np.int16], sample_rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype(np.int16).tobytes())
