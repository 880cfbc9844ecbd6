"""``python agent.py demo``: the whole voice loop on one machine, without any account.

What runs:

* **LiveKit**: a local ``livekit-server`` (when the binary is on PATH) with the real worker
  as a subprocess (``python agent.py start``, configured by environment variables only) and
  a :class:`~localdev.caller.Caller` that joins the room, dispatches the agent and speaks.
  Without the binary, or with ``--roomless``, the same session pipeline runs in this process
  on a paced virtual microphone and speaker (``localdev.roomless_io``).
* **STT / LLM / TTS**: the real service when its key is set (in the environment, ``.env`` or
  ``.env.local``), otherwise the local stand-in speaking the service's wire protocol: the
  Baseten server (real Whisper tiny.en over Silero VAD, as its own process), the OpenAI
  server (echoes the user) and the Cartesia server (espeak-ng). The demo says which is which.

The user's turns are human recordings shipped in packages (``localdev.human_speech``), then
espeak-ng phrases, or with ``--wav FILE ...`` the user's own recordings (any rate sox reads,
stereo downmixed). Each turn's numbers come from the worker's own ``turn_latency`` log line;
what was heard is scored against what was said where the words are known. All of the
worker's JSON log lines are written to a ``.jsonl`` file, and a budget picture is drawn from
it (``scripts/plot_turn_budget.py``).

With ``--web`` there are no scripted turns: the same stack and worker serve the web client
(``web/``) and the person at the browser is the caller (``localdev.web_demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from localdev.user_turns import DEMO_TURN_NAMES, UserTurn

REPO = Path(__file__).resolve().parents[1]
PLOT_SCRIPT = REPO / "scripts" / "plot_turn_budget.py"

#: Default user turns: the three human recordings of ``DEMO_TURN_NAMES``.
DEFAULT_TURNS = 3

#: Agent name for explicit dispatch: the worker only takes jobs it is dispatched to by name,
#: so a demo worker can never pick up rooms of anything else on the same server.
DEMO_AGENT_NAME = "demo-agent"

# Timeouts. Normal values on the shared 2-core machine are in the comments; the limits are
# several times that so a loaded machine is slow, not failed.
WORKER_REGISTER_TIMEOUT_S = 120.0  # start + forkserver + prewarm: ~5-10 s
AGENT_JOIN_TIMEOUT_S = 60.0  # dispatch -> agent in the room: ~1 s with prewarmed processes
TURN_TIMEOUT_S = 45.0  # one user turn -> its turn_latency line: ~4 s
WORKER_STOP_TIMEOUT_S = 30.0  # SIGTERM -> exit after the job ended: ~2 s
#: Silence after each utterance: longer than LiveKit's endpointing (0.3-0.5 s min delay) +
#: Silero's min silence (0.55 s) so every utterance ends its turn on its own.
TRAILING_SILENCE_S = 1.0
#: Pause before each utterance, so the agent's previous reply is over in the caller's ears.
PAUSE_BEFORE_TURN_S = 0.3

TURN_EVENT = "turn_latency"
SUMMARY_EVENT = "session_latency_summary"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DemoError(Exception):
    """A failure explained in one line for the user (no traceback)."""


# ---------------------------------------------------------------------------------------------
# progress output
# ---------------------------------------------------------------------------------------------


class Progress:
    """Timestamped progress lines on stdout (seconds since the demo started)."""

    def __init__(self, out: TextIO | None = None) -> None:
        """``out``: where to print (default stdout)."""
        self._out = out
        self._t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        out = self._out or sys.stdout
        print(f"[{time.monotonic() - self._t0:5.1f} s] {message}", file=out, flush=True)

    def plain(self, message: str = "") -> None:
        print(message, file=self._out or sys.stdout, flush=True)


# ---------------------------------------------------------------------------------------------
# which services are real
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceChoice:
    """One service of the pipeline and whether the demo uses the real one."""

    role: str  # "STT", "LLM", "TTS"
    service: str  # "baseten", "openai", "cartesia"
    real: bool
    detail: str


@dataclass(frozen=True)
class ServicePlan:
    """Which services are real (keys found) and the user's env vars the worker gets: those
    of the real services and the agent-behaviour ones (``_AGENT_VARS``)."""

    choices: tuple[ServiceChoice, ...]
    user_env: dict[str, str]
    env_files: tuple[Path, ...] = ()

    @property
    def local(self) -> frozenset[str]:
        return frozenset(c.service for c in self.choices if not c.real)

    def describe(self) -> list[str]:
        return [f"  {c.role:<8} {c.detail}" for c in self.choices]


# Variables passed to the worker for a real service: its key and the settings that shape
# its requests. With _AGENT_VARS, nothing else from the user's environment reaches the demo
# worker, so a stray LIVEKIT_URL cannot point the demo at a real LiveKit project.
_REAL_VARS = {
    "baseten": (
        "BASETEN_API_KEY",
        "BASETEN_MODEL_ENDPOINT",
        "BASETEN_LANGUAGE",
        "BASETEN_VAD_THRESHOLD",
        "BASETEN_VAD_MIN_SILENCE_MS",
        "BASETEN_VAD_SPEECH_PAD_MS",
        "BASETEN_PARTIAL_TRANSCRIPTS",
    ),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"),
    "cartesia": (
        "CARTESIA_API_KEY",
        "CARTESIA_BASE_URL",
        "CARTESIA_MODEL",
        "CARTESIA_VOICE",
        "CARTESIA_LANGUAGE",
    ),
}


#: Agent behaviour the user may try in the demo, e.g. ``TURN_DETECTION=vad python agent.py
#: demo``: passed through unchanged and validated by the worker like in production.
_AGENT_VARS = (
    "TURN_DETECTION",
    "MIN_ENDPOINTING_DELAY",
    "MAX_ENDPOINTING_DELAY",
    "PREEMPTIVE_GENERATION",
    "AGENT_INSTRUCTIONS",
    "AGENT_GREETING",
    "LOG_LEVEL",
)


def _host_of(url: str | None, default: str) -> str:
    if not url:
        return default
    try:
        return urlsplit(url).hostname or default
    except ValueError:
        return default


def plan_services(environ: Mapping[str, str], env_files: Iterable[Path] = ()) -> ServicePlan:
    """Real service where its key (and for Baseten its endpoint) is set, else local."""
    from localdev.stack import missing_services

    def has(name: str) -> bool:
        return bool((environ.get(name) or "").strip())

    missing = missing_services(environ)
    real = {name: name not in missing for name in _REAL_VARS}
    user_env = {
        var: environ[var]
        for service, on in real.items()
        if on
        for var in _REAL_VARS[service]
        if has(var)
    }
    user_env |= {var: environ[var] for var in _AGENT_VARS if has(var)}
    half_baseten = has("BASETEN_API_KEY") != has("BASETEN_MODEL_ENDPOINT")
    choices = (
        ServiceChoice(
            "STT",
            "baseten",
            real["baseten"],
            "REAL Baseten streaming Whisper at "
            + _host_of(environ.get("BASETEN_MODEL_ENDPOINT"), "?")
            if real["baseten"]
            else "local Baseten stand-in (real Whisper tiny.en, CPU)"
            + (
                "; set BOTH BASETEN_API_KEY and BASETEN_MODEL_ENDPOINT for the real one"
                if half_baseten
                else ""
            ),
        ),
        ServiceChoice(
            "LLM",
            "openai",
            real["openai"],
            "REAL OpenAI-compatible API at "
            + _host_of(environ.get("OPENAI_BASE_URL"), "api.openai.com")
            if real["openai"]
            else "local OpenAI stand-in (replies 'You said: ...')",
        ),
        ServiceChoice(
            "TTS",
            "cartesia",
            real["cartesia"],
            f"REAL Cartesia at {_host_of(environ.get('CARTESIA_BASE_URL'), 'api.cartesia.ai')}"
            if real["cartesia"]
            else "local Cartesia stand-in (espeak-ng voice)",
        ),
    )
    return ServicePlan(choices=choices, user_env=user_env, env_files=tuple(env_files))


def read_environment(cwd: Path) -> tuple[dict[str, str], list[Path]]:
    """The process environment plus ``.env``/``.env.local`` of ``cwd`` (env wins)."""
    from agent.config import load_dotenv_files

    environ = dict(os.environ)
    files = load_dotenv_files(cwd, environ)
    return environ, files


# ---------------------------------------------------------------------------------------------
# the worker's JSON log lines
# ---------------------------------------------------------------------------------------------


def event_name(record: Mapping[str, Any]) -> str | None:
    """Event name of a JSON log line: ``message`` (worker) or ``event`` (plain structlog)."""
    for key in ("message", "event"):
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


class JsonLineLog:
    """The session's JSON log lines, written to a file as they arrive and kept parsed
    (room-less mode; in LiveKit mode ``WorkerProcess`` reads the worker's stdout)."""

    def __init__(self, path: Path) -> None:
        """Opens (truncates) ``path``."""
        self.path = path
        self._fh = path.open("w", encoding="utf-8")
        self.records: list[dict[str, Any]] = []

    def add(self, line: str) -> None:
        """Record one rendered line (called from logging handlers, possibly off-loop)."""
        line = line.rstrip("\n")
        if not line.strip():
            return
        self._fh.write(line + "\n")
        self._fh.flush()
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict):
                self.records.append(record)

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [r for r in self.records if event_name(r) == TURN_EVENT]

    def close(self) -> None:
        self._fh.close()


