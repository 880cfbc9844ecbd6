"""Build the voice pipeline from settings: a pure function that tests can inspect.

``build_session(settings, vad=...)`` returns the :class:`AgentSession` *and* each of its
components, so a test can assert which plugins and options the worker would run with,
without a room or a network connection (constructing the plugins opens no socket).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from livekit.agents import AgentSession, APIConnectOptions, TurnHandlingOptions
from livekit.agents import vad as lk_vad
from livekit.agents.voice import room_io
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.turn import TurnDetectionMode
from livekit.plugins import cartesia, openai

from agent.assistant import Assistant
from agent.config import Settings
from agent.logs import get_logger
from agent.turn_policy import SignalTurnDetector
from plugins.baseten_stt import STT

log = get_logger("agent.session")

#: The local end-of-turn model LiveKit ships in-process (``livekit.local_inference``):
#: no network, no job context, no inference subprocess. Pinned explicitly because the
#: unpinned default picks the *cloud* ``v1`` model whenever LIVEKIT_DEV_MODE is set
#: (dev/console), which would need LiveKit Inference credentials and network.
LOCAL_TURN_DETECTOR_VERSION: Final = "v1-mini"

#: LiveKit retries a failed LLM request or TTS synthesis while nothing reached the caller:
#: first after 0.1 s, then every ``retry_interval`` (default 2.0 s, 3 retries). On a call
#: that is up to 4 s of silence before the apology (tests/test_e2e_model_errors.py: an LLM
#: failing every attempt); 2 retries 0.5 s apart keep the wait near 1 s plus the attempts,
#: and still outlast a blip (a 500 answered once was retried and answered).
MODEL_RETRIES: Final = 2
MODEL_RETRY_INTERVAL_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class SessionParts:
    """The session and the components it was built from."""

    session: AgentSession[Any]
    stt: STT
    llm: openai.LLM
    tts: cartesia.TTS
    vad: lk_vad.VAD
    turn_detection: TurnDetectionMode
    turn_handling: TurnHandlingOptions


def local_turn_detector_available() -> bool:
    """Whether the in-process end-of-turn model can be loaded on this machine."""
    try:
        from livekit.local_inference import init_eot
    except ImportError:
        return False
    try:
        init_eot()  # idempotent; ~100 MB once per process, already paid by the prewarm
    except Exception:
        return False
    return True


def build_room_options(stt: STT) -> room_io.RoomOptions:
    """Ask WebRTC for the caller's audio at the STT's own rate (16 kHz for Baseten).

    LiveKit's default is 24 kHz, and every consumer of the input (the STT, Silero VAD and
    the turn detector) then resamples each 50 ms frame to 16 kHz on its own: three
    resamplers per call, each an FFI round trip from the event loop. The WebRTC decoder
    resamples once, in Rust, off the loop (``bench.capacity_bench``: see the README's
    capacity section for what it saved)."""
    return room_io.RoomOptions(
        audio_input=room_io.AudioInputOptions(sample_rate=stt.options.sample_rate)
    )


def build_turn_detection(
    settings: Settings, stt: STT, *, local_model_available: bool | None = None
) -> TurnDetectionMode:
    """``TURN_DETECTION=signals`` -> our policy (LiveKit's local model + Baseten's final and
    its punctuation, ``agent/turn_policy.py``); ``model`` -> LiveKit's local model alone
    (wrapped only to log its probabilities); both fall back to VAD endpointing (with a
    warning) where the model cannot load. ``vad``/``stt`` are LiveKit's modes as is."""
    mode = settings.agent.turn_detection
    if mode == "vad" or mode == "stt":
        return mode
    if local_model_available is None:
        local_model_available = local_turn_detector_available()
    if not local_model_available:
        log.warning(
            "local turn detector unavailable; falling back to VAD endpointing",
            turn_detection="vad",
        )
        return "vad"
    return SignalTurnDetector(
        stt=stt,
        version=LOCAL_TURN_DETECTOR_VERSION,
        use_transcript=mode == "signals",
        flush_on_prediction=settings.baseten.manual_flush,
        statement_silence_s=settings.agent.statement_silence_s,
    )


