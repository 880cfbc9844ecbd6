"""STT client benchmark: our ``plugins.baseten_stt`` vs the official ``livekit-plugins-baseten``.

``uv run python -m bench.stt_client_bench [--quick] [--models whisper qwen3-asr]
[--streams 50 100 200] [--seconds S] [--json out.json] [--profile]``

Per model (``--models``, default both: Whisper v1 and Qwen3-ASR streaming), both clients
(``STT(model=...)``) run in ONE invocation against the same local Baseten server
(``python -m localdev.baseten --protocol whisper|qwen3``, one per model, started and
stopped in turn; a separate process, so server CPU is never billed to a client) on the
same espeak-ng audio, pushed in real time as 20 ms frames. Every run is a fresh worker
process (``bench/stt_worker.py``) holding one client only. Ratios ours/official are
only ever taken within one model.

A. client-added latency: the server logs the wall-clock time each transcription frame
   left it (``--send-log``, written by the session core both protocols share); a
   stream's INTERIM/FINAL events are matched to those frames by websocket path, order
   and text (scripted server engine, see ``Server``).
B. CPU per audio second: process CPU time of the worker while its streams stream,
   divided by audio seconds; the same pacing loop with frames created and dropped is
   measured first in the same process and subtracted ("net").
C. capacity: K concurrent real-time streams in one process against a scripted (near
   zero CPU) server engine; the client keeps up when the pacing loop's lag stays under
   one frame (20 ms) at p95 and no event is lost.

Both clients are treated alike, and both models the same way:

* end of input is never signalled: events are measured mid-stream, then every stream is
  ``aclose()``d. Needed for the official Whisper client (it never finishes a stream);
  the official Qwen3 path does finish (commit, then its flush reply with ``is_final``,
  checked against the stand-in, also with a ragged tail), but a commit would add one
  forced final per stream and a different close, so Qwen3 is measured like Whisper.
* the audio pushed per stream is a whole number of the model's protocol frames, so
  neither client is left holding a partial one at close: Whisper 512-sample binary
  frames (a short last frame kills the official client), Qwen3 100 ms (1600-sample)
  ``append`` chunks (both clients rechunk to that; the official one would send a short
  tail only on a commit, which is harmless, so there this only keeps "audio seconds"
  equal to audio sent). See ``PROTOCOL_FRAME_SAMPLES``.
* server VAD settings are each client's per-model defaults, which agree (Whisper
  300/30 ms, Qwen3 500/100 ms silence/pad: both < the 0.9 s pauses), and both ask for
  partials every 0.5 s. The official Qwen3 path ignores ``sample_rate``/``encoding``/
  ``buffer_size_seconds``; none is passed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.analysis import Cpu, Matched, cpu_of, match_run, summary
from localdev.baseten.sendlog import read_send_log
from localdev.speech import silence, synthesize, write_wav_pcm16

CLIENTS = ("ours", "official")
#: ``STT(model=...)`` -> the stand-in's ``--protocol``.
PROTOCOLS = {"whisper": "whisper", "qwen3-asr": "qwen3"}
MODELS = tuple(PROTOCOLS)
#: espeak-ng phrases (the scripted engine answers made-up words; only timing matters here).
PHRASES = [
    "book a table for two",
    "what is the weather like today",
    "hello how are you",
    "cancel my order please",
    "turn on the lights",
]
#: Silence between phrases: > the 300 ms server VAD end, like a pause between turns.
GAP_S = 0.9
SAMPLE_RATE = 16_000
FRAME_SAMPLES = 320
#: Samples per protocol frame as both clients send them: Whisper's binary frame (the
#: official ``buffer_size_seconds`` 0.032 s), Qwen3's 100 ms ``append`` chunk.
PROTOCOL_FRAME_SAMPLES = {"whisper": 512, "qwen3-asr": 1600}
#: lcm(320, 512) samples: the audio file is a whole number of 20 ms input frames AND of
#: 512-sample Whisper frames (the per-stream push length is aligned per model anyway).
ALIGN_SAMPLES = 2560
FRAME_MS = 20.0

# Goals (from the brief): ours <= official on latency and CPU, <= 2 ms p95 added
# latency, >= 200 real-time streams per core for the client alone.
GOAL_LATENCY_P95_MS = 2.0
GOAL_STREAMS_PER_CORE = 200
GOAL_VERIFY_K = 200


@dataclass
class Plan:
    latency_streams: int
    seconds: float
    capacity: list[int]
    capacity_seconds: float
    baseline_seconds: float
    grace: float
    repeats: int


QUICK = Plan(
    latency_streams=4,
    seconds=3.0,
    capacity=[50],
    capacity_seconds=3.0,
    baseline_seconds=1.0,
    grace=1.0,
    repeats=1,
)
FULL = Plan(
    latency_streams=10,
    seconds=20.0,
    capacity=[50, 100, 200],
    capacity_seconds=15.0,
    baseline_seconds=3.0,
    grace=1.5,
    repeats=2,
)


# --------------------------------------------------------------------------- servers
class Server:
    """``python -m localdev.baseten --protocol ...`` in its own process, with a send log."""

    def __init__(self, *, workdir: Path, model: str) -> None:
        """Start a ``model`` server on a free loopback port, scripted engine inline.

        Why not Whisper: a decode thread holding the GIL between ``send`` and its
        timestamp made send times late (with the earlier pocketsphinx engine up to 21 ms:
        after-before gap p99 17 ms), i.e. negative client latencies, and hundreds of
        streams would make the server, not the client, the bottleneck. Recognition
        content does not change client-side cost; the scripted results have the same
        fields, word timestamps and cadence. For the same reason the VAD is the
        frame-energy one: Silero costs ~0.2 ms per frame, 1.2 s of CPU per second at
        200 streams.
        """
        self.model = model
        self.send_log = workdir / f"send-{model}.jsonl"
        self._stderr = workdir / f"server-{model}.log"
        cmd = [
            sys.executable,
            "-m",
            "localdev.baseten",
            "--protocol",
            PROTOCOLS[model],
            "--port",
            "0",
            "--engine",
            "scripted",
            "--workers",
            "0",
            "--vad",
            "energy",
            "--send-log",
            str(self.send_log),
            "--log-level",
            "WARNING",
        ]
        with self._stderr.open("w") as err:
            self.proc = subprocess.Popen(cmd, stderr=err, stdout=subprocess.DEVNULL)
        self.url_base = self._wait_listening()
        self.ps = psutil.Process(self.proc.pid)

    def _wait_listening(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = re.search(r"listening on (ws://[^/\s]+)", self._stderr.read_text())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"server did not start: {self._stderr.read_text()[-2000:]}")

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    model: str
    client: str
    streams: int
    result: dict[str, Any]
    matched: Matched
    cpu: Cpu
    server_cpu_s: float

    @property
    def lags(self) -> dict[str, float]:
        return summary(self.result["lags_ms"])


@dataclass
class Phase:
    """All runs of one client in one phase (repeats are merged)."""

    runs: list[Run] = field(default_factory=list)

    def matched(self) -> Matched:
        m = Matched()
        for r in self.runs:
            m.interim_ms += r.matched.interim_ms
            m.final_ms += r.matched.final_ms
            m.lost += r.matched.lost
            m.unexpected += r.matched.unexpected
            m.server_frames += r.matched.server_frames
            m.errors += r.matched.errors
        return m

    def cpu(self) -> Cpu:
        res = [r.result for r in self.runs]
        raw = sum(r["client_cpu_s"] for r in res) / sum(r["audio_s"] for r in res)
        base = sum(r["baseline_cpu_s"] for r in res) / sum(
            r["streams"] * r["baseline_seconds"] for r in res
        )
        return Cpu(raw_ms=1000 * raw, baseline_ms=1000 * base)

    def lags(self) -> dict[str, float]:
        return summary([x for r in self.runs for x in r.result["lags_ms"]])

    def server_pct(self) -> float:
        wall = sum(r.result["client_wall_s"] for r in self.runs)
        return 100 * sum(r.server_cpu_s for r in self.runs) / wall if wall else float("nan")

    def rss_mb(self) -> float:
        return float(max(r.result["rss_mb"] for r in self.runs))


def run_worker(
    *,
    client: str,
    server: Server,
    streams: int,
    seconds: float,
    plan: Plan,
    audio: Path,
    workdir: Path,
    tag: str,
    profile: Path | None = None,
) -> Run:
    run_id = f"{tag}-{server.model}-{client}-{time.monotonic_ns() % 10**9}"
    out = workdir / f"{run_id}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.stt_worker",
        "--client",
        client,
        "--model",
        server.model,
        "--url-base",
        server.url_base,
        "--run-id",
        run_id,
        "--streams",
        str(streams),
        "--seconds",
        str(seconds),
        "--baseline-seconds",
        str(plan.baseline_seconds),
        "--grace",
        str(plan.grace),
        "--audio",
        str(audio),
        "--out",
        str(out),
    ]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    cpu0 = server.cpu_s()
    err = workdir / f"{run_id}.stderr"
    with err.open("w") as ef:
        proc = subprocess.run(
            cmd, stderr=ef, stdout=subprocess.DEVNULL, timeout=seconds + 120, check=False
        )
    server_cpu = server.cpu_s() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {run_id} failed: {err.read_text()[-3000:]}")
    result = json.loads(out.read_text())
    matched = match_run(result, read_send_log(server.send_log), run_id)
    return Run(
        model=server.model,
        client=client,
        streams=streams,
        result=result,
        matched=matched,
        cpu=cpu_of(result),
        server_cpu_s=server_cpu,
    )


def build_audio(path: Path) -> float:
    """espeak-ng phrases separated by pauses, padded to ``ALIGN_SAMPLES``; returns seconds."""
    parts = [silence(0.3)]
    for p in PHRASES:
        parts += [synthesize(p, sample_rate=SAMPLE_RATE), silence(GAP_S)]
    pcm = np.concatenate(parts)
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % ALIGN_SAMPLES, dtype=np.int16)])
    write_wav_pcm16(path, pcm, SAMPLE_RATE)
    return len(pcm) / SAMPLE_RATE


def aligned_seconds(seconds: float, model: str) -> float:
    """Round up so each stream pushes whole 20 ms frames AND whole protocol frames of
    ``model`` (see ``PROTOCOL_FRAME_SAMPLES``): Whisper 0.16 s steps, Qwen3 0.1 s."""
    unit = math.lcm(FRAME_SAMPLES, PROTOCOL_FRAME_SAMPLES[model]) / SAMPLE_RATE
    return math.ceil(seconds / unit - 1e-9) * unit


# --------------------------------------------------------------------------- report
def _f(x: float, nd: int = 2) -> str:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return "n/a" if math.isnan(x) else "inf"
    return f"{x:.{nd}f}"


def _trio(s: dict[str, float]) -> str:
    return f"{_f(s['p50'])} / {_f(s['p95'])} / {_f(s['max'])}"


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


Write = Callable[[str], None]


@dataclass
class ModelRuns:
    """Everything measured for one model: both clients against one server."""

    model: str
    seconds: float  # phase A/B audio per stream, aligned for this model
    capacity_seconds: float
    latency: dict[str, Phase] = field(default_factory=lambda: {c: Phase() for c in CLIENTS})
    capacity: dict[int, dict[str, Phase]] = field(default_factory=dict)
    stamp_gap: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)


def _latency_rows(mr: ModelRuns, w: Write, out: dict[str, Any]) -> None:
    for c in CLIENTS:
        m = mr.latency[c].matched()
        si, sf, sa = summary(m.interim_ms), summary(m.final_ms), summary(m.all_ms)
        w(
            f"{mr.model:<10}{c:<9}| {_trio(si):<22}| {_trio(sf):<22}| {_trio(sa):<22}| "
            f"{si['n']:>4}/{sf['n']:<5}| {m.lost:>4} | {len(m.errors)}"
        )
        out[c] = {
            "interim_ms": si,
            "final_ms": sf,
            "all_ms": sa,
            "lost": m.lost,
            "unexpected": m.unexpected,
            "errors": m.errors[:5],
        }


def _cpu_rows(mr: ModelRuns, w: Write, out: dict[str, Any]) -> None:
    for c in CLIENTS:
        cpu = mr.latency[c].cpu()
        w(
            f"{mr.model:<10}{c:<9}| {_f(cpu.raw_ms, 3):>7} | {_f(cpu.baseline_ms, 3):>7} | "
            f"{_f(cpu.net_ms, 3):>7} | {_f(cpu.streams_per_core, 0)}"
        )
        out[c]["cpu"] = {
            "raw_ms": cpu.raw_ms,
            "baseline_ms": cpu.baseline_ms,
            "net_ms": cpu.net_ms,
            "streams_per_core": cpu.streams_per_core,
        }


def _capacity_rows(mr: ModelRuns, k: int, w: Write, out: dict[str, Any]) -> None:
    for c in CLIENTS:
        ph = mr.capacity[k][c]
        m = ph.matched()
        lags = ph.lags()
        cpu = ph.cpu()
        ok = lags["p95"] < FRAME_MS and m.lost == 0 and not m.errors
        core_pct = cpu.raw_ms * k / 10  # ms per audio-s x K streams -> % of a core
        w(
            f"{k:>4} {mr.model:<10}{c:<9}| {_trio(lags):<22}| {'yes' if ok else 'NO':<8} | "
            f"{m.lost:>4} | {_f(summary(m.all_ms)['p95']):>10} | {_f(cpu.net_ms, 3):>12} | "
            f"{_f(cpu.streams_per_core, 0):>12} | {_f(core_pct, 0):>6} | "
            f"{_f(ph.server_pct(), 0):>5} | {_f(ph.rss_mb(), 0)}"
        )
        out[c] = {
            "lag_ms": lags,
            "keeps_up": ok,
            "lost": m.lost,
            "errors": m.errors[:5],
            "latency_ms": summary(m.all_ms),
            "cpu_raw_ms": cpu.raw_ms,
            "cpu_net_ms": cpu.net_ms,
            "streams_per_core": cpu.streams_per_core,
            "server_cpu_pct": ph.server_pct(),
            "rss_mb": ph.rss_mb(),
        }


def _ratios_and_goals(mr: ModelRuns, w: Write, out: dict[str, Any]) -> None:
    """Ratios ours/official and the goals, within ``mr.model`` only."""
    lat = {c: summary(mr.latency[c].matched().all_ms)["p95"] for c in CLIENTS}
    cpu_net = {c: mr.latency[c].cpu().net_ms for c in CLIENTS}
    lat_ratio = _ratio(lat["ours"], lat["official"])
    cpu_ratio = _ratio(cpu_net["ours"], cpu_net["official"])
    w(
        f"ratios ours/official ({mr.model}, same run): latency p95 {_f(lat_ratio)}, "
        f"net CPU per audio-s {_f(cpu_ratio)}"
    )
    # Streams per core is judged where it matters, at the largest K run (>= 200): per
    # stream costs shrink with K as event-loop wake-ups are shared, so phase B's small N
    # understates capacity; both are printed.
    verify_k = max(mr.capacity, default=None)
    derived = (
        mr.capacity[verify_k]["ours"].cpu().streams_per_core
        if verify_k is not None
        else mr.latency["ours"].cpu().streams_per_core
    )
    verified = (
        out["capacity"][str(verify_k)]["ours"]["keeps_up"]
        if verify_k is not None and verify_k >= GOAL_VERIFY_K
        else None
    )
    goals = [
        ("latency ratio ours/official <= 1", lat_ratio <= 1.0, f"{_f(lat_ratio)}"),
        ("CPU ratio ours/official <= 1", cpu_ratio <= 1.0, f"{_f(cpu_ratio)}"),
        (
            f"ours client-added latency p95 <= {GOAL_LATENCY_P95_MS:g} ms",
            lat["ours"] <= GOAL_LATENCY_P95_MS,
            f"{_f(lat['ours'])} ms",
        ),
        (
            f"ours >= {GOAL_STREAMS_PER_CORE} real-time streams per core",
            derived >= GOAL_STREAMS_PER_CORE and verified is True,
            f"derived {_f(derived, 0)} (net CPU at K={verify_k}); verified K>={GOAL_VERIFY_K}: "
            + ("not run" if verified is None else ("kept up" if verified else "did NOT keep up")),
        ),
    ]
    w(f"goals ({mr.model}):")
    out["goals"] = {}
    for name, ok, detail in goals:
        w(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        out["goals"][name] = {"pass": bool(ok), "detail": detail}
    out["ratios"] = {"latency_p95": lat_ratio, "cpu_net": cpu_ratio}


def report(plan: Plan, runs: list[ModelRuns]) -> tuple[str, dict[str, Any]]:
    """The tables (phase by phase, one row per model and client) and the JSON numbers."""
    lines: list[str] = []
    data: dict[str, Any] = {"plan": plan.__dict__, "models": {}}
    for mr in runs:
        data["models"][mr.model] = {
            "protocol": PROTOCOLS[mr.model],
            "seconds": mr.seconds,
            "capacity_seconds": mr.capacity_seconds,
            "stamp_gap_ms": mr.stamp_gap,
            "latency_phase": {},
            "capacity": {},
        }
    w = lines.append
    w(
        f"STT client benchmark: ours (plugins.baseten_stt) vs official (livekit-plugins-baseten) "
        f"| {psutil.cpu_count()} cores, Python {platform.python_version()}, "
        f"loadavg {os.getloadavg()[0]:.2f}"
    )
    w(
        "models: "
        + ", ".join(f"{mr.model} (server --protocol {PROTOCOLS[mr.model]})" for mr in runs)
        + "; one server per model, both clients against it; ratios are within a model"
    )
    w(
        f"audio: espeak-ng phrases + {GAP_S} s pauses, 16 kHz, 20 ms frames in real time; "
        f"repeats={plan.repeats} (client order alternates)"
    )
    w("")
    gaps = ", ".join(
        f"{mr.model} p50 {_f(mr.stamp_gap['p50'], 3)} ms, p95 {_f(mr.stamp_gap['p95'], 3)} ms"
        for mr in runs
    )
    w(
        f"A. client-added latency, server send -> SpeechEvent yielded "
        f"({plan.latency_streams} streams x {_f(plan.seconds, 1)} s), ms; server stamp "
        f"= before serialise+write (which took {gaps}: included, for both clients)"
    )
    w(
        f"{'model':<10}{'client':<9}| {'interim p50/p95/max':<22}| {'final p50/p95/max':<22}| "
        f"{'all p50/p95/max':<22}| events I/F | lost | errors"
    )
    for mr in runs:
        _latency_rows(mr, w, data["models"][mr.model]["latency_phase"])
    w("")
    w("B. CPU per audio second (same runs as A), ms CPU / audio-s per stream")
    w(
        f"{'model':<10}{'client':<9}| {'raw':>7} | {'harness':>7} | {'net':>7} | "
        "derived streams/core"
    )
    for mr in runs:
        _cpu_rows(mr, w, data["models"][mr.model]["latency_phase"])
    w("")
    w(
        f"C. capacity: K real-time streams in one process, scripted server engine "
        f"({_f(plan.capacity_seconds, 1)} s); keeps up = lag p95 < {FRAME_MS:.0f} ms and 0 lost"
    )
    w(
        f"{'K':>4} {'model':<10}{'client':<9}| {'lag p50/p95/max ms':<22}| keeps up | lost | "
        f"{'lat p95 ms':>10} | {'net CPU ms/s':>12} | {'streams/core':>12} | "
        f"{'core %':>6} | {'srv %':>5} | RSS MB"
    )
    for k in plan.capacity:
        for mr in runs:
            cap = data["models"][mr.model]["capacity"]
            cap[str(k)] = {}
            _capacity_rows(mr, k, w, cap[str(k)])
    for mr in runs:
        w("")
        _ratios_and_goals(mr, w, data["models"][mr.model])
    return "\n".join(lines), data


def print_profile(path: Path, model: str, client: str, top: int = 30) -> None:
    print(f"\n--- cProfile of {client} ({model}; pacing window; sorted by own time) ---")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


# --------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.stt_client_bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small plan, ~45 s per model on 2 cores")
    p.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        metavar="MODEL",
        help=f"STT(model=...) values to measure, each against its own server "
        f"(default: {' '.join(MODELS)})",
    )
    p.add_argument(
        "--streams",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="capacity phase stream counts (default 50 100 200; quick: 50)",
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="audio per stream in phases A/B (default 20)"
    )
    p.add_argument("--capacity-seconds", type=float, default=None, help="default 15")
    p.add_argument("--latency-streams", type=int, default=None, help="phase A/B (default 10)")
    p.add_argument("--repeats", type=int, default=None, help="runs per client (default 2)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep raw files (send logs, worker results, server/worker stderr) in DIR",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="finally profile each client (cProfile) at the first capacity K, per model",
    )
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    """The requested plan; seconds are aligned per model when run (``aligned_seconds``)."""
    base = QUICK if args.quick else FULL
    return Plan(
        latency_streams=args.latency_streams or base.latency_streams,
        seconds=args.seconds or base.seconds,
        capacity=list(args.streams or base.capacity),
        capacity_seconds=args.capacity_seconds or base.capacity_seconds,
        baseline_seconds=base.baseline_seconds,
        grace=base.grace,
        repeats=args.repeats or base.repeats,
    )


def run_model(model: str, plan: Plan, *, audio: Path, workdir: Path, profile: bool) -> ModelRuns:
    """Start ``model``'s server, run every phase for both clients, stop it."""
    mr = ModelRuns(
        model=model,
        seconds=aligned_seconds(plan.seconds, model),
        capacity_seconds=aligned_seconds(plan.capacity_seconds, model),
    )
    mr.capacity = {k: {c: Phase() for c in CLIENTS} for k in plan.capacity}
    server = Server(workdir=workdir, model=model)
    common: dict[str, Any] = {"server": server, "plan": plan, "audio": audio, "workdir": workdir}
    try:
        for r in range(plan.repeats):
            order = CLIENTS if r % 2 == 0 else CLIENTS[::-1]
            for c in order:
                print(
                    f"[A/B] {model} {c} x{plan.latency_streams} (repeat {r + 1})", file=sys.stderr
                )
                mr.latency[c].runs.append(
                    run_worker(
                        client=c,
                        streams=plan.latency_streams,
                        seconds=mr.seconds,
                        tag=f"lat{r}",
                        **common,
                    )
                )
            for k in plan.capacity:
                for c in order:
                    print(f"[C] {model} {c} K={k} (repeat {r + 1})", file=sys.stderr)
                    mr.capacity[k][c].runs.append(
                        run_worker(
                            client=c,
                            streams=k,
                            seconds=mr.capacity_seconds,
                            tag=f"cap{k}r{r}",
                            **common,
                        )
                    )
        if profile:
            k = plan.capacity[0]
            for c in CLIENTS:
                print(f"[profile] {model} {c} K={k}", file=sys.stderr)
                mr.profiles[c] = workdir / f"profile-{model}-{c}.pstats"
                run_worker(
                    client=c,
                    streams=k,
                    seconds=mr.capacity_seconds,
                    tag=f"prof{k}",
                    profile=mr.profiles[c],
                    **common,
                )
        mr.stamp_gap = summary(
            [(s.after_send - s.before_send) * 1000 for s in read_send_log(server.send_log)]
        )
    finally:
        server.close()
    return mr


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = make_plan(args)
    models = list(dict.fromkeys(args.models))  # de-duplicated, order kept
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stt-bench-") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        audio = workdir / "speech.wav"
        build_audio(audio)
        # One model at a time: its server is the only other busy process.
        runs = [
            run_model(m, plan, audio=audio, workdir=workdir, profile=args.profile) for m in models
        ]
        table, data = report(plan, runs)
        print(table)
        for mr in runs:
            for c, path in mr.profiles.items():
                print_profile(path, mr.model, c)
    elapsed = time.monotonic() - started
    print(f"\n(total {elapsed:.0f} s)")
    if args.json is not None:
        data["elapsed_s"] = elapsed
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
