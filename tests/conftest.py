"""Shared pytest set-up: every module in ``tests/fixtures/`` is loaded as a plugin.

Each area (Baseten server, stand-in services, LiveKit server, worker) keeps its
fixtures in its own module there, so no single conftest grows into a grab-bag.
"""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
