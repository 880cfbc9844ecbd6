"""Whisper stand-in benchmark: decode cost per utterance length, latency under concurrency.

``uv run python -m bench.whisper_bench [--streams 1,2,4,8] [--seconds 40]
[--skip-decode-table] [--json FILE] [--quick]``

What the local Baseten server (``localdev.baseten``: faster-whisper tiny.en int8 on CPU
over the Silero VAD) costs, on human speech (``localdev.human_speech``):

1. Decode cost per utterance length. Utterances of ~1, 2, 4, 7, 10, 15 and 25 s (clips,
   a concatenation, cuts of *A Tale of Two Cities*), decoded by ``WhisperEngine(workers=1)``
   on one thread in this process, with the parameters our plugin sends (word timestamps
   on). "windowed" is the server's path (``transcribe``: encoder sees the utterance + 3 s,
   at least 5 s, and a loop-looking decode is redone with 30 s); "full 30 s" is the same
   call with the encoder window forced to Whisper's 30 s (``MIN_WINDOW_S`` patched for
   the bench only), i.e. what the stand-in cost before the windowing. Median of a few
   runs; RTF = decode time / audio length (lower is better; 1.0 = real time on a core).
   The WER columns show the windowing does not buy its speed with lost words.

2. Latency under concurrency. ONE server in its own process (``BasetenServerProcess``,
   default decode threads = cores), so the clients' event loop shares no GIL with the
   decodes. For each N, N raw aiohttp websocket clients send the first message our
   plugin sends (``STTOptions`` defaults: partials every 0.5 s, VAD threshold 0.5,
   300 ms silence, 30 ms pad, word timestamps) plus ``include_pipeline_latency_metric``,
   then stream human clips (seeded order per stream, each followed by 1.2 s of silence)
   in real time in exact 512-sample frames, starting at a seeded random offset within the
   first second, for ``--seconds`` of audio per stream; then ``end_audio`` and wait for
   ``finished``. Per final:

   * ``VAD silence -> final sent``: the final's ``pipeline_latency``, the server's own
     clock from handling the frame that completed the VAD silence to the send. This is
     the number the goal is judged on (p50/p95/max).
   * ``client-seen``: that same frame's send time in the client -> the final received.
     The frame is identified from the finals' ``audio_length_sec`` (every buffer ends at
     a final here: no clip comes near the 30 s cap). It adds the wire and whatever time
     the frame waited in the server before being handled; if it is much larger than the
     server's number, the server's event loop is behind.
   * ``final decode``: the server's own decode time of each final (``GET
     /_localdev/stats`` decodes, ``is_final``); latency minus decode is queueing (behind
     this stream's in-flight partial, or other streams' decodes on the pool).
   * partials sent / dropped (the server drops a partial while the stream's previous
     decode is queued or running, or when no spare decode thread is free; see
     ``localdev/baseten/pool.py``), ``empty`` finals, and the WER of all finals of a
     stream against the words of all its clips (so a fast but deaf server cannot pass).
   * ``pace lag``: how late the client sent frames (its own health; should be ~0).

3. The largest N whose p95 <= 600 ms (with WER <= 10%, no errors, every stream finished)
   and the goal line: >= 4 concurrent real-time streams at p95 <= 600 ms.

How to read it: the decode table says how the cost grows with the utterance (RTF falls
with length because the fixed costs amortise); the concurrency table says where the two
cores run out: p95 climbs once N streams' finals and partials contend for the decode
threads. ``--json`` writes every raw number (per-run decode times, per-final latencies
and texts, server counters). Timing depends on the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import numpy as np
import numpy.typing as npt

from bench.analysis import summary
from localdev.baseten import whisper
from localdev.baseten.process import BasetenServerProcess
from localdev.baseten.server import DEFAULT_INFERENCE_WORKERS
from localdev.baseten.whisper import FULL_WINDOW_FRAMES, MEL_FRAMES_PER_S, WhisperEngine
from localdev.human_speech import CLIPS, TWO_CITIES_OPENING, HumanClip, clip
from localdev.speech import silence
from localdev.wer import normalise, word_errors
from plugins.baseten_stt.models import STTOptions
from plugins.baseten_stt.protocol import (
    PCM_SAMPLE_RATE,
    Encoding,
    EndAudioReply,
    ErrorFrame,
    StreamingWhisperInput,
    TranscriptionResult,
    end_audio_message,
    parse_server_message,
)

SAMPLE_RATE = PCM_SAMPLE_RATE
FRAME_BYTES = Encoding.PCM_S16LE.frame_bytes
FRAME_SAMPLES = Encoding.PCM_S16LE.frame_samples
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
#: Silence after each clip: well over the VAD's 300 ms, like a pause between turns.
GAP_S = 1.2
#: Streams start at a random offset in [0, STAGGER_S) (seeded).
STAGGER_S = 1.0
SEED = 20_240_901
DEFAULT_STREAMS = (1, 2, 4, 8)
DEFAULT_SECONDS = 40.0
QUICK_STREAMS = (1, 2)
QUICK_SECONDS = 8.0
DECODE_RUNS = 3
#: The goal: GOAL_STREAMS concurrent real-time streams at final p95 <= P95_GOAL_MS.
P95_GOAL_MS = 600.0
GOAL_STREAMS = 4
#: A level only counts when it heard the words (offline, tiny.en hears these clips
#: word-exact; 10% leaves room for a VAD split that moves punctuation).
MAX_WER = 0.10
#: After end_audio the server first decodes whatever is queued; generous for N=8.
FINISH_TIMEOUT_S = 120.0
API_KEY = "whisper-bench"
ROUTE = "/environments/production/websocket"


# --------------------------------------------------------------------------- audio
@dataclass(frozen=True)
class Utterance:
    """One or more human clips played back to back, decoded as one utterance."""

    label: str
    clips: tuple[HumanClip, ...]

    def samples(self) -> npt.NDArray[np.int16]:
        return np.concatenate([c.samples(sample_rate=SAMPLE_RATE) for c in self.clips])

    @property
    def text(self) -> str:
        return " ".join(c.text for c in self.clips)


def opening_until(end_s: float, words: int) -> HumanClip:
    """The *Two Cities* opening up to ``end_s`` (a pause), with its first ``words`` words."""
    text = " ".join(TWO_CITIES_OPENING.text.split()[:words]).rstrip(",")
    return dataclasses.replace(
        TWO_CITIES_OPENING, name=f"two_cities_opening_{end_s:g}s", text=text, end_s=end_s
    )


def utterances() -> list[Utterance]:
    """~1, 2, 4, 7, 10, 15, 25 s of human speech.

    The two long cuts end in pauses of the reading (found with word timestamps and frame
    levels: 14.8-15.2 s after "season of Light,", 24.0-24.6 s after "nothing before us,").
    """
    return [
        Utterance("1 s", (clip("audioeval_hello_world"),)),
        Utterance("2 s", (clip("endgame_talking_about"),)),
        Utterance("4 s", (clip("endgame_ditch"),)),
        Utterance("7 s", (clip("two_cities_best_of_times"), clip("two_cities_age_of_wisdom"))),
        Utterance("10 s", (clip("beckett_fail_better"),)),
        Utterance("15 s", (opening_until(15.0, 42),)),
        Utterance("25 s", (opening_until(24.4, 70),)),
    ]


def frames(pcm: npt.NDArray[np.int16]) -> list[bytes]:
    """``pcm`` as exact 1024-byte frames (the last one zero-padded)."""
    padded = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES, dtype=np.int16)])
    raw = padded.astype("<i2").tobytes()
    return [raw[i : i + FRAME_BYTES] for i in range(0, len(raw), FRAME_BYTES)]


def wer_of(pairs: Sequence[tuple[str, str]]) -> float:
    """Pooled WER of (reference, hypothesis) pairs: all errors over all reference words."""
    words = sum(len(normalise(ref)) for ref, _ in pairs)
    errors = sum(word_errors(ref, hyp) for ref, hyp in pairs)
    return errors / words if words else float("nan")


def plugin_first_message() -> StreamingWhisperInput:
    """The first message our plugin sends by default, plus the pipeline latency metric."""
    msg = StreamingWhisperInput.model_validate_json(STTOptions().first_message())
    msg.streaming_params.include_pipeline_latency_metric = True
    return msg


# --------------------------------------------------------------------------- 1. decode cost
@dataclass
class Timing:
    """One ``transcribe``: wall time, what it heard, how many encoder passes it took."""

    ms: float
    wer: float
    encoder_passes: int


@dataclass
class DecodeRow:
    label: str
    audio_s: float
    window_frames: int
    windowed: list[Timing]
    full: list[Timing]

    @staticmethod
    def median_ms(timings: list[Timing]) -> float:
        return statistics.median(t.ms for t in timings)


@contextlib.contextmanager
def full_encoder_window() -> Iterator[None]:
    """Every window is Whisper's 30 s while inside (the stand-in before windowing)."""
    with mock.patch.object(whisper, "MIN_WINDOW_S", FULL_WINDOW_FRAMES // MEL_FRAMES_PER_S):
        yield


def timed_transcribe(engine: WhisperEngine, utt: Utterance) -> Timing:
    """One ``transcribe`` of ``utt``, as the server calls it, with encoder calls counted.

    faster-whisper runs the encoder again from the last timestamp when the decoder
    stops before the end of the audio (its seek loop), and ``transcribe`` redoes a
    loop-looking decode at 30 s: both show as more than one pass.
    """
    pcm = utt.samples()
    params = plugin_first_message().whisper_params
    model = engine._model
    with mock.patch.object(model, "encode", wraps=model.encode) as encode:
        started = time.perf_counter()
        heard = engine.transcribe(pcm, time_offset=0.0, params=params).text
        ms = (time.perf_counter() - started) * 1000
    return Timing(ms=ms, wer=wer_of([(utt.text, heard)]), encoder_passes=encode.call_count)


def decode_row(engine: WhisperEngine, utt: Utterance, runs: int) -> DecodeRow:
    audio_s = len(utt.samples()) / SAMPLE_RATE
    row = DecodeRow(utt.label, audio_s, whisper.window_frames(audio_s), [], [])
    for _ in range(runs):  # interleaved, so load drift hits both alike
        row.windowed.append(timed_transcribe(engine, utt))
        with full_encoder_window():
            row.full.append(timed_transcribe(engine, utt))
    return row


def decode_table(runs: int) -> list[DecodeRow]:
    engine = WhisperEngine(workers=1)
    engine.warm_up()
    rows = []
    for utt in utterances():
        print(f"[decode] {utt.label}", file=sys.stderr)
        rows.append(decode_row(engine, utt, runs))
    return rows


def _decode_cells(timings: list[Timing], audio_s: float) -> str:
    ms = DecodeRow.median_ms(timings)
    passes = max(t.encoder_passes for t in timings)
    return f"{ms:>6.0f} {ms / 1000 / audio_s:>6.3f} {timings[0].wer:>5.2f} {passes:>6}"


def format_decode_table(rows: list[DecodeRow], runs: int) -> list[str]:
    lines = [
        f"1. Decode cost per utterance: WhisperEngine(workers=1), one thread, word timestamps "
        f"on, median of {runs} run(s); RTF = decode / audio; passes = encoder runs",
        f"{'':<9}| {'':>7} | {'windowed (server path)':^35} | {'full 30 s window':^26} |",
        f"{'utterance':<9}| {'audio s':>7} | {'window s':>8} {'ms':>6} {'RTF':>6} {'WER':>5} "
        f"{'passes':>6} | {'ms':>6} {'RTF':>6} {'WER':>5} {'passes':>6} | speed-up",
    ]
    for r in rows:
        speedup = DecodeRow.median_ms(r.full) / DecodeRow.median_ms(r.windowed)
        lines.append(
            f"{r.label:<9}| {r.audio_s:>7.2f} | {r.window_frames / MEL_FRAMES_PER_S:>8.0f} "
            f"{_decode_cells(r.windowed, r.audio_s)} | {_decode_cells(r.full, r.audio_s)} | "
            f"{speedup:>7.1f}x"
        )
    return lines


# --------------------------------------------------------------------------- 2. concurrency
@dataclass
class StreamPlan:
    offset_s: float
    clips: list[HumanClip]
    audio: npt.NDArray[np.int16]

    @property
    def reference(self) -> str:
        return " ".join(c.text for c in self.clips)


def fill(order: Sequence[HumanClip], budget: int) -> list[HumanClip]:
    """Clips of ``order``, cycled, each with its gap, as long as they fit in ``budget``."""
    gap = round(GAP_S * SAMPLE_RATE)
    chosen: list[HumanClip] = []
    while True:
        before = len(chosen)
        for c in order:
            need = len(c.samples(sample_rate=SAMPLE_RATE)) + gap
            if need <= budget:
                chosen.append(c)
                budget -= need
        if len(chosen) == before:
            return chosen


def stream_plan(rng: random.Random, seconds: float) -> StreamPlan:
    """A seeded clip order filling ``seconds`` (whole clips, then silence to the end)."""
    order = list(CLIPS)
    rng.shuffle(order)
    budget = round(seconds * SAMPLE_RATE)
    chosen = fill(order, budget)
    parts = [p for c in chosen for p in (c.samples(sample_rate=SAMPLE_RATE), silence(GAP_S))]
    used = sum(len(p) for p in parts)
    audio = np.concatenate([*parts, silence((budget - used) / SAMPLE_RATE)])
    return StreamPlan(offset_s=rng.uniform(0.0, STAGGER_S), clips=chosen, audio=audio)


@dataclass
class Final:
    text: str
    pipeline_ms: float | None
    client_ms: float | None
    audio_length_s: float
    flush: bool


@dataclass
class StreamResult:
    reference: str
    audio_s: float
    finals: list[Final] = field(default_factory=list)
    partials: int = 0
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    pace_lag_ms: list[float] = field(default_factory=list)

    @property
    def hypothesis(self) -> str:
        return " ".join(f.text for f in self.finals if f.text)


def trigger_latency_ms(sent_at: list[float], consumed_s: float, now: float) -> float | None:
    """Send time of the frame that ended the buffer (stream audio ``consumed_s``) -> now."""
    k = round(consumed_s / FRAME_S) - 1
    return (now - sent_at[k]) * 1000 if 0 <= k < len(sent_at) else None


def on_message(raw: str, out: StreamResult, sent_at: list[float], consumed_s: float) -> float:
    """Record one server message; returns the stream audio consumed by finals so far."""
    now = time.monotonic()
    try:
        msg = parse_server_message(raw)
    except ValueError as exc:
        out.errors.append(f"unparsable server message: {exc}")
        return consumed_s
    if isinstance(msg, TranscriptionResult) and not msg.is_final:
        out.partials += 1
    elif isinstance(msg, TranscriptionResult):
        consumed_s += msg.audio_length_sec or 0.0
        flush = bool(msg.is_end_of_audio_flush)
        latency = msg.pipeline_latency
        out.finals.append(
            Final(
                text=msg.text,
                pipeline_ms=None if latency is None else latency * 1000,
                client_ms=None if flush else trigger_latency_ms(sent_at, consumed_s, now),
                audio_length_s=msg.audio_length_sec or 0.0,
                flush=flush,
            )
        )
    elif isinstance(msg, ErrorFrame):
        out.errors.append(msg.body.description)
    elif isinstance(msg, EndAudioReply) and msg.finished:
        out.finished = True
    return consumed_s


async def receive(
    ws: aiohttp.ClientWebSocketResponse, out: StreamResult, sent: list[float]
) -> None:
    consumed_s = 0.0
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            out.errors.append(f"unexpected {msg.type.name} message")
            return
        consumed_s = on_message(msg.data, out, sent, consumed_s)
        if out.finished:
            return
    out.errors.append(f"server closed ({ws.close_code}) before finished")


async def send_audio(
    ws: aiohttp.ClientWebSocketResponse, plan: StreamPlan, out: StreamResult, sent: list[float]
) -> None:
    """Frames in real time on an absolute schedule (no drift), after the stagger."""
    await asyncio.sleep(plan.offset_s)
    t0 = time.monotonic()
    for i, frame in enumerate(frames(plan.audio)):
        due = t0 + i * FRAME_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send_bytes(frame)
        now = time.monotonic()
        sent.append(now)
        out.pace_lag_ms.append(max(0.0, now - due) * 1000)


async def run_stream(http: aiohttp.ClientSession, url: str, plan: StreamPlan) -> StreamResult:
    out = StreamResult(reference=plan.reference, audio_s=len(plan.audio) / SAMPLE_RATE)
    sent: list[float] = []
    headers = {"Authorization": f"Api-Key {API_KEY}"}
    try:
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_str(plugin_first_message().to_wire())
            receiver = asyncio.create_task(receive(ws, out, sent))
            await send_audio(ws, plan, out, sent)
            await ws.send_str(end_audio_message())
            await asyncio.wait_for(receiver, FINISH_TIMEOUT_S)
    except (aiohttp.ClientError, TimeoutError) as exc:
        out.errors.append(f"{type(exc).__name__}: {exc}")
    return out


@dataclass
class Level:
    """One N: its streams, the server's counters over the run and its final decodes."""

    streams: int
    results: list[StreamResult]
    counters: dict[str, float]
    final_decode_ms: list[float]
    wall_s: float

    @property
    def vad_finals(self) -> list[Final]:
        return [f for r in self.results for f in r.finals if not f.flush]

    @property
    def pipeline(self) -> dict[str, float]:
        return summary([f.pipeline_ms for f in self.vad_finals if f.pipeline_ms is not None])

    @property
    def client(self) -> dict[str, float]:
        return summary([f.client_ms for f in self.vad_finals if f.client_ms is not None])

    @property
    def decode(self) -> dict[str, float]:
        return summary(self.final_decode_ms)

    @property
    def pace_lag(self) -> dict[str, float]:
        return summary([x for r in self.results for x in r.pace_lag_ms])

    @property
    def wer(self) -> float:
        return wer_of([(r.reference, r.hypothesis) for r in self.results])

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in r.errors] + [
            "stream did not finish" for r in self.results if not r.finished
        ]

    @property
    def ok(self) -> bool:
        """Met the goal's latency with the words heard and nothing broken."""
        p95 = self.pipeline["p95"]
        return bool(p95 <= P95_GOAL_MS and self.wer <= MAX_WER and not self.errors)


