"""Baseten's streaming-STT websocket protocols, defined once.

Every message shape on the wire lives here and nowhere else: the client plugin
(`plugins.baseten_stt.stt`), the local server (`localdev.baseten`) and the tests all
import these models. Two dialects share the result shape (``TranscriptionResult``):

* **Whisper v1** (``shared/docs/baseten-protocol.md``, Gen C schema): a strict JSON first
  frame, binary PCM frames of exactly one VAD window, ``end_audio``/``health_check``.
* **Qwen3-ASR streaming** (``shared/docs/baseten-qwen3-protocol.md`` §2): an optional,
  tolerant JSON handshake, base64 PCM in ``input_audio_buffer.append`` text frames, and
  ``input_audio_buffer.commit`` to end an utterance at once.

A third protocol, Baseten's v2 "unified" server, is only *recognised* (``SessionCreated``):
it speaks first, which neither v1 dialect does.

Two postures, deliberately different:

* **Client -> server** messages (the first ``StreamingWhisperInput`` frame and its
  sections) are *strict* (``extra="forbid"``) because the real server is: one unknown
  key makes it close the socket with 1011. Building the first message through these
  models means our client cannot send a key the server would reject, and the local
  server rejects exactly what Baseten rejects.
* **Server -> client** messages are *tolerant* (unknown fields ignored, every optional
  field defaulted) because Baseten adds fields between server versions and a client
  must not go deaf because of a new key.
"""

from __future__ import annotations

import base64
import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# --------------------------------------------------------------------------- audio
#: The server decodes ``pcm_s16le`` as 16 kHz mono (hard-coded ``input_sample_rate``).
PCM_SAMPLE_RATE = 16_000
#: ``pcm_mulaw`` is decoded as 8 kHz and resampled to 16 kHz server-side.
MULAW_SAMPLE_RATE = 8_000
#: Each binary frame goes straight into Silero VAD, whose window is 512 samples at
#: 16 kHz (256 at 8 kHz). Any other length is a fatal ``AUDIO_PROCESSING_ERROR``.
VAD_WINDOW_SAMPLES = {PCM_SAMPLE_RATE: 512, MULAW_SAMPLE_RATE: 256}


class Encoding(enum.StrEnum):
    PCM_S16LE = "pcm_s16le"
    PCM_MULAW = "pcm_mulaw"

    @property
    def sample_rate(self) -> int:
        return PCM_SAMPLE_RATE if self is Encoding.PCM_S16LE else MULAW_SAMPLE_RATE

    @property
    def frame_samples(self) -> int:
        """Samples per binary frame (one VAD window at this encoding's rate)."""
        return VAD_WINDOW_SAMPLES[self.sample_rate]

    @property
    def frame_bytes(self) -> int:
        """Exact length of every binary frame: 1024 for s16le, 256 for mu-law."""
        bytes_per_sample = 2 if self is Encoding.PCM_S16LE else 1
        return self.frame_samples * bytes_per_sample


# --------------------------------------------------------------------------- close codes
CLOSE_NORMAL = 1000
#: Sent by truss when an exception escapes the handler, e.g. a schema violation in
#: the first message or bad VAD kwargs.
CLOSE_INTERNAL_ERROR = 1011
CLOSE_INTERNAL_ERROR_REASON = "Internal Server Error (in model/chainlet)."
#: Deployment without a websocket method (accepted, then closed).
CLOSE_UNSUPPORTED = 1003


# --------------------------------------------------------------------------- client -> server
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhisperSamplingParams(_Strict):
    beam_width: int = 1
    length_penalty: float = 2.0
    repetition_penalty: float = 1.01
    beam_search_diversity_rate: float | None = None
    no_repeat_ngram_size: int | None = None
    sampling_temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    )
    max_new_tokens: int = 400


