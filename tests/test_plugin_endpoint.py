"""Endpoint normalisation (protocol doc §2) and constructor validation."""

from __future__ import annotations

import pytest

from plugins.baseten_stt import STT, normalize_endpoint
from plugins.baseten_stt.endpoint import endpoint_for_chain, endpoint_for_model

H = "model-abc123.api.baseten.co"
C = "chain-xyz789.api.baseten.co"

TABLE = [
    # the dashboard's HTTPS URLs
    (
        f"https://{H}/environments/production/predict",
        f"wss://{H}/environments/production/websocket",
    ),
    (f"https://{H}/environments/staging/predict", f"wss://{H}/environments/staging/websocket"),
    (
        f"https://{C}/environments/production/run_remote",
        f"wss://{C}/environments/production/websocket",
    ),
    (f"https://{H}/deployment/q4w7e9/predict", f"wss://{H}/deployment/q4w7e9/websocket"),
    (f"https://{H}/development/predict", f"wss://{H}/development/websocket"),
    (f"https://{C}/development/run_remote", f"wss://{C}/development/websocket"),
    (
        f"https://{H}/environments/production/async_predict",
        f"wss://{H}/environments/production/websocket",
    ),
    # already websocket URLs, with or without trailing slash / scheme mistakes
    (
        f"wss://{H}/environments/production/websocket",
        f"wss://{H}/environments/production/websocket",
    ),
    (
        f"wss://{H}/environments/production/websocket/",
        f"wss://{H}/environments/production/websocket",
    ),
    (
        f"wss://{C}/environments/production/run_remote",
        f"wss://{C}/environments/production/websocket",
    ),
    (f"wss://{H}/deployment/q4w7e9/websocket", f"wss://{H}/deployment/q4w7e9/websocket"),
    (f"wss://{H}/development/websocket", f"wss://{H}/development/websocket"),
    # selector without a method, bare host, host without scheme
    (f"https://{H}/environments/production", f"wss://{H}/environments/production/websocket"),
    (f"https://{H}/deployment/q4w7e9", f"wss://{H}/deployment/q4w7e9/websocket"),
    (f"https://{H}/development", f"wss://{H}/development/websocket"),
    (f"https://{H}", f"wss://{H}/environments/production/websocket"),
    (f"{H}/environments/production/predict", f"wss://{H}/environments/production/websocket"),
    (
        f"  https://{H}/environments/production/predict  ",
        f"wss://{H}/environments/production/websocket",
    ),
    # a bare model id, as the dashboard shows it
    ("abc123", f"wss://{H}/environments/production/websocket"),
    # legacy and local forms
    (f"wss://{H}/v1/websocket", f"wss://{H}/v1/websocket"),
    ("ws://127.0.0.1:8080/v1/websocket", "ws://127.0.0.1:8080/v1/websocket"),
    (
        "ws://localhost:9000/environments/production/websocket",
        "ws://localhost:9000/environments/production/websocket",
    ),
    (
        "http://127.0.0.2:9000/environments/production/predict",
        "ws://127.0.0.2:9000/environments/production/websocket",
    ),
    ("ws://[::1]:9000/development/websocket", "ws://[::1]:9000/development/websocket"),
    # custom servers keep their own route under sync/
    (
        f"https://{H}/environments/production/sync/v1/stream",
        f"wss://{H}/environments/production/sync/v1/stream",
    ),
]


@pytest.mark.parametrize(("given", "expected"), TABLE)
def test_every_documented_form_normalises(given: str, expected: str) -> None:
    assert normalize_endpoint(given) == expected


def test_ids_build_production_urls() -> None:
    assert endpoint_for_model("abc123") == f"wss://{H}/environments/production/websocket"
    assert endpoint_for_chain("xyz789") == f"wss://{C}/environments/production/websocket"
    with pytest.raises(ValueError, match="model_id"):
        endpoint_for_model("abc/../123")
    with pytest.raises(ValueError, match="chain_id"):
        endpoint_for_chain("")


BAD = [
    f"https://{H}/environments/production/predict/extra",
    f"https://{H}/models/abc123/predict",
    f"https://{H}/production/predict",
    f"https://{H}/predict",
    f"ftp://{H}/environments/production/websocket",
    "https:///environments/production/websocket",
    f"https://{H}/environments/production/sync",
    f"https://{H}/environments/production/websocket?api_key=sekrit",
    f"https://user:sekrit@{H}/environments/production/websocket",
    "",
]


