"""One benchmark run in its own process: K real-time streams of ONE client (or none).

``python -m bench.stt_worker --client ours|official --model whisper|qwen3-asr
--url-base ws://127.0.0.1:PORT ...`` is started by ``bench.stt_client_bench`` (never by
hand); ``--model`` picks the protocol both clients speak (``STT(model=...)``), and the
server at ``--url-base`` must speak the same one. A process per run keeps the
measurement clean: ``time.process_time()`` then counts this client only (the server is
another process), and nothing one client leaves behind (tasks, sockets, caches) can tax
the other.

A run has two measured windows in the same process, with the same pacing loop:

1. *baseline*: every tick creates one 20 ms ``rtc.AudioFrame`` per stream and drops it,
   so "harness CPU per audio second" can be subtracted from the client's number;
2. *client*: K streams (one ``STT`` each, every stream on its own websocket path so the
   server's send log can be matched to it) get the same frames in real time.

Output (``--out``, JSON): CPU seconds of both windows, the pacing loop's lag per tick,
and every INTERIM/FINAL event each stream yielded with the wall-clock time it was
yielded (``time.time()``, comparable with the server's send log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import psutil
from livekit import rtc
from livekit.agents import stt

from localdev.speech import read_wav_pcm16

SAMPLE_RATE = 16_000
#: 20 ms frames: what a LiveKit room track delivers after resampling, and what the
#: repo's conformance tests push.
FRAME_SAMPLES = SAMPLE_RATE // 50
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
#: Shared by both clients so neither is capped: LiveKit's job session allows 50
#: connections per host, and an aiohttp websocket holds its connection slot for life.
CONNECTOR_LIMIT = 0
#: Time for K websockets to open before the clock starts: ~5 ms per handshake measured
#: on loopback with both clients, plus a fixed second of slack for a busy machine.
CONNECT_SLACK_S = 1.0
CONNECT_PER_STREAM_S = 0.005

#: ``STT(model=...)`` values both clients accept (same spelling in both).
MODELS = ("whisper", "qwen3-asr")

E = stt.SpeechEventType
KIND = {E.INTERIM_TRANSCRIPT: "I", E.FINAL_TRANSCRIPT: "F"}


def stream_path(run_id: str, index: int) -> str:
    """The websocket path of stream ``index`` of run ``run_id`` (shared with the matcher)."""
    return f"/deployment/{run_id}-{index:04d}/websocket"


@dataclass
class StreamLog:
    """What one stream yielded: ``(kind, text, wall time)`` per transcript event."""

    events: list[tuple[str, str, float]] = field(default_factory=list)
    other_events: int = 0
    error: str | None = None


class Tracks:
    """Per-stream audio: one tiled track read from a different offset per stream.

    Offsets are spread evenly over the track so streams are not in lock-step (their
    utterances, and so the server's results, do not all land on the same tick).
    """

    def __init__(self, *, pcm: npt.NDArray[np.int16], streams: int, ticks: int) -> None:
        """Tile ``pcm`` so every stream can read ``ticks`` frames from its offset."""
        period = len(pcm) - len(pcm) % FRAME_SAMPLES
        need = period + ticks * FRAME_SAMPLES
        reps = -(-need // period)
        self._data = np.tile(pcm[:period], reps).astype("<i2").tobytes()
        step = period // max(1, streams)
        self._offsets = [(i * step) // FRAME_SAMPLES * FRAME_SAMPLES * 2 for i in range(streams)]

    def frame(self, stream: int, tick: int) -> rtc.AudioFrame:
        start = self._offsets[stream] + tick * FRAME_SAMPLES * 2
        return rtc.AudioFrame(
            self._data[start : start + FRAME_SAMPLES * 2], SAMPLE_RATE, 1, FRAME_SAMPLES
        )


async def pace(
    tracks: Tracks, *, streams: int, ticks: int, push: Callable[[int, rtc.AudioFrame], None] | None
) -> list[float]:
    """Deliver ``ticks`` frames to each stream on an absolute 20 ms schedule.

    Returns each tick's lag: when its pushes completed minus when it was due. A loop
    that falls behind catches up without sleeping, so a growing backlog shows as lag.
    """
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    start = loop.time()
    for tick in range(ticks):
        due = start + tick * FRAME_S
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for i in range(streams):
            frame = tracks.frame(i, tick)
            if push is not None:
                push(i, frame)
        lags.append(loop.time() - due)
    return lags


def make_client(kind: str, *, model: str, url: str, session: aiohttp.ClientSession) -> Any:
    """An STT of either client for ``model`` with the same recognition options on the wire.

    Server VAD settings are left to each client's per-model defaults, which agree
    (Whisper 300/30 ms, Qwen3-ASR 500/100 ms silence/pad). The session is passed in, so
    neither client needs LiveKit's ``utils.http_context`` (the official Qwen3 backend
    only falls back to it when ``http_session`` is None).
    """
    common: dict[str, Any] = {
        "model": model,
        "api_key": "bench-key",
        "model_endpoint": url,
        "http_session": session,
        # Same cadence for both (the official Whisper default is 1.0 s; ours, the
        # official Qwen3 default and the servers' is 0.5).
        "partial_transcript_interval_s": 0.5,
    }
    if kind == "ours":
        from plugins.baseten_stt import STT

        return STT(**common)
    if kind == "official":
        from livekit.plugins.baseten import STT as OfficialSTT

        return OfficialSTT(**common)
    raise ValueError(f"unknown client {kind!r}")


def _is_cancelled_gather_leak(context: dict[str, Any]) -> bool:
    # The official stream's cancelled _run leaves an asyncio.gather future whose
    # CancelledError is never retrieved (see tests/fixtures/baseten.py); drop only that.
    future = context.get("future")
    return type(future).__name__ == "_GatheringFuture" and isinstance(
        context.get("exception"), asyncio.CancelledError
    )


async def consume(stream: Any, log: StreamLog) -> None:
    try:
        async for ev in stream:
            now = time.time()
            kind = KIND.get(ev.type)
            if kind is None:
                log.other_events += 1
                continue
            log.events.append((kind, ev.alternatives[0].text if ev.alternatives else "", now))
    except Exception as exc:  # the stream's own failure, re-raised by __anext__
        log.error = f"{type(exc).__name__}: {exc}"[:300]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not _is_cancelled_gather_leak(context):
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    pcm, rate = read_wav_pcm16(args.audio)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{args.audio}: expected {SAMPLE_RATE} Hz, got {rate}")
    k = args.streams
    ticks = round(args.seconds / FRAME_S)
    base_ticks = round(args.baseline_seconds / FRAME_S)
    tracks = Tracks(pcm=pcm, streams=k, ticks=max(ticks, base_ticks))
    proc = psutil.Process()

    # 1. harness-only baseline: same loop, frames created and dropped
    c0 = time.process_time()
    base_lags = await pace(tracks, streams=k, ticks=base_ticks, push=None)
    baseline_cpu = time.process_time() - c0

    result: dict[str, Any] = {
        "client": args.client,
        "model": args.model,
        "streams": k,
        "seconds": ticks * FRAME_S,
        "baseline_seconds": base_ticks * FRAME_S,
        "baseline_cpu_s": baseline_cpu,
        "baseline_lag_p95_ms": float(np.percentile(base_lags, 95) * 1000) if base_lags else 0.0,
    }
    if args.client == "baseline":
        return result

    # 2. the client
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTOR_LIMIT))
    clients = [
        make_client(
            args.client,
            model=args.model,
            url=args.url_base + stream_path(args.run_id, i),
            session=session,
        )
        for i in range(k)
    ]
    streams = [c.stream() for c in clients]
    logs = [StreamLog() for _ in range(k)]
    consumers = [asyncio.create_task(consume(s, lg)) for s, lg in zip(streams, logs, strict=True)]
    await asyncio.sleep(CONNECT_SLACK_S + CONNECT_PER_STREAM_S * k)

    # CPU-time timer: the wall-clock default would bill time blocked in epoll.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    rss0 = proc.memory_info().rss
    c0 = time.process_time()
    w0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    lags = await pace(tracks, streams=k, ticks=ticks, push=lambda i, f: streams[i].push_frame(f))
    client_cpu = time.process_time() - c0
    wall = time.perf_counter() - w0
    if profiler is not None:
        profiler.disable()
    rss1 = proc.memory_info().rss
    # Results still in flight for the last utterances (server VAD end + decode); not
    # part of the CPU window, which covers exactly the audio pushed.
    await asyncio.sleep(args.grace)
    close_started = time.time()

    await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    for c in clients:
        with contextlib.suppress(Exception):
            await c.aclose()
    await session.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)

    result.update(
        {
            "client_cpu_s": client_cpu,
            "client_wall_s": wall,
            "audio_s": k * ticks * FRAME_S,
            "lags_ms": [round(x * 1000, 3) for x in lags],
            "rss_mb": rss1 / 2**20,
            "rss_growth_mb": (rss1 - rss0) / 2**20,
            "close_started": close_started,
            "streams_log": [
                {"events": lg.events, "other_events": lg.other_events, "error": lg.error}
                for lg in logs
            ],
        }
    )
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.stt_worker", description=__doc__)
    p.add_argument("--client", choices=("ours", "official", "baseline"), required=True)
    p.add_argument("--model", choices=MODELS, default="whisper", help="protocol both clients speak")
    p.add_argument("--url-base", default="", help="ws://host:port of the local server")
    p.add_argument("--run-id", default="run", help="tag in every stream's websocket path")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0, help="real-time audio per stream")
    p.add_argument("--baseline-seconds", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=1.5, help="wait for trailing results")
    p.add_argument("--audio", type=Path, required=True, help="16 kHz mono WAV")
    p.add_argument("--out", type=Path, required=True, help="JSON result file")
    p.add_argument("--profile", type=Path, default=None, help="cProfile stats of the window")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
