"""The STT client benchmark's quick mode runs end to end and prints its table.

No timing assertions (numbers depend on the machine): only that both clients were
measured for both models, produced numbers, matched events to server sends and lost none.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"-?\d+\.\d+"
#: The bench's default ``--models``.
MODELS = ("whisper", "qwen3-asr")


@pytest.mark.timeout(300)
def test_quick_mode_prints_tables_for_both_models_and_clients(tmp_path: Path) -> None:
    """The default ``--quick`` run: Whisper and Qwen3-ASR, ours and official (~85 s on 2 cores).

    One run of the default covers both models and the combined report; a run per model
    would cost the same (each model is its own server and worker runs).
    """
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stt_client_bench", "--quick", "--json", str(out_json)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for header in ("A. client-added latency", "B. CPU per audio second", "C. capacity"):
        assert header in table, table
    for model in MODELS:
        for client in ("ours", "official"):
            # latency row: three p50/p95/max trios of real numbers, then event counts
            row = re.search(rf"^{model}\s+{client}\s*\|(.*)$", table, re.MULTILINE)
            assert row is not None, table
            assert len(re.findall(NUMBER, row.group(1))) >= 9, row.group(0)
            # capacity row for K=50
            assert re.search(
                rf"^\s*50 {model}\s+{client}\s*\|\s*{NUMBER} / {NUMBER}", table, re.MULTILINE
            ), table
        assert re.search(
            rf"ratios ours/official \({model}, .*latency p95 {NUMBER}, net CPU", table
        ), table
        goals = table.split(f"goals ({model}):\n", 1)[1].splitlines()[:4]
        assert all(re.match(r"^\s+\[(PASS|FAIL)\] ", g) for g in goals), table
    assert len(re.findall(r"^\s+\[(PASS|FAIL)\] ", table, re.MULTILINE)) == 4 * len(MODELS)

    data = json.loads(out_json.read_text())
    assert list(data["models"]) == list(MODELS)
    for model in MODELS:
        per_model = data["models"][model]
        for client in ("ours", "official"):
            lat = per_model["latency_phase"][client]
            assert lat["all_ms"]["n"] > 0, (model, client)  # events matched to server sends
            assert lat["interim_ms"]["n"] > 0 and lat["final_ms"]["n"] > 0, (model, client)
            assert lat["lost"] == 0 and lat["errors"] == [], (model, client, lat)
            assert lat["cpu"]["raw_ms"] > 0
            cap = per_model["capacity"]["50"][client]
            assert cap["lost"] == 0 and cap["errors"] == [], (model, client, cap)
            assert cap["latency_ms"]["n"] > 0


@pytest.mark.timeout(300)
def test_whisper_bench_quick_mode_prints_tables_goal_and_wer(tmp_path: Path) -> None:
    """``bench.whisper_bench --quick``: both tables, the goal verdict, a WER per N.

    Whether the goal passes is the benchmark's business (machine-dependent), not this test's.
    """
    out_json = tmp_path / "whisper.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.whisper_bench", "--quick", "--json", str(out_json)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "1. Decode cost per utterance" in out, out
    assert "2. Latency under concurrency" in out, out
    for label in ("1 s", "2 s", "4 s", "7 s", "10 s", "15 s", "25 s"):
        # audio s | window s, windowed and full ms / RTF / WER / passes | speed-up
        row = re.search(rf"^{label}\s*\|(.*)$", out, re.MULTILINE)
        assert row is not None, out
        assert len(re.findall(r"\d+(?:\.\d+)?", row.group(1))) == 11, row.group(0)
    for n in (1, 2):
        # N | finals | three latency trios ... | WER | pace lag | errors
        row = re.search(rf"^\s*{n} \|(.*)$", out, re.MULTILINE)
        assert row is not None, out
        cells = [c.strip() for c in row.group(1).split("|")]
        assert re.fullmatch(NUMBER, cells[5]), row.group(0)  # the WER column
    assert re.search(r"^largest N with p95 <= 600 ms .*: (\d+|none)$", out, re.MULTILINE), out
    assert re.search(
        r"^goal: >= 4 concurrent real-time streams at p95 <= 600 ms: (PASS|FAIL)", out, re.MULTILINE
    ), out

    data = json.loads(out_json.read_text())
    assert [lv["streams"] for lv in data["levels"]] == [1, 2]
    for lv in data["levels"]:
        assert math.isfinite(lv["wer"])  # reference words were sent and scored
        assert lv["pipeline_ms"]["n"] > 0  # finals carried pipeline_latency
