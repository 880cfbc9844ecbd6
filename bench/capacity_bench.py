"""Capacity: how many concurrent calls one worker carries on this machine, and where its CPU goes.

``uv run python -m bench.capacity_bench [--levels 1 2 4 6 8 10 12] [--turns 3] [--json out.json]``

One loopback livekit-server, one worker as users run it (``python agent.py start``, the
production turn detector and VAD), the Baseten stand-in with the *scripted* engine (made-up
words at no cost, so the figure is the worker's own, not Whisper's), the OpenAI stand-in
with one fixed reply and the Cartesia stand-in (espeak-ng, cached after the first reply).
``WORKER_MAX_CALLS`` is set to the level, so the worker accepts every call of it.

Per level N: N callers (the LiveKit Python SDK, in this process) join N rooms and get an
agent each; then all talk at once, each saying ``--turns`` packaged human recordings with
starts staggered by ``STAGGER_S``. Measured:

* **voice-to-voice**, caller-side: the last speech frame handed to WebRTC -> the first loud
  frame of the agent's reply arriving, p50/p95 over every turn of the level;
* **CPU per call**: the worker's whole process tree (main, forkserver, job processes, their
  threads), user+system seconds over the talking window, per call and per second;
* **where a job's CPU goes**: per-thread CPU of the job processes, grouped by thread name
  (``/proc/<pid>/task/<tid>/comm``: the Python event loop, ONNX Runtime's threads for
  Silero VAD and the turn detector, the Rust WebRTC core's for Opus and transport).

Verdict: the largest N whose voice-to-voice p95 is within 20 % of N=1's, and the goal
N >= 10 on this 2-core machine. The callers' own Opus work shares the machine (reported:
this process's CPU), so the figure is a floor for a worker with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import job_profile
from bench.e2e_bench import job_processes
from localdev.user_turns import DEMO_TURN_NAMES, UserTurn, named

#: Caller starts are spread by this much so turns do not all end in the same 100 ms.
STAGGER_S = 0.7
TRAILING_SILENCE_S = 1.5
TURN_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 90.0
REPLY = "Sure, I can help with that."
P95_TOLERANCE = 0.20
GOAL_CALLS = 10
#: Human recordings only (the demo's espeak phrases are not people).
CLIPS = [n for n in DEMO_TURN_NAMES if not n.startswith("espeak:")]


@dataclass
class Level:
    calls: int
    v2v_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window_s: float = 0.0
    worker_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)  # job CPU s by thread group
    join_failed: str | None = None  # the level could not even be set up
    #: component -> share of the job processes' busy Python samples (``--profile-s``)
    profile: dict[str, float] | None = None

    def pct(self, q: float) -> float | None:
        return float(np.percentile(self.v2v_s, q)) if self.v2v_s else None

    @property
    def cpu_per_call(self) -> float:
        """Cores one call keeps busy (worker tree CPU seconds per call-second)."""
        return self.worker_cpu_s / (self.window_s * self.calls) if self.window_s else 0.0


# ------------------------------------------------------------------------------ CPU accounting
_DIGITS = re.compile(r"[-_:.]?\d+$")


def _group(comm: str) -> str:
    """A thread's name without its number (``tokio-runtime-w`` x N -> one group)."""
    return _DIGITS.sub("", comm.strip()) or comm


class TreeCpu:
    """Cumulative CPU of a process tree, counting processes that exit in between: each
    (pid, tid) keeps its newest reading, so a job process that ended still counts."""

    def __init__(self, root_pid: int) -> None:
        self._root = root_pid
        self._first: dict[tuple[int, int], float] = {}
        self._last: dict[tuple[int, int], float] = {}
        self._names: dict[tuple[int, int], str] = {}
        self._job_pids: set[int] = set()

    def _procs(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self._root)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        # job processes are the forkserver's children (and share its command line)
        self._job_pids.update(p.pid for p in job_processes(self._root))
        for p in self._procs():
            try:
                threads = p.threads()
            except psutil.Error:
                continue
            for t in threads:
                key = (p.pid, t.id)
                cpu = t.user_time + t.system_time
                self._first.setdefault(key, cpu)
                self._last[key] = cpu
                if key not in self._names:
                    try:
                        comm = Path(f"/proc/{p.pid}/task/{t.id}/comm").read_text()
                    except OSError:
                        comm = "?"
                    self._names[key] = _group(comm)

    def snapshot(self) -> dict[tuple[int, int], float]:
        return dict(self._last)

    def used_since(self, snap: dict[tuple[int, int], float]) -> tuple[float, dict[str, float]]:
        """CPU seconds since ``snap`` (new threads from their first reading), and the job
        processes' share by thread group."""
        total = 0.0
        groups: defaultdict[str, float] = defaultdict(float)
        for key, last in self._last.items():
            used = last - snap.get(key, self._first[key])
            total += used
            if key[0] in self._job_pids:
                groups[self._names[key]] += used
        return total, dict(groups)