COUNTERS = ("finals_sent", "empty_finals_sent", "partials_sent", "partials_dropped")


async def run_level(srv: BasetenServerProcess, n: int, seconds: float) -> Level:
    await srv.wait_for(lambda s: s["active_connections"] == 0)
    before = await srv.stats()
    rng = random.Random(f"{SEED}-{n}")
    plans = [stream_plan(rng, seconds) for _ in range(n)]
    started_wall, started = time.time(), time.monotonic()
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(run_stream(http, srv.url + ROUTE, p) for p in plans))
    wall_s = time.monotonic() - started
    after = await srv.stats()
    return Level(
        streams=n,
        results=list(results),
        counters={k: after[k] - before[k] for k in COUNTERS},
        final_decode_ms=[
            (d["ended"] - d["started"]) * 1000
            for d in after["decodes"]
            if d["is_final"] and d["started"] >= started_wall
        ],
        wall_s=wall_s,
    )


async def concurrency(streams: Sequence[int], seconds: float) -> list[Level]:
    levels = []
    async with BasetenServerProcess(api_key=API_KEY, extra_args=("--log-level", "WARNING")) as srv:
        for n in streams:
            print(f"[streams] N={n} x {seconds:g} s", file=sys.stderr)
            levels.append(await run_level(srv, n, seconds))
    return levels


