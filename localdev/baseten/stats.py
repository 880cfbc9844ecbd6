"""Counters a test can assert on to see what the server observed and did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from localdev.baseten.engine import DecodeRecord
from plugins.baseten_stt.protocol import StreamingWhisperInput


@dataclass
class ServerStats:
    """Cumulative over the server's life (never reset by a new ``FaultPlan``)."""

    #: Every HTTP request on a websocket route that asked for an upgrade.
    upgrade_attempts: int = 0
    #: Upgrades refused (401 auth + injected 503).
    upgrades_rejected: int = 0
    auth_failures: int = 0
    unavailable_503: int = 0
    #: Websockets accepted (upgrade succeeded).
    connections: int = 0
    active_connections: int = 0
    #: Streams whose first message was valid.
    streams_started: int = 0
    #: First messages rejected (bad JSON/schema/binary) -> close 1011.
    bad_first_messages: int = 0
    last_first_message: StreamingWhisperInput | None = None
    #: Binary frames after the first message, valid or not.
    frames_received: int = 0
    #: Binary frames of the wrong size/encoding (each one fatal).
    bad_frames: int = 0
    audio_seconds_received: float = 0.0
    partials_sent: int = 0
    partials_dropped: int = 0
    finals_sent: int = 0
    #: Finals with no segments (VAD closed on noise, or nothing recognised).
    empty_finals_sent: int = 0
    #: Buffers dropped at the max-duration cap while not in speech.
    buffers_dropped: int = 0
    last_final_text: str | None = None
    final_texts: list[str] = field(default_factory=list)
    end_audio_received: int = 0
    finished_sent: int = 0
    health_checks: int = 0
    #: Text frames that failed ``ControlMessage`` validation (STREAM_ERROR sent).
    stream_errors_sent: int = 0
    #: Any error frame sent, injected or not.
    error_frames_sent: int = 0
    #: Messages received after ``finished`` (each makes the server close 1000).
    messages_after_finished: int = 0
    dropped_connections: int = 0
    stalled_connections: int = 0
    errors_injected: int = 0
    #: Close codes the server initiated, in order.
    close_codes_sent: list[int] = field(default_factory=list)
    #: Connections the client closed (close frame or TCP gone) before the server did.
    client_disconnects: int = 0


def stats_json(stats: ServerStats, decodes: DecodeRecord) -> dict[str, Any]:
    """``stats`` and the decode timings as plain JSON (``GET /_localdev/stats``)."""
    data = asdict(stats)
    if stats.last_first_message is not None:
        data["last_first_message"] = stats.last_first_message.model_dump()
    data["decodes"] = [asdict(d) for d in list(decodes.decodes)]
    return data