#: How often waits re-check: short next to a turn (seconds), negligible CPU.
POLL_S = 0.05


async def wait_until(check: Callable[[], Any], *, within_s: float, what: str) -> Any:
    """Poll ``check()`` until it returns something truthy; DemoError naming ``what``."""
    deadline = time.monotonic() + within_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return result


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------

#: (header, turn_latency field) of the numeric columns, in the order of the turn's budget
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("STT final", "transcript_latency_ms"),
    ("end of turn", "end_of_turn_delay_ms"),
    ("LLM TTFT", "llm_ttft_ms"),
    ("TTS TTFB", "tts_ttfb_ms"),
    ("e2e", "e2e_latency_ms"),
)


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "n/a"


def turn_wer(said: str | None, turn: Mapping[str, Any]) -> float | None:
    """Word error rate of what the worker heard against what was said (None: unknown)."""
    from localdev.wer import word_error_rate

    heard = turn.get("transcript")
    if said is None or not isinstance(heard, str):
        return None
    return word_error_rate(said, heard)


def format_table(turns: Sequence[Mapping[str, Any]], said: Sequence[str | None] = ()) -> str:
    """The per-turn latency table (all times from the end of the user's speech)."""
    heard_w = 40
    head = (
        f"{'turn':>4}  {'heard (final transcript)':<{heard_w}}  {'WER':>4}"
        + "".join(f"  {h:>11}" for h, _ in TABLE_COLUMNS)
        + f"  {'ended by':<12}"
    )
    rows = [head, "-" * len(head)]
    for i, t in enumerate(turns):
        heard = t.get("transcript")
        if not isinstance(heard, str):
            heard = f"({t.get('transcript_chars', '?')} chars)"
        if len(heard) > heard_w:
            heard = heard[: heard_w - 3] + "..."
        wer = turn_wer(said[i] if i < len(said) else None, t)
        row = (
            f"{t.get('turn_index', i + 1):>4}  {heard:<{heard_w}}"
            f"  {'' if wer is None else f'{wer:.2f}':>4}"
            + "".join(f"  {_ms(t.get(key)):>11}" for _, key in TABLE_COLUMNS)
            + f"  {t.get('turn_ended_by') or 'n/a':<12}"
        )
        flagged = [*(t.get("missing") or ()), *(t.get("implausible") or ())]
        if t.get("outcome") not in (None, "answered"):
            row += f"  [{t.get('outcome')}]"
        if flagged:
            row += "  n/a: " + ", ".join(flagged)
        rows.append(row)
    rows.append(
        "WER = word error rate against the words said; STT final = end of speech -> final "
        "transcript (our Baseten plugin);"
    )
    rows.append(
        "end of turn = -> turn committed; ended by = the signal that ended it (turn_ended_by);"
    )
    rows.append(
        "LLM TTFT / TTS TTFB = first token / first audio byte; e2e = end of speech -> "
        "first agent audio."
    )
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    turns: list[dict[str, Any]] = field(default_factory=list)
    said: list[str | None] = field(default_factory=list)
    """What each turn said (None when the words are unknown, e.g. a user's file)."""
    mode: str = ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent.py demo",
        description="Local end-to-end demo: speaks user turns (human recordings, then espeak-ng "
        "phrases, or your own --wav files) into the voice agent and prints what it heard and "
        "each turn's latency. Uses the real STT/LLM/TTS service where its key is set (env, "
        ".env, .env.local), local stand-ins otherwise.",
    )
    p.add_argument(
        "--roomless",
        action="store_true",
        help="run the session in this process without a LiveKit server "
        "(default when livekit-server is not on PATH)",
    )
    p.add_argument(
        "--turns",
        type=int,
        default=DEFAULT_TURNS,
        help=f"how many of the built-in user turns, 1-{len(DEMO_TURN_NAMES)} "
        f"(default {DEFAULT_TURNS}: the human recordings)",
    )
    p.add_argument(
        "--wav",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="speak these recordings as the user's turns instead (any rate or channel count "
        "sox reads; stereo is downmixed)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON-lines file for the worker's log (default artifacts/demo-<time>.jsonl)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="latency budget picture (PNG) drawn from the log; default: next to --out",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the picture")
    web = p.add_argument_group("talk to it from a browser")
    web.add_argument(
        "--web",
        action="store_true",
        help="instead of scripted turns, serve the web client (web/) and its token endpoint "
        "and run until Ctrl-C: open the printed URL and talk",
    )
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="--web: the page's bind address (default loopback only: anyone who can reach "
        "it can start calls)",
    )
    web.add_argument(
        "--port", type=int, default=8080, help="--web: the page's port (default 8080; 0 = free)"
    )
    return p


