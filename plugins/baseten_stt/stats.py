"""Counters and the per-final latency record the STT exposes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class STTStats:
    """Running counters over every stream of one ``STT`` instance (``stt.stats``).

    Plain ints/floats so a worker can export them as metrics without translation.
    """

    streams: int = 0
    connections: int = 0  # successful websocket upgrades
    reconnects: int = 0  # connections opened to resume a stream after a drop/stall/error
    handshake_retries: int = 0  # 5xx/429 upgrade failures retried with backoff
    replayed_frames: int = 0  # audio frames re-sent after a reconnect
    replay_overflow_frames: int = 0  # unfinalised frames dropped because the buffer was full
    failovers: int = 0  # endpoint switches after a failure (EndpointSwitch.after_failure)
    failbacks: int = 0  # returns to the primary once it answered a probe
    stalls: int = 0  # connections abandoned because health checks went unanswered
    recoverable_errors: int = 0  # error frames the server said it survived
    fatal_errors: int = 0  # error frames / closes that ended a connection
    interims: int = 0
    finals: int = 0
    empty_finals: int = 0
    duplicate_finals_dropped: int = 0
    frames_sent: int = 0  # binary audio frames sent (including replays)
    audio_seconds: float = 0.0  # audio the streams sent (no replays; flush silence included)
    flushes: int = 0  # manual flushes (silence sent at once, or a commit)
    injected_silence_s: float = 0.0  # seconds of silence / frame padding those flushes sent
    commits_sent: int = 0  # Qwen3 input_audio_buffer.commit (flushes, end of stream, replays)
    commit_replies: int = 0  # flush replies received
    last_commit_reply_s: float | None = None  # newest commit -> reply time
    last_rtt_s: float | None = None  # newest health_check round trip
    # the most speech-energy audio sent with no result back (speech_stall_s's margin)
    max_speech_unanswered_s: float = 0.0


@dataclass(frozen=True)
class TranscriptLatency:
    """Emitted as ``stt.on("transcript_latency", ...)`` once per FINAL transcript.

    ``latency_s`` = ``received_wall_time - speech_end_wall_time``: from the moment the
    audio holding the utterance's last word was pushed into the stream (its end time
    on the stream timeline, mapped to the wall clock of that push) to the arrival of
    the final. It includes server VAD silence (``vad_min_silence_duration_ms``),
    inference and network, i.e. what the user waits for before the agent can reply.
    """

    request_id: str
    latency_s: float
    speech_end_wall_time: float
    received_wall_time: float
    audio_duration_s: float  # length of the finalised utterance audio, per the server
    reconnects_so_far: int  # reconnects of this stream before this final
    text: str
