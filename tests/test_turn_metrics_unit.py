"""Pure logic of agent.turn_metrics / agent.prometheus: pairing, flags, percentiles,
redaction, and Prometheus multiprocess aggregation across real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from agent.prometheus import LATENCY_BUCKETS_S, PrometheusTurnMetrics
from agent.turn_metrics import (
    IMPLAUSIBLE_S,
    LATENCY_KEYS,
    TranscriptFinal,
    TurnEnd,
    TurnPairer,
    attach_turn_metrics,
    clean_latency,
    percentile,
    summarize,
)

T0 = 1_700_000_000.0  # an arbitrary wall-clock origin


def user_metrics(stopped: float, *, tr: float = 0.2, eot: float = 0.6) -> dict[str, Any]:
    return {
        "started_speaking_at": stopped - 1.5,
        "stopped_speaking_at": stopped,
        "transcription_delay": tr,
        "end_of_turn_delay": eot,
    }


def reply_metrics(answered_stop: float, *, e2e: float = 1.2, ttft: float = 0.3) -> dict[str, Any]:
    return {
        "llm_node_ttft": ttft,
        "tts_node_ttfb": 0.2,
        "started_speaking_at": answered_stop + e2e,
        "e2e_latency": e2e,
    }


def make_pairer(**kw: Any) -> tuple[TurnPairer, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []
    return TurnPairer(on_turn=out.append, room="r1", job_id="AJ_1", **kw), out


def test_clean_latency_flags() -> None:
    assert clean_latency(0.25) == (250.0, None)
    assert clean_latency(0) == (0.0, None)
    assert clean_latency(None) == (None, "missing")
    assert clean_latency(float("nan")) == (None, "missing")
    assert clean_latency(True) == (None, "missing")
    assert clean_latency(-0.001) == (None, "implausible")
    assert clean_latency(IMPLAUSIBLE_S + 0.1) == (None, "implausible")
    assert clean_latency(IMPLAUSIBLE_S) == (IMPLAUSIBLE_S * 1000, None)


def test_simple_turn_is_paired_and_complete() -> None:
    pairer, out = make_pairer(reconnects_total=lambda: 0)
    pairer.add_transcript_final(TranscriptFinal(latency_s=0.41, received_wall_time=T0 + 0.4))
    pairer.add_user_message(
        item_id="u1", text="hello there", metrics=user_metrics(T0), created_at=T0 + 0.6
    )
    assert out == []  # logged only when the reply lands
    pairer.add_assistant_message(
        item_id="a1", metrics=reply_metrics(T0), interrupted=False, text_chars=5
    )
    (ev,) = out
    assert ev["turn_id"] == "u1" and ev["reply_id"] == "a1" and ev["outcome"] == "answered"
    assert ev["transcript_latency_ms"] == 410.0
    assert ev["transcription_delay_ms"] == 200.0
    assert ev["end_of_turn_delay_ms"] == 600.0
    assert ev["llm_ttft_ms"] == 300.0
    assert ev["tts_ttfb_ms"] == 200.0
    assert ev["e2e_latency_ms"] == 1200.0
    assert ev["stt_reconnects"] == 0
    assert ev["missing"] == [] and ev["implausible"] == []
    assert ev["transcript_chars"] == len("hello there")
    assert "transcript" not in ev  # redacted by default
    assert ev["room"] == "r1" and ev["job_id"] == "AJ_1"
    json.dumps(ev)  # plain JSON types only


def test_transcript_text_only_when_enabled() -> None:
    pairer, out = make_pairer(log_transcripts=True)
    pairer.add_user_message(item_id="u1", text="secret words", metrics={}, created_at=T0)
    pairer.flush()
    assert out[0]["transcript"] == "secret words"


def test_greeting_without_user_turn_is_not_a_turn() -> None:
    pairer, out = make_pairer()
    # session.say()/generate_reply greeting: no user metrics -> no e2e anchor
    pairer.add_assistant_message(
        item_id="a0", metrics={"tts_node_ttfb": 0.1, "started_speaking_at": T0}, interrupted=False
    )
    assert out == [] and pairer.agent_initiated_replies == 1
    pairer.add_user_message(item_id="u1", text="hi", metrics=user_metrics(T0 + 5), created_at=T0)
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(T0 + 5), interrupted=False)
    assert [e["turn_id"] for e in out] == ["u1"]
    assert out[0]["turn_index"] == 1


def test_turn_without_reply_flushed_by_later_answer_and_flags_missing() -> None:
    pairer, out = make_pairer()
    pairer.add_user_message(item_id="u1", text="a", metrics=user_metrics(T0), created_at=T0)
    pairer.add_user_message(item_id="u2", text="b", metrics=user_metrics(T0 + 3), created_at=T0)
    pairer.add_assistant_message(item_id="a2", metrics=reply_metrics(T0 + 3), interrupted=False)
    assert [(e["turn_id"], e["outcome"]) for e in out] == [("u1", "no_reply"), ("u2", "answered")]
    no_reply = out[0]
    for key in ("llm_ttft_ms", "tts_ttfb_ms", "e2e_latency_ms", "transcript_latency_ms"):
        assert no_reply[key] is None and key in no_reply["missing"]
    assert "stt_reconnects" in no_reply["missing"]  # no STT stats given
    assert set(LATENCY_KEYS) <= set(no_reply)


def test_interrupted_reply_pairs_with_its_turn_not_the_interrupting_one() -> None:
    pairer, out = make_pairer()
    pairer.add_user_message(item_id="u1", text="a", metrics=user_metrics(T0), created_at=T0)
    # the user barges in; their new turn is committed before the cut reply is recorded
    pairer.add_user_message(item_id="u2", text="b", metrics=user_metrics(T0 + 2), created_at=T0)
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(T0), interrupted=True)
    assert [(e["turn_id"], e["outcome"], e["interrupted"]) for e in out] == [
        ("u1", "interrupted", True)
    ]
    pairer.add_assistant_message(item_id="a2", metrics=reply_metrics(T0 + 2), interrupted=False)
    assert [e["reply_id"] for e in out] == ["a1", "a2"]


def test_second_reply_after_tool_call_is_not_a_new_turn() -> None:
    pairer, out = make_pairer()
    pairer.add_user_message(item_id="u1", text="a", metrics=user_metrics(T0), created_at=T0)
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(T0), interrupted=False)
    pairer.add_assistant_message(item_id="a2", metrics=reply_metrics(T0, e2e=4), interrupted=False)
    assert len(out) == 1


def test_implausible_values_become_null_and_named() -> None:
    pairer, out = make_pairer()
    m = user_metrics(T0, tr=-0.5, eot=250.0)  # LiveKit #6093-style stale anchor
    pairer.add_transcript_final(TranscriptFinal(latency_s=-1.0, received_wall_time=T0))
    pairer.add_user_message(item_id="u1", text="a", metrics=m, created_at=T0 + 1)
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(T0, e2e=31), interrupted=False)
    (ev,) = out
    assert ev["transcription_delay_ms"] is None and ev["end_of_turn_delay_ms"] is None
    assert ev["e2e_latency_ms"] is None and ev["transcript_latency_ms"] is None
    assert sorted(ev["implausible"]) == sorted(
        [
            "transcript_latency_ms",
            "transcription_delay_ms",
            "end_of_turn_delay_ms",
            "e2e_latency_ms",
        ]
    )
    assert ev["missing"] == ["stt_reconnects"]


def test_finals_assigned_by_receive_time_last_one_counts() -> None:
    pairer, out = make_pairer()
    pairer.add_transcript_final(TranscriptFinal(latency_s=0.9, received_wall_time=T0 - 2))
    pairer.add_transcript_final(TranscriptFinal(latency_s=0.3, received_wall_time=T0 - 0.1))
    pairer.add_transcript_final(TranscriptFinal(latency_s=0.5, received_wall_time=T0 + 1))  # next
    pairer.add_user_message(item_id="u1", text="a", metrics={}, created_at=T0)
    pairer.add_user_message(item_id="u2", text="b", metrics={}, created_at=T0 + 2)
    pairer.flush()
    assert [(e["stt_finals"], e["transcript_latency_ms"]) for e in out] == [(2, 300.0), (1, 500.0)]


def test_reconnects_are_per_turn_deltas() -> None:
    total = {"n": 2}
    pairer, out = make_pairer(reconnects_total=lambda: total["n"])
    total["n"] = 3
    pairer.add_user_message(item_id="u1", text="a", metrics={}, created_at=T0)
    pairer.add_user_message(item_id="u2", text="b", metrics={}, created_at=T0)
    total["n"] = 6
    pairer.add_user_message(item_id="u3", text="c", metrics={}, created_at=T0)
    pairer.flush()
    assert [e["stt_reconnects"] for e in out] == [1, 0, 3]


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
    assert percentile([5, 1, 3], 0) == 1 and percentile([5, 1, 3], 100) == 5


def test_summary_counts_and_percentiles() -> None:
    pairer, out = make_pairer(reconnects_total=lambda: 0)
    for i, e2e in enumerate((1.0, 2.0, 3.0)):
        stop = T0 + 10 * i
        pairer.add_user_message(item_id=f"u{i}", text="x", metrics=user_metrics(stop), created_at=0)
        pairer.add_assistant_message(
            item_id=f"a{i}", metrics=reply_metrics(stop, e2e=e2e), interrupted=False
        )
    pairer.add_user_message(item_id="u9", text="x", metrics={}, created_at=0)
    pairer.flush()
    s = summarize(out, room="r1", job_id="j")
    assert s["turns"] == 4 and s["outcomes"] == {"answered": 3, "no_reply": 1}
    assert s["e2e_latency_ms_count"] == 3
    assert s["e2e_latency_ms_p50"] == 2000.0
    assert s["e2e_latency_ms_p95"] == pytest.approx(2900.0)
    assert s["flagged"]["e2e_latency_ms"] == 1
    json.dumps(s)


class _Emitter:
    """Minimal stand-in for an EventEmitter, to drive the glue without a session."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}

    def on(self, name: str, cb: Any) -> None:
        self.handlers.setdefault(name, []).append(cb)

    def off(self, name: str, cb: Any) -> None:
        self.handlers[name].remove(cb)

    def emit(self, name: str, ev: Any) -> None:
        for cb in list(self.handlers.get(name, [])):
            cb(ev)


