"""``python agent.py demo``, run as users run it: a subprocess with no API key anywhere.

Both modes: with the local LiveKit server (the real worker as a subprocess, a caller over
WebRTC; marked e2e) and ``--roomless`` (the same session pipeline in the demo process). Each
run must exit 0, print the latency table, and write a JSON-lines log with one measured
``turn_latency`` line per user turn (human recordings by default, the user's own files with
``--wav``), what was heard must match what was said (word error rate <= 0.10), and no
credential may appear in anything it wrote. Timings are printed by the demo, never asserted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localdev.demo import plan_services
from localdev.human_speech import clip
from localdev.speech import write_wav_pcm16
from localdev.user_turns import DEMO_TURN_NAMES, named
from localdev.wer import word_error_rate
from tests.fixtures.worker import REPO, subprocess_env

# The whole demo is meant to take about a minute; this only stops a hung run.
DEMO_TIMEOUT_S = 240

TABLE_HEADER = re.compile(r"turn\s+heard \(final transcript\)\s+WER\s+STT final\s+end of turn")
LATENCY_FIELDS = ("transcript_latency_ms", "end_of_turn_delay_ms", "llm_ttft_ms", "e2e_latency_ms")
# Credentials the demo generates: stand-in keys (LocalStack: local-<service>-<32 hex>) and
# livekit-server's API key (API<12 hex>).
GENERATED_KEY = re.compile(r"local-[a-z]+-[0-9a-f]{32}|\bAPI[0-9a-f]{12}\b")
#: The most a turn may mishear of what was said (human recordings, real Whisper stand-in).
MAX_WER = 0.10
#: Width of the table's "heard" column (longer transcripts end in "...").
HEARD_COLUMN = 40
API_KEY_VARS = ("BASETEN_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY", "LIVEKIT_API_SECRET")


def run_demo(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python agent.py demo ARGS`` with only PATH/HOME/LANG/TMPDIR (+ ``env``) set."""
    full_env = subprocess_env(env or {})
    assert not any(full_env.get(name) for name in API_KEY_VARS)
    return subprocess.run(
        [sys.executable, str(REPO / "agent.py"), "demo", *args],
        cwd=cwd,  # a fresh directory: no .env of the developer's is read
        env=full_env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def turn_lines(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("message") == "turn_latency"]


def assert_demo_succeeded(
    proc: subprocess.CompletedProcess[str],
    log: Path,
    *,
    said: list[str],
    mode: str,
    cwd: Path,
) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert TABLE_HEADER.search(proc.stdout), proc.stdout
    shown = re.search(rf"^worker log \({mode}\): (.+)$", proc.stdout, re.M)
    assert shown and (cwd / shown.group(1)).resolve() == log.resolve(), proc.stdout
    # every service is local and says so
    for role in ("STT", "LLM", "TTS"):
        assert re.search(rf"^\s+{role}\s+local ", proc.stdout, re.M), proc.stdout

    lines = turn_lines(log)
    assert [t["turn_index"] for t in lines] == list(range(1, len(said) + 1)), lines
    for t, text in zip(lines, said, strict=True):
        assert t["outcome"] == "answered", t
        for field in LATENCY_FIELDS:
            assert isinstance(t[field], float) and t[field] > 0, (field, t)
        heard = t["transcript"]
        wer = word_error_rate(text, heard)
        print(f"demo turn {t['turn_index']}: WER {wer:.2f}, said {text!r}, heard {heard!r}")
        assert wer <= MAX_WER, t
        shown = heard if len(heard) <= HEARD_COLUMN else heard[: HEARD_COLUMN - 3] + "..."
        # the table scores a turn when the demo knows its words (not for a user's --wav)
        row = rf"^\s+{t['turn_index']}\s+{re.escape(shown)}\s+({wer:.2f}\s+)?\d+ ms"
        assert re.search(row, proc.stdout, re.M), proc.stdout

    everything = output + log.read_text()
    assert not GENERATED_KEY.search(everything), GENERATED_KEY.search(everything)


def test_roomless_demo_runs_without_any_key(tmp_path: Path) -> None:
    log = tmp_path / "out" / "roomless.jsonl"
    proc = run_demo("--roomless", "--turns", "2", "--out", str(log), cwd=tmp_path)
    said = [named(n).text or "" for n in DEMO_TURN_NAMES[:2]]
    assert_demo_succeeded(proc, log, said=said, mode="room-less session", cwd=tmp_path)
    assert "LiveKit  none: room-less session in this process (--roomless)" in proc.stdout
    assert "(recording)" in proc.stdout  # the default turns are human recordings


def test_roomless_demo_speaks_the_users_own_recordings(tmp_path: Path) -> None:
    """``--wav``: any rate sox reads, stereo downmixed; what was heard is printed."""
    question, statement = clip("endgame_talking_about"), clip("two_cities_best_of_times")
    stereo = tmp_path / "question-44k-stereo.wav"
    pcm = question.samples(sample_rate=44_100)
    # a stereo phone-style recording: the talker louder on the left
    _write_stereo(stereo, np.stack([pcm, (pcm * 0.5).astype(np.int16)], axis=1), 44_100)
    narrow = tmp_path / "statement-8k.wav"
    write_wav_pcm16(narrow, statement.samples(sample_rate=8_000), 8_000)
    log = tmp_path / "wav.jsonl"
    proc = run_demo(
        "--roomless", "--wav", str(stereo), str(narrow), "--out", str(log), cwd=tmp_path
    )
    assert_demo_succeeded(
        proc, log, said=[question.text, statement.text], mode="room-less session", cwd=tmp_path
    )
    assert f"says {stereo.name}" in proc.stdout and f"says {narrow.name}" in proc.stdout


def _write_stereo(path: Path, frames: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())


@pytest.mark.e2e
def test_demo_with_livekit_server_runs_the_worker_without_any_key(tmp_path: Path) -> None:
    if shutil.which("livekit-server") is None:
        pytest.skip("livekit-server not on PATH (scripts/install-livekit-server.sh)")
    proc = run_demo(cwd=tmp_path)  # defaults: 3 turns, ./artifacts/demo-<time>.jsonl
    logs = list((tmp_path / "artifacts").glob("demo-*.jsonl"))
    assert len(logs) == 1, proc.stdout + proc.stderr
    log = logs[0]
    assert_demo_succeeded(
        proc,
        log,
        said=[named(n).text or "" for n in DEMO_TURN_NAMES[:3]],
        mode="worker subprocess, local livekit-server",
        cwd=tmp_path,
    )
    assert "worker registered with LiveKit" in proc.stdout
    assert "worker drained and exited with code 0" in proc.stdout
    # the worker's own lines: the job context and the session summary are in the log
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert any(r.get("message") == "session_latency_summary" for r in records)
    assert all(r["job_id"].startswith("AJ_") for r in turn_lines(log))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--turns", "0"], "--turns must be between 1 and"),
        (["--turns", "99"], "--turns must be between 1 and"),
        (["--out", "/proc/no/such/dir/x.jsonl"], "cannot write /proc/no/such/dir/x.jsonl"),
        (["--wav", "/no/such/take.wav"], "/no/such/take.wav: no such audio file"),
        (["--wav", str(REPO / "pyproject.toml")], "pyproject.toml: sox cannot read it"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = run_demo(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_service_with_a_key_is_real_the_others_local() -> None:
    plan = plan_services(
        {
            "OPENAI_API_KEY": "sk-user-key",
            "OPENAI_MODEL": "gpt-4.1-nano",
            "BASETEN_API_KEY": "bt-key-without-endpoint",
            "LIVEKIT_URL": "wss://someone.livekit.cloud",
            "TURN_DETECTION": "vad",
        }
    )
    assert plan.local == {"baseten", "cartesia"}
    # the real service's variables and the agent knobs reach the worker; a Baseten key
    # without its endpoint is not enough, and LiveKit always stays local
    assert plan.user_env == {
        "OPENAI_API_KEY": "sk-user-key",
        "OPENAI_MODEL": "gpt-4.1-nano",
        "TURN_DETECTION": "vad",
    }
    described = "\n".join(plan.describe())
    assert "REAL OpenAI-compatible API at api.openai.com" in described
    assert "set BOTH BASETEN_API_KEY and BASETEN_MODEL_ENDPOINT" in described
    assert "sk-user-key" not in described
