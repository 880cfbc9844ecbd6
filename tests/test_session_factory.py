"""The session factory builds the pipeline from settings: right plugins, right options."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import APIConnectOptions, inference
from livekit.plugins import cartesia, openai

from agent.assistant import Assistant
from agent.config import DEFAULT_CARTESIA_VOICE, DEFAULT_ERROR_REPLY, Profile, load_settings
from agent.session_factory import (
    LOCAL_TURN_DETECTOR_VERSION,
    MODEL_RETRIES,
    MODEL_RETRY_INTERVAL_S,
    build_assistant,
    build_room_options,
    build_session,
    build_stt,
    build_text_session,
    build_turn_detection,
    local_turn_detector_available,
)
from agent.turn_policy import SignalTurnDetector
from plugins.baseten_stt import STT
from tests.fixtures.worker import FAKE_SECRETS, valid_env


def settings(**overrides: str) -> Any:
    return load_settings(valid_env(**overrides), profile=Profile.WORKER)


async def test_pipeline_uses_our_plugins_with_configured_options(silero_vad: Any) -> None:
    s = settings(
        BASETEN_MODEL_ENDPOINT="https://model-abc123.api.baseten.co/environments/staging/predict",
        BASETEN_LANGUAGE="es",
        BASETEN_VAD_THRESHOLD="0.65",
        BASETEN_VAD_MIN_SILENCE_MS="420",
        BASETEN_VAD_SPEECH_PAD_MS="50",
        BASETEN_PARTIAL_TRANSCRIPTS="false",
        OPENAI_MODEL="gpt-4o-mini",
        OPENAI_BASE_URL="http://127.0.0.1:8089/v1",
        CARTESIA_MODEL="sonic-2",
        CARTESIA_VOICE="voice-123",
        CARTESIA_BASE_URL="http://127.0.0.1:8090",
    )
    parts = build_session(s, vad=silero_vad, local_turn_model_available=True)
    try:
        assert isinstance(parts.stt, STT)
        assert isinstance(parts.llm, openai.LLM)
        assert isinstance(parts.tts, cartesia.TTS)
        # the session really holds these components (not defaults or inference strings)
        assert parts.session.stt is parts.stt
        assert parts.session.llm is parts.llm
        assert parts.session.tts is parts.tts
        assert parts.session.vad is silero_vad

        opts = parts.stt.options
        assert parts.stt.endpoint == (
            "wss://model-abc123.api.baseten.co/environments/staging/websocket"
        )
        assert opts.language == "es"
        assert (opts.vad_threshold, opts.vad_min_silence_duration_ms) == (0.65, 420)
        assert opts.vad_speech_pad_ms == 50
        assert opts.enable_partial_transcripts is False

        assert parts.llm.model == "gpt-4o-mini"
        assert str(parts.llm._client.base_url).rstrip("/") == "http://127.0.0.1:8089/v1"
        assert parts.tts.model == "sonic-2"
        assert parts.tts._opts.voice == "voice-123"
        assert parts.tts._opts.base_url == "http://127.0.0.1:8090"
    finally:
        await parts.llm.aclose()


async def test_llm_and_tts_retry_fast_and_the_llm_times_out_as_configured(
    silero_vad: Any,
) -> None:
    parts = build_session(
        settings(LLM_TIMEOUT_S="7.5"), vad=silero_vad, local_turn_model_available=False
    )
    opts = parts.session.conn_options
    assert opts.llm_conn_options.timeout == 7.5
    for o in (opts.llm_conn_options, opts.tts_conn_options):
        assert (o.max_retry, o.retry_interval) == (MODEL_RETRIES, MODEL_RETRY_INTERVAL_S)
    # the STT keeps LiveKit's options: the plugin spends them as its reconnect budget
    assert opts.stt_conn_options == APIConnectOptions()
    assert load_settings(valid_env()).agent.error_reply == DEFAULT_ERROR_REPLY
    assert load_settings(valid_env(AGENT_ERROR_REPLY="Off")).agent.error_reply is None


async def test_the_fallback_endpoint_reaches_the_stt(silero_vad: Any) -> None:
    parts = build_session(
        settings(BASETEN_FALLBACK_MODEL_ENDPOINT="wss://model-fb.api.baseten.co"),
        vad=silero_vad,
        local_turn_model_available=False,
    )
    assert parts.stt.endpoints[1:] == (
        "wss://model-fb.api.baseten.co/environments/production/websocket",
    )
    alone = build_session(settings(), vad=silero_vad, local_turn_model_available=False)
    assert len(alone.stt.endpoints) == 1


async def test_api_keys_reach_the_plugins(silero_vad: Any) -> None:
    parts = build_session(settings(), vad=silero_vad, local_turn_model_available=True)
    try:
        assert parts.stt._api_key == FAKE_SECRETS["BASETEN_API_KEY"]
        assert parts.llm._client.api_key == FAKE_SECRETS["OPENAI_API_KEY"]
        assert parts.tts._opts.api_key == FAKE_SECRETS["CARTESIA_API_KEY"]
        assert parts.tts._opts.voice == DEFAULT_CARTESIA_VOICE
    finally:
        await parts.llm.aclose()


async def test_the_room_delivers_caller_audio_at_the_stt_rate(silero_vad: Any) -> None:
    """One resample, in WebRTC's decoder, instead of one per consumer (STT, VAD, turn
    detector) on the event loop: each of them takes 16 kHz."""
    parts = build_session(settings(), vad=silero_vad, local_turn_model_available=True)
    try:
        audio_in = build_room_options(parts.stt).get_audio_input_options()
        assert audio_in is not None
        assert audio_in.sample_rate == parts.stt.options.sample_rate == 16_000
        assert audio_in.num_channels == 1
        assert silero_vad._opts.sample_rate == 16_000
    finally:
        await parts.llm.aclose()


async def test_local_turn_detector_and_turn_options(silero_vad: Any) -> None:
    s = settings(
        MIN_ENDPOINTING_DELAY="0.25", MAX_ENDPOINTING_DELAY="1.75", PREEMPTIVE_GENERATION="false"
    )
    parts = build_session(s, vad=silero_vad, local_turn_model_available=True)
    try:
        td = parts.session.turn_detection
        assert isinstance(td, inference.TurnDetector)
        assert td.model == "turn-detector-v1-mini"  # local, never the cloud model
        endpointing = parts.session.options.endpointing
        assert (endpointing["min_delay"], endpointing["max_delay"]) == (0.25, 1.75)
        assert parts.session.options.preemptive_generation["enabled"] is False
    finally:
        await parts.llm.aclose()


async def test_unset_delays_keep_livekit_defaults_for_the_detector(silero_vad: Any) -> None:
    parts = build_session(settings(), vad=silero_vad, local_turn_model_available=True)
    try:
        endpointing = parts.session.options.endpointing
        # LiveKit's streaming-detector defaults (voice/turn.py _STREAMING_ENDPOINTING_DEFAULTS)
        assert (endpointing["min_delay"], endpointing["max_delay"]) == (0.3, 2.5)
        assert parts.session.options.preemptive_generation["enabled"] is True
    finally:
        await parts.llm.aclose()


def test_local_model_version_is_pinned_even_in_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # unpinned, LiveKit picks the cloud "v1" model whenever LIVEKIT_DEV_MODE is set
    monkeypatch.setenv("LIVEKIT_DEV_MODE", "1")
    s = settings()
    td = build_turn_detection(s, build_stt(s), local_model_available=True)
    assert isinstance(td, inference.TurnDetector)
    assert td.model == "turn-detector-v1-mini"
    assert LOCAL_TURN_DETECTOR_VERSION == "v1-mini"


def test_falls_back_to_vad_when_the_local_model_cannot_load() -> None:
    s = settings()
    assert build_turn_detection(s, build_stt(s), local_model_available=False) == "vad"


@pytest.mark.parametrize("mode", ["vad", "stt"])
def test_explicit_turn_detection_modes(mode: str) -> None:
    s = settings(TURN_DETECTION=mode)
    assert build_turn_detection(s, build_stt(s)) == mode


async def test_signals_mode_is_our_policy_over_the_local_model(silero_vad: Any) -> None:
    s = settings(TURN_DETECTION="signals")
    parts = build_session(s, vad=silero_vad, local_turn_model_available=True)
    try:
        td = parts.session.turn_detection
        assert isinstance(td, SignalTurnDetector)
        assert td.model == "turn-detector-v1-mini"
        assert parts.stt.capabilities.manual_flush
        assert s.agent.vad_min_silence_s == 0.3  # the policy, not the VAD, decides the wait
    finally:
        await parts.llm.aclose()


def test_local_model_loads_here() -> None:
    # the Docker build's download-files step relies on this being loadable offline
    assert local_turn_detector_available() is True


def test_assistant_from_settings() -> None:
    s = settings(AGENT_INSTRUCTIONS="Talk like a sailor.", AGENT_GREETING="Ahoy!")
    assistant = build_assistant(s)
    assert isinstance(assistant, Assistant)
    assert assistant.instructions == "Talk like a sailor."
    assert assistant.greeting == "Ahoy!"


async def test_text_session_has_no_audio_components() -> None:
    parts = build_text_session(settings())
    try:
        assert parts.session.llm is parts.llm
        assert parts.session.stt is None and parts.session.tts is None
        assert parts.session.vad is None
    finally:
        await parts.llm.aclose()