def build_turn_handling(
    settings: Settings, turn_detection: TurnDetectionMode
) -> TurnHandlingOptions:
    a = settings.agent
    endpointing: dict[str, float] = {}
    # Unset delays stay absent so LiveKit applies the defaults that match the detector
    # (0.3/2.5 s for the streaming local model, 0.5/3.0 s otherwise; voice/turn.py).
    if a.min_endpointing_delay is not None:
        endpointing["min_delay"] = a.min_endpointing_delay
    if a.max_endpointing_delay is not None:
        endpointing["max_delay"] = a.max_endpointing_delay
    return TurnHandlingOptions(
        turn_detection=turn_detection,
        endpointing=endpointing,  # type: ignore[typeddict-item]
        preemptive_generation={
            "enabled": a.preemptive_generation,
            "preemptive_tts": a.preemptive_tts,
        },
    )


def build_stt(settings: Settings) -> STT:
    b = settings.baseten
    return STT(
        model=b.model,
        model_endpoint=b.model_endpoint,
        fallback_endpoints=[b.fallback_endpoint] if b.fallback_endpoint else [],
        api_key=b.api_key.reveal(),
        language=b.language,
        vad_threshold=b.vad_threshold,
        vad_min_silence_duration_ms=b.vad_min_silence_ms,
        vad_speech_pad_ms=b.vad_speech_pad_ms,
        enable_partial_transcripts=b.partial_transcripts,
        manual_flush=b.manual_flush,
        allow_insecure=b.allow_insecure,
    )


def build_llm(settings: Settings) -> openai.LLM:
    o = settings.openai
    if o.base_url:
        return openai.LLM(model=o.model, api_key=o.api_key.reveal(), base_url=o.base_url)
    return openai.LLM(model=o.model, api_key=o.api_key.reveal())


def build_tts(settings: Settings) -> cartesia.TTS:
    c = settings.cartesia
    if c.base_url:
        return cartesia.TTS(
            api_key=c.api_key.reveal(),
            model=c.model,
            voice=c.voice,
            language=c.language,
            base_url=c.base_url,
        )
    return cartesia.TTS(
        api_key=c.api_key.reveal(), model=c.model, voice=c.voice, language=c.language
    )


def build_conn_options(settings: Settings) -> SessionConnectOptions:
    """How LiveKit retries the LLM and TTS (``MODEL_RETRIES``); the STT keeps LiveKit's
    options: the Baseten plugin spends them as its own reconnect budget."""
    return SessionConnectOptions(
        llm_conn_options=APIConnectOptions(
            max_retry=MODEL_RETRIES,
            retry_interval=MODEL_RETRY_INTERVAL_S,
            timeout=settings.openai.timeout_s,
        ),
        tts_conn_options=APIConnectOptions(
            max_retry=MODEL_RETRIES, retry_interval=MODEL_RETRY_INTERVAL_S
        ),
    )


def build_session(
    settings: Settings,
    *,
    vad: lk_vad.VAD,
    local_turn_model_available: bool | None = None,
) -> SessionParts:
    """Assemble STT (Baseten) -> LLM (OpenAI-compatible) -> TTS (Cartesia) with the
    prewarmed ``vad`` and the configured turn handling. Opens no connection."""
    stt, llm, tts = build_stt(settings), build_llm(settings), build_tts(settings)
    turn_detection = build_turn_detection(
        settings, stt, local_model_available=local_turn_model_available
    )
    turn_handling = build_turn_handling(settings, turn_detection)
    session: AgentSession[Any] = AgentSession(
        stt=stt,
        llm=llm,
        tts=tts,
        vad=vad,
        turn_handling=turn_handling,
        conn_options=build_conn_options(settings),
    )
    return SessionParts(
        session=session,
        stt=stt,
        llm=llm,
        tts=tts,
        vad=vad,
        turn_detection=turn_detection,
        turn_handling=turn_handling,
    )


@dataclass(frozen=True, slots=True)
class TextSessionParts:
    """A text-only session (``console --text``, tests): the same LLM and turn options."""

    session: AgentSession[Any]
    llm: openai.LLM


def build_text_session(settings: Settings) -> TextSessionParts:
    """The same agent without audio: no STT/TTS/VAD, so nothing dials Baseten or
    Cartesia (a voice STT would open its websocket as soon as the session starts)."""
    llm = build_llm(settings)
    turn_handling = TurnHandlingOptions(
        turn_detection="manual",
        preemptive_generation={"enabled": settings.agent.preemptive_generation},
    )
    session: AgentSession[Any] = AgentSession(llm=llm, vad=None, turn_handling=turn_handling)
    return TextSessionParts(session=session, llm=llm)


def build_assistant(settings: Settings) -> Assistant:
    return Assistant(instructions=settings.agent.instructions, greeting=settings.agent.greeting)