class WhisperParams(_Strict):
    prompt: str = ""
    audio_language: str = "en"
    output_language: str = "auto"
    language_detection_only: bool = False
    language_options: list[str] = Field(default_factory=list)
    show_word_timestamps: bool = False
    enable_vad: bool = True
    enable_diarization: bool | None = None
    diarization_granularity: Literal["word", "segment", "sentence", "split_segment"] = "sentence"
    whisper_sampling_params: WhisperSamplingParams = Field(default_factory=WhisperSamplingParams)
    use_dynamic_preprocessing: bool = False
    use_missing_chunk_retry: bool = False
    show_beam_results: bool = False
    enable_chunk_level_language_detection: bool = False
    enable_word_level_diarization: bool = False
    enable_sentence_level_diarization: bool = False
    enable_final_diarization: bool = False
    missing_chunk_wpm_threshold: int = 100
    prefix: str = ""


class StreamingParams(_Strict):
    # A plain str, as on the server: an unsupported encoding passes validation and
    # fails later in the audio path (fatal AUDIO_PROCESSING_ERROR).
    encoding: str = Encoding.PCM_S16LE.value
    sample_rate: int = PCM_SAMPLE_RATE
    enable_partial_transcripts: bool = False
    partial_transcript_interval_s: float = 0.5
    final_transcript_max_duration_s: int = 30
    prioritize_latency: bool = True
    skip_partial_if_hallucination: bool = True
    include_pipeline_latency_metric: bool = False


class StreamingVadConfig(_Strict):
    """Keyword arguments splatted into the server's ``StreamingVADIterator``.

    Any other key is a ``TypeError`` there, hence ``extra="forbid"``.
    """

    threshold: float = 0.5
    min_silence_duration_ms: int = 300
    speech_pad_ms: int = 0
    sampling_rate: int = PCM_SAMPLE_RATE


class StreamingWhisperInput(_Strict):
    """The first (text) frame of every stream."""

    whisper_params: WhisperParams = Field(default_factory=WhisperParams)
    streaming_params: StreamingParams = Field(default_factory=StreamingParams)
    streaming_vad_config: StreamingVadConfig = Field(default_factory=StreamingVadConfig)
    streaming_diarization_config: dict[str, Any] = Field(default_factory=dict)
    diarization_config: dict[str, Any] = Field(default_factory=dict)
    stream_id: str | None = None
    include_timing_info: bool = False

    def to_wire(self) -> str:
        """Serialise only the fields that were set explicitly.

        Older server runtimes reject keys they do not know (e.g. ``language_options``
        before v0.5.0), so we never send a default the caller did not ask for.
        """
        return self.model_dump_json(exclude_unset=True)


# --------------------------------------------------------------------------- control (both ways)
class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore")


ControlType = Literal["end_audio", "health_check", "error"]


class ControlMessage(_Tolerant):
    """A JSON text frame after the first one: ``end_audio`` or ``health_check``.

    The server parses client text frames with this model; anything that does not
    validate is answered with a recoverable ``STREAM_ERROR`` frame.
    """

    type: ControlType
    trace_id: str | None = None
    timestamp: float | None = None
    body: dict[str, Any] | None = None


def end_audio_message(trace_id: str | None = None) -> str:
    return ControlMessage(type="end_audio", trace_id=trace_id).model_dump_json(exclude_none=True)


def health_check_message(trace_id: str, timestamp: float, *, get_partial_interval: bool) -> str:
    return ControlMessage(
        type="health_check",
        trace_id=trace_id,
        timestamp=timestamp,
        body={"get_partial_interval": get_partial_interval},
    ).model_dump_json()


# --------------------------------------------------------------------------- server -> client
class Word(_Tolerant):
    start_time: float = 0.0
    end_time: float = 0.0
    word: str = ""
    prob: float | None = None
    speaker: str | None = None


class Segment(_Tolerant):
    start_time: float = 0.0
    end_time: float = 0.0
    text: str = ""
    log_prob: float | None = None
    word_timestamps: list[Word] = Field(default_factory=list)
    speaker: str | None = None
    speaker_confidence: float | None = None
    possible_hallucination: bool = False
    beam_results: list[Any] | None = None
    language_code: str | None = None
    language_prob: float | None = None


