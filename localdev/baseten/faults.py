"""Fault injection for the local Baseten server.

Every fault reproduces something a client meets in production (doc §5, §4.2): a cold
or draining deployment answering the upgrade with 503, a TCP connection that dies
without a close frame, a replica that stops answering, inference that is slow, and
error frames. All default to off; a plan applies to connections opened after it is
installed (``LocalBasetenServer.faults = FaultPlan(...)`` resets the counters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plugins.baseten_stt.protocol import ErrorType


@dataclass(frozen=True)
class InjectedError:
    """Send an error frame after ``after_frames`` audio frames on a connection.

    A non-recoverable error is followed by a close 1000, which is what the real
    server does after an ``AUDIO_PROCESSING_ERROR`` (its audio loop exits and truss
    closes normally). ``connections`` bounds how many connections receive it so a
    reconnecting client can be shown to recover.
    """

    after_frames: int
    error_type: ErrorType = ErrorType.TRANSCRIPTION_ERROR
    recoverable: bool = True
    message: str = "Injected fault: transcription failed"
    connections: int = 1


@dataclass
class FaultPlan:
    """What to break, all off by default."""

    #: The first N upgrade attempts (after a successful auth check, as the gateway
    #: authenticates before routing) get HTTP 503 with a JSON ``{"error": ...}`` body.
    reject_upgrades_with_503: int = 0
    #: Abort the TCP connection (no close frame) after this many audio frames...
    drop_after_frames: int | None = None
    #: ...on this many connections (then connections behave normally again).
    drop_connections: int = 1
    #: Stop reading and answering after this many audio frames, TCP stays open...
    stall_after_frames: int | None = None
    #: ...on this many connections.
    stall_connections: int = 1
    #: Extra seconds added to every transcription (simulates GPU queueing/cold model).
    inference_delay_s: float = 0.0
    inject_errors: list[InjectedError] = field(default_factory=list)
