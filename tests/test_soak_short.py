"""The short soak CI runs: back-to-back calls on the real worker, no clear leak.

``bench.soak --calls 6`` (the 30-minute run is ``bench.soak`` itself): after every call, the
worker's fds, threads and asyncio tasks, the forkserver's fds and threads and the number of
job processes must not have risen after each of the last 5 calls. Timing is not judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import LEAK_CALLS, LEAK_SERIES, clear_leaks

REPO = Path(__file__).resolve().parents[1]


def test_the_leak_rule_flags_growth_on_every_call_and_nothing_else() -> None:
    steady = [{"worker.fds": 31, "worker.threads": 12} for _ in range(LEAK_CALLS + 3)]
    assert clear_leaks(steady) == []
    # a pool that fills during the first calls, then stays
    filling = [{"worker.fds": min(31 + i, 34)} for i in range(LEAK_CALLS + 3)]
    assert clear_leaks(filling) == []
    leaking = [{"worker.asyncio_tasks": 25 + i} for i in range(LEAK_CALLS + 1)]
    (leak,) = clear_leaks(leaking)
    assert leak.startswith("worker.asyncio_tasks rose after each of the last")
    assert "worker.asyncio_tasks" in LEAK_SERIES


@pytest.mark.e2e
def test_six_back_to_back_calls_leak_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--calls", str(LEAK_CALLS + 1), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout)
    report = json.loads(out.read_text())
    assert report["calls"] == LEAK_CALLS + 1 and report["errors"] == []
    assert report["leaks"] == [], report["leaks"]
    after = report["after_call"]
    # every series the rule judges was really sampled after every call
    for name in LEAK_SERIES:
        assert all(isinstance(row.get(name), int) for row in after), (name, after)
    # job processes logged their stats during the calls
    assert any(s.get("job.max_asyncio_tasks") for s in report["samples"]), report["samples"]
    assert proc.returncode == 0, proc.stderr[-2000:]