class TranscriptionResult(_Tolerant):
    """A partial (``is_final=False``) or final transcription of the buffered audio."""

    type: Literal["transcription"] = "transcription"
    segments: list[Segment] = Field(default_factory=list)
    language_code: str | None = None
    language_prob: float | None = None
    diarization: list[Any] = Field(default_factory=list)
    timing_info: Any = None
    enable_chunk_level_language_detection: bool = False
    audio_length_sec: float | None = None
    # The real server always sends it; a missing flag is treated as *not* final so a
    # malformed frame can never close an utterance early (livekit 1.8.9 defaults True).
    is_final: bool = False
    transcription_num: int | None = None
    next_partial: float | None = None
    pipeline_latency: float | None = None
    is_end_of_audio_flush: bool | None = None

    @property
    def text(self) -> str:
        """Segments joined the way every public client joins them."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip()).strip()

    def to_wire(self) -> dict[str, Any]:
        """The server's dump: every field, ``is_end_of_audio_flush`` only when true."""
        data = self.model_dump()
        if not data.get("is_end_of_audio_flush"):
            data.pop("is_end_of_audio_flush", None)
        return data

    def to_qwen3_wire(self, *, flush_is_final: bool = True) -> dict[str, Any]:
        """The Qwen3-ASR server's smaller shape (doc §2.3): no ``audio_length_sec``, no
        log-probs, ``language_code`` as the server put it (a Qwen3 language *name*).

        ``flush_is_final=False`` sends a flush reply without ``is_final`` (one client's
        tests show such replies; OPEN whether real servers send them).
        """
        segments = [
            {
                "start_time": s.start_time,
                "end_time": s.end_time,
                "text": s.text,
                **(
                    {
                        "word_timestamps": [
                            {
                                "word": w.word,
                                "start_time": w.start_time,
                                "end_time": w.end_time,
                                "prob": w.prob,
                            }
                            for w in s.word_timestamps
                        ]
                    }
                    if s.word_timestamps
                    else {}
                ),
            }
            for s in self.segments
        ]
        data: dict[str, Any] = {"type": "transcription", "segments": segments}
        if not (self.is_end_of_audio_flush and not flush_is_final):
            data["is_final"] = self.is_final
        data["language_code"] = self.language_code
        data["transcription_num"] = self.transcription_num
        if self.is_end_of_audio_flush:
            data["is_end_of_audio_flush"] = True
        return data


class ErrorType(enum.StrEnum):
    STREAM_ERROR = "STREAM_ERROR"
    TRANSCRIPTION_ERROR = "TRANSCRIPTION_ERROR"
    ASSIGNMENT_ERROR = "ASSIGNMENT_ERROR"
    DIARIZATION_ERROR = "DIARIZATION_ERROR"
    WEBSOCKET_ERROR = "WEBSOCKET_ERROR"
    CONFIGURATION_ERROR = "CONFIGURATION_ERROR"
    AUDIO_PROCESSING_ERROR = "AUDIO_PROCESSING_ERROR"


class ErrorBody(_Tolerant):
    """Both error shapes: ``{error_type, message, recoverable, ...}`` and ``{error}``."""

    error_type: str | None = None
    message: str | None = None
    error: str | None = None
    stream_id: str | None = None
    recoverable: bool | None = None
    timestamp: float | None = None

    @property
    def description(self) -> str:
        return self.message or self.error or "unspecified server error"

    @property
    def is_fatal(self) -> bool:
        """Non-recoverable per the server, or an AUDIO_PROCESSING_ERROR (always fatal)."""
        if self.recoverable is False:
            return True
        return self.error_type == ErrorType.AUDIO_PROCESSING_ERROR


