"""Soak: back-to-back calls for a long time; does anything the worker holds keep growing?

``uv run python -m bench.soak [--duration-s 1800 | --calls N] [--json out.json] [--plot out.png]``

The setup of ``bench.e2e_bench`` (loopback livekit-server, the worker as users run it,
stand-ins for Baseten with real Whisper, OpenAI and Cartesia), one human-recorded turn per
call, calls back to back. The worker runs with ``PROCESS_STATS_INTERVAL_S=10``: its main
process and every job process log ``process_stats`` (RSS, open fds, OS threads, asyncio
tasks; ``agent/process_stats.py``); the forkserver (no asyncio, no logging of ours) and the
number of job processes are sampled with psutil at the same cadence.

Verdicts:

* **growth after warm-up** (duration mode): per series, the median of the first minute
  after ``--warmup-s`` against the median of the last minute; goal <= 5 %. The worker's
  and the forkserver's series come from the idle sample after each call (mid-call samples
  also hold that call's own tasks and sockets), the job processes' from the samples taken
  during calls. ``--report saved.json`` re-analyses a saved run without calls.
* **clear leak** (both modes, what CI runs with ``--calls``): a count sampled after every
  call (worker fds, threads, asyncio tasks; forkserver fds, threads; job processes) that
  rose after every one of the last ``LEAK_CALLS`` calls. Timing is not judged.

Exit code 1 when a clear leak is found (and, in duration mode, when growth exceeds 5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.e2e_bench import (
    BETWEEN_ROUNDS_S,
    WORKER_SETTINGS,
    BenchResult,
    _is_forkserver,
    job_processes,
    one_round,
    wait_idle_pool,
)
from localdev.demo import demo_services, plan_services
from localdev.user_turns import DEMO_TURN_NAMES, demo_turns

SAMPLE_INTERVAL_S = 10.0
#: With --calls (CI): sample each call sooner; the worker logs its stats this often then.
CALLS_SAMPLE_INTERVAL_S = 2.0
#: A count that rose after each of this many calls in a row is a clear leak (a fixed-size
#: pool or cache fills within the first calls; after that, growth every call is a leak).
LEAK_CALLS = 5
GROWTH_GOAL = 0.05
#: Counts judged per call (RSS is too noisy per call: allocator arenas grow in steps).
LEAK_SERIES = (
    "worker.fds",
    "worker.threads",
    "worker.asyncio_tasks",
    "forkserver.fds",
    "forkserver.threads",
    "job_processes",
)


@dataclass
class Soak:
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)  # every SAMPLE_INTERVAL_S
    after_call: list[dict[str, Any]] = field(default_factory=list)  # once per call, idle
    interval_s: float = SAMPLE_INTERVAL_S
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def _forkserver(worker_pid: int) -> psutil.Process | None:
    try:
        return next(
            (p for p in psutil.Process(worker_pid).children(recursive=True) if _is_forkserver(p)),
            None,
        )
    except psutil.Error:
        return None


def sample(worker: Any, t0: float) -> dict[str, Any]:
    """The newest ``process_stats`` of the worker and of each job process, and psutil's view
    of the forkserver and the job-process count."""
    row: dict[str, Any] = {"t_s": round(time.monotonic() - t0, 1)}
    lines = worker.find_lines(lambda ln: ln["message"] == "process_stats")
    main = [ln for ln in lines if ln.get("role") == "worker"]
    if main:
        for key in ("rss_mb", "fds", "threads", "asyncio_tasks"):
            row[f"worker.{key}"] = main[-1].get(key)
    jobs: dict[int, dict[str, Any]] = {}
    for ln in lines:
        if ln.get("role") == "job":
            jobs[int(ln["pid"])] = ln
    live = {p.pid for p in job_processes(worker.pid)}
    current = [ln for pid, ln in jobs.items() if pid in live]
    for key in ("rss_mb", "fds", "threads", "asyncio_tasks"):
        values = [ln[key] for ln in current if isinstance(ln.get(key), int | float)]
        row[f"job.max_{key}"] = max(values) if values else None
    fs = _forkserver(worker.pid)
    if fs is not None:
        try:
            row["forkserver.rss_mb"] = round(fs.memory_info().rss / 2**20, 1)
            row["forkserver.fds"] = fs.num_fds()
            row["forkserver.threads"] = fs.num_threads()
        except psutil.Error:
            pass
    row["job_processes"] = len(live)
    return row


def clear_leaks(after_call: list[dict[str, Any]]) -> list[str]:
    """Series that rose after each of the last ``LEAK_CALLS`` calls."""
    leaks = []
    for name in LEAK_SERIES:
        values = [
            v for r in after_call[-(LEAK_CALLS + 1) :] if isinstance(v := r.get(name), int | float)
        ]
        if len(values) <= LEAK_CALLS:
            continue
        if all(b > a for a, b in itertools.pairwise(values)):
            leaks.append(f"{name} rose after each of the last {LEAK_CALLS} calls: {values}")
    return leaks


def growth(soak_json: dict[str, Any], warmup_s: float) -> dict[str, dict[str, float]]:
    """Per series, like against like: the worker's, the forkserver's and the job-process
    count from the idle samples after each call (a sample taken mid-call also counts that
    call's own tasks and sockets); the job processes' from the samples taken during calls."""
    idle = _growth(soak_json["after_call"], warmup_s, lambda k: not k.startswith("job."))
    busy = [s for s in soak_json["samples"] if s.get("job.max_rss_mb") is not None]
    return {**idle, **_growth(busy, warmup_s, lambda k: k.startswith("job."))}


def _growth(
    samples: list[dict[str, Any]], warmup_s: float, wanted: Callable[[str], bool]
) -> dict[str, dict[str, float]]:
    """Median of the first minute after warm-up vs of the last minute, per wanted series."""
    steady = [s for s in samples if s["t_s"] >= warmup_s]
    if not steady:
        return {}
    first = [s for s in steady if s["t_s"] < steady[0]["t_s"] + 60]
    last = [s for s in steady if s["t_s"] > steady[-1]["t_s"] - 60]
    out = {}
    for name in sorted(k for k in {k for s in steady for k in s} - {"t_s", "call"} if wanted(k)):
        a = [s[name] for s in first if isinstance(s.get(name), int | float)]
        b = [s[name] for s in last if isinstance(s.get(name), int | float)]
        if a and b and statistics.median(a) > 0:
            ma, mb = statistics.median(a), statistics.median(b)
            out[name] = {"first": ma, "last": mb, "growth": (mb - ma) / ma}
    return out


async def run(duration_s: float | None, calls: int | None) -> Soak:
    from localdev.worker_process import WorkerProcess

    interval = SAMPLE_INTERVAL_S if calls is None else CALLS_SAMPLE_INTERVAL_S
    soak = Soak(interval_s=interval)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    result = BenchResult(send_log=workdir / "baseten-sends.jsonl")
    turns = await asyncio.to_thread(demo_turns, len(DEMO_TURN_NAMES))
    async with demo_services(plan_services({}), livekit=True) as services:
        env = {
            **services.env,
            **WORKER_SETTINGS,
            "LOG_LEVEL": "INFO",
            "PROCESS_STATS_INTERVAL_S": str(interval),
        }
        async with WorkerProcess(env=env, log_dir=workdir / "worker") as worker:
            assert worker.pid is not None
            await wait_idle_pool(worker.pid, at_least=1)
            t0 = soak.started = time.monotonic()

            async def sampler() -> None:
                while True:
                    soak.samples.append(sample(worker, t0))
                    await asyncio.sleep(interval)

            sampling = asyncio.create_task(sampler())
            try:
                while True:
                    if calls is not None and soak.calls >= calls:
                        break
                    if duration_s is not None and time.monotonic() - t0 >= duration_s:
                        break
                    turn = turns[soak.calls % len(turns)]
                    errors_before = len(result.errors)
                    await one_round(services.stack, worker, soak.calls + 1, [turn], result)
                    soak.errors += result.errors[errors_before:]
                    soak.calls += 1
                    # idle again: the job process gone, the pool refilled, its stats logged
                    await asyncio.sleep(BETWEEN_ROUNDS_S)
                    await wait_idle_pool(worker.pid, at_least=1)
                    await asyncio.sleep(interval + 0.5)
                    soak.after_call.append({"call": soak.calls, **sample(worker, t0)})
                    print(f"call {soak.calls}: {soak.after_call[-1]}", file=sys.stderr)
            finally:
                sampling.cancel()
            worker.terminate()
            await worker.wait(timeout=60)
    return soak


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("RSS (MB)", ("worker.rss_mb", "forkserver.rss_mb", "job.max_rss_mb")),
        ("open fds", ("worker.fds", "forkserver.fds", "job.max_fds")),
        ("OS threads", ("worker.threads", "forkserver.threads", "job.max_threads")),
        ("asyncio tasks", ("worker.asyncio_tasks", "job.max_asyncio_tasks")),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True)
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            pts = [(s["t_s"] / 60, s[name]) for s in soak.samples if s.get(name) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=name, linewidth=1.2)
        ax.set_ylabel(title)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes (back-to-back calls)")
    fig.suptitle(f"soak: {soak.calls} calls, one worker, sampled every {soak.interval_s:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--duration-s", type=float, help="run this long (default 1800)")
    mode.add_argument("--calls", type=int, help="run this many calls instead (CI)")
    parser.add_argument("--warmup-s", type=float, default=300.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="re-analyse a saved --json run (no calls)"
    )
    args = parser.parse_args(argv)
    duration = args.duration_s if args.calls is None else None
    if duration is None and args.calls is None:
        duration = 1800.0
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        soak = Soak(
            samples=saved["samples"],
            after_call=saved["after_call"],
            calls=saved["calls"],
            errors=saved["errors"],
            interval_s=saved.get("interval_s", SAMPLE_INTERVAL_S),
        )
        soak.started = time.monotonic() - (saved["samples"][-1]["t_s"] if saved["samples"] else 0)
        duration = None if saved.get("mode") == "calls" else duration
    else:
        soak = asyncio.run(run(duration, args.calls))
    leaks = clear_leaks(soak.after_call)
    as_json = {"samples": soak.samples, "after_call": soak.after_call}
    grew = growth(as_json, args.warmup_s) if duration is not None else {}
    over = {k: v for k, v in grew.items() if v["growth"] > GROWTH_GOAL}
    elapsed = time.monotonic() - soak.started
    print(f"soak: {soak.calls} calls in {elapsed / 60:.1f} min, {len(soak.errors)} call errors")
    for name, g in grew.items():
        print(
            f"  {name:<26} {g['first']:>8.1f} -> {g['last']:>8.1f}  ({g['growth']:+.1%})"
            + ("  OVER 5 %" if name in over else "")
        )
    print("clear leaks: " + ("; ".join(leaks) if leaks else "none"))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "mode": "duration" if duration is not None else "calls",
                    "interval_s": soak.interval_s,
                    "calls": soak.calls,
                    "errors": soak.errors,
                    "samples": soak.samples,
                    "after_call": soak.after_call,
                    "growth": grew,
                    "leaks": leaks,
                },
                indent=1,
            )
        )
    if args.plot:
        plot(soak, args.plot)
    return 1 if leaks or over else 0


if __name__ == "__main__":
    sys.exit(main())