def test_collector_glue_logs_turns_summary_and_feeds_prometheus() -> None:
    from livekit.agents import llm
    from livekit.agents.voice.events import CloseReason, ConversationItemAddedEvent

    session, stt = _Emitter(), _Emitter()

    @dataclasses.dataclass
    class Stats:  # the shape of plugins.baseten_stt.STTStats
        reconnects: int = 0
        recoverable_errors: int = 0
        fatal_errors: int = 0
        audio_seconds: float = 1.5
        last_rtt_s: float | None = None

    stt.stats = Stats()  # type: ignore[attr-defined]
    registry = CollectorRegistry()
    prom = PrometheusTurnMetrics(registry=registry)
    with structlog.testing.capture_logs() as logs:
        collector = attach_turn_metrics(
            session, stt=stt, room="r1", job_id="AJ_x", log_transcripts=False, prometheus=prom
        )

        class Lat:
            latency_s = 0.35
            received_wall_time = T0 + 0.3
            reconnects_so_far = 1

        stt.stats.reconnects = 1  # type: ignore[attr-defined]
        stt.stats.recoverable_errors = 2  # type: ignore[attr-defined]
        stt.emit("transcript_latency", Lat())
        stt.emit("error", type("E", (), {"recoverable": True})())
        user = llm.ChatMessage(role="user", content=["top secret"], created_at=T0 + 0.5)
        user.metrics = user_metrics(T0)  # type: ignore[assignment]
        session.emit("conversation_item_added", ConversationItemAddedEvent(item=user))
        reply = llm.ChatMessage(role="assistant", content=["ok"], metrics=reply_metrics(T0))  # type: ignore[arg-type]
        session.emit("conversation_item_added", ConversationItemAddedEvent(item=reply))
        session.emit("close", type("C", (), {"reason": CloseReason.USER_INITIATED})())
        collector.finalize()  # idempotent: a shutdown callback may call it again

    turns = [entry for entry in logs if entry["event"] == "turn_latency"]
    summaries = [entry for entry in logs if entry["event"] == "session_latency_summary"]
    assert len(turns) == 1 and len(summaries) == 1
    assert turns[0]["transcript_latency_ms"] == 350.0 and turns[0]["stt_reconnects"] == 1
    assert "top secret" not in json.dumps(logs)
    assert summaries[0]["stt_stream_errors"] == {"recoverable": 1, "fatal": 0}
    assert summaries[0]["stt_stats"] == {
        "reconnects": 1,
        "recoverable_errors": 2,
        "fatal_errors": 0,
        "audio_seconds": 1.5,
    }
    assert summaries[0]["close_reason"] == CloseReason.USER_INITIATED.value
    assert session.handlers["close"] == [] and stt.handlers["transcript_latency"] == []

    text = generate_latest(registry).decode()
    assert "voice_agent_e2e_latency_seconds_count 1.0" in text
    assert 'voice_agent_turns_total{outcome="answered"} 1.0' in text
    assert "voice_agent_stt_reconnects_total 1.0" in text
    assert 'voice_agent_stt_errors_total{recoverable="true",source="stream"} 1.0' in text
    assert 'voice_agent_stt_errors_total{recoverable="true",source="server"} 2.0' in text
    # e2e 1.2 s lands in the 1.5 s bucket but not in the 1.0 s one
    assert 'voice_agent_e2e_latency_seconds_bucket{le="1.0"} 0.0' in text
    assert 'voice_agent_e2e_latency_seconds_bucket{le="1.5"} 1.0' in text


