"""What differs between Baseten's streaming protocols, and nothing else.

The stream core (``stream.py``) owns the connection's life: verified TLS, backoff, replay of
unfinalised audio on a continuous timeline, duplicate finals, keepalive and stall detection,
the START/END/INTERIM/FINAL/USAGE events and latency. A dialect supplies the few things the
two v1 protocols do differently (``shared/docs/baseten-qwen3-protocol.md`` §1):

================  =========================================  =================================
                  Whisper v1                                 Qwen3-ASR streaming
================  =========================================  =================================
first message     strict ``StreamingWhisperInput``           tolerant handshake
audio             binary, exactly one VAD window per frame   base64 PCM in ``append`` text
end an utterance  (none: silence is sent, ``stream.flush``)  ``input_audio_buffer.commit``
end of stream     ``end_audio`` -> ``finished``              commit -> its flush reply
keepalive         ``health_check`` (also the stall probe)    none (transport pings only)
results           ``language_code`` is a code                ``language_code`` is a *name*
================  =========================================  =================================

Every wire shape comes from ``protocol.py``; a dialect only picks which one to send.
"""

from __future__ import annotations

import abc
import sys
from typing import ClassVar

import numpy as np

from . import mulaw
from .models import STTOptions
from .protocol import (
    COMMIT_MESSAGE,
    QWEN3_CHUNK_SAMPLES,
    Encoding,
    EndAudioReply,
    ServerMessage,
    TranscriptionResult,
    append_message,
    end_audio_message,
    health_check_message,
    qwen3_language_code,
)

_LITTLE_ENDIAN = sys.byteorder == "little"


class Dialect(abc.ABC):
    """One protocol's framing and messages. Stateless: one instance serves a whole stream."""

    #: ``STT(model=...)`` value that selects this dialect.
    model: ClassVar[str]
    #: Whether the client can end an utterance by message (``commit_message``). Without
    #: it, ``flush`` sends the server VAD's silence instead.
    can_commit: ClassVar[bool]
    #: Whether the first 1011 close is the server rejecting our first message.
    strict_first_message: ClassVar[bool]

    def __init__(self, opts: STTOptions) -> None:
        self.sample_rate = opts.sample_rate
        self.frame_samples = self._frame_samples(opts)
        #: bytes of one frame as the stream buffers it (native int16 mono)
        self.pcm_frame_bytes = self.frame_samples * 2

    @abc.abstractmethod
    def _frame_samples(self, opts: STTOptions) -> int: ...

    @abc.abstractmethod
    def first_message(self, opts: STTOptions) -> str:
        """The text frame sent first on every connection."""

    @property
    @abc.abstractmethod
    def wire_frame_bytes(self) -> int:
        """Length of one frame as kept for replay (``encode``'s output)."""

    @abc.abstractmethod
    def encode(self, pcm: bytes | bytearray) -> bytes:
        """One frame of native int16 mono samples as the bytes the protocol carries."""

    @abc.abstractmethod
    def audio_message(self, wire: bytes) -> bytes | str:
        """The websocket message carrying one encoded frame."""

    def commit_message(self) -> str:
        """Ends the open utterance now (only if ``can_commit``)."""
        raise NotImplementedError(f"{self.model} cannot end an utterance by message")

    @abc.abstractmethod
    def end_of_stream_message(self) -> str:
        """Sent once all audio is: asks the server to finalise and finish."""

    @abc.abstractmethod
    def confirms_end(self, msg: ServerMessage) -> bool:
        """Whether ``msg`` (received after ``end_of_stream_message``) ends the stream."""

    def keepalive_message(self, trace_id: str, timestamp: float) -> str | None:
        """A probe the server answers (RTT, stall detection), or ``None`` if it has none."""
        return None

    def language_code(self, reported: str | None) -> str | None:
        """A result's ``language_code`` as a language code."""
        return reported


class WhisperDialect(Dialect):
    """Baseten streaming Whisper v1 (``shared/docs/baseten-protocol.md``)."""

    model = "whisper"
    can_commit = False
    strict_first_message = True

    def __init__(self, opts: STTOptions) -> None:
        super().__init__(opts)
        self._encoding = opts.encoding
        self._frame_bytes = opts.encoding.frame_bytes

    def _frame_samples(self, opts: STTOptions) -> int:
        # One Silero window per frame: any other length is a fatal AUDIO_PROCESSING_ERROR.
        return opts.encoding.frame_samples

    def first_message(self, opts: STTOptions) -> str:
        return opts.whisper_first_message()

    @property
    def wire_frame_bytes(self) -> int:
        return self._frame_bytes

    def encode(self, pcm: bytes | bytearray) -> bytes:
        if self._encoding is Encoding.PCM_MULAW:
            return mulaw.encode(np.frombuffer(pcm, dtype=np.int16))
        return _little_endian(pcm)

    def audio_message(self, wire: bytes) -> bytes:
        return wire

    def end_of_stream_message(self) -> str:
        return end_audio_message()

    def confirms_end(self, msg: ServerMessage) -> bool:
        return isinstance(msg, EndAudioReply) and msg.finished

    def keepalive_message(self, trace_id: str, timestamp: float) -> str:
        return health_check_message(trace_id, timestamp, get_partial_interval=False)


class Qwen3Dialect(Dialect):
    """Baseten Qwen3-ASR streaming (``shared/docs/baseten-qwen3-protocol.md`` §2)."""

    model = "qwen3-asr"
    can_commit = True
    # Unknown keys are ignored by the server: a 1011 is a crash, not a rejection.
    strict_first_message = False

    def _frame_samples(self, opts: STTOptions) -> int:
        return QWEN3_CHUNK_SAMPLES

    def first_message(self, opts: STTOptions) -> str:
        return opts.qwen3_handshake()

    @property
    def wire_frame_bytes(self) -> int:
        return QWEN3_CHUNK_SAMPLES * 2

    def encode(self, pcm: bytes | bytearray) -> bytes:
        return _little_endian(pcm)

    def audio_message(self, wire: bytes) -> str:
        return append_message(wire)

    def commit_message(self) -> str:
        return COMMIT_MESSAGE

    def end_of_stream_message(self) -> str:
        # No end_audio in this protocol: the last commit's reply is the end.
        return COMMIT_MESSAGE

    def confirms_end(self, msg: ServerMessage) -> bool:
        # With or without is_final: one client's tests show flush replies lacking it
        # (doc §2.2, OPEN), and waiting for is_final would hang (official defect 2).
        return isinstance(msg, TranscriptionResult) and bool(msg.is_end_of_audio_flush)

    def language_code(self, reported: str | None) -> str | None:
        return qwen3_language_code(reported) or None


DIALECTS: dict[str, type[Dialect]] = {d.model: d for d in (WhisperDialect, Qwen3Dialect)}


def dialect_for(opts: STTOptions) -> Dialect:
    return DIALECTS[opts.model](opts)


def _little_endian(pcm: bytes | bytearray) -> bytes:
    if _LITTLE_ENDIAN:
        return bytes(pcm)
    return np.frombuffer(pcm, dtype=np.int16).astype("<i2").tobytes()
