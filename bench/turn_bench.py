"""Turn-taking on human speech: how fast the agent answers, and whether it waits its turn.

``uv run python -m bench.turn_bench [--modes signals,model,vad,stt] [--json FILE]
[--env NAME=VALUE ...] [--worker-logs DIR] [--log-level DEBUG]``

Per ``TURN_DETECTION`` mode: a loopback ``livekit-server``, the worker as users run it
(``python agent.py start``, env only), the local stand-ins with fixed delays (LLM time to
first token 300 ms, TTS time to first audio 150 ms; Baseten: real Whisper on this CPU, its
own process) and one WebRTC caller who says, in one call:

* **Responsiveness**: complete human utterances (``localdev.human_speech``: questions and
  statements, 4 speakers), each followed by silence until the agent has answered.
  Voice-to-voice = caller-side end of speech (the last Silero speech frame of the clip left
  the mic) -> first agent audio at the caller. Also the worker's own ``end_of_turn_delay_ms``
  and ``e2e_latency_ms``, what ended each turn (``turn_ended_by``, ``eou_probability``), and
  the decode time of the final each turn waited for in the stand-in (a GPU Whisper takes
  tens of ms, this CPU 100-500 ms), with voice-to-voice net of it, turn by turn.
* **Patience**: the 28.9 s opening of *A Tale of Two Cities*, read aloud: one sentence with
  comma pauses of 0.4-0.8 s. Counted: user turns the worker committed for it (1 is right: at
  its end), seconds of agent audio the caller heard while the reader was still reading
  (0 is right), and the word error rate of what the caller saw transcribed (flushing must
  not lose or split words).

Timing depends on the machine: run it on a quiet one. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from localdev.demo import wait_agent_listening
from localdev.human_speech import TWO_CITIES_OPENING
from localdev.user_turns import UserTurn, from_clip, named
from localdev.wer import word_error_rate

MODES = ("signals", "model", "vad", "stt")
#: Complete utterances for responsiveness: three questions and two statements.
COMPLETE = (
    "endgame_hear_me",
    "endgame_talking_about",
    "endgame_ditch",
    "two_cities_best_of_times",
    "audioeval_quick_brown_fox",
)
LLM_TTFT_S = 0.30
TTS_TTFB_S = 0.15
AGENT_NAME = "turn-bench-agent"
#: Ceilings so a broken round cannot hang; normal values are a few seconds.
JOIN_TIMEOUT_S = 60.0
TURN_TIMEOUT_S = 30.0
#: After the passage: long enough for any end-of-turn wait (LiveKit's max is 2.5-3 s) and
#: the reply to start.
AFTER_PASSAGE_S = 8.0


@dataclass
class ModeResult:
    mode: str
    env: dict[str, str] = field(default_factory=dict)  # the --env variables of this run
    v2v_ms: list[float] = field(default_factory=list)
    end_of_turn_ms: list[float] = field(default_factory=list)
    worker_e2e_ms: list[float] = field(default_factory=list)
    final_latency_ms: list[float] = field(default_factory=list)  # plugin: speech end -> final
    final_decode_ms: list[float] = field(default_factory=list)
    #: per complete utterance: v2v minus the decode of the final that turn waited for
    v2v_net_ms: list[float] = field(default_factory=list)
    passage_wer: float | None = None
    ended_by: list[str] = field(default_factory=list)
    eou_probability: list[float | None] = field(default_factory=list)
    passage_turns: int | None = None
    passage_agent_audio_s: float | None = None
    errors: list[str] = field(default_factory=list)


async def _say(caller: Any, turn: UserTurn, agent: str) -> tuple[float, float]:
    """Speak ``turn`` when the agent listens; (speech start, end of speech), wall clock."""
    await wait_agent_listening(caller, agent, within_s=TURN_TIMEOUT_S)
    await asyncio.sleep(0.3)
    said = await caller.say(turn.samples, turn.sample_rate, trailing_silence_s=0.0)
    return said.started_at, said.speech_ended_at - turn.tail_s


async def _last_final_decode_s(baseten: Any, start: float, end: float) -> float:
    """Duration of the last final decode that finished in [start, end] (wall clock)."""
    decodes = (await baseten.stats())["decodes"]
    done = [d for d in decodes if d["is_final"] and start <= d["ended"] <= end]
    return float(done[-1]["ended"] - done[-1]["started"]) if done else 0.0


async def _responsiveness(caller: Any, agent: str, result: ModeResult, baseten: Any) -> None:
    for name in COMPLETE:
        turn = named(name)
        start, end = await _say(caller, turn, agent)
        try:
            audio = await caller.wait_for_agent_audio(after=end, timeout=TURN_TIMEOUT_S)
        except TimeoutError:
            result.errors.append(f"{name}: no agent audio within {TURN_TIMEOUT_S:g} s")
            continue
        v2v = (audio.started_at - end) * 1000
        result.v2v_ms.append(v2v)
        decode = await _last_final_decode_s(baseten, start, audio.started_at)
        result.v2v_net_ms.append(v2v - decode * 1000)
        # let the reply play out before the next turn
        await caller.wait_for_agent_audio(after=end, until_end=True, timeout=TURN_TIMEOUT_S)


async def _patience(caller: Any, agent: str, result: ModeResult) -> tuple[float, float]:
    start, end = await _say(caller, from_clip(TWO_CITIES_OPENING), agent)
    await asyncio.sleep(AFTER_PASSAGE_S)
    heard = " ".join(
        seg.text
        for seg in sorted(caller.segments.values(), key=lambda sg: sg.first_at)
        if seg.role == "user" and seg.final and seg.first_at >= start
    )
    result.passage_wer = word_error_rate(TWO_CITIES_OPENING.text, heard)
    spans = [s for s in caller.agent_speech(after=start) if s.started_at < end]
    result.passage_agent_audio_s = sum(min(s.ended_at or end, end) - s.started_at for s in spans)
    return start, end


async def run_mode(
    mode: str,
    *,
    log_dir: Path | None = None,
    log_level: str = "INFO",
    extra_env: dict[str, str] | None = None,
) -> ModeResult:
    from localdev.caller import Caller, RoomAdmin
    from localdev.stack import LocalStack
    from localdev.worker_process import WorkerProcess

    result = ModeResult(mode=mode, env=dict(extra_env or {}))
    async with LocalStack(
        llm_ttft_s=LLM_TTFT_S,
        tts_ttfb_s=TTS_TTFB_S,
        agent_name=AGENT_NAME,
        # --env BASETEN_MODEL=qwen3-asr: the stand-in speaks the protocol the worker is told
        baseten_model=(extra_env or {}).get("BASETEN_MODEL", "whisper"),
    ) as stack:
        env = {
            **stack.env,
            "TURN_DETECTION": mode,
            "DRAIN_TIMEOUT": "30",
            "LOG_LEVEL": log_level,
            **(extra_env or {}),
        }
        async with WorkerProcess(env=env) as worker:
            lk = stack.livekit
            assert lk is not None and stack.baseten is not None
            room = f"turns-{mode}-{secrets.token_hex(3)}"
            async with RoomAdmin(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret) as admin:
                await admin.create_room(room)
                async with Caller.join(
                    url=lk.url,
                    api_key=lk.api_key,
                    api_secret=lk.api_secret,
                    room=room,
                    identity="turn-bench-caller",
                ) as caller:
                    dispatch = await admin.dispatch_until_joined(
                        caller, agent_name=AGENT_NAME, room=room, join_timeout_s=JOIN_TIMEOUT_S
                    )
                    agent = dispatch.agent.identity
                    await _responsiveness(caller, agent, result, stack.baseten)
                    await _patience(caller, agent, result)
                await admin.delete_room(room)
            summary = await worker.wait_for_line(
                lambda ln: ln["message"] == "session_latency_summary" and ln["room"] == room,
                timeout=TURN_TIMEOUT_S,
                what="the session summary",
            )
            turns = worker.find_lines(
                lambda ln: ln["message"] == "turn_latency" and ln["room"] == room
            )
            for ln in turns[: len(COMPLETE)]:
                result.ended_by.append(str(ln.get("turn_ended_by")))
                result.eou_probability.append(ln.get("eou_probability"))
                for key, values in (
                    ("end_of_turn_delay_ms", result.end_of_turn_ms),
                    ("e2e_latency_ms", result.worker_e2e_ms),
                    ("transcript_latency_ms", result.final_latency_ms),
                ):
                    if isinstance(ln.get(key), int | float):
                        values.append(float(ln[key]))
            result.passage_turns = int(summary["turns"]) - len(COMPLETE)
            decodes = (await stack.baseten.stats())["decodes"]
            result.final_decode_ms = [
                (d["ended"] - d["started"]) * 1000 for d in decodes if d["is_final"]
            ]
            worker.terminate()
            await worker.wait(timeout=60)
            if log_dir is not None:
                _keep_log(log_dir / f"worker-{mode}.jsonl", worker.stdout)
    return result


def _keep_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _wer(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def format_table(results: list[ModeResult]) -> str:
    head = (
        f"{'mode':<6} | {'v2v p50/p95':>13} | {'net of decode':>13} | {'end of turn p50':>15} | "
        f"{'worker e2e p50':>14} | {'final p50':>9} | {'decode p50':>10} | {'passage turns':>13} | "
        f"{'agent audio mid-sentence':>24} | {'passage WER':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        decode = _pct(r.final_decode_ms, 50) or 0.0
        net = r.v2v_net_ms
        audio = "-" if r.passage_agent_audio_s is None else f"{r.passage_agent_audio_s:.1f} s"
        lines.append(
            f"{r.mode:<6} | {_ms(_pct(r.v2v_ms, 50)):>6}/{_ms(_pct(r.v2v_ms, 95)):>6} | "
            f"{_ms(_pct(net, 50)):>6}/{_ms(_pct(net, 95)):>6} | "
            f"{_ms(_pct(r.end_of_turn_ms, 50)):>15} | {_ms(_pct(r.worker_e2e_ms, 50)):>14} | "
            f"{_ms(_pct(r.final_latency_ms, 50)):>9} | "
            f"{_ms(decode):>10} | {r.passage_turns if r.passage_turns is not None else '-':>13} | "
            f"{audio:>24} | {_wer(r.passage_wer):>11}"
        )
    lines.append(
        "v2v = caller-side end of speech -> first agent audio, on complete human utterances (ms); "
        "net of decode subtracts each turn's own final decode in the stand-in;"
    )
    lines.append(
        "passage turns = user turns committed for one 28.9 s read sentence (1 is right); "
        "agent audio mid-sentence = agent speech heard while it was read (0 is right); "
        "passage WER = what the caller saw transcribed vs. the text."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated TURN_DETECTION")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--worker-logs", type=Path, help="keep each mode's worker log here")
    parser.add_argument("--log-level", default="INFO", help="the worker's LOG_LEVEL")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra worker variable for every mode (e.g. PREEMPTIVE_TTS=true); repeatable",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: a comma-separated subset of {', '.join(MODES)}")
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    load = os.getloadavg()[0]
    print(f"turn bench: modes {modes}; env {extra_env}; {os.cpu_count()} CPUs, load {load:.2f}")
    t0 = time.monotonic()
    results = []
    for mode in modes:
        print(f"[{time.monotonic() - t0:5.0f} s] TURN_DETECTION={mode}", flush=True)
        results.append(
            asyncio.run(
                run_mode(
                    mode, log_dir=args.worker_logs, log_level=args.log_level, extra_env=extra_env
                )
            )
        )
    print()
    print(format_table(results))
    for r in results:
        print(f"{r.mode}: ended by {r.ended_by}, eou probability {r.eou_probability}")
    for r in results:
        for e in r.errors:
            print(f"error ({r.mode}): {e}")
    print(f"({time.monotonic() - t0:.0f} s total, load {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if not any(r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
