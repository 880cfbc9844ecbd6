"""``python agent.py demo``, run as users run it: a subprocess with no API key anywhere.

Both modes: with the local LiveKit server (the real worker as a subprocess, a caller over
WebRTC; marked e2e) and ``--roomless`` (the same session pipeline in the demo process). Each
run must exit 0, print the latency table, and write a JSON-lines log with one measured
``turn_latency`` line per scripted turn, and no credential may appear in anything it wrote.
Timings are printed by the demo, never asserted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localdev.demo import DEMO_PHRASES, plan_services
from tests.fixtures.worker import REPO, subprocess_env

# The whole demo is meant to take about a minute; this only stops a hung run.
DEMO_TIMEOUT_S = 240

TABLE_HEADER = re.compile(r"turn\s+heard \(final transcript\)\s+STT final\s+end of turn")
LATENCY_FIELDS = ("transcript_latency_ms", "end_of_turn_delay_ms", "llm_ttft_ms", "e2e_latency_ms")
# Credentials the demo generates: stand-in keys (LocalStack: local-<service>-<32 hex>; the
# demo's Baseten stand-in: demo-baseten-<32 hex>) and livekit-server's API key (API<12 hex>).
GENERATED_KEY = re.compile(r"(local-[a-z]+-|demo-baseten-)[0-9a-f]{32}|\bAPI[0-9a-f]{12}\b")
VOCABULARY = {word for phrase in DEMO_PHRASES for word in phrase.split()}
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
    turns: int,
    mode: str,
    cwd: Path,
    exact: bool,
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
    assert [t["turn_index"] for t in lines] == list(range(1, turns + 1)), lines
    for t, phrase in zip(lines, DEMO_PHRASES, strict=False):
        assert t["outcome"] == "answered", t
        for field in LATENCY_FIELDS:
            assert isinstance(t[field], float) and t[field] > 0, (field, t)
        heard = t["transcript"]
        if exact:
            # room-less, the audio arrives bit-exact: the phrase grammar makes it exact
            assert heard == phrase, t
        else:
            # over WebRTC on a shared 2-core machine the Opus audio may arrive with gaps, and
            # pocketsphinx (not Whisper) then garbles words; still only words of the grammar
            assert heard and set(heard.split()) <= VOCABULARY, t
        assert re.search(rf"^\s+{t['turn_index']}\s+{heard}\s+\d+ ms", proc.stdout, re.M)

    everything = output + log.read_text()
    assert not GENERATED_KEY.search(everything), GENERATED_KEY.search(everything)


def test_roomless_demo_runs_without_any_key(tmp_path: Path) -> None:
    log = tmp_path / "out" / "roomless.jsonl"
    proc = run_demo("--roomless", "--turns", "2", "--out", str(log), cwd=tmp_path)
    assert_demo_succeeded(proc, log, turns=2, mode="room-less session", cwd=tmp_path, exact=True)
    assert "LiveKit  none: room-less session in this process (--roomless)" in proc.stdout


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
        turns=3,
        mode="worker subprocess, local livekit-server",
        cwd=tmp_path,
        exact=False,
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