# ------------------------------------------------------------------------------ one level
async def _join(
    exit_stack: AsyncExitStack, stack: Any, room: str, identity: str, agent_name: str
) -> Any:
    """A caller in a new ``room`` with an agent listening; left when ``exit_stack`` closes."""
    from livekit import api

    from localdev.caller import Caller, RoomAdmin
    from localdev.demo import wait_agent_listening

    lk = stack.livekit
    admin = await exit_stack.enter_async_context(
        RoomAdmin(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
    )
    # departure_timeout 1 s: the job ends right after the hang-up, not 20 s later
    await admin.lkapi.room.create_room(
        api.CreateRoomRequest(name=room, empty_timeout=60, departure_timeout=1)
    )
    caller = await exit_stack.enter_async_context(
        Caller.join(
            url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret, room=room, identity=identity
        )
    )
    dispatch = await admin.dispatch_until_joined(
        caller, agent_name=agent_name, room=room, join_timeout_s=JOIN_TIMEOUT_S
    )
    await wait_agent_listening(caller, dispatch.agent.identity, within_s=JOIN_TIMEOUT_S)
    return caller


async def _talk(caller: Any, turns: list[UserTurn], delay_s: float, level: Level) -> None:
    await asyncio.sleep(delay_s)
    for turn in turns:
        said = await caller.say(
            turn.samples, turn.sample_rate, trailing_silence_s=TRAILING_SILENCE_S
        )
        end = said.speech_ended_at - turn.tail_s
        try:
            audio = await caller.wait_for_agent_audio(
                after=end, until_end=True, timeout=TURN_TIMEOUT_S
            )
        except TimeoutError as e:
            level.errors.append(str(e).splitlines()[0][:160])
            continue
        level.v2v_s.append(audio.started_at - end)
        await asyncio.sleep(0.3)


async def run_level(
    stack: Any,
    worker: Any,
    n: int,
    turns: int,
    agent_name: str,
    clips: list[UserTurn],
    profile_s: float = 0.0,
) -> Level:
    level = Level(calls=n)
    cpu = TreeCpu(worker.pid)
    me = psutil.Process()
    sampling = True

    async def sampler() -> None:
        while sampling:
            cpu.sample()
            await asyncio.sleep(0.5)

    sampler_task = asyncio.create_task(sampler())
    try:
        async with AsyncExitStack() as calls:
            joined = []
            for i in range(n):  # one at a time: each dispatch finds a free job process
                room = f"cap-{n}-{i}-{secrets.token_hex(2)}"
                try:
                    joined.append(await _join(calls, stack, room, f"caller-{i}", agent_name))
                except TimeoutError as e:
                    level.join_failed = f"only {i} of {n} calls got an agent: {e}"
                    return level
            await _measure(cpu, me, joined, turns, clips, level, profile_s, worker.pid)
    finally:
        sampling = False
        await asyncio.gather(sampler_task, return_exceptions=True)
    await asyncio.sleep(3.0)  # jobs end (departure timeout 1 s), the pool refills
    return level


async def _measure(
    cpu: TreeCpu,
    me: psutil.Process,
    joined: list[Any],
    turns: int,
    clips: list[UserTurn],
    level: Level,
    profile_s: float,
    worker_pid: int,
) -> None:
    """All callers talk at once; the worker's CPU over that window (and, with
    ``profile_s``, py-spy samples of its job processes for that long within it)."""
    await asyncio.sleep(1.0)  # every session past its greeting/start-up work
    cpu.sample()
    snap, bench0, t0 = cpu.snapshot(), me.cpu_times(), time.monotonic()
    talking = asyncio.gather(
        *(
            _talk(caller, [clips[(i + k) % len(clips)] for k in range(turns)], i * STAGGER_S, level)
            for i, caller in enumerate(joined)
        )
    )
    if profile_s > 0:
        pids = [p.pid for p in job_processes(worker_pid)]
        profiled = await job_profile.record(pids, profile_s)
        if profiled is None:
            print("profile: py-spy missing or refused; no breakdown", file=sys.stderr)
        else:
            level.profile = profiled[0]
    await talking
    cpu.sample()
    level.window_s = time.monotonic() - t0
    level.worker_cpu_s, level.threads = cpu.used_since(snap)
    bench1 = me.cpu_times()
    level.bench_cpu_s = (bench1.user + bench1.system) - (bench0.user + bench0.system)


async def run(
    levels: list[int], turns: int, profile_s: float = 0.0
) -> tuple[list[Level], dict[str, Any]]:
    from localdev.demo import DEMO_AGENT_NAME
    from localdev.stack import LocalStack
    from localdev.worker_process import WorkerProcess

    clips = await asyncio.to_thread(lambda: [named(n) for n in CLIPS])
    results = []
    async with LocalStack(
        livekit=True,
        agent_name=DEMO_AGENT_NAME,
        replies=[REPLY],
        baseten_args=("--engine", "scripted", "--workers", "0"),
    ) as stack:
        for n in levels:
            env = {
                **stack.env,
                "WORKER_MAX_CALLS": str(n),
                "DRAIN_TIMEOUT": "30",
                "LOG_LEVEL": "INFO",  # WorkerProcess waits for the "registered" line
            }
            # a fresh worker per level: no job process or cache carried over
            log_dir = Path(tempfile.mkdtemp(prefix=f"capacity-{n}-"))  # kept for a post-mortem
            async with WorkerProcess(env=env, log_dir=log_dir) as worker:
                t0 = time.monotonic()
                # only the last level is profiled: py-spy's own CPU skews its latencies
                level = await run_level(
                    stack,
                    worker,
                    n,
                    turns,
                    DEMO_AGENT_NAME,
                    clips,
                    profile_s=profile_s if n == levels[-1] else 0.0,
                )
                results.append(level)
                if level.join_failed:
                    print(f"N={n}: {level.join_failed}; stopping", file=sys.stderr, flush=True)
                    # the worker's own account of the dispatch it did not serve
                    print(f"  worker log: {log_dir}", file=sys.stderr)
                    worker.terminate()
                    await worker.wait(timeout=60)
                    break
                print(
                    f"N={n}: v2v p50/p95 {_f(level.pct(50))}/{_f(level.pct(95))} s, "
                    f"{level.cpu_per_call:.3f} cores/call, {len(level.errors)} errors, "
                    f"{time.monotonic() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                worker.terminate()
                await worker.wait(timeout=60)
    return results, {"cpus": psutil.cpu_count(), "reply": REPLY}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _profile_lines(level: Level) -> list[str]:
    if not level.profile:
        return []
    return [
        f"where the job processes' Python threads spend their busy time at N={level.calls} "
        "(py-spy samples by owning component; this level's latencies are skewed by it):",
        "",
        "| component | share of busy Python samples |",
        "|---|---|",
        *(f"| {name} | {share:.1%} |" for name, share in level.profile.items() if share >= 0.005),
        "",
    ]


def report(levels: list[Level]) -> tuple[str, int | None]:
    base = levels[0].pct(95) if levels and levels[0].calls == 1 else None
    ok = [
        lv.calls
        for lv in levels
        if base is not None
        and (p := lv.pct(95)) is not None
        and p <= base * (1 + P95_TOLERANCE)
        and not lv.errors
    ]
    best = max(ok) if ok else None
    verdict = "met" if best is not None and best >= GOAL_CALLS else "NOT met"
    lines = [
        "| concurrent calls | turns | v2v p50 (s) | v2v p95 (s) | p95 vs 1 call "
        "| worker CPU per call (cores) | worker CPU total (cores) | callers' CPU (cores) "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        if lv.join_failed:
            lines.append(f"| {lv.calls} | - | - | - | - | - | - | - | {lv.join_failed[:60]} |")
            continue
        p95 = lv.pct(95)
        ratio = f"{p95 / base:.2f}" if base and p95 else "-"
        lines.append(
            f"| {lv.calls} | {len(lv.v2v_s)} | {_f(lv.pct(50))} | {_f(p95)} | {ratio} "
            f"| {lv.cpu_per_call:.3f} | {lv.worker_cpu_s / lv.window_s if lv.window_s else 0:.2f} "
            f"| {lv.bench_cpu_s / lv.window_s if lv.window_s else 0:.2f} | {len(lv.errors)} |"
        )
    biggest = [lv for lv in levels if not lv.join_failed][-1]
    job_total = sum(biggest.threads.values()) or 1.0
    top = sorted(biggest.threads.items(), key=lambda kv: -kv[1])[:8]
    lines += [
        "",
        f"where a job's CPU goes at N={biggest.calls} (job-process threads by name, share of "
        "the job processes' CPU):",
        "",
        "| thread group | share |",
        "|---|---|",
        *(f"| `{name}` | {used / job_total:.0%} |" for name, used in top),
        "",
        *_profile_lines(biggest),
        f"largest N with v2v p95 within {P95_TOLERANCE:.0%} of one call's: {best} "
        f"(goal >= {GOAL_CALLS}: {verdict})",
    ]
    return "\n".join(lines), best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 12])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--profile-s",
        type=float,
        default=0.0,
        help="py-spy the job processes for this long during the last level (its latencies "
        "are then skewed by the sampler); prints where their Python CPU goes by component",
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    levels, info = asyncio.run(run(sorted(set(args.levels)), args.turns, args.profile_s))
    table, best = report(levels)
    print(
        f"capacity bench: {info['cpus']} CPUs, scripted Baseten engine, levels {args.levels}, "
        f"{args.turns} human turns per call, {time.monotonic() - t0:.0f} s"
    )
    print(table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "info": info,
                    "best": best,
                    "levels": [
                        {
                            "calls": lv.calls,
                            "v2v_s": lv.v2v_s,
                            "errors": lv.errors,
                            "join_failed": lv.join_failed,
                            "window_s": lv.window_s,
                            "worker_cpu_s": lv.worker_cpu_s,
                            "bench_cpu_s": lv.bench_cpu_s,
                            "threads": lv.threads,
                            "profile": lv.profile,
                            "p50": lv.pct(50),
                            "p95": lv.pct(95),
                            "median": statistics.median(lv.v2v_s) if lv.v2v_s else None,
                        }
                        for lv in levels
                    ],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