class ErrorFrame(_Tolerant):
    """An error frame in any of the shapes Baseten servers send.

    Whisper v1 nests it: ``{"type":"error","body":{error_type,message,recoverable}}``.
    Qwen3 clients read a top-level ``message``; sibling Baseten servers send
    ``{"type":"error","error":"..."}`` (or an OpenAI-realtime-style object there). The
    Qwen3 shape is OPEN (doc §1), so every one of them is read.
    """

    type: Literal["error"] = "error"
    trace_id: str | None = None
    timestamp: float | None = None
    body: ErrorBody = Field(default_factory=ErrorBody)
    message: str | None = None
    error: str | dict[str, Any] | None = None
    recoverable: bool | None = None

    @property
    def description(self) -> str:
        nested = self.error.get("message") if isinstance(self.error, dict) else self.error
        return (
            self.body.message
            or self.body.error
            or self.message
            or (str(nested) if nested else None)
            or "unspecified server error"
        )

    @property
    def is_fatal(self) -> bool:
        """Non-recoverable per the server (either level), or an AUDIO_PROCESSING_ERROR."""
        if self.recoverable is False:
            return True
        return self.body.is_fatal


class EndAudioBody(_Tolerant):
    status: Literal["acknowledged", "finished"] | str | None = None


class EndAudioReply(_Tolerant):
    type: Literal["end_audio"] = "end_audio"
    trace_id: str | None = None
    timestamp: float | None = None
    body: EndAudioBody = Field(default_factory=EndAudioBody)

    @property
    def finished(self) -> bool:
        return self.body.status == "finished"


class HealthCheckBody(_Tolerant):
    healthy: bool | None = None
    partial_interval: float | None = None


class HealthCheckReply(_Tolerant):
    type: Literal["health_check"] = "health_check"
    trace_id: str | None = None
    timestamp: float | None = None
    body: HealthCheckBody = Field(default_factory=HealthCheckBody)


# --------------------------------------------------------------------------- Qwen3-ASR dialect
#: Samples per ``input_audio_buffer.append``: 100 ms at 16 kHz, the convention of every
#: known client (the server accepts any size). Qwen3 audio is always PCM16 16 kHz mono.
QWEN3_CHUNK_SAMPLES = PCM_SAMPLE_RATE // 10

#: The languages Qwen3-ASR names (its model card: 30 languages), name -> ISO code. The
#: handshake's ``audio_language`` and results' ``language_code`` carry the *name*.
QWEN3_LANGUAGES: dict[str, str] = {
    "Chinese": "zh",
    "English": "en",
    "Cantonese": "yue",
    "Arabic": "ar",
    "German": "de",
    "French": "fr",
    "Spanish": "es",
    "Portuguese": "pt",
    "Indonesian": "id",
    "Italian": "it",
    "Korean": "ko",
    "Russian": "ru",
    "Thai": "th",
    "Vietnamese": "vi",
    "Japanese": "ja",
    "Turkish": "tr",
    "Hindi": "hi",
    "Malay": "ms",
    "Dutch": "nl",
    "Swedish": "sv",
    "Danish": "da",
    "Finnish": "fi",
    "Polish": "pl",
    "Czech": "cs",
    "Filipino": "fil",
    "Persian": "fa",
    "Greek": "el",
    "Hungarian": "hu",
    "Macedonian": "mk",
    "Romanian": "ro",
}
_QWEN3_BY_CODE = {code: name for name, code in QWEN3_LANGUAGES.items()}
_QWEN3_BY_LOWER_NAME = {name.lower(): name for name in QWEN3_LANGUAGES}


def qwen3_language_name(language: str) -> str:
    """What to send as ``audio_language``: ``auto``, or the Qwen3 name of a code or name.

    ``"en"``, ``"English"`` and ``"english"`` all give ``"English"``. Anything else is
    passed through unchanged: a deployment may know names this table does not (Qwen3
    also names Chinese dialects), and it is the server's to refuse.
    """
    key = language.strip()
    if key.lower() == "auto":
        return "auto"
    return _QWEN3_BY_CODE.get(key.lower()) or _QWEN3_BY_LOWER_NAME.get(key.lower()) or key


def qwen3_language_code(name: str | None) -> str:
    """A result's ``language_code`` (a Qwen3 name) as an ISO code (``English`` -> ``en``,
    ``Cantonese`` -> ``yue``, ``Filipino`` -> ``fil``); unknown names lower-cased, as the
    official client does; ``""`` when absent."""
    if not name:
        return ""
    key = name.strip()
    canonical = _QWEN3_BY_LOWER_NAME.get(key.lower())
    if canonical is not None:
        return QWEN3_LANGUAGES[canonical]
    return key.lower()


