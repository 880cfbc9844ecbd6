"""``python agent.py demo --web``: talk to the agent from a browser, on one machine.

What runs: the demo's local stack (``livekit-server``, stand-ins for every service without a
key, the real one where a key is set; see ``localdev.demo``), the real worker as a
subprocess (``python agent.py start`` with ``PUBLISH_TURN_LATENCY=true``), and
``localdev.web_server`` serving the built page (``web/dist``) and its token endpoint on
loopback. It prints the page's URL and then one line per turn as the worker logs it,
until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from localdev.demo import (
    DEMO_AGENT_NAME,
    DEMO_WORKER_SETTINGS,
    TURN_EVENT,
    WORKER_REGISTER_TIMEOUT_S,
    WORKER_STOP_TIMEOUT_S,
    DemoError,
    Progress,
    ServicePlan,
    _ms,
    demo_services,
)
from localdev.web_server import BUILD_HINT, WEB_DIST, WebSessionConfig, WebSessionServer

WEB_ROOT = WEB_DIST.parent
#: What the page is built from: a change to any of these makes ``dist`` stale.
_BUILD_INPUTS = ("src", "build.mjs", "package.json", "package-lock.json")
#: ``npm ci`` + ``npm run build`` take ~15 s here; minutes means something is wrong.
BUILD_TIMEOUT_S = 300.0
#: The browser runs on the worker's machine here, and LiveKit's default load is the
#: machine's CPU: Chromium starting up made the worker report itself full, and
#: livekit-server dropped the page's dispatch ("no workers with sufficient capacity").
#: Counting calls instead keeps the worker available while someone talks to it.
WEB_DEMO_WORKER_SETTINGS = {**DEMO_WORKER_SETTINGS, "WORKER_MAX_CALLS": "4"}
#: How often new worker log lines are looked at (a turn is seconds).
POLL_S = 0.2


def web_build_is_stale(root: Path = WEB_ROOT) -> bool:
    """Whether ``dist`` is missing or older than anything it is built from."""
    built = root / "dist" / "index.html"
    if not built.is_file():
        return True
    newest = 0.0
    for name in _BUILD_INPUTS:
        p = root / name
        files = p.rglob("*") if p.is_dir() else [p]
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest > built.stat().st_mtime


def ensure_web_build(progress: Progress, root: Path = WEB_ROOT) -> None:
    """Build the page when it is missing or stale (``npm ci`` first without node_modules)."""
    if not web_build_is_stale(root):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise DemoError(f"the web client needs building and npm is not on PATH: {BUILD_HINT}")
    steps = [[npm, "run", "build"]]
    if not (root / "node_modules").is_dir():
        steps.insert(0, [npm, "ci", "--no-audit", "--no-fund"])
    for cmd in steps:
        progress(f"building the web client: npm {' '.join(cmd[1:])}")
        try:
            proc = subprocess.run(
                cmd,
                cwd=root,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"npm {cmd[1]} took over {BUILD_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DemoError(f"npm {' '.join(cmd[1:])} failed: " + " | ".join(last))


def _turn_line(turn: dict[str, Any]) -> str:
    heard = turn.get("transcript")
    said = f"heard {heard!r}" if isinstance(heard, str) else "heard (not logged)"
    return (
        f"turn {turn.get('turn_index')}: {said}; e2e {_ms(turn.get('e2e_latency_ms'))} "
        f"(STT final {_ms(turn.get('transcript_latency_ms'))}, LLM TTFT "
        f"{_ms(turn.get('llm_ttft_ms'))}, TTS TTFB {_ms(turn.get('tts_ttfb_ms'))}; "
        f"{turn.get('outcome')})"
    )


async def run_web(
    plan: ServicePlan, *, host: str, port: int, out: Path, progress: Progress
) -> None:
    """Serve the page until interrupted; raises DemoError when something fails."""
    from localdev.worker_process import WorkerFailed, WorkerProcess

    _check_port_free(host, port)  # before a minute of start-up, not after it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with demo_services(plan, livekit=True) as services:
            lk = services.stack.livekit
            progress(f"livekit-server ready at {lk.url}; local stand-ins up")
            worker = WorkerProcess(
                env={**plan.user_env, **services.env, **WEB_DEMO_WORKER_SETTINGS}
            )
            progress("starting the worker: python agent.py start (env only)")
            try:
                await worker.start(timeout=WORKER_REGISTER_TIMEOUT_S)
                progress(f"worker registered with LiveKit as {DEMO_AGENT_NAME!r}")
                config = WebSessionConfig(
                    livekit_url=lk.url,
                    api_key=lk.api_key,
                    api_secret=lk.api_secret,
                    agent_name=DEMO_AGENT_NAME,
                )
                async with WebSessionServer(config) as server:
                    try:
                        url = await server.start(host, port)
                    except OSError as exc:
                        raise DemoError(
                            f"cannot serve the page on {host}:{port}: {exc.strerror or exc} "
                            "(try --port 0 for any free port)"
                        ) from None
                    progress.plain()
                    progress.plain(f"  Open {url} in Chrome or Firefox, press Connect and talk.")
                    progress.plain("  Ctrl-C stops everything.")
                    progress.plain()
                    try:
                        await _follow_turns(worker, stop, progress)
                    finally:
                        if ended := await server.end_calls():
                            progress(f"ended {ended} call(s) still open in the browser")
                progress("stopping: the worker drains its calls")
                worker.terminate()
                code = await worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
                progress(f"worker exited with code {code}")
            except WorkerFailed as exc:
                raise DemoError(str(exc)) from None
            finally:
                await asyncio.to_thread(worker.close)
                await asyncio.to_thread(out.write_text, worker.stdout, encoding="utf-8")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"cannot serve the page on {host}:{port}: {exc.strerror or exc} "
                "(try --port 0 for any free port)"
            ) from None


async def _follow_turns(worker: Any, stop: asyncio.Event, progress: Progress) -> None:
    """Print each turn the worker logs until ``stop`` (or the worker exits)."""
    shown = 0
    while not stop.is_set():
        turns = worker.find_lines(lambda ln: ln.get("message") == TURN_EVENT)
        for turn in turns[shown:]:
            progress(_turn_line(turn))
        shown = len(turns)
        if worker.returncode is not None:
            raise DemoError(f"the worker exited with code {worker.returncode}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=POLL_S)
