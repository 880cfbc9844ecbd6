"""The Baseten streaming-Whisper websocket protocol, defined once.

Every message shape on the wire lives here and nowhere else: the client plugin
(`plugins.baseten_stt.stt`), the local server (`localdev.baseten`) and the tests all
import these models. Reference: ``shared/docs/baseten-protocol.md`` (Gen C schema).

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
    type: Literal["error"] = "error"
    trace_id: str | None = None
    timestamp: float | None = None
    body: ErrorBody = Field(default_factory=ErrorBody)


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


ServerMessage = Annotated[
    TranscriptionResult | ErrorFrame | EndAudioReply | HealthCheckReply,
    Field(discriminator="type"),
]
_SERVER_MESSAGE = TypeAdapter(ServerMessage)


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse one server text frame.

    Raises ``pydantic.ValidationError`` (a ``ValueError``) for anything that is not a
    known message; callers log and skip it rather than crash the stream.
    """
    return _SERVER_MESSAGE.validate_json(raw)
