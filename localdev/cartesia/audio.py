"""Speech synthesis, output encodings, chunking and word timings for the Cartesia stand-in."""

from __future__ import annotations

import asyncio
import re
import wave
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import numpy.typing as npt

from localdev.speech import synthesize
from plugins.baseten_stt import mulaw

# Encodings Cartesia's raw container offers that are cheap to produce from int16 PCM.
# (pcm_alaw is also a Cartesia encoding; nothing we run asks for it, so it is refused.)
SUPPORTED_ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw")

# Sample rates Cartesia documents for raw output; anything else is a 400 there too.
SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)

# Audio per websocket "chunk" message / bytes-body write. Cartesia does not document its
# chunk size; 40 ms (two of the 20 ms frames LiveKit plays out) streams progressively
# without flooding the socket with tiny JSON messages. Not measured against the real API.
CHUNK_MS = 40

_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class OutputFormat:
    encoding: str
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1}[self.encoding]

    @property
    def chunk_bytes(self) -> int:
        return self.sample_rate * CHUNK_MS // 1000 * self.bytes_per_sample


def encode(samples: npt.NDArray[np.int16], encoding: str) -> bytes:
    """int16 PCM -> bytes in one of :data:`SUPPORTED_ENCODINGS`."""
    if encoding == "pcm_s16le":
        return samples.astype("<i2").tobytes()
    if encoding == "pcm_f32le":
        return (samples.astype(np.float32) / 32768.0).astype("<f4").tobytes()
    if encoding == "pcm_mulaw":
        return mulaw.encode(samples)
    raise ValueError(f"unsupported encoding {encoding!r}")


def wav_header(fmt: OutputFormat) -> bytes:
    """A WAV header for a streamed body of unknown length (16-bit PCM only)."""
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(fmt.sample_rate)
        w.writeframes(b"")
    return buf.getvalue()


async def speak(text: str, sample_rate: int) -> npt.NDArray[np.int16]:
    """espeak-ng synthesis off the event loop (it is a subprocess and takes ~0.1-0.3 s)."""
    return await asyncio.to_thread(synthesize, text, sample_rate=sample_rate)


def chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float


def word_timings(text: str, duration_s: float, offset_s: float) -> list[WordTiming]:
    """Spread the words of ``text`` over ``duration_s`` in proportion to their length.

    espeak-ng does not report word boundaries cheaply, and the only consumer (LiveKit's
    transcript synchroniser) needs plausible, monotonic times, not phonetic precision.
    """
    words = _WORD_RE.findall(text)
    if not words or duration_s <= 0:
        return []
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(weights) / weights.sum() * duration_s])
    return [
        WordTiming(w, round(offset_s + edges[i], 3), round(offset_s + edges[i + 1], 3))
        for i, w in enumerate(words)
    ]