def _trio(s: dict[str, float]) -> str:
    return f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"


#: Concurrency table columns: (title, sub-title, width).
LEVEL_COLUMNS = (
    ("N", "", 3),
    ("finals", "(empty)", 8),
    ("VAD silence->final sent", "p50 / p95 / max", 23),
    ("client-seen", "p50 / p95 / max", 17),
    ("final decode", "p50 / p95", 12),
    ("partials", "sent / dropped", 14),
    ("WER", "", 6),
    ("pace lag", "p95", 8),
    ("errors", "", 6),
)


def _row(cells: Sequence[str]) -> str:
    return " | ".join(f"{c:>{w}}" for c, (*_, w) in zip(cells, LEVEL_COLUMNS, strict=True))


def level_cells(lv: Level) -> list[str]:
    c, d = lv.counters, lv.decode
    return [
        str(lv.streams),
        f"{len(lv.vad_finals)} ({c['empty_finals_sent']:.0f})",
        _trio(lv.pipeline),
        _trio(lv.client),
        f"{d['p50']:.0f} / {d['p95']:.0f}",
        f"{c['partials_sent']:.0f} / {c['partials_dropped']:.0f}",
        f"{lv.wer:.3f}",
        f"{lv.pace_lag['p95']:.1f}",
        str(len(lv.errors)),
    ]


