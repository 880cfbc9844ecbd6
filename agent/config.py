"""Worker configuration: read the environment once, validate everything, freeze it.

All validation happens here, before the worker connects anywhere. Every problem becomes
one line naming the variable and what is expected (:class:`ConfigError` carries all of
them); a secret's value is never part of a message. Secrets are wrapped in
:class:`Secret` so an accidental ``repr(settings)`` cannot leak them, and every secret
value is registered with :data:`agent.redact.REDACTOR` so no log line can carry it.

``.env`` then ``.env.local`` are read only by :func:`load_dotenv_files` (called for the
developer commands ``dev``/``console``), never in production ``start``: real environment
variables always win over both files.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from agent.redact import REDACTOR
from plugins.baseten_stt.models import MODEL_DEFAULTS, MODELS
from plugins.baseten_stt.protocol import QWEN3_LANGUAGES, qwen3_language_name

T = TypeVar("T")

# Defaults and where their numbers come from ---------------------------------------------
#: Cheapest/fastest-TTFT OpenAI chat model that follows short-answer voice prompts well;
#: the plugin's own default (gpt-4.1) roughly doubles first-token latency.
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
#: livekit-plugins-cartesia 1.8.9 defaults (``cartesia/models.py``).
DEFAULT_CARTESIA_MODEL = "sonic-3"
DEFAULT_CARTESIA_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # "Katie - Friendly Fixer"
#: Baseten server-side Silero VAD defaults (baseten-protocol.md §3.1, streaming_vad_config).
#: Min silence, speech pad and language default per model (the plugin's MODEL_DEFAULTS):
#: Whisper 300/30 ms (the Baseten docs' recommended first message) and ``en``; Qwen3-ASR
#: 500/100 ms and ``auto`` (the official plugin's, "each deployment's own").
DEFAULT_VAD_THRESHOLD = 0.5
DEFAULT_BASETEN_MODEL = "whisper"

#: Turn detection: ``signals`` is ours (agent/turn_policy.py), the rest are LiveKit's modes.
TURN_DETECTION_MODES = ("signals", "model", "vad", "stt")
DEFAULT_TURN_DETECTION = "signals"
#: Off, as LiveKit ships it; bench/turn_bench.py decides (README, "Turn-taking").
DEFAULT_PREEMPTIVE_TTS = False
#: An LLM silent this long is hung. LiveKit's 10 s (APIConnectOptions.timeout) left a caller
#: 11.4 s without an answer when the stand-in hung (tests/test_e2e_model_errors.py); 5 s is
#: several times the first-token time of the small chat models a voice agent runs (not
#: measured here: no cloud access). Raise it for reasoning models, which think first.
DEFAULT_LLM_TIMEOUT_S = 5.0
#: Spoken when the LLM fails a reply for good (agent/model_errors.py): the caller then
#: knows to repeat instead of waiting in silence.
DEFAULT_ERROR_REPLY = "Sorry, something went wrong on my side. Could you say that again?"
#: livekit-plugins-silero's default min_silence_duration (0.55 s).
SILERO_MIN_SILENCE_MS = 550
#: With ``signals`` the worker's VAD only has to say "silence began" (the policy decides
#: how long to wait), so it reports end of speech early; LiveKit's streaming turn detector
#: refuses anything below its 200 ms prediction point + 50 ms (audio_recognition.py).
DEFAULT_SIGNALS_VAD_MIN_SILENCE_MS = 300
MIN_TURN_DETECTOR_VAD_SILENCE_MS = 250
#: signals: a "." ends the turn after this much silence (agent/turn_policy.py says why 900).
DEFAULT_STATEMENT_SILENCE_MS = 900
#: LiveKit's ``DRAIN_TIMEOUT`` (worker.py): how long SIGTERM waits for live calls.
DEFAULT_DRAIN_TIMEOUT_S = 3600

#: Whisper's language codes (openai/whisper ``tokenizer.LANGUAGES``, incl. v3's ``yue``),
#: plus ``auto`` (Baseten: detect the language per utterance).
_WHISPER_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu "
    "ta no th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs "
    "kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa "
    "lb my bo tl mg as tt haw ln ha ba jw su yue"
)
WHISPER_LANGUAGES = frozenset(_WHISPER_CODES.split())
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
#: A prompt longer than this is almost certainly the wrong file; it would also eat the
#: LLM's context and first-token latency on every turn.
MAX_INSTRUCTIONS_CHARS = 20_000


class Profile(enum.Enum):
    """What the command about to run needs from the environment."""

    #: ``start``/``dev``: model credentials and the LiveKit server credentials.
    WORKER = "worker"
    #: ``console``: model credentials only (no LiveKit server involved).
    CONSOLE = "console"
    #: nothing required (tests building a session against local stand-ins).
    OFFLINE = "offline"


class ConfigError(Exception):
    """Invalid configuration: one human-readable line per problem, no secret values."""

    def __init__(self, problems: list[str]) -> None:
        """``problems``: one line each, already naming the variable."""
        super().__init__("\n".join(problems))
        self.problems = problems


class Secret:
    """A credential. ``str()``/``repr()`` never show it; :meth:`reveal` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        """Wrap ``value`` and register it for log redaction."""
        self._value = value
        REDACTOR.add_secret(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class BasetenSettings:
    api_key: Secret
    model_endpoint: str | None
    #: a second deployment of the same model (another region), used while the primary fails
    fallback_endpoint: str | None
    #: the protocol the deployment speaks: ``whisper`` or ``qwen3-asr``
    model: str
    language: str
    vad_threshold: float
    vad_min_silence_ms: int
    vad_speech_pad_ms: int
    partial_transcripts: bool
    #: LiveKit's flush sends the server's remaining VAD silence at once (plugin manual_flush)
    manual_flush: bool
    allow_insecure: bool


@dataclass(frozen=True, slots=True)
class OpenAISettings:
    api_key: Secret
    base_url: str | None
    model: str
    #: no byte from the LLM for this long (connect, first token, between tokens) = a
    #: failed attempt, retried while nothing reached the caller
    timeout_s: float


@dataclass(frozen=True, slots=True)
class CartesiaSettings:
    api_key: Secret
    base_url: str | None
    model: str
    voice: str
    language: str


@dataclass(frozen=True, slots=True)
class LiveKitSettings:
    url: str | None
    api_key: Secret
    api_secret: Secret
    agent_name: str
    drain_timeout_s: int
    #: most concurrent calls this worker takes (it then reports itself full and LiveKit
    #: dispatches elsewhere); None = LiveKit's CPU-based load (full at 70 % in start mode)
    max_calls: int | None
    #: health/worker-info HTTP port; None = LiveKit's default (8081 in start, random in dev)
    health_port: int | None


@dataclass(frozen=True, slots=True)
class AgentSettings:
    instructions: str
    #: where the instructions came from: "default", "env" or a file path (for the logs)
    instructions_source: str
    greeting: str | None
    #: spoken when the LLM fails a reply for good; None = say nothing
    error_reply: str | None
    preemptive_generation: bool
    #: also synthesise the reply before the turn is committed (LiveKit defaults it off)
    preemptive_tts: bool
    #: None = LiveKit's default for the chosen detector (0.3/2.5 s with the local turn
    #: model, 0.5/3.0 s with VAD/STT endpointing; livekit/agents/voice/turn.py)
    min_endpointing_delay: float | None
    max_endpointing_delay: float | None
    turn_detection: Literal["signals", "model", "vad", "stt"]
    #: the worker's Silero VAD: silence before it reports end of speech (seconds)
    vad_min_silence_s: float
    #: signals: silence a final ending in "." must reach before the turn ends (seconds)
    statement_silence_s: float


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    log_level: str | None  # None: the command's default (INFO for start, DEBUG for dev)
    log_transcripts: bool
    #: send each turn_latency record to the room (topic agent.turn_latency); dev: default on
    publish_turn_latency: bool
    prometheus_port: int | None
    #: log a process_stats line (RSS, fds, threads, asyncio tasks) this often; None = never
    process_stats_interval_s: float | None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker reads from the environment, validated and immutable."""

    baseten: BasetenSettings
    openai: OpenAISettings
    cartesia: CartesiaSettings
    livekit: LiveKitSettings
    agent: AgentSettings
    observability: ObservabilitySettings


# --------------------------------------------------------------------------- parsing
class _Reader:
    """Reads variables from ``env`` and collects every problem instead of stopping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def fail(self, name: str, expected: str, got: str | None = None) -> None:
        shown = f" (got {got!r})" if got is not None else ""
        self.problems.append(f"{name}: expected {expected}{shown}")

    def parse(self, name: str, default: T, conv: Callable[[str], T], expected: str) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return conv(raw)
        except ValueError:
            self.fail(name, expected, _clip(raw))
            return default

    def secret(self, name: str, *, required: bool, what: str) -> Secret:
        # Never echo the value, not even a wrong one: it may be a real key pasted into the
        # wrong variable.
        raw = self.raw(name)
        if raw is None:
            if required:
                self.problems.append(f"{name}: required, but not set (expected {what})")
            return Secret("")
        if any(c.isspace() for c in raw) or not raw.isprintable():
            self.problems.append(
                f"{name}: expected a single token without spaces or control characters "
                "(value not shown)"
            )
        return Secret(raw)

    def string(self, name: str, default: str) -> str:
        raw = self.raw(name)
        if raw is None:
            return default
        if not raw.isprintable():
            self.fail(name, "printable text without control characters")
            return default
        return raw

    def boolean(self, name: str, default: bool) -> bool:
        def conv(raw: str) -> bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)

        return self.parse(name, default, conv, "true/false (also 1/0, yes/no, on/off)")

    def url(
        self, name: str, *, schemes: tuple[str, ...], required: bool, example: str
    ) -> str | None:
        raw = self.raw(name)
        expected = f"a URL like {example} (scheme {', '.join(schemes)})"
        if raw is None:
            if required:
                self.problems.append(f"{name}: required, but not set (expected {expected})")
            return None
        try:
            parts = urlsplit(raw)
            ok = parts.scheme.lower() in schemes and bool(parts.hostname) and parts.port != 0
            _ = parts.port  # raises ValueError on a non-numeric / out-of-range port
        except ValueError:
            ok = False
        if not ok or any(c.isspace() for c in raw):
            # URLs may embed credentials (user:pass@host): show the value redacted
            self.fail(name, expected, _clip(REDACTOR.text(_strip_userinfo(raw))))
            return None
        return raw.rstrip("/")


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _strip_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _positive_int(lo: int, hi: int) -> Callable[[str], int]:
    def conv(raw: str) -> int:
        v = int(raw)
        if not lo <= v <= hi:
            raise ValueError(raw)
        return v

    return conv


