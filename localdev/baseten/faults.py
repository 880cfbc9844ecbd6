"""Fault injection for the local Baseten server.

Every fault reproduces something a client meets in production (doc §5, §4.2): a cold
or draining deployment answering the upgrade with 503, a TCP connection that dies
without a close frame, a replica that stops answering, inference that is slow, and
error frames. All default to off; a plan applies to connections opened after it is
installed (``LocalBasetenServer.faults = FaultPlan(...)`` resets the counters).

**Units.** Every ``*_after_frames`` threshold counts 32 ms of audio: 512-sample windows at
16 kHz, the unit the server VAD consumes. In the Whisper dialect that is one binary frame
(1024 B s16le or 256 B mu-law). In the Qwen3 dialect, where an ``input_audio_buffer.append``
may carry any amount of audio, the appended PCM is cut into consecutive 512-sample windows
(a remainder waits for the next append) and the thresholds count those windows, checked
after each one, even in the middle of an append. So one plan breaks a stream at the same
audio position in both dialects (``drop_after_frames=50`` = after 1.6 s of audio).

The ``close_after_commit*``, ``flush_reply_without_is_final`` and ``error_shape`` switches
act only in the Qwen3 dialect (``LocalBasetenServer(protocol="qwen3")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from plugins.baseten_stt.protocol import ErrorType

#: How the Qwen3 dialect writes error frames (``FaultPlan.error_shape``).
ErrorShape = Literal["message", "error", "body"]
ERROR_SHAPES: tuple[ErrorShape, ...] = ("message", "error", "body")


@dataclass(frozen=True)
class InjectedError:
    """Send an error frame after ``after_frames`` audio frames (32 ms windows) on a connection.

    A non-recoverable error is followed by a close 1000, which is what the real
    server does after an ``AUDIO_PROCESSING_ERROR`` (its audio loop exits and truss
    closes normally); so in the Qwen3 dialect. ``connections`` bounds how many
    connections receive it so a reconnecting client can be shown to recover. In the
    Qwen3 dialect the frame's shape is ``FaultPlan.error_shape`` (``error_type`` is only
    on the wire in the ``"body"`` shape).
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
    #: Abort the TCP connection (no close frame) after this many audio frames (see Units)...
    drop_after_frames: int | None = None
    #: ...on this many connections (then connections behave normally again).
    drop_connections: int = 1
    #: Stop reading and answering after this many audio frames, TCP stays open...
    stall_after_frames: int | None = None
    #: ...on this many connections.
    stall_connections: int = 1
    #: Extra seconds before every transcription leaves (a deep GPU queue or a cold model).
    #: Latency, not throughput: results are pipelined, each sent this long after its job
    #: was queued (plus the decode), so a slow server still sends its partials.
    inference_delay_s: float = 0.0
    inject_errors: list[InjectedError] = field(default_factory=list)

    # ---- Qwen3 dialect only
    #: On this many connections, close 1000 as soon as an ``input_audio_buffer.commit``
    #: arrives, *before* the flush reply: a server that loses the last final.
    close_after_commit: int = 0
    #: On this many connections, close 1000 right *after* sending the flush reply: a
    #: server that serves one turn per socket (doc §2.2 OPEN).
    close_after_commit_reply: int = 0
    #: Flush replies (the answer to a commit) without ``is_final`` (doc §2.2 OPEN).
    flush_reply_without_is_final: bool = False
    #: Shape of every error frame the Qwen3 dialect sends, injected or not (doc §1 OPEN):
    #: ``"message"`` = ``{"type":"error","message":...,"recoverable":...}`` (what clients
    #: read), ``"error"`` = ``{"type":"error","error":"..."}`` (sibling Baseten servers),
    #: ``"body"`` = Whisper's nested ``{"type":"error","body":{error_type,message,...}}``.
    error_shape: ErrorShape = "message"