def format_levels(levels: list[Level], seconds: float) -> list[str]:
    return [
        f"2. Latency under concurrency: N real-time streams of human clips ({seconds:g} s of "
        f"audio each) against one server process ({DEFAULT_INFERENCE_WORKERS} decode threads); "
        "ms",
        _row([t for t, *_ in LEVEL_COLUMNS]),
        _row([sub for _, sub, _ in LEVEL_COLUMNS]),
        *(_row(level_cells(lv)) for lv in levels),
        "   client-seen: the frame that ended the VAD silence sent -> final received; "
        "latency - final decode = queueing (behind this stream's partial or the pool); "
        "WER: all finals of a stream vs all its clips",
    ]


def format_goal(levels: list[Level]) -> list[str]:
    passing = [lv.streams for lv in levels if lv.ok]
    best = max(passing, default=None)
    ran = {lv.streams for lv in levels}
    verdict = "PASS" if best is not None and best >= GOAL_STREAMS else "FAIL"
    note = "" if any(n >= GOAL_STREAMS for n in ran) else f" (no N >= {GOAL_STREAMS} was run)"
    return [
        f"largest N with p95 <= {P95_GOAL_MS:.0f} ms (and WER <= {MAX_WER:.0%}, no errors): "
        + ("none" if best is None else str(best)),
        f"goal: >= {GOAL_STREAMS} concurrent real-time streams at p95 <= {P95_GOAL_MS:.0f} ms: "
        f"{verdict}{note}",
    ]