class Qwen3WhisperParams(_Tolerant):
    audio_language: str = "auto"
    show_word_timestamps: bool = False
    # Possibly honoured (doc §2.1, OPEN); sent only when set.
    prompt: str | None = None


class Qwen3StreamingParams(_Tolerant):
    enable_partial_transcripts: bool = True
    partial_transcript_interval_s: float = 0.5
    final_transcript_max_duration_s: int | float = 30


class Qwen3VadConfig(_Tolerant):
    threshold: float = 0.5
    min_silence_duration_ms: int = 500
    speech_pad_ms: int = 100


class Qwen3Handshake(_Tolerant):
    """The optional first text frame of a Qwen3-ASR stream.

    *Tolerant*, unlike ``StreamingWhisperInput``: the server ignores unknown keys and
    accepts partial handshakes (a missing section means the deployment's defaults, which
    are these fields' defaults, the official client's). No ``encoding``/``sample_rate``:
    audio is always PCM16 16 kHz mono.
    """

    whisper_params: Qwen3WhisperParams | None = None
    streaming_params: Qwen3StreamingParams | None = None
    streaming_vad_config: Qwen3VadConfig | None = None

    def to_wire(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @property
    def whisper(self) -> Qwen3WhisperParams:
        return self.whisper_params or Qwen3WhisperParams()

    @property
    def streaming(self) -> Qwen3StreamingParams:
        return self.streaming_params or Qwen3StreamingParams()

    @property
    def vad(self) -> Qwen3VadConfig:
        return self.streaming_vad_config or Qwen3VadConfig()


class InputAudioAppend(_Tolerant):
    """``{"type":"input_audio_buffer.append","audio":"<base64 PCM16 LE 16 kHz mono>"}``."""

    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str

    @property
    def pcm(self) -> bytes:
        """The decoded audio (``binascii.Error``, a ``ValueError``, if not base64)."""
        return base64.b64decode(self.audio, validate=True)


class InputAudioCommit(_Tolerant):
    """Transcribe what is buffered now; answered by a ``TranscriptionResult`` with
    ``is_end_of_audio_flush: true`` (empty when the buffer was)."""

    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


def append_message(pcm_le: bytes) -> str:
    """One append frame. Built by hand: this runs ~10 times a second per stream and the
    shape is fixed, so a model round trip per chunk would be pure overhead."""
    audio = base64.b64encode(pcm_le).decode()
    return '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'


COMMIT_MESSAGE = InputAudioCommit().model_dump_json()

Qwen3ClientMessage = Annotated[InputAudioAppend | InputAudioCommit, Field(discriminator="type")]
_QWEN3_CLIENT_MESSAGE = TypeAdapter(Qwen3ClientMessage)


def parse_qwen3_client_message(raw: str | bytes) -> InputAudioAppend | InputAudioCommit:
    """Parse a Qwen3 client text frame after the handshake (``ValidationError`` if not)."""
    return _QWEN3_CLIENT_MESSAGE.validate_json(raw)


# --------------------------------------------------------------------------- v2 (recognised only)
class SessionCreated(_Tolerant):
    """The v2 "unified" STT server's first frame, sent before the client says anything.

    No v1 server sends it, so it identifies an endpoint this plugin cannot talk to.
    """

    type: Literal["session.created"] = "session.created"
    session: dict[str, Any] | None = None


ServerMessage = Annotated[
    TranscriptionResult | ErrorFrame | EndAudioReply | HealthCheckReply | SessionCreated,
    Field(discriminator="type"),
]
_SERVER_MESSAGE = TypeAdapter(ServerMessage)


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse one server text frame.

    Raises ``pydantic.ValidationError`` (a ``ValueError``) for anything that is not a
    known message; callers log and skip it rather than crash the stream.
    """
    return _SERVER_MESSAGE.validate_json(raw)
