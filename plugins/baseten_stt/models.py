"""Options of the Baseten STT and the first wire message built from them.

Every tunable is documented with where its default came from. Validation raises a
``ValueError`` with one readable line naming the parameter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from .protocol import (
    Encoding,
    Qwen3Handshake,
    Qwen3StreamingParams,
    Qwen3VadConfig,
    Qwen3WhisperParams,
    StreamingParams,
    StreamingVadConfig,
    StreamingWhisperInput,
    WhisperParams,
    qwen3_language_name,
)

STTModel = Literal["whisper", "qwen3-asr"]
MODELS: tuple[STTModel, ...] = ("whisper", "qwen3-asr")


@dataclass(frozen=True)
class ModelDefaults:
    """Where a model's defaults differ. Whisper: the LiveKit integration guide's server VAD
    and word times on (they give ``speech_end_time``). Qwen3-ASR: the official plugin's
    (1.8.9), which its author describes as each deployment's own; word times off because
    they need an aligner on the deployment (``STREAM_ALIGNER=mms``), else they are ignored."""

    language: str
    vad_min_silence_duration_ms: int
    vad_speech_pad_ms: int
    show_word_timestamps: bool


MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    "whisper": ModelDefaults("en", 300, 30, True),
    "qwen3-asr": ModelDefaults("auto", 500, 100, False),
}

#: Server clamps ``final_transcript_max_duration_s`` above this with a warning.
SERVER_MAX_UTTERANCE_S = 30
#: The replay buffer must cover at least this much unfinalised audio (brief: >= 10 s).
MIN_REPLAY_BUFFER_S = 10.0


@dataclass
class STTOptions:
    # Which Baseten protocol the deployment speaks (``dialect.py``); the defaults below are
    # Whisper's, ``for_model`` gives each model's.
    model: STTModel = "whisper"
    # -- whisper_params ------------------------------------------------------------------
    language: str = "en"  # server default; "auto" = detect
    language_options: list[str] = field(default_factory=list)  # omitted on the wire when empty
    prompt: str = ""  # omitted on the wire when empty (server default "")
    # On by default (server default is off): word times give speech_end_time/latency and
    # LiveKit's aligned transcripts; the official plugin also turns them on.
    show_word_timestamps: bool = True
    # -- streaming_params ----------------------------------------------------------------
    encoding: Encoding = Encoding.PCM_S16LE
    # A voice agent wants interims (preemptive generation); official plugin default.
    enable_partial_transcripts: bool = True
    # Server default 0.5 s (the official plugin's 1.0 s halves interim cadence).
    partial_transcript_interval_s: float = 0.5
    final_transcript_max_duration_s: int = SERVER_MAX_UTTERANCE_S  # server default and cap
    # -- streaming_vad_config (LiveKit integration guide defaults) -------------------------
    vad_threshold: float = 0.5
    vad_min_silence_duration_ms: int = 300
    vad_speech_pad_ms: int = 30
    # -- client behaviour ----------------------------------------------------------------
    # Unfinalised audio kept for replay after a drop: one maximal server utterance (30 s)
    # plus 5 s for the final that may be in flight when the socket dies.
    replay_buffer_s: float = 35.0
    # Deepgram's plugin keeps alive every 5 s; health_check doubles as an RTT probe.
    keepalive_interval_s: float = 5.0
    # Three missed keepalives: long enough not to trip on a busy GPU, short enough that
    # a wedged socket costs one sentence, not the call. The last resort: while the caller
    # speaks, speech_stall_s notices a hang first.
    stall_timeout_s: float = 15.0
    # Seconds of the caller's speech (frames above -45 dBFS) sent with no result back =
    # a stall. A live server answers every partial_transcript_interval_s (0.5 s) of speech;
    # one that is slow by a latency L answers within L + 0.5 s of speech at worst (after an
    # utterance boundary). 1.75 s tolerates L = 1 s with 0.25 s to spare: the stand-in with
    # a 1 s inference delay left at most 1.31 s of speech unanswered, and a hang was
    # noticed 2.6-2.8 s after it while the caller read on (bench.stall_bench). Only with
    # partials on (without them, finals alone answer).
    speech_stall_s: float = 1.75
    # Scale-to-zero cold starts: Coval measured ~253 s boots and allows 360 s.
    cold_start_timeout_s: float = 360.0
    # After end_audio: queued inference plus the flush final; seconds, not minutes.
    finish_timeout_s: float = 10.0
    # With a fallback endpoint: how long 5xx/429 upgrades from one endpoint are waited out
    # before the stream moves to the next (alone, an endpoint gets cold_start_timeout_s).
    # 1 s: the failover goal is "hearing again within 2 s"; a brief 503 blip still passes.
    failover_after_s: float = 1.0
    # With a fallback endpoint: probe a failed primary this often (LiveKit's
    # FallbackAdapter retries every 5 s); streams return to it once it answers.
    failback_probe_interval_s: float = 5.0
    # LiveKit's flush (its VAD / turn detector heard the end) sends the server's remaining
    # silence at once instead of waiting it out in real time (stream.flush).
    manual_flush: bool = True

    @classmethod
    def for_model(cls, model: str, **options: object) -> STTOptions:
        """Options with ``model``'s defaults (``MODEL_DEFAULTS``) under ``options``."""
        if model not in MODEL_DEFAULTS:
            raise ValueError(
                f"model must be one of {', '.join(repr(m) for m in MODELS)} (the Baseten "
                f"streaming protocols this plugin speaks), got {model!r}"
            )
        defaults = dataclasses.asdict(MODEL_DEFAULTS[model])
        opts = cls(model=model, **{**defaults, **options})  # type: ignore[arg-type]
        opts.validate()
        return opts

    @property
    def sample_rate(self) -> int:
        return self.encoding.sample_rate

    def replace(self, **changes: object) -> STTOptions:
        new = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        new.validate()
        return new

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        def finite(x: float) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

        need(
            self.model in MODELS,
            f"model must be one of {', '.join(repr(m) for m in MODELS)}, got {self.model!r}",
        )
        if self.model == "qwen3-asr":
            need(
                self.encoding is Encoding.PCM_S16LE,
                "encoding must be 'pcm_s16le' for qwen3-asr (its audio is always PCM16 16 kHz)",
            )
            need(
                not self.language_options,
                "language_options is a Whisper option; qwen3-asr takes one language or 'auto'",
            )
        need(
            isinstance(self.language, str) and bool(self.language.strip()),
            "language must be a non-empty language code such as 'en' or 'auto', "
            f"got {self.language!r}",
        )
        need(
            all(isinstance(x, str) and x for x in self.language_options),
            f"language_options must be a list of language codes, got {self.language_options!r}",
        )
        need(isinstance(self.prompt, str), "prompt must be a string")
        need(
            finite(self.vad_threshold) and 0.0 <= self.vad_threshold <= 1.0,
            f"vad_threshold must be between 0.0 and 1.0, got {self.vad_threshold!r}",
        )
        need(
            isinstance(self.vad_min_silence_duration_ms, int)
            and self.vad_min_silence_duration_ms >= 0,
            "vad_min_silence_duration_ms must be a non-negative integer (ms), "
            f"got {self.vad_min_silence_duration_ms!r}",
        )
        need(
            isinstance(self.vad_speech_pad_ms, int) and self.vad_speech_pad_ms >= 0,
            "vad_speech_pad_ms must be a non-negative integer (ms), "
            f"got {self.vad_speech_pad_ms!r}",
        )
        need(
            finite(self.partial_transcript_interval_s) and self.partial_transcript_interval_s > 0,
            "partial_transcript_interval_s must be a positive number of seconds, "
            f"got {self.partial_transcript_interval_s!r}",
        )
        need(
            isinstance(self.final_transcript_max_duration_s, int)
            and 1 <= self.final_transcript_max_duration_s <= SERVER_MAX_UTTERANCE_S,
            "final_transcript_max_duration_s must be an integer from 1 to "
            f"{SERVER_MAX_UTTERANCE_S} (the server's cap), "
            f"got {self.final_transcript_max_duration_s!r}",
        )
        need(
            finite(self.replay_buffer_s) and self.replay_buffer_s >= MIN_REPLAY_BUFFER_S,
            f"replay_buffer_s must be at least {MIN_REPLAY_BUFFER_S:g} seconds, "
            f"got {self.replay_buffer_s!r}",
        )
        for name in (
            "keepalive_interval_s",
            "stall_timeout_s",
            "speech_stall_s",
            "cold_start_timeout_s",
            "finish_timeout_s",
            "failover_after_s",
            "failback_probe_interval_s",
        ):
            value = getattr(self, name)
            need(
                finite(value) and value > 0,
                f"{name} must be a positive number of seconds, got {value!r}",
            )
        need(
            self.stall_timeout_s > self.keepalive_interval_s,
            "stall_timeout_s must be longer than keepalive_interval_s",
        )

    def first_message(self) -> str:
        """The first text frame of this model's protocol."""
        if self.model == "qwen3-asr":
            return self.qwen3_handshake()
        return self.whisper_first_message()

    def qwen3_handshake(self) -> str:
        """The Qwen3-ASR handshake: every section the official client sends, with our
        values; ``audio_language`` as a Qwen3 name (``en`` -> ``English``); ``prompt``
        only when set (possibly honoured, doc §2.1)."""
        return Qwen3Handshake(
            whisper_params=Qwen3WhisperParams(
                audio_language=qwen3_language_name(self.language),
                show_word_timestamps=self.show_word_timestamps,
                prompt=self.prompt or None,
            ),
            streaming_params=Qwen3StreamingParams(
                enable_partial_transcripts=self.enable_partial_transcripts,
                partial_transcript_interval_s=self.partial_transcript_interval_s,
                final_transcript_max_duration_s=self.final_transcript_max_duration_s,
            ),
            streaming_vad_config=Qwen3VadConfig(
                threshold=self.vad_threshold,
                min_silence_duration_ms=self.vad_min_silence_duration_ms,
                speech_pad_ms=self.vad_speech_pad_ms,
            ),
        ).to_wire()

    def whisper_first_message(self) -> str:
        """The ``StreamingWhisperInput`` frame, carrying only the fields we set.

        Optional keys (``prompt``, ``language_options``) are omitted when empty because
        older server runtimes close 1011 on keys they do not know.
        """
        whisper = WhisperParams(
            audio_language=self.language, show_word_timestamps=self.show_word_timestamps
        )
        if self.prompt:
            whisper.prompt = self.prompt
        if self.language_options:
            whisper.language_options = list(self.language_options)
        streaming = StreamingParams(
            encoding=self.encoding.value,
            sample_rate=self.encoding.sample_rate,
            enable_partial_transcripts=self.enable_partial_transcripts,
            partial_transcript_interval_s=self.partial_transcript_interval_s,
            final_transcript_max_duration_s=self.final_transcript_max_duration_s,
        )
        vad = StreamingVadConfig(
            threshold=self.vad_threshold,
            min_silence_duration_ms=self.vad_min_silence_duration_ms,
            speech_pad_ms=self.vad_speech_pad_ms,
        )
        msg = StreamingWhisperInput(
            whisper_params=whisper, streaming_params=streaming, streaming_vad_config=vad
        )
        return msg.to_wire()
