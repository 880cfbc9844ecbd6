"""How fast a hung Baseten server is noticed, and that a slow one is not mistaken for it.

``uv run python -m bench.stall_bench [--models whisper qwen3-asr] [--stall-at-s 3.2]``

Per model, our plugin streams recorded human speech in real time (20 ms frames) to the
Baseten stand-in (real Whisper, its own process, the model's protocol):

* **Hang**: the 28.9 s *Tale of Two Cities* sentence; the stand-in stops reading and
  answering ``--stall-at-s`` seconds into it (``FaultPlan.stall_after_frames``: the socket
  stays open, nothing comes back, as a wedged replica). Measured from the moment the first
  unanswered audio was pushed: when the plugin declared the stall, when it was streaming
  again on a new socket (replaying what was unfinalised), and the passage's word error
  rate (nothing may be lost). Run twice: with ``speech_stall_s`` (``--speech-stall-s``,
  default the plugin's) and with it
  off (``speech_stall_s=1e9``), which leaves the ``stall_timeout_s`` (15 s) rules alone:
  the behaviour before.
* **Slow but alive**: the 8 packaged clips with pauses, every transcription delayed 1 s
  (``FaultPlan.inference_delay_s``): stalls declared must be 0, and no word lost; the most
  speech audio ever sent with no result back is the margin ``speech_stall_s`` has.

Timing depends on the machine: run it on a quiet one. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.baseten.faults import FaultPlan
from localdev.baseten.process import BasetenServerProcess
from localdev.baseten.server import ProtocolName
from localdev.human_speech import CLIPS, TWO_CITIES_OPENING
from localdev.speech import silence
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT, STTOptions

API_KEY = "stall-bench-key"
ROUTE = "/environments/production/websocket"
RATE = 16_000
FRAME = 320  # 20 ms, as a room delivers
WINDOW = 512  # the stand-in counts faults in 32 ms windows in both dialects
LEAD_S = 0.5
PROTOCOLS: dict[str, ProtocolName] = {"whisper": "whisper", "qwen3-asr": "qwen3"}
#: speech_stall_s that switches the speech rule off (the behaviour before it existed).
OFF = 1e9


@dataclass
class Outcome:
    label: str
    detect_s: float | None  # first unanswered audio pushed -> stall declared
    resume_s: float | None  # ... -> streaming again on a new socket
    stalls: int
    wer: float
    finals: int
    max_unanswered_s: float  # most speech sent with no result back (the margin)


async def _stream(
    srv: BasetenServerProcess,
    model: str,
    pcm: np.ndarray,
    text: str,
    *,
    label: str,
    hang_at_sample: int | None,
    speech_stall_s: float,
) -> Outcome:
    stt = STT(
        model=model,
        api_key=API_KEY,
        model_endpoint=srv.url + ROUTE,
        speech_stall_s=speech_stall_s,
    )
    stream = stt.stream()
    finals: list[str] = []
    hang_wall: float | None = None
    detected: float | None = None
    resumed: float | None = None

    async def consume() -> None:
        async for ev in stream:
            if ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    async def watch() -> None:
        nonlocal detected, resumed
        while True:
            if detected is None and stt.stats.stalls:
                detected = time.monotonic()
            if resumed is None and stt.stats.reconnects:
                resumed = time.monotonic()
            await asyncio.sleep(0.005)

    consumer = asyncio.create_task(consume())
    watcher = asyncio.create_task(watch())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(0, pcm.size, FRAME):
        chunk = pcm[i : i + FRAME]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, chunk.size))
        if hang_at_sample is not None and hang_wall is None and i + FRAME > hang_at_sample:
            hang_wall = time.monotonic()
        await asyncio.sleep(max(0.0, started + (i + FRAME) / RATE - loop.time()))
    stream.end_input()
    await asyncio.wait_for(consumer, 60)
    watcher.cancel()
    await stream.aclose()
    await stt.aclose()

    def since(t: float | None) -> float | None:
        return None if t is None or hang_wall is None else t - hang_wall

    return Outcome(
        label=label,
        detect_s=since(detected),
        resume_s=since(resumed),
        stalls=stt.stats.stalls,
        wer=word_error_rate(text, " ".join(finals)),
        finals=len(finals),
        max_unanswered_s=stt.stats.max_speech_unanswered_s,
    )


async def run(model: str, stall_at_s: float, speech_stall_s: float) -> list[Outcome]:
    passage = np.concatenate([silence(LEAD_S), TWO_CITIES_OPENING.samples(), silence(2.0)])
    # the stand-in stops after this many 32 ms windows of the stream
    windows = round((LEAD_S + stall_at_s) * RATE / WINDOW)
    outcomes = []
    for label, stall_s in (
        (f"hang, speech_stall_s={speech_stall_s:g}", speech_stall_s),
        ("hang, speech rule off", OFF),
    ):
        async with BasetenServerProcess(
            api_key=API_KEY,
            protocol=PROTOCOLS[model],
            faults=FaultPlan(stall_after_frames=windows),
            extra_args=("--log-level", "WARNING"),
        ) as srv:
            outcomes.append(
                await _stream(
                    srv,
                    model,
                    passage,
                    TWO_CITIES_OPENING.text,
                    label=f"{model}: {label}",
                    hang_at_sample=windows * WINDOW,
                    speech_stall_s=stall_s,
                )
            )
        print(f"{model}: {label} done", file=sys.stderr)
    parts, words = [silence(LEAD_S)], []
    for clip in CLIPS:
        parts += [clip.samples(), silence(1.0)]
        words.append(clip.text)
    async with BasetenServerProcess(
        api_key=API_KEY,
        protocol=PROTOCOLS[model],
        faults=FaultPlan(inference_delay_s=1.0),
        extra_args=("--log-level", "WARNING"),
    ) as srv:
        outcomes.append(
            await _stream(
                srv,
                model,
                np.concatenate(parts),
                " ".join(words),
                label=f"{model}: slow (1 s inference), no hang",
                hang_at_sample=None,
                speech_stall_s=speech_stall_s,
            )
        )
    print(f"{model}: slow done", file=sys.stderr)
    return outcomes


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=sorted(PROTOCOLS), default=["whisper", "qwen3-asr"]
    )
    parser.add_argument(
        "--stall-at-s", type=float, default=3.2, help="seconds into the passage the server hangs"
    )
    parser.add_argument(
        "--speech-stall-s", type=float, default=STTOptions().speech_stall_s, help="the knob"
    )
    args = parser.parse_args(argv)
    outcomes = [
        o for m in args.models for o in asyncio.run(run(m, args.stall_at_s, args.speech_stall_s))
    ]
    head = (
        f"{'run':<42} | {'stall noticed s':>15} | {'streaming again s':>17} | "
        f"{'stalls':>6} | {'finals':>6} | {'WER':>5} | {'max unanswered speech s':>23}"
    )
    print(head)
    print("-" * len(head))
    for o in outcomes:
        print(
            f"{o.label:<42} | {_s(o.detect_s):>15} | {_s(o.resume_s):>17} | "
            f"{o.stalls:>6} | {o.finals:>6} | {o.wer:>5.2f} | {o.max_unanswered_s:>23.2f}"
        )
    print(
        "times from the first audio the hung server left unanswered (pushed in real time); "
        "WER over everything said (a lost word shows here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
