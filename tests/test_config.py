"""Configuration: every bad variable gives one line naming it; secrets never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    DEFAULT_INSTRUCTIONS,
    ConfigError,
    Profile,
    Secret,
    load_dotenv_files,
    load_settings,
)
from tests.fixtures.worker import FAKE_SECRETS, run_agent, valid_env


def problems_for(**overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(valid_env(**overrides), profile=Profile.WORKER)
    return info.value.problems


def test_valid_env_loads_typed_frozen_settings() -> None:
    s = load_settings(
        valid_env(
            BASETEN_VAD_THRESHOLD="0.6",
            BASETEN_VAD_MIN_SILENCE_MS="450",
            BASETEN_PARTIAL_TRANSCRIPTS="off",
            BASETEN_LANGUAGE="DE",
            PREEMPTIVE_GENERATION="no",
            MIN_ENDPOINTING_DELAY="0.2",
            MAX_ENDPOINTING_DELAY="1.5",
            LOG_LEVEL="warn",
            PROMETHEUS_PORT="9464",
            LIVEKIT_AGENT_NAME="support-agent",
        )
    )
    assert s.baseten.vad_threshold == 0.6
    assert s.baseten.vad_min_silence_ms == 450
    assert s.baseten.partial_transcripts is False
    assert s.baseten.language == "de"
    assert s.agent.preemptive_generation is False
    assert (s.agent.min_endpointing_delay, s.agent.max_endpointing_delay) == (0.2, 1.5)
    assert s.observability.log_level == "WARNING"
    assert s.observability.prometheus_port == 9464
    assert s.livekit.agent_name == "support-agent"
    assert s.baseten.api_key.reveal() == FAKE_SECRETS["BASETEN_API_KEY"]
    with pytest.raises(AttributeError):
        s.baseten.language = "en"  # type: ignore[misc]


def test_defaults_when_only_required_vars_are_set() -> None:
    s = load_settings(valid_env())
    assert s.baseten.language == "en"
    assert (s.baseten.vad_threshold, s.baseten.vad_min_silence_ms) == (0.5, 300)
    assert s.baseten.vad_speech_pad_ms == 30
    assert s.agent.instructions == DEFAULT_INSTRUCTIONS
    assert s.agent.greeting is None
    assert s.agent.turn_detection == "signals"
    assert s.agent.vad_min_silence_s == 0.3  # with signals; Silero's 0.55 otherwise
    assert s.agent.preemptive_tts is False
    assert s.agent.statement_silence_s == 0.9
    assert s.baseten.manual_flush is True
    assert s.agent.min_endpointing_delay is None  # LiveKit picks the detector's default
    assert s.observability.log_transcripts is False
    assert s.observability.publish_turn_latency is False  # `dev` and the demo turn it on
    assert s.observability.prometheus_port is None


def test_baseten_model_picks_the_protocol_and_its_defaults() -> None:
    whisper = load_settings(valid_env(BASETEN_MODEL="Whisper")).baseten
    assert (whisper.model, whisper.language, whisper.vad_min_silence_ms) == ("whisper", "en", 300)
    qwen = load_settings(valid_env(BASETEN_MODEL="qwen3-asr")).baseten
    assert (qwen.model, qwen.language) == ("qwen3-asr", "auto")
    assert (qwen.vad_min_silence_ms, qwen.vad_speech_pad_ms) == (500, 100)
    # codes or names, sent as the Qwen3 name
    for given, name in (("en", "English"), ("cantonese", "Cantonese"), ("FIL", "Filipino")):
        env = valid_env(BASETEN_MODEL="qwen3-asr", BASETEN_LANGUAGE=given)
        assert load_settings(env).baseten.language == name
    # explicit knobs still win over the model's defaults
    env = valid_env(BASETEN_MODEL="qwen3-asr", BASETEN_VAD_MIN_SILENCE_MS="250")
    assert load_settings(env).baseten.vad_min_silence_ms == 250
    (line,) = problems_for(BASETEN_MODEL="qwen3-asr", BASETEN_LANGUAGE="klingon")
    assert line.startswith("BASETEN_LANGUAGE") and "Qwen3-ASR language" in line


def test_vad_silence_default_follows_the_turn_detection_mode() -> None:
    assert load_settings(valid_env(TURN_DETECTION="vad")).agent.vad_min_silence_s == 0.55
    assert load_settings(valid_env(TURN_DETECTION="model")).agent.vad_min_silence_s == 0.55
    # VAD endpointing has no turn-detector floor
    vad = load_settings(valid_env(TURN_DETECTION="vad", VAD_MIN_SILENCE_MS="120"))
    assert vad.agent.vad_min_silence_s == 0.12


def test_settings_repr_hides_secrets() -> None:
    s = load_settings(valid_env())
    text = repr(s)
    for secret in FAKE_SECRETS.values():
        assert secret not in text
    assert "Secret('**********')" in text


def test_dashboard_https_url_is_normalised_to_websocket() -> None:
    url = "https://model-abc123.api.baseten.co/environments/production/predict"
    s = load_settings(valid_env(BASETEN_MODEL_ENDPOINT=url))
    assert s.baseten.model_endpoint == (
        "wss://model-abc123.api.baseten.co/environments/production/websocket"
    )


def test_fallback_endpoint_is_optional_normalised_and_not_the_primary() -> None:
    assert load_settings(valid_env()).baseten.fallback_endpoint is None
    s = load_settings(valid_env(BASETEN_FALLBACK_MODEL_ENDPOINT="model-xyz789.api.baseten.co"))
    assert s.baseten.fallback_endpoint == (
        "wss://model-xyz789.api.baseten.co/environments/production/websocket"
    )
    primary = valid_env()["BASETEN_MODEL_ENDPOINT"]
    with pytest.raises(ConfigError) as info:
        load_settings(valid_env(BASETEN_FALLBACK_MODEL_ENDPOINT=primary))
    assert info.value.problems == [
        "BASETEN_FALLBACK_MODEL_ENDPOINT: the same endpoint as BASETEN_MODEL_ENDPOINT "
        "(expected a second deployment or region of the model, or leave it unset)"
    ]


@pytest.mark.parametrize(
    ("var", "value", "expected_fragment"),
    [
        ("BASETEN_MODEL_ENDPOINT", "ftp://model-x.api.baseten.co", "unsupported scheme"),
        ("BASETEN_MODEL_ENDPOINT", "ws://10.0.0.5/v1/websocket", "plaintext ws://"),
        ("BASETEN_FALLBACK_MODEL_ENDPOINT", "ftp://model-y.api.baseten.co", "unsupported scheme"),
        ("BASETEN_FALLBACK_MODEL_ENDPOINT", "ws://10.0.0.6/v1/websocket", "plaintext ws://"),
        ("BASETEN_VAD_THRESHOLD", "1.5", "between 0 and 1"),
        ("BASETEN_VAD_THRESHOLD", "0", "between 0 and 1"),
        ("BASETEN_VAD_THRESHOLD", "nan", "between 0 and 1"),
        ("BASETEN_VAD_MIN_SILENCE_MS", "0", "between 1 and 30000"),
        ("BASETEN_VAD_MIN_SILENCE_MS", "2.5", "whole milliseconds"),
        ("BASETEN_VAD_SPEECH_PAD_MS", "-1", "between 0 and 5000"),
        ("BASETEN_PARTIAL_TRANSCRIPTS", "maybe", "true/false"),
        ("BASETEN_ALLOW_INSECURE", "2", "true/false"),
        ("BASETEN_LANGUAGE", "klingon", "Whisper language code"),
        ("BASETEN_MODEL", "qwen3", "one of whisper, qwen3-asr"),
        ("OPENAI_BASE_URL", "localhost:8000/v1", "URL like"),
        ("LLM_TIMEOUT_S", "0", "seconds between 0 and 120"),
        ("LLM_TIMEOUT_S", "soon", "seconds between 0 and 120"),
        ("AGENT_ERROR_REPLY", "sorry\nagain", "one line of printable text, or off"),
        ("CARTESIA_BASE_URL", "wss://api.cartesia.ai", "URL like"),
        ("CARTESIA_LANGUAGE", "english!", "language code"),
        ("LIVEKIT_URL", "my-project.livekit.cloud", "URL like"),
        ("LIVEKIT_AGENT_NAME", "my agent", "without spaces"),
        ("PREEMPTIVE_GENERATION", "sometimes", "true/false"),
        ("MIN_ENDPOINTING_DELAY", "-0.1", "seconds between 0 and 30"),
        ("MAX_ENDPOINTING_DELAY", "0", "greater than 0"),
        ("MAX_ENDPOINTING_DELAY", "soon", "greater than 0"),
        ("LOG_LEVEL", "verbose", "one of TRACE"),
        ("LOG_TRANSCRIPTS", "yes please", "true/false"),
        ("PUBLISH_TURN_LATENCY", "to the room", "true/false"),
        ("PROMETHEUS_PORT", "70000", "between 1 and 65535"),
        ("TURN_DETECTION", "psychic", "one of signals, model, vad, stt"),
        ("PREEMPTIVE_TTS", "later", "true/false"),
        ("BASETEN_MANUAL_FLUSH", "perhaps", "true/false"),
        ("VAD_MIN_SILENCE_MS", "200", "between 250 and 5000"),  # below LiveKit's detector floor
        ("VAD_MIN_SILENCE_MS", "0.3", "whole milliseconds"),
        ("TURN_STATEMENT_SILENCE_MS", "0", "between 1 and 10000"),
        ("DRAIN_TIMEOUT", "0", "between 1 and 86400"),
        ("HEALTH_PORT", "http", "TCP port"),
        ("AGENT_INSTRUCTIONS", "@/nonexistent/prompt.txt", "not found"),
        ("AGENT_INSTRUCTIONS", "prompts/missing.md", "not found"),
    ],
)
def test_each_bad_variable_gives_one_line_naming_it(
    var: str, value: str, expected_fragment: str
) -> None:
    problems = problems_for(**{var: value})
    assert len(problems) == 1, problems
    (line,) = problems
    assert line.startswith(f"{var}: "), line
    assert expected_fragment in line, line
    assert "\n" not in line


@pytest.mark.parametrize("var", sorted(FAKE_SECRETS))
def test_missing_secret_is_reported_by_name(var: str) -> None:
    env = valid_env()
    del env[var]
    with pytest.raises(ConfigError) as info:
        load_settings(env, profile=Profile.WORKER)
    assert info.value.problems == [
        p for p in info.value.problems if p.startswith(f"{var}: required")
    ]
    assert len(info.value.problems) == 1


@pytest.mark.parametrize("var", sorted(FAKE_SECRETS))
def test_malformed_secret_value_is_never_echoed(var: str) -> None:
    bad = FAKE_SECRETS[var] + " trailing-garbage"
    problems = problems_for(**{var: bad})
    assert len(problems) == 1 and problems[0].startswith(f"{var}: ")
    assert FAKE_SECRETS[var] not in problems[0]
    assert "trailing-garbage" not in problems[0]


def test_all_problems_reported_at_once() -> None:
    problems = problems_for(BASETEN_VAD_THRESHOLD="9", LOG_LEVEL="x", PROMETHEUS_PORT="-1")
    assert [p.split(":")[0] for p in problems] == [
        "BASETEN_VAD_THRESHOLD",
        "LOG_LEVEL",
        "PROMETHEUS_PORT",
    ]


def test_min_delay_above_max_delay_is_rejected() -> None:
    (line,) = problems_for(MIN_ENDPOINTING_DELAY="2", MAX_ENDPOINTING_DELAY="1")
    assert line.startswith("MIN_ENDPOINTING_DELAY: expected at most MAX_ENDPOINTING_DELAY")


def test_credentials_in_url_are_not_echoed() -> None:
    problems = problems_for(OPENAI_BASE_URL="ftp://user:hunter2hunter2@host/v1")
    assert len(problems) == 1
    assert "hunter2hunter2" not in problems[0]


def test_console_profile_needs_no_livekit_credentials() -> None:
    env = valid_env()
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        del env[var]
    load_settings(env, profile=Profile.CONSOLE)
    with pytest.raises(ConfigError):
        load_settings(env, profile=Profile.WORKER)


def test_offline_profile_requires_nothing() -> None:
    s = load_settings({}, profile=Profile.OFFLINE)
    assert not s.baseten.api_key


def test_loopback_ws_is_allowed_and_insecure_flag_allows_remote_ws() -> None:
    load_settings(valid_env(BASETEN_MODEL_ENDPOINT="ws://localhost:8000/v1/websocket"))
    s = load_settings(
        valid_env(BASETEN_MODEL_ENDPOINT="ws://10.0.0.5/v1/websocket", BASETEN_ALLOW_INSECURE="1")
    )
    assert s.baseten.allow_insecure is True


# ----------------------------------------------------------------------- instructions
def test_instructions_literal_text() -> None:
    s = load_settings(valid_env(AGENT_INSTRUCTIONS="You are a pirate. Keep it short."))
    assert s.agent.instructions == "You are a pirate. Keep it short."
    assert s.agent.instructions_source == "env"


@pytest.mark.parametrize("form", ["@{path}", "{path}"])
def test_instructions_from_file(tmp_path: Path, form: str) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Speak like a librarian.\n", encoding="utf-8")
    s = load_settings(valid_env(AGENT_INSTRUCTIONS=form.format(path=prompt)))
    assert s.agent.instructions == "Speak like a librarian."
    assert s.agent.instructions_source == str(prompt)


def test_empty_instructions_file_is_rejected(tmp_path: Path) -> None:
    prompt = tmp_path / "empty.txt"
    prompt.write_text("  \n", encoding="utf-8")
    (line,) = problems_for(AGENT_INSTRUCTIONS=f"@{prompt}")
    assert line.startswith("AGENT_INSTRUCTIONS: expected non-empty instructions")


def test_default_instructions_suit_voice() -> None:
    text = DEFAULT_INSTRUCTIONS.lower()
    assert "short" in text and "markdown" in text


# ----------------------------------------------------------------------- dotenv
def test_dotenv_local_overrides_dotenv_and_real_env_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=from-env\nB=from-env\nC=from-env\n")
    (tmp_path / ".env.local").write_text("B=from-local\nC=from-local\n")
    environ = {"C": "real"}
    read = load_dotenv_files(tmp_path, environ)
    assert [p.name for p in read] == [".env", ".env.local"]
    assert environ == {"A": "from-env", "B": "from-local", "C": "real"}


def test_secret_wrapper() -> None:
    s = Secret("abcdefghijkl")
    assert str(s) == repr(s) == "Secret('**********')"
    assert s.reveal() == "abcdefghijkl"
    assert not Secret("")


# ----------------------------------------------------------------------- via the CLI
def test_start_with_bad_variable_exits_2_with_one_line() -> None:
    run = run_agent("start", env=valid_env(BASETEN_VAD_THRESHOLD="1.7"), timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines == [
        "config error: BASETEN_VAD_THRESHOLD: expected a speech probability between 0 and 1 "
        "(0 < x <= 1) (got '1.7')"
    ]
    assert "Traceback" not in run.output
    assert run.stdout == ""


def test_start_with_bad_secret_never_echoes_it() -> None:
    bad = FAKE_SECRETS["OPENAI_API_KEY"] + "\twith-tab"
    run = run_agent("start", env=valid_env(OPENAI_API_KEY=bad), timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "config error: OPENAI_API_KEY: expected a single token without spaces or control "
        "characters (value not shown)"
    ]
    assert FAKE_SECRETS["OPENAI_API_KEY"] not in run.output
    assert "Traceback" not in run.output


# ----------------------------------------------------------------------- .env.example
def test_env_example_documents_every_variable_with_the_real_defaults() -> None:
    import re

    from dotenv import dotenv_values

    import agent.config as config_module

    example_path = Path(config_module.__file__).resolve().parents[1] / ".env.example"
    text = example_path.read_text()
    read_by_code = set(
        re.findall(r'"([A-Z][A-Z0-9]*_[A-Z0-9_]+)"', Path(config_module.__file__).read_text())
    )
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert read_by_code <= documented, sorted(read_by_code - documented)

    # the uncommented values in the example are the code's defaults: loading the example
    # (secrets and endpoints filled in) gives the same settings as not setting them at all
    example = {k: v for k, v in dotenv_values(example_path).items() if v}
    example.pop("LIVEKIT_URL")  # a placeholder
    from_example = load_settings(valid_env(**example))
    from_defaults = load_settings(valid_env())
    assert from_example == from_defaults