def _float_range(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    def conv(raw: str) -> float:
        v = float(raw)
        if v != v or (v <= lo if lo_open else v < lo) or v > hi:  # v != v: NaN
            raise ValueError(raw)
        return v

    return conv


# Instructions ---------------------------------------------------------------------------
DEFAULT_INSTRUCTIONS = """\
You are a friendly, helpful voice assistant talking with someone over a live audio call.
Everything you write is spoken aloud by a text-to-speech voice, so:
- Answer in one to three short sentences. Offer more detail only if asked.
- Use plain conversational words. No markdown, lists, headings, emojis, code or URLs.
- Write numbers, dates and units the way people say them.
- If you did not catch something, ask the person to repeat it.
- If you do not know, say so briefly instead of guessing."""


def _instructions(r: _Reader) -> tuple[str, str]:
    """``AGENT_INSTRUCTIONS`` is literal text, ``@path``, or a path to an existing file."""
    name = "AGENT_INSTRUCTIONS"
    raw = r.raw(name)
    if raw is None:
        return DEFAULT_INSTRUCTIONS, "default"
    path: Path | None = None
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
    elif "\n" not in raw and len(raw) < 4096:
        candidate = Path(raw).expanduser()
        looks_like_path = " " not in raw and (
            "/" in raw or candidate.suffix.lower() in {".txt", ".md", ".prompt"}
        )
        if candidate.is_file() or looks_like_path:
            path = candidate
    if path is None:
        text, source = raw, "env"
    else:
        try:
            text, source = path.read_text(encoding="utf-8").strip(), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else type(exc).__name__
            r.fail(name, f"text, @path or a readable UTF-8 file path ({path}: {reason})")
            return DEFAULT_INSTRUCTIONS, "default"
    if not text:
        r.fail(name, "non-empty instructions" + (f" (file {path} is empty)" if path else ""))
    elif len(text) > MAX_INSTRUCTIONS_CHARS:
        r.fail(name, f"at most {MAX_INSTRUCTIONS_CHARS} characters (got {len(text)})")
    return text or DEFAULT_INSTRUCTIONS, source


# --------------------------------------------------------------------------- entry points
def load_settings(
    env: Mapping[str, str] | None = None, *, profile: Profile = Profile.WORKER
) -> Settings:
    """Validate ``env`` (default: ``os.environ``) into :class:`Settings`.

    Raises :class:`ConfigError` listing every problem (one line each).
    """
    r = _Reader(os.environ if env is None else env)
    needs_models = profile is not Profile.OFFLINE
    needs_livekit = profile is Profile.WORKER

    # Baseten ------------------------------------------------------------------------
    allow_insecure = r.boolean("BASETEN_ALLOW_INSECURE", False)
    endpoint = _baseten_endpoint(
        r, "BASETEN_MODEL_ENDPOINT", allow_insecure=allow_insecure, required=needs_models
    )
    fallback_endpoint = _baseten_endpoint(
        r, "BASETEN_FALLBACK_MODEL_ENDPOINT", allow_insecure=allow_insecure, required=False
    )
    if fallback_endpoint is not None and fallback_endpoint == endpoint:
        r.problems.append(
            "BASETEN_FALLBACK_MODEL_ENDPOINT: the same endpoint as BASETEN_MODEL_ENDPOINT "
            "(expected a second deployment or region of the model, or leave it unset)"
        )
    model = r.parse(
        "BASETEN_MODEL",
        DEFAULT_BASETEN_MODEL,
        lambda s: s.lower() if s.lower() in MODELS else _bad(s),
        "one of " + ", ".join(MODELS) + " (the protocol your Baseten deployment speaks)",
    )
    defaults = MODEL_DEFAULTS[model]
    if model == "qwen3-asr":
        language = r.parse(
            "BASETEN_LANGUAGE",
            defaults.language,
            _qwen3_language,
            "a Qwen3-ASR language name or code such as English, en, Cantonese, yue, or auto",
        )
    else:
        language = r.parse(
            "BASETEN_LANGUAGE",
            defaults.language,
            lambda s: (
                s.lower() if s.lower() in WHISPER_LANGUAGES or s.lower() == "auto" else _bad(s)
            ),
            "a Whisper language code such as en, de, es, or auto",
        )
    baseten = BasetenSettings(
        api_key=r.secret("BASETEN_API_KEY", required=needs_models, what="your Baseten API key"),
        model_endpoint=endpoint,
        fallback_endpoint=fallback_endpoint,
        model=model,
        language=language,
        vad_threshold=r.parse(
            "BASETEN_VAD_THRESHOLD",
            DEFAULT_VAD_THRESHOLD,
            _float_range(0.0, 1.0, lo_open=True),
            "a speech probability between 0 and 1 (0 < x <= 1)",
        ),
        vad_min_silence_ms=r.parse(
            "BASETEN_VAD_MIN_SILENCE_MS",
            defaults.vad_min_silence_duration_ms,
            _positive_int(1, 30_000),
            "whole milliseconds between 1 and 30000",
        ),
        vad_speech_pad_ms=r.parse(
            "BASETEN_VAD_SPEECH_PAD_MS",
            defaults.vad_speech_pad_ms,
            _positive_int(0, 5_000),
            "whole milliseconds between 0 and 5000",
        ),
        partial_transcripts=r.boolean("BASETEN_PARTIAL_TRANSCRIPTS", True),
        manual_flush=r.boolean("BASETEN_MANUAL_FLUSH", True),
        allow_insecure=allow_insecure,
    )

    # OpenAI-compatible LLM ----------------------------------------------------------
    openai = OpenAISettings(
        api_key=r.secret(
            "OPENAI_API_KEY",
            required=needs_models,
            what="your OpenAI API key, or any token your OPENAI_BASE_URL server accepts",
        ),
        base_url=r.url(
            "OPENAI_BASE_URL",
            schemes=("https", "http"),
            required=False,
            example="https://api.openai.com/v1",
        ),
        model=r.string("OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
        timeout_s=r.parse(
            "LLM_TIMEOUT_S",
            DEFAULT_LLM_TIMEOUT_S,
            _float_range(0.0, 120.0, lo_open=True),
            "seconds between 0 and 120 (0 < x <= 120)",
        ),
    )

    # Cartesia TTS -------------------------------------------------------------------
    cartesia = CartesiaSettings(
        api_key=r.secret("CARTESIA_API_KEY", required=needs_models, what="your Cartesia API key"),
        base_url=r.url(
            "CARTESIA_BASE_URL",
            schemes=("https", "http"),
            required=False,
            example="https://api.cartesia.ai",
        ),
        model=r.string("CARTESIA_MODEL", DEFAULT_CARTESIA_MODEL),
        voice=r.string("CARTESIA_VOICE", DEFAULT_CARTESIA_VOICE),
        language=r.parse(
            "CARTESIA_LANGUAGE",
            "en",
            lambda s: s.lower() if _is_lang_tag(s) else _bad(s),
            "a language code such as en, de, fr",
        ),
    )

    # LiveKit ------------------------------------------------------------------------
    agent_name = r.string("LIVEKIT_AGENT_NAME", "")
    if agent_name and (len(agent_name) > 128 or any(c.isspace() for c in agent_name)):
        r.fail("LIVEKIT_AGENT_NAME", "a name without spaces, at most 128 characters")
        agent_name = ""
    livekit = LiveKitSettings(
        url=r.url(
            "LIVEKIT_URL",
            schemes=("wss", "ws", "https", "http"),
            required=needs_livekit,
            example="wss://<project>.livekit.cloud",
        ),
        api_key=r.secret(
            "LIVEKIT_API_KEY", required=needs_livekit, what="your LiveKit project's API key"
        ),
        api_secret=r.secret(
            "LIVEKIT_API_SECRET", required=needs_livekit, what="your LiveKit project's API secret"
        ),
        agent_name=agent_name,
        drain_timeout_s=r.parse(
            "DRAIN_TIMEOUT",
            DEFAULT_DRAIN_TIMEOUT_S,
            _positive_int(1, 86_400),
            "whole seconds between 1 and 86400",
        ),
        max_calls=r.parse(
            "WORKER_MAX_CALLS", None, _positive_int(1, 10_000), "a whole number of calls >= 1"
        ),
        health_port=r.parse(
            "HEALTH_PORT", None, _positive_int(1, 65_535), "a TCP port between 1 and 65535"
        ),
    )

    # Agent behaviour ----------------------------------------------------------------
    instructions, instructions_source = _instructions(r)
    # Unset delays stay None: LiveKit then applies the defaults that suit the detector.
    min_delay = r.parse(
        "MIN_ENDPOINTING_DELAY", None, _float_range(0.0, 30.0), "seconds between 0 and 30, e.g. 0.5"
    )
    max_delay = r.parse(
        "MAX_ENDPOINTING_DELAY",
        None,
        _float_range(0.0, 60.0, lo_open=True),
        "seconds greater than 0 and at most 60, e.g. 3.0",
    )
    if min_delay is not None and max_delay is not None and min_delay > max_delay:
        r.problems.append(
            f"MIN_ENDPOINTING_DELAY: expected at most MAX_ENDPOINTING_DELAY ({max_delay:g} s), "
            f"got {min_delay:g} s"
        )
    turn_detection = r.parse(
        "TURN_DETECTION",
        DEFAULT_TURN_DETECTION,
        lambda s: s.lower() if s.lower() in TURN_DETECTION_MODES else _bad(s),
        "one of " + ", ".join(TURN_DETECTION_MODES),
    )
    streaming_detector = turn_detection in {"signals", "model"}
    vad_min_silence_ms = r.parse(
        "VAD_MIN_SILENCE_MS",
        DEFAULT_SIGNALS_VAD_MIN_SILENCE_MS
        if turn_detection == "signals"
        else SILERO_MIN_SILENCE_MS,
        _positive_int(MIN_TURN_DETECTOR_VAD_SILENCE_MS if streaming_detector else 1, 5000),
        f"whole milliseconds between {MIN_TURN_DETECTOR_VAD_SILENCE_MS} and 5000"
        if streaming_detector
        else "whole milliseconds between 1 and 5000",
    )
    greeting = r.raw("AGENT_GREETING")
    if greeting is not None and not greeting.isprintable():
        r.fail("AGENT_GREETING", "one line of printable text")
        greeting = None
    # unset/empty: the default; "off": say nothing
    error_reply = r.raw("AGENT_ERROR_REPLY")
    if error_reply is None:
        error_reply = DEFAULT_ERROR_REPLY
    elif error_reply.lower() == "off":
        error_reply = ""
    elif not error_reply.isprintable():
        r.fail("AGENT_ERROR_REPLY", "one line of printable text, or off")
    agent = AgentSettings(
        instructions=instructions,
        instructions_source=instructions_source,
        greeting=greeting,
        error_reply=error_reply.strip() or None,
        preemptive_generation=r.boolean("PREEMPTIVE_GENERATION", True),
        preemptive_tts=r.boolean("PREEMPTIVE_TTS", DEFAULT_PREEMPTIVE_TTS),
        min_endpointing_delay=min_delay,
        max_endpointing_delay=max_delay,
        turn_detection=turn_detection,  # type: ignore[arg-type]
        vad_min_silence_s=(vad_min_silence_ms or SILERO_MIN_SILENCE_MS) / 1000,
        statement_silence_s=(
            r.parse(
                "TURN_STATEMENT_SILENCE_MS",
                DEFAULT_STATEMENT_SILENCE_MS,
                _positive_int(1, 10_000),
                "whole milliseconds between 1 and 10000",
            )
            or DEFAULT_STATEMENT_SILENCE_MS
        )
        / 1000,
    )

    # Observability ------------------------------------------------------------------
    observability = ObservabilitySettings(
        log_level=r.parse(
            "LOG_LEVEL",
            None,
            lambda s: _log_level(s),
            "one of " + ", ".join(LOG_LEVELS),
        ),
        log_transcripts=r.boolean("LOG_TRANSCRIPTS", False),
        publish_turn_latency=r.boolean("PUBLISH_TURN_LATENCY", False),
        prometheus_port=r.parse(
            "PROMETHEUS_PORT", None, _positive_int(1, 65_535), "a TCP port between 1 and 65535"
        ),
        process_stats_interval_s=r.parse(
            "PROCESS_STATS_INTERVAL_S",
            None,
            _float_range(0.0, 86_400.0, lo_open=True),
            "seconds between 0 and 86400 (0 < x)",
        ),
    )

    if r.problems:
        raise ConfigError(r.problems)
    return Settings(
        baseten=baseten,
        openai=openai,
        cartesia=cartesia,
        livekit=livekit,
        agent=agent,
        observability=observability,
    )


def _baseten_endpoint(r: _Reader, name: str, *, allow_insecure: bool, required: bool) -> str | None:
    """Normalise with the plugin's own rules, so config and plugin never disagree."""
    # Imported here: the plugin package pulls in livekit.agents, which `--help` never needs.
    from plugins.baseten_stt.endpoint import normalize_endpoint

    raw = r.raw(name)
    if raw is None:
        if required:
            r.problems.append(
                f"{name}: required, but not set (expected the model's wss:// URL, e.g. "
                "wss://model-<id>.api.baseten.co/environments/production/websocket)"
            )
        return None
    try:
        return normalize_endpoint(raw, allow_insecure=allow_insecure)
    except ValueError as exc:
        # the plugin's message is one line and already strips userinfo/query from the URL
        r.problems.append(f"{name}: {REDACTOR.text(str(exc).splitlines()[0])}")
        return None


def _bad(raw: str) -> str:
    raise ValueError(raw)


def _qwen3_language(raw: str) -> str:
    """A Qwen3 name or code as the name the handshake carries (``en`` -> ``English``)."""
    name = qwen3_language_name(raw)
    if name != "auto" and name not in QWEN3_LANGUAGES:
        raise ValueError(raw)
    return name


def _is_lang_tag(s: str) -> bool:
    head, _, tail = s.partition("-")
    return 2 <= len(head) <= 3 and head.isalpha() and (not tail or tail.isalnum())


def _log_level(raw: str) -> str:
    up = raw.upper()
    up = "WARNING" if up == "WARN" else up
    if up not in LOG_LEVELS:
        raise ValueError(raw)
    return up


def load_dotenv_files(
    directory: Path | None = None, environ: MutableMapping[str, str] | None = None
) -> list[Path]:
    """Apply ``.env`` then ``.env.local`` from ``directory`` (default: cwd) to ``environ``.

    Variables already set in the real environment are never overridden; ``.env.local``
    overrides ``.env``. Returns the files that were read.
    """
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    directory = Path.cwd() if directory is None else directory
    merged: dict[str, str] = {}
    read: list[Path] = []
    for name in (".env", ".env.local"):
        path = directory / name
        if path.is_file():
            read.append(path)
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    for key, value in merged.items():
        environ.setdefault(key, value)
    return read
