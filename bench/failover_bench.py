"""What a caller loses when the primary Baseten deployment dies mid-sentence.

``uv run python -m bench.failover_bench [--rounds 1] [--kill-at 0.5]``

Each of the 8 packaged human clips is streamed in real time (20 ms frames) to a primary
Baseten stand-in (real Whisper, its own process); ``--kill-at`` of the way through the
clip's audio the primary is SIGKILLed (sockets gone, no close frame: a crashed pod or a
lost region). A second stand-in is the fallback. Three ways to have a fallback, alternated
clip by clip in the same run:

* **ours**: ``STT(model_endpoint=primary, fallback_endpoints=[fallback])``: the stream
  reconnects to the fallback and replays the audio the primary had not finalised;
* **adapter(ours)**: LiveKit's ``stt.FallbackAdapter([STT(primary), STT(fallback)])`` (its
  defaults), our plugin on both sides: a new stream on the fallback from the switch on;
* **adapter(official)**: the same adapter over the official ``livekit-plugins-baseten``
  client, the baseline a user would reach for first.

Per clip: words lost (WER against the clip's transcript), the time from the kill to the
first transcript (interim or final) with words spoken after the kill (*hearing again*),
and from the end of the clip's audio to its last final. The official client never ends a
stream (no ``end_audio``), so every variant is read until its stream ends or for
``SETTLE_S`` after the audio, whichever comes first.

Timing depends on the machine: run it on a quiet one. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents import utils

from localdev.baseten.process import BasetenServerProcess
from localdev.human_speech import CLIPS, HumanClip
from localdev.speech import silence
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT

API_KEY = "failover-bench-key"
ROUTE = "/environments/production/websocket"
RATE = 16_000
FRAME = 320  # 20 ms, as a room delivers
LEAD_S = 0.5
TAIL_S = 1.5
#: Read events this long after the audio at most (the official client never ends).
SETTLE_S = 6.0
VARIANTS = ("ours", "adapter(ours)", "adapter(official)")


@dataclass
class Outcome:
    variant: str
    clip: str
    wer: float
    heard_again_s: float | None  # kill -> first transcript event after it
    final_after_end_s: float | None  # end of the clip's audio -> its last final
    heard: str
    extra: dict[str, Any] = field(default_factory=dict)


def _make(
    variant: str, primary: str, fallback: str
) -> tuple[lk_stt.STT[Any], list[lk_stt.STT[Any]]]:
    """The STT under test and every STT to close after it."""
    if variant == "ours":
        ours = STT(api_key=API_KEY, model_endpoint=primary, fallback_endpoints=[fallback])
        return ours, [ours]
    if variant == "adapter(ours)":
        inner: list[lk_stt.STT[Any]] = [
            STT(api_key=API_KEY, model_endpoint=primary),
            STT(api_key=API_KEY, model_endpoint=fallback),
        ]
    else:
        from livekit.plugins import baseten

        inner = [
            baseten.STT(api_key=API_KEY, model_endpoint=primary),
            baseten.STT(api_key=API_KEY, model_endpoint=fallback),
        ]
    return lk_stt.FallbackAdapter(inner), inner


async def _one(
    variant: str,
    clip: HumanClip,
    fallback: BasetenServerProcess,
    kill_at: float,
) -> Outcome:
    speech = clip.samples()
    pcm = np.concatenate([silence(LEAD_S), speech, silence(TAIL_S)])
    kill_sample = round((LEAD_S + kill_at * len(speech) / RATE) * RATE)
    speech_end_sample = round(LEAD_S * RATE) + len(speech)
    async with BasetenServerProcess(
        api_key=API_KEY, extra_args=("--log-level", "WARNING")
    ) as primary:
        stt, owned = _make(variant, primary.url + ROUTE, fallback.url + ROUTE)
        stream = stt.stream()
        finals: list[tuple[float, str]] = []
        events: list[tuple[float, str]] = []
        killed_at: float | None = None
        speech_end_at: float | None = None

        async def consume() -> None:
            async for ev in stream:
                if (
                    ev.type
                    in (
                        lk_stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        lk_stt.SpeechEventType.FINAL_TRANSCRIPT,
                    )
                    and ev.alternatives[0].text.strip()
                ):
                    now = time.monotonic()
                    events.append((now, ev.alternatives[0].text))
                    if ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                        finals.append((now, ev.alternatives[0].text))

        consumer = asyncio.create_task(consume())
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(0, pcm.size, FRAME):
            chunk = pcm[i : i + FRAME]
            stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, chunk.size))
            if killed_at is None and i + FRAME >= kill_sample:
                killed_at = time.monotonic()
                await primary.kill()
            if speech_end_at is None and i + FRAME >= speech_end_sample:
                speech_end_at = time.monotonic()
            await asyncio.sleep(max(0.0, started + (i + FRAME) / RATE - loop.time()))
        stream.end_input()
        # a stream that ended in an error still counts: what it heard is what it heard
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(consumer), SETTLE_S)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await stream.aclose()
        await stt.aclose()
        for one in owned:
            if one is not stt:
                await one.aclose()
    assert killed_at is not None and speech_end_at is not None
    # A transcript after the kill whose words were spoken after it: the first one back.
    after = [t for t, _ in events if t > killed_at]
    heard = " ".join(text for _, text in finals)
    return Outcome(
        variant=variant,
        clip=clip.name,
        wer=word_error_rate(clip.text, heard),
        heard_again_s=(after[0] - killed_at) if after else None,
        final_after_end_s=(finals[-1][0] - speech_end_at) if finals else None,
        heard=heard,
        extra={"failovers": getattr(getattr(stt, "stats", None), "failovers", None)},
    )


def _quiet_official_leak(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # The official client's cancelled _run leaves a gather future whose CancelledError is
    # never retrieved (tests/fixtures/baseten.py explains); every other report goes through.
    future = context.get("future")
    if type(future).__name__ == "_GatheringFuture" and isinstance(
        context.get("exception"), asyncio.CancelledError
    ):
        return
    loop.default_exception_handler(context)


async def run(rounds: int, kill_at: float, variants: tuple[str, ...]) -> list[Outcome]:
    asyncio.get_running_loop().set_exception_handler(_quiet_official_leak)
    # The clients' own reconnect warnings and tracebacks would bury the progress lines.
    logging.basicConfig(level=logging.CRITICAL)
    outcomes: list[Outcome] = []
    # (the official client needs LiveKit's http context bound outside a job)
    async with (
        utils.http_context.open(),
        BasetenServerProcess(api_key=API_KEY, extra_args=("--log-level", "WARNING")) as fallback,
    ):
        for r in range(rounds):
            for i, clip in enumerate(CLIPS):
                order = variants[i % len(variants) :] + variants[: i % len(variants)]
                for variant in order:
                    out = await _one(variant, clip, fallback, kill_at)
                    outcomes.append(out)
                    print(
                        f"round {r + 1} {clip.name:<28} {variant:<18} WER {out.wer:.2f} "
                        f"heard again {_s(out.heard_again_s)} s  heard {out.heard!r}",
                        file=sys.stderr,
                    )
    return outcomes


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def report(outcomes: list[Outcome], variants: tuple[str, ...]) -> str:
    def col(v: str, get: Callable[[Outcome], float | None]) -> list[float]:
        return [x for o in outcomes if o.variant == v and (x := get(o)) is not None]

    lines = [
        "| variant | clips | mean WER | clips with words lost | never heard again "
        "| hearing again p50/max (s) | end of audio -> last final p50 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        mine = [o for o in outcomes if o.variant == v]
        again = col(v, lambda o: o.heard_again_s)
        lines.append(
            f"| {v} | {len(mine)} | {statistics.fmean(o.wer for o in mine):.2f} "
            f"| {sum(o.wer > 0 for o in mine)} | {sum(o.heard_again_s is None for o in mine)} "
            f"| {_s(_p(again, 50))} / {_s(max(again) if again else None)} "
            f"| {_s(_p(col(v, lambda o: o.final_after_end_s), 50))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="fraction of the clip's audio before the kill"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    variants = tuple(args.variants)
    t0 = time.monotonic()
    outcomes = asyncio.run(run(args.rounds, args.kill_at, variants))
    print(
        f"failover bench: 8 human clips x {args.rounds} round(s), primary SIGKILLed "
        f"{args.kill_at:.0%} into each clip, {time.monotonic() - t0:.0f} s"
    )
    print(report(outcomes, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
