"""What a worker process holds right now: memory, file descriptors, threads, asyncio tasks.

With ``PROCESS_STATS_INTERVAL_S`` set, the worker's main process and every job process log
one ``process_stats`` line at that cadence (``role`` = ``worker`` or ``job``), so a leak
(something that grows with every call) shows in the logs a deployment already collects;
``bench/soak.py`` reads the same lines. Read from ``/proc`` (Linux; elsewhere the fields it
cannot read are null), so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from agent.logs import get_logger

log = get_logger("agent.process_stats")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_stats() -> dict[str, Any]:
    """RSS (MB), open file descriptors, OS threads and asyncio tasks of this process."""
    stats: dict[str, Any] = {"pid": os.getpid(), "rss_mb": None, "fds": None, "threads": None}
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        stats["rss_mb"] = round(int(f.read().split()[1]) * _PAGE / 2**20, 1)
    with contextlib.suppress(OSError):
        stats["fds"] = len(os.listdir("/proc/self/fd"))
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                stats["threads"] = int(line.split()[1])
                break
    try:
        stats["asyncio_tasks"] = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop in this thread
        stats["asyncio_tasks"] = None
    return stats


async def log_process_stats(role: str, interval_s: float) -> None:
    """Log ``process_stats`` now and every ``interval_s`` until cancelled."""
    while True:
        log.info("process_stats", role=role, **process_stats())
        await asyncio.sleep(interval_s)
