"""Trouble the Cartesia stand-in can make, so the worker's handling of it can be tested.

A :class:`TTSFaults` is a queue of per-context faults, consumed as websocket contexts
start (``srv.faults.add(...)`` while the server runs):

* ``"error"``: after ``after_chunks`` audio chunks, an error message for the context
  (``{"type": "error", "done": true, ...}``, as Cartesia sends for a failed generation)
  and nothing more for it;
* ``"close"``: after ``after_chunks`` chunks, the socket is closed (1011) under every
  context on it (a crashed backend);
* ``"hang"``: the context never answers (a wedged backend), until the client gives up.

Every fault used is recorded in ``srv.faults.injected`` (kind per context).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["error", "close", "hang"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "close", "hang")


@dataclass(frozen=True)
class TTSFault:
    kind: FaultKind
    after_chunks: int = 0
    status_code: int = 500


@dataclass
class TTSFaults:
    pending: deque[TTSFault] = field(default_factory=deque)
    injected: list[FaultKind] = field(default_factory=list)

    def add(
        self, kind: FaultKind, *, count: int = 1, after_chunks: int = 0, status_code: int = 500
    ) -> None:
        """Make the next ``count`` contexts (after those already queued) fail so."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        self.pending.extend(TTSFault(kind, after_chunks, status_code) for _ in range(count))

    def take(self) -> TTSFault | None:
        """The fault for the context now starting, if any."""
        if not self.pending:
            return None
        fault = self.pending.popleft()
        self.injected.append(fault.kind)
        return fault
