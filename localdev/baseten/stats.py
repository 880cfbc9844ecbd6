"""Counters a test can assert on to see what the server observed and did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from localdev.baseten.engine import DecodeRecord
from plugins.baseten_stt.protocol import Qwen3Handshake, StreamingWhisperInput


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
    #: Streams whose first message was valid (Qwen3: handshake valid or absent).
    streams_started: int = 0
    #: First messages rejected (bad JSON/schema/binary; Qwen3: a handshake whose values do
    #: not validate) -> close 1011.
    bad_first_messages: int = 0
    last_first_message: StreamingWhisperInput | None = None
    #: Audio frames: Whisper binary frames after the first message, valid or not; Qwen3
    #: 512-sample windows cut from the appended audio (the unit of fault thresholds).
    frames_received: int = 0
    #: Binary frames of the wrong size/encoding (each one fatal).
    bad_frames: int = 0
    #: Seconds of 16 kHz audio received (Qwen3: decoded from appends, remainders included).
    audio_seconds_received: float = 0.0
    # ---- Qwen3 dialect
    #: First frames read as a handshake (a JSON object without ``type``).
    handshakes_received: int = 0
    #: The last handshake as the server read it (unknown keys dropped).
    last_handshake: Qwen3Handshake | None = None
    #: Valid ``input_audio_buffer.append`` frames.
    appends_received: int = 0
    #: ``input_audio_buffer.commit`` frames.
    commits_received: int = 0
    #: Binary frames refused (error frame, then close 1003).
    binary_frames_rejected: int = 0
    # ---- v2 stub
    #: ``session.created`` frames sent (one per v2 connection).
    sessions_created_sent: int = 0
    #: Frames a v2 stub read and ignored.
    frames_ignored: int = 0
    partials_sent: int = 0
    partials_dropped: int = 0
    finals_sent: int = 0
    #: Finals with no segments (VAD closed on noise, or nothing recognised).
    empty_finals_sent: int = 0
    #: Buffers dropped at the max-duration cap while not in speech.
    buffers_dropped: int = 0
    last_final_text: str | None = None
    final_texts: list[str] = field(default_factory=list)
    #: Finals answering a client's end of audio (``is_end_of_audio_flush``): Whisper's
    #: ``end_audio`` flush final, Qwen3's reply to every commit (empty ones included).
    flush_replies_sent: int = 0
    end_audio_received: int = 0
    finished_sent: int = 0
    health_checks: int = 0
    #: Text frames refused with a recoverable error: Whisper, not a ``ControlMessage``
    #: (STREAM_ERROR); Qwen3, not JSON, an unknown ``type``, or audio that is not base64
    #: PCM16.
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
    if stats.last_handshake is not None:
        data["last_handshake"] = stats.last_handshake.model_dump()
    data["decodes"] = [asdict(d) for d in list(decodes.decodes)]
    return data
