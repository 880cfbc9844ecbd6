"""Entry point: ``python agent.py {start,dev,console,download-files,demo} [...]``.

Everything lives in the ``agent`` package; this file only dispatches. ``demo`` is the one
command that is not production code: it lives in ``localdev`` (source checkouts only, not
in the Docker image), which the ``agent`` package must never import, so it is resolved
here, lazily.
"""

from __future__ import annotations

import os
import sys
import tempfile


def _demo(argv: list[str]) -> int:
    try:
        from localdev.demo import main as demo_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("localdev", "localdev.demo"):
            raise  # a real missing dependency inside the demo: show it
        print(
            "the demo needs a source checkout (localdev/ is not installed here)",
            file=sys.stderr,
        )
        return 2
    return int(demo_main(argv) or 0)


def _share_metrics_across_job_processes() -> None:
    """Give prometheus_client a multiprocess directory before anything imports it.

    Jobs run in child processes; their samples reach the main process's ``/metrics`` only
    through files under ``PROMETHEUS_MULTIPROC_DIR``, and prometheus_client reads that
    variable once, at import (see ``agent/prometheus.py``). ``livekit.agents`` imports it,
    so the variable must exist before ``agent.cli`` is imported. A fresh directory per run
    keeps a restarted worker from serving a previous run's counters.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voice-agent-metrics-")


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    if argv[:1] in (["start"], ["dev"]):
        _share_metrics_across_job_processes()
    from agent.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
