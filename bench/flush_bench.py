"""What ``manual_flush`` saves: end of speech -> final, with and without a flush.

``uv run python -m bench.flush_bench [--rounds 2] [--models whisper qwen3-asr]``

Every human clip of ``localdev.human_speech.CLIPS`` (trailing room tone cut at the clip's
last Silero speech frame) is pushed in real time through our plugin to the Baseten
stand-in (real Whisper, its own process, speaking the model's protocol), followed by
silence. With a flush, the plugin is flushed after ``FLUSH_AFTER_S`` of that silence, when
LiveKit's turn detector asks for its prediction: Whisper then gets the server VAD's silence
at once, Qwen3-ASR gets ``input_audio_buffer.commit``. Without, the server's VAD must count
its silence in real time (300 ms for Whisper, 500 ms for Qwen3-ASR, each model's default).
Both variants alternate on the same clips in one run. Reported per model and variant: end
of speech -> final received, that final's decode in the stand-in, the difference (what the
flush can change) and the word error rate (the flush must not lose or split words).

Timing depends on the machine: run it on a quiet one. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.baseten.process import BasetenServerProcess
from localdev.baseten.server import ProtocolName
from localdev.human_speech import CLIPS
from localdev.speech import silence
from localdev.user_turns import from_clip
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT

API_KEY = "flush-bench-key"
ROUTE = "/environments/production/websocket"
RATE = 16_000
FRAME = 320  # 20 ms, as a room delivers
#: LiveKit's turn detector asks for a prediction at 200 ms of silence
#: (livekit.agents.inference.eot.base.MIN_SILENCE_DURATION_MS); the signals policy flushes then.
FLUSH_AFTER_S = 0.2
TAIL_S = 1.5  # enough for the server's own 300 ms + a CPU decode


@dataclass
class Variant:
    name: str
    final_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    wers: list[float] = field(default_factory=list)


#: ``STT(model=...)`` -> the stand-in's ``--protocol``, and what a flush sends.
PROTOCOLS: dict[str, ProtocolName] = {"whisper": "whisper", "qwen3-asr": "qwen3"}
FLUSH_NAMES = {"whisper": "silence at once", "qwen3-asr": "commit"}


async def _one(
    srv: BasetenServerProcess, samples: np.ndarray, text: str, *, model: str, flush: bool
) -> tuple[float, float, float]:
    stt = STT(model=model, api_key=API_KEY, model_endpoint=srv.url + ROUTE, manual_flush=flush)
    stream = stt.stream()
    finals: list[tuple[float, str]] = []

    async def consume() -> None:
        async for ev in stream:
            if ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append((time.time(), ev.alternatives[0].text))

    consumer = asyncio.create_task(consume())
    audio = np.concatenate([silence(0.3), samples, silence(TAIL_S)])
    speech_end_sample = round(0.3 * RATE) + samples.size
    speech_end = 0.0
    flushed = False
    for i in range(0, audio.size, FRAME):
        chunk = audio[i : i + FRAME]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, chunk.size))
        if i + FRAME >= speech_end_sample and not speech_end:
            speech_end = time.time()
        if flush and not flushed and speech_end and time.time() - speech_end >= FLUSH_AFTER_S:
            stream.flush()
            flushed = True
        await asyncio.sleep(FRAME / RATE)
    stream.end_input()
    await asyncio.wait_for(consumer, 30)
    await stream.aclose()
    await stt.aclose()
    decodes = [d for d in (await srv.stats())["decodes"] if d["is_final"]]
    decode = decodes[-1]["ended"] - decodes[-1]["started"] if decodes else 0.0
    first = finals[0][0] if finals else float("nan")
    heard = " ".join(t for _, t in finals)
    return (first - speech_end) * 1000, decode * 1000, word_error_rate(text, heard)


async def run(rounds: int, model: str) -> list[Variant]:
    variants = {
        True: Variant(f"{model}: {FLUSH_NAMES[model]} at 200 ms"),
        False: Variant(f"{model}: server silence"),
    }
    async with BasetenServerProcess(
        api_key=API_KEY,
        extra_args=("--log-level", "WARNING"),
        protocol=PROTOCOLS[model],
    ) as srv:
        for r in range(rounds):
            for clip in CLIPS:
                turn = from_clip(clip)
                samples = turn.samples[: turn.samples.size - round(turn.tail_s * RATE)]
                for flush in (True, False) if r % 2 == 0 else (False, True):
                    final, decode, wer = await _one(
                        srv, samples, clip.text, model=model, flush=flush
                    )
                    v = variants[flush]
                    v.final_ms.append(final)
                    v.decode_ms.append(decode)
                    v.wers.append(wer)
                print(f"{model} round {r + 1}: {clip.name}", file=sys.stderr)
    return list(variants.values())


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="passes over the clips")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(PROTOCOLS), default=["whisper", "qwen3-asr"]
    )
    args = parser.parse_args(argv)
    variants = [v for model in args.models for v in asyncio.run(run(args.rounds, model))]
    head = (
        f"{'variant':<36} | {'n':>3} | {'final p50/p95':>13} | {'decode p50':>10} | "
        f"{'final - decode p50':>18} | {'max WER':>7}"
    )
    print(head)
    print("-" * len(head))
    for v in variants:
        net = [f - d for f, d in zip(v.final_ms, v.decode_ms, strict=True)]
        print(
            f"{v.name:<36} | {len(v.final_ms):>3} | "
            f"{_p(v.final_ms, 50):>6.0f}/{_p(v.final_ms, 95):>6.0f} | "
            f"{statistics.median(v.decode_ms):>10.0f} | {statistics.median(net):>18.0f} | "
            f"{max(v.wers):>7.2f}"
        )
    print("final = end of speech (last speech frame pushed) -> first final received (ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