def main(argv: list[str]) -> int:
    """Run the demo; returns the exit code (0 = every turn answered and measured)."""
    args = _parser().parse_args(argv)
    if args.web and (args.roomless or args.wav):
        print("demo: --web takes no --roomless or --wav: you are the caller", file=sys.stderr)
        return EXIT_USAGE
    if not 1 <= args.turns <= len(DEMO_TURN_NAMES):
        print(f"demo: --turns must be between 1 and {len(DEMO_TURN_NAMES)}", file=sys.stderr)
        return EXIT_USAGE
    out: Path = args.out or Path("artifacts") / f"demo-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        print(f"demo: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE

    from localdev.livekit_server import find_livekit_server
    from localdev.speech import SpeechToolMissing, require_tools

    try:
        require_tools()
        user_turns = [] if args.web else load_turns(args.wav, args.turns)
    except SpeechToolMissing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_USAGE

    progress = Progress()
    environ, env_files = read_environment(Path.cwd())
    plan = plan_services(environ, env_files)
    binary = find_livekit_server()
    if args.web:
        return _main_web(args, plan, binary, out, progress)
    roomless = args.roomless or binary is None

    progress.plain("Voice agent demo: everything on this machine, no accounts needed.")
    if roomless:
        why = "--roomless" if args.roomless else "livekit-server not on PATH"
        progress.plain(f"  LiveKit  none: room-less session in this process ({why})")
    else:
        progress.plain(f"  LiveKit  local livekit-server ({binary}), worker as a subprocess")
    for line in plan.describe():
        progress.plain(line)
    if env_files:
        progress.plain("  (read " + ", ".join(str(f) for f in env_files) + ")")
    progress.plain()

    try:
        if roomless:
            result = asyncio.run(run_roomless(plan, user_turns, out=out, progress=progress))
        else:
            result = asyncio.run(run_with_livekit(plan, user_turns, out=out, progress=progress))
    except DemoError as exc:
        progress(f"FAILED: {exc}")
        progress.plain(f"worker log so far: {out}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        progress("interrupted")
        return EXIT_INTERRUPTED

    progress.plain()
    progress.plain(format_table(result.turns, result.said))
    for note in table_notes(result.turns):
        progress.plain(note)
    progress.plain()
    progress.plain(f"worker log ({result.mode}): {out}")
    problems = check_turns(result.turns, len(user_turns))
    if not args.no_plot:
        render_plot(out, args.plot or out.with_suffix(".png"), progress)
    if problems:
        for p in problems:
            progress(f"problem: {p}")
        return EXIT_FAILED
    return EXIT_OK


def _main_web(
    args: argparse.Namespace,
    plan: ServicePlan,
    binary: str | None,
    out: Path,
    progress: Progress,
) -> int:
    """``--web``: the stack, the worker and the page until Ctrl-C (``localdev.web_demo``)."""
    from localdev.web_demo import ensure_web_build, run_web

    if binary is None:
        print("demo: --web needs livekit-server on PATH (scripts/bootstrap.sh)", file=sys.stderr)
        return EXIT_USAGE
    progress.plain("Voice agent demo in the browser: everything on this machine.")
    progress.plain(f"  LiveKit  local livekit-server ({binary}), worker as a subprocess")
    for line in plan.describe():
        progress.plain(line)
    progress.plain()
    try:
        ensure_web_build(progress)
        asyncio.run(run_web(plan, host=args.host, port=args.port, out=out, progress=progress))
    except DemoError as exc:
        progress(f"FAILED: {exc}")
        return EXIT_FAILED
    progress.plain(f"worker log: {out}")
    return EXIT_OK


def load_turns(wavs: Sequence[Path] | None, count: int) -> list[UserTurn]:
    """The user's recordings, or the first ``count`` built-in turns (sox errors name the file)."""
    from localdev.user_turns import demo_turns, from_file

    if wavs:
        return [from_file(w) for w in wavs]
    return demo_turns(count)


#: An end of turn this long means LiveKit waited for its maximum endpointing delay (2.5 s
#: with the turn-detector model, 3 s with VAD; livekit/agents/voice/turn.py) instead of
#: committing after the minimum (0.3 / 0.5 s).
LONG_END_OF_TURN_MS = 2000.0


def table_notes(turns: Sequence[Mapping[str, Any]]) -> list[str]:
    """Explanations for what stands out in the table."""
    slow = [
        str(t.get("turn_index"))
        for t in turns
        if isinstance(t.get("end_of_turn_delay_ms"), int | float)
        and t["end_of_turn_delay_ms"] >= LONG_END_OF_TURN_MS
    ]
    if not slow:
        return []
    return [
        f"Turn(s) {', '.join(slow)}: the end of turn took its maximum delay: the turn detector "
        "judged the",
        "utterance unfinished and waited its maximum, as it would for a user pausing mid-thought.",
        "Compare: TURN_DETECTION=model (LiveKit's audio model alone) or vad python agent.py demo",
    ]


def check_turns(turns: Sequence[Mapping[str, Any]], expected: int) -> list[str]:
    """What is wrong with the logged turns (empty = one answered, measured line per turn)."""
    problems = []
    if len(turns) != expected:
        problems.append(f"{len(turns)} turn_latency lines for {expected} user turns")
    for t in turns:
        if t.get("outcome") != "answered":
            problems.append(f"turn {t.get('turn_index')}: outcome {t.get('outcome')}")
        if t.get("e2e_latency_ms") is None:
            problems.append(f"turn {t.get('turn_index')}: no end-to-end latency")
    return problems


def render_plot(log: Path, png: Path, progress: Progress) -> None:
    """Draw the budget picture with ``scripts/plot_turn_budget.py`` (needs matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        progress("matplotlib not installed: no latency picture (uv pip install matplotlib)")
        return
    if not PLOT_SCRIPT.is_file():
        progress(f"no {PLOT_SCRIPT.name} in this checkout: no latency picture")
        return
    proc = subprocess.run(
        [sys.executable, str(PLOT_SCRIPT), str(log), "-o", str(png), "--title", "Demo turns"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 0:
        progress.plain(f"latency picture: {png}")
    else:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        progress(f"could not draw the latency picture: {last[0]}")


# ---------------------------------------------------------------------------------------------
# LiveKit mode: local SFU, worker subprocess, caller
# ---------------------------------------------------------------------------------------------


@dataclass
class DemoServices:
    """What ``demo_services`` started."""

    stack: Any  # localdev.stack.LocalStack
    env: dict[str, str]  # the worker's variables for everything local

    @property
    def baseten(self) -> Any:
        """The Baseten stand-in process (``BasetenServerProcess``), when Baseten is local."""
        return self.stack.baseten


@contextlib.asynccontextmanager
async def demo_services(
    plan: ServicePlan,
    *,
    livekit: bool,
    baseten_send_log: Path | None = None,
    baseten_args: tuple[str, ...] = (),
) -> AsyncIterator[DemoServices]:
    """A ``LocalStack`` with LiveKit (optional) and a stand-in for each service without a
    key. The Baseten stand-in runs as its own process (``BasetenServerProcess``); with
    ``baseten_send_log`` it appends one JSON line per transcription it sends (benchmarks)."""
    from localdev.stack import LocalStack

    async with LocalStack(
        livekit=livekit,
        baseten="baseten" in plan.local,
        openai="openai" in plan.local,
        cartesia="cartesia" in plan.local,
        agent_name=DEMO_AGENT_NAME if livekit else None,
        baseten_send_log=baseten_send_log,
        baseten_args=baseten_args,
    ) as stack:
        yield DemoServices(stack, dict(stack.env))


#: Worker settings the demo adds: the scripted words are no personal data, and the table
#: shows what the agent heard; a short drain because the demo ends the call itself.
DEMO_WORKER_SETTINGS = {
    "LOG_TRANSCRIPTS": "true",
    "DRAIN_TIMEOUT": "30",
    "PUBLISH_TURN_LATENCY": "true",
}
#: After the room is gone the job closes its session and logs the summary: ~1 s.
SUMMARY_TIMEOUT_S = 15.0


async def run_with_livekit(
    plan: ServicePlan, turns: Sequence[UserTurn], *, out: Path, progress: Progress
) -> DemoResult:
    """Local SFU + ``python agent.py start`` + a Caller that dispatches the agent and talks."""
    from localdev.worker_process import WorkerFailed, WorkerProcess

    result = DemoResult(mode="worker subprocess, local livekit-server")
    async with demo_services(plan, livekit=True) as services:
        stack, local_env = services.stack, services.env
        progress(f"livekit-server ready at {stack.livekit.url}; local stand-ins up")
        worker = WorkerProcess(env={**plan.user_env, **local_env, **DEMO_WORKER_SETTINGS})
        progress("starting the worker: python agent.py start (env only)")
        try:
            await worker.start(timeout=WORKER_REGISTER_TIMEOUT_S)
            progress(f"worker registered with LiveKit as {DEMO_AGENT_NAME!r}")
            await _call(stack, worker, turns, result, progress)
            # the room is gone: the job closes its session (summary line), then a drain
            with contextlib.suppress(WorkerFailed):
                await worker.wait_for_line(
                    lambda ln: ln["message"] == SUMMARY_EVENT,
                    timeout=SUMMARY_TIMEOUT_S,
                    what="the session summary",
                )
            worker.terminate()
            code = await worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
            progress(f"worker drained and exited with code {code}")
        except WorkerFailed as exc:
            raise DemoError(str(exc)) from None
        finally:
            await asyncio.to_thread(worker.close)
            await asyncio.to_thread(out.write_text, worker.stdout, encoding="utf-8")
    result.turns = [ln for ln in worker.lines if ln.get("message") == TURN_EVENT]
    return result


def _says(i: int, n: int, turn: UserTurn) -> str:
    words = f": {turn.text!r}" if turn.text else ""
    return f"turn {i}/{n}: says {turn.label} ({turn.seconds:.1f} s){words}"


async def _call(
    stack: Any, worker: Any, turns: Sequence[UserTurn], result: DemoResult, progress: Progress
) -> None:
    """One call: room, caller, dispatch, the user's turns, hang up."""
    from localdev.caller import Caller, RoomAdmin

    lk = stack.livekit
    room = f"demo-{secrets.token_hex(3)}"
    async with RoomAdmin(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret) as admin:
        await admin.create_room(room)
        try:
            async with Caller.join(
                url=lk.url,
                api_key=lk.api_key,
                api_secret=lk.api_secret,
                room=room,
                identity="demo-caller",
            ) as caller:
                progress(f"caller joined room {room!r}; dispatching the agent")
                dispatch = await admin.dispatch_until_joined(
                    caller,
                    agent_name=DEMO_AGENT_NAME,
                    room=room,
                    join_timeout_s=AGENT_JOIN_TIMEOUT_S,
                    on_retry=progress,
                )
                agent = dispatch.agent
                progress(
                    f"agent {agent.identity!r} joined "
                    f"{(agent.joined_at - dispatch.dispatched_at) * 1000:.0f} ms after dispatch"
                )
                for i, user_turn in enumerate(turns, 1):
                    for attempt in range(1, SAY_ATTEMPTS + 1):
                        # speak when the agent listens: before its session subscribed to
                        # our mic, audio is lost; and not over its previous reply
                        await wait_agent_listening(caller, agent.identity, within_s=TURN_TIMEOUT_S)
                        await asyncio.sleep(PAUSE_BEFORE_TURN_S)
                        again = " (again)" if attempt > 1 else ""
                        progress(_says(i, len(turns), user_turn) + again)
                        said = await caller.say(
                            user_turn.samples,
                            user_turn.sample_rate,
                            trailing_silence_s=TRAILING_SILENCE_S,
                        )
                        if await _heard(caller, after=said.started_at):
                            break
                        progress(
                            f"turn {i}/{len(turns)}: no transcript of that within "
                            f"{HEARD_TIMEOUT_S:g} s (the agent did not catch it)"
                        )
                    else:
                        raise DemoError(f"the agent heard nothing of {user_turn.label}, twice")
                    result.said.append(user_turn.text)
                    turn = await worker.wait_for_line(
                        lambda ln, i=i: ln["message"] == TURN_EVENT and ln["turn_index"] == i,
                        timeout=TURN_TIMEOUT_S,
                        what=f"the worker's turn_latency line for turn {i}",
                    )
                    progress(_turn_progress(i, len(turns), turn, user_turn.text))
        finally:
            with contextlib.suppress(Exception):
                await admin.delete_room(room)


#: The participant attribute LiveKit Agents publishes the session state in
#: (``livekit.agents.types.ATTRIBUTE_AGENT_STATE``): initializing/listening/thinking/speaking.
AGENT_STATE_ATTRIBUTE = "lk.agent.state"


#: A scripted turn the agent did not transcribe at all is said once more, as a person
#: would. Seen only on a heavily loaded machine, where WebRTC audio arrives with gaps.
SAY_ATTEMPTS = 2
#: End of our speech -> the agent's final transcript of it on ``lk.transcription``:
#: ~0.3-1.2 s normally; 10 s means it was not heard.
HEARD_TIMEOUT_S = 10.0


async def _heard(caller: Any, *, after: float) -> bool:
    """Whether the agent published a final user transcript for speech started ``after``."""

    def final_since() -> bool | None:
        # by the time it became final, not first seen: a segment the agent opened on an
        # earlier, unheard attempt may be the one finished by this one
        segs = caller.transcripts("user")
        return any(s.final and (s.final_at or 0.0) >= after for s in segs) or None

    try:
        await caller.wait_for(final_since, timeout=HEARD_TIMEOUT_S, what="user transcript")
    except TimeoutError:
        return False
    return True


async def wait_agent_listening(caller: Any, identity: str, *, within_s: float) -> None:
    def state() -> str | None:
        p = caller.room.remote_participants.get(identity)
        return p.attributes.get(AGENT_STATE_ATTRIBUTE) if p is not None else None

    await wait_until(lambda: state() == "listening", within_s=within_s, what="the agent to listen")


# ---------------------------------------------------------------------------------------------
# room-less mode: the same session pipeline in this process
# ---------------------------------------------------------------------------------------------


class _LogLineHandler(logging.Handler):
    """Renders records exactly like the worker (``agent.logs`` JSON formatter) into a log."""

    def __init__(self, log: JsonLineLog) -> None:
        """``log`` receives each rendered line."""
        super().__init__(level=logging.INFO)
        from agent.logs import build_formatter

        self.setFormatter(build_formatter(json=True))
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("localdev"):
            return  # the stand-ins run in this process too, but they are not the worker
        try:
            self._log.add(self.format(record))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logs_to(log: JsonLineLog) -> Any:
    """Route this process's log records (ours and LiveKit's) into ``log`` only."""
    from agent.logs import configure_structlog

    configure_structlog()
    root = logging.getLogger()
    handler = _LogLineHandler(log)
    saved = (root.level, list(root.handlers))
    for h in saved[1]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in saved[1]:
            root.addHandler(h)
        root.setLevel(saved[0])
        logging.captureWarnings(False)


#: Room name written into the room-less session's log lines (there is no room).
ROOMLESS_ROOM = "demo-roomless"


async def run_roomless(
    plan: ServicePlan, turns: Sequence[UserTurn], *, out: Path, progress: Progress
) -> DemoResult:
    """The worker's session (same factory, same turn metrics) on a virtual mic/speaker."""
    from livekit.agents.utils import http_context
    from livekit.plugins import silero

    from agent.config import ConfigError, Profile, load_settings
    from agent.session_factory import build_assistant, build_session
    from agent.turn_metrics import attach_turn_metrics
    from localdev.roomless_io import CapturingAudioOutput, PacedAudioInput

    log = JsonLineLog(out)
    result = DemoResult(mode="room-less session")
    try:
        with _logs_to(log):
            async with demo_services(plan, livekit=False) as services:
                local_env = services.env
                env = {**plan.user_env, **local_env, **DEMO_WORKER_SETTINGS}
                try:
                    settings = load_settings(env, profile=Profile.CONSOLE)
                except ConfigError as exc:
                    raise DemoError("configuration: " + "; ".join(exc.problems)) from None
                progress("local services up; loading the VAD")
                vad = await asyncio.to_thread(silero.VAD.load)
                async with http_context.open():
                    parts = build_session(settings, vad=vad, local_turn_model_available=None)
                    mic = PacedAudioInput()
                    speaker = CapturingAudioOutput()
                    parts.session.input.audio = mic
                    parts.session.output.audio = speaker
                    attach_turn_metrics(
                        parts.session,
                        stt=parts.stt,
                        room=ROOMLESS_ROOM,
                        job_id="demo",
                        log_transcripts=True,
                        prometheus=False,
                    )
                    await parts.session.start(agent=build_assistant(settings))
                    progress("session started")
                    try:
                        for i, user_turn in enumerate(turns, 1):
                            progress(_says(i, len(turns), user_turn))
                            mic.push_speech(
                                user_turn.samples,  # both at 16 kHz
                                silence_before_s=PAUSE_BEFORE_TURN_S,
                                trailing_silence_s=TRAILING_SILENCE_S,
                            )
                            result.said.append(user_turn.text)
                            await wait_until(
                                lambda i=i: len(log.turns) >= i,  # type: ignore[misc]
                                within_s=TURN_TIMEOUT_S,
                                what=f"the turn_latency line for turn {i}",
                            )
                            turn = log.turns[i - 1]
                            progress(_turn_progress(i, len(turns), turn, user_turn.text))
                    finally:
                        await parts.session.aclose()
                        mic.close()
                        for component in (parts.stt, parts.llm, parts.tts):
                            await component.aclose()
    finally:
        log.close()
    result.turns = list(log.turns)
    return result


def _turn_progress(i: int, n: int, turn: Mapping[str, Any], said: str | None = None) -> str:
    heard = turn.get("transcript")
    heard_s = f"heard {heard!r}" if isinstance(heard, str) else "heard (not logged)"
    wer = turn_wer(said, turn)
    scored = "" if wer is None else f" (WER {wer:.2f})"
    return (
        f"turn {i}/{n}: {heard_s}{scored}, agent answered; "
        f"e2e {_ms(turn.get('e2e_latency_ms'))} (outcome {turn.get('outcome')})"
    )
