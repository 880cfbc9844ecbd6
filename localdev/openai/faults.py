"""Trouble the OpenAI stand-in can make, so the worker's handling of it can be tested.

A :class:`LLMFaults` is a queue of per-request faults, consumed in request order by chat
completions (``srv.faults.add(...)`` while the server runs, or ``--fail-next`` on the CLI):

* ``"status"``: answer with an HTTP error and OpenAI's error envelope (500
  ``server_error``, 429 ``rate_limit_exceeded``, 503 ...), before any token;
* ``"cut"``: stream ``after_tokens`` tokens, then drop the connection without the final
  chunk or ``[DONE]`` (a proxy or the model dying mid-reply);
* ``"hang"``: send the SSE headers, then nothing at all (a wedged model), until the
  client gives up.

Every fault used is recorded in ``srv.faults.injected`` (kind per request).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["status", "cut", "hang"]
FAULT_KINDS: tuple[FaultKind, ...] = ("status", "cut", "hang")

#: OpenAI's error ``type`` per status (what its API sends; the SDK maps status to class).
ERROR_TYPES = {429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


@dataclass(frozen=True)
class LLMFault:
    kind: FaultKind
    status: int = 500
    after_tokens: int = 2


@dataclass
class LLMFaults:
    pending: deque[LLMFault] = field(default_factory=deque)
    injected: list[FaultKind] = field(default_factory=list)

    def add(
        self, kind: FaultKind, *, count: int = 1, status: int = 500, after_tokens: int = 2
    ) -> None:
        """Make the next ``count`` completions (after those already queued) fail so."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        self.pending.extend(LLMFault(kind, status, after_tokens) for _ in range(count))

    def take(self) -> LLMFault | None:
        """The fault for the request now being served, if any."""
        if not self.pending:
            return None
        fault = self.pending.popleft()
        self.injected.append(fault.kind)
        return fault