# --------------------------------------------------------------------------- main
def level_json(lv: Level) -> dict[str, Any]:
    return {
        "streams": lv.streams,
        "wall_s": lv.wall_s,
        "pipeline_ms": lv.pipeline,
        "client_ms": lv.client,
        "final_decode_ms": lv.decode,
        "pace_lag_ms": lv.pace_lag,
        "wer": lv.wer,
        "ok": lv.ok,
        "counters": lv.counters,
        "errors": lv.errors,
        "final_decode_ms_raw": lv.final_decode_ms,
        "results": [dataclasses.asdict(r) | {"hypothesis": r.hypothesis} for r in lv.results],
    }


def _streams(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"stream counts must be >= 1, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.whisper_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--streams",
        type=_streams,
        default=None,
        help="concurrency levels, comma-separated (default 1,2,4,8; quick: 1,2)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"audio per stream (default {DEFAULT_SECONDS:g}; quick: {QUICK_SECONDS:g}; >= 3)",
    )
    p.add_argument("--skip-decode-table", action="store_true", help="only the concurrency part")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write all numbers")
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test): 1 decode run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    streams = args.streams or list(QUICK_STREAMS if args.quick else DEFAULT_STREAMS)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if seconds < 3:
        _parser().error("--seconds must be >= 3 (a clip and its pause)")
    runs = 1 if args.quick else DECODE_RUNS
    started = time.monotonic()
    lines = [
        f"Whisper stand-in benchmark | {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, loadavg {os.getloadavg()[0]:.2f}",
        "",
    ]
    data: dict[str, Any] = {"streams": streams, "seconds": seconds, "decode_runs": runs}
    if not args.skip_decode_table:
        rows = decode_table(runs)
        lines += [*format_decode_table(rows, runs), ""]
        data["decode"] = [dataclasses.asdict(r) for r in rows]
    levels = asyncio.run(concurrency(streams, seconds))
    lines += [*format_levels(levels, seconds), "", *format_goal(levels)]
    elapsed = time.monotonic() - started
    lines.append(f"(total {elapsed:.0f} s)")
    print("\n".join(lines))
    if args.json is not None:
        data |= {"levels": [level_json(lv) for lv in levels], "elapsed_s": elapsed}
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