def test_buckets_span_voice_range() -> None:
    assert LATENCY_BUCKETS_S[0] == 0.05 and LATENCY_BUCKETS_S[-1] == 10.0
    assert list(LATENCY_BUCKETS_S) == sorted(set(LATENCY_BUCKETS_S))


_CHILD = textwrap.dedent(
    """
    import sys
    from agent.prometheus import default_metrics, multiprocess_problem
    assert multiprocess_problem() is None, multiprocess_problem()
    m = default_metrics()
    m.observe_turn({"e2e_latency_ms": float(sys.argv[1]), "outcome": "answered",
                    "missing": ["llm_ttft_ms"], "implausible": []})
    m.count_stt_reconnects(2)
    """
)


def test_prometheus_multiprocess_aggregates_job_processes(tmp_path: Path) -> None:
    """Two real processes record turns; LiveKit's own /metrics handler (run with
    PROMETHEUS_MULTIPROC_DIR, as the worker does) must report both."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(repo)}
    for e2e_ms in ("800", "2500"):
        subprocess.run([sys.executable, "-c", _CHILD, e2e_ms], env=env, check=True, cwd=repo)

    from livekit.agents.telemetry import http_server

    old = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        resp = asyncio.run(http_server.metrics(None))  # type: ignore[arg-type]
    finally:
        if old is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = old
    assert resp.body is not None
    text = bytes(resp.body).decode()  # type: ignore[arg-type]
    assert "voice_agent_e2e_latency_seconds_count 2.0" in text
    assert "voice_agent_e2e_latency_seconds_sum 3.3" in text
    assert 'voice_agent_turns_total{outcome="answered"} 2.0' in text
    assert "voice_agent_stt_reconnects_total 4.0" in text
    assert 'voice_agent_turn_values_flagged_total{field="llm_ttft_ms",reason="missing"} 2.0' in text


def _drive_one_turn(session: _Emitter) -> None:
    from livekit.agents import llm
    from livekit.agents.voice.events import CloseReason, ConversationItemAddedEvent

    user = llm.ChatMessage(role="user", content=["private words"], created_at=T0 + 0.5)
    user.metrics = user_metrics(T0)  # type: ignore[assignment]
    session.emit("conversation_item_added", ConversationItemAddedEvent(item=user))
    reply = llm.ChatMessage(role="assistant", content=["ok"], metrics=reply_metrics(T0))  # type: ignore[arg-type]
    session.emit("conversation_item_added", ConversationItemAddedEvent(item=reply))
    session.emit("close", type("C", (), {"reason": CloseReason.JOB_SHUTDOWN})())


def test_lines_survive_the_worker_logging_pipeline() -> None:
    """Through agent.logs (structlog -> stdlib record extras), a pickle round trip (what
    LiveKit's job->main log pipe does) and the worker's JSON formatter."""
    import logging
    import pickle

    from agent.logs import build_formatter, configure_structlog

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(pickle.loads(pickle.dumps(record)))

    stdlib_logger = logging.getLogger("agent.turn_metrics")
    handler, old_level, old_config = Keep(), stdlib_logger.level, structlog.get_config()
    stdlib_logger.addHandler(handler)
    stdlib_logger.setLevel(logging.INFO)
    try:
        configure_structlog()
        session = _Emitter()
        attach_turn_metrics(session, stt=None, room="r9", job_id="AJ_9", prometheus=False)
        _drive_one_turn(session)
    finally:
        stdlib_logger.removeHandler(handler)
        stdlib_logger.setLevel(old_level)
        structlog.configure(**old_config)

    formatter = build_formatter(json=True)
    lines = [json.loads(formatter.format(r)) for r in records]
    turn = [ln for ln in lines if ln.get("message") == "turn_latency"]
    summary = [ln for ln in lines if ln.get("message") == "session_latency_summary"]
    assert len(turn) == 1 and len(summary) == 1, lines
    assert turn[0]["room"] == "r9" and turn[0]["job_id"] == "AJ_9"
    assert turn[0]["e2e_latency_ms"] == 1200.0 and turn[0]["missing"] == [
        "transcript_latency_ms",
        "stt_reconnects",
    ]
    assert summary[0]["close_reason"] == "job_shutdown" and summary[0]["turns"] == 1
    assert "private words" not in json.dumps(lines)


def test_plot_script_draws_budget_from_mixed_log(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    pairer, events = make_pairer()
    for i in range(3):
        stop = T0 + 10 * i
        pairer.add_user_message(item_id=f"u{i}", text="x", metrics=user_metrics(stop), created_at=0)
        pairer.add_assistant_message(
            item_id=f"a{i}", metrics=reply_metrics(stop), interrupted=False
        )
    pairer.add_user_message(item_id="u9", text="x", metrics={}, created_at=0)
    pairer.flush()
    log = tmp_path / "worker.jsonl"
    lines = ["plain text startup line", '{"message": "registered worker", "level": "INFO"}']
    lines += [json.dumps({"message": "turn_latency", **ev}) for ev in events[:2]]  # worker format
    lines += [json.dumps({"event": "turn_latency", **ev}) for ev in events[2:]]  # structlog
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "docs" / "budget.png"

    done = subprocess.run(
        [sys.executable, "scripts/plot_turn_budget.py", str(log), "-o", str(out)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "4 turns" in done.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    empty = tmp_path / "empty.jsonl"
    empty.write_text("nothing here\n")
    done = subprocess.run(
        [sys.executable, "scripts/plot_turn_budget.py", str(empty), "-o", str(out)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "no turn_latency" in done.stderr


_PROBLEM_CHECK = textwrap.dedent(
    """
    import multiprocessing, os, sys
    from agent.prometheus import multiprocess_problem

    def child(q):
        q.put(multiprocess_problem())

    if __name__ == "__main__":
        if sys.argv[1] == "late-env":
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]  # after the import: too late
            print(multiprocess_problem())
        else:
            ctx = multiprocessing.get_context("spawn")  # like LiveKit's job processes
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print(q.get(timeout=60))
            p.join()
    """
)


@pytest.mark.parametrize(
    ("mode", "expect"),
    [("late-env", "set after prometheus_client was imported"), ("job-no-env", "job process")],
)
def test_multiprocess_misconfiguration_is_reported(tmp_path: Path, mode: str, expect: str) -> None:
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "check.py"
    script.write_text(_PROBLEM_CHECK)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(repo)
    done = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path)],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert expect in done.stdout, done.stdout + done.stderr


def test_turn_takes_the_verdict_given_just_before_its_commit() -> None:
    pairer, events = make_pairer()
    stopped = T0 + 10
    # a verdict at an earlier pause of the same turn, then the one that ended it at 0.9 s;
    # the message itself was created at the final (a preemptive generation), before both
    pairer.add_turn_end(
        TurnEnd(ended_by="continuation", eou_probability=0.7, wait_s=0.3, decided_at=stopped - 2)
    )
    pairer.add_turn_end(
        TurnEnd(ended_by="statement", eou_probability=0.55, wait_s=0.9, decided_at=stopped + 0.9)
    )
    pairer.add_user_message(
        item_id="u1", text="a", metrics=user_metrics(stopped, eot=0.91), created_at=stopped + 0.5
    )
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(stopped), interrupted=False)
    ev = events[-1]
    assert (ev["turn_ended_by"], ev["eou_probability"], ev["turn_wait_ms"]) == (
        "statement",
        0.55,
        900.0,
    )


def test_livekit_mode_turns_name_the_mode_rule() -> None:
    pairer, events = make_pairer(default_end="vad_silence")
    pairer.add_user_message(item_id="u1", text="a", metrics=user_metrics(T0), created_at=T0)
    pairer.add_assistant_message(item_id="a1", metrics=reply_metrics(T0), interrupted=False)
    ev = events[-1]
    assert ev["turn_ended_by"] == "vad_silence"
    assert ev["eou_probability"] is None
    assert ev["turn_wait_ms"] == ev["end_of_turn_delay_ms"] == 600.0