@pytest.mark.parametrize("given", BAD)
def test_bad_forms_raise_one_line_with_an_example(given: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_endpoint(given)
    msg = str(info.value)
    assert "\n" not in msg
    assert "wss://model-<id>.api.baseten.co/environments/production/websocket" in msg
    assert "sekrit" not in msg  # query strings/userinfo are never echoed


@pytest.mark.parametrize(
    "given",
    [
        "ws://10.0.0.5:8080/v1/websocket",
        f"ws://{H}/environments/production/websocket",
        "http://192.168.1.2/environments/production/predict",
        "ws://127.example.com/v1/websocket",
    ],
)
def test_plaintext_to_non_loopback_is_refused_unless_allowed(given: str) -> None:
    with pytest.raises(ValueError, match="allow_insecure") as info:
        normalize_endpoint(given)
    assert "\n" not in str(info.value)
    assert normalize_endpoint(given, allow_insecure=True).startswith("ws://")


def test_constructor_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASETEN_API_KEY", "env-key")
    monkeypatch.setenv("BASETEN_MODEL_ENDPOINT", f"https://{H}/environments/production/predict")
    stt = STT()
    assert stt.endpoint == f"wss://{H}/environments/production/websocket"
    assert STT(model_id="abc123").endpoint.startswith(f"wss://{H}/")
    assert STT(chain_id="xyz789").endpoint.startswith(f"wss://{C}/")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"api_key": None}, "BASETEN_API_KEY"),
        ({"model_endpoint": None}, "BASETEN_MODEL_ENDPOINT"),
        ({"vad_threshold": 1.5}, "vad_threshold"),
        ({"vad_min_silence_duration_ms": -1}, "vad_min_silence_duration_ms"),
        ({"vad_speech_pad_ms": 2.5}, "vad_speech_pad_ms"),
        ({"partial_transcript_interval_s": 0}, "partial_transcript_interval_s"),
        ({"final_transcript_max_duration_s": 45}, "final_transcript_max_duration_s"),
        ({"replay_buffer_s": 5}, "replay_buffer_s"),
        ({"keepalive_interval_s": 0}, "keepalive_interval_s"),
        ({"encoding": "opus"}, "encoding"),
        ({"encoding": "pcm_mulaw", "sample_rate": 16000}, "sample_rate"),
        ({"language": ""}, "language"),
        ({"model": "qwen3"}, "model"),
        ({"buffer_size_seconds": 0.05}, "buffer_size_seconds"),
        ({"model": "qwen3-asr", "encoding": "pcm_mulaw"}, "encoding"),
        ({"model": "qwen3-asr", "language_options": ["en", "de"]}, "language_options"),
        ({"api_key": "abc\n"}, "api_key"),
        ({"model_endpoint": "ws://10.1.2.3/v1/websocket"}, "allow_insecure"),
    ],
)
def test_invalid_constructor_values_name_the_parameter(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], needle: str
) -> None:
    monkeypatch.delenv("BASETEN_API_KEY", raising=False)
    monkeypatch.delenv("BASETEN_MODEL_ENDPOINT", raising=False)
    base: dict[str, object] = {"api_key": "k", "model_endpoint": f"wss://{H}/v1/websocket"}
    base.update(kwargs)
    with pytest.raises(ValueError) as info:
        STT(**base)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_first_message_sets_only_chosen_fields() -> None:
    stt = STT(api_key="k", model_endpoint=f"wss://{H}/v1/websocket", encoding="pcm_mulaw")
    import json

    msg = json.loads(stt.options.first_message())
    assert set(msg) == {"whisper_params", "streaming_params", "streaming_vad_config"}
    assert "language_options" not in msg["whisper_params"]
    assert "prompt" not in msg["whisper_params"]
    assert msg["streaming_params"]["encoding"] == "pcm_mulaw"
    assert msg["streaming_params"]["sample_rate"] == 8000
    assert msg["streaming_vad_config"] == {
        "threshold": 0.5,
        "min_silence_duration_ms": 300,
        "speech_pad_ms": 30,
    }


def test_never_imports_the_official_plugin() -> None:
    import subprocess
    import sys

    code = (
        "import sys, plugins.baseten_stt as p; "
        "assert issubclass(p.STT, __import__('livekit.agents', fromlist=['stt']).stt.STT); "
        "assert not [m for m in sys.modules if m.startswith('livekit.plugins.baseten')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
